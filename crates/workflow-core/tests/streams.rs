//! Durable output streams through the engine: steps write, readers replay
//! and follow live, retried attempts replace failed ones, tokens.

mod support;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use support::engine;
use tokio::sync::Semaphore;
use workflow_core::{Backoff, Context, Engine, StepError, StepOptions, WorkflowError};
use workflow_store::{MemoryStore, RunId, SledStore, Store, StreamName};

fn fast(max_attempts: u32) -> StepOptions {
    StepOptions::default()
        .max_attempts(max_attempts)
        .backoff(Backoff {
            initial: Duration::from_millis(5),
            factor: 2.0,
            max: Duration::from_millis(20),
        })
}

/// Reads the whole stream (until it is closed), with a 10 s limit.
async fn read_to_end(e: &Engine, run: RunId, name: &str, from: u64) -> Vec<(u64, String)> {
    let chunks = e.read_stream::<String>(run, name, from);
    tokio::time::timeout(
        Duration::from_secs(10),
        chunks.map(|c| c.expect("chunk")).collect::<Vec<_>>(),
    )
    .await
    .expect("the stream ends when the run ends")
}

/// A workflow whose step writes three chunks per attempt; attempt 1 fails
/// after writing them. Each attempt waits for a permit first.
fn flaky_writer(
    gate: Arc<Semaphore>,
) -> impl Fn(Context, ()) -> futures::future::BoxFuture<'static, Result<(), WorkflowError>>
       + Send
       + Sync
       + Clone
       + 'static {
    move |ctx: Context, _: ()| {
        let gate = gate.clone();
        Box::pin(async move {
            ctx.step_with("work", fast(3), move |s| {
                let gate = gate.clone();
                async move {
                    gate.acquire().await.expect("gate").forget();
                    let mut out = s.stream::<String>("progress")?;
                    for i in 0..3 {
                        out.write(&format!("attempt {} chunk {i}", s.attempt()))
                            .await?;
                    }
                    if s.attempt() == 1 {
                        return Err(StepError::retryable("failed after writing"));
                    }
                    Ok(())
                }
            })
            .await
        })
    }
}

fn second_attempt() -> Vec<(u64, String)> {
    (0..3u64)
        .map(|i| (i, format!("attempt 2 chunk {i}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_attempt_replaces_the_failed_one_live_and_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let store = SledStore::open(dir.path()).unwrap();
    let e = engine(store.clone(), |b| {
        b.workflow("flaky", flaky_writer(gate.clone()))
    });
    let run = e.start("flaky", &()).await.unwrap();
    // Readers are waiting before any chunk is written.
    let live: Vec<_> = (0..3)
        .map(|_| {
            let chunks = e.read_stream::<String>(run, "progress", 0);
            tokio::spawn(async move { chunks.map(|c| c.expect("chunk")).collect::<Vec<_>>().await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    gate.add_permits(1);
    // Attempt 1 has written and failed; nothing is visible.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        store
            .read_stream(run, &StreamName::new("progress").unwrap(), 0, 10)
            .await
            .unwrap(),
        None,
        "a failed attempt's chunks must never be visible"
    );
    gate.add_permits(1);
    let _: () = e.result(&run).await.unwrap();
    for reader in live {
        let got = tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .expect("a live reader ends when the run ends")
            .unwrap();
        assert_eq!(got, second_attempt());
    }
    assert_eq!(
        read_to_end(&e, run, "progress", 1).await[..],
        second_attempt()[1..]
    );
    e.shutdown().await;
    drop(e);
    drop(store);

    let store = SledStore::open(dir.path()).unwrap();
    let e = engine(store, |b| {
        b.workflow("flaky", flaky_writer(Arc::new(Semaphore::new(0))))
    });
    assert_eq!(read_to_end(&e, run, "progress", 0).await, second_attempt());
    assert_eq!(
        read_to_end(&e, run, "progress", 2).await[..],
        second_attempt()[2..]
    );
    e.shutdown().await;
}

async fn two_steps(ctx: Context, _: ()) -> Result<(), WorkflowError> {
    for step in 0..2u64 {
        ctx.step("write", move |s| async move {
            let mut out = s.default_stream::<String>()?;
            let chunks: Vec<String> = (0..5).map(|i| format!("{step}.{i}")).collect();
            out.write_all(&chunks).await?;
            Ok::<_, StepError>(())
        })
        .await?;
        ctx.sleep(Duration::from_millis(20)).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_resume_from_any_index_without_gaps_or_repeats() {
    let store = MemoryStore::new();
    let e = engine(store, |b| b.workflow("two", two_steps));
    let run = e.start("two", &()).await.unwrap();
    let want: Vec<(u64, String)> = (0..10u64)
        .map(|i| (i, format!("{}.{}", i / 5, i % 5)))
        .collect();
    // A reader that stops after chunk k and resumes from k + 1.
    let mut first = Box::pin(e.read_stream::<String>(run, "default", 0));
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(first.next().await.unwrap().unwrap());
    }
    drop(first);
    got.extend(read_to_end(&e, run, "default", 3).await);
    assert_eq!(got, want);
    assert_eq!(read_to_end(&e, run, "default", 0).await, want);
    assert_eq!(read_to_end(&e, run, "default", 10).await, vec![]);
    let infos = e.store().list_streams(run).await.unwrap();
    assert_eq!(infos.len(), 1);
    assert!(infos[0].closed, "a run's streams close when it ends");
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_runs_and_bad_names_are_errors() {
    let e = engine(MemoryStore::new(), |b| b);
    let mut s = Box::pin(e.read_stream::<String>(RunId::new(), "progress", 0));
    assert!(matches!(
        s.next().await,
        Some(Err(workflow_core::EngineError::RunNotFound { .. }))
    ));
    assert!(s.next().await.is_none());
    let mut s = Box::pin(e.read_stream::<String>(RunId::new(), "no/slash", 0));
    assert!(matches!(
        s.next().await,
        Some(Err(workflow_core::EngineError::InvalidStreamName(_)))
    ));
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_hands_out_a_read_token() {
    let store = MemoryStore::new();
    let e = engine(store.clone(), |b| {
        b.workflow("token", |ctx: Context, _: ()| async move {
            let token = ctx.stream_token("progress").await?;
            Ok::<_, WorkflowError>(token.to_string())
        })
    });
    let run = e.start("token", &()).await.unwrap();
    let token: String = e.result(&run).await.unwrap();
    assert!(token.len() >= 32, "a random token: {token}");
    let name = StreamName::new("progress").unwrap();
    let t = workflow_store::HookToken::new(token).unwrap();
    assert!(store.stream_readable_with(run, &name, &t).await.unwrap());
    let other = workflow_store::HookToken::new("guess").unwrap();
    assert!(!store
        .stream_readable_with(run, &name, &other)
        .await
        .unwrap());
    e.shutdown().await;
}
