//! Concurrency: many tokio tasks writing the same runs and tokens at once.
//! seq stays gapless, nothing is lost or duplicated, a token is never live
//! twice, and a run has one lease holder at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::{fresh, hook_created, new_run, payload, step_created, token, Backend, TTL};
use crate::event::{EventData, EventKind};
use crate::id::RunId;
use crate::store::Store;

/// Runs the concurrency checks.
pub async fn run<B: Backend>(b: &B) {
    concurrent_appends_stay_gapless(b).await;
    concurrent_resumes_lose_nothing(b).await;
    racing_hook_creates_keep_one_owner(b).await;
    racing_leases_are_exclusive(b).await;
}

/// 16 tasks × 25 appends on one run: 400 events, each once, seq gapless.
pub async fn concurrent_appends_stay_gapless<B: Backend>(b: &B) {
    let (store, _) = fresh(b).await;
    let run = new_run(&store, "wf").await;
    let mut tasks = Vec::new();
    for t in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..25 {
                let a = store
                    .append(run, vec![step_created(&format!("step:{t}-{i}"))], None)
                    .await
                    .expect("append");
                seqs.push(a.events[0].seq);
            }
            seqs
        }));
    }
    let mut acked = BTreeSet::new();
    for t in tasks {
        for seq in t.await.expect("task") {
            assert!(
                acked.insert(seq),
                "concurrency: seq {seq} acknowledged twice"
            );
        }
    }
    let log = store.read_log(run).await.expect("log");
    assert_eq!(log.len(), 401, "concurrency: events lost or duplicated");
    let mut ids = BTreeSet::new();
    for (i, e) in log.iter().enumerate() {
        assert_eq!(e.seq, i as u64, "concurrency: seq gap");
        if let Some(c) = e.data.correlation_id() {
            assert!(ids.insert(c.clone()), "concurrency: event recorded twice");
        }
    }
    assert_eq!(
        acked,
        (1..=400).collect(),
        "concurrency: acknowledged seqs differ from the log"
    );
}

/// 8 tasks × 50 `resume_hook` on one token: 400 distinct `hook_received`.
pub async fn concurrent_resumes_lose_nothing<B: Backend>(b: &B) {
    let (store, _) = fresh(b).await;
    let run = new_run(&store, "wf").await;
    store
        .append(run, vec![hook_created("hook:0", "busy")], None)
        .await
        .expect("hook");
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..50 {
                store
                    .append(run, vec![step_created(&format!("step:{i}"))], None)
                    .await
                    .expect("append");
            }
        })
    };
    let mut tasks = Vec::new();
    for t in 0..8u32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..50u32 {
                let r = store
                    .resume_hook(&token("busy"), payload(&(t * 1000 + i)))
                    .await
                    .expect("resume");
                seqs.push((r.seq, t * 1000 + i));
            }
            seqs
        }));
    }
    let mut acked = BTreeMap::new();
    for t in tasks {
        for (seq, p) in t.await.expect("task") {
            assert!(
                acked.insert(seq, p).is_none(),
                "concurrency: two resumes got seq {seq}"
            );
        }
    }
    writer.await.expect("writer");
    let log = store.read_log(run).await.expect("log");
    let mut received = BTreeMap::new();
    for e in &log {
        if let EventData::HookReceived { payload: p, .. } = &e.data {
            let v: u32 = p.decode().expect("payload");
            assert!(received.insert(e.seq, v).is_none());
        }
    }
    assert_eq!(
        received, acked,
        "concurrency: recorded payloads differ from acknowledged ones"
    );
    assert_eq!(log.len(), 2 + 50 + 400, "concurrency: events lost");
    assert!(
        log.iter().enumerate().all(|(i, e)| e.seq == i as u64),
        "concurrency: seq gap"
    );
}

/// 16 runs race to create a hook with one token: exactly one gets it.
pub async fn racing_hook_creates_keep_one_owner<B: Backend>(b: &B) {
    let (store, _) = fresh(b).await;
    for round in 0..5 {
        let tok = format!("race-{round}");
        let mut runs = Vec::new();
        for _ in 0..16 {
            runs.push(new_run(&store, "wf").await);
        }
        let barrier = Arc::new(tokio::sync::Barrier::new(runs.len()));
        let mut tasks = Vec::new();
        for &run in &runs {
            let (store, tok, barrier) = (store.clone(), tok.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let a = store
                    .append(run, vec![hook_created("hook:0", &tok)], None)
                    .await
                    .expect("append");
                (run, a.events[0].kind())
            }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            let (run, kind) = t.await.expect("task");
            match kind {
                EventKind::HookCreated => winners.push(run),
                EventKind::HookConflict => {}
                other => panic!("concurrency: hook_created recorded as {other}"),
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "concurrency: {} runs hold token {tok}",
            winners.len()
        );
        let owner = store
            .get_hook(&token(&tok))
            .await
            .expect("get_hook")
            .expect("owner");
        assert_eq!(
            owner.run_id, winners[0],
            "concurrency: token index disagrees with the winner"
        );
    }
}

/// 8 tasks lease from 40 due runs at once: every run is leased exactly once.
///
/// The tasks start together and each first asks for every run, so they all
/// see the same runs due and then race to lease them. (That a taker who saw a
/// run due after another leased it gets nothing is also checked without a
/// race, on the shared rules: `tests/apply_rules.rs` of this crate.)
pub async fn racing_leases_are_exclusive<B: Backend>(b: &B) {
    let (store, _) = fresh(b).await;
    let mut runs = BTreeSet::new();
    for _ in 0..40 {
        runs.insert(new_run(&store, "wf").await);
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (store, barrier) = (store.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let mut got: Vec<RunId> = Vec::new();
            barrier.wait().await;
            for round in 0..10 {
                let limit = if round == 0 { 40 } else { 3 };
                got.extend(
                    store
                        .lease_due(limit, TTL)
                        .await
                        .expect("lease")
                        .iter()
                        .map(|l| l.run_id),
                );
                tokio::task::yield_now().await;
            }
            got
        }));
    }
    let mut leased = BTreeSet::new();
    for t in tasks {
        for run in t.await.expect("task") {
            assert!(
                leased.insert(run),
                "concurrency: run {run} leased by two holders"
            );
        }
    }
    let rest = store.lease_due(100, TTL).await.expect("lease");
    for l in rest {
        assert!(
            leased.insert(l.run_id),
            "concurrency: run {} leased by two holders",
            l.run_id
        );
    }
    assert_eq!(leased, runs, "concurrency: due runs were not leased");
}
