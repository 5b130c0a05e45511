//! The [`Context`]: everything a workflow may do that is recorded or replayed.
//!
//! # Determinism
//!
//! A workflow body must issue the same operations in the same order every time
//! it runs against the same log. Inside a workflow:
//!
//! - do: call [`Context::step`] for anything with side effects or that reads the
//!   outside world (HTTP, databases, files, the clock, randomness);
//! - do: use [`Context::now`], [`Context::random`], [`Context::uuid`] and
//!   [`Context::sleep`] instead of `SystemTime::now`, `rand::thread_rng`,
//!   `Uuid::new_v4` and `tokio::time::sleep`;
//! - do: combine operations with `futures::join!`, `futures::future::join_all`
//!   and `futures::select_biased!`. They are deterministic because the engine
//!   delivers one event at a time and polls the workflow until it is idle before
//!   delivering the next, so at most one operation becomes ready per event;
//! - don't: `tokio::spawn` from a workflow, iterate a `HashMap` to decide what
//!   to issue, read thread-locals or globals, or use `tokio::select!` without
//!   `biased;` over operations that may both be ready (it picks at random);
//! - don't: use the `Context` inside a step's closure (`ctx.random()`, a
//!   nested `ctx.step`): a step runs only when live, never on replay, so the
//!   step attempt fails fatally with an error saying so;
//! - don't: await anything that is not an operation of this context (a channel,
//!   a `tokio::time::sleep`): the engine cannot record it, and a run that waits
//!   on nothing the engine knows is marked blocked rather than left hanging.
//!
//! A mismatch between the code and the log is a [`crate::NondeterminismError`].

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::{Rng, RngCore};
use serde::de::DeserializeOwned;
use serde::Serialize;
use workflow_store::{RunId, Timestamp};

use crate::child::{child_run_id, Child, ChildOptions};
use crate::error::{StepError, WorkflowError};
use crate::hook::{random_token, Hook, HookError, HookOptions};
use crate::replay::{
    forbid_in_step, lock, ChildSlot, HookSlot, OpKind, PatchAt, PatchSlot, SharedState, SlotKind,
    StepSlot, StepStatus, WaitSlot,
};
use crate::step::{Step, StepContext, StepOptions};
use crate::timer::Sleep;
use crate::webhook::{Webhook, WebhookOptions};
use crate::workflow_ref::WorkflowName;

/// A workflow's handle on its run: steps, timers, deterministic time and randomness.
///
/// Cheap to clone; all clones refer to the same run.
#[derive(Clone)]
pub struct Context {
    pub(crate) state: SharedState,
    pub(crate) run_id: RunId,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("run_id", &self.run_id)
            .finish()
    }
}

impl Context {
    pub(crate) fn new(state: SharedState, run_id: RunId) -> Self {
        Context { state, run_id }
    }

    /// The run this workflow is executing.
    pub fn run_id(&self) -> RunId {
        self.run_id
    }

    /// Runs `f` as a step with the default [`StepOptions`] (3 attempts).
    ///
    /// `f` is called once per attempt and only when the step has no recorded
    /// result; the awaited value is always the recorded one.
    ///
    /// ```no_run
    /// # use workflow_core::{Context, StepError, WorkflowError};
    /// async fn greet(ctx: Context, name: String) -> Result<String, WorkflowError> {
    ///     let greeting = ctx
    ///         .step("greet", |_| {
    ///             let name = name.clone();
    ///             async move { Ok::<_, StepError>(format!("hello {name}")) }
    ///         })
    ///         .await?;
    ///     Ok(greeting)
    /// }
    /// ```
    pub fn step<T, F, Fut>(&self, name: &str, f: F) -> Step<T, F, Fut>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(StepContext) -> Fut,
        Fut: Future<Output = Result<T, StepError>>,
    {
        self.step_with(name, StepOptions::default(), f)
    }

    /// Runs `f` as a step with `options` (attempts, backoff, timeout).
    pub fn step_with<T, F, Fut>(&self, name: &str, options: StepOptions, f: F) -> Step<T, F, Fut>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(StepContext) -> Fut,
        Fut: Future<Output = Result<T, StepError>>,
    {
        forbid_in_step("Context::step");
        let timeout = options.timeout;
        let mut st = lock(&self.state);
        let index = st.issue(
            OpKind::Step,
            Some(name),
            SlotKind::Step(StepSlot {
                name: name.to_string(),
                options,
                attempts_started: 0,
                status: StepStatus::Open,
                grant: None,
                running: false,
                outcome: None,
            }),
        );
        let step_id = st.ops[&index].id.clone();
        drop(st);
        Step::new(
            self.state.clone(),
            index,
            self.run_id,
            step_id,
            name.to_string(),
            timeout,
            f,
        )
    }

    /// Gives this run's steps a test engine's mocks (see `crate::testing`).
    #[cfg(feature = "test-util")]
    pub(crate) fn use_step_mocks(&self, mocks: std::sync::Arc<crate::testing::StepMocks>) {
        lock(&self.state).step_mocks = Some(mocks);
    }

    /// Sleeps durably for `duration`, measured from [`Context::now`].
    ///
    /// The run is released while it sleeps; the timer is a row in the store, so
    /// it fires after a restart.
    pub fn sleep(&self, duration: Duration) -> Sleep {
        let at = self.now_timestamp().saturating_add(duration);
        self.sleep_until_timestamp(at)
    }

    /// Sleeps durably until `time`.
    pub fn sleep_until(&self, time: SystemTime) -> Sleep {
        self.sleep_until_timestamp(Timestamp::from_system_time(time))
    }

    fn sleep_until_timestamp(&self, resume_at: Timestamp) -> Sleep {
        forbid_in_step("Context::sleep");
        let index = lock(&self.state).issue(
            OpKind::Wait,
            None,
            SlotKind::Wait(WaitSlot {
                resume_at,
                done: false,
            }),
        );
        Sleep {
            state: self.state.clone(),
            index,
            resume_at,
        }
    }

    /// Creates a hook and returns it at once, with its token.
    ///
    /// The token is recorded at the workflow's next pause; from then on
    /// [`crate::Engine::resume_hook`] with it delivers payloads to the hook.
    ///
    /// ```no_run
    /// # use workflow_core::{Context, HookOptions, WorkflowError};
    /// # #[derive(serde::Deserialize)] struct Decision { approved: bool }
    /// async fn approve(ctx: Context, order: u64) -> Result<bool, WorkflowError> {
    ///     let mut hook = ctx.create_hook::<Decision>(HookOptions::token(format!("order:{order}")))?;
    ///     let decision = hook.next().await?;
    ///     Ok(decision.approved)
    /// }
    /// ```
    ///
    /// A custom token that is not a valid token is
    /// [`HookError::InvalidToken`], and metadata that cannot be encoded
    /// [`HookError::InvalidMetadata`], here, when the hook is created (both
    /// convert into a [`WorkflowError`] with `?`).
    pub fn create_hook<T>(&self, options: HookOptions) -> Result<Hook<T>, HookError> {
        self.create_hook_with_mode(options, None)
    }

    /// Creates a webhook: a hook whose payloads are HTTP requests sent to
    /// [`Webhook::path`], answered as `options` says. Fails like
    /// [`Context::create_hook`].
    pub fn create_webhook(&self, options: WebhookOptions) -> Result<Webhook, HookError> {
        let mode = options.stored_mode();
        Ok(Webhook {
            hook: self.create_hook_with_mode(options.hook, Some(mode))?,
        })
    }

    fn create_hook_with_mode<T>(
        &self,
        options: HookOptions,
        webhook: Option<workflow_store::WebhookResponse>,
    ) -> Result<Hook<T>, HookError> {
        forbid_in_step("Context::create_hook");
        let mut st = lock(&self.state);
        let index = st.peek_index();
        let mut invalid = options
            .metadata_error
            .as_ref()
            .map(|e| HookError::InvalidMetadata {
                message: e.to_string(),
            });
        let token = match (&options.token, st.recorded_token(index)) {
            (Some(custom), _) => match workflow_store::HookToken::new(custom.as_str()) {
                Ok(t) => t,
                Err(e) => {
                    // A bad token is reported first: it is what the sender uses.
                    invalid = Some(HookError::InvalidToken {
                        message: e.to_string(),
                    });
                    random_token()
                }
            },
            (None, Some(recorded)) => recorded,
            (None, None) => random_token(),
        };
        let index = st.issue(
            OpKind::Hook,
            None,
            SlotKind::Hook(HookSlot {
                token: token.clone(),
                metadata: options.metadata,
                webhook,
                payloads: Default::default(),
                conflict: None,
                dispose_requested: false,
                disposed: false,
                invalid: invalid.is_some(),
            }),
        );
        let id = st
            .ops
            .get(&index)
            .map(|s| s.id.clone())
            .unwrap_or_else(|| workflow_store::CorrelationId::from_parts("hook", index));
        drop(st);
        let hook = Hook {
            state: self.state.clone(),
            index,
            id,
            token,
            _payload: std::marker::PhantomData,
        };
        // An invalid hook keeps its place in the program order (so the ids
        // of the operations after it do not depend on it) but is never
        // recorded; the handle is dropped here.
        match invalid {
            Some(e) => Err(e),
            None => Ok(hook),
        }
    }

    /// Starts a child run of `workflow` with `input`, attached (see
    /// [`crate::child`]): recorded at the workflow's next pause, cancelled if
    /// this run ends or is cancelled first. Await the returned [`Child`] for
    /// its output.
    ///
    /// `workflow` is a [`crate::WorkflowRef`] (the output type follows from
    /// it) or a name. An input that cannot be encoded is
    /// [`WorkflowError::Fatal`], before anything is recorded.
    ///
    /// ```no_run
    /// # use workflow_core::{Context, WorkflowError, WorkflowRef};
    /// const CHARGE: WorkflowRef<u64, String> = WorkflowRef::new("charge");
    ///
    /// async fn checkout(ctx: Context, cents: u64) -> Result<String, WorkflowError> {
    ///     let receipt = ctx.start_child(CHARGE, &cents)?.await?;
    ///     Ok(receipt)
    /// }
    /// ```
    pub fn start_child<W, I, O>(&self, workflow: W, input: &I) -> Result<Child<O>, WorkflowError>
    where
        W: WorkflowName<I, O>,
        I: Serialize,
    {
        self.start_child_with(workflow, input, ChildOptions::attached())
    }

    /// Like [`Context::start_child`], with `options` (attached or detached).
    pub fn start_child_with<W, I, O>(
        &self,
        workflow: W,
        input: &I,
        options: ChildOptions,
    ) -> Result<Child<O>, WorkflowError>
    where
        W: WorkflowName<I, O>,
        I: Serialize,
    {
        forbid_in_step("Context::start_child");
        let name = workflow.workflow_name().to_string();
        let input = workflow_store::Payload::encode(input).map_err(|e| WorkflowError::Fatal {
            message: format!("the input of child workflow {name:?} cannot be encoded: {e}"),
        })?;
        let mut st = lock(&self.state);
        let run = child_run_id(self.run_id, st.peek_index());
        let index = st.issue(
            OpKind::Child,
            Some(&name),
            SlotKind::Child(ChildSlot {
                run,
                workflow: name.clone(),
                input,
                detached: options.is_detached(),
                outcome: None,
            }),
        );
        drop(st);
        Ok(Child {
            state: self.state.clone(),
            index,
            run,
            workflow: name,
            output: std::marker::PhantomData,
        })
    }

    /// Whether this run takes the code path of change `patch`: `true` for
    /// runs that reach this point under code with the patch (a marker is
    /// recorded, and replay finds it), `false` for runs whose history went
    /// past this point before the patch existed. One binary then serves old
    /// and new runs:
    ///
    /// ```no_run
    /// # use workflow_core::{Context, StepError, WorkflowError};
    /// async fn order(ctx: Context, id: u64) -> Result<(), WorkflowError> {
    ///     if ctx.patched("fraud-check") {
    ///         ctx.step("fraud check", |_| async { Ok::<_, StepError>(()) }).await?;
    ///     }
    ///     ctx.step("charge", |_| async { Ok::<_, StepError>(()) }).await?;
    ///     Ok(())
    /// }
    /// ```
    ///
    /// Once no stored run takes the old branch any more (check-replay lists
    /// them), remove the old branch and call [`Context::deprecate_patch`]
    /// instead. Call it at the same point of the program each time, before
    /// the operations it guards.
    pub fn patched(&self, patch: &str) -> bool {
        forbid_in_step("Context::patched");
        let mut st = lock(&self.state);
        match st.patch_at(patch) {
            PatchAt::Old => {
                st.patches_old.insert(patch.to_string());
                false
            }
            at => {
                if at == PatchAt::Marked {
                    st.patches_marked.insert(patch.to_string());
                }
                st.issue(
                    OpKind::Patch,
                    Some(patch),
                    SlotKind::Patch(PatchSlot {
                        patch: patch.to_string(),
                    }),
                );
                true
            }
        }
    }

    /// The successor of [`Context::patched`] once every run that needed the
    /// old branch has ended: the code takes the new path unconditionally,
    /// and this call only consumes the marker that runs started under
    /// `patched` have in their history. New runs record nothing. Remove it
    /// once check-replay reports no stored run with the marker.
    pub fn deprecate_patch(&self, patch: &str) {
        forbid_in_step("Context::deprecate_patch");
        let mut st = lock(&self.state);
        if st.patch_at(patch) == PatchAt::Marked {
            st.patches_marked.insert(patch.to_string());
            st.issue(
                OpKind::Patch,
                Some(patch),
                SlotKind::Patch(PatchSlot {
                    patch: patch.to_string(),
                }),
            );
        }
    }

    /// The workflow's clock: the time of the latest event delivered to it.
    /// The same on every replay.
    pub fn now(&self) -> SystemTime {
        let now = self.now_timestamp();
        let mut st = lock(&self.state);
        if st.ahead_of_log {
            st.read_time_ahead = true;
        }
        UNIX_EPOCH + Duration::from_millis(now.as_millis())
    }

    fn now_timestamp(&self) -> Timestamp {
        forbid_in_step("Context::now");
        lock(&self.state).now
    }

    /// A random value from the run's deterministic generator (seeded per run,
    /// so replay draws the same values): any integer type, `bool`, `f32` or
    /// `f64` (uniform in `[0, 1)`). Not for secrets.
    ///
    /// ```no_run
    /// # use workflow_core::{Context, WorkflowError};
    /// async fn pick(ctx: Context, _: ()) -> Result<u64, WorkflowError> {
    ///     let n: u64 = ctx.random();
    ///     let coin = ctx.random::<bool>();
    ///     Ok(if coin { n } else { 0 })
    /// }
    /// ```
    pub fn random<T: RandomValue>(&self) -> T {
        forbid_in_step("Context::random");
        T::draw(&mut lock(&self.state).rng)
    }

    /// A handle on the run's deterministic generator. With the crate feature
    /// `rand` it implements `rand::RngCore` (rand 0.8), for `rand`'s APIs.
    pub fn rng(&self) -> WorkflowRng {
        WorkflowRng {
            state: self.state.clone(),
        }
    }

    /// A version 4 UUID from the run's deterministic generator.
    pub fn uuid(&self) -> uuid::Uuid {
        forbid_in_step("Context::uuid");
        let mut bytes = [0u8; 16];
        lock(&self.state).rng.fill_bytes(&mut bytes);
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}

/// The run's deterministic random generator (see [`Context::rng`]).
#[derive(Clone)]
pub struct WorkflowRng {
    state: SharedState,
}

impl std::fmt::Debug for WorkflowRng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkflowRng")
    }
}

impl WorkflowRng {
    /// The next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        forbid_in_step("WorkflowRng");
        lock(&self.state).rng.next_u32()
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        forbid_in_step("WorkflowRng");
        lock(&self.state).rng.next_u64()
    }

    /// Fills `dest` with random bytes.
    pub fn fill_bytes(&mut self, dest: &mut [u8]) {
        forbid_in_step("WorkflowRng");
        lock(&self.state).rng.fill_bytes(dest)
    }
}

#[cfg(feature = "rand")]
impl RngCore for WorkflowRng {
    fn next_u32(&mut self) -> u32 {
        WorkflowRng::next_u32(self)
    }
    fn next_u64(&mut self) -> u64 {
        WorkflowRng::next_u64(self)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        WorkflowRng::fill_bytes(self, dest)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        WorkflowRng::fill_bytes(self, dest);
        Ok(())
    }
}

/// A type [`Context::random`] can draw: the integer types, `bool`, `f32` and
/// `f64`. Sealed: the generator behind it is an implementation detail.
pub trait RandomValue: sealed::Sealed + Sized {
    #[doc(hidden)]
    fn draw(rng: &mut crate::replay::RunRng) -> Self;
}

mod sealed {
    pub trait Sealed {}
}

macro_rules! random_value {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl RandomValue for $t {
            fn draw(rng: &mut crate::replay::RunRng) -> Self {
                rng.gen()
            }
        }
    )*};
}
random_value!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, bool, f32, f64);
