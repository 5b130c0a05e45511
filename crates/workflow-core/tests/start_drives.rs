//! The engine that starts a run drives it at once: the run is leased in the
//! creating write and handed to the engine's own workers, within their
//! concurrency limit, and never lost when the workers stop meanwhile.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use workflow_core::{Context, Engine, StepError, WorkflowError, WorkflowRef};
use workflow_store::{Change, MemoryStore, Store};

const ONE: WorkflowRef<u32, u32> = WorkflowRef::new("one");
const BUSY: WorkflowRef<(), ()> = WorkflowRef::new("busy");

async fn one(ctx: Context, n: u32) -> Result<u32, WorkflowError> {
    ctx.step("double", move |_| async move { Ok::<_, StepError>(n * 2) })
        .await
}

/// Steps running now, and the most ever seen at once.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    max: AtomicUsize,
}

fn busy(
    gauge: Arc<Gauge>,
) -> impl Fn(Context, ()) -> futures::future::BoxFuture<'static, Result<(), WorkflowError>>
       + Send
       + Sync
       + 'static {
    move |ctx: Context, ()| {
        let gauge = gauge.clone();
        Box::pin(async move {
            ctx.step("hold", move |_| {
                let gauge = gauge.clone();
                async move {
                    let now = gauge.now.fetch_add(1, Ordering::SeqCst) + 1;
                    gauge.max.fetch_max(now, Ordering::SeqCst);
                    // Hold the slot until another step runs too (or 2 s
                    // pass), so the limit is reached however slow the
                    // machine is; then a little longer.
                    let until = tokio::time::Instant::now() + Duration::from_secs(2);
                    while gauge.now.load(Ordering::SeqCst) < 2
                        && tokio::time::Instant::now() < until
                    {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    gauge.now.fetch_sub(1, Ordering::SeqCst);
                    Ok::<_, StepError>(())
                }
            })
            .await
        })
    }
}

#[tokio::test]
async fn a_started_run_is_never_announced_as_due() {
    let store = MemoryStore::new();
    let mut feed = store.subscribe().expect("feed");
    let engine = support::engine(store.clone(), |b| b.workflow(ONE, one));
    let handle = engine.start(ONE, &21).await.unwrap();
    assert_eq!(handle.result().await.unwrap(), 42);
    let created = engine.run(&handle.id()).await.unwrap().created_at;
    let mut changes = Vec::new();
    while let Ok(c) = feed.try_recv() {
        changes.push(c);
    }
    // Leased as it was created: no engine was told it was due then.
    assert!(
        !changes
            .iter()
            .any(|c| matches!(c, Change::Due { run, at } if *run == handle.id() && *at <= created)),
        "{changes:?}"
    );
    assert_eq!(engine.metrics().activations, 1);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_beyond_the_concurrency_limit_wait_for_a_slot() {
    let gauge = Arc::new(Gauge::default());
    let store = MemoryStore::new();
    let engine = Engine::builder(store)
        .workflow(BUSY, busy(gauge.clone()))
        .concurrency(2)
        .poll_interval(Duration::from_millis(20))
        .build();
    engine.start_workers();
    let mut handles = Vec::new();
    for _ in 0..8 {
        handles.push(engine.start(BUSY, &()).await.unwrap());
    }
    for h in handles {
        h.result().await.unwrap();
    }
    assert_eq!(
        gauge.max.load(Ordering::SeqCst),
        2,
        "the limit was not used or was exceeded"
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_started_while_the_workers_stop_are_driven_by_the_next_engine() {
    let store = MemoryStore::new();
    let engine = support::engine(store.clone(), |b| b.workflow(ONE, one));
    let mut starts = Vec::new();
    for n in 0..64u32 {
        let engine = engine.clone();
        starts.push(tokio::spawn(async move {
            (n, engine.start(ONE, &n).await.unwrap().id())
        }));
    }
    tokio::task::yield_now().await;
    engine.shutdown().await;
    let mut ids = Vec::new();
    for s in starts {
        ids.push(s.await.unwrap());
    }
    let next = support::engine(store.clone(), |b| b.workflow(ONE, one));
    for (n, id) in ids {
        let out = tokio::time::timeout(Duration::from_secs(10), next.result::<u32>(&id))
            .await
            .unwrap_or_else(|_| panic!("run {n} was never driven"));
        assert_eq!(out.unwrap(), n * 2);
    }
    next.shutdown().await;
}
