//! The work queue: timers and retries come due at their time, not before,
//! no due work is lost, and a blocked run's timers wait until it runs again.

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
    blocked_runs_are_parked(b).await;
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

/// A blocked run is parked: its timers do not make it due (neither
/// `lease_due` nor `next_due` reports it) until `run_started`; a wake-up makes
/// it due once, and releasing the lease taken for it leaves it inert again.
pub async fn blocked_runs_are_parked<B: Backend>(b: &B) {
    let (store, clock) = fresh(b).await;
    let run = new_run(&store, "wf").await;
    let lease = store.lease_due(10, TTL).await.expect("lease").remove(0);
    let at = super::START.saturating_add(Duration::from_secs(10));
    store
        .append(
            run,
            vec![
                EventData::RunStarted,
                wait_created("wait:0", at),
                EventData::RunBlocked {
                    error: ErrorRecord::new("nondeterminism"),
                },
            ],
            Some(lease.id),
        )
        .await
        .expect("block");
    store.release_lease(&lease).await.expect("release");
    clock.advance(Duration::from_secs(20));
    assert!(
        store.lease_due(10, TTL).await.expect("lease").is_empty(),
        "queue: a blocked run was leased for its due timer"
    );
    assert_eq!(
        store.next_due().await.expect("next_due"),
        None,
        "queue: next_due reports a blocked run's timer"
    );

    // An explicit wake (a retry) makes it due, once.
    store.wake(run).await.expect("wake");
    let now = clock_now(&store);
    assert_eq!(
        store.next_due().await.expect("next_due"),
        Some(now),
        "queue: a woken blocked run is not due now"
    );
    let leased = store.lease_due(10, TTL).await.expect("lease");
    assert_eq!(leased.len(), 1, "queue: a woken blocked run was not leased");
    assert_eq!(leased[0].run_id, run);
    store.release_lease(&leased[0]).await.expect("release");
    assert!(
        store.lease_due(10, TTL).await.expect("lease").is_empty(),
        "queue: a blocked run stayed due after the woken lease was released"
    );
    assert_eq!(
        store.next_due().await.expect("next_due"),
        None,
        "queue: a released blocked run still has a due time"
    );

    // Running again: the timer counts again (it is overdue).
    store
        .append(run, vec![EventData::RunStarted], None)
        .await
        .expect("start again");
    assert_eq!(
        store.next_due().await.expect("next_due"),
        Some(at),
        "queue: run_started did not restore the timer"
    );
    let leased = store.lease_due(10, TTL).await.expect("lease");
    assert_eq!(
        leased.len(),
        1,
        "queue: a restarted run's overdue timer was not leased"
    );
    store.release_lease(&leased[0]).await.expect("release");

    // Blocked with no queue entry at all, then a timer armed: still inert.
    let other = new_run(&store, "wf").await;
    drain(&store).await;
    store
        .append(
            other,
            vec![
                EventData::RunStarted,
                EventData::RunBlocked {
                    error: ErrorRecord::new("unregistered"),
                },
            ],
            None,
        )
        .await
        .expect("block");
    let soon = clock_now(&store).saturating_add(Duration::from_secs(1));
    store
        .append(other, vec![wait_created("wait:0", soon)], None)
        .await
        .expect("arm while blocked");
    clock.advance(Duration::from_secs(2));
    let leased: Vec<_> = store
        .lease_due(10, TTL)
        .await
        .expect("lease")
        .into_iter()
        .map(|l| l.run_id)
        .collect();
    assert!(
        !leased.contains(&other),
        "queue: a timer armed while blocked made the run due"
    );
}
