//! Durability: closing and reopening a persistent store keeps everything
//! acknowledged: logs, runs, hooks, timers.

use std::time::Duration;

use super::{
    fresh, hook_created, new_run, payload, skipped, snapshot, step_completed, step_created, token,
    wait_created, Backend,
};
use crate::event::EventData;
use crate::store::Store;

/// Runs the durability checks.
pub async fn run<B: Backend>(b: &B) {
    reopen_keeps_acknowledged_writes(b).await;
}

/// Write, drop, reopen, compare every projection.
pub async fn reopen_keeps_acknowledged_writes<B: Backend>(b: &B) {
    let (store, clock) = fresh(b).await;
    let mut runs = Vec::new();
    for i in 0..5u64 {
        let run = new_run(&store, "durable").await;
        store
            .append(
                run,
                vec![
                    EventData::RunStarted,
                    step_created("step:0"),
                    step_completed("step:0", i),
                    hook_created("hook:1", &format!("durable-{i}")),
                    wait_created(
                        "wait:2",
                        super::START.saturating_add(Duration::from_secs(i + 1)),
                    ),
                ],
                None,
            )
            .await
            .expect("append");
        runs.push(run);
    }
    store
        .resume_hook(&token("durable-0"), payload(&"kept"))
        .await
        .expect("resume");
    store
        .append(
            runs[4],
            vec![EventData::RunCompleted {
                output: payload(&4),
            }],
            None,
        )
        .await
        .expect("complete");
    let mut before = Vec::new();
    for &run in &runs {
        before.push(snapshot(&store, run).await);
    }
    let due_before = store.next_due().await.expect("next_due");
    let Some(reopened) = b.reopen(store, clock.clone()).await else {
        skipped(
            "durability::reopen_keeps_acknowledged_writes",
            "the backend keeps nothing across reopen",
        );
        return;
    };
    let store = reopened.expect("reopen");
    for (run, want) in runs.iter().zip(&before) {
        assert_eq!(
            &snapshot(&store, *run).await,
            want,
            "durability: run {run} differs after reopen"
        );
    }
    assert_eq!(
        store.next_due().await.expect("next_due"),
        due_before,
        "durability: queue differs after reopen"
    );
    assert!(
        store
            .get_hook(&token("durable-1"))
            .await
            .expect("get_hook")
            .is_some(),
        "durability: live hook lost"
    );
    assert!(
        store
            .get_hook(&token("durable-4"))
            .await
            .expect("get_hook")
            .is_none(),
        "durability: released hook came back"
    );
    clock.advance(Duration::from_secs(10));
    let leased = store.lease_due(100, super::TTL).await.expect("lease");
    assert_eq!(
        leased.len(),
        4,
        "durability: timers did not fire after reopen"
    );
    store
        .append(
            runs[0],
            vec![step_created("step:9")],
            Some(
                leased
                    .iter()
                    .find(|l| l.run_id == runs[0])
                    .expect("leased")
                    .id,
            ),
        )
        .await
        .expect("append after reopen");
}
