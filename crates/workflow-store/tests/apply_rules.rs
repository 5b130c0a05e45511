//! The shared store rules (`workflow_store::backend`) where no `Store` call can
//! observe them: what a backend's commit reads from a [`Changes`] set, and
//! interleavings that a store's own locking hides.
//!
//! These run on a small table-backed [`ReadView`] defined here, so each rule is
//! driven directly: two engines that both saw a run due are run one after the
//! other on purpose, instead of hoping a race brings them together.
//! The tests sit in `mod rules` so the mutation check can select them with the
//! memory conformance tests (`-- memory:: rules::`, see docs/conformance.md).

use std::collections::BTreeMap;
use std::time::Duration;

use workflow_store::backend::{self as apply, Changes, ReadView, Staged};
use workflow_store::backend::{OpKind, OpState, QueueEntry, TokenOwner};
use workflow_store::{
    CorrelationId, Event, EventData, HookRecord, HookToken, NewRun, Payload, RunId, RunRecord,
    RunStatus, StoreError, Timestamp,
};

const NOW: Timestamp = Timestamp(1_700_000_000_000);
const TTL: Duration = Duration::from_secs(30);

/// Tables keyed like a SQL or sled backend's, committed from `Changes`.
#[derive(Default)]
struct Tables {
    runs: BTreeMap<RunId, RunRecord>,
    events: BTreeMap<(RunId, u64), Event>,
    ops: BTreeMap<(RunId, CorrelationId), OpState>,
    tokens: BTreeMap<HookToken, TokenOwner>,
    run_hooks: BTreeMap<RunId, Vec<HookRecord>>,
    queue: BTreeMap<RunId, QueueEntry>,
}

impl ReadView for Tables {
    fn run(&mut self, id: RunId) -> Result<Option<RunRecord>, StoreError> {
        Ok(self.runs.get(&id).cloned())
    }
    fn event(&mut self, run: RunId, seq: u64) -> Result<Option<Event>, StoreError> {
        Ok(self.events.get(&(run, seq)).cloned())
    }
    fn op(&mut self, run: RunId, id: &CorrelationId) -> Result<Option<OpState>, StoreError> {
        Ok(self.ops.get(&(run, id.clone())).copied())
    }
    fn token(&mut self, token: &HookToken) -> Result<Option<TokenOwner>, StoreError> {
        Ok(self.tokens.get(token).cloned())
    }
    fn run_hooks(&mut self, run: RunId) -> Result<Vec<HookRecord>, StoreError> {
        Ok(self.run_hooks.get(&run).cloned().unwrap_or_default())
    }
    fn queue(&mut self, run: RunId) -> Result<Option<QueueEntry>, StoreError> {
        Ok(self.queue.get(&run).cloned())
    }
    fn streams(
        &mut self,
        _run: RunId,
    ) -> Result<Option<workflow_store::backend::RunStreams>, StoreError> {
        Ok(None)
    }
}

impl Tables {
    /// Runs one write at `now` and commits what it staged; returns the result
    /// and the staged changes (as the backend saw them before committing).
    fn write<T>(
        &mut self,
        now: Timestamp,
        op: impl FnOnce(&mut Staged<'_, Tables>) -> Result<T, StoreError>,
    ) -> (Result<T, StoreError>, Changes) {
        let mut staged = Staged::new(self, now);
        let result = op(&mut staged);
        let changes = staged.into_changes();
        if result.is_ok() {
            self.commit(&changes);
        }
        (result, changes)
    }

    fn commit(&mut self, changes: &Changes) {
        for (id, (_, rec)) in &changes.runs {
            self.runs.insert(*id, rec.clone());
        }
        for (run, e) in &changes.events {
            self.events.insert((*run, e.seq), e.clone());
        }
        for (k, v) in &changes.ops {
            self.ops.insert(k.clone(), *v);
        }
        for (t, owner) in &changes.tokens {
            match owner {
                Some(o) => self.tokens.insert(t.clone(), o.clone()),
                None => self.tokens.remove(t),
            };
        }
        for (run, hooks) in &changes.run_hooks {
            self.run_hooks.insert(*run, hooks.clone());
        }
        for (run, (_, entry)) in &changes.queue {
            match entry {
                Some(e) => self.queue.insert(*run, e.clone()),
                None => self.queue.remove(run),
            };
        }
    }

    fn create(&mut self, id: RunId) {
        let new = NewRun {
            id,
            workflow: "wf".into(),
            input: Payload::encode(&()).unwrap(),
        };
        let (r, _) = self.write(NOW, |st| apply::create_run(st, &new));
        r.expect("create_run");
    }
}

fn cid(s: &str) -> CorrelationId {
    CorrelationId::new(s).unwrap()
}

fn tok(s: &str) -> HookToken {
    HookToken::new(s).unwrap()
}

mod rules {
    use super::*;

    /// A backend may skip its commit (PostgreSQL rolls back) when
    /// `Changes::is_empty`: so it must be false whenever any table changes,
    /// and true when only notifications (or nothing) were staged.
    #[test]
    fn changes_are_empty_only_when_no_table_changes() {
        assert!(Changes::default().is_empty(), "nothing staged is empty");
        let run = RunId::new();
        let rec = RunRecord {
            id: run,
            workflow: "wf".into(),
            status: RunStatus::Pending,
            error: None,
            created_at: NOW,
            updated_at: NOW,
            next_seq: 1,
        };
        let only_notify = Changes {
            notify: vec![workflow_store::Change::Due { run, at: NOW }],
            ..Changes::default()
        };
        assert!(
            only_notify.is_empty(),
            "notifications alone are nothing to write"
        );
        let mut each: Vec<(&str, Changes)> = Vec::new();
        let mut c = Changes::default();
        c.runs.insert(run, (None, rec));
        each.push(("runs", c));
        let mut c = Changes::default();
        c.events.push((
            run,
            Event {
                seq: 1,
                at: NOW,
                data: EventData::RunStarted,
            },
        ));
        each.push(("events", c));
        let mut c = Changes::default();
        c.ops.insert(
            (run, cid("op")),
            OpState {
                kind: OpKind::Step,
                closed: false,
            },
        );
        each.push(("ops", c));
        let mut c = Changes::default();
        c.tokens.insert(tok("t"), None);
        each.push(("tokens", c));
        let mut c = Changes::default();
        c.run_hooks.insert(run, Vec::new());
        each.push(("run_hooks", c));
        let mut c = Changes::default();
        c.queue.insert(run, (Some(NOW), None));
        each.push(("queue", c));
        for (what, changes) in each {
            assert!(
                !changes.is_empty(),
                "a change to {what} alone counts as nothing to write"
            );
        }
    }

    /// Writes stage each run with its status before the write, so a backend
    /// can insert new runs, update old ones and keep a status index.
    #[test]
    fn runs_are_staged_with_their_status_before() {
        let mut t = Tables::default();
        let run = RunId::new();
        let new = NewRun {
            id: run,
            workflow: "wf".into(),
            input: Payload::encode(&1).unwrap(),
        };
        let (r, changes) = t.write(NOW, |st| apply::create_run(st, &new));
        assert!(r.unwrap().created);
        assert_eq!(changes.runs.get(&run).map(|(b, _)| *b), Some(None));
        assert!(!changes.is_empty());
        let (r, changes) = t.write(NOW, |st| {
            apply::append(st, run, vec![EventData::RunStarted], None)
        });
        r.unwrap();
        let (before, rec) = changes.runs.get(&run).expect("run staged");
        assert_eq!(*before, Some(RunStatus::Pending));
        assert_eq!(rec.status, RunStatus::Running);
        // Creating the identical run again writes nothing at all.
        let (r, changes) = t.write(NOW, |st| apply::create_run(st, &new));
        assert!(!r.unwrap().created);
        assert!(changes.is_empty(), "an idempotent create_run wrote");
        // So does an empty append.
        let (r, changes) = t.write(NOW, |st| apply::append(st, run, vec![], None));
        r.unwrap();
        assert!(changes.is_empty(), "an empty append wrote");
    }

    /// Two engines both found the run due (say, in a `SELECT` before either
    /// locked it). The first takes the lease; the second, applying
    /// `try_lease` after the first committed, must get nothing, however the
    /// store orders them. Driven here in that order, not left to a race.
    #[test]
    fn the_second_of_two_racing_takers_gets_nothing() {
        let mut t = Tables::default();
        let run = RunId::new();
        t.create(run);
        let (first, _) = t.write(NOW, |st| apply::try_lease(st, run, TTL));
        let first = first.unwrap().expect("a new run is due");
        assert!(!first.taken_over);
        let (second, changes) = t.write(NOW, |st| apply::try_lease(st, run, TTL));
        assert_eq!(
            second.unwrap(),
            None,
            "a held run was leased to the second taker"
        );
        assert!(changes.is_empty(), "a refused lease wrote");
        // Still refused a millisecond before the lease expires ...
        let almost = NOW.saturating_add(TTL - Duration::from_millis(1));
        let (r, _) = t.write(almost, |st| apply::try_lease(st, run, TTL));
        assert_eq!(r.unwrap(), None, "a lease was taken over before expiry");
        // ... and taken over when it has.
        let (third, _) = t.write(NOW.saturating_add(TTL), |st| apply::try_lease(st, run, TTL));
        let third = third.unwrap().expect("an expired lease is taken over");
        assert!(third.taken_over);
        assert_ne!(third.id, first.id);
    }

    /// A run that is not due (a timer in the future, or nothing queued) is
    /// not leased, whoever asks.
    #[test]
    fn runs_not_due_are_not_leased() {
        let mut t = Tables::default();
        let run = RunId::new();
        assert_eq!(
            t.write(NOW, |st| apply::try_lease(st, run, TTL)).0.unwrap(),
            None,
            "an unknown run was leased"
        );
        t.create(run);
        let (l, _) = t.write(NOW, |st| apply::try_lease(st, run, TTL));
        let l = l.unwrap().unwrap();
        let later = NOW.saturating_add(Duration::from_secs(60));
        let (r, _) = t.write(NOW, |st| {
            apply::append(
                st,
                run,
                vec![EventData::WaitCreated {
                    wait: cid("wait:0"),
                    resume_at: later,
                }],
                Some(l.id),
            )
        });
        r.unwrap();
        t.write(NOW, |st| apply::release_lease(st, &l)).0.unwrap();
        let early = NOW.saturating_add(Duration::from_secs(59));
        let (r, _) = t.write(early, |st| apply::try_lease(st, run, TTL));
        assert_eq!(r.unwrap(), None, "a run was leased before its timer");
        let (r, _) = t.write(later, |st| apply::try_lease(st, run, TTL));
        assert!(r.unwrap().is_some(), "a due timer was not leased");
    }

    /// `taken_over` is for the caller of `lease_due` only: the lease a store
    /// keeps says `false`, also after renewing a lease that did take over
    /// (whose holder gets its own value back).
    #[test]
    fn stored_leases_do_not_say_taken_over() {
        let mut t = Tables::default();
        let run = RunId::new();
        t.create(run);
        t.write(NOW, |st| apply::try_lease(st, run, TTL))
            .0
            .unwrap()
            .unwrap();
        let later = NOW.saturating_add(TTL);
        let (taken, changes) = t.write(later, |st| apply::try_lease(st, run, TTL));
        let taken = taken.unwrap().expect("taken over");
        assert!(taken.taken_over);
        let stored = |c: &Changes| {
            c.queue
                .get(&run)
                .and_then(|(_, e)| e.as_ref())
                .and_then(|e| e.lease.clone())
                .expect("a staged lease")
        };
        assert!(!stored(&changes).taken_over, "try_lease stored taken_over");
        let (renewed, changes) = t.write(later, |st| apply::renew_lease(st, &taken, TTL));
        let renewed = renewed.unwrap();
        assert!(
            renewed.taken_over,
            "renew_lease dropped the caller's taken_over"
        );
        let kept = stored(&changes);
        assert!(!kept.taken_over, "renew_lease stored taken_over");
        assert_eq!(kept.id, taken.id);
        assert_eq!(kept.expires_at, renewed.expires_at);
    }
}
