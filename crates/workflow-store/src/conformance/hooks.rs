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
