//! Replays an arbitrary event log against a sample workflow with
//! `Engine::check_replay` on a read-only store: any log must give a report or
//! a typed error, never a panic or a hang. The logic is in
//! `fuzz/common/replay_log.rs` (shared with the corpus replay test in
//! `crates/workflow-core/tests/fuzz_corpus.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../common/replay_log.rs"]
mod replay_log;

fuzz_target!(|data: &[u8]| {
    let _ = replay_log::run(data);
});
