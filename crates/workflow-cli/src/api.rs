//! The admin API of `workflow serve`, under `/api/v1`: what the CLI uses when
//! a server holds the data directory.
//!
//! | method and path | does |
//! |---|---|
//! | `GET /api/v1/runs?status=&limit=` | list runs |
//! | `POST /api/v1/runs` `{"workflow", "input"}` | start a run |
//! | `GET /api/v1/runs/{id}/events` | a run's timeline |
//! | `POST /api/v1/runs/{id}/cancel` | cancel a run |
//! | `POST /api/v1/runs/{id}/unblock` | retry a blocked run (409 if it is not blocked) |
//! | `GET /api/v1/hooks` | live hooks and their tokens |
//! | `POST /api/v1/hooks/{token}/resume` (JSON body) | resume a hook |
//!
//! It lists tokens and changes runs, so it is an operator's tool: `workflow
//! serve` mounts it only on a loopback address unless given an admin token,
//! which every request must then carry as `Authorization: Bearer <token>`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::ops::{parse_status, OpError, Operations};

/// Shared state of the admin API.
#[derive(Clone, Debug)]
struct Admin {
    ops: Operations,
}

impl IntoResponse for OpError {
    fn into_response(self) -> Response {
        (
            self.status(),
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

/// Rejects requests without the admin token, when one is configured.
async fn require_token(
    State(token): State<Option<String>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(want) = &token {
        let given = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(want.as_str()) {
            return (
                StatusCode::UNAUTHORIZED,
                Json(serde_json::json!({ "error": "missing or wrong admin token" })),
            )
                .into_response();
        }
    }
    next.run(request).await
}

/// The admin API on `ops`; with `token`, requests need `Authorization: Bearer <token>`.
pub fn router<S: Clone + Send + Sync + 'static>(
    ops: Operations,
    token: Option<String>,
) -> Router<S> {
    Router::new()
        .route("/api/v1/runs", get(list_runs).post(start_run))
        .route("/api/v1/runs/{id}/events", get(events))
        .route("/api/v1/runs/{id}/cancel", post(cancel))
        .route("/api/v1/runs/{id}/unblock", post(unblock))
        .route("/api/v1/hooks", get(hooks))
        .route("/api/v1/hooks/{token}/resume", post(resume))
        .route_layer(axum::middleware::from_fn_with_state(token, require_token))
        .with_state(Admin { ops })
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    limit: Option<usize>,
}

async fn list_runs(State(admin): State<Admin>, Query(q): Query<ListQuery>) -> Response {
    let status = match q.status.as_deref().map(parse_status).transpose() {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    match admin.ops.runs(status, q.limit.unwrap_or(100)).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
struct StartBody {
    workflow: String,
    #[serde(default)]
    input: serde_json::Value,
}

async fn start_run(State(admin): State<Admin>, Json(body): Json<StartBody>) -> Response {
    match admin.ops.start(&body.workflow, &body.input).await {
        Ok(v) => (StatusCode::CREATED, Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn events(State(admin): State<Admin>, Path(id): Path<String>) -> Response {
    match admin.ops.events(&id).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn cancel(State(admin): State<Admin>, Path(id): Path<String>) -> Response {
    match admin.ops.cancel(&id).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn unblock(State(admin): State<Admin>, Path(id): Path<String>) -> Response {
    match admin.ops.unblock(&id).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn hooks(State(admin): State<Admin>) -> Response {
    match admin.ops.hooks().await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn resume(
    State(admin): State<Admin>,
    Path(token): Path<String>,
    Json(payload): Json<serde_json::Value>,
) -> Response {
    match admin.ops.resume(&token, &payload).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}
