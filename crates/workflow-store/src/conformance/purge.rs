//! Retention: [`Store::purge_runs`] deletes ended runs with everything they
//! own, touches nothing else, is idempotent, pages, and is safe while other
//! writers work.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use super::{
    fresh, hook_created, new_run, payload, snapshot, step_completed, step_created, token,
    wait_created, Backend,
};
use crate::error::StoreError;
use crate::event::{ErrorRecord, EventData, Timestamp};
use crate::id::RunId;
use crate::record::{NewRun, PurgeQuery, RunQuery, RunStatus};
use crate::store::Store;

/// Runs the purge checks.
pub async fn run<B: Backend>(b: &B) {
    purged_runs_leave_nothing_behind(b).await;
    only_what_the_query_selects_is_purged(b).await;
    purging_pages_and_is_idempotent(b).await;
    purging_while_writers_work(b).await;
}

/// Appends `events` to `run`, panicking with `what` on failure.
async fn append<S: Store + ?Sized>(store: &S, run: RunId, events: Vec<EventData>, what: &str) {
    store
        .append(run, events, None)
        .await
        .unwrap_or_else(|e| panic!("purge: {what}: {e}"));
}

/// The event that ends a run with `status`.
fn end(status: RunStatus) -> EventData {
    match status {
        RunStatus::Completed => EventData::RunCompleted {
            output: payload(&"done"),
        },
        RunStatus::Failed => EventData::RunFailed {
            error: ErrorRecord::new("boom"),
        },
        _ => EventData::RunCancelled,
    }
}

/// A run of `wf` with a step, a hook (token `tok`) and a timer, ended with `status`.
async fn ended_run<S: Store + ?Sized>(store: &S, wf: &str, tok: &str, status: RunStatus) -> RunId {
    let run = new_run(store, wf).await;
    let at = Timestamp(store.now().as_millis() + 60_000);
    append(
        store,
        run,
        vec![
            EventData::RunStarted,
            step_created("step:0"),
            step_completed("step:0", 7),
            hook_created("hook:1", tok),
            wait_created("wait:2", at),
            end(status),
        ],
        "end a run",
    )
    .await;
    run
}

/// Purges with `query` until done, returning every run purged.
async fn purge_all<S: Store + ?Sized>(store: &S, query: PurgeQuery) -> Vec<RunId> {
    let mut purged = Vec::new();
    let mut q = query;
    loop {
        let page = store.purge_runs(q.clone()).await.expect("purge_runs");
        purged.extend(page.runs);
        match page.next {
            Some(next) => q = q.after(next),
            None => return purged,
        }
    }
}

/// Every listing the store offers, as ids.
async fn listed<S: Store + ?Sized>(store: &S) -> BTreeSet<RunId> {
    let mut ids = BTreeSet::new();
    let mut queries = vec![RunQuery::default().limit(10_000)];
    for s in RunStatus::ALL {
        queries.push(RunQuery::default().status(s).limit(10_000));
        for wf in ["orders", "mail", "live"] {
            queries.push(RunQuery::default().status(s).workflow(wf).limit(10_000));
        }
    }
    for wf in ["orders", "mail", "live"] {
        queries.push(RunQuery::default().workflow(wf).limit(10_000));
    }
    for q in queries {
        for newest_first in [false, true] {
            let mut q = q.clone();
            q.newest_first = newest_first;
            ids.extend(
                store
                    .list_runs(q)
                    .await
                    .expect("list_runs")
                    .iter()
                    .map(|r| r.id),
            );
        }
    }
    ids
}

/// A purged run's record, events, hooks, tokens, operations and index rows
/// are gone; a live run is untouched; the same id can then be created anew.
pub async fn purged_runs_leave_nothing_behind<B: Backend>(b: &B) {
    let (store, clock) = fresh(b).await;
    let done = ended_run(&store, "orders", "purge-a", RunStatus::Completed).await;
    let failed = ended_run(&store, "mail", "purge-b", RunStatus::Failed).await;
    let cancelled = ended_run(&store, "orders", "purge-c", RunStatus::Cancelled).await;
    let live = new_run(&store, "live").await;
    let timer = Timestamp(store.now().as_millis() + 3_600_000);
    append(
        &store,
        live,
        vec![
            EventData::RunStarted,
            hook_created("hook:0", "purge-live"),
            wait_created("wait:1", timer),
        ],
        "start the live run",
    )
    .await;
    let live_before = snapshot(&store, live).await;
    let due_before = store.next_due().await.expect("next_due");
    clock.advance(Duration::from_secs(10));

    let purged = purge_all(&store, PurgeQuery::ended_before(store.now())).await;
    let purged: BTreeSet<RunId> = purged.into_iter().collect();
    assert_eq!(
        purged,
        BTreeSet::from([done, failed, cancelled]),
        "purge: not exactly the ended runs were purged"
    );
    for run in [done, failed, cancelled] {
        assert_eq!(
            store.get_run(run).await.expect("get_run"),
            None,
            "purge: run record left"
        );
        assert!(
            matches!(
                store.read_events(run, 0, 10).await,
                Err(StoreError::RunNotFound { .. })
            ),
            "purge: a purged run's events are still readable"
        );
        assert!(
            matches!(
                store.list_hooks(run).await,
                Err(StoreError::RunNotFound { .. })
            ),
            "purge: a purged run's hooks are still listed"
        );
    }
    for tok in ["purge-a", "purge-b", "purge-c"] {
        assert_eq!(
            store.get_hook(&token(tok)).await.expect("get_hook"),
            None,
            "purge: token left"
        );
    }
    assert_eq!(
        listed(&store).await,
        BTreeSet::from([live]),
        "purge: a purged run is still in an index"
    );
    assert_eq!(
        snapshot(&store, live).await,
        live_before,
        "purge: the live run changed"
    );
    assert_eq!(
        store.next_due().await.expect("next_due"),
        due_before,
        "purge: the queue changed"
    );
    assert!(
        store
            .resume_hook(&token("purge-live"), payload(&1))
            .await
            .is_ok(),
        "purge: the live run's hook no longer resumes"
    );

    // The same id again is a new run: no operation, token or event of the
    // old one is in its way.
    let again = store
        .create_run(NewRun {
            id: done,
            workflow: "other".into(),
            input: payload(&"new"),
        })
        .await
        .expect("create a purged id again");
    assert!(again.created, "purge: a purged id is still taken");
    assert_eq!(again.run.next_seq, 1, "purge: old events under a new run");
    append(
        &store,
        done,
        vec![
            EventData::RunStarted,
            step_created("step:0"),
            hook_created("hook:1", "purge-a"),
        ],
        "reuse the purged run's operation ids and token",
    )
    .await;
    let log = store.read_log(done).await.expect("log");
    assert_eq!(log.len(), 4, "purge: the new run's log");
    assert_eq!(
        log[3].kind(),
        crate::event::EventKind::HookCreated,
        "purge: token still held"
    );
}

/// The cut-off, the workflow and the status decide; running, pending and
/// blocked runs are never purged whatever the query says.
pub async fn only_what_the_query_selects_is_purged<B: Backend>(b: &B) {
    let (store, clock) = fresh(b).await;
    let old_orders = ended_run(&store, "orders", "q-1", RunStatus::Completed).await;
    let old_orders_failed = ended_run(&store, "orders", "q-2", RunStatus::Failed).await;
    let old_mail = ended_run(&store, "mail", "q-3", RunStatus::Completed).await;
    let pending = new_run(&store, "orders").await;
    let blocked = new_run(&store, "orders").await;
    append(
        &store,
        blocked,
        vec![
            EventData::RunStarted,
            EventData::RunBlocked {
                error: ErrorRecord::new("nondeterminism"),
            },
        ],
        "block a run",
    )
    .await;
    clock.advance(Duration::from_secs(60));
    let cutoff = store.now();
    clock.advance(Duration::from_secs(60));
    let recent = ended_run(&store, "orders", "q-4", RunStatus::Completed).await;

    let none = purge_all(
        &store,
        PurgeQuery::ended_before(cutoff).status(RunStatus::Running),
    )
    .await;
    assert!(
        none.is_empty(),
        "purge: a status that is not final purged {none:?}"
    );
    let p = purge_all(
        &store,
        PurgeQuery::ended_before(cutoff)
            .workflow("orders")
            .status(RunStatus::Completed),
    )
    .await;
    assert_eq!(p, vec![old_orders], "purge: workflow and status filter");
    let p = purge_all(&store, PurgeQuery::ended_before(cutoff).workflow("orders")).await;
    assert_eq!(p, vec![old_orders_failed], "purge: workflow filter");
    let p = purge_all(&store, PurgeQuery::ended_before(cutoff)).await;
    assert_eq!(p, vec![old_mail], "purge: cut-off");
    for run in [pending, blocked, recent] {
        assert!(
            store.get_run(run).await.expect("get_run").is_some(),
            "purge: run {run} should have been kept"
        );
    }
    let far_future = Timestamp(store.now().as_millis() + 1_000_000_000);
    let p = purge_all(&store, PurgeQuery::ended_before(far_future)).await;
    assert_eq!(
        p,
        vec![recent],
        "purge: only ended runs, whatever the cut-off"
    );
    for run in [pending, blocked] {
        assert!(
            store.get_run(run).await.expect("get_run").is_some(),
            "purge: a run that has not ended was purged"
        );
    }
}

/// A small `limit` pages through every match with `next`; purging again
/// finds nothing and changes nothing.
pub async fn purging_pages_and_is_idempotent<B: Backend>(b: &B) {
    let (store, clock) = fresh(b).await;
    let mut ended = BTreeSet::new();
    let mut kept = Vec::new();
    for i in 0..9 {
        let status = [
            RunStatus::Completed,
            RunStatus::Failed,
            RunStatus::Cancelled,
        ][i % 3];
        ended.insert(ended_run(&store, "orders", &format!("p-{i}"), status).await);
        let live = new_run(&store, "orders").await;
        append(&store, live, vec![EventData::RunStarted], "start").await;
        kept.push(live);
    }
    clock.advance(Duration::from_secs(1));
    let query = PurgeQuery::ended_before(store.now()).limit(2);
    let first = store.purge_runs(query.clone()).await.expect("purge_runs");
    assert!(
        first.runs.len() <= 2,
        "purge: limit 2 purged {}",
        first.runs.len()
    );
    assert!(
        first.next.is_some(),
        "purge: a full page must say where to go on"
    );
    let rest = purge_all(&store, query.clone()).await;
    let all: BTreeSet<RunId> = first.runs.into_iter().chain(rest).collect();
    assert_eq!(all, ended, "purge: paging missed or invented runs");
    let again = purge_all(&store, query).await;
    assert!(again.is_empty(), "purge: purging twice purged {again:?}");
    for run in kept {
        let log = store.read_log(run).await.expect("kept run's log");
        assert_eq!(log.len(), 2, "purge: a live run's log changed");
    }
}

/// Purging while other tasks write to live runs and end runs: each live
/// run's log is whole, every run that ended before the cut-off is gone, and
/// no write fails because of the purge.
pub async fn purging_while_writers_work<B: Backend>(b: &B) {
    let (store, clock) = fresh(b).await;
    let mut old = BTreeSet::new();
    for i in 0..20 {
        old.insert(ended_run(&store, "orders", &format!("c-{i}"), RunStatus::Completed).await);
    }
    clock.advance(Duration::from_secs(1));
    let cutoff = store.now();
    let store = Arc::new(store);
    let mut writers = Vec::new();
    for w in 0..4 {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let run = new_run(&*store, "live").await;
            append(&*store, run, vec![EventData::RunStarted], "start").await;
            for i in 0..25 {
                let id = format!("step:{i}");
                append(&*store, run, vec![step_created(&id)], "step").await;
                append(&*store, run, vec![step_completed(&id, i)], "step done").await;
            }
            // Half of them end; they ended after the cut-off, so they stay.
            if w % 2 == 0 {
                append(&*store, run, vec![end(RunStatus::Completed)], "end").await;
            }
            run
        }));
    }
    let purger = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut purged = Vec::new();
            for _ in 0..5 {
                purged.extend(purge_all(&*store, PurgeQuery::ended_before(cutoff).limit(3)).await);
                tokio::task::yield_now().await;
            }
            purged
        })
    };
    let mut live = Vec::new();
    for w in writers {
        live.push(w.await.expect("writer task"));
    }
    let purged: BTreeSet<RunId> = purger.await.expect("purger task").into_iter().collect();
    assert_eq!(purged, old, "purge: concurrent purge purged the wrong runs");
    for run in live {
        let log = store.read_log(run).await.expect("live log");
        assert!(
            log.len() >= 52,
            "purge: a concurrent writer's log lost events"
        );
        for (i, e) in log.iter().enumerate() {
            assert_eq!(e.seq, i as u64, "purge: gap in a concurrent writer's log");
        }
    }
}
