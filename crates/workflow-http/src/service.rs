//! The webhook handler as a [`tower::Service`](tower_service::Service):
//! [`WebhookService`], to put behind your own tower layers (authentication,
//! tracing, timeouts, rate limits) and mount wherever tower services go.
//!
//! It answers exactly as the framework adapters do (see the table in the
//! crate documentation), for any request body, with a
//! `Response<Full<Bytes>>` and no error (`Infallible`). In axum, mount it with
//! [`Router::route_service`](https://docs.rs/axum/0.8/axum/struct.Router.html#method.route_service);
//! in hyper, wrap it (or the layered stack) in hyper-util's
//! `TowerToHyperService`. Here a bearer token guards webhooks with custom,
//! guessable tokens, in both:
//!
//! ```no_run
//! use std::convert::Infallible;
//! use axum::{extract::Request, http::StatusCode, middleware::Next, response::Response};
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tower::ServiceExt;
//! use workflow_http::{WebhookService, WEBHOOK_PATH_PREFIX};
//!
//! fn authorized<B>(request: &http::Request<B>) -> bool {
//!     request.headers().get(http::header::AUTHORIZATION).is_some_and(|v| v == "Bearer s3cret")
//! }
//!
//! // axum: any middleware or tower layer goes in front of the service.
//! async fn require_bearer(request: Request, next: Next) -> Result<Response, StatusCode> {
//!     if !authorized(&request) {
//!         return Err(StatusCode::UNAUTHORIZED);
//!     }
//!     Ok(next.run(request).await)
//! }
//!
//! # async fn demo(engine: workflow_core::Engine) -> std::io::Result<()> {
//! let webhooks = WebhookService::new(engine);
//! let app: axum::Router = axum::Router::new()
//!     .route_service(&format!("{WEBHOOK_PATH_PREFIX}{{token}}"), webhooks.clone())
//!     .route_layer(axum::middleware::from_fn(require_bearer));
//!
//! // hyper: the same check as a tower service in front, served through
//! // hyper-util's TowerToHyperService.
//! let guarded = tower::service_fn(move |request: http::Request<hyper::body::Incoming>| {
//!     let webhooks = webhooks.clone();
//!     async move {
//!         if !authorized(&request) {
//!             let mut refused = http::Response::new(Full::new(Bytes::new()));
//!             *refused.status_mut() = http::StatusCode::UNAUTHORIZED;
//!             return Ok::<_, Infallible>(refused);
//!         }
//!         webhooks.oneshot(request).await
//!     }
//! });
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! let (stream, _) = listener.accept().await?;
//! let service = hyper_util::service::TowerToHyperService::new(guarded);
//! let conn = hyper::server::conn::http1::Builder::new()
//!     .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
//! # let _ = (app, conn);
//! # Ok(())
//! # }
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::Full;
use workflow_core::Engine;

use crate::common::{self, WebhookConfig};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The future a [`WebhookService`] answers with: boxed, `Send`, never an error.
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static>>;

/// The webhook handler as a tower [`Service`](tower_service::Service) (and,
/// with the `hyper` feature, a hyper `Service`): resumes webhooks at
/// `/.well-known/workflow/v1/webhook/{token}` for every method and any request
/// body, and answers `404` for every other path (and for paths with segments
/// after the token). Cheap to clone (an engine handle and a shared config).
///
/// The token is the last path segment, percent-decoded. Under axum's
/// `Router::nest`, the path is matched as the router hands it on and the
/// workflow sees the original one. For a route of your own
/// (`/hooks/{token}`), call [`on_any_path`](Self::on_any_path).
///
/// ```
/// use tower::ServiceExt;
/// use workflow_http::{WebhookConfig, WebhookService};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// # let engine = workflow_core::Engine::builder(workflow_store::MemoryStore::new()).build();
/// let service = WebhookService::with_config(engine, WebhookConfig::new().with_body_limit(64 * 1024));
/// let request = http::Request::post("/.well-known/workflow/v1/webhook/no-such-token")
///     .body(http_body_util::Empty::<bytes::Bytes>::new())
///     .expect("a valid request");
/// let response = service.oneshot(request).await.expect("infallible");
/// assert_eq!(response.status(), 404);
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct WebhookService {
    engine: Engine,
    config: Arc<WebhookConfig>,
    any_path: bool,
}

impl WebhookService {
    /// A service with the default [`WebhookConfig`].
    ///
    /// ```no_run
    /// # fn demo(engine: workflow_core::Engine) {
    /// let service = workflow_http::WebhookService::new(engine);
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
    /// let service = workflow_http::WebhookService::with_config(engine, config);
    /// # let _ = service;
    /// # }
    /// ```
    pub fn with_config(engine: Engine, config: WebhookConfig) -> Self {
        WebhookService {
            engine,
            config: Arc::new(config),
            any_path: false,
        }
    }

    /// Takes the token from the last path segment of any path instead of
    /// answering `404` outside `/.well-known/workflow/v1/webhook/`: for a
    /// router that matched a route of your own already (`/hooks/` is an empty
    /// token, `400`). Do not serve it on its own this way: every path would
    /// resume webhooks.
    ///
    /// ```no_run
    /// # fn demo(engine: workflow_core::Engine) {
    /// let hooks = workflow_http::WebhookService::new(engine).on_any_path();
    /// let app: axum::Router = axum::Router::new().route_service("/hooks/{token}", hooks);
    /// # let _ = app;
    /// # }
    /// ```
    pub fn on_any_path(mut self) -> Self {
        self.any_path = true;
        self
    }

    /// The configuration.
    ///
    /// ```no_run
    /// # fn demo(engine: workflow_core::Engine) {
    /// let service = workflow_http::WebhookService::new(engine);
    /// assert_eq!(service.config().body_limit, workflow_http::DEFAULT_BODY_LIMIT);
    /// # }
    /// ```
    pub fn config(&self) -> &WebhookConfig {
        &self.config
    }

    /// Answers one request: resumes the webhook if the path is a webhook path,
    /// `404` otherwise. What `call` does, without the service traits.
    ///
    /// ```no_run
    /// # async fn demo(engine: workflow_core::Engine) {
    /// let service = workflow_http::WebhookService::new(engine);
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
        let path = request.uri().path();
        let segment = if self.any_path {
            path.rsplit('/').next()
        } else {
            common::token_from_path(path)
        };
        let Some(segment) = segment.map(str::to_owned) else {
            return common::empty(StatusCode::NOT_FOUND).map(Full::new);
        };
        let request = with_original_uri(request);
        common::resume_segment(&self.engine, &segment, request, &self.config)
            .await
            .map(Full::new)
    }
}

/// The request with the URI it had before axum's `nest` stripped a prefix,
/// so that the workflow sees the path as sent.
#[cfg(feature = "axum")]
fn with_original_uri<B>(request: Request<B>) -> Request<B> {
    let (mut parts, body) = request.into_parts();
    if let Some(axum::extract::OriginalUri(uri)) = parts.extensions.get() {
        parts.uri = uri.clone();
    }
    Request::from_parts(parts, body)
}

#[cfg(not(feature = "axum"))]
fn with_original_uri<B>(request: Request<B>) -> Request<B> {
    request
}

impl<B> tower_service::Service<Request<B>> for WebhookService
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> ResponseFuture {
        let service = self.clone();
        Box::pin(async move { Ok(service.handle(request).await) })
    }
}

/// hyper 1 serves it directly (`serve_connection(io, service)`), without
/// `TowerToHyperService`.
#[cfg(feature = "hyper")]
impl<B> ::hyper::service::Service<Request<B>> for WebhookService
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, request: Request<B>) -> ResponseFuture {
        let service = self.clone();
        Box::pin(async move { Ok(service.handle(request).await) })
    }
}
