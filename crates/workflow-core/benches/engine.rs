//! Engine benchmark: one table, every figure measured in this run, ratios
//! against the physical floor measured in the same run.
//!
//! ```sh
//! cargo bench -p workflow-core --bench engine            # full (about a minute)
//! cargo bench -p workflow-core --bench engine -- --quick # shorter
//! ```
//!
//! - floor: raw sled `insert` + `flush` + `fdatasync` of an event-sized record,
//!   one thread (the durability `SledStore` gives each acknowledged write);
//! - sequential durable steps per second, one run on SledStore;
//! - start-to-result latency of a 3-step workflow (p50, p99);
//! - steps per second with 64 concurrent runs (group commit);
//! - cold resume (replay from the log) of a run with 1k and 10k events, and the
//!   ratio between them (linear would be 10);
//! - hot resume (the run's future is cached) of the 10k-event run;
//! - `resume_hook` latency (p50/p99, one caller) and throughput (16 callers)
//!   on a hook whose workflow consumes every payload, next to a raw store
//!   append of one event measured the same way.

use std::time::{Duration, Instant};

use workflow_core::{Context, Engine, StepError, WorkflowError};
use workflow_store::{
    CorrelationId, EventData, NewRun, Payload, RunId, SledStore, Store, Timestamp,
};

fn quick() -> bool {
    std::env::args().any(|a| a == "--quick") || std::env::var_os("WORKFLOW_BENCH_QUICK").is_some()
}

/// Consumes `n` payloads from the hook `bench:{id}`.
async fn sink(ctx: Context, (id, n): (u32, u32)) -> Result<u32, WorkflowError> {
    let mut hook =
        ctx.create_hook::<u32>(workflow_core::HookOptions::token(format!("bench:{id}")))?;
    let mut sum = 0u32;
    for _ in 0..n {
        sum = sum.wrapping_add(hook.next().await?);
    }
    Ok(sum)
}

async fn steps(ctx: Context, n: u32) -> Result<u32, WorkflowError> {
    let mut total = 0;
    for i in 0..n {
        total += ctx
            .step("add", move |_| async move { Ok::<_, StepError>(i) })
            .await?;
    }
    Ok(total)
}

/// `n` steps, then a long sleep: the run suspends with `3n + 3` events.
async fn steps_then_sleep(ctx: Context, n: u32) -> Result<u32, WorkflowError> {
    let total = steps(ctx.clone(), n).await?;
    ctx.sleep(Duration::from_secs(24 * 3600)).await?;
    Ok(total)
}

fn engine(store: SledStore) -> Engine {
    Engine::builder(store)
        .workflow("steps", steps)
        .workflow("steps_then_sleep", steps_then_sleep)
        .workflow("sink", sink)
        .poll_interval(Duration::from_millis(5))
        .build()
}

/// The physical floor with the store's durability: one thread inserting an
/// event-sized record, `flush()`, and `fdatasync` of sled's data file (what
/// `SledStore` does per acknowledged write by default).
fn raw_floor(dir: &std::path::Path, duration: Duration) -> f64 {
    let path = dir.join("raw");
    let db = sled::open(&path).expect("open raw sled");
    let data_file = std::fs::File::open(path.join("db")).expect("sled data file");
    let value = vec![7u8; 120];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < duration {
        db.insert(n.to_be_bytes(), value.as_slice())
            .expect("insert");
        db.flush().expect("flush");
        data_file.sync_data().expect("fdatasync");
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Writes the history `steps_then_sleep(n)` would have written, in big batches.
async fn write_history(store: &SledStore, n: u32) -> RunId {
    let run = RunId::new();
    store
        .create_run(NewRun {
            id: run,
            workflow: "steps_then_sleep".into(),
            input: Payload::encode(&n).unwrap(),
        })
        .await
        .unwrap();
    let mut batch = vec![EventData::RunStarted];
    for i in 0..n {
        let step = CorrelationId::from_parts("step", u64::from(i));
        batch.push(EventData::StepCreated {
            step: step.clone(),
            name: "add".into(),
            input_digest: None,
        });
        batch.push(EventData::StepStarted {
            step: step.clone(),
            attempt: 1,
        });
        batch.push(EventData::StepCompleted {
            step,
            result: Payload::encode(&i).unwrap(),
        });
        if batch.len() >= 3000 {
            store
                .append(run, std::mem::take(&mut batch), None)
                .await
                .unwrap();
        }
    }
    batch.push(EventData::WaitCreated {
        wait: CorrelationId::from_parts("wait", u64::from(n)),
        resume_at: Timestamp::now().saturating_add(Duration::from_secs(24 * 3600)),
    });
    store.append(run, batch, None).await.unwrap();
    run
}

/// Median time for the engine to lease, load or reuse, and suspend `run` again.
async fn resume_time(
    engine: &Engine,
    store: &SledStore,
    run: RunId,
    cold: bool,
    reps: usize,
) -> Duration {
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        if cold {
            engine.clear_cache();
        }
        store.wake(run).await.unwrap();
        let t = Instant::now();
        let driven = engine.run_due().await.unwrap();
        times.push(t.elapsed());
        assert_eq!(driven, 1);
    }
    times.sort();
    times[times.len() / 2]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let quick = quick();
    let dir = tempfile::tempdir().expect("tempdir");
    let span = if quick {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(3)
    };

    let floor = raw_floor(dir.path(), span);

    let store = SledStore::open(dir.path().join("engine")).expect("open store");
    let e = engine(store.clone());
    e.start_workers();

    // Sequential steps in one run.
    let n = if quick { 200 } else { 600 };
    let t = Instant::now();
    let run = e.start("steps", &n).await.unwrap();
    let _: u32 = e.result(&run).await.unwrap();
    let seq_rate = f64::from(n) / t.elapsed().as_secs_f64();

    // Start-to-result latency of a 3-step workflow.
    let mut lat = Vec::new();
    for _ in 0..if quick { 30 } else { 100 } {
        let t = Instant::now();
        let run = e.start("steps", &3u32).await.unwrap();
        let _: u32 = e.result(&run).await.unwrap();
        lat.push(t.elapsed());
    }
    lat.sort();

    // 64 concurrent runs.
    let per_run = if quick { 20 } else { 50 };
    let t = Instant::now();
    let mut runs = Vec::new();
    for _ in 0..64 {
        runs.push(e.start("steps", &per_run).await.unwrap());
    }
    for run in &runs {
        let _: u32 = e.result(run).await.unwrap();
    }
    let conc_rate = f64::from(64 * per_run) / t.elapsed().as_secs_f64();
    e.shutdown().await;

    // Resume cost vs history length, without background workers.
    let e = engine(store.clone());
    let small = write_history(&store, 333).await;
    let large = write_history(&store, 3333).await;
    // Both runs are due from their creation: drive them to their sleep once.
    e.run_due().await.unwrap();
    let reps = if quick { 5 } else { 11 };
    let cold_1k = resume_time(&e, &store, small, true, reps).await;
    let cold_10k = resume_time(&e, &store, large, true, reps).await;
    let hot_10k = resume_time(&e, &store, large, false, reps).await;
    let events = |run| {
        let store = store.clone();
        async move { store.get_run(run).await.unwrap().unwrap().next_seq }
    };
    let (n1, n10) = (events(small).await, events(large).await);

    // resume_hook vs a raw store append, sequential latency and 16-way throughput.
    let e = engine(store.clone());
    e.start_workers();
    let calls = if quick { 300 } else { 1000 };
    let sink_run = e.start("sink", &(0u32, calls * 17)).await.unwrap();
    e.wait_for_hook("bench:0", Duration::from_secs(30))
        .await
        .expect("the sink's hook");
    let mut resume_lat = Vec::with_capacity(calls as usize);
    for i in 0..calls {
        let t = Instant::now();
        e.resume_hook("bench:0", &i).await.unwrap();
        resume_lat.push(t.elapsed());
    }
    resume_lat.sort();
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let e = e.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..calls {
                e.resume_hook("bench:0", &i).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let resume_rate = f64::from(calls * 16) / t.elapsed().as_secs_f64();
    let _: u32 = e.result(&sink_run).await.unwrap();
    e.shutdown().await;
    // The raw store append of one event, the same way.
    let raw_run = RunId::new();
    store
        .create_run(NewRun {
            id: raw_run,
            workflow: "raw".into(),
            input: Payload::encode(&0u8).unwrap(),
        })
        .await
        .unwrap();
    let event = |i: u32| EventData::StepCreated {
        step: CorrelationId::from_parts("step", u64::from(i)),
        name: "x".into(),
        input_digest: None,
    };
    let mut append_lat = Vec::with_capacity(calls as usize);
    for i in 0..calls {
        let t = Instant::now();
        store.append(raw_run, vec![event(i)], None).await.unwrap();
        append_lat.push(t.elapsed());
    }
    append_lat.sort();
    let t = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..16u32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..calls {
                let id = calls * (k + 1) + i;
                store.append(raw_run, vec![event(id)], None).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let append_rate = f64::from(calls * 16) / t.elapsed().as_secs_f64();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;

    println!();
    println!("workflow-core engine benchmark (SledStore, flushed writes)");
    println!("{:<48} {:>14} {:>12}", "measure", "value", "ratio");
    println!(
        "{:<48} {:>11.0}/s {:>12}",
        "raw sled insert+flush+fdatasync (floor)", floor, "1.00x"
    );
    println!(
        "{:<48} {:>11.0}/s {:>11.2}x",
        "sequential durable steps, 1 run",
        seq_rate,
        seq_rate / floor
    );
    println!(
        "{:<48} {:>11.0}/s {:>11.2}x",
        "steps with 64 concurrent runs",
        conc_rate,
        conc_rate / floor
    );
    println!(
        "{:<48} {:>14} {:>12}",
        "3-step start-to-result p50 / p99",
        format!(
            "{:.1}/{:.1}ms",
            percentile(&lat, 0.5).as_secs_f64() * 1e3,
            percentile(&lat, 0.99).as_secs_f64() * 1e3
        ),
        ""
    );
    println!(
        "{:<48} {:>12.2}ms {:>12}",
        format!("cold resume, {n1} events"),
        cold_1k.as_secs_f64() * 1e3,
        ""
    );
    println!(
        "{:<48} {:>12.2}ms {:>11.2}x",
        format!("cold resume, {n10} events (ratio vs {n1})"),
        cold_10k.as_secs_f64() * 1e3,
        cold_10k.as_secs_f64() / cold_1k.as_secs_f64()
    );
    println!(
        "{:<48} {:>12.2}ms {:>11.3}x",
        format!("hot resume, {n10} events (ratio vs cold)"),
        hot_10k.as_secs_f64() * 1e3,
        hot_10k.as_secs_f64() / cold_10k.as_secs_f64()
    );
    println!(
        "{:<48} {:>14} {:>11.2}x",
        "resume_hook p50 / p99 (vs raw append p50)",
        format!(
            "{:.2}/{:.2}ms",
            ms(percentile(&resume_lat, 0.5)),
            ms(percentile(&resume_lat, 0.99))
        ),
        ms(percentile(&resume_lat, 0.5)) / ms(percentile(&append_lat, 0.5))
    );
    println!(
        "{:<48} {:>14} {:>12}",
        "raw store append p50 / p99",
        format!(
            "{:.2}/{:.2}ms",
            ms(percentile(&append_lat, 0.5)),
            ms(percentile(&append_lat, 0.99))
        ),
        ""
    );
    println!(
        "{:<48} {:>11.0}/s {:>11.2}x",
        "resume_hook, 16 callers (vs raw append, 16)",
        resume_rate,
        resume_rate / append_rate
    );
    println!(
        "{:<48} {:>11.0}/s {:>12}",
        "raw store append, 16 writers", append_rate, ""
    );
}
