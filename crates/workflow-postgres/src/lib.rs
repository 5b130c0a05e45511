//! A PostgreSQL backend for durable workflows: several engine processes share
//! one database.
//!
//! [`PostgresStore`] implements [`workflow_store::Store`] on
//! [tokio-postgres](https://docs.rs/tokio-postgres) with a connection pool. It
//! creates and migrates its tables itself (in the schema `workflow` unless
//! configured), keeps every invariant of the `Store` trait under concurrent
//! writers in any number of processes, leases due work with
//! `FOR UPDATE SKIP LOCKED`, and feeds [`workflow_store::Store::subscribe`] with
//! LISTEN/NOTIFY so an engine learns at once about writes made by another.
//! Lease expiry and due times go by the database server's clock (see
//! [`TimeSource`]), so clock skew between engine hosts cannot let two engines
//! drive one run.
//! It passes the conformance suite of `workflow_store::conformance`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use workflow_postgres::PostgresStore;
//! use workflow_store::{NewRun, Payload, RunId, Store};
//! # async fn demo() -> Result<(), workflow_store::StoreError> {
//! let store = PostgresStore::connect("postgres://app@localhost:5432/app").await?;
//! let id = RunId::new();
//! let input = Payload::encode(&42)?;
//! store.create_run(NewRun { id, workflow: "answer".into(), input }).await?;
//! let store: Arc<dyn Store> = Arc::new(store); // what the engine takes
//! # Ok(()) }
//! ```
//!
//! TLS is not built in: connect over a trusted network, a Unix socket, or a
//! TLS-terminating proxy.
#![warn(missing_docs)]

mod config;
mod notify;
mod pg;
mod schema;
mod store;
mod tx;
mod view;

pub use config::{PostgresConfig, TimeSource, DEFAULT_POOL_SIZE, DEFAULT_SCHEMA};
pub use store::PostgresStore;
