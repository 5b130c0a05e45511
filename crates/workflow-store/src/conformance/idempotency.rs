//! Idempotency: creating a run twice, creating an operation twice, and
//! finishing a step twice.

use super::{fresh, new_run, payload, step_completed, step_created, Backend};
use crate::error::StoreError;
use crate::event::{ErrorRecord, EventData};
use crate::id::RunId;
use crate::record::NewRun;
use crate::store::Store;

/// Runs the idempotency checks.
pub async fn run<B: Backend>(b: &B) {
    create_run_is_idempotent_on_id(b).await;
    created_once_per_correlation(b).await;
    one_terminal_event_per_step(b).await;
}

/// Same id and input: the existing run; other input: a conflict.
pub async fn create_run_is_idempotent_on_id<B: Backend>(b: &B) {
    let (store, _) = fresh(b).await;
    let id = RunId::new();
    let new = NewRun {
        id,
        workflow: "wf".into(),
        input: payload(&"in"),
    };
    let first = store.create_run(new.clone()).await.expect("create");
    assert!(
        first.created,
        "idempotency: first create_run reported created = false"
    );
    let again = store.create_run(new.clone()).await.expect("create again");
    assert!(
        !again.created,
        "idempotency: repeated create_run reported created = true"
    );
    assert_eq!(
        store.read_log(id).await.expect("log").len(),
        1,
        "idempotency: repeated create_run appended"
    );
    let other_input = NewRun {
        input: payload(&"other"),
        ..new.clone()
    };
    assert!(
        matches!(
            store.create_run(other_input).await,
            Err(StoreError::RunConflict { .. })
        ),
        "idempotency: same id with different input was not RunConflict"
    );
    let other_wf = NewRun {
        workflow: "other".into(),
        ..new
    };
    assert!(
        matches!(
            store.create_run(other_wf).await,
            Err(StoreError::RunConflict { .. })
        ),
        "idempotency: same id with different workflow was not RunConflict"
    );
    let log = store.read_log(id).await.expect("log");
    assert!(matches!(&log[0].data, EventData::RunCreated { workflow, .. } if workflow == "wf"));
}

/// A second `*_created` for one correlation id is refused, whatever its kind.
pub async fn created_once_per_correlation<B: Backend>(b: &B) {
    let (store, _) = fresh(b).await;
    let run = new_run(&store, "wf").await;
    store
        .append(run, vec![step_created("op:0")], None)
        .await
        .expect("append");
    for dup in [
        step_created("op:0"),
        super::hook_created("op:0", "dup-token"),
        super::wait_created("op:0", super::START),
    ] {
        let r = store.append(run, vec![dup.clone()], None).await;
        assert!(
            matches!(r, Err(StoreError::DuplicateCorrelation { .. })),
            "idempotency: duplicate {:?} was not DuplicateCorrelation: {r:?}",
            dup.kind()
        );
    }
    let r = store
        .append(run, vec![step_created("op:1"), step_created("op:1")], None)
        .await;
    assert!(
        matches!(r, Err(StoreError::DuplicateCorrelation { .. })),
        "idempotency: a duplicate within one batch was accepted"
    );
    assert_eq!(
        store.read_log(run).await.expect("log").len(),
        2,
        "idempotency: rejected duplicates were recorded"
    );
}

/// After `step_completed` or `step_failed`, no further event for the step.
pub async fn one_terminal_event_per_step<B: Backend>(b: &B) {
    let (store, _) = fresh(b).await;
    let run = new_run(&store, "wf").await;
    store
        .append(
            run,
            vec![
                step_created("step:0"),
                step_completed("step:0", 1),
                step_created("step:1"),
            ],
            None,
        )
        .await
        .expect("append");
    store
        .append(
            run,
            vec![EventData::StepFailed {
                step: super::cid("step:1"),
                error: ErrorRecord::new("x"),
            }],
            None,
        )
        .await
        .expect("fail step:1");
    for (step, e) in [
        ("step:0", step_completed("step:0", 2)),
        (
            "step:0",
            EventData::StepFailed {
                step: super::cid("step:0"),
                error: ErrorRecord::new("late"),
            },
        ),
        ("step:1", step_completed("step:1", 3)),
        (
            "step:0",
            EventData::StepStarted {
                step: super::cid("step:0"),
                attempt: 2,
            },
        ),
    ] {
        let r = store.append(run, vec![e], None).await;
        assert!(
            matches!(r, Err(StoreError::StepAlreadyTerminal { .. })),
            "idempotency: a second terminal event for {step} was not StepAlreadyTerminal: {r:?}"
        );
    }
    let unknown = store
        .append(run, vec![step_completed("step:9", 1)], None)
        .await;
    assert!(
        matches!(unknown, Err(StoreError::UnknownCorrelation { .. })),
        "idempotency: completing a step never created was not UnknownCorrelation"
    );
}
