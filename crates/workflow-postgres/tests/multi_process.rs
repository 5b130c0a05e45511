//! Two engine processes on one PostgreSQL schema run 200 runs (steps, a sleep,
//! a webhook that takes two requests), with the webhooks resumed over HTTP
//! through either process. One process is killed with SIGKILL half-way; the
//! other finishes every run. Every step has exactly one `step_completed`, and
//! no webhook request acknowledged (2xx) to a caller is lost or doubled.
//!
//! [`multi_process_child`] is the child's entry point (this test binary run
//! again with the database, schema and role in the environment); in a normal
//! test run it returns at once.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use workflow_core::{Context, Engine, StepError, WebhookOptions, WorkflowError};
use workflow_postgres::{PostgresConfig, PostgresStore};
use workflow_store::{EventData, RunId, RunQuery, RunStatus, Store};

const SCHEMA_ENV: &str = "WORKFLOW_MP_SCHEMA";
const RUNS: u32 = 200;

async fn two_requests(ctx: Context, n: u32) -> Result<u32, WorkflowError> {
    let a = ctx
        .step("first", move |_| async move { Ok::<_, StepError>(n) })
        .await?;
    ctx.sleep(Duration::from_millis(100)).await?;
    let mut webhook = ctx.create_webhook(WebhookOptions::token(format!("mp:{n}")))?;
    let mut seen = 0u32;
    for _ in 0..2 {
        let request = webhook.next().await?;
        seen += u32::from(!request.body.is_empty());
    }
    ctx.step("last", move |_| async move { Ok::<_, StepError>(a + seen) })
        .await
}

fn engine(store: PostgresStore) -> Engine {
    Engine::builder(store)
        .workflow("two_requests", two_requests)
        .lease_ttl(Duration::from_millis(1500))
        .poll_interval(Duration::from_millis(50))
        .concurrency(32)
        .build()
}

async fn connect(url: &str, schema: &str) -> PostgresStore {
    PostgresStore::connect_with(PostgresConfig::new(url).schema(schema).pool_size(8))
        .await
        .expect("connect")
}

/// The child: an engine with workers and the axum webhook route, until killed.
#[test]
fn multi_process_child() {
    let (Ok(url), Ok(schema)) = (std::env::var(common::URL_VAR), std::env::var(SCHEMA_ENV)) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let engine = engine(connect(&url, &schema).await);
        engine.start_workers();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!("ADDR {}", listener.local_addr().expect("addr"));
        let app = workflow_http::axum::router(engine);
        axum::serve(listener, app).await.expect("serve");
    });
}

struct ChildProcess {
    child: Child,
    addr: SocketAddr,
}

fn spawn_child(url: &str, schema: &str) -> ChildProcess {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "multi_process_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(common::URL_VAR, url)
        .env(SCHEMA_ENV, schema)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("child printed no address")
            .expect("read");
        if let Some((_, a)) = line.split_once("ADDR ") {
            break a.trim().parse().expect("address");
        }
    };
    std::thread::spawn(move || for _ in lines {});
    ChildProcess { child, addr }
}

/// POSTs `body` to the webhook `token` on `addr`; the status, or None if the
/// connection failed.
async fn post(addr: SocketAddr, token: &str, body: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let req = format!(
        "POST /.well-known/workflow/v1/webhook/{token} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.ok()?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut text))
        .await
        .ok()?
        .ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn two_engine_processes_share_the_work_and_survive_a_sigkill() {
    let Some(url) =
        common::url_or_skip("two_engine_processes_share_the_work_and_survive_a_sigkill")
    else {
        return;
    };
    let schemas = common::Schemas::new(url.clone());
    let schema = schemas.fresh();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt.block_on(connect(&url, &schema));
    let starter = engine(store.clone());
    let ids: Vec<RunId> = (0..RUNS).map(|_| RunId::new()).collect();
    rt.block_on(async {
        for (n, id) in ids.iter().enumerate() {
            starter
                .start_with_id(*id, "two_requests", &(n as u32))
                .await
                .unwrap();
        }
    });

    let mut a = spawn_child(&url, &schema);
    let b = spawn_child(&url, &schema);
    let (addr_a, addr_b) = (a.addr, b.addr);

    // Send two requests to every run's webhook, alternating processes; a 404
    // means the webhook is not live yet (or no more): try again shortly.
    let acknowledged: BTreeMap<u32, Vec<String>> = rt.block_on(async {
        let mut acked: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        let mut a_alive = true;
        let deadline = Instant::now() + Duration::from_secs(120);
        for n in 0..RUNS {
            if a_alive && n == RUNS / 2 {
                // Half-way: kill process A while it drives runs.
                a.child.kill().expect("SIGKILL");
                a.child.wait().expect("reap");
                a_alive = false;
            }
            for k in 0..2 {
                let body = format!("req-{n}-{k}");
                loop {
                    assert!(
                        Instant::now() < deadline,
                        "webhook of run {n} never accepted request {k}"
                    );
                    let target = if a_alive && (n + k) % 2 == 0 {
                        addr_a
                    } else {
                        addr_b
                    };
                    match post(target, &format!("mp:{n}"), &body).await {
                        Some(s) if (200..300).contains(&s) => {
                            acked.entry(n).or_default().push(body.clone());
                            break;
                        }
                        _ => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            }
        }
        acked
    });

    // B finishes every run, including those A held when it died.
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let done = store
                .list_runs(RunQuery::default().status(RunStatus::Completed).limit(1000))
                .await
                .unwrap()
                .len();
            if done == RUNS as usize {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "only {done} of {RUNS} runs completed"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for (n, id) in ids.iter().enumerate() {
            let out: u32 = starter.result(id).await.unwrap();
            assert_eq!(out, n as u32 + 2, "run {n}");
            let log = store.read_log(*id).await.unwrap();
            let mut completed: BTreeMap<String, u32> = BTreeMap::new();
            let mut received = Vec::new();
            for e in &log {
                match &e.data {
                    EventData::StepCompleted { step, .. } => {
                        *completed.entry(step.to_string()).or_default() += 1
                    }
                    EventData::HookReceived { payload, .. } => {
                        let req: workflow_core::WebhookRequest = payload.decode().unwrap();
                        received.push(String::from_utf8_lossy(&req.body).into_owned());
                    }
                    _ => {}
                }
            }
            assert_eq!(completed.len(), 2, "run {n}: {completed:?}");
            assert!(
                completed.values().all(|c| *c == 1),
                "run {n}: a step completed twice"
            );
            let got: BTreeSet<&String> = received.iter().collect();
            assert_eq!(
                got.len(),
                received.len(),
                "run {n}: a request was recorded twice"
            );
            for body in &acknowledged[&(n as u32)] {
                assert!(
                    got.contains(body),
                    "run {n}: acknowledged request {body} is missing"
                );
            }
        }
        assert_eq!(store.next_due().await.unwrap(), None);
    });
    drop(b);
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
