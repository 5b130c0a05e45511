//! Times by the database's clock: two `PostgresStore`s (two engine hosts)
//! whose own clocks are ten minutes apart still agree on when a lease expires.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{url_or_skip, Schemas};
use workflow_postgres::PostgresStore;
use workflow_store::conformance::{new_run, step_created};
use workflow_store::{Clock, EventData, ManualClock, Store, StoreError, Timestamp};

const SKEW: Duration = Duration::from_secs(600);
const TTL: Duration = Duration::from_secs(1);

fn system_now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis();
    Timestamp(u64::try_from(ms).expect("ms fit"))
}

/// Host clocks standing still, one `SKEW` behind and one `SKEW` ahead.
fn skewed_clocks() -> (Arc<dyn Clock>, Arc<dyn Clock>) {
    let now = system_now();
    let behind = Timestamp(now.0 - SKEW.as_millis() as u64);
    let ahead = Timestamp(now.0 + SKEW.as_millis() as u64);
    (
        Arc::new(ManualClock::new(behind)),
        Arc::new(ManualClock::new(ahead)),
    )
}

fn near(a: Timestamp, b: Timestamp, within: Duration) -> bool {
    a.0.abs_diff(b.0) <= within.as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skewed_hosts_cannot_both_hold_a_lease() {
    let Some(url) = url_or_skip("skewed_hosts_cannot_both_hold_a_lease") else {
        return;
    };
    let schemas = Schemas::new(url);
    let schema = schemas.fresh();
    let (behind_clock, ahead_clock) = skewed_clocks();
    let behind: PostgresStore = schemas
        .store_on_database_time(&schema, behind_clock)
        .await
        .expect("store behind");
    let ahead = schemas
        .store_on_database_time(&schema, ahead_clock)
        .await
        .expect("store ahead");
    // Both stores' `now` follows the database's clock, not their own.
    for store in [&behind, &ahead] {
        assert!(
            near(store.now(), system_now(), Duration::from_secs(60)),
            "now() does not follow the database's clock"
        );
    }

    let run = new_run(&behind, "wf").await;
    let held = behind.lease_due(10, TTL).await.expect("lease");
    assert_eq!(held.len(), 1, "the due run was not leased");
    let held = held.into_iter().next().expect("lease");
    // By its own clock the host ahead would see that lease expired ten
    // minutes ago; by the database's it is held.
    assert!(
        ahead.lease_due(10, TTL).await.expect("lease").is_empty(),
        "a host ahead took over a lease that had not expired"
    );
    behind
        .append(run, vec![EventData::RunStarted], Some(held.id))
        .await
        .expect("the holder writes");
    let renewed = behind.renew_lease(&held, TTL).await.expect("renew");
    assert!(ahead.lease_due(10, TTL).await.expect("lease").is_empty());

    // Both host clocks stand still: only the database's clock moves, and
    // the lease expires by it.
    tokio::time::sleep(TTL + Duration::from_millis(300)).await;
    let taken = ahead.lease_due(10, TTL).await.expect("lease");
    assert_eq!(taken.len(), 1, "an expired lease was not taken over");
    assert!(taken[0].taken_over);
    let r = behind
        .append(run, vec![step_created("step:0")], Some(renewed.id))
        .await;
    assert!(
        matches!(r, Err(StoreError::LeaseLost { .. })),
        "the old holder still writes: {r:?}"
    );
    // The events carry the database's time too.
    for e in ahead.read_log(run).await.expect("log") {
        assert!(
            near(e.at, system_now(), Duration::from_secs(60)),
            "event {} is stamped by a host clock",
            e.seq
        );
    }
}

/// What the database's clock prevents: with the host clocks deciding, the
/// host ahead takes over a lease the other still holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_host_clocks_deciding_skewed_hosts_both_lease() {
    let Some(url) = url_or_skip("with_host_clocks_deciding_skewed_hosts_both_lease") else {
        return;
    };
    let schemas = Schemas::new(url);
    let schema = schemas.fresh();
    let (behind_clock, ahead_clock) = skewed_clocks();
    let behind = schemas
        .store(&schema, behind_clock)
        .await
        .expect("store behind");
    let ahead = schemas
        .store(&schema, ahead_clock)
        .await
        .expect("store ahead");
    new_run(&behind, "wf").await;
    assert_eq!(behind.lease_due(10, TTL).await.expect("lease").len(), 1);
    let taken = ahead.lease_due(10, TTL).await.expect("lease");
    assert_eq!(taken.len(), 1, "the host clocks did decide after all");
    assert!(taken[0].taken_over);
}
