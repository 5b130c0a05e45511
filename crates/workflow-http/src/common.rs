//! What every adapter shares: the body limit, token decoding, the streaming
//! body collection and the framework-neutral [`resume_webhook`].

use std::pin::Pin;
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tracing::debug;
use workflow_core::{Engine, WEBHOOK_PATH_PREFIX};
use workflow_store::HookToken;

/// The default [`WebhookConfig::body_limit`]: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How the adapters serve webhooks.
///
/// ```
/// use workflow_http::{WebhookConfig, DEFAULT_BODY_LIMIT};
/// assert_eq!(WebhookConfig::default().body_limit, DEFAULT_BODY_LIMIT);
/// let small = WebhookConfig::new().with_body_limit(16 * 1024);
/// assert_eq!(small.body_limit, 16 * 1024);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WebhookConfig {
    /// The longest request body accepted, in bytes; a longer one is answered
    /// `413 Payload Too Large`. Enforced while the body streams in (and at once
    /// when a `Content-Length` announces more), so a chunked body without
    /// `Content-Length` is never buffered past it. Default [`DEFAULT_BODY_LIMIT`].
    pub body_limit: usize,
    /// After a body is refused as too long, up to this many bytes more are
    /// read and thrown away (for at most [`DRAIN_TIME`]) before the `413` is
    /// sent, so that a client still sending its body reads the `413` instead of
    /// a reset connection. A body announced (`Content-Length`) to be longer
    /// than `body_limit + drain_limit` is refused without reading any of it.
    /// Nothing drained is kept in memory. Default [`DEFAULT_DRAIN_LIMIT`].
    pub drain_limit: usize,
}

/// The default [`WebhookConfig::drain_limit`]: 1 MiB.
pub const DEFAULT_DRAIN_LIMIT: usize = 1024 * 1024;

/// The longest time spent draining a refused body (see
/// [`WebhookConfig::drain_limit`]).
pub const DRAIN_TIME: Duration = Duration::from_secs(1);

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            body_limit: DEFAULT_BODY_LIMIT,
            drain_limit: DEFAULT_DRAIN_LIMIT,
        }
    }
}

impl WebhookConfig {
    /// The defaults: a 1 MiB body limit, 1 MiB drained past it.
    ///
    /// ```
    /// assert_eq!(workflow_http::WebhookConfig::new(), Default::default());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the longest request body accepted, in bytes.
    ///
    /// ```
    /// let config = workflow_http::WebhookConfig::new().with_body_limit(1024);
    /// assert_eq!(config.body_limit, 1024);
    /// ```
    pub fn with_body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Sets how many bytes of a refused body are drained (0: none, the
    /// connection is closed at once).
    ///
    /// ```
    /// let config = workflow_http::WebhookConfig::new().with_drain_limit(0);
    /// assert_eq!(config.drain_limit, 0);
    /// ```
    pub fn with_drain_limit(mut self, bytes: usize) -> Self {
        self.drain_limit = bytes;
        self
    }
}

/// Why a path segment is not a token (answered `400 Bad Request`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// A `%` not followed by two hexadecimal digits.
    #[error("malformed percent-encoding at byte {position} of the token")]
    MalformedEscape {
        /// Byte offset of the `%` in the segment.
        position: usize,
    },
    /// The decoded bytes are not UTF-8.
    #[error("the decoded token is not UTF-8")]
    NotUtf8,
}

/// Percent-decodes a token's path segment: `order%3A42` is `order:42`.
///
/// `+` stays `+` (this is a path, not a form). A valid token never contains
/// `%`, so decoding a token that was already decoded changes nothing.
///
/// ```
/// use workflow_http::{decode_token, TokenError};
/// assert_eq!(decode_token("order%3A42").unwrap(), "order:42");
/// assert_eq!(decode_token("plain-token").unwrap(), "plain-token");
/// assert_eq!(decode_token("bad%zz"), Err(TokenError::MalformedEscape { position: 3 }));
/// assert_eq!(decode_token("%FF"), Err(TokenError::NotUtf8));
/// ```
pub fn decode_token(segment: &str) -> Result<String, TokenError> {
    // `percent_decode_str` keeps a malformed escape as it is; a token segment
    // with one is refused instead, so that no two segments name one token.
    for (position, _) in segment.match_indices('%') {
        let hex = segment.get(position + 1..position + 3);
        if !hex.is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit())) {
            return Err(TokenError::MalformedEscape { position });
        }
    }
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map(|token| token.into_owned())
        .map_err(|_| TokenError::NotUtf8)
}

/// The raw (still percent-encoded) token segment of a path under
/// [`WEBHOOK_PATH_PREFIX`]: `Some("")` for the prefix itself (an empty token),
/// `None` for paths outside it or with more segments after the token.
///
/// ```
/// use workflow_http::token_from_path;
/// assert_eq!(token_from_path("/.well-known/workflow/v1/webhook/order%3A42"), Some("order%3A42"));
/// assert_eq!(token_from_path("/.well-known/workflow/v1/webhook/"), Some(""));
/// assert_eq!(token_from_path("/.well-known/workflow/v1/webhook/a/b"), None);
/// assert_eq!(token_from_path("/somewhere/else"), None);
/// ```
pub fn token_from_path(path: &str) -> Option<&str> {
    let rest = path.strip_prefix(WEBHOOK_PATH_PREFIX)?;
    (!rest.contains('/')).then_some(rest)
}

/// Why a request body was not collected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// The body is longer than the limit (`413 Payload Too Large`).
    #[error("request body exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// Reading the body failed, e.g. the client went away (`400 Bad Request`).
    #[error("request body could not be read: {0}")]
    Read(#[source] BoxError),
}

impl BodyError {
    /// The status this error is answered with: `413` or `400`.
    ///
    /// ```
    /// let e = workflow_http::BodyError::TooLarge { limit: 10 };
    /// assert_eq!(e.status(), http::StatusCode::PAYLOAD_TOO_LARGE);
    /// ```
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Read(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The response this error is answered with (plain text).
    ///
    /// ```
    /// let r = workflow_http::BodyError::TooLarge { limit: 10 }.to_response();
    /// assert_eq!(r.status(), 413);
    /// ```
    pub fn to_response(&self) -> Response<Bytes> {
        plain(self.status(), self.to_string())
    }
}

/// The body length `headers` announce (`Content-Length`), if any.
pub(crate) fn announced_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// Collects a request body of at most `config.body_limit` bytes, frame by frame.
///
/// Stops collecting as soon as the body is known to be longer than the limit:
/// from its size hint (a `Content-Length`) before reading anything, otherwise
/// once the bytes received pass the limit ([`Limited`]). It then drains up to
/// [`WebhookConfig::drain_limit`] bytes more without keeping them, and returns
/// [`BodyError::TooLarge`]. A body of one frame is returned without copying.
///
/// ```
/// use http_body_util::Full;
/// use workflow_http::{collect_body, BodyError, WebhookConfig};
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let config = WebhookConfig::new().with_body_limit(5);
/// let body = collect_body(Full::new(bytes::Bytes::from("hello")), &config).await.unwrap();
/// assert_eq!(body, "hello");
/// let err = collect_body(Full::new(bytes::Bytes::from("hello!")), &config).await.unwrap_err();
/// assert!(matches!(err, BodyError::TooLarge { limit: 5 }));
/// # });
/// ```
pub async fn collect_body<B>(body: B, config: &WebhookConfig) -> Result<Bytes, BodyError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    collect_announced(body, None, config).await
}

/// [`collect_body`] for a body whose length `announced` by its headers is
/// not (or not only) in its size hint.
pub(crate) async fn collect_announced<B>(
    body: B,
    announced: Option<u64>,
    config: &WebhookConfig,
) -> Result<Bytes, BodyError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let limit = config.body_limit;
    let budget = limit.saturating_add(config.drain_limit);
    let mut body = std::pin::pin!(body);
    let announced = body.size_hint().lower().max(announced.unwrap_or(0));
    if announced > limit as u64 {
        if announced <= budget as u64 {
            drain(body, 0, budget).await;
        }
        return Err(BodyError::TooLarge { limit });
    }
    // Counted below the limit, so that the drain knows what was read,
    // including the frame that passed the limit.
    let mut received = 0usize;
    let counted = body.as_mut().map_frame(|frame| {
        if let Some(data) = frame.data_ref() {
            received = received.saturating_add(data.remaining());
        }
        frame
    });
    let collected = Limited::new(counted, limit).collect().await;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => {
            drain(body, received, budget).await;
            Err(BodyError::TooLarge { limit })
        }
        Err(e) => Err(BodyError::Read(e)),
    }
}

/// Reads and discards the rest of a refused body while the total read stays
/// within `budget` bytes, for at most [`DRAIN_TIME`].
async fn drain<B>(mut body: Pin<&mut B>, mut received: usize, budget: usize)
where
    B: Body,
{
    if received >= budget {
        return;
    }
    let drained = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                received = received.saturating_add(data.remaining());
                if received > budget {
                    return false;
                }
            }
        }
        true
    })
    .await;
    debug!(
        drained_to_end = matches!(drained, Ok(true)),
        "refused body drained"
    );
}

/// Resumes the webhook with `token` with `request`, whatever its body type:
/// the framework-neutral core of every adapter.
///
/// `token` is the decoded token (see [`decode_token`]). An empty or invalid
/// token is answered `400`, and a token that no live webhook holds `404`,
/// both before the body is read ([`live_webhook`]); a body longer than
/// `config.body_limit` `413` ([`collect_body`]); the rest as
/// [`Engine::resume_webhook`] answers. The request's method, URI, headers and
/// body are passed on unchanged.
///
/// ```no_run
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use workflow_http::WebhookConfig;
/// # async fn demo(engine: workflow_core::Engine) {
/// let request = http::Request::post("/.well-known/workflow/v1/webhook/order:42")
///     .body(Full::new(Bytes::from("{\"paid\":true}")))
///     .expect("a valid request");
/// let response = workflow_http::resume_webhook(&engine, "order:42", request, &WebhookConfig::default()).await;
/// println!("{}", response.status());
/// # }
/// ```
pub async fn resume_webhook<B>(
    engine: &Engine,
    token: &str,
    request: Request<B>,
    config: &WebhookConfig,
) -> Response<Bytes>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    if let Err(e) = HookToken::new(token) {
        debug!(error = %e, "webhook request with an invalid token");
        return plain(StatusCode::BAD_REQUEST, e.to_string());
    }
    if let Err(refused) = live_webhook(engine, token).await {
        return refused;
    }
    let (parts, body) = request.into_parts();
    let announced = announced_length(&parts.headers);
    let body = match collect_announced(body, announced, config).await {
        Ok(body) => body,
        Err(e) => {
            debug!(error = %e, "webhook request body refused");
            return e.to_response();
        }
    };
    let response = engine
        .resume_webhook(token, Request::from_parts(parts, body))
        .await;
    debug!(status = response.status().as_u16(), "webhook answered");
    response
}

/// [`resume_webhook`] for a token's path segment as received: percent-decoded
/// first, `400` if it does not decode. What the hyper adapter and
/// [`WebhookService`](crate::WebhookService) call.
#[cfg(feature = "tower")]
pub(crate) async fn resume_segment<B>(
    engine: &Engine,
    segment: &str,
    request: Request<B>,
    config: &WebhookConfig,
) -> Response<Bytes>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    match decode_token(segment) {
        Ok(token) => resume_webhook(engine, &token, request, config).await,
        Err(e) => {
            debug!(error = %e, "webhook token segment does not decode");
            plain(StatusCode::BAD_REQUEST, e.to_string())
        }
    }
}

/// Checks that a live *webhook* holds `token` before anything of the request's
/// body is read, so that requests to unknown tokens cost no memory: `Err` with
/// the answer (`404` with an empty body for an unknown, released or plain-hook
/// token; `503` if the store fails). [`resume_webhook`] and every adapter call
/// it; the write that records the request checks again, atomically.
///
/// ```no_run
/// # async fn demo(engine: workflow_core::Engine) {
/// if let Err(answer) = workflow_http::live_webhook(&engine, "order:42").await {
///     assert_eq!(answer.status(), 404);
/// }
/// # }
/// ```
pub async fn live_webhook(engine: &Engine, token: &str) -> Result<(), Response<Bytes>> {
    match engine.get_hook(token).await {
        Ok(Some(hook)) if hook.webhook.is_some() => Ok(()),
        Ok(_) => {
            debug!("webhook request to a token no live webhook holds");
            Err(empty(StatusCode::NOT_FOUND))
        }
        Err(workflow_core::ResumeError::InvalidToken(e)) => {
            Err(plain(StatusCode::BAD_REQUEST, e.to_string()))
        }
        Err(e) => {
            tracing::warn!(error = %e, "webhook lookup failed: store failed");
            Err(empty(StatusCode::SERVICE_UNAVAILABLE))
        }
    }
}

/// A response with an empty body.
pub(crate) fn empty(status: StatusCode) -> Response<Bytes> {
    let mut r = Response::new(Bytes::new());
    *r.status_mut() = status;
    r
}

/// A plain-text response.
pub(crate) fn plain(status: StatusCode, message: String) -> Response<Bytes> {
    let mut r = Response::new(Bytes::from(message));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes_and_keeps_plus() {
        assert_eq!(decode_token("a%2Fb").unwrap(), "a/b");
        assert_eq!(decode_token("a%2fb").unwrap(), "a/b");
        assert_eq!(decode_token("a+b").unwrap(), "a+b");
        assert_eq!(decode_token("%E2%9C%93").unwrap(), "\u{2713}");
        assert_eq!(decode_token("").unwrap(), "");
        assert_eq!(
            decode_token("ab%"),
            Err(TokenError::MalformedEscape { position: 2 })
        );
        assert_eq!(
            decode_token("ab%4"),
            Err(TokenError::MalformedEscape { position: 2 })
        );
    }

    #[test]
    fn content_length_is_read() {
        let mut h = HeaderMap::new();
        assert_eq!(announced_length(&h), None);
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("10"));
        assert_eq!(announced_length(&h), Some(10));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("x"));
        assert_eq!(announced_length(&h), None);
    }

    /// A body that never ends, one KiB per frame, counting what was read.
    struct Endless(std::sync::Arc<std::sync::atomic::AtomicUsize>);

    impl Body for Endless {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            self: Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            self.0.fetch_add(1024, std::sync::atomic::Ordering::Relaxed);
            std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(vec![
                0u8;
                1024
            ])))))
        }
    }

    #[tokio::test]
    async fn an_endless_body_is_refused_after_limit_and_drain() {
        let read = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let config = WebhookConfig::new()
            .with_body_limit(10 * 1024)
            .with_drain_limit(5 * 1024);
        let err = collect_body(Endless(read.clone()), &config)
            .await
            .expect_err("too large");
        assert!(matches!(err, BodyError::TooLarge { limit: 10240 }));
        let read = read.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(read, 16 * 1024, "stops one frame past limit + drain");
    }

    #[tokio::test]
    async fn no_drain_stops_one_frame_past_the_limit() {
        let read = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let config = WebhookConfig::new()
            .with_body_limit(4 * 1024)
            .with_drain_limit(0);
        collect_body(Endless(read.clone()), &config)
            .await
            .expect_err("too large");
        assert_eq!(read.load(std::sync::atomic::Ordering::Relaxed), 5 * 1024);
    }

    #[tokio::test]
    async fn an_announced_length_past_limit_and_drain_reads_nothing() {
        let read = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let config = WebhookConfig::new()
            .with_body_limit(1024)
            .with_drain_limit(1024);
        collect_announced(Endless(read.clone()), Some(2049), &config)
            .await
            .expect_err("too large");
        assert_eq!(read.load(std::sync::atomic::Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn several_frames_are_joined() {
        let frames = ["ab", "", "cd", "e"]
            .map(|p| Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from(p))));
        let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
        let body = collect_body(body, &WebhookConfig::new().with_body_limit(5))
            .await
            .expect("within the limit");
        assert_eq!(body, "abcde");
    }
}
