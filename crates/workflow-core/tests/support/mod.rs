//! Shared by the engine's integration tests.
#![allow(dead_code)]

use std::time::Duration;

use workflow_core::{Engine, EngineBuilder};
use workflow_store::{EventKind, HookRecord, RunId, Store};

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

/// Waits until `check` holds for `run`'s hooks (or its log's kinds), woken
/// by the store's change feed rather than a timer loop; panics after 10 s.
pub async fn wait_until<F>(store: &dyn Store, run: RunId, what: &str, check: F) -> Vec<HookRecord>
where
    F: Fn(&[HookRecord], &[EventKind]) -> bool,
{
    let mut feed = store.subscribe().expect("a store with a change feed");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let hooks = store.list_hooks(run).await.expect("list the hooks");
        if check(&hooks, &kinds(store, run).await) {
            return hooks;
        }
        tokio::select! {
            _ = feed.recv() => {}
            _ = tokio::time::sleep_until(deadline) => panic!("run {run}: {what} did not happen in 10 s"),
        }
    }
}
