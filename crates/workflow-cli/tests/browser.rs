//! The dashboard in a real browser: `workflow serve` as a process on a
//! temporary data directory, the `approve_order` example run through its
//! webhook, then the dashboard opened in headless Chromium. The rendered DOM
//! must show the run and its events; screenshots are saved under
//! `target/test-artifacts/` (`dashboard.png`: the run's page,
//! `dashboard-runs.png`: the runs list).
//!
//! A second test signs a browser in to a server with `--admin-token`: the
//! page opened with `?token=` renders (the cookie set on the redirect is sent
//! with it and with the script's polls); without it the browser gets the 401
//! page and no run data.
//!
//! Needs Debian's `chromium` (`.ci/install-browser` installs it). Without a
//! browser the test prints `SKIPPED: no chromium` and passes. Set `CHROMIUM`
//! to use another binary.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

mod support;
// The dashboard's own browser tests use the same helpers.
#[path = "../../workflow-http/tests/chromium/mod.rs"]
mod chromium;

use support::{Server, BIN};
const DASHBOARD: &str = "/workflow/dashboard";

fn cli(data: &Path, server: &str, args: &[&str]) -> serde_json::Value {
    cli_with(data, server, &[], args)
}

fn cli_with(data: &Path, server: &str, global: &[&str], args: &[&str]) -> serde_json::Value {
    let out: Output = Command::new(BIN)
        .args([
            "--data",
            data.to_str().expect("utf-8 path"),
            "--server",
            server,
        ])
        .args(global)
        .args(args)
        .arg("--json")
        .output()
        .expect("run workflow");
    assert!(
        out.status.success(),
        "workflow {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

/// A minimal HTTP/1.1 request over a raw socket; returns status and body.
fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write request");
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

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run_status(data: &Path, server: &str, run: &str) -> Option<String> {
    cli(data, server, &["runs"])
        .as_array()
        .expect("runs")
        .iter()
        .find(|r| r["id"] == run)
        .and_then(|r| r["status"].as_str().map(str::to_string))
}

#[test]
fn dashboard_in_headless_chromium() {
    let Some(browser) = chromium::find() else {
        println!("SKIPPED: no chromium");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = Server::start(&data, "127.0.0.1:0");
    let base = server.base.clone();
    assert_eq!(
        server.dashboard_line,
        format!("workflow serve: dashboard at {base}{DASHBOARD}/"),
        "serve prints the dashboard's URL"
    );

    // The run the test is about, and two more so that the list has some variety.
    let started = cli(
        &data,
        &base,
        &[
            "start",
            "approve_order",
            r#"{"id": 7, "amount_cents": 500}"#,
        ],
    );
    let run = started["run"].as_str().expect("run id").to_string();
    cli(
        &data,
        &base,
        &["start", "flaky_job", r#"{"fail_times": 1, "sleep_ms": 10}"#],
    );
    cli(&data, &base, &["start", "chat", r#"{"room": "ops"}"#]);

    // Answer the order's webhook as a reviewer would, once it is live.
    wait_until("the order's webhook", || {
        cli(&data, &base, &["hooks"])
            .as_array()
            .expect("hooks")
            .iter()
            .any(|h| h["token"] == "order:7")
    });
    let (status, body) = http(
        &server.addr,
        "POST",
        "/.well-known/workflow/v1/webhook/order%3A7",
        r#"{"approved": true}"#,
    );
    assert_eq!(status, 200, "{body}");
    wait_until("the order to complete", || {
        run_status(&data, &base, &run).as_deref() == Some("completed")
    });

    // The JSON API agrees before the browser looks.
    let (status, body) = http(
        &server.addr,
        "GET",
        &format!("{DASHBOARD}/api/runs/{run}"),
        "",
    );
    assert_eq!(status, 200, "{body}");
    let detail: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(detail["run"]["status"], "completed");

    let profile = dir.path().join("chromium-profile");
    std::fs::create_dir_all(&profile).expect("profile dir");
    let run_url = format!("{base}{DASHBOARD}/runs/{run}");
    let list_url = format!("{base}{DASHBOARD}/");

    // The run's page, as the browser rendered it.
    let dom = chromium::run(&browser, &profile, &["--dump-dom"], &run_url);
    assert!(dom.contains("id=\"timeline\""), "not the run page: {dom}");
    assert!(dom.contains(&run), "run id missing: {dom}");
    assert!(dom.contains("approve_order"));
    assert!(dom.contains("status-completed"));
    for kind in [
        "run_created",
        "run_started",
        "hook_created",
        "step_created",
        "step_completed",
        "hook_received",
        "hook_responded",
        "hook_disposed",
        "wait_created",
        "wait_completed",
        "run_completed",
    ] {
        assert!(
            dom.contains(&format!(">{kind}</span>")),
            "event {kind} missing from the rendered timeline"
        );
    }
    assert!(dom.contains("notify-reviewer") && dom.contains("charge"));
    assert!(
        dom.contains("approved"),
        "the webhook's payload is shown decoded"
    );

    // The runs list shows it too, newest first.
    let dom = chromium::run(&browser, &profile, &["--dump-dom"], &list_url);
    assert!(dom.contains(&run), "run missing from the list: {dom}");
    for text in ["approve_order", "flaky_job", "chat", "status-completed"] {
        assert!(dom.contains(text), "{text} missing from the list");
    }
    let table = &dom[dom.find("<table class=\"runs\"").expect("the runs table")..];
    let chat_at = table.find(">chat<").expect("chat row");
    let order_at = table.find(">approve_order<").expect("order row");
    assert!(chat_at < order_at, "newest first");

    let artifacts = chromium::artifacts_dir();
    chromium::screenshot(
        &browser,
        &profile,
        &run_url,
        &artifacts.join("dashboard.png"),
        1280,
        900,
    );
    chromium::screenshot(
        &browser,
        &profile,
        &list_url,
        &artifacts.join("dashboard-runs.png"),
        1280,
        900,
    );
    server.interrupt();
}

#[test]
fn dashboard_sign_in_with_the_admin_token_in_headless_chromium() {
    let Some(browser) = chromium::find() else {
        println!("SKIPPED: no chromium");
        return;
    };
    const TOKEN: &str = "browser-s3cret";
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = Server::start_with(&data, "127.0.0.1:0", &["--admin-token", TOKEN]);
    let base = server.base.clone();
    let token = ["--admin-token", TOKEN];
    let started = cli_with(
        &data,
        &base,
        &token,
        &["start", "chat", r#"{"room": "signed-in"}"#],
    );
    let run = started["run"].as_str().expect("run id").to_string();
    wait_until("the chat's hook", || {
        cli_with(&data, &base, &token, &["hooks"])
            .as_array()
            .expect("hooks")
            .iter()
            .any(|h| h["token"] == "chat:signed-in")
    });

    let run_url = format!("{base}{DASHBOARD}/runs/{run}");
    let profile = dir.path().join("chromium-profile");
    std::fs::create_dir_all(&profile).expect("profile dir");
    let dom = chromium::run(&browser, &profile, &["--dump-dom"], &run_url);
    assert!(!dom.contains(&run), "shown without the token: {dom}");
    assert!(
        !dom.contains("chat:signed-in"),
        "the hook token leaks: {dom}"
    );
    assert!(dom.contains("?token="), "the 401 page says how: {dom}");

    let other = dir.path().join("chromium-profile-2");
    std::fs::create_dir_all(&other).expect("profile dir");
    let dom = chromium::run(
        &browser,
        &other,
        &["--dump-dom"],
        &format!("{run_url}?token={TOKEN}"),
    );
    assert!(dom.contains("id=\"timeline\""), "not the run page: {dom}");
    assert!(dom.contains(&run), "run id missing: {dom}");
    assert!(
        dom.contains("chat:signed-in"),
        "signed in, the hook token is shown: {dom}"
    );
    server.interrupt();
}
