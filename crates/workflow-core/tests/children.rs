//! Child workflows: started as operations of the parent, awaited durably,
//! exactly once whatever crashes; their end is an event of the parent's log.

mod support;

use std::time::Duration;

use futures::FutureExt;
use workflow_core::{
    ChildOptions, Context, Engine, HookOptions, StepError, WorkflowError, WorkflowRef,
};
use workflow_store::{EventData, MemoryStore, RunId, RunQuery, RunStatus, Store};

const SHIP: WorkflowRef<u32, u32> = WorkflowRef::new("ship");
const ORDER: WorkflowRef<u32, u32> = WorkflowRef::new("order");

/// A child: two steps with a little work in each.
async fn ship(ctx: Context, n: u32) -> Result<u32, WorkflowError> {
    let a: u32 = ctx
        .step("pack", move |_| async move {
            tokio::time::sleep(Duration::from_millis(3)).await;
            Ok::<_, StepError>(n * 10)
        })
        .await?;
    ctx.sleep(Duration::from_millis(2)).await?;
    let b: u32 = ctx
        .step("label", move |_| async move {
            tokio::time::sleep(Duration::from_millis(3)).await;
            Ok::<_, StepError>(a + 1)
        })
        .await?;
    Ok(b)
}

/// A parent that starts `n` children and sums their outputs.
async fn order(ctx: Context, n: u32) -> Result<u32, WorkflowError> {
    let mut children = Vec::new();
    for i in 0..n {
        children.push(ctx.start_child(SHIP, &i)?);
    }
    let mut total = 0;
    for child in children {
        total += child.await?;
    }
    Ok(total)
}

fn engine(store: impl Store) -> Engine {
    let e = Engine::builder(store)
        .workflow(SHIP, ship)
        .workflow(ORDER, order)
        .workflow("slow_child", slow_child)
        .workflow("child_vs_timer", child_vs_timer)
        .workflow("waits", waits)
        .workflow("two_children", two_children)
        .lease_ttl(Duration::from_millis(150))
        .poll_interval(Duration::from_millis(10))
        .build();
    e.start_workers();
    e
}

async fn children_of(store: &dyn Store, workflow: &str) -> Vec<RunId> {
    store
        .list_runs(RunQuery::default().workflow(workflow).limit(1000))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_children_survive_a_crash_at_a_random_point_and_start_once() {
    for seed in 0..6u64 {
        let store = MemoryStore::new();
        let mut e = engine(store.clone());
        let run = e.start(ORDER, &10).await.unwrap();
        // A crash somewhere between the first child's creation and the end.
        let delay = 1 + (seed * 7919 % 40);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        e.shutdown_now();
        e = engine(store.clone());
        let total = tokio::time::timeout(Duration::from_secs(20), run.result())
            .await
            .expect("the parent finishes after the crash");
        // A handle keeps the engine it was made with: ask the new one.
        let total: u32 = match total {
            Ok(t) => t,
            Err(_) => e.result(&run.id()).await.unwrap(),
        };
        assert_eq!(
            total,
            (0..10).map(|i| i * 10 + 1).sum::<u32>(),
            "seed {seed}"
        );
        let ships = children_of(&store, "ship").await;
        assert_eq!(ships.len(), 10, "seed {seed}: exactly ten child runs");
        let log = store.read_log(run.id()).await.unwrap();
        let created = log
            .iter()
            .filter(|e| matches!(e.data, EventData::ChildCreated { .. }))
            .count();
        let ended = log
            .iter()
            .filter(|e| matches!(e.data, EventData::ChildCompleted { .. }))
            .count();
        assert_eq!((created, ended), (10, 10), "seed {seed}");
        // Each child names its parent.
        for child in ships {
            let first = store.read_events(child, 0, 1).await.unwrap();
            match &first[0].data {
                EventData::RunCreated {
                    parent: Some(p), ..
                } => assert_eq!(p.run, run.id()),
                other => panic!("child {child} has no parent: {other:?}"),
            }
        }
        assert!(e.check_replay().await.unwrap().is_clean());
        e.shutdown().await;
    }
}

/// A child that sleeps durably for `ms` milliseconds.
async fn slow_child(ctx: Context, ms: u64) -> Result<String, WorkflowError> {
    ctx.sleep(Duration::from_millis(ms)).await?;
    Ok(format!("child slept {ms}"))
}

/// A child against a durable timeout: whichever ends first wins.
async fn child_vs_timer(
    ctx: Context,
    (child_ms, timeout_ms): (u64, u64),
) -> Result<String, WorkflowError> {
    let child = ctx.start_child::<_, _, String>("slow_child", &child_ms)?;
    let timeout = ctx.sleep(Duration::from_millis(timeout_ms));
    futures::pin_mut!(child);
    let winner = futures::select_biased! {
        out = child.fuse() => out?,
        t = timeout.fuse() => { t?; "timeout".to_string() }
    };
    // After the race: an operation whose index follows both.
    let after: u32 = ctx
        .step("after", |_| async { Ok::<_, StepError>(7) })
        .await?;
    Ok(format!("{winner} then {after}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_race_between_a_child_and_a_durable_timeout_replays_the_same_winner() {
    for (child_ms, timeout_ms, want) in
        [(600, 5, "timeout then 7"), (1, 800, "child slept 1 then 7")]
    {
        let store = MemoryStore::new();
        let e = engine(store.clone());
        let run = e
            .start("child_vs_timer", &(child_ms, timeout_ms))
            .await
            .unwrap();
        let out: String = e.result(&run).await.unwrap();
        assert_eq!(out, want);
        // Replayed from the log (no cache), the same branch wins.
        e.clear_cache();
        let report = e.check_replay().await.unwrap();
        assert!(report.is_clean(), "{:?}", report.mismatches);
        // And a fresh engine replaying the whole history agrees.
        e.shutdown().await;
        let again = engine(store.clone());
        assert!(again.check_replay().await.unwrap().is_clean());
        again.shutdown().await;
    }
}

/// Waits on a hook forever (until cancelled).
async fn waits(ctx: Context, token: String) -> Result<(), WorkflowError> {
    let mut hook = ctx.create_hook::<()>(HookOptions::token(token))?;
    hook.next().await?;
    Ok(())
}

/// Starts one attached and one detached child, then waits on both.
async fn two_children(ctx: Context, tag: String) -> Result<(), WorkflowError> {
    let attached = ctx.start_child::<_, _, ()>("waits", &format!("{tag}-attached"))?;
    let detached = ctx.start_child_with::<_, _, ()>(
        "waits",
        &format!("{tag}-detached"),
        ChildOptions::detached(),
    )?;
    attached.await?;
    detached.await?;
    Ok(())
}

async fn wait_for_status(e: &Engine, run: RunId, want: RunStatus) {
    for _ in 0..500 {
        if e.status(&run).await.ok() == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("run {run} never became {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_the_parent_cancels_attached_children_not_detached_ones() {
    let store = MemoryStore::new();
    let e = engine(store.clone());
    let parent = e.start("two_children", &"t".to_string()).await.unwrap();
    e.wait_for_hook("t-attached", Duration::from_secs(10))
        .await
        .unwrap();
    e.wait_for_hook("t-detached", Duration::from_secs(10))
        .await
        .unwrap();
    let children = children_of(&store, "waits").await;
    assert_eq!(children.len(), 2);
    e.cancel(&parent).await.unwrap();
    let log = store.read_log(parent).await.unwrap();
    let (mut attached, mut detached) = (None, None);
    for ev in &log {
        if let EventData::ChildCreated {
            run, detached: d, ..
        } = &ev.data
        {
            if *d {
                detached = Some(*run);
            } else {
                attached = Some(*run);
            }
        }
    }
    let (attached, detached) = (attached.unwrap(), detached.unwrap());
    assert_eq!(e.status(&attached).await.unwrap(), RunStatus::Cancelled);
    assert_eq!(e.status(&detached).await.unwrap(), RunStatus::Running);
    // The detached child still works: it completes when resumed.
    e.resume_hook("t-detached", &()).await.unwrap();
    wait_for_status(&e, detached, RunStatus::Completed).await;
    // The parent, cancelled, got no event from either child.
    let after = store.read_log(parent).await.unwrap();
    assert_eq!(after.len(), log.len());
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attached_child_left_running_by_a_crash_cancels_itself() {
    let store = MemoryStore::new();
    let e = engine(store.clone());
    let parent = e.start("two_children", &"c".to_string()).await.unwrap();
    e.wait_for_hook("c-attached", Duration::from_secs(10))
        .await
        .unwrap();
    e.wait_for_hook("c-detached", Duration::from_secs(10))
        .await
        .unwrap();
    e.shutdown().await;
    // The parent is cancelled without its cascade (as if the engine that
    // cancelled it crashed right after).
    store
        .append(parent, vec![EventData::RunCancelled], None)
        .await
        .unwrap();
    let children = children_of(&store, "waits").await;
    // Each child runs again (a payload arrives for each).
    let e = engine(store.clone());
    e.resume_hook("c-attached", &()).await.unwrap();
    e.resume_hook("c-detached", &()).await.unwrap();
    for child in children {
        let log = store.read_log(child).await.unwrap();
        let detached = matches!(&log[0].data,
            EventData::RunCreated { parent: Some(p), .. } if p.detached);
        let want = if detached {
            RunStatus::Completed
        } else {
            RunStatus::Cancelled
        };
        wait_for_status(&e, child, want).await;
    }
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_child_is_an_error_of_the_parent() {
    async fn failing(_: Context, _: ()) -> Result<(), WorkflowError> {
        Err(WorkflowError::fatal("out of stock"))
    }
    async fn parent(ctx: Context, _: ()) -> Result<String, WorkflowError> {
        let child = ctx.start_child::<_, _, ()>("failing", &())?;
        let id = child.run_id();
        match child.await {
            Err(WorkflowError::ChildFailed { run, message, .. }) => {
                assert_eq!(run, id);
                Ok(message)
            }
            other => Err(WorkflowError::fatal(format!("unexpected {other:?}"))),
        }
    }
    let e = support::engine(MemoryStore::new(), |b| {
        b.workflow("failing", failing).workflow("parent", parent)
    });
    let run = e.start("parent", &()).await.unwrap();
    let out: String = e.result(&run).await.unwrap();
    assert_eq!(out, "out of stock");
    e.shutdown().await;
}

/// The store of [`a_child_that_ends_while_a_lone_step_finishes_wins_on_replay_too`].
static RACE_STORE: std::sync::OnceLock<std::sync::Arc<dyn Store>> = std::sync::OnceLock::new();

/// A child against a step that returns just after the child has ended.
async fn step_after_child(ctx: Context, _: ()) -> Result<String, WorkflowError> {
    let child = ctx.start_child::<_, _, String>("slow_child", &1u64)?;
    let id = child.run_id();
    let step = ctx.step("waits for the child", move |_| async move {
        // Woken by the same notification as the driver, so that the step's
        // result and the child's end reach the driver together.
        let store = RACE_STORE.get().expect("set by the test").clone();
        let mut feed = store.subscribe().expect("a change feed");
        loop {
            if let Ok(Some(r)) = store.get_run(id).await {
                if r.status.is_terminal() {
                    return Ok::<_, StepError>("step".to_string());
                }
            }
            let _ = feed.recv().await;
        }
    });
    futures::pin_mut!(child);
    futures::pin_mut!(step);
    let winner = futures::select_biased! {
        out = child.fuse() => out?,
        s = step.fuse() => s?,
    };
    Ok(winner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_ends_while_a_lone_step_finishes_wins_on_replay_too() {
    // The child's end is recorded before the step's result: the step's
    // result must not reach the workflow ahead of the log (the driver's fast
    // path for a lone step), or the live run and its replay disagree.
    let store = MemoryStore::new();
    let _ = RACE_STORE.set(std::sync::Arc::new(store.clone()));
    let e = support::engine(store.clone(), |b| {
        b.workflow("slow_child", slow_child)
            .workflow("step_after_child", step_after_child)
    });
    let run = e.start("step_after_child", &()).await.unwrap();
    let out: String = e.result(&run).await.unwrap();
    assert_eq!(out, "child slept 1");
    let report = e.check_replay().await.unwrap();
    assert!(report.is_clean(), "{:?}", report.mismatches);
    e.shutdown().await;
}
