//! Webhook benchmark: `resume_webhook` over loopback HTTP through each adapter,
//! next to a bare handler of the same framework that does one flushed sled
//! write, all measured in this run.
//!
//! ```sh
//! cargo bench -p workflow-http --bench webhook --features hyper,axum,warp
//! cargo bench -p workflow-http --bench webhook --features hyper,axum,warp -- --quick
//! ```
//!
//! For each adapter and each durability level:
//!
//! - **webhook**: `POST /.well-known/workflow/v1/webhook/{token}` with a small
//!   JSON body to a default-mode (`202`) webhook of a workflow that consumes
//!   every request, on an engine backed by a `SledStore` (its workers running,
//!   so each request also activates the run in the background);
//! - **bare**: `POST /bare` to a handler of the same framework that reads the
//!   body, `insert`s it into a sled tree and `flush`es (on the blocking pool,
//!   as `SledStore` runs sled), then answers `202`;
//! - **webhook, run idle**: like webhook, on an engine whose workers are
//!   stopped once the webhook is live: requests are recorded but do not
//!   activate the run (no lease and replay writes in the background);
//! - **engine direct, run idle**: a bare handler of the same framework that
//!   collects the body its own way and calls `Engine::resume_webhook` on that
//!   same idle engine: the engine's cost without this crate's adapter, so
//!   `webhook, run idle / engine direct` is the adapter's own overhead.
//!
//! Durability levels: `flush` is `SledConfig::fsync(false)` against a bare
//! `insert + flush` (both survive a process crash); `fsync` is the default
//! `SledStore` against a bare `insert + flush + fdatasync` (both survive a
//! power cut).
//!
//! Measured: latency (p50, p99) of sequential requests on one keep-alive
//! connection, and requests per second with 16 requests in flight. The two
//! servers of a pair are measured in alternating rounds, so drift (page cache,
//! other load) hits both alike. Client and servers share one 2-worker tokio
//! runtime on loopback.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use warp::Filter;
use workflow_core::{Context, Engine, WebhookOptions, WorkflowError};
use workflow_store::{SledConfig, SledStore};

const TOKEN: &str = "bench-hook";
const BODY: &[u8] =
    br#"{"event":"payment.succeeded","order":"order-42","amount":1999,"currency":"EUR"}"#;
const IN_FLIGHT: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Adapter {
    Hyper,
    Axum,
    Warp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    Flush,
    Fsync,
}

struct Sizes {
    warmup: usize,
    rounds: usize,
    sequential_per_round: usize,
    concurrent_per_round: usize,
}

fn sizes() -> Sizes {
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var_os("WORKFLOW_BENCH_QUICK").is_some();
    if quick {
        Sizes {
            warmup: 30,
            rounds: 2,
            sequential_per_round: 100,
            concurrent_per_round: 200,
        }
    } else {
        Sizes {
            warmup: 100,
            rounds: 4,
            sequential_per_round: 200,
            concurrent_per_round: 400,
        }
    }
}

/// Consumes every request of its webhook, forever.
async fn consume(ctx: Context, _: ()) -> Result<(), WorkflowError> {
    let mut webhook = ctx.create_webhook(WebhookOptions::token(TOKEN))?;
    loop {
        webhook.next().await?;
    }
}

/// The bare handler's storage: a sled tree, flushed (and fsynced) per write.
#[derive(Clone)]
struct Bare {
    db: sled::Db,
    data_file: Option<Arc<std::fs::File>>,
    next: Arc<AtomicU64>,
}

impl Bare {
    fn open(dir: &Path, durability: Durability) -> Bare {
        let db = sled::open(dir).expect("open sled");
        let data_file = (durability == Durability::Fsync)
            .then(|| Arc::new(std::fs::File::open(dir.join("db")).expect("sled data file")));
        Bare {
            db,
            data_file,
            next: Arc::new(AtomicU64::new(0)),
        }
    }

    /// One durable write, on the blocking pool.
    async fn write(&self, body: Bytes) {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let key = this.next.fetch_add(1, Ordering::Relaxed).to_be_bytes();
            this.db.insert(key, body.as_ref()).expect("insert");
            this.db.flush().expect("flush");
            if let Some(f) = &this.data_file {
                f.sync_data().expect("fdatasync");
            }
        })
        .await
        .expect("blocking write");
    }
}

fn accepted() -> http::Response<Full<Bytes>> {
    let mut r = http::Response::new(Full::new(Bytes::new()));
    *r.status_mut() = http::StatusCode::ACCEPTED;
    r
}

async fn listener() -> (tokio::net::TcpListener, SocketAddr) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    (l, addr)
}

async fn serve_hyper<S>(l: tokio::net::TcpListener, service: S)
where
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<Full<Bytes>>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    while let Ok((stream, _)) = l.accept().await {
        let service = service.clone();
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The webhook server of `adapter` for `engine`.
async fn serve_webhook(adapter: Adapter, engine: Engine) -> SocketAddr {
    let (l, addr) = listener().await;
    match adapter {
        Adapter::Hyper => {
            let service = workflow_http::hyper::WebhookService::new(engine);
            tokio::spawn(serve_hyper(l, service));
        }
        Adapter::Axum => {
            let app: axum::Router = workflow_http::axum::router(engine);
            tokio::spawn(async move { axum::serve(l, app).await });
        }
        Adapter::Warp => {
            let routes = workflow_http::warp::webhook(engine);
            tokio::spawn(warp::serve(routes).incoming(l).run());
        }
    }
    addr
}

/// The bare server of `adapter`: read the body, one durable sled write, 202.
async fn serve_bare(adapter: Adapter, bare: Bare) -> SocketAddr {
    let (l, addr) = listener().await;
    match adapter {
        Adapter::Hyper => {
            let service =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let bare = bare.clone();
                    async move {
                        let body = req.into_body().collect().await.map(|b| b.to_bytes());
                        if let Ok(body) = body {
                            bare.write(body).await;
                        }
                        Ok::<_, Infallible>(accepted())
                    }
                });
            tokio::spawn(serve_hyper(l, service));
        }
        Adapter::Axum => {
            async fn handler(
                axum::extract::State(bare): axum::extract::State<Bare>,
                body: Bytes,
            ) -> http::StatusCode {
                bare.write(body).await;
                http::StatusCode::ACCEPTED
            }
            let app = axum::Router::new()
                .route("/bare", axum::routing::any(handler))
                .with_state(bare);
            tokio::spawn(async move { axum::serve(l, app).await });
        }
        Adapter::Warp => {
            let routes = warp::path!("bare")
                .and(warp::body::bytes())
                .then(move |body: Bytes| {
                    let bare = bare.clone();
                    async move {
                        bare.write(body).await;
                        warp::http::StatusCode::ACCEPTED
                    }
                });
            tokio::spawn(warp::serve(routes).incoming(l).run());
        }
    }
    addr
}

/// A bare handler of `adapter` that collects the body with the framework's own
/// means and calls `Engine::resume_webhook` itself: the engine's cost without
/// this crate's adapter.
async fn serve_direct(adapter: Adapter, engine: Engine) -> SocketAddr {
    async fn resume(
        engine: &Engine,
        method: http::Method,
        uri: http::Uri,
        body: Bytes,
    ) -> http::StatusCode {
        let mut req = http::Request::new(body);
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        engine.resume_webhook(TOKEN, req).await.status()
    }
    let (l, addr) = listener().await;
    match adapter {
        Adapter::Hyper => {
            let service =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let engine = engine.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let mut r = accepted();
                        if let Ok(body) = body.collect().await.map(|b| b.to_bytes()) {
                            *r.status_mut() = resume(&engine, parts.method, parts.uri, body).await;
                        }
                        Ok::<_, Infallible>(r)
                    }
                });
            tokio::spawn(serve_hyper(l, service));
        }
        Adapter::Axum => {
            async fn handler(
                axum::extract::State(engine): axum::extract::State<Engine>,
                method: http::Method,
                uri: http::Uri,
                body: Bytes,
            ) -> http::StatusCode {
                resume(&engine, method, uri, body).await
            }
            let app = axum::Router::new()
                .route("/direct", axum::routing::any(handler))
                .with_state(engine);
            tokio::spawn(async move { axum::serve(l, app).await });
        }
        Adapter::Warp => {
            let routes = warp::path!("direct")
                .and(warp::method())
                .and(warp::body::bytes())
                .then(move |method: http::Method, body: Bytes| {
                    let engine = engine.clone();
                    async move {
                        let uri = http::Uri::from_static("/direct");
                        resume(&engine, method, uri, body).await
                    }
                });
            tokio::spawn(warp::serve(routes).incoming(l).run());
        }
    }
    addr
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

async fn post(client: &HttpClient, url: &str) -> Duration {
    let req = http::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(BODY)))
        .expect("request");
    let started = Instant::now();
    let resp = client.request(req).await.expect("response");
    let status = resp.status();
    resp.into_body().collect().await.expect("body");
    let took = started.elapsed();
    assert_eq!(status, 202, "{url}");
    took
}

/// One server's samples.
#[derive(Default)]
struct Samples {
    latencies: Vec<Duration>,
    concurrent_requests: usize,
    concurrent_time: Duration,
}

impl Samples {
    fn percentile(&self, p: f64) -> Duration {
        let mut v = self.latencies.clone();
        v.sort();
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v.get(i).copied().unwrap_or_default()
    }

    fn rps(&self) -> f64 {
        self.concurrent_requests as f64 / self.concurrent_time.as_secs_f64()
    }
}

async fn sequential(client: &HttpClient, url: &str, n: usize, into: &mut Samples) {
    for _ in 0..n {
        into.latencies.push(post(client, url).await);
    }
}

async fn concurrent(client: &HttpClient, url: &str, n: usize, into: &mut Samples) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..IN_FLIGHT {
        let (client, url) = (client.clone(), url.to_string());
        let share = n / IN_FLIGHT + usize::from(k < n % IN_FLIGHT);
        tasks.push(tokio::spawn(async move {
            for _ in 0..share {
                post(&client, &url).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    into.concurrent_time += started.elapsed();
    into.concurrent_requests += n;
}

struct Row {
    adapter: Adapter,
    durability: Durability,
    /// bare, webhook, webhook with the run idle, engine called directly.
    samples: [Samples; 4],
}

/// An engine on a fresh `SledStore` in `dir` whose run waits on the webhook.
async fn engine_with_hook(dir: &Path, durability: Durability) -> Engine {
    let config = SledConfig::new(dir).fsync(durability == Durability::Fsync);
    let store = SledStore::open_with(config).expect("open store");
    let engine = Engine::builder(store)
        .workflow("consume", consume)
        .poll_interval(Duration::from_millis(50))
        .build();
    engine.start_workers();
    engine.start("consume", &()).await.expect("start");
    engine
        .wait_for_hook(TOKEN, Duration::from_secs(10))
        .await
        .expect("the webhook never became live");
    engine
}

async fn measure(adapter: Adapter, durability: Durability, sizes: &Sizes) -> Row {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine_with_hook(&dir.path().join("store"), durability).await;
    // The same, with its workers stopped once the webhook is live: requests are
    // recorded but do not activate the run, which shows what the background
    // activations cost the requests.
    let idle = engine_with_hook(&dir.path().join("idle"), durability).await;
    idle.shutdown().await;
    let bare = Bare::open(&dir.path().join("bare"), durability);

    let path = workflow_http::webhook_path(TOKEN);
    let urls = [
        format!("http://{}/bare", serve_bare(adapter, bare).await),
        format!(
            "http://{}{path}",
            serve_webhook(adapter, engine.clone()).await
        ),
        format!(
            "http://{}{path}",
            serve_webhook(adapter, idle.clone()).await
        ),
        format!(
            "http://{}/direct",
            serve_direct(adapter, idle.clone()).await
        ),
    ];
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    for url in &urls {
        for _ in 0..sizes.warmup {
            post(&client, url).await;
        }
    }
    let mut samples: [Samples; 4] = Default::default();
    for round in 0..sizes.rounds {
        // Rotate which goes first.
        for k in 0..urls.len() {
            let i = (round + k) % urls.len();
            sequential(
                &client,
                &urls[i],
                sizes.sequential_per_round,
                &mut samples[i],
            )
            .await;
            concurrent(
                &client,
                &urls[i],
                sizes.concurrent_per_round,
                &mut samples[i],
            )
            .await;
        }
    }
    engine.shutdown_now();
    Row {
        adapter,
        durability,
        samples,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

fn main() {
    let sizes = sizes();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let rows: Vec<Row> = runtime.block_on(async {
        let mut rows = Vec::new();
        for durability in [Durability::Flush, Durability::Fsync] {
            for adapter in [Adapter::Hyper, Adapter::Axum, Adapter::Warp] {
                rows.push(measure(adapter, durability, &sizes).await);
            }
        }
        rows
    });
    let per_row = sizes.rounds * sizes.sequential_per_round;
    println!(
        "\nwebhook vs bare sled-write handler, loopback HTTP/1.1 ({per_row} sequential + {} at {IN_FLIGHT} in flight per server)\n",
        sizes.rounds * sizes.concurrent_per_round
    );
    println!(
        "| adapter | durability | server | p50 ms | p99 ms | req/s ({IN_FLIGHT} in flight) | p50 / bare | p99 / bare | req/s / bare |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|");
    let mut worst: f64 = 0.0;
    for r in &rows {
        let d = match r.durability {
            Durability::Flush => "flush",
            Durability::Fsync => "fsync",
        };
        let a = format!("{:?}", r.adapter).to_lowercase();
        let bare = &r.samples[0];
        let (b50, b99) = (bare.percentile(0.5), bare.percentile(0.99));
        for (k, name) in [
            "bare sled write",
            "webhook",
            "webhook, run idle",
            "engine direct, run idle",
        ]
        .iter()
        .enumerate()
        {
            let s = &r.samples[k];
            let (p50, p99) = (s.percentile(0.5), s.percentile(0.99));
            let p50_ratio = p50.as_secs_f64() / b50.as_secs_f64();
            let p99_ratio = p99.as_secs_f64() / b99.as_secs_f64();
            let rps_ratio = s.rps() / bare.rps();
            if k == 1 {
                worst = worst.max(p50_ratio);
            }
            println!(
                "| {a} | {d} | {name} | {} | {} | {:.0} | {p50_ratio:.2}x | {p99_ratio:.2}x | {rps_ratio:.2}x |",
                ms(p50),
                ms(p99),
                s.rps()
            );
        }
    }
    println!("\nadapter overhead: webhook (run idle) / engine called directly by a bare handler, same engine:");
    for r in &rows {
        let (w, d) = (&r.samples[2], &r.samples[3]);
        println!(
            "  {:?} {:?}: p50 {:.2}x, p99 {:.2}x, req/s {:.2}x",
            r.adapter,
            r.durability,
            w.percentile(0.5).as_secs_f64() / d.percentile(0.5).as_secs_f64(),
            w.percentile(0.99).as_secs_f64() / d.percentile(0.99).as_secs_f64(),
            w.rps() / d.rps(),
        );
    }
    println!(
        "\nworst webhook p50 / bare {worst:.2}x (goal <= 1.30x); total {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
