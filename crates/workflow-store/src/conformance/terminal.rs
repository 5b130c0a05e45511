//! Terminal runs: after `run_completed`, `run_failed` or `run_cancelled`,
//! nothing but reads is accepted.

use super::{fresh, hook_created, new_run, payload, step_created, token, Backend};
use crate::error::StoreError;
use crate::event::{ErrorRecord, EventData};
use crate::record::{RunQuery, RunStatus};
use crate::store::Store;

/// Runs the terminal-run checks.
pub async fn run<B: Backend>(b: &B) {
    ended_runs_refuse_writes(b).await;
}

/// Each way of ending refuses appends, resumes and wake-ups, and keeps reads.
pub async fn ended_runs_refuse_writes<B: Backend>(b: &B) {
    for (end, status) in [
        (
            EventData::RunCompleted {
                output: payload(&"out"),
            },
            RunStatus::Completed,
        ),
        (
            EventData::RunFailed {
                error: ErrorRecord::new("boom"),
            },
            RunStatus::Failed,
        ),
        (EventData::RunCancelled, RunStatus::Cancelled),
    ] {
        let (store, _) = fresh(b).await;
        let run = new_run(&store, "wf").await;
        store
            .append(
                run,
                vec![
                    EventData::RunStarted,
                    hook_created("hook:0", "term"),
                    end.clone(),
                ],
                None,
            )
            .await
            .expect("end the run");
        let rec = store.get_run(run).await.expect("get_run").expect("run");
        assert_eq!(
            rec.status,
            status,
            "terminal: wrong status after {:?}",
            end.kind()
        );
        if let EventData::RunFailed { error } = &end {
            assert_eq!(
                rec.error.as_ref(),
                Some(error),
                "terminal: failed run lost its error"
            );
        }
        let len = store.read_log(run).await.expect("log").len();
        for e in [step_created("step:1"), EventData::RunStarted, end.clone()] {
            let r = store.append(run, vec![e], None).await;
            assert!(
                matches!(r, Err(StoreError::RunTerminal { .. })),
                "terminal: ended run accepted an event: {r:?}"
            );
        }
        let empty = store.append(run, vec![], None).await;
        assert!(
            matches!(empty, Err(StoreError::RunTerminal { .. })),
            "terminal: empty append to ended run: {empty:?}"
        );
        let r = store.resume_hook(&token("term"), payload(&1)).await;
        assert!(
            matches!(r, Err(StoreError::HookNotFound { .. })),
            "terminal: ended run's hook resumed: {r:?}"
        );
        let w = store.wake(run).await;
        assert!(
            matches!(w, Err(StoreError::RunTerminal { .. })),
            "terminal: ended run woken: {w:?}"
        );
        assert_eq!(
            store.read_log(run).await.expect("log").len(),
            len,
            "terminal: refused writes changed the log"
        );
        let listed = store
            .list_runs(RunQuery {
                status: Some(status),
                ..RunQuery::default()
            })
            .await
            .expect("list");
        assert_eq!(
            listed.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![run],
            "terminal: list by status"
        );
        let leased = store.lease_due(10, super::TTL).await.expect("lease");
        assert!(leased.is_empty(), "terminal: an ended run is still queued");
    }
}
