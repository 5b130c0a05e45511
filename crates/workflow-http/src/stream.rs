//! Durable output streams over HTTP: `GET /.well-known/workflow/v1/stream/{run}/{name}`.
//!
//! The framework-neutral answer ([`stream_response`]) that the adapters
//! mount. A client reads one stream of one run with a read token the
//! workflow handed out ([`workflow_core::Context::stream_token`]), given as
//! `Authorization: Bearer {token}` or `?token={token}` (browsers'
//! `EventSource` cannot set headers):
//!
//! | request | answer |
//! |---|---|
//! | `Accept: application/x-ndjson` | one JSON object per line: `{"index": 3, "chunk": …}` |
//! | otherwise | server-sent events: one `data:` event per chunk, its index as `id:` |
//! | `?from=N` | chunks from index `N` |
//! | `Last-Event-ID: K` (no `from`) | chunks from `K + 1`: an `EventSource` resumes exactly |
//! | no token | `401` |
//! | unknown run or stream, or a token that does not grant it | `404` |
//! | bad `from` or `Last-Event-ID` | `400` |
//! | the store failed | `503` |
//!
//! | [`StreamConfig::max_readers`] responses already streaming | `503` with `Retry-After: 1` |
//! | the store failed | `503` |
//!
//! The response replays the stored chunks and then follows the stream
//! live until it is closed (a run's streams close when it ends). While
//! nothing comes, a keep-alive (an SSE comment, an empty NDJSON line) is
//! sent every [`StreamConfig::keep_alive`].
//!
//! # Chunks as JSON, raw bytes as base64
//!
//! A chunk is stored as CBOR and sent as JSON. A chunk that is raw bytes
//! (written with [`workflow_core::stream::RawChunk`]) is sent base64-encoded
//! (standard alphabet, padded): as an SSE event of type `bytes`
//! (`event: bytes`, `data: aGVsbG8=`), or as the NDJSON line
//! `{"index": 3, "bytes": "aGVsbG8="}`. Byte strings inside a structured
//! chunk become base64 strings; map keys that are not text become their JSON
//! text; CBOR tags are dropped for their value; non-finite floats become `null`.
//!
//! # Limits
//!
//! | limit | default | past it |
//! |---|---|---|
//! | [`StreamConfig::max_readers`] | [`DEFAULT_MAX_READERS`] (256) responses streaming at once per config (its clones share the count) | `503`, `Retry-After: 1` |
//! | [`StreamConfig::keep_alive`] | [`DEFAULT_KEEP_ALIVE`] (15 s) | a keep-alive is sent, so proxies and clients see the connection live |
//! | run id and stream name in the path | a ULID; 1 to 128 bytes of `A-Z a-z 0-9 - . _ ~` | `404` |
//!
//! The body is pulled: chunks are read from the store a page at a time
//! ([`workflow_store::STREAM_PAGE`]) only as the connection takes them, so a
//! client that reads slowly or not at all holds at most one page and the
//! connection's write buffers, never the whole stream. Served by
//! [`crate::server::serve`], a client that stops reading is disconnected
//! after [`ServerLimits::write_timeout`](crate::server::ServerLimits::write_timeout)
//! (30 s), which frees its reader slot; the head limits and timeouts of the
//! webhook route apply too. Behind another server, set a write or idle
//! timeout there: a reader that never reads otherwise keeps its slot.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{header, HeaderMap, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use workflow_core::Engine;
use workflow_store::{HookToken, RunId, StreamName};

/// Path prefix of the stream route: `{prefix}{run}/{name}`.
pub const STREAM_PATH_PREFIX: &str = "/.well-known/workflow/v1/stream/";

/// The default [`StreamConfig::keep_alive`]: 15 seconds.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The default [`StreamConfig::max_readers`]: 256 responses at once.
pub const DEFAULT_MAX_READERS: usize = 256;

/// The body of a stream response: chunks as they come.
pub type StreamResponseBody = UnsyncBoxBody<Bytes, Infallible>;

/// The limits of the stream route (see the [module docs](self)). Clones
/// share one count of readers, so give every route of a server the same
/// config (or clones of it).
///
/// ```
/// use std::time::Duration;
/// use workflow_http::stream::{StreamConfig, DEFAULT_MAX_READERS};
///
/// let config = StreamConfig::new();
/// assert_eq!(config.max_readers(), DEFAULT_MAX_READERS);
/// let strict = StreamConfig::new()
///     .with_max_readers(16)
///     .with_keep_alive(Duration::from_secs(5));
/// assert_eq!(strict.max_readers(), 16);
/// assert_eq!(strict.readers(), 0);
/// ```
#[derive(Clone, Debug)]
pub struct StreamConfig {
    keep_alive: Duration,
    max_readers: usize,
    slots: Arc<Semaphore>,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig::new()
    }
}

impl StreamConfig {
    /// The defaults: keep-alives every [`DEFAULT_KEEP_ALIVE`], at most
    /// [`DEFAULT_MAX_READERS`] readers.
    pub fn new() -> Self {
        StreamConfig {
            keep_alive: DEFAULT_KEEP_ALIVE,
            max_readers: DEFAULT_MAX_READERS,
            slots: Arc::new(Semaphore::new(DEFAULT_MAX_READERS)),
        }
    }

    /// Sends a keep-alive after `interval` without a chunk (at least 1 ms).
    pub fn with_keep_alive(mut self, interval: Duration) -> Self {
        self.keep_alive = interval.max(Duration::from_millis(1));
        self
    }

    /// Streams at most `readers` responses at once (at least 1; capped at
    /// tokio's semaphore maximum); a new count, not shared with earlier clones.
    pub fn with_max_readers(mut self, readers: usize) -> Self {
        let readers = readers.clamp(1, Semaphore::MAX_PERMITS);
        self.max_readers = readers;
        self.slots = Arc::new(Semaphore::new(readers));
        self
    }

    /// The keep-alive interval.
    pub fn keep_alive(&self) -> Duration {
        self.keep_alive
    }

    /// The most responses streaming at once.
    pub fn max_readers(&self) -> usize {
        self.max_readers
    }

    /// How many responses are streaming now.
    pub fn readers(&self) -> usize {
        self.max_readers
            .saturating_sub(self.slots.available_permits())
    }
}

/// How the chunks are framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Sse,
    Ndjson,
}

fn plain(status: StatusCode, message: &str) -> Response<StreamResponseBody> {
    let mut r = Response::new(Full::new(Bytes::from(message.to_owned())).boxed_unsync());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn query_param<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// Where to start: `?from=N`, else `Last-Event-ID: K` + 1, else 0.
fn start_index(query: Option<&str>, headers: &HeaderMap) -> Result<u64, ()> {
    if let Some(from) = query_param(query, "from") {
        return from.parse().map_err(|_| ());
    }
    match headers.get("last-event-id") {
        None => Ok(0),
        Some(v) => {
            let k: u64 = v.to_str().map_err(|_| ())?.trim().parse().map_err(|_| ())?;
            k.checked_add(1).ok_or(())
        }
    }
}

fn read_token(query: Option<&str>, headers: &HeaderMap) -> Option<String> {
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let auth = auth.to_str().ok()?;
        return auth.strip_prefix("Bearer ").map(|t| t.trim().to_owned());
    }
    let raw = query_param(query, "token")?;
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()
        .map(|t| t.into_owned())
}

/// The run and stream name of a stream route path
/// (`/.well-known/workflow/v1/stream/{run}/{name}`), raw; `None` for any
/// other path.
///
/// ```
/// use workflow_http::stream::stream_path;
/// assert_eq!(
///     stream_path("/.well-known/workflow/v1/stream/01J0/progress"),
///     Some(("01J0", "progress"))
/// );
/// assert_eq!(stream_path("/.well-known/workflow/v1/stream/01J0"), None);
/// assert_eq!(stream_path("/other"), None);
/// ```
pub fn stream_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix(STREAM_PATH_PREFIX)?;
    let (run, name) = rest.split_once('/')?;
    (!run.is_empty() && !name.is_empty() && !name.contains('/')).then_some((run, name))
}

/// Answers a request for stream `name` of `run` (the path's two segments,
/// percent-decoded), with the request's query and headers, within `config`'s
/// limits (see the module docs for the cases).
///
/// ```no_run
/// # async fn demo(engine: workflow_core::Engine) {
/// use workflow_http::stream::{stream_response, StreamConfig};
/// let config = StreamConfig::new();
/// let headers = http::HeaderMap::new();
/// let response = stream_response(&engine, "01J0", "progress", Some("from=3"), &headers, &config).await;
/// # let _ = response;
/// # }
/// ```
pub async fn stream_response(
    engine: &Engine,
    run: &str,
    name: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    config: &StreamConfig,
) -> Response<StreamResponseBody> {
    let Some(token) = read_token(query, headers) else {
        let mut r = plain(StatusCode::UNAUTHORIZED, "a stream read token is required");
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return r;
    };
    let not_found = || plain(StatusCode::NOT_FOUND, "");
    let (Ok(run), Ok(stream), Ok(token)) = (
        run.parse::<RunId>(),
        StreamName::new(name),
        HookToken::new(token),
    ) else {
        return not_found();
    };
    match engine
        .store()
        .stream_readable_with(run, &stream, &token)
        .await
    {
        Ok(true) => {}
        Ok(false) => return not_found(),
        Err(e) => {
            tracing::warn!(error = %e, %run, "stream read failed");
            return plain(StatusCode::SERVICE_UNAVAILABLE, "the store failed");
        }
    }
    authorized_stream_response(engine, run, &stream, query, headers, config).await
}

/// Answers a request for a stream whose reader the caller has authorized
/// itself (an operator's API behind its own authentication): like
/// [`stream_response`] without the read token; `404` if the run or stream
/// is unknown.
///
/// ```no_run
/// # async fn demo(engine: workflow_core::Engine, run: workflow_store::RunId) {
/// use workflow_http::stream::{authorized_stream_response, StreamConfig};
/// let name = workflow_store::StreamName::default_stream();
/// let headers = http::HeaderMap::new();
/// let config = StreamConfig::new();
/// let response = authorized_stream_response(&engine, run, &name, None, &headers, &config).await;
/// # let _ = response;
/// # }
/// ```
pub async fn authorized_stream_response(
    engine: &Engine,
    run: RunId,
    stream: &StreamName,
    query: Option<&str>,
    headers: &HeaderMap,
    config: &StreamConfig,
) -> Response<StreamResponseBody> {
    let Ok(from) = start_index(query, headers) else {
        return plain(
            StatusCode::BAD_REQUEST,
            "`from` and `Last-Event-ID` must be chunk indexes",
        );
    };
    match engine.store().read_stream(run, stream, 0, 1).await {
        Ok(Some(_)) => {}
        Ok(None) => return plain(StatusCode::NOT_FOUND, ""),
        Err(e) => {
            tracing::warn!(error = %e, %run, "stream read failed");
            return plain(StatusCode::SERVICE_UNAVAILABLE, "the store failed");
        }
    }
    let Ok(permit) = config.slots.clone().try_acquire_owned() else {
        let mut r = plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many stream readers; retry shortly",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return r;
    };
    let format = match headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) {
        Some(accept) if accept.contains("application/x-ndjson") => Format::Ndjson,
        _ => Format::Sse,
    };
    let chunks = engine.read_stream::<ciborium::Value>(run, stream.as_str(), from);
    let body = frames(chunks, format, config.keep_alive, permit);
    let mut r = Response::new(StreamBody::new(body).boxed_unsync());
    let content_type = match format {
        Format::Sse => "text/event-stream",
        Format::Ndjson => "application/x-ndjson",
    };
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    r
}

/// A chunk as sent: JSON, or raw bytes (base64).
enum Shown {
    Json(serde_json::Value),
    Bytes(String),
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A chunk's CBOR value as it is sent (see the module docs).
fn show(value: ciborium::Value) -> Shown {
    match value {
        ciborium::Value::Bytes(b) => Shown::Bytes(base64(&b)),
        ciborium::Value::Tag(_, inner) => show(*inner),
        other => Shown::Json(to_json(other)),
    }
}

/// A CBOR value as JSON: byte strings as base64 text, other map keys as
/// their JSON text, tags dropped, non-finite floats as `null`.
fn to_json(value: ciborium::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        ciborium::Value::Integer(i) => {
            let i = i128::from(i);
            if let Ok(u) = u64::try_from(i) {
                J::from(u)
            } else if let Ok(s) = i64::try_from(i) {
                J::from(s)
            } else {
                J::String(i.to_string())
            }
        }
        ciborium::Value::Bytes(b) => J::String(base64(&b)),
        ciborium::Value::Float(f) => serde_json::Number::from_f64(f).map_or(J::Null, J::Number),
        ciborium::Value::Text(t) => J::String(t),
        ciborium::Value::Bool(b) => J::Bool(b),
        ciborium::Value::Null => J::Null,
        ciborium::Value::Tag(_, inner) => to_json(*inner),
        ciborium::Value::Array(items) => J::Array(items.into_iter().map(to_json).collect()),
        ciborium::Value::Map(entries) => J::Object(
            entries
                .into_iter()
                .map(|(k, v)| {
                    let key = match k {
                        ciborium::Value::Text(t) => t,
                        other => to_json(other).to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        // `ciborium::Value` is non-exhaustive.
        _ => J::Null,
    }
}

/// A stored chunk as NDJSON readers get it: `{"index": i, "chunk": …}`, or
/// `{"index": i, "bytes": "<base64>"}` for raw bytes, or `{"index": i,
/// "error": …}` for a payload that is not CBOR.
///
/// ```
/// use workflow_store::Payload;
/// let line = workflow_http::stream::chunk_line(2, &Payload::encode(&20).unwrap());
/// assert_eq!(line, serde_json::json!({"index": 2, "chunk": 20}));
/// ```
pub fn chunk_line(index: u64, payload: &workflow_store::Payload) -> serde_json::Value {
    match payload.decode::<ciborium::Value>() {
        Ok(value) => match show(value) {
            Shown::Json(v) => serde_json::json!({ "index": index, "chunk": v }),
            Shown::Bytes(b) => serde_json::json!({ "index": index, "bytes": b }),
        },
        Err(e) => serde_json::json!({ "index": index, "error": e.to_string() }),
    }
}

/// One chunk, framed.
fn frame_chunk(index: u64, value: ciborium::Value, format: Format) -> String {
    match (show(value), format) {
        (Shown::Json(v), Format::Sse) => format!("id: {index}\ndata: {v}\n\n"),
        (Shown::Bytes(b), Format::Sse) => format!("id: {index}\nevent: bytes\ndata: {b}\n\n"),
        (Shown::Json(v), Format::Ndjson) => {
            format!("{}\n", serde_json::json!({ "index": index, "chunk": v }))
        }
        (Shown::Bytes(b), Format::Ndjson) => {
            format!("{}\n", serde_json::json!({ "index": index, "bytes": b }))
        }
    }
}

/// The chunks as body frames, with keep-alives while the stream is quiet;
/// holds the reader's slot until the body is dropped.
fn frames(
    chunks: impl futures_util::Stream<Item = workflow_core::stream::StreamItem<ciborium::Value>>
        + Send
        + 'static,
    format: Format,
    keep_alive: Duration,
    permit: OwnedSemaphorePermit,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + 'static {
    let chunks = Box::pin(chunks);
    futures_util::stream::unfold(Some((chunks, permit)), move |state| async move {
        let (mut chunks, permit) = state?;
        let next = tokio::time::timeout(keep_alive, chunks.next()).await;
        let text = match next {
            Err(_) => match format {
                Format::Sse => ": keep-alive\n\n".to_owned(),
                Format::Ndjson => "\n".to_owned(),
            },
            Ok(None) => return None,
            Ok(Some(Ok((index, value)))) => frame_chunk(index, value, format),
            Ok(Some(Err(e))) => {
                let message = serde_json::Value::String(e.to_string());
                let text = match format {
                    Format::Sse => format!("event: error\ndata: {message}\n\n"),
                    Format::Ndjson => format!("{}\n", serde_json::json!({ "error": message })),
                };
                return Some((Ok(Frame::data(Bytes::from(text))), None));
            }
        };
        Some((Ok(Frame::data(Bytes::from(text))), Some((chunks, permit))))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_event_id_resumes_after_it() {
        let mut h = HeaderMap::new();
        assert_eq!(start_index(None, &h), Ok(0));
        h.insert("last-event-id", "4".parse().unwrap());
        assert_eq!(start_index(None, &h), Ok(5));
        assert_eq!(start_index(Some("from=2"), &h), Ok(2));
        assert_eq!(start_index(Some("from=x"), &h), Err(()));
        h.insert("last-event-id", u64::MAX.to_string().parse().unwrap());
        assert_eq!(start_index(None, &h), Err(()));
    }

    #[test]
    fn raw_bytes_are_base64_and_values_json() {
        let raw = ciborium::Value::Bytes(b"hello".to_vec());
        assert_eq!(
            frame_chunk(3, raw.clone(), Format::Sse),
            "id: 3\nevent: bytes\ndata: aGVsbG8=\n\n"
        );
        assert_eq!(
            frame_chunk(3, raw, Format::Ndjson),
            "{\"bytes\":\"aGVsbG8=\",\"index\":3}\n"
        );
        let nested = ciborium::Value::Map(vec![
            (
                ciborium::Value::Text("b".into()),
                ciborium::Value::Bytes(vec![0xff]),
            ),
            (
                ciborium::Value::Integer(7.into()),
                ciborium::Value::Float(f64::NAN),
            ),
        ]);
        assert_eq!(
            to_json(nested),
            serde_json::json!({ "b": "/w==", "7": null })
        );
    }
}
