//! The runs dashboard (`workflow_http::dashboard`), served by a real axum
//! server on 127.0.0.1 and read with a real HTTP/1.1 client: the JSON API
//! (list, filters, newest-first paging, detail), token masking, the actions
//! (off by default, bearer token when on), escaping in the HTML pages, and
//! the dashboard behind the admin gate (`AdminAuth`: bearer token, browser
//! sign-in cookie, `Host` check).
#![cfg(feature = "dashboard")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use workflow_core::{Context, Engine, StepError, WebhookOptions, WorkflowError};
use workflow_http::dashboard::{self, ActionsConfig, AdminAuth, DashboardConfig};
use workflow_store::{
    CorrelationId, ErrorRecord, EventData, HookToken, MemoryStore, NewRun, Payload, RunId,
    RunStatus, Store, WebhookResponse,
};

/// A server with the dashboard (and the webhook route) on 127.0.0.1.
struct Server {
    base: String,
    http: Client<HttpConnector, Full<Bytes>>,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

impl Server {
    async fn start(engine: Engine, config: DashboardConfig) -> Server {
        Server::start_app(
            axum::Router::new()
                .merge(workflow_http::axum::router(engine.clone()))
                .merge(dashboard::router(engine, config)),
        )
        .await
    }

    /// The dashboard behind `auth`, beside the (open) webhook route.
    async fn start_behind(engine: Engine, config: DashboardConfig, auth: &AdminAuth) -> Server {
        Server::start_app(
            axum::Router::new()
                .merge(workflow_http::axum::router(engine.clone()))
                .merge(auth.protect(dashboard::router(engine, config))),
        )
        .await
    }

    async fn start_app(app: axum::Router) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Server {
            base: format!("http://{addr}"),
            http: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn send(&self, method: Method, path: &str, auth: Option<&str>, body: &str) -> Answer {
        let bearer = auth.map(|token| format!("Bearer {token}"));
        let headers: Vec<(&str, &str)> = bearer
            .as_deref()
            .map(|b| ("authorization", b))
            .into_iter()
            .collect();
        self.send_with(method, path, &headers, body).await
    }

    async fn send_with(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("request");
        let resp = self.http.request(req).await.expect("response");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None, "").await
    }

    async fn get_json(&self, path: &str) -> Value {
        let a = self.get(path).await;
        assert_eq!(a.status, StatusCode::OK, "GET {path}: {}", a.body);
        assert_eq!(a.headers["content-type"], "application/json");
        a.json()
    }

    async fn get_authorized(&self, path: &str, token: &str) -> Answer {
        self.send(Method::GET, path, Some(token), "").await
    }

    async fn post(&self, path: &str, auth: Option<&str>) -> Answer {
        self.send(Method::POST, path, auth, "").await
    }
}

const P: &str = "/workflow/dashboard";

fn cid(s: &str) -> CorrelationId {
    CorrelationId::new(s).expect("correlation id")
}

fn payload(v: Value) -> Payload {
    Payload::encode(&v).expect("encode")
}

/// A ULID-like run id created `ms` milliseconds after the epoch.
fn id_at(ms: u64, low: u128) -> RunId {
    RunId::from_u128((u128::from(ms) << 80) | low)
}

async fn create(store: &dyn Store, id: RunId, workflow: &str, input: Value) -> RunId {
    store
        .create_run(NewRun {
            id,
            workflow: workflow.to_string(),
            input: payload(input),
        })
        .await
        .expect("create run");
    id
}

async fn append(store: &dyn Store, run: RunId, events: Vec<EventData>) {
    store.append(run, events, None).await.expect("append");
}

/// An engine (no workers) on a memory store the test writes to directly.
fn new_engine() -> (Engine, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::builder(store.clone())
        .workflow("orders", |_: Context, _: Value| async {
            Ok::<_, WorkflowError>(())
        })
        .workflow("alpha", |_: Context, _: Value| async {
            Ok::<_, WorkflowError>(())
        })
        .build();
    (engine, store)
}

const SECRET: &str = "order-secret-token-42";
const XSS: &str = "<script>alert('owned')</script>";

/// A run waiting on a retry, a webhook, a plain hook and a sleep, with a
/// token and markup in its payloads.
async fn rich_run(store: &dyn Store) -> RunId {
    let now = store.now();
    let run = create(
        store,
        RunId::new(),
        "orders",
        json!({ "id": 42, "note": XSS }),
    )
    .await;
    append(
        store,
        run,
        vec![
            EventData::RunStarted,
            EventData::StepCreated {
                step: cid("step:0"),
                name: "notify".into(),
                input_digest: None,
            },
            EventData::StepStarted {
                step: cid("step:0"),
                attempt: 1,
            },
            EventData::StepCompleted {
                step: cid("step:0"),
                result: payload(json!(format!(
                    "POST /.well-known/workflow/v1/webhook/{SECRET}"
                ))),
            },
            EventData::HookCreated {
                hook: cid("hook:1"),
                token: HookToken::new(SECRET).expect("token"),
                metadata: Some(payload(json!({ "order": 42 }))),
                webhook: Some(WebhookResponse::Manual { timeout_ms: 30_000 }),
            },
            EventData::HookReceived {
                hook: cid("hook:1"),
                payload: payload(json!({
                    "request_id": "r1",
                    "method": "POST",
                    "uri": format!("/.well-known/workflow/v1/webhook/{SECRET}?x=1"),
                    "headers": [["authorization", "Bearer caller-secret"], ["content-type", "text/plain"]],
                    "body": XSS,
                })),
            },
            EventData::HookCreated {
                hook: cid("hook:2"),
                token: HookToken::new("plain-hook-token-7").expect("token"),
                metadata: None,
                webhook: None,
            },
            EventData::StepCreated {
                step: cid("step:3"),
                name: "charge".into(),
                input_digest: None,
            },
            EventData::StepStarted {
                step: cid("step:3"),
                attempt: 1,
            },
            EventData::StepRetrying {
                step: cid("step:3"),
                error: ErrorRecord::new("card declined <b>twice</b>"),
                retry_at: now.saturating_add(Duration::from_secs(60)),
            },
            EventData::WaitCreated {
                wait: cid("wait:4"),
                resume_at: now.saturating_add(Duration::from_secs(3600)),
            },
        ],
    )
    .await;
    run
}

async fn blocked_run(store: &dyn Store) -> RunId {
    let run = create(store, RunId::new(), "orders", json!({ "id": 1 })).await;
    append(
        store,
        run,
        vec![
            EventData::RunStarted,
            EventData::RunBlocked {
                error: ErrorRecord::new(
                    "nondeterminism at position 0: the log has step \"a\", the code issued step \"b\"",
                ),
            },
        ],
    )
    .await;
    run
}

fn kinds(detail: &Value) -> Vec<String> {
    detail["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["kind"].as_str().expect("kind").to_string())
        .collect()
}

fn ids(page: &Value) -> Vec<String> {
    page["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_detail_json_has_events_steps_hooks_and_timers() {
    let (engine, store) = new_engine();
    let run = rich_run(store.as_ref()).await;
    let s = Server::start(engine, DashboardConfig::new().with_show_tokens(true)).await;
    let d = s.get_json(&format!("{P}/api/runs/{run}")).await;

    assert_eq!(d["run"]["id"], run.to_string());
    assert_eq!(d["run"]["workflow"], "orders");
    assert_eq!(d["run"]["status"], "running");
    assert_eq!(d["run"]["active"], true);
    assert_eq!(d["run"]["last_event"]["kind"], "wait_created");
    assert_eq!(
        kinds(&d),
        [
            "run_created",
            "run_started",
            "step_created",
            "step_started",
            "step_completed",
            "hook_created",
            "hook_received",
            "hook_created",
            "step_created",
            "step_started",
            "step_retrying",
            "wait_created"
        ]
    );
    let events = d["events"].as_array().expect("events");
    // Decoded payloads, seq, correlation ids, step names and attempts.
    assert_eq!(events[0]["seq"], 0);
    assert_eq!(events[0]["data"]["input"], json!({ "id": 42, "note": XSS }));
    assert_eq!(events[9]["correlation"], "step:3");
    assert_eq!(events[9]["step"], "charge");
    assert_eq!(events[9]["attempt"], 1);
    assert_eq!(events[10]["error"], "card declined <b>twice</b>");
    assert_eq!(events[6]["data"]["payload"]["body"], XSS);
    assert!(events[0]["time"].as_str().expect("time").ends_with('Z'));

    // Steps with attempts and errors.
    let steps = d["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0]["state"], "completed");
    assert_eq!(steps[1]["name"], "charge");
    assert_eq!(steps[1]["state"], "retrying");
    assert_eq!(steps[1]["attempts"], 1);

    // Live hooks, shown in full here.
    let hooks = d["hooks"].as_array().expect("hooks");
    assert_eq!(hooks.len(), 2);
    assert_eq!(hooks[0]["token"], SECRET);
    assert_eq!(
        hooks[0]["webhook_path"],
        format!("/.well-known/workflow/v1/webhook/{SECRET}")
    );
    assert_eq!(hooks[0]["metadata"], json!({ "order": 42 }));
    assert_eq!(hooks[1]["token"], "plain-hook-token-7");
    assert_eq!(hooks[1]["webhook_path"], Value::Null);

    // Pending timers, soonest first, with due times.
    let timers = d["timers"].as_array().expect("timers");
    assert_eq!(timers.len(), 2);
    assert_eq!(timers[0]["kind"], "retry");
    assert_eq!(timers[0]["step"], "charge");
    assert_eq!(timers[0]["attempt"], 2);
    assert_eq!(timers[1]["kind"], "sleep");
    assert_eq!(timers[1]["correlation"], "wait:4");
    assert!(timers[0]["due_at"].as_u64() < timers[1]["due_at"].as_u64());
    assert!(timers[1]["due_in"]
        .as_str()
        .expect("due_in")
        .starts_with("in "));

    // `from_seq` limits the events, not the rest.
    let tail = s.get_json(&format!("{P}/api/runs/{run}?from_seq=10")).await;
    assert_eq!(kinds(&tail), ["step_retrying", "wait_created"]);
    assert_eq!(tail["timers"].as_array().map(Vec::len), Some(2));

    // The cheap status endpoint the pages poll.
    let st = s.get_json(&format!("{P}/api/runs/{run}/status")).await;
    assert_eq!(st["run"]["events"], 12);
    assert_eq!(st["fingerprint"], format!("{run}:running:12"));

    // A timer that fired, or a retry that ran, is no longer pending.
    append(
        store.as_ref(),
        run,
        vec![
            EventData::WaitCompleted {
                wait: cid("wait:4"),
            },
            EventData::StepStarted {
                step: cid("step:3"),
                attempt: 2,
            },
        ],
    )
    .await;
    let d = s.get_json(&format!("{P}/api/runs/{run}")).await;
    assert_eq!(d["timers"], json!([]));
    assert_eq!(d["steps"][1]["attempts"], 2);
    assert_eq!(d["steps"][1]["state"], "running");

    // Unknown and malformed ids.
    let a = s.get(&format!("{P}/api/runs/{}", RunId::new())).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(a.json()["error"]
        .as_str()
        .expect("error")
        .contains("does not exist"));
    assert_eq!(
        s.get(&format!("{P}/api/runs/nope")).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        s.get(&format!("{P}/runs/nope")).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        s.get(&format!("{P}/runs/{}", RunId::new())).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_masked_unless_enabled() {
    let (engine, store) = new_engine();
    let run = rich_run(store.as_ref()).await;
    let s = Server::start(engine, DashboardConfig::default()).await;

    let detail = s.get(&format!("{P}/api/runs/{run}")).await;
    let page = s.get(&format!("{P}/runs/{run}")).await;
    for (what, body) in [("JSON", &detail.body), ("HTML", &page.body)] {
        assert!(!body.contains(SECRET), "{what} shows the token: {body}");
        assert!(!body.contains("plain-hook-token-7"), "{what} shows a token");
        assert!(
            !body.contains("caller-secret"),
            "{what} shows a secret header"
        );
        assert!(
            !body.contains("/.well-known/workflow/v1/webhook/order"),
            "{what} shows a webhook path"
        );
    }
    let d = detail.json();
    assert_eq!(d["tokens_masked"], true);
    assert_eq!(d["hooks"][0]["token"], "orde…");
    assert_eq!(d["hooks"][0]["webhook_path"], Value::Null);
    assert!(
        d["hooks"][0]["webhook"].is_string(),
        "still says it is a webhook"
    );
    assert_eq!(d["hooks"][1]["token"], "plai…");
    let received = &d["events"][6]["data"]["payload"];
    assert_eq!(
        received["uri"],
        "/.well-known/workflow/v1/webhook/orde…?x=1"
    );
    assert_eq!(received["headers"][0][1], "[hidden]");
    assert_eq!(received["headers"][1][1], "text/plain");
    assert_eq!(
        d["events"][4]["data"]["result"],
        "POST /.well-known/workflow/v1/webhook/orde…"
    );
    assert!(page.body.contains("orde…"));
    assert!(page.body.contains("path hidden"));

    // Shown in full when enabled.
    let (engine2, store2) = new_engine();
    let run2 = rich_run(store2.as_ref()).await;
    let s2 = Server::start(engine2, DashboardConfig::new().with_show_tokens(true)).await;
    let page = s2.get(&format!("{P}/runs/{run2}")).await;
    assert!(page.body.contains(SECRET));
    assert!(page
        .body
        .contains(&format!("/.well-known/workflow/v1/webhook/{SECRET}")));
    let d = s2.get_json(&format!("{P}/api/runs/{run2}")).await;
    assert_eq!(d["tokens_masked"], false);
    assert_eq!(
        d["events"][6]["data"]["payload"]["headers"][0][1],
        "Bearer caller-secret"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_list_is_newest_first_with_filters() {
    let (engine, store) = new_engine();
    let st = store.as_ref();
    let now = st.now().as_millis();
    let mut made = Vec::new();
    for (i, (age_ms, workflow)) in [
        (90 * 86_400_000u64, "alpha"),
        (86_400_000, "orders"),
        (3_600_000, "alpha"),
        (1_000, "orders"),
        (10, "alpha"),
    ]
    .into_iter()
    .enumerate()
    {
        let id = create(st, id_at(now - age_ms, 7), workflow, json!({ "i": i })).await;
        made.push(id);
    }
    // The first and the fourth complete; the third fails.
    for id in [made[0], made[3]] {
        append(
            st,
            id,
            vec![
                EventData::RunStarted,
                EventData::RunCompleted {
                    output: payload(json!("ok")),
                },
            ],
        )
        .await;
    }
    append(
        st,
        made[2],
        vec![EventData::RunFailed {
            error: ErrorRecord::new("boom"),
        }],
    )
    .await;
    let s = Server::start(engine, DashboardConfig::default()).await;

    let all = s.get_json(&format!("{P}/api/runs")).await;
    let newest_first: Vec<String> = made.iter().rev().map(RunId::to_string).collect();
    assert_eq!(ids(&all), newest_first);
    assert_eq!(all["newer"], Value::Null);
    assert_eq!(all["older"], Value::Null);
    assert_eq!(all["limit"], 50);
    let first = &all["runs"][0];
    assert_eq!(first["workflow"], "alpha");
    assert_eq!(first["status"], "pending");
    assert_eq!(first["events"], 1);
    assert_eq!(first["last_event"]["kind"], "run_created");
    let failed = &all["runs"][2];
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"], "boom");
    assert_eq!(failed["last_event"]["kind"], "run_failed");

    let completed = s.get_json(&format!("{P}/api/runs?status=completed")).await;
    assert_eq!(ids(&completed), [made[3].to_string(), made[0].to_string()]);
    let alpha = s.get_json(&format!("{P}/api/runs?workflow=alpha")).await;
    assert_eq!(
        ids(&alpha),
        [
            made[4].to_string(),
            made[2].to_string(),
            made[0].to_string()
        ]
    );
    let both = s
        .get_json(&format!("{P}/api/runs?workflow=alpha&status=pending"))
        .await;
    assert_eq!(ids(&both), [made[4].to_string()]);
    let none = s.get_json(&format!("{P}/api/runs?workflow=nope")).await;
    assert_eq!(ids(&none), Vec::<String>::new());

    for bad in [
        "status=sleeping",
        "limit=0",
        "limit=many",
        "before=not-an-id",
        &format!("before={}&after={}", made[0], made[1]),
    ] {
        let a = s.get(&format!("{P}/api/runs?{bad}")).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(a.json()["error"].is_string());
    }

    // The HTML list has the same runs, filters and a live marker.
    let page = s.get(&format!("{P}/?status=completed")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(&made[3].to_string()));
    assert!(!page.body.contains(&made[4].to_string()));
    assert!(page.body.contains("<option value=\"completed\" selected>"));
    assert!(page.body.contains("data-poll="));
    // The prefix without its slash serves the list too.
    assert_eq!(s.get(P).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_walks_every_run_newest_first_both_ways() {
    let (engine, store) = new_engine();
    let st = store.as_ref();
    let now = st.now().as_millis();
    let mut made = Vec::new();
    // Runs spread over a year, a burst in the same millisecond, and ids
    // that are not time-based at all (the oldest in id order).
    for (n, age) in [
        400 * 86_400_000u64,
        40 * 86_400_000,
        86_400_000,
        7_200_000,
        300_000,
        30_000,
        5,
    ]
    .into_iter()
    .enumerate()
    {
        made.push(
            create(
                st,
                id_at(now - age, 1),
                if n % 2 == 0 { "alpha" } else { "orders" },
                json!(n),
            )
            .await,
        );
    }
    for low in 2..5u128 {
        made.push(create(st, id_at(now - 5, low), "alpha", json!(low)).await);
    }
    for small in [3u128, 9] {
        made.push(create(st, RunId::from_u128(small), "orders", json!(small)).await);
    }
    let mut expected: Vec<RunId> = made.clone();
    expected.sort();
    expected.reverse();
    let expected: Vec<String> = expected.iter().map(RunId::to_string).collect();
    let s = Server::start(engine, DashboardConfig::default()).await;

    for limit in [1usize, 3, 4, 12, 13] {
        // Older and older.
        let mut seen = Vec::new();
        let mut pages = Vec::new();
        let mut url = format!("{P}/api/runs?limit={limit}");
        loop {
            let page = s.get_json(&url).await;
            let got = ids(&page);
            assert!(got.len() <= limit);
            if !seen.is_empty() {
                assert_eq!(page["newer"], json!(got[0]), "limit {limit}");
            }
            seen.extend(got);
            pages.push(page.clone());
            match page["older"].as_str() {
                Some(older) => url = format!("{P}/api/runs?limit={limit}&before={older}"),
                None => break,
            }
        }
        assert_eq!(seen, expected, "limit {limit}");
        assert_eq!(pages.len(), expected.len().div_ceil(limit));
        // And back, newer and newer, from the oldest page.
        let mut back = Vec::new();
        let mut page = pages.pop().expect("a page");
        loop {
            let mut got = ids(&page);
            got.extend(back);
            back = got;
            match page["newer"].as_str() {
                Some(newer) => {
                    page = s
                        .get_json(&format!("{P}/api/runs?limit={limit}&after={newer}"))
                        .await;
                    assert!(page["older"].is_string());
                }
                None => break,
            }
        }
        assert_eq!(back, expected, "limit {limit}, newer");
    }

    // Paging within a filter.
    let alpha: Vec<String> = expected
        .iter()
        .filter(|id| {
            let i = made
                .iter()
                .position(|m| m.to_string() == **id)
                .expect("made");
            (i < 7 && i % 2 == 0) || (7..10).contains(&i)
        })
        .cloned()
        .collect();
    let mut seen = Vec::new();
    let mut url = format!("{P}/api/runs?workflow=alpha&limit=2");
    loop {
        let page = s.get_json(&url).await;
        seen.extend(ids(&page));
        match page["older"].as_str() {
            Some(older) => url = format!("{P}/api/runs?workflow=alpha&limit=2&before={older}"),
            None => break,
        }
    }
    assert_eq!(seen, alpha);

    // The HTML pages link to their neighbours with the filters kept.
    let first = s
        .get_json(&format!("{P}/api/runs?workflow=alpha&limit=2"))
        .await;
    let older = first["older"].as_str().expect("older");
    let html = s
        .get(&format!("{P}/?workflow=alpha&limit=2&before={older}"))
        .await;
    assert!(html.body.contains("?before="), "{}", html.body);
    assert!(html.body.contains("?after="), "{}", html.body);
    assert!(html.body.contains("&amp;workflow=alpha&amp;limit=2"));
    assert!(html.body.contains("Newest"));
    assert!(
        !html.body.contains("data-poll="),
        "only the first page polls"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_and_failed_runs_show_their_errors() {
    let (engine, store) = new_engine();
    let blocked = blocked_run(store.as_ref()).await;
    let s = Server::start(engine, DashboardConfig::default()).await;
    let d = s.get_json(&format!("{P}/api/runs/{blocked}")).await;
    assert_eq!(d["run"]["status"], "blocked");
    assert_eq!(d["error"]["kind"], "nondeterminism");
    assert!(d["error"]["message"]
        .as_str()
        .expect("message")
        .contains("the code issued step \"b\""));
    let page = s.get(&format!("{P}/runs/{blocked}")).await;
    assert!(page.body.contains("nondeterminism"));
    assert!(page.body.contains("the code issued step &quot;b&quot;"));
    assert!(page.body.contains("id=\"run-error\""));
    // Blocked is not terminal: the page keeps polling.
    assert!(page.body.contains("data-poll="));
    // No action buttons on a read-only dashboard.
    assert!(!page.body.contains("data-action="));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_are_off_by_default() {
    let (engine, store) = new_engine();
    let run = blocked_run(store.as_ref()).await;
    let s = Server::start(engine, DashboardConfig::default()).await;
    for action in ["cancel", "resume"] {
        for auth in [None, Some("anything")] {
            let a = s.post(&format!("{P}/api/runs/{run}/{action}"), auth).await;
            assert!(
                a.status == StatusCode::NOT_FOUND || a.status == StatusCode::METHOD_NOT_ALLOWED,
                "{action}: {}",
                a.status
            );
        }
    }
    // No other write either.
    let a = s.post(&format!("{P}/api/runs/{run}"), None).await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    let a = s.post(&format!("{P}/api/runs"), None).await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        store.get_run(run).await.expect("run").map(|r| r.status),
        Some(RunStatus::Blocked)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_require_the_bearer_token() {
    let (engine, store) = new_engine();
    let st = store.as_ref();
    let blocked = blocked_run(st).await;
    let running = rich_run(st).await;
    let config = DashboardConfig::new().with_actions(ActionsConfig::new("op-token"));
    let s = Server::start(engine, config).await;

    let page = s.get(&format!("{P}/runs/{running}")).await;
    assert!(page.body.contains("data-action=\"cancel\""));
    assert!(page.body.contains("actions enabled"));

    let cancel = format!("{P}/api/runs/{running}/cancel");
    for auth in [None, Some("wrong"), Some("op-token2"), Some("op-toke")] {
        let a = s.post(&cancel, auth).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(a.headers["www-authenticate"], "Bearer");
    }
    let a = s.send(Method::POST, &cancel, None, "").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        st.get_run(running).await.expect("run").map(|r| r.status),
        Some(RunStatus::Running)
    );

    let a = s.post(&cancel, Some("op-token")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.json()["status"], "cancelled");
    assert_eq!(
        st.get_run(running).await.expect("run").map(|r| r.status),
        Some(RunStatus::Cancelled)
    );
    // Ended: cancelling or resuming again is a conflict.
    assert_eq!(
        s.post(&cancel, Some("op-token")).await.status,
        StatusCode::CONFLICT
    );
    let resume_ended = format!("{P}/api/runs/{running}/resume");
    assert_eq!(
        s.post(&resume_ended, Some("op-token")).await.status,
        StatusCode::CONFLICT
    );
    // No buttons on an ended run.
    let page = s.get(&format!("{P}/runs/{running}")).await;
    assert!(!page.body.contains("data-action="));

    // Resume wakes a blocked run.
    let resume = format!("{P}/api/runs/{blocked}/resume");
    assert_eq!(
        s.post(&resume, Some("nope")).await.status,
        StatusCode::UNAUTHORIZED
    );
    let a = s.post(&resume, Some("op-token")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.json()["woken"], true);
    assert!(st.next_due().await.expect("next due").is_some());

    // Unknown and malformed runs.
    let a = s
        .post(
            &format!("{P}/api/runs/{}/cancel", RunId::new()),
            Some("op-token"),
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = s
        .post(&format!("{P}/api/runs/x/cancel"), Some("op-token"))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);

    // An empty configured token locks the actions.
    let (engine, store) = new_engine();
    let run = blocked_run(store.as_ref()).await;
    let s = Server::start(
        engine,
        DashboardConfig::new().with_actions(ActionsConfig::new("")),
    )
    .await;
    let a = s
        .send(
            Method::POST,
            &format!("{P}/api/runs/{run}/cancel"),
            Some(""),
            "",
        )
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_escapes_payloads_and_names() {
    let (engine, store) = new_engine();
    let st = store.as_ref();
    let run = rich_run(st).await;
    let evil = create(st, RunId::new(), "<img src=x onerror=alert(1)>", json!(XSS)).await;
    append(
        st,
        evil,
        vec![EventData::RunFailed {
            error: ErrorRecord::new("<script>alert(2)</script>"),
        }],
    )
    .await;
    let s = Server::start(engine, DashboardConfig::default()).await;

    for path in [
        format!("{P}/runs/{run}"),
        format!("{P}/runs/{evil}"),
        format!("{P}/"),
        format!("{P}/?workflow=%3Cscript%3Ealert(3)%3C%2Fscript%3E"),
    ] {
        let page = s.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert_eq!(page.headers["content-type"], "text/html; charset=utf-8");
        let csp = page.headers["content-security-policy"]
            .to_str()
            .expect("csp");
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert_eq!(page.headers["x-content-type-options"], "nosniff");
        // The only script element is the dashboard's own.
        assert_eq!(
            page.body.matches("<script").count(),
            1,
            "{path}: {}",
            page.body
        );
        assert!(page.body.contains(&format!(
            "<script src=\"{P}/assets/dashboard.js\" defer></script>"
        )));
        assert!(!page.body.contains("<img"), "{path}");
        assert!(!page.body.contains("<b>twice"), "{path}");
    }
    let page = s.get(&format!("{P}/runs/{run}")).await;
    assert!(page
        .body
        .contains("&lt;script&gt;alert(&#39;owned&#39;)&lt;/script&gt;"));
    assert!(page.body.contains("card declined &lt;b&gt;twice&lt;/b&gt;"));
    let page = s.get(&format!("{P}/runs/{evil}")).await;
    assert!(page.body.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(page.body.contains("&lt;script&gt;alert(2)&lt;/script&gt;"));
    let page = s
        .get(&format!(
            "{P}/?workflow=%3Cscript%3Ealert(3)%3C%2Fscript%3E"
        ))
        .await;
    assert!(page.body.contains("&lt;script&gt;alert(3)&lt;/script&gt;"));

    // The embedded assets.
    let js = s.get(&format!("{P}/assets/dashboard.js")).await;
    assert_eq!(js.status, StatusCode::OK);
    assert!(js.headers["content-type"]
        .to_str()
        .expect("type")
        .starts_with("text/javascript"));
    assert!(js.body.contains("data-poll") || js.body.contains("dataset.poll"));
    let css = s.get(&format!("{P}/assets/dashboard.css")).await;
    assert!(css.headers["content-type"]
        .to_str()
        .expect("type")
        .starts_with("text/css"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_prefix_moves_everything() {
    let (engine, store) = new_engine();
    let run = blocked_run(store.as_ref()).await;
    let s = Server::start(engine, DashboardConfig::new().with_prefix("/ops/runs/")).await;
    let page = s.get("/ops/runs/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page
        .body
        .contains(&format!("href=\"/ops/runs/runs/{run}\"")));
    assert!(page.body.contains("/ops/runs/assets/dashboard.css"));
    let d = s.get_json(&format!("/ops/runs/api/runs/{run}")).await;
    assert_eq!(d["run"]["id"], run.to_string());
    assert_eq!(s.get(&format!("{P}/")).await.status, StatusCode::NOT_FOUND);
}

/// Resumes a manual webhook, answers the request, sleeps, finishes.
async fn approve(ctx: Context, id: u64) -> Result<String, WorkflowError> {
    let mut webhook = ctx.create_webhook(
        WebhookOptions::token(format!("order:{id}")).manual(Duration::from_secs(10)),
    )?;
    let path = webhook.path();
    ctx.step("notify", move |_| {
        let path = path.clone();
        async move { Ok::<_, StepError>(path) }
    })
    .await?;
    let request = webhook.next().await?;
    request.respond(http::Response::new(Bytes::from_static(b"thanks")));
    webhook.dispose();
    ctx.sleep(Duration::from_millis(50)).await?;
    ctx.step("charge", |s| async move {
        Ok::<_, StepError>(format!("charged, attempt {}", s.attempt()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_driven_by_the_engine_is_shown_as_it_goes() {
    let engine = Engine::builder(MemoryStore::new())
        .workflow("approve", approve)
        .build();
    engine.start_workers();
    let s = Server::start(engine.clone(), DashboardConfig::default()).await;
    let run = engine.start("approve", &4242u64).await.expect("start");

    // Waiting on its webhook: a live hook, masked.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let d = s.get_json(&format!("{P}/api/runs/{run}")).await;
        if d["hooks"].as_array().is_some_and(|h| !h.is_empty()) {
            assert_eq!(d["hooks"][0]["token"], "ord…");
            assert!(!d.to_string().contains("order:4242"), "{d}");
            assert_eq!(d["run"]["active"], true);
            let page = s.get(&format!("{P}/runs/{run}")).await;
            assert!(
                page.body.contains("data-poll="),
                "an active run's page polls"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the webhook never became live: {d}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let a = s
        .send(
            Method::POST,
            "/.well-known/workflow/v1/webhook/order%3A4242",
            None,
            "{\"approved\":true}",
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body, "thanks");
    let _: String = engine.result(&run).await.expect("result");

    let d = s.get_json(&format!("{P}/api/runs/{run}")).await;
    assert_eq!(d["run"]["status"], "completed");
    assert_eq!(d["run"]["active"], false);
    let k = kinds(&d);
    for want in [
        "run_created",
        "hook_created",
        "hook_received",
        "hook_responded",
        "hook_disposed",
        "wait_created",
        "wait_completed",
        "step_completed",
        "run_completed",
    ] {
        assert!(k.iter().any(|x| x == want), "{want} missing from {k:?}");
    }
    assert_eq!(d["hooks"], json!([]));
    assert_eq!(d["timers"], json!([]));
    let received = d["events"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["kind"] == "hook_received"))
        .expect("hook_received");
    assert_eq!(received["data"]["payload"]["body"], "{\"approved\":true}");
    assert_eq!(received["data"]["payload"]["method"], "POST");
    let page = s.get(&format!("{P}/runs/{run}")).await;
    assert!(
        !page.body.contains("data-poll="),
        "an ended run's page does not poll"
    );
    assert!(page.body.contains("run_completed"));
    let list = s.get_json(&format!("{P}/api/runs?workflow=approve")).await;
    assert_eq!(ids(&list), [run.to_string()]);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_the_admin_gate_pages_and_data_need_the_token() {
    let (engine, store) = new_engine();
    let run = rich_run(store.as_ref()).await;
    assert!(
        AdminAuth::with_token("").is_err(),
        "an empty token is refused"
    );
    let auth = AdminAuth::with_token("dash-token")
        .expect("token")
        .loopback_hosts_only();
    // Tokens in clear, since only callers with the admin token get through.
    let s =
        Server::start_behind(engine, DashboardConfig::new().with_show_tokens(true), &auth).await;
    let host = s.base.trim_start_matches("http://").to_string();
    let paths = [
        format!("{P}/"),
        format!("{P}/runs/{run}"),
        format!("{P}/api/runs"),
        format!("{P}/api/runs/{run}"),
        format!("{P}/api/runs/{run}/status"),
        format!("{P}/assets/dashboard.js"),
    ];
    for path in &paths {
        for headers in [
            vec![],
            vec![("authorization", "Bearer dash-toke")],
            vec![("authorization", "Bearer dash-token2")],
            vec![("authorization", "Basic dash-token")],
            vec![("cookie", "workflow_admin=dash-tokem")],
        ] {
            let a = s.send_with(Method::GET, path, &headers, "").await;
            assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{path} {headers:?}");
            assert_eq!(a.headers["www-authenticate"], "Bearer");
            assert!(!a.body.contains(SECRET), "{path} leaks the token");
        }
        let a = s.get_authorized(path, "dash-token").await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.body);
    }
    let d = s
        .get_authorized(&format!("{P}/api/runs/{run}"), "dash-token")
        .await;
    assert_eq!(d.json()["hooks"][0]["token"], SECRET);

    // A browser: a page that says how, then `?token=` once, then the cookie.
    let a = s
        .send_with(
            Method::GET,
            &format!("{P}/"),
            &[("accept", "text/html")],
            "",
        )
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(a.headers["content-type"]
        .to_str()
        .expect("type")
        .starts_with("text/html"));
    assert!(a.body.contains("?token="), "{}", a.body);
    let a = s
        .get(&format!("{P}/runs/{run}?from=list&token=dash-token"))
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(a.headers["location"], format!("{P}/runs/{run}?from=list"));
    let cookie = a.headers["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    let pair = cookie.split(';').next().expect("name=value").to_string();
    let a = s
        .send_with(
            Method::GET,
            &format!("{P}/runs/{run}"),
            &[("cookie", &pair)],
            "",
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.body.contains(SECRET));
    let a = s.get(&format!("{P}/?token=nope")).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(!a.headers.contains_key("set-cookie"));

    // Other host names are refused, token or not (DNS rebinding).
    for bad in ["rebound.example", "rebound.example:80", "127.0.0.1.nip.io"] {
        let a = s
            .send_with(
                Method::GET,
                &format!("{P}/api/runs"),
                &[("host", bad), ("authorization", "Bearer dash-token")],
                "",
            )
            .await;
        assert_eq!(a.status, StatusCode::MISDIRECTED_REQUEST, "{bad}");
    }
    let port = host.rsplit(':').next().expect("port");
    for good in [
        format!("localhost:{port}"),
        "[::1]".to_string(),
        host.clone(),
    ] {
        let a = s
            .send_with(
                Method::GET,
                &format!("{P}/api/runs"),
                &[("host", &good), ("authorization", "Bearer dash-token")],
                "",
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{good}");
    }

    // The webhook route beside it is not behind the gate.
    let a = s
        .send_with(
            Method::POST,
            "/.well-known/workflow/v1/webhook/nobody",
            &[("host", "rebound.example")],
            "",
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waterfall_and_overview_escape_hostile_names_errors_and_tokens() {
    let (engine, store) = new_engine();
    let st = store.as_ref();
    let now = st.now();
    let run = create(st, RunId::new(), "<svg onload=alert(1)>", json!({})).await;
    let token = "o'brien&co;x=<1>";
    let hook_token = HookToken::new("o'brien&co;x=1").expect("token");
    append(
        st,
        run,
        vec![
            EventData::RunStarted,
            EventData::StepCreated {
                step: cid("step:0"),
                name: "\"><script>alert(4)</script>".into(),
                input_digest: None,
            },
            EventData::StepStarted {
                step: cid("step:0"),
                attempt: 1,
            },
            EventData::StepRetrying {
                step: cid("step:0"),
                error: ErrorRecord::new("<img src=x onerror=alert(5)>"),
                retry_at: now.saturating_add(Duration::from_secs(60)),
            },
            EventData::HookCreated {
                hook: cid("hook:1"),
                token: hook_token.clone(),
                metadata: None,
                webhook: Some(WebhookResponse::Accepted),
            },
        ],
    )
    .await;
    let blocked = create(st, RunId::new(), "<svg onload=alert(6)>", json!({})).await;
    append(
        st,
        blocked,
        vec![
            EventData::RunStarted,
            EventData::RunBlocked {
                error: ErrorRecord::new("</pre><img src=x onerror=alert(7)>"),
            },
        ],
    )
    .await;
    assert!(HookToken::new(token).is_err(), "markup is not a token");
    let s = Server::start(engine, DashboardConfig::new().with_show_tokens(true)).await;

    for path in [
        format!("{P}/runs/{run}"),
        format!("{P}/runs/{blocked}"),
        format!("{P}/overview"),
        format!("{P}/"),
    ] {
        let page = s.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert_eq!(page.body.matches("<script").count(), 1, "{path}");
        for raw in ["<img", "<svg onload", "\"><script>alert(4)"] {
            assert!(!page.body.contains(raw), "{path} has {raw}: {}", page.body);
        }
    }
    let page = s.get(&format!("{P}/runs/{run}")).await.body;
    // The waterfall: one row, its name and the attempt's error escaped.
    assert_eq!(
        page.matches("<g class=\"wf-op ").count(),
        2,
        "the step and the webhook"
    );
    assert!(page.contains("&quot;&gt;&lt;script&gt;alert(4)&lt;/script&gt;"));
    assert!(page.contains("error: &lt;img src=x onerror=alert(5)&gt;"));
    assert!(page.contains("class=\"wf-seg wf-failed\""));
    // The token in the copyable command: shell-quoted, then escaped.
    assert!(
        page.contains("workflow resume &#39;o&#39;\\&#39;&#39;brien&amp;co;x=1&#39;"),
        "{page}"
    );
    let page = s.get(&format!("{P}/overview")).await.body;
    assert!(page.contains("&lt;/pre&gt;&lt;img src=x onerror=alert(7)&gt;"));
    assert!(page.contains(&format!("workflow unblock {blocked}")));
    assert!(
        page.contains("o&#39;brien&amp;co;x=1"),
        "the live hook's token"
    );
    let page = s.get(&format!("{P}/runs/{blocked}")).await.body;
    assert!(page.contains(&format!("data-copy=\"workflow unblock {blocked}\"")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_counts_by_status_and_bounds_what_it_reads() {
    let (engine, store) = new_engine();
    let st = store.as_ref();
    for i in 0..5 {
        let run = create(st, RunId::new(), "orders", json!(i)).await;
        append(
            st,
            run,
            vec![
                EventData::RunStarted,
                EventData::StepCreated {
                    step: cid("step:0"),
                    name: "charge".into(),
                    input_digest: None,
                },
                EventData::StepStarted {
                    step: cid("step:0"),
                    attempt: 1,
                },
                EventData::StepCompleted {
                    step: cid("step:0"),
                    result: payload(json!(i)),
                },
                EventData::RunCompleted {
                    output: payload(json!(i)),
                },
            ],
        )
        .await;
    }
    let waiting = rich_run(st).await;
    blocked_run(st).await;
    let s = Server::start(engine, DashboardConfig::default()).await;
    let o = s.get_json(&format!("{P}/api/overview")).await;
    assert_eq!(
        o["by_status"]["completed"],
        json!({ "count": 5, "more": false })
    );
    assert_eq!(o["by_status"]["running"]["count"], 1);
    assert_eq!(o["by_status"]["blocked"]["count"], 1);
    let minutes = o["minutes"].as_array().expect("minutes");
    assert_eq!(minutes.len(), 60);
    let last = &minutes[59];
    assert_eq!(last["started"], 7);
    assert_eq!(last["completed"], 5);
    assert_eq!(last["blocked"], 1);
    // The rich run's webhook and plain hook are live; tokens masked.
    assert_eq!(o["live_hooks"], 2);
    let hooks = o["hooks"].as_array().expect("hooks");
    assert!(hooks.iter().all(|h| h["run"] == waiting.to_string()));
    assert!(!o.to_string().contains(SECRET), "tokens are masked");
    // No engine runs here: the runs' wake-ups are due, and overdue soon.
    assert!(o["next_due"]["time"].is_string(), "{o}");
    let steps = o["steps"].as_array().expect("steps");
    let charge = steps
        .iter()
        .find(|s| s["name"] == "charge")
        .expect("charge");
    assert_eq!(charge["attempts"], 6, "five completed, one retrying");
    assert_eq!(charge["failed"], 1);
    assert_eq!(o["sampled"]["status_cap"], 1000);

    let page = s.get(&format!("{P}/overview")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("<svg class=\"minutes\""));
    assert!(
        page.body.contains("data-grow=\"5000\""),
        "it refreshes itself"
    );
    assert!(page.body.contains("Counted up to 1000 per status"));
    assert!(page.body.contains(&format!("{P}/runs/{waiting}#hooks")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parent_and_child_runs_link_to_each_other() {
    let (engine, store) = new_engine();
    let parent = create(store.as_ref(), RunId::new(), "orders", json!({})).await;
    let child = RunId::new();
    append(
        store.as_ref(),
        parent,
        vec![
            EventData::RunStarted,
            EventData::ChildCreated {
                child: CorrelationId::new("child:0").expect("id"),
                run: child,
                workflow: "alpha".into(),
                input: payload(json!({"parcel": 1})),
                detached: false,
            },
        ],
    )
    .await;
    // The child ends: the store tells the parent in the same write.
    append(
        store.as_ref(),
        child,
        vec![
            EventData::RunStarted,
            EventData::RunCompleted {
                output: payload(json!("TRK-1")),
            },
        ],
    )
    .await;
    let s = Server::start(engine, DashboardConfig::default()).await;
    let page = s.get(&format!("{P}/runs/{parent}")).await;
    assert!(page.body.contains("Child runs"), "{}", page.body);
    assert!(page.body.contains(&format!("href=\"{P}/runs/{child}\"")));
    assert!(page.body.contains("alpha (completed)"));
    let page = s.get(&format!("{P}/runs/{child}")).await;
    assert!(page.body.contains("Parent run"));
    assert!(page.body.contains(&format!("href=\"{P}/runs/{parent}\"")));
    // The JSON of the events names the linked runs too (what `workflow events` prints).
    let d = s.get_json(&format!("{P}/api/runs/{parent}")).await;
    let kinds: Vec<&str> = d["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or(""))
        .collect();
    assert!(kinds.contains(&"child_completed"), "{kinds:?}");
    let created = d["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["kind"] == "child_created")
        .expect("child_created");
    assert_eq!(created["data"]["child_run"], child.to_string());
}

/// Writes two chunks to `progress` (one with markup), then waits for a
/// payload before its last step, so the stream stays open until then.
async fn reporting(ctx: Context, (): ()) -> Result<(), WorkflowError> {
    ctx.step("report", |s| async move {
        let mut w = s
            .stream::<String>("progress")
            .map_err(|e| StepError::fatal(e.to_string()))?;
        for chunk in ["first", "<b>second</b>"] {
            w.write(&chunk.to_string())
                .await
                .map_err(|e| StepError::retryable(e.to_string()))?;
        }
        Ok::<_, StepError>(())
    })
    .await?;
    let mut hook = ctx.create_hook::<bool>(workflow_core::HookOptions::token("dash:streams"))?;
    hook.next().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_streams_are_shown_and_tailed_until_closed() {
    let engine = Engine::builder(MemoryStore::new())
        .workflow("reporting", reporting)
        .build();
    engine.start_workers();
    let s = Server::start(engine.clone(), DashboardConfig::default()).await;
    let run = engine.start("reporting", &()).await.expect("start");
    engine
        .wait_for_hook("dash:streams", Duration::from_secs(10))
        .await
        .expect("the run waits on its hook");

    // Open: both chunks, escaped, and the command that follows it.
    let page = s.get(&format!("{P}/runs/{run}")).await;
    assert!(
        page.body.contains("data-stream=\"progress\""),
        "{}",
        page.body
    );
    assert!(page.body.contains("2 chunk(s), open"), "{}", page.body);
    assert!(page.body.contains("&quot;first&quot;"), "{}", page.body);
    assert!(
        page.body.contains("&lt;b&gt;second&lt;/b&gt;"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("<b>second</b>"), "chunks are escaped");
    assert!(page.body.contains(&format!("workflow tail {run} progress")));
    assert!(
        page.body.contains("data-poll="),
        "a live run's page refreshes"
    );

    // The run ends: its streams close.
    engine
        .resume_hook("dash:streams", &true)
        .await
        .expect("resume");
    engine.result::<()>(&run).await.expect("result");
    let page = s.get(&format!("{P}/runs/{run}")).await;
    assert!(page.body.contains("2 chunk(s), closed"), "{}", page.body);
    engine.shutdown().await;
}
