//! The waterfall and the engine overview in headless Chromium, on a real
//! server on 127.0.0.1 with an engine running real workflows:
//!
//! - a checkout run with a step that fails twice before it succeeds, a
//!   durable sleep, and a manual webhook that receives two requests: the
//!   rendered SVG has one row per operation, ordered by start, with the
//!   failed attempts marked; screenshot `dashboard-waterfall.png`;
//! - a few hundred runs (completed, failed, waiting on hooks, blocked, one
//!   of them with markup in its workflow name): the overview counts them,
//!   escapes the name, links hooks to their runs and blocked runs to their
//!   errors with the `workflow unblock` command; screenshot
//!   `dashboard-overview.png`.
//!
//! Screenshots go to `target/test-artifacts/`. Without a browser each test
//! prints `SKIPPED: no chromium` and passes.
#![cfg(feature = "dashboard")]

mod chromium;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use workflow_core::{
    Backoff, Context, Engine, HookOptions, StepError, StepOptions, WebhookOptions, WorkflowError,
};
use workflow_http::dashboard::{self, DashboardConfig};
use workflow_store::{
    Clock, HookToken, MemoryStore, NewRun, Payload, RunId, RunStatus, Store, Timestamp,
};

const P: &str = "/workflow/dashboard";
const HOSTILE: &str = "<img src=x onerror=alert(1)>";

/// Reserves stock (two failed attempts, then success), sleeps, takes two
/// requests on a manual webhook (validating each in a step before answering
/// it), then charges.
async fn checkout(ctx: Context, order: u64) -> Result<String, WorkflowError> {
    let retries = StepOptions::default().max_attempts(3).backoff(Backoff {
        initial: Duration::from_millis(150),
        factor: 2.0,
        max: Duration::from_secs(1),
    });
    ctx.step_with("reserve-stock", retries, async |s| {
        tokio::time::sleep(Duration::from_millis(60)).await;
        if s.attempt() < 3 {
            Err(StepError::retryable(format!(
                "warehouse busy (attempt {})",
                s.attempt()
            )))
        } else {
            Ok(s.attempt())
        }
    })
    .await?;
    ctx.sleep(Duration::from_millis(400)).await?;
    let mut webhook = ctx.create_webhook(
        WebhookOptions::token(format!("checkout:{order}")).manual(Duration::from_secs(10)),
    )?;
    for _ in 0..2 {
        let request = webhook.next().await?;
        ctx.step("validate-request", async |_| {
            tokio::time::sleep(Duration::from_millis(120)).await;
            Ok::<_, StepError>(())
        })
        .await?;
        request.respond(http::Response::new(Bytes::from_static(b"ok")));
    }
    webhook.dispose();
    ctx.step("charge", async |_| {
        tokio::time::sleep(Duration::from_millis(80)).await;
        Ok::<_, StepError>(format!("order {order} charged"))
    })
    .await
}

async fn quick(ctx: Context, n: u64) -> Result<u64, WorkflowError> {
    ctx.step("send-email", async |_| {
        tokio::time::sleep(Duration::from_millis(n % 7)).await;
        Ok::<_, StepError>(n)
    })
    .await
}

async fn doomed(ctx: Context, n: u64) -> Result<u64, WorkflowError> {
    ctx.step("call-partner", async |_| {
        Err::<u64, _>(StepError::fatal(format!("partner refused order {n}")))
    })
    .await?;
    Ok(n)
}

async fn await_reply(ctx: Context, n: u64) -> Result<String, WorkflowError> {
    let mut hook = ctx.create_hook::<String>(HookOptions::token(format!("reply:{n}")))?;
    Ok(hook.next().await?)
}

/// The wall clock set back by an offset that the test shrinks, so that runs
/// started one after the other spread over the last hour.
#[derive(Debug, Default)]
struct BehindClock(AtomicU64);

impl Clock for BehindClock {
    fn now(&self) -> Timestamp {
        let now = Timestamp::now().as_millis();
        Timestamp(now.saturating_sub(self.0.load(Ordering::SeqCst)))
    }
}

fn engine(store: Arc<MemoryStore>) -> Engine {
    let e = Engine::builder(store)
        .poll_interval(Duration::from_millis(20))
        .lease_ttl(Duration::from_secs(3600))
        .workflow("checkout", checkout)
        .workflow("quick", quick)
        .workflow("doomed", doomed)
        .workflow("await_reply", await_reply)
        .build();
    e.start_workers();
    e
}

async fn serve(engine: Engine) -> String {
    let app = axum::Router::new()
        .merge(workflow_http::axum::router(engine.clone()))
        .merge(dashboard::router(engine, DashboardConfig::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

async fn http(method: &str, url: &str, body: &str) -> (u16, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = http::Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let resp = client.request(req).await.expect("response");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn wait_until<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn status_of(store: &dyn Store, run: RunId) -> RunStatus {
    store
        .get_run(run)
        .await
        .expect("get run")
        .expect("run exists")
        .status
}

/// Runs the browser on a blocking thread (the server runs on the runtime).
async fn browser<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("browser thread")
}

/// The attribute `name` of every `<g class="wf-op …">` in `dom`, in order.
fn op_attr(dom: &str, name: &str) -> Vec<String> {
    dom.split("<g class=\"wf-op ")
        .skip(1)
        .map(|g| {
            let head = &g[..g.find('>').expect("tag end")];
            let at = head
                .find(&format!(" {name}=\""))
                .unwrap_or_else(|| panic!("no {name} in {head}"));
            let rest = &head[at + name.len() + 3..];
            rest[..rest.find('"').expect("quote")].to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waterfall_of_a_run_with_retries_a_sleep_and_two_webhook_requests() {
    let Some(bin) = chromium::find() else {
        println!("SKIPPED: no chromium");
        return;
    };
    let store = Arc::new(MemoryStore::new());
    let engine = engine(store.clone());
    let base = serve(engine.clone()).await;
    let run: RunId = engine.start("checkout", &7u64).await.expect("start");
    for body in ["first", "second"] {
        wait_until("the webhook", || async {
            store
                .get_hook(&HookToken::new("checkout:7").expect("token"))
                .await
                .ok()
                .flatten()
                .is_some()
        })
        .await;
        let (status, answer) = http(
            "POST",
            &format!("{base}/.well-known/workflow/v1/webhook/checkout%3A7"),
            body,
        )
        .await;
        assert_eq!((status, answer.as_str()), (200, "ok"));
    }
    wait_until("the checkout to complete", || async {
        status_of(store.as_ref(), run).await == RunStatus::Completed
    })
    .await;

    // The JSON API has the operations the SVG draws.
    let (status, body) = http("GET", &format!("{base}{P}/api/runs/{run}"), "").await;
    assert_eq!(status, 200, "{body}");
    let detail: Value = serde_json::from_str(&body).expect("JSON");
    let ops = detail["operations"].as_array().expect("operations");
    let kinds: Vec<&str> = ops
        .iter()
        .map(|o| o["kind"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        kinds,
        ["step", "sleep", "webhook", "request", "step", "request", "step", "step"]
    );
    assert_eq!(ops[0]["name"], "reserve-stock");
    assert_eq!(ops[0]["attempts"], 3);
    let failed: Vec<bool> = ops[0]["segments"]
        .as_array()
        .expect("segments")
        .iter()
        .filter(|g| g["kind"] == "attempt")
        .map(|g| g["failed"].as_bool().unwrap_or(false))
        .collect();
    assert_eq!(failed, [true, true, false]);
    assert!(ops.iter().all(|o| o["outcome"] == "done"), "{ops:?}");
    assert!(ops[3]["note"]
        .as_str()
        .is_some_and(|n| n.contains("answered 200")));

    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("{base}{P}/runs/{run}");
    let dom = {
        let (bin, profile, url) = (bin.clone(), dir.path().join("profile"), url.clone());
        browser(move || chromium::dom(&bin, &profile, &url)).await
    };
    let svg_at = dom
        .find("<svg class=\"waterfall\"")
        .expect("the waterfall SVG");
    let table_at = dom.find("id=\"timeline\"").expect("the event table");
    assert!(svg_at < table_at, "the waterfall is above the event table");
    let svg = &dom[svg_at..svg_at + dom[svg_at..].find("</svg>").expect("svg end")];
    // One row per operation, bars ordered by start.
    assert_eq!(
        op_attr(&dom, "data-kind"),
        ["step", "sleep", "webhook", "request", "step", "request", "step", "step"]
    );
    let starts: Vec<u64> = op_attr(&dom, "data-start")
        .iter()
        .map(|s| s.parse().expect("a time"))
        .collect();
    assert!(starts.windows(2).all(|w| w[0] <= w[1]), "{starts:?}");
    assert!(op_attr(&dom, "tabindex").iter().all(|t| t == "0"));
    // The retries: two hatched, crossed attempts and the waits between them.
    assert_eq!(svg.matches("class=\"wf-seg wf-failed\"").count(), 2);
    assert_eq!(svg.matches("class=\"wf-cross\"").count(), 2);
    assert_eq!(svg.matches("data-segment=\"retry-wait-").count(), 2);
    assert!(svg.contains("attempt 1 failed after"));
    assert!(svg.contains("error: warehouse busy (attempt 2)"));
    // The row labels name what the row is, for hover and for screen readers.
    let labels = op_attr(&dom, "aria-label");
    assert!(
        labels[0].starts_with("step reserve-stock, took "),
        "{labels:?}"
    );
    assert!(labels[0].contains("3 attempts (2 failed)"), "{labels:?}");
    assert!(
        labels[0].ends_with("last failed attempt: warehouse busy (attempt 2)"),
        "{labels:?}"
    );
    assert!(
        labels[1].starts_with("sleep ") && labels[1].contains(", took "),
        "{labels:?}"
    );
    assert!(
        labels[3].starts_with("request POST #1, took "),
        "{labels:?}"
    );
    assert!(
        !dom.contains("checkout:7"),
        "the token is masked in the waterfall"
    );
    assert!(dom.contains(&format!("workflow events {run}")));

    let shot = chromium::artifacts_dir().join("dashboard-waterfall.png");
    let profile = dir.path().join("profile-shot");
    browser(move || chromium::screenshot(&bin, &profile, &url, &shot, 1280, 1100)).await;
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_of_a_few_hundred_runs() {
    let Some(bin) = chromium::find() else {
        println!("SKIPPED: no chromium");
        return;
    };
    // The first run starts 58 minutes ago, the last one now.
    let clock = Arc::new(BehindClock(AtomicU64::new(58 * 60_000)));
    let store = Arc::new(MemoryStore::with_clock(clock.clone()));
    let engine = engine(store.clone());
    let base = serve(engine.clone()).await;
    let mut waiting = Vec::new();
    for n in 0..300u64 {
        clock
            .0
            .store((300 - n) * 58 * 60_000 / 300, Ordering::SeqCst);
        // Each run settles before the clock moves on, so that its times are
        // those of one moment.
        match n % 10 {
            0 | 1 => {
                let run = engine.start("doomed", &n).await.expect("start");
                wait_until("a failure", || async {
                    status_of(store.as_ref(), run).await == RunStatus::Failed
                })
                .await;
            }
            2 => {
                waiting.push(engine.start("await_reply", &n).await.expect("start"));
                let token = HookToken::new(format!("reply:{n}")).expect("token");
                wait_until("a live hook", || async {
                    store.get_hook(&token).await.ok().flatten().is_some()
                })
                .await;
            }
            _ => {
                let run = engine.start("quick", &n).await.expect("start");
                wait_until("a completion", || async {
                    status_of(store.as_ref(), run).await == RunStatus::Completed
                })
                .await;
            }
        }
    }
    clock.0.store(0, Ordering::SeqCst);
    // Runs of a workflow this engine does not have: they block. One has
    // markup in its name.
    let mut blocked = Vec::new();
    for name in ["legacy_import", "legacy_import", HOSTILE] {
        let id = RunId::new();
        store
            .create_run(NewRun {
                id,
                workflow: name.to_string(),
                input: Payload::encode(&json!({})).expect("encode"),
            })
            .await
            .expect("create");
        blocked.push(id);
    }
    wait_until("the blocked runs", || async {
        let mut settled = 0;
        for status in [RunStatus::Completed, RunStatus::Failed, RunStatus::Blocked] {
            settled += store
                .list_runs(
                    workflow_store::RunQuery::default()
                        .status(status)
                        .limit(1000),
                )
                .await
                .expect("list")
                .len();
        }
        let live = store
            .get_hook(&HookToken::new("reply:292").expect("token"))
            .await;
        settled == 273 && live.ok().flatten().is_some()
    })
    .await;

    let (status, body) = http("GET", &format!("{base}{P}/api/overview"), "").await;
    assert_eq!(status, 200, "{body}");
    let o: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(o["by_status"]["completed"]["count"], 210);
    assert_eq!(o["by_status"]["failed"]["count"], 60);
    assert_eq!(o["by_status"]["blocked"]["count"], 3);
    assert_eq!(o["by_status"]["running"]["count"], 30);
    assert_eq!(o["live_hooks"], 30);
    let minutes = o["minutes"].as_array().expect("minutes");
    assert_eq!(minutes.len(), 60);
    let sum = |k: &str| -> u64 { minutes.iter().map(|m| m[k].as_u64().unwrap_or(0)).sum() };
    assert_eq!(
        (
            sum("started"),
            sum("completed"),
            sum("failed"),
            sum("blocked")
        ),
        (303, 210, 60, 3)
    );
    let steps = o["steps"].as_array().expect("steps");
    let names: Vec<&str> = steps
        .iter()
        .map(|s| s["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(names, ["call-partner", "send-email"], "sorted by name");

    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("{base}{P}/overview");
    let dom = {
        let (bin, profile, url) = (bin.clone(), dir.path().join("profile"), url.clone());
        browser(move || chromium::dom(&bin, &profile, &url)).await
    };
    assert!(dom.contains("<svg class=\"minutes\""), "the chart: {dom}");
    for series in ["started", "completed", "failed", "blocked"] {
        assert!(
            dom.contains(&format!("data-series=\"{series}\"")),
            "{series}"
        );
    }
    assert!(dom.contains("303 in the hour"), "started in the hour");
    let bars = dom.matches("class=\"mn-bar\"").count();
    assert!(bars > 100, "the runs spread over the hour: {bars} bars");
    assert!(!dom.contains("<img src=x"), "markup in a name is escaped");
    assert!(dom.contains("&lt;img src=x onerror=alert(1)&gt;"));
    // Blocked runs: a link to the error and the command that retries them.
    for id in &blocked {
        assert!(dom.contains(&format!("runs/{id}#run-error")), "{id}");
        assert!(dom.contains(&format!("workflow unblock {id}")), "{id}");
    }
    // Hooks link to their runs (the newest ten are listed), tokens masked.
    let newest = waiting.last().expect("a waiting run");
    assert!(dom.contains(&format!("runs/{newest}#hooks")));
    assert!(!dom.contains("reply:292"), "tokens are masked");
    assert!(dom.contains("workflow hooks"));

    let shot = chromium::artifacts_dir().join("dashboard-overview.png");
    let profile = dir.path().join("profile-shot");
    browser(move || chromium::screenshot(&bin, &profile, &url, &shot, 1280, 1400)).await;
    engine.shutdown().await;
}
