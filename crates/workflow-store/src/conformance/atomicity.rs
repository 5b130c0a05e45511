//! Atomicity: an append is all or nothing, with its projections.
//!
//! Failure is injected the way a backend cannot avoid seeing it: a batch whose
//! last event breaks an invariant. Nothing of the batch (events, status, hooks,
//! timers) may be visible afterwards.

use super::{
    fresh, hook_created, new_run, snapshot, step_completed, step_created, token, wait_created,
    Backend,
};
use crate::event::{EventData, Timestamp};
use crate::store::Store;

/// Runs the atomicity checks.
pub async fn run<B: Backend>(b: &B) {
    rejected_batch_leaves_no_trace(b).await;
    accepted_batch_is_recorded_whole(b).await;
}

/// A batch that fails on its last event changes nothing.
pub async fn rejected_batch_leaves_no_trace<B: Backend>(b: &B) {
    let (store, _) = fresh(b).await;
    let run = new_run(&store, "atomic").await;
    store
        .append(
            run,
            vec![EventData::RunStarted, step_created("step:0")],
            None,
        )
        .await
        .expect("first append");
    let before = snapshot(&store, run).await;
    let due_before = store.next_due().await.expect("next_due");
    let bad = vec![
        step_completed("step:0", 1),
        hook_created("hook:1", "atomic-token"),
        wait_created("wait:2", Timestamp(1)),
        EventData::RunCompleted {
            output: super::payload(&1),
        },
        // Duplicate creation: the whole batch must be rejected.
        step_created("step:0"),
    ];
    let err = store.append(run, bad, None).await;
    assert!(
        err.is_err(),
        "atomicity: a batch with a duplicate step_created was accepted"
    );
    assert_eq!(
        snapshot(&store, run).await,
        before,
        "atomicity: a rejected batch left events or projections behind"
    );
    assert_eq!(
        store.next_due().await.expect("next_due"),
        due_before,
        "atomicity: a rejected batch armed a timer"
    );
    assert!(
        store
            .get_hook(&token("atomic-token"))
            .await
            .expect("get_hook")
            .is_none(),
        "atomicity: a rejected batch left its hook's token live"
    );
    let resumed = store
        .resume_hook(&token("atomic-token"), super::payload(&0))
        .await;
    assert!(
        resumed.is_err(),
        "atomicity: a token from a rejected batch resumed a hook"
    );
}

/// An accepted batch is recorded in full, with consecutive seqs.
pub async fn accepted_batch_is_recorded_whole<B: Backend>(b: &B) {
    let (store, _) = fresh(b).await;
    let run = new_run(&store, "atomic").await;
    let batch = vec![
        EventData::RunStarted,
        step_created("step:0"),
        hook_created("hook:1", "whole-token"),
        wait_created("wait:2", super::START),
    ];
    let appended = store
        .append(run, batch.clone(), None)
        .await
        .expect("append");
    let seqs: Vec<u64> = appended.events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        vec![1, 2, 3, 4],
        "atomicity: batch seqs not consecutive"
    );
    let log = store.read_log(run).await.expect("read_log");
    let data: Vec<EventData> = log[1..].iter().map(|e| e.data.clone()).collect();
    assert_eq!(
        data, batch,
        "atomicity: the log differs from the accepted batch"
    );
    assert!(
        store
            .get_hook(&token("whole-token"))
            .await
            .expect("get_hook")
            .is_some(),
        "atomicity: accepted hook_created has no live token"
    );
}
