//! Two `PostgresStore`s (two pools, as two engine processes would have) on one
//! schema, writing and leasing the same runs at once.
//!
//! On `WORKFLOW_TEST_POSTGRES_URL`, or else a throwaway cluster (`common::cluster`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use common::{url_or_skip, Schemas};
use tokio::sync::Barrier;
use workflow_postgres::PostgresStore;
use workflow_store::conformance::{
    cid, hook_created, new_run, payload, step_created, token, START, TTL,
};
use workflow_store::{
    Change, Clock, EventData, EventKind, ManualClock, RunId, Store, StoreError, WebhookResponse,
};

/// Two stores on one fresh schema, sharing a manual clock.
async fn pair(schemas: &Schemas) -> (PostgresStore, PostgresStore, Arc<ManualClock>) {
    let schema = schemas.fresh();
    let clock = Arc::new(ManualClock::new(START));
    let a = schemas
        .store(&schema, clock.clone() as Arc<dyn Clock>)
        .await
        .expect("store a");
    let b = schemas
        .store(&schema, clock.clone() as Arc<dyn Clock>)
        .await
        .expect("store b");
    (a, b, clock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_appends_to_shared_runs_are_gapless() {
    let Some(url) = url_or_skip("two_stores_appends_to_shared_runs_are_gapless") else {
        return;
    };
    let schemas = Schemas::new(url);
    let (a, b, _) = pair(&schemas).await;
    let mut runs = Vec::new();
    for _ in 0..4 {
        runs.push(new_run(&a, "wf").await);
    }
    let runs = Arc::new(runs);
    let mut tasks = Vec::new();
    for (s, store) in [a.clone(), b.clone()].into_iter().enumerate() {
        for t in 0..8 {
            let (store, runs) = (store.clone(), runs.clone());
            tasks.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..20 {
                    let run = runs[(t + i) % runs.len()];
                    let step = format!("step:{s}-{t}-{i}");
                    let done = store
                        .append(run, vec![step_created(&step)], None)
                        .await
                        .expect("append");
                    acked.push((run, done.events[0].seq, step));
                }
                acked
            }));
        }
    }
    let mut acked: BTreeMap<RunId, BTreeMap<u64, String>> = BTreeMap::new();
    for t in tasks {
        for (run, seq, step) in t.await.expect("task") {
            assert!(
                acked.entry(run).or_default().insert(seq, step).is_none(),
                "seq {seq} of {run} acknowledged twice"
            );
        }
    }
    for &run in runs.iter() {
        // Read through the other store than the one that created the run.
        let log = b.read_log(run).await.expect("log");
        let want = &acked[&run];
        assert_eq!(log.len(), want.len() + 1, "events lost or duplicated");
        for (i, e) in log.iter().enumerate() {
            assert_eq!(e.seq, i as u64, "seq gap in {run}");
            if i > 0 {
                assert_eq!(
                    e.data.correlation_id().map(|c| c.as_str().to_owned()),
                    Some(want[&e.seq].clone()),
                    "event {i} of {run} is not the one acknowledged"
                );
            }
        }
        assert_eq!(a.read_log(run).await.expect("log"), log);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_leases_are_exclusive_and_fenced() {
    let Some(url) = url_or_skip("two_stores_leases_are_exclusive_and_fenced") else {
        return;
    };
    let schemas = Schemas::new(url);
    let (a, b, clock) = pair(&schemas).await;
    let mut runs = BTreeSet::new();
    for i in 0..60 {
        let store = if i % 2 == 0 { &a } else { &b };
        runs.insert(new_run(store, "wf").await);
    }
    let mut tasks = Vec::new();
    for store in [a.clone(), b.clone()] {
        for _ in 0..4 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                for _ in 0..8 {
                    got.extend(store.lease_due(3, TTL).await.expect("lease"));
                    tokio::task::yield_now().await;
                }
                got
            }));
        }
    }
    let mut leases = BTreeMap::new();
    for t in tasks {
        for l in t.await.expect("task") {
            assert!(
                leases.insert(l.run_id, l).is_none(),
                "a run was leased by two holders"
            );
        }
    }
    for l in b.lease_due(1000, TTL).await.expect("lease") {
        assert!(
            leases.insert(l.run_id, l).is_none(),
            "a held run was leased again"
        );
    }
    assert_eq!(
        leases.keys().copied().collect::<BTreeSet<_>>(),
        runs,
        "due runs were not leased"
    );
    assert!(a.lease_due(1000, TTL).await.expect("lease").is_empty());

    // The holder writes through its lease; after expiry the other store takes
    // the run over and the old holder is fenced off.
    let (&run, old) = leases.iter().next().expect("a lease");
    a.append(run, vec![EventData::RunStarted], Some(old.id))
        .await
        .expect("holder writes");
    clock.advance(TTL);
    let taken = b.lease_due(1000, TTL).await.expect("lease");
    assert_eq!(
        taken.len(),
        runs.len(),
        "expired leases were not taken over"
    );
    let new = taken.iter().find(|l| l.run_id == run).expect("taken over");
    assert_ne!(new.id, old.id);
    let r = a
        .append(run, vec![step_created("step:0")], Some(old.id))
        .await;
    assert!(
        matches!(r, Err(StoreError::LeaseLost { .. })),
        "old holder still writes: {r:?}"
    );
    assert!(matches!(
        a.renew_lease(old, TTL).await,
        Err(StoreError::LeaseLost { .. })
    ));
    a.append(run, vec![step_created("step:0")], Some(new.id))
        .await
        .expect("new holder's lease works through either store");
    a.release_lease(new).await.expect("release through a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_race_for_one_token() {
    let Some(url) = url_or_skip("two_stores_race_for_one_token") else {
        return;
    };
    let schemas = Schemas::new(url);
    let (a, b, _) = pair(&schemas).await;
    for round in 0..5 {
        let tok = format!("shared-{round}");
        let mut runs = Vec::new();
        for _ in 0..16 {
            runs.push(new_run(&a, "wf").await);
        }
        let barrier = Arc::new(Barrier::new(runs.len()));
        let mut tasks = Vec::new();
        for (i, &run) in runs.iter().enumerate() {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let (tok, barrier) = (tok.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let done = store
                    .append(run, vec![hook_created("hook:0", &tok)], None)
                    .await
                    .expect("append");
                (run, done.events[0].kind())
            }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            let (run, kind) = t.await.expect("task");
            match kind {
                EventKind::HookCreated => winners.push(run),
                EventKind::HookConflict => {}
                other => panic!("hook_created recorded as {other}"),
            }
        }
        assert_eq!(winners.len(), 1, "{} runs hold {tok}", winners.len());
        for store in [&a, &b] {
            let owner = store
                .get_hook(&token(&tok))
                .await
                .expect("get_hook")
                .expect("owner");
            assert_eq!(owner.run_id, winners[0]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_resume_while_the_other_appends() {
    let Some(url) = url_or_skip("two_stores_resume_while_the_other_appends") else {
        return;
    };
    let schemas = Schemas::new(url);
    let (a, b, _) = pair(&schemas).await;
    let run = new_run(&a, "wf").await;
    a.append(run, vec![hook_created("hook:0", "busy")], None)
        .await
        .expect("hook");
    let writer = {
        let a = a.clone();
        tokio::spawn(async move {
            for i in 0..50 {
                a.append(run, vec![step_created(&format!("step:{i}"))], None)
                    .await
                    .expect("append");
            }
        })
    };
    let mut tasks = Vec::new();
    for t in 0..4u32 {
        let store = if t % 2 == 0 { b.clone() } else { a.clone() };
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..25u32 {
                let r = store
                    .resume_hook(&token("busy"), payload(&(t * 1000 + i)))
                    .await
                    .expect("resume");
                acked.push((r.seq, t * 1000 + i));
            }
            acked
        }));
    }
    let mut acked = BTreeMap::new();
    for t in tasks {
        for (seq, p) in t.await.expect("task") {
            assert!(acked.insert(seq, p).is_none(), "two resumes got seq {seq}");
        }
    }
    writer.await.expect("writer");
    let log = b.read_log(run).await.expect("log");
    assert_eq!(log.len(), 2 + 50 + 100, "events lost");
    let mut received = BTreeMap::new();
    for (i, e) in log.iter().enumerate() {
        assert_eq!(e.seq, i as u64, "seq gap");
        if let EventData::HookReceived { hook, payload: p } = &e.data {
            assert_eq!(hook, &cid("hook:0"));
            received.insert(e.seq, p.decode::<u32>().expect("payload"));
        }
    }
    assert_eq!(received, acked, "acknowledged payloads differ from the log");
    // The resumes made the run due: one lease, through either store.
    assert_eq!(b.lease_due(10, TTL).await.expect("lease").len(), 1);
    assert!(a.lease_due(10, TTL).await.expect("lease").is_empty());
}

/// Waits for a change matching `want` on `rx`.
async fn wait_for(
    rx: &mut tokio::sync::broadcast::Receiver<Change>,
    want: impl Fn(&Change) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(c)) if want(&c) => return true,
            Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(_)) | Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notification_reaches_the_other_store_once() {
    let Some(url) = url_or_skip("notification_reaches_the_other_store_once") else {
        return;
    };
    let schemas = Schemas::new(url);
    let (a, b, _) = pair(&schemas).await;
    let mut on_a = a.subscribe().expect("feed on a");
    let mut on_b = b.subscribe().expect("feed on b");
    let run = new_run(&b, "wf").await;
    assert!(
        wait_for(
            &mut on_a,
            |c| matches!(c, Change::Due { run: r, .. } if *r == run)
        )
        .await,
        "store a did not hear of the run store b created"
    );
    b.append(run, vec![EventData::RunStarted], None)
        .await
        .expect("append");
    let appended = |c: &Change| matches!(c, Change::Appended { run: r, next_seq: 2 } if *r == run);
    assert!(
        wait_for(&mut on_a, appended).await,
        "store a did not hear of b's append"
    );
    // The writer's own feed has it once: published locally, not echoed back.
    assert!(wait_for(&mut on_b, appended).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut echoes = 0;
    while let Ok(c) = on_b.try_recv() {
        echoes += usize::from(appended(&c));
    }
    assert_eq!(echoes, 0, "store b saw its own change twice");
    // A store on another schema hears nothing of this one.
    let other = schemas
        .store(&schemas.fresh(), Arc::new(ManualClock::new(START)))
        .await
        .expect("other schema");
    let mut on_other = other.subscribe().expect("feed");
    a.append(run, vec![step_created("step:0")], None)
        .await
        .expect("append");
    assert!(
        wait_for(
            &mut on_b,
            |c| matches!(c, Change::Appended { run: r, .. } if *r == run)
        )
        .await
    );
    assert!(
        on_other.try_recv().is_err(),
        "a store on another schema heard this schema's change"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notification_inside_the_write_transaction_reaches_the_other_store() {
    let Some(url) =
        url_or_skip("notification_inside_the_write_transaction_reaches_the_other_store")
    else {
        return;
    };
    let schemas = Schemas::new(url.clone());
    let schema = schemas.fresh();
    let connect = |in_tx: bool| {
        PostgresStore::connect_with(
            workflow_postgres::PostgresConfig::new(url.clone())
                .schema(schema.clone())
                .notify_in_transaction(in_tx),
        )
    };
    let (a, b) = (
        connect(false).await.expect("a"),
        connect(true).await.expect("b"),
    );
    let mut on_a = a.subscribe().expect("feed");
    let run = new_run(&b, "wf").await;
    assert!(
        wait_for(
            &mut on_a,
            |c| matches!(c, Change::Appended { run: r, next_seq: 1 } if *r == run)
        )
        .await,
        "a did not hear of the run b created"
    );
    // A refused write notifies nothing (it would say next_seq 4).
    let r = b
        .append(
            run,
            vec![
                EventData::RunStarted,
                step_created("step:0"),
                step_completed_unknown(),
            ],
            None,
        )
        .await;
    assert!(r.is_err());
    b.append(run, vec![EventData::RunStarted], None)
        .await
        .expect("append");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let c = tokio::time::timeout_at(deadline, on_a.recv())
            .await
            .expect("a notification of the append")
            .expect("feed open");
        match c {
            Change::Appended { run: r, next_seq } if r == run => {
                assert_eq!(next_seq, 2, "a refused write was notified");
                break;
            }
            _ => {}
        }
    }
}

/// A `step_completed` for a step that was never created: refused.
fn step_completed_unknown() -> EventData {
    workflow_store::conformance::step_completed("step:never", 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_listener_reconnects_after_its_connection_dies() {
    let Some(url) = url_or_skip("the_listener_reconnects_after_its_connection_dies") else {
        return;
    };
    let schemas = Schemas::new(url.clone());
    let (a, b, _) = pair(&schemas).await;
    let mut on_a = a.subscribe().expect("feed");
    // Kill this schema's listening connections (a's and b's).
    let killed = {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        client
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = 'workflow-postgres listener' AND query = $1",
                &[&format!("LISTEN {}_changes", a.schema())],
            )
            .await
            .expect("terminate")
            .len()
    };
    assert_eq!(killed, 2, "expected two listening connections");
    // Writes by b reach a again once its listener is back.
    let run = new_run(&b, "wf").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut next = 1;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the listener did not come back"
        );
        b.append(run, vec![step_created(&format!("step:{next}"))], None)
            .await
            .expect("append");
        next += 1;
        let heard = tokio::time::timeout(
            Duration::from_millis(300),
            wait_for(
                &mut on_a,
                |c| matches!(c, Change::Appended { run: r, .. } if *r == run),
            ),
        )
        .await;
        if matches!(heard, Ok(true)) {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_connects_migrate_once() {
    let Some(url) = url_or_skip("concurrent_connects_migrate_once") else {
        return;
    };
    let schemas = Schemas::new(url.clone());
    let schema = schemas.fresh();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (url, schema) = (url.clone(), schema.clone());
        tasks.push(tokio::spawn(async move {
            PostgresStore::connect_with(
                workflow_postgres::PostgresConfig::new(url)
                    .schema(schema)
                    .pool_size(2),
            )
            .await
        }));
    }
    let mut stores = Vec::new();
    for t in tasks {
        stores.push(
            t.await
                .expect("task")
                .expect("connect while others migrate"),
        );
    }
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let rows = client
        .query(
            &format!("SELECT version FROM \"{schema}\".schema_migrations ORDER BY version"),
            &[],
        )
        .await
        .expect("migrations table");
    let versions: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        versions,
        (1..=PostgresStore::schema_version()).collect::<Vec<_>>()
    );
    // And they all work on the same data.
    let run = new_run(&stores[0], "wf").await;
    for s in &stores {
        assert!(s.get_run(run).await.expect("get_run").is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dropped_store_leases_pass_to_the_other_after_expiry() {
    let Some(url) = url_or_skip("a_dropped_store_leases_pass_to_the_other_after_expiry") else {
        return;
    };
    let schemas = Schemas::new(url);
    let (a, b, clock) = pair(&schemas).await;
    let mut runs = BTreeSet::new();
    for _ in 0..10 {
        runs.insert(new_run(&a, "wf").await);
    }
    let held = a.lease_due(100, TTL).await.expect("lease");
    assert_eq!(held.len(), 10);
    // "Process a" dies holding its leases.
    drop(a);
    assert!(b.lease_due(100, TTL).await.expect("lease").is_empty());
    clock.advance(TTL - Duration::from_millis(1));
    assert!(b.lease_due(100, TTL).await.expect("lease").is_empty());
    clock.advance(Duration::from_millis(1));
    let taken: BTreeSet<RunId> = b
        .lease_due(100, TTL)
        .await
        .expect("lease")
        .into_iter()
        .map(|l| l.run_id)
        .collect();
    assert_eq!(taken, runs, "a dead holder's runs were not taken over");
}

/// `hook_created` for `hook` with `tok`: a webhook (202 mode) or a plain hook.
fn hook_with(hook: &str, tok: &str, webhook: bool) -> EventData {
    EventData::HookCreated {
        hook: cid(hook),
        token: token(tok),
        metadata: None,
        webhook: webhook.then_some(WebhookResponse::Accepted),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_webhook_request_never_reaches_a_plain_hook_that_took_its_token() {
    let Some(url) = url_or_skip("a_webhook_request_never_reaches_a_plain_hook_that_took_its_token")
    else {
        return;
    };
    let schemas = Schemas::new(url);
    let (a, b, _) = pair(&schemas).await;
    let run = new_run(&a, "wf").await;
    a.append(run, vec![hook_with("hook:0", "flip", true)], None)
        .await
        .expect("first hook");
    // Store a disposes the token's hook and recreates the token on a new hook
    // in one write, alternating plain hooks and webhooks, while tasks on both
    // stores send webhook requests to the token.
    const FLIPS: usize = 300;
    let flipper = {
        let a = a.clone();
        tokio::spawn(async move {
            for i in 0..FLIPS {
                let next = format!("hook:{}", i + 1);
                a.append(
                    run,
                    vec![
                        EventData::HookDisposed {
                            hook: cid(&format!("hook:{i}")),
                        },
                        hook_with(&next, "flip", (i + 1) % 2 == 0),
                    ],
                    None,
                )
                .await
                .expect("flip");
            }
        })
    };
    let mut senders = Vec::new();
    for t in 0..4 {
        let store = if t % 2 == 0 { a.clone() } else { b.clone() };
        let flipper_done = flipper.abort_handle();
        senders.push(tokio::spawn(async move {
            let mut resumed = Vec::new();
            while !flipper_done.is_finished() {
                match store.resume_webhook(&token("flip"), payload(&t)).await {
                    Ok((r, mode)) => {
                        assert_eq!(mode, WebhookResponse::Accepted);
                        resumed.push(r.hook);
                    }
                    Err(StoreError::HookNotFound { .. }) => {}
                    Err(e) => panic!("resume_webhook: {e}"),
                }
            }
            resumed
        }));
    }
    flipper.await.expect("flipper");
    let webhooks: BTreeMap<_, _> = a
        .list_hooks(run)
        .await
        .expect("hooks")
        .into_iter()
        .map(|h| (h.hook, h.webhook.is_some()))
        .collect();
    let mut resumed = 0;
    for s in senders {
        for hook in s.await.expect("sender") {
            resumed += 1;
            assert!(
                webhooks[&hook],
                "a webhook request was recorded into the plain hook {hook}"
            );
        }
    }
    assert!(resumed > 0, "no webhook request got through at all");
    // The log agrees: every hook_received went to a webhook.
    for e in b.read_log(run).await.expect("log") {
        if let EventData::HookReceived { hook, .. } = &e.data {
            assert!(webhooks[hook], "the log holds a request for plain {hook}");
        }
    }
}
