//! The run driver as an event loop: every source of progress (step attempts,
//! timers and retries, hook payloads, cancellation, lease renewal, shutdown)
//! reaches a run while its steps run. Each scenario runs on MemoryStore and
//! on SledStore.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::kinds;

use bytes::Bytes;
use futures::future::{select, Either};
use futures::FutureExt;
use workflow_core::{
    Backoff, Context, Engine, EngineBuilder, EngineError, HookOptions, StepError, StepOptions,
    WebhookOptions, WorkflowError,
};
use workflow_store::{EventData, EventKind, MemoryStore, RunId, RunStatus, SledStore, Store};

/// A store for one test, with the directory a sled store lives in.
struct TestStore {
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

impl TestStore {
    fn memory() -> Self {
        TestStore {
            store: Arc::new(MemoryStore::new()),
            _dir: None,
        }
    }

    fn sled() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path()).expect("open sled");
        TestStore {
            store: Arc::new(store),
            _dir: Some(dir),
        }
    }
}

/// Runs each scenario once per backend, as `memory::name` and `sled::name`.
macro_rules! on_each_store {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::TestStore::memory()).await
                }
            )*
        }
        mod sled {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::TestStore::sled()).await
                }
            )*
        }
    };
}

on_each_store!(
    a_step_that_lost_a_select_still_runs_when_awaited_later,
    a_step_longer_than_its_lease_that_wakes_often_runs_once,
    a_durable_timeout_beats_a_slow_step,
    a_hook_payload_reaches_the_workflow_while_a_step_runs,
    a_cancel_reaches_the_run_while_a_step_runs,
    a_changed_sleep_duration_follows_the_recorded_timer,
    a_blocked_run_with_a_due_timer_is_inert_until_retried,
    a_run_of_an_unregistered_workflow_is_inert_until_an_engine_registers_it,
    a_manual_answer_given_after_the_webhook_is_dropped_reaches_the_caller,
    dispose_then_create_with_the_same_token_in_one_stall_is_no_conflict,
    an_attempt_lost_with_its_engine_counts_against_max_attempts,
    a_panic_inside_a_step_is_a_retryable_failed_attempt,
    a_step_that_uses_the_workflow_context_fails_with_a_clear_error,
    a_cached_run_does_not_keep_the_payloads_it_was_given,
);

fn engine(ts: &TestStore, ttl: Duration, f: impl FnOnce(EngineBuilder) -> EngineBuilder) -> Engine {
    let e = f(Engine::builder(ts.store.clone())
        .poll_interval(Duration::from_millis(20))
        .lease_ttl(ttl))
    .build();
    e.start_workers();
    e
}

fn fast(max_attempts: u32, initial_ms: u64) -> StepOptions {
    StepOptions::default()
        .max_attempts(max_attempts)
        .backoff(Backoff {
            initial: Duration::from_millis(initial_ms),
            factor: 1.0,
            max: Duration::from_millis(initial_ms),
        })
}

/// Waits (bounded) until `check` holds.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..1000 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

async fn result_of<O: serde::de::DeserializeOwned>(
    e: &Engine,
    run: RunId,
) -> Result<O, EngineError> {
    tokio::time::timeout(Duration::from_secs(20), e.result(&run))
        .await
        .expect("the run did not finish within 20 s")
}

/// Item 1: `select(sleep, flaky step)`: the sleep wins while the step waits
/// for its retry; the workflow sleeps again, then awaits the kept step.
async fn a_step_that_lost_a_select_still_runs_when_awaited_later(ts: TestStore) {
    let e = engine(&ts, Duration::from_secs(5), |b| {
        b.workflow("race", |ctx: Context, _: ()| async move {
            let flaky = ctx.step_with("flaky", fast(3, 50), |s| async move {
                if s.attempt() == 1 {
                    Err(StepError::retryable("first attempt fails"))
                } else {
                    Ok(s.attempt())
                }
            });
            let sleep = ctx.sleep(Duration::from_millis(20));
            let step = match select(Box::pin(sleep), flaky).await {
                Either::Left((slept, step)) => {
                    slept?;
                    step
                }
                Either::Right(_) => return Err(WorkflowError::fatal("the step won")),
            };
            ctx.sleep(Duration::from_millis(200)).await?;
            let attempt = step.await?;
            Ok(attempt)
        })
    });
    let run = e.start("race", &()).await.unwrap();
    let attempt: u32 = result_of(&e, run).await.unwrap();
    assert_eq!(attempt, 2);
    let log = kinds(&*ts.store, run).await;
    assert_eq!(
        log.iter()
            .filter(|k| **k == EventKind::WaitCompleted)
            .count(),
        2,
        "{log:?}"
    );
    e.shutdown().await;
}

/// Item 2: a step running 3x the lease (600 ms) and waking every 5 ms keeps its
/// lease and executes exactly once.
async fn a_step_longer_than_its_lease_that_wakes_often_runs_once(ts: TestStore) {
    let executions = Arc::new(AtomicU32::new(0));
    let register = |count: Arc<AtomicU32>| {
        move |b: EngineBuilder| {
            b.workflow("long", move |ctx: Context, _: ()| {
                let count = count.clone();
                async move {
                    ctx.step("long", |_| {
                        let count = count.clone();
                        async move {
                            count.fetch_add(1, Ordering::SeqCst);
                            // Three lease lengths, waking every 5 ms.
                            for _ in 0..360 {
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                            Ok::<_, StepError>("done".to_string())
                        }
                    })
                    .await
                }
            })
        }
    };
    let ttl = Duration::from_millis(600);
    let e = engine(&ts, ttl, register(executions.clone()));
    // A second engine on the store takes the run over if the lease lapses.
    let rival = engine(&ts, ttl, register(executions.clone()));
    let run = e.start("long", &()).await.unwrap();
    let out: String = result_of(&e, run).await.unwrap();
    assert_eq!(out, "done");
    assert_eq!(executions.load(Ordering::SeqCst), 1, "the step ran again");
    let started = kinds(&*ts.store, run)
        .await
        .into_iter()
        .filter(|k| *k == EventKind::StepStarted)
        .count();
    assert_eq!(started, 1);
    e.shutdown().await;
    rival.shutdown().await;
}

/// Item 3: a 100 ms durable timer beats a 1.5 s step in `select_biased!`,
/// and the step's attempt is cancelled, not recorded.
async fn a_durable_timeout_beats_a_slow_step(ts: TestStore) {
    let e = engine(&ts, Duration::from_secs(5), |b| {
        b.workflow("timeout", |ctx: Context, _: ()| async move {
            let slow = ctx.step("slow", |_| async {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                Ok::<_, StepError>(())
            });
            let timer = ctx.sleep(Duration::from_millis(100));
            futures::pin_mut!(slow);
            let winner = futures::select_biased! {
                t = timer.fuse() => { t?; "timeout" },
                s = slow.fuse() => { s?; "step" },
            };
            Ok(winner.to_string())
        })
    });
    let run = e.start("timeout", &()).await.unwrap();
    let out: String = result_of(&e, run).await.unwrap();
    assert_eq!(out, "timeout");
    let log = kinds(&*ts.store, run).await;
    assert!(!log.contains(&EventKind::StepCompleted), "{log:?}");
    e.shutdown().await;
}

/// Item 3: a payload recorded while a 1.5 s step runs reaches the workflow
/// that selects on the hook and the step, before the step ends.
async fn a_hook_payload_reaches_the_workflow_while_a_step_runs(ts: TestStore) {
    let e = engine(&ts, Duration::from_secs(5), |b| {
        b.workflow("hook-or-step", |ctx: Context, _: ()| async move {
            let mut hook = ctx.create_hook::<String>(HookOptions::token(format!(
                "payload-during-step:{}",
                ctx.run_id()
            )))?;
            let slow = ctx.step("slow", |_| async {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                Ok::<_, StepError>("step".to_string())
            });
            futures::pin_mut!(slow);
            let winner = futures::select_biased! {
                p = hook.next().fuse() => p?,
                s = slow.fuse() => s?,
            };
            Ok(winner)
        })
    });
    let run = e.start("hook-or-step", &()).await.unwrap();
    let token = format!("payload-during-step:{run}");
    e.wait_for_hook(&token, Duration::from_secs(10))
        .await
        .expect("the hook exists");
    e.resume_hook(&token, "payload").await.unwrap();
    let out: String = result_of(&e, run).await.unwrap();
    assert_eq!(out, "payload");
    let log = kinds(&*ts.store, run).await;
    assert!(!log.contains(&EventKind::StepCompleted), "{log:?}");
    e.shutdown().await;
}

/// Item 3: cancelling a run whose step runs for a long time stops the
/// attempt at once (its future is dropped) instead of waiting for it.
async fn a_cancel_reaches_the_run_while_a_step_runs(ts: TestStore) {
    struct SetOnDrop(Arc<AtomicBool>);
    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let started = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicBool::new(false));
    let (s2, d2) = (started.clone(), dropped.clone());
    // A long lease: renewing it (every 20 s) is not what notices the cancel.
    let e = engine(&ts, Duration::from_secs(60), move |b| {
        b.workflow("endless", move |ctx: Context, _: ()| {
            let (started, dropped) = (s2.clone(), d2.clone());
            async move {
                ctx.step("endless", |_| {
                    let (started, dropped) = (started.clone(), dropped.clone());
                    async move {
                        let _guard = SetOnDrop(dropped);
                        started.store(true, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        Ok::<_, StepError>(())
                    }
                })
                .await
            }
        })
    });
    let run = e.start("endless", &()).await.unwrap();
    eventually("the step runs", || async { started.load(Ordering::SeqCst) }).await;
    e.cancel(&run).await.unwrap();
    eventually("the cancelled run's attempt is dropped", || async {
        dropped.load(Ordering::SeqCst)
    })
    .await;
    assert!(matches!(
        e.result::<()>(&run).await,
        Err(EngineError::RunCancelled { .. })
    ));
    e.shutdown().await;
}

/// Waits until `run`'s log contains `kind`.
async fn until_recorded(store: &dyn Store, run: RunId, kind: EventKind) {
    eventually(&format!("{kind:?} is recorded"), || async {
        kinds(store, run).await.contains(&kind)
    })
    .await;
}

/// Item 4: v1 recorded a 100 ms timer; v2 computes 3 s. The recorded time
/// decides, and the run is activated a handful of times, not thousands.
async fn a_changed_sleep_duration_follows_the_recorded_timer(ts: TestStore) {
    let v1 = engine(&ts, Duration::from_secs(5), |b| {
        b.workflow("sleepy", |ctx: Context, _: ()| async move {
            ctx.sleep(Duration::from_millis(100)).await?;
            Ok("v1".to_string())
        })
    });
    let run = v1.start("sleepy", &()).await.unwrap();
    until_recorded(&*ts.store, run, EventKind::WaitCreated).await;
    v1.shutdown_now();
    let v2 = engine(&ts, Duration::from_secs(5), |b| {
        b.workflow("sleepy", |ctx: Context, _: ()| async move {
            ctx.sleep(Duration::from_secs(3)).await?;
            Ok("v2".to_string())
        })
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    let out: String = result_of(&v2, run).await.unwrap();
    assert_eq!(out, "v2");
    let activations = v2.metrics().activations;
    assert!(
        activations <= 4,
        "{activations} activations for one timer: a lease/release loop"
    );
    v2.shutdown().await;
}

async fn wait_for_status(store: &dyn Store, run: RunId, status: RunStatus) {
    eventually(&format!("the run is {status}"), || async {
        store.get_run(run).await.unwrap().unwrap().status == status
    })
    .await;
}

/// Item 5: a blocked run whose timer is due is not replayed again and again;
/// `retry_blocked` replays it once more.
async fn a_blocked_run_with_a_due_timer_is_inert_until_retried(ts: TestStore) {
    let v1 = engine(&ts, Duration::from_secs(5), |b| {
        b.workflow("changed", |ctx: Context, _: ()| async move {
            ctx.sleep(Duration::from_millis(100)).await?;
            Ok(())
        })
    });
    let run = v1.start("changed", &()).await.unwrap();
    until_recorded(&*ts.store, run, EventKind::WaitCreated).await;
    v1.shutdown_now();
    let v2 = engine(&ts, Duration::from_secs(5), |b| {
        b.workflow("changed", |ctx: Context, _: ()| async move {
            ctx.step("new-first-step", |_| async { Ok::<_, StepError>(()) })
                .await?;
            ctx.sleep(Duration::from_millis(100)).await?;
            Ok(())
        })
    });
    wait_for_status(&*ts.store, run, RunStatus::Blocked).await;
    // The timer came due long ago; nothing can change the outcome.
    tokio::time::sleep(Duration::from_millis(750)).await;
    let after_wait = v2.metrics();
    assert!(
        after_wait.replays <= 3,
        "{} replays of a blocked run in 750 ms",
        after_wait.replays
    );
    v2.retry_blocked(&run).await.unwrap();
    eventually("the retried run is replayed", || async {
        v2.metrics().replays > after_wait.replays
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_retry = v2.metrics().replays;
    assert!(
        after_retry <= after_wait.replays + 2,
        "a retry replayed {} times",
        after_retry - after_wait.replays
    );
    assert_eq!(
        ts.store.get_run(run).await.unwrap().unwrap().status,
        RunStatus::Blocked
    );
    let blocked_records = kinds(&*ts.store, run)
        .await
        .iter()
        .filter(|k| **k == EventKind::RunBlocked)
        .count();
    assert_eq!(blocked_records, 1, "the same error was recorded again");
    assert!(matches!(
        v2.retry_blocked(&RunId::new()).await,
        Err(EngineError::RunNotFound { .. })
    ));
    v2.shutdown().await;
}

/// Item 5: runs of a workflow this engine does not register are blocked and
/// inert; an engine that registers it picks them up when it starts.
async fn a_run_of_an_unregistered_workflow_is_inert_until_an_engine_registers_it(ts: TestStore) {
    // A short lease: v1 is stopped abruptly, perhaps before it gave the
    // run's lease back, and the run must then come due soon after.
    let v1 = engine(&ts, Duration::from_millis(500), |b| {
        b.workflow("renamed", |ctx: Context, _: ()| async move {
            ctx.sleep(Duration::from_millis(50)).await?;
            Ok(7u32)
        })
    });
    let run = v1.start("renamed", &()).await.unwrap();
    until_recorded(&*ts.store, run, EventKind::WaitCreated).await;
    v1.shutdown_now();
    let other = engine(&ts, Duration::from_secs(5), |b| {
        b.workflow("something-else", |_: Context, _: ()| async move { Ok(()) })
    });
    wait_for_status(&*ts.store, run, RunStatus::Blocked).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let activations = other.metrics().activations;
    assert!(
        activations <= 3,
        "{activations} activations of a blocked run"
    );
    other.shutdown().await;
    let fixed = engine(&ts, Duration::from_secs(5), |b| {
        b.workflow("renamed", |ctx: Context, _: ()| async move {
            ctx.sleep(Duration::from_millis(50)).await?;
            Ok(7u32)
        })
    });
    let out: u32 = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match fixed.result::<u32>(&run).await {
                Err(EngineError::RunBlocked { .. }) => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                other => return other,
            }
        }
    })
    .await
    .expect("the run did not finish")
    .unwrap();
    assert_eq!(out, 7);
    fixed.shutdown().await;
}

/// Item 6: the workflow takes a request, drops the webhook, runs a step,
/// then answers: the caller gets that answer, not 504.
async fn a_manual_answer_given_after_the_webhook_is_dropped_reaches_the_caller(ts: TestStore) {
    let e = engine(&ts, Duration::from_secs(5), |b| {
        b.workflow("answer-later", |ctx: Context, _: ()| async move {
            let mut webhook = ctx.create_webhook(
                WebhookOptions::token(format!("answer-later:{}", ctx.run_id()))
                    .manual(Duration::from_secs(10)),
            )?;
            let request = webhook.next().await?;
            drop(webhook);
            let n = ctx
                .step("work", |_| async { Ok::<_, StepError>(41u32) })
                .await?;
            request.respond(
                http::Response::builder()
                    .status(201)
                    .body(Bytes::from(format!("answer {}", n + 1)))
                    .expect("response"),
            );
            Ok(())
        })
    });
    let run = e.start("answer-later", &()).await.unwrap();
    let token = format!("answer-later:{run}");
    e.wait_for_hook(&token, Duration::from_secs(10))
        .await
        .expect("the webhook exists");
    let response = e
        .resume_webhook(&token, http::Request::new(Bytes::from_static(b"hi")))
        .await;
    assert_eq!(response.status(), 201);
    assert_eq!(response.body(), &Bytes::from_static(b"answer 42"));
    let _: () = result_of(&e, run).await.unwrap();
    e.shutdown().await;
}

/// Item 7: `dispose()` then `create_hook` with the same token, in one stall,
/// records the disposal first: the new hook gets the token.
async fn dispose_then_create_with_the_same_token_in_one_stall_is_no_conflict(ts: TestStore) {
    let e = engine(&ts, Duration::from_secs(5), |b| {
        b.workflow("reuse-token", |ctx: Context, _: ()| async move {
            let token = format!("reuse:{}", ctx.run_id());
            let first = ctx.create_hook::<u32>(HookOptions::token(token.clone()))?;
            ctx.step("between", |_| async { Ok::<_, StepError>(()) })
                .await?;
            first.dispose();
            let mut second = ctx.create_hook::<u32>(HookOptions::token(token))?;
            Ok(second.next().await?)
        })
    });
    let run = e.start("reuse-token", &()).await.unwrap();
    let token = format!("reuse:{run}");
    eventually("the second hook holds the token", || async {
        e.get_hook(&token)
            .await
            .unwrap()
            .is_some_and(|h| h.hook.as_str() == "hook:2")
    })
    .await;
    e.resume_hook(&token, &5u32).await.unwrap();
    let out: u32 = result_of(&e, run).await.unwrap();
    assert_eq!(out, 5);
    let log = kinds(&*ts.store, run).await;
    assert!(!log.contains(&EventKind::HookConflict), "{log:?}");
    e.shutdown().await;
}

/// Item 8: an attempt whose engine dies (here: abandoned with
/// `shutdown_now`, as a crash would) is counted when another engine takes the
/// expired lease over; with `max_attempts(2)` the step fails after two such
/// attempts instead of being retried forever. (`restart.rs` does this with a
/// process killed by a signal.)
async fn an_attempt_lost_with_its_engine_counts_against_max_attempts(ts: TestStore) {
    let started = Arc::new(AtomicU32::new(0));
    let make = |started: Arc<AtomicU32>| {
        move |b: EngineBuilder| {
            b.workflow("crashy", move |ctx: Context, _: ()| {
                let started = started.clone();
                async move {
                    let r = ctx
                        .step_with("crashy", fast(2, 10), |_| {
                            let started = started.clone();
                            async move {
                                started.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_secs(60)).await;
                                Ok::<_, StepError>(())
                            }
                        })
                        .await;
                    Ok(match r {
                        Ok(()) => "completed".to_string(),
                        Err(e) => e.to_string(),
                    })
                }
            })
        }
    };
    let ttl = Duration::from_millis(200);
    let mut e = engine(&ts, ttl, make(started.clone()));
    let run = e.start("crashy", &()).await.unwrap();
    for crash in 1..=2 {
        eventually("the attempt runs", || async {
            started.load(Ordering::SeqCst) == crash
        })
        .await;
        e.shutdown_now();
        e = engine(&ts, ttl, make(started.clone()));
    }
    let out: String = result_of(&e, run).await.unwrap();
    assert!(out.contains("after 2 attempt(s)"), "{out}");
    assert!(out.contains("was lost"), "{out}");
    assert_eq!(started.load(Ordering::SeqCst), 2);
    let log = kinds(&*ts.store, run).await;
    assert_eq!(
        log.iter().filter(|k| **k == EventKind::StepStarted).count(),
        2,
        "{log:?}"
    );
    e.shutdown().await;
}

/// Item 9: a panic inside a step is a failed attempt (retried under the
/// step's policy) whose error carries the panic message.
async fn a_panic_inside_a_step_is_a_retryable_failed_attempt(ts: TestStore) {
    let e = engine(&ts, Duration::from_secs(5), |b| {
        b.workflow("panicky", |ctx: Context, _: ()| async move {
            ctx.step_with("panicky", fast(3, 5), |s| async move {
                if s.attempt() == 1 {
                    panic!("boom on attempt {}", s.attempt());
                }
                Ok::<_, StepError>(s.attempt())
            })
            .await
        })
    });
    let run = e.start("panicky", &()).await.unwrap();
    let attempt: u32 = result_of(&e, run).await.unwrap();
    assert_eq!(attempt, 2);
    let log = ts.store.read_log(run).await.unwrap();
    let retry = log
        .iter()
        .find_map(|ev| match &ev.data {
            EventData::StepRetrying { error, .. } => Some(error.message.clone()),
            _ => None,
        })
        .expect("a step_retrying event");
    assert!(retry.contains("boom on attempt 1"), "{retry}");
    e.shutdown().await;
}

/// Item 10: a step closure that uses the workflow `Context` fails at once
/// with an error saying so, instead of drifting silently on replay.
async fn a_step_that_uses_the_workflow_context_fails_with_a_clear_error(ts: TestStore) {
    let e = engine(&ts, Duration::from_secs(5), |b| {
        b.workflow("misuse", |ctx: Context, _: ()| async move {
            let inner = ctx.clone();
            let random = ctx
                .step("uses-random", move |_| {
                    let inner = inner.clone();
                    async move { Ok::<_, StepError>(inner.random::<u32>()) }
                })
                .await;
            let inner = ctx.clone();
            let nested = ctx
                .step("nests-a-step", move |_| {
                    let inner = inner.clone();
                    async move {
                        let n = inner
                            .step("nested", |_| async { Ok::<_, StepError>(1u32) })
                            .await
                            .map_err(StepError::fatal)?;
                        Ok::<_, StepError>(n)
                    }
                })
                .await;
            Ok(vec![
                random
                    .map(|_| String::new())
                    .unwrap_or_else(|e| e.to_string()),
                nested
                    .map(|_| String::new())
                    .unwrap_or_else(|e| e.to_string()),
            ])
        })
    });
    let run = e.start("misuse", &()).await.unwrap();
    let errors: Vec<String> = result_of(&e, run).await.unwrap();
    for (error, what) in errors.iter().zip(["Context::random", "Context::step"]) {
        assert!(
            error.contains("used inside a step") && error.contains(what),
            "{error}"
        );
        assert!(error.contains("after 1 attempt(s)"), "not fatal: {error}");
    }
    e.shutdown().await;
}

/// Item 11: a cached run that was given many large payloads keeps none of
/// them once its workflow has taken them.
async fn a_cached_run_does_not_keep_the_payloads_it_was_given(ts: TestStore) {
    const PAYLOADS: usize = 100;
    const SIZE: usize = 8 * 1024;
    let e = engine(&ts, Duration::from_secs(5), |b| {
        b.workflow("consumer", |ctx: Context, _: ()| async move {
            let mut hook =
                ctx.create_hook::<Vec<u8>>(HookOptions::token(format!("big:{}", ctx.run_id())))?;
            let mut total = 0usize;
            for _ in 0..PAYLOADS {
                total += hook.next().await?.len();
            }
            let mut done =
                ctx.create_hook::<()>(HookOptions::token(format!("done:{}", ctx.run_id())))?;
            done.next().await?;
            Ok(total)
        })
    });
    let run = e.start("consumer", &()).await.unwrap();
    let token = format!("big:{run}");
    e.wait_for_hook(&token, Duration::from_secs(10))
        .await
        .expect("the hook exists");
    for i in 0..PAYLOADS {
        e.resume_hook(&token, &vec![i as u8; SIZE]).await.unwrap();
    }
    let done = format!("done:{run}");
    e.wait_for_hook(&done, Duration::from_secs(10))
        .await
        .expect("every payload was taken");
    eventually("the run is cached", || async { e.cached_runs() == 1 }).await;
    let (events, bytes) = e.cached_events();
    assert!(
        bytes < SIZE,
        "a cached run holds {events} events with {bytes} payload bytes after delivering them"
    );
    e.resume_hook(&done, &()).await.unwrap();
    let total: usize = result_of(&e, run).await.unwrap();
    assert_eq!(total, PAYLOADS * SIZE);
    e.shutdown().await;
}
