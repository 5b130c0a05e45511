//! The storage backends side by side: `MemoryStore`, `SledStore`,
//! `RedbStore` and `PostgresStore`, every figure measured in this run.
//!
//! ```sh
//! cargo bench -p workflow-postgres --bench backends            # full
//! cargo bench -p workflow-postgres --bench backends -- --quick # shorter
//! ```
//!
//! PostgreSQL: `WORKFLOW_TEST_POSTGRES_URL`, or else
//! `postgres://postgres:postgres@127.0.0.1:5432/test` if that connects;
//! otherwise the PostgreSQL row is skipped. It works in fresh schemas, dropped
//! at the end. Sled and redb use their default configurations (durable:
//! every acknowledged write is synced to disk).
//!
//! Figures, per backend:
//! - appends/s with 1, 16 and 64 concurrent writers (tokio tasks), each
//!   appending one small event per call to its own run, for a fixed time;
//! - sequential durable steps/s: one run of N steps through an engine, median
//!   of 3;
//! - start-to-result latency of a 3-step run, one run after another (p50, p99);
//! - bytes on disk per suspended run: N runs each waiting on a hook (sled,
//!   redb: the data directory's files; PostgreSQL: the schema's tables with
//!   their indexes and TOAST, not the WAL);
//! - recovery after a kill: a child process (this binary, re-executed) creates
//!   the N suspended runs and is killed with SIGKILL once they are all
//!   suspended; then the time to reopen the store (to connect, for
//!   PostgreSQL), and the time for a new engine to resume all N runs (each
//!   replayed from its log) and complete them once every hook is resumed
//!   (16 concurrent callers of `resume_hook`).
//!
//! Then the same figures as ratios to sled's.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use workflow_core::{Context, Engine, HookOptions, StepError, WorkflowError};
use workflow_postgres::{PostgresConfig, PostgresStore};
use workflow_store::{
    CorrelationId, EventData, MemoryStore, NewRun, Payload, RedbStore, RunId, SledStore, Store,
};

const DEFAULT_PG_URL: &str = "postgres://postgres:postgres@127.0.0.1:5432/test";
/// Child mode: the backend (`sled`, `redb` or `postgres`).
const CHILD_BACKEND: &str = "WORKFLOW_BENCH_BACKENDS_CHILD";
/// Child mode: the data directory, or the PostgreSQL schema.
const CHILD_TARGET: &str = "WORKFLOW_BENCH_BACKENDS_TARGET";
/// Child mode: the PostgreSQL URL.
const CHILD_URL: &str = "WORKFLOW_BENCH_BACKENDS_URL";
/// Child mode: how many suspended runs to create.
const CHILD_RUNS: &str = "WORKFLOW_BENCH_BACKENDS_RUNS";

const WRITERS: [usize; 3] = [1, 16, 64];
/// Concurrent callers starting runs (child) and resuming hooks (recovery).
const CALLERS: usize = 16;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Backend {
    Memory,
    Sled,
    Redb,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Memory => "MemoryStore",
            Backend::Sled => "SledStore",
            Backend::Redb => "RedbStore",
            Backend::Postgres => "PostgresStore",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Sled => "sled",
            Backend::Redb => "redb",
            Backend::Postgres => "postgres",
        }
    }

    fn from_key(key: &str) -> Option<Backend> {
        [Backend::Sled, Backend::Redb, Backend::Postgres]
            .into_iter()
            .find(|b| b.key() == key)
    }
}

struct Settings {
    append_time: Duration,
    steps: u32,
    latency_runs: usize,
    suspended: usize,
}

impl Settings {
    fn new(quick: bool) -> Settings {
        if quick {
            Settings {
                append_time: Duration::from_millis(500),
                steps: 100,
                latency_runs: 30,
                suspended: 500,
            }
        } else {
            Settings {
                append_time: Duration::from_millis(1500),
                steps: 300,
                latency_runs: 100,
                suspended: 2000,
            }
        }
    }
}

/// One backend's figures; `None` is printed as "-".
#[derive(Default, Clone)]
struct Row {
    appends: [Option<f64>; 3],
    steps_per_s: Option<f64>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    bytes_per_run: Option<f64>,
    reopen_ms: Option<f64>,
    resume_all_s: Option<f64>,
}

impl Row {
    fn figures(&self) -> [Option<f64>; 9] {
        [
            self.appends[0],
            self.appends[1],
            self.appends[2],
            self.steps_per_s,
            self.p50_ms,
            self.p99_ms,
            self.bytes_per_run,
            self.reopen_ms,
            self.resume_all_s,
        ]
    }
}

async fn steps(ctx: Context, n: u32) -> Result<u32, WorkflowError> {
    let mut total = 0u32;
    for i in 0..n {
        total = total.wrapping_add(
            ctx.step("add", move |_| async move { Ok::<_, StepError>(i) })
                .await?,
        );
    }
    Ok(total)
}

/// Waits on the hook `susp-{id}` and returns what it receives.
async fn suspend(ctx: Context, id: u32) -> Result<String, WorkflowError> {
    let mut hook = ctx.create_hook::<String>(HookOptions::token(format!("susp-{id}")))?;
    Ok(hook.next().await?)
}

fn engine(store: Arc<dyn Store>) -> Engine {
    let engine = Engine::builder(store)
        .workflow("steps", steps)
        .workflow("suspend", suspend)
        .poll_interval(Duration::from_millis(5))
        .build();
    engine.start_workers();
    engine
}

fn schema_name() -> String {
    format!("wfb_{:032x}", RunId::new().as_u128())
}

fn pg_config(url: &str, schema: &str) -> PostgresConfig {
    PostgresConfig::new(url.to_string()).schema(schema)
}

/// Appends per second: `writers` tasks, each appending one event per call to
/// its own run, for `time`.
async fn appends_per_second(store: &Arc<dyn Store>, writers: usize, time: Duration) -> f64 {
    let mut runs = Vec::with_capacity(writers);
    for _ in 0..writers {
        let id = RunId::new();
        store
            .create_run(NewRun {
                id,
                workflow: "bench".into(),
                input: Payload::encode(&()).expect("encode input"),
            })
            .await
            .expect("create_run");
        store
            .append(id, vec![EventData::RunStarted], None)
            .await
            .expect("append run_started");
        runs.push(id);
    }
    let appended = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    // Each writer watches the clock itself: an in-memory append never yields,
    // so busy writers could starve a timer task on a small machine.
    let deadline = start + time;
    let tasks: Vec<_> = runs
        .into_iter()
        .map(|run| {
            let (store, appended) = (store.clone(), appended.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let event = EventData::StepCreated {
                        step: CorrelationId::new(format!("step:{i}")).expect("step id"),
                        name: "s".into(),
                        input_digest: None,
                    };
                    store.append(run, vec![event], None).await.expect("append");
                    appended.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("writer task");
    }
    appended.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

async fn steps_per_second(engine: &Engine, n: u32) -> f64 {
    let t = Instant::now();
    let run = engine.start("steps", &n).await.expect("start");
    let _: u32 = engine.result(&run).await.expect("result");
    f64::from(n) / t.elapsed().as_secs_f64()
}

/// Start-to-result times of 3-step runs, one after another, in ms, sorted.
async fn latencies_ms(engine: &Engine, runs: usize) -> Vec<f64> {
    let mut ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let run = engine.start("steps", &3u32).await.expect("start");
        let _: u32 = engine.result(&run).await.expect("result");
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    ms
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The `p`-th percentile (nearest rank) of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Figures 1 to 3 on `store`.
async fn throughput_and_latency(store: Arc<dyn Store>, settings: &Settings, row: &mut Row) {
    for (slot, writers) in WRITERS.into_iter().enumerate() {
        let rate = appends_per_second(&store, writers, settings.append_time).await;
        println!("  appends/s, {writers} writer(s): {rate:.0}");
        row.appends[slot] = Some(rate);
    }
    let engine = engine(store);
    let mut rates = Vec::new();
    for _ in 0..3 {
        rates.push(steps_per_second(&engine, settings.steps).await);
    }
    let rate = median(rates);
    println!("  sequential steps/s ({} steps): {rate:.0}", settings.steps);
    row.steps_per_s = Some(rate);
    let ms = latencies_ms(&engine, settings.latency_runs).await;
    let (p50, p99) = (percentile(&ms, 50.0), percentile(&ms, 99.0));
    println!("  3-step run latency: p50 {p50:.2} ms, p99 {p99:.2} ms");
    row.p50_ms = Some(p50);
    row.p99_ms = Some(p99);
    engine.shutdown().await;
}

/// Starts `n` runs of `suspend` (from several callers) and waits until each
/// has created its hook.
async fn create_suspended(engine: &Engine, n: usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let starters: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (engine, next) = (engine.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let id = u32::try_from(i).expect("run index");
                    engine.start("suspend", &id).await.expect("start");
                }
            })
        })
        .collect();
    for s in starters {
        s.await.expect("starter task");
    }
    for i in 0..n {
        engine
            .wait_for_hook(&format!("susp-{i}"), Duration::from_secs(600))
            .await
            .expect("run suspended on its hook");
    }
}

/// Resumes the hooks of the `n` suspended runs on a new engine and waits until
/// every run has completed; returns the seconds that took.
async fn resume_all(store: Arc<dyn Store>, n: usize) -> f64 {
    let engine = engine(store);
    let start = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (engine, next) = (engine.clone(), next.clone());
            tokio::spawn(async move {
                let mut runs = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let resumed = engine
                        .resume_hook(&format!("susp-{i}"), &format!("payload {i}"))
                        .await
                        .expect("resume_hook");
                    runs.push(resumed.run_id);
                }
                runs
            })
        })
        .collect();
    let mut runs = Vec::with_capacity(n);
    for c in callers {
        runs.extend(c.await.expect("resume task"));
    }
    // One waiter at a time: most runs are done by the time it gets to them.
    for run in runs {
        let out: String = engine.result(&run).await.expect("result");
        assert!(out.starts_with("payload "), "unexpected output {out:?}");
    }
    let secs = start.elapsed().as_secs_f64();
    engine.shutdown().await;
    secs
}

/// Child mode: create the suspended runs, say READY, and wait to be killed.
fn child_main(backend: &str) {
    let backend = Backend::from_key(backend).expect("child backend");
    let target = std::env::var(CHILD_TARGET).expect("child target");
    let n: usize = std::env::var(CHILD_RUNS)
        .expect("child runs")
        .parse()
        .expect("number of runs");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let store: Arc<dyn Store> = match backend {
            Backend::Sled => Arc::new(SledStore::open(&target).expect("open SledStore")),
            Backend::Redb => Arc::new(RedbStore::open(&target).expect("open RedbStore")),
            Backend::Postgres => {
                let url = std::env::var(CHILD_URL).expect("child PostgreSQL URL");
                Arc::new(
                    PostgresStore::connect_with(pg_config(&url, &target))
                        .await
                        .expect("connect PostgresStore"),
                )
            }
            Backend::Memory => unreachable!("no child for the memory store"),
        };
        let engine = engine(store);
        let start = Instant::now();
        create_suspended(&engine, n).await;
        // Every run waits on its hook; stopping the workers only makes sure no
        // lease is held when the kill comes (a held lease would make the
        // recovery wait for its expiry, 30 s, whatever the backend).
        engine.shutdown().await;
        let mut out = std::io::stdout().lock();
        writeln!(out, "READY {:.3}", start.elapsed().as_secs_f64()).expect("stdout");
        out.flush().expect("stdout");
        drop(out);
        // The store stays open until the parent kills this process.
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    });
}

/// Runs a child that creates `n` suspended runs in `target`, kills it with
/// SIGKILL once it says READY; returns the child's creation time in seconds.
fn create_and_kill(backend: Backend, target: &str, url: Option<&str>, n: usize) -> f64 {
    let mut cmd = Command::new(std::env::current_exe().expect("current exe"));
    cmd.env(CHILD_BACKEND, backend.key())
        .env(CHILD_TARGET, target)
        .env(CHILD_RUNS, n.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(url) = url {
        cmd.env(CHILD_URL, url);
    }
    let mut child = cmd.spawn().expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let mut secs = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read child stdout");
        if let Some(rest) = line.strip_prefix("READY") {
            secs = Some(rest.trim().parse::<f64>().expect("READY time"));
            break;
        }
    }
    let Some(secs) = secs else {
        let status = child.wait().expect("wait for child");
        panic!("the child exited before READY: {status}");
    };
    child.kill().expect("kill child"); // SIGKILL on unix
    child.wait().expect("wait for child");
    secs
}

/// Total size of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let entry = entry.expect("dir entry");
        let meta = entry.metadata().expect("metadata");
        if meta.is_dir() {
            total += dir_bytes(&entry.path());
        } else {
            total += meta.len();
        }
    }
    total
}

/// Size of the schema's tables with their indexes and TOAST (not the WAL).
async fn schema_bytes(url: &str, schema: &str) -> u64 {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    let driver = tokio::spawn(conn);
    // pg_total_relation_size of each table covers its indexes and TOAST.
    let row = client
        .query_one(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind = 'r'",
            &[&schema],
        )
        .await
        .expect("schema size");
    drop(client);
    let _ = driver.await;
    u64::try_from(row.get::<_, i64>(0)).expect("size")
}

/// Figures 4 and 5 for an embedded store: the child works in `dir`.
fn embedded_recovery(
    rt: &tokio::runtime::Runtime,
    backend: Backend,
    dir: &Path,
    n: usize,
    row: &mut Row,
) {
    let target = dir.to_str().expect("UTF-8 temp path");
    let created = create_and_kill(backend, target, None, n);
    let bytes = dir_bytes(dir);
    println!("  {n} suspended runs created by the child in {created:.1} s; {bytes} bytes on disk");
    row.bytes_per_run = Some(bytes as f64 / n as f64);
    let t = Instant::now();
    let store: Arc<dyn Store> = match backend {
        Backend::Sled => Arc::new(SledStore::open(dir).expect("reopen SledStore")),
        Backend::Redb => Arc::new(RedbStore::open(dir).expect("reopen RedbStore")),
        _ => unreachable!("not an embedded store"),
    };
    let reopen = t.elapsed().as_secs_f64() * 1e3;
    let resume = rt.block_on(resume_all(store, n));
    println!("  after SIGKILL: reopen {reopen:.1} ms; resume all {n}: {resume:.2} s");
    row.reopen_ms = Some(reopen);
    row.resume_all_s = Some(resume);
}

/// Figures 4 and 5 for PostgreSQL: the child works in `schema`.
fn postgres_recovery(
    rt: &tokio::runtime::Runtime,
    url: &str,
    schema: &str,
    n: usize,
    row: &mut Row,
) {
    let created = create_and_kill(Backend::Postgres, schema, Some(url), n);
    rt.block_on(async {
        let bytes = schema_bytes(url, schema).await;
        println!(
            "  {n} suspended runs created by the child in {created:.1} s; {bytes} bytes in the schema"
        );
        row.bytes_per_run = Some(bytes as f64 / n as f64);
        let t = Instant::now();
        let store = PostgresStore::connect_with(pg_config(url, schema))
            .await
            .expect("reconnect PostgresStore");
        let reopen = t.elapsed().as_secs_f64() * 1e3;
        let resume = resume_all(Arc::new(store), n).await;
        println!("  after SIGKILL: connect {reopen:.1} ms; resume all {n}: {resume:.2} s");
        row.reopen_ms = Some(reopen);
        row.resume_all_s = Some(resume);
    });
}

/// The PostgreSQL URL to use, or why PostgreSQL is skipped.
async fn postgres_url() -> Result<String, String> {
    let from_env = std::env::var("WORKFLOW_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.trim().is_empty());
    let url = from_env.unwrap_or_else(|| DEFAULT_PG_URL.to_string());
    let connect = tokio_postgres::connect(&url, tokio_postgres::NoTls);
    match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok((client, conn))) => {
            let driver = tokio::spawn(conn);
            drop(client);
            let _ = driver.await;
            Ok(url)
        }
        Ok(Err(e)) => Err(format!("cannot connect to {url}: {e}")),
        Err(_) => Err(format!("connecting to {url} timed out")),
    }
}

async fn drop_schemas(url: &str, schemas: &[String]) {
    match tokio_postgres::connect(url, tokio_postgres::NoTls).await {
        Ok((client, conn)) => {
            let driver = tokio::spawn(conn);
            for s in schemas {
                if let Err(e) = client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{s}\" CASCADE"))
                    .await
                {
                    eprintln!("could not drop the benchmark schema {s}: {e}");
                }
            }
            drop(client);
            let _ = driver.await;
        }
        Err(e) => eprintln!("could not drop the benchmark schemas {schemas:?}: {e}"),
    }
}

const HEADERS: [&str; 9] = [
    "appends/s 1 w",
    "appends/s 16 w",
    "appends/s 64 w",
    "seq. steps/s",
    "3-step p50 ms",
    "3-step p99 ms",
    "bytes/susp. run",
    "reopen ms",
    "resume all s",
];

fn print_table(title: &str, rows: &[(Backend, [Option<f64>; 9])], format: impl Fn(f64) -> String) {
    println!();
    print!("| {title:<13} |");
    for h in HEADERS {
        print!(" {h} |");
    }
    println!();
    print!("|---------------|");
    for h in HEADERS {
        print!("{}:|", "-".repeat(h.len() + 1));
    }
    println!();
    for (backend, figures) in rows {
        print!("| {:<13} |", backend.name());
        for (h, f) in HEADERS.iter().zip(figures) {
            let cell = f.map_or_else(|| "-".to_string(), &format);
            print!(" {cell:>w$} |", w = h.len());
        }
        println!();
    }
}

fn figure(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn main() {
    if let Ok(backend) = std::env::var(CHILD_BACKEND) {
        child_main(&backend);
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var_os("WORKFLOW_BENCH_QUICK").is_some_and(|v| v != "0");
    let settings = Settings::new(quick);
    let n = settings.suspended;
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    println!(
        "storage backends benchmark{}: appends for {:.1} s per writer count, {} sequential steps \
         (median of 3), {} 3-step runs, {n} suspended runs",
        if quick { " (quick)" } else { "" },
        settings.append_time.as_secs_f64(),
        settings.steps,
        settings.latency_runs,
    );
    let pg_url = match rt.block_on(postgres_url()) {
        Ok(url) => Some(url),
        Err(why) => {
            println!("SKIPPED PostgreSQL: {why}");
            None
        }
    };
    let mut rows = Vec::new();

    println!("{}", Backend::Memory.name());
    let mut row = Row::default();
    rt.block_on(throughput_and_latency(
        Arc::new(MemoryStore::new()),
        &settings,
        &mut row,
    ));
    rows.push((Backend::Memory, row));

    for backend in [Backend::Sled, Backend::Redb] {
        println!("{}", backend.name());
        let mut row = Row::default();
        let dir = tempfile::tempdir().expect("temporary directory");
        let store: Arc<dyn Store> = match backend {
            Backend::Sled => Arc::new(SledStore::open(dir.path()).expect("open SledStore")),
            _ => Arc::new(RedbStore::open(dir.path()).expect("open RedbStore")),
        };
        rt.block_on(throughput_and_latency(store, &settings, &mut row));
        let killed = tempfile::tempdir().expect("temporary directory");
        embedded_recovery(&rt, backend, killed.path(), n, &mut row);
        rows.push((backend, row));
    }

    if let Some(url) = &pg_url {
        println!("{}", Backend::Postgres.name());
        let mut row = Row::default();
        let schemas = [schema_name(), schema_name()];
        let store = rt
            .block_on(PostgresStore::connect_with(pg_config(url, &schemas[0])))
            .expect("connect PostgresStore");
        rt.block_on(throughput_and_latency(Arc::new(store), &settings, &mut row));
        postgres_recovery(&rt, url, &schemas[1], n, &mut row);
        rt.block_on(drop_schemas(url, &schemas));
        rows.push((Backend::Postgres, row));
    }

    let absolute: Vec<_> = rows.iter().map(|(b, r)| (*b, r.figures())).collect();
    print_table("backend", &absolute, figure);
    let sled = rows
        .iter()
        .find(|(b, _)| *b == Backend::Sled)
        .map(|(_, r)| r.figures())
        .expect("sled row");
    let ratios: Vec<_> = absolute
        .iter()
        .map(|(b, figures)| {
            let mut r = [None; 9];
            for (i, f) in figures.iter().enumerate() {
                r[i] = f.zip(sled[i]).map(|(x, s)| x / s);
            }
            (*b, r)
        })
        .collect();
    print_table("/ sled", &ratios, |v| format!("{v:.2}x"));
    println!();
    println!(
        "(ratios are figure / sled's figure: above 1 is more for throughput, slower for \
         latency, reopen and resume, bigger for bytes)"
    );
    println!("total time: {:.0} s", started.elapsed().as_secs_f64());
}
