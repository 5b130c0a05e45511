//! A runs dashboard for the browser (feature `dashboard`): an axum [`router`]
//! serving HTML pages and a JSON API under one prefix, to mount in your app.
//!
//! Nothing is served unless you mount it. Mounted with the defaults it is
//! read-only, under [`DEFAULT_PREFIX`], and masks hook tokens:
//!
//! ```no_run
//! use workflow_http::dashboard::{self, DashboardConfig};
//!
//! # async fn demo(engine: workflow_core::Engine) -> std::io::Result<()> {
//! let app = axum::Router::new()
//!     .merge(workflow_http::axum::router(engine.clone()))
//!     .merge(dashboard::router(engine, DashboardConfig::default()));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! // Open http://127.0.0.1:3000/workflow/dashboard/
//! axum::serve(listener, app).await
//! # }
//! ```
//!
//! The dashboard reads the engine's store; it needs no workers of its own and
//! shows runs driven by any engine on the same store. Protect it as you would
//! any operator page (it shows workflow inputs, outputs and payloads):
//! [`AdminAuth::protect`] puts it behind a bearer token (browsers sign in once
//! with `?token=`) and, on a loopback address, refuses requests whose `Host`
//! is not a loopback name (DNS rebinding). Put an admin API you serve beside
//! it behind the same [`AdminAuth`]; [`views`] builds the run, event and hook
//! values both can answer with.
//!
//! # Pages
//!
//! | path | shows |
//! |---|---|
//! | `{prefix}/` | runs, newest first: id, workflow, status, created, last event; filters by status and workflow; paging (`?before=`/`?after=` cursors, `limit`) |
//! | `{prefix}/runs/{id}` | a run: the error of a failed run, or the nondeterminism error of a blocked one with the `workflow unblock` command that retries it; a waterfall of its operations; live hooks (tokens and webhook paths when [`DashboardConfig::show_tokens`]); pending timers with their due time; steps with attempts and errors; its durable output streams (length, open or closed, the last 20 chunks as JSON, raw bytes as base64; a live page tails an open one); the event timeline (seq, time, kind, correlation id, decoded payloads as pretty JSON) |
//! | `{prefix}/overview` | the engine at a glance: runs started, completed, failed and blocked per minute over the last hour; runs by status; step attempt durations (p50, p95, max) per step name; the earliest pending timer; live hooks linked to their runs; blocked runs with their errors and `workflow unblock` commands |
//!
//! The run's **waterfall** is an SVG drawn on the server: one row per
//! operation (step, sleep, hook, webhook, and each request a webhook
//! received), ordered by start, each a bar from its creation to its
//! completion on the run's time axis. A step's bar shows its attempts and
//! the waits before retries; failed attempts are hatched and crossed, not
//! only coloured; open operations grow to "now" while the run is live. Every
//! row is focusable (Tab) and says its name, attempts, duration and error in
//! its `<title>` (shown on hover) and `aria-label` (read by screen readers,
//! and shown under the chart on focus). The engine records an attempt when
//! it ends, so an attempt's start is inferred: a retry starts when it comes
//! due, a first attempt with the run's previous write.
//!
//! The **overview** reads a bounded sample, whatever the store holds, and
//! says so on the page: each status counted up to 1,000 (`1000+` beyond);
//! up to the 2,000 newest runs created in the hour; the 1,000 newest runs of
//! each ended status; the logs of the 100 newest runs for step durations;
//! the hooks of the 200 newest runs that have not ended. All from
//! [`Store::list_runs`](workflow_store::Store::list_runs) (indexed, newest
//! first, with a limit), [`read_events`](workflow_store::Store::read_events),
//! [`list_hooks`](workflow_store::Store::list_hooks) and
//! [`next_due`](workflow_store::Store::next_due): on 100,000 runs it answers
//! in about a millisecond on `MemoryStore` and well under 50 ms on
//! `SledStore` (`cargo bench -p workflow-http --bench dashboard --features dashboard`).
//!
//! The pages show the `workflow` CLI commands for what they show
//! (`workflow events RUN`, `workflow unblock RUN`, `workflow runs --status
//! blocked`, `workflow hooks`, …) with a button that copies them.
//!
//! The pages are rendered on the server, with a small script (embedded in
//! the crate, no build step, nothing fetched from elsewhere) that refreshes a
//! run's page every 1.5 s while the run is active (and every 3 s while it has
//! open operations, so that their bars grow), the first page of runs while it
//! is shown, and the overview every 5 s; that shows a waterfall row's details
//! on hover and focus; that copies commands; and that drives the action
//! buttons when actions are enabled. Everything from the store is escaped.
//!
//! # JSON API
//!
//! | method and path | answers |
//! |---|---|
//! | `GET {prefix}/api/runs?status=&workflow=&before=&after=&limit=` | `{"runs": [...], "newer", "older", "limit"}`: newest first; `newer`/`older` are the cursors of the neighbouring pages (`after=newer`, `before=older`), `null` at the ends; `limit` is 1 to 500, default 50 |
//! | `GET {prefix}/api/runs/{id}?from_seq=` | `{"run", "error", "events", "steps", "hooks", "timers", "operations"}`; `events` from `from_seq` on; `operations` are the waterfall's rows (times in ms since the epoch, `end_ms` null while open) |
//! | `GET {prefix}/api/runs/{id}/status` | `{"run"}`: the run as listed, cheap to poll |
//! | `GET {prefix}/api/overview` | the overview's figures: `minutes` (60, oldest first), `by_status` (`{"count", "more"}`), `steps`, `next_due`, `live_hooks`, `hooks`, `blocked`, and what was `sampled` |
//! | `POST {prefix}/api/runs/{id}/cancel` | only with [`DashboardConfig::actions`], with `Authorization: Bearer <token>`: cancels the run |
//! | `POST {prefix}/api/runs/{id}/resume` | likewise: makes a run that has not ended due now; a blocked run is replayed with the current code |
//!
//! Errors are `{"error": "..."}` with `400` (bad parameter), `401` (missing or
//! wrong bearer token), `404` (no such run), `409` (the run has ended) or
//! `503` (the store failed).
//!
//! # Tokens
//!
//! A hook token resumes a run, so by default the dashboard masks every token
//! it knows of a run (`ab12…`), wherever it appears, hides webhook paths, and
//! hides the values of secret-looking headers (`authorization`, `cookie`, …)
//! of recorded requests. [`DashboardConfig::with_show_tokens`] shows them.

mod auth;
mod config;
mod convert;
mod html;
mod model;
mod overview;
mod overview_page;
pub mod views;
mod waterfall;
mod waterfall_svg;

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;
use workflow_core::{Engine, EngineError};
use workflow_store::{RunId, RunStatus, StoreError};

pub use auth::{AdminAuth, EmptyTokenError, SESSION_COOKIE};
pub use config::{ActionsConfig, DashboardConfig, DEFAULT_PREFIX};
pub use convert::{payload_json, time_text};

use html::Site;
use model::{ListQuery, DEFAULT_LIMIT, MAX_LIMIT};

const CSS: &str = include_str!("assets/dashboard.css");
const JS: &str = include_str!("assets/dashboard.js");

/// The content security policy of the pages: scripts and styles only from the
/// dashboard itself, requests only to it, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

#[derive(Clone)]
struct Dashboard {
    engine: Engine,
    config: Arc<DashboardConfig>,
}

impl Dashboard {
    fn site(&self) -> Site<'_> {
        Site {
            prefix: &self.config.prefix,
            actions: self.config.actions.is_some(),
        }
    }
}

/// The dashboard for `engine`, served under `config.prefix`, as a router to
/// merge into your app (it has no state of its own to provide, so it fits
/// any `Router<S>`).
///
/// See the [module documentation](self) for the pages and the JSON API.
///
/// ```no_run
/// use workflow_http::dashboard::{router, ActionsConfig, DashboardConfig};
///
/// # async fn demo(engine: workflow_core::Engine) -> std::io::Result<()> {
/// // On an operators' port: tokens shown, cancel and resume with a bearer token.
/// let config = DashboardConfig::new()
///     .with_prefix("/ops")
///     .with_show_tokens(true)
///     .with_actions(ActionsConfig::new(std::env::var("DASHBOARD_TOKEN").unwrap_or_default()));
/// let app: axum::Router = router(engine, config);
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:9000").await?;
/// axum::serve(listener, app).await
/// # }
/// ```
pub fn router<S>(engine: Engine, config: DashboardConfig) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    // `with_prefix` normalizes; a prefix set on the field directly is
    // normalized here, so that building the router cannot fail.
    let config = DashboardConfig {
        prefix: config::DashboardConfig::new()
            .with_prefix(&config.prefix)
            .prefix,
        ..config
    };
    let p = config.prefix.clone();
    let actions = config.actions.is_some();
    let mut r = Router::new()
        .route(&format!("{p}/"), get(runs_page))
        .route(&format!("{p}/runs/{{id}}"), get(run_page))
        .route(&format!("{p}/overview"), get(overview_page))
        .route(&format!("{p}/api/overview"), get(api_overview))
        .route(&format!("{p}/api/runs"), get(api_runs))
        .route(&format!("{p}/api/runs/{{id}}"), get(api_run))
        .route(&format!("{p}/api/runs/{{id}}/status"), get(api_run_status))
        .route(&format!("{p}/assets/dashboard.css"), get(css))
        .route(&format!("{p}/assets/dashboard.js"), get(js));
    if !p.is_empty() {
        r = r.route(&p, get(runs_page));
    }
    if actions {
        r = r
            .route(&format!("{p}/api/runs/{{id}}/cancel"), post(cancel))
            .route(&format!("{p}/api/runs/{{id}}/resume"), post(resume));
    }
    r.with_state(Dashboard {
        engine,
        config: Arc::new(config),
    })
}

// ---- responses --------------------------------------------------------------

fn common_headers(h: &mut HeaderMap) {
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    common_headers(h);
    r
}

fn json_error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    json_response(status, &json!({ "error": message.to_string() }))
}

fn html_response(status: StatusCode, page: String) -> Response {
    let mut r = (status, page).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    common_headers(h);
    r
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    common_headers(h);
    r
}

/// Why a request could not be answered with data.
enum Failure {
    BadRequest(String),
    NotFound(String),
    Store(StoreError),
}

impl Failure {
    fn status(&self) -> StatusCode {
        match self {
            Failure::BadRequest(_) => StatusCode::BAD_REQUEST,
            Failure::NotFound(_) => StatusCode::NOT_FOUND,
            Failure::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn message(&self) -> String {
        match self {
            Failure::BadRequest(m) | Failure::NotFound(m) => m.clone(),
            Failure::Store(e) => format!("the store failed: {e}"),
        }
    }

    fn json(&self) -> Response {
        json_error(self.status(), self.message())
    }

    fn html(&self, d: &Dashboard) -> Response {
        let title = match self {
            Failure::BadRequest(_) => "Bad request",
            Failure::NotFound(_) => "Not found",
            Failure::Store(_) => "Storage unavailable",
        };
        html_response(
            self.status(),
            html::error_page(&d.site(), title, &self.message()),
        )
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

// ---- parameters -------------------------------------------------------------

/// Decodes a query component: `%XX` escapes and `+` for a space; a malformed
/// escape stays as it is, and bytes that are not UTF-8 become U+FFFD.
fn decode_component(s: &str) -> String {
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// The query's parameters with a value (empty values count as absent).
fn params(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = decode_component(v);
            (!v.is_empty()).then(|| (decode_component(k), v))
        })
        .collect()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn parse_run_id(s: &str) -> Result<RunId, Failure> {
    s.parse()
        .map_err(|e: workflow_store::IdError| Failure::BadRequest(e.to_string()))
}

fn list_query(query: Option<&str>) -> Result<ListQuery, Failure> {
    let ps = params(query);
    let status = match param(&ps, "status") {
        Some(s) => Some(
            RunStatus::ALL
                .into_iter()
                .find(|st| st.as_str() == s)
                .ok_or_else(|| {
                    Failure::BadRequest(format!(
                        "unknown status {s:?}: use pending, running, blocked, completed, failed or cancelled"
                    ))
                })?,
        ),
        None => None,
    };
    let after = param(&ps, "after").map(parse_run_id).transpose()?;
    let before = param(&ps, "before").map(parse_run_id).transpose()?;
    if after.is_some() && before.is_some() {
        return Err(Failure::BadRequest(
            "give either `after` or `before`, not both".to_string(),
        ));
    }
    let limit = match param(&ps, "limit") {
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                Failure::BadRequest(format!(
                    "`limit` must be a number from 1 to {MAX_LIMIT}, not {l:?}"
                ))
            })?,
        None => DEFAULT_LIMIT,
    };
    Ok(ListQuery {
        status,
        workflow: param(&ps, "workflow").map(str::to_string),
        after,
        before,
        limit,
    })
}

// ---- handlers ---------------------------------------------------------------

async fn load_page(d: &Dashboard, query: Option<&str>) -> Result<model::RunsPage, Failure> {
    let q = list_query(query)?;
    Ok(model::runs_page(&d.engine, q, d.config.show_tokens).await?)
}

async fn load_detail(d: &Dashboard, id: &str) -> Result<model::RunDetail, Failure> {
    let id = parse_run_id(id)?;
    model::run_detail(&d.engine, id, d.config.show_tokens)
        .await?
        .ok_or_else(|| Failure::NotFound(format!("run {id} does not exist")))
}

async fn runs_page(State(d): State<Dashboard>, RawQuery(query): RawQuery) -> Response {
    match load_page(&d, query.as_deref()).await {
        Ok(page) => {
            let workflows: Vec<String> = d.engine.workflows().map(str::to_string).collect();
            html_response(
                StatusCode::OK,
                html::runs_page(&d.site(), &workflows, &page),
            )
        }
        Err(f) => f.html(&d),
    }
}

async fn run_page(State(d): State<Dashboard>, Path(id): Path<String>) -> Response {
    match load_detail(&d, &id).await {
        Ok(detail) => html_response(StatusCode::OK, html::run_page(&d.site(), &detail)),
        Err(f) => f.html(&d),
    }
}

async fn overview_page(State(d): State<Dashboard>) -> Response {
    let started = std::time::Instant::now();
    match overview::overview(d.engine.store().as_ref(), d.config.show_tokens).await {
        Ok(o) => html_response(
            StatusCode::OK,
            overview_page::overview_page(&d.site(), &o, started.elapsed()),
        ),
        Err(e) => Failure::from(e).html(&d),
    }
}

async fn api_overview(State(d): State<Dashboard>) -> Response {
    match overview::overview(d.engine.store().as_ref(), d.config.show_tokens).await {
        Ok(o) => json_response(StatusCode::OK, &overview::overview_json(&o)),
        Err(e) => Failure::from(e).json(),
    }
}

async fn api_runs(State(d): State<Dashboard>, RawQuery(query): RawQuery) -> Response {
    match load_page(&d, query.as_deref()).await {
        Ok(page) => json_response(StatusCode::OK, &model::page_json(&page)),
        Err(f) => f.json(),
    }
}

async fn api_run(
    State(d): State<Dashboard>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let ps = params(query.as_deref());
    let from_seq = match param(&ps, "from_seq").map(str::parse::<u64>).transpose() {
        Ok(n) => n.unwrap_or(0),
        Err(_) => {
            return Failure::BadRequest("`from_seq` must be a number".to_string()).json();
        }
    };
    match load_detail(&d, &id).await {
        Ok(detail) => json_response(StatusCode::OK, &model::detail_json(&detail, from_seq)),
        Err(f) => f.json(),
    }
}

async fn api_run_status(State(d): State<Dashboard>, Path(id): Path<String>) -> Response {
    let result = async {
        let id = parse_run_id(&id)?;
        let store = d.engine.store().as_ref();
        let record = store
            .get_run(id)
            .await?
            .ok_or_else(|| Failure::NotFound(format!("run {id} does not exist")))?;
        Ok::<_, Failure>(model::summary(store, record, d.config.show_tokens).await?)
    }
    .await;
    match result {
        Ok(s) => json_response(
            StatusCode::OK,
            &json!({
                "run": model::summary_json(&s),
                "fingerprint": model::summary_fingerprint(&s),
            }),
        ),
        Err(f) => f.json(),
    }
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

/// Checks the bearer token of an action request; `Some(response)` refuses it.
fn refuse_unauthorized(d: &Dashboard, headers: &HeaderMap) -> Option<Response> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match &d.config.actions {
        Some(actions) if actions.allows(given) => None,
        Some(_) => {
            let mut r = json_error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token: send `Authorization: Bearer <token>`",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            Some(r)
        }
        None => Some(json_error(StatusCode::NOT_FOUND, "actions are not enabled")),
    }
}

fn engine_error(e: EngineError) -> Response {
    match e {
        EngineError::RunNotFound { .. } => json_error(StatusCode::NOT_FOUND, e),
        EngineError::RunEnded { .. } => json_error(StatusCode::CONFLICT, e),
        other => json_error(StatusCode::SERVICE_UNAVAILABLE, other),
    }
}

async fn cancel(
    State(d): State<Dashboard>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refuse_unauthorized(&d, &headers) {
        return refused;
    }
    let id = match parse_run_id(&id) {
        Ok(id) => id,
        Err(f) => return f.json(),
    };
    match d.engine.cancel(&id).await {
        Ok(()) => {
            tracing::info!(run = %id, "run cancelled from the dashboard");
            json_response(
                StatusCode::OK,
                &json!({ "run": id.to_string(), "status": "cancelled" }),
            )
        }
        Err(e) => engine_error(e),
    }
}

async fn resume(
    State(d): State<Dashboard>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refuse_unauthorized(&d, &headers) {
        return refused;
    }
    let id = match parse_run_id(&id) {
        Ok(id) => id,
        Err(f) => return f.json(),
    };
    let record = match d.engine.run(&id).await {
        Ok(r) => r,
        Err(e) => return engine_error(e),
    };
    if record.status.is_terminal() {
        return json_error(
            StatusCode::CONFLICT,
            format!(
                "run {id} has ended ({}); it cannot be resumed",
                record.status
            ),
        );
    }
    match d.engine.store().wake(id).await {
        Ok(()) => {
            tracing::info!(run = %id, status = %record.status, "run woken from the dashboard");
            json_response(
                StatusCode::OK,
                &json!({ "run": id.to_string(), "status": record.status.as_str(), "woken": true }),
            )
        }
        Err(StoreError::RunTerminal { run, status }) => json_error(
            StatusCode::CONFLICT,
            format!("run {run} has ended ({status}); it cannot be resumed"),
        ),
        Err(e) => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the store failed: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_decoded() {
        let ps = params(Some("status=&workflow=a+b%2Fc&limit=5&x"));
        assert_eq!(param(&ps, "status"), None);
        assert_eq!(param(&ps, "workflow"), Some("a b/c"));
        assert_eq!(param(&ps, "limit"), Some("5"));
        assert_eq!(decode_component("%zz%41"), "%zzA");
    }

    #[test]
    fn list_queries_are_checked() {
        assert_eq!(list_query(None).ok().map(|q| q.limit), Some(DEFAULT_LIMIT));
        assert!(list_query(Some("status=nope")).is_err());
        assert!(list_query(Some("limit=0")).is_err());
        assert!(list_query(Some("limit=501")).is_err());
        assert!(list_query(Some("before=zzz")).is_err());
        let id = RunId::new();
        assert!(list_query(Some(&format!("before={id}&after={id}"))).is_err());
        let q = list_query(Some(&format!("status=blocked&before={id}"))).ok();
        assert_eq!(q.as_ref().and_then(|q| q.status), Some(RunStatus::Blocked));
        assert_eq!(q.and_then(|q| q.before), Some(id));
    }
}
