//! Shared test support: engines with test workflows, a real server per
//! adapter on 127.0.0.1, and a real HTTP/1.1 client (hyper-util's).

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body::Frame;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full, StreamBody};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use workflow_core::{Context, Engine, WebhookOptions, WebhookRequest, WorkflowError};
use workflow_http::WebhookConfig;
use workflow_store::{MemoryStore, RunId};

/// The adapter a server is built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adapter {
    Hyper,
    Axum,
    Warp,
    /// `WebhookService` in axum with `Router::route_service`.
    Tower,
}

/// A request body as the client sends it.
pub enum Body {
    Empty,
    /// With `Content-Length`.
    Full(Bytes),
    /// `Transfer-Encoding: chunked`, no `Content-Length`, one chunk per item.
    Chunked(Vec<Bytes>),
}

impl Body {
    pub fn text(s: &str) -> Body {
        Body::Full(Bytes::from(s.to_string()))
    }

    fn into_box(self) -> BoxBody<Bytes, Infallible> {
        match self {
            Body::Empty => Empty::new().boxed(),
            Body::Full(b) => Full::new(b).boxed(),
            Body::Chunked(chunks) => {
                let frames = futures::stream::iter(
                    chunks
                        .into_iter()
                        .map(|c| Ok::<_, Infallible>(Frame::data(c))),
                );
                StreamBody::new(frames).boxed()
            }
        }
    }
}

/// A response as the client received it.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Waits for `n` requests on a default-mode webhook and returns them.
async fn collect(
    ctx: Context,
    (token, n): (String, u32),
) -> Result<Vec<WebhookRequest>, WorkflowError> {
    let mut wh = ctx.create_webhook(WebhookOptions::token(token))?;
    let mut got = Vec::new();
    for _ in 0..n {
        got.push(wh.next().await?);
    }
    Ok(got)
}

/// Answers every request with a static `201`.
async fn fixed(ctx: Context, (token, n): (String, u32)) -> Result<u32, WorkflowError> {
    let response = http::Response::builder()
        .status(201)
        .header("x-kind", "static")
        .body(Bytes::from_static(b"thanks"))
        .map_err(WorkflowError::fatal)?;
    let mut wh = ctx.create_webhook(WebhookOptions::token(token).static_response(response))?;
    for _ in 0..n {
        wh.next().await?;
    }
    Ok(n)
}

/// Manual mode: echoes each request; leaves "slow" unanswered; ends on "stop".
async fn manual(ctx: Context, (token, timeout_ms): (String, u64)) -> Result<u32, WorkflowError> {
    let mut wh =
        ctx.create_webhook(WebhookOptions::token(token).manual(Duration::from_millis(timeout_ms)))?;
    let mut answered = 0;
    loop {
        let req = wh.next().await?;
        let text = req.text().unwrap_or_default().to_string();
        if text == "slow" {
            continue;
        }
        answered += 1;
        req.respond(
            http::Response::builder()
                .status(200)
                .header("x-echo", "yes")
                .body(Bytes::from(format!("{} {} {}", req.method, req.uri, text)))
                .map_err(WorkflowError::fatal)?,
        );
        if text == "stop" {
            return Ok(answered);
        }
    }
}

/// An engine on a memory store with the test workflows, workers started.
pub fn engine() -> Engine {
    let e = Engine::builder(MemoryStore::new())
        .poll_interval(Duration::from_millis(20))
        .lease_ttl(Duration::from_secs(10))
        .workflow("collect", collect)
        .workflow("fixed", fixed)
        .workflow("manual", manual)
        .build();
    e.start_workers();
    e
}

/// Starts `workflow` with `input` and waits until the webhook `token` is live.
pub async fn start<I: serde::Serialize>(
    e: &Engine,
    workflow: &str,
    input: &I,
    token: &str,
) -> RunId {
    let run = e.start(workflow, input).await.expect("start");
    e.wait_for_hook(token, Duration::from_secs(10))
        .await
        .unwrap_or_else(|err| panic!("webhook {token} never became live: {err}"));
    run
}

/// The requests a `collect` run received (waits for it to end).
pub async fn collected(e: &Engine, run: &RunId) -> Vec<WebhookRequest> {
    tokio::time::timeout(Duration::from_secs(20), e.result(run))
        .await
        .expect("the run ends in time")
        .expect("the run succeeds")
}

/// A server for `adapter` on 127.0.0.1 (a free port) serving the well-known
/// path; runs until the test's runtime ends.
#[allow(unused_variables)]
pub async fn serve(adapter: Adapter, engine: Engine, config: WebhookConfig) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    match adapter {
        Adapter::Hyper => {
            #[cfg(feature = "hyper")]
            {
                let service = workflow_http::hyper::WebhookService::with_config(engine, config);
                tokio::spawn(serve_hyper(listener, service));
            }
        }
        Adapter::Axum => {
            #[cfg(feature = "axum")]
            {
                let app: ::axum::Router = workflow_http::axum::router_with(engine, config);
                tokio::spawn(async move { ::axum::serve(listener, app).await });
            }
        }
        Adapter::Warp => {
            #[cfg(feature = "warp")]
            {
                let routes = workflow_http::warp::webhook_with(engine, config);
                tokio::spawn(::warp::serve(routes).incoming(listener).run());
            }
        }
        Adapter::Tower => {
            #[cfg(all(feature = "tower", feature = "axum"))]
            {
                use workflow_http::WEBHOOK_PATH_PREFIX;
                let service = workflow_http::WebhookService::with_config(engine, config);
                // The prefix itself too, so that an empty token is a 400.
                let app: ::axum::Router = ::axum::Router::new()
                    .route_service(&format!("{WEBHOOK_PATH_PREFIX}{{token}}"), service.clone())
                    .route_service(WEBHOOK_PATH_PREFIX, service);
                tokio::spawn(async move { ::axum::serve(listener, app).await });
            }
        }
    }
    addr
}

/// Serves `service` with hyper's HTTP/1 server on every accepted connection.
pub async fn serve_hyper<S>(listener: tokio::net::TcpListener, service: S)
where
    S: ::hyper::service::Service<
            Request<::hyper::body::Incoming>,
            Response = http::Response<Full<Bytes>>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let service = service.clone();
        tokio::spawn(async move {
            let _ = ::hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

/// A client for one server.
#[derive(Clone)]
pub struct Http {
    addr: SocketAddr,
    client: Client<HttpConnector, BoxBody<Bytes, Infallible>>,
}

impl Http {
    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn new(addr: SocketAddr) -> Http {
        Http {
            addr,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Sends a request and reads the whole answer.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Answer {
        let mut req = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).expect("method"))
            .uri(format!("http://{}{path}", self.addr));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(body.into_box()).expect("request");
        let resp = tokio::time::timeout(Duration::from_secs(20), self.client.request(req))
            .await
            .expect("answered in time")
            .unwrap_or_else(|e| panic!("{method} {path}: {e:?}"));
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("response body").to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub async fn post(&self, path: &str, body: &str) -> Answer {
        self.send("POST", path, &[], Body::text(body)).await
    }
}

/// A server for `adapter` with `config`, a fresh engine and a client.
pub async fn setup(adapter: Adapter, config: WebhookConfig) -> (Engine, Http) {
    let e = engine();
    let addr = serve(adapter, e.clone(), config).await;
    (e, Http::new(addr))
}

/// The well-known path of `segment` (used as is: encode it yourself).
pub fn hook(segment: &str) -> String {
    format!("{}{segment}", workflow_http::WEBHOOK_PATH_PREFIX)
}

/// The values of header `name` in a recorded request, in order.
pub fn header_values(req: &WebhookRequest, name: &str) -> Vec<String> {
    req.headers
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .collect()
}
