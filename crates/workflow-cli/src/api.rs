//! The admin API of `workflow serve`, under `/api/v1`: what the CLI uses when
//! a server holds the data directory.
//!
//! | method and path | does |
//! |---|---|
//! | `GET /api/v1/runs?status=&limit=` | list runs |
//! | `POST /api/v1/runs` `{"workflow", "input"}` | start a run |
//! | `GET /api/v1/runs/{id}/events` | a run's timeline |
//! | `GET /api/v1/runs/{id}/streams` | a run's streams: `[{"name", "len", "closed"}]` |
//! | `GET /api/v1/runs/{id}/streams/{name}?from=N` | a stream, followed until it closes: NDJSON with `Accept: application/x-ndjson`, else server-sent events (as [`workflow_http::stream`], without a read token) |
//! | `POST /api/v1/runs/{id}/cancel` | cancel a run |
//! | `POST /api/v1/runs/{id}/unblock` | retry a blocked run (409 if it is not blocked) |
//! | `POST /api/v1/purge` | delete ended runs: `{"older_than_secs": 2592000, "status": "completed", "workflow": "…"}` |
//! | `GET /api/v1/hooks` | live hooks and their tokens |
//! | `POST /api/v1/hooks/{token}/resume` (JSON body) | resume a hook |
//!
//! It lists tokens and changes runs, so it is an operator's tool: `workflow
//! serve` serves it, with the dashboard, behind one gate
//! ([`workflow_http::dashboard::AdminAuth`]). With `--admin-token` every
//! request must carry `Authorization: Bearer <token>` (`401` without it);
//! without one it is served only on a loopback address, where requests must
//! name `localhost`, `127.0.0.1` or `[::1]` as their `Host` (`421` otherwise).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use workflow_http::stream::StreamConfig;
use workflow_store::StreamName;

use crate::ops::{parse_status, OpError, Operations};
use crate::view::PurgeRequest;

/// Shared state of the admin API.
#[derive(Clone, Debug)]
struct Admin {
    ops: Operations,
    streams: StreamConfig,
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

/// The admin API on `ops`.
///
/// It has no access control of its own: `workflow serve` puts it and the
/// dashboard behind one [`AdminAuth`](workflow_http::dashboard::AdminAuth)
/// (see [`crate::serve::admin_routes`]). Mount it only behind such a gate.
pub fn router<S: Clone + Send + Sync + 'static>(ops: Operations) -> Router<S> {
    Router::new()
        .route("/api/v1/runs", get(list_runs).post(start_run))
        .route("/api/v1/runs/{id}/events", get(events))
        .route("/api/v1/runs/{id}/streams", get(streams))
        .route("/api/v1/runs/{id}/streams/{name}", get(follow_stream))
        .route("/api/v1/runs/{id}/cancel", post(cancel))
        .route("/api/v1/runs/{id}/unblock", post(unblock))
        .route("/api/v1/purge", post(purge))
        .route("/api/v1/hooks", get(hooks))
        .route("/api/v1/hooks/{token}/resume", post(resume))
        .with_state(Admin {
            ops,
            streams: StreamConfig::default(),
        })
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

async fn streams(State(admin): State<Admin>, Path(id): Path<String>) -> Response {
    match admin.ops.streams(&id).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn follow_stream(
    State(admin): State<Admin>,
    Path((id, name)): Path<(String, String)>,
    request: axum::extract::Request,
) -> Response {
    let run = match crate::ops::parse_run(&id) {
        Ok(run) => run,
        Err(e) => return e.into_response(),
    };
    let Ok(name) = StreamName::new(name) else {
        return OpError::NotFound(format!("run {run} has no such stream")).into_response();
    };
    workflow_http::stream::authorized_stream_response(
        admin.ops.engine(),
        run,
        &name,
        request.uri().query(),
        request.headers(),
        &admin.streams,
    )
    .await
    .map(axum::body::Body::new)
    .into_response()
}

async fn cancel(State(admin): State<Admin>, Path(id): Path<String>) -> Response {
    match admin.ops.cancel(&id).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn purge(State(admin): State<Admin>, Json(body): Json<PurgeRequest>) -> Response {
    match admin.ops.purge(&body).await {
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
