//! Durable workflows: `async fn`s replayed deterministically from an event log.
//!
//! A workflow is an `async fn(Context, I) -> Result<O, WorkflowError>`. Every
//! operation it performs through its [`Context`] (a [`Step`], a durable
//! [`Sleep`], a [`Hook`] or [`Webhook`]) is recorded in the run's log in a [`workflow_store::Store`]; after a
//! crash, a restart or an eviction from memory the function is run again and
//! fed the recorded results, so it reaches the same state without repeating
//! side effects. The [`Engine`] owns the workers that do this.
//!
//! - [`context`]: what a workflow may do, and the determinism rules;
//! - [`step`]: steps, retries and backoff;
//! - [`timer`]: durable sleep;
//! - [`child`]: child workflows, awaited durably;
//! - [`hook`] and [`webhook`]: waiting for payloads sent by token, from Rust or HTTP;
//! - `replay` and `driver`: delivery of recorded events and the activation loop;
//! - [`engine`]: start, result, cancel, workers;
//! - (feature `test-util`) `testing`: a test engine with a virtual clock,
//!   step mocks and history assertions, for tests of your own workflows.
#![warn(missing_docs)]

mod cache;
mod check;
pub mod child;
pub mod context;
mod driver;
pub mod engine;
mod error;
mod feed;
pub mod hook;
mod registry;
mod replay;
mod resume;
pub mod step;
pub mod stream;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod timer;
pub mod webhook;
pub mod workflow_ref;

pub use check::{PatchUsage, ReplayMismatch, ReplayReport};
pub use child::{Child, ChildOptions};
pub use context::{Context, WorkflowRng};
pub use engine::{Engine, EngineBuilder, EngineMetrics, EngineSettings, PurgeOptions};
pub use error::{EngineError, NondeterminismError, StepError, StepResultExt, WorkflowError};
pub use hook::{Hook, HookError, HookNext, HookOptions};
pub use resume::{HookDefinition, ResumeError};
pub use step::{Backoff, Step, StepContext, StepOptions};
pub use stream::{RawChunk, StreamError, StreamWriter};
pub use timer::Sleep;
pub use webhook::{
    webhook_path, ResponseMode, Webhook, WebhookOptions, WebhookRequest, WebhookRequestError,
    WEBHOOK_PATH_PREFIX,
};
pub use workflow_ref::{RunHandle, StartWorkflow, WorkflowName, WorkflowRef};
