//! axum 0.8: a [`router`] serving `/.well-known/workflow/v1/webhook/{token}`
//! for every method, and a [`resume_webhook`] handler for your own route.
//!
//! ```no_run
//! # async fn demo(engine: workflow_core::Engine) -> std::io::Result<()> {
//! let app = axum::Router::new()
//!     .route("/health", axum::routing::get(|| async { "ok" }))
//!     .merge(workflow_http::axum::router(engine));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await
//! # }
//! ```

use std::sync::Arc;

use axum::extract::{OriginalUri, Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use workflow_core::{Engine, WEBHOOK_PATH_PREFIX};

use crate::common::{self, WebhookConfig};
use crate::stream::StreamConfig;

/// The state the [`resume_webhook`] handler needs: an engine and a
/// [`WebhookConfig`]. Cheap to clone.
///
/// With your own application state, let the handler find this one in it:
///
/// ```
/// use axum::extract::FromRef;
/// use workflow_http::axum::WebhookState;
///
/// #[derive(Clone)]
/// struct AppState {
///     webhooks: WebhookState,
///     // ... your own fields
/// }
///
/// impl FromRef<AppState> for WebhookState {
///     fn from_ref(app: &AppState) -> WebhookState {
///         app.webhooks.clone()
///     }
/// }
/// ```
#[derive(Debug, Clone)]
pub struct WebhookState {
    engine: Engine,
    config: Arc<WebhookConfig>,
    streams: StreamConfig,
}

impl WebhookState {
    /// The state for `engine` with the default [`WebhookConfig`].
    ///
    /// ```no_run
    /// # fn demo(engine: workflow_core::Engine) {
    /// let state = workflow_http::axum::WebhookState::new(engine);
    /// # let _ = state;
    /// # }
    /// ```
    pub fn new(engine: Engine) -> Self {
        Self::with_config(engine, WebhookConfig::default())
    }

    /// The state for `engine` with `config`.
    ///
    /// ```no_run
    /// # fn demo(engine: workflow_core::Engine) {
    /// let config = workflow_http::WebhookConfig::new().with_body_limit(64 * 1024);
    /// let state = workflow_http::axum::WebhookState::with_config(engine, config);
    /// # let _ = state;
    /// # }
    /// ```
    pub fn with_config(engine: Engine, config: WebhookConfig) -> Self {
        WebhookState {
            engine,
            config: Arc::new(config),
            streams: StreamConfig::default(),
        }
    }

    /// The same state with the stream route's limits set to `streams`.
    ///
    /// ```no_run
    /// # fn demo(engine: workflow_core::Engine) {
    /// use workflow_http::stream::StreamConfig;
    /// let state = workflow_http::axum::WebhookState::new(engine)
    ///     .with_stream_config(StreamConfig::new().with_max_readers(64));
    /// assert_eq!(state.stream_config().max_readers(), 64);
    /// # }
    /// ```
    pub fn with_stream_config(mut self, streams: StreamConfig) -> Self {
        self.streams = streams;
        self
    }

    /// The stream route's limits.
    ///
    /// ```no_run
    /// # fn demo(engine: workflow_core::Engine) {
    /// let state = workflow_http::axum::WebhookState::new(engine);
    /// assert_eq!(state.stream_config().readers(), 0);
    /// # }
    /// ```
    pub fn stream_config(&self) -> &StreamConfig {
        &self.streams
    }

    /// The engine.
    ///
    /// ```no_run
    /// # fn demo(engine: workflow_core::Engine) {
    /// let state = workflow_http::axum::WebhookState::new(engine);
    /// let _engine: &workflow_core::Engine = state.engine();
    /// # }
    /// ```
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The configuration.
    ///
    /// ```no_run
    /// # fn demo(engine: workflow_core::Engine) {
    /// let state = workflow_http::axum::WebhookState::new(engine);
    /// assert_eq!(state.config().body_limit, workflow_http::DEFAULT_BODY_LIMIT);
    /// # }
    /// ```
    pub fn config(&self) -> &WebhookConfig {
        &self.config
    }
}

impl From<Engine> for WebhookState {
    fn from(engine: Engine) -> Self {
        WebhookState::new(engine)
    }
}

/// A router serving `/.well-known/workflow/v1/webhook/{token}` for every
/// method with the default [`WebhookConfig`]; merge it into your app (it
/// has no state of its own to provide, so it fits any `Router<S>`).
///
/// `/.well-known/workflow/v1/webhook/` (an empty token) is answered `400`.
///
/// ```no_run
/// # fn demo(engine: workflow_core::Engine) {
/// let app: axum::Router = axum::Router::new().merge(workflow_http::axum::router(engine));
/// # let _ = app;
/// # }
/// ```
pub fn router<S>(engine: Engine) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router_with(engine, WebhookConfig::default())
}

/// Like [`router`], with `config`.
///
/// ```no_run
/// # fn demo(engine: workflow_core::Engine) {
/// let config = workflow_http::WebhookConfig::new().with_body_limit(256 * 1024);
/// let app: axum::Router = workflow_http::axum::router_with(engine, config);
/// # let _ = app;
/// # }
/// ```
pub fn router_with<S>(engine: Engine, config: WebhookConfig) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router_with_state(WebhookState::with_config(engine, config))
}

/// Like [`router`], with the webhook and stream configuration of `state`.
///
/// ```no_run
/// # fn demo(engine: workflow_core::Engine) {
/// use workflow_http::{axum::WebhookState, stream::StreamConfig};
/// let state = WebhookState::new(engine).with_stream_config(StreamConfig::new().with_max_readers(8));
/// let app: axum::Router = workflow_http::axum::router_with_state(state);
/// # let _ = app;
/// # }
/// ```
pub fn router_with_state<S>(state: WebhookState) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let with_token = format!("{WEBHOOK_PATH_PREFIX}{{token}}");
    let stream_path = format!("{}{{run}}/{{name}}", crate::stream::STREAM_PATH_PREFIX);
    Router::new()
        .route(&with_token, any(resume_webhook))
        .route(WEBHOOK_PATH_PREFIX, any(empty_token))
        .route(&stream_path, axum::routing::get(read_stream))
        .with_state(state)
}

/// The stream handler: `GET /.well-known/workflow/v1/stream/{run}/{name}`
/// answered by [`crate::stream::stream_response`] (server-sent events, or
/// NDJSON on request). Mounted by [`router`]; mount it yourself on a route
/// with the parameters `run` and `name`.
pub async fn read_stream(
    State(state): State<WebhookState>,
    Path((run, name)): Path<(String, String)>,
    request: Request,
) -> Response {
    let query = request.uri().query().map(str::to_owned);
    crate::stream::stream_response(
        &state.engine,
        &run,
        &name,
        query.as_deref(),
        request.headers(),
        &state.streams,
    )
    .await
    .map(axum::body::Body::new)
    .into_response()
}

/// The handler: resumes the webhook whose token is the route's one path
/// parameter (decoded by axum's [`Path`]) with the request, and answers it.
///
/// Mount it with [`any`] on a route with exactly one parameter, with a
/// [`WebhookState`] as state (or an app state it can be taken from with
/// [`FromRef`](axum::extract::FromRef)). The workflow sees the request's
/// original path and query, also under [`Router::nest`].
///
/// ```no_run
/// use axum::{routing::any, Router};
/// use workflow_http::axum::{resume_webhook, WebhookState};
///
/// # async fn demo(engine: workflow_core::Engine) -> std::io::Result<()> {
/// let app = Router::new()
///     .route("/hooks/{token}", any(resume_webhook))
///     .with_state(WebhookState::new(engine));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// axum::serve(listener, app).await
/// # }
/// ```
pub async fn resume_webhook(
    State(state): State<WebhookState>,
    Path(token): Path<String>,
    request: Request,
) -> Response {
    resume(&state, &token, request).await
}

/// `/.well-known/workflow/v1/webhook/`: the empty token, answered `400`.
async fn empty_token(State(state): State<WebhookState>, request: Request) -> Response {
    resume(&state, "", request).await
}

async fn resume(state: &WebhookState, token: &str, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    if let Some(OriginalUri(uri)) = parts.extensions.get::<OriginalUri>() {
        parts.uri = uri.clone();
    }
    let request = Request::from_parts(parts, body);
    common::resume_webhook(&state.engine, token, request, &state.config)
        .await
        .map(axum::body::Body::from)
        .into_response()
}
