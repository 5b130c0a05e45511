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
//! The response replays the stored chunks and then follows the stream
//! live until it is closed (a run's streams close when it ends). While
//! nothing comes, a comment line keeps the connection alive every
//! [`KEEP_ALIVE`]. Chunks are shown as JSON; a chunk that has no JSON form
//! (raw bytes) ends the response with an `error` event.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{header, HeaderMap, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use workflow_core::Engine;
use workflow_store::{HookToken, RunId, StreamName};

/// Path prefix of the stream route: `{prefix}{run}/{name}`.
pub const STREAM_PATH_PREFIX: &str = "/.well-known/workflow/v1/stream/";

/// How often a quiet stream sends a keep-alive comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The body of a stream response: chunks as they come.
pub type StreamResponseBody = UnsyncBoxBody<Bytes, Infallible>;

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

/// Answers a request for stream `name` of `run` (the path's two segments,
/// percent-decoded), with the request's query and headers (see the module
/// docs for the cases).
pub async fn stream_response(
    engine: &Engine,
    run: &str,
    name: &str,
    query: Option<&str>,
    headers: &HeaderMap,
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
    let Ok(from) = start_index(query, headers) else {
        return plain(
            StatusCode::BAD_REQUEST,
            "`from` and `Last-Event-ID` must be chunk indexes",
        );
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
    let format = match headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) {
        Some(accept) if accept.contains("application/x-ndjson") => Format::Ndjson,
        _ => Format::Sse,
    };
    let chunks = engine.read_stream::<serde_json::Value>(run, stream.as_str(), from);
    let body = frames(chunks, format);
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

/// The chunks as body frames, with keep-alives while the stream is quiet.
fn frames(
    chunks: impl futures_util::Stream<Item = workflow_core::stream::StreamItem<serde_json::Value>>
        + Send
        + 'static,
    format: Format,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + 'static {
    let chunks = Box::pin(chunks);
    futures_util::stream::unfold(Some(chunks), move |state| async move {
        let mut chunks = state?;
        let next = tokio::time::timeout(KEEP_ALIVE, chunks.next()).await;
        let text = match next {
            Err(_) => match format {
                Format::Sse => ": keep-alive\n\n".to_owned(),
                Format::Ndjson => "\n".to_owned(),
            },
            Ok(None) => return None,
            Ok(Some(Ok((index, value)))) => match format {
                Format::Sse => format!("id: {index}\ndata: {value}\n\n"),
                Format::Ndjson => {
                    format!(
                        "{}\n",
                        serde_json::json!({ "index": index, "chunk": value })
                    )
                }
            },
            Ok(Some(Err(e))) => {
                let message = serde_json::Value::String(e.to_string());
                let text = match format {
                    Format::Sse => format!("event: error\ndata: {message}\n\n"),
                    Format::Ndjson => format!("{}\n", serde_json::json!({ "error": message })),
                };
                return Some((Ok(Frame::data(Bytes::from(text))), None));
            }
        };
        Some((Ok(Frame::data(Bytes::from(text))), Some(chunks)))
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
}
