//! End to end: the `workflow` binary as a process on a temporary data directory.
//!
//! Serve, start a run, POST to its webhook, see it finish, list it with
//! `runs --json`, stop the server with SIGINT, start it again and see the same
//! data; `check-replay` on the stored runs (clean with this binary's code, a
//! mismatch with changed code); `unblock` of a blocked run, locally and through
//! the server; and the errors a user can hit.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

mod support;

use support::{Server, BIN};

fn cli(data: &Path, server: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(["--data", data.to_str().unwrap()]);
    if let Some(s) = server {
        cmd.args(["--server", s]);
    }
    cmd.args(args).output().expect("run workflow")
}

/// Waits until this process has let go of the data directory: the last
/// handle of an in-process store may be dropped on one of its own threads a
/// moment after the test's code is done with it (its group commit's leader),
/// and closing makes a checkpoint first. Opening and dropping it here, where
/// nothing else holds it, releases it before the next `workflow` command.
fn released(data: &Path) {
    drop(workflow_cli::serve::open_store(data, None, std::time::Duration::from_secs(10)).unwrap());
}

fn ok_json(out: Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "command failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

/// A minimal HTTP/1.1 POST over a raw socket; returns status and body.
fn post(addr: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read response");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Asserts that a command failed as a user error: exit code 1 and one line on
/// stderr that contains `want`.
fn user_error(out: Output, want: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(want), "expected {want:?} in {err:?}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

fn wait_for_status(data: &Path, server: &str, run: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let runs = ok_json(cli(data, Some(server), &["runs", "--json"]));
        let status = runs
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == run)
            .map(|r| r["status"].as_str().unwrap().to_string());
        if status.as_deref() == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "run {run} never became {want} (is {status:?})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn serve_start_webhook_finish_restart_and_check_replay() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, "127.0.0.1:0");
    let base = server.base.clone();

    let started = ok_json(cli(
        &data,
        Some(&base),
        &[
            "start",
            "approve_order",
            r#"{"id": 7, "amount_cents": 500}"#,
            "--json",
        ],
    ));
    let run = started["run"].as_str().unwrap().to_string();

    // Wait until the webhook is live, then answer it as a reviewer would.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let hooks = ok_json(cli(&data, Some(&base), &["hooks", "--json"]));
        if hooks
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["token"] == "order:7")
        {
            break;
        }
        assert!(Instant::now() < deadline, "webhook never became live");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, body) = post(
        &server.addr,
        "/.well-known/workflow/v1/webhook/order:7",
        "not json",
    );
    assert_eq!(
        status, 400,
        "the workflow answers a bad body itself: {body}"
    );
    let (status, body) = post(
        &server.addr,
        "/.well-known/workflow/v1/webhook/order%3A7",
        r#"{"approved": true}"#,
    );
    assert_eq!(status, 200);
    assert!(body.contains("\"approved\""), "{body}");
    wait_for_status(&data, &base, &run, "completed");

    let events = ok_json(cli(&data, Some(&base), &["events", &run, "--json"]));
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"run_created"));
    assert_eq!(kinds.last(), Some(&"run_completed"));
    assert_eq!(kinds.iter().filter(|k| **k == "hook_responded").count(), 2);

    // Errors a user can hit while the server runs.
    let out = cli(&data, None, &["check-replay"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use") && err.lines().count() == 1, "{err}");
    let out = Command::new(BIN)
        .args([
            "--data",
            dir.path().join("other").to_str().unwrap(),
            "serve",
            "--addr",
            &server.addr,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen"));
    let out = cli(&data, Some(&base), &["start", "nope", "{}"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown workflow \"nope\""));
    let out = cli(&data, Some(&base), &["start", "chat", "{bad"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid JSON input"));

    // A chat run stays live across the restart.
    let chat = ok_json(cli(
        &data,
        Some(&base),
        &["start", "chat", r#"{"room": "e2e"}"#, "--json"],
    ));
    let chat_run = chat["run"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok_json(cli(&data, Some(&base), &["hooks", "--json"]))
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h["token"] == "chat:e2e")
    {
        assert!(Instant::now() < deadline, "chat hook never became live");
        std::thread::sleep(Duration::from_millis(50));
    }
    ok_json(cli(
        &data,
        Some(&base),
        &["resume", "chat:e2e", r#""hello""#, "--json"],
    ));

    server.interrupt();

    // With the server stopped the CLI opens the data directory itself.
    let runs = ok_json(cli(&data, None, &["runs", "--json"]));
    assert_eq!(runs.as_array().unwrap().len(), 2);
    let out = cli(&data, None, &["check-replay"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Restarted, the same data is there and the suspended run continues.
    let server = Server::start(&data, "127.0.0.1:0");
    let base = server.base.clone();
    let runs = ok_json(cli(
        &data,
        Some(&base),
        &["runs", "--status", "completed", "--json"],
    ));
    assert!(runs
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["id"] == run.as_str()));
    ok_json(cli(
        &data,
        Some(&base),
        &["resume", "chat:e2e", r#""stop""#, "--json"],
    ));
    wait_for_status(&data, &base, &chat_run, "completed");
    let events = ok_json(cli(&data, Some(&base), &["events", &chat_run, "--json"]));
    let output = &events.as_array().unwrap().last().unwrap()["data"]["output"];
    assert_eq!(output, &serde_json::json!(["hello"]));
    server.interrupt();
}

#[test]
fn check_replay_detects_a_changed_workflow() {
    use workflow_core::{Context, Engine, StepError, WorkflowError};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Record a finished flaky_job run with this binary's workflows.
        let engine = workflow_cli::serve::engine(
            workflow_cli::serve::open_store(&data, None, std::time::Duration::ZERO).unwrap(),
        );
        engine.start_workers();
        let run = engine
            .start(
                "flaky_job",
                &serde_json::json!({"fail_times": 0, "sleep_ms": 0}),
            )
            .await
            .unwrap();
        let _: String = engine.result(&run).await.unwrap();
        engine.shutdown().await;
    });
    released(&data);
    // The binary's own code replays it cleanly.
    let out = cli(&data, None, &["check-replay", "--json"]);
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["checked"], 1);
    // Code that changed the first step's name does not.
    rt.block_on(async {
        let store =
            workflow_cli::serve::open_store(&data, None, std::time::Duration::ZERO).unwrap();
        let changed = Engine::builder(store)
            .workflow(
                "flaky_job",
                |ctx: Context, _: serde_json::Value| async move {
                    ctx.step("renamed-call", |_| async { Ok::<_, StepError>(1u32) })
                        .await?;
                    Ok::<_, WorkflowError>(())
                },
            )
            .build();
        let report = changed.check_replay().await.unwrap();
        assert_eq!(report.mismatches.len(), 1);
        assert_eq!(report.mismatches[0].position, Some(0));
        assert!(report.mismatches[0].message.contains("renamed-call"));
    });
}

#[test]
fn unblock_retries_a_blocked_run_and_refuses_other_runs() {
    use workflow_core::{Context, Engine, WorkflowError};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A run of a workflow that an earlier deploy registered and this binary
    // does not: started, never driven.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let retired = rt.block_on(async {
        let store =
            workflow_cli::serve::open_store(&data, None, std::time::Duration::ZERO).unwrap();
        let old = Engine::builder(store)
            .workflow(
                "retired_job",
                |ctx: Context, _: serde_json::Value| async move {
                    ctx.sleep(Duration::from_millis(10)).await?;
                    Ok::<_, WorkflowError>(())
                },
            )
            .build();
        let run = old
            .start("retired_job", &serde_json::json!({}))
            .await
            .unwrap();
        old.shutdown().await;
        run.to_string()
    });
    released(&data);
    let unknown = workflow_store::RunId::new().to_string();

    // Local: the run is pending, not blocked; an unknown run; a malformed id.
    user_error(cli(&data, None, &["unblock", &retired]), "not blocked");
    user_error(cli(&data, None, &["unblock", &unknown]), "does not exist");
    assert_eq!(
        cli(&data, None, &["unblock", "nope"]).status.code(),
        Some(1)
    );

    // The server does not register the workflow: the run is blocked.
    let server = Server::start(&data, "127.0.0.1:0");
    let base = server.base.clone();
    wait_for_status(&data, &base, &retired, "blocked");
    let runs = ok_json(cli(&data, Some(&base), &["runs", "--json"]));
    let error = runs.as_array().unwrap()[0]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.contains("not registered"), "{error}");

    // Through the server: retried, replayed, and blocked again for the same
    // reason (the binary still does not register the workflow).
    let answer = ok_json(cli(&data, Some(&base), &["unblock", &retired, "--json"]));
    assert_eq!(answer, serde_json::json!({ "run": retired }));
    let out = cli(&data, Some(&base), &["unblock", &retired]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("retried: run {retired}\n")
    );
    std::thread::sleep(Duration::from_millis(300));
    wait_for_status(&data, &base, &retired, "blocked");
    let events = ok_json(cli(&data, Some(&base), &["events", &retired, "--json"]));
    let blocked = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "run_blocked")
        .count();
    assert_eq!(blocked, 1, "the same reason is recorded once: {events}");

    // Through the server: an unknown run, and a run that is not blocked.
    user_error(
        cli(&data, Some(&base), &["unblock", &unknown]),
        "does not exist",
    );
    let chat = ok_json(cli(
        &data,
        Some(&base),
        &["start", "chat", r#"{"room": "unblock"}"#, "--json"],
    ));
    let chat_run = chat["run"].as_str().unwrap().to_string();
    user_error(
        cli(&data, Some(&base), &["unblock", &chat_run]),
        "not blocked",
    );
    server.interrupt();

    // Local, with the server stopped: the blocked run is woken for the next server.
    let out = cli(&data, None, &["unblock", &retired]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("retried: run {retired}\n")
    );
}

#[test]
fn start_with_a_wrong_typed_field_names_the_field_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = cli(&data, None, &["start", "approve_order", r#"{"id": "x"}"#]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    user_error(out, "field `id`: invalid type: string, expected integer");
    assert!(!err.contains("Semantic("), "{err}");
    assert!(err.contains("approve_order"), "{err}");

    let out = cli(&data, None, &["start", "approve_order", r#"{"id": 4}"#]);
    user_error(out, "missing field `amount_cents`");
}

#[test]
fn purge_deletes_ended_runs_locally_and_through_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let start = |id: u32| {
        let input = format!("{{\"id\": {id}, \"amount_cents\": 100}}");
        let a = ok_json(cli(
            data,
            None,
            &["--json", "start", "approve_order", &input],
        ));
        a["run"].as_str().unwrap().to_string()
    };
    let ended = start(1);
    let live = start(2);
    ok_json(cli(data, None, &["--json", "cancel", &ended]));

    user_error(
        cli(
            data,
            None,
            &["purge", "--older-than", "0s", "--status", "running"],
        ),
        "only ended runs are purged",
    );
    let out = cli(data, None, &["purge", "--older-than", "eventually"]);
    assert_eq!(out.status.code(), Some(2), "clap rejects a bad duration");
    assert!(String::from_utf8_lossy(&out.stderr).contains("30d"));

    // Nothing ended a day ago; then everything that ended goes.
    let v = ok_json(cli(data, None, &["--json", "purge", "--older-than", "1d"]));
    assert_eq!(v["purged"], 0);
    std::thread::sleep(Duration::from_millis(5));
    let v = ok_json(cli(data, None, &["--json", "purge", "--older-than", "0s"]));
    assert_eq!(v["purged"], 1);
    let runs = ok_json(cli(data, None, &["runs", "--json"]));
    let ids: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![live.as_str()]);

    // Through a running server (which holds the directory).
    let server = Server::start(data, "127.0.0.1:0");
    let url = server.base.clone();
    let out = cli(data, Some(&url), &["--json", "cancel", &live]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for_status(data, &url, &live, "cancelled");
    let v = ok_json(cli(
        data,
        Some(&url),
        &[
            "--json",
            "purge",
            "--older-than",
            "0s",
            "--status",
            "cancelled",
        ],
    ));
    assert_eq!(v["purged"], 1);
    let runs = ok_json(cli(data, Some(&url), &["runs", "--json"]));
    assert_eq!(runs.as_array().unwrap().len(), 0);
}

#[test]
fn serve_with_retention_purges_old_ended_runs_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let a = ok_json(cli(
        data,
        None,
        &[
            "--json",
            "start",
            "approve_order",
            r#"{"id": 1, "amount_cents": 1}"#,
        ],
    ));
    let ended = a["run"].as_str().unwrap().to_string();
    ok_json(cli(data, None, &["--json", "cancel", &ended]));
    let b = ok_json(cli(
        data,
        None,
        &[
            "--json",
            "start",
            "approve_order",
            r#"{"id": 2, "amount_cents": 1}"#,
        ],
    ));
    let live = b["run"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(5));

    let server = Server::start_with(data, "127.0.0.1:0", &["--retention", "1ms"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let runs = ok_json(cli(data, Some(&server.base), &["runs", "--json"]));
        let ids: Vec<String> = runs
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect();
        if ids == vec![live.clone()] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the ended run was not purged: {ids:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_redb_data_directory_is_served_and_found_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with(&data, "127.0.0.1:0", &["--store", "redb"]);
    assert!(
        data.join("workflow.redb").exists(),
        "redb's file is in the directory"
    );
    assert!(!data.join("db").exists(), "no sled files beside it");
    let a = ok_json(cli(
        &data,
        Some(&server.base),
        &[
            "--json",
            "start",
            "approve_order",
            r#"{"id": 3, "amount_cents": 9}"#,
        ],
    ));
    let run = a["run"].as_str().unwrap().to_string();
    drop(server);

    // Without --store the directory is opened as the redb store it is.
    let runs = ok_json(cli(&data, None, &["runs", "--json"]));
    assert_eq!(runs[0]["id"], run.as_str());
    user_error(
        cli(&data, None, &["--store", "sled", "runs"]),
        "holds a redb store, not a sled one",
    );
}

#[test]
fn tail_follows_a_report_through_the_server_and_reads_it_locally() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let server = Server::start(data, "127.0.0.1:0");
    let url = server.base.clone();
    let a = ok_json(cli(
        data,
        Some(&url),
        &[
            "--json",
            "start",
            "report",
            "{\"items\": 5, \"item_ms\": 100}",
        ],
    ));
    let run = a["run"].as_str().unwrap().to_string();
    let want: Vec<String> = (1..=5)
        .map(|i| format!("{}\t{{\"done\":{i},\"of\":5}}", i - 1))
        .collect();

    // Started while the run works: follows it until the stream closes.
    let out = cli(data, Some(&url), &["tail", &run, "progress"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines, want);
    wait_for_status(data, &url, &run, "completed");

    let streams = ok_json(cli(data, Some(&url), &["--json", "tail", &run]));
    assert_eq!(
        streams,
        serde_json::json!([{"name": "progress", "len": 5, "closed": true}])
    );
    let out = ok_json_lines(cli(
        data,
        Some(&url),
        &["--json", "tail", &run, "progress", "--from", "3"],
    ));
    assert_eq!(
        out,
        vec![
            serde_json::json!({"index": 3, "chunk": {"done": 4, "of": 5}}),
            serde_json::json!({"index": 4, "chunk": {"done": 5, "of": 5}}),
        ]
    );
    user_error(
        cli(data, Some(&url), &["tail", &run, "nothing"]),
        "no such run or stream",
    );
    server.interrupt();

    // Locally, on the data directory the server left.
    let out = cli(data, None, &["tail", &run, "progress"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines, want);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ok_json_lines(out: Output) -> Vec<serde_json::Value> {
    assert!(
        out.status.success(),
        "command failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON lines"))
        .collect()
}

#[test]
fn serve_runs_an_order_with_a_child_run_per_shipment() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, "127.0.0.1:0");
    let base = server.base.clone();
    let started = ok_json(cli(
        &data,
        Some(&base),
        &[
            "start",
            "ship_order",
            r#"{"id": 12, "parcels": ["Lyon", "Porto", "Graz"]}"#,
            "--json",
        ],
    ));
    let run = started["run"].as_str().unwrap().to_string();
    wait_for_status(&data, &base, &run, "completed");
    // `workflow events` shows the child runs the order started and their ends.
    let events = ok_json(cli(&data, Some(&base), &["events", &run, "--json"]));
    let events = events.as_array().unwrap();
    let children: Vec<String> = events
        .iter()
        .filter(|e| e["kind"] == "child_created")
        .map(|e| e["data"]["child_run"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(children.len(), 3, "{events:?}");
    let outputs: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "child_completed")
        .map(|e| e["data"]["output"].as_str().unwrap())
        .collect();
    assert_eq!(outputs.len(), 3);
    assert!(outputs.contains(&"TRK-12-1"), "{outputs:?}");
    // Each child's first event names the order as its parent.
    for child in &children {
        let log = ok_json(cli(&data, Some(&base), &["events", child, "--json"]));
        assert_eq!(log[0]["data"]["parent"], run.as_str());
        assert_eq!(log[0]["data"]["workflow"], "shipment");
    }
}
