//! Durable workflows for Rust: async functions that survive crashes and
//! restarts, resumed by token from Rust or over HTTP.
//!
//! This facade re-exports the library's crates:
//!
//! - the engine and the workflow API from `workflow-core` ([`Engine`],
//!   [`Context`], steps, sleeps, hooks, webhooks), at the top level;
//! - the event log from `workflow-store` as [`store`], with the backends
//!   [`MemoryStore`], (feature `sled`, on by default) `SledStore` and
//!   (feature `redb`) `RedbStore` also at the top level;
//! - (features `hyper`, `axum`, `warp`, `dashboard`) the webhook adapters and
//!   the runs dashboard of `workflow-http` as `http`;
//! - (feature `postgres`) `PostgresStore` from `workflow-postgres` as `postgres`;
//! - (feature `test-util`) `testing`: a test engine with a virtual clock, step
//!   mocks and history assertions for your workflows' tests (docs/testing.md).
//!
//! The README below is the guide's first page; its example runs as a test.
//!
#![doc = include_str!("../README.md")]

pub use workflow_core::*;
/// The event log: data model, codec, the `Store` trait and its backends.
pub use workflow_store as store;
/// A clock tests move by hand (feature `test-util`).
#[cfg(feature = "test-util")]
pub use workflow_store::ManualClock;
#[cfg(feature = "redb")]
pub use workflow_store::RedbStore;
#[cfg(feature = "sled")]
pub use workflow_store::SledStore;
pub use workflow_store::{MemoryStore, RunId, RunStatus, Store};

/// Webhook adapters for hyper, axum and warp (`workflow-http`).
#[cfg(any(
    feature = "hyper",
    feature = "axum",
    feature = "warp",
    feature = "dashboard"
))]
pub use workflow_http as http;

/// The PostgreSQL backend (`workflow-postgres`).
#[cfg(feature = "postgres")]
pub use workflow_postgres as postgres;
