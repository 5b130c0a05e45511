//! The stream route over axum, hyper and warp on 127.0.0.1: an SSE client
//! that disconnects after chunk k and resumes with `Last-Event-ID` gets
//! exactly the rest; NDJSON on request; raw bytes as base64; 401 without a
//! token, 404 for a wrong one.
#![cfg(all(feature = "axum", feature = "hyper", feature = "warp"))]

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use workflow_core::stream::RawChunk;
use workflow_core::{Context, Engine, StepError, WorkflowError};
use workflow_store::MemoryStore;

const CHUNKS: u64 = 6;

async fn writer(ctx: Context, _: ()) -> Result<(String, String), WorkflowError> {
    let token = ctx.stream_token("progress").await?;
    for i in 0..CHUNKS {
        ctx.step("tick", move |s| async move {
            s.stream::<u64>("progress")?.write(&(i * 10)).await?;
            Ok::<_, StepError>(())
        })
        .await?;
    }
    let raw_token = ctx.stream_token("raw").await?;
    ctx.step("raw", |s| async move {
        let mut raw = s.stream::<RawChunk>("raw")?;
        raw.write(&RawChunk(b"hello".to_vec())).await?;
        raw.write(&RawChunk(vec![0, 255])).await?;
        Ok::<_, StepError>(())
    })
    .await?;
    Ok((token.to_string(), raw_token.to_string()))
}

/// Reads events from `url` until `stop` of them (or the end), as (id, data).
async fn events(url: &str, headers: &[(&str, String)], stop: usize) -> (u16, Vec<(u64, String)>) {
    let (status, typed) = typed_events(url, headers, stop).await;
    (
        status,
        typed.into_iter().map(|(id, _, data)| (id, data)).collect(),
    )
}

/// Like [`events`], with each event's type (`message` unless named).
async fn typed_events(
    url: &str,
    headers: &[(&str, String)],
    stop: usize,
) -> (u16, Vec<(u64, String, String)>) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut req = http::Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = client
        .request(req.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut text = String::new();
    let mut out = Vec::new();
    while out.len() < stop {
        let Some(frame) = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("a frame within 10 s")
        else {
            break;
        };
        if let Ok(data) = frame.unwrap().into_data() {
            text.push_str(std::str::from_utf8(&data).unwrap());
        }
        while let Some(end) = text.find("\n\n") {
            let event: String = text.drain(..end + 2).collect();
            let mut id = None;
            let mut data = String::new();
            let mut kind = "message".to_owned();
            for line in event.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.parse().unwrap());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = v.to_owned();
                } else if let Some(v) = line.strip_prefix("event: ") {
                    kind = v.to_owned();
                }
            }
            if let Some(id) = id {
                out.push((id, kind, data));
            }
        }
    }
    // Dropping the body disconnects.
    (status, out)
}

/// A finished run that wrote the streams, on a fresh engine: (engine, run,
/// progress token, raw token).
async fn finished_run() -> (Engine, workflow_store::RunId, String, String) {
    let engine = Engine::builder(MemoryStore::new())
        .workflow("writer", writer)
        .build();
    engine.start_workers();
    let run = engine.start("writer", &()).await.unwrap();
    let (token, raw): (String, String) = engine.result(&run).await.unwrap();
    (engine, run, token, raw)
}

/// Every check of the route, against the server at `addr`.
async fn check_route(
    addr: std::net::SocketAddr,
    run: workflow_store::RunId,
    token: &str,
    raw: &str,
) {
    let url = format!("http://{addr}/.well-known/workflow/v1/stream/{run}/progress");
    let auth = ("authorization", format!("Bearer {token}"));
    let all: Vec<(u64, String)> = (0..CHUNKS).map(|i| (i, (i * 10).to_string())).collect();

    for k in 0..CHUNKS - 1 {
        let (status, first) = events(&url, std::slice::from_ref(&auth), (k + 1) as usize).await;
        assert_eq!(status, 200);
        assert_eq!(first, all[..=k as usize]);
        let resume = [auth.clone(), ("last-event-id", k.to_string())];
        let (_, rest) = events(&url, &resume, usize::MAX).await;
        assert_eq!(rest, all[k as usize + 1..], "resuming after chunk {k}");
    }
    let by_query = format!("{url}?from=4&token={token}");
    assert_eq!(events(&by_query, &[], usize::MAX).await.1, all[4..]);

    let (status, _) = events(&url, &[], usize::MAX).await;
    assert_eq!(status, 401);
    let (status, _) = events(
        &url,
        &[("authorization", "Bearer guess".into())],
        usize::MAX,
    )
    .await;
    assert_eq!(status, 404);
    let other = format!("http://{addr}/.well-known/workflow/v1/stream/{run}/other");
    assert_eq!(
        events(&other, std::slice::from_ref(&auth), usize::MAX)
            .await
            .0,
        404
    );
    let bad_from = format!("{url}?from=x");
    assert_eq!(
        events(&bad_from, std::slice::from_ref(&auth), usize::MAX)
            .await
            .0,
        400
    );

    let lines = ndjson(&url, token).await;
    assert_eq!(lines.len(), CHUNKS as usize);
    assert_eq!(lines[2], serde_json::json!({"index": 2, "chunk": 20}));

    // Raw bytes: base64, as `bytes` events and NDJSON `bytes` fields.
    let raw_url = format!("http://{addr}/.well-known/workflow/v1/stream/{run}/raw");
    let (status, got) = typed_events(
        &raw_url,
        &[("authorization", format!("Bearer {raw}"))],
        usize::MAX,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        got,
        vec![
            (0, "bytes".to_owned(), "aGVsbG8=".to_owned()),
            (1, "bytes".to_owned(), "AP8=".to_owned()),
        ]
    );
    assert_eq!(
        ndjson(&raw_url, raw).await,
        vec![
            serde_json::json!({"index": 0, "bytes": "aGVsbG8="}),
            serde_json::json!({"index": 1, "bytes": "AP8="}),
        ]
    );
}

/// The whole NDJSON answer of `url`, one value a line.
async fn ndjson(url: &str, token: &str) -> Vec<serde_json::Value> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let req = http::Request::get(url)
        .header("authorization", format!("Bearer {token}"))
        .header("accept", "application/x-ndjson")
        .body(Empty::new())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let body = resp.into_body().collect().await.unwrap();
    std::str::from_utf8(&body.to_bytes())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_client_resumes_with_last_event_id_over_axum() {
    let (engine, run, token, raw) = finished_run().await;
    let app: axum::Router = workflow_http::axum::router(engine.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    check_route(addr, run, &token, &raw).await;
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_client_resumes_with_last_event_id_over_hyper() {
    let (engine, run, token, raw) = finished_run().await;
    let service = workflow_http::hyper::StreamService::new(engine.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let service = service.clone();
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    check_route(addr, run, &token, &raw).await;
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_client_resumes_with_last_event_id_over_warp() {
    use warp::Filter;
    let (engine, run, token, raw) = finished_run().await;
    let routes = workflow_http::warp::webhook(engine.clone())
        .or(workflow_http::warp::stream(engine.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(routes).incoming(listener).run());
    check_route(addr, run, &token, &raw).await;
    engine.shutdown().await;
}
