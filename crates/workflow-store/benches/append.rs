//! Durable appends per second on `SledStore`, against the physical floor.
//!
//! ```text
//! cargo bench -p workflow-store --bench append            # ~2.5 s per measurement
//! cargo bench -p workflow-store --bench append -- --quick # ~0.5 s per measurement
//! ```
//!
//! (`WORKFLOW_BENCH_QUICK=1` does the same as `--quick`; `WORKFLOW_BENCH_SECS=N`
//! sets the time per measurement.)
//!
//! Measured in one run, each measurement in rounds interleaved with the others'
//! and every ratio the median of its per-round ratios, so the ratios hold on a
//! noisy machine:
//! - the floor: raw sled, one thread, per operation insert a record the size of
//!   an encoded event, `flush()` and `fdatasync` sled's data file: the same
//!   durability as an acknowledged append (`SledStore` fsyncs by default, because
//!   sled's flush alone does not survive a power cut; see `SledConfig::fsync`);
//! - the same without `fdatasync` (sled's own durability), against `SledStore`
//!   with `fsync(false)`;
//! - `SledStore` with one writer appending one event per call;
//! - `SledStore` with 16 and 64 concurrent writers (tokio multi-thread runtime),
//!   each appending to its own run: group commit shares transactions and flushes;
//! - for reference, sled's floor for an *atomic* write: a one-key transaction +
//!   `flush()` per operation. In sled 0.34 every atomic multi-key write
//!   (transaction or batch) seals the current log buffer and writes a batch
//!   manifest of its own, a second disk write per commit that a plain insert does
//!   not pay; this floor bounds any one-write-at-a-time use of sled transactions.
//!
//! Targets (DESIGN §8): one writer at least 0.7x the floor; 64 writers at least
//! 3x one writer.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use workflow_store::{
    codec, CorrelationId, Event, EventData, NewRun, Payload, RunId, SledConfig, SledStore, Store,
    Timestamp,
};

/// The result a step records in the benchmark: a small struct, as a real step would.
fn step_result() -> Payload {
    Payload::encode(&("receipt", 4_200_u64, "EUR", true)).expect("encodable result")
}

fn step_id(i: u64) -> CorrelationId {
    CorrelationId::from_parts("step", i)
}

/// The `i`-th event a writer appends: steps created and completed in turn.
fn event(i: u64, result: &Payload) -> EventData {
    let step = step_id(i / 2);
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

/// Mean encoded size of the events the writers append.
fn encoded_event_size() -> usize {
    let result = step_result();
    let sizes: Vec<usize> = (0..2)
        .map(|i| {
            let e = Event {
                seq: 1_000 + i,
                at: Timestamp::now(),
                data: event(1_000 + i, &result),
            };
            codec::encode_event(&e).expect("encodable event").len()
        })
        .collect();
    sizes.iter().sum::<usize>() / sizes.len()
}

/// How a raw-sled floor writes each operation.
#[derive(Clone, Copy)]
struct Floor {
    /// In a one-key transaction (sled's atomic write) rather than a plain insert.
    transaction: bool,
    /// `fdatasync` sled's data file after `flush()`, as `SledStore` does by default.
    fsync: bool,
}

/// Something measured in rounds: each call runs for about `d` and returns ops/s.
trait Measurement {
    fn run(&mut self, d: Duration) -> f64;
}

/// A floor: one thread, per operation insert a record the size of an encoded
/// event, `flush()`, and (with `fsync`) `fdatasync` the data file.
struct RawFloor {
    db: sled::Db,
    tree: sled::Tree,
    data_file: std::fs::File,
    value: Vec<u8>,
    how: Floor,
    next_key: u64,
}

impl RawFloor {
    fn new(dir: &Path, record: usize, how: Floor) -> Self {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(256 * 1024 * 1024)
            .open()
            .expect("open raw sled");
        let tree = db.open_tree("events").expect("open tree");
        let data_file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join("db"))
            .expect("open sled's data file");
        RawFloor {
            db,
            tree,
            data_file,
            value: vec![0xAB_u8; record],
            how,
            next_key: 0,
        }
    }
}

impl Measurement for RawFloor {
    fn run(&mut self, d: Duration) -> f64 {
        use sled::transaction::{ConflictableTransactionError, TransactionalTree};
        let start = Instant::now();
        let mut ops = 0_u64;
        while start.elapsed() < d {
            let key = self.next_key.to_be_bytes();
            self.next_key += 1;
            if self.how.transaction {
                self.tree
                    .transaction(|tx: &TransactionalTree| {
                        tx.insert(&key[..], self.value.as_slice())?;
                        Ok::<_, ConflictableTransactionError<()>>(())
                    })
                    .expect("transaction");
            } else {
                self.tree
                    .insert(key, self.value.as_slice())
                    .expect("insert");
            }
            self.db.flush().expect("flush");
            if self.how.fsync {
                self.data_file.sync_data().expect("fdatasync");
            }
            ops += 1;
        }
        ops as f64 / start.elapsed().as_secs_f64()
    }
}

/// `writers` concurrent writers on a `SledStore`, each appending to its own run.
struct StoreWriters {
    rt: tokio::runtime::Runtime,
    store: SledStore,
    /// Each writer's run and the index of the next event it appends.
    runs: Vec<(RunId, u64)>,
}

impl StoreWriters {
    fn new(dir: &Path, writers: usize, fsync: bool) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let store =
            SledStore::open_with(SledConfig::new(dir).fsync(fsync)).expect("open SledStore");
        let runs = rt.block_on(async {
            let mut runs = Vec::with_capacity(writers);
            for _ in 0..writers {
                let id = RunId::new();
                store
                    .create_run(NewRun {
                        id,
                        workflow: "bench".into(),
                        input: Payload::encode(&()).expect("input"),
                    })
                    .await
                    .expect("create_run");
                runs.push((id, 0));
            }
            runs
        });
        StoreWriters { rt, store, runs }
    }
}

impl Measurement for StoreWriters {
    fn run(&mut self, d: Duration) -> f64 {
        let store = &self.store;
        let runs = &mut self.runs;
        self.rt.block_on(async {
            let stop = Arc::new(AtomicBool::new(false));
            let appended = Arc::new(AtomicU64::new(0));
            let start = Instant::now();
            let tasks: Vec<_> = runs
                .iter()
                .map(|&(run, first)| {
                    let (store, stop, appended) = (store.clone(), stop.clone(), appended.clone());
                    tokio::spawn(async move {
                        let result = step_result();
                        let mut i = first;
                        while !stop.load(Ordering::Relaxed) {
                            store
                                .append(run, vec![event(i, &result)], None)
                                .await
                                .expect("append");
                            appended.fetch_add(1, Ordering::Relaxed);
                            i += 1;
                        }
                        i
                    })
                })
                .collect();
            tokio::time::sleep(d).await;
            stop.store(true, Ordering::Relaxed);
            for (task, (_, next)) in tasks.into_iter().zip(runs.iter_mut()) {
                *next = task.await.expect("writer task");
            }
            appended.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
        })
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

fn verdict(value: f64, target: Option<f64>) -> String {
    match target {
        Some(t) if value >= t => format!(">= {t:.1}  ok"),
        Some(t) => format!(">= {t:.1}  MISSED"),
        None => String::new(),
    }
}

/// Rounds each measurement is split into; the rounds of all measurements are
/// interleaved, so a change of load on the machine hits them all alike.
const ROUNDS: u32 = 5;

fn main() {
    // `cargo bench` passes `--bench`; a filter or other flags are not used here.
    let secs = measure_secs();
    let slice = secs / ROUNDS;
    let record = encoded_event_size();
    let scratch = tempfile::tempdir().expect("temporary directory");
    let dir = |name: &str| scratch.path().join(name);

    println!(
        "workflow-store append benchmark: {:.1} s per measurement in {ROUNDS} interleaved rounds, \
         event record {record} bytes",
        secs.as_secs_f64()
    );
    let floor = |transaction, fsync| Floor { transaction, fsync };
    let mut measurements: Vec<(&str, Box<dyn Measurement>)> = vec![
        (
            "raw sled insert + flush",
            Box::new(RawFloor::new(
                &dir("floor-nosync"),
                record,
                floor(false, false),
            )),
        ),
        (
            "raw sled insert + flush + fdatasync (floor)",
            Box::new(RawFloor::new(&dir("floor"), record, floor(false, true))),
        ),
        (
            "raw sled 1-key transaction + flush + fdatasync",
            Box::new(RawFloor::new(&dir("tx-floor"), record, floor(true, true))),
        ),
        (
            "SledStore, 1 writer, fsync off",
            Box::new(StoreWriters::new(&dir("single-nosync"), 1, false)),
        ),
        (
            "SledStore, 1 writer",
            Box::new(StoreWriters::new(&dir("single"), 1, true)),
        ),
        (
            "SledStore, 16 concurrent writers",
            Box::new(StoreWriters::new(&dir("c16"), 16, true)),
        ),
        (
            "SledStore, 64 concurrent writers",
            Box::new(StoreWriters::new(&dir("c64"), 64, true)),
        ),
    ];
    // rates[m][r]: ops/s of measurement m in round r.
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); measurements.len()];
    for _ in 0..ROUNDS {
        for (m, (_, measurement)) in measurements.iter_mut().enumerate() {
            rates[m].push(measurement.run(slice));
        }
    }
    if std::env::var_os("WORKFLOW_BENCH_DEBUG").is_some() {
        for (name, _) in &measurements {
            eprintln!("{name}");
        }
        eprintln!("{rates:?}");
    }

    println!();
    println!("| measurement (median of rounds)                       |    ops/s |");
    println!("|------------------------------------------------------|---------:|");
    for ((name, _), r) in measurements.iter().zip(&rates) {
        println!("| {name:<52} | {:>8.0} |", median(r.clone()));
    }
    let [floor_nosync, floor, tx_floor, single_nosync, single, c16, c64] = [0, 1, 2, 3, 4, 5, 6];
    // Each ratio is the median of the per-round ratios.
    let ratio =
        |a: usize, b: usize| median(rates[a].iter().zip(&rates[b]).map(|(x, y)| x / y).collect());
    println!();
    println!("| ratio (median of rounds)                  |  value | target         |");
    println!("|-------------------------------------------|-------:|----------------|");
    let rows = [
        ("1 writer / floor", ratio(single, floor), Some(0.7)),
        (
            "1 writer, fsync off / insert + flush",
            ratio(single_nosync, floor_nosync),
            Some(0.7),
        ),
        (
            "1-key transaction floor / floor",
            ratio(tx_floor, floor),
            None,
        ),
        (
            "1 writer / 1-key transaction floor",
            ratio(single, tx_floor),
            None,
        ),
        ("16 writers / 1 writer", ratio(c16, single), None),
        ("64 writers / 1 writer", ratio(c64, single), Some(3.0)),
        ("64 writers / floor", ratio(c64, floor), None),
    ];
    for (name, value, target) in rows {
        println!(
            "| {name:<41} | {value:>6.2} | {:<14} |",
            verdict(value, target)
        );
    }
}
