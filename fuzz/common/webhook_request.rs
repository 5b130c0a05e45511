//! Webhook request conversion with arbitrary method, path, headers and body:
//! the logic of the `webhook_request` fuzz target, shared with its corpus
//! replay test (`crates/workflow-http/tests/fuzz_corpus.rs`), which imports
//! this file with `#[path]`.
//!
//! One input ([`decode`]) is a request (method, path, headers, body chunks), a
//! choice of token, a raw token string, a body limit and trailing bytes. [`run`]
//! checks, panicking on any violation:
//!
//! - `token_from_path` and `decode_token` on the path and the raw string: what
//!   they return is consistent (a segment without `%` decodes to itself; a
//!   valid token survives `webhook_path` → `token_from_path` → `decode_token`);
//! - `collect_body` with a small limit returns the body exactly when it fits
//!   and `TooLarge` exactly when it does not;
//! - the trailing bytes decoded as a `WebhookRequest` CBOR payload: an error,
//!   or a value that encodes and decodes to itself;
//! - `workflow_http::resume_webhook` (what every adapter calls) on a fresh
//!   engine on a `MemoryStore` with a live default-mode webhook, a live plain
//!   hook, and the chosen token: `400` for an invalid token, `413` past the
//!   limit, `202` for the live webhook with the request recorded exactly as
//!   sent (method, path and query, headers, body; and the recorded
//!   `WebhookRequest` round-trips through `Payload`), `404` otherwise;
//! - `Engine::resume_webhook` with the raw token string answers a status in
//!   `2xx`, `4xx` or `5xx`.

#![allow(dead_code)]

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode, Uri};
use http_body_util::StreamBody;
use workflow_core::{
    webhook_path, Context, Engine, HookOptions, WebhookOptions, WebhookRequest, WorkflowError,
};
use workflow_http::{collect_body, decode_token, token_from_path, BodyError, WebhookConfig};
use workflow_store::{EventData, HookToken, MemoryStore, Payload, RunStatus, Store};

/// The live default-mode webhook's token.
pub const LIVE: &str = "live-webhook";
/// A live plain hook's token (a webhook request to it is `404`).
pub const PLAIN: &str = "plain-hook";
/// A token nobody holds.
pub const UNKNOWN: &str = "nobody-holds-this";
/// Methods picked by the first byte (`0xFF`: a method spelled out).
pub const METHODS: &[&str] = &[
    "POST", "GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "PROPFIND",
];
/// The longest body limit an input can ask for (the limit is small on purpose).
pub const MAX_LIMIT: usize = 256;

/// One decoded input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// The method's text (maybe not a valid method).
    pub method: String,
    /// Which token the request is sent to: 0 live webhook, 1 unknown, 2 the
    /// token decoded from the path, 3 the plain hook, 4 the raw token string.
    pub target: u8,
    /// The body limit (`0..=MAX_LIMIT`).
    pub limit: usize,
    /// The path and query (maybe not a valid URI).
    pub path: String,
    /// Header names and values (maybe invalid: those are skipped).
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// The body, as the chunks it arrives in.
    pub chunks: Vec<Bytes>,
    /// A raw token string.
    pub raw_token: String,
    /// Bytes decoded as a recorded `WebhookRequest`.
    pub tail: Vec<u8>,
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    fn bytes(&mut self) -> Vec<u8> {
        let n = usize::from(self.u8());
        let start = self.pos.min(self.data.len());
        let end = (start + n).min(self.data.len());
        self.pos += n;
        self.data[start..end].to_vec()
    }

    fn string(&mut self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }

    fn rest(&mut self) -> Vec<u8> {
        let start = self.pos.min(self.data.len());
        self.pos = self.data.len();
        self.data[start..].to_vec()
    }
}

/// Decodes any bytes into an [`Input`]:
/// `method target limit path{u8 len} headers{u8 count, (name, value){u8 len}}
/// chunks{u8 count, chunk{u8 len}} raw_token{u8 len} tail...`.
/// A method byte `0xFF` is followed by the method's text; a path that does not
/// start with `/` is put under the webhook prefix.
pub fn decode(data: &[u8]) -> Input {
    let mut r = Reader { data, pos: 0 };
    let method = match r.u8() {
        0xFF => r.string(),
        b => METHODS[usize::from(b) % METHODS.len()].to_string(),
    };
    let target = r.u8() % 5;
    let limit = usize::from(r.u8());
    let mut path = r.string();
    if !path.starts_with('/') {
        path = format!("{}{path}", workflow_core::WEBHOOK_PATH_PREFIX);
    }
    let headers = (0..r.u8() % 16).map(|_| (r.bytes(), r.bytes())).collect();
    let chunks = (0..r.u8() % 8).map(|_| Bytes::from(r.bytes())).collect();
    let raw_token = r.string();
    let tail = r.rest();
    Input {
        method,
        target,
        limit,
        path,
        headers,
        chunks,
        raw_token,
        tail,
    }
}

/// Encodes an [`Input`] so that [`decode`] gives it back (for the seed corpus;
/// strings and chunks of up to 255 bytes, up to 15 headers and 7 chunks).
pub fn encode(input: &Input) -> Vec<u8> {
    fn put(out: &mut Vec<u8>, b: &[u8]) {
        let b = &b[..b.len().min(255)];
        out.push(b.len() as u8);
        out.extend_from_slice(b);
    }
    let mut out = Vec::new();
    match METHODS.iter().position(|m| *m == input.method) {
        Some(i) => out.push(i as u8),
        None => {
            out.push(0xFF);
            put(&mut out, input.method.as_bytes());
        }
    }
    out.push(input.target);
    out.push(input.limit.min(255) as u8);
    let path = input
        .path
        .strip_prefix(workflow_core::WEBHOOK_PATH_PREFIX)
        .filter(|rest| !rest.starts_with('/'))
        .unwrap_or(&input.path);
    put(&mut out, path.as_bytes());
    out.push(input.headers.len().min(15) as u8);
    for (name, value) in input.headers.iter().take(15) {
        put(&mut out, name);
        put(&mut out, value);
    }
    out.push(input.chunks.len().min(7) as u8);
    for chunk in input.chunks.iter().take(7) {
        put(&mut out, chunk);
    }
    put(&mut out, input.raw_token.as_bytes());
    out.extend_from_slice(&input.tail);
    out
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
}

/// Decodes `data` and checks everything in the module docs.
pub fn run(data: &[u8]) {
    let input = decode(data);
    check_tokens(&input.path, &input.raw_token);
    check_tail(&input.tail);
    RUNTIME.with(|rt| rt.block_on(check_engine(&input)));
}

/// A request body that yields its chunks one frame each.
type ChunkedBody = StreamBody<
    futures::stream::Iter<std::vec::IntoIter<Result<http_body::Frame<Bytes>, Infallible>>>,
>;

/// A body that yields `chunks` one frame each.
fn body(chunks: &[Bytes]) -> ChunkedBody {
    let frames: Vec<_> = chunks
        .iter()
        .map(|c| Ok(http_body::Frame::data(c.clone())))
        .collect();
    StreamBody::new(futures::stream::iter(frames))
}

fn check_tokens(path: &str, raw: &str) {
    let mut candidates = vec![raw.to_string()];
    if let Some(segment) = token_from_path(path) {
        assert!(!segment.contains('/'), "segment {segment:?} has a slash");
        assert_eq!(
            format!("{}{segment}", workflow_core::WEBHOOK_PATH_PREFIX),
            path,
            "token_from_path({path:?}) is not the path's last segment"
        );
        candidates.push(segment.to_string());
    }
    for segment in candidates {
        match decode_token(&segment) {
            Ok(token) => {
                if !segment.contains('%') {
                    assert_eq!(token, segment, "a segment without % changed");
                }
                if HookToken::new(token.as_str()).is_ok() {
                    let path = webhook_path(&token);
                    let encoded = token_from_path(&path).unwrap_or_else(|| {
                        panic!("webhook_path({token:?}) = {path:?} has no token")
                    });
                    assert_eq!(
                        decode_token(encoded).as_deref(),
                        Ok(token.as_str()),
                        "token {token:?} does not survive its path {path:?}"
                    );
                }
            }
            Err(e) => assert!(segment.contains('%'), "{segment:?} failed without a %: {e}"),
        }
    }
}

fn check_tail(tail: &[u8]) {
    let payload = Payload(Bytes::copy_from_slice(tail));
    if let Ok(request) = payload.decode::<WebhookRequest>() {
        round_trip(&request);
    }
}

fn round_trip(request: &WebhookRequest) {
    let encoded = Payload::encode(request).expect("a WebhookRequest encodes");
    let back: WebhookRequest = encoded.decode().expect("an encoded WebhookRequest decodes");
    assert_eq!(&back, request, "WebhookRequest does not round-trip");
}

/// Waits on a default-mode webhook and a plain hook, forever.
pub async fn sink(ctx: Context, _: ()) -> Result<(), WorkflowError> {
    let _plain = ctx.create_hook::<u32>(HookOptions::token(PLAIN))?;
    let mut webhook = ctx.create_webhook(WebhookOptions::token(LIVE))?;
    loop {
        webhook.next().await?;
    }
}

/// The request `input` describes; invalid parts are replaced (method: POST,
/// URI: the live webhook's path) or skipped (headers).
fn request(input: &Input) -> http::Request<()> {
    let mut request = http::Request::new(());
    *request.method_mut() = Method::from_bytes(input.method.as_bytes()).unwrap_or(Method::POST);
    *request.uri_mut() =
        Uri::try_from(input.path.as_str()).unwrap_or_else(|_| Uri::from_static("/fallback"));
    for (name, value) in &input.headers {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            request.headers_mut().append(n, v);
        }
    }
    request
}

async fn check_engine(input: &Input) {
    let limit = input.limit.min(MAX_LIMIT);
    let config = WebhookConfig::new()
        .with_body_limit(limit)
        .with_drain_limit(64);
    let whole: Vec<u8> = input.chunks.iter().flatten().copied().collect();

    // collect_body alone.
    match collect_body(body(&input.chunks), &config).await {
        Ok(got) => {
            assert!(whole.len() <= limit, "a body past the limit was collected");
            assert_eq!(got, whole, "collect_body changed the body");
        }
        Err(BodyError::TooLarge { limit: l }) => {
            assert_eq!(l, limit);
            assert!(whole.len() > limit, "a body within the limit was refused");
        }
        Err(e) => panic!("collect_body failed on an infallible body: {e}"),
    }

    // The whole path, on a fresh engine.
    let store = MemoryStore::new();
    let engine = Engine::builder(store.clone())
        .workflow("sink", sink)
        .build();
    let run = engine.start("sink", &()).await.expect("start");
    engine.run_due().await.expect("run_due");
    assert!(
        engine.get_hook(LIVE).await.expect("get_hook").is_some(),
        "the webhook is not live"
    );
    let path_token = token_from_path(&input.path).and_then(|s| decode_token(s).ok());
    let token = match input.target {
        0 => LIVE.to_string(),
        1 => UNKNOWN.to_string(),
        2 => path_token.unwrap_or_default(),
        3 => PLAIN.to_string(),
        _ => input.raw_token.clone(),
    };
    let parts = request(input);
    let sent = parts.clone();
    let (head, ()) = parts.into_parts();
    let before = store.read_log(run).await.expect("read_log").len();
    let answer = workflow_http::resume_webhook(
        &engine,
        &token,
        http::Request::from_parts(head, body(&input.chunks)),
        &config,
    )
    .await;
    let status = answer.status();
    let after = store.read_log(run).await.expect("read_log");
    let announced = sent
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let too_large = whole.len() > limit || announced > limit as u64;
    // The token is checked, then looked up, before the body is read: only a
    // live webhook's request can be too large.
    let expected = if HookToken::new(token.as_str()).is_err() {
        StatusCode::BAD_REQUEST
    } else if token != LIVE {
        StatusCode::NOT_FOUND
    } else if too_large {
        StatusCode::PAYLOAD_TOO_LARGE
    } else {
        StatusCode::ACCEPTED
    };
    assert_eq!(
        status,
        expected,
        "token {token:?}, body {} bytes (announced {announced}), limit {limit}",
        whole.len()
    );
    if status == StatusCode::ACCEPTED {
        assert_eq!(after.len(), before + 1, "one event recorded");
        let Some(EventData::HookReceived { payload, .. }) = after.last().map(|e| &e.data) else {
            panic!("the last event is not hook_received: {:?}", after.last());
        };
        let recorded: WebhookRequest = payload.decode().expect("the recorded request decodes");
        round_trip(&recorded);
        assert_eq!(recorded.method, sent.method().as_str());
        let uri = sent
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| sent.uri().path().to_string());
        assert_eq!(recorded.uri, uri);
        let headers: Vec<(String, Bytes)> = sent
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), Bytes::copy_from_slice(v.as_bytes())))
            .collect();
        assert_eq!(recorded.headers, headers);
        assert_eq!(recorded.body, whole);
        assert!(!recorded.request_id.is_empty());
    } else {
        assert_eq!(after.len(), before, "a refused request was recorded");
    }

    // Engine::resume_webhook with the raw token: any answer, as long as it is one.
    let direct = http::Request::builder()
        .method(sent.method().clone())
        .uri(sent.uri().clone())
        .body(Bytes::from(whole))
        .expect("a request");
    let status = tokio::time::timeout(
        Duration::from_secs(10),
        engine.resume_webhook(&input.raw_token, direct),
    )
    .await
    .expect("resume_webhook answers")
    .status();
    assert!(
        status.is_success() || status.is_client_error() || status.is_server_error(),
        "status {status}"
    );
    let rec = store.get_run(run).await.expect("get_run").expect("the run");
    assert_eq!(rec.status, RunStatus::Running);
}
