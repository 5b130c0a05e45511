//! Retention through the engine: `Engine::purge_runs` deletes ended runs
//! older than the cut-off, leaves the rest, and a purged run is gone.

mod support;

use std::time::Duration;

use workflow_core::{Context, EngineError, PurgeOptions, StepError, WorkflowError};
use workflow_store::{MemoryStore, RunStatus, Store};

async fn quick(ctx: Context, n: u32) -> Result<u32, WorkflowError> {
    let doubled = ctx
        .step("double", |_| async move { Ok::<_, StepError>(n * 2) })
        .await?;
    if n == 0 {
        return Err(WorkflowError::fatal("zero"));
    }
    Ok(doubled)
}

async fn waiting(ctx: Context, _: ()) -> Result<(), WorkflowError> {
    ctx.sleep(Duration::from_secs(3600)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_deletes_old_ended_runs_and_keeps_the_rest() {
    let store = MemoryStore::new();
    let engine = support::engine(store.clone(), |b| {
        b.workflow("quick", quick).workflow("waiting", waiting)
    });
    let mut done = Vec::new();
    for n in 1..=5u32 {
        let run = engine.start("quick", &n).await.unwrap();
        assert_eq!(engine.result::<u32>(&run).await.unwrap(), n * 2);
        done.push(run);
    }
    let failed = engine.start("quick", &0u32).await.unwrap();
    assert!(engine.result::<u32>(&failed).await.is_err());
    let live = engine.start("waiting", &()).await.unwrap();

    // Nothing is old enough yet.
    let an_hour = PurgeOptions::older_than(Duration::from_secs(3600));
    assert_eq!(engine.purge_runs(&an_hour).await.unwrap(), 0);

    tokio::time::sleep(Duration::from_millis(20)).await;
    let now = PurgeOptions::older_than(Duration::ZERO);
    // Only completed runs of `quick`: the failed one stays.
    let completed = now.clone().workflow("quick").status(RunStatus::Completed);
    assert_eq!(engine.purge_runs(&completed).await.unwrap(), 5);
    for run in &done {
        assert!(matches!(
            engine.result::<u32>(run).await,
            Err(EngineError::RunNotFound { .. })
        ));
    }
    assert_eq!(
        store.get_run(failed).await.unwrap().unwrap().status,
        RunStatus::Failed
    );
    // Everything ended; the waiting run has not.
    assert_eq!(engine.purge_runs(&now).await.unwrap(), 1);
    assert_eq!(engine.purge_runs(&now).await.unwrap(), 0, "idempotent");
    let rec = store.get_run(live).await.unwrap().unwrap();
    assert!(!rec.status.is_terminal());
    engine.shutdown().await;
}
