//! A step's result handed to the workflow before it is recorded: what the
//! workflow does next goes into the same write (the run's end, a sleep's
//! creation), and nothing it observes differs from a replay of the log.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use workflow_core::{Context, Engine, HookOptions, StepError, WorkflowError, WorkflowRef};
use workflow_store::{
    Change, Clock, Event, EventData, EventKind, MemoryStore, RunId, SledStore, Store, Timestamp,
};

const THREE: WorkflowRef<(), u32> = WorkflowRef::new("three");
const STEP_SLEEP: WorkflowRef<(), u32> = WorkflowRef::new("step_sleep");
const CLOCK: WorkflowRef<(), (u64, u64)> = WorkflowRef::new("clock");
const RACE: WorkflowRef<(), String> = WorkflowRef::new("race");

async fn three(ctx: Context, (): ()) -> Result<u32, WorkflowError> {
    let mut total = 0;
    for i in 1..=3 {
        total += ctx
            .step("add", move |_| async move { Ok::<_, StepError>(i) })
            .await?;
    }
    Ok(total)
}

/// A step that takes 100 ms, then a 30 ms sleep.
async fn step_sleep(ctx: Context, (): ()) -> Result<u32, WorkflowError> {
    let n = ctx
        .step("one", |_| async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok::<_, StepError>(1u32)
        })
        .await?;
    ctx.sleep(Duration::from_millis(30)).await?;
    Ok(n + 1)
}

/// Reads the clock right after a step, and returns it with what the step saw.
async fn clock(ctx: Context, (): ()) -> Result<(u64, u64), WorkflowError> {
    ctx.step("first", |_| async { Ok::<_, StepError>(()) })
        .await?;
    let after = ctx
        .now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let echoed = ctx
        .step("echo", move |_| async move { Ok::<_, StepError>(after) })
        .await?;
    Ok((after, echoed))
}

/// A step racing a hook that stays live: the step's result must be recorded
/// before the workflow acts on it, so that a payload landing meanwhile is
/// ordered the same way on replay.
async fn race(ctx: Context, (): ()) -> Result<String, WorkflowError> {
    let mut hook = ctx.create_hook::<String>(HookOptions::token("fused:race"))?;
    let step = ctx.step("quick", |_| async {
        Ok::<_, StepError>("step".to_string())
    });
    let winner = tokio::select! {
        biased;
        s = step => s?,
        h = hook.next() => h?,
    };
    Ok(winner)
}

fn engine(store: impl Store) -> Engine {
    support::engine(store, |b| {
        b.workflow(THREE, three)
            .workflow(STEP_SLEEP, step_sleep)
            .workflow(CLOCK, clock)
            .workflow(RACE, race)
    })
}

/// The log lengths after each write to `run`, from the change feed.
fn write_ends(changes: &[Change], run: RunId) -> Vec<u64> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::Appended { run: r, next_seq } if *r == run => Some(*next_seq),
            _ => None,
        })
        .collect()
}

fn drain(feed: &mut tokio::sync::broadcast::Receiver<Change>) -> Vec<Change> {
    let mut out = Vec::new();
    while let Ok(c) = feed.try_recv() {
        out.push(c);
    }
    out
}

fn seq_of(log: &[Event], kind: EventKind) -> Vec<u64> {
    log.iter()
        .filter(|e| e.kind() == kind)
        .map(|e| e.seq)
        .collect()
}

async fn last_step_is_written_with_the_run_end(store: impl Store + Clone) {
    let mut feed = store.subscribe().expect("feed");
    let engine = engine(store.clone());
    let handle = engine.start(THREE, &()).await.unwrap();
    assert_eq!(handle.result().await.unwrap(), 6);
    let log = store.read_log(handle.id()).await.unwrap();
    let ends = write_ends(&drain(&mut feed), handle.id());
    let completed = seq_of(&log, EventKind::StepCompleted);
    let run_completed = seq_of(&log, EventKind::RunCompleted)[0];
    assert_eq!(completed.len(), 3);
    // Writes: the run's creation, then one per step; the last one ends the run.
    assert_eq!(
        ends,
        vec![1, completed[0] + 1, completed[1] + 1, run_completed + 1],
        "{log:#?}"
    );
    assert_eq!(run_completed, completed[2] + 1);
    engine.shutdown().await;
}

#[tokio::test]
async fn memory_last_step_is_written_with_the_run_end() {
    last_step_is_written_with_the_run_end(MemoryStore::new()).await;
}

#[tokio::test]
async fn sled_last_step_is_written_with_the_run_end() {
    let dir = tempfile::tempdir().unwrap();
    last_step_is_written_with_the_run_end(SledStore::open(dir.path()).unwrap()).await;
}

#[tokio::test]
async fn a_step_and_the_sleep_after_it_are_one_write() {
    let store = MemoryStore::new();
    let mut feed = store.subscribe().expect("feed");
    let engine = engine(store.clone());
    let handle = engine.start(STEP_SLEEP, &()).await.unwrap();
    assert_eq!(handle.result().await.unwrap(), 2);
    let log = store.read_log(handle.id()).await.unwrap();
    let ends = write_ends(&drain(&mut feed), handle.id());
    let wait_created = seq_of(&log, EventKind::WaitCreated)[0];
    let step_completed = seq_of(&log, EventKind::StepCompleted)[0];
    assert_eq!(wait_created, step_completed + 1);
    assert!(ends.contains(&(wait_created + 1)), "{ends:?} {log:#?}");
    assert!(!ends.contains(&(step_completed + 1)), "{ends:?} {log:#?}");
    // The sleep is measured from when the step's result reached the
    // workflow: after the 100 ms step, not from before it ran, and no later
    // than the write that recorded both.
    let Some(EventData::WaitCreated { resume_at, .. }) = log
        .iter()
        .find(|e| e.kind() == EventKind::WaitCreated)
        .map(|e| e.data.clone())
    else {
        panic!("no wait_created")
    };
    // (The run's start is written with the step's records; its creation
    // came before the step ran.)
    let started = log[0].at;
    let recorded = log[step_completed as usize].at;
    assert!(
        resume_at >= started.saturating_add(Duration::from_millis(130)),
        "{log:#?}"
    );
    assert!(
        resume_at <= recorded.saturating_add(Duration::from_millis(30)),
        "{log:#?}"
    );
    engine.shutdown().await;
}

/// A clock that moves 5 ms each time it is read, so that the driver's
/// clock and the time a write gets always differ.
#[derive(Debug, Default)]
struct Ticking(AtomicU64);

impl Clock for Ticking {
    fn now(&self) -> Timestamp {
        Timestamp(1_800_000_000_000 + self.0.fetch_add(5, Ordering::SeqCst))
    }
}

#[tokio::test]
async fn now_read_after_a_step_is_the_recorded_time() {
    let store = MemoryStore::with_clock(Arc::new(Ticking::default()));
    let engine = engine(store.clone());
    let handle = engine.start(CLOCK, &()).await.unwrap();
    let (after, echoed) = handle.result().await.unwrap();
    assert_eq!(after, echoed);
    let log = store.read_log(handle.id()).await.unwrap();
    let first_completed = &log[seq_of(&log, EventKind::StepCompleted)[0] as usize];
    // What replay shows: the time of the latest event delivered.
    assert_eq!(after, first_completed.at.as_millis(), "{log:#?}");
    engine.shutdown().await;
}

#[tokio::test]
async fn a_step_racing_a_live_hook_is_recorded_before_the_workflow_goes_on() {
    let store = MemoryStore::new();
    let mut feed = store.subscribe().expect("feed");
    let engine = engine(store.clone());
    let handle = engine.start(RACE, &()).await.unwrap();
    assert_eq!(handle.result().await.unwrap(), "step");
    let log = store.read_log(handle.id()).await.unwrap();
    let ends = write_ends(&drain(&mut feed), handle.id());
    let step_completed = seq_of(&log, EventKind::StepCompleted)[0];
    assert!(ends.contains(&(step_completed + 1)), "{ends:?} {log:#?}");
    engine.shutdown().await;
}
