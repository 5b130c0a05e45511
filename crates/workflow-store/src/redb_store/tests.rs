//! Tests of what is specific to redb: indexes, the writer thread's group
//! commit, opening. The behaviour every store shares is in the conformance
//! suite.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use redb::ReadableDatabase;

use super::layout::Def;
use super::*;
use crate::clock::ManualClock;
use crate::id::CorrelationId;
use crate::record::{QueueEntry, RunStatus};

const T0: Timestamp = Timestamp(1_700_000_000_000);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn config(dir: &Path, clock: Arc<ManualClock>) -> RedbConfig {
    RedbConfig::new(dir).clock(clock).cache_size(4 << 20)
}

fn open_manual(dir: &Path) -> (RedbStore, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    let store = RedbStore::open_with(config(dir, clock.clone())).unwrap();
    (store, clock)
}

fn new_run(id: RunId) -> NewRun {
    NewRun {
        id,
        workflow: "wf".into(),
        input: Payload::encode(&1u8).unwrap(),
    }
}

fn cid(s: &str) -> CorrelationId {
    CorrelationId::new(s).unwrap()
}

fn keys(store: &RedbStore, def: Def) -> Vec<Vec<u8>> {
    let txn = store.raw_db().begin_read().unwrap();
    let table = txn.open_table(def).unwrap();
    table
        .iter()
        .unwrap()
        .map(|kv| kv.unwrap().0.value().to_vec())
        .collect()
}

fn raw_get(store: &RedbStore, def: Def, key: &[u8]) -> Option<Vec<u8>> {
    let txn = store.raw_db().begin_read().unwrap();
    let table = txn.open_table(def).unwrap();
    let found = table.get(key).unwrap();
    found.map(|v| v.value().to_vec())
}

/// Sets (`Some`) or deletes (`None`) a key behind the store's back.
fn raw_put(store: &RedbStore, def: Def, key: &[u8], value: Option<&[u8]>) {
    let txn = store.raw_db().begin_write().unwrap();
    {
        let mut table = txn.open_table(def).unwrap();
        match value {
            Some(value) => drop(table.insert(key, value).unwrap()),
            None => drop(table.remove(key).unwrap()),
        }
    }
    txn.commit().unwrap();
}

fn queue_entry(store: &RedbStore, run: RunId) -> Option<QueueEntry> {
    raw_get(store, layout::QUEUE, &layout::run_key(run)).map(|b| codec::decode_record(&b).unwrap())
}

#[test]
fn status_index_follows_the_run_status() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open_manual(dir.path());
    runtime().block_on(async {
        let run = RunId::new();
        store.create_run(new_run(run)).await.unwrap();
        assert_eq!(
            keys(&store, layout::STATUS),
            vec![layout::status_key(RunStatus::Pending, run).to_vec()]
        );
        store
            .append(run, vec![EventData::RunStarted], None)
            .await
            .unwrap();
        assert_eq!(
            keys(&store, layout::STATUS),
            vec![layout::status_key(RunStatus::Running, run).to_vec()]
        );
        let running = RunQuery {
            status: Some(RunStatus::Running),
            ..RunQuery::default()
        };
        assert_eq!(store.list_runs(running.clone()).await.unwrap().len(), 1);
        store
            .append(run, vec![EventData::RunCancelled], None)
            .await
            .unwrap();
        assert_eq!(
            keys(&store, layout::STATUS),
            vec![layout::status_key(RunStatus::Cancelled, run).to_vec()]
        );
        assert!(store.list_runs(running).await.unwrap().is_empty());
    });
}

#[test]
fn due_index_holds_one_key_per_queue_entry_at_its_effective_due_time() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock) = open_manual(dir.path());
    runtime().block_on(async {
        let run = RunId::new();
        store.create_run(new_run(run)).await.unwrap();
        assert_eq!(
            keys(&store, layout::DUE),
            vec![layout::due_key(T0, run).to_vec()]
        );

        // Leased: due when the lease expires.
        let lease = store
            .lease_due(10, Duration::from_secs(30))
            .await
            .unwrap()
            .pop()
            .unwrap();
        assert_eq!(
            keys(&store, layout::DUE),
            vec![layout::due_key(lease.expires_at, run).to_vec()]
        );
        let later = T0.saturating_add(Duration::from_secs(60));
        store
            .append(
                run,
                vec![
                    EventData::RunStarted,
                    EventData::WaitCreated {
                        wait: cid("wait:0"),
                        resume_at: later,
                    },
                ],
                Some(lease.id),
            )
            .await
            .unwrap();
        // Released: the wake-up is cleared, the timer stays.
        store.release_lease(&lease).await.unwrap();
        assert_eq!(
            keys(&store, layout::DUE),
            vec![layout::due_key(later, run).to_vec()]
        );
        assert_eq!(store.next_due().await.unwrap(), Some(later));
        assert!(store
            .lease_due(10, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty());

        clock.set(later);
        let lease = store
            .lease_due(10, Duration::from_secs(30))
            .await
            .unwrap()
            .pop()
            .unwrap();
        store
            .append(
                run,
                vec![
                    EventData::WaitCompleted {
                        wait: cid("wait:0"),
                    },
                    EventData::RunCompleted {
                        output: Payload::default(),
                    },
                ],
                Some(lease.id),
            )
            .await
            .unwrap();
        // Ended: no queue entry, no index key, releasing is a no-op.
        assert!(keys(&store, layout::DUE).is_empty());
        assert_eq!(queue_entry(&store, run), None);
        store.release_lease(&lease).await.unwrap();
        assert_eq!(store.next_due().await.unwrap(), None);
    });
}

#[test]
fn hook_tokens_are_indexed_while_live() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open_manual(dir.path());
    runtime().block_on(async {
        let run = RunId::new();
        let token = HookToken::new("order:1").unwrap();
        store.create_run(new_run(run)).await.unwrap();
        store
            .append(
                run,
                vec![EventData::HookCreated {
                    hook: cid("hook:0"),
                    token: token.clone(),
                    metadata: None,
                    webhook: None,
                }],
                None,
            )
            .await
            .unwrap();
        assert_eq!(keys(&store, layout::TOKENS), vec![b"order:1".to_vec()]);
        let resumed = store
            .resume_hook(&token, Payload::encode(&"yes").unwrap())
            .await
            .unwrap();
        assert_eq!((resumed.run_id, resumed.seq), (run, 2));
        assert!(store.get_hook(&token).await.unwrap().unwrap().live);
        store
            .append(
                run,
                vec![EventData::HookDisposed {
                    hook: cid("hook:0"),
                }],
                None,
            )
            .await
            .unwrap();
        assert!(keys(&store, layout::TOKENS).is_empty());
        assert_eq!(store.get_hook(&token).await.unwrap(), None);
        assert!(!store.list_hooks(run).await.unwrap()[0].live);
    });
}

#[test]
fn concurrent_writers_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open_manual(dir.path());
    let writers = 32;
    let rounds = 5;
    runtime().block_on(async {
        let tasks: Vec<_> = (0..writers)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    let run = RunId::new();
                    store.create_run(new_run(run)).await.unwrap();
                    for _ in 0..rounds {
                        store
                            .append(run, vec![EventData::RunStarted], None)
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    let (batches, jobs) = store.commit_counts();
    let writes = writers * (rounds + 1);
    assert_eq!(jobs, writes);
    assert!(
        batches < writes,
        "{batches} commits for {writes} concurrent writes: none was shared"
    );
}

/// Jobs queued together share one transaction: each sees the writes of the
/// jobs before it, and one the rules reject fails alone.
#[test]
fn a_batch_runs_each_job_over_the_writes_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open_manual(dir.path());
    let run = RunId::new();
    let (create, created) = transaction::job(move |st| apply::create_run(st, &new_run(run)), true);
    let (start, started) = transaction::job(
        move |st| apply::append(st, run, vec![EventData::RunStarted], None),
        true,
    );
    let (bad, rejected) = transaction::job(
        move |st| {
            apply::append(
                st,
                run,
                vec![EventData::WaitCompleted {
                    wait: cid("wait:never"),
                }],
                None,
            )
        },
        true,
    );
    let (finish, finished) = transaction::job(
        move |st| apply::append(st, run, vec![EventData::RunCancelled], None),
        true,
    );
    store
        .inner
        .writer
        .submit(vec![create, start, bad, finish])
        .unwrap();
    futures::executor::block_on(async {
        assert!(created.outcome().await.unwrap().created);
        assert_eq!(started.outcome().await.unwrap().events[0].seq, 1);
        assert!(matches!(
            rejected.outcome().await,
            Err(StoreError::UnknownCorrelation { .. })
        ));
        assert_eq!(finished.outcome().await.unwrap().events[0].seq, 2);
        let log = store.read_log(run).await.unwrap();
        assert_eq!(log.len(), 3);
        assert_eq!(log[2].data, EventData::RunCancelled);
    });
    assert_eq!(
        store.commit_counts(),
        (1, 4),
        "one transaction for the batch"
    );
}

#[test]
fn a_panic_in_a_commit_fails_its_batch_and_later_writes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open_manual(dir.path());
    runtime().block_on(async {
        let (lost, kept) = (RunId::new(), RunId::new());
        store.inner.writer.panic_next.store(true, Ordering::SeqCst);
        let err = store.create_run(new_run(lost)).await.unwrap_err();
        match &err {
            StoreError::Damaged { location, detail } => {
                assert!(location.contains("workflow.redb"), "{location}");
                assert!(detail.contains("injected panic"), "{detail}");
            }
            other => panic!("expected Damaged, got {other:?}"),
        }
        assert_eq!(store.get_run(lost).await.unwrap(), None, "nothing recorded");
        store.create_run(new_run(kept)).await.unwrap();
        assert_eq!(store.read_log(kept).await.unwrap().len(), 1);
    });
}

#[test]
fn acknowledged_writes_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let run = RunId::new();
    let before = rt.block_on(async {
        let (store, _) = open_manual(dir.path());
        store.create_run(new_run(run)).await.unwrap();
        store
            .append(run, vec![EventData::RunStarted], None)
            .await
            .unwrap();
        store.read_log(run).await.unwrap()
    });
    // The store was dropped: its file is closed and opens again at once.
    rt.block_on(async {
        let store = RedbStore::open_with(
            config(dir.path(), Arc::new(ManualClock::new(T0))).lock_wait(Duration::ZERO),
        )
        .unwrap();
        assert_eq!(store.read_log(run).await.unwrap(), before);
        assert_eq!(
            store.get_run(run).await.unwrap().unwrap().status,
            RunStatus::Running
        );
    });
}

#[test]
fn a_directory_in_use_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_held, _) = open_manual(dir.path());
    let started = std::time::Instant::now();
    let err =
        RedbStore::open_with(RedbConfig::new(dir.path()).lock_wait(Duration::from_millis(50)))
            .unwrap_err();
    assert!(
        started.elapsed() >= Duration::from_millis(50),
        "it waited for the lock"
    );
    match &err {
        StoreError::Locked { path } => assert_eq!(path, dir.path()),
        other => panic!("expected a locked error, got {other:?}"),
    }
    assert!(err.to_string().contains("in use"), "{err}");
}

#[test]
fn a_newer_layout_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = open_manual(dir.path());
        let newer = codec::encode_record(&(layout::LAYOUT_VERSION + 1)).unwrap();
        raw_put(
            &store,
            layout::META,
            layout::LAYOUT_VERSION_KEY,
            Some(&newer),
        );
    }
    let err = RedbStore::open(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Codec(CodecError::UnsupportedVersion { found, supported })
                if found == layout::LAYOUT_VERSION + 1 && supported == layout::LAYOUT_VERSION
        ),
        "{err:?}"
    );
}

#[test]
fn a_file_that_is_not_a_redb_database_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("workflow.redb"), vec![0xAB; 16 * 1024]).unwrap();
    let err = RedbStore::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, StoreError::Damaged { .. } | StoreError::Backend { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("workflow.redb"), "{err}");
}

#[test]
fn a_damaged_event_is_corrupt_and_other_runs_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open_manual(dir.path());
    runtime().block_on(async {
        let damaged = RunId::new();
        let healthy = RunId::new();
        for run in [damaged, healthy] {
            store.create_run(new_run(run)).await.unwrap();
            store
                .append(run, vec![EventData::RunStarted], None)
                .await
                .unwrap();
        }
        raw_put(
            &store,
            layout::EVENTS,
            &layout::event_key(damaged, 1),
            Some(&[0xCE, 1, 0xFF]),
        );
        let err = store.read_log(damaged).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { what: "event", key, .. } if key == &format!("{damaged}/1")),
            "{err:?}"
        );
        assert_eq!(store.read_log(healthy).await.unwrap().len(), 2);
        store
            .append(healthy, vec![EventData::RunCancelled], None)
            .await
            .unwrap();
        assert_eq!(store.list_runs(RunQuery::default()).await.unwrap().len(), 2);
    });
}

#[test]
fn a_log_that_disagrees_with_its_record_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open_manual(dir.path());
    runtime().block_on(async {
        let run = RunId::new();
        store.create_run(new_run(run)).await.unwrap();
        store
            .append(run, vec![EventData::RunStarted, EventData::RunCancelled], None)
            .await
            .unwrap();
        raw_put(&store, layout::EVENTS, &layout::event_key(run, 2), None);
        let err = store.read_log(run).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { what: "event log", key, .. } if key == &format!("{run}/2")),
            "{err:?}"
        );
        raw_put(&store, layout::EVENTS, &layout::event_key(run, 1), None);
        let err = store.read_log(run).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { what: "event log", key, .. } if key == &format!("{run}/1")),
            "{err:?}"
        );
    });
}

#[test]
fn a_damaged_due_index_key_does_not_stop_leasing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open_manual(dir.path());
    runtime().block_on(async {
        let run = RunId::new();
        store.create_run(new_run(run)).await.unwrap();
        raw_put(&store, layout::DUE, b"\x00short", Some(b""));
        let leases = store.lease_due(10, Duration::from_secs(30)).await.unwrap();
        assert_eq!(leases.len(), 1);
        assert_eq!(leases[0].run_id, run);
    });
}

#[test]
fn unknown_runs_are_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open_manual(dir.path());
    runtime().block_on(async {
        let run = RunId::new();
        assert_eq!(store.get_run(run).await.unwrap(), None);
        assert!(matches!(
            store.read_events(run, 0, 10).await,
            Err(StoreError::RunNotFound { .. })
        ));
        assert!(matches!(
            store.list_hooks(run).await,
            Err(StoreError::RunNotFound { .. })
        ));
        assert!(matches!(
            store.append(run, vec![EventData::RunStarted], None).await,
            Err(StoreError::RunNotFound { .. })
        ));
    });
}

#[test]
fn works_outside_a_tokio_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open_manual(dir.path());
    let run = RunId::new();
    futures::executor::block_on(async {
        store.create_run(new_run(run)).await.unwrap();
        store
            .append(run, vec![EventData::RunStarted], None)
            .await
            .unwrap();
        assert_eq!(store.read_log(run).await.unwrap().len(), 2);
        assert_eq!(
            store
                .lease_due(1, Duration::from_secs(1))
                .await
                .unwrap()
                .len(),
            1
        );
    });
}

#[test]
fn notifications_are_published_by_the_time_the_write_returns() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open_manual(dir.path());
    let mut feed = store.subscribe().unwrap();
    runtime().block_on(async {
        let run = RunId::new();
        store.create_run(new_run(run)).await.unwrap();
        let mut seen = Vec::new();
        while let Ok(change) = feed.try_recv() {
            seen.push(change);
        }
        assert!(
            seen.contains(&Change::Appended { run, next_seq: 1 }),
            "{seen:?}"
        );
    });
}

#[test]
fn a_dropped_write_is_still_committed() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open_manual(dir.path());
    let run = RunId::new();
    {
        // Polled once (so it is queued), then dropped.
        let mut write = store.create_run(new_run(run));
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        let _ = write.as_mut().poll(&mut cx);
    }
    drop(store);
    let (store, _) = open_manual(dir.path());
    futures::executor::block_on(async {
        assert_eq!(store.read_log(run).await.unwrap().len(), 1);
    });
}

#[test]
fn renewals_commit_without_fsync_and_persist_with_the_next_commit() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let run = RunId::new();
    let renewed = rt.block_on(async {
        let (store, clock) = open_manual(dir.path());
        store.create_run(new_run(run)).await.unwrap();
        let lease = store
            .lease_due(1, Duration::from_secs(30))
            .await
            .unwrap()
            .remove(0);
        assert_eq!(store.unflushed_commits(), 0, "taking a lease is durable");
        let mut renewed = lease.clone();
        for _ in 0..3 {
            clock.advance(Duration::from_secs(1));
            renewed = store
                .renew_lease(&renewed, Duration::from_secs(30))
                .await
                .unwrap();
        }
        assert_eq!(store.unflushed_commits(), 3, "each renewal alone: no fsync");
        store
            .append(run, vec![EventData::RunStarted], Some(lease.id))
            .await
            .unwrap();
        store.release_lease(&renewed).await.unwrap();
        assert_eq!(
            store.unflushed_commits(),
            3,
            "appends and releases are durable"
        );
        renewed
    });
    rt.block_on(async {
        let (store, _) = open_manual(dir.path());
        let entry = queue_entry(&store, run);
        assert!(
            entry.as_ref().is_none_or(|e| e.lease.is_none()),
            "the release after the renewals persisted: {entry:?} (renewed to {:?})",
            renewed.expires_at
        );
        assert_eq!(store.read_log(run).await.unwrap().len(), 2);
    });
}

#[test]
fn purging_every_run_leaves_every_table_empty() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let (store, clock) = open_manual(dir.path());
        for i in 0..4u32 {
            let run = RunId::new();
            store.create_run(new_run(run)).await.unwrap();
            store
                .append(
                    run,
                    vec![
                        EventData::RunStarted,
                        EventData::HookCreated {
                            hook: cid("hook:0"),
                            token: HookToken::new(format!("purge-{i}")).unwrap(),
                            metadata: None,
                            webhook: None,
                        },
                        EventData::RunCancelled,
                    ],
                    None,
                )
                .await
                .unwrap();
        }
        clock.advance(Duration::from_secs(1));
        let purged = store
            .purge_runs(crate::record::PurgeQuery::ended_before(store.now()))
            .await
            .unwrap();
        assert_eq!(purged.runs.len(), 4);
        for table in crate::kv::Table::ALL {
            assert_eq!(
                keys(&store, layout::def(table)),
                Vec::<Vec<u8>>::new(),
                "table {} after purging",
                table.name()
            );
        }
    });
}

#[test]
fn every_table_has_its_own_slot_in_a_write_transaction() {
    let slots: Vec<usize> = crate::kv::Table::ALL
        .iter()
        .map(|t| transaction::table_slot(*t))
        .collect();
    assert_eq!(slots, (0..crate::kv::Table::ALL.len()).collect::<Vec<_>>());
}
