//! A workflow waiting on a webhook, served by warp.
//!
//! ```sh
//! cargo run -p workflow-http --example warp_webhook --features warp
//! # then, in another terminal, the printed command:
//! curl -i -X POST http://127.0.0.1:PORT/.well-known/workflow/v1/webhook/order%3A42 -d '{"paid":true}'
//! ```
//!
//! The server listens on 127.0.0.1 only (port from `PORT`, default a free one).

use std::time::Duration;

use bytes::Bytes;
use warp::Filter;
use workflow_core::{Context, Engine, WebhookOptions, WorkflowError};
use workflow_store::MemoryStore;

/// Waits for one request on the webhook `order:{id}` and answers it itself.
async fn await_payment(ctx: Context, id: u32) -> Result<String, WorkflowError> {
    let mut webhook = ctx.create_webhook(
        WebhookOptions::token(format!("order:{id}")).manual(Duration::from_secs(10)),
    )?;
    let request = webhook.next().await?;
    let answer = format!("order {id}: received {} bytes\n", request.body.len());
    request.respond(
        http::Response::builder()
            .status(200)
            .body(Bytes::from(answer))
            .map_err(WorkflowError::fatal)?,
    );
    Ok(format!(
        "{} {} with body {:?}",
        request.method,
        request.uri,
        request.text().unwrap_or("<binary>")
    ))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let engine = Engine::builder(MemoryStore::new())
        .workflow("await-payment", await_payment)
        .build();
    engine.start_workers();

    let port = std::env::var("PORT").unwrap_or_else(|_| "0".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    let addr = listener.local_addr()?;
    let home = warp::path::end().map(|| "webhook example\n");
    let routes = workflow_http::warp::webhook(engine.clone()).or(home);
    tokio::spawn(warp::serve(routes).incoming(listener).run());

    let run = engine.start("await-payment", &42u32).await?;
    let url = format!("http://{addr}{}", workflow_http::webhook_path("order:42"));
    println!("run {run} waits for a webhook; resume it with:");
    println!("  curl -i -X POST '{url}' -d '{{\"paid\":true}}'");

    let outcome: String = engine.result(&run).await?;
    println!("workflow finished: {outcome}");
    // Give the answer a moment to reach the caller before the process ends.
    tokio::time::sleep(Duration::from_millis(200)).await;
    engine.shutdown().await;
    Ok(())
}
