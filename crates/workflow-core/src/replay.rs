//! The replay cursor: one run's view of its log, shared by the workflow's
//! operations (through [`crate::Context`]) and the driver.
//!
//! The driver delivers events one at a time in log order; each delivery
//! updates the slot of the operation the event belongs to and wakes its future.
//! Operations never look at the log directly except for two things that must be
//! known when they are issued: the recorded creation at their position (to check
//! determinism) and, for hooks, the recorded token.
//!
//! Only undelivered events are kept: a delivered event has done its work (its
//! effect lives in the operation slots), so a cached run's memory follows the
//! operations in flight, not the length or volume of its history.
//!
//! What the code asks to record (creations, hook disposals, webhook answers)
//! goes into [`RunState::commands`] in program order; the driver writes them
//! in that order at the live edge.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

/// The run's deterministic generator (an implementation detail: not in the
/// public API, see `Context::random`).
pub type RunRng = ChaCha8Rng;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use workflow_store::{
    CorrelationId, ErrorRecord, Event, EventData, EventKind, HookToken, HttpResponseRecord,
    Payload, RunId, Timestamp, WebhookResponse,
};

use crate::error::NondeterminismError;
use crate::step::StepOptions;

/// The kind of an operation, as issued by the code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpKind {
    Step,
    Wait,
    Hook,
    Child,
    Patch,
}

impl OpKind {
    fn prefix(self) -> &'static str {
        match self {
            OpKind::Step => "step",
            OpKind::Wait => "wait",
            OpKind::Hook => "hook",
            OpKind::Child => "child",
            OpKind::Patch => "patch",
        }
    }

    fn of_creation(kind: EventKind) -> Option<OpKind> {
        match kind {
            EventKind::StepCreated => Some(OpKind::Step),
            EventKind::WaitCreated => Some(OpKind::Wait),
            EventKind::HookCreated | EventKind::HookConflict => Some(OpKind::Hook),
            EventKind::ChildCreated => Some(OpKind::Child),
            EventKind::PatchMarked => Some(OpKind::Patch),
            _ => None,
        }
    }
}

/// Where a step stands, as far as the delivered log says.
#[derive(Debug, Clone)]
pub(crate) enum StepStatus {
    Open,
    Retrying { retry_at: Timestamp },
    Completed(Payload),
    Failed(ErrorRecord),
}

/// The result of one attempt, reported by the step's future to the driver.
#[derive(Debug)]
pub(crate) struct AttemptOutcome {
    pub attempt: u32,
    pub result: Result<Payload, crate::error::StepError>,
    /// Order in which outcomes finished, so they are appended in that order.
    pub finished: u64,
}

#[derive(Debug)]
pub(crate) struct StepSlot {
    pub name: String,
    pub options: StepOptions,
    pub attempts_started: u32,
    pub status: StepStatus,
    /// The attempt the driver allows to run now.
    pub grant: Option<u32>,
    /// Whether the step's future holds a running attempt (it was polled
    /// after the grant); a granted step that is not running is one the
    /// workflow holds without awaiting.
    pub running: bool,
    pub outcome: Option<AttemptOutcome>,
}

#[derive(Debug)]
pub(crate) struct WaitSlot {
    /// When the timer fires: the code's value until `wait_created` is
    /// delivered, then the recorded one (which the store's queue follows).
    pub resume_at: Timestamp,
    pub done: bool,
}

#[derive(Debug)]
pub(crate) struct HookSlot {
    pub token: HookToken,
    pub metadata: Option<Payload>,
    pub webhook: Option<WebhookResponse>,
    /// Payloads delivered and not yet taken, in log order.
    pub payloads: VecDeque<Payload>,
    /// The run holding the token, if creation conflicted.
    pub conflict: Option<RunId>,
    /// Dispose requested by the code and not yet recorded.
    pub dispose_requested: bool,
    pub disposed: bool,
    /// Created with invalid options: never recorded.
    pub invalid: bool,
}

#[derive(Debug)]
pub(crate) struct ChildSlot {
    /// The child run's id (derived from the parent's id and the operation).
    pub run: RunId,
    pub workflow: String,
    pub input: Payload,
    pub detached: bool,
    /// How the child ended, once `child_completed` or `child_failed` is delivered.
    pub outcome: Option<Result<Payload, ErrorRecord>>,
}

#[derive(Debug)]
pub(crate) struct PatchSlot {
    pub patch: String,
}

/// What [`RunState::patch_at`] finds at the next operation's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchAt {
    /// The history has this patch's marker here.
    Marked,
    /// The history went past this point without the marker: it predates the patch.
    Old,
    /// The run reaches this point for the first time.
    New,
}

/// Something the code asked to record, in program order.
#[derive(Debug)]
pub(crate) enum Command {
    /// The creation of operation `index`.
    Create(u64),
    /// `hook_disposed` for hook `index`.
    Dispose(u64),
    /// A manual webhook answer (`hook_responded`). It carries its hook's id,
    /// so it is recorded even if the code dropped the webhook meanwhile.
    Respond {
        hook: CorrelationId,
        request_id: String,
        response: HttpResponseRecord,
    },
}

#[derive(Debug)]
pub(crate) enum SlotKind {
    Step(StepSlot),
    Wait(WaitSlot),
    Hook(HookSlot),
    Child(ChildSlot),
    Patch(PatchSlot),
}

#[derive(Debug)]
pub(crate) struct OpSlot {
    pub id: CorrelationId,
    pub kind: SlotKind,
    /// Whether its creation is in the log.
    pub recorded: bool,
    /// Whether the future that owns it is gone.
    pub dropped: bool,
    /// The future to wake when something is delivered.
    pub waker: Option<Waker>,
}

impl OpSlot {
    /// Wakes the operation's future so its next poll sees a change.
    pub fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Whether nothing is left to record or deliver for this operation once its
    /// future is gone, so its slot can be forgotten (keeps the driver's scans
    /// proportional to the operations in flight, not to the history).
    pub fn removable(&self) -> bool {
        match &self.kind {
            SlotKind::Step(s) => match s.status {
                // Not before its records are delivered: a result handed to
                // the workflow ahead of its write is still to be recorded.
                StepStatus::Completed(_) | StepStatus::Failed(_) => self.recorded,
                _ => !self.recorded && s.outcome.is_none(),
            },
            SlotKind::Wait(w) => w.done || !self.recorded,
            SlotKind::Hook(h) => {
                h.invalid || (self.recorded && (!h.dispose_requested || h.disposed))
            }
            // A child is recorded even if its handle is dropped at once (a
            // fire-and-forget child); an attached one is kept until it ends,
            // so that it can be cancelled with its parent.
            SlotKind::Child(c) => self.recorded && (c.outcome.is_some() || c.detached),
            SlotKind::Patch(_) => self.recorded,
        }
    }

    /// Whether the workflow may still be waiting on this operation.
    pub fn unresolved(&self) -> bool {
        if self.dropped {
            return false;
        }
        match &self.kind {
            SlotKind::Step(s) => matches!(s.status, StepStatus::Open | StepStatus::Retrying { .. }),
            SlotKind::Wait(w) => !w.done,
            SlotKind::Hook(h) => h.conflict.is_none() && !h.disposed && h.payloads.is_empty(),
            SlotKind::Child(c) => c.outcome.is_none(),
            SlotKind::Patch(_) => false,
        }
    }
}

/// One run's replay state.
#[derive(Debug)]
pub(crate) struct RunState {
    pub run_id: RunId,
    /// Known events not delivered yet, in log order.
    pending: VecDeque<Event>,
    /// How many events of the log are known (delivered or pending): the
    /// `seq` of the next one.
    known: u64,
    /// `seq`s of undelivered recorded creations, by operation index.
    creations: HashMap<u64, u64>,
    /// What the code asked to record, in program order (see [`Command`]).
    pub commands: Vec<Command>,
    /// Operations issued so far, by index.
    pub ops: BTreeMap<u64, OpSlot>,
    next_index: u64,
    /// Timestamp of the last delivered event: the workflow's `now()`.
    pub now: Timestamp,
    pub rng: RunRng,
    /// A mismatch found while issuing or delivering.
    pub nondeterminism: Option<NondeterminismError>,
    /// Counter for [`AttemptOutcome::finished`].
    pub finish_counter: u64,
    /// The workflow runs on a step result that is not recorded yet (the
    /// driver's `deliver_before_recording`): its `now` is the driver's
    /// clock, not an event's time.
    pub ahead_of_log: bool,
    /// The workflow read `now()` while `ahead_of_log`: replay would show it
    /// another time, so the driver replays it from the log once the result
    /// is recorded.
    pub read_time_ahead: bool,
    /// Step mocks of a test engine (`crate::testing`), given to each step.
    #[cfg(feature = "test-util")]
    pub step_mocks: Option<Arc<crate::testing::StepMocks>>,
    /// Where step attempts write stream chunks (set by the driver, with its lease).
    pub stream_sink: Option<crate::stream::StreamSink>,
    /// The log holds the run's end (`run_completed`, `run_failed`, `run_cancelled`).
    ended_in_log: bool,
    /// Patches for which `patched` took the old branch (check-replay reports them).
    pub patches_old: std::collections::BTreeSet<String>,
    /// Patches whose marker is in this run's history.
    pub patches_marked: std::collections::BTreeSet<String>,
}

/// Shared handle to a run's state.
pub(crate) type SharedState = Arc<Mutex<RunState>>;

/// Locks a run's state. The lock is never held across an `.await` or while
/// user code runs, so poisoning can only come from a bug in this crate; the
/// state is still consistent field by field, so it is used as is.
pub(crate) fn lock(state: &SharedState) -> MutexGuard<'_, RunState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Parses the operation index out of a correlation id `kind:index`.
pub(crate) fn op_index(id: &CorrelationId) -> Option<u64> {
    id.as_str().rsplit_once(':')?.1.parse().ok()
}

pub(crate) fn describe(kind: OpKind, name: Option<&str>) -> String {
    match name {
        Some(n) => format!("{} {n:?}", kind.prefix()),
        None => kind.prefix().to_string(),
    }
}

fn describe_event(data: &EventData) -> String {
    match data {
        EventData::StepCreated { name, .. } => describe(OpKind::Step, Some(name)),
        EventData::ChildCreated { workflow, .. } => describe(OpKind::Child, Some(workflow)),
        EventData::PatchMarked { patch, .. } => describe(OpKind::Patch, Some(patch)),
        EventData::HookCreated { token, .. } | EventData::HookConflict { token, .. } => {
            format!("hook with token {token}")
        }
        other => other
            .kind()
            .as_str()
            .trim_end_matches("_created")
            .to_string(),
    }
}

impl RunState {
    pub fn new(run_id: RunId, log: Vec<Event>) -> Self {
        // Seeded per run: the same draws on every replay of this run.
        let id = run_id.as_u128();
        let seed = (id as u64) ^ ((id >> 64) as u64);
        let mut state = RunState {
            run_id,
            pending: VecDeque::with_capacity(log.len()),
            known: 0,
            creations: HashMap::new(),
            commands: Vec::new(),
            ops: BTreeMap::new(),
            next_index: 0,
            now: log.first().map(|e| e.at).unwrap_or_default(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            nondeterminism: None,
            finish_counter: 0,
            ahead_of_log: false,
            read_time_ahead: false,
            #[cfg(feature = "test-util")]
            step_mocks: None,
            stream_sink: None,
            ended_in_log: false,
            patches_old: Default::default(),
            patches_marked: Default::default(),
        };
        state.extend_log(log);
        state
    }

    /// Adds newly read or appended events (which must continue the log).
    pub fn extend_log(&mut self, events: Vec<Event>) {
        for e in events {
            if e.seq != self.known {
                continue; // already known
            }
            if e.kind().is_run_terminal() {
                self.ended_in_log = true;
            }
            if e.kind().is_creation() {
                if let Some(i) = e.data.correlation_id().and_then(op_index) {
                    self.creations.insert(i, e.seq);
                }
            }
            self.known += 1;
            self.pending.push_back(e);
        }
    }

    /// How many events of the log are known: the `seq` the next one gets.
    pub fn known(&self) -> u64 {
        self.known
    }

    /// Undelivered events held in memory and their payload bytes.
    pub fn pending_footprint(&self) -> (usize, usize) {
        let bytes = self.pending.iter().map(event_payload_bytes).sum();
        (self.pending.len(), bytes)
    }

    fn mismatch(&mut self, position: u64, expected: String, found: String) {
        if self.nondeterminism.is_none() {
            self.nondeterminism = Some(NondeterminismError {
                run: self.run_id,
                position,
                expected,
                found,
            });
        }
    }

    /// The recorded creation of operation `index`, if it is known and not
    /// delivered yet (a creation is delivered only after its operation is
    /// issued, so one issued now can only find an undelivered one).
    fn recorded_creation(&self, index: u64) -> Option<&Event> {
        let seq = *self.creations.get(&index)?;
        let first = self.pending.front()?.seq;
        self.pending
            .get(usize::try_from(seq.checked_sub(first)?).ok()?)
    }

    /// Whether the history has the marker of `patch` at the next operation's
    /// position, went past that position without it, or ends before it.
    pub fn patch_at(&self, patch: &str) -> PatchAt {
        let index = self.next_index;
        if let Some(recorded) = self.recorded_creation(index) {
            if let EventData::PatchMarked { patch: p, .. } = &recorded.data {
                if p == patch {
                    return PatchAt::Marked;
                }
            }
            return PatchAt::Old;
        }
        let later = self.creations.keys().any(|&i| i > index);
        if later || self.ended_in_log {
            PatchAt::Old
        } else {
            PatchAt::New
        }
    }

    /// Called when an operation's future is dropped: forgets its slot if
    /// nothing is left to do for it, else marks it dropped.
    pub fn release_op(&mut self, index: u64) {
        let Some(slot) = self.ops.get_mut(&index) else {
            return;
        };
        slot.dropped = true;
        slot.waker = None;
        if slot.removable() {
            self.ops.remove(&index);
        }
    }

    /// Forgets dropped operations that have nothing left to do.
    pub fn prune(&mut self) {
        self.ops.retain(|_, s| !(s.dropped && s.removable()));
    }

    /// The index the next issued operation gets.
    pub fn peek_index(&self) -> u64 {
        self.next_index
    }

    /// Issues an operation: assigns its index (call order), checks it against
    /// the recorded one, and creates its slot.
    pub fn issue(&mut self, kind: OpKind, name: Option<&str>, slot: SlotKind) -> u64 {
        let index = self.next_index;
        self.next_index += 1;
        let id = CorrelationId::from_parts(kind.prefix(), index);
        if let Some(recorded) = self.recorded_creation(index) {
            let rkind = OpKind::of_creation(recorded.kind());
            let same = rkind == Some(kind)
                && match (&recorded.data, name, &slot) {
                    (EventData::StepCreated { name: rn, .. }, Some(n), _) => rn == n,
                    (EventData::ChildCreated { workflow, .. }, Some(n), _) => workflow == n,
                    (EventData::PatchMarked { patch, .. }, Some(n), _) => patch == n,
                    (
                        EventData::HookCreated { token, .. }
                        | EventData::HookConflict { token, .. },
                        _,
                        SlotKind::Hook(h),
                    ) => *token == h.token,
                    _ => true,
                };
            if !same {
                let expected = describe_event(&recorded.data);
                let found = match &slot {
                    SlotKind::Hook(h) => format!("hook with token {}", h.token),
                    _ => describe(kind, name),
                };
                self.mismatch(index, expected, found);
            }
        }
        self.ops.insert(
            index,
            OpSlot {
                id,
                kind: slot,
                recorded: false,
                dropped: false,
                waker: None,
            },
        );
        self.commands.push(Command::Create(index));
        index
    }

    /// Asks to dispose hook `index` (recorded in program order).
    pub fn request_dispose(&mut self, index: u64) {
        let Some(slot) = self.ops.get_mut(&index) else {
            return;
        };
        if let SlotKind::Hook(h) = &mut slot.kind {
            if !h.disposed && !h.dispose_requested && h.conflict.is_none() && !h.invalid {
                h.dispose_requested = true;
                self.commands.push(Command::Dispose(index));
            }
        }
    }

    /// Records a manual answer to webhook request `request_id` of `hook`,
    /// unless one is already waiting to be recorded.
    pub fn respond(&mut self, hook: CorrelationId, request_id: &str, response: HttpResponseRecord) {
        let waiting = self
            .commands
            .iter()
            .any(|c| matches!(c, Command::Respond { request_id: id, .. } if id == request_id));
        if !waiting {
            self.commands.push(Command::Respond {
                hook,
                request_id: request_id.to_string(),
                response,
            });
        }
    }

    /// The token recorded for hook `index`, if its creation is in the log.
    pub fn recorded_token(&self, index: u64) -> Option<HookToken> {
        match self.recorded_creation(index).map(|e| &e.data) {
            Some(EventData::HookCreated { token, .. } | EventData::HookConflict { token, .. }) => {
                Some(token.clone())
            }
            _ => None,
        }
    }

    /// Delivers the next undelivered event and forgets it. Returns `false`
    /// at the live edge.
    pub fn deliver_next(&mut self) -> bool {
        let Some(event) = self.pending.pop_front() else {
            return false;
        };
        if event.kind().is_creation() {
            if let Some(i) = event.data.correlation_id().and_then(op_index) {
                if self.creations.get(&i) == Some(&event.seq) {
                    self.creations.remove(&i);
                }
            }
        }
        self.now = self.now.max(event.at);
        self.deliver(event);
        true
    }

    fn deliver(&mut self, event: Event) {
        if let EventData::HookResponded { request_id, .. } = &event.data {
            // Recorded: nothing is left to write for it (replay re-issues the
            // answer before its record is delivered).
            if let Some(i) = self.commands.iter().position(
                |c| matches!(c, Command::Respond { request_id: id, .. } if id == request_id),
            ) {
                self.commands.remove(i);
            }
        }
        let Some(id) = event.data.correlation_id() else {
            return;
        };
        let Some(index) = op_index(id) else {
            self.mismatch(
                u64::MAX,
                format!("an operation with unreadable id {id}"),
                "nothing".into(),
            );
            return;
        };
        let kind = event.kind();
        if !self.ops.contains_key(&index) {
            if kind.is_creation() {
                let expected = describe_event(&event.data);
                self.mismatch(index, expected, "no operation at this position".into());
            }
            return;
        }
        // Recorded now: nothing is left to write for these commands.
        match kind {
            k if k.is_creation() => self
                .commands
                .retain(|c| !matches!(c, Command::Create(i) if *i == index)),
            EventKind::HookDisposed => self
                .commands
                .retain(|c| !matches!(c, Command::Dispose(i) if *i == index)),
            _ => {}
        }
        let Some(slot) = self.ops.get_mut(&index) else {
            return;
        };
        match (event.data, &mut slot.kind) {
            (EventData::WaitCreated { resume_at, .. }, SlotKind::Wait(w)) => {
                // The recorded time decides, whatever the code computes now.
                w.resume_at = resume_at;
                slot.recorded = true;
            }
            (EventData::StepCreated { .. }, SlotKind::Step(_))
            | (EventData::HookCreated { .. }, SlotKind::Hook(_))
            | (EventData::ChildCreated { .. }, SlotKind::Child(_))
            | (EventData::PatchMarked { .. }, SlotKind::Patch(_)) => slot.recorded = true,
            (EventData::ChildCompleted { output, .. }, SlotKind::Child(c)) => {
                c.outcome = Some(Ok(output));
                slot.wake();
            }
            (EventData::ChildFailed { error, .. }, SlotKind::Child(c)) => {
                c.outcome = Some(Err(error));
                slot.wake();
            }
            (EventData::HookConflict { holder, .. }, SlotKind::Hook(h)) => {
                slot.recorded = true;
                h.conflict = Some(holder);
                slot.wake();
            }
            (EventData::StepStarted { attempt, .. }, SlotKind::Step(s)) => {
                s.attempts_started = s.attempts_started.max(attempt);
            }
            (EventData::StepRetrying { retry_at, .. }, SlotKind::Step(s)) => {
                s.status = StepStatus::Retrying { retry_at };
            }
            (EventData::StepCompleted { result, .. }, SlotKind::Step(s)) => {
                s.status = StepStatus::Completed(result);
                slot.wake();
            }
            (EventData::StepFailed { error, .. }, SlotKind::Step(s)) => {
                s.status = StepStatus::Failed(error);
                slot.wake();
            }
            (EventData::WaitCompleted { .. }, SlotKind::Wait(w)) => {
                w.done = true;
                slot.wake();
            }
            (EventData::HookReceived { payload, .. }, SlotKind::Hook(h)) => {
                h.payloads.push_back(payload);
                slot.wake();
            }
            (EventData::HookDisposed { .. }, SlotKind::Hook(h)) => {
                h.disposed = true;
                h.dispose_requested = false;
                slot.wake();
            }
            (EventData::HookResponded { .. }, SlotKind::Hook(_)) => {}
            (data, _) => {
                let expected = describe_event(&data);
                let found = match &slot.kind {
                    SlotKind::Step(s) => describe(OpKind::Step, Some(&s.name)),
                    SlotKind::Wait(_) => describe(OpKind::Wait, None),
                    SlotKind::Hook(_) => describe(OpKind::Hook, None),
                    SlotKind::Child(c) => describe(OpKind::Child, Some(&c.workflow)),
                    SlotKind::Patch(p) => describe(OpKind::Patch, Some(&p.patch)),
                };
                self.mismatch(index, expected, found);
            }
        }
    }
}

/// Bytes of payload an event carries (inputs, results, hook payloads).
fn event_payload_bytes(e: &Event) -> usize {
    match &e.data {
        EventData::RunCreated { input, .. } => input.as_bytes().len(),
        EventData::RunCompleted { output } => output.as_bytes().len(),
        EventData::StepCompleted { result, .. } => result.as_bytes().len(),
        EventData::ChildCreated { input, .. } => input.as_bytes().len(),
        EventData::ChildCompleted { output, .. } => output.as_bytes().len(),
        EventData::HookReceived { payload, .. } => payload.as_bytes().len(),
        EventData::HookCreated { metadata, .. } => {
            metadata.as_ref().map_or(0, |m| m.as_bytes().len())
        }
        _ => 0,
    }
}

thread_local! {
    /// Set while a step attempt's closure or future runs on this thread.
    static IN_STEP: Cell<bool> = const { Cell::new(false) };
}

/// The panic payload of a workflow [`crate::Context`] used inside a step.
#[derive(Debug)]
pub(crate) struct ContextInStep(pub String);

/// Runs `f` as part of a step attempt: the workflow context refuses to work
/// inside it (see [`forbid_in_step`]).
pub(crate) fn in_step<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            IN_STEP.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(IN_STEP.with(|c| c.replace(true)));
    f()
}

/// Panics with [`ContextInStep`] if called inside a step attempt. A step runs
/// only when live, never on replay, so a context operation inside it would
/// change the run's replay state (operation order, random draws) in a way
/// replay cannot repeat. The step attempt fails fatally with this message.
pub(crate) fn forbid_in_step(what: &str) {
    if IN_STEP.with(Cell::get) {
        std::panic::panic_any(ContextInStep(format!(
            "the workflow Context was used inside a step ({what}): a step runs only when live, \
             never on replay, so it must not issue operations, draw random numbers or read the \
             workflow clock; do that in the workflow body and pass the values into the step"
        )));
    }
}
