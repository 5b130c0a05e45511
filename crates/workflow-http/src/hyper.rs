//! hyper 1: [`resume_webhook`] for your own `service_fn`, and a ready
//! [`WebhookService`] that serves `/.well-known/workflow/v1/webhook/{token}`.
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
