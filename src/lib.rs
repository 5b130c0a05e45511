//! Durable workflows for Rust: async functions that survive crashes and
//! restarts, resumed by token from Rust or over HTTP.
//!
//! This facade re-exports the library's crates:
//!
//! - the engine and the workflow API from `workflow-core` ([`Engine`],
//!   [`Context`], steps, sleeps, hooks, webhooks), at the top level;
//! - the event log from `workflow-store` as [`store`], with the backends
//!   [`MemoryStore`] and [`SledStore`] also at the top level.
//!
//! The README below is the guide's first page; its example runs as a test.
//!
#![doc = include_str!("../README.md")]

pub use workflow_core::*;
/// The event log: data model, codec, the `Store` trait and its backends.
pub use workflow_store as store;
pub use workflow_store::{MemoryStore, RunId, RunStatus, SledStore, Store};
