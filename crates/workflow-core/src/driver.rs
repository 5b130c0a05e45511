//! The driver: one activation of one leased run, as an event loop.
//!
//! Live execution and replay are the same loop:
//!
//! 1. poll the workflow until it is idle (no wake-up left);
//! 2. if the log has undelivered events, deliver the next one and go to 1;
//! 3. at the live edge, record what the workflow is waiting for, in this order:
//!    finished step attempts (in the order they finished), then the commands
//!    of the stall in program order (creations, hook disposals, webhook
//!    answers: one write), then due timers and retries; each write's events go
//!    back through step 2;
//! 4. if a step attempt is running, wait for whichever comes first: the
//!    workflow is woken (an attempt made progress or finished), a timer or
//!    retry of this run comes due, the change feed reports new events for the
//!    run (a hook payload, a cancellation), the lease's renewal time (on a
//!    fixed schedule from the last renewal, whatever else wakes the loop), or
//!    shutdown;
//! 5. otherwise the run is suspended: release the lease, keep the future hot.
//!
//! A single new step takes the fast path: it runs first and its
//! `step_created`, `step_started` and outcome are recorded in one write, so a
//! sequential step costs one flushed write. A crash before that write loses
//! nothing but the attempt; the engine that takes the expired lease over
//! records that attempt as lost (`step_retrying`, or `step_failed` when it was
//! the last), so a step that kills its process is not retried forever.
//!
//! Step attempts are futures polled by the workflow's own poll (the step's
//! future owns its attempt), not spawned tasks: a step closure may borrow the
//! workflow's locals, and dropping a step (a lost race, a cancelled run)
//! cancels its attempt. The loop above is what keeps every other source of
//! progress alive while an attempt runs.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Wake, Waker};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tracing::warn;
use workflow_store::{
    Change, CorrelationId, ErrorRecord, Event, EventData, Lease, Payload, RunStatus, StoreError,
    Timestamp,
};

use crate::context::Context;
use crate::engine::EngineInner;
use crate::error::{StepErrorKind, WorkflowError};
use crate::feed::{next_change, Feed};
use crate::registry::WorkflowFuture;
use crate::replay::{lock, Command, RunState, SharedState, SlotKind, StepSlot, StepStatus};

/// Polls of the workflow in a row before the driver yields to the runtime
/// (a step that wakes itself at once must not starve renewal or other tasks).
const POLL_BUDGET: u32 = 64;

/// Records wake-ups of the workflow future and wakes the driver.
#[derive(Default)]
pub(crate) struct WakeSignal {
    woken: AtomicBool,
    notify: Notify,
}

impl Wake for WakeSignal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }
}

/// A run's workflow future with its replay state: what the hot cache keeps.
pub(crate) struct RunInstance {
    pub state: SharedState,
    future: Option<WorkflowFuture>,
    output: Option<Result<Payload, WorkflowError>>,
    signal: Arc<WakeSignal>,
    waker: Waker,
    status: RunStatus,
    /// The message of the latest `run_blocked` since the run last started.
    blocked: Option<String>,
}

/// How an activation ended.
pub(crate) enum Outcome {
    /// Waiting for a payload, a timer or a retry: keep the instance hot.
    Suspended(RunInstance),
    /// Blocked, or handed over: nothing to keep.
    Done,
    /// The run has ended: nothing to keep, and no lease to give back (the
    /// store removes an ended run's queue entry, and its lease with it).
    Ended,
}

/// Why an activation stopped early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DriveError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl DriveError {
    /// Whether retrying the activation may succeed (the store failed), as
    /// opposed to the run having moved on (lease lost, run ended).
    pub(crate) fn is_transient(&self) -> bool {
        matches!(self, DriveError::Store(StoreError::Backend { .. }))
    }
}

/// What [`load`] found.
enum Loaded {
    /// The run's workflow, ready to be driven.
    Ready(RunInstance),
    /// It cannot run here (recorded why, if anything is to be recorded).
    Done,
    /// It ended: an attached child whose parent had ended was cancelled.
    Ended,
}

/// Builds a fresh instance for `run` by loading its log and starting its
/// workflow function.
async fn load(inner: &EngineInner, lease: &Lease) -> Result<Loaded, DriveError> {
    let run = lease.run_id;
    let log = inner.store.read_log(run).await?;
    inner.metrics.replays.fetch_add(1, Ordering::Relaxed);
    let Some(EventData::RunCreated {
        workflow,
        input,
        parent,
    }) = log.first().map(|e| e.data.clone())
    else {
        warn!(%run, "run has no run_created event; leaving it");
        return Ok(Loaded::Done);
    };
    if let Some(parent) = parent.filter(|p| !p.detached) {
        // An attached child outlives its parent only if the cancellation
        // its parent's end asked for did not happen (a crash in between):
        // it is cancelled here, the next time it runs.
        let (status, _) = status_of(&log);
        let parent_ended = match inner.store.get_run(parent.run).await? {
            Some(rec) => rec.status.is_terminal(),
            None => true,
        };
        if parent_ended && !status.is_terminal() {
            warn!(%run, parent = %parent.run, "parent run has ended: cancelling its attached child");
            match inner
                .store
                .append(run, vec![EventData::RunCancelled], Some(lease.id))
                .await
            {
                Ok(_) | Err(StoreError::RunTerminal { .. }) => return Ok(Loaded::Ended),
                Err(e) => return Err(e.into()),
            }
        }
    }
    let Some(registered) = inner.registry.get(&workflow).cloned() else {
        let message = format!(
            "workflow {workflow:?} is not registered in this engine: register it, then retry the \
             run (Engine::retry_blocked, `workflow unblock`)"
        );
        let (_, blocked) = status_of(&log);
        block(inner, lease, blocked.as_deref(), message).await?;
        return Ok(Loaded::Done);
    };
    tracing::Span::current().record("workflow", workflow.as_str());
    Ok(Loaded::Ready(RunInstance::start(
        &registered,
        run,
        log,
        input,
    )))
}

impl RunInstance {
    /// Starts the workflow function on a loaded log (nothing is delivered yet).
    pub(crate) fn start(
        registered: &crate::registry::Registered,
        run: workflow_store::RunId,
        log: Vec<Event>,
        input: Payload,
    ) -> Self {
        let (status, blocked) = status_of(&log);
        let state: SharedState = Arc::new(std::sync::Mutex::new(RunState::new(run, log)));
        let ctx = Context::new(state.clone(), run);
        let future = registered.start(ctx, input);
        let signal = Arc::new(WakeSignal::default());
        signal.woken.store(true, Ordering::SeqCst);
        RunInstance {
            state,
            future: Some(future),
            output: None,
            waker: Waker::from(signal.clone()),
            signal,
            status,
            blocked,
        }
    }

    /// What the workflow function returned, once it has (and before the
    /// driver records it).
    pub(crate) fn output(&self) -> Option<&Result<Payload, WorkflowError>> {
        self.output.as_ref()
    }

    /// Polls the workflow while it has wake-ups. `Err` if it panicked.
    pub(crate) fn poll_until_idle(&mut self) -> Result<(), String> {
        while !self.poll_some(u32::MAX)? {}
        Ok(())
    }

    /// Polls the workflow while it has wake-ups, at most `budget` times.
    /// `Ok(true)` once it is idle; `Err` if it panicked.
    fn poll_some(&mut self, budget: u32) -> Result<bool, String> {
        for _ in 0..budget {
            if !self.signal.woken.swap(false, Ordering::SeqCst) {
                return Ok(true);
            }
            let Some(fut) = self.future.as_mut() else {
                return Ok(true);
            };
            let mut cx = TaskContext::from_waker(&self.waker);
            match std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx))) {
                Ok(Poll::Pending) => {}
                Ok(Poll::Ready(out)) => {
                    self.future = None;
                    self.output = Some(out);
                }
                Err(panic) => {
                    let msg = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "unknown panic".into());
                    self.future = None;
                    return Err(format!("the workflow panicked: {msg}"));
                }
            }
        }
        Ok(!self.signal.woken.load(Ordering::SeqCst))
    }

    /// Tracks the run's status through newly known events.
    fn observe(&mut self, events: &[Event]) {
        for e in events {
            (self.status, self.blocked) = next_status((self.status, self.blocked.take()), &e.data);
        }
    }

    /// Undelivered events held in memory and their payload bytes.
    pub(crate) fn pending_footprint(&self) -> (usize, usize) {
        lock(&self.state).pending_footprint()
    }
}

fn status_of(log: &[Event]) -> (RunStatus, Option<String>) {
    log.iter()
        .fold((RunStatus::Pending, None), |s, e| next_status(s, &e.data))
}

fn next_status(
    (status, blocked): (RunStatus, Option<String>),
    data: &EventData,
) -> (RunStatus, Option<String>) {
    match data {
        EventData::RunStarted => (RunStatus::Running, None),
        EventData::RunBlocked { error } => (RunStatus::Blocked, Some(error.message.clone())),
        EventData::RunCompleted { .. } => (RunStatus::Completed, None),
        EventData::RunFailed { .. } => (RunStatus::Failed, None),
        EventData::RunCancelled => (RunStatus::Cancelled, None),
        _ => (status, blocked),
    }
}

/// Records `run_blocked` unless the run is already blocked for the same
/// reason. The store parks a blocked run: its timers no longer make it due,
/// so it stays inert until [`crate::Engine::retry_blocked`] wakes it.
async fn block(
    inner: &EngineInner,
    lease: &Lease,
    already: Option<&str>,
    message: String,
) -> Result<(), DriveError> {
    warn!(run = %lease.run_id, %message, "run blocked");
    if already != Some(message.as_str()) {
        inner
            .store
            .append(
                lease.run_id,
                vec![EventData::RunBlocked {
                    error: ErrorRecord::new(message),
                }],
                Some(lease.id),
            )
            .await?;
    }
    Ok(())
}

/// Reads the events appended since the instance last saw its log.
async fn catch_up(inner: &EngineInner, inst: &mut RunInstance) -> Result<(), DriveError> {
    let (run, known) = {
        let st = lock(&inst.state);
        (st.run_id, st.known())
    };
    let mut fresh = Vec::new();
    loop {
        let page = inner
            .store
            .read_events(run, known + fresh.len() as u64, workflow_store::READ_PAGE)
            .await?;
        let done = page.len() < workflow_store::READ_PAGE;
        fresh.extend(page);
        if done {
            break;
        }
    }
    inst.observe(&fresh);
    lock(&inst.state).extend_log(fresh);
    Ok(())
}

/// One activation: drives the run until it suspends, ends or is blocked.
pub(crate) async fn drive(
    inner: &EngineInner,
    lease: &mut Lease,
    stop: watch::Receiver<bool>,
) -> Result<Outcome, DriveError> {
    inner.metrics.activations.fetch_add(1, Ordering::Relaxed);
    let run = lease.run_id;
    // Subscribed before anything is read, so no later event slips past.
    let feed = inner.store.subscribe();
    let inst = match inner.cache.take(run) {
        Some(mut inst) => {
            catch_up(inner, &mut inst).await?;
            inst
        }
        // A fresh instance was just loaded with the whole log.
        None => match load(inner, lease).await? {
            Loaded::Ready(inst) => inst,
            Loaded::Done => return Ok(Outcome::Done),
            Loaded::Ended => return Ok(Outcome::Ended),
        },
    };
    if inst.status.is_terminal() {
        return Ok(Outcome::Ended);
    }
    // Step attempts of this activation write stream chunks under its lease.
    lock(&inst.state).stream_sink = Some(crate::stream::StreamSink::new(
        Arc::clone(&inner.store),
        lease.id,
    ));
    let ttl = inner.settings.lease_ttl;
    let stopping = *stop.borrow();
    let mut d = Driver {
        inner,
        takeover: lease.taken_over,
        lease,
        inst,
        prefix: Vec::new(),
        unwritten_outcome: false,
        feed,
        stopping,
        left_due: false,
        stop,
        renew_every: (ttl / 3).max(Duration::from_millis(10)),
        renew_at: Instant::now() + (ttl / 3).max(Duration::from_millis(10)),
    };
    if d.inst.status != RunStatus::Running {
        d.prefix.push(EventData::RunStarted);
    }
    d.run().await
}

struct Driver<'a> {
    inner: &'a EngineInner,
    lease: &'a mut Lease,
    inst: RunInstance,
    /// Events to put in front of the next write (`run_started`, and the
    /// records of an attempt whose result the workflow already has).
    prefix: Vec<EventData>,
    /// `prefix` holds the records of an attempt the workflow has seen the
    /// result of: no step body may run until they are written.
    unwritten_outcome: bool,
    /// The store's change feed (`None`: the store has none; poll instead).
    feed: Feed,
    stop: watch::Receiver<bool>,
    /// Shutting down: no new attempts; suspend once none is running.
    stopping: bool,
    /// A step was ready to start when shutdown stopped it.
    left_due: bool,
    /// The lease was taken over from a holder whose lease expired: the
    /// attempts it may have been running are counted before new ones start.
    takeover: bool,
    renew_every: Duration,
    /// When the lease is renewed next, whatever else wakes the loop.
    renew_at: Instant,
}

/// What the driver does at the live edge.
enum Next {
    Write(Vec<EventData>),
    /// Something changed in memory (a grant): poll again.
    Poll,
    /// A step attempt is running: keep the lease and wait for any source of
    /// progress; `deadline` is this run's next timer or retry.
    Hold {
        deadline: Option<Timestamp>,
    },
    Suspend,
    Stuck,
}

impl Driver<'_> {
    async fn run(mut self) -> Result<Outcome, DriveError> {
        loop {
            match self.inst.poll_some(POLL_BUDGET) {
                Err(message) => return self.finish_blocked(message).await,
                Ok(false) => {
                    // Still busy: let the runtime breathe, keep the lease.
                    self.renew_if_due().await?;
                    tokio::task::yield_now().await;
                    continue;
                }
                Ok(true) => {}
            }
            let nondeterminism = lock(&self.inst.state).nondeterminism.clone();
            if let Some(e) = nondeterminism {
                return self.finish_blocked(e.to_string()).await;
            }
            if lock(&self.inst.state).deliver_next() {
                continue;
            }
            if self.inst.status.is_terminal() {
                // Ended from outside (cancelled): running attempts are dropped.
                return Ok(Outcome::Ended);
            }
            if let Some(output) = self.inst.output.take() {
                match self.finish(output).await? {
                    Some(outcome) => return Ok(outcome),
                    None => continue,
                }
            }
            self.renew_if_due().await?;
            match self.next_at_live_edge() {
                Next::Write(events) => {
                    self.write(events).await?;
                }
                Next::Poll => {}
                Next::Hold { deadline } => self.wait(deadline).await?,
                Next::Suspend => {
                    if !self.prefix.is_empty() {
                        self.write(Vec::new()).await?;
                        continue;
                    }
                    if self.left_due {
                        // A step it would have started is left for the next
                        // engine: keep the run due past the lease's release.
                        self.inner.store.wake(self.lease.run_id).await?;
                    }
                    return Ok(Outcome::Suspended(self.inst));
                }
                Next::Stuck => {
                    return self
                        .finish_blocked(
                            "the workflow is waiting on something that is not a workflow operation \
                             (a channel, a tokio timer, a spawned task?): only Context operations \
                             can wake a durable workflow"
                                .into(),
                        )
                        .await;
                }
            }
        }
    }

    /// Records how the workflow ended, with the answers and disposals it
    /// gave on its way out. `None` if the workflow was replayed instead (see
    /// [`Driver::write`]): it ends again on the recorded history.
    async fn finish(
        &mut self,
        output: Result<Payload, WorkflowError>,
    ) -> Result<Option<Outcome>, DriveError> {
        let mut events = Vec::new();
        {
            let mut st = lock(&self.inst.state);
            let commands = std::mem::take(&mut st.commands);
            for command in commands {
                match command {
                    Command::Respond {
                        hook,
                        request_id,
                        response,
                    } => events.push(EventData::HookResponded {
                        hook,
                        request_id,
                        response,
                    }),
                    Command::Dispose(i) => {
                        if let Some(slot) = st.ops.get(&i) {
                            if slot.recorded {
                                events.push(EventData::HookDisposed {
                                    hook: slot.id.clone(),
                                });
                            }
                        }
                    }
                    Command::Create(i) => {
                        // A child started just before returning is still
                        // started (and, if attached, cancelled below).
                        if let Some(slot) = st.ops.get(&i) {
                            if let (false, Some(e)) = (slot.recorded, child_created(slot)) {
                                events.push(e);
                            }
                        }
                    }
                }
            }
        }
        events.push(match output {
            Ok(output) => EventData::RunCompleted { output },
            Err(e) => EventData::RunFailed {
                error: ErrorRecord::new(e.to_string()),
            },
        });
        if self.write(events).await? {
            return Ok(None);
        }
        let attached: Vec<_> = lock(&self.inst.state)
            .ops
            .values()
            .filter_map(|slot| match &slot.kind {
                SlotKind::Child(c) if slot.recorded && !c.detached && c.outcome.is_none() => {
                    Some(c.run)
                }
                _ => None,
            })
            .collect();
        for child in attached {
            cancel_child(self.inner, child).await?;
        }
        Ok(Some(Outcome::Ended))
    }

    async fn finish_blocked(mut self, message: String) -> Result<Outcome, DriveError> {
        if self.unwritten_outcome {
            // The attempt happened: keep its result.
            self.write(Vec::new()).await?;
        }
        block(
            self.inner,
            self.lease,
            self.inst.blocked.as_deref(),
            message,
        )
        .await?;
        Ok(Outcome::Done)
    }

    /// Renews the lease if its renewal time has come.
    async fn renew_if_due(&mut self) -> Result<(), DriveError> {
        if Instant::now() >= self.renew_at {
            self.renew().await?;
        }
        Ok(())
    }

    async fn renew(&mut self) -> Result<(), DriveError> {
        let ttl = self.inner.settings.lease_ttl;
        *self.lease = self.inner.store.renew_lease(self.lease, ttl).await?;
        self.renew_at = Instant::now() + self.renew_every;
        Ok(())
    }

    /// Waits for the first of: a wake-up of the workflow, this run's next
    /// timer or retry, new events for the run, the renewal time, shutdown.
    async fn wait(&mut self, deadline: Option<Timestamp>) -> Result<(), DriveError> {
        let poll = self.inner.settings.poll_interval;
        let timer = deadline
            .map(|at| at.saturating_duration_since(self.inner.store.now()))
            .map_or(poll, |d| d.min(poll));
        let run = self.lease.run_id;
        let known = lock(&self.inst.state).known();
        let has_feed = self.feed.is_some();
        let stopping = self.stopping;
        enum Woke {
            Workflow,
            Events,
            Timer,
            Renew,
            Stop,
        }
        let woke = tokio::select! {
            biased;
            _ = self.stop.changed(), if !stopping => Woke::Stop,
            _ = self.inst.signal.notify.notified() => Woke::Workflow,
            () = next_change(&mut self.feed, |c| {
                matches!(c, Change::Appended { run: r, next_seq } if *r == run && *next_seq > known)
            }) => Woke::Events,
            _ = tokio::time::sleep_until(self.renew_at) => Woke::Renew,
            _ = tokio::time::sleep(timer) => Woke::Timer,
        };
        match woke {
            Woke::Workflow => {}
            Woke::Events => catch_up(self.inner, &mut self.inst).await?,
            // Without a change feed, new events are found by polling.
            Woke::Timer if !has_feed => catch_up(self.inner, &mut self.inst).await?,
            Woke::Timer => {}
            Woke::Renew => self.renew().await?,
            Woke::Stop => self.stopping = true,
        }
        Ok(())
    }

    /// Decides the next move at the live edge (see the module docs).
    fn next_at_live_edge(&mut self) -> Next {
        let now = self.inner.store.now();
        let stopping = self.stopping;
        let takeover = std::mem::take(&mut self.takeover);
        let run = self.lease.run_id;
        let mut st = lock(&self.inst.state);
        let st = &mut *st;

        // 1. Finished attempts, in the order they finished.
        let mut finished: Vec<(u64, u64)> = st
            .ops
            .iter()
            .filter_map(|(&i, slot)| match &slot.kind {
                SlotKind::Step(s) => s.outcome.as_ref().map(|o| (o.finished, i)),
                _ => None,
            })
            .collect();
        if !finished.is_empty() {
            finished.sort_unstable();
            if let [(_, i)] = finished[..] {
                if let Some(records) = deliver_before_recording(st, i, now) {
                    self.prefix.extend(records);
                    self.unwritten_outcome = true;
                    return Next::Poll;
                }
            }
            let mut events = Vec::new();
            for (_, i) in finished {
                let Some(slot) = st.ops.get_mut(&i) else {
                    continue;
                };
                let id = slot.id.clone();
                let recorded = slot.recorded;
                let SlotKind::Step(s) = &mut slot.kind else {
                    continue;
                };
                let Some(outcome) = s.outcome.take() else {
                    continue;
                };
                let result = outcome.result.map_err(|e| {
                    let retry_in = match e.kind {
                        StepErrorKind::Fatal => None,
                        StepErrorKind::RetryAfter(d) => Some(d),
                        StepErrorKind::Retryable => {
                            Some(s.options.retry_delay(run, &id, outcome.attempt))
                        }
                    };
                    (e.message, retry_in)
                });
                let attempt = outcome.attempt;
                record_attempt(&mut events, s, id, recorded, attempt, result, now);
            }
            return Next::Write(events);
        }

        // 2. After a takeover: the attempts the previous holder may have been
        // running when it stopped (every step that would start now) are lost.
        if takeover {
            let mut events = Vec::new();
            for slot in st.ops.values_mut() {
                if slot.dropped || slot.waker.is_none() {
                    continue;
                }
                let id = slot.id.clone();
                let recorded = slot.recorded;
                let SlotKind::Step(s) = &mut slot.kind else {
                    continue;
                };
                let startable = match s.status {
                    StepStatus::Open => true,
                    StepStatus::Retrying { retry_at } => retry_at <= now,
                    _ => false,
                };
                if !startable || s.grant.is_some() {
                    continue;
                }
                let attempt = s.attempts_started + 1;
                let message = format!(
                    "attempt {attempt} was lost: the engine running it stopped (a crash, a kill, \
                     a lost lease) before its outcome was recorded"
                );
                let lost = Err((message, Some(s.options.retry_delay(run, &id, attempt))));
                record_attempt(&mut events, s, id, recorded, attempt, lost, now);
            }
            if !events.is_empty() {
                return Next::Write(events);
            }
        }

        // 3. What the code asked to record, in program order. A step running
        // on the fast path is recorded with its outcome; a batch ends before a
        // command on a hook whose creation is in it (the creation may turn out
        // a conflict, which the command must then see).
        let in_flight = |s: &StepSlot| s.grant.is_some() || s.outcome.is_some();
        let steps_in_flight = st
            .ops
            .values()
            .any(|slot| !slot.dropped && matches!(&slot.kind, SlotKind::Step(s) if in_flight(s)));
        let mut events = Vec::new();
        let mut created_now = Vec::new();
        let mut commands = std::mem::take(&mut st.commands).into_iter().peekable();
        let mut kept = Vec::new();
        while let Some(command) = commands.next() {
            match &command {
                Command::Create(i) => {
                    let Some(slot) = st.ops.get_mut(i) else {
                        continue; // forgotten: nothing to record
                    };
                    if slot.recorded {
                        continue;
                    }
                    let id = slot.id.clone();
                    match &mut slot.kind {
                        // A hook's token may be in use already: record it even if dropped.
                        SlotKind::Hook(h) if h.invalid => continue,
                        SlotKind::Hook(h) => {
                            created_now.push(*i);
                            events.push(EventData::HookCreated {
                                hook: id,
                                token: h.token.clone(),
                                metadata: h.metadata.clone(),
                                webhook: h.webhook.clone(),
                            });
                        }
                        // Recorded even if dropped: a child is started
                        // whether or not it is awaited.
                        SlotKind::Child(_) | SlotKind::Patch(_) => {
                            events.extend(child_created(slot));
                        }
                        _ if slot.dropped => continue,
                        SlotKind::Wait(w) => events.push(EventData::WaitCreated {
                            wait: id,
                            resume_at: w.resume_at,
                        }),
                        SlotKind::Step(s) if in_flight(s) => {
                            kept.push(command);
                            continue;
                        }
                        SlotKind::Step(s) => {
                            let alone = events.is_empty()
                                && commands.peek().is_none()
                                && kept.is_empty()
                                && !steps_in_flight;
                            if alone && slot.waker.is_some() && !stopping {
                                if self.unwritten_outcome {
                                    // The previous step's result first: a
                                    // step body never runs on an unwritten one.
                                    kept.push(command);
                                    st.commands = kept;
                                    return Next::Write(Vec::new());
                                }
                                // Fast path: run first, record creation with the outcome.
                                s.grant = Some(1);
                                slot.wake();
                                kept.push(command);
                                st.commands = kept;
                                return Next::Poll;
                            }
                            events.push(EventData::StepCreated {
                                step: id,
                                name: s.name.clone(),
                                input_digest: None,
                            });
                        }
                    }
                    kept.push(command);
                }
                Command::Dispose(i) => {
                    if created_now.contains(i) {
                        kept.push(command);
                        kept.extend(commands.by_ref());
                        break;
                    }
                    let Some(slot) = st.ops.get(i) else { continue };
                    if let SlotKind::Hook(h) = &slot.kind {
                        if slot.recorded && !h.disposed && h.conflict.is_none() {
                            events.push(EventData::HookDisposed {
                                hook: slot.id.clone(),
                            });
                            kept.push(command);
                        }
                    }
                }
                Command::Respond {
                    hook,
                    request_id,
                    response,
                } => {
                    let pending_creation = created_now
                        .iter()
                        .any(|i| st.ops.get(i).is_some_and(|s| s.id == *hook));
                    if pending_creation {
                        kept.push(command);
                        kept.extend(commands.by_ref());
                        break;
                    }
                    events.push(EventData::HookResponded {
                        hook: hook.clone(),
                        request_id: request_id.clone(),
                        response: response.clone(),
                    });
                    kept.push(command);
                }
            }
        }
        // Kept commands become moot as their records are delivered.
        st.commands = kept;
        if !events.is_empty() {
            return Next::Write(events);
        }

        // 4. Due timers, retries, abandoned steps; steps to (re)start.
        let mut events = Vec::new();
        let mut granted = false;
        let mut deadline: Option<Timestamp> = None;
        let mut earliest = |at: Timestamp| {
            deadline = Some(deadline.map_or(at, |d: Timestamp| d.min(at)));
        };
        for slot in st.ops.values_mut() {
            if !slot.recorded {
                continue;
            }
            let id = slot.id.clone();
            match &mut slot.kind {
                SlotKind::Wait(w) if !w.done && w.resume_at <= now => {
                    events.push(EventData::WaitCompleted { wait: id });
                }
                SlotKind::Wait(w) if !w.done && !slot.dropped => earliest(w.resume_at),
                SlotKind::Step(s) if !in_flight(s) => {
                    let due = match s.status {
                        StepStatus::Open => true,
                        StepStatus::Retrying { retry_at } if retry_at <= now => true,
                        StepStatus::Retrying { retry_at } => {
                            earliest(retry_at);
                            false
                        }
                        _ => false,
                    };
                    if !due {
                        continue;
                    }
                    if slot.dropped {
                        if matches!(s.status, StepStatus::Retrying { .. }) {
                            events.push(EventData::StepFailed {
                                step: id,
                                error: ErrorRecord::new(
                                    "abandoned: the workflow no longer waits for this step",
                                ),
                            });
                        }
                        continue;
                    }
                    if slot.waker.is_none() {
                        // Not awaited yet: granted when the workflow polls it.
                        continue;
                    }
                    if stopping {
                        // Not now: the next engine runs it.
                        self.left_due = true;
                        continue;
                    }
                    s.grant = Some(s.attempts_started + 1);
                    granted = true;
                    slot.wake();
                }
                _ => {}
            }
        }
        if !events.is_empty() {
            return Next::Write(events);
        }
        if granted {
            return Next::Poll;
        }
        // Hold the lease while an attempt runs, and while a due retry is
        // granted to a step the workflow holds without awaiting (its queue
        // row is due: releasing would only bring the run straight back).
        let holding = st.ops.values().any(|slot| {
            !slot.dropped
                && matches!(&slot.kind, SlotKind::Step(s)
                    if s.running || (s.grant.is_some() && matches!(s.status, StepStatus::Retrying { .. })))
        });
        let running = st
            .ops
            .values()
            .any(|slot| !slot.dropped && matches!(&slot.kind, SlotKind::Step(s) if s.running));
        if running || (holding && !stopping) {
            return Next::Hold { deadline };
        }
        if st.ops.values().any(|slot| slot.unresolved()) || self.inst.future.is_none() {
            return Next::Suspend;
        }
        Next::Stuck
    }

    /// Appends `events` (after any prefix) with the lease as fence, and adds
    /// what was recorded to the run's log.
    ///
    /// Returns `true` if the workflow was replayed from the log afterwards
    /// instead: it had read `now()` while ahead of the log, so only the
    /// records of the attempt it got ahead on are written, and `events`
    /// (what it did next) are left for the replay to issue again.
    async fn write(&mut self, events: Vec<EventData>) -> Result<bool, DriveError> {
        let mut batch = std::mem::take(&mut self.prefix);
        let replay = std::mem::take(&mut self.unwritten_outcome) && {
            let mut st = lock(&self.inst.state);
            st.ahead_of_log = false;
            std::mem::take(&mut st.read_time_ahead)
        };
        if !replay {
            batch.extend(events);
        }
        if batch.is_empty() {
            return Ok(false);
        }
        let run = self.lease.run_id;
        let appended = self
            .inner
            .store
            .append(run, batch, Some(self.lease.id))
            .await?;
        let known = lock(&self.inst.state).known();
        let first = appended.events.first().map_or(known, |e| e.seq);
        let mut events = Vec::new();
        if first > known {
            // Others (resume_hook) appended in between: read the gap first.
            events = self
                .inner
                .store
                .read_events(
                    run,
                    known,
                    usize::try_from(first - known).unwrap_or(usize::MAX),
                )
                .await?;
        }
        events.extend(appended.events);
        for e in &events {
            trace_recorded(e);
        }
        self.inst.observe(&events);
        {
            let mut st = lock(&self.inst.state);
            st.extend_log(events);
            st.prune();
        }
        if replay {
            // The run's log has everything the workflow saw (its first
            // event is `run_created`, so the workflow is found again).
            if let Loaded::Ready(inst) = load(self.inner, self.lease).await? {
                self.inst = inst;
            }
        }
        Ok(replay)
    }
}

/// Hands the successful outcome of attempt of step `i` to the workflow
/// before it is recorded, and returns its records for the next write, when
/// nothing recorded after it could have been seen first on replay: the run
/// has no other open operation (no step, timer or retry that could win a race
/// with it, no live hook that a payload could reach meanwhile) and nothing
/// else waits to be recorded. What the workflow does next then goes into the
/// same write, so a run's last step is recorded with `run_completed`, and a
/// step followed by a sleep or a hook with that creation. A cancellation
/// that lands first makes the write fail, as it would have anyway; a step body
/// never runs before the records are written (see the fast path).
fn deliver_before_recording(
    st: &mut crate::replay::RunState,
    i: u64,
    now: Timestamp,
) -> Option<Vec<EventData>> {
    let only_this = st.ops.iter().all(|(&j, slot)| {
        j == i
            || match &slot.kind {
                SlotKind::Step(s) => {
                    !matches!(s.status, StepStatus::Open | StepStatus::Retrying { .. })
                }
                SlotKind::Wait(w) => w.done,
                SlotKind::Hook(h) => {
                    !slot.recorded || h.disposed || h.conflict.is_some() || h.invalid
                }
                // A child's end may be recorded meanwhile and win a race.
                SlotKind::Child(c) => c.outcome.is_some(),
                SlotKind::Patch(_) => true,
            }
    });
    let commands_only_this = st
        .commands
        .iter()
        .all(|c| matches!(c, Command::Create(j) if *j == i));
    if !only_this || !commands_only_this {
        return None;
    }
    let slot = st.ops.get_mut(&i)?;
    let id = slot.id.clone();
    let recorded = slot.recorded;
    let SlotKind::Step(s) = &mut slot.kind else {
        return None;
    };
    let attempt = match &s.outcome {
        Some(outcome) if outcome.result.is_ok() => outcome.attempt,
        _ => return None,
    };
    let Some(Ok(result)) = s.outcome.take().map(|o| o.result) else {
        return None;
    };
    let mut records = Vec::new();
    record_attempt(
        &mut records,
        s,
        id,
        recorded,
        attempt,
        Ok(result.clone()),
        now,
    );
    s.status = StepStatus::Completed(result);
    slot.wake();
    st.commands.clear();
    // Its records will carry the time of the write, a little later: a sleep
    // started now is measured from here (its recorded end decides on
    // replay), and a read of `now()` makes the driver replay the run once the
    // records are written, so that it sees the recorded time.
    st.now = st.now.max(now);
    st.ahead_of_log = true;
    Some(records)
}

/// The creation event of a child or patch-marker slot (`None` for others).
fn child_created(slot: &crate::replay::OpSlot) -> Option<EventData> {
    match &slot.kind {
        SlotKind::Child(c) => Some(EventData::ChildCreated {
            child: slot.id.clone(),
            run: c.run,
            workflow: c.workflow.clone(),
            input: c.input.clone(),
            detached: c.detached,
        }),
        SlotKind::Patch(p) => Some(EventData::PatchMarked {
            marker: slot.id.clone(),
            patch: p.patch.clone(),
        }),
        _ => None,
    }
}

/// Cancels an attached child run and, in turn, its attached children;
/// children that have ended already are left as they are.
pub(crate) async fn cancel_child(
    inner: &EngineInner,
    child: workflow_store::RunId,
) -> Result<(), StoreError> {
    let mut todo = vec![child];
    while let Some(run) = todo.pop() {
        match inner
            .store
            .append(run, vec![EventData::RunCancelled], None)
            .await
        {
            Ok(_) | Err(StoreError::RunTerminal { .. }) | Err(StoreError::RunNotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        todo.extend(attached_children(inner, run).await?);
    }
    Ok(())
}

/// The attached children `run` has started, from its log.
pub(crate) async fn attached_children(
    inner: &EngineInner,
    run: workflow_store::RunId,
) -> Result<Vec<workflow_store::RunId>, StoreError> {
    let log = match inner.store.read_log(run).await {
        Ok(log) => log,
        Err(StoreError::RunNotFound { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(log
        .into_iter()
        .filter_map(|e| match e.data {
            EventData::ChildCreated {
                run,
                detached: false,
                ..
            } => Some(run),
            _ => None,
        })
        .collect())
}

/// The records of one finished attempt: the step's creation (if it is not
/// recorded yet), `step_started`, and its outcome: `step_completed`, or for an
/// error (message, retry delay) `step_retrying` after the delay, or
/// `step_failed` when the error is fatal (no delay) or attempts have run out.
fn record_attempt(
    events: &mut Vec<EventData>,
    s: &StepSlot,
    step: CorrelationId,
    recorded: bool,
    attempt: u32,
    result: Result<Payload, (String, Option<Duration>)>,
    now: Timestamp,
) {
    if !recorded {
        events.push(EventData::StepCreated {
            step: step.clone(),
            name: s.name.clone(),
            input_digest: None,
        });
    }
    events.push(EventData::StepStarted {
        step: step.clone(),
        attempt,
    });
    events.push(match result {
        Ok(result) => EventData::StepCompleted { step, result },
        Err((message, retry_in)) => {
            let error = ErrorRecord::new(message);
            match retry_in {
                Some(d) if attempt < s.options.max_attempts => EventData::StepRetrying {
                    step,
                    error,
                    retry_at: now.saturating_add(d),
                },
                _ => EventData::StepFailed { step, error },
            }
        }
    });
}

/// Logs the recorded events an operator wants to see.
fn trace_recorded(e: &Event) {
    match &e.data {
        EventData::StepRetrying {
            step,
            error,
            retry_at,
        } => {
            tracing::info!(%step, error = %error.message, retry_at = retry_at.as_millis(), "step attempt failed; will retry")
        }
        EventData::StepFailed { step, error } => {
            tracing::warn!(%step, error = %error.message, "step failed")
        }
        EventData::WaitCompleted { wait } => tracing::debug!(%wait, "timer fired"),
        EventData::HookConflict { hook, holder, .. } => {
            tracing::warn!(%hook, %holder, "hook token already in use")
        }
        EventData::RunCompleted { .. } => tracing::info!("run completed"),
        EventData::RunFailed { error } => tracing::info!(error = %error.message, "run failed"),
        _ => {}
    }
}
