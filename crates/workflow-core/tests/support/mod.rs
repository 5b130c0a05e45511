//! Shared by the engine's integration tests.
#![allow(dead_code)]

use std::time::Duration;

use workflow_core::{Engine, EngineBuilder};
use workflow_store::{EventKind, RunId, Store};

/// An engine on `store` with the workflows `f` registers, a 20 ms poll
/// interval and a 5 s lease, its workers started.
pub fn engine(store: impl Store, f: impl FnOnce(EngineBuilder) -> EngineBuilder) -> Engine {
    let e = f(Engine::builder(store)
        .poll_interval(Duration::from_millis(20))
        .lease_ttl(Duration::from_secs(5)))
    .build();
    e.start_workers();
    e
}

/// The kinds of `run`'s events, in log order.
pub async fn kinds(store: &dyn Store, run: RunId) -> Vec<EventKind> {
    store
        .read_log(run)
        .await
        .expect("read the log")
        .iter()
        .map(|e| e.kind())
        .collect()
}
