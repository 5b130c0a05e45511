//! A tour of the event log on the embedded sled store.
//!
//! Each invocation opens `./workflow-data` (or the directory given as the first
//! argument), starts a run, records a step, creates a hook, resumes it by token,
//! and prints the run's log. Run it twice: the runs of the first invocation are
//! still there, because every acknowledged write was flushed to disk.
//!
//! ```sh
//! cargo run -p workflow-store --example sled_tour
//! ```

use workflow_store::{
    CorrelationId, EventData, HookToken, NewRun, Payload, RunId, RunQuery, SledStore, Store,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "./workflow-data".into());
    let store = SledStore::open(&dir)?;

    let earlier = store.list_runs(RunQuery::default().limit(1000)).await?;
    println!("{dir}: {} run(s) from earlier invocations", earlier.len());

    let run = RunId::new();
    store
        .create_run(NewRun {
            id: run,
            workflow: "approve_order".into(),
            input: Payload::encode(&("order", 42))?,
        })
        .await?;
    let step = CorrelationId::from_parts("step", 0);
    let hook = CorrelationId::from_parts("hook", 1);
    let token = HookToken::new(format!("order:{run}"))?;
    store
        .append(
            run,
            vec![
                EventData::RunStarted,
                EventData::StepCreated {
                    step: step.clone(),
                    name: "notify-reviewer".into(),
                    input_digest: None,
                },
                EventData::StepStarted {
                    step: step.clone(),
                    attempt: 1,
                },
                EventData::StepCompleted {
                    step,
                    result: Payload::encode(&"sent")?,
                },
                EventData::HookCreated {
                    hook,
                    token: token.clone(),
                    metadata: None,
                    webhook: None,
                },
            ],
            None,
        )
        .await?;
    let resumed = store
        .resume_hook(&token, Payload::encode(&"approved")?)
        .await?;
    println!(
        "resumed {token} -> run {} hook {} at seq {}",
        resumed.run_id, resumed.hook, resumed.seq
    );

    for event in store.read_log(run).await? {
        println!(
            "  {:>3}  {:>13}  {}",
            event.seq,
            event.at.as_millis(),
            event.kind()
        );
    }
    Ok(())
}
