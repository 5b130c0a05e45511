//! The `replay_log` fuzz target's corpus, replayed by the ordinary test suite:
//! arbitrary event logs replayed against a sample workflow with
//! `Engine::check_replay` give a report or an error, never a panic or a hang.
//!
//! The target's logic lives in `fuzz/common/replay_log.rs`, shared with the
//! cargo-fuzz target `fuzz/fuzz_targets/replay_log.rs`. Every input that ever
//! made the target fail belongs in `fuzz/corpus/replay_log/`, where this test
//! keeps it as a regression test. Seeds named `clean-*` are real logs of the
//! sample workflow and must replay cleanly; seeds named `mismatch-*` are real
//! logs changed so that the code no longer matches them, and must be reported.
//!
//! Regenerate the seeds (after a change to the input language or the sample
//! workflow): `cargo test -p workflow-core --test fuzz_corpus -- --ignored`.

#[path = "../../../fuzz/common/replay_log.rs"]
mod replay_log;
mod support;

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use workflow_core::Engine;
use workflow_store::{
    CorrelationId, ErrorRecord, Event, EventData, EventKind, HookRecord, HookToken, MemoryStore,
    Payload, RunId, RunStatus, Store, Timestamp, WebhookResponse,
};

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/replay_log")
}

#[path = "../../../fuzz/common/corpus.rs"]
mod seed_corpus;

fn corpus() -> Vec<(String, Vec<u8>)> {
    seed_corpus::read(&corpus_dir())
}

#[test]
fn replay_log_corpus_replays_without_panic_or_hang() {
    let seeds = corpus();
    let (mut clean, mut mismatches) = (0, 0);
    for (name, bytes) in &seeds {
        let result = replay_log::run(bytes);
        if std::env::var_os("WORKFLOW_FUZZ_VERBOSE").is_some() {
            eprintln!("{name}: {result:?}");
        }
        if name.starts_with("clean-") {
            let report = result.unwrap_or_else(|e| panic!("seed {name}: check_replay failed: {e}"));
            assert_eq!(report.checked, 1, "seed {name}: {report:?}");
            assert!(report.is_clean(), "seed {name} does not replay: {report:?}");
            clean += 1;
        } else if name.starts_with("mismatch-") {
            let report = result.unwrap_or_else(|e| panic!("seed {name}: check_replay failed: {e}"));
            assert_eq!(
                report.mismatches.len(),
                1,
                "seed {name} should be reported: {report:?}"
            );
            mismatches += 1;
        }
    }
    assert!(
        seeds.len() >= 30 && clean >= 10 && mismatches >= 4,
        "corpus too small: {} seeds, {clean} clean, {mismatches} mismatches",
        seeds.len()
    );
}

/// A small deterministic fuzzer over the corpus, so the ordinary test suite
/// explores beyond the seeds even where cargo-fuzz cannot run: flips, inserts,
/// deletes, truncates and splices seeds (seeded, so a failure reproduces).
/// `WORKFLOW_FUZZ_ROUNDS` (default 12) sets how many mutations per seed.
#[test]
fn mutated_replay_log_corpus_never_panics_or_hangs() {
    let seeds = corpus();
    let runs = seed_corpus::mutate_and_run("replay_log", &seeds, 0x5EED, 12, |bytes| {
        // A typed error is fine; only a panic or a hang is a failure.
        let _ = replay_log::run(bytes);
    });
    assert!(runs > 300, "only {runs} mutations ran");
}

// ---------------------------------------------------------------------------
// The seed corpus.
// ---------------------------------------------------------------------------

fn cid(s: &str) -> CorrelationId {
    CorrelationId::new(s).expect("a valid correlation id")
}

/// Moves a log's times so that it starts at `BASE_MS` (the input language
/// counts time from there).
fn rebase(mut log: Vec<Event>) -> Vec<Event> {
    let Some(first) = log.first().map(|e| e.at.0) else {
        return log;
    };
    let shift = |t: &mut Timestamp| {
        t.0 =
            t.0.saturating_sub(first)
                .saturating_add(replay_log::BASE_MS);
    };
    for e in &mut log {
        shift(&mut e.at);
        match &mut e.data {
            EventData::WaitCreated { resume_at, .. } => shift(resume_at),
            EventData::StepRetrying { retry_at, .. } => shift(retry_at),
            _ => {}
        }
    }
    log
}

/// Renumbers seqs 0, 1, 2, … after an edit.
fn renumber(mut log: Vec<Event>) -> Vec<Event> {
    for (i, e) in log.iter_mut().enumerate() {
        e.seq = i as u64;
    }
    log
}

fn position(log: &[Event], kind: EventKind) -> usize {
    log.iter()
        .position(|e| e.kind() == kind)
        .unwrap_or_else(|| panic!("the log has no {kind}"))
}

async fn hook_live(engine: &Engine, token: &str) {
    engine
        .wait_for_hook(token, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("hook {token} never became live: {e}"));
}

async fn webhook_token(store: &MemoryStore, run: RunId) -> HookToken {
    let live_webhook = |hooks: &[HookRecord]| {
        hooks
            .iter()
            .find(|h| h.webhook.is_some() && h.live)
            .map(|h| h.token.clone())
    };
    let hooks = support::wait_until(store, run, "a live webhook", |hooks, _| {
        live_webhook(hooks).is_some()
    })
    .await;
    live_webhook(&hooks).expect("a live webhook")
}

async fn send_webhook(engine: &Engine, token: &HookToken, body: &'static str) {
    let request = http::Request::post(workflow_core::webhook_path(token.as_str()))
        .header("content-type", "text/plain")
        .header("x-seed", "1")
        .body(Bytes::from_static(body.as_bytes()))
        .unwrap();
    let answer = engine.resume_webhook(token.as_str(), request).await;
    assert_eq!(answer.status(), 201, "the workflow answers the webhook");
}

/// Real logs of the sample workflow, run on a memory store: (name, status, log).
async fn real_logs() -> Vec<(&'static str, RunStatus, Vec<Event>)> {
    let store = MemoryStore::new();
    let engine = replay_log::engine_builder(store.clone())
        .poll_interval(Duration::from_millis(10))
        .build();
    engine.start_workers();

    // The timer wins the race: one payload, the webhook, the end.
    let timer_wins = engine.start("sample", &0u32).await.unwrap();
    hook_live(&engine, "sample:0").await;
    // A second run wanting the same token: a conflict, and the run fails.
    let conflict = engine.start("sample", &0u32).await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(10), engine.result::<u32>(&conflict))
        .await
        .expect("the conflicting run ends");
    engine.resume_hook("sample:0", &7u32).await.unwrap();
    send_webhook(&engine, &webhook_token(&store, timer_wins).await, "first").await;
    let _: u32 = engine.result(&timer_wins).await.unwrap();

    // The payload wins the race: it arrived before the workflow waited.
    let payload_wins = engine.start("sample", &2u32).await.unwrap();
    hook_live(&engine, "sample:2").await;
    engine.resume_hook("sample:2", &7u32).await.unwrap();
    engine.resume_hook("sample:2", &9u32).await.unwrap();
    send_webhook(
        &engine,
        &webhook_token(&store, payload_wins).await,
        "second",
    )
    .await;
    let _: u32 = engine.result(&payload_wins).await.unwrap();

    // Odd input: the flaky step fails for good and is compensated; then cancelled.
    let cancelled = engine.start("sample", &1u32).await.unwrap();
    hook_live(&engine, "sample:1").await;
    engine.cancel(&cancelled).await.unwrap();

    // Suspended on its hook.
    let suspended = engine.start("sample", &3u32).await.unwrap();
    hook_live(&engine, "sample:3").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    engine.shutdown().await;

    let mut out = Vec::new();
    for (name, run) in [
        ("timer-wins", timer_wins),
        ("conflict", conflict),
        ("payload-wins", payload_wins),
        ("cancelled", cancelled),
        ("suspended", suspended),
    ] {
        let status = store.get_run(run).await.unwrap().unwrap().status;
        let log = rebase(store.read_log(run).await.unwrap());
        out.push((name, status, log));
    }
    out
}

/// Writes the seed corpus. Run by hand:
/// `cargo test -p workflow-core --test fuzz_corpus -- --ignored`.
#[test]
#[ignore]
fn write_replay_log_seeds() {
    let dir = corpus_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, status: RunStatus, log: &[Event]| {
        std::fs::write(dir.join(name), replay_log::encode(status, log)).unwrap();
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let logs = rt.block_on(real_logs());

    for (name, status, log) in &logs {
        // The language must carry real logs unchanged.
        let (got_status, got) = replay_log::decode(&replay_log::encode(*status, log));
        assert_eq!(
            (got_status, &got),
            (*status, log),
            "{name} does not round-trip"
        );
        write(&format!("clean-{name}"), *status, log);
    }
    let (_, _, full) = logs.iter().find(|l| l.0 == "timer-wins").unwrap().clone();
    let (_, _, wins) = logs.iter().find(|l| l.0 == "payload-wins").unwrap().clone();
    // Every few prefixes of two complete runs, as a crash would leave them.
    for (tag, log) in [("timer-wins", &full), ("payload-wins", &wins)] {
        for len in (1..log.len()).step_by(3) {
            write(
                &format!("clean-prefix-{tag}-{len:02}"),
                RunStatus::Running,
                &log[..len],
            );
        }
    }

    // Real logs changed so that the code does not reproduce them.
    let step0 = position(&full, EventKind::StepCreated);
    let mut renamed = full.clone();
    if let EventData::StepCreated { name, .. } = &mut renamed[step0].data {
        *name = "other".into();
    }
    write("mismatch-renamed-step", RunStatus::Completed, &renamed);

    let mut wrong_kind = full.clone();
    wrong_kind[step0].data = EventData::WaitCreated {
        wait: cid("wait:0"),
        resume_at: Timestamp(replay_log::BASE_MS),
    };
    write("mismatch-wait-for-step", RunStatus::Completed, &wrong_kind);

    let hook = position(&full, EventKind::HookCreated);
    let mut token = full.clone();
    if let EventData::HookCreated { token: t, .. } = &mut token[hook].data {
        *t = HookToken::new("other-token").unwrap();
    }
    write("mismatch-token", RunStatus::Completed, &token);

    let mut foreign = full.clone();
    let received = position(&full, EventKind::HookReceived);
    foreign[received].data = EventData::HookReceived {
        hook: cid("step:0"),
        payload: Payload::encode(&7u32).unwrap(),
    };
    write("mismatch-payload-to-a-step", RunStatus::Completed, &foreign);

    let cut = position(&full, EventKind::HookCreated) + 1;
    write(
        "mismatch-claims-completed",
        RunStatus::Completed,
        &full[..cut],
    );

    let mut unknown_op = full[..cut].to_vec();
    unknown_op.push(Event {
        seq: cut as u64,
        at: unknown_op[cut - 1].at,
        data: EventData::StepCreated {
            step: cid("step:40"),
            name: "fetch".into(),
            input_digest: None,
        },
    });
    write(
        "mismatch-creation-nobody-issued",
        RunStatus::Running,
        &unknown_op,
    );

    // Tricky logs: anything may come back, but nothing may panic or hang.
    std::fs::write(dir.join("tricky-empty"), b"").unwrap();
    std::fs::write(dir.join("tricky-status-only"), [3u8]).unwrap();
    write("tricky-no-run-created", RunStatus::Running, &full[1..]);
    let mut unregistered = full.clone();
    if let EventData::RunCreated { workflow, .. } = &mut unregistered[0].data {
        *workflow = "unregistered".into();
    }
    write("tricky-unregistered", RunStatus::Running, &unregistered);
    let mut bad_input = full.clone();
    if let EventData::RunCreated { input, .. } = &mut bad_input[0].data {
        *input = Payload(Bytes::from_static(&[0xff, 0x00, 0x9f]));
    }
    write("tricky-bad-input", RunStatus::Failed, &bad_input);
    let mut bad_result = full.clone();
    let completed = position(&full, EventKind::StepCompleted);
    if let EventData::StepCompleted { result, .. } = &mut bad_result[completed].data {
        *result = Payload(Bytes::from_static(b"\x64text"));
    }
    write("tricky-bad-step-result", RunStatus::Completed, &bad_result);
    let mut bad_payload = full.clone();
    if let EventData::HookReceived { payload, .. } = &mut bad_payload[received].data {
        *payload = Payload::encode("not a number").unwrap();
    }
    write(
        "tricky-hook-payload-wrong-type",
        RunStatus::Completed,
        &bad_payload,
    );
    let mut bad_request = full.clone();
    let last_received = full
        .iter()
        .rposition(|e| e.kind() == EventKind::HookReceived)
        .unwrap();
    if let EventData::HookReceived { payload, .. } = &mut bad_request[last_received].data {
        *payload = Payload::encode(&(1, 2, 3)).unwrap();
    }
    write(
        "tricky-webhook-payload-garbage",
        RunStatus::Completed,
        &bad_request,
    );

    let mut garbage_ids = full[..cut].to_vec();
    for id in [
        "step:x",
        "hook:",
        "wait:99999999999999999999999",
        "::",
        "step:18446744073709551615",
        "hook:-1",
    ] {
        garbage_ids.push(Event {
            seq: garbage_ids.len() as u64,
            at: garbage_ids[garbage_ids.len() - 1].at,
            data: EventData::StepCompleted {
                step: cid(id),
                result: Payload::encode(&1u32).unwrap(),
            },
        });
        garbage_ids.push(Event {
            seq: garbage_ids.len() as u64,
            at: garbage_ids[garbage_ids.len() - 1].at,
            data: EventData::HookCreated {
                hook: cid(id),
                token: HookToken::new("sample:0").unwrap(),
                metadata: None,
                webhook: None,
            },
        });
    }
    write("tricky-garbage-ids", RunStatus::Running, &garbage_ids);

    let mut duplicate = full.clone();
    duplicate.insert(step0 + 1, full[step0].clone());
    write(
        "tricky-duplicate-creation",
        RunStatus::Completed,
        &renumber(duplicate),
    );
    let mut attempts = full.clone();
    let started = position(&full, EventKind::StepStarted);
    if let EventData::StepStarted { attempt, .. } = &mut attempts[started].data {
        *attempt = u32::MAX;
    }
    write("tricky-huge-attempt", RunStatus::Completed, &attempts);
    let mut retries = full.clone();
    for e in &mut retries {
        if let EventData::StepRetrying { retry_at, .. } = &mut e.data {
            *retry_at = Timestamp(u64::MAX);
        }
        if let EventData::WaitCreated { resume_at, .. } = &mut e.data {
            *resume_at = Timestamp(0);
        }
    }
    write("tricky-extreme-times", RunStatus::Completed, &retries);
    let mut conflict = full.clone();
    if let EventData::HookCreated { hook, token, .. } = &full[hook].data {
        conflict[hook_index(&full)].data = EventData::HookConflict {
            hook: hook.clone(),
            token: token.clone(),
            holder: RunId::from_u128(7),
        };
    }
    write(
        "tricky-conflict-instead-of-hook",
        RunStatus::Completed,
        &conflict,
    );
    let mut disposed = full[..cut].to_vec();
    disposed.push(Event {
        seq: cut as u64,
        at: disposed[cut - 1].at,
        data: EventData::HookDisposed {
            hook: full[hook].data.correlation_id().unwrap().clone(),
        },
    });
    write(
        "tricky-disposed-before-payload",
        RunStatus::Running,
        &disposed,
    );
    let mut responded = full.clone();
    responded.insert(
        received + 1,
        Event {
            seq: 0,
            at: full[received].at,
            data: EventData::HookResponded {
                hook: full[hook].data.correlation_id().unwrap().clone(),
                request_id: "no-such-request".into(),
                response: workflow_store::HttpResponseRecord {
                    status: 999,
                    headers: vec![("bad header".into(), Bytes::from_static(b"\n"))],
                    body: Bytes::new(),
                },
            },
        },
    );
    write(
        "tricky-responded-unknown",
        RunStatus::Completed,
        &renumber(responded),
    );
    let mut ended_early = full.clone();
    ended_early.insert(
        cut,
        Event {
            seq: 0,
            at: full[cut].at,
            data: EventData::RunCompleted {
                output: Payload::encode(&1u32).unwrap(),
            },
        },
    );
    write(
        "tricky-completed-in-the-middle",
        RunStatus::Completed,
        &renumber(ended_early),
    );
    let mut backwards = full.clone();
    let n = backwards.len() as u64;
    for (i, e) in backwards.iter_mut().enumerate() {
        e.at = Timestamp(replay_log::BASE_MS + (n - i as u64) * 1000);
    }
    write("tricky-time-backwards", RunStatus::Completed, &backwards);
    let mut glitches = full.clone();
    for (i, e) in glitches.iter_mut().enumerate() {
        e.seq = match i % 5 {
            1 => i as u64 + 1,
            3 => (i as u64).saturating_sub(1),
            _ => i as u64,
        };
    }
    write("tricky-seq-glitches", RunStatus::Completed, &glitches);
    let mut long = full[..cut].to_vec();
    let hook_id = full[hook].data.correlation_id().unwrap().clone();
    for i in 0..400u32 {
        long.push(Event {
            seq: long.len() as u64,
            at: long[long.len() - 1].at,
            data: EventData::HookReceived {
                hook: hook_id.clone(),
                payload: Payload::encode(&i).unwrap(),
            },
        });
    }
    write("tricky-400-payloads", RunStatus::Running, &long);
    let mut blocked = full[..cut].to_vec();
    for i in 0..6 {
        blocked.push(Event {
            seq: blocked.len() as u64,
            at: blocked[blocked.len() - 1].at,
            data: if i % 2 == 0 {
                EventData::RunBlocked {
                    error: ErrorRecord::new("blocked"),
                }
            } else {
                EventData::RunStarted
            },
        });
    }
    write("tricky-blocked-and-restarted", RunStatus::Blocked, &blocked);
    let mut webhook_modes = full.clone();
    let webhook = full
        .iter()
        .rposition(|e| e.kind() == EventKind::HookCreated)
        .unwrap();
    if let EventData::HookCreated { webhook: mode, .. } = &mut webhook_modes[webhook].data {
        *mode = Some(WebhookResponse::Static(
            workflow_store::HttpResponseRecord {
                status: 0,
                headers: Vec::new(),
                body: Bytes::from_static(b"static"),
            },
        ));
    }
    write(
        "tricky-webhook-mode-changed",
        RunStatus::Completed,
        &webhook_modes,
    );
    // One event of every kind, each for operation 0 of its kind.
    let all_kinds = vec![
        EventData::RunCreated {
            workflow: "sample".into(),
            input: Payload::encode(&0u32).unwrap(),
            parent: None,
        },
        EventData::RunStarted,
        EventData::StepCreated {
            step: cid("step:0"),
            name: "fetch".into(),
            input_digest: Some(Bytes::from_static(b"digest")),
        },
        EventData::StepStarted {
            step: cid("step:0"),
            attempt: 0,
        },
        EventData::StepRetrying {
            step: cid("step:0"),
            error: ErrorRecord::new("again"),
            retry_at: Timestamp(replay_log::BASE_MS),
        },
        EventData::StepFailed {
            step: cid("step:0"),
            error: ErrorRecord::new("failed"),
        },
        EventData::StepCompleted {
            step: cid("step:0"),
            result: Payload::encode(&1u32).unwrap(),
        },
        EventData::WaitCreated {
            wait: cid("wait:0"),
            resume_at: Timestamp(replay_log::BASE_MS),
        },
        EventData::WaitCompleted {
            wait: cid("wait:0"),
        },
        EventData::HookCreated {
            hook: cid("hook:0"),
            token: HookToken::new("sample:0").unwrap(),
            metadata: Some(Payload::encode(&"meta").unwrap()),
            webhook: Some(WebhookResponse::Manual { timeout_ms: 0 }),
        },
        EventData::HookReceived {
            hook: cid("hook:0"),
            payload: Payload::encode(&1u32).unwrap(),
        },
        EventData::HookResponded {
            hook: cid("hook:0"),
            request_id: String::new(),
            response: workflow_store::HttpResponseRecord {
                status: 200,
                headers: Vec::new(),
                body: Bytes::new(),
            },
        },
        EventData::HookDisposed {
            hook: cid("hook:0"),
        },
        EventData::HookConflict {
            hook: cid("hook:0"),
            token: HookToken::new("sample:0").unwrap(),
            holder: RunId::from_u128(1),
        },
        EventData::RunBlocked {
            error: ErrorRecord::new("blocked"),
        },
        EventData::RunFailed {
            error: ErrorRecord::new("failed"),
        },
        EventData::RunCancelled,
        EventData::RunCompleted {
            output: Payload::encode(&1u32).unwrap(),
        },
    ];
    let all_kinds: Vec<Event> = all_kinds
        .into_iter()
        .enumerate()
        .map(|(i, data)| Event {
            seq: i as u64,
            at: Timestamp(replay_log::BASE_MS),
            data,
        })
        .collect();
    write("tricky-every-kind", RunStatus::Completed, &all_kinds);
    // Noise.
    let mut x = 0x9E37_79B9_7F4A_7C15_u64;
    for i in 0..3 {
        let noise: Vec<u8> = (0..64 << i)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(dir.join(format!("tricky-noise-{i}")), noise).unwrap();
    }
}

fn hook_index(log: &[Event]) -> usize {
    position(log, EventKind::HookCreated)
}
