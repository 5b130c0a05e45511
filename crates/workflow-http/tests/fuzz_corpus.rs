//! The `webhook_request` fuzz target's corpus, replayed by the ordinary test
//! suite: arbitrary methods, paths, headers and bodies through token decoding,
//! body collection, `WebhookRequest` encoding and `resume_webhook` on a real
//! engine give the documented answers, never a panic.
//!
//! The target's logic lives in `fuzz/common/webhook_request.rs`, shared with the
//! cargo-fuzz target `fuzz/fuzz_targets/webhook_request.rs`. Every input that
//! ever made the target fail belongs in `fuzz/corpus/webhook_request/`, where
//! this test keeps it as a regression test.
//!
//! Regenerate the seeds: `cargo test -p workflow-http --test fuzz_corpus -- --ignored`.

#[path = "../../../fuzz/common/webhook_request.rs"]
mod webhook_request;

use std::path::PathBuf;

use bytes::Bytes;
use webhook_request::{Input, LIVE, PLAIN};
use workflow_core::{webhook_path, Engine, WEBHOOK_PATH_PREFIX};
use workflow_store::{EventData, MemoryStore, Store};

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/webhook_request")
}

#[path = "../../../fuzz/common/corpus.rs"]
mod seed_corpus;

fn corpus() -> Vec<(String, Vec<u8>)> {
    seed_corpus::read(&corpus_dir())
}

#[test]
fn webhook_request_corpus_replays() {
    let seeds = corpus();
    for (name, bytes) in &seeds {
        if std::panic::catch_unwind(|| webhook_request::run(bytes)).is_err() {
            panic!("seed {name} fails the webhook_request target (see the panic above)");
        }
    }
    assert!(seeds.len() >= 30, "corpus too small: {} seeds", seeds.len());
}

/// A small deterministic fuzzer over the corpus, so the ordinary test suite
/// explores beyond the seeds even where cargo-fuzz cannot run (seeded, so a
/// failure reproduces). `WORKFLOW_FUZZ_ROUNDS` (default 12) sets how many
/// mutations per seed.
#[test]
fn mutated_webhook_request_corpus_keeps_its_promises() {
    let seeds = corpus();
    let runs = seed_corpus::mutate_and_run("webhook_request", &seeds, 0x00C0_FFEE, 12, |bytes| {
        webhook_request::run(bytes)
    });
    assert!(runs > 300, "only {runs} mutations ran");
}

fn input(path: &str) -> Input {
    Input {
        method: "POST".into(),
        target: 0,
        limit: 64,
        path: path.into(),
        headers: vec![(b"content-type".to_vec(), b"application/json".to_vec())],
        chunks: vec![Bytes::from_static(br#"{"paid":true}"#)],
        raw_token: LIVE.into(),
        tail: Vec::new(),
    }
}

/// A `WebhookRequest` as the engine records it, CBOR.
async fn recorded_request() -> Vec<u8> {
    let store = MemoryStore::new();
    let engine = Engine::builder(store.clone())
        .workflow("sink", webhook_request::sink)
        .build();
    let run = engine.start("sink", &()).await.unwrap();
    engine.run_due().await.unwrap();
    let request = http::Request::post(format!("{}?a=1", webhook_path(LIVE)))
        .header("content-type", "text/plain")
        .header("x-many", "1")
        .header("x-many", "2")
        .body(Bytes::from_static(b"hello"))
        .unwrap();
    assert_eq!(engine.resume_webhook(LIVE, request).await.status(), 202);
    let log = store.read_log(run).await.unwrap();
    match &log.last().unwrap().data {
        EventData::HookReceived { payload, .. } => payload.as_bytes().to_vec(),
        other => panic!("not a hook_received: {other:?}"),
    }
}

/// Writes the seed corpus. Run by hand:
/// `cargo test -p workflow-http --test fuzz_corpus -- --ignored`.
#[test]
#[ignore]
fn write_webhook_request_seeds() {
    let dir = corpus_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let live = webhook_path(LIVE);
    let recorded = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(recorded_request());
    let mut seeds: Vec<(&str, Input)> = Vec::new();
    let base = input(&live);
    seeds.push(("live-json", base.clone()));
    for (i, method) in webhook_request::METHODS.iter().enumerate() {
        let mut s = base.clone();
        s.method = method.to_string();
        s.target = (i % 5) as u8;
        seeds.push((Box::leak(format!("method-{method}").into_boxed_str()), s));
    }
    let mut s = base.clone();
    s.method = "BREW".into();
    seeds.push(("method-custom", s));
    let mut s = base.clone();
    s.method = "GE T".into();
    seeds.push(("method-invalid", s));
    let mut s = base.clone();
    s.path = format!("{live}?a=1&b=%20&c");
    seeds.push(("path-query", s));
    let mut s = base.clone();
    s.path = format!("{WEBHOOK_PATH_PREFIX}live%2Dwebhook");
    s.target = 2;
    seeds.push(("path-escaped-live-token", s));
    let mut s = base.clone();
    s.path = format!("{WEBHOOK_PATH_PREFIX}order%3A42");
    s.target = 2;
    seeds.push(("path-escaped-unknown-token", s));
    for (name, segment) in [
        ("path-empty-token", ""),
        ("path-malformed-escape", "bad%zz"),
        ("path-escape-at-end", "ab%4"),
        ("path-not-utf8", "%FF%FE"),
        ("path-extra-segment", "a/b"),
        ("path-dot-dot", ".."),
        ("path-encoded-slash", "a%2Fb"),
        ("path-unicode", "%E2%9C%93"),
    ] {
        let mut s = base.clone();
        s.path = format!("{WEBHOOK_PATH_PREFIX}{segment}");
        s.target = 2;
        seeds.push((name, s));
    }
    let mut s = base.clone();
    s.path = "/not the/webhook path\u{e9}".into();
    s.target = 2;
    seeds.push(("path-not-a-uri", s));
    let mut s = base.clone();
    s.path = "/somewhere/else".into();
    seeds.push(("path-elsewhere", s));
    let mut s = base.clone();
    s.headers = vec![
        (b"X-Upper".to_vec(), b"v".to_vec()),
        (b"x-dup".to_vec(), b"1".to_vec()),
        (b"x-dup".to_vec(), b"2".to_vec()),
        (b"bad name".to_vec(), b"v".to_vec()),
        (b"x-bad-value".to_vec(), b"a\nb".to_vec()),
        (b"x-binary".to_vec(), vec![0x80, 0xff]),
        (b"".to_vec(), b"empty name".to_vec()),
    ];
    seeds.push(("headers-odd", s));
    let mut s = base.clone();
    s.headers = (0..15)
        .map(|i| (format!("x-h{i}").into_bytes(), vec![b'v'; 200]))
        .collect();
    seeds.push(("headers-many", s));
    for (name, length) in [
        ("content-length-too-big", "1000"),
        ("content-length-too-small", "1"),
        ("content-length-not-a-number", "ten"),
        ("content-length-huge", "18446744073709551616"),
        ("content-length-spaces", " 13 "),
    ] {
        let mut s = base.clone();
        s.headers
            .push((b"content-length".to_vec(), length.as_bytes().to_vec()));
        seeds.push((name, s));
    }
    let mut s = base.clone();
    s.chunks = Vec::new();
    s.limit = 0;
    seeds.push(("body-empty-limit-0", s));
    let mut s = base.clone();
    s.chunks = vec![Bytes::from(vec![b'x'; 64])];
    seeds.push(("body-at-limit", s));
    let mut s = base.clone();
    s.chunks = vec![Bytes::from(vec![b'x'; 40]), Bytes::from(vec![b'y'; 25])];
    seeds.push(("body-one-past-limit-in-chunks", s));
    let mut s = base.clone();
    s.chunks = (0..7).map(|_| Bytes::from(vec![0u8; 255])).collect();
    s.limit = 255;
    seeds.push(("body-far-past-limit", s));
    let mut s = base.clone();
    s.chunks = vec![Bytes::new(), Bytes::from_static(b"a"), Bytes::new()];
    seeds.push(("body-empty-chunks", s));
    let mut s = base.clone();
    s.chunks = vec![Bytes::from(vec![0xff, 0xfe, 0x00])];
    seeds.push(("body-binary", s));
    for (name, target, raw) in [
        ("target-unknown", 1, LIVE),
        ("target-plain-hook", 3, PLAIN),
        ("raw-token-live", 4, LIVE),
        ("raw-token-plain", 4, PLAIN),
        ("raw-token-empty", 4, ""),
        ("raw-token-space", 4, "a b"),
        ("raw-token-unicode", 4, "\u{e9}t\u{e9}"),
        ("raw-token-dots", 4, "../x"),
        ("raw-token-percent", 4, "live%2Dwebhook"),
        ("raw-token-long", 4, &"t".repeat(255)),
    ] {
        let mut s = base.clone();
        s.target = target;
        s.raw_token = raw.to_string();
        seeds.push((name, s));
    }
    let mut s = base.clone();
    s.tail = recorded.clone();
    seeds.push(("tail-recorded-request", s));
    let mut s = base.clone();
    s.tail = recorded[..recorded.len() / 2].to_vec();
    seeds.push(("tail-truncated-request", s));
    let mut s = base.clone();
    let mut flipped = recorded.clone();
    for b in flipped.iter_mut().step_by(7) {
        *b ^= 0x20;
    }
    s.tail = flipped;
    seeds.push(("tail-damaged-request", s));
    let mut s = base.clone();
    s.tail = vec![0xbf; 64];
    seeds.push(("tail-garbage", s));
    for (name, s) in &seeds {
        let bytes = webhook_request::encode(s);
        assert_eq!(
            &webhook_request::decode(&bytes),
            s,
            "seed {name} does not round-trip"
        );
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    std::fs::write(dir.join("empty"), b"").unwrap();
}
