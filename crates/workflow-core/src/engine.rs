//! The [`Engine`]: registered workflows, a store, and the workers that drive runs.
//!
//! `start` records a run and returns its id at once. Workers lease due runs
//! from the store (new runs, received payloads, fired timers, due retries,
//! runs whose previous holder's lease expired) and drive each one with
//! the driver (one activation loop for live execution and replay) until it suspends. Everything a worker knows is in the
//! store, so any number of engines on one store share the work, and a crashed
//! engine's runs are taken over when their leases expire.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info_span, warn, Instrument};
use workflow_store::{
    Change, EventData, Lease, NewRun, Payload, PurgeQuery, RunId, RunQuery, RunRecord, RunStatus,
    Store, StoreError, Timestamp,
};

use crate::cache::RunCache;
use crate::context::Context;
use crate::driver::{drive, Outcome};
use crate::error::{EngineError, WorkflowError};
use crate::feed::{next_change, wait_for_change};
use crate::registry::{Registered, Registry};
use crate::workflow_ref::{RunHandle, StartWorkflow, WorkflowName, WorkflowRef};

/// Tuning for an [`Engine`].
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Runs driven at once by this engine's workers.
    pub concurrency: usize,
    /// How long a lease lasts before another engine may take the run over.
    /// Renewed while steps run.
    pub lease_ttl: Duration,
    /// Suspended runs kept in memory (the hot-run cache).
    pub cache_size: usize,
    /// Longest a worker sleeps without a notification before polling the store.
    pub poll_interval: Duration,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            concurrency: 64,
            lease_ttl: Duration::from_secs(30),
            cache_size: 10_000,
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// Builds an [`Engine`]: a store, workflows by name, settings.
pub struct EngineBuilder {
    store: Arc<dyn Store>,
    registry: Registry,
    settings: EngineSettings,
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("workflows", &self.registry.keys().collect::<Vec<_>>())
            .field("settings", &self.settings)
            .finish()
    }
}

impl EngineBuilder {
    /// Registers `f` as the workflow `name`: a [`WorkflowRef`] (then `f`'s
    /// input and output types must be the reference's) or a plain name.
    ///
    /// `f` is an `async fn(Context, I) -> Result<O, WorkflowError>`; runs record
    /// the name, so keep it stable across deploys.
    ///
    /// # Panics
    ///
    /// If a workflow is already registered under that name: two functions
    /// for one name would make runs replay against whichever came last.
    /// Like a duplicate route in axum, this is a mistake in the program, found
    /// when the engine is put together, not later.
    pub fn workflow<N, I, O, F, Fut>(mut self, name: N, f: F) -> Self
    where
        N: WorkflowName<I, O>,
        I: DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        F: Fn(Context, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, WorkflowError>> + Send + 'static,
    {
        let name = name.workflow_name().to_string();
        assert!(
            !self.registry.contains_key(&name),
            "workflow {name:?} is registered twice: each name must have one function"
        );
        self.registry.insert(name, Registered::new(f));
        self
    }

    /// Replaces all settings.
    pub fn settings(mut self, settings: EngineSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Sets how many runs this engine drives at once (at least 1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.settings.concurrency = n.max(1);
        self
    }

    /// Sets the lease duration.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.settings.lease_ttl = ttl;
        self
    }

    /// Sets the hot-run cache size (0 disables it: every activation replays).
    pub fn cache_size(mut self, n: usize) -> Self {
        self.settings.cache_size = n;
        self
    }

    /// Sets the longest sleep between polls of the store.
    pub fn poll_interval(mut self, d: Duration) -> Self {
        self.settings.poll_interval = d;
        self
    }

    /// Builds the engine. Call [`Engine::start_workers`] to run workflows.
    pub fn build(self) -> Engine {
        Engine {
            inner: Arc::new(EngineInner {
                cache: RunCache::new(self.settings.cache_size),
                store: self.store,
                registry: self.registry,
                settings: self.settings,
                workers: Mutex::new(None),
                handover: Mutex::new(None),
                inflight: AtomicUsize::new(0),
                stop: watch::channel(false).0,
                metrics: Counters::default(),
            }),
        }
    }
}

pub(crate) struct EngineInner {
    pub store: Arc<dyn Store>,
    pub registry: Registry,
    pub settings: EngineSettings,
    pub cache: RunCache,
    workers: Mutex<Option<JoinHandle<()>>>,
    /// Leases of runs this engine has just started, for its workers to drive
    /// at once (`None` while no workers run).
    handover: Mutex<Option<mpsc::UnboundedSender<Lease>>>,
    /// Activations running, and slots reserved for leases being handed over;
    /// at most `settings.concurrency`.
    inflight: AtomicUsize,
    /// `true` while the workers shut down: activations stop starting attempts.
    stop: watch::Sender<bool>,
    pub metrics: Counters,
}

impl EngineInner {
    /// Reserves up to `n` activation slots; returns how many it got.
    fn reserve(&self, n: usize) -> usize {
        let limit = self.settings.concurrency;
        let mut got = 0;
        let _ = self
            .inflight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                got = n.min(limit.saturating_sub(used));
                (got > 0).then_some(used + got)
            });
        got
    }

    /// Gives back `n` reserved slots (or those of ended activations).
    fn unreserve(&self, n: usize) {
        if n > 0 {
            // Saturating: `shutdown_now` forgets the aborted activations.
            let _ = self
                .inflight
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                    Some(used.saturating_sub(n))
                });
        }
    }

    /// Where to hand a lease to the workers, with a slot reserved for it;
    /// `None` if no workers run or every slot is taken.
    fn handover(&self) -> Option<mpsc::UnboundedSender<Lease>> {
        let tx = self
            .handover
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        (self.reserve(1) == 1).then_some(tx)
    }
}

/// The engine's counters, updated as it works.
#[derive(Default)]
pub(crate) struct Counters {
    pub activations: AtomicU64,
    pub replays: AtomicU64,
}

/// What an engine has done since it was built (see [`Engine::metrics`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct EngineMetrics {
    /// Activations: times a worker leased a run and drove it.
    pub activations: u64,
    /// Activations that replayed a run from its log (not found in the hot cache).
    pub replays: u64,
}

/// Runs durable workflows on a [`Store`]. Cheap to clone.
///
/// ```
/// use workflow_core::{Context, Engine, StepError, WorkflowError};
/// use workflow_store::MemoryStore;
///
/// async fn double(ctx: Context, n: u64) -> Result<u64, WorkflowError> {
///     let doubled = ctx.step("double", |_| async move { Ok::<_, StepError>(n * 2) }).await?;
///     Ok(doubled)
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let engine = Engine::builder(MemoryStore::new()).workflow("double", double).build();
/// engine.start_workers();
/// let run = engine.start("double", &21u64).await?;
/// let answer: u64 = engine.result(&run).await?;
/// assert_eq!(answer, 42);
/// engine.shutdown().await;
/// # Ok::<(), workflow_core::EngineError>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("workflows", &self.inner.registry.keys().collect::<Vec<_>>())
            .field("settings", &self.inner.settings)
            .finish()
    }
}

impl Engine {
    /// Starts building an engine on `store`.
    pub fn builder(store: impl Store) -> EngineBuilder {
        EngineBuilder {
            store: Arc::new(store),
            registry: Registry::new(),
            settings: EngineSettings::default(),
        }
    }

    /// The engine's store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The engine's settings.
    pub fn settings(&self) -> &EngineSettings {
        &self.inner.settings
    }

    pub(crate) fn registered(&self, name: &str) -> Option<Registered> {
        self.inner.registry.get(name).cloned()
    }

    /// The names of the registered workflows.
    pub fn workflows(&self) -> impl Iterator<Item = &str> {
        self.inner.registry.keys().map(String::as_str)
    }

    /// Records a new run of `workflow` with `input` and returns at once: a
    /// typed [`RunHandle`] for a [`WorkflowRef`] (whose `result()` is the
    /// workflow's output type), the [`RunId`] for a workflow named by a
    /// string (the CLI and other callers that know the name only at run time).
    ///
    /// [`EngineError::UnknownWorkflow`] if no workflow has that name;
    /// [`EngineError::InvalidInput`] if `input` does not decode as the
    /// workflow's input type (checked now, not when the run starts).
    pub async fn start<W, I>(&self, workflow: W, input: &I) -> Result<W::Handle, EngineError>
    where
        W: StartWorkflow<I>,
        I: Serialize + ?Sized,
    {
        self.start_with_id(RunId::new(), workflow, input).await
    }

    /// Like [`Engine::start`] with a caller-chosen id. Idempotent: the same id,
    /// workflow and input return the existing run; other input is
    /// [`EngineError::RunConflict`].
    pub async fn start_with_id<W, I>(
        &self,
        id: RunId,
        workflow: W,
        input: &I,
    ) -> Result<W::Handle, EngineError>
    where
        W: StartWorkflow<I>,
        I: Serialize + ?Sized,
    {
        let run = self
            .start_named(id, workflow.workflow_name(), input)
            .await?;
        Ok(workflow.handle(self, run))
    }

    /// The typed handle of an existing run of `workflow` (found again after
    /// a restart by its id). [`EngineError::RunNotFound`] if there is no such
    /// run; [`EngineError::WrongWorkflow`] if it is a run of another workflow.
    pub async fn run_handle<I, O>(
        &self,
        workflow: WorkflowRef<I, O>,
        run: RunId,
    ) -> Result<RunHandle<O>, EngineError> {
        let rec = self.run(&run).await?;
        if rec.workflow != workflow.name() {
            return Err(EngineError::WrongWorkflow {
                run,
                expected: workflow.name().to_string(),
                found: rec.workflow,
            });
        }
        Ok(StartWorkflow::<I>::handle(&workflow, self, run))
    }

    async fn start_named<I: Serialize + ?Sized>(
        &self,
        id: RunId,
        name: &str,
        input: &I,
    ) -> Result<RunId, EngineError> {
        let registered =
            self.inner
                .registry
                .get(name)
                .ok_or_else(|| EngineError::UnknownWorkflow {
                    name: name.to_string(),
                })?;
        let input = Payload::encode(input).map_err(EngineError::Encode)?;
        registered
            .check_input(&input)
            .map_err(|source| EngineError::InvalidInput {
                workflow: name.to_string(),
                message: source.to_string(),
                source,
            })?;
        let new = NewRun {
            id,
            workflow: name.to_string(),
            input,
        };
        // With a free slot, the run is leased in the creating write and
        // driven at once by this engine's workers: no queue round trip.
        let created = match self.inner.handover() {
            Some(workers) => {
                let created = self
                    .inner
                    .store
                    .create_run_leased(new, self.inner.settings.lease_ttl)
                    .await;
                match created {
                    Ok((created, Some(lease))) => {
                        if let Err(unsent) = workers.send(lease) {
                            // The workers stopped meanwhile: the run is due
                            // again once its lease is given back.
                            self.inner.unreserve(1);
                            self.inner.store.release_lease(&unsent.0).await?;
                        }
                        Ok(created)
                    }
                    other => {
                        self.inner.unreserve(1);
                        other.map(|(created, _)| created)
                    }
                }
            }
            None => self.inner.store.create_run(new).await,
        };
        match created {
            Ok(created) => {
                debug!(run = %id, workflow = name, created = created.created, "run started");
                Ok(id)
            }
            Err(StoreError::RunConflict { run }) => Err(EngineError::RunConflict { run }),
            Err(e) => Err(e.into()),
        }
    }

    /// A run's current record.
    pub async fn run(&self, run: &RunId) -> Result<RunRecord, EngineError> {
        self.inner
            .store
            .get_run(*run)
            .await?
            .ok_or(EngineError::RunNotFound { run: *run })
    }

    /// A run's current status.
    pub async fn status(&self, run: &RunId) -> Result<RunStatus, EngineError> {
        Ok(self.run(run).await?.status)
    }

    /// Waits for a run to end and returns its output decoded as `O`.
    /// A blocked run is [`EngineError::RunBlocked`] at once: waiting for it
    /// would hang until new code is deployed.
    pub async fn result<O: DeserializeOwned>(&self, run: &RunId) -> Result<O, EngineError> {
        let mut feed = self.inner.store.subscribe();
        loop {
            let rec = self.run(run).await?;
            if rec.status.is_terminal() {
                return self.terminal_result(&rec).await;
            }
            if rec.status == RunStatus::Blocked {
                return Err(EngineError::RunBlocked {
                    run: *run,
                    message: rec.error.map(|e| e.message).unwrap_or_default(),
                });
            }
            // Only a new status can end the wait: the run's other appends
            // do not wake it (a long run would otherwise cost a read per step).
            wait_for_change(&mut feed, self.inner.settings.poll_interval, |c| {
                matches!(c, Change::Status { run: r, status }
                    if r == run && (status.is_terminal() || *status == RunStatus::Blocked))
            })
            .await;
        }
    }

    async fn terminal_result<O: DeserializeOwned>(
        &self,
        rec: &RunRecord,
    ) -> Result<O, EngineError> {
        let run = rec.id;
        let last = self
            .inner
            .store
            .read_events(run, rec.next_seq.saturating_sub(1), 1)
            .await?;
        match last.into_iter().next().map(|e| e.data) {
            Some(EventData::RunCompleted { output }) => {
                output.decode().map_err(|source| EngineError::OutputDecode {
                    run,
                    message: source.to_string(),
                    source,
                })
            }
            Some(EventData::RunFailed { error }) => Err(EngineError::RunFailed {
                run,
                message: error.message,
            }),
            _ => Err(EngineError::RunCancelled { run }),
        }
    }

    /// Cancels a run: records `run_cancelled` now. A step that is running
    /// finishes, but its result is not recorded; the workflow runs no further.
    ///
    /// Its attached child runs ([`crate::Context::start_child`]) are
    /// cancelled too, and theirs in turn; detached ones keep running. Calling
    /// it again on a cancelled run repeats that for children a crash left
    /// running (and returns [`EngineError::RunEnded`]); an attached child
    /// whose parent has ended also cancels itself when an engine next loads
    /// it from its log (not when it resumes from an engine's memory).
    pub async fn cancel(&self, run: &RunId) -> Result<(), EngineError> {
        let result = self
            .inner
            .store
            .append(*run, vec![EventData::RunCancelled], None)
            .await;
        if matches!(
            result,
            Ok(_)
                | Err(StoreError::RunTerminal {
                    status: RunStatus::Cancelled,
                    ..
                })
        ) {
            for child in crate::driver::attached_children(&self.inner, *run).await? {
                crate::driver::cancel_child(&self.inner, child).await?;
            }
        }
        match result {
            Ok(_) => Ok(()),
            Err(StoreError::RunTerminal { run, status }) => {
                Err(EngineError::RunEnded { run, status })
            }
            Err(StoreError::RunNotFound { run }) => Err(EngineError::RunNotFound { run }),
            Err(e) => Err(e.into()),
        }
    }

    /// Drops every suspended run from memory; they replay when next due.
    pub fn clear_cache(&self) {
        self.inner.cache.clear();
    }

    /// How many suspended runs are held in memory.
    pub fn cached_runs(&self) -> usize {
        self.inner.cache.len()
    }

    /// Recorded events held in memory by cached runs that their workflows have
    /// not been given yet, and the payload bytes they carry. Delivered events
    /// are not kept, so this stays small however long a run's history grows.
    pub fn cached_events(&self) -> (usize, usize) {
        self.inner.cache.pending_footprint()
    }

    /// Counters of what this engine has done (activations, replays).
    ///
    /// ```
    /// # use workflow_core::Engine;
    /// # use workflow_store::MemoryStore;
    /// let engine = Engine::builder(MemoryStore::new()).build();
    /// assert_eq!(engine.metrics().activations, 0);
    /// ```
    pub fn metrics(&self) -> EngineMetrics {
        let m = &self.inner.metrics;
        EngineMetrics {
            activations: m.activations.load(Ordering::Relaxed),
            replays: m.replays.load(Ordering::Relaxed),
        }
    }

    /// Asks a blocked run to try again: it is replayed with the workflows this
    /// engine has now (after a fix was deployed, or its workflow registered).
    ///
    /// A blocked run is otherwise inert: its timers do not wake it, so it
    /// costs nothing while nobody can change its outcome. If the code still
    /// does not match its history, it is blocked again with the same error.
    /// [`EngineError::RunNotBlocked`] if the run is not blocked.
    pub async fn retry_blocked(&self, run: &RunId) -> Result<(), EngineError> {
        let rec = self.run(run).await?;
        if rec.status != RunStatus::Blocked {
            return Err(EngineError::RunNotBlocked {
                run: *run,
                status: rec.status,
            });
        }
        match self.inner.store.wake(*run).await {
            Ok(()) => Ok(()),
            Err(StoreError::RunTerminal { run, status }) => {
                Err(EngineError::RunEnded { run, status })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes ended runs (completed, failed or cancelled) whose last event is
    /// older than `options` says, with everything they own (events, hooks,
    /// tokens, index rows), and returns how many were deleted. Runs that
    /// have not ended are never touched; purging is idempotent and safe
    /// while engines run. Works in batches of 256 runs, one write each.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use workflow_core::{Engine, PurgeOptions};
    /// # use workflow_store::{MemoryStore, RunStatus};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let engine = Engine::builder(MemoryStore::new()).build();
    /// let thirty_days = Duration::from_secs(30 * 24 * 3600);
    /// let purged = engine
    ///     .purge_runs(&PurgeOptions::older_than(thirty_days).status(RunStatus::Completed))
    ///     .await
    ///     .unwrap();
    /// assert_eq!(purged, 0);
    /// # });
    /// ```
    pub async fn purge_runs(&self, options: &PurgeOptions) -> Result<u64, EngineError> {
        let store = &self.inner.store;
        let cutoff = Timestamp(
            store
                .now()
                .as_millis()
                .saturating_sub(u64::try_from(options.older_than.as_millis()).unwrap_or(u64::MAX)),
        );
        let mut query = PurgeQuery::ended_before(cutoff);
        query.workflow.clone_from(&options.workflow);
        query.status = options.status;
        let mut purged = 0u64;
        loop {
            let page = store.purge_runs(query.clone()).await?;
            purged += page.runs.len() as u64;
            for run in &page.runs {
                debug!(%run, "purged");
            }
            match page.next {
                Some(next) => query = query.after(next),
                None => return Ok(purged),
            }
        }
    }

    /// Starts the background workers (tokio tasks) that drive due runs.
    /// Calling it again while they run does nothing. Needs a tokio runtime.
    pub fn start_workers(&self) {
        let mut workers = self.inner.workers.lock().unwrap_or_else(|p| p.into_inner());
        if workers.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        self.inner.stop.send_replace(false);
        let (tx, rx) = mpsc::unbounded_channel();
        *self
            .inner
            .handover
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(tx);
        let inner = self.inner.clone();
        *workers = Some(tokio::spawn(dispatch(inner, rx)));
    }

    fn take_workers(&self) -> Option<JoinHandle<()>> {
        // No more hand-overs: runs started from now on wait in the queue.
        self.inner
            .handover
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        self.inner
            .workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Stops leasing new work and waits for runs being driven to suspend:
    /// step attempts already running finish and are recorded, no new attempt
    /// starts, and each run is released (its timers fire on whichever engine
    /// runs next). Use [`Engine::shutdown_now`] not to wait for running steps.
    pub async fn shutdown(&self) {
        if let Some(handle) = self.take_workers() {
            self.inner.stop.send_replace(true);
            if let Err(e) = handle.await {
                warn!(error = %e, "worker task ended abnormally");
            }
        }
    }

    /// Stops the workers at once, abandoning runs being driven (as a crash
    /// would): their leases expire and any engine on the store takes them over.
    /// Steps in progress may run again there (steps are at least once).
    pub fn shutdown_now(&self) {
        if let Some(handle) = self.take_workers() {
            handle.abort();
            // Its activations are gone with it, and their slots.
            self.inner.inflight.store(0, Ordering::Release);
        }
        self.inner.cache.clear();
    }

    /// Drives due runs until none is due now, in this task. For tests and
    /// tools that do not want background workers.
    pub async fn run_due(&self) -> Result<usize, EngineError> {
        let mut driven = 0;
        loop {
            let leases = self
                .inner
                .store
                .lease_due(
                    self.inner.settings.concurrency,
                    self.inner.settings.lease_ttl,
                )
                .await?;
            if leases.is_empty() {
                return Ok(driven);
            }
            let mut set = tokio::task::JoinSet::new();
            for lease in leases {
                driven += 1;
                set.spawn(activate(
                    self.inner.clone(),
                    lease,
                    self.inner.stop.subscribe(),
                ));
            }
            while set.join_next().await.is_some() {}
        }
    }
}

/// Pause after an activation failed on a store error, before it is retried.
const TRANSIENT_BACKOFF: Duration = Duration::from_millis(50);

/// Drives one leased run and puts it back (cache, lease).
async fn activate(
    inner: Arc<EngineInner>,
    mut lease: workflow_store::Lease,
    stop: watch::Receiver<bool>,
) {
    let run = lease.run_id;
    let span = info_span!("run", run = %run, workflow = tracing::field::Empty);
    async {
        match drive(&inner, &mut lease, stop).await {
            Ok(Outcome::Suspended(inst)) => inner.cache.put(run, inst),
            Ok(Outcome::Done) => {}
            // Nothing to release: the store dropped the ended run's lease.
            Ok(Outcome::Ended) => return,
            Err(e) => {
                warn!(error = %e, "activation stopped");
                if e.is_transient() {
                    // The work is unfinished: keep the run due. A new wake-up
                    // survives the release; after a pause, so that a failing
                    // store is not hammered. If the wake-up cannot be recorded
                    // either, keep the lease: the run is due again when it expires.
                    tokio::time::sleep(TRANSIENT_BACKOFF).await;
                    if let Err(e) = inner.store.wake(run).await {
                        warn!(error = %e, "could not re-queue the run; it resumes when its lease expires");
                        return;
                    }
                }
            }
        }
        match inner.store.release_lease(&lease).await {
            Ok(()) => {}
            Err(StoreError::LeaseLost { .. }) => {
                // Another engine drives it now; our instance may be stale.
                warn!("lease lost: another engine took the run over");
                drop(inner.cache.take(run));
            }
            Err(e) => warn!(error = %e, "could not release lease; the run is due again when it expires"),
        }
    }
    .instrument(span)
    .await
}

/// The worker loop: lease due runs up to the concurrency limit, drive each in
/// its own task, sleep until a notification, a hand-over or the next due
/// time. Runs this engine starts come already leased (see
/// [`Engine::start`]): they are driven at once, in a slot their starter
/// reserved.
async fn dispatch(inner: Arc<EngineInner>, mut handed: mpsc::UnboundedReceiver<Lease>) {
    let mut feed = inner.store.subscribe();
    let mut stop = inner.stop.subscribe();
    let mut active = tokio::task::JoinSet::new();
    let settings = inner.settings.clone();
    let spawn = |active: &mut tokio::task::JoinSet<()>, lease| {
        active.spawn(activate(inner.clone(), lease, inner.stop.subscribe()));
    };
    wake_blocked_runs(&inner).await;
    loop {
        while active.try_join_next().is_some() {
            inner.unreserve(1);
        }
        while let Ok(lease) = handed.try_recv() {
            spawn(&mut active, lease);
        }
        let free = inner.reserve(settings.concurrency);
        if free > 0 {
            let leased = inner.store.lease_due(free, settings.lease_ttl).await;
            let taken = leased.as_ref().map_or(0, Vec::len);
            inner.unreserve(free - taken.min(free));
            match leased {
                Ok(leases) if !leases.is_empty() => {
                    for lease in leases {
                        spawn(&mut active, lease);
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "lease_due failed; retrying"),
            }
        }
        let wait = match inner.store.next_due().await {
            Ok(Some(at)) => at
                .saturating_duration_since(inner.store.now())
                .min(settings.poll_interval),
            _ => settings.poll_interval,
        };
        let wait = wait.max(Duration::from_millis(1));
        if *stop.borrow_and_update() {
            break;
        }
        tokio::select! {
            _ = stop.changed() => {}
            () = next_change(&mut feed, |c| matches!(c, Change::Due { .. })) => {}
            Some(lease) = handed.recv() => spawn(&mut active, lease),
            Some(_) = active.join_next(), if !active.is_empty() => inner.unreserve(1),
            _ = tokio::time::sleep(wait) => {}
        }
    }
    // Leases handed over too late to be driven go back to the queue.
    handed.close();
    while let Some(lease) = handed.recv().await {
        inner.unreserve(1);
        if let Err(e) = inner.store.release_lease(&lease).await {
            warn!(run = %lease.run_id, error = %e, "could not give back a lease; the run is due again when it expires");
        }
    }
    while active.join_next().await.is_some() {
        inner.unreserve(1);
    }
}

/// An engine that starts may have the code or the registration that a
/// blocked run was waiting for: it retries each blocked run of a workflow it
/// registers, once. (A run that is still blocked stays inert afterwards.)
async fn wake_blocked_runs(inner: &EngineInner) {
    let mut after = None;
    loop {
        let query = RunQuery::default()
            .status(RunStatus::Blocked)
            .after(after)
            .limit(256);
        let page = match inner.store.list_runs(query).await {
            Ok(page) => page,
            Err(e) => {
                warn!(error = %e, "could not list blocked runs to retry them");
                return;
            }
        };
        let Some(last) = page.last() else { return };
        after = Some(last.id);
        for rec in page {
            if !inner.registry.contains_key(&rec.workflow) {
                continue;
            }
            if let Err(e) = inner.store.wake(rec.id).await {
                warn!(run = %rec.id, error = %e, "could not retry a blocked run");
            }
        }
    }
}

/// Which ended runs [`Engine::purge_runs`] deletes: those that ended longer
/// ago than `older_than`, optionally only of one workflow and one final
/// status (completed, failed or cancelled).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PurgeOptions {
    older_than: Duration,
    workflow: Option<String>,
    status: Option<RunStatus>,
}

impl PurgeOptions {
    /// Runs that ended more than `age` ago, of any workflow and final status.
    pub fn older_than(age: Duration) -> Self {
        PurgeOptions {
            older_than: age,
            workflow: None,
            status: None,
        }
    }

    /// Only runs of `workflow`.
    pub fn workflow(mut self, workflow: impl Into<String>) -> Self {
        self.workflow = Some(workflow.into());
        self
    }

    /// Only runs that ended with `status`; a status that is not final
    /// (pending, running, blocked) matches no run.
    pub fn status(mut self, status: RunStatus) -> Self {
        self.status = Some(status);
        self
    }
}
