//! The driver: one activation of one leased run.
//!
//! Live execution and replay are the same loop:
//!
//! 1. poll the workflow until it is idle (no wake-up left);
//! 2. if the log has undelivered events, deliver the next one and go to 1;
//! 3. at the live edge, record what the workflow is waiting for, in this order:
//!    finished step attempts (in the order they finished), then new commands
//!    (all `*_created` of one stall in one write), then due timers and retries;
//!    each write's events go back through step 2;
//! 4. if steps are running, wait for them (renewing the lease);
//! 5. otherwise the run is suspended: release the lease, keep the future hot.
//!
//! A single new step takes the fast path: it runs first and its
//! `step_created`, `step_started` and outcome are recorded in one write, so a
//! sequential step costs one flushed write. A crash before that write loses
//! nothing but the attempt, which runs again (steps are at least once).

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Wake, Waker};
use std::time::Duration;

use tokio::sync::Notify;
use tracing::warn;
use workflow_store::{
    ErrorRecord, Event, EventData, EventKind, Lease, Payload, RunStatus, StoreError,
};

use crate::context::Context;
use crate::engine::EngineInner;
use crate::error::{StepErrorKind, WorkflowError};
use crate::registry::WorkflowFuture;
use crate::replay::{lock, RunState, SharedState, SlotKind, StepStatus};

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
}

/// How an activation ended.
pub(crate) enum Outcome {
    /// Waiting for a payload, a timer or a retry: keep the instance hot.
    Suspended(RunInstance),
    /// Ended, blocked, or handed over: nothing to keep.
    Done,
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

/// Builds a fresh instance for `run` by loading its log and starting its
/// workflow function; `None` (after recording why) if it cannot run here.
async fn load(inner: &EngineInner, lease: &Lease) -> Result<Option<RunInstance>, DriveError> {
    let run = lease.run_id;
    let log = inner.store.read_log(run).await?;
    let Some(EventData::RunCreated { workflow, input }) = log.first().map(|e| e.data.clone())
    else {
        warn!(%run, "run has no run_created event; leaving it");
        return Ok(None);
    };
    let Some(registered) = inner.registry.get(&workflow).cloned() else {
        let message = format!(
            "workflow {workflow:?} is not registered in this engine: register it, then wake the run"
        );
        block(inner, lease, &log, message).await?;
        return Ok(None);
    };
    tracing::Span::current().record("workflow", workflow.as_str());
    Ok(Some(RunInstance::start(&registered, run, log, input)))
}

impl RunInstance {
    /// Starts the workflow function on a loaded log (nothing is delivered yet).
    pub(crate) fn start(
        registered: &crate::registry::Registered,
        run: workflow_store::RunId,
        log: Vec<Event>,
        input: Payload,
    ) -> Self {
        let status = status_of(&log);
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
        }
    }

    /// What the workflow function returned, once it has (and before the
    /// driver records it).
    pub(crate) fn output(&self) -> Option<&Result<Payload, WorkflowError>> {
        self.output.as_ref()
    }

    /// Polls the workflow while it has wake-ups. `Err` if it panicked.
    pub(crate) fn poll_until_idle(&mut self) -> Result<(), String> {
        while self.signal.woken.swap(false, Ordering::SeqCst) {
            let Some(fut) = self.future.as_mut() else {
                return Ok(());
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
        Ok(())
    }
}

fn status_of(log: &[Event]) -> RunStatus {
    log.iter()
        .fold(RunStatus::Pending, |s, e| next_status(s, e.kind()))
}

fn next_status(s: RunStatus, kind: EventKind) -> RunStatus {
    match kind {
        EventKind::RunStarted => RunStatus::Running,
        EventKind::RunBlocked => RunStatus::Blocked,
        EventKind::RunCompleted => RunStatus::Completed,
        EventKind::RunFailed => RunStatus::Failed,
        EventKind::RunCancelled => RunStatus::Cancelled,
        _ => s,
    }
}

/// Records `run_blocked` unless the run is already blocked for the same reason.
async fn block(
    inner: &EngineInner,
    lease: &Lease,
    log: &[Event],
    message: String,
) -> Result<(), DriveError> {
    let already = log.iter().rev().find_map(|e| match &e.data {
        EventData::RunBlocked { error } => Some(error.message == message),
        EventData::RunStarted => Some(false),
        _ => None,
    });
    warn!(run = %lease.run_id, %message, "run blocked");
    if already != Some(true) {
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

/// Reads the events appended since a cached instance last ran.
async fn catch_up(inner: &EngineInner, inst: &mut RunInstance) -> Result<(), DriveError> {
    let (run, known) = {
        let st = lock(&inst.state);
        (st.run_id, st.log.len() as u64)
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
    for e in &fresh {
        inst.status = next_status(inst.status, e.kind());
    }
    lock(&inst.state).extend_log(fresh);
    Ok(())
}

/// One activation: drives the run until it suspends, ends or is blocked.
pub(crate) async fn drive(inner: &EngineInner, lease: &mut Lease) -> Result<Outcome, DriveError> {
    let run = lease.run_id;
    let inst = match inner.cache.take(run) {
        Some(mut inst) => {
            catch_up(inner, &mut inst).await?;
            inst
        }
        // A fresh instance was just loaded with the whole log.
        None => match load(inner, lease).await? {
            Some(inst) => inst,
            None => return Ok(Outcome::Done),
        },
    };
    if inst.status.is_terminal() {
        return Ok(Outcome::Done);
    }
    let mut d = Driver {
        inner,
        lease,
        inst,
        prefix: Vec::new(),
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
    /// Events to put in front of the next write (`run_started`).
    prefix: Vec<EventData>,
}

/// What the driver does at the live edge.
enum Next {
    Write(Vec<EventData>),
    /// Something changed in memory (a grant): poll again.
    Poll,
    /// Steps are running: wait for them.
    Wait,
    Suspend,
    Stuck,
}

impl Driver<'_> {
    async fn run(mut self) -> Result<Outcome, DriveError> {
        loop {
            if let Err(message) = self.inst.poll_until_idle() {
                return self.finish_blocked(message).await;
            }
            let nondeterminism = lock(&self.inst.state).nondeterminism.clone();
            if let Some(e) = nondeterminism {
                return self.finish_blocked(e.to_string()).await;
            }
            if lock(&self.inst.state).deliver_next() {
                continue;
            }
            if let Some(output) = self.inst.output.take() {
                // Answers and disposals the workflow gave on its way out are
                // recorded with its end.
                let mut events = Vec::new();
                for slot in lock(&self.inst.state).ops.values() {
                    if let (true, SlotKind::Hook(h)) = (slot.recorded, &slot.kind) {
                        events.extend(hook_records(slot.id.clone(), h));
                    }
                }
                let end = match output {
                    Ok(output) => EventData::RunCompleted { output },
                    Err(e) => EventData::RunFailed {
                        error: ErrorRecord::new(e.to_string()),
                    },
                };
                events.push(end);
                self.write(events).await?;
                return Ok(Outcome::Done);
            }
            match self.next_at_live_edge() {
                Next::Write(events) => self.write(events).await?,
                Next::Poll => {}
                Next::Wait => self.wait_for_steps().await?,
                Next::Suspend => {
                    if !self.prefix.is_empty() {
                        self.write(Vec::new()).await?;
                        continue;
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
            if self.inst.status.is_terminal() {
                return Ok(Outcome::Done);
            }
        }
    }

    async fn finish_blocked(self, message: String) -> Result<Outcome, DriveError> {
        let log = lock(&self.inst.state).log.clone();
        block(self.inner, self.lease, &log, message).await?;
        Ok(Outcome::Done)
    }

    /// Decides the next move at the live edge (see the module docs).
    fn next_at_live_edge(&mut self) -> Next {
        let now = self.inner.store.now();
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
                if !recorded {
                    events.push(EventData::StepCreated {
                        step: id.clone(),
                        name: s.name.clone(),
                        input_digest: None,
                    });
                }
                events.push(EventData::StepStarted {
                    step: id.clone(),
                    attempt: outcome.attempt,
                });
                events.push(match outcome.result {
                    Ok(result) => EventData::StepCompleted { step: id, result },
                    Err(e) => {
                        let error = ErrorRecord::new(e.message.clone());
                        let retry_in = match e.kind {
                            StepErrorKind::Fatal => None,
                            _ if outcome.attempt >= s.options.max_attempts => None,
                            StepErrorKind::RetryAfter(d) => Some(d),
                            StepErrorKind::Retryable => {
                                Some(s.options.backoff.delay(outcome.attempt))
                            }
                        };
                        match retry_in {
                            Some(d) => EventData::StepRetrying {
                                step: id,
                                error,
                                retry_at: now.saturating_add(d),
                            },
                            None => EventData::StepFailed { step: id, error },
                        }
                    }
                });
            }
            return Next::Write(events);
        }

        // 2. New commands.
        // A step is in flight from its grant until its outcome is recorded.
        let in_flight = |s: &crate::replay::StepSlot| s.grant.is_some() || s.outcome.is_some();
        let new: Vec<u64> = st
            .ops
            .iter()
            .filter(|(_, slot)| !slot.recorded)
            .filter(|(_, slot)| match &slot.kind {
                // A hook's token may be in use already: record it even if dropped.
                SlotKind::Hook(h) => !h.invalid,
                _ => !slot.dropped,
            })
            .filter(|(_, slot)| !matches!(&slot.kind, SlotKind::Step(s) if in_flight(s)))
            .map(|(&i, _)| i)
            .collect();
        let steps_in_flight = st
            .ops
            .values()
            .any(|slot| !slot.dropped && matches!(&slot.kind, SlotKind::Step(s) if in_flight(s)));
        if let [only] = new[..] {
            if !steps_in_flight {
                if let Some(slot) = st.ops.get_mut(&only) {
                    // Only a step the workflow is awaiting (it registered a waker).
                    if let (SlotKind::Step(s), Some(_)) = (&mut slot.kind, &slot.waker) {
                        // Fast path: run first, record creation with the outcome.
                        s.grant = Some(1);
                        slot.wake();
                        return Next::Poll;
                    }
                }
            }
        }
        if !new.is_empty() {
            let mut events = Vec::with_capacity(new.len());
            for i in new {
                let Some(slot) = st.ops.get(&i) else { continue };
                let id = slot.id.clone();
                events.push(match &slot.kind {
                    SlotKind::Step(s) => EventData::StepCreated {
                        step: id,
                        name: s.name.clone(),
                        input_digest: None,
                    },
                    SlotKind::Wait(w) => EventData::WaitCreated {
                        wait: id,
                        resume_at: w.resume_at,
                    },
                    SlotKind::Hook(h) => EventData::HookCreated {
                        hook: id,
                        token: h.token.clone(),
                        metadata: h.metadata.clone(),
                        webhook: h.webhook.clone(),
                    },
                });
            }
            return Next::Write(events);
        }

        // 3. Due timers, retries, dispose requests; steps to (re)start.
        let mut events = Vec::new();
        let mut granted = false;
        for slot in st.ops.values_mut() {
            if !slot.recorded {
                continue;
            }
            let id = slot.id.clone();
            match &mut slot.kind {
                SlotKind::Wait(w) if !w.done && w.resume_at <= now => {
                    events.push(EventData::WaitCompleted { wait: id });
                }
                SlotKind::Hook(h) => events.extend(hook_records(id, h)),
                SlotKind::Step(s) if !in_flight(s) => {
                    let due = match s.status {
                        StepStatus::Open => true,
                        StepStatus::Retrying { retry_at } => retry_at <= now,
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
        if st
            .ops
            .values()
            .any(|slot| !slot.dropped && matches!(&slot.kind, SlotKind::Step(s) if in_flight(s)))
        {
            return Next::Wait;
        }
        if st.ops.values().any(|slot| slot.unresolved()) || self.inst.future.is_none() {
            return Next::Suspend;
        }
        Next::Stuck
    }

    /// Appends `events` (after any prefix) with the lease as fence, and adds
    /// what was recorded to the run's log.
    async fn write(&mut self, events: Vec<EventData>) -> Result<(), DriveError> {
        let mut batch = std::mem::take(&mut self.prefix);
        batch.extend(events);
        if batch.is_empty() {
            return Ok(());
        }
        let run = self.lease.run_id;
        let appended = self
            .inner
            .store
            .append(run, batch, Some(self.lease.id))
            .await?;
        let known = lock(&self.inst.state).log.len() as u64;
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
            self.inst.status = next_status(self.inst.status, e.kind());
            trace_recorded(e);
        }
        let mut st = lock(&self.inst.state);
        st.extend_log(events);
        st.prune();
        Ok(())
    }

    /// Waits until a running step wakes the workflow, renewing the lease.
    async fn wait_for_steps(&mut self) -> Result<(), DriveError> {
        let ttl = self.inner.settings.lease_ttl;
        let renew_after = (ttl / 3).max(Duration::from_millis(10));
        loop {
            if self.inst.signal.woken.load(Ordering::SeqCst) {
                return Ok(());
            }
            tokio::select! {
                _ = self.inst.signal.notify.notified() => return Ok(()),
                _ = tokio::time::sleep(renew_after) => {
                    *self.lease = self.inner.store.renew_lease(self.lease, ttl).await?;
                }
            }
        }
    }
}

/// Events for a hook's unrecorded answers and dispose request.
fn hook_records(id: workflow_store::CorrelationId, h: &crate::replay::HookSlot) -> Vec<EventData> {
    let mut events = Vec::new();
    for (request_id, response) in &h.pending_responses {
        if !h.responded.contains(request_id) {
            events.push(EventData::HookResponded {
                hook: id.clone(),
                request_id: request_id.clone(),
                response: response.clone(),
            });
        }
    }
    if h.dispose_requested && !h.disposed && h.conflict.is_none() {
        events.push(EventData::HookDisposed { hook: id });
    }
    events
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
