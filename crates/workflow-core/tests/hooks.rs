//! Hooks and webhooks: delivery order, early payloads, dispose, conflicts,
//! concurrency, response modes, replay, tokens.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;
use support::engine;

use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use workflow_core::{
    Context, Engine, EngineError, HookDefinition, HookError, HookOptions, ResumeError, StepError,
    WebhookOptions, WorkflowError,
};
use workflow_store::{EventData, EventKind, MemoryStore, RunId, RunStatus, Store};

async fn wait_for_hook(e: &Engine, token: &str) {
    e.wait_for_hook(token, Duration::from_secs(10))
        .await
        .unwrap_or_else(|err| panic!("hook {token} never became live: {err}"));
}

async fn wait_status(store: &MemoryStore, run: RunId, want: RunStatus) {
    for _ in 0..500 {
        if store.get_run(run).await.unwrap().unwrap().status == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("run never became {want}");
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Decision {
    approved: bool,
    reviewer: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_payload_is_delivered_when_the_workflow_waits() {
    let store = MemoryStore::new();
    let e = engine(store.clone(), |b| {
        b.workflow("late-waiter", |ctx: Context, id: u32| async move {
            let mut hook = ctx.create_hook::<Decision>(
                HookOptions::token(format!("order:{id}")).metadata(&"meta"),
            )?;
            // Busy with other work before waiting.
            ctx.sleep(Duration::from_millis(150)).await?;
            let d = hook.next().await?;
            Ok(d)
        })
    });
    let run = e.start("late-waiter", &7u32).await.unwrap();
    wait_for_hook(&e, "order:7").await;
    let info = e.get_hook("order:7").await.unwrap().unwrap();
    assert_eq!(info.run_id, run);
    assert_eq!(info.metadata.unwrap().decode::<String>().unwrap(), "meta");
    let decision = Decision {
        approved: true,
        reviewer: "ann".into(),
    };
    let resumed = e.resume_hook("order:7", &decision).await.unwrap();
    assert_eq!(resumed.run_id, run);
    assert_eq!(resumed.hook.as_str(), "hook:0");
    let got: Decision = e.result(&run).await.unwrap();
    assert_eq!(got, decision);
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_100_payloads_arrives_in_order() {
    let store = MemoryStore::new();
    let e = engine(store.clone(), |b| {
        b.workflow("collector", |ctx: Context, _: ()| async move {
            let hook = ctx.create_hook::<u32>(HookOptions::token("stream"))?;
            let all: Vec<u32> = hook.take(100).map(|r| r.unwrap()).collect().await;
            Ok(all)
        })
    });
    let run = e.start("collector", &()).await.unwrap();
    wait_for_hook(&e, "stream").await;
    for i in 0..100u32 {
        e.resume_hook("stream", &i).await.unwrap();
    }
    let got: Vec<u32> = e.result(&run).await.unwrap();
    assert_eq!(got, (0..100).collect::<Vec<_>>());
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispose_frees_the_token_and_run_end_releases_it() {
    let store = MemoryStore::new();
    let e = engine(store.clone(), |b| {
        b.workflow("disposer", |ctx: Context, _: ()| async move {
            let mut hook = ctx.create_hook::<u32>(HookOptions::token("shared-token"))?;
            let first = hook.next().await?;
            hook.dispose();
            ctx.sleep(Duration::from_millis(300)).await?;
            Ok(first)
        })
        .workflow("holder", |ctx: Context, _: ()| async move {
            let mut hook = ctx.create_hook::<u32>(HookOptions::token("shared-token"))?;
            Ok(hook.next().await?)
        })
    });
    let a = e.start("disposer", &()).await.unwrap();
    wait_for_hook(&e, "shared-token").await;
    e.resume_hook("shared-token", &1u32).await.unwrap();
    // After dispose the token is unknown...
    support::wait_until(&store, a, "the dispose", |_, kinds| {
        kinds.contains(&EventKind::HookDisposed)
    })
    .await;
    assert!(matches!(
        e.resume_hook("shared-token", &2u32).await,
        Err(ResumeError::NotFound { .. })
    ));
    // ... and another run can take it while the first still runs.
    let b = e.start("holder", &()).await.unwrap();
    wait_for_hook(&e, "shared-token").await;
    assert_eq!(e.get_hook("shared-token").await.unwrap().unwrap().run_id, b);
    e.resume_hook("shared-token", &3u32).await.unwrap();
    assert_eq!(e.result::<u32>(&b).await.unwrap(), 3);
    assert_eq!(e.result::<u32>(&a).await.unwrap(), 1);
    // The token is free again after the holder ended: reusable by a third run.
    let c = e.start("holder", &()).await.unwrap();
    wait_for_hook(&e, "shared-token").await;
    e.resume_hook("shared-token", &4u32).await.unwrap();
    assert_eq!(e.result::<u32>(&c).await.unwrap(), 4);
    let log = store.read_log(a).await.unwrap();
    assert_eq!(
        log.iter()
            .filter(|e| e.kind() == EventKind::HookDisposed)
            .count(),
        1
    );
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_conflict_is_an_error_the_second_run_handles() {
    let store = MemoryStore::new();
    let e = engine(store.clone(), |b| {
        b.workflow("claim", |ctx: Context, _: ()| async move {
            let mut hook = ctx.create_hook::<u32>(HookOptions::token("contested"))?;
            match hook.next().await {
                Ok(v) => Ok(format!("got {v}")),
                Err(HookError::Conflict { token, run }) => {
                    Ok(format!("conflict on {token} held by {run}"))
                }
                Err(other) => Err(other.into()),
            }
        })
    });
    let first = e.start("claim", &()).await.unwrap();
    wait_for_hook(&e, "contested").await;
    let second = e.start("claim", &()).await.unwrap();
    let msg: String = e.result(&second).await.unwrap();
    assert_eq!(msg, format!("conflict on contested held by {first}"));
    let log = store.read_log(second).await.unwrap();
    assert!(log.iter().any(|e| e.kind() == EventKind::HookConflict));
    e.resume_hook("contested", &5u32).await.unwrap();
    assert_eq!(e.result::<String>(&first).await.unwrap(), "got 5");
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_resumes_are_each_delivered_once_in_seq_order() {
    const N: u32 = 1000;
    let store = MemoryStore::new();
    let e = engine(store.clone(), |b| {
        b.workflow("sink", |ctx: Context, n: u32| async move {
            let mut hook = ctx.create_hook::<u32>(HookOptions::token("sink"))?;
            let mut got = Vec::new();
            for _ in 0..n {
                got.push(hook.next().await?);
            }
            Ok(got)
        })
    });
    let run = e.start("sink", &N).await.unwrap();
    wait_for_hook(&e, "sink").await;
    let mut tasks = Vec::new();
    for t in 0..20u32 {
        let e = e.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..N / 20 {
                e.resume_hook("sink", &(t * 1000 + i)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let got: Vec<u32> = e.result(&run).await.unwrap();
    let recorded: Vec<u32> = store
        .read_log(run)
        .await
        .unwrap()
        .iter()
        .filter_map(|e| match &e.data {
            EventData::HookReceived { payload, .. } => Some(payload.decode().unwrap()),
            _ => None,
        })
        .collect();
    assert_eq!(recorded.len(), N as usize, "hook_received events");
    assert_eq!(got, recorded, "delivered order differs from seq order");
    let distinct: BTreeSet<u32> = got.iter().copied().collect();
    assert_eq!(distinct.len(), N as usize, "a payload was delivered twice");
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_payload_is_a_decode_error_and_stays_in_the_log() {
    let store = MemoryStore::new();
    let e = engine(store.clone(), |b| {
        b.workflow("typed", |ctx: Context, _: ()| async move {
            let mut hook = ctx.create_hook::<Decision>(HookOptions::token("typed"))?;
            let first = hook.next().await;
            let second = hook.next().await?;
            Ok((
                matches!(first, Err(HookError::Decode { .. })),
                second.reviewer,
            ))
        })
    });
    let run = e.start("typed", &()).await.unwrap();
    wait_for_hook(&e, "typed").await;
    e.resume_hook("typed", &"not a decision").await.unwrap();
    e.resume_hook(
        "typed",
        &Decision {
            approved: false,
            reviewer: "bo".into(),
        },
    )
    .await
    .unwrap();
    let (was_decode_error, reviewer): (bool, String) = e.result(&run).await.unwrap();
    assert!(was_decode_error);
    assert_eq!(reviewer, "bo");
    let received = store
        .read_log(run)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.kind() == EventKind::HookReceived)
        .count();
    assert_eq!(received, 2, "the undecodable payload must stay recorded");
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_definition_validates_before_recording() {
    let store = MemoryStore::new();
    let decisions = HookDefinition::<Decision>::new().validate(|d| {
        if d.reviewer.is_empty() {
            Err("reviewer is required".into())
        } else {
            Ok(())
        }
    });
    let def = decisions.clone();
    let e = engine(store.clone(), move |b| {
        b.workflow("defined", move |ctx: Context, _: ()| {
            let def = def.clone();
            async move {
                let mut hook = def.create(&ctx, HookOptions::token("defined"))?;
                Ok(hook.next().await?)
            }
        })
    });
    let run = e.start("defined", &()).await.unwrap();
    wait_for_hook(&e, "defined").await;
    let bad = Decision {
        approved: true,
        reviewer: String::new(),
    };
    assert!(matches!(
        decisions.resume(&e, "defined", &bad).await,
        Err(ResumeError::Rejected { .. })
    ));
    assert!(!store
        .read_log(run)
        .await
        .unwrap()
        .iter()
        .any(|e| e.kind() == EventKind::HookReceived));
    let good = Decision {
        approved: true,
        reviewer: "cy".into(),
    };
    decisions.resume(&e, "defined", &good).await.unwrap();
    assert_eq!(e.result::<Decision>(&run).await.unwrap(), good);
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_of_unknown_or_invalid_tokens_is_a_typed_error() {
    let e = engine(MemoryStore::new(), |b| b);
    assert!(matches!(
        e.resume_hook("nobody", &1).await,
        Err(ResumeError::NotFound { .. })
    ));
    assert!(matches!(
        e.resume_hook("", &1).await,
        Err(ResumeError::InvalidToken(_))
    ));
    assert!(matches!(
        e.resume_hook("has space", &1).await,
        Err(ResumeError::InvalidToken(_))
    ));
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_custom_token_is_an_error_when_the_hook_is_created() {
    let e = engine(MemoryStore::new(), |b| {
        b.workflow("bad-token", |ctx: Context, _: ()| async move {
            let outcome = match ctx.create_hook::<u32>(HookOptions::token("no spaces allowed")) {
                Err(HookError::InvalidToken { .. }) => "invalid".to_string(),
                Err(other) => format!("{other:?}"),
                Ok(_) => "created".to_string(),
            };
            // The failed creation keeps its place: the next hook is hook:1
            // on every replay, and nothing of the bad one is recorded.
            let mut good = ctx.create_hook::<u32>(HookOptions::token("good-after-bad"))?;
            let n = good.next().await?;
            Ok(format!("{outcome} {n}"))
        })
    });
    let run = e.start("bad-token", &()).await.unwrap();
    e.wait_for_hook("good-after-bad", std::time::Duration::from_secs(5))
        .await
        .unwrap();
    e.resume_hook("good-after-bad", &7u32).await.unwrap();
    assert_eq!(e.result::<String>(&run).await.unwrap(), "invalid 7");
    let kinds = support::kinds(e.store().as_ref(), run).await;
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == EventKind::HookCreated)
            .count(),
        1,
        "only the good hook is recorded: {kinds:?}"
    );
    e.shutdown().await;
}

#[test]
fn random_tokens_are_distinct_url_safe_and_carry_128_bits_or_more() {
    let mut seen = BTreeSet::new();
    let mut ones = 0u64;
    let mut bits = 0u64;
    for _ in 0..10_000 {
        let t = workflow_core::hook::random_token();
        let s = t.as_str();
        assert_eq!(s.len(), 32, "192 bits as base64url is 32 characters");
        assert!(s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        // 6 bits per base64url character.
        let decoded: Vec<u8> = s
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' => b - b'A',
                b'a'..=b'z' => b - b'a' + 26,
                b'0'..=b'9' => b - b'0' + 52,
                b'-' => 62,
                _ => 63,
            })
            .collect();
        assert!(decoded.len() * 6 >= 128);
        for v in decoded {
            ones += u64::from(v.count_ones());
            bits += 6;
        }
        assert!(seen.insert(s.to_string()), "duplicate token");
    }
    // The bits are balanced, as a uniform source's are (within 1 %).
    let ratio = ones as f64 / bits as f64;
    assert!((0.49..0.51).contains(&ratio), "bit balance {ratio}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_with_the_same_input_get_different_default_tokens() {
    let e = engine(MemoryStore::new(), |b| {
        b.workflow("tokens", |ctx: Context, _: u8| async move {
            let hook = ctx.create_hook::<u8>(HookOptions::new())?;
            let token = hook.token().to_string();
            // The token survives a replay unchanged.
            ctx.sleep(Duration::from_millis(50)).await?;
            let again = hook.token().to_string();
            Ok((token, again))
        })
    });
    let a = e.start("tokens", &1u8).await.unwrap();
    let b = e.start("tokens", &1u8).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    e.clear_cache();
    let (ta, ta2): (String, String) = e.result(&a).await.unwrap();
    let (tb, _): (String, String) = e.result(&b).await.unwrap();
    assert_ne!(ta, tb);
    assert_eq!(ta, ta2);
    assert!(!ta.contains(&a.to_string()));
    e.shutdown().await;
}

fn post(body: &str) -> http::Request<Bytes> {
    http::Request::builder()
        .method("POST")
        .uri("/.well-known/workflow/v1/webhook/x?source=test")
        .header("content-type", "text/plain")
        .body(Bytes::from(body.to_string()))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_default_mode_answers_202_and_records_the_request() {
    let e = engine(MemoryStore::new(), |b| {
        b.workflow("wh", |ctx: Context, _: ()| async move {
            let mut wh = ctx.create_webhook(WebhookOptions::token("wh-default"))?;
            assert_eq!(wh.path(), "/.well-known/workflow/v1/webhook/wh-default");
            let req = wh.next().await?;
            Ok((
                req.method.clone(),
                req.uri.clone(),
                req.text().map(str::to_string),
                req.header("content-type").map(|v| v.to_vec()),
            ))
        })
    });
    let run = e.start("wh", &()).await.unwrap();
    wait_for_hook(&e, "wh-default").await;
    let resp = e.resume_webhook("wh-default", post("hello")).await;
    assert_eq!(resp.status(), 202);
    assert!(resp.body().is_empty());
    let (method, uri, text, ct): (String, String, Option<String>, Option<Vec<u8>>) =
        e.result(&run).await.unwrap();
    assert_eq!(method, "POST");
    assert_eq!(uri, "/.well-known/workflow/v1/webhook/x?source=test");
    assert_eq!(text.as_deref(), Some("hello"));
    assert_eq!(ct.as_deref(), Some(&b"text/plain"[..]));
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_static_mode_answers_the_stored_response() {
    let e = engine(MemoryStore::new(), |b| {
        b.workflow("wh", |ctx: Context, _: ()| async move {
            let response = http::Response::builder()
                .status(201)
                .header("x-kind", "static")
                .body(Bytes::from_static(b"thanks"))
                .unwrap();
            let mut wh =
                ctx.create_webhook(WebhookOptions::token("wh-static").static_response(response))?;
            wh.next().await?;
            wh.next().await?;
            Ok(())
        })
    });
    let run = e.start("wh", &()).await.unwrap();
    wait_for_hook(&e, "wh-static").await;
    for _ in 0..2 {
        let resp = e.resume_webhook("wh-static", post("x")).await;
        assert_eq!(resp.status(), 201);
        assert_eq!(resp.headers()["x-kind"], "static");
        assert_eq!(resp.body().as_ref(), b"thanks");
    }
    e.result::<()>(&run).await.unwrap();
    e.shutdown().await;
}

async fn manual_workflow(ctx: Context, timeout_ms: u64) -> Result<u32, WorkflowError> {
    let mut wh = ctx.create_webhook(
        WebhookOptions::token("wh-manual").manual(Duration::from_millis(timeout_ms)),
    )?;
    let mut answered = 0;
    loop {
        let req = wh.next().await?;
        if req.text() == Some("slow") {
            // Answer only after a durable sleep longer than the caller waits.
            ctx.sleep(Duration::from_millis(400)).await?;
        }
        let n = ctx
            .step("count", |_| async { Ok::<_, StepError>(1u32) })
            .await?;
        answered += n;
        req.respond(
            http::Response::builder()
                .status(200)
                .body(Bytes::from(format!(
                    "answer to {}",
                    req.text().unwrap_or_default()
                )))
                .unwrap(),
        );
        if req.text() == Some("stop") {
            return Ok(answered);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_manual_mode_answers_with_the_workflow_response_or_504() {
    let store = MemoryStore::new();
    let e = engine(store.clone(), |b| b.workflow("manual", manual_workflow));
    let run = e.start("manual", &200u64).await.unwrap();
    wait_for_hook(&e, "wh-manual").await;
    let resp = e.resume_webhook("wh-manual", post("ping")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.body().as_ref(), b"answer to ping");
    // The workflow answers too late: the caller gets 504, the workflow is not disturbed.
    let resp = e.resume_webhook("wh-manual", post("slow")).await;
    assert_eq!(resp.status(), 504);
    // Wait until the late answer is recorded and the workflow waits again.
    for _ in 0..500 {
        let n = store
            .read_log(run)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.kind() == EventKind::HookResponded)
            .count();
        if n == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let resp = e.resume_webhook("wh-manual", post("stop")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.body().as_ref(), b"answer to stop");
    assert_eq!(e.result::<u32>(&run).await.unwrap(), 3);
    let log = store.read_log(run).await.unwrap();
    assert_eq!(
        log.iter()
            .filter(|e| e.kind() == EventKind::HookResponded)
            .count(),
        3,
        "each request answered once"
    );
    e.shutdown().await;
}

/// A manual webhook whose workflow takes a request and then disposes the
/// webhook (or ends) without answering: the caller is told at once that the
/// request was recorded and no answer will come, not left waiting for 504.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_request_nobody_will_answer_is_answered_at_once() {
    for ending in ["dispose", "end"] {
        let store = MemoryStore::new();
        let e = engine(store.clone(), |b| {
            b.workflow("silent", |ctx: Context, ending: String| async move {
                let mut wh = ctx.create_webhook(
                    WebhookOptions::token(format!("silent:{}", ctx.run_id()))
                        .manual(Duration::from_secs(60)),
                )?;
                let request = wh.next().await?;
                if ending == "dispose" {
                    wh.dispose();
                    ctx.sleep(Duration::from_millis(50)).await?;
                }
                Ok(request.text().unwrap_or_default().to_string())
            })
        });
        let run = e.start("silent", &ending.to_string()).await.unwrap();
        let token = format!("silent:{run}");
        wait_for_hook(&e, &token).await;
        let resp = tokio::time::timeout(
            Duration::from_secs(20),
            e.resume_webhook(&token, post("hello")),
        )
        .await
        .expect("the caller waited for the 60 s timeout");
        assert_eq!(resp.status(), 202, "{ending}");
        let text = String::from_utf8_lossy(resp.body()).to_string();
        assert!(text.contains("no answer will come"), "{ending}: {text}");
        assert_eq!(e.result::<String>(&run).await.unwrap(), "hello");
        e.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_replay_after_restart_does_not_answer_again() {
    let store = MemoryStore::new();
    let e = engine(store.clone(), |b| b.workflow("manual", manual_workflow));
    let run = e.start("manual", &2000u64).await.unwrap();
    wait_for_hook(&e, "wh-manual").await;
    assert_eq!(
        e.resume_webhook("wh-manual", post("one")).await.status(),
        200
    );
    e.shutdown().await;
    drop(e);
    // A new engine replays the run, including the answered request.
    let e = engine(store.clone(), |b| b.workflow("manual", manual_workflow));
    let resp = e.resume_webhook("wh-manual", post("stop")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(e.result::<u32>(&run).await.unwrap(), 2);
    let responded: Vec<String> = store
        .read_log(run)
        .await
        .unwrap()
        .iter()
        .filter_map(|e| match &e.data {
            EventData::HookResponded { response, .. } => {
                Some(String::from_utf8_lossy(&response.body).into_owned())
            }
            _ => None,
        })
        .collect();
    assert_eq!(responded, ["answer to one", "answer to stop"]);
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_unknown_empty_and_invalid_tokens() {
    let e = engine(MemoryStore::new(), |b| {
        b.workflow("plain", |ctx: Context, _: ()| async move {
            let mut h = ctx.create_hook::<u32>(HookOptions::token("plain-hook"))?;
            Ok(h.next().await?)
        })
    });
    let resp = e.resume_webhook("no-such-token", post("x")).await;
    assert_eq!(resp.status(), 404);
    assert!(resp.body().is_empty());
    assert_eq!(e.resume_webhook("", post("x")).await.status(), 400);
    assert_eq!(e.resume_webhook("bad token", post("x")).await.status(), 400);
    // A plain hook is not a webhook.
    let run = e.start("plain", &()).await.unwrap();
    wait_for_hook(&e, "plain-hook").await;
    assert_eq!(
        e.resume_webhook("plain-hook", post("x")).await.status(),
        404
    );
    e.cancel(&run).await.unwrap();
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_answer_reaches_a_caller_on_another_engine() {
    let store = MemoryStore::new();
    // Engine A drives the run; engine B has no workers and only serves HTTP.
    let a = engine(store.clone(), |b| b.workflow("manual", manual_workflow));
    let b = Engine::builder(store.clone())
        .poll_interval(Duration::from_millis(20))
        .build();
    let run = a.start("manual", &2000u64).await.unwrap();
    wait_for_hook(&a, "wh-manual").await;
    let resp = b.resume_webhook("wh-manual", post("stop")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.body().as_ref(), b"answer to stop");
    assert_eq!(a.result::<u32>(&run).await.unwrap(), 1);
    a.shutdown().await;
    assert!(matches!(
        b.result::<String>(&run).await,
        Err(EngineError::OutputDecode { .. })
    ));
    wait_status(&store, run, RunStatus::Completed).await;
}
