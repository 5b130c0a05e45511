//! The errors a [`crate::Store`] returns: one variant per failure a caller can act on.

use crate::codec::CodecError;
use crate::event::EventKind;
use crate::id::{CorrelationId, HookToken, RunId};
use crate::record::RunStatus;

/// A failed store operation. Nothing was written when an append or a resume fails.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No run has this id.
    #[error("run {run} does not exist")]
    RunNotFound {
        /// The id asked for.
        run: RunId,
    },
    /// `create_run` with an existing id but a different workflow or input.
    #[error("run {run} already exists with a different workflow or input: choose a new run id")]
    RunConflict {
        /// The id.
        run: RunId,
    },
    /// A stream write that cannot be accepted: its attempt was already
    /// recorded, a chunk is too large, or the numbering does not fit.
    #[error("run {run} cannot take this write to stream {stream}: {reason}")]
    InvalidStreamWrite {
        /// The run.
        run: RunId,
        /// The stream.
        stream: crate::stream::StreamName,
        /// Why not.
        reason: String,
    },
    /// The run has ended; it accepts no more writes.
    #[error("run {run} is {status} and accepts no more events")]
    RunTerminal {
        /// The run.
        run: RunId,
        /// Its final status.
        status: RunStatus,
    },
    /// A second `*_created` for the same correlation id.
    #[error(
        "run {run} already has an operation {correlation}: each correlation id is created once"
    )]
    DuplicateCorrelation {
        /// The run.
        run: RunId,
        /// The repeated id.
        correlation: CorrelationId,
    },
    /// An event for an operation that was never created.
    #[error("run {run} has no operation {correlation}: append its *_created event first")]
    UnknownCorrelation {
        /// The run.
        run: RunId,
        /// The unknown id.
        correlation: CorrelationId,
    },
    /// A step event after the step's terminal event.
    #[error("step {step} of run {run} already completed or failed: a step has one terminal event")]
    StepAlreadyTerminal {
        /// The run.
        run: RunId,
        /// The step.
        step: CorrelationId,
    },
    /// An event that does not fit the state of its run or operation.
    #[error("run {run} cannot record {kind}: {reason}")]
    InvalidEvent {
        /// The run.
        run: RunId,
        /// The event's kind.
        kind: EventKind,
        /// Why not.
        reason: String,
    },
    /// No live hook has this token (never created, disposed, or its run ended).
    #[error("no live hook has token {token}")]
    HookNotFound {
        /// The token asked for.
        token: HookToken,
    },
    /// The lease expired and another holder took the run, or it was released.
    #[error("the lease on run {run} was lost: another engine now drives it")]
    LeaseLost {
        /// The run.
        run: RunId,
    },
    /// A stored record could not be decoded.
    #[error("stored {what} at {key} is corrupt: {source}")]
    Corrupt {
        /// What kind of record (`event`, `run`, …).
        what: &'static str,
        /// Where it is (run id and seq, or key).
        key: String,
        /// The decoding error.
        #[source]
        source: CodecError,
    },
    /// The backend's own storage is damaged, below the level of single records:
    /// its files fail the backend's checks (for `SledStore`: sled found a
    /// checksum mismatch, or sled panicked on what it read). Unlike
    /// [`StoreError::Backend`], retrying does not help; restore the data from
    /// a backup.
    ///
    /// Also what every write of a store returns once it refuses writes after
    /// such a failure (`detail` says so; reopening the store may help, see
    /// the `SledStore` docs).
    #[error("{location} is damaged: {detail}")]
    Damaged {
        /// What is damaged, as precisely as known: the store (its directory or
        /// database), and the file, tree and key where known.
        location: String,
        /// What the backend reported (its error or panic message) and what
        /// the store does about it.
        detail: String,
    },
    /// The store's directory or file is held by another process (or another
    /// open store in this one): embedded stores are opened by one process at a
    /// time. Stop the other one, or talk to it instead.
    #[error(
        "the data directory {} is in use by another process (or another open store): \
         stop that one or use another directory",
        path.display()
    )]
    Locked {
        /// The directory (or database file) asked for.
        path: std::path::PathBuf,
    },
    /// A value could not be encoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The backend failed (I/O, connection, …); the operation may be retried.
    #[error("storage backend failed: {message}")]
    Backend {
        /// What failed.
        message: String,
        /// The backend's error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl StoreError {
    /// A backend failure with its cause.
    pub fn backend(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Backend {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }
}
