//! The store's rules, written once for every backend (public as
//! [`crate::backend`]).
//!
//! A write operation (create a run, append, resume a hook, lease, …) reads the
//! current projections through a [`ReadView`], checks the invariants, and stages
//! everything it would change in a [`Changes`] set. The backend commits that set
//! atomically (a sled transaction, a mutex, an SQL transaction), and only then
//! publishes the staged notifications. Nothing is staged for a failed operation,
//! so a rejected append leaves no trace: atomicity is the backend's commit.
//!
//! Backends therefore implement reads by key and an all-or-nothing commit; they
//! never re-implement the invariants. (Backends with their own query language
//! may still do so, and the conformance suite keeps them honest.)

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::StoreError;
use crate::event::{
    ErrorRecord, Event, EventData, EventKind, ParentRun, Payload, Timestamp, WebhookResponse,
};
use crate::id::{CorrelationId, HookToken, LeaseId, RunId};
use crate::record::{
    millis, Appended, Change, CreatedRun, HookRecord, Lease, NewRun, OpKind, OpState, PurgeQuery,
    QueueEntry, Resumed, RunRecord, RunStatus, TokenOwner,
};
use crate::stream::{
    ChunkKey, ChunkWriter, RunStreams, Segment, StreamName, StreamWrite, MAX_CHUNK_BYTES,
};

/// Reads by key, as of the start of the write (inside the backend's transaction).
pub trait ReadView {
    /// A run's record.
    fn run(&mut self, id: RunId) -> Result<Option<RunRecord>, StoreError>;
    /// One event of a run.
    fn event(&mut self, run: RunId, seq: u64) -> Result<Option<Event>, StoreError>;
    /// The state of an operation.
    fn op(&mut self, run: RunId, id: &CorrelationId) -> Result<Option<OpState>, StoreError>;
    /// The live owner of a token.
    fn token(&mut self, token: &HookToken) -> Result<Option<TokenOwner>, StoreError>;
    /// All hooks of a run, in creation order.
    fn run_hooks(&mut self, run: RunId) -> Result<Vec<HookRecord>, StoreError>;
    /// A run's queue entry.
    fn queue(&mut self, run: RunId) -> Result<Option<QueueEntry>, StoreError>;
    /// A run's streams record (`None`: it never wrote to a stream).
    fn streams(&mut self, run: RunId) -> Result<Option<RunStreams>, StoreError>;
}

/// Everything one write operation changes, to be committed atomically.
#[derive(Debug, Default)]
pub struct Changes {
    /// Run records to write, with the status each had before (`None`: new run),
    /// so a backend can maintain a status index.
    pub runs: BTreeMap<RunId, (Option<RunStatus>, RunRecord)>,
    /// Events to insert, in order.
    pub events: Vec<(RunId, Event)>,
    /// Operation states to write.
    pub ops: BTreeMap<(RunId, CorrelationId), OpState>,
    /// Token index changes: `Some` sets the owner, `None` deletes the token.
    pub tokens: BTreeMap<HookToken, Option<TokenOwner>>,
    /// Full replacement of a run's hook list.
    pub run_hooks: BTreeMap<RunId, Vec<HookRecord>>,
    /// Queue changes: the entry's effective due time before (to remove its
    /// index key), and the new entry (`None` deletes it).
    pub queue: BTreeMap<RunId, (Option<Timestamp>, Option<QueueEntry>)>,
    /// Runs to delete with everything they own ([`purge`]): the run record
    /// and its status and workflow index rows, events `0..next_seq`, the
    /// listed operations, the hook list. Their tokens and queue entries are
    /// deleted through `tokens` and `queue` above.
    pub purged: BTreeMap<RunId, PurgedRun>,
    /// Full replacement of a run's streams record.
    pub streams: BTreeMap<RunId, RunStreams>,
    /// Stream chunk rows to write (`Some`) or delete (`None`).
    pub chunks: Vec<(RunId, ChunkKey, Option<Payload>)>,
    /// Notifications to publish after the commit.
    pub notify: Vec<Change>,
}

/// A run [`purge`] deletes, with what a backend needs to find its rows.
#[derive(Debug, Clone)]
pub struct PurgedRun {
    /// The run's record as it was (its status, workflow and `next_seq` name
    /// its index rows and events).
    pub record: RunRecord,
    /// The correlation ids of its operations.
    pub ops: Vec<CorrelationId>,
    /// Its streams record, if it has one: the record and every chunk row it
    /// names ([`RunStreams::chunk_keys`]) are deleted.
    pub streams: Option<RunStreams>,
}

impl Changes {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
            && self.events.is_empty()
            && self.ops.is_empty()
            && self.tokens.is_empty()
            && self.run_hooks.is_empty()
            && self.queue.is_empty()
            && self.purged.is_empty()
            && self.streams.is_empty()
            && self.chunks.is_empty()
    }
}

/// A [`ReadView`] overlaid with the changes staged so far.
pub struct Staged<'a, R: ReadView + ?Sized> {
    view: &'a mut R,
    changes: Changes,
    now: Timestamp,
    /// The attempt of each step's latest `step_started` in this write.
    started: BTreeMap<(RunId, CorrelationId), u32>,
}

impl<'a, R: ReadView + ?Sized> Staged<'a, R> {
    /// Starts a write at time `now`.
    pub fn new(view: &'a mut R, now: Timestamp) -> Self {
        Staged {
            view,
            changes: Changes::default(),
            now,
            started: BTreeMap::new(),
        }
    }

    /// The staged changes.
    pub fn into_changes(self) -> Changes {
        self.changes
    }

    fn run(&mut self, id: RunId) -> Result<Option<RunRecord>, StoreError> {
        if self.changes.purged.contains_key(&id) {
            return Ok(None);
        }
        if let Some((_, rec)) = self.changes.runs.get(&id) {
            return Ok(Some(rec.clone()));
        }
        self.view.run(id)
    }

    fn put_run(&mut self, before: Option<RunStatus>, rec: RunRecord) {
        let before = match self.changes.runs.get(&rec.id) {
            Some((b, _)) => *b,
            None => before,
        };
        self.changes.runs.insert(rec.id, (before, rec));
    }

    fn op(&mut self, run: RunId, id: &CorrelationId) -> Result<Option<OpState>, StoreError> {
        if let Some(s) = self.changes.ops.get(&(run, id.clone())) {
            return Ok(Some(*s));
        }
        self.view.op(run, id)
    }

    fn token(&mut self, token: &HookToken) -> Result<Option<TokenOwner>, StoreError> {
        if let Some(owner) = self.changes.tokens.get(token) {
            return Ok(owner.clone());
        }
        self.view.token(token)
    }

    fn run_hooks(&mut self, run: RunId) -> Result<Vec<HookRecord>, StoreError> {
        if let Some(hooks) = self.changes.run_hooks.get(&run) {
            return Ok(hooks.clone());
        }
        self.view.run_hooks(run)
    }

    fn streams(&mut self, run: RunId) -> Result<Option<RunStreams>, StoreError> {
        if let Some(s) = self.changes.streams.get(&run) {
            return Ok(Some(s.clone()));
        }
        self.view.streams(run)
    }

    fn queue(&mut self, run: RunId) -> Result<Option<QueueEntry>, StoreError> {
        if let Some((_, entry)) = self.changes.queue.get(&run) {
            return Ok(entry.clone());
        }
        self.view.queue(run)
    }

    /// Stages a queue entry (deleting it when empty) and a `Due` notification
    /// when the run's due time moves.
    fn put_queue(&mut self, run: RunId, entry: QueueEntry) -> Result<(), StoreError> {
        let before = self.queue_due_before(run)?;
        let due = entry.effective_due();
        if due != before {
            if let Some(at) = due {
                self.changes.notify.push(Change::Due { run, at });
            }
        }
        let entry = if entry.is_empty() { None } else { Some(entry) };
        self.changes.queue.insert(run, (before, entry));
        Ok(())
    }

    fn delete_queue(&mut self, run: RunId) -> Result<(), StoreError> {
        if self.queue(run)?.is_some() {
            let before = self.queue_due_before(run)?;
            self.changes.queue.insert(run, (before, None));
        }
        Ok(())
    }

    /// The effective due time the backend has indexed for `run`, before this write.
    fn queue_due_before(&mut self, run: RunId) -> Result<Option<Timestamp>, StoreError> {
        match self.changes.queue.get(&run) {
            Some((before, _)) => Ok(*before),
            None => Ok(self.view.queue(run)?.and_then(|e| e.effective_due())),
        }
    }

    fn wake_now(&mut self, run: RunId) -> Result<(), StoreError> {
        let mut entry = self.queue(run)?.unwrap_or_default();
        entry.wake_gen += 1;
        let now = self.now;
        entry.wake_due = Some(entry.wake_due.map_or(now, |d| d.min(now)));
        self.put_queue(run, entry)
    }
}

fn live_run(
    st: &mut Staged<'_, impl ReadView + ?Sized>,
    id: RunId,
) -> Result<RunRecord, StoreError> {
    let run = st.run(id)?.ok_or(StoreError::RunNotFound { run: id })?;
    if run.status.is_terminal() {
        return Err(StoreError::RunTerminal {
            run: id,
            status: run.status,
        });
    }
    Ok(run)
}

/// Creates a run, or finds the identical one (see [`crate::Store::create_run`]).
pub fn create_run(
    st: &mut Staged<'_, impl ReadView + ?Sized>,
    new: &NewRun,
) -> Result<CreatedRun, StoreError> {
    create_run_with_parent(st, new, None)
}

/// Creates a run (a child run when `parent` is given), or finds the
/// identical one: same workflow, input and parent.
fn create_run_with_parent(
    st: &mut Staged<'_, impl ReadView + ?Sized>,
    new: &NewRun,
    parent: Option<ParentRun>,
) -> Result<CreatedRun, StoreError> {
    if let Some(existing) = st.run(new.id)? {
        let first = st.view.event(new.id, 0)?;
        let same = matches!(
            first.map(|e| e.data),
            Some(EventData::RunCreated { workflow, input, parent: p })
                if workflow == new.workflow && input == new.input && p == parent
        );
        return if same {
            Ok(CreatedRun {
                run: existing,
                created: false,
            })
        } else {
            Err(StoreError::RunConflict { run: new.id })
        };
    }
    let now = st.now;
    let rec = RunRecord {
        id: new.id,
        workflow: new.workflow.clone(),
        status: RunStatus::Pending,
        error: None,
        created_at: now,
        updated_at: now,
        next_seq: 1,
    };
    st.changes.events.push((
        new.id,
        Event {
            seq: 0,
            at: now,
            data: EventData::RunCreated {
                workflow: new.workflow.clone(),
                input: new.input.clone(),
                parent,
            },
        },
    ));
    st.put_run(None, rec.clone());
    st.changes.notify.push(Change::Appended {
        run: new.id,
        next_seq: 1,
    });
    st.wake_now(new.id)?;
    Ok(CreatedRun {
        run: rec,
        created: true,
    })
}

/// Creates a run and, if it is new, leases it in the same write (see
/// [`crate::Store::create_run_leased`]).
pub fn create_run_leased(
    st: &mut Staged<'_, impl ReadView + ?Sized>,
    new: &NewRun,
    ttl: Duration,
) -> Result<(CreatedRun, Option<Lease>), StoreError> {
    let created = create_run(st, new)?;
    if !created.created {
        return Ok((created, None));
    }
    let lease = try_lease(st, new.id, ttl)?;
    if lease.is_some() {
        // Held from the start: nobody else is to pick it up now. (The due
        // time of the lease's expiry is announced as usual.)
        let now = st.now;
        st.changes
            .notify
            .retain(|c| !matches!(c, Change::Due { run, at } if *run == new.id && *at == now));
    }
    Ok((created, lease))
}

/// Appends events with their projections (see [`crate::Store::append`]).
pub fn append(
    st: &mut Staged<'_, impl ReadView + ?Sized>,
    run_id: RunId,
    events: Vec<EventData>,
    fence: Option<LeaseId>,
) -> Result<Appended, StoreError> {
    let mut run = live_run(st, run_id)?;
    let before = run.status;
    if let Some(fence) = fence {
        let holds = st
            .queue(run_id)?
            .and_then(|e| e.lease)
            .is_some_and(|l| l.id == fence);
        if !holds {
            return Err(StoreError::LeaseLost { run: run_id });
        }
    }
    // Timestamps never go backwards within a run, whatever the clock does.
    let at = st.now.max(run.updated_at);
    let mut recorded = Vec::with_capacity(events.len());
    for data in events {
        if run.status.is_terminal() {
            return Err(StoreError::RunTerminal {
                run: run_id,
                status: run.status,
            });
        }
        let data = apply_event(st, &mut run, data, at)?;
        recorded.push(Event {
            seq: run.next_seq,
            at,
            data,
        });
        run.next_seq += 1;
    }
    if recorded.is_empty() {
        return Ok(Appended {
            events: recorded,
            run,
        });
    }
    run.updated_at = at;
    for e in &recorded {
        st.changes.events.push((run_id, e.clone()));
    }
    st.changes.notify.push(Change::Appended {
        run: run_id,
        next_seq: run.next_seq,
    });
    if run.status != before {
        st.changes.notify.push(Change::Status {
            run: run_id,
            status: run.status,
        });
    }
    st.put_run(Some(before), run.clone());
    Ok(Appended {
        events: recorded,
        run,
    })
}

fn invalid(run: RunId, kind: EventKind, reason: impl Into<String>) -> StoreError {
    StoreError::InvalidEvent {
        run,
        kind,
        reason: reason.into(),
    }
}

/// Checks one event against the run's state and stages its projections;
/// returns the event as it is to be recorded.
fn apply_event(
    st: &mut Staged<'_, impl ReadView + ?Sized>,
    run: &mut RunRecord,
    data: EventData,
    at: Timestamp,
) -> Result<EventData, StoreError> {
    let run_id = run.id;
    let kind = data.kind();
    match &data {
        EventData::RunCreated { .. } => {
            return Err(invalid(
                run_id,
                kind,
                "run_created is written by create_run, never appended",
            ))
        }
        EventData::RunStarted => {
            run.status = RunStatus::Running;
            run.error = None;
            // The run runs again: its timers count again.
            if let Some(mut entry) = st.queue(run_id)? {
                if entry.parked {
                    entry.parked = false;
                    st.put_queue(run_id, entry)?;
                }
            }
        }
        EventData::RunBlocked { error } => {
            run.status = RunStatus::Blocked;
            run.error = Some(error.clone());
            // Park it: until `run_started`, only a wake-up makes it due, so
            // a timer that comes due does not hand it back to an engine that
            // would only find it blocked again.
            let mut entry = st.queue(run_id)?.unwrap_or_default();
            if !entry.parked {
                entry.parked = true;
                st.put_queue(run_id, entry)?;
            }
        }
        EventData::RunCompleted { .. } | EventData::RunFailed { .. } | EventData::RunCancelled => {
            run.status = match &data {
                EventData::RunCompleted { .. } => RunStatus::Completed,
                EventData::RunFailed { .. } => RunStatus::Failed,
                _ => RunStatus::Cancelled,
            };
            run.error = match &data {
                EventData::RunFailed { error } => Some(error.clone()),
                _ => None,
            };
            release_hooks(st, run_id)?;
            close_streams(st, run_id)?;
            st.delete_queue(run_id)?;
            notify_parent(st, run_id, &data)?;
        }
        _ => return apply_op_event(st, run_id, data, at),
    }
    Ok(data)
}

/// Tells a child run's parent that the child ended: appends
/// `child_completed` or `child_failed` to the parent in the same write as the
/// child's terminal event, so the parent learns of it exactly once, whatever
/// crashes. Nothing is appended when the run has no parent, the parent has
/// ended, or the parent's child operation is already closed.
fn notify_parent(
    st: &mut Staged<'_, impl ReadView + ?Sized>,
    run_id: RunId,
    end: &EventData,
) -> Result<(), StoreError> {
    let Some(Event {
        data: EventData::RunCreated {
            parent: Some(parent),
            ..
        },
        ..
    }) = st.view.event(run_id, 0)?
    else {
        return Ok(());
    };
    let live = st.run(parent.run)?.is_some_and(|r| !r.status.is_terminal());
    let open = st
        .op(parent.run, &parent.child)?
        .is_some_and(|s| s.kind == OpKind::Child && !s.closed);
    if !live || !open {
        return Ok(());
    }
    let child = parent.child;
    let event = match end {
        EventData::RunCompleted { output } => EventData::ChildCompleted {
            child,
            run: run_id,
            output: output.clone(),
        },
        EventData::RunFailed { error } => EventData::ChildFailed {
            child,
            run: run_id,
            error: error.clone(),
        },
        _ => EventData::ChildFailed {
            child,
            run: run_id,
            error: ErrorRecord::new(format!("child run {run_id} was cancelled")),
        },
    };
    append(st, parent.run, vec![event], None)?;
    Ok(())
}

/// Releases every live hook of a run that has ended.
fn release_hooks(
    st: &mut Staged<'_, impl ReadView + ?Sized>,
    run_id: RunId,
) -> Result<(), StoreError> {
    let mut hooks = st.run_hooks(run_id)?;
    if hooks.iter().all(|h| !h.live) {
        return Ok(());
    }
    for h in hooks.iter_mut().filter(|h| h.live) {
        h.live = false;
        st.changes.tokens.insert(h.token.clone(), None);
    }
    st.changes.run_hooks.insert(run_id, hooks);
    Ok(())
}

fn expect_op(
    st: &mut Staged<'_, impl ReadView + ?Sized>,
    run_id: RunId,
    id: &CorrelationId,
    kind: EventKind,
    want: OpKind,
) -> Result<OpState, StoreError> {
    let state = st
        .op(run_id, id)?
        .ok_or_else(|| StoreError::UnknownCorrelation {
            run: run_id,
            correlation: id.clone(),
        })?;
    if state.kind != want {
        return Err(invalid(
            run_id,
            kind,
            format!("{id} is a {:?} operation, not a {want:?}", state.kind),
        ));
    }
    Ok(state)
}

fn apply_op_event(
    st: &mut Staged<'_, impl ReadView + ?Sized>,
    run_id: RunId,
    data: EventData,
    at: Timestamp,
) -> Result<EventData, StoreError> {
    let kind = data.kind();
    let Some(id) = data.correlation_id().cloned() else {
        return Err(invalid(run_id, kind, "event has no correlation id"));
    };
    if kind.is_creation() && st.op(run_id, &id)?.is_some() {
        return Err(StoreError::DuplicateCorrelation {
            run: run_id,
            correlation: id,
        });
    }
    let key = (run_id, id.clone());
    match data {
        EventData::StepCreated { .. } => {
            st.changes.ops.insert(
                key,
                OpState {
                    kind: OpKind::Step,
                    closed: false,
                },
            );
        }
        EventData::StepStarted { .. }
        | EventData::StepCompleted { .. }
        | EventData::StepFailed { .. }
        | EventData::StepRetrying { .. } => {
            let state = expect_op(st, run_id, &id, kind, OpKind::Step)?;
            if state.closed {
                return Err(StoreError::StepAlreadyTerminal {
                    run: run_id,
                    step: id,
                });
            }
            match &data {
                EventData::StepStarted { attempt, .. } => {
                    st.started.insert((run_id, id.clone()), *attempt);
                }
                EventData::StepCompleted { .. } => settle_attempt(st, run_id, &id, true)?,
                // `step_retrying`, `step_failed`: only successful attempts are seen.
                _ => settle_attempt(st, run_id, &id, false)?,
            }
            let mut entry = st.queue(run_id)?;
            let had_timer = entry.as_ref().is_some_and(|e| e.timers.contains_key(&id));
            if let EventData::StepRetrying { retry_at, .. } = &data {
                let mut e = entry.take().unwrap_or_default();
                e.timers.insert(id.clone(), *retry_at);
                st.put_queue(run_id, e)?;
            } else if had_timer {
                if let Some(mut e) = entry.take() {
                    e.timers.remove(&id);
                    st.put_queue(run_id, e)?;
                }
            }
            if matches!(
                data,
                EventData::StepCompleted { .. } | EventData::StepFailed { .. }
            ) {
                st.changes.ops.insert(
                    key,
                    OpState {
                        kind: OpKind::Step,
                        closed: true,
                    },
                );
            }
        }
        EventData::HookCreated {
            hook,
            token,
            metadata,
            webhook,
        } => {
            if let Some(owner) = st.token(&token)? {
                st.changes.ops.insert(
                    key,
                    OpState {
                        kind: OpKind::Hook,
                        closed: true,
                    },
                );
                return Ok(EventData::HookConflict {
                    hook,
                    token,
                    holder: owner.run_id,
                });
            }
            st.changes.ops.insert(
                key,
                OpState {
                    kind: OpKind::Hook,
                    closed: false,
                },
            );
            st.changes.tokens.insert(
                token.clone(),
                Some(TokenOwner {
                    run_id,
                    hook: hook.clone(),
                    webhook: webhook.clone(),
                }),
            );
            let mut hooks = st.run_hooks(run_id)?;
            hooks.push(HookRecord {
                run_id,
                hook: hook.clone(),
                token: token.clone(),
                metadata: metadata.clone(),
                webhook: webhook.clone(),
                created_at: at,
                live: true,
            });
            st.changes.run_hooks.insert(run_id, hooks);
            return Ok(EventData::HookCreated {
                hook,
                token,
                metadata,
                webhook,
            });
        }
        EventData::HookConflict { .. } => {
            st.changes.ops.insert(
                key,
                OpState {
                    kind: OpKind::Hook,
                    closed: true,
                },
            );
        }
        EventData::HookReceived { .. } => {
            let state = expect_op(st, run_id, &id, kind, OpKind::Hook)?;
            if state.closed {
                return Err(invalid(run_id, kind, format!("hook {id} is not live")));
            }
        }
        EventData::HookResponded { .. } => {
            let state = expect_op(st, run_id, &id, kind, OpKind::Hook)?;
            let was_created = !state.closed || st.run_hooks(run_id)?.iter().any(|h| h.hook == id);
            if !was_created {
                return Err(invalid(
                    run_id,
                    kind,
                    format!("hook {id} was never created (token conflict)"),
                ));
            }
        }
        EventData::HookDisposed { .. } => {
            let state = expect_op(st, run_id, &id, kind, OpKind::Hook)?;
            if state.closed {
                return Err(invalid(
                    run_id,
                    kind,
                    format!("hook {id} is already disposed or was never live"),
                ));
            }
            st.changes.ops.insert(
                key,
                OpState {
                    kind: OpKind::Hook,
                    closed: true,
                },
            );
            let mut hooks = st.run_hooks(run_id)?;
            if let Some(h) = hooks.iter_mut().find(|h| h.hook == id && h.live) {
                h.live = false;
                st.changes.tokens.insert(h.token.clone(), None);
            }
            st.changes.run_hooks.insert(run_id, hooks);
        }
        EventData::WaitCreated { resume_at, .. } => {
            st.changes.ops.insert(
                key,
                OpState {
                    kind: OpKind::Wait,
                    closed: false,
                },
            );
            let mut e = st.queue(run_id)?.unwrap_or_default();
            e.timers.insert(id.clone(), resume_at);
            st.put_queue(run_id, e)?;
        }
        EventData::WaitCompleted { .. } => {
            let state = expect_op(st, run_id, &id, kind, OpKind::Wait)?;
            if state.closed {
                return Err(invalid(
                    run_id,
                    kind,
                    format!("wait {id} already completed"),
                ));
            }
            st.changes.ops.insert(
                key,
                OpState {
                    kind: OpKind::Wait,
                    closed: true,
                },
            );
            if let Some(mut e) = st.queue(run_id)? {
                if e.timers.remove(&id).is_some() {
                    st.put_queue(run_id, e)?;
                }
            }
        }
        EventData::ChildCreated {
            child,
            run,
            workflow,
            input,
            detached,
        } => {
            if run == run_id {
                return Err(invalid(run_id, kind, "a run cannot be its own child"));
            }
            st.changes.ops.insert(
                key,
                OpState {
                    kind: OpKind::Child,
                    closed: false,
                },
            );
            let parent = ParentRun {
                run: run_id,
                child: child.clone(),
                detached,
            };
            let new = NewRun {
                id: run,
                workflow,
                input,
            };
            create_run_with_parent(st, &new, Some(parent))?;
            return Ok(EventData::ChildCreated {
                child,
                run,
                workflow: new.workflow,
                input: new.input,
                detached,
            });
        }
        EventData::ChildCompleted { .. } | EventData::ChildFailed { .. } => {
            let state = expect_op(st, run_id, &id, kind, OpKind::Child)?;
            if state.closed {
                return Err(invalid(run_id, kind, format!("child {id} already ended")));
            }
            st.changes.ops.insert(
                key,
                OpState {
                    kind: OpKind::Child,
                    closed: true,
                },
            );
            st.wake_now(run_id)?;
        }
        EventData::PatchMarked { .. } => {
            st.changes.ops.insert(
                key,
                OpState {
                    kind: OpKind::Patch,
                    closed: true,
                },
            );
        }
        other => {
            return Err(invalid(
                run_id,
                other.kind(),
                "event kind is not an operation event",
            ))
        }
    }
    Ok(data)
}

/// Delivers a payload to the live hook holding `token` (see [`crate::Store::resume_hook`]).
pub fn resume_hook(
    st: &mut Staged<'_, impl ReadView + ?Sized>,
    token: &HookToken,
    payload: Payload,
) -> Result<Resumed, StoreError> {
    let owner = st.token(token)?.ok_or_else(|| StoreError::HookNotFound {
        token: token.clone(),
    })?;
    deliver(st, owner, payload)
}

/// Delivers a request to the live *webhook* holding `token` and returns its
/// response mode (see [`crate::Store::resume_webhook`]); plain hooks are not found.
pub fn resume_webhook(
    st: &mut Staged<'_, impl ReadView + ?Sized>,
    token: &HookToken,
    payload: Payload,
) -> Result<(Resumed, WebhookResponse), StoreError> {
    let not_found = || StoreError::HookNotFound {
        token: token.clone(),
    };
    let owner = st.token(token)?.ok_or_else(not_found)?;
    let mode = owner.webhook.clone().ok_or_else(not_found)?;
    Ok((deliver(st, owner, payload)?, mode))
}

fn deliver(
    st: &mut Staged<'_, impl ReadView + ?Sized>,
    owner: TokenOwner,
    payload: Payload,
) -> Result<Resumed, StoreError> {
    let appended = append(
        st,
        owner.run_id,
        vec![EventData::HookReceived {
            hook: owner.hook.clone(),
            payload,
        }],
        None,
    )?;
    st.wake_now(owner.run_id)?;
    let seq = appended.events.first().map_or(0, |e| e.seq);
    Ok(Resumed {
        run_id: owner.run_id,
        hook: owner.hook,
        seq,
    })
}

/// Deletes those of `runs` that `query` selects (see
/// [`crate::Store::purge_runs`]), each checked again here, inside the write:
/// a run that is gone or no longer matches is skipped. Returns the runs
/// staged for deletion, in the order given.
pub fn purge(
    st: &mut Staged<'_, impl ReadView + ?Sized>,
    runs: &[RunId],
    query: &PurgeQuery,
) -> Result<Vec<RunId>, StoreError> {
    let mut purged = Vec::new();
    for &id in runs {
        let Some(record) = st.run(id)? else { continue };
        if !query.matches(&record) {
            continue;
        }
        let mut ops = Vec::new();
        for seq in 0..record.next_seq {
            let Some(event) = st.view.event(id, seq)? else {
                continue;
            };
            if event.data.kind().is_creation() {
                if let Some(c) = event.data.correlation_id() {
                    ops.push(c.clone());
                }
            }
        }
        for hook in st.run_hooks(id)? {
            // A released token may belong to another run by now: delete only
            // what still points here.
            if st.token(&hook.token)?.is_some_and(|o| o.run_id == id) {
                st.changes.tokens.insert(hook.token, None);
            }
        }
        let streams = st.streams(id)?;
        st.delete_queue(id)?;
        st.changes.runs.remove(&id);
        st.changes.run_hooks.remove(&id);
        st.changes.streams.remove(&id);
        st.changes.chunks.retain(|(run, _, _)| *run != id);
        st.changes.purged.insert(
            id,
            PurgedRun {
                record,
                ops,
                streams,
            },
        );
        purged.push(id);
    }
    Ok(purged)
}

/// Makes a run due now.
pub fn wake(st: &mut Staged<'_, impl ReadView + ?Sized>, run: RunId) -> Result<(), StoreError> {
    live_run(st, run)?;
    st.wake_now(run)
}

/// Leases one run if it is due now and not held; `Ok(None)` otherwise.
pub fn try_lease(
    st: &mut Staged<'_, impl ReadView + ?Sized>,
    run: RunId,
    ttl: Duration,
) -> Result<Option<Lease>, StoreError> {
    let now = st.now;
    let Some(mut entry) = st.queue(run)? else {
        return Ok(None);
    };
    match entry.effective_due() {
        Some(due) if due <= now => {}
        _ => return Ok(None),
    }
    // A lease still in place on a due entry has expired (the entry's due time
    // is its expiry): its holder never released it.
    let taken_over = entry.lease.is_some();
    let lease = Lease {
        run_id: run,
        id: LeaseId::new(),
        expires_at: Timestamp(now.0.saturating_add(millis(ttl).max(1))),
        wake: entry.wake_gen,
        taken_over: false,
    };
    entry.lease = Some(lease.clone());
    st.put_queue(run, entry)?;
    Ok(Some(Lease {
        taken_over,
        ..lease
    }))
}

/// Extends a held lease.
pub fn renew_lease(
    st: &mut Staged<'_, impl ReadView + ?Sized>,
    lease: &Lease,
    ttl: Duration,
) -> Result<Lease, StoreError> {
    let lost = StoreError::LeaseLost { run: lease.run_id };
    let Some(mut entry) = st.queue(lease.run_id)? else {
        return Err(lost);
    };
    if entry.lease.as_ref().map(|l| l.id) != Some(lease.id) {
        return Err(lost);
    }
    let renewed = Lease {
        expires_at: Timestamp(st.now.0.saturating_add(millis(ttl).max(1))),
        ..lease.clone()
    };
    entry.lease = Some(Lease {
        taken_over: false,
        ..renewed.clone()
    });
    st.put_queue(lease.run_id, entry)?;
    Ok(renewed)
}

/// Gives a lease up (see [`crate::Store::release_lease`]).
pub fn release_lease(
    st: &mut Staged<'_, impl ReadView + ?Sized>,
    lease: &Lease,
) -> Result<(), StoreError> {
    let Some(mut entry) = st.queue(lease.run_id)? else {
        // The run ended (its queue entry went with it) or never was queued.
        return match st.run(lease.run_id)? {
            Some(r) if r.status.is_terminal() => Ok(()),
            _ => Err(StoreError::LeaseLost { run: lease.run_id }),
        };
    };
    if entry.lease.as_ref().map(|l| l.id) != Some(lease.id) {
        return Err(StoreError::LeaseLost { run: lease.run_id });
    }
    entry.lease = None;
    if entry.wake_gen == lease.wake {
        entry.wake_due = None;
    }
    st.put_queue(lease.run_id, entry)
}

/// Stores chunks of a step attempt's share of a stream, pending until the
/// attempt is recorded (see [`crate::Store::write_stream`] and the
/// [`crate::stream`] module docs).
pub fn write_stream(
    st: &mut Staged<'_, impl ReadView + ?Sized>,
    run_id: RunId,
    writer: &ChunkWriter,
    write: StreamWrite,
    fence: Option<LeaseId>,
) -> Result<(), StoreError> {
    live_run(st, run_id)?;
    let refuse = |reason: String| StoreError::InvalidStreamWrite {
        run: run_id,
        stream: write.stream.clone(),
        reason,
    };
    if let Some(fence) = fence {
        let holds = st
            .queue(run_id)?
            .and_then(|e| e.lease)
            .is_some_and(|l| l.id == fence);
        if !holds {
            return Err(StoreError::LeaseLost { run: run_id });
        }
    }
    if writer.attempt == 0 {
        return Err(refuse("attempts are counted from 1".into()));
    }
    if st.op(run_id, &writer.step)?.is_some_and(|op| op.closed) {
        return Err(refuse(format!("step {} is already recorded", writer.step)));
    }
    if let Some(big) = write.chunks.iter().find(|c| c.len() > MAX_CHUNK_BYTES) {
        return Err(refuse(format!(
            "a chunk of {} bytes is larger than {MAX_CHUNK_BYTES}",
            big.len()
        )));
    }
    let count = u64::try_from(write.chunks.len())
        .ok()
        .and_then(|n| write.first.checked_add(n))
        .ok_or_else(|| refuse("chunk numbers overflow".into()))?;
    let mut streams = st.streams(run_id)?.unwrap_or_default();
    if streams
        .settled
        .get(&writer.step)
        .is_some_and(|&a| a >= writer.attempt)
    {
        return Err(refuse(format!(
            "attempt {} of step {} is already recorded",
            writer.attempt, writer.step
        )));
    }
    let stream = streams.streams.entry(write.stream.clone()).or_default();
    let share = stream.pending.entry(writer.clone()).or_default();
    share.count = share.count.max(count);
    share.close |= write.close;
    if let Some(token) = write.grant {
        if !share.grants.contains(&token) {
            share.grants.push(token);
        }
    }
    for (n, chunk) in (write.first..).zip(write.chunks) {
        st.changes.chunks.push((
            run_id,
            ChunkKey {
                stream: write.stream.clone(),
                writer: writer.clone(),
                n,
            },
            Some(chunk),
        ));
    }
    st.changes.streams.insert(run_id, streams);
    Ok(())
}

/// Settles the pending shares of a step whose outcome is being recorded:
/// with `commit`, the recorded attempt's shares become segments of their
/// streams; every other pending share of the step is discarded.
fn settle_attempt(
    st: &mut Staged<'_, impl ReadView + ?Sized>,
    run_id: RunId,
    step: &CorrelationId,
    commit: bool,
) -> Result<(), StoreError> {
    let Some(mut streams) = st.streams(run_id)? else {
        return Ok(());
    };
    // The attempt recorded is the one started in this write (the driver
    // records `step_started` with the outcome); failing that, the latest
    // attempt that wrote.
    let latest_pending = streams
        .streams
        .values()
        .flat_map(|s| s.pending.keys())
        .filter(|w| w.step == *step)
        .map(|w| w.attempt)
        .max();
    let attempt = st
        .started
        .get(&(run_id, step.clone()))
        .copied()
        .or(latest_pending);
    let Some(attempt) = attempt else {
        return Ok(());
    };
    let mut notify = Vec::new();
    let mut discard = Vec::new();
    for (name, stream) in streams.streams.iter_mut() {
        let mine: Vec<ChunkWriter> = stream
            .pending
            .keys()
            .filter(|w| w.step == *step)
            .cloned()
            .collect();
        if mine.is_empty() {
            continue;
        }
        for writer in mine {
            let Some(share) = stream.pending.remove(&writer) else {
                continue;
            };
            if commit && writer.attempt == attempt && !stream.closed {
                if share.count > 0 {
                    stream.segments.push(Segment {
                        writer,
                        base: stream.len,
                        count: share.count,
                    });
                    stream.len += share.count;
                }
                stream.closed |= share.close;
                for g in share.grants {
                    if !stream.grants.contains(&g) {
                        stream.grants.push(g);
                    }
                }
                notify.push(Change::Stream {
                    run: run_id,
                    stream: name.clone(),
                    len: stream.len,
                    closed: stream.closed,
                });
            } else {
                discard.push((name.clone(), writer, share.count));
            }
        }
    }
    discard_shares(st, run_id, discard);
    let settled = streams.settled.entry(step.clone()).or_insert(0);
    *settled = (*settled).max(attempt);
    st.changes.notify.extend(notify);
    st.changes.streams.insert(run_id, streams);
    Ok(())
}

/// Closes the streams of a run that ends, and discards what is pending.
fn close_streams(
    st: &mut Staged<'_, impl ReadView + ?Sized>,
    run_id: RunId,
) -> Result<(), StoreError> {
    let Some(mut streams) = st.streams(run_id)? else {
        return Ok(());
    };
    let mut discard = Vec::new();
    for (name, stream) in streams.streams.iter_mut() {
        for (writer, share) in std::mem::take(&mut stream.pending) {
            discard.push((name.clone(), writer, share.count));
        }
        if !stream.closed && stream.is_visible() {
            stream.closed = true;
            st.changes.notify.push(Change::Stream {
                run: run_id,
                stream: name.clone(),
                len: stream.len,
                closed: true,
            });
        }
    }
    streams.streams.retain(|_, s| s.is_visible());
    discard_shares(st, run_id, discard);
    st.changes.streams.insert(run_id, streams);
    Ok(())
}

/// Stages the deletion of discarded shares' chunk rows.
fn discard_shares(
    st: &mut Staged<'_, impl ReadView + ?Sized>,
    run_id: RunId,
    shares: Vec<(StreamName, ChunkWriter, u64)>,
) {
    for (stream, writer, count) in shares {
        for n in 0..count {
            let key = ChunkKey {
                stream: stream.clone(),
                writer: writer.clone(),
                n,
            };
            st.changes.chunks.push((run_id, key, None));
        }
    }
}
