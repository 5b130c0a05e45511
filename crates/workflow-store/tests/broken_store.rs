//! The conformance suite has teeth: deliberately broken stores fail it.
//!
//! Each broken store wraps `MemoryStore` and breaks one invariant the way a
//! careless backend would. Running the matching category must panic.

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;
use workflow_store::backend::{ChunkKey, RunStreams, Segment};
use workflow_store::conformance::{run_category, Backend, Category};
use workflow_store::{
    Appended, Change, Clock, CreatedRun, Event, EventData, HookRecord, HookToken, Lease, LeaseId,
    MemoryStore, NewRun, Payload, PurgeQuery, Purged, Resumed, RunId, RunQuery, RunRecord, Store,
    StoreError, Timestamp,
};
use workflow_store::{ChunkWriter, StreamWrite};

/// How a [`Broken`] store misbehaves.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Applies a batch one event at a time: a failure leaves half of it behind.
    HalfAppend,
    /// Reads return seqs with a gap after seq 2.
    SeqGap,
    /// Leases are not recorded: a leased run is handed out again.
    SharedLeases,
    /// `resume_hook` records the payload but does not make the run due.
    ResumeWithoutWake,
    /// Disposing a hook also drops the token of the run's first other live
    /// hook (a lookup by "live" instead of by id).
    DisposeDropsAnotherToken,
    /// `hook_responded` is acknowledged for any hook, even one that lost its
    /// token to a `hook_conflict`.
    RespondToAnyHook,
    /// Releasing the lease of a run that ended is refused as `LeaseLost`.
    StrictReleaseAfterEnd,
    /// `list_runs` ignores the workflow filter.
    ListIgnoresWorkflow,
    /// `list_runs` lists oldest first whatever the query says.
    ListIgnoresOrder,
    /// `purge_runs` ignores the cut-off.
    PurgeIgnoresCutoff,
    /// `purge_runs` reports the runs it selected without deleting them.
    PurgeReportsOnly,
    /// Readers see pending stream chunks, as if each attempt's share were
    /// committed the moment it is written.
    StreamShowsPending,
    /// A failed or retried attempt's chunks are not discarded: the attempt
    /// that completes the step commits them along with its own.
    StreamKeepsFailedAttempts,
}

#[derive(Clone)]
struct Broken {
    inner: MemoryStore,
    fault: Fault,
    /// Tokens [`Fault::DisposeDropsAnotherToken`] dropped.
    dropped: Arc<Mutex<BTreeSet<HookToken>>>,
    /// Stream writes seen, for [`Fault::StreamKeepsFailedAttempts`].
    writes: Arc<Mutex<Vec<(RunId, ChunkWriter, StreamWrite)>>>,
}

impl Broken {
    fn dropped(&self, token: &HookToken) -> bool {
        self.dropped.lock().unwrap().contains(token)
    }
}

#[async_trait]
impl Store for Broken {
    async fn create_run(&self, run: NewRun) -> Result<CreatedRun, StoreError> {
        self.inner.create_run(run).await
    }
    async fn append(
        &self,
        run: RunId,
        events: Vec<EventData>,
        fence: Option<LeaseId>,
    ) -> Result<Appended, StoreError> {
        if let Fault::StreamKeepsFailedAttempts = self.fault {
            self.keep_failed_attempts(run, &events).await;
        }
        match self.fault {
            Fault::DisposeDropsAnotherToken => {
                let disposed: Vec<_> = events
                    .iter()
                    .filter_map(|e| match e {
                        EventData::HookDisposed { hook } => Some(hook.clone()),
                        _ => None,
                    })
                    .collect();
                let a = self.inner.append(run, events, fence).await?;
                for hook in disposed {
                    let other = self
                        .inner
                        .list_hooks(run)
                        .await?
                        .into_iter()
                        .find(|h| h.live && h.hook != hook && !self.dropped(&h.token));
                    if let Some(h) = other {
                        self.dropped.lock().unwrap().insert(h.token);
                    }
                }
                Ok(a)
            }
            Fault::RespondToAnyHook
                if events
                    .iter()
                    .all(|e| matches!(e, EventData::HookResponded { .. })) =>
            {
                match self.inner.append(run, events.clone(), fence).await {
                    Err(StoreError::InvalidEvent { .. }) => {
                        // Acknowledge it anyway (without recording it).
                        let rec = self.inner.get_run(run).await?.expect("run");
                        let events = events
                            .into_iter()
                            .enumerate()
                            .map(|(i, data)| Event {
                                seq: rec.next_seq + i as u64,
                                at: self.inner.now(),
                                data,
                            })
                            .collect();
                        Ok(Appended { events, run: rec })
                    }
                    other => other,
                }
            }
            Fault::HalfAppend if events.len() > 1 => {
                let mut last = None;
                let mut recorded = Vec::new();
                for e in events {
                    let a = self.inner.append(run, vec![e], fence).await?;
                    recorded.extend(a.events.clone());
                    last = Some(a);
                }
                let mut a = last.expect("non-empty batch");
                a.events = recorded;
                Ok(a)
            }
            _ => self.inner.append(run, events, fence).await,
        }
    }
    async fn read_events(
        &self,
        run: RunId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let mut events = self.inner.read_events(run, from_seq, limit).await?;
        if let Fault::SeqGap = self.fault {
            for e in &mut events {
                if e.seq > 2 {
                    e.seq += 1;
                }
            }
        }
        Ok(events)
    }
    async fn get_run(&self, run: RunId) -> Result<Option<RunRecord>, StoreError> {
        self.inner.get_run(run).await
    }
    async fn list_runs(&self, query: RunQuery) -> Result<Vec<RunRecord>, StoreError> {
        let mut query = query;
        match self.fault {
            Fault::ListIgnoresWorkflow => query.workflow = None,
            Fault::ListIgnoresOrder => query.newest_first = false,
            _ => {}
        }
        self.inner.list_runs(query).await
    }
    async fn purge_runs(&self, query: PurgeQuery) -> Result<Purged, StoreError> {
        match self.fault {
            Fault::PurgeIgnoresCutoff => {
                let mut query = query;
                query.ended_before = Timestamp(u64::MAX);
                self.inner.purge_runs(query).await
            }
            Fault::PurgeReportsOnly => {
                let (runs, next) = workflow_store::backend::purge_candidates(self, &query).await?;
                Ok(Purged { runs, next })
            }
            _ => self.inner.purge_runs(query).await,
        }
    }
    async fn get_hook(&self, token: &HookToken) -> Result<Option<HookRecord>, StoreError> {
        if self.dropped(token) {
            return Ok(None);
        }
        self.inner.get_hook(token).await
    }
    async fn list_hooks(&self, run: RunId) -> Result<Vec<HookRecord>, StoreError> {
        self.inner.list_hooks(run).await
    }
    async fn resume_hook(
        &self,
        token: &HookToken,
        payload: Payload,
    ) -> Result<Resumed, StoreError> {
        if self.dropped(token) {
            return Err(StoreError::HookNotFound {
                token: token.clone(),
            });
        }
        match self.fault {
            Fault::ResumeWithoutWake => {
                let owner =
                    self.inner
                        .get_hook(token)
                        .await?
                        .ok_or_else(|| StoreError::HookNotFound {
                            token: token.clone(),
                        })?;
                let a = self
                    .inner
                    .append(
                        owner.run_id,
                        vec![EventData::HookReceived {
                            hook: owner.hook.clone(),
                            payload,
                        }],
                        None,
                    )
                    .await?;
                Ok(Resumed {
                    run_id: owner.run_id,
                    hook: owner.hook,
                    seq: a.events[0].seq,
                })
            }
            _ => self.inner.resume_hook(token, payload).await,
        }
    }
    async fn wake(&self, run: RunId) -> Result<(), StoreError> {
        self.inner.wake(run).await
    }
    async fn lease_due(&self, limit: usize, ttl: Duration) -> Result<Vec<Lease>, StoreError> {
        let leases = self.inner.lease_due(limit, ttl).await?;
        if let Fault::SharedLeases = self.fault {
            for l in &leases {
                self.inner.release_lease(l).await?;
                self.inner.wake(l.run_id).await?;
            }
        }
        Ok(leases)
    }
    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<Lease, StoreError> {
        self.inner.renew_lease(lease, ttl).await
    }
    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        if let Fault::StrictReleaseAfterEnd = self.fault {
            let run = self.inner.get_run(lease.run_id).await?;
            if run.is_some_and(|r| r.status.is_terminal()) {
                return Err(StoreError::LeaseLost { run: lease.run_id });
            }
        }
        self.inner.release_lease(lease).await
    }
    async fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        self.inner.next_due().await
    }
    fn now(&self) -> Timestamp {
        self.inner.now()
    }
    fn subscribe(&self) -> Option<broadcast::Receiver<Change>> {
        self.inner.subscribe()
    }
    async fn write_stream(
        &self,
        run: RunId,
        writer: &ChunkWriter,
        write: StreamWrite,
        fence: Option<LeaseId>,
    ) -> Result<(), StoreError> {
        self.inner
            .write_stream(run, writer, write.clone(), fence)
            .await?;
        self.writes
            .lock()
            .unwrap()
            .push((run, writer.clone(), write));
        Ok(())
    }
    async fn run_streams(&self, run: RunId) -> Result<Option<RunStreams>, StoreError> {
        let mut streams = self.inner.run_streams(run).await?;
        if let (Fault::StreamShowsPending, Some(streams)) = (self.fault, streams.as_mut()) {
            for state in streams.streams.values_mut() {
                for (writer, share) in std::mem::take(&mut state.pending) {
                    state.segments.push(Segment {
                        writer,
                        base: state.len,
                        count: share.count,
                    });
                    state.len += share.count;
                }
            }
        }
        Ok(streams)
    }
    async fn read_chunks(
        &self,
        run: RunId,
        keys: &[ChunkKey],
    ) -> Result<Vec<Option<Payload>>, StoreError> {
        self.inner.read_chunks(run, keys).await
    }
}

impl Broken {
    /// For [`Fault::StreamKeepsFailedAttempts`]: before an append completes
    /// a step, writes the chunks of the step's earlier attempts again as the
    /// completing attempt's, so they are committed with it.
    async fn keep_failed_attempts(&self, run: RunId, events: &[EventData]) {
        for e in events {
            let EventData::StepCompleted { step, .. } = e else {
                continue;
            };
            let writes: Vec<(ChunkWriter, StreamWrite)> = self
                .writes
                .lock()
                .unwrap()
                .iter()
                .filter(|(r, w, _)| *r == run && w.step == *step)
                .map(|(_, w, s)| (w.clone(), s.clone()))
                .collect();
            let Some(last) = writes.iter().map(|(w, _)| w.attempt).max() else {
                continue;
            };
            let current = ChunkWriter {
                step: step.clone(),
                attempt: last,
            };
            for (_, write) in writes.iter().filter(|(w, _)| w.attempt < last) {
                let count = writes
                    .iter()
                    .filter(|(w, s)| *w == current && s.stream == write.stream)
                    .map(|(_, s)| s.first + s.chunks.len() as u64)
                    .max()
                    .unwrap_or(0);
                let again = StreamWrite::chunks(
                    write.stream.clone(),
                    count + write.first,
                    write.chunks.clone(),
                );
                let _ = self.inner.write_stream(run, &current, again, None).await;
            }
        }
    }
}

struct BrokenBackend(Fault);

#[async_trait]
impl Backend for BrokenBackend {
    type Store = Broken;
    async fn open(&self, clock: Arc<dyn Clock>) -> Result<Broken, StoreError> {
        Ok(Broken {
            inner: MemoryStore::with_clock(clock),
            fault: self.0,
            dropped: Arc::default(),
            writes: Arc::default(),
        })
    }
}

/// Runs `category` on a store with `fault` and returns the failure message.
fn failure_of(fault: Fault, category: Category) -> String {
    let result = catch_unwind(AssertUnwindSafe(|| {
        run_category(&BrokenBackend(fault), category)
    }));
    match result {
        Ok(()) => {
            panic!("the conformance suite passed a store with fault {fault:?} in {category:?}")
        }
        Err(panic) => panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default(),
    }
}

#[test]
fn half_applied_append_fails_atomicity() {
    let msg = failure_of(Fault::HalfAppend, Category::Atomicity);
    assert!(msg.contains("atomicity"), "unexpected failure: {msg}");
}

#[test]
fn half_applied_append_fails_model() {
    let msg = failure_of(Fault::HalfAppend, Category::Model);
    assert!(
        msg.contains("model conformance failed"),
        "unexpected failure: {msg}"
    );
}

#[test]
fn seq_gap_fails_ordering() {
    let msg = failure_of(Fault::SeqGap, Category::Ordering);
    assert!(msg.contains("ordering"), "unexpected failure: {msg}");
}

#[test]
fn shared_leases_fail_leases() {
    let msg = failure_of(Fault::SharedLeases, Category::Leases);
    assert!(msg.contains("leases"), "unexpected failure: {msg}");
}

#[test]
fn shared_leases_fail_concurrency() {
    let msg = failure_of(Fault::SharedLeases, Category::Concurrency);
    assert!(
        msg.contains("leased by two holders"),
        "unexpected failure: {msg}"
    );
}

#[test]
fn resume_without_wake_fails_hooks() {
    let msg = failure_of(Fault::ResumeWithoutWake, Category::Hooks);
    assert!(
        msg.contains("did not make the run due"),
        "unexpected failure: {msg}"
    );
}

/// Runs `category` on a store with `fault` and panics if it fails.
fn passes(fault: Fault, category: Category) {
    run_category(&BrokenBackend(fault), category);
}

#[test]
fn dispose_dropping_another_token_fails_hooks_only() {
    let msg = failure_of(Fault::DisposeDropsAnotherToken, Category::Hooks);
    assert!(
        msg.contains("released the token of"),
        "unexpected failure: {msg}"
    );
    // Before the check for two live hooks, nothing caught it.
    for c in [Category::Atomicity, Category::Terminal, Category::Leases] {
        passes(Fault::DisposeDropsAnotherToken, c);
    }
}

#[test]
fn responding_to_any_hook_fails_hooks_only() {
    let msg = failure_of(Fault::RespondToAnyHook, Category::Hooks);
    assert!(
        msg.contains("hook_responded to a conflicted hook"),
        "unexpected failure: {msg}"
    );
    for c in [
        Category::Atomicity,
        Category::Idempotency,
        Category::Terminal,
    ] {
        passes(Fault::RespondToAnyHook, c);
    }
}

#[test]
fn strict_release_after_end_fails_leases_only() {
    let msg = failure_of(Fault::StrictReleaseAfterEnd, Category::Leases);
    assert!(
        msg.contains("releasing the lease of a run its holder ended"),
        "unexpected failure: {msg}"
    );
    for c in [Category::Queue, Category::Terminal, Category::Hooks] {
        passes(Fault::StrictReleaseAfterEnd, c);
    }
}

#[test]
fn a_correct_store_passes_the_same_categories() {
    // The control: the same harness on the unbroken store passes, so the
    // failures above come from the faults, not from the harness.
    struct Plain;
    #[async_trait]
    impl Backend for Plain {
        type Store = MemoryStore;
        async fn open(&self, clock: Arc<dyn Clock>) -> Result<MemoryStore, StoreError> {
            Ok(MemoryStore::with_clock(clock))
        }
    }
    for c in [
        Category::Atomicity,
        Category::Ordering,
        Category::Leases,
        Category::Hooks,
        Category::Streams,
    ] {
        run_category(&Plain, c);
    }
}

#[test]
fn listing_without_the_workflow_filter_fails_listing() {
    let msg = failure_of(Fault::ListIgnoresWorkflow, Category::Listing);
    assert!(msg.contains("listing: status"), "unexpected failure: {msg}");
}

#[test]
fn listing_in_one_order_only_fails_listing() {
    let msg = failure_of(Fault::ListIgnoresOrder, Category::Listing);
    assert!(
        msg.contains("newest first true"),
        "unexpected failure: {msg}"
    );
}

#[test]
fn purging_past_the_cutoff_fails_purge() {
    let msg = failure_of(Fault::PurgeIgnoresCutoff, Category::Purge);
    assert!(msg.contains("purge:"), "unexpected failure: {msg}");
}

#[test]
fn a_purge_that_deletes_nothing_fails_purge() {
    let msg = failure_of(Fault::PurgeReportsOnly, Category::Purge);
    assert!(msg.contains("purge:"), "unexpected failure: {msg}");
}

#[test]
fn showing_pending_chunks_fails_streams() {
    let msg = failure_of(Fault::StreamShowsPending, Category::Streams);
    assert!(msg.contains("streams:"), "unexpected failure: {msg}");
}

#[test]
fn keeping_a_failed_attempts_chunks_fails_streams() {
    let msg = failure_of(Fault::StreamKeepsFailedAttempts, Category::Streams);
    assert!(msg.contains("streams:"), "unexpected failure: {msg}");
}
