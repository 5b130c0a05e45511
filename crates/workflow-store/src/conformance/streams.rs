//! Durable output streams: only committed attempts are visible, in order,
//! from any index; close and end of run; concurrent writers; durability;
//! purge; fencing and read grants.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{cid, fresh, new_run, payload, skipped, step_created, token, Backend, TTL};
use crate::error::StoreError;
use crate::event::{ErrorRecord, EventData, Payload};
use crate::id::RunId;
use crate::record::{Change, PurgeQuery};
use crate::store::Store;
use crate::stream::{ChunkKey, ChunkWriter, StreamName, StreamWrite, MAX_CHUNK_BYTES};

/// Runs the stream checks.
pub async fn run<B: Backend>(b: &B) {
    retried_attempt_replaces_the_failed_one(b).await;
    failed_step_shows_nothing(b).await;
    indexes_continue_across_steps_and_pages(b).await;
    concurrent_writers_to_different_streams(b).await;
    close_and_end_of_run(b).await;
    acknowledged_chunks_survive_reopen(b).await;
    purge_deletes_streams_with_the_run(b).await;
    fenced_and_checked_writes(b).await;
    grants_count_once_committed(b).await;
}

fn name(s: &str) -> StreamName {
    StreamName::new(s).expect("valid stream name")
}

fn writer(step: &str, attempt: u32) -> ChunkWriter {
    ChunkWriter {
        step: cid(step),
        attempt,
    }
}

/// Writes `values` as chunks `first..` of the attempt's share of `stream`.
async fn write<S: Store + ?Sized>(
    store: &S,
    run: RunId,
    w: &ChunkWriter,
    stream: &str,
    first: u64,
    values: &[u64],
) {
    let chunks = values.iter().map(payload).collect();
    store
        .write_stream(
            run,
            w,
            StreamWrite::chunks(name(stream), first, chunks),
            None,
        )
        .await
        .expect("write_stream");
}

/// Records attempt `attempt` of `step` (creating the step on attempt 1) with
/// a completion, or a retry, or a failure.
async fn record<S: Store + ?Sized>(store: &S, run: RunId, step: &str, attempt: u32, outcome: &str) {
    let mut events = Vec::new();
    if attempt == 1 {
        events.push(step_created(step));
    }
    events.push(EventData::StepStarted {
        step: cid(step),
        attempt,
    });
    events.push(match outcome {
        "completed" => EventData::StepCompleted {
            step: cid(step),
            result: payload(&0u64),
        },
        "retrying" => EventData::StepRetrying {
            step: cid(step),
            error: ErrorRecord::new("boom"),
            retry_at: store.now(),
        },
        _ => EventData::StepFailed {
            step: cid(step),
            error: ErrorRecord::new("boom"),
        },
    });
    store
        .append(run, events, None)
        .await
        .unwrap_or_else(|e| panic!("streams: recording {step} attempt {attempt}: {e}"));
}

/// The committed chunks of `stream` from `from`, decoded, all pages.
async fn read_all<S: Store + ?Sized>(
    store: &S,
    run: RunId,
    stream: &str,
    from: u64,
) -> Option<(Vec<(u64, u64)>, bool)> {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let page = store
            .read_stream(run, &name(stream), next, 100)
            .await
            .expect("read_stream")?;
        let done = page.chunks.is_empty();
        for (i, p) in page.chunks {
            assert_eq!(i, next, "streams: chunk indexes must be consecutive");
            out.push((i, p.decode::<u64>().expect("chunk decodes")));
            next = i + 1;
        }
        if done || next >= page.len {
            return Some((out, page.closed));
        }
    }
}

fn indexed(from: u64, values: &[u64]) -> Vec<(u64, u64)> {
    (from..).zip(values.iter().copied()).collect()
}

/// A step writes 3 chunks, fails, is retried and writes 3 others: only the
/// second attempt's chunks are ever visible, from index 0. Pending chunks are
/// invisible; rewriting a chunk number is idempotent; a settled attempt's
/// late writes are refused.
pub async fn retried_attempt_replaces_the_failed_one<B: Backend>(b: &B) {
    let (store, _) = fresh(b).await;
    let feed = store.subscribe();
    let run = new_run(&store, "wf").await;
    write(&store, run, &writer("s", 1), "progress", 0, &[1, 2, 3]).await;
    assert_eq!(
        store
            .read_stream(run, &name("progress"), 0, 10)
            .await
            .expect("read"),
        None,
        "streams: pending chunks of a running attempt must not be visible"
    );
    assert!(store.list_streams(run).await.expect("list").is_empty());
    record(&store, run, "s", 1, "retrying").await;
    assert_eq!(read_all(&store, run, "progress", 0).await, None);
    let late = store
        .write_stream(
            run,
            &writer("s", 1),
            StreamWrite::chunks(name("progress"), 3, vec![payload(&4u64)]),
            None,
        )
        .await;
    assert!(
        matches!(late, Err(StoreError::InvalidStreamWrite { .. })),
        "streams: a write of a recorded attempt must be refused, got {late:?}"
    );
    write(&store, run, &writer("s", 2), "progress", 0, &[10, 20]).await;
    write(&store, run, &writer("s", 2), "progress", 1, &[20, 30]).await;
    record(&store, run, "s", 2, "completed").await;
    assert_eq!(
        read_all(&store, run, "progress", 0).await,
        Some((indexed(0, &[10, 20, 30]), false)),
        "streams: readers must see exactly the committed attempt's chunks"
    );
    assert_eq!(
        read_all(&store, run, "progress", 2).await,
        Some((indexed(2, &[30]), false))
    );
    assert_eq!(
        read_all(&store, run, "progress", 3).await,
        Some((vec![], false))
    );
    let infos = store.list_streams(run).await.expect("list");
    assert_eq!(infos.len(), 1);
    assert_eq!((infos[0].len, infos[0].closed), (3, false));
    if let Some(mut rx) = feed {
        let mut saw = false;
        while let Ok(c) = rx.try_recv() {
            if matches!(&c, Change::Stream { run: r, len: 3, closed: false, .. } if *r == run) {
                saw = true;
            }
        }
        assert!(saw, "streams: a commit must publish Change::Stream");
    }
}

/// A step that fails for good shows none of its chunks.
pub async fn failed_step_shows_nothing<B: Backend>(b: &B) {
    let (store, _) = fresh(b).await;
    let run = new_run(&store, "wf").await;
    write(&store, run, &writer("s", 1), "out", 0, &[1, 2]).await;
    record(&store, run, "s", 1, "failed").await;
    assert_eq!(read_all(&store, run, "out", 0).await, None);
}

/// Steps committing to one stream continue its indexes in commit order,
/// and reads page through them.
pub async fn indexes_continue_across_steps_and_pages<B: Backend>(b: &B) {
    let (store, _) = fresh(b).await;
    let run = new_run(&store, "wf").await;
    let first: Vec<u64> = (0..150).collect();
    write(&store, run, &writer("a", 1), "log", 0, &first).await;
    write(&store, run, &writer("b", 1), "log", 0, &[1000, 1001]).await;
    // `b` completes first: its chunks come first.
    record(&store, run, "b", 1, "completed").await;
    record(&store, run, "a", 1, "completed").await;
    let mut want = vec![1000, 1001];
    want.extend(&first);
    assert_eq!(
        read_all(&store, run, "log", 0).await,
        Some((indexed(0, &want), false))
    );
    let page = store
        .read_stream(run, &name("log"), 140, 5)
        .await
        .expect("read")
        .expect("stream");
    assert_eq!(
        page.chunks.len(),
        5,
        "streams: a page holds at most `limit` chunks"
    );
    assert_eq!(page.chunks[0].0, 140);
    assert_eq!(page.len, 152);
}

/// Many tasks write to their own streams of one run at once; each stream
/// ends up with exactly its writer's chunks, in order.
pub async fn concurrent_writers_to_different_streams<B: Backend>(b: &B) {
    let (store, _) = fresh(b).await;
    let run = new_run(&store, "wf").await;
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let w = writer(&format!("step-{t}"), 1);
            for n in 0..20u64 {
                write(&store, run, &w, &format!("s{t}"), n, &[t * 100 + n]).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer task");
    }
    for t in 0..8u64 {
        record(&store, run, &format!("step-{t}"), 1, "completed").await;
    }
    for t in 0..8u64 {
        let want: Vec<u64> = (0..20).map(|n| t * 100 + n).collect();
        assert_eq!(
            read_all(&store, run, &format!("s{t}"), 0).await,
            Some((indexed(0, &want), false)),
            "streams: stream s{t} after concurrent writes"
        );
    }
}

/// `close` takes effect with its attempt; a run that ends closes its streams
/// and discards pending chunks; an ended run takes no writes.
pub async fn close_and_end_of_run<B: Backend>(b: &B) {
    let (store, _) = fresh(b).await;
    let run = new_run(&store, "wf").await;
    let mut w = StreamWrite::chunks(name("done"), 0, vec![payload(&1u64)]);
    w.close = true;
    store
        .write_stream(run, &writer("a", 1), w, None)
        .await
        .expect("write and close");
    assert_eq!(read_all(&store, run, "done", 0).await, None);
    record(&store, run, "a", 1, "completed").await;
    assert_eq!(
        read_all(&store, run, "done", 0).await,
        Some((indexed(0, &[1]), true)),
        "streams: a committed close must be visible"
    );
    // A later step's chunks for a closed stream are dropped at commit.
    write(&store, run, &writer("b", 1), "done", 0, &[2]).await;
    write(&store, run, &writer("b", 1), "open", 0, &[7]).await;
    record(&store, run, "b", 1, "completed").await;
    assert_eq!(
        read_all(&store, run, "done", 0).await,
        Some((indexed(0, &[1]), true))
    );
    write(&store, run, &writer("c", 1), "open", 0, &[8]).await;
    write(&store, run, &writer("c", 1), "never", 0, &[9]).await;
    store
        .append(
            run,
            vec![EventData::RunCompleted {
                output: payload(&()),
            }],
            None,
        )
        .await
        .expect("run_completed");
    assert_eq!(
        read_all(&store, run, "open", 0).await,
        Some((indexed(0, &[7]), true)),
        "streams: a run that ends closes its streams; pending chunks are discarded"
    );
    assert_eq!(read_all(&store, run, "never", 0).await, None);
    let after = store
        .write_stream(
            run,
            &writer("d", 1),
            StreamWrite::chunks(name("open"), 0, vec![payload(&1u64)]),
            None,
        )
        .await;
    assert!(
        matches!(after, Err(StoreError::RunTerminal { .. })),
        "{after:?}"
    );
}

/// Committed chunks and pending ones (committed after the reopen) survive a
/// reopen.
pub async fn acknowledged_chunks_survive_reopen<B: Backend>(b: &B) {
    let (store, clock) = fresh(b).await;
    let run = new_run(&store, "wf").await;
    write(&store, run, &writer("a", 1), "p", 0, &[1, 2]).await;
    record(&store, run, "a", 1, "completed").await;
    write(&store, run, &writer("b", 1), "p", 0, &[3]).await;
    let Some(reopened) = b.reopen(store, clock).await else {
        skipped(
            "streams::acknowledged_chunks_survive_reopen",
            "the backend keeps nothing across a reopen",
        );
        return;
    };
    let store = reopened.expect("reopen");
    assert_eq!(
        read_all(&store, run, "p", 0).await,
        Some((indexed(0, &[1, 2]), false))
    );
    record(&store, run, "b", 1, "completed").await;
    assert_eq!(
        read_all(&store, run, "p", 0).await,
        Some((indexed(0, &[1, 2, 3]), false)),
        "streams: an acknowledged pending chunk must survive a reopen"
    );
}

/// Purging a run deletes its streams and chunks, committed or pending.
pub async fn purge_deletes_streams_with_the_run<B: Backend>(b: &B) {
    let (store, _) = fresh(b).await;
    let run = new_run(&store, "purged").await;
    let kept = new_run(&store, "kept").await;
    for r in [run, kept] {
        write(&store, r, &writer("a", 1), "p", 0, &[1, 2]).await;
        record(&store, r, "a", 1, "completed").await;
        write(&store, r, &writer("b", 1), "p", 0, &[3]).await;
        store
            .append(
                r,
                vec![EventData::RunFailed {
                    error: ErrorRecord::new("x"),
                }],
                None,
            )
            .await
            .expect("run_failed");
    }
    let query = PurgeQuery::ended_before(store.now().saturating_add(Duration::from_secs(1)))
        .workflow("purged");
    let purged = store.purge_runs(query).await.expect("purge_runs");
    assert_eq!(purged.runs, vec![run], "streams: the run must be purged");
    assert_eq!(
        store
            .read_stream(run, &name("p"), 0, 10)
            .await
            .expect("read"),
        None
    );
    assert!(store.list_streams(run).await.expect("list").is_empty());
    let rows = store
        .read_chunks(
            run,
            &[ChunkKey {
                stream: name("p"),
                writer: writer("a", 1),
                n: 0,
            }],
        )
        .await
        .expect("read_chunks");
    assert!(
        rows[0].is_none(),
        "streams: purge must delete the chunk rows"
    );
    assert_eq!(
        read_all(&store, kept, "p", 0).await,
        Some((indexed(0, &[1, 2]), true)),
        "streams: purging a run must not touch another run's streams"
    );
}

/// Writes are fenced by the lease, refused once the step is recorded, and
/// checked for size.
pub async fn fenced_and_checked_writes<B: Backend>(b: &B) {
    let (store, _) = fresh(b).await;
    let run = new_run(&store, "wf").await;
    let lease = store
        .lease_due(10, TTL)
        .await
        .expect("lease_due")
        .into_iter()
        .find(|l| l.run_id == run)
        .expect("the new run is due");
    store
        .write_stream(
            run,
            &writer("a", 1),
            StreamWrite::chunks(name("p"), 0, vec![payload(&1u64)]),
            Some(lease.id),
        )
        .await
        .expect("a write under the lease");
    let stale = store
        .write_stream(
            run,
            &writer("a", 1),
            StreamWrite::chunks(name("p"), 1, vec![payload(&2u64)]),
            Some(crate::id::LeaseId::new()),
        )
        .await;
    assert!(
        matches!(stale, Err(StoreError::LeaseLost { .. })),
        "{stale:?}"
    );
    let big = store
        .write_stream(
            run,
            &writer("a", 1),
            StreamWrite::chunks(
                name("p"),
                1,
                vec![Payload::from(vec![0u8; MAX_CHUNK_BYTES + 1])],
            ),
            None,
        )
        .await;
    assert!(
        matches!(big, Err(StoreError::InvalidStreamWrite { .. })),
        "{big:?}"
    );
    record(&store, run, "a", 1, "completed").await;
    let after = store
        .write_stream(
            run,
            &writer("a", 2),
            StreamWrite::chunks(name("p"), 0, vec![payload(&1u64)]),
            None,
        )
        .await;
    assert!(
        matches!(after, Err(StoreError::InvalidStreamWrite { .. })),
        "streams: a completed step takes no more chunks, got {after:?}"
    );
    assert_eq!(
        read_all(&store, run, "p", 0).await,
        Some((indexed(0, &[1]), false))
    );
}

/// A read grant makes the stream known and readable with that token once
/// its attempt is committed, not before, and not with another token.
pub async fn grants_count_once_committed<B: Backend>(b: &B) {
    let (store, _) = fresh(b).await;
    let run = new_run(&store, "wf").await;
    let mut w = StreamWrite::chunks(name("p"), 0, vec![]);
    w.grant = Some(token("secret-1"));
    store
        .write_stream(run, &writer("g", 1), w, None)
        .await
        .expect("grant");
    let readable = |t: &'static str| {
        let store = store.clone();
        async move {
            store
                .stream_readable_with(run, &name("p"), &token(t))
                .await
                .expect("stream_readable_with")
        }
    };
    assert!(
        !readable("secret-1").await,
        "streams: a pending grant must not count"
    );
    record(&store, run, "g", 1, "completed").await;
    assert!(readable("secret-1").await);
    assert!(!readable("secret-2").await);
    let page = store
        .read_stream(run, &name("p"), 0, 10)
        .await
        .expect("read")
        .expect("a granted stream is known, even without chunks");
    assert_eq!((page.len, page.closed), (0, false));
    let names: BTreeMap<_, _> = store
        .list_streams(run)
        .await
        .expect("list")
        .into_iter()
        .map(|i| (i.name.to_string(), i.len))
        .collect();
    assert_eq!(names, BTreeMap::from([("p".to_string(), 0)]));
}
