//! The [`Store`] trait: what a storage backend must do.
//!
//! A backend keeps, per run, an append-only event log and the projections of
//! DESIGN §3 (run status, hooks by token, open operations, the work queue), and
//! changes the log and its projections in one atomic write. The logic that
//! decides *what* to write is shared ([`crate::backend`]); a backend supplies reads
//! and an atomic commit. `workflow_store::conformance` checks any implementation.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::error::StoreError;
use crate::event::{Event, EventData, Payload, Timestamp, WebhookResponse};
use crate::id::{HookToken, LeaseId, RunId};
use crate::record::{
    Appended, Change, CreatedRun, HookRecord, Lease, NewRun, PurgeQuery, Purged, Resumed, RunQuery,
    RunRecord,
};
use crate::stream::{
    ChunkKey, ChunkWriter, RunStreams, StreamInfo, StreamName, StreamPage, StreamToken, StreamWrite,
};

/// How many chunks [`Store::read_stream`] returns at most per call.
pub const STREAM_PAGE: usize = 256;

/// How many events [`Store::read_log`] asks for per page.
pub const READ_PAGE: usize = 1024;

/// Durable storage for workflow runs. Object safe: use it as `Arc<dyn Store>`.
///
/// Invariants every implementation keeps (each is a conformance test):
/// - [`append`](Store::append) is atomic: all events of one call and their
///   projections, or none;
/// - `seq` is gapless and strictly increasing per run, starting at 0 with
///   `run_created`; reads return log order;
/// - at most one `*_created` per correlation id, and no step event after the
///   step's terminal event;
/// - a token belongs to at most one live hook across all runs: a `hook_created`
///   with a live token is recorded as `hook_conflict` instead;
/// - after `run_completed`/`run_failed`/`run_cancelled` only reads are accepted,
///   and the run's hooks are released;
/// - [`resume_hook`](Store::resume_hook) appends `hook_received` and makes the run
///   due in one atomic write;
/// - a write is acknowledged (the future resolves `Ok`) only once it is as durable
///   as the backend promises;
/// - timers (`wait_created`) and retries (`step_retrying`) are queue rows: they
///   come due after a restart.
/// - timestamps come from the store's clock and never go backwards within a run.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates a run: records `run_created` (seq 0) and makes the run due now.
    ///
    /// Idempotent on the id: the same id with the same workflow and input
    /// returns the existing run with `created: false`; with a different
    /// workflow or input it is [`StoreError::RunConflict`].
    async fn create_run(&self, run: NewRun) -> Result<CreatedRun, StoreError>;

    /// Creates a run like [`create_run`](Store::create_run) and, if this call
    /// created it, leases it to the caller for `ttl` in the same write: the
    /// engine that starts a run drives it at once, without a round trip
    /// through the queue. The lease is held like one from
    /// [`lease_due`](Store::lease_due) (not `taken_over`), and no engine is
    /// told the run is due now.
    ///
    /// `None` for an existing run, or from a backend that does not lease on
    /// creation: the default implementation is `create_run`, and the run is
    /// then driven by whichever engine leases it from the queue.
    async fn create_run_leased(
        &self,
        run: NewRun,
        ttl: Duration,
    ) -> Result<(CreatedRun, Option<Lease>), StoreError> {
        let _ = ttl;
        Ok((self.create_run(run).await?, None))
    }

    /// Appends `events` to a run's log, with their projections, atomically.
    ///
    /// With `fence`, the write succeeds only while that lease holds the run
    /// ([`StoreError::LeaseLost`] otherwise). `run_created` cannot be appended.
    /// Effects on the queue: `wait_created` arms a timer due at `resume_at`,
    /// `step_retrying` one due at `retry_at`; `wait_completed` and the step's
    /// next event clear them; a terminal run event removes the run from the queue.
    /// `run_blocked` *parks* the run: its timers stay armed but no longer make
    /// it due, only a wake-up ([`wake`](Store::wake), a hook received) does, so
    /// a blocked run is inert instead of being handed back to engines that
    /// would only find it blocked again; `run_started` unparks it, and its
    /// timers count again.
    async fn append(
        &self,
        run: RunId,
        events: Vec<EventData>,
        fence: Option<LeaseId>,
    ) -> Result<Appended, StoreError>;

    /// Up to `limit` events of a run with `seq >= from_seq`, in log order.
    async fn read_events(
        &self,
        run: RunId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError>;

    /// A run's projection, or `None` if there is no such run.
    async fn get_run(&self, run: RunId) -> Result<Option<RunRecord>, StoreError>;

    /// Runs in id order (oldest first, or newest first), filtered by status
    /// and workflow and paged by `query`, answered from indexes: the cost is
    /// the page, not the number of runs stored.
    async fn list_runs(&self, query: RunQuery) -> Result<Vec<RunRecord>, StoreError>;

    /// Deletes ended runs that `query` selects, with everything they own:
    /// events, operations, hooks and tokens, queue entries and index rows.
    /// Runs that have not ended are never touched.
    ///
    /// One call looks at up to `query.limit` candidate runs (in id order,
    /// after `query.after`) and deletes those that match in one atomic write;
    /// [`Purged::next`] says where to continue. Purging is idempotent and
    /// safe while engines run: each run is checked again inside the write.
    /// [`purge_candidates`] is the selection every backend in this crate uses.
    async fn purge_runs(&self, query: PurgeQuery) -> Result<Purged, StoreError>;

    /// The live hook holding `token`, if any.
    async fn get_hook(&self, token: &HookToken) -> Result<Option<HookRecord>, StoreError>;

    /// All hooks a run has created, live or released, in creation order.
    async fn list_hooks(&self, run: RunId) -> Result<Vec<HookRecord>, StoreError>;

    /// Delivers `payload` to the live hook holding `token`: appends
    /// `hook_received` and makes the run due, in one atomic write.
    /// [`StoreError::HookNotFound`] if no live hook holds the token.
    async fn resume_hook(&self, token: &HookToken, payload: Payload)
        -> Result<Resumed, StoreError>;

    /// Like [`resume_hook`](Store::resume_hook), but only for webhooks: a plain
    /// hook's token is [`StoreError::HookNotFound`] and nothing is recorded.
    /// Returns the webhook's response mode with the receipt. Backends should
    /// override the provided version (two calls) with one atomic write.
    async fn resume_webhook(
        &self,
        token: &HookToken,
        payload: Payload,
    ) -> Result<(Resumed, WebhookResponse), StoreError> {
        let not_found = || StoreError::HookNotFound {
            token: token.clone(),
        };
        let mode = self
            .get_hook(token)
            .await?
            .and_then(|h| h.webhook)
            .ok_or_else(not_found)?;
        Ok((self.resume_hook(token, payload).await?, mode))
    }

    /// Makes a run due now (for example after a cancel request), parked or
    /// not: this is how an explicit retry reaches a blocked run. Releasing the
    /// lease taken for it clears the wake-up, so a run still blocked is inert
    /// again.
    async fn wake(&self, run: RunId) -> Result<(), StoreError>;

    /// Leases up to `limit` runs that are due now (a wake-up, a timer or retry
    /// that has come due unless the run is parked, or an expired lease), each
    /// for `ttl`, earliest due first.
    /// A leased run is not returned again until its lease is released or expires.
    /// A lease that replaces an expired, unreleased one says so
    /// ([`Lease::taken_over`]): its previous holder may have crashed mid-work.
    async fn lease_due(&self, limit: usize, ttl: Duration) -> Result<Vec<Lease>, StoreError>;

    /// Extends a lease to `ttl` from now; [`StoreError::LeaseLost`] if it is gone.
    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<Lease, StoreError>;

    /// Gives a lease up. The wake-up it was taken for is cleared unless a newer
    /// one arrived meanwhile; timers stay. Releasing a lease on a run that has
    /// ended is a no-op; one that was lost is [`StoreError::LeaseLost`].
    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError>;

    /// When the earliest queued item comes due (perhaps already), if any;
    /// workers sleep until then when there are no notifications.
    async fn next_due(&self) -> Result<Option<Timestamp>, StoreError>;

    /// The store's current time, as used for timestamps and due times.
    fn now(&self) -> Timestamp;

    /// Stores chunks a step attempt writes to a stream of its run, pending:
    /// readers see them once the append recording the attempt's
    /// `step_completed` commits them, and never if it records
    /// `step_retrying` or `step_failed` (see [`crate::stream`]). Chunk numbers
    /// are the writer's: writing a number again stores the same row again.
    ///
    /// With `fence`, only while that lease holds the run. Refused
    /// ([`StoreError::InvalidStreamWrite`]) once the attempt is recorded.
    /// A backend without streams refuses every write (the default).
    async fn write_stream(
        &self,
        run: RunId,
        writer: &ChunkWriter,
        write: StreamWrite,
        fence: Option<LeaseId>,
    ) -> Result<(), StoreError> {
        let _ = (writer, fence);
        Err(StoreError::InvalidStreamWrite {
            run,
            stream: write.stream,
            reason: "this store does not keep streams".into(),
        })
    }

    /// A run's streams record, as the write rules keep it (`None`: no
    /// stream was ever written). For backend authors; readers use
    /// [`read_stream`](Store::read_stream) and
    /// [`list_streams`](Store::list_streams).
    async fn run_streams(&self, run: RunId) -> Result<Option<RunStreams>, StoreError> {
        let _ = run;
        Ok(None)
    }

    /// The payloads of chunk rows of a run, in the order asked (`None`: no such row).
    async fn read_chunks(
        &self,
        run: RunId,
        keys: &[ChunkKey],
    ) -> Result<Vec<Option<crate::event::Payload>>, StoreError> {
        let _ = run;
        Ok(vec![None; keys.len()])
    }

    /// Up to `limit` (at most [`STREAM_PAGE`]) committed chunks of a stream
    /// from index `from`, with its length and whether it is closed; `None`
    /// if the run or stream is unknown (a stream with only pending chunks is
    /// unknown).
    async fn read_stream(
        &self,
        run: RunId,
        stream: &StreamName,
        from: u64,
        limit: usize,
    ) -> Result<Option<StreamPage>, StoreError> {
        let Some(streams) = self.run_streams(run).await? else {
            return Ok(None);
        };
        let Some(state) = streams.streams.get(stream).filter(|s| s.is_visible()) else {
            return Ok(None);
        };
        let keys = state.keys_from(stream, from, limit.clamp(1, STREAM_PAGE));
        let rows: Vec<ChunkKey> = keys.iter().map(|(_, k)| k.clone()).collect();
        let payloads = self.read_chunks(run, &rows).await?;
        let mut chunks = Vec::with_capacity(keys.len());
        for ((index, key), payload) in keys.into_iter().zip(payloads) {
            let payload = payload.ok_or_else(|| StoreError::Damaged {
                location: format!(
                    "chunk {index} of stream {} of run {run} (step {} attempt {} number {})",
                    key.stream, key.writer.step, key.writer.attempt, key.n
                ),
                detail: "the stream's record names a chunk whose row is missing".into(),
            })?;
            chunks.push((index, payload));
        }
        Ok(Some(StreamPage {
            chunks,
            len: state.len,
            closed: state.closed,
        }))
    }

    /// A run's streams that readers can see, by name.
    async fn list_streams(&self, run: RunId) -> Result<Vec<StreamInfo>, StoreError> {
        Ok(self
            .run_streams(run)
            .await?
            .map(|s| s.infos())
            .unwrap_or_default())
    }

    /// Whether `token` is a committed read grant of the run's stream.
    async fn stream_readable_with(
        &self,
        run: RunId,
        stream: &StreamName,
        token: &StreamToken,
    ) -> Result<bool, StoreError> {
        Ok(self
            .run_streams(run)
            .await?
            .is_some_and(|s| s.grants(stream, token)))
    }

    /// A feed of changes, if the backend has one; `None` means poll.
    /// A lagging receiver misses changes and should poll once.
    fn subscribe(&self) -> Option<broadcast::Receiver<Change>> {
        None
    }

    /// The whole log of a run, read page by page.
    async fn read_log(&self, run: RunId) -> Result<Vec<Event>, StoreError> {
        let mut out = Vec::new();
        loop {
            let page = self.read_events(run, out.len() as u64, READ_PAGE).await?;
            let done = page.len() < READ_PAGE;
            out.extend(page);
            if done {
                return Ok(out);
            }
        }
    }
}

#[async_trait]
impl<S: Store + ?Sized> Store for std::sync::Arc<S> {
    async fn create_run(&self, run: NewRun) -> Result<CreatedRun, StoreError> {
        (**self).create_run(run).await
    }
    async fn create_run_leased(
        &self,
        run: NewRun,
        ttl: Duration,
    ) -> Result<(CreatedRun, Option<Lease>), StoreError> {
        (**self).create_run_leased(run, ttl).await
    }
    async fn append(
        &self,
        run: RunId,
        events: Vec<EventData>,
        fence: Option<LeaseId>,
    ) -> Result<Appended, StoreError> {
        (**self).append(run, events, fence).await
    }
    async fn read_events(
        &self,
        run: RunId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        (**self).read_events(run, from_seq, limit).await
    }
    async fn get_run(&self, run: RunId) -> Result<Option<RunRecord>, StoreError> {
        (**self).get_run(run).await
    }
    async fn list_runs(&self, query: RunQuery) -> Result<Vec<RunRecord>, StoreError> {
        (**self).list_runs(query).await
    }
    async fn purge_runs(&self, query: PurgeQuery) -> Result<Purged, StoreError> {
        (**self).purge_runs(query).await
    }
    async fn get_hook(&self, token: &HookToken) -> Result<Option<HookRecord>, StoreError> {
        (**self).get_hook(token).await
    }
    async fn list_hooks(&self, run: RunId) -> Result<Vec<HookRecord>, StoreError> {
        (**self).list_hooks(run).await
    }
    async fn resume_hook(
        &self,
        token: &HookToken,
        payload: Payload,
    ) -> Result<Resumed, StoreError> {
        (**self).resume_hook(token, payload).await
    }
    async fn resume_webhook(
        &self,
        token: &HookToken,
        payload: Payload,
    ) -> Result<(Resumed, WebhookResponse), StoreError> {
        (**self).resume_webhook(token, payload).await
    }
    async fn wake(&self, run: RunId) -> Result<(), StoreError> {
        (**self).wake(run).await
    }
    async fn lease_due(&self, limit: usize, ttl: Duration) -> Result<Vec<Lease>, StoreError> {
        (**self).lease_due(limit, ttl).await
    }
    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<Lease, StoreError> {
        (**self).renew_lease(lease, ttl).await
    }
    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        (**self).release_lease(lease).await
    }
    async fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        (**self).next_due().await
    }
    fn now(&self) -> Timestamp {
        (**self).now()
    }
    fn subscribe(&self) -> Option<broadcast::Receiver<Change>> {
        (**self).subscribe()
    }
    async fn write_stream(
        &self,
        run: RunId,
        writer: &ChunkWriter,
        write: StreamWrite,
        fence: Option<LeaseId>,
    ) -> Result<(), StoreError> {
        (**self).write_stream(run, writer, write, fence).await
    }
    async fn run_streams(&self, run: RunId) -> Result<Option<RunStreams>, StoreError> {
        (**self).run_streams(run).await
    }
    async fn read_chunks(
        &self,
        run: RunId,
        keys: &[ChunkKey],
    ) -> Result<Vec<Option<crate::event::Payload>>, StoreError> {
        (**self).read_chunks(run, keys).await
    }
    async fn read_stream(
        &self,
        run: RunId,
        stream: &StreamName,
        from: u64,
        limit: usize,
    ) -> Result<Option<StreamPage>, StoreError> {
        (**self).read_stream(run, stream, from, limit).await
    }
    async fn list_streams(&self, run: RunId) -> Result<Vec<StreamInfo>, StoreError> {
        (**self).list_streams(run).await
    }
    async fn stream_readable_with(
        &self,
        run: RunId,
        stream: &StreamName,
        token: &StreamToken,
    ) -> Result<bool, StoreError> {
        (**self).stream_readable_with(run, stream, token).await
    }
}

/// The candidates of one [`Store::purge_runs`] call, from the store's own
/// [`Store::list_runs`] (so from its status and workflow indexes): the first
/// `query.limit` ended runs after `query.after` in id order, of the final
/// statuses and workflow asked for, and the cursor to continue from.
///
/// The candidates still have to be checked against the query inside the
/// write that deletes them ([`crate::backend::purge`]).
pub async fn purge_candidates<S: Store + ?Sized>(
    store: &S,
    query: &PurgeQuery,
) -> Result<(Vec<RunId>, Option<RunId>), StoreError> {
    let limit = query.limit.max(1);
    let mut listed = Vec::new();
    // The smallest last id of a status whose page was full: beyond it that
    // status may have more runs, so this call stops there.
    let mut bound: Option<RunId> = None;
    for status in query.statuses() {
        let mut q = RunQuery::default().status(status).limit(limit);
        q.workflow.clone_from(&query.workflow);
        q.after = query.after;
        let page = store.list_runs(q).await?;
        if page.len() >= limit {
            if let Some(last) = page.last() {
                bound = Some(bound.map_or(last.id, |b| b.min(last.id)));
            }
        }
        listed.extend(page);
    }
    // Every run up to the bound has been listed; of those, look at the first
    // `limit`, and continue after the last one looked at.
    listed.retain(|r| bound.is_none_or(|b| r.id <= b));
    listed.sort_unstable_by_key(|r| r.id);
    listed.dedup_by_key(|r| r.id);
    let mut next = bound;
    if listed.len() > limit {
        listed.truncate(limit);
        next = listed.last().map(|r| r.id);
    }
    let ids = listed
        .into_iter()
        .filter(|r| query.matches(r))
        .map(|r| r.id)
        .collect();
    Ok((ids, next))
}
