//! Typed references to workflows: a workflow's name with its input and
//! output types, so that registering, starting and awaiting a run are checked
//! by the compiler instead of guessed at each call site.
//!
//! ```
//! use workflow_core::{Context, Engine, WorkflowError, WorkflowRef};
//! use workflow_store::MemoryStore;
//!
//! /// The name is what runs record: keep it stable across deploys.
//! const DOUBLE: WorkflowRef<u32, u64> = WorkflowRef::new("double");
//!
//! async fn double(_ctx: Context, n: u32) -> Result<u64, WorkflowError> {
//!     Ok(u64::from(n) * 2)
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let engine = Engine::builder(MemoryStore::new())
//!     .workflow(DOUBLE, double) // `double` must take a u32 and return a u64
//!     .build();
//! engine.start_workers();
//! let run = engine.start(DOUBLE, &21).await?; // the input must be a u32
//! let out: u64 = run.result().await?; // and the output is a u64
//! assert_eq!(out, 42);
//! # engine.shutdown().await;
//! # Ok::<(), workflow_core::EngineError>(())
//! # }).unwrap();
//! ```
//!
//! Names (`&str`, `String`) still work everywhere a [`WorkflowRef`] does, for
//! the CLI and other callers that only know a name at run time; they return
//! a plain [`RunId`] instead of a typed [`RunHandle`].

use std::fmt;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use workflow_store::{RunId, RunStatus};

use crate::engine::Engine;
use crate::error::EngineError;

/// A workflow's name with its input type `I` and output type `O`.
///
/// Declare one per workflow, as a constant, and use it to register the
/// workflow ([`crate::EngineBuilder::workflow`]) and to start runs
/// ([`Engine::start`]): a function of the wrong type, or an input of the
/// wrong type, does not compile, and the run's result comes back as `O`.
pub struct WorkflowRef<I, O> {
    name: &'static str,
    types: PhantomData<fn(I) -> O>,
}

impl<I, O> WorkflowRef<I, O> {
    /// The workflow called `name` (what runs record; keep it stable).
    pub const fn new(name: &'static str) -> Self {
        WorkflowRef {
            name,
            types: PhantomData,
        }
    }

    /// The workflow's name.
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

impl<I, O> Clone for WorkflowRef<I, O> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<I, O> Copy for WorkflowRef<I, O> {}

impl<I, O> fmt::Debug for WorkflowRef<I, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("WorkflowRef").field(&self.name).finish()
    }
}

/// What names a workflow of input `I` and output `O` when it is registered
/// ([`crate::EngineBuilder::workflow`]): a [`WorkflowRef`], which must match
/// the function's types, or a name (`&str`, `String`). Sealed.
pub trait WorkflowName<I, O>: sealed::Sealed {
    /// The name.
    fn workflow_name(&self) -> &str;
}

/// What names the workflow a run is started of ([`Engine::start`],
/// [`Engine::start_with_id`]) with input `I`: a [`WorkflowRef`] (its input
/// type must be `I`; the run comes back as a typed [`RunHandle`]) or a name
/// (any input; the run comes back as its [`RunId`]). Sealed.
pub trait StartWorkflow<I: ?Sized>: sealed::Sealed {
    /// What [`Engine::start`] returns: a [`RunHandle`] or a [`RunId`].
    type Handle;
    /// The name.
    fn workflow_name(&self) -> &str;
    /// The handle of `run`, started on `engine`.
    #[doc(hidden)]
    fn handle(&self, engine: &Engine, run: RunId) -> Self::Handle;
}

mod sealed {
    pub trait Sealed {}
    impl<I, O> Sealed for &super::WorkflowRef<I, O> {}
    impl<I, O> Sealed for super::WorkflowRef<I, O> {}
    impl Sealed for &str {}
    impl Sealed for String {}
    impl Sealed for &String {}
}

macro_rules! by_ref {
    ($($t:ty),*) => {$(
        impl<I, O> WorkflowName<I, O> for $t {
            fn workflow_name(&self) -> &str {
                self.name
            }
        }
        impl<I, O> StartWorkflow<I> for $t {
            type Handle = RunHandle<O>;
            fn workflow_name(&self) -> &str {
                self.name
            }
            fn handle(&self, engine: &Engine, run: RunId) -> RunHandle<O> {
                RunHandle::new(engine.clone(), run)
            }
        }
    )*};
}
by_ref!(&WorkflowRef<I, O>, WorkflowRef<I, O>);

macro_rules! by_name {
    ($($t:ty),*) => {$(
        impl<I, O> WorkflowName<I, O> for $t {
            fn workflow_name(&self) -> &str {
                self
            }
        }
        impl<I: ?Sized> StartWorkflow<I> for $t {
            type Handle = RunId;
            fn workflow_name(&self) -> &str {
                self
            }
            fn handle(&self, _: &Engine, run: RunId) -> RunId {
                run
            }
        }
    )*};
}
by_name!(&str, String, &String);

/// A run of a workflow whose output type is `O`: what [`Engine::start`]
/// returns for a [`WorkflowRef`]. Cheap to clone; holds the engine.
pub struct RunHandle<O> {
    engine: Engine,
    id: RunId,
    output: PhantomData<fn() -> O>,
}

impl<O> RunHandle<O> {
    fn new(engine: Engine, id: RunId) -> Self {
        RunHandle {
            engine,
            id,
            output: PhantomData,
        }
    }

    /// The run's id (to store, or to find the run again with
    /// [`Engine::run_handle`]).
    pub fn id(&self) -> RunId {
        self.id
    }

    /// Waits for the run to end and returns its output (see [`Engine::result`]).
    pub async fn result(&self) -> Result<O, EngineError>
    where
        O: DeserializeOwned,
    {
        self.engine.result(&self.id).await
    }

    /// The run's current status.
    pub async fn status(&self) -> Result<RunStatus, EngineError> {
        self.engine.status(&self.id).await
    }

    /// Cancels the run (see [`Engine::cancel`]).
    pub async fn cancel(&self) -> Result<(), EngineError> {
        self.engine.cancel(&self.id).await
    }
}

impl<O> Clone for RunHandle<O> {
    fn clone(&self) -> Self {
        RunHandle::new(self.engine.clone(), self.id)
    }
}

impl<O> fmt::Debug for RunHandle<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunHandle").field("id", &self.id).finish()
    }
}

impl<O> fmt::Display for RunHandle<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.id, f)
    }
}
