//! Crash loop: a mixed workload on `SledStore`, served over HTTP by the axum
//! adapter, in a child process that is killed with `SIGKILL` at random moments
//! and restarted, many times. Nothing acknowledged may be lost or doubled.
//!
//! [`sigkill_loop_loses_no_acknowledged_payload_or_step`] runs this test binary
//! again as a child (`--exact crash_loop_child`, with the data directory in
//! `WORKFLOW_CRASH_LOOP_DIR`). Each child opens the sled store, starts the
//! runs with `start_with_id` on fixed ids (idempotent, so every child may do
//! it; the first one that gets that far creates them), starts the engine's
//! workers, serves `workflow_http::axum::router` on `127.0.0.1:0` and prints
//! `ADDR <address>`. Each run of the `mixed` workflow does:
//!
//! - steps, one of them slow, and a step that fails twice and is retried with
//!   backoff (a durable `step_retrying` timer);
//! - a durable sleep;
//! - a default-mode (`202`) webhook with token `crash-loop:<n>` that must receive
//!   `K` requests; between requests it runs more steps (some retrying once) and
//!   short sleeps;
//! - a last sleep and a last step; it returns the request ids it consumed.
//!
//! Meanwhile a client in the parent POSTs to the runs' webhooks over HTTP with
//! a few concurrent senders, each request with a body id never used before,
//! and records what it was answered: `202` (acknowledged), `404` (refused:
//! the webhook does not exist yet or the run has ended), failed to connect
//! (never sent), or anything else / no answer (the answer was lost: the
//! request may or may not be recorded). The number of requests the client may
//! get acknowledged grows steadily while children serve (reaching 90% of them
//! at the last kill; the last 10% go to the final child), so the hook traffic
//! spans the loop and requests are in flight when the kills come.
//!
//! The parent kills each child with `SIGKILL` a random 50..400 ms after it is
//! serving (one round in ten: a random 5..60 ms after it was started, while it
//! recovers), then starts the next one on the same directory (a new port each
//! time; the client picks up the new address). After the last kill a final
//! child runs until every run has completed (bounded wait), exits, and the
//! parent opens the store itself and checks:
//!
//! - every run completed, and its output is exactly the first `K` requests of
//!   its log, in log order;
//! - every request that got a `202` is in its own run's log exactly once; no
//!   request is in any log twice; every logged request was sent, and none that
//!   was refused (`404`) or never sent is logged;
//! - every step has exactly one `step_completed` and no `step_failed`;
//! - the projections agree with the logs: gapless `seq`, run record `next_seq`
//!   and status vs the log, no live hook (by token or in `list_hooks`) for a
//!   completed run, no run left in a non-terminal status, `next_due()` is `None`.
//!
//! Settings (environment):
//!
//! - `WORKFLOW_CRASH_LOOP_KILLS`: kills (default 50, the CI run);
//! - `WORKFLOW_CRASH_LOOP_SEED`: the kill schedule's seed (default: from the
//!   clock; printed, so a failing schedule can be replayed);
//! - `WORKFLOW_CRASH_LOOP_RUNS`: runs (default `max(8, kills / 8)`);
//! - `WORKFLOW_CRASH_LOOP_REQUESTS`: requests per run (default 48).
//!
//! The default (50 kills) takes about 20 s. The long run, 1,000 kills (125 runs,
//! 6,000 acknowledged requests; about 6 to 8 minutes on 2 cores):
//!
//! ```sh
//! WORKFLOW_CRASH_LOOP_KILLS=1000 cargo test -p workflow-cli --test crash_loop \
//!     -- --nocapture sigkill_loop
//! ```
//!
//! [`crash_loop_child`] is the child's entry point: in a normal test run (the
//! environment variable absent) it returns at once and passes trivially.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use workflow_core::{
    webhook_path, Backoff, Context, Engine, StepError, StepOptions, WebhookOptions, WebhookRequest,
    WorkflowError,
};
use workflow_store::{
    CorrelationId, EventData, EventKind, HookToken, RunId, RunQuery, RunStatus, SledStore, Store,
};

/// The child's data directory; its presence makes `crash_loop_child` work.
const DIR_ENV: &str = "WORKFLOW_CRASH_LOOP_DIR";
/// `runs,requests` for the child.
const SPEC_ENV: &str = "WORKFLOW_CRASH_LOOP_SPEC";
/// Set for the last child, which runs until every run has ended.
const FINAL_ENV: &str = "WORKFLOW_CRASH_LOOP_FINAL";
const KILLS_ENV: &str = "WORKFLOW_CRASH_LOOP_KILLS";
const SEED_ENV: &str = "WORKFLOW_CRASH_LOOP_SEED";
const RUNS_ENV: &str = "WORKFLOW_CRASH_LOOP_RUNS";
const REQUESTS_ENV: &str = "WORKFLOW_CRASH_LOOP_REQUESTS";
/// The child's test name, for `--exact`.
const CHILD_TEST: &str = "crash_loop_child";
/// Concurrent senders in the client.
const SENDERS: usize = 4;
/// The share of the requests the client may get acknowledged during the kill
/// loop; the rest are sent to the final child, after the faults stopped.
const LOOP_SHARE: f64 = 0.9;
/// How long the final child may take to finish every run.
const FINAL_WAIT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------
// The workload.
// ---------------------------------------------------------------------------

fn run_id(n: u32) -> RunId {
    RunId::from_u128((0x0C4A_5100_u128 << 96) | u128::from(n))
}

fn token(n: u32) -> String {
    format!("crash-loop:{n}")
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Input {
    n: u32,
    requests: u32,
}

fn retrying() -> StepOptions {
    StepOptions::default().max_attempts(6).backoff(Backoff {
        initial: Duration::from_millis(15),
        factor: 2.0,
        max: Duration::from_millis(60),
    })
}

/// Tells the parent that a step attempt ran (it counts them).
fn step_ran() {
    println!("STEP");
}

/// Step attempts the children ran (from their `STEP` lines).
static STEPS_RUN: AtomicUsize = AtomicUsize::new(0);

async fn mixed(ctx: Context, input: Input) -> Result<Vec<String>, WorkflowError> {
    let n = input.n;
    ctx.step("prepare", move |_| async move {
        step_ran();
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok::<_, StepError>(n)
    })
    .await?;
    // Fails twice: two `step_retrying` timers, then completes.
    ctx.step_with("flaky", retrying(), |s| async move {
        step_ran();
        if s.attempt() <= 2 {
            Err(StepError::retryable(format!(
                "attempt {} fails",
                s.attempt()
            )))
        } else {
            Ok(s.attempt())
        }
    })
    .await?;
    ctx.sleep(Duration::from_millis(100)).await?;
    let mut webhook = ctx.create_webhook(WebhookOptions::token(token(n)))?;
    let mut ids = Vec::with_capacity(input.requests as usize);
    for i in 0..input.requests {
        let request = webhook.next().await?;
        let id = request.text().unwrap_or_default().to_string();
        match i % 4 {
            1 => {
                let seen = id.clone();
                ctx.step(&format!("record-{i}"), move |_| {
                    let seen = seen.clone();
                    async move {
                        step_ran();
                        tokio::time::sleep(Duration::from_millis(3)).await;
                        Ok::<_, StepError>(seen)
                    }
                })
                .await?;
            }
            3 => {
                ctx.step_with(&format!("retry-{i}"), retrying(), |s| async move {
                    step_ran();
                    if s.attempt() == 1 {
                        Err(StepError::retryable("first attempt fails"))
                    } else {
                        Ok(s.attempt())
                    }
                })
                .await?;
            }
            _ => {}
        }
        if i % 7 == 6 {
            ctx.sleep(Duration::from_millis(30)).await?;
        }
        ids.push(id);
    }
    ctx.sleep(Duration::from_millis(50)).await?;
    let count = ids.len();
    ctx.step("finish", move |_| async move {
        step_ran();
        Ok::<_, StepError>(count)
    })
    .await?;
    Ok(ids)
}

// ---------------------------------------------------------------------------
// The child.
// ---------------------------------------------------------------------------

fn parse_spec(spec: &str) -> (u32, u32) {
    let (runs, requests) = spec.split_once(',').expect("spec is runs,requests");
    (
        runs.parse().expect("runs"),
        requests.parse().expect("requests"),
    )
}

/// The child process (see the file docs). Without `WORKFLOW_CRASH_LOOP_DIR` it
/// returns at once, so it passes trivially in a normal test run.
#[test]
fn crash_loop_child() {
    let Some(dir) = std::env::var_os(DIR_ENV) else {
        return;
    };
    let (runs, requests) = parse_spec(&std::env::var(SPEC_ENV).expect("spec"));
    let final_phase = std::env::var_os(FINAL_ENV).is_some();
    // Should the parent die without killing us, do not linger.
    let linger = if final_phase {
        FINAL_WAIT + Duration::from_secs(30)
    } else {
        Duration::from_secs(60)
    };
    std::thread::spawn(move || {
        std::thread::sleep(linger);
        std::process::exit(3);
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(child_main(PathBuf::from(dir), runs, requests, final_phase));
}

async fn child_main(dir: PathBuf, runs: u32, requests: u32, final_phase: bool) {
    let store = SledStore::open(&dir).expect("child: open the store");
    let engine = Engine::builder(store.clone())
        .workflow("mixed", mixed)
        .lease_ttl(Duration::from_millis(300))
        .poll_interval(Duration::from_millis(25))
        .build();
    for n in 0..runs {
        engine
            .start_with_id(run_id(n), "mixed", &Input { n, requests })
            .await
            .expect("child: start a run");
    }
    engine.start_workers();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("child: bind");
    let addr = listener.local_addr().expect("child: local address");
    let app: axum::Router = workflow_http::axum::router(engine.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    println!("ADDR {addr}");
    if !final_phase {
        // Serve until killed.
        std::future::pending::<()>().await;
    }
    loop {
        let open = store
            .list_runs(RunQuery::default().limit(runs as usize + 1))
            .await
            .expect("child: list runs")
            .iter()
            .filter(|r| !r.status.is_terminal())
            .count();
        if open == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("DONE");
    engine.shutdown().await;
}

// ---------------------------------------------------------------------------
// The client: POSTs to the webhooks, remembers every request's fate.
// ---------------------------------------------------------------------------

/// What the parent and the client share.
#[derive(Default)]
struct Shared {
    /// The serving child's address, if one is serving.
    addr: Mutex<Option<String>>,
    /// How many acknowledged requests the client may have by now.
    budget: AtomicUsize,
    /// Set when the client should stop.
    stop: AtomicBool,
    ledger: Mutex<Ledger>,
}

/// Every request the client sent, by body id, and how it ended.
#[derive(Default)]
struct Ledger {
    /// Answered `202`: must be in the run's log exactly once.
    acked: BTreeMap<String, u32>,
    /// Answered `404`: must not be in any log.
    refused: BTreeSet<String>,
    /// The connection could not be made: never sent, must not be in any log.
    unsent: BTreeSet<String>,
    /// No answer, or an unexpected one: may or may not be logged (once at most).
    lost: BTreeSet<String>,
    /// Requests in flight.
    in_flight: usize,
    /// Acknowledged requests per run.
    acked_per_run: BTreeMap<u32, usize>,
    /// Runs whose webhook answered `202` at least once.
    seen_live: BTreeSet<u32>,
    /// Runs the client no longer sends to: `K` acknowledged, or ended.
    done: BTreeSet<u32>,
    /// Unexpected answers, by status.
    odd_statuses: BTreeMap<u16, usize>,
    next_id: u64,
    next_run: u32,
}

impl Ledger {
    /// Records how request `id` to run `n` ended; `true` if the sender should pause.
    fn record(&mut self, n: u32, id: String, fate: Fate, requests: u32) -> bool {
        self.in_flight -= 1;
        match fate {
            Fate::Acked => {
                self.acked.insert(id, n);
                self.seen_live.insert(n);
                let count = self.acked_per_run.entry(n).or_default();
                *count += 1;
                if *count >= requests as usize {
                    self.done.insert(n);
                }
                false
            }
            Fate::Refused => {
                self.refused.insert(id);
                // Once live, a webhook's token is released only when its run ends.
                if self.seen_live.contains(&n) {
                    self.done.insert(n);
                }
                true
            }
            Fate::Unsent => {
                self.unsent.insert(id);
                true
            }
            Fate::Lost(status) => {
                if let Some(s) = status {
                    *self.odd_statuses.entry(s).or_default() += 1;
                }
                self.lost.insert(id);
                true
            }
        }
    }

    /// Picks the next run to send to and a fresh body id, if the budget allows.
    fn next_request(&mut self, runs: u32, budget: usize) -> Option<(u32, String)> {
        if self.acked.len() + self.in_flight >= budget || self.done.len() == runs as usize {
            return None;
        }
        for _ in 0..runs {
            let n = self.next_run % runs;
            self.next_run = self.next_run.wrapping_add(1);
            if !self.done.contains(&n) {
                self.next_id += 1;
                self.in_flight += 1;
                return Some((n, format!("r{n}-{}", self.next_id)));
            }
        }
        None
    }
}

enum Fate {
    Acked,
    Refused,
    Unsent,
    Lost(Option<u16>),
}

fn client_main(shared: Arc<Shared>, runs: u32, requests: u32) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("client runtime");
    rt.block_on(async move {
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(2))
            .build_http::<Full<Bytes>>();
        let mut senders = Vec::new();
        for _ in 0..SENDERS {
            let shared = shared.clone();
            let client = client.clone();
            senders.push(tokio::spawn(async move {
                while !shared.stop.load(Ordering::SeqCst) {
                    let addr = shared.addr.lock().unwrap().clone();
                    let Some(addr) = addr else {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    };
                    let budget = shared.budget.load(Ordering::SeqCst);
                    let next = shared.ledger.lock().unwrap().next_request(runs, budget);
                    let Some((n, id)) = next else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    let fate = send(&client, &addr, n, &id).await;
                    let pause = shared.ledger.lock().unwrap().record(n, id, fate, requests);
                    if pause {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }));
        }
        for s in senders {
            s.await.expect("sender task");
        }
    });
}

async fn send(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    addr: &str,
    n: u32,
    id: &str,
) -> Fate {
    let uri = format!("http://{addr}{}", webhook_path(&token(n)));
    let request = http::Request::post(uri)
        .header(http::header::CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from(id.to_string())))
        .expect("a valid request");
    let answer = tokio::time::timeout(Duration::from_secs(3), async {
        let response = client.request(request).await?;
        let status = response.status();
        // Read the (empty) body so the connection can be reused.
        let _ = response.into_body().collect().await;
        Ok::<_, hyper_util::client::legacy::Error>(status)
    })
    .await;
    match answer {
        Ok(Ok(status)) if status == http::StatusCode::ACCEPTED => Fate::Acked,
        Ok(Ok(status)) if status == http::StatusCode::NOT_FOUND => Fate::Refused,
        Ok(Ok(status)) => Fate::Lost(Some(status.as_u16())),
        Ok(Err(e)) if e.is_connect() => Fate::Unsent,
        Ok(Err(_)) | Err(_) => Fate::Lost(None),
    }
}

// ---------------------------------------------------------------------------
// The parent.
// ---------------------------------------------------------------------------

/// splitmix64: a small, seedable generator for the kill schedule.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low)
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// A child process and the lines it printed; killed when dropped.
struct ChildProc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl ChildProc {
    fn spawn(dir: &Path, runs: u32, requests: u32, final_phase: bool) -> ChildProc {
        let mut cmd = Command::new(std::env::current_exe().expect("the test binary"));
        cmd.args(["--exact", CHILD_TEST, "--nocapture", "--test-threads", "1"])
            .env(DIR_ENV, dir)
            .env(SPEC_ENV, format!("{runs},{requests}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if final_phase {
            cmd.env(FINAL_ENV, "1");
        } else {
            cmd.env_remove(FINAL_ENV);
        }
        let mut child = cmd.spawn().expect("start the child process");
        let stdout = child.stdout.take().expect("child stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.ends_with("STEP") {
                    STEPS_RUN.fetch_add(1, Ordering::Relaxed);
                    if line == "STEP" {
                        continue;
                    }
                }
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        ChildProc { child, lines }
    }

    /// Waits for a line containing `prefix`; returns the rest of it.
    fn wait_for(&mut self, prefix: &str, within: Duration) -> String {
        let until = Instant::now() + within;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    // The test harness prints `test crash_loop_child ... ` first.
                    if let Some((_, rest)) = line.split_once(prefix) {
                        return rest.trim().to_string();
                    }
                }
                Err(_) => {
                    let status = self.child.try_wait();
                    panic!("the child never printed {prefix:?} within {within:?} (exit: {status:?}); see its stderr above");
                }
            }
        }
    }

    fn assert_alive(&mut self) {
        if let Some(status) = self.child.try_wait().expect("poll the child") {
            panic!(
                "the child ended by itself before it was killed: {status}; see its stderr above"
            );
        }
    }

    fn sigkill(mut self) {
        self.child.kill().expect("SIGKILL the child");
        let status = self.child.wait().expect("reap the child");
        assert!(!status.success(), "a killed child cannot have succeeded");
    }

    fn wait_exit(mut self, within: Duration) {
        let until = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the child") {
                assert!(status.success(), "the final child failed: {status}");
                return;
            }
            assert!(Instant::now() < until, "the final child did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sigkill_loop_loses_no_acknowledged_payload_or_step() {
    let kills: usize = env_or(KILLS_ENV, 50);
    let seed: u64 = env_or(
        SEED_ENV,
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    );
    let runs: u32 = env_or(RUNS_ENV, (kills as u32 / 8).max(8));
    let requests: u32 = env_or(REQUESTS_ENV, 48);
    assert!(kills > 0 && runs > 0 && requests > 0);
    eprintln!(
        "crash loop: {kills} kills, {runs} runs x {requests} webhook requests, \
         seed {seed} (set {SEED_ENV} to replay this schedule)"
    );
    let started = Instant::now();
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let total = runs as usize * requests as usize;

    let shared = Arc::new(Shared::default());
    let client = {
        let shared = shared.clone();
        std::thread::spawn(move || client_main(shared, runs, requests))
    };

    let mut early = 0;
    for round in 0..kills {
        let mut child = ChildProc::spawn(dir.path(), runs, requests, false);
        if rng.next().is_multiple_of(10) {
            // While it opens the store, starts runs and recovers.
            early += 1;
            std::thread::sleep(Duration::from_millis(rng.between(5, 60)));
        } else {
            let addr = child.wait_for("ADDR ", Duration::from_secs(30));
            *shared.addr.lock().unwrap() = Some(addr);
            // The budget grows through the child's life, so requests are in
            // flight whenever the kill comes.
            let life = Duration::from_millis(rng.between(50, 400));
            let born = Instant::now();
            while let Some(left) = life.checked_sub(born.elapsed()) {
                let progress = round as f64 + born.elapsed().as_secs_f64() / life.as_secs_f64();
                let budget = (total as f64 * LOOP_SHARE * progress / kills as f64) as usize;
                shared.budget.store(budget.min(total), Ordering::SeqCst);
                std::thread::sleep(left.min(Duration::from_millis(10)));
            }
            child.assert_alive();
        }
        *shared.addr.lock().unwrap() = None;
        child.sigkill();
        if (round + 1) % 50 == 0 || round + 1 == kills {
            let l = shared.ledger.lock().unwrap();
            eprintln!(
                "  {} kills in {:.1} s: {} acknowledged, {} refused, {} lost, {} unsent",
                round + 1,
                started.elapsed().as_secs_f64(),
                l.acked.len(),
                l.refused.len(),
                l.lost.len(),
                l.unsent.len()
            );
        }
    }
    let loop_time = started.elapsed();

    // Faults stop: the last child runs until every run has ended.
    shared.budget.store(usize::MAX, Ordering::SeqCst);
    let mut last = ChildProc::spawn(dir.path(), runs, requests, true);
    let addr = last.wait_for("ADDR ", Duration::from_secs(30));
    *shared.addr.lock().unwrap() = Some(addr);
    let final_started = Instant::now();
    let done = {
        let until = Instant::now() + FINAL_WAIT;
        loop {
            match last
                .lines
                .recv_timeout(until.saturating_duration_since(Instant::now()))
            {
                Ok(line) if line.ends_with("DONE") => break true,
                Ok(_) => {}
                Err(_) => break false,
            }
        }
    };
    if !done {
        let l = shared.ledger.lock().unwrap();
        panic!(
            "the runs did not all finish within {FINAL_WAIT:?} after the faults stopped; \
             acknowledged per run: {:?}, runs the client considers done: {:?}",
            l.acked_per_run, l.done
        );
    }
    let final_time = final_started.elapsed();
    last.wait_exit(Duration::from_secs(30));
    *shared.addr.lock().unwrap() = None;
    shared.stop.store(true, Ordering::SeqCst);
    client.join().expect("the client thread");

    let ledger = std::mem::take(&mut *shared.ledger.lock().unwrap());
    let stats = verify(dir.path(), runs, requests, &ledger);
    eprintln!(
        "crash loop passed: {kills} kills ({early} during start-up) in {:.1} s, then {:.1} s to \
         finish; {} requests sent: {} acknowledged, {} refused (404), {} answers lost, {} never \
         sent (other statuses: {:?}); {} events in {runs} logs; {} steps, {} attempts recorded, {} attempts run; \
         {:.1} s in all",
        loop_time.as_secs_f64(),
        final_time.as_secs_f64(),
        ledger.acked.len() + ledger.refused.len() + ledger.lost.len() + ledger.unsent.len(),
        ledger.acked.len(),
        ledger.refused.len(),
        ledger.lost.len(),
        ledger.unsent.len(),
        ledger.odd_statuses,
        stats.events,
        stats.steps,
        stats.attempts,
        STEPS_RUN.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
}

struct Stats {
    events: usize,
    steps: usize,
    attempts: usize,
}

/// Opens the store after the last child exited and checks everything the file
/// docs promise.
fn verify(dir: &Path, runs: u32, requests: u32, ledger: &Ledger) -> Stats {
    let store = SledStore::open(dir).expect("open the store after the loop");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let mut stats = Stats {
            events: 0,
            steps: 0,
            attempts: 0,
        };
        // Where each logged request id is: (run, seq).
        let mut logged: BTreeMap<String, Vec<(u32, u64)>> = BTreeMap::new();
        for n in 0..runs {
            let id = run_id(n);
            let rec = store
                .get_run(id)
                .await
                .expect("get_run")
                .unwrap_or_else(|| panic!("run {n} does not exist"));
            let log = store.read_log(id).await.expect("read_log");
            stats.events += log.len();
            assert_eq!(rec.status, RunStatus::Completed, "run {n} did not complete");
            assert_eq!(rec.next_seq, log.len() as u64, "run {n}: next_seq vs log");
            let mut status = None;
            let mut steps: BTreeMap<CorrelationId, [usize; 3]> = BTreeMap::new();
            let mut received = Vec::new();
            let mut output = None;
            for (i, e) in log.iter().enumerate() {
                assert_eq!(e.seq, i as u64, "run {n}: gap or disorder at {i}");
                assert_eq!(
                    i == 0,
                    e.kind() == EventKind::RunCreated,
                    "run {n}: run_created must be exactly the first event"
                );
                assert!(
                    status.is_none_or(|s: RunStatus| !s.is_terminal()),
                    "run {n}: event {i} after the run ended"
                );
                match &e.data {
                    EventData::RunCreated { .. } => status = Some(RunStatus::Pending),
                    EventData::RunStarted => status = Some(RunStatus::Running),
                    EventData::RunBlocked { error } => {
                        panic!("run {n} was blocked at {i}: {}", error.message)
                    }
                    EventData::RunFailed { error } => {
                        panic!("run {n} failed at {i}: {}", error.message)
                    }
                    EventData::RunCancelled => panic!("run {n} was cancelled at {i}"),
                    EventData::RunCompleted { output: o } => {
                        status = Some(RunStatus::Completed);
                        output = Some(o.decode::<Vec<String>>().expect("output decodes"));
                    }
                    EventData::StepCreated { step, .. } => {
                        assert!(
                            steps.insert(step.clone(), [0; 3]).is_none(),
                            "run {n}: {step} created twice"
                        );
                    }
                    EventData::StepStarted { step, .. } => {
                        steps.get_mut(step).expect("started step exists")[0] += 1;
                    }
                    EventData::StepCompleted { step, .. } => {
                        steps.get_mut(step).expect("completed step exists")[1] += 1;
                    }
                    EventData::StepFailed { step, error } => {
                        steps.get_mut(step).expect("failed step exists")[2] += 1;
                        panic!("run {n}: {step} failed: {}", error.message);
                    }
                    EventData::HookReceived { payload, .. } => {
                        let request: WebhookRequest =
                            payload.decode().expect("a webhook request payload");
                        let body = request.text().expect("a text body").to_string();
                        logged.entry(body.clone()).or_default().push((n, e.seq));
                        received.push(body);
                    }
                    _ => {}
                }
            }
            assert_eq!(status, Some(rec.status), "run {n}: status vs log");
            for (step, [started, completed, failed]) in &steps {
                assert_eq!(
                    (*completed, *failed),
                    (1, 0),
                    "run {n}: {step} has {completed} step_completed and {failed} step_failed"
                );
                stats.attempts += started;
            }
            stats.steps += steps.len();
            // The workflow consumed the first K requests, in log order.
            let output = output.expect("run_completed");
            assert_eq!(output.len(), requests as usize, "run {n}: output length");
            assert_eq!(
                output[..],
                received[..requests as usize],
                "run {n}: consumed requests vs log order"
            );
            // No live hook is left for a completed run.
            let token = HookToken::new(token(n)).expect("token");
            assert!(
                store.get_hook(&token).await.expect("get_hook").is_none(),
                "run {n} completed but its token is live"
            );
            let hooks = store.list_hooks(id).await.expect("list_hooks");
            assert_eq!(hooks.len(), 1, "run {n}: one webhook");
            assert!(hooks.iter().all(|h| !h.live), "run {n}: a hook is live");
        }
        for status in [RunStatus::Pending, RunStatus::Running, RunStatus::Blocked] {
            let open = store
                .list_runs(RunQuery::default().status(status).limit(10))
                .await
                .expect("list_runs");
            assert!(open.is_empty(), "runs left {status}: {open:?}");
        }
        assert_eq!(
            store.next_due().await.expect("next_due"),
            None,
            "work is queued although every run has ended"
        );

        // Requests: acknowledged ones exactly once, in their own run.
        let mut missing = Vec::new();
        for (id, n) in &ledger.acked {
            match logged.get(id).map(Vec::as_slice) {
                None | Some([]) => missing.push(id.clone()),
                Some([(run, _)]) => assert_eq!(run, n, "{id} is in run {run}'s log, not {n}'s"),
                Some(places) => panic!("acknowledged request {id} is logged {places:?}"),
            }
        }
        assert!(
            missing.is_empty(),
            "{} acknowledged requests are not in any log: {:?}",
            missing.len(),
            &missing[..missing.len().min(20)]
        );
        for (id, places) in &logged {
            assert_eq!(places.len(), 1, "request {id} is logged {places:?}");
            assert!(
                ledger.acked.contains_key(id) || ledger.lost.contains(id),
                "request {id} is logged at {places:?} but was {}",
                if ledger.refused.contains(id) {
                    "refused with 404"
                } else if ledger.unsent.contains(id) {
                    "never sent"
                } else {
                    "never made"
                }
            );
        }
        assert!(
            ledger.acked.len() >= (runs * requests) as usize / 2,
            "too few acknowledged requests ({}): the test tested little",
            ledger.acked.len()
        );
        stats
    })
}
