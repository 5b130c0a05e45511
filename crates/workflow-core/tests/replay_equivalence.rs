//! Replay equivalence: generated workflow programs give the same result and
//! the same log (ignoring timestamps and attempt bookkeeping) whether they run
//! straight through or are interrupted by engine crashes and cache drops at
//! random moments, on MemoryStore and on SledStore; and the code replays the
//! disrupted run's log without a mismatch (`check_replay`).
//!
//! Programs mix sequential and parallel steps that fail a few times, step
//! panics, steps longer than the lease, durable sleeps, deterministic random
//! draws, and races: a short timer against a slow step, and a hook payload
//! (sent by the harness as soon as the hook exists) against a slow step, child
//! runs awaited alone or raced against durable timers, and `patched`. The
//! races have margins wide enough that the winner is the same in every run, so
//! they test that the driver delivers timers and payloads while steps run.
//!
//! A crash loses the attempt in progress, and the engine that takes over
//! counts it: the disrupted log then has more `step_started`/`step_retrying`
//! events, so those are left out of the comparison, and steps fail by how
//! often they have *executed* (not by attempt number) with a generous
//! `max_attempts`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use futures::FutureExt;
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use workflow_core::{Backoff, Context, Engine, HookOptions, StepError, StepOptions, WorkflowError};
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
    /// A step that panics on its first execution.
    Panic,
    /// A step that runs for three lease lengths, waking every 5 ms.
    Long,
    /// `select_biased!` of a 5 ms timer and a 400 ms step: the timer wins.
    TimerBeatsStep,
    /// `select_biased!` of a hook (its payload sent when the hook exists) and
    /// a 400 ms step: the payload wins.
    PayloadBeatsStep,
    /// A child run whose step fails `fail` times first; the parent awaits it.
    Child {
        fail: u8,
    },
    /// `select_biased!` of a 5 ms durable timer and a child that sleeps for
    /// a minute: the timer wins (the child is cancelled when the parent ends).
    TimerBeatsChild,
    /// `select_biased!` of a child with one quick step and a one-minute
    /// durable timer: the child wins.
    ChildBeatsTimer,
    /// `Context::patched`: a new run takes the new branch.
    Patched,
}

fn instr() -> impl Strategy<Value = Instr> {
    prop_oneof![
        4 => (0..3u8, prop::bool::weighted(0.15)).prop_map(|(fail, fatal)| Instr::Step { fail, fatal }),
        2 => prop::collection::vec(0..2u8, 2..4).prop_map(Instr::Parallel),
        2 => (0..40u8).prop_map(|ms| Instr::Sleep { ms }),
        1 => Just(Instr::Random),
        1 => Just(Instr::Panic),
        1 => Just(Instr::TimerBeatsStep),
        1 => Just(Instr::PayloadBeatsStep),
        1 => Just(Instr::Long),
        2 => (0..2u8).prop_map(|fail| Instr::Child { fail }),
        1 => Just(Instr::TimerBeatsChild),
        1 => Just(Instr::ChildBeatsTimer),
        1 => Just(Instr::Patched),
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

/// Lease of the engines under test; `Instr::Long` runs three times as long.
const LEASE: Duration = Duration::from_millis(150);

fn opts() -> StepOptions {
    // Crashes add lost attempts: room for them on top of the planned failures.
    StepOptions::default().max_attempts(12).backoff(Backoff {
        initial: Duration::from_millis(3),
        factor: 2.0,
        max: Duration::from_millis(10),
    })
}

/// Executions of each step so far, by (run, tag, step id): steps fail by how
/// often they ran, whatever attempt numbers crashes used up.
type Executions = Mutex<HashMap<(RunId, u8, String), u32>>;

fn executions() -> &'static Executions {
    static EXECUTIONS: std::sync::OnceLock<Executions> = std::sync::OnceLock::new();
    EXECUTIONS.get_or_init(Default::default)
}

/// Counts this execution of the step; returns how many ran before it.
fn executed_before(s: &workflow_core::StepContext, tag: u8) -> u32 {
    let mut map = executions().lock().unwrap();
    let n = map
        .entry((s.run_id(), tag, s.step_id().to_string()))
        .or_insert(0);
    *n += 1;
    *n - 1
}

async fn attempt_step(
    s: workflow_core::StepContext,
    tag: u8,
    fail: u8,
    fatal: bool,
) -> Result<String, StepError> {
    let before = executed_before(&s, tag);
    tokio::time::sleep(Duration::from_millis(2)).await;
    if fatal {
        return Err(StepError::fatal(format!("{} is fatal", s.step_id())));
    }
    if before < u32::from(fail) {
        return Err(StepError::retryable(format!("{} failing", s.step_id())));
    }
    Ok(format!("{} ok", s.step_id()))
}

/// A step's result as the program reports it: its value, or that it failed
/// (the message names an attempt count, which crashes may raise).
fn report(r: Result<String, WorkflowError>, name: &str) -> String {
    r.unwrap_or_else(|_| format!("err:{name}"))
}

async fn slow_step(ms: u64) -> Result<String, StepError> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok("step".to_string())
}

/// The child workflow: one step that fails `fail` times first, then a
/// durable sleep of `sleep_ms`.
async fn leaf(ctx: Context, (tag, fail, sleep_ms): (u8, u8, u64)) -> Result<String, WorkflowError> {
    let r = ctx
        .step_with("leaf", opts(), move |s| attempt_step(s, tag, fail, false))
        .await?;
    ctx.sleep(Duration::from_millis(sleep_ms)).await?;
    Ok(format!("leaf {r}"))
}

fn hook_token(run: RunId, tag: u8, i: usize) -> String {
    format!("race:{run}:{tag}:{i}")
}

async fn interpret(
    ctx: Context,
    (tag, program): (u8, Vec<Instr>),
) -> Result<Vec<String>, WorkflowError> {
    let mut out = Vec::new();
    for (i, ins) in program.into_iter().enumerate() {
        match ins {
            Instr::Step { fail, fatal } => {
                let name = format!("s{i}");
                let r = ctx
                    .step_with(&name, opts(), move |s| attempt_step(s, tag, fail, fatal))
                    .await;
                out.push(report(r, &name));
            }
            Instr::Parallel(fails) => {
                let steps = fails.into_iter().enumerate().map(|(j, fail)| {
                    ctx.step_with(&format!("p{i}.{j}"), opts(), move |s| {
                        attempt_step(s, tag, fail, false)
                    })
                });
                for (j, r) in join_all(steps).await.into_iter().enumerate() {
                    out.push(report(r, &format!("p{i}.{j}")));
                }
            }
            Instr::Sleep { ms } => {
                ctx.sleep(Duration::from_millis(u64::from(ms))).await?;
                out.push(format!("slept {ms}"));
            }
            Instr::Random => out.push(format!("rand {}", ctx.random::<u32>())),
            Instr::Panic => {
                let name = format!("panic{i}");
                let r = ctx
                    .step_with(&name, opts(), move |s| async move {
                        if executed_before(&s, tag) == 0 {
                            panic!("{} panics once", s.step_id());
                        }
                        Ok::<_, StepError>("recovered".to_string())
                    })
                    .await;
                out.push(report(r, &name));
            }
            Instr::Long => {
                let name = format!("long{i}");
                let r = ctx
                    .step_with(&name, opts(), |_| async {
                        let wakes = 3 * LEASE.as_millis() / 5;
                        for _ in 0..wakes {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        Ok::<_, StepError>("long done".to_string())
                    })
                    .await;
                out.push(report(r, &name));
            }
            Instr::TimerBeatsStep => {
                let slow = ctx.step_with(&format!("slow{i}"), opts(), |_| slow_step(400));
                let timer = ctx.sleep(Duration::from_millis(5));
                futures::pin_mut!(slow);
                futures::select_biased! {
                    t = timer.fuse() => t?,
                    _ = slow.fuse() => return Err(WorkflowError::fatal("a 400 ms step beat a 5 ms timer")),
                };
                out.push("timer".to_string());
            }
            Instr::PayloadBeatsStep => {
                let mut hook = ctx.create_hook::<String>(HookOptions::token(hook_token(
                    ctx.run_id(),
                    tag,
                    i,
                )))?;
                let slow = ctx.step_with(&format!("slow{i}"), opts(), |_| slow_step(400));
                futures::pin_mut!(slow);
                let payload = futures::select_biased! {
                    p = hook.next().fuse() => p?,
                    _ = slow.fuse() => return Err(WorkflowError::fatal("a 400 ms step beat a payload sent at once")),
                };
                out.push(payload);
            }
            Instr::Child { fail } => {
                let child = ctx.start_child::<_, _, String>("leaf", &(tag, fail, 0u64))?;
                out.push(report(child.await, &format!("child{i}")));
            }
            Instr::TimerBeatsChild => {
                let child = ctx.start_child::<_, _, String>("leaf", &(tag, 0u8, 60_000u64))?;
                let timer = ctx.sleep(Duration::from_millis(5));
                futures::pin_mut!(child);
                futures::select_biased! {
                    t = timer.fuse() => t?,
                    _ = child.fuse() => return Err(WorkflowError::fatal("a one-minute child beat a 5 ms timer")),
                };
                out.push("timer".to_string());
            }
            Instr::ChildBeatsTimer => {
                let child = ctx.start_child::<_, _, String>("leaf", &(tag, 0u8, 0u64))?;
                let timer = ctx.sleep(Duration::from_secs(60));
                futures::pin_mut!(child);
                let won = futures::select_biased! {
                    _ = timer.fuse() => return Err(WorkflowError::fatal("a one-minute timer beat a child")),
                    c = child.fuse() => c?,
                };
                out.push(won);
            }
            Instr::Patched => out.push(format!("patched {}", ctx.patched(&format!("p{i}")))),
        }
    }
    Ok(out)
}

/// Sends each hook of `program` its payload as soon as the hook exists.
async fn send_payloads(store: Arc<dyn Store>, run: RunId, tag: u8, program: Vec<Instr>) {
    let engine = Engine::builder(store.clone()).build();
    for (i, ins) in program.iter().enumerate() {
        if !matches!(ins, Instr::PayloadBeatsStep) {
            continue;
        }
        let token = hook_token(run, tag, i);
        let payload = format!("payload {i}");
        // Tried again only after a fault of the store under test; a fault may
        // lose the answer of a write that was made, so look before resending.
        let mut tried = false;
        loop {
            if tried && delivered(&*store, run, &payload).await {
                break;
            }
            let live = engine.wait_for_hook(&token, Duration::from_secs(30)).await;
            if live.is_ok() {
                tried = true;
                if engine.resume_hook(&token, &payload).await.is_ok() {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// Whether `payload` is in `run`'s log (read again while the store faults).
async fn delivered(store: &dyn Store, run: RunId, payload: &str) -> bool {
    loop {
        if let Ok(log) = store.read_log(run).await {
            return log.iter().any(|e| {
                matches!(&e.data, EventData::HookReceived { payload: p, .. }
                    if p.decode::<String>().is_ok_and(|p| p == payload))
            });
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn engine<S: Store + Clone>(store: S) -> Engine {
    let e = Engine::builder(store)
        .workflow("program", interpret)
        .workflow("leaf", leaf)
        .lease_ttl(LEASE)
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
            // Attempt bookkeeping: crashes add lost attempts (and may leave a
            // step that lost a race with a retry to abandon).
            EventData::StepStarted { .. }
            | EventData::StepRetrying { .. }
            | EventData::StepFailed { .. } => continue,
            EventData::WaitCreated { wait, .. } => format!("wait_created {wait}"),
            EventData::StepCompleted { step, result } => {
                format!("completed {step} {:?}", result.as_bytes())
            }
            EventData::RunCompleted { output } => format!("run_completed {:?}", output.as_bytes()),
            // The child's input names the harness's tag, which differs.
            EventData::ChildCreated {
                child,
                run,
                workflow,
                detached,
                ..
            } => format!("child_created {child} {run} {workflow} {detached}"),
            other => format!("{other:?}"),
        };
        match e.data.correlation_id() {
            Some(id) => ops.entry(id.to_string()).or_default().push(text),
            None => run.push(text),
        }
    }
    (run, ops)
}

#[allow(clippy::too_many_arguments)]
async fn run_program<S: Store + Clone>(
    store: S,
    tag: u8,
    program: &[Instr],
    run: RunId,
    disruptions: &[(u8, Disruption)],
    hits: &Hits,
    heal: &dyn Fn(),
) -> Vec<String> {
    let mut e = engine(store.clone());
    // Starting may fail on a faulty store; start_with_id is idempotent.
    let mut tries = 0;
    while let Err(err) = e
        .start_with_id(run, "program", &(tag, program.to_vec()))
        .await
    {
        tries += 1;
        assert!(tries < 100, "start kept failing: {err}");
    }
    let sender = tokio::spawn(send_payloads(
        Arc::new(store.clone()),
        run,
        tag,
        program.to_vec(),
    ));
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
    sender.abort();
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
                let out_a =
                    run_program(straight.clone(), 0, &program, run, &[], &hits, &|| {}).await;
                let log_a = straight.read_log(run).await.unwrap();
                let store = make();
                let out_b = run_program(
                    store.clone(),
                    1,
                    &program,
                    run,
                    &disruptions,
                    &hits,
                    &|| heal(&store),
                )
                .await;
                let plain = plain(&store);
                let log_b = plain.read_log(run).await.unwrap();
                prop_assert_eq!(&out_a, &out_b, "results differ");
                prop_assert_eq!(normalized(&log_a), normalized(&log_b), "logs differ");
                // The disrupted history, attempts and all, replays cleanly.
                let checker = Engine::builder(plain)
                    .workflow("program", interpret)
                    .workflow("leaf", leaf)
                    .build();
                let report = checker.check_replay().await.unwrap();
                prop_assert!(
                    report.is_clean(),
                    "replay mismatch: {:?}",
                    report.mismatches
                );
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
