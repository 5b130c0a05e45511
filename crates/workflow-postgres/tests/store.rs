//! `PostgresStore` behaviour beyond the conformance suite: connection errors,
//! damaged rows, schema versions.
//!
//! The tests that need a server use `WORKFLOW_TEST_POSTGRES_URL`, or else a
//! throwaway cluster (`common::cluster`), also tested here; the error-message
//! tests need none.

mod common;

use std::sync::Arc;

use common::{exec, url_or_skip, uuid_text, Schemas};
use workflow_postgres::{PostgresConfig, PostgresStore};
use workflow_store::conformance::{
    cid, hook_created, new_run, payload, step_created, token, START, TTL,
};
use workflow_store::{Clock, EventData, ManualClock, RunQuery, Store, StoreError, WebhookResponse};

fn message(e: &StoreError) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(cause) = src {
        s.push_str(&format!(" / {cause}"));
        src = cause.source();
    }
    s
}

#[tokio::test]
async fn unreachable_server_is_a_clear_error() {
    let err = PostgresStore::connect_with(
        PostgresConfig::new("postgres://app:s3cret@127.0.0.1:1/orders")
            .connect_timeout(std::time::Duration::from_secs(2)),
    )
    .await
    .expect_err("nothing listens on port 1");
    let msg = message(&err);
    assert!(matches!(err, StoreError::Backend { .. }), "{msg}");
    assert!(
        msg.contains("cannot connect to PostgreSQL at 127.0.0.1:1/orders"),
        "{msg}"
    );
    assert!(!msg.contains("s3cret"), "the password leaked: {msg}");
}

#[tokio::test]
async fn bad_url_and_schema_are_refused() {
    let err = PostgresStore::connect("postgres://app@host:notaport/db")
        .await
        .expect_err("bad port");
    assert!(
        message(&err).contains("invalid PostgreSQL connection string"),
        "{err}"
    );
    let err = PostgresStore::connect_with(
        PostgresConfig::new("postgres://app@127.0.0.1:1/db").schema("Robert'); DROP TABLE"),
    )
    .await
    .expect_err("bad schema");
    assert!(
        message(&err).contains("invalid PostgreSQL schema name"),
        "{err}"
    );
}

async fn fresh(schemas: &Schemas) -> PostgresStore {
    let schema = schemas.fresh();
    schemas
        .store(&schema, Arc::new(ManualClock::new(START)) as Arc<dyn Clock>)
        .await
        .expect("store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_rows_are_corrupt_and_contained() {
    let Some(url) = url_or_skip("damaged_rows_are_corrupt_and_contained") else {
        return;
    };
    let schemas = Schemas::new(url.clone());
    let store = fresh(&schemas).await;
    let s = store.schema().to_owned();
    let bad = new_run(&store, "wf").await;
    let good = new_run(&store, "wf").await;
    for run in [bad, good] {
        store
            .append(
                run,
                vec![
                    step_created("step:0"),
                    hook_created("hook:1", &format!("t-{run}")),
                ],
                None,
            )
            .await
            .expect("append");
    }
    let id = uuid_text(bad);
    exec(
        &url,
        &format!(
            "UPDATE \"{s}\".runs SET status = 'exploded' WHERE id = '{id}';
             UPDATE \"{s}\".hooks SET record = '\\xce01ff'::bytea WHERE run_id = '{id}';"
        ),
    )
    .await
    .expect("damage");
    let r = store.get_run(bad).await;
    assert!(
        matches!(r, Err(StoreError::Corrupt { what: "run", .. })),
        "{r:?}"
    );
    let r = store.append(bad, vec![step_created("step:9")], None).await;
    assert!(matches!(r, Err(StoreError::Corrupt { .. })), "{r:?}");
    let r = store.list_hooks(bad).await;
    assert!(
        matches!(r, Err(StoreError::Corrupt { what: "hook", .. })),
        "{r:?}"
    );
    let r = store
        .get_hook(&workflow_store::conformance::token(&format!("t-{bad}")))
        .await;
    assert!(matches!(r, Err(StoreError::Corrupt { .. })), "{r:?}");
    // The healthy run reads and writes as before.
    assert!(store.get_run(good).await.expect("get_run").is_some());
    assert_eq!(store.list_hooks(good).await.expect("hooks").len(), 1);
    store
        .append(good, vec![step_created("step:9")], None)
        .await
        .expect("healthy run writes");
    assert_eq!(store.read_log(good).await.expect("log").len(), 4);
    // Listing by another status skips the damaged row's status.
    let pending = store
        .list_runs(RunQuery::default().status(workflow_store::RunStatus::Pending))
        .await
        .expect("list pending");
    assert_eq!(pending.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_queue_row_does_not_stop_leasing() {
    let Some(url) = url_or_skip("a_damaged_queue_row_does_not_stop_leasing") else {
        return;
    };
    let schemas = Schemas::new(url.clone());
    let store = fresh(&schemas).await;
    let s = store.schema().to_owned();
    let bad = new_run(&store, "wf").await;
    let good = new_run(&store, "wf").await;
    let id = uuid_text(bad);
    exec(
        &url,
        &format!(
            "UPDATE \"{s}\".queue SET lease_id = '{id}', lease_expires = NULL WHERE run_id = '{id}'"
        ),
    )
    .await
    .expect("damage");
    let leased = store.lease_due(10, TTL).await.expect("lease_due");
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].run_id, good);
    let r = store.wake(bad).await;
    assert!(
        matches!(
            r,
            Err(StoreError::Corrupt {
                what: "queue entry",
                ..
            })
        ),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_from_a_newer_release_is_refused() {
    let Some(url) = url_or_skip("a_schema_from_a_newer_release_is_refused") else {
        return;
    };
    let schemas = Schemas::new(url.clone());
    let store = fresh(&schemas).await;
    let s = store.schema().to_owned();
    drop(store);
    exec(
        &url,
        &format!(
            "INSERT INTO \"{s}\".schema_migrations (version, description) VALUES (9999, 'future')"
        ),
    )
    .await
    .expect("pretend a newer release migrated");
    let err = PostgresStore::connect_with(PostgresConfig::new(url).schema(s))
        .await
        .expect_err("newer schema");
    assert!(message(&err).contains("upgrade the library"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_notifications_there_is_no_feed() {
    let Some(url) = url_or_skip("without_notifications_there_is_no_feed") else {
        return;
    };
    let schemas = Schemas::new(url.clone());
    let store = PostgresStore::connect_with(
        PostgresConfig::new(url)
            .schema(schemas.fresh())
            .notifications(false),
    )
    .await
    .expect("store");
    assert!(store.subscribe().is_none());
    let run = new_run(&store, "wf").await;
    assert_eq!(store.read_log(run).await.expect("log").len(), 1);
    let debug = format!("{store:?}");
    assert!(
        debug.contains("PostgresStore") && debug.contains(store.schema()),
        "{debug}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_schema_is_migrated_with_its_queue() {
    let Some(url) = url_or_skip("a_version_1_schema_is_migrated_with_its_queue") else {
        return;
    };
    let schemas = Schemas::new(url.clone());
    let clock = Arc::new(ManualClock::new(START));
    let schema = schemas.fresh();
    let store = schemas
        .store(&schema, clock.clone() as Arc<dyn Clock>)
        .await
        .expect("store");
    let run = new_run(&store, "wf").await;
    drop(store);
    // Turn the schema back into what version 1 made (the queue row stays).
    exec(
        &url,
        &format!(
            "ALTER TABLE \"{schema}\".queue DROP COLUMN parked;
             ALTER TABLE \"{schema}\".queue ALTER COLUMN due SET NOT NULL;
             ALTER TABLE \"{schema}\".tokens DROP COLUMN webhook;
             DROP INDEX \"{schema}\".runs_workflow_id;
             DROP INDEX \"{schema}\".runs_workflow_status_id;
             DROP INDEX \"{schema}\".tokens_run_id;
             DROP TABLE \"{schema}\".streams;
             DROP TABLE \"{schema}\".chunks;
             DELETE FROM \"{schema}\".schema_migrations WHERE version >= 2;"
        ),
    )
    .await
    .expect("downgrade to version 1");
    let store = schemas
        .store(&schema, clock.clone() as Arc<dyn Clock>)
        .await
        .expect("migrate from version 1");
    assert!(PostgresStore::schema_version() >= 2);
    // The old row reads back (not parked), and a parked row with only a
    // timer is kept with a NULL due.
    let lease = store.lease_due(10, TTL).await.expect("lease").remove(0);
    assert_eq!(lease.run_id, run);
    let at = START.saturating_add(std::time::Duration::from_secs(5));
    store
        .append(
            run,
            vec![
                workflow_store::EventData::RunStarted,
                workflow_store::conformance::wait_created("wait:0", at),
                workflow_store::EventData::RunBlocked {
                    error: workflow_store::ErrorRecord::new("nondeterminism"),
                },
            ],
            Some(lease.id),
        )
        .await
        .expect("block");
    store.release_lease(&lease).await.expect("release");
    clock.advance(std::time::Duration::from_secs(10));
    assert_eq!(store.next_due().await.expect("next_due"), None);
    assert!(store.lease_due(10, TTL).await.expect("lease").is_empty());
    store
        .append(run, vec![workflow_store::EventData::RunStarted], None)
        .await
        .expect("start again");
    assert_eq!(store.next_due().await.expect("next_due"), Some(at));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_2_schema_gets_the_webhook_modes_of_its_live_tokens() {
    let Some(url) = url_or_skip("a_version_2_schema_gets_the_webhook_modes_of_its_live_tokens")
    else {
        return;
    };
    let schemas = Schemas::new(url.clone());
    let clock = Arc::new(ManualClock::new(START)) as Arc<dyn Clock>;
    let schema = schemas.fresh();
    let store = schemas.store(&schema, clock.clone()).await.expect("store");
    let run = new_run(&store, "wf").await;
    let mode = WebhookResponse::Manual { timeout_ms: 2500 };
    store
        .append(
            run,
            vec![
                hook_created("hook:0", "plain"),
                EventData::HookCreated {
                    hook: cid("hook:1"),
                    token: token("web"),
                    metadata: None,
                    webhook: Some(mode.clone()),
                },
            ],
            None,
        )
        .await
        .expect("hooks");
    drop(store);
    // Back to what version 2 made: no mode in the tokens table.
    exec(
        &url,
        &format!(
            "ALTER TABLE \"{schema}\".tokens DROP COLUMN webhook;
             DROP INDEX \"{schema}\".runs_workflow_id;
             DROP INDEX \"{schema}\".runs_workflow_status_id;
             DROP INDEX \"{schema}\".tokens_run_id;
             DROP TABLE \"{schema}\".streams;
             DROP TABLE \"{schema}\".chunks;
             DELETE FROM \"{schema}\".schema_migrations WHERE version >= 3;"
        ),
    )
    .await
    .expect("downgrade to version 2");
    let store = schemas
        .store(&schema, clock)
        .await
        .expect("migrate from version 2");
    let (resumed, got) = store
        .resume_webhook(&token("web"), payload(&"req"))
        .await
        .expect("the webhook's mode was carried over");
    assert_eq!((resumed.run_id, got), (run, mode));
    let r = store.resume_webhook(&token("plain"), payload(&"req")).await;
    assert!(
        matches!(r, Err(StoreError::HookNotFound { .. })),
        "a plain hook became a webhook: {r:?}"
    );
    store
        .resume_hook(&token("plain"), payload(&"x"))
        .await
        .expect("the plain hook still resumes");
}

/// Set for the child of the test below.
const CLUSTER_CHILD_ENV: &str = "WORKFLOW_TEST_CLUSTER_CHILD";

/// The child of the test below: starts a throwaway cluster, says where, and
/// waits to be killed. In a normal test run it returns at once.
#[test]
fn throwaway_cluster_child() {
    if std::env::var_os(CLUSTER_CHILD_ENV).is_none() {
        return;
    }
    let cluster = common::cluster::shared().expect("a cluster");
    println!("CLUSTER {} {}", cluster.pid, cluster.dir.display());
    std::thread::sleep(std::time::Duration::from_secs(120));
}

/// Whether process `pid` has exited (gone, or a zombie not reaped yet).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.split(' ').nth(2) == Some("Z"),
        Err(_) => true,
    }
}

#[test]
fn the_throwaway_cluster_goes_when_its_test_process_is_killed() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    if common::cluster::find_bindir().is_none() {
        eprintln!(
            "SKIPPED the_throwaway_cluster_goes_when_its_test_process_is_killed: no PostgreSQL \
             server binaries"
        );
        return;
    }
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "throwaway_cluster_child", "--nocapture"])
        .env_remove(common::URL_VAR)
        .env(CLUSTER_CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let line = BufReader::new(stdout)
        .lines()
        .map(|l| l.expect("read"))
        .find(|l| l.starts_with("CLUSTER "))
        .expect("the child printed no cluster");
    let mut parts = line.splitn(3, ' ').skip(1);
    let pid: u32 = parts.next().and_then(|p| p.parse().ok()).expect("pid");
    let dir = std::path::PathBuf::from(parts.next().expect("dir"));
    assert!(
        dir.join("data").is_dir() && !exited(pid),
        "no cluster running"
    );
    // SIGKILL: no destructor, no exit handler runs in the child.
    child.kill().expect("kill");
    child.wait().expect("wait");
    let deadline = Instant::now() + Duration::from_secs(20);
    while (dir.exists() || !exited(pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(exited(pid), "the server outlived its test process");
    assert!(!dir.exists(), "{} was left behind", dir.display());
}
