//! Steps: the workflow's side effects, run at least once, recorded once.
//!
//! A step is issued by [`crate::Context::step`]. Its closure runs only when the
//! driver grants an attempt (never while replaying recorded history); the
//! attempt's outcome goes to the driver, which appends it, and the workflow
//! sees the result only when that event is delivered back. So the value a
//! workflow sees is always the recorded one, live or on replay.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use workflow_store::{CorrelationId, Payload, RunId};

use crate::error::{StepError, WorkflowError};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::replay::{
    in_step, lock, AttemptOutcome, ContextInStep, SharedState, SlotKind, StepStatus,
};

/// Exponential backoff between attempts: `initial * factor^(attempt-1)`, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay before the second attempt.
    pub initial: Duration,
    /// Growth per attempt.
    pub factor: f64,
    /// Longest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            factor: 2.0,
            max: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The delay after failed attempt `attempt` (counted from 1).
    ///
    /// ```
    /// use std::time::Duration;
    /// use workflow_core::Backoff;
    /// let b = Backoff { initial: Duration::from_secs(1), factor: 2.0, max: Duration::from_secs(5) };
    /// assert_eq!(b.delay(1), Duration::from_secs(1));
    /// assert_eq!(b.delay(3), Duration::from_secs(4));
    /// assert_eq!(b.delay(10), Duration::from_secs(5));
    /// ```
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let secs = self.initial.as_secs_f64() * self.factor.max(1.0).powi(exp);
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(secs.max(0.0))
        }
    }
}

/// How a step is retried and timed out.
///
/// ```
/// use std::time::Duration;
/// use workflow_core::StepOptions;
/// let opts = StepOptions::default().max_attempts(5).timeout(Duration::from_secs(10));
/// assert_eq!(opts.max_attempts, 5);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct StepOptions {
    /// Attempts before the step fails for good (default 3; at least 1).
    pub max_attempts: u32,
    /// Delay between attempts.
    pub backoff: Backoff,
    /// Limit on one attempt; an attempt past it fails as retryable.
    pub timeout: Option<Duration>,
    /// Spread of retry delays, a fraction from 0 to 1 (default 0: none):
    /// each delay is scaled by a factor between `1 - jitter` and `1 + jitter`,
    /// so that many runs failing together do not retry together. The factor
    /// comes from the run, the step and the attempt, so it is the same on
    /// every engine; the retry time is recorded in `step_retrying`, so replay
    /// never draws it again.
    pub jitter: f64,
}

impl Default for StepOptions {
    fn default() -> Self {
        StepOptions {
            max_attempts: 3,
            backoff: Backoff::default(),
            timeout: None,
            jitter: 0.0,
        }
    }
}

impl StepOptions {
    /// Sets the number of attempts (at least 1).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Sets the backoff.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the per-attempt timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Spreads retry delays by up to `fraction` (clamped to 0..=1) either way.
    ///
    /// ```
    /// use workflow_core::StepOptions;
    /// assert_eq!(StepOptions::default().jitter(0.2).jitter, 0.2);
    /// assert_eq!(StepOptions::default().jitter(7.0).jitter, 1.0);
    /// ```
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// The delay before retrying `step` of `run` after failed attempt
    /// `attempt`: the backoff's, spread by the jitter.
    pub(crate) fn retry_delay(&self, run: RunId, step: &CorrelationId, attempt: u32) -> Duration {
        let delay = self.backoff.delay(attempt);
        if self.jitter <= 0.0 {
            return delay;
        }
        // FNV-1a over the run, the step and the attempt: a uniform draw in
        // [0, 1) that every engine computes alike.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let bytes = run
            .as_u128()
            .to_le_bytes()
            .into_iter()
            .chain(step.as_str().bytes())
            .chain(attempt.to_le_bytes());
        for b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        let unit = (h >> 11) as f64 / (1u64 << 53) as f64;
        let factor = 1.0 + self.jitter * (2.0 * unit - 1.0);
        delay.mul_f64(factor.max(0.0))
    }
}

/// What a step's closure is told about the attempt it runs.
#[derive(Debug, Clone)]
pub struct StepContext {
    run_id: RunId,
    step_id: CorrelationId,
    name: String,
    attempt: u32,
    /// Where this attempt's stream chunks go (`None`: no store, e.g. a mock).
    pub(crate) streams: Option<crate::stream::AttemptStreams>,
}

impl StepContext {
    /// The run.
    pub fn run_id(&self) -> RunId {
        self.run_id
    }

    /// The step's correlation id (`step:3`).
    pub fn step_id(&self) -> &CorrelationId {
        &self.step_id
    }

    /// The step's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This attempt's number, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// A key that is the same for every attempt of this step in this run and
    /// differs for every other step: pass it to external APIs so a retried
    /// attempt does not repeat an effect that already happened.
    pub fn idempotency_key(&self) -> String {
        format!("{}:{}", self.run_id, self.step_id)
    }
}

/// One running attempt: the closure's future and its deadline.
struct Attempt<Fut> {
    number: u32,
    fut: Pin<Box<tracing::instrument::Instrumented<Fut>>>,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// The future of one step; resolves to the recorded result.
#[must_use = "a step does nothing unless awaited"]
pub struct Step<T, F, Fut> {
    state: SharedState,
    index: u64,
    run_id: RunId,
    step_id: CorrelationId,
    name: String,
    timeout: Option<Duration>,
    f: F,
    running: Option<Attempt<Fut>>,
    /// A test engine's step mocks (`None` outside `crate::testing`).
    #[cfg(feature = "test-util")]
    mocks: Option<std::sync::Arc<crate::testing::StepMocks>>,
    _out: PhantomData<fn() -> T>,
}

impl<T, F, Fut> Step<T, F, Fut> {
    pub(crate) fn new(
        state: SharedState,
        index: u64,
        run_id: RunId,
        step_id: CorrelationId,
        name: String,
        timeout: Option<Duration>,
        f: F,
    ) -> Self {
        // A test engine's mocks answer attempts instead of the closure.
        #[cfg(feature = "test-util")]
        let mocks = lock(&state).step_mocks.clone();
        Step {
            state,
            index,
            run_id,
            step_id,
            name,
            timeout,
            f,
            running: None,
            #[cfg(feature = "test-util")]
            mocks,
            _out: PhantomData,
        }
    }
}

// The closure and the boxed attempt are never pinned structurally.
impl<T, F, Fut> Unpin for Step<T, F, Fut> {}

impl<T, F, Fut> Future for Step<T, F, Fut>
where
    T: Serialize + DeserializeOwned,
    F: FnMut(StepContext) -> Fut,
    Fut: Future<Output = Result<T, StepError>>,
{
    type Output = Result<T, WorkflowError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let grant = {
            let mut st = lock(&this.state);
            let Some(slot) = st.ops.get_mut(&this.index) else {
                return Poll::Pending;
            };
            let SlotKind::Step(step) = &mut slot.kind else {
                return Poll::Pending;
            };
            match &step.status {
                StepStatus::Completed(payload) => {
                    return Poll::Ready(
                        payload
                            .decode::<T>()
                            .map_err(|e| WorkflowError::decode("step result", e)),
                    );
                }
                StepStatus::Failed(error) => {
                    return Poll::Ready(Err(WorkflowError::StepFailed {
                        step: this.step_id.clone(),
                        name: this.name.clone(),
                        attempts: step.attempts_started,
                        message: error.message.clone(),
                    }));
                }
                StepStatus::Open | StepStatus::Retrying { .. } => {}
            }
            let grant = if step.outcome.is_none() {
                step.grant
            } else {
                None
            };
            step.running = grant.is_some();
            slot.waker = Some(cx.waker().clone());
            grant
        };
        let Some(attempt) = grant else {
            // Not allowed to run (replaying, waiting for a retry, or the
            // outcome is being recorded): an attempt left over is abandoned.
            this.running = None;
            return Poll::Pending;
        };
        let result = match this.poll_attempt(attempt, cx) {
            Poll::Ready(result) => result,
            Poll::Pending => return Poll::Pending,
        };
        this.running = None;
        let result = result.and_then(|value| {
            Payload::encode(&value)
                .map_err(|e| StepError::fatal(format!("step result could not be encoded: {e}")))
        });
        let mut st = lock(&this.state);
        st.finish_counter += 1;
        let finished = st.finish_counter;
        if let Some(slot) = st.ops.get_mut(&this.index) {
            if let SlotKind::Step(step) = &mut slot.kind {
                step.grant = None;
                step.running = false;
                step.outcome = Some(AttemptOutcome {
                    attempt,
                    result,
                    finished,
                });
            }
        }
        // Tell the driver an outcome is ready to be recorded.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<T, F, Fut> Step<T, F, Fut>
where
    T: DeserializeOwned,
    F: FnMut(StepContext) -> Fut,
    Fut: Future<Output = Result<T, StepError>>,
{
    /// Starts attempt `attempt` if it is not the one running, and polls it.
    /// A panic in the closure or its future is a failed (retryable) attempt;
    /// a workflow context used inside it is a fatal one.
    fn poll_attempt(
        &mut self,
        attempt: u32,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Result<T, StepError>> {
        if self.running.as_ref().map(|a| a.number) != Some(attempt) {
            self.running = None;
            let streams = lock(&self.state)
                .stream_sink
                .clone()
                .map(|sink| sink.attempt(self.run_id, self.step_id.clone(), attempt));
            let ctx = StepContext {
                run_id: self.run_id,
                step_id: self.step_id.clone(),
                name: self.name.clone(),
                attempt,
                streams,
            };
            #[cfg(feature = "test-util")]
            if let Some(mocked) = self.mocks.as_ref().and_then(|m| m.attempt(&ctx)) {
                return Poll::Ready(mocked.and_then(|p| {
                    p.decode::<T>().map_err(|e| {
                        StepError::fatal(format!(
                            "the mock of step {:?} gives a value of another type than the step's: {e}",
                            self.name
                        ))
                    })
                }));
            }
            let span = tracing::info_span!(
                "step",
                step = %self.step_id,
                name = %self.name,
                attempt,
            );
            let f = &mut self.f;
            let fut = match catch_unwind(AssertUnwindSafe(|| in_step(|| f(ctx)))) {
                Ok(fut) => fut,
                Err(panic) => return Poll::Ready(Err(panic_error(&self.name, panic))),
            };
            self.running = Some(Attempt {
                number: attempt,
                fut: Box::pin(tracing::Instrument::instrument(fut, span)),
                deadline: self.timeout.map(|d| Box::pin(tokio::time::sleep(d))),
            });
        }
        let Some(running) = self.running.as_mut() else {
            return Poll::Pending;
        };
        let polled = catch_unwind(AssertUnwindSafe(|| {
            in_step(|| running.fut.as_mut().poll(cx))
        }));
        match polled {
            Ok(Poll::Ready(r)) => Poll::Ready(r),
            Err(panic) => Poll::Ready(Err(panic_error(&self.name, panic))),
            Ok(Poll::Pending) => match running.deadline.as_mut().map(|d| d.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(Err(StepError::retryable(format!(
                    "attempt timed out after {} ms",
                    self.timeout.unwrap_or_default().as_millis()
                )))),
                _ => Poll::Pending,
            },
        }
    }
}

/// The failed attempt a panic inside a step makes: retryable with the panic
/// message, or fatal when the panic was a workflow context used in the step.
fn panic_error(name: &str, panic: Box<dyn std::any::Any + Send>) -> StepError {
    if let Some(ContextInStep(message)) = panic.downcast_ref::<ContextInStep>() {
        tracing::error!(step = name, "{message}");
        return StepError::fatal(message);
    }
    let message = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic with a non-text payload".into());
    tracing::warn!(step = name, panic = %message, "step attempt panicked");
    StepError::retryable(format!("the step panicked: {message}"))
}

impl<T, F, Fut> Drop for Step<T, F, Fut> {
    fn drop(&mut self) {
        // The running attempt (if any) is dropped with the step: cancelled.
        let mut st = lock(&self.state);
        if let Some(slot) = st.ops.get_mut(&self.index) {
            if let SlotKind::Step(step) = &mut slot.kind {
                step.running = false;
            }
        }
        st.release_op(self.index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(jitter: f64) -> StepOptions {
        StepOptions::default()
            .backoff(Backoff {
                initial: Duration::from_secs(10),
                factor: 1.0,
                max: Duration::from_secs(10),
            })
            .jitter(jitter)
    }

    #[test]
    fn without_jitter_the_delay_is_the_backoffs() {
        let step = CorrelationId::from_parts("step", 1);
        let d = opts(0.0).retry_delay(RunId::new(), &step, 1);
        assert_eq!(d, Duration::from_secs(10));
    }

    #[test]
    fn jitter_is_bounded_repeatable_and_spread() {
        let run = RunId::new();
        let o = opts(0.5);
        let delays: Vec<Duration> = (0..200)
            .map(|i| o.retry_delay(run, &CorrelationId::from_parts("step", i), 1))
            .collect();
        for d in &delays {
            assert!(
                *d >= Duration::from_secs(5) && *d <= Duration::from_secs(15),
                "{d:?}"
            );
        }
        // The same run, step and attempt give the same delay on any engine.
        let step = CorrelationId::from_parts("step", 7);
        assert_eq!(o.retry_delay(run, &step, 2), o.retry_delay(run, &step, 2));
        // And different steps are spread over the range, not bunched.
        let below = delays
            .iter()
            .filter(|d| **d < Duration::from_secs(10))
            .count();
        assert!(
            (60..=140).contains(&below),
            "{below} of 200 below the middle"
        );
    }
}
