//! How fast the dashboard's pages answer on a store with many runs.
//!
//! ```sh
//! cargo bench -p workflow-http --bench dashboard --features dashboard
//! WORKFLOW_BENCH_RUNS=20000 cargo bench -p workflow-http --bench dashboard --features dashboard
//! ```
//!
//! Fills a `MemoryStore` and a `SledStore` with N runs (N = 100,000, or
//! `WORKFLOW_BENCH_RUNS`) created over the last 24 hours: 85% completed
//! (two steps, one of them retried in a tenth of the runs), 5% failed, 5%
//! waiting on a hook, 2% blocked, 2% pending, 1% cancelled; and one run with
//! retries, a sleep and a webhook that received two requests. Then asks the
//! dashboard's router (in process, `tower::ServiceExt::oneshot`, the body
//! read whole) for each page 30 times and prints p50, p95 and max. The
//! figure to hold: every page under 50 ms.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;
use workflow_core::Engine;
use workflow_http::dashboard::{self, DashboardConfig};
use workflow_store::{
    Clock, CorrelationId, ErrorRecord, EventData, HookToken, MemoryStore, NewRun, Payload, RunId,
    SledConfig, SledStore, Store, Timestamp, WebhookResponse,
};

const P: &str = "/workflow/dashboard";
const DAY_MS: u64 = 86_400_000;
const ROUNDS: usize = 30;

/// A clock the filler sets to each run's time.
#[derive(Debug, Default)]
struct SetClock(AtomicU64);

impl SetClock {
    fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for SetClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

fn cid(s: &str) -> CorrelationId {
    CorrelationId::new(s).expect("correlation id")
}

fn payload<T: serde::Serialize>(v: &T) -> Payload {
    Payload::encode(v).expect("encode")
}

/// Two steps (the first retried when `retry`), as the engine records them.
fn steps(at: u64, retry: bool) -> Vec<EventData> {
    let mut e = vec![EventData::RunStarted];
    let a = cid("step:0");
    e.push(EventData::StepCreated {
        step: a.clone(),
        name: "load-order".into(),
        input_digest: None,
    });
    e.push(EventData::StepStarted {
        step: a.clone(),
        attempt: 1,
    });
    if retry {
        e.push(EventData::StepRetrying {
            step: a.clone(),
            error: ErrorRecord::new("database busy"),
            retry_at: Timestamp(at + 200),
        });
        e.push(EventData::StepStarted {
            step: a.clone(),
            attempt: 2,
        });
    }
    e.push(EventData::StepCompleted {
        step: a,
        result: payload(&"order"),
    });
    let b = cid("step:1");
    e.push(EventData::StepCreated {
        step: b.clone(),
        name: "send-receipt".into(),
        input_digest: None,
    });
    e.push(EventData::StepStarted {
        step: b.clone(),
        attempt: 1,
    });
    e.push(EventData::StepCompleted {
        step: b,
        result: payload(&"sent"),
    });
    e
}

/// Fills `store` with `n` runs over the day before `now`; returns the rich run.
async fn fill(store: &dyn Store, clock: &SetClock, n: u64, now: u64) -> RunId {
    let started = Instant::now();
    for i in 0..n {
        let at = now - DAY_MS + DAY_MS * i / n;
        clock.set(at);
        let id = RunId::from_u128((u128::from(at) << 80) | u128::from(i));
        store
            .create_run(NewRun {
                id,
                workflow: ["orders", "billing", "emails"][(i % 3) as usize].to_string(),
                input: payload(&i),
            })
            .await
            .expect("create");
        clock.set(at + 30 + i % 50);
        let events = match i % 100 {
            0..=84 => {
                let mut e = steps(at, i % 10 == 0);
                e.push(EventData::RunCompleted {
                    output: payload(&i),
                });
                e
            }
            85..=89 => vec![
                EventData::RunStarted,
                EventData::RunFailed {
                    error: ErrorRecord::new(format!("order {i} was rejected")),
                },
            ],
            90..=94 => vec![
                EventData::RunStarted,
                EventData::HookCreated {
                    hook: cid("hook:0"),
                    token: HookToken::new(format!("reply-{i}")).expect("token"),
                    metadata: None,
                    webhook: None,
                },
            ],
            95 | 96 => vec![
                EventData::RunStarted,
                EventData::RunBlocked {
                    error: ErrorRecord::new("workflow \"orders\" changed: step 0 is now \"x\""),
                },
            ],
            97 | 98 => vec![],
            _ => vec![EventData::RunCancelled],
        };
        if !events.is_empty() {
            store.append(id, events, None).await.expect("append");
        }
    }
    // The run the run page shows.
    let at = now - 5_000;
    clock.set(at);
    let rich = RunId::from_u128((u128::from(at) << 80) | u128::from(u64::MAX));
    store
        .create_run(NewRun {
            id: rich,
            workflow: "checkout".into(),
            input: payload(&7),
        })
        .await
        .expect("create");
    let writes: Vec<(u64, Vec<EventData>)> = vec![
        (60, steps(at, true)),
        (
            300,
            vec![EventData::WaitCreated {
                wait: cid("wait:2"),
                resume_at: Timestamp(at + 1_300),
            }],
        ),
        (
            1_310,
            vec![
                EventData::WaitCompleted {
                    wait: cid("wait:2"),
                },
                EventData::HookCreated {
                    hook: cid("hook:3"),
                    token: HookToken::new("checkout-7").expect("token"),
                    metadata: None,
                    webhook: Some(WebhookResponse::Accepted),
                },
            ],
        ),
    ];
    for (dt, events) in writes {
        clock.set(at + dt);
        store.append(rich, events, None).await.expect("append");
    }
    for (dt, r) in [(1_500, "r1"), (2_100, "r2")] {
        clock.set(at + dt);
        let request = serde_json::json!({
            "request_id": r, "method": "POST", "uri": "/hook", "headers": [], "body": "{}"
        });
        store
            .resume_hook(
                &HookToken::new("checkout-7").expect("token"),
                payload(&request),
            )
            .await
            .expect("resume");
    }
    clock.set(now);
    println!(
        "  filled with {n} runs in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    rich
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn measure(app: &axum::Router, path: &str) -> (f64, f64, f64) {
    let mut times = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS + 3 {
        let t = Instant::now();
        let resp = app
            .clone()
            .oneshot(
                Request::builder()
                    .uri(path)
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert!(!body.is_empty());
        if round >= 3 {
            times.push(t.elapsed());
        }
    }
    times.sort_unstable();
    let at = |p: usize| ms(times[(p * times.len()).div_ceil(100).max(1) - 1]);
    (at(50), at(95), ms(times[times.len() - 1]))
}

async fn bench(name: &str, store: Arc<dyn Store>, clock: &SetClock, n: u64) {
    println!("{name}:");
    let now = Timestamp::now().as_millis();
    let rich = fill(store.as_ref(), clock, n, now).await;
    let engine = Engine::builder(store).build();
    let app: axum::Router = dashboard::router(engine, DashboardConfig::default());
    println!(
        "  {:<34} {:>9} {:>9} {:>9}",
        "page", "p50 ms", "p95 ms", "max ms"
    );
    let pages = [
        ("overview (HTML)", format!("{P}/overview")),
        ("overview (JSON)", format!("{P}/api/overview")),
        ("runs, first page", format!("{P}/")),
        ("blocked runs", format!("{P}/?status=blocked")),
        ("run with waterfall (HTML)", format!("{P}/runs/{rich}")),
        ("run (JSON)", format!("{P}/api/runs/{rich}")),
    ];
    let mut worst: f64 = 0.0;
    for (label, path) in pages {
        let (p50, p95, max) = measure(&app, &path).await;
        worst = worst.max(p95);
        println!("  {label:<34} {p50:>9.2} {p95:>9.2} {max:>9.2}");
    }
    println!(
        "  slowest p95: {worst:.2} ms ({} the 50 ms budget)",
        if worst < 50.0 { "within" } else { "OVER" }
    );
}

fn main() {
    let n: u64 = std::env::var("WORKFLOW_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        println!("dashboard pages on a store with {n} runs ({ROUNDS} requests each, in process)");
        let clock = Arc::new(SetClock::default());
        let memory: Arc<dyn Store> = Arc::new(MemoryStore::with_clock(clock.clone()));
        bench("MemoryStore", memory, &clock, n).await;

        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Arc::new(SetClock::default());
        // Synced writes would only make filling slow; reads are the same.
        let sled = SledStore::open_with(
            SledConfig::new(dir.path().join("sled"))
                .clock(clock.clone())
                .fsync(false),
        )
        .expect("open sled");
        bench("SledStore", Arc::new(sled), &clock, n).await;
    });
}
