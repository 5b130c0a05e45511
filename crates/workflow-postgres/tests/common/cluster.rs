//! A throwaway PostgreSQL cluster for the tests of one test binary.
//!
//! When `WORKFLOW_TEST_POSTGRES_URL` is not set, the first test that needs a
//! server starts one: `initdb` into a fresh directory under the system's
//! temporary directory, then `postgres` on a free port of 127.0.0.1 (and a
//! Unix socket in that directory, nothing else), as the `postgres` user when
//! the test process is root (`initdb` refuses to run as root). Every test of
//! the binary shares it; each test store uses a schema of its own.
//!
//! Clean-up cannot rely on destructors: the cluster lives in a `static`, and
//! statics are not dropped at exit, nor is anything when the process is
//! killed. So a watchdog (`sh`) is started first, holding the read end of a
//! pipe whose write end only this process has. When this process is gone, for
//! whatever reason, the pipe reads end-of-file and the watchdog stops the
//! server (SIGQUIT, an immediate shutdown) and removes the directory.
//!
//! Cost, measured on a 2-core machine: `initdb` about 1.2 s (with
//! `--no-sync`), start-up to "ready" about 0.1 s; once per test binary.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A running throwaway cluster. Never dropped: the watchdog cleans up.
pub struct Cluster {
    /// A URL that logs in as the superuser `postgres` (trust authentication).
    pub url: String,
    /// The directory holding the data directory, the socket and the log.
    pub dir: PathBuf,
    /// The postmaster's process id.
    pub pid: u32,
    /// Open until this process ends; its end is the watchdog's signal.
    _watchdog: ChildStdin,
}

/// The cluster of this test binary, started on first use; `None` when no
/// PostgreSQL server binaries are installed. Panics (in every test that asks)
/// if binaries exist but the cluster does not start: that is a broken set-up,
/// not a reason to skip.
pub fn shared() -> Option<&'static Cluster> {
    static CLUSTER: OnceLock<Option<Cluster>> = OnceLock::new();
    CLUSTER
        .get_or_init(|| {
            let bindir = find_bindir()?;
            let started = Instant::now();
            match Cluster::start(&bindir) {
                Ok(cluster) => {
                    // Past the test harness's capture (eprintln! is captured).
                    let _ = writeln!(
                        std::io::stderr(),
                        "workflow-postgres tests: throwaway PostgreSQL cluster from {} at {} \
                         (started in {:.2} s)",
                        bindir.display(),
                        cluster.url,
                        started.elapsed().as_secs_f64()
                    );
                    Some(cluster)
                }
                Err(e) => panic!(
                    "could not start a throwaway PostgreSQL cluster with the binaries in {}: {e}",
                    bindir.display()
                ),
            }
        })
        .as_ref()
}

/// Where `initdb` and `postgres` are: `pg_config --bindir`, then `PATH`, then
/// the highest version under `/usr/lib/postgresql/*/bin` (Debian, Ubuntu).
pub fn find_bindir() -> Option<PathBuf> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_server(&dir) {
            return Some(dir);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for entry in std::env::split_paths(&path) {
            let initdb = entry.join("initdb");
            if !initdb.is_file() {
                continue;
            }
            // /usr/local/bin/initdb may be a link into the real bindir.
            if let Some(real) = fs::canonicalize(&initdb)
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
            {
                if has_server(&real) {
                    return Some(real);
                }
            }
            if has_server(&entry) {
                return Some(entry);
            }
        }
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let version = name
                .split('.')
                .map(|n| n.parse().ok())
                .collect::<Option<Vec<u32>>>()?;
            let bin = e.path().join("bin");
            has_server(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// The user and group ids to run the server as: the `postgres` user's when
/// this process is root, `None` (ourselves) otherwise.
fn server_ids() -> Result<Option<(u32, u32)>, String> {
    let id = |args: &[&str]| -> Result<u32, String> {
        let out = Command::new("id")
            .args(args)
            .output()
            .map_err(|e| format!("running id: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "id {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|e| format!("id {}: {e}", args.join(" ")))
    };
    if id(&["-u"])? != 0 {
        return Ok(None);
    }
    let uid = id(&["-u", "postgres"])
        .map_err(|e| format!("running as root, and no postgres user to run the server as ({e})"))?;
    Ok(Some((uid, id(&["-g", "postgres"])?)))
}

/// A command run as `ids` (if given) in `dir`.
fn command(program: &Path, ids: Option<(u32, u32)>, dir: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(dir).stdin(Stdio::null());
    if let Some((uid, gid)) = ids {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

/// Stops the server and removes the directory once this process has ended
/// (its stdin, a pipe only the test process holds, reads end-of-file). It
/// ignores the terminal's signals, so a Ctrl-C of the tests does not stop it
/// before it has cleaned up.
const WATCHDOG: &str = r#"
trap '' INT TERM HUP
cat >/dev/null
pid=$(head -n 1 "$1/data/postmaster.pid" 2>/dev/null)
if [ -n "$pid" ] && kill -QUIT "$pid" 2>/dev/null; then
    # Until it has exited (a zombie, "Z", has: its new parent reaps it late).
    for _ in $(seq 1 200); do
        state=$(cut -d ' ' -f 3 "/proc/$pid/stat" 2>/dev/null) || break
        [ "$state" = Z ] && break
        sleep 0.02
    done
fi
rm -rf "$1"
"#;

impl Cluster {
    fn start(bindir: &Path) -> Result<Cluster, String> {
        let ids = server_ids()?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "workflow-pg-test-{}-{nanos:08x}",
            std::process::id()
        ));
        fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let watchdog = Command::new("sh")
            .args(["-c", WATCHDOG, "workflow-pg-watchdog"])
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("starting the clean-up watchdog: {e}"))?
            .stdin
            .take()
            .ok_or("the watchdog has no stdin")?;
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .map_err(|e| format!("handing {} to the postgres user: {e}", dir.display()))?;
        }
        let data = dir.join("data");
        // --no-sync: nothing here has to survive a machine crash.
        let out = command(&bindir.join("initdb"), ids, &dir)
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
            .args(["--no-sync", "--no-instructions"])
            .output()
            .map_err(|e| format!("running initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        // Another process can take the free port before the server binds it:
        // then the server exits, and we try another.
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port()?;
            match start_server(bindir, ids, &dir, port) {
                Ok(pid) => {
                    return Ok(Cluster {
                        url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
                        dir,
                        pid,
                        _watchdog: watchdog,
                    })
                }
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }
}

/// A port of 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16, String> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

/// Starts the server and waits until it accepts connections; its pid.
fn start_server(
    bindir: &Path,
    ids: Option<(u32, u32)>,
    dir: &Path,
    port: u16,
) -> Result<u32, String> {
    let log_path = dir.join(format!("server-{port}.log"));
    let log = fs::File::create(&log_path).map_err(|e| format!("creating the log: {e}"))?;
    let log_err = log.try_clone().map_err(|e| format!("the log: {e}"))?;
    // The cluster is deleted when the tests end, so durability settings
    // only cost time: no fsync, no full-page writes, commits acknowledged
    // before their WAL is flushed. (The tests that reopen a store or kill an
    // engine process keep the server running, so they still see every
    // acknowledged write.) More connections than the default 100, for test
    // binaries whose tests run in parallel, each with pools of its own.
    let mut child: Child = command(&bindir.join("postgres"), ids, dir)
        .arg("-D")
        .arg(dir.join("data"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-k"])
        .arg(dir)
        .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
        .args(["-c", "synchronous_commit=off", "-c", "max_connections=300"])
        .stdout(log)
        .stderr(log_err)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("starting postgres: {e}"))?;
    // pg_ctl's own readiness test: the postmaster writes "ready" on the
    // eighth line of postmaster.pid once it accepts connections.
    let pid_file = dir.join("data").join("postmaster.pid");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = fs::read_to_string(&pid_file) {
            if text.lines().nth(7).is_some_and(|l| l.trim() == "ready") {
                return Ok(child.id());
            }
        }
        let exited = child
            .try_wait()
            .map_err(|e| format!("waiting for postgres: {e}"))?;
        if exited.is_some() || Instant::now() > deadline {
            if exited.is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
            let mut text = String::new();
            let _ = fs::File::open(&log_path).and_then(|mut f| f.read_to_string(&mut text));
            return Err(format!(
                "postgres did not become ready on port {port}: {}",
                text.trim()
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
