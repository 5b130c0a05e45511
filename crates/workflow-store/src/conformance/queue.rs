//! The work queue: timers and retries come due at their time, not before,
//! and no due work is lost.

use std::collections::BTreeSet;
use std::time::Duration;

use super::{cid, fresh, new_run, step_created, wait_created, Backend, TTL};
use crate::event::{ErrorRecord, EventData};
use crate::store::Store;

/// Runs the queue checks.
pub async fn run<B: Backend>(b: &B) {
    timers_are_due_at_their_time(b).await;
    retries_are_due_at_retry_at(b).await;
    nothing_due_is_lost(b).await;
}

async fn drain<S: Store>(store: &S) {
    for l in store.lease_due(1000, TTL).await.expect("lease") {
        store.release_lease(&l).await.expect("release");
    }
}

/// `wait_created` makes the run due at `resume_at`; `wait_completed` disarms it.
pub async fn timers_are_due_at_their_time<B: Backend>(b: &B) {
    let (store, clock) = fresh(b).await;
    let run = new_run(&store, "wf").await;
    drain(&store).await;
    let at = super::START.saturating_add(Duration::from_secs(60));
    store
        .append(run, vec![wait_created("wait:0", at)], None)
        .await
        .expect("arm");
    assert_eq!(
        store.next_due().await.expect("next_due"),
        Some(at),
        "queue: next_due is not the timer"
    );
    clock.advance(Duration::from_secs(59));
    assert!(
        store.lease_due(10, TTL).await.expect("lease").is_empty(),
        "queue: a timer came due early"
    );
    clock.advance(Duration::from_secs(1));
    let leased = store.lease_due(10, TTL).await.expect("lease");
    assert_eq!(leased.len(), 1, "queue: a due timer was not leased");
    store
        .append(
            run,
            vec![EventData::WaitCompleted {
                wait: cid("wait:0"),
            }],
            Some(leased[0].id),
        )
        .await
        .expect("complete");
    store.release_lease(&leased[0]).await.expect("release");
    assert_eq!(
        store.next_due().await.expect("next_due"),
        None,
        "queue: completed timer still queued"
    );
    // A timer released without completion stays due.
    let at2 = clock_now(&store).saturating_add(Duration::from_secs(5));
    store
        .append(run, vec![wait_created("wait:1", at2)], None)
        .await
        .expect("arm");
    clock.advance(Duration::from_secs(5));
    let l = store.lease_due(10, TTL).await.expect("lease");
    store.release_lease(&l[0]).await.expect("release");
    assert_eq!(
        store.lease_due(10, TTL).await.expect("lease").len(),
        1,
        "queue: an unfinished timer was dropped on release"
    );
}

fn clock_now<S: Store>(store: &S) -> crate::event::Timestamp {
    store.now()
}

/// `step_retrying` makes the run due at `retry_at`; the next attempt disarms it.
pub async fn retries_are_due_at_retry_at<B: Backend>(b: &B) {
    let (store, clock) = fresh(b).await;
    let run = new_run(&store, "wf").await;
    drain(&store).await;
    let at = super::START.saturating_add(Duration::from_secs(3));
    store
        .append(
            run,
            vec![
                step_created("step:0"),
                EventData::StepStarted {
                    step: cid("step:0"),
                    attempt: 1,
                },
                EventData::StepRetrying {
                    step: cid("step:0"),
                    error: ErrorRecord::new("flaky"),
                    retry_at: at,
                },
            ],
            None,
        )
        .await
        .expect("retry");
    clock.advance(Duration::from_millis(2_999));
    assert!(
        store.lease_due(10, TTL).await.expect("lease").is_empty(),
        "queue: a retry came due early"
    );
    clock.advance(Duration::from_millis(1));
    let l = store.lease_due(10, TTL).await.expect("lease");
    assert_eq!(l.len(), 1, "queue: a due retry was not leased");
    store
        .append(
            run,
            vec![EventData::StepStarted {
                step: cid("step:0"),
                attempt: 2,
            }],
            Some(l[0].id),
        )
        .await
        .expect("attempt 2");
    store.release_lease(&l[0]).await.expect("release");
    assert_eq!(
        store.next_due().await.expect("next_due"),
        None,
        "queue: a started retry stayed queued"
    );
}

/// Many runs with mixed due times: each is leased once its time comes, none before.
pub async fn nothing_due_is_lost<B: Backend>(b: &B) {
    let (store, clock) = fresh(b).await;
    let mut runs = Vec::new();
    for i in 0..30u64 {
        let run = new_run(&store, "wf").await;
        runs.push((run, i));
    }
    drain(&store).await;
    for &(run, i) in &runs {
        let at = super::START.saturating_add(Duration::from_secs(i % 5));
        store
            .append(run, vec![wait_created("wait:0", at)], None)
            .await
            .expect("arm");
    }
    let mut seen = BTreeSet::new();
    for second in 0..5u64 {
        let leased = store.lease_due(7, TTL).await.expect("lease");
        let more = store.lease_due(1000, TTL).await.expect("lease");
        for l in leased.iter().chain(&more) {
            let i = runs
                .iter()
                .find(|(r, _)| *r == l.run_id)
                .map(|(_, i)| *i)
                .expect("known run");
            assert!(
                i % 5 <= second,
                "queue: run due at +{}s leased at +{second}s",
                i % 5
            );
            assert!(seen.insert(l.run_id), "queue: run leased twice while held");
            store
                .append(
                    l.run_id,
                    vec![EventData::WaitCompleted {
                        wait: cid("wait:0"),
                    }],
                    Some(l.id),
                )
                .await
                .expect("complete");
            store.release_lease(l).await.expect("release");
        }
        clock.advance(Duration::from_secs(1));
    }
    assert_eq!(seen.len(), runs.len(), "queue: due runs were never leased");
    assert_eq!(store.next_due().await.expect("next_due"), None);
}
