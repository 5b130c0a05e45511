//! Webhooks: hooks whose payload is an HTTP request.
//!
//! [`crate::Context::create_webhook`] returns a [`Webhook`] with a token and a
//! [`path`](Webhook::path) under `/.well-known/workflow/v1/webhook/`. The
//! framework adapters (and [`crate::Engine::resume_webhook`], which they call)
//! record each request as `hook_received` and answer it according to the
//! webhook's [`ResponseMode`]: `202 Accepted` at once, a static response, or the
//! workflow's own answer given with [`WebhookRequest::respond`] (recorded as
//! `hook_responded`, so replay never answers twice).

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use workflow_store::{CorrelationId, HttpResponseRecord, WebhookResponse};

use crate::hook::{encode_token_for_path, Hook, HookError, HookOptions};
use crate::replay::{lock, SharedState};

/// The path prefix under which webhooks are served.
pub const WEBHOOK_PATH_PREFIX: &str = "/.well-known/workflow/v1/webhook/";

/// The path that resumes the webhook with `token` (token percent-encoded).
///
/// ```
/// assert_eq!(workflow_core::webhook_path("order:42"), "/.well-known/workflow/v1/webhook/order%3A42");
/// ```
pub fn webhook_path(token: &str) -> String {
    format!("{WEBHOOK_PATH_PREFIX}{}", encode_token_for_path(token))
}

/// How a webhook answers the requests that resume it.
#[derive(Debug, Clone, Default)]
pub enum ResponseMode {
    /// `202 Accepted` with an empty body, once the request is recorded.
    #[default]
    Accepted,
    /// This response to every request.
    Static(http::Response<Bytes>),
    /// The workflow answers each request with [`WebhookRequest::respond`]; a
    /// caller that gets no answer within `timeout` gets `504 Gateway Timeout`.
    Manual {
        /// How long a caller waits.
        timeout: Duration,
    },
}

/// How a webhook is created: token, metadata and response mode.
///
/// ```
/// use std::time::Duration;
/// use workflow_core::WebhookOptions;
/// let opts = WebhookOptions::new().manual(Duration::from_secs(10));
/// let custom = WebhookOptions::token("invoice:7").static_response(
///     http::Response::builder().status(200).body(bytes::Bytes::from("thanks")).unwrap(),
/// );
/// ```
#[derive(Debug, Clone, Default)]
pub struct WebhookOptions {
    pub(crate) hook: HookOptions,
    pub(crate) mode: ResponseMode,
}

impl WebhookOptions {
    /// A webhook with a random token that answers `202 Accepted`.
    pub fn new() -> Self {
        Self::default()
    }

    /// A webhook with a custom token (see [`HookOptions::token`]).
    pub fn token(token: impl Into<String>) -> Self {
        WebhookOptions {
            hook: HookOptions::token(token),
            mode: ResponseMode::Accepted,
        }
    }

    /// Data kept with the webhook.
    pub fn metadata<M: Serialize + ?Sized>(mut self, metadata: &M) -> Self {
        self.hook = self.hook.metadata(metadata);
        self
    }

    /// Answers every request with `response`.
    pub fn static_response(mut self, response: http::Response<Bytes>) -> Self {
        self.mode = ResponseMode::Static(response);
        self
    }

    /// The workflow answers each request; callers wait at most `timeout`.
    pub fn manual(mut self, timeout: Duration) -> Self {
        self.mode = ResponseMode::Manual { timeout };
        self
    }

    pub(crate) fn stored_mode(&self) -> WebhookResponse {
        match &self.mode {
            ResponseMode::Accepted => WebhookResponse::Accepted,
            ResponseMode::Static(r) => WebhookResponse::Static(response_record(r)),
            ResponseMode::Manual { timeout } => WebhookResponse::Manual {
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            },
        }
    }
}

/// Converts a response to the form kept in the log.
pub(crate) fn response_record(r: &http::Response<Bytes>) -> HttpResponseRecord {
    HttpResponseRecord {
        status: r.status().as_u16(),
        headers: r
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), Bytes::copy_from_slice(v.as_bytes())))
            .collect(),
        body: r.body().clone(),
    }
}

/// Converts a logged response back; invalid parts become a 500 / are skipped.
pub(crate) fn http_response(rec: &HttpResponseRecord) -> http::Response<Bytes> {
    let mut resp = http::Response::new(rec.body.clone());
    *resp.status_mut() =
        http::StatusCode::from_u16(rec.status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in &rec.headers {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_bytes(value),
        ) {
            resp.headers_mut().append(n, v);
        }
    }
    resp
}

/// An HTTP request received by a webhook, as recorded in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookRequest {
    /// Unique id of this request (a ULID).
    pub request_id: String,
    /// Method (`POST`).
    pub method: String,
    /// Path and query, as received.
    pub uri: String,
    /// Header names (lower case) and values, in order.
    pub headers: Vec<(String, Bytes)>,
    /// The body.
    pub body: Bytes,
    #[serde(skip)]
    responder: Option<Responder>,
}

#[derive(Clone)]
struct Responder {
    state: SharedState,
    hook: CorrelationId,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Responder")
    }
}

impl PartialEq for Responder {
    fn eq(&self, other: &Self) -> bool {
        self.hook == other.hook
    }
}

impl Eq for Responder {}

impl WebhookRequest {
    pub(crate) fn from_http(request_id: String, req: &http::Request<Bytes>) -> Self {
        WebhookRequest {
            request_id,
            method: req.method().as_str().to_string(),
            uri: req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| req.uri().path().to_string()),
            headers: req
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), Bytes::copy_from_slice(v.as_bytes())))
                .collect(),
            body: req.body().clone(),
            responder: None,
        }
    }

    /// The first value of header `name` (case-insensitive), if any.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }

    /// The body as text, if it is valid UTF-8.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.body).ok()
    }

    /// Answers this request (manual webhooks). Recorded as `hook_responded` at
    /// the workflow's next pause, in program order with the workflow's other
    /// operations, and released to the waiting caller; replay finds the
    /// recorded answer and does not answer again. It works after the
    /// [`Webhook`] handle is dropped. The caller gets the first answer given;
    /// on webhooks of other modes the answer is recorded but nobody waits for it.
    pub fn respond(&self, response: http::Response<Bytes>) {
        let Some(r) = &self.responder else { return };
        crate::replay::forbid_in_step("WebhookRequest::respond");
        lock(&r.state).respond(r.hook.clone(), &self.request_id, response_record(&response));
    }
}

/// A webhook: a hook whose payloads are HTTP requests.
pub struct Webhook {
    pub(crate) hook: Hook<WebhookRequest>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook").field("hook", &self.hook).finish()
    }
}

impl Webhook {
    /// The token.
    pub fn token(&self) -> &str {
        self.hook.token()
    }

    /// The path that resumes it: `/.well-known/workflow/v1/webhook/{token}`.
    pub fn path(&self) -> String {
        webhook_path(self.hook.token())
    }

    /// Waits for the next request.
    pub async fn next(&mut self) -> Result<WebhookRequest, HookError> {
        let mut request = self.hook.next().await?;
        request.responder = Some(Responder {
            state: self.hook.state.clone(),
            hook: self.hook.id.clone(),
        });
        Ok(request)
    }

    /// Disposes the webhook; its token answers 404 from then on.
    pub fn dispose(self) {
        self.hook.dispose()
    }
}
