//! Ordering: `seq` is gapless from 0, reads return log order, paging is
//! consistent, and timestamps never go backwards within a run.

use std::time::Duration;

use super::{fresh, new_run, step_created, Backend};
use crate::event::{EventData, Timestamp};
use crate::store::Store;

/// Runs the ordering checks.
pub async fn run<B: Backend>(b: &B) {
    seq_is_gapless_and_paging_agrees(b).await;
    timestamps_never_go_backwards(b).await;
}

/// Many appends of various sizes: seq 0..n, pages concatenate to the log.
pub async fn seq_is_gapless_and_paging_agrees<B: Backend>(b: &B) {
    let (store, _) = fresh(b).await;
    let run = new_run(&store, "ordering").await;
    let other = new_run(&store, "ordering").await;
    let mut n = 0;
    for batch in 0..40usize {
        let events: Vec<EventData> = (0..(batch % 4) + 1)
            .map(|_| {
                n += 1;
                step_created(&format!("step:{n}"))
            })
            .collect();
        store.append(run, events, None).await.expect("append");
        store
            .append(other, vec![step_created(&format!("step:{batch}"))], None)
            .await
            .expect("append other");
    }
    let log = store.read_log(run).await.expect("read_log");
    assert_eq!(log.len(), n + 1, "ordering: log length");
    for (i, e) in log.iter().enumerate() {
        assert_eq!(
            e.seq, i as u64,
            "ordering: seq gap or reordering at position {i}"
        );
    }
    for (i, e) in log.iter().enumerate().skip(1) {
        assert_eq!(
            e.data,
            step_created(&format!("step:{i}")),
            "ordering: event {i} out of log order"
        );
    }
    for page in [1usize, 3, 7, 64] {
        let mut joined = Vec::new();
        loop {
            let got = store
                .read_events(run, joined.len() as u64, page)
                .await
                .expect("read_events");
            assert!(
                got.len() <= page,
                "ordering: read_events returned more than limit"
            );
            if got.is_empty() {
                break;
            }
            joined.extend(got);
        }
        assert_eq!(
            joined, log,
            "ordering: pages of {page} do not concatenate to the log"
        );
    }
    let past_end = store
        .read_events(run, log.len() as u64 + 5, 10)
        .await
        .expect("read past end");
    assert!(
        past_end.is_empty(),
        "ordering: reading past the end returned events"
    );
    let run_rec = store
        .get_run(run)
        .await
        .expect("get_run")
        .expect("run exists");
    assert_eq!(
        run_rec.next_seq,
        log.len() as u64,
        "ordering: next_seq disagrees with the log"
    );
}

/// Timestamps come from the clock, and stay monotonic when the clock steps back.
pub async fn timestamps_never_go_backwards<B: Backend>(b: &B) {
    let (store, clock) = fresh(b).await;
    let run = new_run(&store, "clock").await;
    clock.advance(Duration::from_secs(10));
    let a = store
        .append(run, vec![EventData::RunStarted], None)
        .await
        .expect("append");
    assert_eq!(
        a.events[0].at,
        Timestamp(super::START.0 + 10_000),
        "ordering: timestamp is not the store clock's"
    );
    clock.set(super::START);
    let b2 = store
        .append(run, vec![step_created("step:0")], None)
        .await
        .expect("append");
    assert!(
        b2.events[0].at >= a.events[0].at,
        "ordering: timestamp went backwards with the clock"
    );
    let log = store.read_log(run).await.expect("read_log");
    assert!(
        log.windows(2).all(|w| w[0].at <= w[1].at),
        "ordering: timestamps not monotonic in the log"
    );
}
