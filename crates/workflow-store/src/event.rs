//! The event log's vocabulary: every kind of event a run records, and the
//! values they carry.
//!
//! Events are facts in the past tense (`step_completed`). The store assigns each
//! one its `seq` and timestamp when it appends; everything else (run status, live
//! hooks, timers, the work queue) is a projection of these events.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::id::{CorrelationId, HookToken, RunId};

/// Milliseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The current system time.
    pub fn now() -> Self {
        Timestamp::from_system_time(SystemTime::now())
    }

    /// A system time as a timestamp (times before 1970 become 0).
    pub fn from_system_time(t: SystemTime) -> Self {
        let ms = t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        Timestamp(u64::try_from(ms).unwrap_or(u64::MAX))
    }

    /// Milliseconds since the Unix epoch.
    pub fn as_millis(self) -> u64 {
        self.0
    }

    /// This time plus `d`, saturating.
    pub fn saturating_add(self, d: Duration) -> Self {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(ms))
    }

    /// How long after `earlier` this time is (zero if it is not later).
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({}ms)", self.0)
    }
}

/// An opaque user value: CBOR bytes written by the engine (a step result, a
/// workflow input, a hook payload). The store never decodes it.
///
/// ```
/// use workflow_store::Payload;
/// let p = Payload::encode(&("hello", 42)).unwrap();
/// let back: (String, u32) = p.decode().unwrap();
/// assert_eq!(back, ("hello".to_string(), 42));
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Payload(pub Bytes);

impl Payload {
    /// Encodes `value` as CBOR.
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Self, crate::CodecError> {
        let mut buf = Vec::with_capacity(64);
        ciborium::into_writer(value, &mut buf)
            .map_err(|e| crate::CodecError::Encode(crate::codec::encode_message(e)))?;
        Ok(Payload(Bytes::from(buf)))
    }

    /// Decodes the CBOR value as `T`; a mismatch is [`crate::CodecError::Decode`],
    /// which names the field path and what was expected.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, crate::CodecError> {
        crate::codec::decode_cbor(&self.0)
    }

    /// The raw CBOR bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the payload has no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for Payload {
    fn from(v: Vec<u8>) -> Self {
        Payload(Bytes::from(v))
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload({} bytes)", self.0.len())
    }
}

/// A recorded failure: what went wrong, in words a person can act on.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ErrorRecord {
    /// The error's message.
    pub message: String,
    /// Optional structured details, CBOR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Payload>,
}

impl ErrorRecord {
    /// An error record with only a message.
    pub fn new(message: impl Into<String>) -> Self {
        ErrorRecord {
            message: message.into(),
            details: None,
        }
    }
}

/// An HTTP response kept in the log: a webhook's static answer, or the one a
/// workflow gave a manual webhook request.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HttpResponseRecord {
    /// Status code.
    pub status: u16,
    /// Header names and values, in order; names are lower case.
    pub headers: Vec<(String, Bytes)>,
    /// The body.
    pub body: Bytes,
}

/// How a webhook answers the HTTP request that resumes it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WebhookResponse {
    /// `202 Accepted`, empty body, as soon as the request is recorded.
    Accepted,
    /// This response, to every request.
    Static(HttpResponseRecord),
    /// The workflow answers each request itself; past `timeout_ms` the caller gets 504.
    Manual {
        /// How long a caller waits for the workflow's answer.
        timeout_ms: u64,
    },
}

/// What a run records: the data of one event, as the caller appends it.
///
/// Variants are named after the event kinds of the design (`step_completed` is
/// [`EventData::StepCompleted`]); those tied to an operation carry its
/// [`CorrelationId`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventData {
    /// The run exists: written by [`crate::Store::create_run`], never appended.
    RunCreated {
        /// Registered name of the workflow function.
        workflow: String,
        /// The workflow's input.
        input: Payload,
        /// For a child run: the run that started it (absent in logs written
        /// before child runs existed, and for runs started from outside).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<ParentRun>,
    },
    /// An engine began executing the run.
    RunStarted,
    /// The workflow returned `Ok`.
    RunCompleted {
        /// The workflow's output.
        output: Payload,
    },
    /// The workflow returned `Err`.
    RunFailed {
        /// Why.
        error: ErrorRecord,
    },
    /// The run was cancelled from outside.
    RunCancelled,
    /// Replay found the code no longer matches the log; the run waits for a fix.
    /// Not terminal: a later `run_started` makes it running again.
    RunBlocked {
        /// The nondeterminism report.
        error: ErrorRecord,
    },
    /// A step was issued.
    StepCreated {
        /// The step's correlation id.
        step: CorrelationId,
        /// The step's name as the workflow gave it.
        name: String,
        /// Optional digest of the step's input, to detect changed calls on replay.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input_digest: Option<Bytes>,
    },
    /// An attempt of a step began.
    StepStarted {
        /// The step.
        step: CorrelationId,
        /// Attempt number, from 1.
        attempt: u32,
    },
    /// A step succeeded (terminal for the step).
    StepCompleted {
        /// The step.
        step: CorrelationId,
        /// Its result.
        result: Payload,
    },
    /// A step attempt failed and will be tried again at `retry_at`.
    StepRetrying {
        /// The step.
        step: CorrelationId,
        /// The attempt's error.
        error: ErrorRecord,
        /// When the next attempt is due; the store makes the run due then.
        retry_at: Timestamp,
    },
    /// A step failed for good (terminal for the step).
    StepFailed {
        /// The step.
        step: CorrelationId,
        /// The last error.
        error: ErrorRecord,
    },
    /// A hook was created and its token is live.
    HookCreated {
        /// The hook's correlation id.
        hook: CorrelationId,
        /// The token that resumes it.
        token: HookToken,
        /// Data kept with the hook.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metadata: Option<Payload>,
        /// For webhooks: how requests are answered. `None` for plain hooks.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        webhook: Option<WebhookResponse>,
    },
    /// A payload reached the hook (for webhooks: the HTTP request).
    HookReceived {
        /// The hook.
        hook: CorrelationId,
        /// The payload.
        payload: Payload,
    },
    /// The workflow answered a manual webhook request.
    HookResponded {
        /// The hook.
        hook: CorrelationId,
        /// The request being answered.
        request_id: String,
        /// The answer.
        response: HttpResponseRecord,
    },
    /// The hook was disposed; its token is free again.
    HookDisposed {
        /// The hook.
        hook: CorrelationId,
    },
    /// The hook's token was live in another hook, so this one was not created.
    /// The store writes this in place of a conflicting `hook_created`.
    HookConflict {
        /// The hook that could not be created.
        hook: CorrelationId,
        /// The contested token.
        token: HookToken,
        /// The run that holds the token.
        holder: RunId,
    },
    /// A durable timer was armed; the store makes the run due at `resume_at`.
    WaitCreated {
        /// The timer's correlation id.
        wait: CorrelationId,
        /// When it fires.
        resume_at: Timestamp,
    },
    /// A timer fired.
    WaitCompleted {
        /// The timer.
        wait: CorrelationId,
    },
    /// The run started a child run. The store creates the child run (its
    /// `run_created` names this run as its parent) in the same write, so a
    /// child exists exactly when its creation is recorded.
    ChildCreated {
        /// The child operation's correlation id in this run.
        child: CorrelationId,
        /// The child run's id (derived from this run's id and the operation).
        run: RunId,
        /// The child's workflow.
        workflow: String,
        /// The child's input.
        input: Payload,
        /// Whether the child outlives this run: a detached child is not
        /// cancelled when this run ends or is cancelled.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        detached: bool,
    },
    /// A child run completed. Appended by the store in the write that records
    /// the child's `run_completed`.
    ChildCompleted {
        /// The child operation.
        child: CorrelationId,
        /// The child run.
        run: RunId,
        /// The child's output.
        output: Payload,
    },
    /// A child run failed or was cancelled. Appended by the store in the write
    /// that records the child's `run_failed` or `run_cancelled`.
    ChildFailed {
        /// The child operation.
        child: CorrelationId,
        /// The child run.
        run: RunId,
        /// Why.
        error: ErrorRecord,
    },
    /// The run reached `Context::patched(patch)` under code that has the
    /// patch: from here on it runs the patched code.
    PatchMarked {
        /// The marker's correlation id (its place in the operation order).
        marker: CorrelationId,
        /// The patch's id as the code names it.
        patch: String,
    },
}

/// The run that started a child run, kept in the child's `run_created`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ParentRun {
    /// The parent run.
    pub run: RunId,
    /// The child operation in the parent's log.
    pub child: CorrelationId,
    /// Whether the child is detached (not cancelled with its parent).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub detached: bool,
}

/// The kind of an event, without its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
#[allow(missing_docs)]
pub enum EventKind {
    RunCreated,
    RunStarted,
    RunCompleted,
    RunFailed,
    RunCancelled,
    RunBlocked,
    StepCreated,
    StepStarted,
    StepCompleted,
    StepRetrying,
    StepFailed,
    HookCreated,
    HookReceived,
    HookResponded,
    HookDisposed,
    HookConflict,
    WaitCreated,
    WaitCompleted,
    ChildCreated,
    ChildCompleted,
    ChildFailed,
    PatchMarked,
}

impl EventKind {
    /// The kind's name as written in the design and in logs (`step_completed`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::RunCreated => "run_created",
            EventKind::RunStarted => "run_started",
            EventKind::RunCompleted => "run_completed",
            EventKind::RunFailed => "run_failed",
            EventKind::RunCancelled => "run_cancelled",
            EventKind::RunBlocked => "run_blocked",
            EventKind::StepCreated => "step_created",
            EventKind::StepStarted => "step_started",
            EventKind::StepCompleted => "step_completed",
            EventKind::StepRetrying => "step_retrying",
            EventKind::StepFailed => "step_failed",
            EventKind::HookCreated => "hook_created",
            EventKind::HookReceived => "hook_received",
            EventKind::HookResponded => "hook_responded",
            EventKind::HookDisposed => "hook_disposed",
            EventKind::HookConflict => "hook_conflict",
            EventKind::WaitCreated => "wait_created",
            EventKind::WaitCompleted => "wait_completed",
            EventKind::ChildCreated => "child_created",
            EventKind::ChildCompleted => "child_completed",
            EventKind::ChildFailed => "child_failed",
            EventKind::PatchMarked => "patch_marked",
        }
    }

    /// Whether this kind ends a run.
    pub fn is_run_terminal(self) -> bool {
        matches!(
            self,
            EventKind::RunCompleted | EventKind::RunFailed | EventKind::RunCancelled
        )
    }

    /// Whether this kind opens an operation (`*_created`, or `hook_conflict`
    /// which stands in for a `hook_created`).
    pub fn is_creation(self) -> bool {
        matches!(
            self,
            EventKind::StepCreated
                | EventKind::HookCreated
                | EventKind::HookConflict
                | EventKind::WaitCreated
                | EventKind::ChildCreated
                | EventKind::PatchMarked
        )
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl EventData {
    /// This event's kind.
    pub fn kind(&self) -> EventKind {
        match self {
            EventData::RunCreated { .. } => EventKind::RunCreated,
            EventData::RunStarted => EventKind::RunStarted,
            EventData::RunCompleted { .. } => EventKind::RunCompleted,
            EventData::RunFailed { .. } => EventKind::RunFailed,
            EventData::RunCancelled => EventKind::RunCancelled,
            EventData::RunBlocked { .. } => EventKind::RunBlocked,
            EventData::StepCreated { .. } => EventKind::StepCreated,
            EventData::StepStarted { .. } => EventKind::StepStarted,
            EventData::StepCompleted { .. } => EventKind::StepCompleted,
            EventData::StepRetrying { .. } => EventKind::StepRetrying,
            EventData::StepFailed { .. } => EventKind::StepFailed,
            EventData::HookCreated { .. } => EventKind::HookCreated,
            EventData::HookReceived { .. } => EventKind::HookReceived,
            EventData::HookResponded { .. } => EventKind::HookResponded,
            EventData::HookDisposed { .. } => EventKind::HookDisposed,
            EventData::HookConflict { .. } => EventKind::HookConflict,
            EventData::WaitCreated { .. } => EventKind::WaitCreated,
            EventData::WaitCompleted { .. } => EventKind::WaitCompleted,
            EventData::ChildCreated { .. } => EventKind::ChildCreated,
            EventData::ChildCompleted { .. } => EventKind::ChildCompleted,
            EventData::ChildFailed { .. } => EventKind::ChildFailed,
            EventData::PatchMarked { .. } => EventKind::PatchMarked,
        }
    }

    /// The operation this event belongs to, if any.
    pub fn correlation_id(&self) -> Option<&CorrelationId> {
        match self {
            EventData::StepCreated { step, .. }
            | EventData::StepStarted { step, .. }
            | EventData::StepCompleted { step, .. }
            | EventData::StepRetrying { step, .. }
            | EventData::StepFailed { step, .. } => Some(step),
            EventData::HookCreated { hook, .. }
            | EventData::HookReceived { hook, .. }
            | EventData::HookResponded { hook, .. }
            | EventData::HookDisposed { hook }
            | EventData::HookConflict { hook, .. } => Some(hook),
            EventData::WaitCreated { wait, .. } | EventData::WaitCompleted { wait } => Some(wait),
            EventData::ChildCreated { child, .. }
            | EventData::ChildCompleted { child, .. }
            | EventData::ChildFailed { child, .. } => Some(child),
            EventData::PatchMarked { marker, .. } => Some(marker),
            EventData::RunCreated { .. }
            | EventData::RunStarted
            | EventData::RunCompleted { .. }
            | EventData::RunFailed { .. }
            | EventData::RunCancelled
            | EventData::RunBlocked { .. } => None,
        }
    }
}

/// One recorded event: its data with the `seq` and timestamp the store gave it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the run's log: 0, 1, 2, … without gaps.
    pub seq: u64,
    /// When the store appended it.
    pub at: Timestamp,
    /// What happened.
    pub data: EventData,
}

impl Event {
    /// The event's kind.
    pub fn kind(&self) -> EventKind {
        self.data.kind()
    }
}
