//! `workflow_http::server::serve` against clients that misbehave at the
//! connection level: silent, trickling, stalling, oversize, too many, and
//! still half-way through a request at shutdown. Each test runs a real server
//! on 127.0.0.1 with small limits, so it finishes in a few seconds; every wait
//! has a hang guard.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use workflow_http::server::{serve, ServerLimits};

/// The longest any single wait in these tests may take before it counts as a hang.
const HANG_GUARD: Duration = Duration::from_secs(5);

/// How long the slow route takes to answer.
const SLOW: Duration = Duration::from_millis(500);

fn app() -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .route(
            "/echo",
            post(|body: Bytes| async move { body.len().to_string() }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(SLOW).await;
                "slow"
            }),
        )
}

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<io::Result<()>>,
}

impl Server {
    async fn start(limits: ServerLimits) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, app(), limits, async {
            let _ = stopped.await;
        }));
        Server {
            addr,
            stop: Some(stop),
            task,
        }
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.unwrap()
    }

    /// Begins the graceful shutdown.
    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Fails the test if `f` takes longer than [`HANG_GUARD`].
async fn guard<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(HANG_GUARD, f).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: still waiting after {HANG_GUARD:?}"),
    }
}

/// Sends `raw` on a new connection and reads until the server closes it;
/// a reset after some bytes counts as the end of the answer.
async fn exchange(addr: SocketAddr, raw: &[u8]) -> io::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(raw).await?;
    read_until_closed(&mut stream).await
}

async fn read_until_closed(stream: &mut TcpStream) -> io::Result<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if out.is_empty() => return Err(e),
            Err(_) => break,
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// A `GET path` with `Connection: close`.
async fn get_path(addr: SocketAddr, path: &str) -> io::Result<String> {
    let raw = format!("GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n");
    exchange(addr, raw.as_bytes()).await
}

/// A `GET path` that asks to keep the connection alive; read until the
/// server closes it.
async fn get_keep_alive(addr: SocketAddr, path: &str) -> io::Result<String> {
    let raw = format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n");
    exchange(addr, raw.as_bytes()).await
}

/// The status code of a raw HTTP/1.1 answer.
fn status(answer: &str) -> Option<u16> {
    answer.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Whether the server closes `stream` (read returns 0 or an error) within
/// `within`, throwing away anything it sends first.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_past_the_cap_are_closed_and_a_normal_request_is_answered() {
    let header_timeout = Duration::from_secs(2);
    let server = Server::start(
        ServerLimits::default()
            .with_max_connections(256)
            .with_header_read_timeout(header_timeout),
    )
    .await;
    let opened = Instant::now();
    let mut idle = Vec::new();
    for i in 0..400 {
        let mut stream = server.connect().await;
        if i % 2 == 0 {
            // Half a request line, then silence.
            stream.write_all(b"GET / HT").await.unwrap();
        }
        idle.push(stream);
    }
    // When the server closes each one, as seen from the client.
    let closings: Vec<_> = idle
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                closed_within(&mut stream, header_timeout * 3)
                    .await
                    .then(|| opened.elapsed())
            })
        })
        .collect();

    // The cap is full of idle connections: a real request takes the oldest
    // one's slot and is answered at once, not queued or refused.
    let started = Instant::now();
    let answer = guard("a normal request", get_path(server.addr, "/"))
        .await
        .expect("a normal request is answered");
    assert_eq!(status(&answer), Some(200), "{answer:?}");
    assert!(answer.ends_with("ok"), "{answer:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a request waited {:?} behind idle connections",
        started.elapsed()
    );

    // Every idle connection is closed: those past the cap (and the one that
    // made room for the request) at once, the 255 newest by the header timeout.
    let mut by_timeout = 0;
    for (i, closing) in closings.into_iter().enumerate() {
        let closed_after = guard("an idle connection's closing", closing)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("idle connection {i} was never closed"));
        if closed_after >= header_timeout {
            by_timeout += 1;
        }
    }
    assert_eq!(
        by_timeout, 255,
        "idle connections held open until the header timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_head_is_cut_off_by_the_header_timeout() {
    let header_timeout = Duration::from_millis(500);
    let server =
        Server::start(ServerLimits::default().with_header_read_timeout(header_timeout)).await;
    let (mut read, mut write) = server.connect().await.into_split();
    let started = Instant::now();
    let head = format!("GET / HTTP/1.1\r\nhost: test\r\nx-slow: {}", "a".repeat(40));
    let trickle = tokio::spawn(async move {
        let mut sent = 0;
        for byte in head.as_bytes() {
            if write.write_all(&[*byte]).await.is_err() {
                break;
            }
            sent += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sent
    });
    let mut buf = [0u8; 1024];
    let n = guard("the trickled connection to close", read.read(&mut buf))
        .await
        .unwrap_or(0);
    let elapsed = started.elapsed();
    assert_eq!(n, 0, "the server answered a head it never got");
    assert!(
        elapsed >= header_timeout - Duration::from_millis(50) && elapsed < header_timeout * 4,
        "closed after {elapsed:?}, header timeout {header_timeout:?}"
    );
    let sent = guard("the trickle to stop", trickle).await.unwrap();
    assert!(sent < 60, "the whole head was trickled in ({sent} bytes)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let header_timeout = Duration::from_millis(500);
    let server =
        Server::start(ServerLimits::default().with_header_read_timeout(header_timeout)).await;
    let mut stream = server.connect().await;
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    guard("the keep-alive answer", async {
        while !answer.ends_with(b"\r\n\r\nok") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before answering");
            answer.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let answered = Instant::now();
    assert!(closed_within(&mut stream, header_timeout * 4).await);
    assert!(
        answered.elapsed() >= header_timeout - Duration::from_millis(50),
        "an idle keep-alive connection was closed after only {:?}",
        answered.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_body_fails_the_request_after_the_body_timeout() {
    let body_timeout = Duration::from_millis(500);
    let server = Server::start(
        ServerLimits::default()
            .with_header_read_timeout(Duration::from_secs(5))
            .with_body_read_timeout(body_timeout),
    )
    .await;
    let mut stream = server.connect().await;
    let started = Instant::now();
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nhost: test\r\ncontent-length: 1000\r\n\r\n0123456789")
        .await
        .unwrap();
    let answer = guard("the stalled request", read_until_closed(&mut stream))
        .await
        .unwrap_or_default();
    let elapsed = started.elapsed();
    // axum's `Bytes` extractor answers a body that failed to arrive `400`.
    assert_eq!(status(&answer), Some(400), "a stalled body got {answer:?}");
    assert!(
        elapsed >= body_timeout - Duration::from_millis(50) && elapsed < body_timeout * 4,
        "failed after {elapsed:?}, body timeout {body_timeout:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_body_is_cut_off_by_the_whole_body_deadline() {
    let body_timeout = Duration::from_millis(500);
    let server = Server::start(ServerLimits::default().with_body_read_timeout(body_timeout)).await;
    let (mut read, mut write) = server.connect().await.into_split();
    let started = Instant::now();
    write
        .write_all(b"POST /echo HTTP/1.1\r\nhost: test\r\ncontent-length: 40\r\n\r\n")
        .await
        .unwrap();
    // One byte every 100 ms: never idle for long, but 4 s for the whole body.
    let trickle = tokio::spawn(async move {
        for _ in 0..40 {
            if write.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    guard("the trickled body's answer", async {
        while let Ok(n @ 1..) = read.read(&mut buf).await {
            answer.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let elapsed = started.elapsed();
    trickle.abort();
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(status(&answer), Some(400), "a trickled body got {answer:?}");
    assert!(
        elapsed < body_timeout * 4,
        "the trickled body was read for {elapsed:?}"
    );
}

/// Sends a head with one header of `value_len` bytes and reads the answer,
/// while the rest of the head may still be unsent.
async fn send_big_header(addr: SocketAddr, value_len: usize) -> String {
    let big = format!(
        "GET / HTTP/1.1\r\nhost: test\r\nconnection: close\r\nx-big: {}\r\n\r\n",
        "a".repeat(value_len)
    );
    let (mut read, mut write) = TcpStream::connect(addr).await.unwrap().into_split();
    // The server stops reading at the limit, so the rest may never be sent.
    let sender = tokio::spawn(async move {
        let _ = write.write_all(big.as_bytes()).await;
        write
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    guard("the answer to a big header", async {
        while let Ok(n @ 1..) = read.read(&mut buf).await {
            answer.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    drop(guard("the sender", sender).await);
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_head_is_refused_with_431_and_a_head_under_the_limit_is_served() {
    let server = Server::start(ServerLimits::default()).await;
    // Just past the 16 KiB default, and far past it.
    for len in [20_000, 500_000] {
        let answer = send_big_header(server.addr, len).await;
        assert_eq!(status(&answer), Some(431), "{len}-byte header: {answer:?}");
    }
    let answer = send_big_header(server.addr, 12_000).await;
    assert_eq!(status(&answer), Some(200), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_headers_are_refused_with_431() {
    let server = Server::start(ServerLimits::default().with_max_headers(10)).await;
    let head = |headers: usize| {
        let mut raw = String::from("GET / HTTP/1.1\r\nhost: test\r\nconnection: close\r\n");
        for i in 0..headers {
            raw.push_str(&format!("x-h{i}: v\r\n"));
        }
        raw + "\r\n"
    };
    let many = guard("20 headers", exchange(server.addr, head(20).as_bytes()))
        .await
        .unwrap();
    assert_eq!(status(&many), Some(431), "{many:?}");
    let few = guard("5 headers", exchange(server.addr, head(5).as_bytes()))
        .await
        .unwrap();
    assert_eq!(status(&few), Some(200), "{few:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_within_the_deadline_despite_half_sent_requests() {
    let deadline = Duration::from_secs(1);
    let mut server = Server::start(
        ServerLimits::default()
            // Longer than the test: only the shutdown deadline can end these.
            .with_header_read_timeout(Duration::from_secs(30))
            .with_shutdown_timeout(deadline),
    )
    .await;
    let mut half_sent = Vec::new();
    for _ in 0..5 {
        let mut stream = server.connect().await;
        stream
            .write_all(b"POST /echo HTTP/1.1\r\nhost: test\r\n")
            .await
            .unwrap();
        half_sent.push(stream);
    }
    let addr = server.addr;
    let in_flight = tokio::spawn(get_keep_alive(addr, "/slow"));
    // Let the slow request reach its handler before shutdown begins.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let stopping = Instant::now();
    server.stop();
    let served = guard("serve to return", &mut server.task).await;
    let took = stopping.elapsed();
    served.unwrap().unwrap();
    assert!(
        took < deadline * 2,
        "shutdown took {took:?}, deadline {deadline:?}"
    );

    let answer = guard("the in-flight request", in_flight)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status(&answer), Some(200), "{answer:?}");
    assert!(answer.ends_with("slow"), "{answer:?}");
    assert!(answer.contains("connection: close"), "{answer:?}");
    for stream in &mut half_sent {
        assert!(closed_within(stream, Duration::from_millis(500)).await);
    }
    // The listener is closed: nobody is served any more.
    let after = get_path(addr, "/").await;
    assert!(
        after.as_deref().map_or(true, str::is_empty),
        "served after shutdown: {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_requests_in_flight_finish_and_returns_early() {
    let deadline = Duration::from_secs(3);
    let mut server = Server::start(ServerLimits::default().with_shutdown_timeout(deadline)).await;
    let in_flight = tokio::spawn(get_keep_alive(server.addr, "/slow"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    // An idle connection does not hold shutdown up.
    let mut idle = server.connect().await;

    let stopping = Instant::now();
    server.stop();
    guard("serve to return", &mut server.task)
        .await
        .unwrap()
        .unwrap();
    let took = stopping.elapsed();
    let answer = in_flight.await.unwrap().unwrap();
    assert_eq!(status(&answer), Some(200), "{answer:?}");
    assert!(answer.contains("connection: close"), "{answer:?}");
    assert!(
        took < deadline,
        "shutdown waited {took:?}, for more than the slow request ({SLOW:?})"
    );
    assert!(closed_within(&mut idle, Duration::from_millis(500)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_past_the_cap_is_refused_at_once_when_every_connection_is_busy() {
    let server = Server::start(ServerLimits::default().with_max_connections(2)).await;
    // Two requests in flight on the slow route fill the cap with busy connections.
    let busy: Vec<_> = (0..2)
        .map(|_| tokio::spawn(get_path(server.addr, "/slow")))
        .collect();
    tokio::time::sleep(SLOW / 5).await;
    let started = Instant::now();
    let refusal = guard("a connection past the cap", get_path(server.addr, "/")).await;
    let took = started.elapsed();
    if let Ok(answer) = &refusal {
        assert!(
            answer.is_empty() || status(answer) == Some(503),
            "{answer:?}"
        );
        if !answer.is_empty() {
            assert!(answer.contains("retry-after: 1"), "{answer:?}");
        }
    }
    assert!(took < SLOW / 2, "refused only after {took:?}");
    // The busy requests were not disturbed, and their slots are reused.
    for request in busy {
        let answer = guard("a busy request", request).await.unwrap().unwrap();
        assert_eq!(status(&answer), Some(200), "{answer:?}");
    }
    let answer = guard("a request after the busy ones", get_path(server.addr, "/"))
        .await
        .unwrap();
    assert_eq!(status(&answer), Some(200), "{answer:?}");
}
