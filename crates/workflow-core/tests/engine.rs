//! Engine behaviour on MemoryStore: steps, retries, sleep, cancel,
//! nondeterminism, the hot cache, and bad input.

mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::{engine, kinds};

use workflow_core::{Backoff, Context, Engine, EngineError, StepError, StepOptions, WorkflowError};
use workflow_store::{EventData, EventKind, MemoryStore, RunId, RunStatus, Store};

fn fast(max_attempts: u32) -> StepOptions {
    StepOptions::default()
        .max_attempts(max_attempts)
        .backoff(Backoff {
            initial: Duration::from_millis(5),
            factor: 2.0,
            max: Duration::from_millis(20),
        })
}

async fn three_steps(ctx: Context, n: u64) -> Result<u64, WorkflowError> {
    let a = ctx
        .step("add-one", |_| async move { Ok::<_, StepError>(n + 1) })
        .await?;
    let b = ctx
        .step("double", |_| async move { Ok::<_, StepError>(a * 2) })
        .await?;
    let c = ctx
        .step("square", |_| async move { Ok::<_, StepError>(b * b) })
        .await?;
    Ok(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_steps_record_one_write_each() {
    let store = MemoryStore::new();
    let e = engine(store.clone(), |b| b.workflow("three", three_steps));
    let run = e.start("three", &3u64).await.unwrap();
    let out: u64 = e.result(&run).await.unwrap();
    assert_eq!(out, 64);
    use EventKind::*;
    assert_eq!(
        kinds(&store, run).await,
        vec![
            RunCreated,
            RunStarted,
            StepCreated,
            StepStarted,
            StepCompleted,
            StepCreated,
            StepStarted,
            StepCompleted,
            StepCreated,
            StepStarted,
            StepCompleted,
            RunCompleted
        ]
    );
    // One write per step: created, started and completed share a timestamp batch.
    let log = store.read_log(run).await.unwrap();
    assert_eq!(log[2].at, log[4].at);
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_with_backoff_then_success() {
    let store = MemoryStore::new();
    let calls = Arc::new(AtomicU32::new(0));
    let c2 = calls.clone();
    let e = engine(store.clone(), move |b| {
        b.workflow("flaky", move |ctx: Context, _: ()| {
            let calls = c2.clone();
            async move {
                let v = ctx
                    .step_with("flaky", fast(5), |s| {
                        let calls = calls.clone();
                        async move {
                            calls.fetch_add(1, Ordering::SeqCst);
                            if s.attempt() < 3 {
                                Err(StepError::retryable(format!(
                                    "attempt {} failed",
                                    s.attempt()
                                )))
                            } else {
                                Ok(s.attempt())
                            }
                        }
                    })
                    .await?;
                Ok(v)
            }
        })
    });
    let run = e.start("flaky", &()).await.unwrap();
    let attempt: u32 = e.result(&run).await.unwrap();
    assert_eq!(attempt, 3);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let log = store.read_log(run).await.unwrap();
    let retries: Vec<_> = log
        .iter()
        .filter_map(|ev| match &ev.data {
            EventData::StepRetrying {
                retry_at, error, ..
            } => Some((ev.at, *retry_at, error.message.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(retries.len(), 2);
    // Backoff: 5 ms after attempt 1, 10 ms after attempt 2, counted from
    // when the driver saw the failure; the record's own time is the write's,
    // which may be a millisecond or two later on a busy machine.
    let gap = |i: usize| retries[i].1.as_millis() - retries[i].0.as_millis();
    assert!((2..=5).contains(&gap(0)), "first backoff {} ms", gap(0));
    assert!((7..=10).contains(&gap(1)), "second backoff {} ms", gap(1));
    assert_eq!(retries[0].2, "attempt 1 failed");
    // Each attempt after a retry starts no earlier than its retry_at.
    let started: Vec<_> = log
        .iter()
        .filter(|e| e.kind() == EventKind::StepStarted)
        .map(|e| e.at)
        .collect();
    assert!(started[1] >= retries[0].1 && started[2] >= retries[1].1);
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_overrides_backoff_and_attempts_run_out() {
    let store = MemoryStore::new();
    let e = engine(store.clone(), |b| {
        b.workflow("exhaust", |ctx: Context, _: ()| async move {
            let r = ctx
                .step_with("always-fails", fast(2), |_| async {
                    Err::<u32, _>(StepError::retry_after("busy", Duration::from_millis(30)))
                })
                .await;
            match r {
                Err(WorkflowError::StepFailed {
                    attempts, message, ..
                }) => Ok(format!("{attempts}:{message}")),
                other => Err(WorkflowError::fatal(format!("unexpected {other:?}"))),
            }
        })
    });
    let run = e.start("exhaust", &()).await.unwrap();
    let out: String = e.result(&run).await.unwrap();
    assert_eq!(out, "2:busy");
    let log = store.read_log(run).await.unwrap();
    let retry = log
        .iter()
        .find(|e| e.kind() == EventKind::StepRetrying)
        .unwrap();
    let EventData::StepRetrying { retry_at, .. } = &retry.data else {
        unreachable!()
    };
    assert_eq!(retry_at.as_millis() - retry.at.as_millis(), 30);
    assert_eq!(
        log.iter()
            .filter(|e| e.kind() == EventKind::StepFailed)
            .count(),
        1
    );
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fatal_step_error_reaches_workflow_for_compensation() {
    let store = MemoryStore::new();
    let e = engine(store.clone(), |b| {
        b.workflow("saga", |ctx: Context, _: ()| async move {
            ctx.step("reserve", |_| async {
                Ok::<_, StepError>("reserved".to_string())
            })
            .await?;
            let charged = ctx
                .step("charge", |_| async {
                    Err::<String, _>(StepError::fatal("card declined"))
                })
                .await;
            if let Err(WorkflowError::StepFailed {
                message, attempts, ..
            }) = charged
            {
                assert_eq!(attempts, 1);
                ctx.step("release", |_| async { Ok::<_, StepError>(()) })
                    .await?;
                return Err(WorkflowError::fatal(format!("compensated: {message}")));
            }
            Ok(())
        })
    });
    let run = e.start("saga", &()).await.unwrap();
    match e.result::<()>(&run).await {
        Err(EngineError::RunFailed { message, .. }) => {
            assert_eq!(message, "compensated: card declined")
        }
        other => panic!("expected failure, got {other:?}"),
    }
    let names: Vec<String> = store
        .read_log(run)
        .await
        .unwrap()
        .iter()
        .filter_map(|e| match &e.data {
            EventData::StepCreated { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["reserve", "charge", "release"]);
    assert_eq!(e.status(&run).await.unwrap(), RunStatus::Failed);
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleep_is_a_durable_timer_and_holds_no_task() {
    let store = MemoryStore::new();
    let e = engine(store.clone(), |b| {
        b.workflow("nap", |ctx: Context, ms: u64| async move {
            let before = ctx.now();
            ctx.sleep(Duration::from_millis(ms)).await?;
            let after = ctx.now();
            Ok(after
                .duration_since(before)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0))
        })
    });
    let run = e.start("nap", &150u64).await.unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    // Mid-sleep: the run is suspended and its timer is queued in the store.
    assert_eq!(e.status(&run).await.unwrap(), RunStatus::Running);
    assert!(store.next_due().await.unwrap().is_some());
    let slept: u64 = e.result(&run).await.unwrap();
    assert!(slept >= 150, "slept {slept} ms");
    use EventKind::*;
    assert_eq!(
        kinds(&store, run).await,
        vec![
            RunCreated,
            RunStarted,
            WaitCreated,
            WaitCompleted,
            RunCompleted
        ]
    );
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleep_fires_after_engine_restart() {
    let store = MemoryStore::new();
    let build = |store: MemoryStore| {
        engine(store, |b| {
            b.workflow("nap", |ctx: Context, _: ()| async move {
                ctx.sleep(Duration::from_millis(200)).await?;
                ctx.step("after", |_| async { Ok::<_, StepError>(7u8) })
                    .await
            })
        })
    };
    let first = build(store.clone());
    let run = first.start("nap", &()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    first.shutdown().await;
    drop(first);
    assert_eq!(
        kinds(&store, run).await.last(),
        Some(&EventKind::WaitCreated)
    );
    let second = build(store.clone());
    let out: u8 = second.result(&run).await.unwrap();
    assert_eq!(out, 7);
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_run_between_steps() {
    let store = MemoryStore::new();
    let e = engine(store.clone(), |b| {
        b.workflow("long", |ctx: Context, _: ()| async move {
            ctx.step("first", |_| async { Ok::<_, StepError>(1) })
                .await?;
            ctx.sleep(Duration::from_secs(3600)).await?;
            ctx.step("never", |_| async { Ok::<_, StepError>(2) }).await
        })
    });
    let run = e.start("long", &()).await.unwrap();
    for _ in 0..100 {
        if kinds(&store, run).await.contains(&EventKind::WaitCreated) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    e.cancel(&run).await.unwrap();
    assert!(matches!(
        e.result::<i32>(&run).await,
        Err(EngineError::RunCancelled { .. })
    ));
    let k = kinds(&store, run).await;
    assert_eq!(k.last(), Some(&EventKind::RunCancelled));
    assert_eq!(
        k.iter().filter(|k| **k == EventKind::StepCreated).count(),
        1
    );
    assert!(matches!(
        e.cancel(&run).await,
        Err(EngineError::RunEnded { .. })
    ));
    assert_eq!(
        store.next_due().await.unwrap(),
        None,
        "a cancelled run left its timer queued"
    );
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nondeterminism_blocks_the_run_naming_the_position() {
    let store = MemoryStore::new();
    let v1 = engine(store.clone(), |b| {
        b.workflow("order", |ctx: Context, _: ()| async move {
            ctx.step("reserve", |_| async { Ok::<_, StepError>(1) })
                .await?;
            ctx.sleep(Duration::from_secs(3600)).await?;
            Ok(())
        })
    });
    let run = v1.start("order", &()).await.unwrap();
    for _ in 0..100 {
        if kinds(&store, run).await.contains(&EventKind::WaitCreated) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    v1.shutdown().await;
    // The new code calls a different step first.
    let v2 = engine(store.clone(), |b| {
        b.workflow("order", |ctx: Context, _: ()| async move {
            ctx.step("charge", |_| async { Ok::<_, StepError>(1) })
                .await?;
            Ok(())
        })
    });
    store.wake(run).await.unwrap();
    let mut blocked = None;
    for _ in 0..200 {
        let rec = store.get_run(run).await.unwrap().unwrap();
        if rec.status == RunStatus::Blocked {
            blocked = rec.error;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let error = blocked.expect("run was not blocked").message;
    assert!(error.contains("at operation 0"), "{error}");
    match v2.result::<()>(&run).await {
        Err(EngineError::RunBlocked { message, .. }) => assert_eq!(message, error),
        other => panic!("result() of a blocked run: {other:?}"),
    }
    assert!(
        error.contains("step \"reserve\"") && error.contains("step \"charge\""),
        "{error}"
    );
    // It is blocked, not hanging, and not failed: a fixed deploy can resume it.
    assert_eq!(e_status(&store, run).await, RunStatus::Blocked);
    v2.shutdown().await;
}

async fn e_status(store: &MemoryStore, run: RunId) -> RunStatus {
    store.get_run(run).await.unwrap().unwrap().status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nondeterminism_when_a_recorded_command_is_no_longer_issued() {
    let store = MemoryStore::new();
    let v1 = engine(store.clone(), |b| {
        b.workflow("w", |ctx: Context, _: ()| async move {
            ctx.step("a", |_| async { Ok::<_, StepError>(1) }).await?;
            ctx.step("b", |_| async { Ok::<_, StepError>(2) }).await?;
            ctx.sleep(Duration::from_secs(3600)).await?;
            Ok(())
        })
    });
    let run = v1.start("w", &()).await.unwrap();
    for _ in 0..100 {
        if kinds(&store, run).await.contains(&EventKind::WaitCreated) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    v1.shutdown().await;
    let v2 = engine(store.clone(), |b| {
        b.workflow("w", |ctx: Context, _: ()| async move {
            ctx.step("a", |_| async { Ok::<_, StepError>(1) }).await?;
            Ok(())
        })
    });
    store.wake(run).await.unwrap();
    for _ in 0..200 {
        if e_status(&store, run).await == RunStatus::Blocked {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rec = store.get_run(run).await.unwrap().unwrap();
    assert_eq!(rec.status, RunStatus::Blocked);
    let msg = rec.error.unwrap().message;
    assert!(
        msg.contains("at operation 1") && msg.contains("step \"b\""),
        "{msg}"
    );
    v2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_steps_with_join_all_complete_in_finish_order() {
    let store = MemoryStore::new();
    let e = engine(store.clone(), |b| {
        b.workflow("fan-out", |ctx: Context, n: u64| async move {
            let steps = (0..n).map(|i| {
                ctx.step(&format!("part-{i}"), move |_| async move {
                    tokio::time::sleep(Duration::from_millis(10 * (n - i))).await;
                    Ok::<_, StepError>(i * i)
                })
            });
            let parts = futures::future::try_join_all(steps).await?;
            Ok(parts.iter().sum::<u64>())
        })
    });
    let run = e.start("fan-out", &4u64).await.unwrap();
    let sum: u64 = e.result(&run).await.unwrap();
    assert_eq!(sum, 1 + 4 + 9);
    let log = store.read_log(run).await.unwrap();
    // All four creations in one write, before any completion.
    let created: Vec<u64> = log
        .iter()
        .filter(|e| e.kind() == EventKind::StepCreated)
        .map(|e| e.seq)
        .collect();
    assert_eq!(created, vec![2, 3, 4, 5]);
    // The slowest step (part-0) finished last and was recorded last.
    let completed: Vec<String> = log
        .iter()
        .filter_map(|e| match &e.data {
            EventData::StepCompleted { step, .. } => Some(step.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(completed, ["step:3", "step:2", "step:1", "step:0"]);
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_after_cache_drop_gives_the_same_result() {
    let store = MemoryStore::new();
    let e = engine(store.clone(), |b| {
        b.workflow("random", |ctx: Context, _: ()| async move {
            let r1: u64 = ctx.random();
            let id = ctx.uuid();
            let picked = ctx
                .step(
                    "pick",
                    move |_| async move { Ok::<_, StepError>(r1 % 1000) },
                )
                .await?;
            ctx.sleep(Duration::from_millis(100)).await?;
            let r2: u64 = ctx.random();
            Ok((picked, r1 % 1000, id.to_string(), r2))
        })
    });
    let run = e.start("random", &()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    e.clear_cache();
    let (picked, r1, _id, _r2): (u64, u64, String, u64) = e.result(&run).await.unwrap();
    assert_eq!(picked, r1, "replay drew a different random value");
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistered_workflow_and_bad_input_are_typed_errors() {
    let store = MemoryStore::new();
    let e = engine(store.clone(), |b| b.workflow("three", three_steps));
    assert!(matches!(
        e.start("nope", &1u64).await,
        Err(EngineError::UnknownWorkflow { .. })
    ));
    assert!(matches!(
        e.start("three", &"not a number").await,
        Err(EngineError::InvalidInput { .. })
    ));
    assert!(
        store
            .list_runs(Default::default())
            .await
            .unwrap()
            .is_empty(),
        "a rejected start created a run"
    );
    let id = RunId::new();
    e.start_with_id(id, "three", &1u64).await.unwrap();
    assert_eq!(e.start_with_id(id, "three", &1u64).await.unwrap(), id);
    assert!(matches!(
        e.start_with_id(id, "three", &2u64).await,
        Err(EngineError::RunConflict { .. })
    ));
    assert!(matches!(
        e.status(&RunId::new()).await,
        Err(EngineError::RunNotFound { .. })
    ));
    let _: u64 = e.result(&id).await.unwrap();
    assert!(matches!(
        e.result::<String>(&id).await,
        Err(EngineError::OutputDecode { .. })
    ));
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_an_unknown_workflow_is_blocked_not_lost() {
    let store = MemoryStore::new();
    let writer = Engine::builder(store.clone())
        .workflow("three", three_steps)
        .build();
    let run = writer.start("three", &1u64).await.unwrap();
    let other = engine(store.clone(), |b| b.workflow("something-else", three_steps));
    for _ in 0..200 {
        if e_status(&store, run).await == RunStatus::Blocked {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rec = store.get_run(run).await.unwrap().unwrap();
    assert_eq!(rec.status, RunStatus::Blocked);
    assert!(rec.error.unwrap().message.contains("not registered"));
    other.shutdown().await;
    // An engine that registers the workflow retries the blocked run when its
    // workers start, and finishes it; nobody has to wake it.
    let fixed = engine(store.clone(), |b| b.workflow("three", three_steps));
    // result() answers RunBlocked while the run is still blocked: wait until
    // the new engine has picked it up.
    for _ in 0..200 {
        if e_status(&store, run).await != RunStatus::Blocked {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let out: u64 = fixed.result(&run).await.unwrap();
    assert_eq!(out, 16);
    fixed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_waiting_on_something_foreign_is_blocked_not_hung() {
    let store = MemoryStore::new();
    let e = engine(store.clone(), |b| {
        b.workflow("hangs", |_ctx: Context, _: ()| async move {
            std::future::pending::<()>().await;
            Ok(())
        })
    });
    let run = e.start("hangs", &()).await.unwrap();
    for _ in 0..200 {
        if e_status(&store, run).await == RunStatus::Blocked {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rec = store.get_run(run).await.unwrap().unwrap();
    assert_eq!(rec.status, RunStatus::Blocked);
    assert!(rec
        .error
        .unwrap()
        .message
        .contains("not a workflow operation"));
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_timeout_fails_the_attempt_as_retryable() {
    let store = MemoryStore::new();
    let e = engine(store.clone(), |b| {
        b.workflow("slow", |ctx: Context, _: ()| async move {
            ctx.step_with(
                "slow",
                fast(2).timeout(Duration::from_millis(20)),
                |s| async move {
                    if s.attempt() == 1 {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                    Ok::<_, StepError>(s.attempt())
                },
            )
            .await
        })
    });
    let run = e.start("slow", &()).await.unwrap();
    let attempt: u32 = e.result(&run).await.unwrap();
    assert_eq!(attempt, 2);
    let log = store.read_log(run).await.unwrap();
    assert!(log.iter().any(|e| matches!(&e.data, EventData::StepRetrying { error, .. } if error.message.contains("timed out"))));
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_replay_reports_runs_the_new_code_would_block() {
    let store = MemoryStore::new();
    let v1 = engine(store.clone(), |b| b.workflow("three", three_steps));
    let done = v1.start("three", &1u64).await.unwrap();
    let _: u64 = v1.result(&done).await.unwrap();
    let report = v1.check_replay().await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.checked, 1);
    v1.shutdown().await;

    // The new code renames the second step.
    let v2 = Engine::builder(store.clone())
        .workflow("three", |ctx: Context, n: u64| async move {
            let a = ctx
                .step("add-one", |_| async move { Ok::<_, StepError>(n + 1) })
                .await?;
            let b = ctx
                .step("triple", |_| async move { Ok::<_, StepError>(a * 3) })
                .await?;
            Ok(b)
        })
        .build();
    let report = v2.check_replay().await.unwrap();
    assert_eq!(report.mismatches.len(), 1, "{report:?}");
    let m = &report.mismatches[0];
    assert_eq!(m.run, done);
    assert_eq!(m.position, Some(1));
    assert!(
        m.message.contains("\"double\"") && m.message.contains("\"triple\""),
        "{}",
        m.message
    );
    // Nothing was written by the check.
    assert_eq!(
        store.read_log(done).await.unwrap().last().unwrap().kind(),
        EventKind::RunCompleted
    );

    // Code that stops early is caught too; unknown workflows are listed, not checked.
    let v3 = Engine::builder(store.clone())
        .workflow("three", |ctx: Context, n: u64| async move {
            ctx.step("add-one", |_| async move { Ok::<_, StepError>(n + 1) })
                .await
        })
        .build();
    let report = v3.check_replay().await.unwrap();
    assert_eq!(report.mismatches.len(), 1, "{report:?}");
    let none = Engine::builder(store.clone())
        .build()
        .check_replay()
        .await
        .unwrap();
    assert_eq!(none.unknown_workflow.len(), 1);
    assert_eq!(none.checked, 0);
}

/// With a store clock that only moves when told to, retries and timers come
/// due exactly at their recorded time, however much real time passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_and_sleep_follow_the_store_clock() {
    use workflow_store::{ManualClock, Timestamp};
    let clock = std::sync::Arc::new(ManualClock::new(Timestamp(1_000_000)));
    let store = MemoryStore::with_clock(clock.clone());
    let slow = StepOptions::default().max_attempts(3).backoff(Backoff {
        initial: Duration::from_secs(10),
        factor: 2.0,
        max: Duration::from_secs(60),
    });
    let e = engine(store.clone(), move |b| {
        b.workflow("clocked", move |ctx: Context, _: ()| {
            let slow = slow.clone();
            async move {
                let attempt = ctx
                    .step_with("once-flaky", slow, |s| async move {
                        if s.attempt() == 1 {
                            Err(StepError::retryable("not yet"))
                        } else {
                            Ok(s.attempt())
                        }
                    })
                    .await?;
                ctx.sleep(Duration::from_secs(3600)).await?;
                Ok(attempt)
            }
        })
    });
    let run = e.start("clocked", &()).await.unwrap();
    let wait_for = |kind: EventKind, n: usize| {
        let store = store.clone();
        async move {
            for _ in 0..300 {
                let k = kinds(&store, run).await;
                if k.iter().filter(|x| **x == kind).count() >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("no {n} x {kind} in {:?}", kinds(&store, run).await);
        }
    };
    wait_for(EventKind::StepRetrying, 1).await;
    // Real time passes, the store's clock does not: no second attempt.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        kinds(&store, run)
            .await
            .iter()
            .filter(|k| **k == EventKind::StepStarted)
            .count(),
        1
    );
    clock.advance(Duration::from_millis(9_999));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        kinds(&store, run)
            .await
            .iter()
            .filter(|k| **k == EventKind::StepStarted)
            .count(),
        1,
        "retried early"
    );
    clock.advance(Duration::from_millis(1));
    wait_for(EventKind::WaitCreated, 1).await;
    // The hour-long sleep: due at exactly resume_at on the store's clock.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!kinds(&store, run).await.contains(&EventKind::WaitCompleted));
    clock.advance(Duration::from_secs(3600));
    let attempt: u32 = e.result(&run).await.unwrap();
    assert_eq!(attempt, 2);
    let log = store.read_log(run).await.unwrap();
    let created = log.iter().find_map(|e| match &e.data {
        EventData::WaitCreated { resume_at, .. } => Some(*resume_at),
        _ => None,
    });
    let completed = log
        .iter()
        .find(|e| e.kind() == EventKind::WaitCompleted)
        .map(|e| e.at);
    assert!(completed.unwrap() >= created.unwrap());
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_replay_compares_how_a_run_ended() {
    let store = MemoryStore::new();
    let v1 = engine(store.clone(), |b| b.workflow("three", three_steps));
    let done = v1.start("three", &1u64).await.unwrap();
    let _: u64 = v1.result(&done).await.unwrap();
    v1.shutdown().await;
    // Same operations, different output.
    let other_output = Engine::builder(store.clone())
        .workflow("three", |ctx: Context, n: u64| async move {
            let out = three_steps(ctx, n).await?;
            Ok(out + 1)
        })
        .build();
    let report = other_output.check_replay().await.unwrap();
    assert_eq!(report.mismatches.len(), 1, "{report:?}");
    assert!(
        report.mismatches[0].message.contains("different output"),
        "{report:?}"
    );
    // Same operations, now failing.
    let now_fails = Engine::builder(store.clone())
        .workflow("three", |ctx: Context, n: u64| async move {
            three_steps(ctx, n).await?;
            Err::<u64, _>(WorkflowError::fatal("no longer accepted"))
        })
        .build();
    let report = now_fails.check_replay().await.unwrap();
    assert!(
        report.mismatches[0]
            .message
            .contains("now fails: no longer accepted"),
        "{report:?}"
    );
    // Input that no longer decodes is named as such.
    let new_input = Engine::builder(store.clone())
        .workflow("three", |ctx: Context, n: String| async move {
            three_steps(ctx, n.len() as u64).await
        })
        .build();
    let report = new_input.check_replay().await.unwrap();
    assert!(
        report.mismatches[0].message.contains("workflow input"),
        "{report:?}"
    );
}

/// `select_biased!` over two operations resolves in log order, so replay (here
/// after the hot cache is dropped) picks the same winner as the live run did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_biased_over_operations_replays_the_same_winner() {
    use futures::FutureExt;
    let store = MemoryStore::new();
    let e = engine(store.clone(), |b| {
        b.workflow("race", |ctx: Context, _: ()| async move {
            // "slow" is listed first, so a biased select would prefer it if both
            // were ready; only the log order decides who wins.
            let slow = ctx
                .step("slow", |_| async {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Ok::<_, StepError>("slow".to_string())
                })
                .fuse();
            let fast = ctx
                .step("fast", |_| async { Ok::<_, StepError>("fast".to_string()) })
                .fuse();
            futures::pin_mut!(slow, fast);
            let winner = futures::select_biased! {
                s = slow => s?,
                f = fast => f?,
            };
            ctx.sleep(Duration::from_millis(100)).await?;
            Ok(winner)
        })
    });
    let run = e.start("race", &()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    e.clear_cache();
    let winner: String = e.result(&run).await.unwrap();
    assert_eq!(winner, "fast");
    let log = store.read_log(run).await.unwrap();
    let completed: Vec<String> = log
        .iter()
        .filter_map(|e| match &e.data {
            EventData::StepCompleted { step, .. } => Some(step.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(
        completed.first().map(String::as_str),
        Some("step:1"),
        "fast (step:1) completes first"
    );
    e.shutdown().await;
}

/// Any `std::error::Error` converts into a retryable `StepError` with `?`,
/// and `.fatal()?` makes it fatal: the first step retries and then succeeds,
/// the second fails at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn question_mark_on_std_errors_retries_and_fatal_fails_at_once() {
    use workflow_core::StepResultExt;
    let store = MemoryStore::new();
    let e = engine(store.clone(), |b| {
        b.workflow("errors", |ctx: Context, _: ()| async move {
            let n = ctx
                .step_with("parse", fast(3), |s| async move {
                    let text = if s.attempt() == 1 {
                        "not a number"
                    } else {
                        "41"
                    };
                    let n: u32 = text.parse()?;
                    Ok::<_, StepError>(n + 1)
                })
                .await?;
            let fatal = ctx
                .step_with("fatal", fast(3), |_| async {
                    let n: u32 = "nope".parse().fatal()?;
                    Ok::<_, StepError>(n)
                })
                .await;
            Ok((n, fatal.map_err(|e| e.to_string())))
        })
    });
    let run = e.start("errors", &()).await.unwrap();
    let (n, fatal): (u32, Result<u32, String>) = e.result(&run).await.unwrap();
    assert_eq!(n, 42);
    let fatal = fatal.unwrap_err();
    assert!(fatal.contains("after 1 attempt(s)"), "{fatal}");
    assert!(fatal.contains("invalid digit"), "{fatal}");
    let log = store.read_log(run).await.unwrap();
    let retry = log
        .iter()
        .find_map(|ev| match &ev.data {
            EventData::StepRetrying { error, .. } => Some(error.message.clone()),
            _ => None,
        })
        .expect("the parse step retried");
    assert!(retry.contains("invalid digit"), "{retry}");
    e.shutdown().await;
}
