//! What the HTTP benchmarks share: the three adapters' servers on loopback,
//! a bare server of each framework around a caller's durable write, and a
//! keep-alive client.

// Each benchmark uses a part of this module.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use warp::Filter;
use workflow_core::Engine;

/// The request body every benchmark posts.
pub const BODY: &[u8] =
    br#"{"event":"payment.succeeded","order":"order-42","amount":1999,"currency":"EUR"}"#;

/// An HTTP adapter of this crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adapter {
    Hyper,
    Axum,
    Warp,
}

impl Adapter {
    pub const ALL: [Adapter; 3] = [Adapter::Hyper, Adapter::Axum, Adapter::Warp];

    pub fn name(self) -> &'static str {
        match self {
            Adapter::Hyper => "hyper",
            Adapter::Axum => "axum",
            Adapter::Warp => "warp",
        }
    }
}

/// A bare handler's work on a request body: one durable write.
pub type BareWrite =
    Arc<dyn Fn(Bytes) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync + 'static>;

fn accepted() -> http::Response<Full<Bytes>> {
    let mut r = http::Response::new(Full::new(Bytes::new()));
    *r.status_mut() = http::StatusCode::ACCEPTED;
    r
}

async fn listener() -> (tokio::net::TcpListener, SocketAddr) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    (l, addr)
}

pub async fn serve_hyper<S>(l: tokio::net::TcpListener, service: S)
where
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<Full<Bytes>>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    while let Ok((stream, _)) = l.accept().await {
        let service = service.clone();
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The webhook server of `adapter` for `engine`.
pub async fn serve_webhook(adapter: Adapter, engine: Engine) -> SocketAddr {
    let (l, addr) = listener().await;
    match adapter {
        Adapter::Hyper => {
            let service = workflow_http::hyper::WebhookService::new(engine);
            tokio::spawn(serve_hyper(l, service));
        }
        Adapter::Axum => {
            let app: axum::Router = workflow_http::axum::router(engine);
            tokio::spawn(async move { axum::serve(l, app).await });
        }
        Adapter::Warp => {
            let routes = workflow_http::warp::webhook(engine);
            tokio::spawn(warp::serve(routes).incoming(l).run());
        }
    }
    addr
}

/// The bare server of `adapter` at `/bare`: read the body, `write` it, 202.
pub async fn serve_bare(adapter: Adapter, write: BareWrite) -> SocketAddr {
    let (l, addr) = listener().await;
    match adapter {
        Adapter::Hyper => {
            let service =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let write = write.clone();
                    async move {
                        let body = req.into_body().collect().await.map(|b| b.to_bytes());
                        if let Ok(body) = body {
                            write(body).await;
                        }
                        Ok::<_, Infallible>(accepted())
                    }
                });
            tokio::spawn(serve_hyper(l, service));
        }
        Adapter::Axum => {
            async fn handler(
                axum::extract::State(write): axum::extract::State<BareWrite>,
                body: Bytes,
            ) -> http::StatusCode {
                write(body).await;
                http::StatusCode::ACCEPTED
            }
            let app = axum::Router::new()
                .route("/bare", axum::routing::any(handler))
                .with_state(write);
            tokio::spawn(async move { axum::serve(l, app).await });
        }
        Adapter::Warp => {
            let routes = warp::path!("bare")
                .and(warp::body::bytes())
                .then(move |body: Bytes| {
                    let write = write.clone();
                    async move {
                        write(body).await;
                        warp::http::StatusCode::ACCEPTED
                    }
                });
            tokio::spawn(warp::serve(routes).incoming(l).run());
        }
    }
    addr
}

/// A bare handler of `adapter` at `/direct` that collects the body with the
/// framework's own means and calls `Engine::resume_webhook(token)` itself:
/// the engine's cost without this crate's adapter.
pub async fn serve_direct(adapter: Adapter, engine: Engine, token: &'static str) -> SocketAddr {
    async fn resume(
        engine: &Engine,
        token: &str,
        method: http::Method,
        uri: http::Uri,
        body: Bytes,
    ) -> http::StatusCode {
        let mut req = http::Request::new(body);
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        engine.resume_webhook(token, req).await.status()
    }
    let (l, addr) = listener().await;
    match adapter {
        Adapter::Hyper => {
            let service =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let engine = engine.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let mut r = accepted();
                        if let Ok(body) = body.collect().await.map(|b| b.to_bytes()) {
                            *r.status_mut() =
                                resume(&engine, token, parts.method, parts.uri, body).await;
                        }
                        Ok::<_, Infallible>(r)
                    }
                });
            tokio::spawn(serve_hyper(l, service));
        }
        Adapter::Axum => {
            let app = axum::Router::new().route(
                "/direct",
                axum::routing::any(
                    move |method: http::Method, uri: http::Uri, body: Bytes| async move {
                        resume(&engine, token, method, uri, body).await
                    },
                ),
            );
            tokio::spawn(async move { axum::serve(l, app).await });
        }
        Adapter::Warp => {
            let routes = warp::path!("direct")
                .and(warp::method())
                .and(warp::body::bytes())
                .then(move |method: http::Method, body: Bytes| {
                    let engine = engine.clone();
                    async move {
                        let uri = http::Uri::from_static("/direct");
                        resume(&engine, token, method, uri, body).await
                    }
                });
            tokio::spawn(warp::serve(routes).incoming(l).run());
        }
    }
    addr
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A keep-alive HTTP/1 client.
pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Posts [`BODY`] to `url`, expects 202, returns the round trip's time.
pub async fn post(client: &HttpClient, url: &str) -> Duration {
    let req = http::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(BODY)))
        .expect("request");
    let started = Instant::now();
    let resp = client.request(req).await.expect("response");
    let status = resp.status();
    resp.into_body().collect().await.expect("body");
    let took = started.elapsed();
    assert_eq!(status, 202, "{url}");
    took
}

/// The `p` quantile (0 to 1) of `samples`.
pub fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut v = samples.to_vec();
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or_default()
}

/// Milliseconds with three decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}
