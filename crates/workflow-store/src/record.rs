//! Projections: what the store derives from the log and keeps up to date in the
//! same atomic write as each event (runs, hooks, the work queue), plus the
//! values the [`crate::Store`] methods take and return.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::event::{ErrorRecord, Event, Payload, Timestamp, WebhookResponse};
use crate::id::{CorrelationId, HookToken, LeaseId, RunId};

/// Where a run is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunStatus {
    /// Created, not yet started by an engine.
    Pending,
    /// Started; executing or waiting (on a step, timer or hook).
    Running,
    /// Stopped by a nondeterminism error until fixed code runs it again.
    Blocked,
    /// Returned `Ok` (terminal).
    Completed,
    /// Returned `Err` (terminal).
    Failed,
    /// Cancelled (terminal).
    Cancelled,
}

impl RunStatus {
    /// Every status, in a fixed order.
    pub const ALL: [RunStatus; 6] = [
        RunStatus::Pending,
        RunStatus::Running,
        RunStatus::Blocked,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Cancelled,
    ];

    /// Whether the run has ended; an ended run accepts no more writes.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled
        )
    }

    /// The status's name (`running`).
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Running => "running",
            RunStatus::Blocked => "blocked",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    /// The status of a [`RunStatus::code`].
    pub fn from_code(code: u8) -> Option<RunStatus> {
        RunStatus::ALL.into_iter().find(|s| s.code() == code)
    }

    /// A stable one-byte code, for backends that index by status.
    pub fn code(self) -> u8 {
        match self {
            RunStatus::Pending => 0,
            RunStatus::Running => 1,
            RunStatus::Blocked => 2,
            RunStatus::Completed => 3,
            RunStatus::Failed => 4,
            RunStatus::Cancelled => 5,
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A run as the store sees it: the projection of its log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run.
    pub id: RunId,
    /// Registered workflow name.
    pub workflow: String,
    /// Current status.
    pub status: RunStatus,
    /// The error of a failed or blocked run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorRecord>,
    /// Timestamp of `run_created`.
    pub created_at: Timestamp,
    /// Timestamp of the newest event.
    pub updated_at: Timestamp,
    /// The `seq` the next event gets: the number of events in the log.
    pub next_seq: u64,
}

/// A hook of a run, live or released.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookRecord {
    /// The run that created it.
    pub run_id: RunId,
    /// Its correlation id in that run.
    pub hook: CorrelationId,
    /// The token.
    pub token: HookToken,
    /// Data kept with the hook.
    pub metadata: Option<Payload>,
    /// Webhook response mode; `None` for plain hooks.
    pub webhook: Option<WebhookResponse>,
    /// When `hook_created` was appended.
    pub created_at: Timestamp,
    /// Whether the token currently resumes this hook.
    pub live: bool,
}

/// Input of [`crate::Store::create_run`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRun {
    /// The caller-chosen id; creating the same id again with the same
    /// workflow and input is a no-op.
    pub id: RunId,
    /// Registered workflow name.
    pub workflow: String,
    /// The workflow's input.
    pub input: Payload,
}

/// Result of [`crate::Store::create_run`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatedRun {
    /// The run as stored.
    pub run: RunRecord,
    /// `false` when the run already existed with the same workflow and input.
    pub created: bool,
}

/// Result of [`crate::Store::append`]: the events exactly as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The recorded events, with their `seq` and timestamp. A `hook_created`
    /// whose token was taken is recorded (and returned) as `hook_conflict`.
    pub events: Vec<Event>,
    /// The run after the write.
    pub run: RunRecord,
}

/// Result of [`crate::Store::resume_hook`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resumed {
    /// The run that holds the hook.
    pub run_id: RunId,
    /// The hook's correlation id.
    pub hook: CorrelationId,
    /// The `seq` of the recorded `hook_received`.
    pub seq: u64,
}

/// Which runs [`crate::Store::list_runs`] returns, answered from the store's
/// indexes: runs of one status and/or one workflow, in id order (oldest
/// first, or newest first), after a cursor, at most `limit`.
///
/// Run ids are ULIDs, so id order is creation order. To page, pass the last
/// id of one page as the next page's `after`:
///
/// ```
/// use workflow_store::{RunQuery, RunStatus};
///
/// let newest_failed = RunQuery::default()
///     .status(RunStatus::Failed)
///     .workflow("approve_order")
///     .newest_first()
///     .limit(20);
/// assert!(newest_failed.newest_first);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunQuery {
    /// Only runs with this status.
    pub status: Option<RunStatus>,
    /// Only runs of this workflow.
    pub workflow: Option<String>,
    /// Only runs after this id in the listing's order (the last id of the
    /// previous page): greater ids oldest first, smaller ids newest first.
    pub after: Option<RunId>,
    /// List the newest runs first.
    pub newest_first: bool,
    /// Page size.
    pub limit: usize,
}

impl Default for RunQuery {
    fn default() -> Self {
        RunQuery {
            status: None,
            workflow: None,
            after: None,
            newest_first: false,
            limit: 100,
        }
    }
}

impl RunQuery {
    /// Only runs with `status` (`None`: any status).
    pub fn status(mut self, status: impl Into<Option<RunStatus>>) -> Self {
        self.status = status.into();
        self
    }

    /// Only runs of `workflow`.
    pub fn workflow(mut self, workflow: impl Into<String>) -> Self {
        self.workflow = Some(workflow.into());
        self
    }

    /// Only runs after `cursor` in the listing's order (`None`: from the
    /// first).
    pub fn after(mut self, cursor: impl Into<Option<RunId>>) -> Self {
        self.after = cursor.into();
        self
    }

    /// Newest first.
    pub fn newest_first(mut self) -> Self {
        self.newest_first = true;
        self
    }

    /// At most `limit` runs.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Whether `run` is one of the runs this query selects, cursor aside.
    pub fn matches(&self, run: &RunRecord) -> bool {
        self.status.is_none_or(|s| run.status == s)
            && self.workflow.as_deref().is_none_or(|w| run.workflow == w)
    }

    /// Whether `id` lies after the cursor in the listing's order.
    pub fn is_after_cursor(&self, id: RunId) -> bool {
        match self.after {
            None => true,
            Some(c) if self.newest_first => id < c,
            Some(c) => id > c,
        }
    }
}

/// Which runs [`crate::Store::purge_runs`] deletes: ended runs (completed,
/// failed or cancelled) whose last event is older than `ended_before`,
/// optionally of one workflow and one final status.
///
/// Runs that have not ended are never purged, whatever the query says.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PurgeQuery {
    /// Purge runs that ended before this time.
    pub ended_before: Timestamp,
    /// Only runs of this workflow.
    pub workflow: Option<String>,
    /// Only runs with this final status; a status that is not final matches
    /// no run.
    pub status: Option<RunStatus>,
    /// Only runs after this id (id order): the `next` cursor of the previous
    /// call's [`Purged`].
    pub after: Option<RunId>,
    /// At most this many runs are looked at in one call (one write).
    pub limit: usize,
}

impl PurgeQuery {
    /// Runs that ended before `ended_before`, any workflow and final status,
    /// at most 256 looked at per call.
    pub fn ended_before(ended_before: Timestamp) -> Self {
        PurgeQuery {
            ended_before,
            workflow: None,
            status: None,
            after: None,
            limit: 256,
        }
    }

    /// Only runs of `workflow`.
    pub fn workflow(mut self, workflow: impl Into<String>) -> Self {
        self.workflow = Some(workflow.into());
        self
    }

    /// Only runs with this final status.
    pub fn status(mut self, status: RunStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// Continue after `cursor`.
    pub fn after(mut self, cursor: RunId) -> Self {
        self.after = Some(cursor);
        self
    }

    /// Look at most at `limit` runs per call.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Whether `run` is to be purged (cursor aside).
    pub fn matches(&self, run: &RunRecord) -> bool {
        run.status.is_terminal()
            && run.updated_at < self.ended_before
            && self.status.is_none_or(|s| run.status == s)
            && self.workflow.as_deref().is_none_or(|w| run.workflow == w)
    }

    /// The final statuses this query looks at, in code order.
    pub fn statuses(&self) -> Vec<RunStatus> {
        RunStatus::ALL
            .into_iter()
            .filter(|s| s.is_terminal() && self.status.is_none_or(|q| q == *s))
            .collect()
    }
}

/// Result of [`crate::Store::purge_runs`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Purged {
    /// The runs deleted, in id order.
    pub runs: Vec<RunId>,
    /// Where to continue (pass it as [`PurgeQuery::after`]), or `None` when
    /// every matching run up to now has been looked at.
    pub next: Option<RunId>,
}

/// The right to drive one run until `expires_at`: one holder at a time.
///
/// Pass its id to [`crate::Store::append`] to fence writes: once the lease is
/// lost (it expired and another holder took the run), those writes fail with
/// [`crate::StoreError::LeaseLost`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The leased run.
    pub run_id: RunId,
    /// This lease.
    pub id: LeaseId,
    /// When it lapses unless renewed.
    pub expires_at: Timestamp,
    /// The run's wake generation when leased; releasing clears the wake-up
    /// only if no newer one arrived meanwhile.
    pub wake: u64,
    /// `true` when this lease replaced an unreleased lease that had expired:
    /// its holder may have crashed in the middle of its work (a step attempt,
    /// say). Only meaningful on leases returned by
    /// [`crate::Store::lease_due`]; backends store and read back leases with
    /// `false`, and [`crate::Store::renew_lease`] keeps the value of the lease
    /// it is given.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub taken_over: bool,
}

/// A notification that something changed in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// A run got new events; its log now has `next_seq` events.
    Appended {
        /// The run.
        run: RunId,
        /// Length of its log.
        next_seq: u64,
    },
    /// A run's status changed (it started, ended or was blocked), in the
    /// write that changed it; published after that write's `Appended`.
    Status {
        /// The run.
        run: RunId,
        /// Its new status.
        status: RunStatus,
    },
    /// A stream of a run got chunks or was closed, in the write that
    /// recorded the step attempt that wrote them (or ended the run).
    Stream {
        /// The run.
        run: RunId,
        /// The stream.
        stream: crate::stream::StreamName,
        /// Its committed length now.
        len: u64,
        /// Whether it is closed now.
        closed: bool,
    },
    /// A run has work due at `at` (perhaps now).
    Due {
        /// The run.
        run: RunId,
        /// When.
        at: Timestamp,
    },
}

/// The kind of operation a correlation id names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[doc(hidden)]
pub enum OpKind {
    Step,
    Hook,
    Wait,
    /// A child run started by the run (`child_created`).
    Child,
    /// A `patched` marker (`patch_marked`): closed when recorded.
    Patch,
}

/// Per-operation state a backend keeps to check invariants without reading the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[doc(hidden)]
pub struct OpState {
    /// What the operation is.
    pub kind: OpKind,
    /// Step: has its terminal event. Hook: disposed, or never live (conflict).
    /// Wait: completed.
    pub closed: bool,
}

/// The live owner of a token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[doc(hidden)]
pub struct TokenOwner {
    /// The run.
    pub run_id: RunId,
    /// The hook.
    pub hook: CorrelationId,
    /// The webhook's response mode; `None` for plain hooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookResponse>,
}

/// A run's row in the work queue: why it is due and who holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[doc(hidden)]
pub struct QueueEntry {
    /// Bumped by every wake-up (run created, hook received, explicit wake).
    pub wake_gen: u64,
    /// When the pending wake-up became due, if one is pending.
    pub wake_due: Option<Timestamp>,
    /// Armed timers and step retries, by correlation id.
    pub timers: BTreeMap<CorrelationId, Timestamp>,
    /// The current lease, if any.
    pub lease: Option<Lease>,
    /// The run is blocked: `run_blocked` was appended and no `run_started`
    /// since. Its timers are kept but do not make it due; only a wake-up
    /// (an explicit [`crate::Store::wake`], a hook received) or an expired
    /// lease does. Set by appending `run_blocked`, cleared by `run_started`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub parked: bool,
}

impl QueueEntry {
    /// When the run next needs an engine's attention: its lease's expiry while
    /// leased (so a crashed holder's run is taken over); else, while parked,
    /// its pending wake-up only; else its earliest due item (wake-up, timer or
    /// retry).
    pub fn effective_due(&self) -> Option<Timestamp> {
        if let Some(lease) = &self.lease {
            return Some(lease.expires_at);
        }
        if self.parked {
            return self.wake_due;
        }
        let timers = self.timers.values().copied().min();
        match (self.wake_due, timers) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the entry holds nothing and can be deleted: no wake-up, no
    /// timers, no lease, and not parked (a parked entry is kept, so that a
    /// timer armed while the run is blocked does not make it due either).
    pub fn is_empty(&self) -> bool {
        self.wake_due.is_none() && self.timers.is_empty() && self.lease.is_none() && !self.parked
    }
}

/// Converts a duration to whole milliseconds, saturating.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
