//! Listing by query: [`Store::list_runs`] filters by status and workflow,
//! orders oldest or newest first, and pages with a cursor, without missing
//! or repeating a run.

use std::collections::BTreeMap;

use super::{fresh, new_run, payload, Backend};
use crate::event::{ErrorRecord, EventData};
use crate::id::RunId;
use crate::record::{RunQuery, RunRecord, RunStatus};
use crate::store::Store;

/// Runs the listing checks.
pub async fn run<B: Backend>(b: &B) {
    every_query_pages_like_the_model(b).await;
}

/// Moves `run` to `status` (runs start pending).
async fn put_status<S: Store + ?Sized>(store: &S, run: RunId, status: RunStatus) {
    let events = match status {
        RunStatus::Pending => return,
        RunStatus::Running => vec![EventData::RunStarted],
        RunStatus::Blocked => vec![
            EventData::RunStarted,
            EventData::RunBlocked {
                error: ErrorRecord::new("changed code"),
            },
        ],
        RunStatus::Completed => vec![EventData::RunCompleted {
            output: payload(&1),
        }],
        RunStatus::Failed => vec![EventData::RunFailed {
            error: ErrorRecord::new("boom"),
        }],
        _ => vec![EventData::RunCancelled],
    };
    store
        .append(run, events, None)
        .await
        .unwrap_or_else(|e| panic!("listing: could not move {run} to {status}: {e}"));
}

/// Every combination of status, workflow and order, paged with several
/// page sizes, returns exactly the model's runs in the model's order; a
/// status change moves a run between the status listings.
pub async fn every_query_pages_like_the_model<B: Backend>(b: &B) {
    let (store, _) = fresh(b).await;
    let workflows = ["orders", "mail", "orders-2"];
    let mut model: BTreeMap<RunId, (String, RunStatus)> = BTreeMap::new();
    let mut first_pending = None;
    for i in 0..36usize {
        let wf = workflows[i % 3];
        let status = RunStatus::ALL[(i / 3) % 6];
        let run = new_run(&store, wf).await;
        put_status(&store, run, status).await;
        model.insert(run, (wf.to_string(), status));
        first_pending = first_pending.or((status == RunStatus::Pending).then_some(run));
    }
    // One run changes status after it was indexed as pending.
    let moved = first_pending.expect("a pending run");
    put_status(&store, moved, RunStatus::Running).await;
    if let Some(entry) = model.get_mut(&moved) {
        entry.1 = RunStatus::Running;
    }

    let mut statuses: Vec<Option<RunStatus>> = vec![None];
    statuses.extend(RunStatus::ALL.map(Some));
    let mut wfs: Vec<Option<&str>> = vec![None, Some("nobody")];
    wfs.extend(workflows.map(Some));
    for status in &statuses {
        for wf in &wfs {
            for newest_first in [false, true] {
                let mut want: Vec<RunId> = model
                    .iter()
                    .filter(|(_, (w, s))| {
                        status.is_none_or(|q| *s == q) && wf.is_none_or(|q| w == q)
                    })
                    .map(|(id, _)| *id)
                    .collect();
                if newest_first {
                    want.reverse();
                }
                for page in [1, 5, 100] {
                    let mut q = RunQuery::default().status(*status).limit(page);
                    q.workflow = wf.map(str::to_string);
                    q.newest_first = newest_first;
                    let got = page_all(&store, q).await;
                    let ids: Vec<RunId> = got.iter().map(|r| r.id).collect();
                    assert_eq!(
                        ids, want,
                        "listing: status {status:?}, workflow {wf:?}, newest first \
                         {newest_first}, page {page}"
                    );
                    for r in got {
                        let (w, s) = &model[&r.id];
                        assert!(
                            &r.workflow == w && r.status == *s,
                            "listing: record of {} is stale",
                            r.id
                        );
                    }
                }
            }
        }
    }
    let empty = store
        .list_runs(RunQuery::default().limit(0))
        .await
        .expect("list_runs");
    assert!(empty.is_empty(), "listing: limit 0 returned runs");
}

/// Every page of `q`, following the cursor, concatenated.
async fn page_all<S: Store + ?Sized>(store: &S, q: RunQuery) -> Vec<RunRecord> {
    let mut out: Vec<RunRecord> = Vec::new();
    let mut q = q;
    loop {
        let page = store.list_runs(q.clone()).await.expect("list_runs");
        assert!(
            page.len() <= q.limit,
            "listing: a page longer than its limit"
        );
        let done = page.len() < q.limit;
        out.extend(page);
        if done || out.len() > 10_000 {
            return out;
        }
        q = q.after(out.last().map(|r| r.id));
    }
}
