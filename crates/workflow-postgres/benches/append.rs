//! Appends per second on `PostgresStore` next to `SledStore`, measured in the
//! same run so the ratios hold on a noisy machine.
//!
//! ```text
//! WORKFLOW_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo bench -p workflow-postgres --bench append            # ~2.5 s per measurement
//! ... -- --quick                                                 # ~0.5 s per measurement
//! ```
//!
//! (`WORKFLOW_BENCH_QUICK=1` does the same as `--quick`; `WORKFLOW_BENCH_SECS=N`
//! sets the time per measurement; `WORKFLOW_BENCH_PG_POOL=N` the PostgreSQL
//! pool size, default 24.) Without `WORKFLOW_TEST_POSTGRES_URL` it prints that
//! it was skipped.
//!
//! Each measurement runs 1, 16 or 64 concurrent writers (tokio multi-thread
//! runtime), each appending one event per call to its own run: steps created and
//! completed in turn, as an engine records them. Both stores acknowledge a write
//! only once it is durable: `SledStore` after flush + `fdatasync` (with group
//! commit), PostgreSQL after `COMMIT` with the server's default
//! `synchronous_commit = on` (WAL flushed; concurrent commits share flushes).
//! Measured next to them:
//! - `PostgresStore` with NOTIFY inside each write's transaction
//!   (`PostgresConfig::notify_in_transaction`), against the default of
//!   notifying right after the commit;
//! - the PostgreSQL floor: one autocommit `INSERT` of an event-sized row per
//!   write on the same number of connections: one round trip and one WAL flush,
//!   what any durable one-write-per-transaction use of the server pays.
//!
//! The PostgreSQL stores use fresh schemas, dropped at the end.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use workflow_postgres::{PostgresConfig, PostgresStore};
use workflow_store::{
    codec, CorrelationId, Event, EventData, NewRun, Payload, RunId, SledStore, Store, Timestamp,
};

/// The result a step records: a small struct, as a real step would.
fn step_result() -> Payload {
    Payload::encode(&("receipt", 4_200_u64, "EUR", true)).expect("encodable result")
}

/// The `i`-th event a writer appends: steps created and completed in turn.
fn event(i: u64, result: &Payload) -> EventData {
    let step = CorrelationId::from_parts("step", i / 2);
    if i % 2 == 0 {
        EventData::StepCreated {
            step,
            name: "charge".into(),
            input_digest: None,
        }
    } else {
        EventData::StepCompleted {
            step,
            result: result.clone(),
        }
    }
}

/// What one writer does once: append one event (or, for the floor, insert one row).
#[derive(Clone)]
enum Target {
    /// A store: `append` to the writer's run.
    Store(Arc<dyn Store>),
    /// The floor: one autocommit INSERT of an event-sized row, on one of these
    /// connections (shared round-robin by the writers).
    Raw(Arc<Vec<tokio_postgres::Client>>, Arc<String>),
}

/// `writers` concurrent writers, each appending to its own run.
struct Writers {
    target: Target,
    runs: Vec<(RunId, u64)>,
}

impl Writers {
    async fn new(target: Target, writers: usize) -> Self {
        let mut runs = Vec::with_capacity(writers);
        for _ in 0..writers {
            let id = RunId::new();
            if let Target::Store(store) = &target {
                store
                    .create_run(NewRun {
                        id,
                        workflow: "bench".into(),
                        input: Payload::encode(&()).expect("input"),
                    })
                    .await
                    .expect("create_run");
            }
            runs.push((id, 0));
        }
        Writers { target, runs }
    }

    /// Appends for about `d`; returns appends per second.
    async fn run(&mut self, d: Duration) -> f64 {
        let stop = Arc::new(AtomicBool::new(false));
        let appended = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let tasks: Vec<_> = self
            .runs
            .iter()
            .enumerate()
            .map(|(w, &(run, first))| {
                let (target, stop, appended) =
                    (self.target.clone(), stop.clone(), appended.clone());
                tokio::spawn(async move {
                    let result = step_result();
                    let mut i = first;
                    while !stop.load(Ordering::Relaxed) {
                        let e = event(i, &result);
                        match &target {
                            Target::Store(store) => {
                                store.append(run, vec![e], None).await.expect("append");
                            }
                            Target::Raw(clients, insert) => {
                                let body = codec::encode_event(&Event {
                                    seq: i,
                                    at: Timestamp::now(),
                                    data: e,
                                })
                                .expect("encode");
                                let seq = i64::try_from(i).expect("seq");
                                clients[w % clients.len()]
                                    .execute(insert.as_str(), &[&run.to_string(), &seq, &body])
                                    .await
                                    .expect("insert");
                            }
                        }
                        appended.fetch_add(1, Ordering::Relaxed);
                        i += 1;
                    }
                    i
                })
            })
            .collect();
        tokio::time::sleep(d).await;
        stop.store(true, Ordering::Relaxed);
        for (task, (_, next)) in tasks.into_iter().zip(self.runs.iter_mut()) {
            *next = task.await.expect("writer task");
        }
        appended.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn measure_secs() -> Duration {
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var_os("WORKFLOW_BENCH_QUICK").is_some_and(|v| v != "0");
    if let Some(secs) = std::env::var("WORKFLOW_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
    {
        return Duration::from_secs_f64(secs.max(0.1));
    }
    if quick {
        Duration::from_millis(500)
    } else {
        Duration::from_millis(2_500)
    }
}

/// Rounds each measurement is split into; the rounds of all measurements are
/// interleaved, so a change of load on the machine hits them all alike.
const ROUNDS: u32 = 5;

const WRITERS: [usize; 3] = [1, 16, 64];

fn main() {
    let Some(url) = std::env::var("WORKFLOW_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
    else {
        println!("SKIPPED workflow-postgres append benchmark: WORKFLOW_TEST_POSTGRES_URL not set");
        return;
    };
    let pool: usize = std::env::var("WORKFLOW_BENCH_PG_POOL")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24);
    let secs = measure_secs();
    let slice = secs / ROUNDS;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let scratch = tempfile::tempdir().expect("temporary directory");
    let schema = format!("wfbench_{:032x}", RunId::new().as_u128());
    let in_tx_schema = format!("{schema}_tx");

    let (rates, names) = rt.block_on(async {
        let sled: Arc<dyn Store> =
            Arc::new(SledStore::open(scratch.path().join("sled")).expect("open SledStore"));
        let connect = |schema: &str, in_tx: bool| {
            PostgresStore::connect_with(
                PostgresConfig::new(url.clone())
                    .schema(schema)
                    .pool_size(pool)
                    .notify_in_transaction(in_tx),
            )
        };
        let pg: Arc<dyn Store> = Arc::new(connect(&schema, false).await.expect("PostgreSQL"));
        let pg_tx: Arc<dyn Store> =
            Arc::new(connect(&in_tx_schema, true).await.expect("PostgreSQL"));
        let mut clients = Vec::new();
        for _ in 0..pool {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("connect");
            tokio::spawn(conn);
            clients.push(client);
        }
        clients[0]
            .batch_execute(&format!(
                "CREATE TABLE \"{schema}\".floor (run_id text, seq bigint, body bytea, \
                 PRIMARY KEY (run_id, seq))"
            ))
            .await
            .expect("floor table");
        let raw = Target::Raw(
            Arc::new(clients),
            Arc::new(format!(
                "INSERT INTO \"{schema}\".floor (run_id, seq, body) VALUES ($1, $2, $3)"
            )),
        );
        println!(
            "workflow-postgres append benchmark: {:.1} s per measurement in {ROUNDS} interleaved \
             rounds; PostgreSQL pools of {pool} connections",
            secs.as_secs_f64()
        );
        let mut names = Vec::new();
        let mut measurements = Vec::new();
        for n in WRITERS {
            let kinds = [
                ("SledStore", Target::Store(sled.clone())),
                ("PostgresStore", Target::Store(pg.clone())),
                ("PostgresStore, NOTIFY in tx", Target::Store(pg_tx.clone())),
                ("raw PostgreSQL INSERT (floor)", raw.clone()),
            ];
            for (name, target) in kinds {
                names.push(format!("{name}, {n} writer(s)"));
                measurements.push(Writers::new(target, n).await);
            }
        }
        let mut rates: Vec<Vec<f64>> = vec![Vec::new(); measurements.len()];
        for _ in 0..ROUNDS {
            for (m, w) in measurements.iter_mut().enumerate() {
                rates[m].push(w.run(slice).await);
            }
        }
        (rates, names)
    });
    rt.block_on(async {
        match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
            Ok((client, conn)) => {
                tokio::spawn(conn);
                for s in [&schema, &in_tx_schema] {
                    if let Err(e) = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{s}\" CASCADE"))
                        .await
                    {
                        eprintln!("could not drop the benchmark schema {s}: {e}");
                    }
                }
            }
            Err(e) => eprintln!("could not drop the benchmark schemas: {e}"),
        }
    });

    println!();
    println!("| measurement (median of rounds)                  | appends/s |");
    println!("|-------------------------------------------------|----------:|");
    for (name, r) in names.iter().zip(&rates) {
        println!("| {name:<47} | {:>9.0} |", median(r.clone()));
    }
    let ratio =
        |a: usize, b: usize| median(rates[a].iter().zip(&rates[b]).map(|(x, y)| x / y).collect());
    println!();
    println!("| ratio (median of per-round ratios)              |  value |");
    println!("|-------------------------------------------------|-------:|");
    let row = |name: String, value: f64| println!("| {name:<47} | {value:>6.2} |");
    for (i, n) in WRITERS.iter().enumerate() {
        let (sled, pg, pg_tx, floor) = (4 * i, 4 * i + 1, 4 * i + 2, 4 * i + 3);
        row(
            format!("PostgresStore / SledStore, {n} writer(s)"),
            ratio(pg, sled),
        );
        row(
            format!("PostgresStore / PostgreSQL floor, {n} writer(s)"),
            ratio(pg, floor),
        );
        row(
            format!("NOTIFY in tx / after commit, {n} writer(s)"),
            ratio(pg_tx, pg),
        );
    }
    for (i, n) in WRITERS.iter().enumerate().skip(1) {
        row(
            format!("PostgresStore {n} writers / 1 writer"),
            ratio(4 * i + 1, 1),
        );
    }
}
