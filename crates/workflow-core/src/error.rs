//! Errors: what a workflow sees ([`WorkflowError`]), what a step returns
//! ([`StepError`]), what replay reports ([`NondeterminismError`]) and what the
//! engine's API returns ([`EngineError`]).

use std::fmt;
use std::time::Duration;

use workflow_store::{CodecError, CorrelationId, RunId, RunStatus, StoreError};

/// Why a workflow stopped, or an operation inside it failed.
///
/// A workflow function returns `Result<O, WorkflowError>`; an `Err` records
/// `run_failed` with the error's message. Operations return it too, so a
/// workflow can `?` them or match on a failed step to compensate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WorkflowError {
    /// A step failed for good: a fatal error, or its attempts ran out.
    #[error("step {name:?} ({step}) failed after {attempts} attempt(s): {message}")]
    StepFailed {
        /// The step's correlation id.
        step: CorrelationId,
        /// The step's name.
        name: String,
        /// Attempts made.
        attempts: u32,
        /// The last error's message.
        message: String,
    },
    /// A recorded value did not decode as the type the workflow asked for.
    /// `message` names the field path and what was expected; `source` is the
    /// codec's error (and its own `source()` the CBOR decoder's). Equality
    /// compares `source` by its path and message.
    #[error("recorded {what} does not decode as the expected type: {message}")]
    Decode {
        /// What was being decoded (`step result`, `workflow input`, …).
        what: String,
        /// What did not decode and where, in plain words.
        message: String,
        /// The decoding error, when the value was decoded by the engine.
        #[source]
        source: Option<CodecError>,
    },
    /// A hook yielded an error (a token conflict, an undecodable payload).
    #[error(transparent)]
    Hook(#[from] crate::hook::HookError),
    /// A child run ([`crate::Context::start_child`]) failed or was cancelled.
    #[error("child run {run} of {workflow:?} failed: {message}")]
    ChildFailed {
        /// The child run.
        run: RunId,
        /// Its workflow.
        workflow: String,
        /// The child's error.
        message: String,
    },
    /// The workflow gave up: an error it chose to end the run with.
    #[error("{message}")]
    Fatal {
        /// Why.
        message: String,
    },
}

impl WorkflowError {
    /// Ends the run as failed with `message`.
    ///
    /// ```
    /// use workflow_core::WorkflowError;
    /// let e = WorkflowError::fatal("order rejected");
    /// assert_eq!(e.to_string(), "order rejected");
    /// ```
    pub fn fatal(message: impl fmt::Display) -> Self {
        WorkflowError::Fatal {
            message: message.to_string(),
        }
    }

    pub(crate) fn decode(what: impl Into<String>, e: CodecError) -> Self {
        WorkflowError::Decode {
            what: what.into(),
            message: e.to_string(),
            source: Some(e),
        }
    }
}

/// How a step attempt failed, and whether to try again.
///
/// ```
/// use std::time::Duration;
/// use workflow_core::StepError;
/// let again = StepError::retryable("connection reset");
/// let later = StepError::retry_after("rate limited", Duration::from_secs(30));
/// let never = StepError::fatal("card declined");
/// assert!(again.is_retryable() && later.is_retryable() && !never.is_retryable());
/// ```
///
/// Any [`std::error::Error`] converts into a retryable `StepError` with `?`
/// (its message and its sources, joined with `: `); mark one fatal with
/// [`StepResultExt::fatal`]:
///
/// ```
/// use workflow_core::{StepError, StepResultExt};
/// fn parse(text: &str) -> Result<u32, StepError> {
///     let n: u32 = text.parse()?;                       // retryable if it fails
///     let m: u32 = "x".parse::<u32>().fatal().or(Ok::<_, StepError>(0))?;
///     Ok(n + m)
/// }
/// assert_eq!(parse("41").unwrap(), 41);
/// assert!(parse("no").unwrap_err().is_retryable());
/// ```
///
/// (So that this conversion exists, `StepError` itself is not a
/// `std::error::Error`, as with `anyhow::Error`; it is `Display` and `Debug`.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    pub(crate) message: String,
    pub(crate) kind: StepErrorKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StepErrorKind {
    Retryable,
    RetryAfter(Duration),
    Fatal,
}

impl StepError {
    /// A failure worth retrying, after the step's backoff.
    pub fn retryable(e: impl fmt::Display) -> Self {
        StepError {
            message: e.to_string(),
            kind: StepErrorKind::Retryable,
        }
    }

    /// A failure worth retrying after `delay` (overrides the backoff).
    pub fn retry_after(e: impl fmt::Display, delay: Duration) -> Self {
        StepError {
            message: e.to_string(),
            kind: StepErrorKind::RetryAfter(delay),
        }
    }

    /// A failure that retrying cannot fix; the step fails at once.
    pub fn fatal(e: impl fmt::Display) -> Self {
        StepError {
            message: e.to_string(),
            kind: StepErrorKind::Fatal,
        }
    }

    /// Whether another attempt may be made.
    pub fn is_retryable(&self) -> bool {
        !matches!(self.kind, StepErrorKind::Fatal)
    }

    /// The error's message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error> From<E> for StepError {
    fn from(e: E) -> Self {
        StepError::retryable(error_chain(&e))
    }
}

/// An error's message followed by its sources', joined with `: `.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.ends_with(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// Marks the error of a `Result` as a step failure of a given kind, for `?`
/// inside a step: `charge(card).await.fatal()?`.
pub trait StepResultExt<T> {
    /// A failure retrying cannot fix: the step fails at once.
    fn fatal(self) -> Result<T, StepError>;
    /// A failure worth retrying after `delay` (overrides the backoff).
    fn retry_after(self, delay: Duration) -> Result<T, StepError>;
}

impl<T, E: std::error::Error> StepResultExt<T> for Result<T, E> {
    fn fatal(self) -> Result<T, StepError> {
        self.map_err(|e| StepError::fatal(error_chain(&e)))
    }

    fn retry_after(self, delay: Duration) -> Result<T, StepError> {
        self.map_err(|e| StepError::retry_after(error_chain(&e), delay))
    }
}

/// The workflow code no longer matches the run's recorded history.
///
/// Replay compares each operation the code issues with the one recorded at the
/// same position. The run is marked blocked (`run_blocked`) with this error;
/// deploy code that matches, or cancel the run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("nondeterminism in run {run} at operation {position}: the log records {expected}, the code now issues {found}")]
pub struct NondeterminismError {
    /// The run.
    pub run: RunId,
    /// The operation's index in call order.
    pub position: u64,
    /// What the log records there.
    pub expected: String,
    /// What the code did instead.
    pub found: String,
}

/// An error from the [`crate::Engine`] API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// No workflow is registered under this name.
    #[error("no workflow is registered as {name:?}: register it with EngineBuilder::workflow")]
    UnknownWorkflow {
        /// The name asked for.
        name: String,
    },
    /// The input does not decode as the workflow's input type.
    #[error("input for workflow {workflow:?} does not decode as its input type: {message}")]
    InvalidInput {
        /// The workflow.
        workflow: String,
        /// What did not decode and where (the field path), in plain words.
        message: String,
        /// The decoding error.
        #[source]
        source: CodecError,
    },
    /// No run has this id.
    #[error("run {run} does not exist")]
    RunNotFound {
        /// The run.
        run: RunId,
    },
    /// `start_with_id` with an id that exists with another workflow or input.
    #[error("run {run} already exists with a different workflow or input")]
    RunConflict {
        /// The run.
        run: RunId,
    },
    /// The run ended with an error.
    #[error("run {run} failed: {message}")]
    RunFailed {
        /// The run.
        run: RunId,
        /// The recorded error.
        message: String,
    },
    /// The run is blocked: its history does not match the code (or its
    /// workflow is not registered). Deploy matching code and retry the run
    /// ([`crate::Engine::retry_blocked`]).
    #[error("run {run} is blocked: {message}")]
    RunBlocked {
        /// The run.
        run: RunId,
        /// The recorded reason.
        message: String,
    },
    /// The run was cancelled.
    #[error("run {run} was cancelled")]
    RunCancelled {
        /// The run.
        run: RunId,
    },
    /// [`crate::Engine::run_handle`] of a run of another workflow.
    #[error("run {run} is a run of workflow {found:?}, not of {expected:?}")]
    WrongWorkflow {
        /// The run.
        run: RunId,
        /// The workflow asked for.
        expected: String,
        /// The run's workflow.
        found: String,
    },
    /// [`crate::Engine::retry_blocked`] was asked for a run that is not blocked.
    #[error("run {run} is {status}, not blocked: there is nothing to retry")]
    RunNotBlocked {
        /// The run.
        run: RunId,
        /// Its status.
        status: RunStatus,
    },
    /// The run cannot be changed in its current status.
    #[error("run {run} is {status}")]
    RunEnded {
        /// The run.
        run: RunId,
        /// Its status.
        status: RunStatus,
    },
    /// The run's output does not decode as the requested type.
    #[error("output of run {run} does not decode as the requested type: {message}")]
    OutputDecode {
        /// The run.
        run: RunId,
        /// What did not decode and where (the field path), in plain words.
        message: String,
        /// The decoding error.
        #[source]
        source: CodecError,
    },
    /// A value could not be encoded; the codec's error is also the `source()`.
    #[error("value could not be encoded: {0}")]
    Encode(#[source] CodecError),
    /// A stream name that is not valid ([`workflow_store::StreamName`]).
    #[error(transparent)]
    InvalidStreamName(#[from] workflow_store::IdError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
