//! Restart: an engine process killed with SIGKILL mid-run on SledStore, and
//! started again, finishes the run; a sleep armed before the kill fires after.
//!
//! [`engine_killed_mid_step_and_mid_sleep_finishes_the_run`] runs this test
//! binary again as a child (`--exact restart_child_process`, with the data
//! directory and run id in the environment). The child opens the sled store,
//! starts (idempotently) a run of `restartable`, drives it with background
//! workers and prints a line per step attempt and, when the run ends, its
//! result and log. The parent kills the first child while a slow step runs,
//! the second once the sleep is armed, and lets the third finish.
//!
//! [`restart_child_process`] returns at once in a normal test run.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use workflow_core::{Context, Engine, StepError, WorkflowError};
use workflow_store::{EventData, EventKind, RunId, SledStore, Store};

const DIR_ENV: &str = "WORKFLOW_RESTART_DIR";
const RUN_ENV: &str = "WORKFLOW_RESTART_RUN";
const WORKFLOW_ENV: &str = "WORKFLOW_RESTART_WORKFLOW";
const SLEEP: Duration = Duration::from_millis(1500);

async fn restartable(ctx: Context, _: ()) -> Result<String, WorkflowError> {
    let a = ctx
        .step("quick", |s| async move {
            println!("ATTEMPT quick {}", s.attempt());
            Ok::<_, StepError>("a".to_string())
        })
        .await?;
    let b = ctx
        .step("slow", |s| async move {
            println!("ATTEMPT slow {}", s.attempt());
            tokio::time::sleep(Duration::from_millis(600)).await;
            println!("FINISHED slow");
            Ok::<_, StepError>("b".to_string())
        })
        .await?;
    ctx.sleep(SLEEP).await?;
    let c = ctx
        .step("after-sleep", |s| async move {
            println!("ATTEMPT after-sleep {}", s.attempt());
            Ok::<_, StepError>("c".to_string())
        })
        .await?;
    Ok(format!("{a}{b}{c}"))
}

/// A step that kills its own process (as an out-of-memory kill or an abort
/// would), with two attempts allowed.
async fn self_destructing(ctx: Context, _: ()) -> Result<String, WorkflowError> {
    let outcome = ctx
        .step_with(
            "abort",
            workflow_core::StepOptions::default()
                .max_attempts(2)
                .backoff(workflow_core::Backoff {
                    initial: Duration::from_millis(10),
                    factor: 1.0,
                    max: Duration::from_millis(10),
                }),
            |s| async move {
                println!("ATTEMPT abort {}", s.attempt());
                std::process::abort();
                #[allow(unreachable_code)]
                Ok::<_, StepError>(())
            },
        )
        .await;
    Ok(match outcome {
        Ok(()) => "completed".to_string(),
        Err(e) => format!("failed: {e}"),
    })
}

/// The child process: drives the run until it ends, then prints its log.
#[test]
fn restart_child_process() {
    let (Ok(dir), Ok(run)) = (std::env::var(DIR_ENV), std::env::var(RUN_ENV)) else {
        return;
    };
    let run: RunId = run.parse().expect("run id");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let store = SledStore::open(&dir).expect("open store");
        let engine = Engine::builder(store.clone())
            .workflow("restartable", restartable)
            .workflow("self-destructing", self_destructing)
            .lease_ttl(Duration::from_millis(400))
            .poll_interval(Duration::from_millis(20))
            .build();
        let workflow = std::env::var(WORKFLOW_ENV).unwrap_or_else(|_| "restartable".into());
        engine
            .start_with_id(run, &workflow, &())
            .await
            .expect("start");
        engine.start_workers();
        let out: String = engine.result(&run).await.expect("result");
        println!("RESULT {out}");
        for e in store.read_log(run).await.expect("log") {
            let extra = match &e.data {
                EventData::WaitCreated { resume_at, .. } => resume_at.as_millis().to_string(),
                EventData::StepCompleted { step, .. } | EventData::StepCreated { step, .. } => {
                    step.to_string()
                }
                _ => String::new(),
            };
            println!("EVENT {} {} {} {extra}", e.seq, e.kind(), e.at.as_millis());
        }
        println!("END");
        engine.shutdown().await;
    });
}

fn spawn_child(dir: &std::path::Path, run: RunId) -> (Child, mpsc::Receiver<String>) {
    spawn_child_running(dir, run, "restartable")
}

fn spawn_child_running(
    dir: &std::path::Path,
    run: RunId,
    workflow: &str,
) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "restart_child_process",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(DIR_ENV, dir)
        .env(RUN_ENV, run.to_string())
        .env(WORKFLOW_ENV, workflow)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn wait_for(rx: &mpsc::Receiver<String>, want: &str, seen: &mut Vec<String>) {
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("child never printed {want:?}; saw {seen:?}"));
        seen.push(line.clone());
        if line.contains(want) {
            return;
        }
    }
}

fn kill(mut child: Child) {
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
}

#[test]
fn engine_killed_mid_step_and_mid_sleep_finishes_the_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = RunId::new();
    let mut seen = Vec::new();

    // 1: killed while the slow step runs (its outcome is not recorded).
    let (child, rx) = spawn_child(dir.path(), run);
    wait_for(&rx, "ATTEMPT slow 1", &mut seen);
    kill(child);

    // 2: reruns the slow step, arms the sleep, and is killed while it sleeps.
    let (child, rx) = spawn_child(dir.path(), run);
    wait_for(&rx, "FINISHED slow", &mut seen);
    std::thread::sleep(Duration::from_millis(300));
    kill(child);

    // 3: the timer armed by child 2 fires here; the run finishes.
    let (mut child, rx) = spawn_child(dir.path(), run);
    wait_for(&rx, "END", &mut seen);
    child.wait().expect("child 3 exits");

    let result = seen
        .iter()
        .find_map(|l| l.split_once("RESULT ").map(|(_, r)| r))
        .expect("result line");
    assert_eq!(result, "abc");
    // The slow step ran at least once more after the first kill ...
    let slow_attempts = seen.iter().filter(|l| l.contains("ATTEMPT slow")).count();
    assert!(
        slow_attempts >= 2,
        "slow step ran {slow_attempts} times: {seen:?}"
    );
    // ... but each step has exactly one step_completed in the log.
    let events: Vec<Vec<&str>> = seen
        .iter()
        .filter_map(|l| l.strip_prefix("EVENT "))
        .map(|l| l.split(' ').collect())
        .collect();
    for step in ["step:0", "step:1", "step:3"] {
        let n = events
            .iter()
            .filter(|e| e[1] == "step_completed" && e[3] == step)
            .count();
        assert_eq!(n, 1, "{step} completed {n} times: {events:?}");
    }
    // The sleep was armed by child 2 and fired in child 3, not before its time.
    let created = events
        .iter()
        .find(|e| e[1] == EventKind::WaitCreated.as_str())
        .expect("wait_created");
    let fired = events
        .iter()
        .find(|e| e[1] == EventKind::WaitCompleted.as_str())
        .expect("wait_completed");
    let resume_at: u64 = created[3].parse().unwrap();
    let fired_at: u64 = fired[2].parse().unwrap();
    assert!(
        fired_at >= resume_at,
        "timer fired at {fired_at}, before {resume_at}"
    );
    let after_sleep_attempts = seen
        .iter()
        .filter(|l| l.contains("ATTEMPT after-sleep"))
        .count();
    assert_eq!(after_sleep_attempts, 1, "{seen:#?}");

    // The store agrees when opened here, after the children are gone.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = SledStore::open(dir.path()).unwrap();
        let rec = store.get_run(run).await.unwrap().unwrap();
        assert_eq!(rec.status, workflow_store::RunStatus::Completed);
        assert_eq!(store.next_due().await.unwrap(), None);
    });
}

/// A step whose attempts abort their process is not retried forever: the
/// engine that takes the expired lease over counts each lost attempt, and
/// with `max_attempts(2)` the step fails after two, reaching the workflow.
#[test]
fn a_step_that_kills_its_process_fails_after_max_attempts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = RunId::new();
    let mut seen = Vec::new();
    for attempt in 1..=2 {
        let (mut child, rx) = spawn_child_running(dir.path(), run, "self-destructing");
        wait_for(&rx, &format!("ATTEMPT abort {attempt}"), &mut seen);
        let status = child.wait().expect("reap");
        assert!(!status.success(), "the step did not kill its process");
    }
    let (mut child, rx) = spawn_child_running(dir.path(), run, "self-destructing");
    wait_for(&rx, "END", &mut seen);
    child.wait().expect("child 3 exits");
    let result = seen
        .iter()
        .find_map(|l| l.split_once("RESULT ").map(|(_, r)| r))
        .expect("result line");
    assert!(
        result.contains("after 2 attempt(s)") && result.contains("was lost"),
        "{result}"
    );
    let attempts = seen.iter().filter(|l| l.contains("ATTEMPT abort")).count();
    assert_eq!(attempts, 2, "{seen:?}");
}
