//! `WebhookService` behind a tower layer that checks a bearer token, mounted
//! in axum (`Router::route_service`) and in hyper (hyper-util's
//! `TowerToHyperService`), each with a real server on 127.0.0.1: requests
//! without the token are refused before the webhook sees them.

mod support;

use std::convert::Infallible;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::{ready, Either, Ready};
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use support::{collected, engine, header_values, hook, start, Body, Http};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use workflow_http::{WebhookService, WEBHOOK_PATH_PREFIX};

const SECRET: &str = "Bearer s3cret";

/// A tower layer that answers `401` unless `Authorization` is `SECRET`.
#[derive(Clone)]
struct RequireBearer;

impl<S> Layer<S> for RequireBearer {
    type Service = Bearer<S>;

    fn layer(&self, inner: S) -> Bearer<S> {
        Bearer { inner }
    }
}

#[derive(Clone)]
struct Bearer<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for Bearer<S>
where
    S: Service<Request<B>, Response = Response<Full<Bytes>>>,
{
    type Response = Response<Full<Bytes>>;
    type Error = S::Error;
    type Future = Either<Ready<Result<Self::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let expected = HeaderValue::from_static(SECRET);
        if request.headers().get(header::AUTHORIZATION) == Some(&expected) {
            return Either::Right(self.inner.call(request));
        }
        let mut refused = Response::new(Full::new(Bytes::new()));
        *refused.status_mut() = StatusCode::UNAUTHORIZED;
        Either::Left(ready(Ok(refused)))
    }
}

/// No token and a wrong token: 401, nothing recorded (the run's one request
/// is the authorized one); the right token: 202, the workflow has the request.
async fn only_the_bearer_resumes(http: &Http, e: &workflow_core::Engine) {
    let run = start(e, "collect", &("order:42", 1u32), "order:42").await;
    let path = hook("order%3A42?src=test");
    let resp = http.send("POST", &path, &[], Body::text("anonymous")).await;
    assert_eq!(resp.status, 401);
    let wrong = [("authorization", "Bearer guess")];
    let resp = http
        .send("POST", &path, &wrong, Body::text("guessed"))
        .await;
    assert_eq!(resp.status, 401);
    assert!(
        e.get_hook("order:42").await.expect("store").is_some(),
        "the webhook is still waiting"
    );
    let right = [("authorization", SECRET), ("x-kind", "payment")];
    let resp = http.send("POST", &path, &right, Body::text("paid")).await;
    assert_eq!(resp.status, 202);
    let got = collected(e, &run).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].text(), Some("paid"));
    assert_eq!(got[0].uri, path);
    assert_eq!(header_values(&got[0], "x-kind"), ["payment"]);
}

/// In axum: `route_service` on the well-known route, the layer in front.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_route_service_behind_a_bearer_layer() {
    let e = engine();
    let webhooks = ServiceBuilder::new()
        .layer(RequireBearer)
        .service(WebhookService::new(e.clone()));
    let app =
        axum::Router::new().route_service(&format!("{WEBHOOK_PATH_PREFIX}{{token}}"), webhooks);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    only_the_bearer_resumes(&Http::new(addr), &e).await;
    e.shutdown().await;
}

/// In hyper: the layered service through `TowerToHyperService`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_tower_to_hyper_service_behind_a_bearer_layer() {
    let e = engine();
    let webhooks = RequireBearer.layer(WebhookService::new(e.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let service = hyper_util::service::TowerToHyperService::new(webhooks);
    tokio::spawn(support::serve_hyper(listener, service));
    only_the_bearer_resumes(&Http::new(addr), &e).await;
    e.shutdown().await;
}

/// On a route of its own, nested in axum: the token is the last segment and
/// the workflow sees the original path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_route_nested_in_axum() {
    let e = engine();
    let hooks = WebhookService::new(e.clone()).on_any_path();
    let api = axum::Router::new().route_service("/hooks/{token}", hooks);
    let app = axum::Router::new().nest("/api", api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = Http::new(addr);
    let run = start(&e, "collect", &("order:42", 1u32), "order:42").await;
    assert_eq!(http.post("/api/hooks/bad%zz", "x").await.status, 400);
    assert_eq!(http.post("/api/hooks/unknown", "x").await.status, 404);
    assert_eq!(
        http.post("/api/hooks/order%3A42?a=1", "hi").await.status,
        202
    );
    let got = collected(&e, &run).await;
    assert_eq!(got[0].uri, "/api/hooks/order%3A42?a=1");
    e.shutdown().await;
}

/// In-process with `oneshot`: the service is `Clone`, never fails, and
/// answers `404` outside the well-known path.
#[tokio::test]
async fn oneshot_in_process() {
    let e = engine();
    let service = WebhookService::new(e.clone());
    let request = |path: &str| {
        Request::post(path)
            .body(Full::new(Bytes::from_static(b"x")))
            .expect("request")
    };
    let answer: Result<_, Infallible> = service.clone().oneshot(request("/elsewhere")).await;
    assert_eq!(answer.map(|r| r.status()), Ok(StatusCode::NOT_FOUND));
    let answer = service.clone().oneshot(request(&hook("bad%zz"))).await;
    assert_eq!(answer.map(|r| r.status()), Ok(StatusCode::BAD_REQUEST));
    let answer = service.oneshot(request(&hook("nobody"))).await;
    assert_eq!(answer.map(|r| r.status()), Ok(StatusCode::NOT_FOUND));
    e.shutdown().await;
}

/// `server::serve` takes the service as it is (a compile-time check).
#[cfg(feature = "server")]
#[allow(dead_code)]
async fn served_within_limits(listener: tokio::net::TcpListener, e: workflow_core::Engine) {
    let service = RequireBearer.layer(WebhookService::new(e));
    let limits = workflow_http::server::ServerLimits::default();
    let _ = workflow_http::server::serve(listener, service, limits, std::future::pending()).await;
}
