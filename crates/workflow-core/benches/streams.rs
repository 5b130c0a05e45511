//! Durable output streams: chunks per second written by one step, and the
//! latency from a chunk's write to its delivery to a live reader (p50, p99).
//!
//! `cargo bench -p workflow-core --bench streams` (memory and sled stores).
//! A chunk is delivered once the attempt that wrote it is recorded, so the
//! latency measured is write → step completion recorded → change feed →
//! reader; each step here writes one chunk and returns.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use workflow_core::{Context, Engine, StepError, WorkflowError};
use workflow_store::{MemoryStore, SledStore, Store};

const CHUNKS: u64 = 2_000;
const LATENCY_STEPS: u64 = 200;

fn engine(store: impl Store, origin: Instant) -> Engine {
    let e = Engine::builder(store)
        .workflow("one_step", |ctx: Context, n: u64| async move {
            ctx.step("write", move |s| async move {
                let mut out = s.stream::<u64>("bench")?;
                for i in 0..n {
                    out.write(&i).await?;
                }
                Ok::<_, StepError>(())
            })
            .await
        })
        .workflow("batched", |ctx: Context, n: u64| async move {
            ctx.step("write", move |s| async move {
                let mut out = s.stream::<u64>("bench")?;
                let all: Vec<u64> = (0..n).collect();
                for batch in all.chunks(100) {
                    out.write_all(batch).await?;
                }
                Ok::<_, StepError>(())
            })
            .await
        })
        .workflow("latency", move |ctx: Context, n: u64| async move {
            for _ in 0..n {
                ctx.step("tick", move |s| async move {
                    let mut out = s.stream::<u64>("bench")?;
                    out.write(&(origin.elapsed().as_nanos() as u64)).await?;
                    Ok::<_, StepError>(())
                })
                .await?;
            }
            Ok::<_, WorkflowError>(())
        })
        .build();
    e.start_workers();
    e
}

async fn throughput(e: &Engine, workflow: &str) -> f64 {
    let started = Instant::now();
    let run = e.start(workflow, &CHUNKS).await.expect("start");
    let _: () = e.result(&run).await.expect("run");
    CHUNKS as f64 / started.elapsed().as_secs_f64()
}

async fn latency(e: &Engine, origin: Instant) -> (Duration, Duration) {
    let run = e.start("latency", &LATENCY_STEPS).await.expect("start");
    let mut chunks = Box::pin(e.read_stream::<u64>(run, "bench", 0));
    let mut samples = Vec::new();
    while let Some(chunk) = chunks.next().await {
        let (_, written) = chunk.expect("chunk");
        let now = origin.elapsed().as_nanos() as u64;
        samples.push(Duration::from_nanos(now.saturating_sub(written)));
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99))
}

async fn report(name: &str, store: impl Store) {
    let origin = Instant::now();
    let e = engine(store, origin);
    let one = throughput(&e, "one_step").await;
    let batched = throughput(&e, "batched").await;
    let (p50, p99) = latency(&e, origin).await;
    println!(
        "{name:>6}: one step writes {one:>9.0} chunks/s one by one, {batched:>9.0} chunks/s in writes of 100; \
         write -> live reader p50 {p50:?}, p99 {p99:?}"
    );
    e.shutdown().await;
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        report("memory", MemoryStore::new()).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let sled = SledStore::open(dir.path()).expect("sled");
        report("sled", Arc::new(sled)).await;
    });
}
