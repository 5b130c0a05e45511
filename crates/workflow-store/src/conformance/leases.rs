//! Leases: one holder per run, expiry hands the run to the next taker (and
//! the new lease says it took over), renewal extends, and a lost lease fences
//! the old holder's writes.

use std::time::Duration;

use super::{fresh, new_run, step_created, Backend, TTL};
use crate::error::StoreError;
use crate::event::EventData;
use crate::store::Store;

/// Runs the lease checks.
pub async fn run<B: Backend>(b: &B) {
    lease_is_exclusive_and_expires(b).await;
    renew_extends_and_release_frees(b).await;
    a_lease_says_whether_it_took_over(b).await;
    release_is_refused_once_the_lease_is_gone(b).await;
    a_run_created_leased_is_held_by_its_creator(b).await;
}

/// `create_run_leased`: a backend may lease a new run to its creator in the
/// creating write (the default does not). A lease it returns is exclusive and
/// fences writes like any other, its release leaves nothing due, and a second
/// creation of the same run (idempotent) leases nothing.
pub async fn a_run_created_leased_is_held_by_its_creator<B: Backend>(b: &B) {
    let (store, _) = fresh(b).await;
    let run_id = crate::id::RunId::new();
    let new = || crate::record::NewRun {
        id: run_id,
        workflow: "wf".to_string(),
        input: super::payload(&()),
    };
    let (created, lease) = store
        .create_run_leased(new(), TTL)
        .await
        .expect("create_run_leased");
    assert!(created.created, "leases: a new run was not created");
    let Some(lease) = lease else {
        // Not leased: the run must be due like one from create_run.
        let leased = store.lease_due(10, TTL).await.expect("lease_due");
        assert_eq!(
            leased.iter().map(|l| l.run_id).collect::<Vec<_>>(),
            vec![run_id],
            "leases: a run created without a lease is not due"
        );
        return;
    };
    assert_eq!(lease.run_id, run_id, "leases: the lease is for another run");
    assert!(
        !lease.taken_over,
        "leases: a creation lease says it took over"
    );
    assert!(
        store
            .lease_due(10, TTL)
            .await
            .expect("lease_due")
            .is_empty(),
        "leases: a run leased at creation was leased again"
    );
    let (again, second) = store
        .create_run_leased(new(), TTL)
        .await
        .expect("create_run_leased again");
    assert!(
        !again.created && second.is_none(),
        "leases: creating an existing run leased it again: {again:?} {second:?}"
    );
    store
        .append(run_id, vec![EventData::RunStarted], Some(lease.id))
        .await
        .expect("leases: the creation lease does not fence-pass its holder's write");
    let stale = crate::record::Lease {
        id: crate::id::LeaseId::new(),
        ..lease.clone()
    };
    let r = store
        .append(run_id, vec![step_created("step:0")], Some(stale.id))
        .await;
    assert!(
        matches!(r, Err(StoreError::LeaseLost { .. })),
        "leases: a write fenced by another lease passed: {r:?}"
    );
    store.release_lease(&lease).await.expect("release");
    assert_eq!(
        store.next_due().await.expect("next_due"),
        None,
        "leases: a released run with nothing to do is still queued"
    );
}

/// A lease given up is gone: releasing or renewing it again is `LeaseLost`
/// (the run is live; its queue entry went with the release), and so is a
/// lease on a run the store never had. Releasing after the run ended (the
/// lease went with the run's queue entry) is fine: the holder ended it.
pub async fn release_is_refused_once_the_lease_is_gone<B: Backend>(b: &B) {
    let (store, _) = fresh(b).await;
    let run = new_run(&store, "wf").await;
    let lease = store.lease_due(10, TTL).await.expect("lease").remove(0);
    store.release_lease(&lease).await.expect("release");
    assert_eq!(
        store.next_due().await.expect("next_due"),
        None,
        "leases: a released run with nothing to do is still queued"
    );
    let r = store.release_lease(&lease).await;
    assert!(
        matches!(r, Err(StoreError::LeaseLost { .. })),
        "leases: a lease was released twice: {r:?}"
    );
    let r = store.renew_lease(&lease, TTL).await;
    assert!(
        matches!(r, Err(StoreError::LeaseLost { .. })),
        "leases: a released lease was renewed: {r:?}"
    );
    let stranger = crate::record::Lease {
        run_id: crate::id::RunId::new(),
        ..lease.clone()
    };
    let r = store.release_lease(&stranger).await;
    assert!(
        matches!(r, Err(StoreError::LeaseLost { .. })),
        "leases: a lease on an unknown run was released: {r:?}"
    );

    store.wake(run).await.expect("wake");
    let lease = store.lease_due(10, TTL).await.expect("lease").remove(0);
    store
        .append(
            run,
            vec![EventData::RunCompleted {
                output: super::payload(&0),
            }],
            Some(lease.id),
        )
        .await
        .expect("complete");
    store
        .release_lease(&lease)
        .await
        .expect("leases: releasing the lease of a run its holder ended");
    let r = store.renew_lease(&lease, TTL).await;
    assert!(
        matches!(r, Err(StoreError::LeaseLost { .. })),
        "leases: the lease of an ended run was renewed: {r:?}"
    );
}

/// A leased run is not leased again until the lease expires; then the old
/// holder is fenced off.
pub async fn lease_is_exclusive_and_expires<B: Backend>(b: &B) {
    let (store, clock) = fresh(b).await;
    let run = new_run(&store, "wf").await;
    let first = store.lease_due(10, TTL).await.expect("lease");
    assert_eq!(first.len(), 1, "leases: a new run was not due");
    let lease = first[0].clone();
    assert_eq!(lease.run_id, run);
    assert_eq!(
        lease.expires_at,
        super::START.saturating_add(TTL),
        "leases: expiry is not now + ttl"
    );
    assert!(
        store.lease_due(10, TTL).await.expect("lease").is_empty(),
        "leases: a held run was leased twice"
    );
    store
        .append(run, vec![EventData::RunStarted], Some(lease.id))
        .await
        .expect("fenced append by holder");
    clock.advance(TTL - Duration::from_millis(1));
    assert!(
        store.lease_due(10, TTL).await.expect("lease").is_empty(),
        "leases: taken over before expiry"
    );
    clock.advance(Duration::from_millis(1));
    let second = store.lease_due(10, TTL).await.expect("lease");
    assert_eq!(
        second.len(),
        1,
        "leases: an expired lease was not taken over"
    );
    assert_ne!(
        second[0].id, lease.id,
        "leases: the new holder got the old lease id"
    );
    let r = store
        .append(run, vec![step_created("step:0")], Some(lease.id))
        .await;
    assert!(
        matches!(r, Err(StoreError::LeaseLost { .. })),
        "leases: the old holder could still write: {r:?}"
    );
    let r = store.renew_lease(&lease, TTL).await;
    assert!(
        matches!(r, Err(StoreError::LeaseLost { .. })),
        "leases: the old holder could renew: {r:?}"
    );
    let r = store.release_lease(&lease).await;
    assert!(
        matches!(r, Err(StoreError::LeaseLost { .. })),
        "leases: the old holder could release: {r:?}"
    );
    store
        .append(run, vec![step_created("step:0")], Some(second[0].id))
        .await
        .expect("new holder writes");
}

/// Renewing moves the expiry; releasing makes the run leasable only if due.
pub async fn renew_extends_and_release_frees<B: Backend>(b: &B) {
    let (store, clock) = fresh(b).await;
    let run = new_run(&store, "wf").await;
    let lease = store.lease_due(1, TTL).await.expect("lease").remove(0);
    clock.advance(TTL / 2);
    let renewed = store.renew_lease(&lease, TTL).await.expect("renew");
    assert_eq!(renewed.id, lease.id);
    assert_eq!(
        renewed.expires_at,
        super::START.saturating_add(TTL / 2 + TTL),
        "leases: renew did not extend"
    );
    clock.advance(TTL / 2 + Duration::from_millis(1));
    assert!(
        store.lease_due(10, TTL).await.expect("lease").is_empty(),
        "leases: renewed lease taken over"
    );
    // A wake-up while held keeps the run due after release.
    store.wake(run).await.expect("wake");
    store.release_lease(&renewed).await.expect("release");
    let again = store.lease_due(10, TTL).await.expect("lease");
    assert_eq!(
        again.len(),
        1,
        "leases: a wake-up during the lease was lost on release"
    );
    store.release_lease(&again[0]).await.expect("release");
    assert!(
        store.lease_due(10, TTL).await.expect("lease").is_empty(),
        "leases: released run with nothing due was leased again"
    );
    assert_eq!(
        store.next_due().await.expect("next_due"),
        None,
        "leases: idle run still has a due time"
    );
    let r = store
        .append(run, vec![EventData::RunStarted], Some(again[0].id))
        .await;
    assert!(
        matches!(r, Err(StoreError::LeaseLost { .. })),
        "leases: released lease still fences in: {r:?}"
    );
}

/// A lease taken after another expired unreleased says `taken_over`; one on
/// a freshly created or woken run, or after a release, does not.
pub async fn a_lease_says_whether_it_took_over<B: Backend>(b: &B) {
    let (store, clock) = fresh(b).await;
    let run = new_run(&store, "wf").await;
    let first = store.lease_due(10, TTL).await.expect("lease").remove(0);
    assert!(
        !first.taken_over,
        "leases: the first lease of a new run says it took over"
    );
    clock.advance(TTL);
    let second = store.lease_due(10, TTL).await.expect("lease");
    assert_eq!(
        second.len(),
        1,
        "leases: an expired lease was not taken over"
    );
    assert!(
        second[0].taken_over,
        "leases: a lease replacing an expired one does not say it took over"
    );
    let renewed = store.renew_lease(&second[0], TTL).await.expect("renew");
    assert_eq!(renewed.id, second[0].id);
    store.release_lease(&renewed).await.expect("release");
    store.wake(run).await.expect("wake");
    let third = store.lease_due(10, TTL).await.expect("lease");
    assert_eq!(third.len(), 1, "leases: a woken run was not leased");
    assert!(
        !third[0].taken_over,
        "leases: a lease on a woken, released run says it took over"
    );
}
