//! Webhook request conversion with arbitrary method, path, headers and body:
//! token decoding, body collection with a small limit, `WebhookRequest`
//! encoding, and `resume_webhook` on a real engine with a live webhook and
//! unknown tokens. The logic and its checks are in
//! `fuzz/common/webhook_request.rs` (shared with the corpus replay test in
//! `crates/workflow-http/tests/fuzz_corpus.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../common/webhook_request.rs"]
mod webhook_request;

fuzz_target!(|data: &[u8]| {
    webhook_request::run(data);
});
