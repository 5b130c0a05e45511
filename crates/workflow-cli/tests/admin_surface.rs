//! The admin surface of `workflow serve` as a process: how commands find the
//! server that holds a data directory (its address file), which addresses and
//! tokens `serve` accepts, and the one gate in front of the admin API and the
//! dashboard (bearer token, browser sign-in, `Host` check on loopback).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod support;

use support::{Server, BIN};

const DASHBOARD: &str = "/workflow/dashboard";

fn cli(data: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(["--data", data.to_str().expect("utf-8 path")])
        .args(args)
        .env_remove("WORKFLOW_SERVER")
        .env_remove("WORKFLOW_ADMIN_TOKEN")
        .output()
        .expect("run workflow")
}

fn ok_json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "command failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

/// Runs `workflow <args>` that must fail fast: exit code 1 within 20 s (a
/// server that starts instead is killed, and the test fails), one line on
/// stderr; returns that line.
fn refused(data: &Path, args: &[&str]) -> String {
    let mut child = Command::new(BIN)
        .args(["--data", data.to_str().expect("utf-8 path")])
        .args(args)
        .env_remove("WORKFLOW_ADMIN_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn workflow");
    let status = support::wait_within(
        &mut child,
        Duration::from_secs(20),
        &format!("workflow {args:?} did not refuse"),
    );
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read stderr");
    assert_eq!(status.code(), Some(1), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    err
}

/// An HTTP/1.1 answer: status, head (lowercase) and body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

/// A request over a raw socket, with `Host: <addr>` unless `headers` has one.
fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    let body = if method == "POST" { "{}" } else { "" };
    head.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    s.write_all(head.as_bytes()).expect("write request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read response");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Answer {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_string(),
    }
}

fn get(addr: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    request(addr, "GET", path, headers)
}

fn wait_for_hook(data: &Path, token_args: &[&str], hook: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut args = token_args.to_vec();
        args.extend(["hooks", "--json"]);
        let hooks = ok_json(&cli(data, &args));
        if hooks
            .as_array()
            .expect("hooks")
            .iter()
            .any(|h| h["token"] == hook)
        {
            return;
        }
        assert!(Instant::now() < deadline, "hook {hook} never became live");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn commands_talk_to_the_server_that_holds_the_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = Server::start(&data, "127.0.0.1:0");
    let address: serde_json::Value = serde_json::from_slice(
        &std::fs::read(data.join("server.json")).expect("serve wrote server.json"),
    )
    .expect("JSON");
    assert_eq!(address["url"], server.base.as_str());
    assert_eq!(address["pid"], server.child.id());

    // No --server: the commands find it (not the default 127.0.0.1:3000).
    let out = cli(&data, &["runs", "--json"]);
    assert_eq!(ok_json(&out), serde_json::json!([]));
    let note = String::from_utf8_lossy(&out.stderr);
    assert!(
        note.contains(&format!("talking to it at {}", server.base)),
        "{note}"
    );
    let started = ok_json(&cli(
        &data,
        &["start", "chat", r#"{"room": "found"}"#, "--json"],
    ));
    let run = started["run"].as_str().expect("run").to_string();
    wait_for_hook(&data, &[], "chat:found");
    ok_json(&cli(&data, &["resume", "chat:found", r#""hi""#, "--json"]));
    ok_json(&cli(&data, &["cancel", &run, "--json"]));
    let runs = ok_json(&cli(&data, &["runs", "--json"]));
    assert_eq!(runs[0]["id"], run.as_str());
    assert_eq!(runs[0]["status"], "cancelled");

    // Stopped cleanly, it removes the file, and commands open the directory.
    server.interrupt();
    assert!(!data.join("server.json").exists());
    let runs = ok_json(&cli(&data, &["runs", "--json"]));
    assert_eq!(runs.as_array().map(Vec::len), Some(1));
}

#[test]
fn a_held_directory_without_a_valid_address_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // This process holds the directory and is no server.
    let store =
        workflow_cli::serve::open_store(&data, None, std::time::Duration::ZERO).expect("open");
    let err = refused(&data, &["runs"]);
    assert!(err.contains("in use by another process"), "{err}");
    assert!(err.contains("no address file"), "{err}");
    assert!(err.contains("--server"), "{err}");
    assert!(!err.contains("3000"), "no default address: {err}");

    // A file left by a server that crashed names a process that is gone.
    let mut gone = Command::new("true").spawn().expect("spawn");
    let pid = gone.id();
    gone.wait().expect("wait");
    std::fs::write(
        data.join("server.json"),
        serde_json::json!({ "url": "http://127.0.0.1:9", "addr": "127.0.0.1:9", "pid": pid })
            .to_string(),
    )
    .expect("write");
    let err = refused(
        &data,
        &["cancel", &workflow_store::RunId::new().to_string()],
    );
    assert!(err.contains("stale"), "{err}");
    drop(store);

    // Once the directory is free, commands open it and ignore the file;
    // a server that takes the directory replaces it.
    let runs = ok_json(&cli(&data, &["runs", "--json"]));
    assert_eq!(runs, serde_json::json!([]));
    let server = Server::start(&data, "127.0.0.1:0");
    let address: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("server.json")).expect("read"))
            .expect("JSON");
    assert_eq!(address["pid"], server.child.id());
    server.interrupt();
}

#[test]
fn serve_refuses_a_public_address_without_a_token_and_an_empty_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let err = refused(&data, &["serve", "--addr", "0.0.0.0:0"]);
    assert!(err.contains("0.0.0.0:0"), "{err}");
    assert!(err.contains("needs --admin-token"), "{err}");
    let err = refused(&data, &["serve", "--addr", "[::]:0"]);
    assert!(err.contains("needs --admin-token"), "{err}");
    for addr in ["127.0.0.1:0", "0.0.0.0:0"] {
        let err = refused(&data, &["serve", "--addr", addr, "--admin-token", ""]);
        assert!(err.contains("--admin-token"), "{err}");
        assert!(err.contains("empty"), "{err}");
    }
    let err = refused(&data, &["runs", "--admin-token", ""]);
    assert!(err.contains("empty"), "{err}");
}

#[test]
fn with_a_token_the_admin_api_and_the_dashboard_need_it() {
    const TOKEN: &str = "op-s3cret:42";
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = Server::start_with(&data, "127.0.0.1:0", &["--admin-token", TOKEN]);
    let addr = server.addr.clone();
    let with_token = ["--admin-token", TOKEN];

    // The CLI finds the server and needs the token too.
    let out = cli(&data, &["runs"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("admin token"), "{err}");
    let started = ok_json(&cli(
        &data,
        &[
            "--admin-token",
            TOKEN,
            "start",
            "chat",
            r#"{"room": "guarded"}"#,
            "--json",
        ],
    ));
    let run = started["run"].as_str().expect("run").to_string();
    wait_for_hook(&data, &with_token, "chat:guarded");

    let bearer = format!("Bearer {TOKEN}");
    let paths = [
        "/api/v1/hooks".to_string(),
        "/api/v1/runs".to_string(),
        format!("/api/v1/runs/{run}/events"),
        format!("{DASHBOARD}/api/runs"),
        format!("{DASHBOARD}/api/runs/{run}"),
        format!("{DASHBOARD}/api/runs/{run}/status"),
        format!("{DASHBOARD}/runs/{run}"),
        format!("{DASHBOARD}/"),
    ];
    for path in &paths {
        for headers in [
            vec![],
            vec![("Authorization", "Bearer wrong")],
            vec![("Authorization", "Bearer op-s3cret:4")],
            vec![("Cookie", "workflow_admin=wrong")],
        ] {
            let a = get(&addr, path, &headers);
            assert_eq!(a.status, 401, "GET {path} with {headers:?}: {}", a.body);
            assert!(a.head.contains("www-authenticate: bearer"), "{}", a.head);
            assert!(!a.body.contains("guarded"), "GET {path} leaks: {}", a.body);
        }
        let a = get(&addr, path, &[("Authorization", &bearer)]);
        assert_eq!(a.status, 200, "GET {path}: {}", a.body);
    }
    // Authenticated, the dashboard shows the hook's token in clear.
    let a = get(
        &addr,
        &format!("{DASHBOARD}/api/runs/{run}"),
        &[("Authorization", &bearer)],
    );
    let detail: serde_json::Value = serde_json::from_str(&a.body).expect("JSON");
    assert_eq!(detail["hooks"][0]["token"], "chat:guarded");
    // Writes need the token.
    let cancel = format!("/api/v1/runs/{run}/cancel");
    assert_eq!(request(&addr, "POST", &cancel, &[]).status, 401);

    // A browser signs in once with ?token=, then its cookie reads (only).
    let a = get(
        &addr,
        &format!("{DASHBOARD}/runs/{run}?token=op-s3cret%3A42"),
        &[("Accept", "text/html")],
    );
    assert_eq!(a.status, 303, "{}", a.body);
    assert!(
        a.head
            .contains(&format!("location: {DASHBOARD}/runs/{run}\r\n").to_ascii_lowercase()),
        "{}",
        a.head
    );
    let cookie_line = a
        .head
        .lines()
        .find(|l| l.starts_with("set-cookie:"))
        .expect("a cookie");
    assert!(cookie_line.contains("httponly"), "{cookie_line}");
    assert!(cookie_line.contains("samesite=strict"), "{cookie_line}");
    let cookie = "workflow_admin=op-s3cret%3A42";
    let a = get(
        &addr,
        &format!("{DASHBOARD}/runs/{run}"),
        &[("Cookie", cookie)],
    );
    assert_eq!(a.status, 200);
    assert!(a.body.contains("chat:guarded"));
    assert_eq!(
        request(&addr, "POST", &cancel, &[("Cookie", cookie)]).status,
        401
    );
    let a = get(
        &addr,
        &format!("{DASHBOARD}/?token=wrong"),
        &[("Accept", "text/html")],
    );
    assert_eq!(a.status, 401);
    assert!(!a.head.contains("set-cookie"), "{}", a.head);
    assert!(a.body.contains("?token="), "the page says how: {}", a.body);

    // The webhook route stays open (a webhook's token is its credential):
    // an unknown token is a 404, not a 401.
    let a = request(
        &addr,
        "POST",
        "/.well-known/workflow/v1/webhook/nobody",
        &[],
    );
    assert_eq!(a.status, 404, "{}", a.body);
    let a = request(&addr, "POST", &cancel, &[("Authorization", &bearer)]);
    assert_eq!(a.status, 200, "{}", a.body);
    server.interrupt();
}

#[test]
fn on_loopback_other_host_names_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = Server::start(&data, "127.0.0.1:0");
    let addr = server.addr.clone();
    let port = addr.rsplit(':').next().expect("port").to_string();
    let evil = format!("rebound.example:{port}");
    for path in [
        "/api/v1/runs".to_string(),
        "/api/v1/hooks".to_string(),
        format!("{DASHBOARD}/"),
        format!("{DASHBOARD}/api/runs"),
    ] {
        for host in [evil.as_str(), "rebound.example", "127.0.0.1.nip.io"] {
            let a = get(&addr, &path, &[("Host", host)]);
            assert_eq!(a.status, 421, "GET {path} as {host}: {}", a.body);
        }
        for host in [
            addr.clone(),
            format!("localhost:{port}"),
            "localhost".to_string(),
        ] {
            let a = get(&addr, &path, &[("Host", &host)]);
            assert_eq!(a.status, 200, "GET {path} as {host}: {}", a.body);
        }
    }
    let a = request(&addr, "POST", "/api/v1/runs", &[("Host", evil.as_str())]);
    assert_eq!(a.status, 421);
    assert_eq!(
        ok_json(&cli(&data, &["runs", "--json"])),
        serde_json::json!([]),
        "nothing was started"
    );
    // The webhook route does not care about the host name.
    let a = request(
        &addr,
        "POST",
        "/.well-known/workflow/v1/webhook/nobody",
        &[("Host", evil.as_str())],
    );
    assert_eq!(a.status, 404);
    server.interrupt();
}
