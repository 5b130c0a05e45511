//! Headless Chromium for the dashboard's browser tests: find the binary, dump
//! a page's DOM as the browser rendered it, take a screenshot.
//!
//! Needs Debian's `chromium` (`.ci/install-browser` installs it); `CHROMIUM`
//! names another binary. Callers print `SKIPPED: no chromium` and pass when
//! [`find`] finds none.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The browser binary, if one runs.
pub fn find() -> Option<String> {
    let mut candidates: Vec<String> = Vec::new();
    if let Ok(c) = std::env::var("CHROMIUM") {
        candidates.push(c);
    }
    candidates.extend(
        [
            "/usr/bin/chromium",
            "chromium",
            "chromium-browser",
            "google-chrome",
        ]
        .map(String::from),
    );
    candidates.into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Runs headless Chromium with `args` then `url` (at most 90 s) with its
/// own profile under `profile`; returns its stdout.
pub fn run(bin: &str, profile: &Path, args: &[&str], url: &str) -> String {
    std::fs::create_dir_all(profile).expect("profile dir");
    let out_path = profile.with_extension("stdout");
    let out = std::fs::File::create(&out_path).expect("stdout file");
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            &format!("--user-data-dir={}", profile.display()),
            "--virtual-time-budget=5000",
        ])
        .args(args)
        .arg(url)
        .env("HOME", profile)
        .env("XDG_CONFIG_HOME", profile)
        .env("XDG_CACHE_HOME", profile)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium {args:?} {url} did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "chromium failed ({status}): {args:?} {url}"
    );
    std::fs::read_to_string(&out_path).expect("chromium's output")
}

/// The DOM of `url` after its scripts ran.
pub fn dom(bin: &str, profile: &Path, url: &str) -> String {
    run(bin, profile, &["--dump-dom"], url)
}

/// A screenshot of `url` at `width`×`height` into `path`, checked to be a PNG.
pub fn screenshot(bin: &str, profile: &Path, url: &str, path: &Path, width: u32, height: u32) {
    let _ = std::fs::remove_file(path);
    run(
        bin,
        profile,
        &[
            &format!("--screenshot={}", path.display()),
            &format!("--window-size={width},{height}"),
        ],
        url,
    );
    let png = std::fs::read(path).expect("the screenshot was written");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{} is not a plausible screenshot ({} bytes)",
        path.display(),
        png.len()
    );
    println!("screenshot saved: {}", path.display());
}

/// `target/test-artifacts` of this build.
pub fn artifacts_dir() -> PathBuf {
    // The test binary is target/<profile>/deps/<name>.
    let target = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts");
    dir
}
