//! Model-based property test: random operation sequences applied to the backend
//! and to a reference model; every observable result must agree.
//!
//! The model is deliberately naive: it keeps each run's log as a `Vec` and
//! derives everything (status, live hooks, open operations, due times, whether
//! a blocked run is parked) by scanning logs, so it shares no code with
//! [`crate::backend`]. Operations draw their runs, correlation ids and tokens
//! from small pools, so duplicates, unknown ids, token conflicts and writes to
//! ended runs come up often.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};

use super::{cid, payload, token, Backend};
use crate::clock::ManualClock;
use crate::error::StoreError;
use crate::event::{ErrorRecord, Event, EventData, EventKind, Payload, Timestamp};
use crate::id::RunId;
use crate::record::{NewRun, RunQuery, RunStatus};
use crate::store::Store;

const RUNS: u8 = 4;
const OPS_PER_RUN: u8 = 4;
const TOKENS: u8 = 3;

/// One event to append, by pool index.
#[derive(Clone, Debug)]
enum EventSpec {
    /// `run_started`
    Started,
    /// `run_completed`
    Completed,
    /// `run_failed`
    Failed,
    /// `run_cancelled`
    Cancelled,
    /// `run_blocked`
    Blocked,
    /// `step_created`
    StepCreated(u8),
    /// `step_started`
    StepStarted(u8),
    /// `step_completed`
    StepCompleted(u8),
    /// `step_retrying`, due after this many seconds
    StepRetrying(u8, u8),
    /// `step_failed`
    StepFailed(u8),
    /// `hook_created` with a token from the pool
    HookCreated(u8, u8),
    /// `hook_received`
    HookReceived(u8),
    /// `hook_responded`
    HookResponded(u8),
    /// `hook_disposed`
    HookDisposed(u8),
    /// `wait_created`, due after this many seconds
    WaitCreated(u8, u8),
    /// `wait_completed`
    WaitCompleted(u8),
}

/// One store operation, by pool index.
#[derive(Clone, Debug)]
enum Op {
    /// `create_run` (workflow and input from tiny pools, so repeats collide).
    Create { run: u8, workflow: u8, input: u8 },
    /// `append` of a batch.
    Append { run: u8, events: Vec<EventSpec> },
    /// `resume_hook`.
    Resume { token: u8, payload: u8 },
    /// `wake`.
    Wake { run: u8 },
    /// Move the clock (forward by seconds, or back by one second).
    Tick { seconds: u8, backwards: bool },
    /// Lease everything due, compare, release it all.
    LeaseAll,
    /// Compare `read_events` pages.
    Read { run: u8, from: u8, limit: u8 },
    /// Compare `list_runs` pages.
    List {
        status: Option<u8>,
        after: Option<u8>,
        limit: u8,
    },
}

fn c(i: u8) -> u8 {
    i % OPS_PER_RUN
}

fn event_spec() -> impl Strategy<Value = EventSpec> {
    let op = 0..OPS_PER_RUN;
    prop_oneof![
        1 => Just(EventSpec::Started),
        1 => Just(EventSpec::Completed),
        1 => Just(EventSpec::Failed),
        1 => Just(EventSpec::Cancelled),
        3 => Just(EventSpec::Blocked),
        4 => op.clone().prop_map(EventSpec::StepCreated),
        2 => op.clone().prop_map(EventSpec::StepStarted),
        3 => op.clone().prop_map(EventSpec::StepCompleted),
        2 => (op.clone(), 0..20u8).prop_map(|(a, b)| EventSpec::StepRetrying(a, b)),
        1 => op.clone().prop_map(EventSpec::StepFailed),
        4 => (op.clone(), 0..TOKENS).prop_map(|(a, b)| EventSpec::HookCreated(a, b)),
        2 => op.clone().prop_map(EventSpec::HookReceived),
        1 => op.clone().prop_map(EventSpec::HookResponded),
        2 => op.clone().prop_map(EventSpec::HookDisposed),
        3 => (op.clone(), 0..20u8).prop_map(|(a, b)| EventSpec::WaitCreated(a, b)),
        2 => op.prop_map(EventSpec::WaitCompleted),
    ]
}

// The operation strategy.
fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..RUNS, 0..2u8, 0..2u8).prop_map(|(run, workflow, input)| Op::Create { run, workflow, input }),
        8 => (0..RUNS, prop::collection::vec(event_spec(), 0..4)).prop_map(|(run, events)| Op::Append { run, events }),
        3 => (0..TOKENS, any::<u8>()).prop_map(|(token, payload)| Op::Resume { token, payload }),
        1 => (0..RUNS).prop_map(|run| Op::Wake { run }),
        2 => (0..15u8, prop::bool::weighted(0.1)).prop_map(|(seconds, backwards)| Op::Tick { seconds, backwards }),
        2 => Just(Op::LeaseAll),
        2 => (0..RUNS, 0..8u8, 1..6u8).prop_map(|(run, from, limit)| Op::Read { run, from, limit }),
        1 => (prop::option::of(0..6u8), prop::option::of(0..RUNS), 1..5u8)
            .prop_map(|(status, after, limit)| Op::List { status, after, limit }),
    ]
}

fn build(spec: &EventSpec, now: Timestamp) -> EventData {
    let secs = |s: u8| now.saturating_add(Duration::from_secs(u64::from(s)));
    let name = |kind: &str, i: u8| cid(&format!("{kind}:{}", c(i)));
    match *spec {
        EventSpec::Started => EventData::RunStarted,
        EventSpec::Completed => EventData::RunCompleted {
            output: payload(&"done"),
        },
        EventSpec::Failed => EventData::RunFailed {
            error: ErrorRecord::new("failed"),
        },
        EventSpec::Cancelled => EventData::RunCancelled,
        EventSpec::Blocked => EventData::RunBlocked {
            error: ErrorRecord::new("nondeterminism"),
        },
        EventSpec::StepCreated(i) => EventData::StepCreated {
            step: name("op", i),
            name: "s".into(),
            input_digest: None,
        },
        EventSpec::StepStarted(i) => EventData::StepStarted {
            step: name("op", i),
            attempt: 1,
        },
        EventSpec::StepCompleted(i) => EventData::StepCompleted {
            step: name("op", i),
            result: payload(&i),
        },
        EventSpec::StepRetrying(i, s) => EventData::StepRetrying {
            step: name("op", i),
            error: ErrorRecord::new("again"),
            retry_at: secs(s),
        },
        EventSpec::StepFailed(i) => EventData::StepFailed {
            step: name("op", i),
            error: ErrorRecord::new("gave up"),
        },
        EventSpec::HookCreated(i, t) => EventData::HookCreated {
            hook: name("op", i),
            token: token(&format!("tok-{t}")),
            metadata: Some(payload(&t)),
            webhook: None,
        },
        EventSpec::HookReceived(i) => EventData::HookReceived {
            hook: name("op", i),
            payload: payload(&"direct"),
        },
        EventSpec::HookResponded(i) => EventData::HookResponded {
            hook: name("op", i),
            request_id: "r".into(),
            response: crate::event::HttpResponseRecord {
                status: 200,
                headers: vec![],
                body: Default::default(),
            },
        },
        EventSpec::HookDisposed(i) => EventData::HookDisposed {
            hook: name("op", i),
        },
        EventSpec::WaitCreated(i, s) => EventData::WaitCreated {
            wait: name("op", i),
            resume_at: secs(s),
        },
        EventSpec::WaitCompleted(i) => EventData::WaitCompleted {
            wait: name("op", i),
        },
    }
}

/// The error variants compared between backend and model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ErrKind {
    RunNotFound,
    RunConflict,
    RunTerminal,
    Duplicate,
    Unknown,
    StepTerminal,
    Invalid,
    HookNotFound,
    Other,
}

fn err_kind(e: &StoreError) -> ErrKind {
    match e {
        StoreError::RunNotFound { .. } => ErrKind::RunNotFound,
        StoreError::RunConflict { .. } => ErrKind::RunConflict,
        StoreError::RunTerminal { .. } => ErrKind::RunTerminal,
        StoreError::DuplicateCorrelation { .. } => ErrKind::Duplicate,
        StoreError::UnknownCorrelation { .. } => ErrKind::Unknown,
        StoreError::StepAlreadyTerminal { .. } => ErrKind::StepTerminal,
        StoreError::InvalidEvent { .. } => ErrKind::Invalid,
        StoreError::HookNotFound { .. } => ErrKind::HookNotFound,
        _ => ErrKind::Other,
    }
}

#[derive(Clone, Debug)]
struct ModelRun {
    id: RunId,
    log: Vec<Event>,
    /// When a pending wake-up became due.
    wake: Option<Timestamp>,
}

/// The reference model: logs, and everything derived by scanning them.
#[derive(Debug, Default)]
struct Model {
    runs: BTreeMap<RunId, ModelRun>,
}

impl ModelRun {
    fn status(&self) -> RunStatus {
        let mut status = RunStatus::Pending;
        for e in &self.log {
            status = match e.kind() {
                EventKind::RunStarted => RunStatus::Running,
                EventKind::RunBlocked => RunStatus::Blocked,
                EventKind::RunCompleted => RunStatus::Completed,
                EventKind::RunFailed => RunStatus::Failed,
                EventKind::RunCancelled => RunStatus::Cancelled,
                _ => status,
            };
        }
        status
    }

    fn events_of<'a>(
        &'a self,
        id: &'a crate::id::CorrelationId,
    ) -> impl Iterator<Item = &'a EventData> {
        self.log
            .iter()
            .map(|e| &e.data)
            .filter(move |d| d.correlation_id() == Some(id))
    }

    /// The kind of the event that created `id`, if any.
    fn creation(&self, id: &crate::id::CorrelationId) -> Option<EventKind> {
        self.events_of(id)
            .map(EventData::kind)
            .find(|k| k.is_creation())
    }

    fn hook_live(&self, id: &crate::id::CorrelationId) -> bool {
        !self.status().is_terminal()
            && self.creation(id) == Some(EventKind::HookCreated)
            && !self
                .events_of(id)
                .any(|d| d.kind() == EventKind::HookDisposed)
    }

    /// Due times of armed timers (open waits) and step retries (a step whose
    /// latest event is `step_retrying`).
    fn timers(&self) -> Vec<Timestamp> {
        let mut latest: BTreeMap<&crate::id::CorrelationId, &EventData> = BTreeMap::new();
        for e in &self.log {
            if let Some(id) = e.data.correlation_id() {
                latest.insert(id, &e.data);
            }
        }
        latest
            .into_values()
            .filter_map(|d| match d {
                EventData::StepRetrying { retry_at, .. } => Some(*retry_at),
                EventData::WaitCreated { resume_at, .. } => Some(*resume_at),
                _ => None,
            })
            .collect()
    }

    /// Whether `run_blocked` was recorded since the last `run_started`: the
    /// run is parked, and only a wake-up makes it due.
    fn parked(&self) -> bool {
        self.log
            .iter()
            .rev()
            .find_map(|e| match e.kind() {
                EventKind::RunStarted => Some(false),
                EventKind::RunBlocked => Some(true),
                _ => None,
            })
            .unwrap_or(false)
    }

    fn due(&self) -> Option<Timestamp> {
        if self.status().is_terminal() {
            return None;
        }
        if self.parked() {
            return self.wake;
        }
        self.timers().into_iter().chain(self.wake).min()
    }
}

impl Model {
    /// The live hook holding `tok`, looking at `current` in place of the stored
    /// version of the run being appended to.
    fn live_owner_with(
        &self,
        tok: &crate::id::HookToken,
        current: Option<&ModelRun>,
    ) -> Option<(RunId, crate::id::CorrelationId)> {
        let runs = self.runs.values().map(|r| match current {
            Some(c) if c.id == r.id => c,
            _ => r,
        });
        for run in runs {
            for e in &run.log {
                if let EventData::HookCreated { hook, token, .. } = &e.data {
                    if token == tok && run.hook_live(hook) {
                        return Some((run.id, hook.clone()));
                    }
                }
            }
        }
        None
    }

    fn live_owner(&self, tok: &crate::id::HookToken) -> Option<(RunId, crate::id::CorrelationId)> {
        self.live_owner_with(tok, None)
    }

    fn create(
        &mut self,
        id: RunId,
        workflow: String,
        input: Payload,
        now: Timestamp,
    ) -> Result<bool, ErrKind> {
        if let Some(run) = self.runs.get(&id) {
            let same = matches!(&run.log[0].data,
                EventData::RunCreated { workflow: w, input: i, .. } if *w == workflow && *i == input);
            return if same {
                Ok(false)
            } else {
                Err(ErrKind::RunConflict)
            };
        }
        self.runs.insert(
            id,
            ModelRun {
                id,
                log: vec![Event {
                    seq: 0,
                    at: now,
                    data: EventData::RunCreated {
                        workflow,
                        input,
                        parent: None,
                    },
                }],
                wake: Some(now),
            },
        );
        Ok(true)
    }

    /// Checks one event against `run` (whose log already holds earlier events
    /// of the batch); returns the event as recorded.
    fn check(&self, run: &ModelRun, data: EventData) -> Result<EventData, ErrKind> {
        let status = run.status();
        if status.is_terminal() {
            return Err(ErrKind::RunTerminal);
        }
        let kind = data.kind();
        let Some(id) = data.correlation_id().cloned() else {
            return if kind == EventKind::RunCreated {
                Err(ErrKind::Invalid)
            } else {
                Ok(data)
            };
        };
        let created = run.creation(&id);
        if kind.is_creation() {
            if created.is_some() {
                return Err(ErrKind::Duplicate);
            }
            if let EventData::HookCreated { hook, token, .. } = &data {
                // Earlier events of this batch count: use the run being built.
                let owner = self.live_owner_with(token, Some(run));
                if let Some((holder, _)) = owner {
                    return Ok(EventData::HookConflict {
                        hook: hook.clone(),
                        token: token.clone(),
                        holder,
                    });
                }
            }
            return Ok(data);
        }
        let Some(created) = created else {
            return Err(ErrKind::Unknown);
        };
        let family = |k: EventKind| match k {
            EventKind::StepCreated => 0,
            EventKind::HookCreated | EventKind::HookConflict => 1,
            _ => 2,
        };
        let want = match kind {
            EventKind::StepStarted
            | EventKind::StepCompleted
            | EventKind::StepRetrying
            | EventKind::StepFailed => 0,
            EventKind::HookReceived | EventKind::HookResponded | EventKind::HookDisposed => 1,
            _ => 2,
        };
        if family(created) != want {
            return Err(ErrKind::Invalid);
        }
        let has = |k: EventKind| run.events_of(&id).any(|d| d.kind() == k);
        match kind {
            EventKind::StepStarted
            | EventKind::StepCompleted
            | EventKind::StepRetrying
            | EventKind::StepFailed
                if has(EventKind::StepCompleted) || has(EventKind::StepFailed) =>
            {
                return Err(ErrKind::StepTerminal)
            }
            EventKind::HookReceived | EventKind::HookDisposed if !run.hook_live(&id) => {
                return Err(ErrKind::Invalid)
            }
            EventKind::HookResponded if created != EventKind::HookCreated => {
                return Err(ErrKind::Invalid)
            }
            EventKind::WaitCompleted if has(EventKind::WaitCompleted) => {
                return Err(ErrKind::Invalid)
            }
            _ => {}
        }
        Ok(data)
    }

    fn append(
        &mut self,
        id: RunId,
        events: Vec<EventData>,
        now: Timestamp,
    ) -> Result<Vec<Event>, ErrKind> {
        let Some(original) = self.runs.get(&id) else {
            return Err(ErrKind::RunNotFound);
        };
        if original.status().is_terminal() {
            return Err(ErrKind::RunTerminal);
        }
        let mut run = original.clone();
        let at = now.max(run.log.last().map_or(now, |e| e.at));
        let mut recorded = Vec::new();
        for data in events {
            let data = self.check(&run, data)?;
            let event = Event {
                seq: run.log.len() as u64,
                at,
                data,
            };
            run.log.push(event.clone());
            recorded.push(event);
        }
        if run.status().is_terminal() {
            run.wake = None;
        }
        self.runs.insert(id, run);
        Ok(recorded)
    }
}

struct Harness<'a, S: Store> {
    store: &'a S,
    clock: &'a ManualClock,
    model: Model,
    ids: Vec<RunId>,
}

fn fail(what: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(what.to_string())
}

impl<S: Store> Harness<'_, S> {
    async fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let now = self.clock.now_ts();
        match op {
            Op::Create {
                run,
                workflow,
                input,
            } => {
                let id = self.ids[usize::from(*run)];
                let workflow = format!("wf-{workflow}");
                let input = payload(input);
                let got = self
                    .store
                    .create_run(NewRun {
                        id,
                        workflow: workflow.clone(),
                        input: input.clone(),
                    })
                    .await
                    .map(|c| c.created)
                    .map_err(|e| err_kind(&e));
                let want = self.model.create(id, workflow, input, now);
                prop_assert_eq!(got, want, "create_run");
            }
            Op::Append { run, events } => {
                let id = self.ids[usize::from(*run)];
                let events: Vec<EventData> = events.iter().map(|s| build(s, now)).collect();
                let got = self
                    .store
                    .append(id, events.clone(), None)
                    .await
                    .map(|a| a.events)
                    .map_err(|e| err_kind(&e));
                let want = self.model.append(id, events, now);
                prop_assert_eq!(got, want, "append");
            }
            Op::Resume {
                token: t,
                payload: p,
            } => {
                let tok = token(&format!("tok-{t}"));
                let got = self
                    .store
                    .resume_hook(&tok, payload(p))
                    .await
                    .map(|r| (r.run_id, r.hook, r.seq))
                    .map_err(|e| err_kind(&e));
                let want = match self.model.live_owner(&tok) {
                    None => Err(ErrKind::HookNotFound),
                    Some((run, hook)) => {
                        let recorded = self
                            .model
                            .append(
                                run,
                                vec![EventData::HookReceived {
                                    hook: hook.clone(),
                                    payload: payload(p),
                                }],
                                now,
                            )
                            .map_err(|_| fail("model rejected its own hook_received"))?;
                        let r = self
                            .model
                            .runs
                            .get_mut(&run)
                            .ok_or_else(|| fail("model run vanished"))?;
                        r.wake = Some(r.wake.map_or(now, |w| w.min(now)));
                        Ok((run, hook, recorded[0].seq))
                    }
                };
                prop_assert_eq!(got, want, "resume_hook");
            }
            Op::Wake { run } => {
                let id = self.ids[usize::from(*run)];
                let got = self.store.wake(id).await.map_err(|e| err_kind(&e));
                let want = match self.model.runs.get_mut(&id) {
                    None => Err(ErrKind::RunNotFound),
                    Some(r) if r.status().is_terminal() => Err(ErrKind::RunTerminal),
                    Some(r) => {
                        r.wake = Some(r.wake.map_or(now, |w| w.min(now)));
                        Ok(())
                    }
                };
                prop_assert_eq!(got, want, "wake");
            }
            Op::Tick { seconds, backwards } => {
                if *backwards {
                    self.clock.set(Timestamp(now.0.saturating_sub(1000)));
                } else {
                    self.clock.advance(Duration::from_secs(u64::from(*seconds)));
                }
            }
            Op::LeaseAll => {
                let leases = self
                    .store
                    .lease_due(usize::from(RUNS) * 4, Duration::from_secs(5))
                    .await
                    .map_err(fail)?;
                let mut got: Vec<RunId> = leases.iter().map(|l| l.run_id).collect();
                got.sort();
                let want: Vec<RunId> = self
                    .model
                    .runs
                    .values()
                    .filter(|r| r.due().is_some_and(|d| d <= now))
                    .map(|r| r.id)
                    .collect();
                prop_assert_eq!(&got, &want, "lease_due at {:?}", now);
                // Every lease the model takes is released at once: none expires.
                prop_assert!(
                    leases.iter().all(|l| !l.taken_over),
                    "lease_due says it took over a lease that was released"
                );
                for lease in &leases {
                    self.store.release_lease(lease).await.map_err(fail)?;
                    if let Some(r) = self.model.runs.get_mut(&lease.run_id) {
                        r.wake = None;
                    }
                }
            }
            Op::Read { run, from, limit } => {
                let id = self.ids[usize::from(*run)];
                let got = self
                    .store
                    .read_events(id, u64::from(*from), usize::from(*limit))
                    .await
                    .map_err(|e| err_kind(&e));
                let want = match self.model.runs.get(&id) {
                    None => Err(ErrKind::RunNotFound),
                    Some(r) => Ok(r
                        .log
                        .iter()
                        .skip(usize::from(*from))
                        .take(usize::from(*limit))
                        .cloned()
                        .collect()),
                };
                prop_assert_eq!(got, want, "read_events");
            }
            Op::List {
                status,
                after,
                limit,
            } => {
                let status = status.map(|s| RunStatus::ALL[usize::from(s) % RunStatus::ALL.len()]);
                let after = after.map(|a| self.ids[usize::from(a)]);
                let got: Vec<RunId> = self
                    .store
                    .list_runs(
                        RunQuery::default()
                            .status(status)
                            .after(after)
                            .limit(usize::from(*limit)),
                    )
                    .await
                    .map_err(fail)?
                    .into_iter()
                    .map(|r| r.id)
                    .collect();
                let want: Vec<RunId> = self
                    .model
                    .runs
                    .values()
                    .filter(|r| after.is_none_or(|a| r.id > a))
                    .filter(|r| status.is_none_or(|s| r.status() == s))
                    .take(usize::from(*limit))
                    .map(|r| r.id)
                    .collect();
                prop_assert_eq!(got, want, "list_runs");
            }
        }
        self.compare_all().await
    }

    /// Compares every projection of every run, and the due time.
    async fn compare_all(&self) -> Result<(), TestCaseError> {
        for &id in &self.ids {
            let got = self.store.get_run(id).await.map_err(fail)?;
            let Some(model) = self.model.runs.get(&id) else {
                prop_assert!(got.is_none(), "run {} exists in the store only", id);
                continue;
            };
            let got = got.ok_or_else(|| fail(format!("run {id} missing from store")))?;
            prop_assert_eq!(got.status, model.status(), "status of {}", id);
            prop_assert_eq!(got.next_seq, model.log.len() as u64, "next_seq of {}", id);
            prop_assert_eq!(got.created_at, model.log[0].at);
            prop_assert_eq!(
                got.updated_at,
                model.log.last().map(|e| e.at).unwrap_or_default()
            );
            let log = self.store.read_log(id).await.map_err(fail)?;
            prop_assert_eq!(&log, &model.log, "log of {}", id);
            let hooks = self.store.list_hooks(id).await.map_err(fail)?;
            let want_hooks: Vec<(String, String, bool)> = model
                .log
                .iter()
                .filter_map(|e| match &e.data {
                    EventData::HookCreated { hook, token, .. } => {
                        Some((hook.to_string(), token.to_string(), model.hook_live(hook)))
                    }
                    _ => None,
                })
                .collect();
            let got_hooks: Vec<(String, String, bool)> = hooks
                .iter()
                .map(|h| (h.hook.to_string(), h.token.to_string(), h.live))
                .collect();
            prop_assert_eq!(got_hooks, want_hooks, "hooks of {}", id);
        }
        for t in 0..TOKENS {
            let tok = token(&format!("tok-{t}"));
            let got = self
                .store
                .get_hook(&tok)
                .await
                .map_err(fail)?
                .map(|h| (h.run_id, h.hook));
            prop_assert_eq!(got, self.model.live_owner(&tok), "get_hook({})", tok);
        }
        let got = self.store.next_due().await.map_err(fail)?;
        let want = self.model.runs.values().filter_map(ModelRun::due).min();
        prop_assert_eq!(got, want, "next_due");
        Ok(())
    }
}

trait NowTs {
    fn now_ts(&self) -> Timestamp;
}

impl NowTs for ManualClock {
    fn now_ts(&self) -> Timestamp {
        crate::clock::Clock::now(self)
    }
}

/// The seed of the model test unless `WORKFLOW_CONFORMANCE_SEED` names another.
///
/// A fixed seed makes every run draw the same cases, so a broken rule the
/// suite catches is caught on every run, not now and then.
pub const DEFAULT_SEED: u64 = 0x5eed_c0de_2f1a_77e3;

/// The number of cases unless `PROPTEST_CASES` says otherwise.
pub const DEFAULT_CASES: u32 = 256;

/// The seed to use: `WORKFLOW_CONFORMANCE_SEED` (a number, or `random` for a
/// fresh one each run), else [`DEFAULT_SEED`].
pub fn seed() -> u64 {
    match std::env::var("WORKFLOW_CONFORMANCE_SEED") {
        Ok(v) if v.trim().eq_ignore_ascii_case("random") => {
            use std::hash::{BuildHasher, Hasher};
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
        }
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            panic!("WORKFLOW_CONFORMANCE_SEED must be a number or `random`, not {v:?}")
        }),
        Err(_) => DEFAULT_SEED,
    }
}

/// Runs the model test: `PROPTEST_CASES` cases (default [`DEFAULT_CASES`]) of
/// up to 40 operations, drawn from [`seed`]. A failure names the seed to rerun.
pub fn run<B: Backend>(rt: &tokio::runtime::Runtime, backend: &B) {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let seed = seed();
    let config = Config {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&prop::collection::vec(op(), 1..40), |ops| {
        rt.block_on(async {
            let clock = Arc::new(ManualClock::new(super::START));
            let store = backend
                .open(clock.clone())
                .await
                .map_err(|e| fail(format!("Backend::open: {e}")))?;
            let mut h = Harness {
                store: &store,
                clock: &clock,
                model: Model::default(),
                ids: (0..RUNS).map(|_| RunId::new()).collect::<Vec<_>>(),
            };
            h.ids.sort();
            for op in &ops {
                h.step(op).await?;
            }
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!(
            "model conformance failed (seed {seed}, {cases} cases; rerun with \
             WORKFLOW_CONFORMANCE_SEED={seed}): {e}"
        );
    }
}
