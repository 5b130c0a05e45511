//! hyper 1: [`resume_webhook`] for your own `service_fn`, and a ready
//! [`WebhookService`] that serves `/.well-known/workflow/v1/webhook/{token}`;
//! [`read_stream`] and [`StreamService`] for durable output streams at
//! `/.well-known/workflow/v1/stream/{run}/{name}` (see [`crate::stream`]).
//!
//! [`WebhookService`] is [`crate::WebhookService`], the webhook handler as a
//! tower service: hyper serves it directly (it is a hyper `Service` too), and
//! behind tower layers through hyper-util's `TowerToHyperService` (see
//! [`crate::service`]).
//!
//! Serving the well-known path on its own:
//!
//! ```no_run
//! use hyper_util::rt::TokioIo;
//! use workflow_http::hyper::WebhookService;
//! # async fn demo(engine: workflow_core::Engine) -> std::io::Result<()> {
//! let service = WebhookService::new(engine);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! loop {
//!     let (stream, _) = listener.accept().await?;
//!     let service = service.clone();
//!     tokio::spawn(async move {
//!         let conn = hyper::server::conn::http1::Builder::new()
//!             .serve_connection(TokioIo::new(stream), service);
//!         if let Err(e) = conn.await {
//!             eprintln!("connection error: {e}");
//!         }
//!     });
//! }
//! # }
//! ```

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::Full;
use workflow_core::Engine;

use crate::common::{self, WebhookConfig};
use crate::stream::{StreamConfig, StreamResponseBody};

pub use crate::service::WebhookService;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Resumes the webhook with `token` with a hyper request, and answers it.
///
/// `token` is the token's path segment as received, percent-encoded or not
/// (`order%3A42` and `order:42` are the same token); one that does not decode
/// is answered `400`. See the crate documentation for every answer. Works with
/// any request body, e.g. [`hyper::body::Incoming`]: on your own route inside
/// `service_fn`, take the segment from the path and call this.
///
/// ```no_run
/// use std::convert::Infallible;
/// use hyper::{body::Incoming, service::service_fn, Request, Response};
/// use http_body_util::Full;
/// use bytes::Bytes;
/// use workflow_http::WebhookConfig;
///
/// # fn demo(engine: workflow_core::Engine) {
/// let config = WebhookConfig::default();
/// // Serves `/hooks/{token}`; answers 404 elsewhere.
/// let service = service_fn(move |req: Request<Incoming>| {
///     let (engine, config) = (engine.clone(), config.clone());
///     async move {
///         let segment = req.uri().path().strip_prefix("/hooks/").map(str::to_owned);
///         let response = match segment {
///             Some(token) => {
///                 workflow_http::hyper::resume_webhook(&engine, &token, req, &config).await
///             }
///             None => workflow_http::hyper::not_found(),
///         };
///         Ok::<Response<Full<Bytes>>, Infallible>(response)
///     }
/// });
/// # let _ = service;
/// # }
/// ```
pub async fn resume_webhook<B>(
    engine: &Engine,
    token: &str,
    request: Request<B>,
    config: &WebhookConfig,
) -> Response<Full<Bytes>>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    common::resume_segment(engine, token, request, config)
        .await
        .map(Full::new)
}

/// An empty `404 Not Found`, for the paths your service does not serve.
///
/// ```
/// assert_eq!(workflow_http::hyper::not_found().status(), 404);
/// ```
pub fn not_found() -> Response<Full<Bytes>> {
    common::empty(StatusCode::NOT_FOUND).map(Full::new)
}

/// Answers a request on the stream route
/// `/.well-known/workflow/v1/stream/{run}/{name}` (any other path: `404`;
/// any method but `GET` or `HEAD`: `405`) as [`crate::stream`] describes: server-sent
/// events, or NDJSON on request. For your own `service_fn`; [`StreamService`]
/// is the ready service.
///
/// ```no_run
/// use workflow_http::stream::StreamConfig;
/// # async fn demo(engine: workflow_core::Engine, request: http::Request<hyper::body::Incoming>) {
/// let config = StreamConfig::new();
/// let response = workflow_http::hyper::read_stream(&engine, &request, &config).await;
/// # let _ = response;
/// # }
/// ```
pub async fn read_stream<B>(
    engine: &Engine,
    request: &Request<B>,
    config: &StreamConfig,
) -> Response<StreamResponseBody> {
    use http_body_util::BodyExt;
    let answer = |status: StatusCode| common::empty(status).map(|b| Full::new(b).boxed_unsync());
    if request.method() != http::Method::GET && request.method() != http::Method::HEAD {
        let mut r = answer(StatusCode::METHOD_NOT_ALLOWED);
        r.headers_mut()
            .insert(http::header::ALLOW, http::HeaderValue::from_static("GET"));
        return r;
    }
    let Some((run, name)) = crate::stream::stream_path(request.uri().path()) else {
        return answer(StatusCode::NOT_FOUND);
    };
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|s| s.into_owned())
    };
    let (Ok(run), Ok(name)) = (decode(run), decode(name)) else {
        return answer(StatusCode::NOT_FOUND);
    };
    crate::stream::stream_response(
        engine,
        &run,
        &name,
        request.uri().query(),
        request.headers(),
        config,
    )
    .await
}

/// The stream route as a hyper (and tower) service: answers
/// `GET /.well-known/workflow/v1/stream/{run}/{name}` with [`read_stream`],
/// `404` elsewhere. Cheap to clone; clones share the [`StreamConfig`]'s
/// count of readers.
///
/// ```no_run
/// use hyper_util::rt::TokioIo;
/// use workflow_http::hyper::StreamService;
/// # async fn demo(engine: workflow_core::Engine) -> std::io::Result<()> {
/// let service = StreamService::new(engine);
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// let (stream, _) = listener.accept().await?;
/// hyper::server::conn::http1::Builder::new()
///     .serve_connection(TokioIo::new(stream), service)
///     .await
///     .ok();
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct StreamService {
    engine: Engine,
    config: StreamConfig,
}

impl StreamService {
    /// A service with the default [`StreamConfig`].
    pub fn new(engine: Engine) -> Self {
        Self::with_config(engine, StreamConfig::default())
    }

    /// A service with `config`.
    pub fn with_config(engine: Engine, config: StreamConfig) -> Self {
        StreamService { engine, config }
    }

    /// The stream route's limits.
    pub fn config(&self) -> &StreamConfig {
        &self.config
    }
}

/// The future a [`StreamService`] answers with.
pub type StreamFuture = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<Response<StreamResponseBody>, std::convert::Infallible>,
            > + Send
            + 'static,
    >,
>;

impl<B: Send + 'static> ::hyper::service::Service<Request<B>> for StreamService {
    type Response = Response<StreamResponseBody>;
    type Error = std::convert::Infallible;
    type Future = StreamFuture;

    fn call(&self, request: Request<B>) -> StreamFuture {
        let service = self.clone();
        // The body is not read (and need not be `Sync`).
        let request = request.map(|_| ());
        Box::pin(async move { Ok(read_stream(&service.engine, &request, &service.config).await) })
    }
}

impl<B: Send + 'static> tower_service::Service<Request<B>> for StreamService {
    type Response = Response<StreamResponseBody>;
    type Error = std::convert::Infallible;
    type Future = StreamFuture;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), std::convert::Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> StreamFuture {
        ::hyper::service::Service::call(&*self, request)
    }
}
