//! Fault injection: a [`Store`] wrapper that fails, delays or times out
//! operations at random, reproducibly from a seed.
//!
//! For testing what sits on top of a store (the engine, an application) under
//! the failures a real backend has: a call that fails before it reaches the
//! store, a call that reaches it but whose answer is lost (a timeout: the write
//! may or may not have happened), and slow calls. Faults can be switched off at
//! any time to check that everything finishes once the store recovers.
//!
//! ```
//! use workflow_store::faults::{FaultConfig, FaultyStore};
//! use workflow_store::MemoryStore;
//! let store = FaultyStore::new(MemoryStore::new(), FaultConfig::new(42).fail(0.05).timeout(0.05));
//! store.set_enabled(false); // a healthy store again
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
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
use crate::store::Store;

/// How often each kind of fault happens (probabilities per call, 0 to 1).
#[derive(Debug, Clone, PartialEq)]
pub struct FaultConfig {
    /// Seed of the fault sequence.
    pub seed: u64,
    /// The call fails before reaching the store.
    pub fail: f64,
    /// The call reaches the store, then fails as if it timed out.
    pub timeout: f64,
    /// The call is delayed by up to `max_delay`.
    pub delay: f64,
    /// Longest injected delay.
    pub max_delay: Duration,
}

impl FaultConfig {
    /// No faults yet, from `seed`; add them with the builder methods.
    pub fn new(seed: u64) -> Self {
        FaultConfig {
            seed,
            fail: 0.0,
            timeout: 0.0,
            delay: 0.0,
            max_delay: Duration::from_millis(20),
        }
    }

    /// Sets the probability of failing before the store.
    pub fn fail(mut self, p: f64) -> Self {
        self.fail = p;
        self
    }

    /// Sets the probability of a lost answer after the store acted.
    pub fn timeout(mut self, p: f64) -> Self {
        self.timeout = p;
        self
    }

    /// Sets the probability and the maximum of delays.
    pub fn delay(mut self, p: f64, max: Duration) -> Self {
        self.delay = p;
        self.max_delay = max;
        self
    }
}

/// What happens to one call.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    None,
    Fail,
    Timeout,
    Delay(Duration),
}

/// A [`Store`] that injects faults into another (see the module docs).
#[derive(Clone, Debug)]
pub struct FaultyStore<S> {
    inner: S,
    config: Arc<FaultConfig>,
    state: Arc<AtomicU64>,
    enabled: Arc<AtomicBool>,
    injected: Arc<AtomicU64>,
}

impl<S: Store> FaultyStore<S> {
    /// Wraps `inner`; faults are on.
    pub fn new(inner: S, config: FaultConfig) -> Self {
        FaultyStore {
            inner,
            state: Arc::new(AtomicU64::new(config.seed)),
            config: Arc::new(config),
            enabled: Arc::new(AtomicBool::new(true)),
            injected: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Turns faults on or off (for every clone).
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::SeqCst);
    }

    /// How many faults were injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The next number of the seeded sequence (SplitMix64), as a fraction in [0, 1).
    fn next_unit(&self) -> f64 {
        let mut z = self
            .state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::SeqCst)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    fn pick(&self) -> Fault {
        if !self.enabled.load(Ordering::SeqCst) {
            return Fault::None;
        }
        let c = &self.config;
        let r = self.next_unit();
        let fault = if r < c.fail {
            Fault::Fail
        } else if r < c.fail + c.timeout {
            Fault::Timeout
        } else if r < c.fail + c.timeout + c.delay {
            Fault::Delay(c.max_delay.mul_f64(self.next_unit()))
        } else {
            Fault::None
        };
        if fault != Fault::None {
            self.injected.fetch_add(1, Ordering::SeqCst);
        }
        fault
    }

    async fn faulted<T, F>(&self, op: &'static str, call: F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, StoreError>>,
    {
        match self.pick() {
            Fault::None => call.await,
            Fault::Fail => Err(StoreError::Backend {
                message: format!("injected failure in {op}"),
                source: None,
            }),
            Fault::Timeout => {
                let _ = call.await;
                Err(StoreError::Backend {
                    message: format!("injected timeout in {op} (the call may have taken effect)"),
                    source: None,
                })
            }
            Fault::Delay(d) => {
                tokio::time::sleep(d).await;
                call.await
            }
        }
    }
}

#[async_trait]
impl<S: Store> Store for FaultyStore<S> {
    async fn create_run(&self, run: NewRun) -> Result<CreatedRun, StoreError> {
        self.faulted("create_run", self.inner.create_run(run)).await
    }
    async fn create_run_leased(
        &self,
        run: NewRun,
        ttl: Duration,
    ) -> Result<(CreatedRun, Option<Lease>), StoreError> {
        self.faulted("create_run_leased", self.inner.create_run_leased(run, ttl))
            .await
    }
    async fn append(
        &self,
        run: RunId,
        events: Vec<EventData>,
        fence: Option<LeaseId>,
    ) -> Result<Appended, StoreError> {
        self.faulted("append", self.inner.append(run, events, fence))
            .await
    }
    async fn read_events(
        &self,
        run: RunId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.faulted("read_events", self.inner.read_events(run, from_seq, limit))
            .await
    }
    async fn get_run(&self, run: RunId) -> Result<Option<RunRecord>, StoreError> {
        self.faulted("get_run", self.inner.get_run(run)).await
    }
    async fn list_runs(&self, query: RunQuery) -> Result<Vec<RunRecord>, StoreError> {
        self.faulted("list_runs", self.inner.list_runs(query)).await
    }
    async fn purge_runs(&self, query: PurgeQuery) -> Result<Purged, StoreError> {
        self.faulted("purge_runs", self.inner.purge_runs(query))
            .await
    }
    async fn get_hook(&self, token: &HookToken) -> Result<Option<HookRecord>, StoreError> {
        self.faulted("get_hook", self.inner.get_hook(token)).await
    }
    async fn list_hooks(&self, run: RunId) -> Result<Vec<HookRecord>, StoreError> {
        self.faulted("list_hooks", self.inner.list_hooks(run)).await
    }
    async fn resume_hook(
        &self,
        token: &HookToken,
        payload: Payload,
    ) -> Result<Resumed, StoreError> {
        self.faulted("resume_hook", self.inner.resume_hook(token, payload))
            .await
    }
    async fn resume_webhook(
        &self,
        token: &HookToken,
        payload: Payload,
    ) -> Result<(Resumed, WebhookResponse), StoreError> {
        self.faulted("resume_webhook", self.inner.resume_webhook(token, payload))
            .await
    }
    async fn wake(&self, run: RunId) -> Result<(), StoreError> {
        self.faulted("wake", self.inner.wake(run)).await
    }
    async fn lease_due(&self, limit: usize, ttl: Duration) -> Result<Vec<Lease>, StoreError> {
        self.faulted("lease_due", self.inner.lease_due(limit, ttl))
            .await
    }
    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<Lease, StoreError> {
        self.faulted("renew_lease", self.inner.renew_lease(lease, ttl))
            .await
    }
    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        self.faulted("release_lease", self.inner.release_lease(lease))
            .await
    }
    async fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        self.faulted("next_due", self.inner.next_due()).await
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
        writer: &crate::stream::ChunkWriter,
        write: crate::stream::StreamWrite,
        fence: Option<LeaseId>,
    ) -> Result<(), StoreError> {
        self.faulted(
            "write_stream",
            self.inner.write_stream(run, writer, write, fence),
        )
        .await
    }
    async fn run_streams(
        &self,
        run: RunId,
    ) -> Result<Option<crate::stream::RunStreams>, StoreError> {
        self.faulted("run_streams", self.inner.run_streams(run))
            .await
    }
    async fn read_chunks(
        &self,
        run: RunId,
        keys: &[crate::stream::ChunkKey],
    ) -> Result<Vec<Option<Payload>>, StoreError> {
        self.faulted("read_chunks", self.inner.read_chunks(run, keys))
            .await
    }
}
