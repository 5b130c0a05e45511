//! Sequential durable steps per second through the engine, on PostgreSQL and
//! on sled, measured in the same run.
//!
//! ```sh
//! WORKFLOW_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo bench -p workflow-postgres --bench steps
//! ```
//!
//! Each figure is one run of `n` sequential steps (one flushed write each),
//! timed from `start` to `result`; the median of five rounds, alternating
//! backends.

use std::time::{Duration, Instant};

use workflow_core::{Context, Engine, StepError, WorkflowError};
use workflow_postgres::{PostgresConfig, PostgresStore};
use workflow_store::{SledStore, Store};

async fn steps(ctx: Context, n: u32) -> Result<u32, WorkflowError> {
    let mut total = 0u32;
    for i in 0..n {
        total = total.wrapping_add(
            ctx.step("add", move |_| async move { Ok::<_, StepError>(i) })
                .await?,
        );
    }
    Ok(total)
}

async fn steps_per_second(store: impl Store, n: u32) -> f64 {
    let engine = Engine::builder(store)
        .workflow("steps", steps)
        .poll_interval(Duration::from_millis(5))
        .build();
    engine.start_workers();
    let t = Instant::now();
    let run = engine.start("steps", &n).await.expect("start");
    let _: u32 = engine.result(&run).await.expect("result");
    let rate = f64::from(n) / t.elapsed().as_secs_f64();
    engine.shutdown().await;
    rate
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let Ok(url) = std::env::var("WORKFLOW_TEST_POSTGRES_URL") else {
        println!("SKIPPED workflow-postgres steps benchmark: WORKFLOW_TEST_POSTGRES_URL not set");
        return;
    };
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 100 } else { 300 };
    let schema = format!("wfb_{:032x}", workflow_store::RunId::new().as_u128());
    let pg = PostgresStore::connect_with(PostgresConfig::new(url.clone()).schema(&schema))
        .await
        .expect("connect");
    let dir = tempfile::tempdir().expect("tempdir");
    let sled = SledStore::open(dir.path()).expect("open sled");
    let (mut p, mut s) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        p.push(steps_per_second(pg.clone(), n).await);
        s.push(steps_per_second(sled.clone(), n).await);
    }
    let (p, s) = (median(p), median(s));
    println!();
    println!("| sequential durable steps/s (median of 5) | steps/s | vs sled |");
    println!("|-------------------------------------------|--------:|--------:|");
    println!("| SledStore                                 | {s:>7.0} |   1.00x |");
    println!(
        "| PostgresStore                             | {p:>7.0} | {:>6.2}x |",
        p / s
    );
    drop(pg);
    if let Ok((client, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
        let driver = tokio::spawn(conn);
        let _ = client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .await;
        drop(client);
        let _ = driver.await;
    }
}
