//! The typed API: workflows registered and started through a `WorkflowRef`,
//! their results typed, names still accepted, duplicate names refused, and
//! step closures that borrow the workflow's locals (async closures) without
//! cloning them.

mod support;

use serde::{Deserialize, Serialize};
use workflow_core::{Context, EngineError, StepError, WorkflowError, WorkflowRef};
use workflow_store::MemoryStore;

/// Deliberately not `Clone`: the steps below borrow it.
#[derive(Debug, Serialize, Deserialize)]
struct Order {
    id: u64,
    lines: Vec<u64>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Receipt {
    order: u64,
    total: u64,
    keys: Vec<String>,
}

const CHECKOUT: WorkflowRef<Order, Receipt> = WorkflowRef::new("checkout");
const ECHO: WorkflowRef<String, String> = WorkflowRef::new("echo");

async fn charge(order: &Order, key: &str) -> Result<String, std::io::Error> {
    Ok(format!("{}:{key}", order.id))
}

async fn checkout(ctx: Context, order: Order) -> Result<Receipt, WorkflowError> {
    // Async closures borrowing `order`: no clone per attempt.
    let total = ctx
        .step("total", async |_| {
            Ok::<_, StepError>(order.lines.iter().sum::<u64>())
        })
        .await?;
    let mut keys = Vec::new();
    for i in 0..2 {
        let key = ctx
            .step("charge", async |s| {
                let k = format!("{}#{i}", s.idempotency_key());
                Ok::<_, StepError>(charge(&order, &k).await?)
            })
            .await?;
        keys.push(key);
    }
    Ok(Receipt {
        order: order.id,
        total,
        keys,
    })
}

async fn echo(_: Context, s: String) -> Result<String, WorkflowError> {
    Ok(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_start_and_result_and_borrowing_steps() {
    let engine = support::engine(MemoryStore::new(), |b| {
        b.workflow(CHECKOUT, checkout).workflow(ECHO, echo)
    });
    let run = engine
        .start(
            CHECKOUT,
            &Order {
                id: 7,
                lines: vec![1, 2, 3],
            },
        )
        .await
        .unwrap();
    let receipt = run.result().await.unwrap();
    assert_eq!(receipt.order, 7);
    assert_eq!(receipt.total, 6);
    assert_eq!(receipt.keys.len(), 2);
    assert!(receipt.keys[0].starts_with(&format!("7:{}", run.id())));

    // By name: the id, and a result typed at the call site.
    let id = engine.start("echo", &"hi").await.unwrap();
    assert_eq!(engine.result::<String>(&id).await.unwrap(), "hi");

    // Found again by id, typed; a run of another workflow is refused.
    let again = engine.run_handle(ECHO, id).await.unwrap();
    assert_eq!(again.result().await.unwrap(), "hi");
    match engine.run_handle(ECHO, run.id()).await {
        Err(EngineError::WrongWorkflow {
            expected, found, ..
        }) => assert_eq!((expected.as_str(), found.as_str()), ("echo", "checkout")),
        other => panic!("expected WrongWorkflow, got {other:?}"),
    }
    engine.shutdown().await;
}

#[test]
#[should_panic(expected = "workflow \"echo\" is registered twice")]
fn registering_one_name_twice_is_refused() {
    let _ = workflow_core::Engine::builder(MemoryStore::new())
        .workflow(ECHO, echo)
        .workflow("echo", echo);
}
