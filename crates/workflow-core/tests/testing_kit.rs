//! The testing kit (`workflow_core::testing`): time skipping, step mocks,
//! driving runs by the engine's API, history assertions and replay checks.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use workflow_core::testing::{
    AttemptOutcome, Operation, ReplayCheckError, StepMock, TestEngine, TestError, TEST_EPOCH,
};
use workflow_core::{
    Backoff, Context, EngineError, HookOptions, StepError, StepOptions, WebhookOptions,
    WorkflowError, WorkflowRef,
};
use workflow_store::{EventData, EventKind, RunStatus};

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

const LONG_HAUL: WorkflowRef<(), String> = WorkflowRef::new("long_haul");

/// Sleeps 30 days, runs a step that fails twice with an hour's backoff, then
/// waits for an approval on a hook, for 7 days at most.
async fn long_haul(ctx: Context, _: ()) -> Result<String, WorkflowError> {
    ctx.sleep(30 * DAY).await?;
    let hourly = StepOptions::default().max_attempts(3).backoff(Backoff {
        initial: HOUR,
        factor: 1.0,
        max: HOUR,
    });
    let attempts = ctx
        .step_with("flaky", hourly, async |s| {
            if s.attempt() < 3 {
                Err(StepError::retryable(format!(
                    "attempt {} failed",
                    s.attempt()
                )))
            } else {
                Ok(s.attempt())
            }
        })
        .await?;
    let mut approval = ctx.create_hook::<String>(HookOptions::token("long:approval"))?;
    let timeout = ctx.sleep(7 * DAY);
    let outcome = futures::select_biased! {
        who = approval.next().fuse() => format!("approved by {} after {attempts} attempts", who?),
        t = timeout.fuse() => { t?; format!("timed out after {attempts} attempts") }
    };
    Ok(outcome)
}

fn long_haul_engine() -> TestEngine {
    TestEngine::builder().workflow(LONG_HAUL, long_haul).build()
}

#[tokio::test]
async fn thirty_days_of_sleep_hourly_retries_and_a_seven_day_timeout_take_milliseconds() {
    let env = long_haul_engine();
    let wall = Instant::now();
    let run = env.start(LONG_HAUL, &()).await.unwrap();
    let out = run.result().await.unwrap();
    let took = wall.elapsed();

    assert_eq!(out, "timed out after 3 attempts");
    assert_eq!(env.elapsed(), 30 * DAY + 2 * HOUR + 7 * DAY);
    assert!(
        took < Duration::from_millis(100),
        "37 virtual days took {took:?} of wall time"
    );
    let history = run.history().await.unwrap();
    history.assert_operations(&[
        Operation::sleep(30 * DAY),
        Operation::step("flaky"),
        Operation::hook("long:approval"),
        Operation::sleep(7 * DAY),
    ]);
    // Each timer fired at its own time, not when the test looked.
    let fired: Vec<Duration> = history
        .events()
        .iter()
        .filter(|e| e.kind() == EventKind::WaitCompleted)
        .map(|e| e.at.saturating_duration_since(TEST_EPOCH))
        .collect();
    assert_eq!(
        fired,
        [30 * DAY, 30 * DAY + 2 * HOUR + 7 * DAY],
        "{history}"
    );
}

#[tokio::test]
async fn the_hook_wins_the_race_when_resumed_within_the_timeout() {
    let env = long_haul_engine();
    let wall = Instant::now();
    let run = env.start(LONG_HAUL, &()).await.unwrap();
    // Not created yet at the start: the run creates it after 30 days.
    assert!(env.resume_hook("long:approval", "ann").await.is_err());
    let hook = env.wait_for_hook("long:approval", 40 * DAY).await.unwrap();
    assert_eq!(hook.run_id, run.id());
    assert_eq!(env.elapsed(), 30 * DAY + 2 * HOUR);
    env.advance(2 * DAY).await.unwrap();
    assert_eq!(run.status().await.unwrap(), RunStatus::Running);
    env.resume_hook("long:approval", "ann").await.unwrap();
    assert_eq!(
        run.result().await.unwrap(),
        "approved by ann after 3 attempts"
    );
    assert_eq!(env.elapsed(), 30 * DAY + 2 * HOUR + 2 * DAY);
    assert!(
        wall.elapsed() < Duration::from_millis(100),
        "{:?}",
        wall.elapsed()
    );
}

#[tokio::test]
async fn wait_for_hook_moves_time_no_further_than_its_timeout() {
    let env = long_haul_engine();
    env.start(LONG_HAUL, &()).await.unwrap();
    let err = env.wait_for_hook("long:approval", DAY).await.unwrap_err();
    assert!(
        matches!(err, workflow_core::ResumeError::TimedOut { .. }),
        "{err}"
    );
    assert_eq!(env.elapsed(), DAY);
}

#[tokio::test]
async fn a_resume_in_a_concurrent_branch_happens_before_time_moves() {
    let env = long_haul_engine();
    let run = env.start(LONG_HAUL, &()).await.unwrap();
    env.wait_for_hook("long:approval", 40 * DAY).await.unwrap();
    let (out, resumed) = tokio::join!(run.result(), env.resume_hook("long:approval", "bob"));
    resumed.unwrap();
    assert_eq!(out.unwrap(), "approved by bob after 3 attempts");
    assert_eq!(env.elapsed(), 30 * DAY + 2 * HOUR);
}

#[tokio::test]
async fn advance_fires_each_timer_at_its_time_with_auto_advance_off() {
    let env = TestEngine::builder()
        .workflow(LONG_HAUL, long_haul)
        .auto_advance(false)
        .idle_timeout(Duration::from_millis(20))
        .build();
    let run = env.start(LONG_HAUL, &()).await.unwrap();
    env.advance(29 * DAY).await.unwrap();
    let kinds = run.history().await.unwrap().kinds();
    assert!(!kinds.contains(&EventKind::WaitCompleted), "{kinds:?}");
    // Awaiting the result does not move time when auto-advance is off: it
    // says what the run waits for.
    match run.result().await {
        Err(TestError::Idle { next_timer_in, .. }) => assert_eq!(next_timer_in, Some(DAY)),
        other => panic!("expected Idle, got {other:?}"),
    }
    env.advance(DAY + Duration::from_secs(90 * 60))
        .await
        .unwrap();
    // 30 days and 90 minutes: the first retry (at +1 h) ran, the second (at +2 h) not yet.
    let history = run.history().await.unwrap();
    let attempts = history.step_attempts("flaky");
    assert_eq!(attempts.len(), 2, "{history}");
    assert_eq!(
        attempts[1].started_at.saturating_duration_since(TEST_EPOCH),
        30 * DAY + HOUR
    );
    env.advance(HOUR + 7 * DAY).await.unwrap();
    assert_eq!(run.status().await.unwrap(), RunStatus::Completed);
}

#[tokio::test]
async fn awaiting_what_nothing_can_bring_fails_naming_the_hooks() {
    const WAITS: WorkflowRef<(), String> = WorkflowRef::new("waits");
    let env = TestEngine::builder()
        .workflow(WAITS, |ctx: Context, _: ()| async move {
            let mut hook = ctx.create_hook::<String>(HookOptions::token("nobody:comes"))?;
            Ok(hook.next().await?)
        })
        .idle_timeout(Duration::from_millis(20))
        .build();
    let run = env.start(WAITS, &()).await.unwrap();
    let err = run.result().await.unwrap_err();
    match &err {
        TestError::Idle { live_hooks, .. } => assert_eq!(live_hooks, &["nobody:comes"]),
        other => panic!("expected Idle, got {other:?}"),
    }
    assert!(err.to_string().contains("nobody:comes"), "{err}");
    assert_eq!(env.elapsed(), Duration::ZERO);
}

#[tokio::test]
async fn a_cancelled_run_ends_cancelled() {
    let env = long_haul_engine();
    let run = env.start(LONG_HAUL, &()).await.unwrap();
    env.advance(DAY).await.unwrap();
    run.cancel().await.unwrap();
    assert!(matches!(
        run.result().await,
        Err(TestError::Engine(EngineError::RunCancelled { .. }))
    ));
    assert_eq!(env.elapsed(), DAY);
}

const CHECKOUT: WorkflowRef<u64, String> = WorkflowRef::new("checkout");

fn checkout_engine(real_charges: Arc<AtomicU32>) -> workflow_core::testing::TestEngineBuilder {
    TestEngine::builder().workflow(CHECKOUT, move |ctx: Context, cents: u64| {
        let real_charges = real_charges.clone();
        async move {
            let receipt = ctx
                .step("charge", async |s| {
                    real_charges.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, StepError>(format!("real charge of {cents} (attempt {})", s.attempt()))
                })
                .await;
            match receipt {
                Ok(r) => Ok(r),
                Err(e) => Ok(format!("not charged: {e}")),
            }
        }
    })
}

#[tokio::test]
async fn a_mocked_steps_attempts_follow_the_mock() {
    let real = Arc::new(AtomicU32::new(0));
    let env = checkout_engine(real.clone())
        .mock_step(
            "charge",
            StepMock::returns("mocked receipt")
                .fail_on(1, StepError::retryable("gateway timeout"))
                .fail_on(2, StepError::retry_after("rate limited", HOUR)),
        )
        .build();
    let run = env.start(CHECKOUT, &1999).await.unwrap();
    assert_eq!(run.result().await.unwrap(), "mocked receipt");
    assert_eq!(real.load(Ordering::SeqCst), 0, "the real body ran");

    let attempts = run.history().await.unwrap().step_attempts("charge");
    let outcomes: Vec<_> = attempts
        .iter()
        .map(|a| (a.number, a.outcome.clone()))
        .collect();
    let at = |d: Duration| TEST_EPOCH.saturating_add(d);
    assert_eq!(
        outcomes,
        [
            (
                1,
                AttemptOutcome::Retrying {
                    error: "gateway timeout".into(),
                    retry_at: at(Duration::from_secs(1)), // the default backoff
                }
            ),
            (
                2,
                AttemptOutcome::Retrying {
                    error: "rate limited".into(),
                    retry_at: at(Duration::from_secs(1) + HOUR),
                }
            ),
            (3, AttemptOutcome::Completed),
        ]
    );
    assert_eq!(env.elapsed(), Duration::from_secs(1) + HOUR);
}

#[tokio::test]
async fn a_fatal_mock_fails_the_step_at_once_and_the_workflow_sees_it() {
    let real = Arc::new(AtomicU32::new(0));
    let env = checkout_engine(real.clone())
        .mock_step("charge", StepMock::fails(StepError::fatal("card declined")))
        .build();
    let run = env.start(CHECKOUT, &500).await.unwrap();
    let out = run.result().await.unwrap();
    assert!(
        out.starts_with("not charged") && out.contains("card declined"),
        "{out}"
    );
    let attempts = run.history().await.unwrap().step_attempts("charge");
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        attempts[0].outcome,
        AttemptOutcome::Failed {
            error: "card declined".into()
        }
    );
    assert_eq!(real.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn unmocked_attempts_and_unmocked_steps_run_for_real() {
    let real = Arc::new(AtomicU32::new(0));
    let env = checkout_engine(real.clone())
        .mock_step(
            "charge",
            StepMock::real().fail_on(1, StepError::retryable("injected")),
        )
        .build();
    let run = env.start(CHECKOUT, &700).await.unwrap();
    assert_eq!(
        run.result().await.unwrap(),
        "real charge of 700 (attempt 2)"
    );
    assert_eq!(real.load(Ordering::SeqCst), 1);

    env.unmock_step("charge");
    let run = env.start(CHECKOUT, &800).await.unwrap();
    assert_eq!(
        run.result().await.unwrap(),
        "real charge of 800 (attempt 1)"
    );
    assert_eq!(real.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_mock_computes_its_outcome_from_the_attempt() {
    let env = checkout_engine(Arc::default())
        .mock_step(
            "charge",
            StepMock::from_fn(|s| match s.attempt() {
                1 => Err(StepError::retryable("first try fails")),
                n => Ok(format!(
                    "charged on attempt {n} with key {}",
                    s.idempotency_key()
                )),
            }),
        )
        .build();
    let run = env.start(CHECKOUT, &1).await.unwrap();
    let out = run.result().await.unwrap();
    assert_eq!(
        out,
        format!("charged on attempt 2 with key {}:step:0", run.id())
    );
}

#[tokio::test]
async fn a_mock_of_another_type_fails_the_attempt_saying_so() {
    let env = checkout_engine(Arc::default())
        .mock_step("charge", StepMock::returns(&42u32))
        .build();
    let run = env.start(CHECKOUT, &1).await.unwrap();
    let out = run.result().await.unwrap();
    assert!(out.contains("the mock of step \"charge\""), "{out}");
}

const ORDERED: WorkflowRef<(), u32> = WorkflowRef::new("ordered");

async fn ordered_v1(ctx: Context, _: ()) -> Result<u32, WorkflowError> {
    let a = ctx.step("reserve", async |_| Ok::<_, StepError>(1)).await?;
    ctx.sleep(DAY).await?;
    let b = ctx.step("charge", async |_| Ok::<_, StepError>(2)).await?;
    Ok(a + b)
}

/// v1 with its sleep moved after the charge: the operation at position 1 changed.
async fn ordered_v2(ctx: Context, _: ()) -> Result<u32, WorkflowError> {
    let a = ctx.step("reserve", async |_| Ok::<_, StepError>(1)).await?;
    let b = ctx.step("charge", async |_| Ok::<_, StepError>(2)).await?;
    ctx.sleep(DAY).await?;
    Ok(a + b)
}

#[tokio::test]
async fn a_changed_workflow_fails_replay_check_with_the_position() {
    let env = TestEngine::builder().workflow(ORDERED, ordered_v1).build();
    let run = env.start(ORDERED, &()).await.unwrap();
    assert_eq!(run.result().await.unwrap(), 3);
    run.replay_check().await.unwrap();

    let v2 = env.redeploy().workflow(ORDERED, ordered_v2).build();
    match v2.replay_check(&run.id()).await {
        Err(ReplayCheckError::Mismatch(m)) => {
            assert_eq!(m.position, Some(1), "{m}");
            assert!(m.to_string().contains("at operation 1"), "{m}");
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
    // The same check the engine makes for every run (`workflow check-replay`).
    let report = v2.engine().check_replay().await.unwrap();
    assert_eq!(report.mismatches.len(), 1);
    assert_eq!(report.mismatches[0].position, Some(1));

    let without = env.redeploy().build();
    assert!(matches!(
        without.replay_check(&run.id()).await,
        Err(ReplayCheckError::UnknownWorkflow { .. })
    ));
}

#[tokio::test]
async fn a_workflow_that_decides_on_outside_state_fails_its_own_replay_check() {
    const COUNTED: WorkflowRef<(), ()> = WorkflowRef::new("counted");
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let env = TestEngine::builder()
        .workflow(COUNTED, |ctx: Context, _: ()| async move {
            // Wrong: a global differs between the live run and a replay.
            let n = CALLS.fetch_add(1, Ordering::SeqCst);
            ctx.step(&format!("step-{n}"), async |_| Ok::<_, StepError>(()))
                .await?;
            Ok(())
        })
        .build();
    let run = env.start(COUNTED, &()).await.unwrap();
    run.result().await.unwrap();
    let err = run.replay_check().await.unwrap_err();
    assert!(
        matches!(&err, ReplayCheckError::Mismatch(m) if m.position == Some(0)),
        "{err}"
    );
}

#[tokio::test]
async fn history_lists_typed_events_and_renders_a_timeline() {
    let env = TestEngine::builder().workflow(ORDERED, ordered_v1).build();
    let run = env.start(ORDERED, &()).await.unwrap();
    run.result().await.unwrap();
    let history = run.history().await.unwrap();
    assert_eq!(history.step_names(), ["reserve", "charge"]);
    assert_eq!(history.created_at(), TEST_EPOCH);
    assert!(matches!(
        history.end(),
        Some(EventData::RunCompleted { .. })
    ));
    let text = history.to_string();
    assert!(text.contains("wait_completed"), "{text}");
    assert!(text.contains("+86400s"), "{text}");
    let caught =
        std::panic::catch_unwind(|| history.assert_operations(&[Operation::step("reserve")]));
    let message = caught.unwrap_err();
    let message = message.downcast_ref::<String>().unwrap();
    assert!(
        message.contains(
            "expected:\n  0: step \"reserve\"\nfound:\n  0: step \"reserve\"\n  1: sleep 86400s"
        ),
        "{message}"
    );
}

const CONFIRM: WorkflowRef<(), String> = WorkflowRef::new("confirm");

/// Answers the request on its manual webhook after `delay` of sleep.
fn confirm_engine(delay: Duration) -> TestEngine {
    TestEngine::builder()
        .workflow(CONFIRM, move |ctx: Context, _: ()| async move {
            let mut webhook = ctx.create_webhook(
                WebhookOptions::token("confirm:1").manual(Duration::from_secs(10)),
            )?;
            if !delay.is_zero() {
                ctx.sleep(delay).await?;
            }
            let request = webhook.next().await?;
            let body = String::from_utf8_lossy(&request.body).into_owned();
            request.respond(http::Response::new(Bytes::from(format!(
                "thanks for {body}"
            ))));
            Ok(body)
        })
        .build()
}

fn post(body: &'static str) -> http::Request<Bytes> {
    http::Request::post("/").body(Bytes::from(body)).unwrap()
}

#[tokio::test]
async fn a_manual_webhook_answer_reaches_the_test() {
    let env = confirm_engine(Duration::ZERO);
    let run = env.start(CONFIRM, &()).await.unwrap();
    let response = env.resume_webhook("confirm:1", post("yes")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.body(), "thanks for yes");
    assert_eq!(run.result().await.unwrap(), "yes");
    assert_eq!(env.resume_webhook("nope", post("")).await.status(), 404);
}

#[tokio::test]
async fn a_manual_webhook_the_workflow_answers_too_late_is_a_504_after_its_timeout() {
    let env = confirm_engine(HOUR);
    let run = env.start(CONFIRM, &()).await.unwrap();
    let response = env.resume_webhook("confirm:1", post("late")).await;
    assert_eq!(response.status(), 504);
    assert_eq!(env.elapsed(), Duration::from_secs(10));
    // The request was recorded all the same: the workflow takes it after its sleep.
    assert_eq!(run.result().await.unwrap(), "late");
    assert_eq!(env.elapsed(), HOUR);
}

#[tokio::test]
async fn every_activation_can_replay_with_the_cache_off() {
    let env = TestEngine::builder()
        .workflow(LONG_HAUL, long_haul)
        .cache_size(0)
        .build();
    let run = env.start(LONG_HAUL, &()).await.unwrap();
    assert_eq!(run.result().await.unwrap(), "timed out after 3 attempts");
    let m = env.engine().metrics();
    assert_eq!(m.replays, m.activations);
    assert!(m.activations > 3);
}

#[tokio::test]
async fn time_does_not_move_while_a_real_step_runs() {
    const RACE: WorkflowRef<(), String> = WorkflowRef::new("race");
    let env = TestEngine::builder()
        .workflow(RACE, |ctx: Context, _: ()| async move {
            let slow = ctx.step("slow", async |_| {
                tokio::time::sleep(Duration::from_millis(30)).await;
                Ok::<_, StepError>("step".to_string())
            });
            let timer = ctx.sleep(HOUR);
            futures::pin_mut!(slow);
            let winner = futures::select_biased! {
                t = timer.fuse() => { t?; "timer".to_string() }
                s = slow.fuse() => s?,
            };
            Ok(winner)
        })
        .build();
    let run = env.start(RACE, &()).await.unwrap();
    // A run whose step is running is not idle: the hour does not pass.
    assert_eq!(run.result().await.unwrap(), "step");
    assert_eq!(env.elapsed(), Duration::ZERO);
}

#[tokio::test]
async fn wait_for_live_hook_finds_a_random_token_days_later() {
    const LATER: WorkflowRef<(), String> = WorkflowRef::new("later");
    let env = TestEngine::builder()
        .workflow(LATER, |ctx: Context, _: ()| async move {
            ctx.sleep(2 * DAY).await?;
            let mut hook = ctx.create_hook::<String>(HookOptions::default())?;
            Ok(hook.next().await?)
        })
        .build();
    let run = env.start(LATER, &()).await.unwrap();
    let hook = env.wait_for_live_hook(&run.id(), 3 * DAY).await.unwrap();
    assert_eq!(env.elapsed(), 2 * DAY);
    env.resume_hook(hook.token.as_str(), "hi").await.unwrap();
    assert_eq!(run.result().await.unwrap(), "hi");
    let history = run.history().await.unwrap();
    assert_eq!(
        history.operations(),
        [
            Operation::sleep(2 * DAY),
            Operation::hook(hook.token.as_str())
        ]
    );
}
