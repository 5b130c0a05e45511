//! Changing a workflow's code while runs are in flight: `Context::patched`
//! sends runs whose history predates a change down the old branch and new
//! runs down the new one, on SledStore across restarts; the same change
//! without the patch blocks the old runs, check-replay says so beforehand,
//! and the blocked runs continue once the patched code is deployed.

use std::time::Duration;

use workflow_core::{Context, Engine, EngineError, HookOptions, StepError, WorkflowError};
use workflow_store::{EventData, RunId, RunStatus, SledStore, Store};

fn token(run: RunId) -> String {
    format!("go:{run}")
}

async fn step(ctx: &Context, name: &str) -> Result<(), WorkflowError> {
    ctx.step(name, |_| async { Ok::<_, StepError>(()) }).await
}

async fn wait_for_go(ctx: &Context) -> Result<(), WorkflowError> {
    let mut hook = ctx.create_hook::<()>(HookOptions::token(token(ctx.run_id())))?;
    hook.next().await?;
    Ok(())
}

/// The code before the change.
async fn v1(ctx: Context, _: ()) -> Result<String, WorkflowError> {
    step(&ctx, "charge").await?;
    wait_for_go(&ctx).await?;
    step(&ctx, "ship").await?;
    Ok("old".into())
}

/// The change (an audit step after charging), without a patch.
async fn v2_unpatched(ctx: Context, _: ()) -> Result<String, WorkflowError> {
    step(&ctx, "charge").await?;
    step(&ctx, "audit").await?;
    wait_for_go(&ctx).await?;
    step(&ctx, "ship").await?;
    Ok("new".into())
}

/// The same change behind `patched`.
async fn v2_patched(ctx: Context, _: ()) -> Result<String, WorkflowError> {
    step(&ctx, "charge").await?;
    let new = ctx.patched("audit");
    if new {
        step(&ctx, "audit").await?;
    }
    wait_for_go(&ctx).await?;
    step(&ctx, "ship").await?;
    Ok(if new { "new" } else { "old" }.into())
}

fn engine(store: SledStore, f: fn(Context, ()) -> WorkflowFut) -> Engine {
    Engine::builder(store)
        .workflow("order", f)
        .poll_interval(Duration::from_millis(20))
        .build()
}

type WorkflowFut =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, WorkflowError>> + Send>>;

fn boxed(
    f: impl std::future::Future<Output = Result<String, WorkflowError>> + Send + 'static,
) -> WorkflowFut {
    Box::pin(f)
}

async fn wait_status(e: &Engine, run: RunId, want: RunStatus) {
    for _ in 0..500 {
        if e.status(&run).await.unwrap() == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("run {run} never became {want}");
}

async fn markers(store: &SledStore, run: RunId) -> usize {
    store
        .read_log(run)
        .await
        .unwrap()
        .iter()
        .filter(|e| matches!(&e.data, EventData::PatchMarked { patch, .. } if patch == "audit"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patched_runs_old_histories_down_the_old_branch_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let open = || SledStore::open(dir.path()).unwrap();

    // 1. The old code: a run charges and waits for the go-ahead.
    let old_run = {
        let store = open();
        let e = engine(store, |c, i| boxed(v1(c, i)));
        e.start_workers();
        let run = e.start("order", &()).await.unwrap();
        e.wait_for_hook(&token(run), Duration::from_secs(10))
            .await
            .unwrap();
        e.shutdown().await;
        run
    };

    // 2. The change without a patch: check-replay says it would block the
    // run, and deployed anyway, it does.
    {
        let store = open();
        let e = engine(store, |c, i| boxed(v2_unpatched(c, i)));
        let report = e.check_replay().await.unwrap();
        assert_eq!(report.mismatches.len(), 1, "{report:?}");
        let m = &report.mismatches[0];
        assert_eq!((m.run, m.position), (old_run, Some(1)), "{m}");
        assert!(m.message.contains("audit"), "{m}");
        e.start_workers();
        e.resume_hook(&token(old_run), &()).await.unwrap();
        wait_status(&e, old_run, RunStatus::Blocked).await;
        e.shutdown().await;
    }

    // 3. The patched code: check-replay is clean and lists the old run as
    // needing the patch; the blocked run continues down the old branch, a
    // new run takes the new one.
    let new_run = {
        let store = open();
        let e = engine(store.clone(), |c, i| boxed(v2_patched(c, i)));
        let report = e.check_replay().await.unwrap();
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(report.patches["audit"].old_runs, vec![old_run]);
        e.start_workers();
        match e.retry_blocked(&old_run).await {
            // Starting workers already retried it.
            Ok(()) | Err(EngineError::RunNotBlocked { .. }) => {}
            Err(other) => panic!("{other}"),
        }
        // `result` reports a blocked run at once: wait for the retry first.
        wait_status(&e, old_run, RunStatus::Completed).await;
        let out: String = e.result(&old_run).await.unwrap();
        assert_eq!(out, "old");
        assert_eq!(markers(&store, old_run).await, 0);
        let run = e.start("order", &()).await.unwrap();
        e.wait_for_hook(&token(run), Duration::from_secs(10))
            .await
            .unwrap();
        let report = e.check_replay().await.unwrap();
        assert!(report.is_clean(), "{report:?}");
        let usage = &report.patches["audit"];
        assert!(usage.old_runs.is_empty(), "{usage:?}");
        assert_eq!(usage.marked_runs, vec![run]);
        e.shutdown().await;
        run
    };

    // 4. After a restart, the new run replays down the new branch.
    {
        let store = open();
        let e = engine(store.clone(), |c, i| boxed(v2_patched(c, i)));
        e.start_workers();
        e.resume_hook(&token(new_run), &()).await.unwrap();
        let out: String = e.result(&new_run).await.unwrap();
        assert_eq!(out, "new");
        assert_eq!(markers(&store, new_run).await, 1);
        // No run that has not ended depends on the patch any more.
        let report = e.check_replay().await.unwrap();
        assert!(report.is_clean(), "{report:?}");
        assert!(report.patches.is_empty(), "{:?}", report.patches);
        e.shutdown().await;
    }
}

/// After every old run has ended: the old branch is gone, and
/// `deprecate_patch` keeps the marker of runs started under `patched`.
async fn v3_deprecated(ctx: Context, _: ()) -> Result<String, WorkflowError> {
    step(&ctx, "charge").await?;
    ctx.deprecate_patch("audit");
    step(&ctx, "audit").await?;
    wait_for_go(&ctx).await?;
    step(&ctx, "ship").await?;
    Ok("new".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deprecate_patch_serves_runs_with_and_without_the_marker() {
    let dir = tempfile::tempdir().unwrap();
    let open = || SledStore::open(dir.path()).unwrap();
    let marked = {
        let e = engine(open(), |c, i| boxed(v2_patched(c, i)));
        e.start_workers();
        let run = e.start("order", &()).await.unwrap();
        e.wait_for_hook(&token(run), Duration::from_secs(10))
            .await
            .unwrap();
        e.shutdown().await;
        run
    };
    let store = open();
    let e = engine(store.clone(), |c, i| boxed(v3_deprecated(c, i)));
    let report = e.check_replay().await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.patches["audit"].marked_runs, vec![marked]);
    e.start_workers();
    let fresh = e.start("order", &()).await.unwrap();
    for run in [marked, fresh] {
        e.wait_for_hook(&token(run), Duration::from_secs(10))
            .await
            .unwrap();
        e.resume_hook(&token(run), &()).await.unwrap();
        let out: String = e.result(&run).await.unwrap();
        assert_eq!(out, "new");
    }
    assert_eq!(markers(&store, marked).await, 1);
    assert_eq!(markers(&store, fresh).await, 0);
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_that_ended_at_the_patch_point_takes_the_old_branch() {
    async fn before(ctx: Context, _: ()) -> Result<String, WorkflowError> {
        step(&ctx, "charge").await?;
        Ok("old".into())
    }
    async fn after(ctx: Context, _: ()) -> Result<String, WorkflowError> {
        step(&ctx, "charge").await?;
        if ctx.patched("receipt") {
            step(&ctx, "receipt").await?;
            return Ok("new".into());
        }
        Ok("old".into())
    }
    let store = workflow_store::MemoryStore::new();
    let e = Engine::builder(store.clone())
        .workflow("order", before)
        .build();
    e.start_workers();
    let run = e.start("order", &()).await.unwrap();
    let _: String = e.result(&run).await.unwrap();
    e.shutdown().await;
    // The completed run has nothing after `charge`, but it ended there: on
    // replay it must end the same way, so it takes the old branch.
    let e = Engine::builder(store).workflow("order", after).build();
    let report = e.check_replay().await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert!(report.patches.is_empty(), "ended runs need no patch");
}
