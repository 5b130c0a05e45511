//! The example workflows `workflow serve` runs, chosen to show the library's
//! range: a webhook answered by the workflow itself, a stream of messages on
//! one hook, a flaky step with retries and a durable sleep, a report
//! that streams its progress, and an order that starts a child workflow per
//! shipment and waits for them all.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use workflow_core::{
    Backoff, Context, EngineBuilder, HookOptions, StepError, StepOptions, WebhookOptions,
    WorkflowError, WorkflowRef,
};

/// The names of the workflows [`register`] adds.
pub const NAMES: [&str; 6] = [
    "approve_order",
    "chat",
    "flaky_job",
    "report",
    "ship_order",
    "shipment",
];

/// The order workflow: one `shipment` child per parcel.
pub const SHIP_ORDER: WorkflowRef<ShipOrder, Vec<String>> = WorkflowRef::new("ship_order");

/// The child workflow of [`SHIP_ORDER`]: one parcel.
pub const SHIPMENT: WorkflowRef<Shipment, String> = WorkflowRef::new("shipment");

/// Registers the example workflows on an engine builder.
pub fn register(builder: EngineBuilder) -> EngineBuilder {
    builder
        .workflow("approve_order", approve_order)
        .workflow("chat", chat)
        .workflow("flaky_job", flaky_job)
        .workflow("report", report)
        .workflow(SHIP_ORDER, ship_order)
        .workflow(SHIPMENT, shipment)
}

/// Input of `ship_order`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShipOrder {
    /// Order number.
    pub id: u64,
    /// One entry per parcel: where it goes.
    pub parcels: Vec<String>,
}

/// Input of `shipment`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Shipment {
    /// The order the parcel belongs to.
    pub order: u64,
    /// The parcel's position in the order.
    pub parcel: u32,
    /// Where it goes.
    pub to: String,
}

/// Reserves stock, starts a `shipment` child run per parcel (each visible
/// on its own in the dashboard, linked to this run), and waits for all of
/// them: the order holds no task while its parcels travel.
pub async fn ship_order(ctx: Context, order: ShipOrder) -> Result<Vec<String>, WorkflowError> {
    let parcels = order.parcels.len();
    ctx.step("reserve stock", move |_| async move {
        Ok::<_, StepError>(format!("reserved {parcels} parcel(s)"))
    })
    .await?;
    let mut children = Vec::new();
    for (i, to) in order.parcels.iter().enumerate() {
        let parcel = u32::try_from(i).unwrap_or(u32::MAX);
        let input = Shipment {
            order: order.id,
            parcel,
            to: to.clone(),
        };
        children.push(ctx.start_child(SHIPMENT, &input)?);
    }
    let mut tracking = Vec::new();
    for child in children {
        tracking.push(child.await?);
    }
    Ok(tracking)
}

/// Books a carrier, waits (durably) for the pickup, and returns a tracking number.
pub async fn shipment(ctx: Context, s: Shipment) -> Result<String, WorkflowError> {
    let to = s.to.clone();
    ctx.step("book carrier", move |_| {
        let to = to.clone();
        async move { Ok::<_, StepError>(format!("carrier booked to {to}")) }
    })
    .await?;
    ctx.sleep(Duration::from_millis(200)).await?;
    let label = format!("TRK-{}-{}", s.order, s.parcel);
    let tracking: String = ctx
        .step("hand over", move |_| {
            let label = label.clone();
            async move { Ok::<_, StepError>(label) }
        })
        .await?;
    Ok(tracking)
}

/// Input of `approve_order`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    /// Order number; the webhook token is `order:{id}`.
    pub id: u64,
    /// Amount to charge, in cents.
    pub amount_cents: u64,
}

/// The body a reviewer posts to the order's webhook.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Decision {
    /// Whether the order is approved.
    pub approved: bool,
}

fn json_response(status: u16, body: serde_json::Value) -> http::Response<Bytes> {
    let mut r = http::Response::new(Bytes::from(body.to_string()));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// Waits for a reviewer's decision on a manual webhook and answers the
/// reviewer's request itself; then waits a little (durably) and charges.
pub async fn approve_order(ctx: Context, order: Order) -> Result<String, WorkflowError> {
    let mut webhook = ctx.create_webhook(
        WebhookOptions::token(format!("order:{}", order.id))
            .metadata(&order.id)
            .manual(Duration::from_secs(30)),
    )?;
    let path = webhook.path();
    ctx.step("notify-reviewer", async |_| {
        tracing::info!("order waits for a reviewer: POST {path} with {{\"approved\": true}}");
        Ok::<_, StepError>(path.clone())
    })
    .await?;
    let decision = loop {
        let request = webhook.next().await?;
        match serde_json::from_slice::<Decision>(&request.body) {
            Ok(d) => {
                let status = if d.approved { "approved" } else { "rejected" };
                request.respond(json_response(
                    200,
                    serde_json::json!({ "order": order.id, "status": status }),
                ));
                break d;
            }
            Err(e) => request.respond(json_response(
                400,
                serde_json::json!({ "error": format!("expected {{\"approved\": bool}}: {e}") }),
            )),
        }
    };
    webhook.dispose();
    if !decision.approved {
        return Err(WorkflowError::fatal(format!(
            "order {} was rejected",
            order.id
        )));
    }
    ctx.sleep(Duration::from_secs(2)).await?;
    ctx.step("charge", async |s| {
        Ok::<_, StepError>(format!(
            "charged {} cents (idempotency key {})",
            order.amount_cents,
            s.idempotency_key()
        ))
    })
    .await
}

/// Input of `chat`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Room {
    /// Room name; the token is `chat:{room}`.
    pub room: String,
}

/// Collects messages sent to the hook `chat:{room}` (with `workflow resume`
/// or `Engine::resume_hook`) until one is "stop"; the hook is a stream.
pub async fn chat(ctx: Context, room: Room) -> Result<Vec<String>, WorkflowError> {
    let mut messages =
        ctx.create_hook::<String>(HookOptions::token(format!("chat:{}", room.room)))?;
    let mut transcript = Vec::new();
    while let Some(message) = StreamExt::next(&mut messages).await {
        let text = message?;
        if text == "stop" {
            break;
        }
        transcript.push(text);
    }
    Ok(transcript)
}

/// Input of `flaky_job`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    /// How many attempts of the first step fail before one succeeds.
    pub fail_times: u32,
    /// How long the job sleeps (durably) between its steps, in milliseconds.
    pub sleep_ms: u64,
}

/// A step that fails `fail_times` times (retried with backoff), a durable
/// sleep, and a final step.
pub async fn flaky_job(ctx: Context, job: Job) -> Result<String, WorkflowError> {
    let options = StepOptions::default()
        .max_attempts(job.fail_times + 1)
        .backoff(Backoff {
            initial: Duration::from_millis(200),
            factor: 2.0,
            max: Duration::from_secs(5),
        });
    let fail_times = job.fail_times;
    let attempts = ctx
        .step_with("flaky-call", options, move |s| async move {
            if s.attempt() <= fail_times {
                Err(StepError::retryable(format!(
                    "attempt {} failed",
                    s.attempt()
                )))
            } else {
                Ok(s.attempt())
            }
        })
        .await?;
    ctx.sleep(Duration::from_millis(job.sleep_ms)).await?;
    let done = ctx
        .step("finish", |_| async {
            Ok::<_, StepError>("done".to_string())
        })
        .await?;
    Ok(format!("{done} after {attempts} attempt(s)"))
}

/// Input of `report`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// How many items to process (one step each).
    pub items: u32,
    /// How long each item takes, in milliseconds.
    #[serde(default)]
    pub item_ms: u64,
}

/// One chunk of `report`'s `progress` stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Items done so far.
    pub done: u32,
    /// Items in all.
    pub of: u32,
}

/// Processes `items` items, one step each, and streams a [`Progress`] chunk
/// per item to its `progress` stream (`workflow tail RUN progress`; over
/// HTTP with the read token it returns, or records at once in its
/// `stream_token` step). The stream closes with the run.
pub async fn report(ctx: Context, report: Report) -> Result<String, WorkflowError> {
    let token = ctx.stream_token("progress").await?;
    for i in 0..report.items {
        let (of, pause) = (report.items, Duration::from_millis(report.item_ms));
        ctx.step("item", move |s| async move {
            tokio::time::sleep(pause).await;
            s.stream::<Progress>("progress")?
                .write(&Progress { done: i + 1, of })
                .await?;
            Ok::<_, StepError>(())
        })
        .await?;
    }
    Ok(format!(
        "processed {} item(s); progress read token {token}",
        report.items
    ))
}
