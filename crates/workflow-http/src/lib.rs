//! HTTP adapters for durable workflows: resume webhooks from hyper, axum or warp.
//!
//! A workflow waits on a webhook created with
//! [`Context::create_webhook`](workflow_core::Context::create_webhook); a
//! sender resumes it with any HTTP request to
//! `/.well-known/workflow/v1/webhook/{token}` ([`workflow_core::webhook_path`]).
//! This crate serves that path as a tower service and for three frameworks,
//! each behind a cargo feature:
//!
//! | feature | module | what you get |
//! |---|---|---|
//! | `tower` | `workflow_http::service` (tower-service 0.3) | `WebhookService`: the handler as a `tower::Service`, for your own layers (auth, tracing, timeouts, rate limits); mount it with axum's `Router::route_service` or hyper-util's `TowerToHyperService` |
//! | `hyper` | `workflow_http::hyper` (hyper 1; implies `tower`) | `resume_webhook` for `service_fn`, and `WebhookService`, which hyper serves directly |
//! | `axum` | `workflow_http::axum` (axum 0.8) | `router` / `router_with`, and a `resume_webhook` handler for your own route |
//! | `warp` | `workflow_http::warp` (warp 0.4) | `webhook` / `webhook_with` filters, `resume_webhook` for your own path, `recover` |
//! | `dashboard` | `workflow_http::dashboard` (axum 0.8) | a read-only runs dashboard (HTML and a JSON API) to mount in your app; off unless mounted |
//! | `server` | `workflow_http::server` (hyper 1) | `serve` an axum `Router` (or any tower service) with read timeouts, a connection cap, head limits and a shutdown deadline |
//!
//! The service and every adapter behave the same, because each converts its
//! framework's request and calls the framework-neutral [`resume_webhook`] of
//! this crate, which in turn calls [`Engine::resume_webhook`]:
//!
//! | case | answer |
//! |---|---|
//! | default webhook | `202 Accepted`, empty body, once the request is recorded |
//! | static webhook | the stored response |
//! | manual webhook | the workflow's [`WebhookRequest::respond`](workflow_core::WebhookRequest::respond), or `504` after its timeout |
//! | no live webhook with this token | `404`, empty body |
//! | empty token (`.../webhook/`) or invalid token | `400` |
//! | body longer than [`WebhookConfig::body_limit`] (default 1 MiB) | `413`, checked while the body streams in, so chunked bodies without `Content-Length` are limited too |
//! | the body could not be read | `400` |
//! | the store failed | `503` |
//! | a path outside `/.well-known/workflow/v1/webhook/{token}` (`WebhookService`, hyper, warp) | `404`, empty body |
//!
//! Every method is accepted. The request's method, path and query, headers
//! and body reach the workflow unchanged; the token, the last path segment, is
//! percent-decoded (`order%3A42` is the token `order:42`).
//!
//! ```
//! use workflow_http::{decode_token, WebhookConfig};
//! assert_eq!(decode_token("order%3A42").unwrap(), "order:42");
//! let config = WebhookConfig::default().with_body_limit(64 * 1024);
//! assert_eq!(config.body_limit, 65536);
//! ```
#![warn(missing_docs)]

mod common;

#[cfg(feature = "axum")]
pub mod axum;
#[cfg(feature = "dashboard")]
pub mod dashboard;
#[cfg(feature = "hyper")]
pub mod hyper;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "tower")]
pub mod service;
#[cfg(feature = "stream")]
pub mod stream;
#[cfg(feature = "warp")]
pub mod warp;

pub use common::{
    collect_body, decode_token, live_webhook, resume_webhook, token_from_path, BodyError,
    TokenError, WebhookConfig, DEFAULT_BODY_LIMIT, DEFAULT_DRAIN_LIMIT, DRAIN_TIME,
};
#[cfg(feature = "tower")]
pub use service::WebhookService;
pub use workflow_core::{webhook_path, Engine, WEBHOOK_PATH_PREFIX};
