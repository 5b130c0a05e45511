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

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{ms, percentile, post, serve_bare, serve_direct, serve_webhook, Adapter, HttpClient};
use workflow_core::{Context, Engine, WebhookOptions, WorkflowError};
use workflow_store::{SledConfig, SledStore};

const TOKEN: &str = "bench-hook";
const IN_FLIGHT: usize = 16;

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
    async fn write(self, body: Bytes) {
        let this = self;
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

/// One server's samples.
#[derive(Default)]
struct Samples {
    latencies: Vec<Duration>,
    concurrent_requests: usize,
    concurrent_time: Duration,
}

impl Samples {
    fn percentile(&self, p: f64) -> Duration {
        percentile(&self.latencies, p)
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
        format!(
            "http://{}/bare",
            serve_bare(
                adapter,
                Arc::new(move |body| Box::pin(bare.clone().write(body)))
            )
            .await
        ),
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
            serve_direct(adapter, idle.clone(), TOKEN).await
        ),
    ];
    let client: HttpClient = common::client();
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
