//! hyper 1: [`resume_webhook`] for your own `service_fn`, and a ready
//! [`WebhookService`] that serves `/.well-known/workflow/v1/webhook/{token}`.
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

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::Full;
use workflow_core::Engine;

use crate::common::{self, WebhookConfig};

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
    let response = match common::decode_token(token) {
        Ok(token) => common::resume_webhook(engine, &token, request, config).await,
        Err(e) => {
            tracing::debug!(error = %e, "webhook token segment does not decode");
            common::plain(StatusCode::BAD_REQUEST, e.to_string())
        }
    };
    response.map(Full::new)
}

/// An empty `404 Not Found`, for the paths your service does not serve.
///
/// ```
/// assert_eq!(workflow_http::hyper::not_found().status(), 404);
/// ```
pub fn not_found() -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::NOT_FOUND;
    r
}

/// A hyper [`Service`](::hyper::service::Service) that resumes webhooks at
/// `/.well-known/workflow/v1/webhook/{token}` for every method, and answers
/// `404` for every other path (and for paths with segments after the token).
/// Cheap to clone: one per connection.
///
/// ```no_run
/// # use workflow_http::{hyper::WebhookService, WebhookConfig};
/// # fn demo(engine: workflow_core::Engine) {
/// let service = WebhookService::with_config(engine, WebhookConfig::new().with_body_limit(64 * 1024));
/// // hyper::server::conn::http1::Builder::new().serve_connection(io, service.clone())
/// # let _ = service;
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct WebhookService {
    engine: Engine,
    config: Arc<WebhookConfig>,
}

impl WebhookService {
    /// A service with the default [`WebhookConfig`].
    ///
    /// ```no_run
    /// # fn demo(engine: workflow_core::Engine) {
    /// let service = workflow_http::hyper::WebhookService::new(engine);
    /// # let _ = service;
    /// # }
    /// ```
    pub fn new(engine: Engine) -> Self {
        Self::with_config(engine, WebhookConfig::default())
    }

    /// A service with `config`.
    ///
    /// ```no_run
    /// # fn demo(engine: workflow_core::Engine) {
    /// let config = workflow_http::WebhookConfig::new().with_body_limit(4096);
    /// let service = workflow_http::hyper::WebhookService::with_config(engine, config);
    /// # let _ = service;
    /// # }
    /// ```
    pub fn with_config(engine: Engine, config: WebhookConfig) -> Self {
        WebhookService {
            engine,
            config: Arc::new(config),
        }
    }

    /// The configuration.
    ///
    /// ```no_run
    /// # fn demo(engine: workflow_core::Engine) {
    /// let service = workflow_http::hyper::WebhookService::new(engine);
    /// assert_eq!(service.config().body_limit, workflow_http::DEFAULT_BODY_LIMIT);
    /// # }
    /// ```
    pub fn config(&self) -> &WebhookConfig {
        &self.config
    }

    /// Answers one request: resumes the webhook if the path is a webhook path,
    /// `404` otherwise.
    ///
    /// ```no_run
    /// # async fn demo(engine: workflow_core::Engine) {
    /// let service = workflow_http::hyper::WebhookService::new(engine);
    /// let req = http::Request::post("/.well-known/workflow/v1/webhook/order%3A42")
    ///     .body(http_body_util::Empty::<bytes::Bytes>::new())
    ///     .expect("a valid request");
    /// let response = service.handle(req).await;
    /// # let _ = response;
    /// # }
    /// ```
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let Some(segment) = common::token_from_path(request.uri().path()).map(str::to_owned) else {
            return not_found();
        };
        resume_webhook(&self.engine, &segment, request, &self.config).await
    }
}

impl<B> ::hyper::service::Service<Request<B>> for WebhookService
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<B>) -> Self::Future {
        let service = self.clone();
        Box::pin(async move { Ok(service.handle(request).await) })
    }
}
