//! The stream route's limits against slow and hostile clients on 127.0.0.1,
//! served by `workflow_http::server::serve`: a quiet stream sends
//! keep-alives; readers beyond `max_readers` are refused with `503` until a
//! slot frees; a client that never reads is disconnected after the write
//! timeout, having been sent only what the socket buffers hold, and its
//! reader slot is freed.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use workflow_core::{Context, Engine, StepError, WorkflowError};
use workflow_http::axum::WebhookState;
use workflow_http::server::{serve, ServerLimits};
use workflow_http::stream::StreamConfig;
use workflow_store::{MemoryStore, RunId};

/// The longest any wait may take before it counts as a hang.
const HANG_GUARD: Duration = Duration::from_secs(10);

/// Chunks and their size in the big stream: far more than the socket buffers
/// of a client that never reads can hold.
const BIG_CHUNKS: usize = 1500;
const CHUNK_BYTES: usize = 8 * 1024;

/// The read tokens the workflows hand out, by workflow (each test runs its own).
static TOKENS: Mutex<Vec<(&'static str, String)>> = Mutex::new(Vec::new());

async fn hand_out(ctx: &Context, workflow: &'static str) -> Result<(), WorkflowError> {
    let token = ctx.stream_token("progress").await?.to_string();
    TOKENS.lock().unwrap().push((workflow, token));
    Ok(())
}

/// The token `workflow` handed out.
async fn token_of(workflow: &str) -> String {
    let mut found = None;
    wait_for("the read token", || {
        found = TOKENS
            .lock()
            .unwrap()
            .iter()
            .find(|(w, _)| *w == workflow)
            .map(|(_, t)| t.clone());
        found.is_some()
    })
    .await;
    found.unwrap_or_default()
}

/// Writes one chunk, then stays running (its stream open) for an hour.
async fn open_stream(ctx: Context, _: ()) -> Result<(), WorkflowError> {
    hand_out(&ctx, "open").await?;
    ctx.step("first", |s| async move {
        s.stream::<String>("progress")?
            .write(&"first".to_owned())
            .await?;
        Ok::<_, StepError>(())
    })
    .await?;
    ctx.sleep(Duration::from_secs(3600)).await?;
    Ok(())
}

/// Writes `BIG_CHUNKS` chunks of `CHUNK_BYTES`.
async fn big_stream(ctx: Context, _: ()) -> Result<(), WorkflowError> {
    hand_out(&ctx, "big").await?;
    ctx.step("fill", |s| async move {
        let mut w = s.stream::<String>("progress")?;
        let chunk = "x".repeat(CHUNK_BYTES);
        for _ in 0..BIG_CHUNKS / 100 {
            w.write_all(&vec![chunk.clone(); 100]).await?;
        }
        Ok::<_, StepError>(())
    })
    .await?;
    Ok(())
}

/// An engine, a started run of `workflow` with a read token for its
/// `progress` stream, and a server with `streams` and `limits`.
async fn setup(
    workflow: &str,
    streams: StreamConfig,
    limits: ServerLimits,
) -> (Engine, RunId, SocketAddr) {
    let engine = Engine::builder(MemoryStore::new())
        .workflow("open", open_stream)
        .workflow("big", big_stream)
        .build();
    engine.start_workers();
    let run = engine.start(workflow, &()).await.unwrap();
    let state = WebhookState::new(engine.clone()).with_stream_config(streams);
    let app: axum::Router = workflow_http::axum::router_with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, app, limits, std::future::pending()));
    (engine, run, addr)
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < HANG_GUARD, "{what}: still waiting");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends a GET for the run's `progress` stream on a raw socket with a small
/// receive buffer, and never reads.
async fn silent_reader(addr: SocketAddr, run: RunId, token: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let head = format!(
        "GET /.well-known/workflow/v1/stream/{run}/progress HTTP/1.1\r\nhost: test\r\n\
         authorization: Bearer {token}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

fn get(url: &str, token: &str) -> http::Request<Empty<Bytes>> {
    http::Request::get(url)
        .header("authorization", format!("Bearer {token}"))
        .body(Empty::new())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_streams_keep_alive_and_readers_are_capped() {
    let streams = StreamConfig::new()
        .with_keep_alive(Duration::from_millis(100))
        .with_max_readers(1);
    let (engine, run, addr) = setup("open", streams.clone(), ServerLimits::default()).await;
    let token = token_of("open").await;
    let url = format!("http://{addr}/.well-known/workflow/v1/stream/{run}/progress");
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();

    // Wait for the first chunk to be committed (the stream is known).
    let resp = loop {
        let resp = client.request(get(&url, &token)).await.unwrap();
        if resp.status() == 200 {
            break resp;
        }
        assert_eq!(resp.status(), 404);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut body = resp.into_body();
    let mut text = String::new();
    while !text.contains(": keep-alive") {
        let frame = tokio::time::timeout(HANG_GUARD, body.frame())
            .await
            .expect("a frame in time")
            .expect("the stream stays open")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(std::str::from_utf8(&data).unwrap());
        }
    }
    assert!(text.starts_with("id: 0\ndata: \"first\"\n\n"), "{text:?}");
    assert_eq!(streams.readers(), 1);

    // A second reader is refused while the first one streams...
    let refused = client.request(get(&url, &token)).await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");

    // ...and served once it disconnects.
    drop(body);
    wait_for("the slot to free", || streams.readers() == 0).await;
    let again = client.request(get(&url, &token)).await.unwrap();
    assert_eq!(again.status(), 200);
    drop(again);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_disconnected_and_frees_its_slot() {
    let streams = StreamConfig::new().with_max_readers(1);
    let limits = ServerLimits::default().with_write_timeout(Duration::from_millis(300));
    let (engine, run, addr) = setup("big", streams.clone(), limits).await;
    let token = token_of("big").await;
    engine.result::<()>(&run).await.unwrap();

    let mut silent = silent_reader(addr, run, &token).await;
    wait_for("the reader to start", || streams.readers() == 1).await;
    // Its writes stall once the socket buffers are full; the write timeout
    // then closes the connection and frees the slot.
    wait_for("the stalled reader to be dropped", || {
        streams.readers() == 0
    })
    .await;

    // What reached the client is what the buffers held: far from the whole
    // stream, which the server never loaded whole.
    let mut received = Vec::new();
    let read = tokio::time::timeout(HANG_GUARD, silent.read_to_end(&mut received)).await;
    assert!(read.is_ok(), "the server closed the connection");
    let whole = BIG_CHUNKS * CHUNK_BYTES;
    assert!(
        received.len() < whole / 2,
        "{} of {whole} bytes were sent to a client that never read",
        received.len()
    );
    let text = String::from_utf8_lossy(&received);
    assert!(
        text.starts_with("HTTP/1.1 200 OK"),
        "{:?}",
        &text[..text.len().min(200)]
    );

    // The slot serves the next reader, which gets the whole stream.
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let url = format!("http://{addr}/.well-known/workflow/v1/stream/{run}/progress");
    let resp = client.request(get(&url, &token)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = tokio::time::timeout(HANG_GUARD, resp.into_body().collect())
        .await
        .expect("the whole stream in time")
        .unwrap()
        .to_bytes();
    let events = std::str::from_utf8(&body)
        .unwrap()
        .matches("\nid: ")
        .count()
        + 1;
    assert_eq!(events, BIG_CHUNKS);
    engine.shutdown().await;
}
