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
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use workflow_store::{CorrelationId, HttpResponseRecord, WebhookResponse};

use crate::hook::{Hook, HookError, HookOptions};
use crate::replay::{lock, SharedState};

/// The path prefix under which webhooks are served.
pub const WEBHOOK_PATH_PREFIX: &str = "/.well-known/workflow/v1/webhook/";

/// The path that resumes the webhook with `token` (token percent-encoded).
///
/// ```
/// assert_eq!(workflow_core::webhook_path("order:42"), "/.well-known/workflow/v1/webhook/order%3A42");
/// ```
pub fn webhook_path(token: &str) -> String {
    format!("{WEBHOOK_PATH_PREFIX}{}", encode_path_segment(token))
}

/// What a path segment escapes: everything but RFC 3986's unreserved
/// characters, so that a token survives any router and proxy unchanged.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes `segment` for a URL path (`order:42` is `order%3A42`):
/// everything but RFC 3986's unreserved characters.
///
/// ```
/// assert_eq!(workflow_core::webhook::encode_path_segment("order:42"), "order%3A42");
/// ```
pub fn encode_path_segment(segment: &str) -> String {
    utf8_percent_encode(segment, PATH_SEGMENT).to_string()
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
    *resp.headers_mut() = header_map(&rec.headers);
    resp
}

/// A logged header list as a `HeaderMap`, in order; an entry whose name or
/// value is not valid HTTP is skipped.
fn header_map(headers: &[(String, Bytes)]) -> http::HeaderMap {
    let mut map = http::HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_bytes(value),
        ) {
            map.append(n, v);
        }
    }
    map
}

/// Why a part of a [`WebhookRequest`] could not be read as an `http` type or
/// as JSON.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookRequestError {
    /// The recorded method is not a valid HTTP method.
    #[error("the recorded method is not a valid HTTP method: {0}")]
    Method(#[from] http::method::InvalidMethod),
    /// The recorded path and query is not a valid URI.
    #[error("the recorded URI is not valid: {0}")]
    Uri(#[from] http::uri::InvalidUri),
    /// The body is not JSON of the expected type.
    #[error("the body is not the expected JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// An HTTP request received by a webhook, as recorded in the log.
///
/// Its fields are what the log stores; [`method`](Self::method),
/// [`uri`](Self::uri), [`headers`](Self::headers) and [`json`](Self::json)
/// read them as `http` types and typed JSON:
///
/// ```
/// # fn demo(wh_request: workflow_core::WebhookRequest) -> Result<(), workflow_core::webhook::WebhookRequestError> {
/// #[derive(serde::Deserialize)]
/// struct Payment {
///     paid: bool,
/// }
///
/// // let wh_request = webhook.next().await?;
/// if wh_request.method()? == http::Method::POST
///     && wh_request.headers().get(http::header::CONTENT_TYPE)
///         == Some(&http::HeaderValue::from_static("application/json"))
/// {
///     let payment: Payment = wh_request.json()?;
///     println!("{} paid: {}", wh_request.uri()?.path(), payment.paid);
/// }
/// # Ok(())
/// # }
/// ```
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

    /// The method as an [`http::Method`]; an error only if the log holds a
    /// method that is not valid HTTP (the adapters record valid ones).
    ///
    /// ```
    /// # fn demo(req: workflow_core::WebhookRequest) {
    /// if req.method().is_ok_and(|m| m == http::Method::DELETE) {
    ///     // ...
    /// }
    /// # }
    /// ```
    pub fn method(&self) -> Result<http::Method, WebhookRequestError> {
        Ok(http::Method::from_bytes(self.method.as_bytes())?)
    }

    /// The path and query as an [`http::Uri`] (no scheme or authority: the
    /// request's as received, e.g. `/.well-known/workflow/v1/webhook/t?x=1`);
    /// an error only if the log holds one that does not parse.
    ///
    /// ```
    /// # fn demo(req: workflow_core::WebhookRequest) -> Result<(), workflow_core::webhook::WebhookRequestError> {
    /// let uri = req.uri()?;
    /// println!("path {} query {:?}", uri.path(), uri.query());
    /// # Ok(())
    /// # }
    /// ```
    pub fn uri(&self) -> Result<http::Uri, WebhookRequestError> {
        Ok(http::Uri::try_from(self.uri.as_str())?)
    }

    /// The headers as an [`http::HeaderMap`], repeated ones in order. A
    /// recorded entry whose name or value is not valid HTTP (only possible in
    /// a log not written by the adapters) is skipped; [`headers`](Self::headers)
    /// the field keeps every entry as recorded.
    ///
    /// ```
    /// # fn demo(req: workflow_core::WebhookRequest) {
    /// let headers = req.headers();
    /// let signature = headers.get("x-signature").and_then(|v| v.to_str().ok());
    /// # let _ = signature;
    /// # }
    /// ```
    pub fn headers(&self) -> http::HeaderMap {
        header_map(&self.headers)
    }

    /// The body decoded as JSON into `T` (whatever the `Content-Type`).
    ///
    /// ```
    /// # fn demo(req: workflow_core::WebhookRequest) -> Result<(), workflow_core::webhook::WebhookRequestError> {
    /// let event: serde_json::Value = req.json()?;
    /// println!("{}", event["type"]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, WebhookRequestError> {
        Ok(serde_json::from_slice(&self.body)?)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(method: &str, uri: &str, headers: &[(&str, &[u8])], body: &str) -> WebhookRequest {
        WebhookRequest {
            request_id: "01J0000000000000000000000".to_string(),
            method: method.to_string(),
            uri: uri.to_string(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), Bytes::copy_from_slice(v)))
                .collect(),
            body: Bytes::from(body.to_string()),
            responder: None,
        }
    }

    #[test]
    fn method_is_an_http_method() {
        let req = recorded("PURGE", "/", &[], "");
        assert_eq!(req.method().expect("valid"), "PURGE");
        assert_eq!(
            recorded("POST", "/", &[], "").method().expect("valid"),
            http::Method::POST
        );
        let bad = recorded("NOT A METHOD", "/", &[], "");
        assert!(matches!(bad.method(), Err(WebhookRequestError::Method(_))));
    }

    #[test]
    fn uri_is_the_path_and_query() {
        let req = recorded(
            "GET",
            "/.well-known/workflow/v1/webhook/order%3A42?x=1&y",
            &[],
            "",
        );
        let uri = req.uri().expect("valid");
        assert_eq!(uri.path(), "/.well-known/workflow/v1/webhook/order%3A42");
        assert_eq!(uri.query(), Some("x=1&y"));
        let bad = recorded("GET", "/a b", &[], "");
        assert!(matches!(bad.uri(), Err(WebhookRequestError::Uri(_))));
    }

    #[test]
    fn headers_keep_repeats_in_order_and_skip_invalid_entries() {
        let req = recorded(
            "POST",
            "/",
            &[
                ("content-type", b"application/json"),
                ("x-multi", b"one"),
                ("bad name", b"skipped"),
                ("x-multi", b"two"),
                ("x-bad-value", b"line\nbreak"),
                ("x-bytes", b"caf\xc3\xa9"),
            ],
            "",
        );
        let headers = req.headers();
        assert_eq!(headers.len(), 4);
        assert_eq!(headers["content-type"], "application/json");
        let multi: Vec<_> = headers.get_all("x-multi").iter().collect();
        assert_eq!(multi, ["one", "two"]);
        assert_eq!(headers["x-bytes"].as_bytes(), b"caf\xc3\xa9");
        assert!(!headers.contains_key("x-bad-value"));
    }

    #[test]
    fn json_decodes_the_body_with_a_typed_error() {
        #[derive(Debug, PartialEq, serde::Deserialize)]
        struct Payment {
            paid: bool,
            amount: u32,
        }
        let req = recorded("POST", "/", &[], r#"{"paid":true,"amount":42}"#);
        let payment: Payment = req.json().expect("valid JSON");
        assert_eq!(
            payment,
            Payment {
                paid: true,
                amount: 42
            }
        );
        let wrong_shape = recorded("POST", "/", &[], r#"{"paid":"yes"}"#);
        let err = wrong_shape.json::<Payment>().expect_err("wrong type");
        assert!(matches!(&err, WebhookRequestError::Json(e) if e.is_data()));
        let not_json = recorded("POST", "/", &[], "paid=1");
        let err = not_json.json::<Payment>().expect_err("not JSON");
        assert!(matches!(&err, WebhookRequestError::Json(e) if e.is_syntax()));
    }

    #[test]
    fn stored_shape_is_unchanged() {
        let req = recorded("POST", "/p?q", &[("x-a", b"1")], "hi");
        let json = serde_json::to_value(&req).expect("serializes");
        let keys: Vec<&str> = json
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["body", "headers", "method", "request_id", "uri"]);
    }

    #[test]
    fn path_segments_escape_all_but_unreserved_characters() {
        assert_eq!(encode_path_segment("order:42"), "order%3A42");
        assert_eq!(encode_path_segment("a-b.c_d~e"), "a-b.c_d~e");
        assert_eq!(encode_path_segment("a/b c+%"), "a%2Fb%20c%2B%25");
        assert_eq!(encode_path_segment("\u{2713}"), "%E2%9C%93");
        // Every byte but the unreserved ones is escaped, upper-case hex.
        let every: String = (1u8..=127).map(char::from).chain(['é', '✓']).collect();
        let expected: String = every
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        assert_eq!(encode_path_segment(&every), expected);
    }
}
