//! An HTTP/1.1 server with connection-level protections: serve an axum
//! `Router` (or any tower service) so that slow or silent clients cannot hold
//! it open, fill its descriptor table, or stall its shutdown.
//!
//! [`serve`] accepts connections from a [`TcpListener`] and serves each with
//! hyper 1, within the [`ServerLimits`]:
//!
//! | limit | default | enforced by | past it |
//! |---|---|---|---|
//! | [`header_read_timeout`](ServerLimits::header_read_timeout) | 10 s | hyper's `header_read_timeout` | the connection is closed; this also closes idle keep-alive connections |
//! | [`body_read_timeout`](ServerLimits::body_read_timeout) | 30 s | [`RequestBody`] | reading the body fails with [`RequestBodyError::TimedOut`]; the app answers (axum's extractors and [`collect_body`](crate::collect_body): `400`), then the connection is closed |
//! | [`max_connections`](ServerLimits::max_connections) | 512 | a semaphore | the oldest connection with no request in flight (silent, still sending its head, or idle on keep-alive) is closed to make room; if every connection has a request in flight, the new one is answered `503` and closed at once, never queued |
//! | [`max_header_bytes`](ServerLimits::max_header_bytes) | 16 KiB | hyper's `max_header_size` | `431 Request Header Fields Too Large`, connection closed |
//! | [`max_headers`](ServerLimits::max_headers) | 100 | hyper's `max_headers` | `431`, connection closed |
//! | [`write_timeout`](ServerLimits::write_timeout) | 30 s | [`serve`]'s socket wrapper | a write that makes no progress for that long (a client that stopped reading a long response, such as a [stream](crate::stream)) fails and the connection is closed |
//! | [`shutdown_timeout`](ServerLimits::shutdown_timeout) | 10 s | hyper-util's `GracefulShutdown` and a deadline | the connections still open are dropped |
//!
//! When the `shutdown` future passed to [`serve`] completes, the listener is
//! closed, idle connections are closed, requests in flight are answered (with
//! `Connection: close`), and `serve` returns once every connection is done or
//! the shutdown deadline passes, whatever the clients do.
//!
//! The application sees each request's body as a [`RequestBody`] (hyper's
//! `Incoming` with the body read timeout); an axum `Router` accepts it as is.
//! HTTP/1.1 only: no HTTP/2 and no upgrades (no WebSocket), so that every
//! connection stays under these limits for its whole life.
//!
//! ```
//! use std::time::Duration;
//! use workflow_http::server::ServerLimits;
//!
//! let limits = ServerLimits::default();
//! assert_eq!(limits.header_read_timeout, Duration::from_secs(10));
//! assert_eq!(limits.max_header_bytes, 16 * 1024);
//!
//! let strict = ServerLimits::new()
//!     .with_header_read_timeout(Duration::from_secs(5))
//!     .with_max_connections(256);
//! assert_eq!(strict.max_connections, 256);
//! ```
//!
//! Serving an axum app until Ctrl-C:
//!
//! ```no_run
//! use workflow_http::server::{serve, ServerLimits};
//!
//! # async fn run() -> std::io::Result<()> {
//! let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! // Call `stop.send(())` from your signal handler (tokio::signal::ctrl_c, SIGTERM).
//! # drop(stop);
//! serve(listener, app, ServerLimits::default(), async {
//!     let _ = stopped.await;
//! })
//! .await
//! # }
//! ```

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Sleep;
use tracing::{debug, info, warn};

type BoxError = Box<dyn StdError + Send + Sync>;

/// The default [`ServerLimits::header_read_timeout`]: 10 seconds.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The default [`ServerLimits::body_read_timeout`]: 30 seconds.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The default [`ServerLimits::max_connections`]: 512, half of the common
/// 1,024-descriptor limit of a process, leaving room for the store and the
/// application's own files and sockets.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// The default [`ServerLimits::max_header_bytes`]: 16 KiB.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// The default [`ServerLimits::max_headers`]: 100 (hyper's own default).
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// The default [`ServerLimits::write_timeout`]: 30 seconds.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// The default [`ServerLimits::shutdown_timeout`]: 10 seconds.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long accepting pauses after an error such as running out of file
/// descriptors, so the loop does not spin while nothing can be accepted.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The answer written to a connection beyond [`ServerLimits::max_connections`].
const BUSY_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-length: 0\r\nconnection: close\r\nretry-after: 1\r\n\r\n";

/// The connection-level limits of [`serve`]; start from
/// [`ServerLimits::default`] and change what you need with the `with_*`
/// methods.
///
/// ```
/// use std::time::Duration;
/// use workflow_http::server::ServerLimits;
///
/// let limits = ServerLimits::default()
///     .with_body_read_timeout(Duration::from_secs(10))
///     .with_max_header_bytes(8 * 1024)
///     .with_shutdown_timeout(Duration::from_secs(5));
/// assert_eq!(limits.max_header_bytes, 8192);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerLimits {
    /// The longest time a client may take to send a request's head (request
    /// line and headers), counted from when the server starts waiting for it:
    /// on a new connection from its accept, on a kept-alive connection from the
    /// end of the previous response. So it is also the idle timeout of
    /// keep-alive connections. Past it the connection is closed without an
    /// answer. Default [`DEFAULT_HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
    /// The longest time a request body may take to arrive in full, counted
    /// from when the application first waits for it (so a body the
    /// application never reads costs nothing, and `Expect: 100-continue`
    /// clients are not penalised for waiting). Past it reading the body fails
    /// with [`RequestBodyError::TimedOut`], and the connection is closed after
    /// the answer. A whole-body deadline, not an idle timeout: trickling one
    /// byte at a time does not extend it. Default [`DEFAULT_BODY_READ_TIMEOUT`].
    pub body_read_timeout: Duration,
    /// The most connections served at once (at least 1). A connection
    /// accepted beyond it takes the slot of the oldest connection that has no
    /// request in flight (that one is closed), so clients that connect and
    /// stay silent, trickle their head or idle on keep-alive cannot crowd out
    /// real requests. If every connection has a request in flight, the new
    /// one is answered `503 Service Unavailable` with `Retry-After: 1` and
    /// closed at once (a client that already sent its request may see a
    /// reset instead). Keep it below the process's
    /// descriptor limit (`ulimit -n`) minus what the application opens itself.
    /// Default [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// The largest request head (request line and headers) in bytes; a longer
    /// one is answered `431 Request Header Fields Too Large` as soon as that
    /// many bytes are buffered, and the connection is closed. Default
    /// [`DEFAULT_MAX_HEADER_BYTES`].
    pub max_header_bytes: usize,
    /// The most header fields in a request; more are answered `431`. Default
    /// [`DEFAULT_MAX_HEADERS`].
    pub max_headers: usize,
    /// After shutdown begins, how long [`serve`] waits for open connections
    /// to finish their requests before dropping them. Default
    /// [`DEFAULT_SHUTDOWN_TIMEOUT`].
    pub shutdown_timeout: Duration,
    /// The longest time a write to the socket may wait for the client to
    /// take data (its receive window full: it stopped reading). Past it the
    /// connection is closed, so a client that never reads a long response (a
    /// [stream](crate::stream)) holds its connection and reader slot for at
    /// most this long, and the server buffers no more than the socket's
    /// buffers meanwhile. An idle timeout of writes, not a deadline for the
    /// response: a stream that keeps being read lives on. Default
    /// [`DEFAULT_WRITE_TIMEOUT`].
    pub write_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
        }
    }
}

impl ServerLimits {
    /// The defaults: 10 s for a head, 30 s for a body, 512 connections, a
    /// 16 KiB head of at most 100 headers, 10 s to shut down.
    ///
    /// ```
    /// use workflow_http::server::ServerLimits;
    /// assert_eq!(ServerLimits::new(), ServerLimits::default());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`header_read_timeout`](Self::header_read_timeout), which is also
    /// the keep-alive idle timeout.
    pub fn with_header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// Sets [`body_read_timeout`](Self::body_read_timeout).
    pub fn with_body_read_timeout(mut self, timeout: Duration) -> Self {
        self.body_read_timeout = timeout;
        self
    }

    /// Sets [`max_connections`](Self::max_connections); 0 counts as 1.
    pub fn with_max_connections(mut self, connections: usize) -> Self {
        self.max_connections = connections;
        self
    }

    /// Sets [`max_header_bytes`](Self::max_header_bytes).
    pub fn with_max_header_bytes(mut self, bytes: usize) -> Self {
        self.max_header_bytes = bytes;
        self
    }

    /// Sets [`max_headers`](Self::max_headers).
    pub fn with_max_headers(mut self, headers: usize) -> Self {
        self.max_headers = headers;
        self
    }

    /// Sets [`shutdown_timeout`](Self::shutdown_timeout).
    pub fn with_shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Sets [`write_timeout`](Self::write_timeout).
    pub fn with_write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// The hyper HTTP/1 connection settings that enforce the head limits.
    fn http1(&self) -> hyper::server::conn::http1::Builder {
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .max_header_size(self.max_header_bytes)
            .keep_alive(true);
        // hyper keeps the default number of headers on the stack; any other
        // number costs a heap allocation per request.
        if self.max_headers != DEFAULT_MAX_HEADERS {
            http.max_headers(self.max_headers);
        }
        http
    }
}

/// A request body as [`serve`] hands it to the application: hyper's
/// [`Incoming`] that fails with [`RequestBodyError::TimedOut`] if it has not
/// arrived in full within [`ServerLimits::body_read_timeout`].
///
/// It implements [`http_body::Body`] with `Bytes` data, so an axum `Router`
/// (or `http_body_util::BodyExt::collect`) takes it as is.
#[derive(Debug)]
pub struct RequestBody {
    inner: Incoming,
    timeout: Duration,
    /// Started the first time the application waits for data.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl RequestBody {
    /// `body`, to arrive in full within `timeout` of the first wait for it.
    pub fn new(body: Incoming, timeout: Duration) -> Self {
        RequestBody {
            inner: body,
            timeout,
            deadline: None,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let this = &mut *self;
        // Data already here is delivered even past the deadline: the deadline
        // bounds waiting, not slow consumers.
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(RequestBodyError::Read)));
        }
        let timeout = this.timeout;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(RequestBodyError::TimedOut(timeout)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Why reading a [`RequestBody`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestBodyError {
    /// The body did not arrive in full within the body read timeout (the
    /// duration).
    #[error("the request body did not arrive within {0:?}")]
    TimedOut(Duration),
    /// The connection failed while the body was read (closed early, invalid
    /// chunked encoding, ...).
    #[error("reading the request body failed: {0}")]
    Read(#[source] hyper::Error),
}

/// Serves `service` on every connection accepted from `listener`, within
/// `limits`, until `shutdown` completes; then stops accepting, lets requests
/// in flight finish for at most [`ServerLimits::shutdown_timeout`], drops the
/// connections still open, and returns.
///
/// `service` is any tower service of `Request<`[`RequestBody`]`>`, such as an
/// axum `Router`; it is cloned for each request. HTTP/1.1 only (no HTTP/2, no
/// upgrades). See the [module docs](self) for what each limit does.
///
/// Errors from accepting a connection are logged (`tracing`) and accepting
/// goes on: per-connection errors at once, others (such as running out of
/// file descriptors) after a pause of 100 ms.
///
/// # Errors
///
/// An error only if the listener cannot accept at all (it is not listening,
/// or its socket does not support accepting); the connections already open
/// are then shut down as if `shutdown` had completed.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()>
where
    S: tower_service::Service<Request<RequestBody>, Response = Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let http = limits.http1();
    let service = WithBodyTimeout {
        inner: service,
        timeout: limits.body_read_timeout,
        connection: None,
    };
    let open = Arc::new(Mutex::new(OpenConnections::default()));
    let permits = Arc::new(Semaphore::new(
        limits.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut at_capacity = false;
    let mut shutdown = std::pin::pin!(shutdown);
    let mut failure = None;

    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            // Reaps finished connection tasks so the set stays as small as
            // the number of open connections.
            Some(finished) = connections.join_next() => {
                if let Err(e) = finished {
                    if e.is_panic() {
                        warn!(error = %e, "a connection task panicked");
                    }
                }
                continue;
            }
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if is_connection_error(&e) => {
                debug!(error = %e, "accepting a connection failed");
                continue;
            }
            Err(e) if is_listener_error(&e) => {
                warn!(error = %e, "the listener cannot accept connections; stopping");
                failure = Some(e);
                break;
            }
            Err(e) => {
                warn!(error = %e, pause = ?ACCEPT_ERROR_PAUSE, "accepting connections failed; pausing");
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                }
            }
        };
        let admit = match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => Admit::Now(permit),
            // At the cap: the oldest connection with no request in flight
            // (silent, sending its head, idle between requests) makes room.
            Err(_) => match lock(&open).evict_oldest_idle() {
                Some(handover) => Admit::AfterEviction(handover),
                None => {
                    if !at_capacity {
                        warn!(
                        max_connections = limits.max_connections,
                        "connection limit reached with every connection busy: refusing new connections with 503"
                    );
                        at_capacity = true;
                    }
                    refuse(stream, remote);
                    continue;
                }
            },
        };
        at_capacity = false;
        connections.spawn(serve_connection(
            Accepted {
                stream,
                remote,
                admit,
            },
            http.clone(),
            service.clone(),
            graceful.watcher(),
            Arc::clone(&open),
            limits.write_timeout,
        ));
    }

    drop(listener);
    let open = graceful.count();
    info!(
        open,
        deadline = ?limits.shutdown_timeout,
        "shutting down: no new connections; finishing the requests in flight"
    );
    match tokio::time::timeout(limits.shutdown_timeout, graceful.shutdown()).await {
        Ok(()) => info!("shut down: every connection finished"),
        Err(_) => warn!(
            remaining = connections.len(),
            "shutdown deadline passed: dropping the connections still open"
        ),
    }
    connections.shutdown().await;
    failure.map_or(Ok(()), Err)
}

/// How long a connection admitted by evicting an idle one waits for the
/// evicted connection to give its slot up before it is refused instead.
const EVICTION_WAIT: Duration = Duration::from_secs(1);

/// A connection just accepted, and how it gets its slot.
struct Accepted {
    stream: TcpStream,
    remote: SocketAddr,
    admit: Admit,
}

/// How an accepted connection gets one of the [`ServerLimits::max_connections`] slots.
enum Admit {
    /// A slot was free.
    Now(OwnedSemaphorePermit),
    /// An idle connection was told to close; it hands its slot over.
    AfterEviction(oneshot::Receiver<OwnedSemaphorePermit>),
}

/// A socket whose writes fail with `TimedOut` once one has waited
/// `timeout` for the client to take data ([`ServerLimits::write_timeout`]).
struct WriteTimeout {
    io: TcpStream,
    timeout: Duration,
    /// Armed while a write waits; reset by any progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl WriteTimeout {
    fn new(io: TcpStream, timeout: Duration) -> Self {
        WriteTimeout {
            io,
            timeout,
            stalled: None,
        }
    }

    /// After a write that is pending: `TimedOut` once the wait is too long.
    fn waited<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let timeout = self.timeout;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client took no data for {timeout:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progress<T>(
        &mut self,
        result: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Pending => self.waited(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl tokio::io::AsyncRead for WriteTimeout {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for WriteTimeout {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write(cx, buf);
        this.progress(result, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.progress(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_flush(cx);
        this.progress(result, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_shutdown(cx);
        this.progress(result, cx)
    }
}

/// Drives one connection to its end (or its eviction); its slot is freed
/// when done.
async fn serve_connection<S, B>(
    accepted: Accepted,
    http: http1::Builder,
    service: WithBodyTimeout<S>,
    watcher: Watcher,
    open: Arc<Mutex<OpenConnections>>,
    write_timeout: Duration,
) where
    S: tower_service::Service<Request<RequestBody>, Response = Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let Accepted {
        stream,
        remote,
        admit,
    } = accepted;
    let permit = match admit {
        Admit::Now(permit) => permit,
        Admit::AfterEviction(handover) => {
            match tokio::time::timeout(EVICTION_WAIT, handover).await {
                Ok(Ok(permit)) => permit,
                _ => {
                    refuse(stream, remote);
                    return;
                }
            }
        }
    };
    let (id, state) = lock(&open).register();
    let service = TowerToHyperService::new(WithBodyTimeout {
        connection: Some(Arc::clone(&state)),
        ..service
    });
    let io = WriteTimeout::new(stream, write_timeout);
    let connection = watcher.watch(http.serve_connection(TokioIo::new(io), service));
    tokio::select! {
        served = connection => {
            if let Err(e) = served {
                // Timeouts, oversize heads and clients that vanish end here;
                // they are routine on a public port, hence debug.
                debug!(%remote, error = %e, "connection closed with an error");
            }
        }
        () = state.evict.notified() => {
            debug!(%remote, "idle connection closed to make room for a new one");
        }
    }
    // Leaving the registry and taking a hand-over request happen under its
    // lock, as evictions do, so an eviction either finds this connection and
    // gets its slot, or does not find it.
    let handover = {
        let mut open = lock(&open);
        open.remove(id);
        state.take_handover()
    };
    match handover {
        Some(to) => {
            // If the new connection gave up waiting, the slot is just freed.
            let _ = to.send(permit);
        }
        None => drop(permit),
    }
}

/// The open connections, oldest first, with how many requests each has in
/// flight: at the cap, the oldest idle one is closed to admit a new one, so
/// clients that connect and stay silent (or trickle their head, or idle on
/// keep-alive) cannot keep the server from answering a real request.
#[derive(Default)]
struct OpenConnections {
    next: u64,
    by_age: BTreeMap<u64, Arc<ConnectionState>>,
}

/// One open connection's requests in flight, and its eviction signal.
#[derive(Default)]
struct ConnectionState {
    in_flight: AtomicUsize,
    evicted: AtomicBool,
    evict: Notify,
    /// Where to hand this connection's slot when it closes (set on eviction).
    handover: Mutex<Option<oneshot::Sender<OwnedSemaphorePermit>>>,
}

impl ConnectionState {
    fn take_handover(&self) -> Option<oneshot::Sender<OwnedSemaphorePermit>> {
        self.handover
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

impl OpenConnections {
    fn register(&mut self) -> (u64, Arc<ConnectionState>) {
        let id = self.next;
        self.next += 1;
        let state = Arc::new(ConnectionState::default());
        self.by_age.insert(id, Arc::clone(&state));
        (id, state)
    }

    fn remove(&mut self, id: u64) {
        self.by_age.remove(&id);
    }

    /// Tells the oldest connection with no request in flight to close and
    /// hand its slot over (received here); `None` if every connection is busy.
    fn evict_oldest_idle(&mut self) -> Option<oneshot::Receiver<OwnedSemaphorePermit>> {
        let victim = self.by_age.values().find(|c| {
            c.in_flight.load(Ordering::SeqCst) == 0 && !c.evicted.load(Ordering::SeqCst)
        })?;
        let (to, from) = oneshot::channel();
        *victim.handover.lock().unwrap_or_else(|p| p.into_inner()) = Some(to);
        victim.evicted.store(true, Ordering::SeqCst);
        victim.evict.notify_one();
        Some(from)
    }
}

/// Locks the registry; it holds no invariant a panic could break halfway.
fn lock(open: &Mutex<OpenConnections>) -> std::sync::MutexGuard<'_, OpenConnections> {
    open.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counts a request in flight on its connection until its response is ready.
struct InFlight(Arc<ConnectionState>);

impl InFlight {
    fn start(state: Arc<ConnectionState>) -> Self {
        state.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(state)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response future that keeps its request counted as in flight.
struct Counted<F> {
    future: Pin<Box<F>>,
    _in_flight: Option<InFlight>,
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.future.as_mut().poll(cx)
    }
}

/// Answers a connection beyond the cap without waiting: the `503` fits in a
/// fresh socket's send buffer, and whatever cannot be written is dropped.
fn refuse(stream: TcpStream, remote: SocketAddr) {
    debug!(%remote, "refusing a connection: at the connection limit");
    let _ = stream.try_write(BUSY_RESPONSE);
}

/// An error about one connection (reset before it was accepted, say): the
/// next accept is unaffected.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// An error no retry can mend: the socket is not listening (`EINVAL`) or
/// cannot accept (`EOPNOTSUPP`).
fn is_listener_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
    )
}

/// The application's service with each request body wrapped in a
/// [`RequestBody`], counting the requests in flight on its connection.
#[derive(Clone)]
struct WithBodyTimeout<S> {
    inner: S,
    timeout: Duration,
    connection: Option<Arc<ConnectionState>>,
}

impl<S> tower_service::Service<Request<Incoming>> for WithBodyTimeout<S>
where
    S: tower_service::Service<Request<RequestBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Counted<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        let in_flight = self.connection.clone().map(InFlight::start);
        let timeout = self.timeout;
        Counted {
            future: Box::pin(
                self.inner
                    .call(request.map(|body| RequestBody::new(body, timeout))),
            ),
            _in_flight: in_flight,
        }
    }
}
