//! Each adapter on the user's own route (not the well-known path), with a real
//! server on 127.0.0.1 and a real HTTP/1.1 client.

mod support;

#[allow(unused_imports)]
use support::{collected, engine, header_values, start, Body, Http};
#[allow(unused_imports)]
use workflow_http::WebhookConfig;

#[cfg(feature = "hyper")]
mod hyper {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Full;
    use std::convert::Infallible;

    /// `resume_webhook` inside the user's own `service_fn`, on `/hooks/{token}`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn own_route_in_service_fn() {
        let e = engine();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let engine = e.clone();
        let config = WebhookConfig::new().with_body_limit(100);
        let service =
            ::hyper::service::service_fn(move |req: http::Request<::hyper::body::Incoming>| {
                let (engine, config) = (engine.clone(), config.clone());
                async move {
                    let segment = req.uri().path().strip_prefix("/hooks/").map(str::to_owned);
                    let response = match segment {
                        Some(token) => {
                            workflow_http::hyper::resume_webhook(&engine, &token, req, &config)
                                .await
                        }
                        None => workflow_http::hyper::not_found(),
                    };
                    Ok::<http::Response<Full<Bytes>>, Infallible>(response)
                }
            });
        tokio::spawn(support::serve_hyper(listener, service));
        let http = Http::new(addr);
        let run = start(&e, "collect", &("order:42", 1u32), "order:42").await;
        // Refused while the webhook is live (nothing recorded); once the run
        // has its one request it ends and its token answers 404.
        let big = "x".repeat(101);
        assert_eq!(http.post("/hooks/order%3A42", &big).await.status, 413);
        assert_eq!(http.post("/hooks/order%3A42?x=1", "hi").await.status, 202);
        assert_eq!(http.post("/elsewhere", "hi").await.status, 404);
        assert_eq!(http.post("/hooks/", "hi").await.status, 400);
        assert_eq!(http.post("/hooks/bad%2", "hi").await.status, 400);
        let got = collected(&e, &run).await;
        assert_eq!(got[0].uri, "/hooks/order%3A42?x=1");
        assert_eq!(got[0].text(), Some("hi"));
        e.shutdown().await;
    }
}

#[cfg(feature = "axum")]
mod axum {
    use super::*;
    use ::axum::extract::{FromRef, State};
    use ::axum::routing::{any, get};
    use ::axum::Router;
    use workflow_http::axum::{resume_webhook, WebhookState};

    async fn serve_app(app: Router) -> Http {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { ::axum::serve(listener, app).await });
        Http::new(addr)
    }

    /// The handler on a route nested under `/api`: the workflow sees the
    /// original path and query.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn own_route_nested_handler() {
        let e = engine();
        let hooks = Router::new()
            .route("/hooks/{token}", any(resume_webhook))
            .with_state(WebhookState::with_config(
                e.clone(),
                WebhookConfig::new().with_body_limit(100),
            ));
        let http = serve_app(Router::new().nest("/api", hooks)).await;
        let run = start(&e, "collect", &("order:42", 2u32), "order:42").await;
        // Refused while the webhook is live (nothing recorded): once the run
        // has its requests it ends and its token answers 404.
        let big = "x".repeat(101);
        assert_eq!(http.post("/api/hooks/order%3A42", &big).await.status, 413);
        assert_eq!(
            http.post("/api/hooks/order%3A42?x=1", "hi").await.status,
            202
        );
        let resp = http
            .send("DELETE", "/api/hooks/order:42", &[], Body::Empty)
            .await;
        assert_eq!(resp.status, 202);
        assert_eq!(http.post("/api/hooks/bad%20token", "hi").await.status, 400);
        assert_eq!(http.post("/api/hooks/unknown", "hi").await.status, 404);
        let got = collected(&e, &run).await;
        assert_eq!(got[0].uri, "/api/hooks/order%3A42?x=1");
        assert_eq!(got[1].method, "DELETE");
        e.shutdown().await;
    }

    #[derive(Clone)]
    struct AppState {
        name: &'static str,
        webhooks: WebhookState,
    }

    impl FromRef<AppState> for WebhookState {
        fn from_ref(app: &AppState) -> WebhookState {
            app.webhooks.clone()
        }
    }

    /// `router` merges into an app with its own state; the handler takes its
    /// state from the app's with `FromRef`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn router_and_handler_in_an_app_with_state() {
        let e = engine();
        let state = AppState {
            name: "shop",
            webhooks: WebhookState::new(e.clone()),
        };
        let app = Router::new()
            .route(
                "/name",
                get(|State(s): State<AppState>| async move { s.name }),
            )
            .route("/mine/{token}", any(resume_webhook))
            .merge(workflow_http::axum::router(e.clone()))
            .with_state(state);
        let http = serve_app(app).await;
        let run = start(&e, "collect", &("tok", 2u32), "tok").await;
        let resp = http.send("GET", "/name", &[], Body::Empty).await;
        assert_eq!(resp.body, "shop");
        assert_eq!(http.post("/mine/tok", "a").await.status, 202);
        assert_eq!(http.post(&support::hook("tok"), "b").await.status, 202);
        let got = collected(&e, &run).await;
        assert_eq!(got.len(), 2);
        e.shutdown().await;
    }
}

#[cfg(feature = "warp")]
mod warp {
    use super::*;
    use ::warp::Filter;

    async fn serve_filter<F>(filter: F) -> Http
    where
        F: ::warp::Filter + Clone + Send + Sync + 'static,
        F::Extract: ::warp::Reply,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(::warp::serve(filter).incoming(listener).run());
        Http::new(addr)
    }

    /// `resume_webhook` on the user's own path, combined with another route.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn own_route_resume_webhook() {
        let e = engine();
        let hooks = workflow_http::warp::resume_webhook(
            ::warp::path!("hooks" / String),
            e.clone(),
            WebhookConfig::new().with_body_limit(100),
        );
        let health = ::warp::path!("health").map(|| "ok");
        let http = serve_filter(hooks.or(health)).await;
        let run = start(&e, "collect", &("order:42", 1u32), "order:42").await;
        // Refused while the webhook is live (nothing recorded): once the run
        // has its one request it ends and its token answers 404.
        let big = "x".repeat(101);
        let chunked = Body::Chunked(vec![big.clone().into()]);
        assert_eq!(
            http.send("POST", "/hooks/order%3A42", &[], chunked)
                .await
                .status,
            413
        );
        assert_eq!(http.post("/hooks/order%3A42?x=1", "hi").await.status, 202);
        let resp = http.send("GET", "/health", &[], Body::Empty).await;
        assert_eq!(
            (resp.status.as_u16(), resp.body.as_ref()),
            (200, &b"ok"[..])
        );
        assert_eq!(http.post("/hooks/bad%20token", "hi").await.status, 400);
        assert_eq!(http.post("/hooks/unknown", "hi").await.status, 404);
        assert_eq!(http.post("/elsewhere", "hi").await.status, 404);
        let got = collected(&e, &run).await;
        assert_eq!(got[0].uri, "/hooks/order%3A42?x=1");
        assert_eq!(got[0].text(), Some("hi"));
        e.shutdown().await;
    }

    /// The building blocks composed by hand, answered by `recover`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn building_blocks_with_recover() {
        let e = engine();
        let engine = e.clone();
        let route = ::warp::path!("in" / String)
            .and_then(workflow_http::warp::token)
            .and(workflow_http::warp::request(
                WebhookConfig::new().with_body_limit(10),
            ))
            .then(move |token: String, request| {
                let engine = engine.clone();
                async move { engine.resume_webhook(&token, request).await }
            })
            .recover(workflow_http::warp::recover);
        let http = serve_filter(route).await;
        let run = start(&e, "collect", &("tok", 1u32), "tok").await;
        let resp = http
            .send(
                "PATCH",
                "/in/tok?a=b",
                &[("x-h", "v")],
                Body::text("0123456789"),
            )
            .await;
        assert_eq!(resp.status, 202);
        assert_eq!(http.post("/in/tok", "0123456789A").await.status, 413);
        assert_eq!(http.post("/in/%ZZ", "x").await.status, 400);
        assert_eq!(http.post("/elsewhere", "x").await.status, 404);
        let got = collected(&e, &run).await;
        assert_eq!(got[0].method, "PATCH");
        assert_eq!(got[0].uri, "/in/tok?a=b");
        assert_eq!(header_values(&got[0], "x-h"), ["v"]);
        e.shutdown().await;
    }
}
