//! Shared by the CLI's process tests: `workflow serve` as a child process.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `workflow` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_workflow");

/// A running `workflow serve`; killed when dropped.
pub struct Server {
    pub child: Child,
    /// `http://127.0.0.1:<port>`
    pub base: String,
    /// `127.0.0.1:<port>`
    pub addr: String,
    /// The line after "listening on", which gives the dashboard's URL.
    pub dashboard_line: String,
}

impl Server {
    /// Starts `workflow --data <data> serve --addr <addr>` and waits until it listens.
    pub fn start(data: &Path, addr: &str) -> Server {
        Server::start_with(data, addr, &[])
    }

    /// Starts `workflow --data <data> serve --addr <addr> <extra...>` and
    /// waits until it listens.
    pub fn start_with(data: &Path, addr: &str, extra: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .args([
                "--data",
                data.to_str().expect("utf-8 path"),
                "serve",
                "--addr",
                addr,
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn workflow serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut next = || {
            lines
                .next()
                .expect("serve stopped printing")
                .expect("read stdout")
        };
        let base = loop {
            let line = next();
            if let Some((_, rest)) = line.split_once("listening on ") {
                break rest.split_whitespace().next().expect("address").to_string();
            }
        };
        let dashboard_line = next();
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let addr = base.trim_start_matches("http://").to_string();
        Server {
            child,
            base,
            addr,
            dashboard_line,
        }
    }

    /// Sends SIGINT and waits for a clean exit.
    pub fn interrupt(self) {
        self.signal_and_wait("-INT", Duration::from_secs(20));
    }

    /// Sends `signal` (`-INT`, `-TERM`) and waits up to `within` for a clean exit.
    pub fn signal_and_wait(mut self, signal: &str, within: Duration) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill");
        assert!(status.success());
        let status = wait_within(
            &mut self.child,
            within,
            &format!("serve after kill {signal}"),
        );
        assert!(status.success(), "serve exited with {status}");
    }
}

/// Waits up to `within` for `child` to exit; past it, kills it and fails the
/// test naming `what`.
pub fn wait_within(child: &mut Child, within: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
