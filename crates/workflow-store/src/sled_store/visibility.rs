//! Readers see only acknowledged writes: the gate between a group commit and
//! the reads of [`super::SledStore`].
//!
//! sled makes a transaction visible to every reader when it commits, but the
//! store acknowledges it only once the flush after it has completed (and the
//! data file is `fsync`ed). In between, a plain read could return a write that
//! a crash would then lose: `Engine::result` reporting a completion that is
//! gone after a restart. The gate closes that window without making readers
//! wait for flushes that do not concern them.
//!
//! # The in-flight footprint
//!
//! The commit leader works one batch at a time, so at most one batch is
//! committed but not yet durable. Inside the batch's transaction, before sled
//! applies it, the leader *publishes* the batch's footprint: which runs (their
//! record, events or hook list), which tokens, whether any run record and
//! whether the due index changed ([`Footprint`]). Once the flush has returned
//! and the batch's writers have been completed, it clears the footprint
//! ([`InFlight`]'s drop) and wakes the waiting readers.
//!
//! A read names what it reads ([`Read`]: a run, a token, all runs, the due
//! index) and then:
//!
//! 1. waits while the in-flight footprint touches what it is about to read;
//! 2. reads;
//! 3. checks the footprint again. If it does not touch what was read, nothing
//!    the read returned can be unflushed: any batch whose writes it saw was
//!    either published before this check (and so is still in flight, which
//!    this check rules out, or durable) or fully flushed. Done.
//! 4. Otherwise a batch touching the read committed while it ran (the
//!    writes of a busy run can come in every batch). The reader then takes the
//!    *hold* (a shared lock the leader takes exclusively around each
//!    transaction), waits for that batch to become durable and reads again:
//!    with the hold no new batch can commit, so this second read is clean and
//!    a reader cannot be starved.
//!
//! So a reader waits for a flush only if the batch being flushed wrote what it
//! reads (`read_events`, `get_run`, `list_hooks`: that run; `get_hook`: that
//! token or its run; `list_runs`: any run record; `next_due`: the due index),
//! and the leader never waits for readers, except for the rare reader in step
//! 4, for the length of one read.
//!
//! The scan of the due index that `lease_due` makes to pick its candidates is
//! not gated: it only picks runs to try, and each lease is decided by the rules
//! inside a later batch, which the leader commits after the earlier batch is
//! durable.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use crate::apply::Changes;
use crate::id::{HookToken, RunId};

/// Something a read reads, to check against the in-flight footprint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Read {
    /// A run's record, events, hook list or streams.
    Run(RunId),
    /// A token's owner.
    Token(HookToken),
    /// Every run record (and the status index).
    AllRuns,
    /// The due index.
    Due,
}

/// What a committed batch wrote, as far as readers are concerned.
#[derive(Debug, Default)]
pub(crate) struct Footprint {
    /// Runs whose record, events, hook list or streams changed.
    runs: HashSet<RunId>,
    /// Tokens whose owner changed.
    tokens: HashSet<HookToken>,
    /// Whether any run record changed.
    run_records: bool,
    /// Whether the due index changed.
    due: bool,
}

impl Footprint {
    /// Adds what `changes` writes.
    pub(crate) fn add(&mut self, changes: &Changes) {
        self.run_records |= !changes.runs.is_empty() || !changes.purged.is_empty();
        self.runs.extend(changes.runs.keys().copied());
        self.runs.extend(changes.purged.keys().copied());
        self.runs.extend(changes.events.iter().map(|(run, _)| *run));
        self.runs.extend(changes.run_hooks.keys().copied());
        self.runs.extend(changes.streams.keys().copied());
        self.runs
            .extend(changes.chunks.iter().map(|(run, _, _)| *run));
        self.tokens.extend(changes.tokens.keys().cloned());
        self.due |= changes
            .queue
            .values()
            .any(|(before, entry)| *before != entry.as_ref().and_then(|e| e.effective_due()));
    }

    fn merge(&mut self, other: Footprint) {
        self.runs.extend(other.runs);
        self.tokens.extend(other.tokens);
        self.run_records |= other.run_records;
        self.due |= other.due;
    }

    fn touches(&self, read: &Read) -> bool {
        match read {
            Read::Run(run) => self.runs.contains(run),
            Read::Token(token) => self.tokens.contains(token),
            Read::AllRuns => self.run_records,
            Read::Due => self.due,
        }
    }
}

/// The gate: the footprint of the batch in flight, and the hold.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    /// The footprint of the batch committed but not yet durable, if any.
    in_flight: Mutex<Option<Footprint>>,
    /// Woken whenever a batch has become durable.
    durable: Notify,
    /// Taken exclusively by the leader around each transaction, shared by a
    /// reader that must not be overtaken by another batch (step 4 above).
    hold: Hold,
    /// Readers waiting for a batch to become durable (for tests).
    #[cfg(test)]
    pub(crate) waiting: tokio::sync::watch::Sender<usize>,
    /// A point where the leader stops between transaction and flush (for tests).
    #[cfg(test)]
    pub(crate) pause: Pause,
}

impl Gate {
    fn state(&self) -> MutexGuard<'_, Option<Footprint>> {
        // Nothing panics while the lock is held.
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Leader: starts a batch. Blocks while a reader holds the hold; the
    /// returned guard keeps new holders out until dropped (after the
    /// transaction).
    pub(crate) fn exclusive(&self) -> Exclusive<'_> {
        self.hold.exclusive()
    }

    /// Leader: marks a batch as in flight until the guard is dropped, which
    /// must happen once it is durable and its writers have been completed
    /// (or it failed).
    pub(crate) fn in_flight(&self) -> InFlight<'_> {
        InFlight(self)
    }

    /// Leader, inside the transaction before it is applied: what the batch
    /// writes. May be called again (sled may run a transaction again); the
    /// footprints add up.
    pub(crate) fn publish(&self, footprint: Footprint) {
        let mut state = self.state();
        match state.as_mut() {
            Some(current) => current.merge(footprint),
            None => *state = Some(footprint),
        }
    }

    fn clear(&self) {
        *self.state() = None;
        self.durable.notify_waiters();
    }

    /// Whether the batch in flight (if any) wrote none of `reads`.
    pub(crate) fn is_clean(&self, reads: &[Read]) -> bool {
        match self.state().as_ref() {
            None => true,
            Some(footprint) => !reads.iter().any(|r| footprint.touches(r)),
        }
    }

    /// Waits until the batch in flight (if any) wrote none of `reads`.
    async fn wait_clean(&self, reads: &[Read]) {
        loop {
            // Registered before the check, so a clear after it is not missed.
            let durable = self.durable.notified();
            if self.is_clean(reads) {
                return;
            }
            #[cfg(test)]
            self.waiting.send_modify(|n| *n += 1);
            durable.await;
            #[cfg(test)]
            self.waiting.send_modify(|n| *n -= 1);
        }
    }

    /// Runs a read that may return only durable writes: `once` reads, given
    /// what it is going to read, and returns its value and what it did read
    /// (`reads` plus anything found on the way). See the module docs.
    pub(crate) async fn read<T, F, Fut>(&self, reads: Vec<Read>, mut once: F) -> T
    where
        F: FnMut(Vec<Read>) -> Fut,
        Fut: Future<Output = (T, Vec<Read>)>,
    {
        self.wait_clean(&reads).await;
        let (value, read) = once(reads).await;
        if self.is_clean(&read) {
            return value;
        }
        // A batch touching what was read committed during the read: hold new
        // batches off, wait for that one to be durable, read again.
        let _hold = self.hold.shared().await;
        let mut reads = read;
        loop {
            self.wait_clean(&reads).await;
            let (value, read) = once(reads).await;
            if self.is_clean(&read) {
                return value;
            }
            reads = read;
        }
    }
}

/// A lock whose exclusive side (the leader's, around a transaction) blocks
/// the thread and whose shared side (a reader's) waits asynchronously. A
/// waiting leader goes first: new readers wait for it. Neither side is held
/// for long: the leader holds it for one transaction, a reader for one read
/// and the flush of the one batch it waits for.
#[derive(Debug, Default)]
struct Hold {
    state: Mutex<HoldState>,
    /// Wakes a leader waiting for readers to leave.
    leader_may_go: Condvar,
    /// Wakes readers waiting for the leader to leave.
    readers_may_go: Notify,
}

#[derive(Debug, Default)]
struct HoldState {
    readers: usize,
    leader: bool,
    leaders_waiting: usize,
}

impl Hold {
    fn lock(&self) -> MutexGuard<'_, HoldState> {
        // Nothing panics while the lock is held.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn exclusive(&self) -> Exclusive<'_> {
        let mut state = self.lock();
        state.leaders_waiting += 1;
        while state.readers > 0 || state.leader {
            state = self
                .leader_may_go
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state.leaders_waiting -= 1;
        state.leader = true;
        Exclusive(self)
    }

    async fn shared(&self) -> Shared<'_> {
        loop {
            // Registered before the check, so a release after it is not missed.
            let free = self.readers_may_go.notified();
            {
                let mut state = self.lock();
                if !state.leader && state.leaders_waiting == 0 {
                    state.readers += 1;
                    return Shared(self);
                }
            }
            free.await;
        }
    }
}

/// The leader's side of the [`Hold`], released on drop.
pub(crate) struct Exclusive<'a>(&'a Hold);

impl Drop for Exclusive<'_> {
    fn drop(&mut self) {
        self.0.lock().leader = false;
        self.0.leader_may_go.notify_all();
        self.0.readers_may_go.notify_waiters();
    }
}

/// A reader's side of the [`Hold`], released on drop.
struct Shared<'a>(&'a Hold);

impl Drop for Shared<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.readers -= 1;
        if state.readers == 0 {
            self.0.leader_may_go.notify_all();
        }
    }
}

/// A batch in flight; dropping it (even in a panic) makes the gate clean and
/// wakes the readers.
pub(crate) struct InFlight<'a>(&'a Gate);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.clear();
    }
}

/// A test-only pause point of the leader, between a batch's transaction and
/// its flush.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Pause {
    state: Mutex<PauseState>,
    changed: Condvar,
}

#[cfg(test)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum PauseState {
    #[default]
    Off,
    Armed,
    Paused,
    Released,
}

#[cfg(test)]
impl Pause {
    fn lock(&self) -> MutexGuard<'_, PauseState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait_while(&self, mut cond: impl FnMut(PauseState) -> bool) -> MutexGuard<'_, PauseState> {
        let (state, timeout) = self
            .changed
            .wait_timeout_while(self.lock(), std::time::Duration::from_secs(60), |s| {
                cond(*s)
            })
            .unwrap_or_else(PoisonError::into_inner);
        assert!(!timeout.timed_out(), "the pause point hung: {:?}", *state);
        state
    }

    /// Makes the next batch stop at the pause point.
    pub(crate) fn arm(&self) {
        *self.lock() = PauseState::Armed;
    }

    /// Waits until a batch is stopped at the pause point (blocks).
    pub(crate) fn wait_paused(&self) {
        drop(self.wait_while(|s| s != PauseState::Paused));
    }

    /// Lets the stopped batch go on.
    pub(crate) fn release(&self) {
        *self.lock() = PauseState::Released;
        self.changed.notify_all();
    }

    /// Whether [`Pause::release`] was called since the last arming.
    pub(crate) fn released(&self) -> bool {
        matches!(*self.lock(), PauseState::Released | PauseState::Off)
    }

    /// The leader's pause point: stops here if armed, until released.
    pub(crate) fn point(&self) {
        let mut state = self.lock();
        if *state != PauseState::Armed {
            return;
        }
        *state = PauseState::Paused;
        self.changed.notify_all();
        drop(state);
        drop(self.wait_while(|s| s == PauseState::Paused));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn runs(ids: &[RunId]) -> Footprint {
        Footprint {
            runs: ids.iter().copied().collect(),
            run_records: true,
            ..Footprint::default()
        }
    }

    #[test]
    fn footprints_say_what_they_touch() {
        let (a, b) = (RunId::new(), RunId::new());
        let token = HookToken::new("t").unwrap();
        let mut f = runs(&[a]);
        f.merge(Footprint {
            tokens: [token.clone()].into_iter().collect(),
            ..Footprint::default()
        });
        assert!(f.touches(&Read::Run(a)));
        assert!(!f.touches(&Read::Run(b)));
        assert!(f.touches(&Read::Token(token)));
        assert!(f.touches(&Read::AllRuns));
        assert!(!f.touches(&Read::Due));
    }

    #[test]
    fn reads_of_other_runs_do_not_wait_for_the_batch_in_flight() {
        let gate = Gate::default();
        let (a, b) = (RunId::new(), RunId::new());
        let batch = gate.in_flight();
        gate.publish(runs(&[a]));
        let value = futures::executor::block_on(
            gate.read(vec![Read::Run(b)], |reads| async move { ("b", reads) }),
        );
        assert_eq!(value, "b");
        assert!(!gate.is_clean(&[Read::Run(a)]));
        drop(batch);
        assert!(gate.is_clean(&[Read::Run(a), Read::AllRuns]));
    }

    /// A batch touching the run commits during the first read: the second
    /// read holds the next batch off until it is done, so it is clean.
    #[test]
    fn a_reader_overtaken_by_a_batch_reads_again_holding_the_next_one_off() {
        let gate = Arc::new(Gate::default());
        let run = RunId::new();
        let log = Arc::new(Mutex::new(Vec::<&str>::new()));
        let mut waiting = gate.waiting.subscribe();

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let reader = rt.spawn({
            let (gate, log) = (gate.clone(), log.clone());
            async move {
                let mut attempt = 0;
                gate.read(vec![Read::Run(run)], |reads| {
                    attempt += 1;
                    let (gate, log) = (gate.clone(), log.clone());
                    let attempt = attempt;
                    async move {
                        if attempt == 1 {
                            // A batch writing the run commits mid-read.
                            let _exclusive = gate.exclusive();
                            gate.publish(runs(&[run]));
                            std::mem::forget(gate.in_flight());
                        }
                        log.lock()
                            .unwrap()
                            .push(if attempt == 1 { "read 1" } else { "read 2" });
                        (attempt, reads)
                    }
                })
                .await
            }
        });
        // The reader now waits, holding the hold, for that batch to be durable.
        rt.block_on(waiting.wait_for(|n| *n > 0)).unwrap();
        let leader = std::thread::spawn({
            let (gate, log) = (gate.clone(), log.clone());
            move || {
                gate.clear(); // the batch is durable
                let _exclusive = gate.exclusive(); // the next batch
                log.lock().unwrap().push("next batch");
            }
        });
        assert_eq!(rt.block_on(reader).unwrap(), 2);
        leader.join().unwrap();
        assert_eq!(
            *log.lock().unwrap(),
            ["read 1", "read 2", "next batch"],
            "the next batch committed during the second read"
        );
    }
}
