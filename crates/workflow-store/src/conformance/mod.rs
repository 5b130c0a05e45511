//! The conformance suite: the behaviour every [`Store`] must have.
//!
//! Backend authors run it with one macro call in an integration test:
//!
//! ```ignore
//! workflow_store::conformance_tests!(my_backend, MyBackend::new());
//! ```
//!
//! which expands to one `#[test]` per [`Category`], named after the backend and
//! the category (`my_backend::hooks`), so a failure says what broke. Each category
//! is a module here; its checks open fresh stores through [`Backend::open`] with a
//! [`ManualClock`], so due times are tested without sleeping. [`run_all`] runs
//! every category from your own harness instead.
//!
//! Checks panic (with the name of the check and what differed) on a violation,
//! like `assert!`. Categories a backend cannot take part in (durability for a
//! store that keeps nothing, corruption for one that stores no bytes) print
//! `SKIPPED` and say why.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::clock::{Clock, ManualClock};
use crate::error::StoreError;
use crate::event::{EventData, Payload, Timestamp};
use crate::id::{CorrelationId, HookToken, RunId};
use crate::record::NewRun;
use crate::store::Store;

pub mod atomicity;
pub mod concurrency;
pub mod corruption;
pub mod durability;
pub mod hooks;
pub mod idempotency;
pub mod leases;
pub mod listing;
pub mod model;
pub mod notification;
pub mod ordering;
pub mod purge;
pub mod queue;
pub mod streams;
pub mod terminal;

/// How the suite gets stores from a backend.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The store type under test.
    type Store: Store + Clone;

    /// A new, empty store whose timestamps come from `clock`.
    async fn open(&self, clock: Arc<dyn Clock>) -> Result<Self::Store, StoreError>;

    /// Closes `store` and opens the same data again (same clock). `None` for
    /// backends that keep nothing; the durability checks are then skipped.
    async fn reopen(
        &self,
        store: Self::Store,
        clock: Arc<dyn Clock>,
    ) -> Option<Result<Self::Store, StoreError>> {
        let _ = (store, clock);
        None
    }

    /// Damages the stored bytes of event `seq` of `run`. `false` if the backend
    /// stores no bytes to damage; the corruption checks are then skipped.
    async fn corrupt_event(&self, store: &Self::Store, run: RunId, seq: u64) -> bool {
        let _ = (store, run, seq);
        false
    }
}

/// A group of related checks; each is its own module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Category {
    /// All or nothing per write.
    Atomicity,
    /// Gapless seq, log order, paging, timestamps.
    Ordering,
    /// Run creation, `*_created` per correlation id, one terminal per step.
    Idempotency,
    /// Token uniqueness, conflicts, release, resume.
    Hooks,
    /// Ended runs refuse writes.
    Terminal,
    /// Exclusive, expiring, renewable leases and fencing.
    Leases,
    /// Due times honoured, nothing early, nothing lost.
    Queue,
    /// A subscriber wakes on a write.
    Notification,
    /// A damaged record is a typed error; other runs still read.
    Corruption,
    /// Reopening keeps what was acknowledged.
    Durability,
    /// Many tokio tasks on the same runs and tokens.
    Concurrency,
    /// Random operation sequences agree with a reference model (proptest).
    Model,
    /// [`listing`]: list runs by status, workflow and cursor, both orders.
    Listing,
    /// [`purge`]: retention deletes ended runs and nothing else.
    Purge,
    /// [`streams`]: only committed attempts' chunks are visible, in order,
    /// from any index; close, end of run, durability, purge, grants.
    Streams,
}

impl Category {
    /// Every category.
    pub const ALL: [Category; 15] = [
        Category::Atomicity,
        Category::Ordering,
        Category::Idempotency,
        Category::Hooks,
        Category::Terminal,
        Category::Leases,
        Category::Queue,
        Category::Notification,
        Category::Corruption,
        Category::Durability,
        Category::Concurrency,
        Category::Model,
        Category::Listing,
        Category::Purge,
        Category::Streams,
    ];
}

/// Runs one category of checks against `backend` on a fresh tokio runtime.
pub fn run_category<B: Backend>(backend: &B, category: Category) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("the conformance suite needs a tokio runtime");
    match category {
        Category::Atomicity => rt.block_on(atomicity::run(backend)),
        Category::Ordering => rt.block_on(ordering::run(backend)),
        Category::Idempotency => rt.block_on(idempotency::run(backend)),
        Category::Hooks => rt.block_on(hooks::run(backend)),
        Category::Terminal => rt.block_on(terminal::run(backend)),
        Category::Leases => rt.block_on(leases::run(backend)),
        Category::Queue => rt.block_on(queue::run(backend)),
        Category::Notification => rt.block_on(notification::run(backend)),
        Category::Corruption => rt.block_on(corruption::run(backend)),
        Category::Durability => rt.block_on(durability::run(backend)),
        Category::Concurrency => rt.block_on(concurrency::run(backend)),
        Category::Model => model::run(&rt, backend),
        Category::Listing => rt.block_on(listing::run(backend)),
        Category::Purge => rt.block_on(purge::run(backend)),
        Category::Streams => rt.block_on(streams::run(backend)),
    }
}

/// Runs every category against `backend`.
pub fn run_all<B: Backend>(backend: &B) {
    for category in Category::ALL {
        run_category(backend, category);
    }
}

/// Expands to one `#[test]` per [`Category`] in a module named `$name`, each
/// running that category against the backend `$backend` evaluates to.
///
/// ```ignore
/// workflow_store::conformance_tests!(memory, MemoryBackend);
/// // tests: memory::atomicity, memory::hooks, memory::model, …
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($name:ident, $backend:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            use $crate::conformance::{run_category, Category};
            $crate::conformance_tests!(@test $backend; atomicity Atomicity, ordering Ordering,
                idempotency Idempotency, hooks Hooks, terminal Terminal, leases Leases,
                queue Queue, notification Notification, corruption Corruption,
                durability Durability, concurrency Concurrency, model Model,
                listing Listing, purge Purge, streams Streams);
        }
    };
    (@test $backend:expr; $($test:ident $cat:ident),*) => {
        $(
            #[test]
            fn $test() {
                run_category(&$backend, Category::$cat);
            }
        )*
    };
}

/// The clock every check starts from: a fixed, plausible time.
pub const START: Timestamp = Timestamp(1_700_000_000_000);

/// A fresh store with a manual clock standing at [`START`].
pub async fn fresh<B: Backend>(backend: &B) -> (B::Store, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(START));
    let store = backend
        .open(clock.clone())
        .await
        .expect("Backend::open failed");
    (store, clock)
}

/// Prints that a check was skipped, and why.
pub fn skipped(check: &str, why: &str) {
    println!("SKIPPED conformance check {check}: {why}");
    eprintln!("SKIPPED conformance check {check}: {why}");
}

/// A correlation id (test helper).
pub fn cid(s: &str) -> CorrelationId {
    CorrelationId::new(s).expect("valid correlation id")
}

/// A hook token (test helper).
pub fn token(s: &str) -> HookToken {
    HookToken::new(s).expect("valid token")
}

/// A payload encoding `v` (test helper).
pub fn payload<T: serde::Serialize>(v: &T) -> Payload {
    Payload::encode(v).expect("encodable payload")
}

/// Creates a run of workflow `wf` with a unit input; returns its id.
pub async fn new_run<S: Store + ?Sized>(store: &S, wf: &str) -> RunId {
    let id = RunId::new();
    store
        .create_run(NewRun {
            id,
            workflow: wf.to_string(),
            input: payload(&()),
        })
        .await
        .expect("create_run");
    id
}

/// `step_created` for `step`.
pub fn step_created(step: &str) -> EventData {
    EventData::StepCreated {
        step: cid(step),
        name: format!("name-of-{step}"),
        input_digest: None,
    }
}

/// `step_completed` for `step` with a result.
pub fn step_completed(step: &str, result: u64) -> EventData {
    EventData::StepCompleted {
        step: cid(step),
        result: payload(&result),
    }
}

/// `hook_created` for `hook` with `tok`.
pub fn hook_created(hook: &str, tok: &str) -> EventData {
    EventData::HookCreated {
        hook: cid(hook),
        token: token(tok),
        metadata: None,
        webhook: None,
    }
}

/// `wait_created` for `wait`, due at `at`.
pub fn wait_created(wait: &str, at: Timestamp) -> EventData {
    EventData::WaitCreated {
        wait: cid(wait),
        resume_at: at,
    }
}

/// A short lease duration used by the checks.
pub const TTL: Duration = Duration::from_secs(30);

/// Everything observable about one run, for before/after comparisons.
#[derive(Debug, PartialEq)]
pub struct RunSnapshot {
    /// The run record.
    pub run: Option<crate::record::RunRecord>,
    /// The whole log.
    pub log: Vec<crate::event::Event>,
    /// All hooks of the run.
    pub hooks: Vec<crate::record::HookRecord>,
}

/// Reads everything observable about `run`.
pub async fn snapshot<S: Store + ?Sized>(store: &S, run: RunId) -> RunSnapshot {
    RunSnapshot {
        run: store.get_run(run).await.expect("get_run"),
        log: store.read_log(run).await.expect("read_log"),
        hooks: store.list_hooks(run).await.expect("list_hooks"),
    }
}
