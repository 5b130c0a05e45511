//! Step mocks: a step's body replaced, by the step's name, for a test.
//!
//! A [`StepMock`] says what each attempt of a step does: return a value,
//! fail (retryable, after a delay, or fatally), or run the real closure. The
//! test engine keeps its mocks in one [`StepMocks`] that every run's steps
//! consult when an attempt starts; steps without a mock run for real.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use workflow_store::Payload;

use crate::error::StepError;
use crate::step::StepContext;

type MockFn = Arc<dyn Fn(&StepContext) -> Result<Payload, StepError> + Send + Sync>;

/// What one attempt of a mocked step does.
#[derive(Clone)]
enum MockAttempt {
    /// Succeeds with this (encoded) value.
    Return(Payload),
    /// Fails with this error.
    Fail(StepError),
    /// Computes the outcome from the attempt.
    Call(MockFn),
    /// Runs the step's real closure.
    Real,
}

impl fmt::Debug for MockAttempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MockAttempt::Return(p) => f.debug_tuple("Return").field(p).finish(),
            MockAttempt::Fail(e) => f.debug_tuple("Fail").field(e).finish(),
            MockAttempt::Call(_) => f.write_str("Call(..)"),
            MockAttempt::Real => f.write_str("Real"),
        }
    }
}

/// What a mocked step does in a test, attempt by attempt: register it with
/// [`TestEngineBuilder::mock_step`](super::TestEngineBuilder::mock_step) or
/// [`TestEngine::mock_step`](super::TestEngine::mock_step) under the step's
/// name.
///
/// Start from what every attempt does ([`returns`](StepMock::returns),
/// [`fails`](StepMock::fails), [`from_fn`](StepMock::from_fn), or
/// [`real`](StepMock::real) to keep the real body), then override given
/// attempts with [`fail_on`](StepMock::fail_on) and
/// [`return_on`](StepMock::return_on). The outcome is recorded like a real
/// attempt's: retries follow the step's [`StepOptions`](crate::StepOptions).
///
/// ```
/// use std::time::Duration;
/// use workflow_core::testing::StepMock;
/// use workflow_core::StepError;
///
/// // The payment API times out twice, then charges.
/// let charge = StepMock::returns(&"receipt-1")
///     .fail_on(1, StepError::retryable("gateway timeout"))
///     .fail_on(2, StepError::retry_after("rate limited", Duration::from_secs(3600)));
/// // The card is declined: no retry.
/// let declined = StepMock::fails(StepError::fatal("card declined"));
/// ```
#[derive(Clone, Debug)]
pub struct StepMock {
    every: MockAttempt,
    on: BTreeMap<u32, MockAttempt>,
}

impl StepMock {
    /// Every attempt succeeds with `value` (it must decode as the step's
    /// output type; otherwise the attempt fails fatally, saying so).
    pub fn returns<T: Serialize + ?Sized>(value: &T) -> Self {
        StepMock {
            every: encoded(value),
            on: BTreeMap::new(),
        }
    }

    /// Every attempt fails with `error` (retryable, after a delay, or fatal).
    pub fn fails(error: StepError) -> Self {
        StepMock {
            every: MockAttempt::Fail(error),
            on: BTreeMap::new(),
        }
    }

    /// Every attempt runs the step's real closure: a start for
    /// [`fail_on`](StepMock::fail_on), to inject failures into a real step.
    pub fn real() -> Self {
        StepMock {
            every: MockAttempt::Real,
            on: BTreeMap::new(),
        }
    }

    /// Every attempt calls `f` with the attempt's [`StepContext`] (its
    /// number, the run, the idempotency key) for the outcome. A panic in `f`
    /// is a failed, retryable attempt, as in a real step.
    ///
    /// ```
    /// use workflow_core::testing::StepMock;
    /// use workflow_core::StepError;
    /// let mock = StepMock::from_fn(|s| {
    ///     Ok::<_, StepError>(format!("charged with key {}", s.idempotency_key()))
    /// });
    /// ```
    pub fn from_fn<T, F>(f: F) -> Self
    where
        T: Serialize,
        F: Fn(&StepContext) -> Result<T, StepError> + Send + Sync + 'static,
    {
        let f: MockFn = Arc::new(move |ctx| {
            let value = f(ctx)?;
            Payload::encode(&value).map_err(|e| {
                StepError::fatal(format!("the step mock's value could not be encoded: {e}"))
            })
        });
        StepMock {
            every: MockAttempt::Call(f),
            on: BTreeMap::new(),
        }
    }

    /// Attempt `attempt` (counted from 1) fails with `error`.
    pub fn fail_on(mut self, attempt: u32, error: StepError) -> Self {
        self.on.insert(attempt, MockAttempt::Fail(error));
        self
    }

    /// Attempt `attempt` (counted from 1) succeeds with `value`.
    pub fn return_on<T: Serialize + ?Sized>(mut self, attempt: u32, value: &T) -> Self {
        self.on.insert(attempt, encoded(value));
        self
    }

    /// What attempt `attempt` does.
    fn for_attempt(&self, attempt: u32) -> &MockAttempt {
        self.on.get(&attempt).unwrap_or(&self.every)
    }
}

fn encoded<T: Serialize + ?Sized>(value: &T) -> MockAttempt {
    match Payload::encode(value) {
        Ok(p) => MockAttempt::Return(p),
        Err(e) => MockAttempt::Fail(StepError::fatal(format!(
            "the step mock's value could not be encoded: {e}"
        ))),
    }
}

/// A test engine's step mocks by step name, consulted by every step when an
/// attempt starts. Shared by the engine and its runs; changed while they run.
#[derive(Debug, Default)]
pub(crate) struct StepMocks {
    by_name: Mutex<HashMap<String, StepMock>>,
}

impl StepMocks {
    pub(crate) fn set(&self, name: String, mock: StepMock) {
        self.lock().insert(name, mock);
    }

    pub(crate) fn remove(&self, name: &str) {
        self.lock().remove(name);
    }

    /// The outcome of the attempt `ctx` describes, if a mock gives it;
    /// `None`: run the step's real closure.
    pub(crate) fn attempt(&self, ctx: &StepContext) -> Option<Result<Payload, StepError>> {
        // Cloned out, so that no lock is held while a mock's function runs.
        let what = self
            .lock()
            .get(ctx.name())?
            .for_attempt(ctx.attempt())
            .clone();
        let outcome = match what {
            MockAttempt::Real => return None,
            MockAttempt::Return(p) => Ok(p),
            MockAttempt::Fail(e) => Err(e),
            MockAttempt::Call(f) => match catch_unwind(AssertUnwindSafe(|| f(ctx))) {
                Ok(outcome) => outcome,
                Err(panic) => Err(StepError::retryable(format!(
                    "the step mock panicked: {}",
                    panic_message(panic.as_ref())
                ))),
            },
        };
        tracing::debug!(
            step = ctx.name(),
            attempt = ctx.attempt(),
            ok = outcome.is_ok(),
            "mocked step attempt"
        );
        Some(outcome)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, StepMock>> {
        // A mock map is consistent whatever panicked while it was held.
        self.by_name.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic with a non-text payload".into())
}
