//! The code of docs/testing.md, run: an order workflow with a three-day
//! approval timeout and a mocked charge step, tested on the virtual clock of
//! `workflow::testing`. The last test checks that the page shows exactly this
//! code.

mod guide;

// --- guide: begin ---
use std::time::Duration;

use futures::FutureExt;
use serde::{Deserialize, Serialize};
use workflow::testing::{AttemptOutcome, Operation, StepMock, TestEngine};
use workflow::{Context, HookOptions, StepError, StepOptions, WorkflowError, WorkflowRef};

#[derive(Serialize, Deserialize)]
struct Order {
    id: u64,
    amount_cents: u64,
}

#[derive(Serialize, Deserialize)]
struct Decision {
    approved: bool,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum OrderOutcome {
    Charged { receipt: String },
    Rejected,
    Expired,
}

const ORDER: WorkflowRef<Order, OrderOutcome> = WorkflowRef::new("order");
const APPROVAL_TIMEOUT: Duration = Duration::from_secs(3 * 24 * 3600);

/// Waits up to three days for a reviewer's decision, then charges the card.
async fn order(ctx: Context, order: Order) -> Result<OrderOutcome, WorkflowError> {
    let token = format!("order:{}:approval", order.id);
    let mut approval = ctx.create_hook::<Decision>(HookOptions::token(token))?;
    let timeout = ctx.sleep(APPROVAL_TIMEOUT);
    let decision = futures::select_biased! {
        decision = approval.next().fuse() => decision?,
        expired = timeout.fuse() => {
            expired?;
            return Ok(OrderOutcome::Expired);
        }
    };
    if !decision.approved {
        return Ok(OrderOutcome::Rejected);
    }
    let receipt = ctx
        .step_with(
            "charge",
            StepOptions::default().max_attempts(5),
            async |s| charge_card(order.amount_cents, &s.idempotency_key()).await,
        )
        .await?;
    Ok(OrderOutcome::Charged { receipt })
}

/// The payment provider's API: never called from the tests below.
async fn charge_card(amount_cents: u64, idempotency_key: &str) -> Result<String, StepError> {
    Err(StepError::fatal(format!(
        "no payment provider here (charge of {amount_cents} with key {idempotency_key})"
    )))
}

/// The workflow on a test engine, with the charge step mocked: its first
/// attempt times out, the second returns a receipt.
fn test_engine() -> TestEngine {
    TestEngine::builder()
        .workflow(ORDER, order)
        .mock_step(
            "charge",
            StepMock::returns("receipt-42").fail_on(1, StepError::retryable("gateway timeout")),
        )
        .build()
}

#[tokio::test]
async fn an_approved_order_is_charged() -> Result<(), Box<dyn std::error::Error>> {
    let env = test_engine();
    let run = env
        .start(
            ORDER,
            &Order {
                id: 42,
                amount_cents: 1999,
            },
        )
        .await?;

    env.advance(Duration::from_secs(24 * 3600)).await?; // the reviewer takes a day
    env.resume_hook("order:42:approval", &Decision { approved: true })
        .await?;

    let receipt = "receipt-42".to_string();
    assert_eq!(run.result().await?, OrderOutcome::Charged { receipt });
    let history = run.history().await?;
    history.assert_operations(&[
        Operation::hook("order:42:approval"),
        Operation::sleep(APPROVAL_TIMEOUT),
        Operation::step("charge"),
    ]);
    let attempts = history.step_attempts("charge");
    assert!(matches!(
        attempts[0].outcome,
        AttemptOutcome::Retrying { .. }
    ));
    assert_eq!(attempts[1].outcome, AttemptOutcome::Completed);
    // The code replays its own history: no nondeterminism.
    run.replay_check().await?;
    Ok(())
}

#[tokio::test]
async fn an_order_nobody_approves_expires_after_three_days(
) -> Result<(), Box<dyn std::error::Error>> {
    let env = test_engine();
    let run = env
        .start(
            ORDER,
            &Order {
                id: 7,
                amount_cents: 500,
            },
        )
        .await?;

    // Three days of waiting, in milliseconds: time skips to the timeout.
    assert_eq!(run.result().await?, OrderOutcome::Expired);
    assert_eq!(env.elapsed(), APPROVAL_TIMEOUT);
    assert!(run.history().await?.step_attempts("charge").is_empty());
    Ok(())
}
// --- guide: end ---

#[test]
fn the_guide_shows_this_code() {
    guide::assert_page_shows_marked_code(
        "docs/testing.md",
        include_str!("../docs/testing.md"),
        include_str!("testing_guide.rs"),
    );
}
