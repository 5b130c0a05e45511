//! Replay equivalence: generated workflow programs give the same result and
//! the same log (ignoring timestamps) whether they run straight through or are
//! interrupted by engine crashes and cache drops at random moments, on
//! MemoryStore and on SledStore.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use workflow_core::{Backoff, Context, Engine, StepError, StepOptions, WorkflowError};
use workflow_store::{Event, EventData, MemoryStore, RunId, SledStore, Store};

#[derive(Clone, Debug, Serialize, Deserialize)]
enum Instr {
    /// A step that fails `fail` times (retryable) before succeeding, or fails fatally.
    Step {
        fail: u8,
        fatal: bool,
    },
    /// Steps run concurrently with `join_all`; each fails `fail` times first.
    Parallel(Vec<u8>),
    Sleep {
        ms: u8,
    },
    Random,
}

fn instr() -> impl Strategy<Value = Instr> {
    prop_oneof![
        4 => (0..3u8, prop::bool::weighted(0.15)).prop_map(|(fail, fatal)| Instr::Step { fail, fatal }),
        2 => prop::collection::vec(0..2u8, 2..4).prop_map(Instr::Parallel),
        2 => (0..40u8).prop_map(|ms| Instr::Sleep { ms }),
        1 => Just(Instr::Random),
    ]
}

#[derive(Clone, Debug)]
enum Disruption {
    ClearCache,
    Crash,
}

fn disruption() -> impl Strategy<Value = (u8, Disruption)> {
    (
        1..25u8,
        prop_oneof![Just(Disruption::ClearCache), Just(Disruption::Crash)],
    )
}

fn opts() -> StepOptions {
    StepOptions::default().max_attempts(3).backoff(Backoff {
        initial: Duration::from_millis(3),
        factor: 2.0,
        max: Duration::from_millis(10),
    })
}

async fn attempt_step(
    s: workflow_core::StepContext,
    fail: u8,
    fatal: bool,
) -> Result<String, StepError> {
    tokio::time::sleep(Duration::from_millis(2)).await;
    if fatal {
        return Err(StepError::fatal(format!("{} is fatal", s.step_id())));
    }
    if s.attempt() <= u32::from(fail) {
        return Err(StepError::retryable(format!(
            "{} attempt {}",
            s.step_id(),
            s.attempt()
        )));
    }
    Ok(format!("{}@{}", s.step_id(), s.attempt()))
}

async fn interpret(ctx: Context, program: Vec<Instr>) -> Result<Vec<String>, WorkflowError> {
    let mut out = Vec::new();
    for (i, ins) in program.into_iter().enumerate() {
        match ins {
            Instr::Step { fail, fatal } => {
                let r = ctx
                    .step_with(&format!("s{i}"), opts(), move |s| {
                        attempt_step(s, fail, fatal)
                    })
                    .await;
                out.push(match r {
                    Ok(v) => v,
                    Err(e) => format!("err:{e}"),
                });
            }
            Instr::Parallel(fails) => {
                let steps = fails.into_iter().enumerate().map(|(j, fail)| {
                    ctx.step_with(&format!("p{i}.{j}"), opts(), move |s| {
                        attempt_step(s, fail, false)
                    })
                });
                for r in join_all(steps).await {
                    out.push(r.unwrap_or_else(|e| format!("err:{e}")));
                }
            }
            Instr::Sleep { ms } => {
                ctx.sleep(Duration::from_millis(u64::from(ms))).await?;
                out.push(format!("slept {ms}"));
            }
            Instr::Random => out.push(format!("rand {}", ctx.random::<u32>())),
        }
    }
    Ok(out)
}

fn engine<S: Store + Clone>(store: S) -> Engine {
    let e = Engine::builder(store)
        .workflow("program", interpret)
        .lease_ttl(Duration::from_millis(150))
        .poll_interval(Duration::from_millis(10))
        .build();
    e.start_workers();
    e
}

/// The log without timestamps, grouped so that concurrent steps may finish in
/// any order: run-level events in order, then each operation's events in order.
fn normalized(log: &[Event]) -> (Vec<String>, std::collections::BTreeMap<String, Vec<String>>) {
    let mut run = Vec::new();
    let mut ops: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for e in log {
        let text = match &e.data {
            EventData::StepRetrying { step, error, .. } => {
                format!("retrying {step} {}", error.message)
            }
            EventData::WaitCreated { wait, .. } => format!("wait_created {wait}"),
            EventData::StepCompleted { step, result } => {
                format!("completed {step} {:?}", result.as_bytes())
            }
            EventData::RunCompleted { output } => format!("run_completed {:?}", output.as_bytes()),
            other => format!("{other:?}"),
        };
        match e.data.correlation_id() {
            Some(id) => ops.entry(id.to_string()).or_default().push(text),
            None => run.push(text),
        }
    }
    (run, ops)
}

async fn run_program<S: Store + Clone>(
    store: S,
    program: &[Instr],
    run: RunId,
    disruptions: &[(u8, Disruption)],
    hits: &Hits,
    heal: &dyn Fn(),
) -> Vec<String> {
    let mut e = engine(store.clone());
    // Starting may fail on a faulty store; start_with_id is idempotent.
    let mut tries = 0;
    while let Err(err) = e.start_with_id(run, "program", &program.to_vec()).await {
        tries += 1;
        assert!(tries < 100, "start kept failing: {err}");
    }
    for (delay, d) in disruptions {
        tokio::time::sleep(Duration::from_millis(u64::from(*delay))).await;
        let mid_run = !matches!(store.get_run(run).await, Ok(Some(r)) if r.status.is_terminal());
        match d {
            Disruption::ClearCache => {
                hits.clears
                    .fetch_add(u32::from(mid_run), std::sync::atomic::Ordering::SeqCst);
                e.clear_cache()
            }
            Disruption::Crash => {
                hits.crashes
                    .fetch_add(u32::from(mid_run), std::sync::atomic::Ordering::SeqCst);
                e.shutdown_now();
                e = engine(store.clone());
            }
        }
    }
    heal();
    let out: Vec<String> = tokio::time::timeout(Duration::from_secs(30), e.result(&run))
        .await
        .expect("the run did not finish within 30 s")
        .unwrap();
    e.shutdown().await;
    out
}

/// How many disruptions struck a run that had not finished yet.
#[derive(Default)]
struct Hits {
    crashes: std::sync::atomic::AtomicU32,
    clears: std::sync::atomic::AtomicU32,
}

fn check_equivalence<S: Store + Clone>(make: impl Fn() -> S) {
    check_equivalence_with(make, |s: &S| s.clone(), |_: &S| {})
}

/// `make` builds the store of the disrupted run; `plain` gives the store to
/// read its log from, `heal` ends its faults before the result is awaited.
fn check_equivalence_with<S: Store + Clone, P: Store>(
    make: impl Fn() -> S,
    plain: impl Fn(&S) -> P,
    heal: impl Fn(&S),
) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let hits = Hits::default();
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let strategy = (
        prop::collection::vec(instr(), 3..10),
        prop::collection::vec(disruption(), 0..4),
    );
    runner
        .run(&strategy, |(program, disruptions)| {
            rt.block_on(async {
                let run = RunId::new();
                // The reference: straight through on a fresh MemoryStore.
                let straight = MemoryStore::new();
                let out_a = run_program(straight.clone(), &program, run, &[], &hits, &|| {}).await;
                let log_a = straight.read_log(run).await.unwrap();
                let store = make();
                let out_b = run_program(store.clone(), &program, run, &disruptions, &hits, &|| {
                    heal(&store)
                })
                .await;
                let log_b = plain(&store).read_log(run).await.unwrap();
                prop_assert_eq!(&out_a, &out_b, "results differ");
                prop_assert_eq!(normalized(&log_a), normalized(&log_b), "logs differ");
                Ok(())
            })
        })
        .unwrap();
    // The test only proves something if disruptions struck runs in flight.
    let (crashes, clears) = (hits.crashes.into_inner(), hits.clears.into_inner());
    println!("disruptions during runs: {crashes} crashes, {clears} cache drops");
    assert!(
        crashes >= 2 && clears >= 2,
        "too few disruptions hit a running run: {crashes} crashes, {clears} cache drops"
    );
}

#[test]
fn replay_equivalence_on_memory_store() {
    check_equivalence(MemoryStore::new);
}

#[test]
fn replay_equivalence_on_sled_store() {
    let dirs = Arc::new(std::sync::Mutex::new(Vec::new()));
    check_equivalence(move || {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        dirs.lock().unwrap().push(dir);
        store
    });
}

#[test]
fn replay_equivalence_under_store_faults() {
    use workflow_store::faults::{FaultConfig, FaultyStore};
    let seed = std::sync::atomic::AtomicU64::new(1);
    check_equivalence_with(
        || {
            let s = seed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            FaultyStore::new(
                MemoryStore::new(),
                FaultConfig::new(s)
                    .fail(0.03)
                    .timeout(0.03)
                    .delay(0.1, Duration::from_millis(5)),
            )
        },
        |s| s.inner().clone(),
        |s| s.set_enabled(false),
    );
}
