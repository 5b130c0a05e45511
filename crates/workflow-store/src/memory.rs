//! `MemoryStore`: every invariant of the [`Store`] trait, no durability.
//!
//! For tests, examples and short-lived processes. All state sits behind one
//! mutex; each write validates against the current state, stages its changes
//! ([`crate::backend`]) and applies them before the lock is released, so a write is
//! all or nothing and readers never see half of one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::apply::{self, Changes, ReadView, Staged};
use crate::clock::{Clock, SystemClock};
use crate::error::StoreError;
use crate::event::{Event, EventData, Payload, Timestamp, WebhookResponse};
use crate::id::{CorrelationId, HookToken, LeaseId, RunId};
use crate::record::{
    Appended, Change, CreatedRun, HookRecord, Lease, NewRun, OpState, PurgeQuery, Purged,
    QueueEntry, Resumed, RunQuery, RunRecord, RunStatus, TokenOwner,
};
use crate::store::{purge_candidates, Store};
use crate::stream::{ChunkKey, ChunkWriter, RunStreams, StreamWrite};
use std::ops::Bound::{Excluded, Unbounded};

/// Capacity of the change feed; a receiver that falls further behind polls.
pub(crate) const CHANGE_FEED_CAPACITY: usize = 4096;

/// An in-memory [`Store`].
///
/// ```
/// use workflow_store::{MemoryStore, NewRun, Payload, RunId, Store};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = MemoryStore::new();
/// let id = RunId::new();
/// let input = Payload::encode(&42).unwrap();
/// store.create_run(NewRun { id, workflow: "answer".into(), input }).await.unwrap();
/// let log = store.read_log(id).await.unwrap();
/// assert_eq!(log.len(), 1);
/// # });
/// ```
#[derive(Clone, Debug)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    clock: Arc<dyn Clock>,
    changes: broadcast::Sender<Change>,
}

#[derive(Debug, Default)]
struct State {
    runs: BTreeMap<RunId, RunRecord>,
    events: HashMap<RunId, Vec<Event>>,
    ops: HashMap<(RunId, CorrelationId), OpState>,
    tokens: HashMap<HookToken, TokenOwner>,
    run_hooks: HashMap<RunId, Vec<HookRecord>>,
    queue: HashMap<RunId, QueueEntry>,
    due: BTreeSet<(Timestamp, RunId)>,
    /// Run ids by status code.
    by_status: [BTreeSet<RunId>; RunStatus::ALL.len()],
    /// Run ids by workflow.
    by_workflow: HashMap<String, BTreeSet<RunId>>,
    /// Each run's streams record.
    streams: HashMap<RunId, RunStreams>,
    /// Stream chunk rows.
    chunks: HashMap<(RunId, ChunkKey), Payload>,
}

impl ReadView for State {
    fn run(&mut self, id: RunId) -> Result<Option<RunRecord>, StoreError> {
        Ok(self.runs.get(&id).cloned())
    }
    fn event(&mut self, run: RunId, seq: u64) -> Result<Option<Event>, StoreError> {
        Ok(self
            .events
            .get(&run)
            .and_then(|log| usize::try_from(seq).ok().and_then(|i| log.get(i)))
            .cloned())
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
    fn streams(&mut self, run: RunId) -> Result<Option<RunStreams>, StoreError> {
        Ok(self.streams.get(&run).cloned())
    }
}

impl State {
    fn commit(&mut self, changes: &mut Changes) {
        for (id, (before, rec)) in std::mem::take(&mut changes.runs) {
            match before {
                Some(b) => {
                    self.by_status[usize::from(b.code())].remove(&id);
                }
                None => {
                    self.by_workflow
                        .entry(rec.workflow.clone())
                        .or_default()
                        .insert(id);
                }
            }
            self.by_status[usize::from(rec.status.code())].insert(id);
            self.runs.insert(id, rec);
        }
        for (id, purged) in std::mem::take(&mut changes.purged) {
            let rec = purged.record;
            self.runs.remove(&id);
            self.by_status[usize::from(rec.status.code())].remove(&id);
            if let Some(ids) = self.by_workflow.get_mut(&rec.workflow) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.by_workflow.remove(&rec.workflow);
                }
            }
            self.events.remove(&id);
            for op in purged.ops {
                self.ops.remove(&(id, op));
            }
            self.run_hooks.remove(&id);
            self.streams.remove(&id);
            if let Some(streams) = purged.streams {
                for key in streams.chunk_keys() {
                    self.chunks.remove(&(id, key));
                }
            }
        }
        self.streams.extend(std::mem::take(&mut changes.streams));
        for (run, key, payload) in std::mem::take(&mut changes.chunks) {
            match payload {
                Some(p) => self.chunks.insert((run, key), p),
                None => self.chunks.remove(&(run, key)),
            };
        }
        for (run, event) in std::mem::take(&mut changes.events) {
            self.events.entry(run).or_default().push(event);
        }
        self.ops.extend(std::mem::take(&mut changes.ops));
        for (token, owner) in std::mem::take(&mut changes.tokens) {
            match owner {
                Some(o) => self.tokens.insert(token, o),
                None => self.tokens.remove(&token),
            };
        }
        self.run_hooks
            .extend(std::mem::take(&mut changes.run_hooks));
        for (run, (before, entry)) in std::mem::take(&mut changes.queue) {
            if let Some(at) = before {
                self.due.remove(&(at, run));
            }
            match entry {
                Some(entry) => {
                    if let Some(at) = entry.effective_due() {
                        self.due.insert((at, run));
                    }
                    self.queue.insert(run, entry);
                }
                None => {
                    self.queue.remove(&run);
                }
            }
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// An empty store whose timestamps come from `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        let (changes, _) = broadcast::channel(CHANGE_FEED_CAPACITY);
        MemoryStore {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                clock,
                changes,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave half a write behind:
        // commit() only runs after all checks passed. So poisoning is harmless.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs one write operation atomically and publishes its notifications.
    fn write<T>(
        &self,
        op: impl FnOnce(&mut Staged<'_, State>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let now = self.inner.clock.now();
        let (result, notify) = {
            let mut state = self.lock();
            let mut staged = Staged::new(&mut *state, now);
            let result = op(&mut staged)?;
            let mut changes = staged.into_changes();
            state.commit(&mut changes);
            (result, changes.notify)
        };
        for change in notify {
            // No receivers is fine: nobody is waiting.
            let _ = self.inner.changes.send(change);
        }
        Ok(result)
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn create_run(&self, run: NewRun) -> Result<CreatedRun, StoreError> {
        self.write(|st| apply::create_run(st, &run))
    }

    async fn create_run_leased(
        &self,
        run: NewRun,
        ttl: Duration,
    ) -> Result<(CreatedRun, Option<Lease>), StoreError> {
        self.write(|st| apply::create_run_leased(st, &run, ttl))
    }

    async fn append(
        &self,
        run: RunId,
        events: Vec<EventData>,
        fence: Option<LeaseId>,
    ) -> Result<Appended, StoreError> {
        self.write(|st| apply::append(st, run, events, fence))
    }

    async fn read_events(
        &self,
        run: RunId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let state = self.lock();
        if !state.runs.contains_key(&run) {
            return Err(StoreError::RunNotFound { run });
        }
        let log = state.events.get(&run).map(Vec::as_slice).unwrap_or(&[]);
        let start = usize::try_from(from_seq)
            .unwrap_or(usize::MAX)
            .min(log.len());
        Ok(log[start..].iter().take(limit).cloned().collect())
    }

    async fn get_run(&self, run: RunId) -> Result<Option<RunRecord>, StoreError> {
        Ok(self.lock().runs.get(&run).cloned())
    }

    async fn list_runs(&self, query: RunQuery) -> Result<Vec<RunRecord>, StoreError> {
        let state = self.lock();
        let ids: Box<dyn Iterator<Item = &RunId>> = match (&query.workflow, query.status) {
            (Some(w), _) => match state.by_workflow.get(w) {
                Some(ids) => range(ids, &query),
                None => Box::new(std::iter::empty()),
            },
            (None, Some(s)) => range(&state.by_status[usize::from(s.code())], &query),
            (None, None) => {
                let keys: std::collections::btree_map::Range<'_, RunId, RunRecord> =
                    match (query.newest_first, query.after) {
                        (false, Some(c)) => state.runs.range((Excluded(c), Unbounded)),
                        (true, Some(c)) => state.runs.range(..c),
                        (_, None) => state.runs.range(..),
                    };
                if query.newest_first {
                    Box::new(keys.rev().map(|(id, _)| id))
                } else {
                    Box::new(keys.map(|(id, _)| id))
                }
            }
        };
        Ok(ids
            .filter_map(|id| state.runs.get(id))
            .filter(|r| query.matches(r))
            .take(query.limit)
            .cloned()
            .collect())
    }

    async fn purge_runs(&self, query: PurgeQuery) -> Result<Purged, StoreError> {
        let (candidates, next) = purge_candidates(self, &query).await?;
        let runs = self.write(|st| apply::purge(st, &candidates, &query))?;
        Ok(Purged { runs, next })
    }

    async fn get_hook(&self, token: &HookToken) -> Result<Option<HookRecord>, StoreError> {
        let state = self.lock();
        let Some(owner) = state.tokens.get(token) else {
            return Ok(None);
        };
        Ok(state
            .run_hooks
            .get(&owner.run_id)
            .and_then(|hooks| hooks.iter().find(|h| h.hook == owner.hook && h.live))
            .cloned())
    }

    async fn list_hooks(&self, run: RunId) -> Result<Vec<HookRecord>, StoreError> {
        let state = self.lock();
        if !state.runs.contains_key(&run) {
            return Err(StoreError::RunNotFound { run });
        }
        Ok(state.run_hooks.get(&run).cloned().unwrap_or_default())
    }

    async fn resume_hook(
        &self,
        token: &HookToken,
        payload: Payload,
    ) -> Result<Resumed, StoreError> {
        self.write(|st| apply::resume_hook(st, token, payload))
    }

    async fn resume_webhook(
        &self,
        token: &HookToken,
        payload: Payload,
    ) -> Result<(Resumed, WebhookResponse), StoreError> {
        self.write(|st| apply::resume_webhook(st, token, payload))
    }

    async fn wake(&self, run: RunId) -> Result<(), StoreError> {
        self.write(|st| apply::wake(st, run))
    }

    async fn lease_due(&self, limit: usize, ttl: Duration) -> Result<Vec<Lease>, StoreError> {
        let now = self.inner.clock.now();
        let candidates: Vec<RunId> = {
            let state = self.lock();
            state
                .due
                .range(..=(now, RunId::from_u128(u128::MAX)))
                .map(|&(_, run)| run)
                .take(limit)
                .collect()
        };
        let mut leases = Vec::with_capacity(candidates.len());
        for run in candidates {
            if let Some(lease) = self.write(|st| apply::try_lease(st, run, ttl))? {
                leases.push(lease);
            }
        }
        Ok(leases)
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<Lease, StoreError> {
        self.write(|st| apply::renew_lease(st, lease, ttl))
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        self.write(|st| apply::release_lease(st, lease))
    }

    async fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        Ok(self.lock().due.first().map(|&(at, _)| at))
    }

    fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    fn subscribe(&self) -> Option<broadcast::Receiver<Change>> {
        Some(self.inner.changes.subscribe())
    }

    async fn write_stream(
        &self,
        run: RunId,
        writer: &ChunkWriter,
        write: StreamWrite,
        fence: Option<LeaseId>,
    ) -> Result<(), StoreError> {
        self.write(|st| apply::write_stream(st, run, writer, write, fence))
    }

    async fn run_streams(&self, run: RunId) -> Result<Option<RunStreams>, StoreError> {
        Ok(self.lock().streams.get(&run).cloned())
    }

    async fn read_chunks(
        &self,
        run: RunId,
        keys: &[ChunkKey],
    ) -> Result<Vec<Option<Payload>>, StoreError> {
        let state = self.lock();
        Ok(keys
            .iter()
            .map(|k| state.chunks.get(&(run, k.clone())).cloned())
            .collect())
    }
}

/// The ids of `set` after the query's cursor, in the query's order.
fn range<'a>(
    set: &'a BTreeSet<RunId>,
    query: &RunQuery,
) -> Box<dyn Iterator<Item = &'a RunId> + 'a> {
    let r = match (query.newest_first, query.after) {
        (false, Some(c)) => set.range((Excluded(c), Unbounded)),
        (true, Some(c)) => set.range(..c),
        (_, None) => set.range(..),
    };
    if query.newest_first {
        Box::new(r.rev())
    } else {
        Box::new(r)
    }
}
