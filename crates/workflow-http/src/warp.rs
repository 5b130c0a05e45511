//! warp 0.4: a [`webhook`] filter serving `/.well-known/workflow/v1/webhook/{token}`
//! for every method, [`resume_webhook`] for your own path, and the building
//! blocks ([`token`], [`request`], [`recover`]) to compose your own; a
//! [`stream`] filter for durable output streams at
//! `/.well-known/workflow/v1/stream/{run}/{name}` (see [`crate::stream`]).
//!
//! The filters answer every case themselves (`400`, `404`, `413`, ...): they
//! apply [`recover`] to their own rejections and pass on only "not found", so
//! they combine with `.or(...)` like any route. The body limit is enforced
//! while the body streams in, not with `warp::body::content_length_limit`,
//! which rejects chunked requests that have no `Content-Length`.
//!
//! ```no_run
//! use warp::Filter;
//! # async fn demo(engine: workflow_core::Engine) -> std::io::Result<()> {
//! let health = warp::path!("health").map(|| "ok");
//! let routes = workflow_http::warp::webhook(engine).or(health);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! warp::serve(routes).incoming(listener).run().await;
//! # Ok(())
//! # }
//! ```

use bytes::{Buf, Bytes};
use futures_util::StreamExt;
use http::{HeaderMap, Method, Request, Response, Uri};
use http_body::Frame;
use http_body_util::StreamBody;
use warp::filters::BoxedFilter;
use warp::reject::{Reject, Rejection};
use warp::Filter;
use workflow_core::Engine;
use workflow_store::HookToken;

use crate::common::{self, BodyError, TokenError, WebhookConfig};
use crate::stream::{StreamConfig, StreamResponseBody};

/// A rejection of the webhook filters; [`recover`] answers it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookRejection {
    /// The token segment does not decode (`400`).
    #[error(transparent)]
    Undecodable(#[from] TokenError),
    /// The token is empty or not a valid token (`400`).
    #[error(transparent)]
    InvalidToken(#[from] workflow_store::IdError),
    /// The body is too long (`413`) or could not be read (`400`).
    #[error(transparent)]
    Body(#[from] BodyError),
    /// No live webhook holds the token (`404`), or the store could not say
    /// (`503`); answered before the body is read.
    #[error("webhook request refused with {}", .0 .0.status())]
    Refused(RefusedAnswer),
}

/// The answer to a webhook request refused before its body was read.
#[derive(Debug)]
pub struct RefusedAnswer(Response<Bytes>);

impl Reject for WebhookRejection {}

impl WebhookRejection {
    /// The status it is answered with.
    ///
    /// ```
    /// use workflow_http::{warp::WebhookRejection, BodyError};
    /// let r = WebhookRejection::Body(BodyError::TooLarge { limit: 8 });
    /// assert_eq!(r.status(), 413);
    /// ```
    pub fn status(&self) -> http::StatusCode {
        match self {
            WebhookRejection::Body(e) => e.status(),
            WebhookRejection::Refused(answer) => answer.0.status(),
            _ => http::StatusCode::BAD_REQUEST,
        }
    }

    /// The response it is answered with (plain text).
    ///
    /// ```
    /// use workflow_http::{warp::WebhookRejection, TokenError};
    /// let r = WebhookRejection::Undecodable(TokenError::NotUtf8);
    /// assert_eq!(r.to_response().status(), 400);
    /// ```
    pub fn to_response(&self) -> Response<Bytes> {
        match self {
            // The answer as the adapters give it (an empty 404, a 503).
            WebhookRejection::Refused(answer) => answer.0.clone(),
            _ => common::plain(self.status(), self.to_string()),
        }
    }
}

/// Answers the rejections of this module's filters ([`WebhookRejection`]) with
/// their status codes (`400` or `413`); passes every other rejection on, so
/// warp (or your next `recover`) answers it as usual.
///
/// Needed when you compose [`token`] and [`request`] yourself; [`webhook`] and
/// [`resume_webhook`] apply it already.
///
/// ```no_run
/// use warp::Filter;
/// # fn demo(engine: workflow_core::Engine) {
/// let config = workflow_http::WebhookConfig::default();
/// let route = warp::path!("hooks" / String)
///     .and_then(workflow_http::warp::token)
///     .and(workflow_http::warp::request(config))
///     .then(move |token: String, request| {
///         let engine = engine.clone();
///         async move { engine.resume_webhook(&token, request).await }
///     })
///     .recover(workflow_http::warp::recover);
/// # let _ = route;
/// # }
/// ```
pub async fn recover(rejection: Rejection) -> Result<Response<Bytes>, Rejection> {
    match rejection.find::<WebhookRejection>() {
        Some(r) => Ok(r.to_response()),
        None => Err(rejection),
    }
}

/// Decodes and validates a raw token path segment (warp's path parameters
/// are not percent-decoded); for `.and_then` after the filter that extracts it.
/// Rejects with [`WebhookRejection`] (`400`) before the body is read.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// assert_eq!(workflow_http::warp::token("order%3A42".into()).await.unwrap(), "order:42");
/// assert!(workflow_http::warp::token(String::new()).await.is_err());
/// # });
/// ```
pub async fn token(segment: String) -> Result<String, Rejection> {
    let token = common::decode_token(&segment).map_err(WebhookRejection::from)?;
    HookToken::new(token.as_str()).map_err(WebhookRejection::from)?;
    Ok(token)
}

/// Extracts the whole request as an `http::Request<Bytes>`: method, path and
/// query, headers, and the body collected up to `config.body_limit` while it
/// streams in (see [`collect_body`](crate::collect_body)). Rejects with
/// [`WebhookRejection`]: `413` past the limit, `400` if the body cannot be
/// read. Apply [`recover`] to answer those.
///
/// ```no_run
/// use warp::Filter;
/// let echo_len = workflow_http::warp::request(workflow_http::WebhookConfig::default())
///     .map(|req: http::Request<bytes::Bytes>| req.body().len().to_string())
///     .recover(workflow_http::warp::recover);
/// # let _ = echo_len;
/// ```
pub fn request(
    config: WebhookConfig,
) -> impl Filter<Extract = (Request<Bytes>,), Error = Rejection> + Clone {
    let query = warp::query::raw()
        .map(Some)
        .or(warp::any().map(|| None))
        .unify();
    warp::method()
        .and(warp::path::full())
        .and(query)
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .and_then(move |method, path, query, headers, stream| {
            collect_request(config.clone(), method, path, query, headers, stream)
        })
}

/// Builds the request from its parts, collecting the body up to the limit.
async fn collect_request<S, B>(
    config: WebhookConfig,
    method: Method,
    path: warp::path::FullPath,
    query: Option<String>,
    headers: HeaderMap,
    stream: S,
) -> Result<Request<Bytes>, Rejection>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let frames = stream.map(|chunk| chunk.map(to_frame));
    let announced = common::announced_length(&headers);
    let body = common::collect_announced(StreamBody::new(frames), announced, &config)
        .await
        .map_err(|e| warp::reject::custom(WebhookRejection::Body(e)))?;
    let uri = match &query {
        Some(q) => format!("{}?{q}", path.as_str()),
        None => path.as_str().to_string(),
    };
    let mut request = Request::new(body);
    *request.method_mut() = method;
    // Made of a valid path and query, so it parses; fall back to the path.
    *request.uri_mut() = uri
        .parse::<Uri>()
        .or_else(|_| path.as_str().parse::<Uri>())
        .unwrap_or_default();
    *request.headers_mut() = headers;
    Ok(request)
}

/// A chunk of warp's body stream as a data frame (no copy for `Bytes`).
fn to_frame<B: Buf>(mut data: B) -> Frame<Bytes> {
    let n = data.remaining();
    Frame::data(data.copy_to_bytes(n))
}

/// A filter serving `/.well-known/workflow/v1/webhook/{token}` for every
/// method with the default [`WebhookConfig`]. Other paths are rejected as not
/// found (combine with `.or`); `/.well-known/workflow/v1/webhook/` (an empty
/// token) is answered `400`.
///
/// ```no_run
/// # async fn demo(engine: workflow_core::Engine) {
/// warp::serve(workflow_http::warp::webhook(engine)).run(([127, 0, 0, 1], 3000)).await;
/// # }
/// ```
pub fn webhook(engine: Engine) -> BoxedFilter<(Response<Bytes>,)> {
    webhook_with(engine, WebhookConfig::default())
}

/// Like [`webhook`], with `config`.
///
/// ```no_run
/// # fn demo(engine: workflow_core::Engine) {
/// let config = workflow_http::WebhookConfig::new().with_body_limit(64 * 1024);
/// let routes = workflow_http::warp::webhook_with(engine, config);
/// # let _ = routes;
/// # }
/// ```
pub fn webhook_with(engine: Engine, config: WebhookConfig) -> BoxedFilter<(Response<Bytes>,)> {
    let segment = warp::path::full().and_then(|path: warp::path::FullPath| async move {
        common::token_from_path(path.as_str())
            .map(str::to_owned)
            .ok_or_else(warp::reject::not_found)
    });
    resume_webhook(segment, engine, config)
}

/// Resumes webhooks on your own path: `segment` is the filter that matches
/// your path and extracts the token's path segment (raw, as warp's path
/// parameters are: it is percent-decoded here). Every method is accepted;
/// restrict it by putting a method filter in `segment`.
///
/// ```no_run
/// use warp::Filter;
/// # async fn demo(engine: workflow_core::Engine) {
/// let hooks = workflow_http::warp::resume_webhook(
///     warp::path!("hooks" / String),
///     engine,
///     workflow_http::WebhookConfig::default(),
/// );
/// warp::serve(hooks).run(([127, 0, 0, 1], 3000)).await;
/// # }
/// ```
pub fn resume_webhook<F>(
    segment: F,
    engine: Engine,
    config: WebhookConfig,
) -> BoxedFilter<(Response<Bytes>,)>
where
    F: Filter<Extract = (String,), Error = Rejection> + Clone + Send + Sync + 'static,
{
    let lookup = engine.clone();
    segment
        .and_then(token)
        .and_then(move |token: String| {
            let engine = lookup.clone();
            async move {
                // Unknown tokens are answered before the body is read.
                match common::live_webhook(&engine, &token).await {
                    Ok(()) => Ok(token),
                    Err(answer) => Err(warp::reject::custom(WebhookRejection::Refused(
                        RefusedAnswer(answer),
                    ))),
                }
            }
        })
        .and(request(config))
        .then(move |token: String, request: Request<Bytes>| {
            let engine = engine.clone();
            async move {
                let response = engine.resume_webhook(&token, request).await;
                tracing::debug!(status = response.status().as_u16(), "webhook answered");
                response
            }
        })
        .recover(recover)
        .unify()
        .boxed()
}

/// A filter serving durable output streams at
/// `GET /.well-known/workflow/v1/stream/{run}/{name}` with the default
/// [`StreamConfig`] (server-sent events, or NDJSON on request; see
/// [`crate::stream`]). Other paths and methods are rejected as not found, so
/// it combines with `.or`.
///
/// ```no_run
/// use warp::Filter;
/// # async fn demo(engine: workflow_core::Engine) {
/// let routes = workflow_http::warp::webhook(engine.clone()).or(workflow_http::warp::stream(engine));
/// warp::serve(routes).run(([127, 0, 0, 1], 3000)).await;
/// # }
/// ```
pub fn stream(engine: Engine) -> BoxedFilter<(warp::reply::Response,)> {
    stream_with(engine, StreamConfig::default())
}

/// Like [`stream`], with `config` (its clones share one count of readers).
///
/// ```no_run
/// # fn demo(engine: workflow_core::Engine) {
/// let config = workflow_http::stream::StreamConfig::new().with_max_readers(32);
/// let route = workflow_http::warp::stream_with(engine, config);
/// # let _ = route;
/// # }
/// ```
pub fn stream_with(engine: Engine, config: StreamConfig) -> BoxedFilter<(warp::reply::Response,)> {
    let query = warp::query::raw()
        .map(Some)
        .or(warp::any().map(|| None))
        .unify();
    let path = warp::path::full().and_then(|path: warp::path::FullPath| async move {
        match crate::stream::stream_path(path.as_str()) {
            Some((run, name)) => {
                let decode = |s: &str| {
                    percent_encoding::percent_decode_str(s)
                        .decode_utf8()
                        .map(|s| s.into_owned())
                };
                match (decode(run), decode(name)) {
                    (Ok(run), Ok(name)) => Ok((run, name)),
                    _ => Err(warp::reject::not_found()),
                }
            }
            None => Err(warp::reject::not_found()),
        }
    });
    warp::get()
        .and(path)
        .and(query)
        .and(warp::header::headers_cloned())
        .then(
            move |(run, name): (String, String), query: Option<String>, headers: HeaderMap| {
                let (engine, config) = (engine.clone(), config.clone());
                async move {
                    let response = crate::stream::stream_response(
                        &engine,
                        &run,
                        &name,
                        query.as_deref(),
                        &headers,
                        &config,
                    )
                    .await;
                    to_warp(response)
                }
            },
        )
        .boxed()
}

/// A stream response as warp's response type: warp's body wants a `Sync`
/// stream, which the response body is made into by [`SyncBody`].
fn to_warp(response: Response<StreamResponseBody>) -> warp::reply::Response {
    use warp::Reply;
    let (parts, body) = response.into_parts();
    let mut r = warp::reply::stream(SyncBody(std::sync::Mutex::new(body))).into_response();
    *r.status_mut() = parts.status;
    *r.headers_mut() = parts.headers;
    r
}

/// A response body as a `Sync` stream of its data: the mutex is only ever
/// reached through `&mut` (no locking), it just makes the type `Sync`.
struct SyncBody(std::sync::Mutex<StreamResponseBody>);

impl futures_util::Stream for SyncBody {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use http_body::Body as _;
        use std::task::Poll;
        let body = match self.get_mut().0.get_mut() {
            Ok(body) => body,
            Err(poisoned) => poisoned.into_inner(),
        };
        loop {
            match std::pin::Pin::new(&mut *body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
