//! The peers' workloads: what durable-execution engines are compared on,
//! measured for each durable embedded backend in one run, each figure next to
//! the disk's floor measured in the same run.
//!
//! ```sh
//! cargo bench -p workflow-http --bench peers --features hyper,axum,warp            # full
//! cargo bench -p workflow-http --bench peers --features hyper,axum,warp -- --quick # shorter
//! WORKFLOW_BENCH_SUSPENDED=100000 cargo bench -p workflow-http --bench peers --features hyper,axum,warp
//! ```
//!
//! Without `--bench` (as `cargo test` runs it) it is a smoke test: tiny
//! sizes, every path exercised, figures printed but meaningless.
//!
//! For `SledStore` and `RedbStore` (default configurations: every
//! acknowledged write is synced to disk), engines with default settings:
//!
//! - **floor**: one 128-byte `write` appended to a file in the store's
//!   directory followed by `fdatasync`, one thread: ops/s and p50. A durable
//!   write cannot be cheaper.
//! - **a.** 200 sequential runs of a 3-step workflow, from `Engine::start` to
//!   the result: p50, p90, p99.
//! - **b.** one run of 1,000 sequential steps, 5 times: steps/s, median.
//! - **c.** 64 concurrent runs of 50 sequential steps, 5 times: total
//!   steps/s, median.
//! - **d.** N runs each suspended on a hook (N = 20,000, or
//!   `WORKFLOW_BENCH_SUSPENDED`): start rate (runs/s until all N wait on their
//!   hook), bytes on disk and resident memory per suspended run; then a new
//!   engine on the reopened store resumes all N (16 callers of `resume_hook`)
//!   and the time until every run has completed.
//! - **f.** (a breakdown of b) one step's records (`step_created`,
//!   `step_started`, `step_completed`) appended to the store directly, one
//!   append after another: p50. A sequential step costs this append plus
//!   the engine's own work.
//! - **e.** `resume_webhook` through each adapter (p50 of sequential
//!   requests on one keep-alive connection, the run consuming each request),
//!   next to a bare handler of the same framework doing one floor write.
//!
//! Then each figure as a ratio to the floor. `WORKFLOW_BENCH_ONLY=ab` (say)
//! measures only those figures (the floor always), and
//! `WORKFLOW_BENCH_BACKEND=RedbStore` only that backend, e.g. under a profiler.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{ms, percentile, post, serve_bare, serve_webhook, Adapter, BareWrite};
use workflow_core::{
    Context, Engine, HookOptions, RunHandle, StepError, WebhookOptions, WorkflowError, WorkflowRef,
};
use workflow_store::{RedbStore, RunId, SledStore, Store};

const THREE: WorkflowRef<(), u32> = WorkflowRef::new("three");
const SEQ: WorkflowRef<u32, u32> = WorkflowRef::new("seq");
const PARKED: WorkflowRef<u64, u64> = WorkflowRef::new("parked");
const CONSUME: WorkflowRef<(), ()> = WorkflowRef::new("consume");
const WEBHOOK_TOKEN: &str = "peers-webhook";
/// Concurrent callers starting and resuming the suspended runs (d).
const CALLERS: usize = 16;

async fn seq(ctx: Context, n: u32) -> Result<u32, WorkflowError> {
    let mut total = 0u32;
    for i in 0..n {
        total = total.wrapping_add(
            ctx.step("add", move |_| async move { Ok::<_, StepError>(i) })
                .await?,
        );
    }
    Ok(total)
}

async fn three(ctx: Context, (): ()) -> Result<u32, WorkflowError> {
    seq(ctx, 3).await
}

fn parked_token(id: u64) -> String {
    format!("peers-parked-{id}")
}

/// Waits on a hook for one number and returns it.
async fn parked(ctx: Context, id: u64) -> Result<u64, WorkflowError> {
    let mut hook = ctx.create_hook::<u64>(HookOptions::token(parked_token(id)))?;
    Ok(hook.next().await?)
}

/// Consumes every request of its webhook, forever.
async fn consume(ctx: Context, (): ()) -> Result<(), WorkflowError> {
    let mut webhook = ctx.create_webhook(WebhookOptions::token(WEBHOOK_TOKEN))?;
    loop {
        webhook.next().await?;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Smoke,
    Quick,
    Full,
}

struct Sizes {
    floor_time: Duration,
    warmup: usize,
    a_runs: usize,
    b_steps: u32,
    b_reps: usize,
    c_runs: usize,
    c_steps: u32,
    c_reps: usize,
    d_runs: usize,
    e_rounds: usize,
    e_per_round: usize,
}

fn mode() -> Mode {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        Mode::Smoke
    } else if args.iter().any(|a| a == "--quick") {
        Mode::Quick
    } else {
        Mode::Full
    }
}

fn sizes(mode: Mode) -> Sizes {
    let suspended = std::env::var("WORKFLOW_BENCH_SUSPENDED")
        .ok()
        .and_then(|v| v.parse().ok());
    match mode {
        Mode::Smoke => Sizes {
            floor_time: Duration::from_millis(20),
            warmup: 1,
            a_runs: 3,
            b_steps: 5,
            b_reps: 1,
            c_runs: 4,
            c_steps: 3,
            c_reps: 1,
            d_runs: suspended.unwrap_or(20),
            e_rounds: 1,
            e_per_round: 3,
        },
        Mode::Quick => Sizes {
            floor_time: Duration::from_millis(500),
            warmup: 10,
            a_runs: 200,
            b_steps: 1000,
            b_reps: 3,
            c_runs: 64,
            c_steps: 50,
            c_reps: 3,
            d_runs: suspended.unwrap_or(5_000),
            e_rounds: 2,
            e_per_round: 100,
        },
        Mode::Full => Sizes {
            floor_time: Duration::from_secs(2),
            warmup: 20,
            a_runs: 200,
            b_steps: 1000,
            b_reps: 5,
            c_runs: 64,
            c_steps: 50,
            c_reps: 5,
            d_runs: suspended.unwrap_or(20_000),
            e_rounds: 4,
            e_per_round: 200,
        },
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Sled,
    Redb,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sled => "SledStore",
            Backend::Redb => "RedbStore",
        }
    }

    fn open(self, dir: &Path) -> Arc<dyn Store> {
        match self {
            Backend::Sled => Arc::new(SledStore::open(dir).expect("open sled")),
            Backend::Redb => Arc::new(RedbStore::open(dir).expect("open redb")),
        }
    }
}

fn engine(store: Arc<dyn Store>) -> Engine {
    Engine::builder(store)
        .workflow(THREE, three)
        .workflow(SEQ, seq)
        .workflow(PARKED, parked)
        .workflow(CONSUME, consume)
        .build()
}

/// A file in `dir` that takes 128-byte appends, each followed by `fdatasync`.
struct FloorFile(std::fs::File);

impl FloorFile {
    fn create(dir: &Path) -> FloorFile {
        std::fs::create_dir_all(dir).expect("floor dir");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("floor.bin"))
            .expect("floor file");
        FloorFile(file)
    }

    fn write(&mut self) {
        self.0.write_all(&[7u8; 128]).expect("append");
        self.0.sync_data().expect("fdatasync");
    }
}

struct Floor {
    ops_per_s: f64,
    p50: Duration,
}

fn floor(dir: &Path, time: Duration) -> Floor {
    let mut file = FloorFile::create(dir);
    let mut samples = Vec::new();
    let started = Instant::now();
    while started.elapsed() < time || samples.len() < 10 {
        let t = Instant::now();
        file.write();
        samples.push(t.elapsed());
    }
    Floor {
        ops_per_s: samples.len() as f64 / started.elapsed().as_secs_f64(),
        p50: percentile(&samples, 0.5),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

#[derive(Default)]
struct Figures {
    floor_ops: f64,
    floor_p50: Duration,
    a: [Duration; 3],
    b: f64,
    c: f64,
    d_runs: usize,
    d_start_rate: f64,
    d_disk_per_run: f64,
    d_rss_per_run: f64,
    d_resume: Duration,
    e: Vec<(Adapter, Duration, Duration)>,
    f: Duration,
}

/// a.
async fn three_steps(engine: &Engine, sizes: &Sizes) -> [Duration; 3] {
    for _ in 0..sizes.warmup {
        engine
            .start(THREE, &())
            .await
            .expect("start")
            .result()
            .await
            .expect("result");
    }
    let mut samples = Vec::with_capacity(sizes.a_runs);
    for _ in 0..sizes.a_runs {
        let t = Instant::now();
        let out = engine
            .start(THREE, &())
            .await
            .expect("start")
            .result()
            .await;
        samples.push(t.elapsed());
        assert_eq!(out.expect("result"), 3);
    }
    [0.5, 0.9, 0.99].map(|p| percentile(&samples, p))
}

/// b.
async fn sequential(engine: &Engine, sizes: &Sizes) -> f64 {
    let mut rates = Vec::new();
    for _ in 0..sizes.b_reps {
        let t = Instant::now();
        let handle = engine.start(SEQ, &sizes.b_steps).await.expect("start");
        handle.result().await.expect("result");
        rates.push(f64::from(sizes.b_steps) / t.elapsed().as_secs_f64());
    }
    median(rates)
}

/// c.
async fn concurrent(engine: &Engine, sizes: &Sizes) -> f64 {
    let mut rates = Vec::new();
    for _ in 0..sizes.c_reps {
        let t = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..sizes.c_runs {
            let (engine, n) = (engine.clone(), sizes.c_steps);
            tasks.push(tokio::spawn(async move {
                engine.start(SEQ, &n).await.expect("start").result().await
            }));
        }
        for t in tasks {
            t.await.expect("task").expect("result");
        }
        let steps = sizes.c_runs as f64 * f64::from(sizes.c_steps);
        rates.push(steps / t.elapsed().as_secs_f64());
    }
    median(rates)
}

/// f: p50 of a step's records appended directly to the store.
async fn raw_step_appends(store: &dyn Store, n: usize) -> Duration {
    let run = RunId::new();
    store
        .create_run(workflow_store::NewRun {
            id: run,
            workflow: "raw".into(),
            input: workflow_store::Payload::encode(&()).expect("encode"),
        })
        .await
        .expect("create");
    let mut samples = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let step = workflow_store::CorrelationId::from_parts("step", i);
        let events = vec![
            workflow_store::EventData::StepCreated {
                step: step.clone(),
                name: "add".into(),
                input_digest: None,
            },
            workflow_store::EventData::StepStarted {
                step: step.clone(),
                attempt: 1,
            },
            workflow_store::EventData::StepCompleted {
                step,
                result: workflow_store::Payload::encode(&i).expect("encode"),
            },
        ];
        let t = Instant::now();
        store.append(run, events, None).await.expect("append");
        samples.push(t.elapsed());
    }
    percentile(&samples, 0.5)
}

/// d: returns (runs/s to suspension, disk bytes/run, RSS bytes/run, resume time).
async fn suspended(backend: Backend, dir: &Path, n: usize) -> (f64, f64, f64, Duration) {
    let store_dir = dir.join("suspended");
    let rss_before = rss();
    let started = Instant::now();
    let (ids, rss_per_run, elapsed): (Vec<RunId>, f64, Duration) = {
        let engine = engine(backend.open(&store_dir));
        engine.start_workers();
        let mut tasks = Vec::new();
        for k in 0..CALLERS {
            let engine = engine.clone();
            tasks.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                for id in (k..n).step_by(CALLERS) {
                    let handle = engine.start(PARKED, &(id as u64)).await.expect("start");
                    ids.push((id, handle.id()));
                }
                for (id, _) in &ids {
                    engine
                        .wait_for_hook(&parked_token(*id as u64), Duration::from_secs(600))
                        .await
                        .expect("hook");
                }
                ids
            }));
        }
        let mut ids = vec![RunId::new(); n];
        for t in tasks {
            for (id, run) in t.await.expect("starter") {
                ids[id] = run;
            }
        }
        let elapsed = started.elapsed();
        let rss_per_run = rss().saturating_sub(rss_before) as f64 / n as f64;
        engine.shutdown().await;
        (ids, rss_per_run, elapsed)
    };
    let disk_per_run = dir_bytes(&store_dir) as f64 / n as f64;

    let engine = engine(backend.open(&store_dir));
    engine.start_workers();
    let ids = Arc::new(ids);
    let resumed = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..CALLERS {
        let (engine, ids) = (engine.clone(), ids.clone());
        tasks.push(tokio::spawn(async move {
            for id in (k..n).step_by(CALLERS) {
                engine
                    .resume_hook(&parked_token(id as u64), &(id as u64))
                    .await
                    .expect("resume");
            }
            for id in (k..n).step_by(CALLERS) {
                let handle: RunHandle<u64> =
                    engine.run_handle(PARKED, ids[id]).await.expect("handle");
                assert_eq!(handle.result().await.expect("result"), id as u64);
            }
        }));
    }
    for t in tasks {
        t.await.expect("resumer");
    }
    let resume = resumed.elapsed();
    engine.shutdown().await;
    (
        n as f64 / elapsed.as_secs_f64(),
        disk_per_run,
        rss_per_run,
        resume,
    )
}

/// e: (adapter, webhook p50, bare p50) per adapter.
async fn webhooks(
    backend: Backend,
    dir: &Path,
    sizes: &Sizes,
) -> Vec<(Adapter, Duration, Duration)> {
    let engine = engine(backend.open(&dir.join("webhook")));
    engine.start_workers();
    engine.start(CONSUME, &()).await.expect("start");
    engine
        .wait_for_hook(WEBHOOK_TOKEN, Duration::from_secs(30))
        .await
        .expect("webhook live");
    let file = Arc::new(std::sync::Mutex::new(FloorFile::create(&dir.join("bare"))));
    let write: BareWrite = Arc::new(move |_body: Bytes| {
        let file = file.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                file.lock().expect("floor file").write();
            })
            .await
            .expect("bare write");
        })
    });
    let client = common::client();
    let path = workflow_http::webhook_path(WEBHOOK_TOKEN);
    let mut out = Vec::new();
    for adapter in Adapter::ALL {
        let urls = [
            format!("http://{}/bare", serve_bare(adapter, write.clone()).await),
            format!(
                "http://{}{path}",
                serve_webhook(adapter, engine.clone()).await
            ),
        ];
        let mut samples: [Vec<Duration>; 2] = Default::default();
        for url in &urls {
            for _ in 0..sizes.warmup {
                post(&client, url).await;
            }
        }
        for round in 0..sizes.e_rounds {
            for k in 0..2 {
                let i = (round + k) % 2;
                for _ in 0..sizes.e_per_round {
                    samples[i].push(post(&client, &urls[i]).await);
                }
            }
        }
        out.push((
            adapter,
            percentile(&samples[1], 0.5),
            percentile(&samples[0], 0.5),
        ));
    }
    engine.shutdown().await;
    out
}

/// Whether figure `letter` is to be measured (`WORKFLOW_BENCH_ONLY`).
fn wanted(letter: char) -> bool {
    std::env::var("WORKFLOW_BENCH_ONLY").map_or(true, |only| only.contains(letter))
}

async fn measure(backend: Backend, sizes: &Sizes) -> Figures {
    let dir = tempfile::tempdir().expect("tempdir");
    let root: PathBuf = dir.path().to_path_buf();
    let mut f = Figures::default();
    let fl = floor(&root.join("floor"), sizes.floor_time);
    (f.floor_ops, f.floor_p50) = (fl.ops_per_s, fl.p50);

    let engine = engine(backend.open(&root.join("runs")));
    engine.start_workers();
    if wanted('a') {
        f.a = three_steps(&engine, sizes).await;
    }
    if wanted('b') {
        f.b = sequential(&engine, sizes).await;
        f.f = raw_step_appends(engine.store().as_ref(), sizes.b_steps as usize).await;
    }
    if wanted('c') {
        f.c = concurrent(&engine, sizes).await;
    }
    engine.shutdown().await;
    drop(engine);
    if wanted('d') {
        f.d_runs = sizes.d_runs;
        (
            f.d_start_rate,
            f.d_disk_per_run,
            f.d_rss_per_run,
            f.d_resume,
        ) = suspended(backend, &root, sizes.d_runs).await;
    }
    if wanted('e') {
        f.e = webhooks(backend, &root, sizes).await;
    }
    f
}

fn print(backend: Backend, f: &Figures) {
    let floor_ms = f.floor_p50.as_secs_f64() * 1000.0;
    let ratio_ms = |d: Duration| d.as_secs_f64() * 1000.0 / floor_ms;
    println!(
        "\n{} (durable: fsync per acknowledged write)\n",
        backend.name()
    );
    println!("| figure | value | ratio to the floor |");
    println!("|---|--:|--:|");
    println!(
        "| floor: 128-byte append + fdatasync | {:.0} ops/s, p50 {} ms | 1.00x |",
        f.floor_ops,
        ms(f.floor_p50)
    );
    // Figures not measured (WORKFLOW_BENCH_ONLY) are left out.
    let [p50, p90, p99] = f.a;
    if !p50.is_zero() {
        println!(
        "| a. 3-step run, start to result | p50 {} / p90 {} / p99 {} ms | p50 {:.1}x floor p50; p99 {:.2}x own p50 |",
        ms(p50),
        ms(p90),
        ms(p99),
        ratio_ms(p50),
        p99.as_secs_f64() / p50.as_secs_f64()
    );
    }
    if f.b > 0.0 {
        println!(
            "| b. one run of sequential steps | {:.0} steps/s | {:.2}x floor ops/s |",
            f.b,
            f.b / f.floor_ops
        );
        let engine = (1.0 / f.b - f.f.as_secs_f64()).max(0.0);
        println!(
            "| f. (b's breakdown) a step's records appended directly | p50 {} ms; the engine adds {:.3} ms per step | {:.2}x floor p50 |",
            ms(f.f),
            engine * 1000.0,
            ratio_ms(f.f)
        );
    }
    if f.c > 0.0 {
        println!(
            "| c. 64 concurrent runs of 50 steps | {:.0} steps/s | {:.2}x floor ops/s; {:.2}x b |",
            f.c,
            f.c / f.floor_ops,
            f.c / f.b
        );
    }
    if f.d_runs == 0 {
        // Not measured (WORKFLOW_BENCH_ONLY).
    } else {
        print_suspended(f);
    }
    for (adapter, webhook, bare) in &f.e {
        println!(
            "| e. resume_webhook via {} | p50 {} ms (bare handler {} ms) | {:.2}x bare; {:.1}x floor p50 |",
            adapter.name(),
            ms(*webhook),
            ms(*bare),
            webhook.as_secs_f64() / bare.as_secs_f64(),
            ratio_ms(*webhook)
        );
    }
}

fn print_suspended(f: &Figures) {
    println!(
        "| d. {} runs suspended on a hook | start {:.0} runs/s; {:.0} B disk/run; {:.0} B RSS/run | start {:.2}x floor ops/s |",
        f.d_runs,
        f.d_start_rate,
        f.d_disk_per_run,
        f.d_rss_per_run,
        f.d_start_rate / f.floor_ops
    );
    println!(
        "| d. resume all {} after reopening | {:.2} s ({:.0} runs/s) | {:.2}x floor ops/s |",
        f.d_runs,
        f.d_resume.as_secs_f64(),
        f.d_runs as f64 / f.d_resume.as_secs_f64(),
        f.d_runs as f64 / f.d_resume.as_secs_f64() / f.floor_ops
    );
}

fn main() {
    let mode = mode();
    let sizes = sizes(mode);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let backends = [Backend::Sled, Backend::Redb]
        .into_iter()
        .filter(|b| std::env::var("WORKFLOW_BENCH_BACKEND").map_or(true, |only| only == b.name()));
    for backend in backends {
        let figures = runtime.block_on(measure(backend, &sizes));
        print(backend, &figures);
    }
    println!(
        "\n({mode:?} sizes; total {:.1} s)",
        started.elapsed().as_secs_f64()
    );
}
