//! Hooks: a token is live in at most one hook, conflicts are recorded,
//! tokens are released by dispose and by the end of the run, and resuming an
//! unknown token is a typed error.

use super::{cid, fresh, hook_created, new_run, payload, token, Backend};
use crate::error::StoreError;
use crate::event::{EventData, EventKind};
use crate::store::Store;

/// Runs the hook checks.
pub async fn run<B: Backend>(b: &B) {
    token_is_unique_across_runs(b).await;
    dispose_releases_token(b).await;
    run_end_releases_tokens(b).await;
    resume_records_and_makes_due(b).await;
    resume_unknown_token_is_not_found(b).await;
    resume_webhook_only_resumes_webhooks(b).await;
    dispose_releases_only_its_own_token(b).await;
    responded_needs_a_hook_that_was_created(b).await;
}

fn disposed(hook: &str) -> EventData {
    EventData::HookDisposed { hook: cid(hook) }
}

fn responded(hook: &str) -> EventData {
    EventData::HookResponded {
        hook: cid(hook),
        request_id: "req-1".into(),
        response: crate::event::HttpResponseRecord {
            status: 204,
            headers: vec![],
            body: Default::default(),
        },
    }
}

/// With two live hooks in a run, disposing one frees its token only: the
/// other stays live, listed and resumable, whichever of the two goes first.
pub async fn dispose_releases_only_its_own_token<B: Backend>(b: &B) {
    for (gone, kept) in [
        (("hook:1", "two-b"), ("hook:0", "two-a")),
        (("hook:0", "two-a"), ("hook:1", "two-b")),
    ] {
        let (store, _) = fresh(b).await;
        let a = new_run(&store, "wf").await;
        store
            .append(
                a,
                vec![
                    hook_created("hook:0", "two-a"),
                    hook_created("hook:1", "two-b"),
                ],
                None,
            )
            .await
            .expect("two hooks");
        store
            .append(a, vec![disposed(gone.0)], None)
            .await
            .expect("dispose one");
        assert!(
            store
                .get_hook(&token(gone.1))
                .await
                .expect("get_hook")
                .is_none(),
            "hooks: the token of disposed {} is still live",
            gone.0
        );
        let live = store
            .get_hook(&token(kept.1))
            .await
            .expect("get_hook")
            .unwrap_or_else(|| {
                panic!(
                    "hooks: disposing {} released the token of {}",
                    gone.0, kept.0
                )
            });
        assert_eq!(
            live.hook,
            cid(kept.0),
            "hooks: a token moved to another hook"
        );
        let listed: Vec<(String, bool)> = store
            .list_hooks(a)
            .await
            .expect("list_hooks")
            .into_iter()
            .map(|h| (h.hook.to_string(), h.live))
            .collect();
        let mut want = vec![
            ("hook:0".to_string(), kept.0 == "hook:0"),
            ("hook:1".to_string(), kept.0 == "hook:1"),
        ];
        want.sort();
        assert_eq!(
            listed, want,
            "hooks: after disposing {} the hooks are listed wrong",
            gone.0
        );
        let r = store
            .resume_hook(&token(kept.1), payload(&"still here"))
            .await
            .expect("the other hook still resumes");
        assert_eq!(r.hook, cid(kept.0));
        let r = store.resume_hook(&token(gone.1), payload(&"gone")).await;
        assert!(
            matches!(r, Err(StoreError::HookNotFound { .. })),
            "hooks: a disposed hook's token resumed: {r:?}"
        );
        // The kept hook can still be disposed; the gone one not again.
        let again = store.append(a, vec![disposed(gone.0)], None).await;
        assert!(
            matches!(again, Err(StoreError::InvalidEvent { .. })),
            "hooks: {} disposed twice: {again:?}",
            gone.0
        );
        store
            .append(a, vec![disposed(kept.0)], None)
            .await
            .expect("dispose the other");
        assert!(store
            .get_hook(&token(kept.1))
            .await
            .expect("get_hook")
            .is_none());
    }
}

/// `hook_responded` (a manual webhook's answer) is accepted for a hook that
/// was created, live or disposed since, and refused as `InvalidEvent` for one
/// that lost its token (`hook_conflict`) or is not a hook; for an unknown id it
/// is `UnknownCorrelation`. A refused one writes nothing.
pub async fn responded_needs_a_hook_that_was_created<B: Backend>(b: &B) {
    let (store, _) = fresh(b).await;
    let holder = new_run(&store, "wf").await;
    store
        .append(holder, vec![hook_created("hook:0", "taken")], None)
        .await
        .expect("holder");
    let a = new_run(&store, "wf").await;
    let got = store
        .append(
            a,
            vec![
                hook_created("hook:0", "mine"),
                hook_created("hook:1", "taken"),
                super::step_created("step:0"),
            ],
            None,
        )
        .await
        .expect("hooks");
    assert_eq!(got.events[1].kind(), EventKind::HookConflict);
    // Live hook: accepted, and it stays live.
    store
        .append(a, vec![responded("hook:0")], None)
        .await
        .expect("hooks: hook_responded to a live hook was refused");
    assert!(store.get_hook(&token("mine")).await.expect("get").is_some());
    // Disposed since: still accepted (the response to a request it received).
    store
        .append(a, vec![disposed("hook:0")], None)
        .await
        .expect("dispose");
    store
        .append(a, vec![responded("hook:0")], None)
        .await
        .expect("hooks: hook_responded after dispose was refused");
    let before = store.read_log(a).await.expect("log");
    // A hook that never was created (its token was taken): refused, even
    // though the run has another hook that was.
    let r = store.append(a, vec![responded("hook:1")], None).await;
    assert!(
        matches!(r, Err(StoreError::InvalidEvent { .. })),
        "hooks: hook_responded to a conflicted hook: {r:?}"
    );
    let r = store.append(a, vec![responded("step:0")], None).await;
    assert!(
        matches!(r, Err(StoreError::InvalidEvent { .. })),
        "hooks: hook_responded to a step: {r:?}"
    );
    let r = store.append(a, vec![responded("hook:9")], None).await;
    assert!(
        matches!(r, Err(StoreError::UnknownCorrelation { .. })),
        "hooks: hook_responded to an unknown hook: {r:?}"
    );
    assert_eq!(
        store.read_log(a).await.expect("log"),
        before,
        "hooks: a refused hook_responded was recorded"
    );
}

/// `resume_webhook` records to webhooks and returns their mode; a plain hook's
/// token is `HookNotFound` and nothing is written.
pub async fn resume_webhook_only_resumes_webhooks<B: Backend>(b: &B) {
    use crate::event::WebhookResponse;
    let (store, _) = fresh(b).await;
    let a = new_run(&store, "wf").await;
    let mode = WebhookResponse::Manual { timeout_ms: 1234 };
    store
        .append(
            a,
            vec![
                hook_created("hook:0", "plain"),
                EventData::HookCreated {
                    hook: cid("hook:1"),
                    token: token("web"),
                    metadata: None,
                    webhook: Some(mode.clone()),
                },
            ],
            None,
        )
        .await
        .expect("hooks");
    let before = store.read_log(a).await.expect("log").len();
    let r = store.resume_webhook(&token("plain"), payload(&"req")).await;
    assert!(
        matches!(r, Err(StoreError::HookNotFound { .. })),
        "hooks: a plain hook took a webhook request: {r:?}"
    );
    assert_eq!(
        store.read_log(a).await.expect("log").len(),
        before,
        "hooks: a refused webhook request was recorded"
    );
    let (resumed, got) = store
        .resume_webhook(&token("web"), payload(&"req"))
        .await
        .expect("resume_webhook");
    assert_eq!(got, mode, "hooks: resume_webhook returned the wrong mode");
    assert_eq!(resumed.hook, cid("hook:1"));
    assert_eq!(resumed.seq, before as u64);
    let r = store
        .resume_webhook(&token("nobody"), payload(&"req"))
        .await;
    assert!(matches!(r, Err(StoreError::HookNotFound { .. })));
}

/// A second live `hook_created` with the same token becomes `hook_conflict`.
pub async fn token_is_unique_across_runs<B: Backend>(b: &B) {
    let (store, _) = fresh(b).await;
    let a = new_run(&store, "wf").await;
    let c = new_run(&store, "wf").await;
    store
        .append(a, vec![hook_created("hook:0", "shared")], None)
        .await
        .expect("append a");
    let got = store
        .append(c, vec![hook_created("hook:0", "shared")], None)
        .await
        .expect("append c");
    match &got.events[0].data {
        EventData::HookConflict {
            hook,
            token: t,
            holder,
        } => {
            assert_eq!(hook, &cid("hook:0"));
            assert_eq!(t, &token("shared"));
            assert_eq!(*holder, a, "hooks: hook_conflict names the wrong holder");
        }
        other => panic!(
            "hooks: a second live hook_created was recorded as {:?}",
            other.kind()
        ),
    }
    let log = store.read_log(c).await.expect("log");
    assert_eq!(
        log[1].kind(),
        EventKind::HookConflict,
        "hooks: the log does not hold the conflict"
    );
    let live = store
        .get_hook(&token("shared"))
        .await
        .expect("get_hook")
        .expect("live hook");
    assert_eq!(live.run_id, a, "hooks: the conflicting run took the token");
    // Same run, same token, other hook: also a conflict.
    let same = store
        .append(a, vec![hook_created("hook:1", "shared")], None)
        .await
        .expect("append");
    assert_eq!(
        same.events[0].kind(),
        EventKind::HookConflict,
        "hooks: one run held a token twice"
    );
    // The conflicted hook is not live: it cannot receive or be disposed.
    let r = store
        .append(
            c,
            vec![EventData::HookDisposed {
                hook: cid("hook:0"),
            }],
            None,
        )
        .await;
    assert!(r.is_err(), "hooks: a conflicted hook could be disposed");
    let hooks = store.list_hooks(c).await.expect("list_hooks");
    assert!(
        hooks.is_empty(),
        "hooks: a conflicted hook is listed as created"
    );
}

/// `hook_disposed` frees the token for another run.
pub async fn dispose_releases_token<B: Backend>(b: &B) {
    let (store, _) = fresh(b).await;
    let a = new_run(&store, "wf").await;
    let c = new_run(&store, "wf").await;
    store
        .append(a, vec![hook_created("hook:0", "reuse")], None)
        .await
        .expect("create");
    store
        .append(
            a,
            vec![EventData::HookDisposed {
                hook: cid("hook:0"),
            }],
            None,
        )
        .await
        .expect("dispose");
    assert!(
        store
            .get_hook(&token("reuse"))
            .await
            .expect("get_hook")
            .is_none(),
        "hooks: disposed token still live"
    );
    let r = store.resume_hook(&token("reuse"), payload(&1)).await;
    assert!(
        matches!(r, Err(StoreError::HookNotFound { .. })),
        "hooks: a disposed token resumed: {r:?}"
    );
    let hooks = store.list_hooks(a).await.expect("list_hooks");
    assert_eq!(hooks.len(), 1);
    assert!(!hooks[0].live, "hooks: disposed hook listed as live");
    let got = store
        .append(c, vec![hook_created("hook:0", "reuse")], None)
        .await
        .expect("reuse");
    assert_eq!(
        got.events[0].kind(),
        EventKind::HookCreated,
        "hooks: a freed token could not be reused"
    );
    let twice = store
        .append(
            a,
            vec![EventData::HookDisposed {
                hook: cid("hook:0"),
            }],
            None,
        )
        .await;
    assert!(twice.is_err(), "hooks: a hook was disposed twice");
}

/// The end of a run releases all its hooks.
pub async fn run_end_releases_tokens<B: Backend>(b: &B) {
    for end in [
        EventData::RunCompleted {
            output: payload(&0),
        },
        EventData::RunFailed {
            error: crate::event::ErrorRecord::new("x"),
        },
        EventData::RunCancelled,
    ] {
        let (store, _) = fresh(b).await;
        let a = new_run(&store, "wf").await;
        store
            .append(
                a,
                vec![
                    hook_created("hook:0", "end-1"),
                    hook_created("hook:1", "end-2"),
                ],
                None,
            )
            .await
            .expect("hooks");
        store.append(a, vec![end.clone()], None).await.expect("end");
        for t in ["end-1", "end-2"] {
            assert!(
                store.get_hook(&token(t)).await.expect("get_hook").is_none(),
                "hooks: token {t} still live after {:?}",
                end.kind()
            );
        }
        assert!(
            store
                .list_hooks(a)
                .await
                .expect("list")
                .iter()
                .all(|h| !h.live),
            "hooks: hooks listed live after the run ended"
        );
        let c = new_run(&store, "wf").await;
        let got = store
            .append(c, vec![hook_created("hook:0", "end-1")], None)
            .await
            .expect("reuse");
        assert_eq!(
            got.events[0].kind(),
            EventKind::HookCreated,
            "hooks: token not reusable after run end"
        );
    }
}

/// `resume_hook` appends `hook_received` and makes the run due.
pub async fn resume_records_and_makes_due<B: Backend>(b: &B) {
    let (store, _) = fresh(b).await;
    let a = new_run(&store, "wf").await;
    store
        .append(
            a,
            vec![crate::event::EventData::HookCreated {
                hook: cid("hook:0"),
                token: token("resume-me"),
                metadata: Some(payload(&"meta")),
                webhook: None,
            }],
            None,
        )
        .await
        .expect("create");
    // Drain the wake-up from run creation.
    for l in store.lease_due(10, super::TTL).await.expect("lease") {
        store.release_lease(&l).await.expect("release");
    }
    assert!(store
        .lease_due(10, super::TTL)
        .await
        .expect("lease")
        .is_empty());
    let hook = store
        .get_hook(&token("resume-me"))
        .await
        .expect("get")
        .expect("live");
    assert_eq!(
        hook.metadata,
        Some(payload(&"meta")),
        "hooks: metadata not kept"
    );
    let resumed = store
        .resume_hook(&token("resume-me"), payload(&"hello"))
        .await
        .expect("resume");
    assert_eq!(resumed.run_id, a);
    assert_eq!(resumed.hook, cid("hook:0"));
    let log = store.read_log(a).await.expect("log");
    assert_eq!(
        resumed.seq,
        log.len() as u64 - 1,
        "hooks: resume returned the wrong seq"
    );
    assert_eq!(
        log.last().map(|e| e.data.clone()),
        Some(EventData::HookReceived {
            hook: cid("hook:0"),
            payload: payload(&"hello")
        }),
        "hooks: hook_received not recorded"
    );
    let leased = store.lease_due(10, super::TTL).await.expect("lease");
    assert_eq!(
        leased.iter().map(|l| l.run_id).collect::<Vec<_>>(),
        vec![a],
        "hooks: resume_hook did not make the run due"
    );
}

/// Unknown tokens are `HookNotFound`, and nothing is written.
pub async fn resume_unknown_token_is_not_found<B: Backend>(b: &B) {
    let (store, _) = fresh(b).await;
    let a = new_run(&store, "wf").await;
    let r = store
        .resume_hook(&token("nobody-has-this"), payload(&1))
        .await;
    assert!(
        matches!(r, Err(StoreError::HookNotFound { .. })),
        "hooks: unknown token: {r:?}"
    );
    assert_eq!(
        store.read_log(a).await.expect("log").len(),
        1,
        "hooks: a failed resume wrote an event"
    );
}
