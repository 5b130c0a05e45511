//! Tests of what is specific to sled: indexes, group commit, opening.
//! The behaviour every store shares is in the conformance suite.

use std::sync::Arc;
use std::time::Duration;

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

fn open_manual(dir: &Path) -> (SledStore, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    let store = SledStore::open_with(SledConfig::new(dir).clock(clock.clone())).unwrap();
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

fn keys(store: &SledStore, tree: &str) -> Vec<Vec<u8>> {
    store
        .raw_db()
        .open_tree(tree)
        .unwrap()
        .iter()
        .keys()
        .map(|k| k.unwrap().to_vec())
        .collect()
}

fn queue_entry(store: &SledStore, run: RunId) -> Option<QueueEntry> {
    let tree = store.raw_db().open_tree(layout::QUEUE).unwrap();
    tree.get(layout::run_key(run))
        .unwrap()
        .map(|b| codec::decode_record(&b).unwrap())
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
fn concurrent_writers_share_transactions_and_flushes() {
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
    let commit = &store.inner.commit;
    let writes = writers * (rounds + 1);
    assert_eq!(commit.jobs(), writes);
    assert!(
        commit.batches() < writes,
        "{} commits (transaction + flush) for {writes} concurrent writes: none was shared",
        commit.batches()
    );
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
    rt.block_on(async {
        let (store, _) = open_manual(dir.path());
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
        SledStore::open_with(SledConfig::new(dir.path()).lock_wait(Duration::from_millis(50)))
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
        let meta = store.raw_db().open_tree(layout::META).unwrap();
        meta.insert(
            layout::LAYOUT_VERSION_KEY,
            codec::encode_record(&(layout::LAYOUT_VERSION + 1)).unwrap(),
        )
        .unwrap();
        store.raw_db().flush().unwrap();
    }
    let err = SledStore::open(dir.path()).unwrap_err();
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
        let events = store.raw_db().open_tree(layout::EVENTS).unwrap();
        events
            .insert(layout::event_key(damaged, 1), &[0xCE, 1, 0xFF][..])
            .unwrap();
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
fn a_damaged_due_index_key_does_not_stop_leasing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open_manual(dir.path());
    runtime().block_on(async {
        let run = RunId::new();
        store.create_run(new_run(run)).await.unwrap();
        let due = store.raw_db().open_tree(layout::DUE).unwrap();
        due.insert(&[0u8; 3][..], &[][..]).unwrap();
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
        assert!(matches!(
            store.read_events(run, 0, 10).await,
            Err(StoreError::RunNotFound { .. })
        ));
        assert!(matches!(
            store.list_hooks(run).await,
            Err(StoreError::RunNotFound { .. })
        ));
        assert_eq!(store.get_run(run).await.unwrap(), None);
    });
}

#[test]
fn a_directory_released_meanwhile_opens_within_the_lock_wait() {
    let dir = tempfile::tempdir().unwrap();
    let (held, _) = open_manual(dir.path());
    let closer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        drop(held);
    });
    SledStore::open_with(SledConfig::new(dir.path()).lock_wait(Duration::from_secs(10))).unwrap();
    closer.join().unwrap();
}

#[test]
fn fsync_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open_with(SledConfig::new(dir.path()).fsync(false)).unwrap();
    assert!(store.inner.data_file.is_none());
    let run = RunId::new();
    runtime().block_on(async {
        store.create_run(new_run(run)).await.unwrap();
    });
    drop(store);
    let (store, _) = open_manual(dir.path());
    assert!(store.inner.data_file.is_some());
    runtime().block_on(async {
        assert_eq!(store.read_log(run).await.unwrap().len(), 1);
    });
}

#[test]
fn a_leader_whose_runtime_is_gone_still_commits() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open_manual(dir.path());
    let rt = runtime();
    let handle = rt.handle().clone();
    rt.shutdown_background();
    // The store finds a runtime, but its blocking pool drops the leader's task
    // unrun: the leader must lead anyway, or the write would wait forever.
    let _entered = handle.enter();
    let run = RunId::new();
    futures::executor::block_on(store.create_run(new_run(run))).unwrap();
    drop(_entered);
    assert!(futures::executor::block_on(store.get_run(run))
        .unwrap()
        .is_some());
}

#[test]
fn works_outside_a_tokio_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open_manual(dir.path());
    let run = RunId::new();
    futures::executor::block_on(async {
        store.create_run(new_run(run)).await.unwrap();
        assert_eq!(store.read_log(run).await.unwrap().len(), 1);
    });
}

#[test]
fn notifications_are_published_after_the_write() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open_manual(dir.path());
    runtime().block_on(async {
        let mut feed = store.subscribe().unwrap();
        let run = RunId::new();
        store.create_run(new_run(run)).await.unwrap();
        assert_eq!(
            feed.recv().await.unwrap(),
            Change::Appended { run, next_seq: 1 }
        );
        assert_eq!(feed.recv().await.unwrap(), Change::Due { run, at: T0 });
    });
}

/// A commit stopped between its transaction (sled shows its writes from
/// there) and its flush: readers of what it wrote see it only once it is
/// durable, readers of other runs are not held up.
#[test]
fn readers_see_a_write_only_once_it_is_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open_manual(dir.path());
    runtime().block_on(async {
        let (run, other) = (RunId::new(), RunId::new());
        for r in [run, other] {
            store.create_run(new_run(r)).await.unwrap();
        }
        let mut waiting = store.inner.gate.waiting.subscribe();
        store.inner.gate.pause.arm();
        let writer = tokio::spawn({
            let store = store.clone();
            async move {
                let output = Payload::encode(&"done").unwrap();
                store
                    .append(run, vec![EventData::RunCompleted { output }], None)
                    .await
            }
        });
        let paused = store.clone();
        tokio::task::spawn_blocking(move || paused.inner.gate.pause.wait_paused())
            .await
            .unwrap();

        // Committed, not flushed. (The timeouts only turn a hang into a failure.)
        let hang = Duration::from_secs(60);
        let rec = tokio::time::timeout(hang, store.get_run(other))
            .await
            .expect("a read of another run waited for the flush")
            .unwrap()
            .unwrap();
        assert_eq!(rec.status, RunStatus::Pending);

        // Each reader says whether it saw the completion, and whether the
        // commit had been let go on to its flush when the read returned.
        let readers = tokio::spawn({
            let store = store.clone();
            async move {
                let released = || store.inner.gate.pause.released();
                let completed = RunStatus::Completed;
                tokio::join!(
                    async {
                        let rec = store.get_run(run).await.unwrap().unwrap();
                        ("get_run", rec.status == completed, released())
                    },
                    async {
                        let log = store.read_log(run).await.unwrap();
                        ("read_events", log.len() == 2, released())
                    },
                    async {
                        let runs = store.list_runs(RunQuery::default()).await.unwrap();
                        let seen = runs.iter().any(|r| r.id == run && r.status == completed);
                        ("list_runs", seen, released())
                    },
                )
            }
        });
        let mut readers = readers;
        let readers = tokio::select! {
            r = waiting.wait_for(|n| *n >= 3) => {
                r.unwrap();
                store.inner.gate.pause.release();
                (&mut readers).await.unwrap()
            }
            // Only if a reader did not wait: the checks below fail.
            r = &mut readers => r.unwrap(),
        };
        store.inner.gate.pause.release();
        let (a, b, c) = readers;
        for (read, saw_write, after_release) in [a, b, c] {
            assert!(
                after_release,
                "{read} returned (seeing the write: {saw_write}) before the write was flushed"
            );
            assert!(saw_write, "{read} did not see the acknowledged write");
        }
        let appended = tokio::time::timeout(hang, writer)
            .await
            .expect("the writer was never acknowledged")
            .unwrap()
            .unwrap();
        assert_eq!(appended.run.status, RunStatus::Completed);
    });
}

/// Runs written in nearly every batch, read all the while: readers are
/// overtaken by batches again and again (and fall back to holding the next
/// batch off), yet nobody hangs and no read goes back in time.
#[test]
fn busy_runs_are_read_while_they_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open_manual(dir.path());
    runtime().block_on(async {
        let runs: Vec<RunId> = (0..3).map(|_| RunId::new()).collect();
        for &run in &runs {
            store.create_run(new_run(run)).await.unwrap();
        }
        let mut tasks = Vec::new();
        for w in 0..6 {
            let (store, run) = (store.clone(), runs[w % runs.len()]);
            tasks.push(tokio::spawn(async move {
                for i in 0..60 {
                    let step = cid(&format!("step:{w}-{i}"));
                    let created = EventData::StepCreated {
                        step,
                        name: "s".into(),
                        input_digest: None,
                    };
                    store.append(run, vec![created], None).await.unwrap();
                }
            }));
        }
        for r in 0..6 {
            let (store, run) = (store.clone(), runs[r % runs.len()]);
            tasks.push(tokio::spawn(async move {
                let mut seen = 0;
                for _ in 0..60 {
                    let rec = store.get_run(run).await.unwrap().unwrap();
                    assert!(rec.next_seq >= seen, "a read went back in time");
                    seen = rec.next_seq;
                    let log = store.read_log(run).await.unwrap();
                    assert!(log.len() as u64 >= seen, "read_events is behind get_run");
                    store.next_due().await.unwrap();
                    store.list_runs(RunQuery::default()).await.unwrap();
                }
            }));
        }
        let all = futures::future::try_join_all(tasks);
        tokio::time::timeout(Duration::from_secs(120), all)
            .await
            .expect("readers and writers hung")
            .unwrap();
    });
}

fn damaged_parts(e: StoreError) -> (String, String) {
    match e {
        StoreError::Damaged { location, detail } => (location, detail),
        other => panic!("expected StoreError::Damaged, got {other:?}"),
    }
}

/// A panic inside sled during a read (simulated: the read panics where sled
/// would) is a typed error; from then on writes are refused, reads go on, and
/// a reopened store writes again.
#[test]
fn a_panic_in_a_read_is_damaged_and_stops_writes_until_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let run = RunId::new();
    let (store, _) = open_manual(dir.path());
    rt.block_on(async {
        store.create_run(new_run(run)).await.unwrap();
        let r = store
            .blocking(
                "reading events",
                Some(format!("run {run}")),
                |_| -> Result<(), StoreError> {
                    panic!("index out of bounds: the len is 0 but the index is 3")
                },
            )
            .await;
        let (location, detail) = damaged_parts(r.unwrap_err());
        assert!(
            location.contains(&dir.path().display().to_string()),
            "{location}"
        );
        assert!(location.contains(&run.to_string()), "{location}");
        assert!(detail.contains("index out of bounds"), "{detail}");
        assert!(format!("{store:?}").contains("refuses_writes: true"));

        let e = store
            .append(run, vec![EventData::RunStarted], None)
            .await
            .unwrap_err();
        let (_, detail) = damaged_parts(e);
        assert!(detail.contains("refuses writes"), "{detail}");
        assert!(detail.contains("reading events"), "{detail}");
        damaged_parts(store.create_run(new_run(RunId::new())).await.unwrap_err());
        damaged_parts(
            store
                .lease_due(10, Duration::from_secs(30))
                .await
                .unwrap_err(),
        );
        // Reads go on.
        assert_eq!(store.read_log(run).await.unwrap().len(), 1);
        assert!(store.get_run(run).await.unwrap().is_some());
    });
    drop(store);
    let (store, _) = open_manual(dir.path());
    rt.block_on(async {
        store
            .append(run, vec![EventData::RunStarted], None)
            .await
            .unwrap();
        assert_eq!(store.read_log(run).await.unwrap().len(), 2);
    });
}

#[test]
fn a_panic_in_a_read_outside_a_runtime_is_damaged_too() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open_manual(dir.path());
    let r = futures::executor::block_on(store.blocking(
        "listing runs",
        None,
        |_| -> Result<(), StoreError> { panic!("sled broke") },
    ));
    let (_, detail) = damaged_parts(r.unwrap_err());
    assert!(detail.contains("sled broke"), "{detail}");
    let e = futures::executor::block_on(store.create_run(new_run(RunId::new()))).unwrap_err();
    damaged_parts(e);
}

/// A panic in the group commit (simulated: a write panics inside sled's
/// transaction) fails the writes of its batch with a typed error saying they
/// may or may not be recorded, and stops later writes.
#[test]
fn a_panic_in_a_commit_fails_its_batch_and_stops_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open_manual(dir.path());
    let run = RunId::new();
    runtime().block_on(async {
        store.create_run(new_run(run)).await.unwrap();
        let r = store
            .write(|_st| -> Result<(), StoreError> { panic!("segment accounting broke") })
            .await;
        let (location, detail) = damaged_parts(r.unwrap_err());
        assert!(
            location.contains(&dir.path().display().to_string()),
            "{location}"
        );
        assert!(detail.contains("segment accounting broke"), "{detail}");
        assert!(
            detail.contains("may or may not have been recorded"),
            "{detail}"
        );
        let (_, detail) = damaged_parts(
            store
                .append(run, vec![EventData::RunStarted], None)
                .await
                .unwrap_err(),
        );
        assert!(detail.contains("committing writes"), "{detail}");
        assert_eq!(store.read_log(run).await.unwrap().len(), 1);
    });
}

#[test]
fn open_errors_carry_sleds_message_and_the_path() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where the directory should be.
    let path = dir.path().join("not-a-directory");
    std::fs::write(&path, b"hello").unwrap();
    let e = SledStore::open(&path).unwrap_err();
    let text = e.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("IO error"), "sled's message is kept: {text}");

    // A damaged `conf` file (`key: value` lines): sled finds it corrupted.
    let store_dir = dir.path().join("store");
    drop(SledStore::open(&store_dir).unwrap());
    let conf = store_dir.join("conf");
    let mut bytes = std::fs::read(&conf).unwrap();
    let colon = bytes.iter().position(|&b| b == b':').unwrap();
    bytes[colon + 1] = b'_';
    std::fs::write(&conf, bytes).unwrap();
    let e = SledStore::open(&store_dir).unwrap_err();
    let text = e.to_string();
    assert!(text.contains(&store_dir.display().to_string()), "{text}");
    let (location, detail) = damaged_parts(e);
    assert!(location.contains("sled database"), "{location}");
    assert!(detail.contains("corrupted"), "{detail}");
}

#[test]
fn without_fsync_a_background_thread_of_the_store_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open_with(
        SledConfig::new(dir.path())
            .fsync(false)
            .background_flush(Some(Duration::from_millis(5))),
    )
    .unwrap();
    assert!(store.inner._background.is_some());
    let run = RunId::new();
    runtime().block_on(async {
        store.create_run(new_run(run)).await.unwrap();
    });
    std::thread::sleep(Duration::from_millis(30));
    drop(store);
    let (store, _) = open_manual(dir.path());
    assert!(store.inner._background.is_none(), "fsync on: no thread");
    runtime().block_on(async {
        assert_eq!(store.read_log(run).await.unwrap().len(), 1);
    });
}

/// A log with a hole, or one that ends before its run's record says, is
/// damage (sled does not always keep its transactions whole when its files
/// are damaged): a typed error naming the run and seq, not a short log.
#[test]
fn a_log_that_disagrees_with_its_record_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open_manual(dir.path());
    let (holed, cut) = (RunId::new(), RunId::new());
    runtime().block_on(async {
        for run in [holed, cut] {
            store.create_run(new_run(run)).await.unwrap();
            store
                .append(run, vec![EventData::RunStarted], None)
                .await
                .unwrap();
            store
                .append(
                    run,
                    vec![EventData::StepCreated {
                        step: cid("step:0"),
                        name: "s".into(),
                        input_digest: None,
                    }],
                    None,
                )
                .await
                .unwrap();
        }
        let events = store.raw_db().open_tree(layout::EVENTS).unwrap();
        events.remove(layout::event_key(holed, 1)).unwrap();
        events.remove(layout::event_key(cut, 2)).unwrap();

        match store.read_log(holed).await {
            Err(StoreError::Corrupt { what, key, source }) => {
                assert_eq!(what, "event log");
                assert_eq!(key, format!("{holed}/1"));
                assert!(
                    source.to_string().contains("event 1 is missing"),
                    "{source}"
                );
            }
            other => panic!("expected a corrupt event log, got {other:?}"),
        }
        match store.read_log(cut).await {
            Err(StoreError::Corrupt { what, key, source }) => {
                assert_eq!(what, "event log");
                assert_eq!(key, format!("{cut}/2"));
                assert!(source.to_string().contains("counts 3 events"), "{source}");
            }
            other => panic!("expected a corrupt event log, got {other:?}"),
        }
        // What is there before the damage still reads.
        assert_eq!(store.read_events(cut, 0, 2).await.unwrap().len(), 2);
        assert_eq!(store.read_events(holed, 0, 1).await.unwrap().len(), 1);
        assert!(store.read_events(cut, 5, 10).await.unwrap().is_empty());
    });
}

/// Every tree of run data (all but `meta`).
const DATA_TREES: [&str; 9] = [
    layout::RUNS,
    layout::EVENTS,
    layout::OPS,
    layout::TOKENS,
    layout::RUN_HOOKS,
    layout::QUEUE,
    layout::DUE,
    layout::STATUS,
    layout::WORKFLOWS,
];

#[test]
fn purging_every_run_leaves_every_tree_empty() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let (store, clock) = open_manual(dir.path());
        for i in 0..5u32 {
            let run = RunId::new();
            store.create_run(new_run(run)).await.unwrap();
            let token = HookToken::new(format!("purge-tok-{i}")).unwrap();
            store
                .append(
                    run,
                    vec![
                        EventData::RunStarted,
                        EventData::StepCreated {
                            step: cid("step:0"),
                            name: "charge".into(),
                            input_digest: None,
                        },
                        EventData::StepRetrying {
                            step: cid("step:0"),
                            error: crate::event::ErrorRecord::new("later"),
                            retry_at: Timestamp(T0.0 + 1000),
                        },
                        EventData::HookCreated {
                            hook: cid("hook:1"),
                            token,
                            metadata: None,
                            webhook: None,
                        },
                        EventData::WaitCreated {
                            wait: cid("wait:2"),
                            resume_at: Timestamp(T0.0 + 5000),
                        },
                    ],
                    None,
                )
                .await
                .unwrap();
            let lease = store.lease_due(10, Duration::from_secs(30)).await.unwrap();
            for l in &lease {
                store.release_lease(l).await.unwrap();
            }
            store
                .append(run, vec![EventData::RunCancelled], None)
                .await
                .unwrap();
        }
        for tree in [
            layout::RUNS,
            layout::EVENTS,
            layout::OPS,
            layout::RUN_HOOKS,
            layout::STATUS,
            layout::WORKFLOWS,
        ] {
            assert!(
                !keys(&store, tree).is_empty(),
                "{tree} empty before purging"
            );
        }
        clock.advance(Duration::from_secs(1));
        let purged = store
            .purge_runs(crate::record::PurgeQuery::ended_before(store.now()))
            .await
            .unwrap();
        assert_eq!(purged.runs.len(), 5);
        for tree in DATA_TREES {
            assert_eq!(
                keys(&store, tree),
                Vec::<Vec<u8>>::new(),
                "tree {tree} after purging"
            );
        }
    });
}

#[test]
fn a_layout_1_store_gets_its_workflow_index_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let run = RunId::new();
    rt.block_on(async {
        let (store, _) = open_manual(dir.path());
        store.create_run(new_run(run)).await.unwrap();
        // What a layout-1 store looks like: no workflow index, version 1.
        store.raw_db().drop_tree(layout::WORKFLOWS).unwrap();
        store
            .raw_db()
            .open_tree(layout::META)
            .unwrap()
            .insert(
                layout::LAYOUT_VERSION_KEY,
                codec::encode_record(&1u64).unwrap(),
            )
            .unwrap();
        store.raw_db().flush().unwrap();
    });
    rt.block_on(async {
        let (store, _) = open_manual(dir.path());
        let listed = store
            .list_runs(
                RunQuery::default()
                    .workflow("wf")
                    .status(RunStatus::Pending),
            )
            .await
            .unwrap();
        assert_eq!(listed.iter().map(|r| r.id).collect::<Vec<_>>(), vec![run]);
        let listed = store
            .list_runs(RunQuery::default().workflow("wf"))
            .await
            .unwrap();
        assert_eq!(listed.len(), 1);
        let meta = store.raw_db().open_tree(layout::META).unwrap();
        let version: u64 =
            codec::decode_record(&meta.get(layout::LAYOUT_VERSION_KEY).unwrap().unwrap()).unwrap();
        assert_eq!(version, u64::from(layout::LAYOUT_VERSION));
    });
}

#[test]
fn a_large_payload_is_in_the_synced_log_when_acknowledged_and_in_a_synced_blob_after_a_checkpoint()
{
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let run = RunId::new();
    // 1 MiB, the webhook body limit: far above sled's blob threshold.
    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let payload = Payload::encode(&serde_bytes_like(&big)).unwrap();
    rt.block_on(async {
        let (store, _) = open_manual(dir.path());
        store.create_run(new_run(run)).await.unwrap();
        assert_eq!(store.inner.blobs_synced(), 0);
        store
            .append(
                run,
                vec![EventData::StepCreated {
                    step: cid("step:0"),
                    name: "upload".into(),
                    input_digest: None,
                }],
                None,
            )
            .await
            .unwrap();
        store
            .append(
                run,
                vec![EventData::StepCompleted {
                    step: cid("step:0"),
                    result: payload.clone(),
                }],
                None,
            )
            .await
            .unwrap();
        // Acknowledged: the payload is in the write-ahead log, synced.
        let logged = std::fs::metadata(dir.path().join(crate::wal::WAL_FILE))
            .unwrap()
            .len();
        assert!(logged > 1024 * 1024, "the log holds {logged} bytes");
        assert_eq!(
            store.inner.syncs.load(std::sync::atomic::Ordering::Relaxed),
            3,
            "one synced record per acknowledged write"
        );
        // A checkpoint syncs sled's blob file before it empties the log.
        {
            let mut wal = store.inner.wal.lock().unwrap();
            store.inner.checkpoint(&mut wal).unwrap();
            assert_eq!(wal.len(), 0);
        }
        let blobs = std::fs::read_dir(dir.path().join("blobs")).unwrap().count();
        assert!(blobs >= 1, "sled wrote no blob file for 1 MiB");
        assert!(
            store.inner.blobs_synced() >= 1,
            "the blob file was not synced before the log was emptied"
        );
        // Nothing new: the next checkpoint syncs no blob.
        let before = store.inner.blobs_synced();
        store.wake(run).await.unwrap();
        {
            let mut wal = store.inner.wal.lock().unwrap();
            store.inner.checkpoint(&mut wal).unwrap();
        }
        assert_eq!(store.inner.blobs_synced(), before);
    });
    rt.block_on(async {
        let (store, _) = open_manual(dir.path());
        let log = store.read_log(run).await.unwrap();
        match &log[2].data {
            EventData::StepCompleted { result, .. } => assert_eq!(result, &payload),
            other => panic!("expected the completed step, got {other:?}"),
        }
    });
}

/// Bytes as a serde byte string (CBOR bytes, not an array of numbers).
fn serde_bytes_like(b: &[u8]) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(b)
}

#[test]
fn without_fsync_no_blob_is_synced() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open_with(SledConfig::new(dir.path()).fsync(false)).unwrap();
    assert!(store.inner.blobs.is_none());
    assert_eq!(store.inner.blobs_synced(), 0);
}

#[test]
fn renewals_are_not_synced_and_become_durable_with_the_next_sync() {
    use std::sync::atomic::Ordering;
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
        let syncs = store.inner.syncs.load(Ordering::Relaxed);
        let mut renewed = lease.clone();
        for _ in 0..5 {
            clock.advance(Duration::from_secs(1));
            renewed = store
                .renew_lease(&renewed, Duration::from_secs(30))
                .await
                .unwrap();
        }
        assert_eq!(
            store.inner.syncs.load(Ordering::Relaxed),
            syncs,
            "a renewal was synced"
        );
        assert_eq!(
            queue_entry(&store, run).unwrap().lease.unwrap().expires_at,
            renewed.expires_at
        );
        // Any synced write after it carries it to disk.
        store
            .append(run, vec![EventData::RunStarted], Some(lease.id))
            .await
            .unwrap();
        assert_eq!(store.inner.syncs.load(Ordering::Relaxed), syncs + 1);
        renewed
    });
    rt.block_on(async {
        let (store, _) = open_manual(dir.path());
        let held = queue_entry(&store, run).unwrap().lease.unwrap();
        assert_eq!(held.expires_at, renewed.expires_at);
    });
}
