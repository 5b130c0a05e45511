//! Fault injection: the engine on a store that fails, times out and stalls at
//! random (seeded) surfaces errors, retries where safe, records every step
//! once, and finishes every run once the faults stop.

use std::collections::BTreeMap;
use std::time::Duration;

use workflow_core::{Backoff, Context, Engine, HookOptions, StepError, StepOptions, WorkflowError};
use workflow_store::faults::{FaultConfig, FaultyStore};
use workflow_store::{EventData, EventKind, MemoryStore, RunId, Store};

async fn mixed(ctx: Context, n: u32) -> Result<u32, WorkflowError> {
    let opts = StepOptions::default().max_attempts(4).backoff(Backoff {
        initial: Duration::from_millis(5),
        factor: 2.0,
        max: Duration::from_millis(20),
    });
    let a = ctx
        .step("first", move |_| async move { Ok::<_, StepError>(n) })
        .await?;
    let b = ctx
        .step_with("flaky", opts, move |s| async move {
            if s.attempt() == 1 {
                Err(StepError::retryable("first attempt fails"))
            } else {
                Ok(a + 1)
            }
        })
        .await?;
    ctx.sleep(Duration::from_millis(20)).await?;
    let mut hook = ctx.create_hook::<u32>(HookOptions::token(format!("faulty:{n}")))?;
    let extra = hook.next().await?;
    let c = ctx
        .step(
            "last",
            move |_| async move { Ok::<_, StepError>(b + extra) },
        )
        .await?;
    Ok(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_finishes_every_run_through_store_faults() {
    let inner = MemoryStore::new();
    let store = FaultyStore::new(
        inner.clone(),
        FaultConfig::new(7)
            .fail(0.05)
            .timeout(0.05)
            .delay(0.1, Duration::from_millis(10)),
    );
    let engine = Engine::builder(store.clone())
        .workflow("mixed", mixed)
        .lease_ttl(Duration::from_millis(300))
        .poll_interval(Duration::from_millis(20))
        .build();
    engine.start_workers();
    let mut runs = BTreeMap::new();
    for n in 0..20u32 {
        // Starting can fail too: the caller retries, and start_with_id keeps it idempotent.
        let id = RunId::new();
        let mut attempts = 0;
        while engine.start_with_id(id, "mixed", &n).await.is_err() {
            attempts += 1;
            assert!(attempts < 50, "start kept failing");
        }
        runs.insert(n, id);
    }
    // Resume every hook once it is live. A failed resume is retried by the
    // sender; a resume whose answer was lost may have been recorded, so the
    // sender also stops once the payload shows up in the run's log.
    let sender = {
        let engine = engine.clone();
        let runs = runs.clone();
        let inner = inner.clone();
        tokio::spawn(async move {
            for (n, id) in &runs {
                let token = format!("faulty:{n}");
                loop {
                    if engine.resume_hook(&token, &100u32).await.is_ok() {
                        break;
                    }
                    let log = inner.read_log(*id).await.unwrap();
                    if log.iter().any(|e| e.kind() == EventKind::HookReceived) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let injected = store.injected();
    store.set_enabled(false);
    tokio::time::timeout(Duration::from_secs(30), sender)
        .await
        .expect("every hook was resumed")
        .unwrap();
    for (n, id) in &runs {
        let out: u32 = tokio::time::timeout(Duration::from_secs(30), engine.result(id))
            .await
            .expect("run finished after the faults stopped")
            .unwrap();
        assert_eq!(out, n + 1 + 100);
        let log = inner.read_log(*id).await.unwrap();
        let mut completed: BTreeMap<String, usize> = BTreeMap::new();
        for e in &log {
            if let EventData::StepCompleted { step, .. } = &e.data {
                *completed.entry(step.to_string()).or_default() += 1;
            }
        }
        assert_eq!(completed.len(), 3, "run {n}: {completed:?}");
        assert!(
            completed.values().all(|c| *c == 1),
            "a step was recorded twice: {completed:?}"
        );
        assert_eq!(log.last().unwrap().kind(), EventKind::RunCompleted);
    }
    assert!(injected > 20, "only {injected} faults were injected");
    engine.shutdown().await;
}
