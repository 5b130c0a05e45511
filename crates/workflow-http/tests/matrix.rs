//! The behaviour matrix: every case runs against every adapter (modules
//! `hyper`, `axum`, `warp`, and `tower`: the `WebhookService` in axum), each with a real server on 127.0.0.1 and a real
//! HTTP/1.1 client.
#![cfg_attr(
    not(any(feature = "hyper", feature = "axum", feature = "warp")),
    allow(dead_code, unused_imports)
)]

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use support::{collected, hook, setup, start, Adapter, Body, Http};
use workflow_http::{WebhookConfig, DEFAULT_BODY_LIMIT};

mod cases {
    use super::*;
    use support::header_values;

    /// Default mode: 202 with an empty body; method, path and query, headers
    /// (repeated ones in order) and body reach the workflow unchanged.
    pub async fn default_mode_202(a: Adapter) {
        let (e, http) = setup(a, WebhookConfig::default()).await;
        let run = start(&e, "collect", &("tok-default", 1u32), "tok-default").await;
        let path = hook("tok-default?x=1&y=two%20words&z");
        let resp = http
            .send(
                "POST",
                &path,
                &[
                    ("content-type", "application/json"),
                    ("x-custom", "Value With Case"),
                    ("x-multi", "one"),
                    ("x-multi", "two"),
                ],
                Body::text("{\"paid\":true}"),
            )
            .await;
        assert_eq!(resp.status, 202, "{a:?}");
        assert!(resp.body.is_empty());
        let got = collected(&e, &run).await;
        assert_eq!(got.len(), 1);
        let req = &got[0];
        assert_eq!(req.method, "POST");
        assert_eq!(req.uri, path);
        assert_eq!(req.text(), Some("{\"paid\":true}"));
        assert_eq!(header_values(req, "content-type"), ["application/json"]);
        assert_eq!(header_values(req, "x-custom"), ["Value With Case"]);
        assert_eq!(header_values(req, "x-multi"), ["one", "two"]);
        assert_eq!(header_values(req, "content-length"), ["13"]);
        e.shutdown().await;
    }

    /// Static mode: the stored response, every time.
    pub async fn static_mode(a: Adapter) {
        let (e, http) = setup(a, WebhookConfig::default()).await;
        let run = start(&e, "fixed", &("tok-static", 2u32), "tok-static").await;
        for _ in 0..2 {
            let resp = http.post(&hook("tok-static"), "x").await;
            assert_eq!(resp.status, 201, "{a:?}");
            assert_eq!(resp.headers["x-kind"], "static");
            assert_eq!(resp.body, "thanks");
        }
        assert_eq!(e.result::<u32>(&run).await.expect("result"), 2);
        e.shutdown().await;
    }

    /// Manual mode: the workflow's own answer.
    pub async fn manual_mode(a: Adapter) {
        let (e, http) = setup(a, WebhookConfig::default()).await;
        let run = start(&e, "manual", &("tok-manual", 5000u64), "tok-manual").await;
        let resp = http
            .send("PUT", &hook("tok-manual?q=1"), &[], Body::text("ping"))
            .await;
        assert_eq!(resp.status, 200, "{a:?}");
        assert_eq!(resp.headers["x-echo"], "yes");
        assert_eq!(
            resp.body,
            "PUT /.well-known/workflow/v1/webhook/tok-manual?q=1 ping"
        );
        let resp = http.post(&hook("tok-manual"), "stop").await;
        assert_eq!(resp.status, 200);
        assert_eq!(e.result::<u32>(&run).await.expect("result"), 2);
        e.shutdown().await;
    }

    /// Manual mode without an answer in time: 504.
    pub async fn manual_timeout_504(a: Adapter) {
        let (e, http) = setup(a, WebhookConfig::default()).await;
        let run = start(&e, "manual", &("tok-slow", 300u64), "tok-slow").await;
        let started = Instant::now();
        let resp = http.post(&hook("tok-slow"), "slow").await;
        assert_eq!(resp.status, 504, "{a:?}");
        assert!(started.elapsed() >= Duration::from_millis(290));
        // The hook still works afterwards.
        let resp = http.post(&hook("tok-slow"), "stop").await;
        assert_eq!(resp.status, 200);
        assert_eq!(e.result::<u32>(&run).await.expect("result"), 1);
        e.shutdown().await;
    }

    /// An unknown token: 404 with an empty body, for every method.
    pub async fn unknown_token_404(a: Adapter) {
        let (e, http) = setup(a, WebhookConfig::default()).await;
        for method in ["POST", "GET", "DELETE"] {
            let resp = http
                .send(method, &hook("no-such-token"), &[], Body::text("x"))
                .await;
            assert_eq!(resp.status, 404, "{a:?} {method}");
            assert!(resp.body.is_empty());
        }
        e.shutdown().await;
    }

    /// A request to a token no webhook holds is answered 404 before its body
    /// is read: the client announces 1 MiB, sends 10 bytes and stalls, and
    /// still gets its 404 (a server that read the body first would wait).
    pub async fn unknown_token_404_before_the_body(a: Adapter) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (e, http) = setup(a, WebhookConfig::default()).await;
        for token in ["no-such-token", "also-unknown"] {
            let mut conn = tokio::net::TcpStream::connect(http.addr())
                .await
                .expect("connect");
            let head = format!(
                "POST {} HTTP/1.1\r\nhost: localhost\r\ncontent-length: 1048576\r\n\r\n0123456789",
                hook(token)
            );
            conn.write_all(head.as_bytes()).await.expect("send head");
            let mut answer = vec![0u8; 64];
            let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut answer))
                .await
                .expect("no answer while the body stalls: the server waited for it")
                .expect("read");
            let text = String::from_utf8_lossy(&answer[..n]).to_string();
            assert!(text.starts_with("HTTP/1.1 404"), "{a:?}: {text}");
        }
        e.shutdown().await;
    }

    /// An empty token (`.../webhook/`): 400, not 404 or 405.
    pub async fn empty_token_400(a: Adapter) {
        let (e, http) = setup(a, WebhookConfig::default()).await;
        for method in ["POST", "GET", "PUT"] {
            let resp = http.send(method, &hook(""), &[], Body::text("x")).await;
            assert_eq!(resp.status, 400, "{a:?} {method}");
        }
        let resp = http.send("POST", &hook("?q=1"), &[], Body::Empty).await;
        assert_eq!(resp.status, 400, "{a:?}");
        e.shutdown().await;
    }

    /// Invalid tokens: bad characters, bad escapes, non-UTF-8, too long,
    /// an encoded slash: 400.
    pub async fn invalid_token_400(a: Adapter) {
        let (e, http) = setup(a, WebhookConfig::default()).await;
        let long = "a".repeat(300);
        for segment in [
            "bad%20token",
            "bad%zz",
            "bad%",
            "%FF%FE",
            "a%2Fb",
            "a%25b",
            long.as_str(),
        ] {
            let resp = http.post(&hook(segment), "x").await;
            assert_eq!(resp.status, 400, "{a:?} {segment}");
        }
        e.shutdown().await;
    }

    /// Paths that are not a webhook path: 404.
    pub async fn other_paths_404(a: Adapter) {
        let (e, http) = setup(a, WebhookConfig::default()).await;
        start(&e, "collect", &("tok", 1u32), "tok").await;
        for path in [
            "/",
            "/other",
            "/.well-known/workflow/v1/webhook",
            "/.well-known/workflow/v1/webhook/tok/extra",
        ] {
            let resp = http.post(path, "x").await;
            assert_eq!(resp.status, 404, "{a:?} {path}");
        }
        e.shutdown().await;
    }

    /// Past the default 1 MiB limit with `Content-Length`: 413, nothing recorded.
    pub async fn body_over_limit_413_content_length(a: Adapter) {
        let (e, http) = setup(a, WebhookConfig::default()).await;
        let run = start(&e, "collect", &("tok-big", 1u32), "tok-big").await;
        let big = Bytes::from(vec![b'x'; DEFAULT_BODY_LIMIT + 1]);
        let resp = http
            .send("POST", &hook("tok-big"), &[], Body::Full(big))
            .await;
        assert_eq!(resp.status, 413, "{a:?}");
        // The hook is untouched: the next request is the first it records.
        let resp = http.post(&hook("tok-big"), "small").await;
        assert_eq!(resp.status, 202);
        let got = collected(&e, &run).await;
        assert_eq!(got[0].text(), Some("small"));
        e.shutdown().await;
    }

    /// Past the default limit chunked, without `Content-Length`: 413.
    pub async fn body_over_limit_413_chunked(a: Adapter) {
        let (e, http) = setup(a, WebhookConfig::default()).await;
        let run = start(&e, "collect", &("tok-big", 1u32), "tok-big").await;
        let chunk = Bytes::from(vec![b'y'; 64 * 1024]);
        let chunks = vec![chunk; DEFAULT_BODY_LIMIT / (64 * 1024) + 1];
        let resp = http
            .send("POST", &hook("tok-big"), &[], Body::Chunked(chunks))
            .await;
        assert_eq!(resp.status, 413, "{a:?}");
        let resp = http.post(&hook("tok-big"), "small").await;
        assert_eq!(resp.status, 202);
        let got = collected(&e, &run).await;
        assert_eq!(got[0].text(), Some("small"));
        e.shutdown().await;
    }

    /// A configured limit: exactly the limit passes, one byte more is 413,
    /// with `Content-Length` and chunked.
    pub async fn configured_limit(a: Adapter) {
        let (e, http) = setup(a, WebhookConfig::new().with_body_limit(1024)).await;
        let run = start(&e, "collect", &("tok-limit", 2u32), "tok-limit").await;
        let at = Bytes::from(vec![b'a'; 1024]);
        let over = Bytes::from(vec![b'b'; 1025]);
        let resp = http
            .send("POST", &hook("tok-limit"), &[], Body::Full(over.clone()))
            .await;
        assert_eq!(resp.status, 413, "{a:?} content-length");
        let chunks = vec![over.slice(..500), over.slice(500..1000), over.slice(1000..)];
        let resp = http
            .send("POST", &hook("tok-limit"), &[], Body::Chunked(chunks))
            .await;
        assert_eq!(resp.status, 413, "{a:?} chunked");
        let resp = http
            .send("POST", &hook("tok-limit"), &[], Body::Full(at.clone()))
            .await;
        assert_eq!(resp.status, 202, "{a:?} at the limit");
        let chunks = vec![at.slice(..1), at.slice(1..1000), at.slice(1000..)];
        let resp = http
            .send("POST", &hook("tok-limit"), &[], Body::Chunked(chunks))
            .await;
        assert_eq!(resp.status, 202, "{a:?} chunked at the limit");
        let got = collected(&e, &run).await;
        assert!(got.iter().all(|r| r.body == at));
        e.shutdown().await;
    }

    /// Large bodies under the limit, with `Content-Length` and chunked, arrive
    /// byte for byte; a chunked one keeps its `Transfer-Encoding` header.
    pub async fn large_body_under_limit(a: Adapter) {
        let (e, http) = setup(a, WebhookConfig::default()).await;
        let run = start(&e, "collect", &("tok-large", 2u32), "tok-large").await;
        let data: Bytes = (0..DEFAULT_BODY_LIMIT)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>()
            .into();
        let resp = http
            .send("POST", &hook("tok-large"), &[], Body::Full(data.clone()))
            .await;
        assert_eq!(resp.status, 202, "{a:?}");
        let chunks: Vec<Bytes> = data.chunks(60_000).map(Bytes::copy_from_slice).collect();
        let resp = http
            .send("POST", &hook("tok-large"), &[], Body::Chunked(chunks))
            .await;
        assert_eq!(resp.status, 202, "{a:?}");
        let got = collected(&e, &run).await;
        assert_eq!(got[0].body, data);
        assert_eq!(got[1].body, data);
        assert_eq!(header_values(&got[1], "transfer-encoding"), ["chunked"]);
        assert!(header_values(&got[1], "content-length").is_empty());
        e.shutdown().await;
    }

    /// Every method resumes the webhook, a custom one too.
    pub async fn all_methods(a: Adapter) {
        let methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PURGE"];
        let (e, http) = setup(a, WebhookConfig::default()).await;
        let n = methods.len() as u32;
        let run = start(&e, "collect", &("tok-methods", n), "tok-methods").await;
        for m in methods {
            let body = if m == "GET" {
                Body::Empty
            } else {
                Body::text(m)
            };
            let resp = http.send(m, &hook("tok-methods"), &[], body).await;
            assert_eq!(resp.status, 202, "{a:?} {m}");
        }
        let got = collected(&e, &run).await;
        let seen: Vec<&str> = got.iter().map(|r| r.method.as_str()).collect();
        assert_eq!(seen, methods);
        assert!(got[0].body.is_empty());
        assert_eq!(got[6].text(), Some("PURGE"));
        e.shutdown().await;
    }

    /// A percent-encoded token is decoded (`order%3A42` is `order:42`); the
    /// workflow sees the path as sent.
    pub async fn percent_encoded_token(a: Adapter) {
        let (e, http) = setup(a, WebhookConfig::default()).await;
        let run = start(&e, "collect", &("order:42", 3u32), "order:42").await;
        for segment in ["order%3A42", "order%3a42", "order:42"] {
            let resp = http.post(&hook(segment), segment).await;
            assert_eq!(resp.status, 202, "{a:?} {segment}");
        }
        let got = collected(&e, &run).await;
        let uris: Vec<&str> = got.iter().map(|r| r.uri.as_str()).collect();
        assert_eq!(
            uris,
            [hook("order%3A42"), hook("order%3a42"), hook("order:42")]
        );
        e.shutdown().await;
    }

    /// 50 concurrent requests to one hook: all 202, each recorded once.
    pub async fn concurrent_requests(a: Adapter) {
        const N: u32 = 50;
        let (e, http) = setup(a, WebhookConfig::default()).await;
        let run = start(&e, "collect", &("tok-many", N), "tok-many").await;
        let mut tasks = Vec::new();
        for i in 0..N {
            let http: Http = http.clone();
            tasks.push(tokio::spawn(async move {
                http.post(&hook("tok-many"), &i.to_string()).await.status
            }));
        }
        for t in tasks {
            assert_eq!(t.await.expect("task"), 202, "{a:?}");
        }
        let got = collected(&e, &run).await;
        let bodies: BTreeSet<u32> = got
            .iter()
            .map(|r| r.text().and_then(|t| t.parse().ok()).expect("a number"))
            .collect();
        assert_eq!(got.len(), N as usize);
        assert_eq!(bodies, (0..N).collect());
        let ids: BTreeSet<&str> = got.iter().map(|r| r.request_id.as_str()).collect();
        assert_eq!(ids.len(), N as usize);
        e.shutdown().await;
    }
}

macro_rules! matrix {
    ($module:ident, $cfg:meta, $adapter:expr) => {
        #[cfg($cfg)]
        mod $module {
            use super::*;
            const A: Adapter = $adapter;

            matrix!(@cases default_mode_202, static_mode, manual_mode, manual_timeout_504,
                unknown_token_404, unknown_token_404_before_the_body, empty_token_400, invalid_token_400, other_paths_404,
                body_over_limit_413_content_length, body_over_limit_413_chunked,
                configured_limit, large_body_under_limit, all_methods,
                percent_encoded_token, concurrent_requests);
        }
    };
    (@cases $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                cases::$case(A).await
            }
        )*
    };
}

matrix!(hyper, feature = "hyper", Adapter::Hyper);
matrix!(axum, feature = "axum", Adapter::Axum);
matrix!(warp, feature = "warp", Adapter::Warp);
// `WebhookService` mounted in axum with `Router::route_service`.
matrix!(
    tower,
    all(feature = "tower", feature = "axum"),
    Adapter::Tower
);
