//! A client for the admin API of a running `workflow serve`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;

use crate::ops::OpError;
use crate::view::{ActionView, EventView, HookView, PurgeRequest, PurgeView, RunView};

/// Talks to the admin API at a base URL (`http://127.0.0.1:3000`).
#[derive(Clone, Debug)]
pub struct RemoteClient {
    base: String,
    token: Option<String>,
    http: Client<HttpConnector, Full<Bytes>>,
}

/// Percent-encodes a path segment (everything but unreserved characters).
fn segment(s: &str) -> String {
    workflow_core::webhook::encode_path_segment(s)
}

impl RemoteClient {
    /// A client for the server at `base`, sending `token` as a bearer token if given.
    pub fn new(base: &str, token: Option<String>) -> Self {
        RemoteClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            http: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: http::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, OpError> {
        let url = format!("{}{path}", self.base);
        let mut req = http::Request::builder()
            .method(method)
            .uri(&url)
            .header(http::header::ACCEPT, "application/json");
        if let Some(t) = &self.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let body = match body {
            Some(v) => {
                req = req.header(http::header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(v.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let req = req
            .body(body)
            .map_err(|e| OpError::BadRequest(format!("invalid request to {url}: {e}")))?;
        let resp = self.http.request(req).await.map_err(|e| {
            OpError::Store(format!(
                "cannot reach the workflow server at {}: {e}",
                self.base
            ))
        })?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| OpError::Store(format!("reading the answer from {url} failed: {e}")))?
            .to_bytes();
        if !status.is_success() {
            let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                .unwrap_or_else(|| format!("{url} answered {status}"));
            return Err(match status.as_u16() {
                400 | 401 | 422 => OpError::BadRequest(message),
                404 => OpError::NotFound(message),
                409 => OpError::Conflict(message),
                _ => OpError::Store(message),
            });
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| OpError::Store(format!("unexpected answer from {url}: {e}")))
    }

    /// Starts a run.
    pub async fn start(
        &self,
        workflow: &str,
        input: &serde_json::Value,
    ) -> Result<ActionView, OpError> {
        let body = serde_json::json!({ "workflow": workflow, "input": input });
        self.call(http::Method::POST, "/api/v1/runs", Some(body))
            .await
    }

    /// Lists runs.
    pub async fn runs(&self, status: Option<&str>, limit: usize) -> Result<Vec<RunView>, OpError> {
        let mut path = format!("/api/v1/runs?limit={limit}");
        if let Some(s) = status {
            path.push_str(&format!("&status={}", segment(s)));
        }
        self.call(http::Method::GET, &path, None).await
    }

    /// A run's events.
    pub async fn events(&self, run: &str) -> Result<Vec<EventView>, OpError> {
        self.call(
            http::Method::GET,
            &format!("/api/v1/runs/{}/events", segment(run)),
            None,
        )
        .await
    }

    /// A run's streams.
    pub async fn streams(&self, run: &str) -> Result<Vec<workflow_store::StreamInfo>, OpError> {
        let path = format!("/api/v1/runs/{}/streams", segment(run));
        self.call(http::Method::GET, &path, None).await
    }

    /// Follows a run's stream from `from` until it closes, handing each
    /// chunk (an NDJSON line: `{"index", "chunk"}` or `{"index", "bytes"}`)
    /// to `line`.
    pub async fn tail(
        &self,
        run: &str,
        stream: &str,
        from: u64,
        mut line: impl FnMut(serde_json::Value),
    ) -> Result<(), OpError> {
        let url = format!(
            "{}/api/v1/runs/{}/streams/{}?from={from}",
            self.base,
            segment(run),
            segment(stream)
        );
        let mut req = http::Request::get(&url).header(http::header::ACCEPT, "application/x-ndjson");
        if let Some(t) = &self.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| OpError::BadRequest(format!("invalid request to {url}: {e}")))?;
        let resp = self.http.request(req).await.map_err(|e| {
            OpError::Store(format!(
                "cannot reach the workflow server at {}: {e}",
                self.base
            ))
        })?;
        let status = resp.status();
        if !status.is_success() {
            let message = format!("{url} answered {status}");
            return Err(match status.as_u16() {
                400 | 401 => OpError::BadRequest(message),
                404 => OpError::NotFound(format!("no such run or stream ({message})")),
                _ => OpError::Store(message),
            });
        }
        let mut body = resp.into_body();
        let mut pending = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                OpError::Store(format!("reading the stream from {url} failed: {e}"))
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            pending.extend_from_slice(&data);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let text: Vec<u8> = pending.drain(..=end).collect();
                // Empty lines are keep-alives.
                if text.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let value: serde_json::Value = serde_json::from_slice(&text)
                    .map_err(|e| OpError::Store(format!("unexpected line from {url}: {e}")))?;
                if let Some(error) = value.get("error") {
                    return Err(OpError::Store(format!("the stream failed: {error}")));
                }
                line(value);
            }
        }
        Ok(())
    }

    /// Live hooks.
    pub async fn hooks(&self) -> Result<Vec<HookView>, OpError> {
        self.call(http::Method::GET, "/api/v1/hooks", None).await
    }

    /// Resumes a hook with a JSON payload.
    pub async fn resume(
        &self,
        token: &str,
        payload: &serde_json::Value,
    ) -> Result<ActionView, OpError> {
        let path = format!("/api/v1/hooks/{}/resume", segment(token));
        self.call(http::Method::POST, &path, Some(payload.clone()))
            .await
    }

    /// Cancels a run.
    pub async fn cancel(&self, run: &str) -> Result<ActionView, OpError> {
        let path = format!("/api/v1/runs/{}/cancel", segment(run));
        self.call(http::Method::POST, &path, Some(serde_json::json!({})))
            .await
    }

    /// Deletes ended runs that `req` selects.
    pub async fn purge(&self, req: &PurgeRequest) -> Result<PurgeView, OpError> {
        let body = serde_json::to_value(req).map_err(|e| OpError::BadRequest(e.to_string()))?;
        self.call(http::Method::POST, "/api/v1/purge", Some(body))
            .await
    }

    /// Retries a blocked run.
    pub async fn unblock(&self, run: &str) -> Result<ActionView, OpError> {
        let path = format!("/api/v1/runs/{}/unblock", segment(run));
        self.call(http::Method::POST, &path, Some(serde_json::json!({})))
            .await
    }
}
