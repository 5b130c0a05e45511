//! Corruption: a damaged record is a typed error, and other runs still read.

use super::{fresh, new_run, skipped, step_created, Backend};
use crate::error::StoreError;
use crate::store::Store;

/// Runs the corruption checks.
pub async fn run<B: Backend>(b: &B) {
    damaged_event_is_typed_error(b).await;
}

/// Reading a damaged event returns `StoreError::Corrupt`; a healthy run is unaffected.
pub async fn damaged_event_is_typed_error<B: Backend>(b: &B) {
    let (store, _) = fresh(b).await;
    let bad = new_run(&store, "wf").await;
    let good = new_run(&store, "wf").await;
    for run in [bad, good] {
        store
            .append(
                run,
                vec![step_created("step:0"), step_created("step:1")],
                None,
            )
            .await
            .expect("append");
    }
    if !b.corrupt_event(&store, bad, 1).await {
        skipped(
            "corruption::damaged_event_is_typed_error",
            "the backend stores no encoded records to damage",
        );
        return;
    }
    let r = store.read_log(bad).await;
    assert!(
        matches!(r, Err(StoreError::Corrupt { .. })),
        "corruption: a damaged event read as {r:?}"
    );
    let head = store
        .read_events(bad, 0, 1)
        .await
        .expect("events before the damage still read");
    assert_eq!(head.len(), 1);
    let log = store
        .read_log(good)
        .await
        .expect("corruption: a healthy run failed to read");
    assert_eq!(log.len(), 3);
    assert!(store.get_run(good).await.expect("get_run").is_some());
    store
        .append(good, vec![step_created("step:2")], None)
        .await
        .expect("corruption: healthy run refused writes");
}
