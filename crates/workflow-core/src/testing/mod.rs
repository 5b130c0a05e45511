//! Testing your workflows (feature `test-util`): a [`TestEngine`] with a
//! virtual clock, step mocks, and history assertions.
//!
//! A workflow that waits three days for an approval cannot be tested in real
//! time. A [`TestEngine`] is a real [`Engine`] on a [`MemoryStore`] whose
//! clock is virtual, driven by the test itself instead of background workers:
//!
//! - **time skipping**: while the test awaits something (a run's
//!   [`result`](TestEngine::result), a hook, a webhook's answer) and every
//!   run is idle (waiting on timers, retries or hooks), the clock jumps to
//!   the next due timer, as `tokio::time::pause` auto-advances; or move it
//!   yourself with [`advance`](TestEngine::advance). A workflow that sleeps
//!   for 30 days finishes in milliseconds;
//! - **driving runs** with the engine's own API: [`start`](TestEngine::start)
//!   a typed workflow, [`resume_hook`](TestEngine::resume_hook),
//!   [`resume_webhook`](TestEngine::resume_webhook) (a manual webhook's
//!   answer is returned), [`cancel`](TestEngine::cancel), and await results;
//! - **step mocks** ([`StepMock`]): a step's body replaced by name, attempt by
//!   attempt (a value, a retryable or fatal error); unmocked steps run for real;
//! - **history assertions** ([`History`]): the run's typed events, the
//!   operations it issued, each step's attempts, and
//!   [`replay_check`](TestEngine::replay_check), the check of
//!   [`Engine::check_replay`] for one run, so a test suite catches
//!   nondeterminism and changes that would block runs in production.
//!
//! # When time moves
//!
//! Only while the test waits on the test engine, and only when no run can
//! make progress at the current time: every due run is driven first, and
//! other tasks get a turn (a `resume_hook` in a concurrent branch of the
//! test happens before time moves on). Actions ([`start`](TestEngine::start),
//! [`resume_hook`](TestEngine::resume_hook), [`cancel`](TestEngine::cancel))
//! never move time: they happen "now". Awaiting something that nothing can
//! bring (a hook nobody resumes, and no timer) fails with
//! [`TestError::Idle`], naming the hooks the runs wait on, instead of
//! hanging.
//!
//! The inner [`Engine`] ([`TestEngine::engine`]) can be handed to code under
//! test (an axum handler that starts runs); its own waits
//! ([`Engine::result`]) do not drive runs: await through the test engine.
//!
//! ```
//! use std::time::Duration;
//! use workflow_core::testing::{StepMock, TestEngine};
//! use workflow_core::{Context, StepError, WorkflowError, WorkflowRef};
//!
//! const REMIND: WorkflowRef<String, String> = WorkflowRef::new("remind");
//!
//! async fn remind(ctx: Context, who: String) -> Result<String, WorkflowError> {
//!     ctx.sleep(Duration::from_secs(30 * 24 * 3600)).await?;
//!     let sent = ctx.step("send-mail", async |_| Ok::<_, StepError>(format!("mailed {who}"))).await?;
//!     Ok(sent)
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let env = TestEngine::builder()
//!     .workflow(REMIND, remind)
//!     .mock_step("send-mail", StepMock::returns("mocked"))
//!     .build();
//! let run = env.start(REMIND, &"ann".to_string()).await?;
//! assert_eq!(run.result().await?, "mocked"); // 30 days later, in virtual time
//! assert_eq!(env.elapsed(), Duration::from_secs(30 * 24 * 3600));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod history;
mod mock;

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::debug;
use workflow_store::{
    Clock, HookRecord, ManualClock, MemoryStore, Resumed, RunId, RunQuery, RunStatus, Store,
    StoreError, Timestamp, WebhookResponse,
};

pub use history::{AttemptOutcome, History, Operation, StepAttempt};
pub use mock::StepMock;
pub(crate) use mock::StepMocks;

use crate::check::{ReplayMismatch, ReplayReport};
use crate::context::Context;
use crate::engine::{Engine, EngineBuilder, EngineSettings};
use crate::error::{EngineError, WorkflowError};
use crate::feed::next_change;
use crate::resume::ResumeError;
use crate::workflow_ref::{WorkflowName, WorkflowRef};

/// Where a test engine's clock starts (2024-01-01T00:00:00Z), unless
/// [`TestEngineBuilder::start_at`] says otherwise: tests see the same times
/// on every run.
pub const TEST_EPOCH: Timestamp = Timestamp(1_704_067_200_000);

/// Times the driver yields to other tasks before it moves the clock, so that
/// what they do at the current time happens first.
const SETTLE_YIELDS: usize = 4;

/// Builds a [`TestEngine`]: workflows, step mocks, clock settings.
pub struct TestEngineBuilder {
    builder: EngineBuilder,
    store: MemoryStore,
    clock: Arc<ManualClock>,
    mocks: Arc<StepMocks>,
    start: Timestamp,
    auto_advance: bool,
    idle_timeout: Duration,
}

impl std::fmt::Debug for TestEngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestEngineBuilder")
            .field("engine", &self.builder)
            .field("now", &self.clock.now())
            .field("auto_advance", &self.auto_advance)
            .finish()
    }
}

impl TestEngineBuilder {
    fn on(store: MemoryStore, clock: Arc<ManualClock>, start: Timestamp) -> Self {
        TestEngineBuilder {
            builder: Engine::builder(store.clone()),
            store,
            clock,
            mocks: Arc::default(),
            start,
            auto_advance: true,
            idle_timeout: Duration::from_secs(1),
        }
    }

    /// Registers `f` as the workflow `name`, as
    /// [`EngineBuilder::workflow`] does (and panics like it on a name
    /// registered twice).
    pub fn workflow<N, I, O, F, Fut>(mut self, name: N, f: F) -> Self
    where
        N: WorkflowName<I, O>,
        I: DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        F: Fn(Context, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, WorkflowError>> + Send + 'static,
    {
        let mocks = self.mocks.clone();
        self.builder = self.builder.workflow(name, move |ctx: Context, input: I| {
            ctx.use_step_mocks(mocks.clone());
            f(ctx, input)
        });
        self
    }

    /// Replaces the body of every step called `name` by `mock` (see
    /// [`StepMock`]); a second mock for the name replaces the first.
    pub fn mock_step(self, name: impl Into<String>, mock: StepMock) -> Self {
        self.mocks.set(name.into(), mock);
        self
    }

    /// Whether time jumps to the next due timer while the test waits and
    /// every run is idle (default `true`). Off, time moves only with
    /// [`TestEngine::advance`].
    pub fn auto_advance(mut self, on: bool) -> Self {
        self.auto_advance = on;
        self
    }

    /// How long (in real time) a wait that nothing inside the engine can
    /// end waits for another task to act (resume a hook, cancel a run)
    /// before it fails with [`TestError::Idle`] (default 1 s).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets the virtual clock to `time` (default [`TEST_EPOCH`]).
    pub fn start_at(mut self, time: std::time::SystemTime) -> Self {
        let t = Timestamp::from_system_time(time);
        self.clock.set(t);
        self.start = t;
        self
    }

    /// Replaces the engine's settings (the hot-run cache size, the lease).
    pub fn settings(mut self, settings: EngineSettings) -> Self {
        self.builder = self.builder.settings(settings);
        self
    }

    /// Sets the hot-run cache size; 0 makes every activation replay the
    /// run from its history, as after a restart.
    pub fn cache_size(mut self, n: usize) -> Self {
        self.builder = self.builder.cache_size(n);
        self
    }

    /// Builds the test engine. No background workers run: the test engine
    /// drives runs while the test waits on it.
    pub fn build(self) -> TestEngine {
        TestEngine {
            inner: Arc::new(Inner {
                engine: self.builder.build(),
                store: self.store,
                clock: self.clock,
                mocks: self.mocks,
                start: self.start,
                auto_advance: self.auto_advance,
                idle_timeout: self.idle_timeout,
                turn: tokio::sync::Mutex::new(()),
            }),
        }
    }
}

/// An [`Engine`] for tests, on a [`MemoryStore`] with a virtual clock; see
/// the [module docs](self). Cheap to clone.
#[derive(Clone)]
pub struct TestEngine {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    store: MemoryStore,
    clock: Arc<ManualClock>,
    mocks: Arc<StepMocks>,
    start: Timestamp,
    auto_advance: bool,
    idle_timeout: Duration,
    /// Held while runs are driven and while the clock moves: one driver at a time.
    turn: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for TestEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestEngine")
            .field("engine", &self.inner.engine)
            .field("elapsed", &self.elapsed())
            .field("auto_advance", &self.inner.auto_advance)
            .finish()
    }
}

/// Why a test engine's wait failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestError {
    /// What the engine itself says (the run failed, was cancelled, is
    /// blocked, its output did not decode, …): the same error as
    /// [`Engine::result`]'s.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Nothing can bring what the test waits for: every run is idle, no
    /// timer comes due (or auto-advance is off), and no other task acted
    /// within the idle timeout.
    #[error("{}", idle_message(.waiting_for, .live_hooks, .next_timer_in))]
    Idle {
        /// What the test waited for.
        waiting_for: String,
        /// Tokens of the live hooks of runs that have not ended: what the
        /// test may need to resume.
        live_hooks: Vec<String>,
        /// With auto-advance off: how far away the next timer is.
        next_timer_in: Option<Duration>,
    },
}

fn idle_message(waiting_for: &str, hooks: &[String], next: &Option<Duration>) -> String {
    let mut m = format!("waited for {waiting_for}, but every run is idle");
    match next {
        Some(d) => m.push_str(&format!(
            " and auto-advance is off: the next timer is due in {d:?} (TestEngine::advance)"
        )),
        None => m.push_str(" and no timer is armed"),
    }
    if hooks.is_empty() {
        m.push_str("; no run waits on a hook");
    } else {
        m.push_str(&format!(
            "; runs wait on the hooks {} (TestEngine::resume_hook)",
            hooks.join(", ")
        ));
    }
    m
}

/// Why [`TestEngine::replay_check`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayCheckError {
    /// The current code does not reproduce the run's history; the mismatch
    /// names the position (the operation index) and what differs.
    #[error("{0}")]
    Mismatch(ReplayMismatch),
    /// The run is of a workflow this engine does not register.
    #[error("run {run} is of workflow {workflow:?}, which this engine does not register")]
    UnknownWorkflow {
        /// The run.
        run: RunId,
        /// Its workflow.
        workflow: String,
    },
    /// The run could not be read.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// How one round of driving ended.
enum Round {
    /// Runs were driven or the clock moved: look again.
    Progress,
    /// The clock reached the wait's limit.
    Limit,
    /// Nothing can happen without another task acting.
    Idle,
}

impl Default for TestEngine {
    fn default() -> Self {
        TestEngine::builder().build()
    }
}

impl TestEngine {
    /// Starts building a test engine on a fresh [`MemoryStore`] whose clock
    /// stands at [`TEST_EPOCH`].
    pub fn builder() -> TestEngineBuilder {
        let clock = Arc::new(ManualClock::new(TEST_EPOCH));
        let store = MemoryStore::with_clock(clock.clone());
        TestEngineBuilder::on(store, clock, TEST_EPOCH)
    }

    /// A builder for new code on this engine's store and clock, as a deploy
    /// would bring: register the changed workflows, build, then
    /// [`replay_check`](TestEngine::replay_check) the old runs or drive them
    /// on. Step mocks are not carried over. Stop using this engine
    /// afterwards: its hot runs would go on with the old code.
    pub fn redeploy(&self) -> TestEngineBuilder {
        let mut b = TestEngineBuilder::on(
            self.inner.store.clone(),
            self.inner.clock.clone(),
            self.inner.start,
        );
        b.auto_advance = self.inner.auto_advance;
        b.idle_timeout = self.inner.idle_timeout;
        b.builder = b.builder.settings(self.inner.engine.settings().clone());
        b
    }

    /// The engine inside, for code under test that takes an [`Engine`].
    /// Its waits ([`Engine::result`], [`Engine::wait_for_hook`]) do not drive
    /// runs or move time; the test engine's do. Do not start its workers:
    /// the test engine drives the runs.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The store (events, runs, hooks) on the virtual clock.
    pub fn store(&self) -> &MemoryStore {
        &self.inner.store
    }

    /// The virtual time.
    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// Virtual time passed since the engine was built.
    pub fn elapsed(&self) -> Duration {
        self.now().saturating_duration_since(self.inner.start)
    }

    /// Replaces the body of every step called `name` by `mock` from now on.
    pub fn mock_step(&self, name: impl Into<String>, mock: StepMock) {
        self.inner.mocks.set(name.into(), mock);
    }

    /// Lets the steps called `name` run their real body again.
    pub fn unmock_step(&self, name: &str) {
        self.inner.mocks.remove(name);
    }

    /// Records a new run of `workflow` and returns at once, like
    /// [`Engine::start`]; the run is driven while the test waits.
    pub async fn start<I, O>(
        &self,
        workflow: WorkflowRef<I, O>,
        input: &I,
    ) -> Result<TestRun<O>, EngineError>
    where
        I: Serialize,
    {
        self.start_with_id(RunId::new(), workflow, input).await
    }

    /// Like [`TestEngine::start`] with a chosen id (see [`Engine::start_with_id`]).
    pub async fn start_with_id<I, O>(
        &self,
        id: RunId,
        workflow: WorkflowRef<I, O>,
        input: &I,
    ) -> Result<TestRun<O>, EngineError>
    where
        I: Serialize,
    {
        let handle = self.inner.engine.start_with_id(id, workflow, input).await?;
        Ok(self.handle(handle.id()))
    }

    /// The typed handle of an existing run of `workflow` (see [`Engine::run_handle`]).
    pub async fn run_handle<I, O>(
        &self,
        workflow: WorkflowRef<I, O>,
        run: RunId,
    ) -> Result<TestRun<O>, EngineError> {
        let handle = self.inner.engine.run_handle(workflow, run).await?;
        Ok(self.handle(handle.id()))
    }

    fn handle<O>(&self, id: RunId) -> TestRun<O> {
        TestRun {
            env: self.clone(),
            id,
            output: std::marker::PhantomData,
        }
    }

    /// A run's current status (nothing is driven).
    pub async fn status(&self, run: &RunId) -> Result<RunStatus, EngineError> {
        self.inner.engine.status(run).await
    }

    /// Waits for `run` to end, driving runs and moving time (see the
    /// [module docs](self)), and returns its output like [`Engine::result`].
    pub async fn result<O: DeserializeOwned>(&self, run: &RunId) -> Result<O, TestError> {
        let engine = &self.inner.engine;
        let ended = self
            .drive_until(|| async move {
                let status = engine.status(run).await?;
                Ok((status.is_terminal() || status == RunStatus::Blocked).then_some(()))
            })
            .await?;
        match ended {
            Some(()) => Ok(engine.result(run).await?),
            None => Err(self.idle_error(format!("run {run} to end")).await),
        }
    }

    /// Cancels a run now, like [`Engine::cancel`].
    pub async fn cancel(&self, run: &RunId) -> Result<(), EngineError> {
        self.inner.engine.cancel(run).await
    }

    /// Drives every run that is due at the current time until all are idle,
    /// without moving time; returns how many activations that took.
    pub async fn run_until_idle(&self) -> Result<usize, EngineError> {
        let _turn = self.inner.turn.lock().await;
        self.inner.engine.run_due().await
    }

    /// Moves the virtual clock forward by `d`, firing every timer and retry
    /// due on the way at its own time, in order, and driving the runs they
    /// wake. Works with auto-advance on or off.
    pub async fn advance(&self, d: Duration) -> Result<(), EngineError> {
        let until = self.now().saturating_add(d);
        self.drive_until_limit(until, true, || async { Ok(None::<()>) })
            .await
            .map(drop)
    }

    /// Delivers `payload` to the live hook with `token`, like
    /// [`Engine::resume_hook`], after driving the runs due now (so a hook
    /// the runs have reached at the current time exists). Time does not
    /// move: use [`wait_for_hook`](TestEngine::wait_for_hook) for a hook a
    /// run creates later.
    pub async fn resume_hook<T: Serialize + ?Sized>(
        &self,
        token: &str,
        payload: &T,
    ) -> Result<Resumed, ResumeError> {
        self.run_until_idle().await.map_err(resume_error)?;
        self.inner.engine.resume_hook(token, payload).await
    }

    /// Waits until a live hook holds `token`, like
    /// [`Engine::wait_for_hook`], driving runs and moving time by at most
    /// `timeout` of virtual time; [`ResumeError::TimedOut`] after that, or
    /// when nothing can create the hook.
    pub async fn wait_for_hook(
        &self,
        token: &str,
        timeout: Duration,
    ) -> Result<HookRecord, ResumeError> {
        let t = workflow_store::HookToken::new(token)?;
        let store = &self.inner.store;
        let until = self.now().saturating_add(timeout);
        let found = self
            .drive_until_limit(until, self.inner.auto_advance, || async {
                Ok(store.get_hook(&t).await?)
            })
            .await
            .map_err(resume_error)?;
        found.ok_or_else(|| ResumeError::TimedOut {
            token: token.to_string(),
            waited: timeout,
        })
    }

    /// Waits until `run` has a live hook, like [`Engine::wait_for_live_hook`],
    /// driving runs and moving time by at most `timeout` of virtual time.
    pub async fn wait_for_live_hook(
        &self,
        run: &RunId,
        timeout: Duration,
    ) -> Result<HookRecord, ResumeError> {
        let store = &self.inner.store;
        let until = self.now().saturating_add(timeout);
        let found = self
            .drive_until_limit(until, self.inner.auto_advance, || async move {
                Ok(store.list_hooks(*run).await?.into_iter().find(|h| h.live))
            })
            .await
            .map_err(resume_error)?;
        found.ok_or(ResumeError::NoLiveHook {
            run: *run,
            waited: timeout,
        })
    }

    /// Resumes the webhook with `token` with an HTTP request and returns the
    /// answer, like [`Engine::resume_webhook`]. For a manual webhook the
    /// test engine drives the run (moving time by at most the webhook's
    /// timeout) until the workflow answers; `504` when it does not within
    /// that time, as a real caller would get.
    pub async fn resume_webhook(
        &self,
        token: &str,
        request: http::Request<Bytes>,
    ) -> http::Response<Bytes> {
        if let Err(e) = self.run_until_idle().await {
            return status_only(http::StatusCode::SERVICE_UNAVAILABLE, &e);
        }
        let manual = match self.inner.engine.get_hook(token).await {
            Ok(Some(HookRecord {
                webhook: Some(WebhookResponse::Manual { timeout_ms }),
                ..
            })) => Some(Duration::from_millis(timeout_ms)),
            _ => None,
        };
        let answer = self.inner.engine.resume_webhook(token, request);
        let Some(timeout) = manual else {
            return answer.await;
        };
        let until = self.now().saturating_add(timeout);
        let mut answer = std::pin::pin!(answer);
        loop {
            // The first poll records the request; later ones look for the answer.
            if let Poll::Ready(response) = futures::poll!(answer.as_mut()) {
                return response;
            }
            match self.round(Some(until), self.inner.auto_advance).await {
                Ok(Round::Progress) => {}
                Ok(Round::Limit | Round::Idle) => {
                    if let Poll::Ready(response) = futures::poll!(answer.as_mut()) {
                        return response;
                    }
                    debug!(
                        token,
                        "the workflow did not answer its manual webhook in time"
                    );
                    let mut r = http::Response::new(Bytes::new());
                    *r.status_mut() = http::StatusCode::GATEWAY_TIMEOUT;
                    return r;
                }
                Err(e) => return status_only(http::StatusCode::SERVICE_UNAVAILABLE, &e),
            }
        }
    }

    /// A run's history: its typed events, with assertion helpers.
    pub async fn history(&self, run: &RunId) -> Result<History, EngineError> {
        self.inner.engine.run(run).await?;
        let events = self.inner.store.read_log(*run).await?;
        Ok(History::new(*run, events))
    }

    /// Replays `run` against this engine's workflows, without running steps
    /// or writing: the check [`Engine::check_replay`] (and `workflow
    /// check-replay`) makes for every run, for one. Run it on the engine
    /// that recorded the run to catch nondeterminism (the code does not
    /// reproduce its own history), or on a [`redeploy`](TestEngine::redeploy)
    /// with changed code to see whether that change would block the run.
    pub async fn replay_check(&self, run: &RunId) -> Result<(), ReplayCheckError> {
        let rec = self.inner.engine.run(run).await?;
        let mut report = ReplayReport::default();
        self.inner
            .engine
            .check_run(*run, rec.status, &mut report)
            .await?;
        if let Some((run, workflow)) = report.unknown_workflow.pop() {
            return Err(ReplayCheckError::UnknownWorkflow { run, workflow });
        }
        match report.mismatches.pop() {
            Some(m) => Err(ReplayCheckError::Mismatch(m)),
            None => Ok(()),
        }
    }

    /// Drives runs until `probe` finds what the test waits for, moving time
    /// without limit (when auto-advance is on). `None`: nothing can bring it.
    async fn drive_until<T, F, Fut>(&self, probe: F) -> Result<Option<T>, EngineError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<T>, EngineError>>,
    {
        self.drive(None, self.inner.auto_advance, probe).await
    }

    /// Like `drive_until`, moving time no further than `until` (with
    /// `advance`), and standing at `until` when the probe finds nothing.
    async fn drive_until_limit<T, F, Fut>(
        &self,
        until: Timestamp,
        advance: bool,
        probe: F,
    ) -> Result<Option<T>, EngineError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<T>, EngineError>>,
    {
        self.drive(Some(until), advance, probe).await
    }

    async fn drive<T, F, Fut>(
        &self,
        limit: Option<Timestamp>,
        advance: bool,
        mut probe: F,
    ) -> Result<Option<T>, EngineError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<T>, EngineError>>,
    {
        let mut feed = self.inner.store.subscribe();
        // Whether the feed holds only changes seen since the last round.
        let mut fresh_feed = false;
        loop {
            if let Some(found) = probe().await? {
                return Ok(Some(found));
            }
            match self.round(limit, advance).await? {
                Round::Progress => fresh_feed = false,
                Round::Limit => return probe().await,
                Round::Idle if !fresh_feed => {
                    // Forget the changes this driver made itself, then look
                    // once more: a change from now on is someone else's.
                    if let Some(rx) = feed.as_mut() {
                        while rx.try_recv().is_ok() {}
                    }
                    fresh_feed = true;
                }
                Round::Idle => {
                    let wait = next_change(&mut feed, |_| true);
                    if tokio::time::timeout(self.inner.idle_timeout, wait)
                        .await
                        .is_err()
                    {
                        return probe().await;
                    }
                    fresh_feed = false;
                }
            }
        }
    }

    /// One round: drive the runs due now; if there were none, let other
    /// tasks act, and then (with `advance`) move the clock to the next due
    /// timer, or to `limit` if that comes first.
    async fn round(&self, limit: Option<Timestamp>, advance: bool) -> Result<Round, EngineError> {
        if self.run_until_idle().await? > 0 {
            return Ok(Round::Progress);
        }
        for _ in 0..SETTLE_YIELDS {
            tokio::task::yield_now().await;
        }
        let _turn = self.inner.turn.lock().await;
        let engine = &self.inner.engine;
        if engine.run_due().await? > 0 {
            return Ok(Round::Progress);
        }
        // Every run is idle: nothing is due now.
        let now = self.now();
        let next = self.inner.store.next_due().await?.filter(|at| *at > now);
        if !advance {
            return Ok(Round::Idle);
        }
        match (next, limit) {
            (Some(at), limit) if limit.is_none_or(|l| at <= l) => {
                debug!(by = ?at.saturating_duration_since(now), "every run is idle: time skips to the next timer");
                self.inner.clock.set(at);
                Ok(Round::Progress)
            }
            (_, Some(l)) => {
                if l > now {
                    self.inner.clock.set(l);
                }
                engine.run_due().await?;
                Ok(Round::Limit)
            }
            (_, None) => Ok(Round::Idle),
        }
    }

    async fn idle_error(&self, waiting_for: String) -> TestError {
        let store = &self.inner.store;
        let mut live_hooks = Vec::new();
        let open = RunQuery::default().status(RunStatus::Running).limit(256);
        for rec in store.list_runs(open).await.unwrap_or_default() {
            for hook in store.list_hooks(rec.id).await.unwrap_or_default() {
                if hook.live {
                    live_hooks.push(hook.token.to_string());
                }
            }
        }
        let now = self.now();
        let next_timer_in = match store.next_due().await {
            Ok(Some(at)) if !self.inner.auto_advance && at > now => {
                Some(at.saturating_duration_since(now))
            }
            _ => None,
        };
        TestError::Idle {
            waiting_for,
            live_hooks,
            next_timer_in,
        }
    }
}

/// An engine failure as the resume API reports it.
fn resume_error(e: EngineError) -> ResumeError {
    match e {
        EngineError::Store(e) => ResumeError::from(e),
        other => ResumeError::Store(StoreError::backend(
            "the test engine could not drive its runs",
            other,
        )),
    }
}

fn status_only(status: http::StatusCode, e: &EngineError) -> http::Response<Bytes> {
    tracing::warn!(error = %e, "the test engine could not drive its runs");
    let mut r = http::Response::new(Bytes::new());
    *r.status_mut() = status;
    r
}

/// A run started on a [`TestEngine`], whose output type is `O`: the test
/// engine's counterpart of [`RunHandle`](crate::RunHandle), with the same
/// methods, whose waits drive runs and move time.
pub struct TestRun<O> {
    env: TestEngine,
    id: RunId,
    output: std::marker::PhantomData<fn() -> O>,
}

impl<O> TestRun<O> {
    /// The run's id.
    pub fn id(&self) -> RunId {
        self.id
    }

    /// Waits for the run to end and returns its output (see [`TestEngine::result`]).
    pub async fn result(&self) -> Result<O, TestError>
    where
        O: DeserializeOwned,
    {
        self.env.result(&self.id).await
    }

    /// The run's current status.
    pub async fn status(&self) -> Result<RunStatus, EngineError> {
        self.env.status(&self.id).await
    }

    /// Cancels the run (see [`Engine::cancel`]).
    pub async fn cancel(&self) -> Result<(), EngineError> {
        self.env.cancel(&self.id).await
    }

    /// The run's history (see [`TestEngine::history`]).
    pub async fn history(&self) -> Result<History, EngineError> {
        self.env.history(&self.id).await
    }

    /// Replays the run against the engine's code (see [`TestEngine::replay_check`]).
    pub async fn replay_check(&self) -> Result<(), ReplayCheckError> {
        self.env.replay_check(&self.id).await
    }
}

impl<O> Clone for TestRun<O> {
    fn clone(&self) -> Self {
        self.env.handle(self.id)
    }
}

impl<O> std::fmt::Debug for TestRun<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRun").field("id", &self.id).finish()
    }
}

impl<O> std::fmt::Display for TestRun<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.id, f)
    }
}
