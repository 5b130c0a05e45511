//! Load: 10,000 concurrent webhook requests to ONE hook through the axum
//! adapter on 127.0.0.1, on an engine backed by a durable `SledStore` (default
//! configuration: every acknowledged write flushed and `fsync`ed, group commit)
//! whose workflow consumes every request. Then checks that nothing was lost.
//!
//! ```sh
//! cargo bench -p workflow-http --bench load --features axum
//! LOAD_REQUESTS=2000 LOAD_IN_FLIGHT=64 cargo bench -p workflow-http --bench load --features axum
//! ```
//!
//! The client keeps `LOAD_IN_FLIGHT` (default 256) requests in flight, each on
//! its own keep-alive HTTP/1.1 connection (hyper's client connection; HTTP/1.1
//! carries one request at a time per connection), and sends `LOAD_REQUESTS`
//! (default 10,000) `POST`s to `/.well-known/workflow/v1/webhook/load`, each
//! body a unique id. Client, server and engine share one 2-worker tokio
//! runtime.
//!
//! Reported: latency of each request (send to full response; p50, p90, p99,
//! max), throughput (requests / wall time of the client phase) and how long the
//! run took after the last answer to consume everything. Then verified, from
//! the store: every request was answered `202`; the log holds exactly the
//! 10,000 ids, each once (the set equals the set sent); the log's `seq`s are
//! gapless; and the workflow consumed them exactly in log order (its output
//! equals the `hook_received` bodies in `seq` order). Any failure panics.
//!
//! Bounded: each request may take 30 s, the client phase 5 minutes, the
//! consumption 2 minutes.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use workflow_core::{Context, Engine, WebhookOptions, WebhookRequest, WorkflowError};
use workflow_store::{EventData, RunStatus, SledStore, Store};

const TOKEN: &str = "load";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Consumes `n` requests of one default-mode webhook; returns their bodies in
/// the order it received them.
async fn sink(ctx: Context, n: u32) -> Result<Vec<String>, WorkflowError> {
    let mut webhook = ctx.create_webhook(WebhookOptions::token(TOKEN))?;
    let mut ids = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let request = webhook.next().await?;
        ids.push(request.text().unwrap_or_default().to_string());
    }
    Ok(ids)
}

/// One request's outcome: its id, status and latency.
struct Sent {
    id: String,
    status: u16,
    latency: Duration,
}

/// One client connection: sends requests until the shared counter reaches `total`.
async fn connection(addr: std::net::SocketAddr, next: Arc<AtomicUsize>, total: usize) -> Vec<Sent> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the server");
    stream.set_nodelay(true).expect("TCP_NODELAY");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(conn);
    let uri = format!("http://{addr}{}", workflow_core::webhook_path(TOKEN));
    let mut out = Vec::new();
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= total {
            return out;
        }
        let id = format!("req-{i:05}");
        let request = http::Request::post(uri.as_str())
            .header(http::header::HOST, addr.to_string())
            .header(http::header::CONTENT_TYPE, "text/plain")
            .body(Full::new(Bytes::from(id.clone())))
            .expect("a valid request");
        let started = Instant::now();
        let status = tokio::time::timeout(Duration::from_secs(30), async {
            sender.ready().await.expect("the connection is ready");
            let response = sender.send_request(request).await.expect("a response");
            let status = response.status().as_u16();
            response.into_body().collect().await.expect("the body");
            status
        })
        .await
        .unwrap_or_else(|_| panic!("request {id} took over 30 s"));
        out.push(Sent {
            id,
            status,
            latency: started.elapsed(),
        });
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn bench(total: usize, in_flight: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SledStore::open(dir.path()).expect("open the sled store");
    let engine = Engine::builder(store.clone())
        .workflow("sink", sink)
        .build();
    engine.start_workers();
    let run = engine
        .start("sink", &(total as u32))
        .await
        .expect("start the run");
    engine
        .wait_for_hook(TOKEN, Duration::from_secs(30))
        .await
        .expect("the webhook never became live");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("local address");
    let app: axum::Router = workflow_http::axum::router(engine.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    println!(
        "load: {total} POSTs to one webhook via the axum adapter on {addr}, {in_flight} in flight \
         on {in_flight} keep-alive connections; SledStore (flush + fsync per acknowledged write)"
    );
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..in_flight {
        tasks.push(tokio::spawn(connection(addr, next.clone(), total)));
    }
    let sent = tokio::time::timeout(Duration::from_secs(300), async {
        let mut sent = Vec::with_capacity(total);
        for t in tasks {
            sent.extend(t.await.expect("a client connection"));
        }
        sent
    })
    .await
    .expect("the client phase ends within 5 minutes");
    let elapsed = started.elapsed();
    let run_done =
        tokio::time::timeout(Duration::from_secs(120), engine.result::<Vec<String>>(&run))
            .await
            .expect("the run consumes every request within 2 minutes")
            .expect("the run succeeds");
    let drained = started.elapsed() - elapsed;

    let mut latencies: Vec<Duration> = sent.iter().map(|s| s.latency).collect();
    latencies.sort_unstable();
    let bad: Vec<(&str, u16)> = sent
        .iter()
        .filter(|s| s.status != 202)
        .map(|s| (s.id.as_str(), s.status))
        .collect();
    println!(
        "  latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.90)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies[latencies.len() - 1]),
    );
    println!(
        "  throughput {:.0} requests/s ({} requests in {:.2} s); the run consumed the last one {:.2} s after the last answer",
        sent.len() as f64 / elapsed.as_secs_f64(),
        sent.len(),
        elapsed.as_secs_f64(),
        drained.as_secs_f64(),
    );
    println!("  store: {store:?}");

    // Verification.
    assert_eq!(sent.len(), total, "every request was sent once");
    assert!(
        bad.is_empty(),
        "{} requests were not answered 202: {:?}",
        bad.len(),
        &bad[..bad.len().min(10)]
    );
    let log = store.read_log(run).await.expect("read the log");
    for (i, e) in log.iter().enumerate() {
        assert_eq!(
            e.seq, i as u64,
            "the log has a gap or is out of order at {i}"
        );
    }
    let rec = store.get_run(run).await.expect("get_run").expect("the run");
    assert_eq!(rec.status, RunStatus::Completed);
    assert_eq!(rec.next_seq, log.len() as u64);
    let received: Vec<String> = log
        .iter()
        .filter_map(|e| match &e.data {
            EventData::HookReceived { payload, .. } => {
                let request: WebhookRequest = payload.decode().expect("a recorded request");
                Some(request.text().expect("a text body").to_string())
            }
            _ => None,
        })
        .collect();
    let unique: BTreeSet<&String> = received.iter().collect();
    assert_eq!(received.len(), total, "hook_received events in the log");
    assert_eq!(unique.len(), total, "a request was recorded twice");
    let want: BTreeSet<&String> = sent.iter().map(|s| &s.id).collect();
    assert_eq!(unique, want, "the recorded ids differ from the ids sent");
    assert_eq!(
        run_done, received,
        "the workflow did not consume the requests in log (seq) order"
    );
    println!(
        "  verified: {total} answered 202, {total} recorded once each (set equal to the set sent), \
         log of {} events gapless, consumed in seq order",
        log.len()
    );
    engine.shutdown().await;
}

fn main() {
    // `cargo bench` passes `--bench`; there is nothing to filter here.
    let total = env_or("LOAD_REQUESTS", 10_000);
    let in_flight = env_or("LOAD_IN_FLIGHT", 256).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(bench(total, in_flight));
}
