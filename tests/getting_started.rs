//! The code of docs/getting-started.md, run: a workflow of your own, resumed by
//! a webhook, in your own axum app. The test also checks that the guide shows
//! exactly this code.

mod guide;

// --- guide: begin ---
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use workflow::{
    Context, Engine, RunId, SledStore, StepError, WebhookOptions, WorkflowError, WorkflowRef,
};

#[derive(Serialize, Deserialize)]
struct Signup {
    email: String,
}

/// The workflow's name (what runs record) with its input and output types.
const CONFIRM_SIGNUP: WorkflowRef<Signup, String> = WorkflowRef::new("confirm_signup");

/// Sends a confirmation link, waits (durably) until it is clicked, answers the
/// click itself, and finishes.
async fn confirm_signup(ctx: Context, signup: Signup) -> Result<String, WorkflowError> {
    let mut webhook = ctx.create_webhook(WebhookOptions::new().manual(Duration::from_secs(10)))?;
    let link = webhook.path(); // /.well-known/workflow/v1/webhook/<random token>
                               // A step: an async closure that borrows the workflow's locals (no clones).
    ctx.step("send-confirmation-email", async |_| {
        // send_email(&signup.email, &link).await?;   // any error: retried
        Ok::<_, StepError>(format!("sent {link} to {}", signup.email))
    })
    .await?;
    let click = webhook.next().await?;
    click.respond(http::Response::new(Bytes::from(
        "Thanks, your address is confirmed.",
    )));
    Ok(format!("{} confirmed", signup.email))
}

async fn start_signup(
    State(engine): State<Engine>,
    Json(signup): Json<Signup>,
) -> Result<Json<serde_json::Value>, (StatusCode, String)> {
    let run = engine
        .start(CONFIRM_SIGNUP, &signup)
        .await
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(serde_json::json!({ "run": run.id().to_string() })))
}

async fn signup_status(
    State(engine): State<Engine>,
    Path(run): Path<String>,
) -> Result<Json<serde_json::Value>, (StatusCode, String)> {
    let run: RunId = run
        .parse()
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("{e}")))?;
    let status = engine
        .status(&run)
        .await
        .map_err(|e| (StatusCode::NOT_FOUND, e.to_string()))?;
    Ok(Json(serde_json::json!({ "status": status.as_str() })))
}

fn app(engine: Engine) -> Router {
    Router::new()
        .route("/signup", post(start_signup))
        .route("/signup/{run}", get(signup_status))
        .with_state(engine.clone())
        // POST /.well-known/workflow/v1/webhook/{token} resumes webhooks.
        .merge(workflow::http::axum::router(engine))
}

/// The engine with the workflow, on a sled store in `data_dir`.
fn engine(data_dir: &std::path::Path) -> Result<Engine, workflow::store::StoreError> {
    let store = SledStore::open(data_dir)?;
    Ok(Engine::builder(store)
        .workflow(CONFIRM_SIGNUP, confirm_signup)
        .build())
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let engine = engine(std::path::Path::new("./signup-data"))?;
    engine.start_workers();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    axum::serve(listener, app(engine)).await?;
    Ok(())
}
// --- guide: end ---

/// One HTTP/1.1 request over a fresh connection; returns status and body.
async fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body.as_bytes()).await.unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_getting_started_app_confirms_a_signup_through_its_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).unwrap();
    engine.start_workers();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let engine_for_server = engine.clone();
    let server = tokio::spawn(async move { axum::serve(listener, app(engine_for_server)).await });

    let (status, body) = request(addr, "POST", "/signup", r#"{"email": "ann@example.com"}"#).await;
    assert_eq!(status, 200, "{body}");
    let run: serde_json::Value = serde_json::from_str(&body).unwrap();
    let run: RunId = run["run"].as_str().unwrap().parse().unwrap();

    // In production the link arrives by email; here, take it from the run's
    // live webhook once the run has created it (woken by the change feed).
    let hook = engine
        .wait_for_live_hook(&run, Duration::from_secs(10))
        .await
        .unwrap();
    let link = workflow::webhook_path(hook.token.as_str());
    let (status, body) = request(addr, "GET", &format!("/signup/{run}"), "").await;
    assert_eq!(status, 200);
    assert!(body.contains("running"), "{body}");
    let (status, _) = request(
        addr,
        "POST",
        "/.well-known/workflow/v1/webhook/not-a-token",
        "",
    )
    .await;
    assert_eq!(status, 404);
    let (status, body) = request(addr, "POST", &link, "").await;
    assert_eq!(status, 200);
    assert_eq!(body, "Thanks, your address is confirmed.");
    let done = engine.run_handle(CONFIRM_SIGNUP, run).await.unwrap();
    assert_eq!(done.result().await.unwrap(), "ann@example.com confirmed");
    let (_, body) = request(addr, "GET", &format!("/signup/{run}"), "").await;
    assert!(body.contains("completed"), "{body}");
    server.abort();
    engine.shutdown().await;
}

#[test]
fn the_guide_shows_this_code() {
    guide::assert_page_shows_marked_code(
        "docs/getting-started.md",
        include_str!("../docs/getting-started.md"),
        include_str!("getting_started.rs"),
    );
}
