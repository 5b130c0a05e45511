//! `workflow serve` against hostile clients, on 127.0.0.1: it stops within its
//! shutdown deadline whatever the clients do, keeps answering real requests
//! while idle connections fill its connection cap, cuts off clients that
//! stall, and refuses oversize heads. (The limits themselves are tested in workflow-http's
//! `server_limits.rs`; this checks that `serve` uses them and its flags.)

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::Server;

/// A GET of the dashboard; the status line, or what went wrong.
fn get(addr: &str) -> String {
    let Ok(mut conn) = TcpStream::connect(addr) else {
        return "connect failed".into();
    };
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let sent = conn.write_all(
        b"GET /workflow/dashboard/ HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
    );
    if sent.is_err() {
        return "write failed".into();
    }
    let mut answer = [0u8; 64];
    let n = conn.read(&mut answer).unwrap_or(0);
    let text = String::from_utf8_lossy(&answer[..n]).to_string();
    text.lines().next().unwrap_or("closed").to_string()
}

/// Whether the server has closed `conn` (reads end or fail) within `wait`.
fn closed_within(conn: &mut TcpStream, wait: Duration) -> bool {
    conn.set_read_timeout(Some(wait)).expect("timeout");
    let mut buf = [0u8; 256];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // an error response before the close
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

#[test]
fn sigterm_stops_serve_within_its_deadline_while_clients_hold_half_sent_requests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with(
        &dir.path().join("data"),
        "127.0.0.1:0",
        &["--shutdown-timeout", "2", "--header-timeout", "60"],
    );
    let mut held = Vec::new();
    for _ in 0..50 {
        let mut conn = TcpStream::connect(&server.addr).expect("connect");
        conn.write_all(b"POST /.well-known/workflow/v1/webhook/x HTTP/1.1\r\nhost: local")
            .expect("half a request");
        held.push(conn);
    }
    assert!(get(&server.addr).starts_with("HTTP/1.1 200"));
    // The shutdown deadline is 2 s; 30 s only tells a hang from a slow machine.
    server.signal_and_wait("-TERM", Duration::from_secs(30));
    drop(held);
}

#[test]
fn idle_connections_filling_the_cap_do_not_stop_a_request_and_are_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with(
        &dir.path().join("data"),
        "127.0.0.1:0",
        &["--max-connections", "20", "--header-timeout", "2"],
    );
    // 30 clients that connect and say nothing: 20 fill the cap, and each of
    // the others takes the slot of the oldest one, which is closed.
    let mut idle: Vec<TcpStream> = (0..30)
        .map(|_| TcpStream::connect(&server.addr).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // A real request still gets its answer, at once.
    let answer = get(&server.addr);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Every idle connection is closed: the oldest to make room, the rest by
    // the header timeout.
    for conn in &mut idle {
        assert!(
            closed_within(conn, Duration::from_secs(10)),
            "an idle connection outlived the header timeout"
        );
    }
    server.interrupt();
}

#[test]
fn serve_refuses_an_oversize_head() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"), "127.0.0.1:0");
    let mut conn = TcpStream::connect(&server.addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let big = "a".repeat(20_000);
    let request = format!(
        "POST /.well-known/workflow/v1/webhook/x HTTP/1.1\r\nhost: localhost\r\nx-big: {big}\r\n\r\n"
    );
    // The server may close before reading all of it.
    let _ = conn.write_all(request.as_bytes());
    let mut answer = [0u8; 64];
    let n = conn.read(&mut answer).unwrap_or(0);
    let text = String::from_utf8_lossy(&answer[..n]).to_string();
    assert!(text.starts_with("HTTP/1.1 431"), "{text:?}");
    server.interrupt();
}
