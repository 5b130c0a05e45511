//! Crash test of the embedded stores with real processes and `SIGKILL`,
//! shared by `sled_crash.rs` and `redb_crash.rs` (each a thin test file that
//! names its backend through [`CrashBackend`]).
//!
//! [`parent`] runs the test binary again as a child process (`--exact
//! crash_child_process`, with the data directory in
//! `WORKFLOW_<BACKEND>_CRASH_DIR`). The child ([`child`]) opens the store and,
//! from several concurrent tokio tasks, creates runs and drives each through a
//! script of appends (steps created, started, retried, completed; a hook and a
//! wait created; the hook resumed with `resume_hook`; the wait completed, the
//! hook disposed; the run completed), while another task leases and releases
//! due runs. It prints one `ACK` line per event of every acknowledged write,
//! saying exactly what was acknowledged (run, seq, kind, correlation id, and
//! the encoded event or payload).
//!
//! The parent kills the child with `SIGKILL` at a random moment (after a random
//! 30-300 ms, or after a random number of acknowledgements), reopens the
//! directory and checks:
//! - every acknowledged event is in the log at its seq, with the same data;
//! - every run's log is gapless and starts with `run_created`;
//! - the projections agree with the logs: run records (`next_seq`, status,
//!   timestamps), the status index, operations, hooks (live tokens vs
//!   `hook_created`/`hook_disposed`), the queue's timers vs open waits and
//!   retries, and the due index (read raw, through [`CrashBackend::raw_table`]).
//!
//! The next child reuses the directory (so state accumulates over the kills) and
//! first carries on the runs its predecessors left unfinished, whatever was or
//! was not written of their last unacknowledged write.
//!
//! `WORKFLOW_<BACKEND>_CRASH_KILLS` sets the number of kills (default 20).
//!
//! The child's entry point, in a normal test run (the environment variable
//! absent), returns at once and passes trivially.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rand::Rng;
use workflow_store::backend::{OpKind, OpState, QueueEntry};
use workflow_store::{
    codec, CorrelationId, ErrorRecord, Event, EventData, EventKind, HookRecord, HookToken, NewRun,
    Payload, RunId, RunQuery, RunRecord, RunStatus, Store, StoreError, Timestamp,
};

/// A store under test: how to open its directory and read its tables raw.
pub trait CrashBackend: 'static {
    /// The store.
    type Store: Store + Clone;
    /// Its name in the environment variables (`WORKFLOW_<NAME>_CRASH_DIR`).
    const NAME: &'static str;
    /// Opens the store in `dir`.
    fn open(dir: &Path) -> Result<Self::Store, StoreError>;
    /// Every key and value of the table (or tree) `name`, read raw.
    fn raw_table(store: &Self::Store, name: &str) -> BTreeMap<Vec<u8>, Vec<u8>>;
}

/// The child's data directory; its presence makes the child's test work.
fn dir_env<B: CrashBackend>() -> String {
    format!("WORKFLOW_{}_CRASH_DIR", B::NAME.to_uppercase())
}

/// How many times the parent kills a child.
fn kills_env<B: CrashBackend>() -> String {
    format!("WORKFLOW_{}_CRASH_KILLS", B::NAME.to_uppercase())
}
/// The child's test name, for `--exact`.
const CHILD_TEST: &str = "crash_child_process";
/// Concurrent writer tasks in the child.
const WRITERS: usize = 8;

// ---------------------------------------------------------------------------
// The script every run follows. Each write's position is the run's `next_seq`
// before it, so a child can carry on any run from its log length alone.
// ---------------------------------------------------------------------------

fn cid(s: &str) -> CorrelationId {
    CorrelationId::new(s).expect("valid correlation id")
}

fn token_of(run: RunId) -> HookToken {
    HookToken::new(format!("tok-{run}")).expect("valid token")
}

fn payload_of(run: RunId, what: &str) -> Payload {
    Payload::encode(&(what, run.to_string())).expect("encodable payload")
}

enum Action {
    Append(Vec<EventData>),
    Resume(HookToken, Payload),
    Done,
}

fn next_action(run: RunId, next_seq: u64, now: Timestamp) -> Option<Action> {
    let later = now.saturating_add(Duration::from_secs(3600));
    Some(match next_seq {
        1 => Action::Append(vec![EventData::RunStarted]),
        2 => Action::Append(vec![
            EventData::StepCreated {
                step: cid("step:0"),
                name: "fetch".into(),
                input_digest: None,
            },
            EventData::StepStarted {
                step: cid("step:0"),
                attempt: 1,
            },
        ]),
        4 => Action::Append(vec![EventData::StepCompleted {
            step: cid("step:0"),
            result: payload_of(run, "fetched"),
        }]),
        5 => Action::Append(vec![
            EventData::HookCreated {
                hook: cid("hook:1"),
                token: token_of(run),
                metadata: Some(payload_of(run, "meta")),
                webhook: None,
            },
            EventData::WaitCreated {
                wait: cid("wait:2"),
                resume_at: later,
            },
        ]),
        7 => Action::Resume(token_of(run), payload_of(run, "approved")),
        8 => Action::Append(vec![
            EventData::WaitCompleted {
                wait: cid("wait:2"),
            },
            EventData::HookDisposed {
                hook: cid("hook:1"),
            },
        ]),
        10 => Action::Append(vec![
            EventData::StepCreated {
                step: cid("step:3"),
                name: "charge".into(),
                input_digest: None,
            },
            EventData::StepStarted {
                step: cid("step:3"),
                attempt: 1,
            },
            EventData::StepRetrying {
                step: cid("step:3"),
                error: ErrorRecord::new("card declined"),
                retry_at: later,
            },
        ]),
        13 => Action::Append(vec![
            EventData::StepStarted {
                step: cid("step:3"),
                attempt: 2,
            },
            EventData::StepCompleted {
                step: cid("step:3"),
                result: payload_of(run, "charged"),
            },
        ]),
        15 => Action::Append(vec![EventData::RunCompleted {
            output: payload_of(run, "done"),
        }]),
        16 => Action::Done,
        _ => return None,
    })
}

// ---------------------------------------------------------------------------
// The child.
// ---------------------------------------------------------------------------

/// The child process's work (see the module docs), the body of the test
/// `crash_child_process`. Without `WORKFLOW_<BACKEND>_CRASH_DIR` it returns at
/// once, so it passes trivially in a normal test run.
pub fn child<B: CrashBackend>() {
    let Some(dir) = std::env::var_os(dir_env::<B>()) else {
        return;
    };
    // Should the parent die without killing us, do not linger.
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(30));
        std::process::exit(3);
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(child_main::<B>(PathBuf::from(dir)));
}

async fn child_main<B: CrashBackend>(dir: PathBuf) {
    let store = B::open(&dir).expect("child: open the store");
    // Carry on the runs that earlier children left unfinished.
    let mut unfinished = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_runs(RunQuery::default().after(after).limit(500))
            .await
            .expect("child: list runs");
        after = page.last().map(|r| r.id);
        unfinished.extend(
            page.iter()
                .filter(|r| !r.status.is_terminal())
                .map(|r| r.id),
        );
        if page.len() < 500 {
            break;
        }
    }
    // libtest has printed "test crash_child_process ... " without a newline.
    emit(&[String::new(), "READY".to_string()]);

    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        let mine: Vec<RunId> = unfinished
            .iter()
            .copied()
            .skip(w)
            .step_by(WRITERS)
            .collect();
        tasks.push(tokio::spawn(async move {
            for run in mine {
                drive(&store, run).await;
            }
            loop {
                let run = RunId::new();
                let created = store
                    .create_run(NewRun {
                        id: run,
                        workflow: "crash".into(),
                        input: payload_of(run, "input"),
                    })
                    .await
                    .expect("child: create_run");
                let event = Event {
                    seq: 0,
                    at: created.run.created_at,
                    data: EventData::RunCreated {
                        workflow: "crash".into(),
                        input: payload_of(run, "input"),
                        parent: None,
                    },
                };
                emit(&[ack_event(run, &event)]);
                drive(&store, run).await;
            }
        }));
    }
    // Leases are writes too: take and give back whatever is due meanwhile.
    let leaser = store.clone();
    tasks.push(tokio::spawn(async move {
        loop {
            let leases = leaser
                .lease_due(16, Duration::from_millis(50))
                .await
                .expect("child: lease_due");
            for lease in &leases {
                match leaser.release_lease(lease).await {
                    Ok(()) | Err(StoreError::LeaseLost { .. }) => {}
                    Err(e) => panic!("child: release_lease: {e}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }));
    for t in tasks {
        t.await.expect("child task");
    }
}

/// Drives one run to the end of the script, printing every acknowledged write.
async fn drive<S: Store>(store: &S, run: RunId) {
    loop {
        let rec = store
            .get_run(run)
            .await
            .expect("child: get_run")
            .expect("child: the run exists");
        let Some(action) = next_action(run, rec.next_seq, store.now()) else {
            panic!(
                "child: run {run} has {} events, which is no position of the script",
                rec.next_seq
            );
        };
        match action {
            Action::Done => return,
            Action::Append(events) => {
                let appended = store
                    .append(run, events, None)
                    .await
                    .expect("child: append");
                let lines: Vec<String> =
                    appended.events.iter().map(|e| ack_event(run, e)).collect();
                emit(&lines);
            }
            Action::Resume(token, payload) => {
                let resumed = store
                    .resume_hook(&token, payload.clone())
                    .await
                    .expect("child: resume_hook");
                emit(&[format!(
                    "ACK {} {} hook_received {} {}",
                    resumed.run_id,
                    resumed.seq,
                    resumed.hook,
                    hex(payload.as_bytes())
                )]);
            }
        }
    }
}

fn ack_event(run: RunId, event: &Event) -> String {
    let correlation = event
        .data
        .correlation_id()
        .map_or_else(|| "-".to_string(), ToString::to_string);
    let bytes = codec::encode_event(event).expect("encodable event");
    format!(
        "ACK {run} {} {} {correlation} {}",
        event.seq,
        event.kind(),
        hex(&bytes)
    )
}

/// Writes the lines of one acknowledged write in one go.
fn emit(lines: &[String]) {
    let mut text = String::new();
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .expect("child: write to the parent");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd hex length in {s:?}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

// ---------------------------------------------------------------------------
// The parent.
// ---------------------------------------------------------------------------

/// What one `ACK` line promised.
#[derive(Debug, Clone, PartialEq)]
enum Acked {
    /// This exact event (as returned by `create_run`/`append`).
    Event(Event),
    /// A `hook_received` of `hook` with `payload` (as returned by `resume_hook`).
    Received {
        hook: CorrelationId,
        payload: Payload,
    },
}

fn parse_ack(line: &str) -> Option<((RunId, u64), Acked)> {
    let mut f = line.split(' ');
    if f.next()? != "ACK" {
        return None;
    }
    let run = RunId::from_str(f.next()?).expect("run id in ACK");
    let seq: u64 = f.next()?.parse().expect("seq in ACK");
    let kind = f.next()?;
    let correlation = f.next()?;
    let data = unhex(f.next()?);
    let acked = if kind == "hook_received" && correlation != "-" {
        Acked::Received {
            hook: cid(correlation),
            payload: Payload::from(data),
        }
    } else {
        let event = codec::decode_event(&data).expect("event in ACK");
        assert_eq!(event.seq, seq, "ACK line disagrees with itself: {line}");
        assert_eq!(
            event.kind().as_str(),
            kind,
            "ACK line disagrees with itself: {line}"
        );
        Acked::Event(event)
    };
    Some(((run, seq), acked))
}

fn kill_count<B: CrashBackend>() -> usize {
    std::env::var(kills_env::<B>())
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
}

/// How the parent picks the moment to kill.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// This long after the child said it was ready.
    Delay(Duration),
    /// After this many acknowledged events (or 2 s, whichever comes first).
    Acks(usize),
}

/// The parent (see the module docs), the body of the test
/// `acknowledged_writes_survive_sigkill`.
pub fn parent<B: CrashBackend>() {
    if std::env::var_os(dir_env::<B>()).is_some() {
        return; // We are a child that was asked to run everything: do not recurse.
    }
    let kills = kill_count::<B>();
    let scratch = tempfile::tempdir().expect("temporary directory");
    let dir = scratch.path().join("data");
    let exe = std::env::current_exe().expect("path of this test binary");
    let mut rng = rand::thread_rng();
    let mut acked: BTreeMap<(RunId, u64), Acked> = BTreeMap::new();
    let started = Instant::now();

    for round in 0..kills {
        let plan = if rng.gen_bool(0.5) {
            KillAt::Delay(Duration::from_millis(rng.gen_range(30..=300)))
        } else {
            KillAt::Acks(rng.gen_range(1..=400))
        };
        let lines = run_and_kill::<B>(&exe, &dir, plan);
        let mut new_acks = 0;
        for line in &lines {
            if let Some((key, ack)) = parse_ack(line) {
                if let Some(previous) = acked.insert(key, ack.clone()) {
                    assert_eq!(
                        previous, ack,
                        "seq {} of run {} was acknowledged twice with different data",
                        key.1, key.0
                    );
                }
                new_acks += 1;
            }
        }
        let stats = verify::<B>(&dir, &acked);
        eprintln!(
            "round {round}: killed at {plan:?}; {new_acks} new acks; store has {} runs ({} ended), {} events",
            stats.runs, stats.ended, stats.events
        );
    }
    assert!(
        !acked.is_empty(),
        "the children acknowledged nothing: the test tested nothing"
    );
    eprintln!(
        "{}: {kills} kills, {} acknowledged events checked, in {:.1} s",
        B::NAME,
        acked.len(),
        started.elapsed().as_secs_f64()
    );
}

/// Starts a child on `dir`, kills it as `plan` says, and returns every complete
/// line it printed.
fn run_and_kill<B: CrashBackend>(exe: &Path, dir: &Path, plan: KillAt) -> Vec<String> {
    let mut child = Command::new(exe)
        .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads", "1"])
        .env(dir_env::<B>(), dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the child process");
    let stdout = child.stdout.take().expect("child stdout");
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                // A line cut off by the kill has no newline: it was not printed whole.
                Ok(_) if line.ends_with('\n') => {
                    line.pop();
                    if tx.send(line).is_err() {
                        return;
                    }
                }
                Ok(_) => return,
            }
        }
    });

    let mut lines = Vec::new();
    let ready_by = Instant::now() + Duration::from_secs(30);
    loop {
        let left = ready_by.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let ready = line == "READY";
                lines.push(line);
                if ready {
                    break;
                }
            }
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                let tail = &lines[lines.len().saturating_sub(5)..];
                panic!("the child never became ready ({status:?}); it printed, last: {tail:?}");
            }
        }
    }
    let ready_at = Instant::now();
    match plan {
        KillAt::Delay(d) => {
            let until = ready_at + d;
            while let Some(left) = until.checked_duration_since(Instant::now()) {
                match rx.recv_timeout(left) {
                    Ok(line) => lines.push(line),
                    Err(mpsc::RecvTimeoutError::Timeout) => break,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
        }
        KillAt::Acks(n) => {
            let until = ready_at + Duration::from_secs(2);
            let mut seen = 0;
            while seen < n {
                let Some(left) = until.checked_duration_since(Instant::now()) else {
                    break;
                };
                match rx.recv_timeout(left) {
                    Ok(line) => {
                        seen += usize::from(line.starts_with("ACK "));
                        lines.push(line);
                    }
                    Err(_) => break,
                }
            }
        }
    }
    if let Some(status) = child.try_wait().expect("poll the child") {
        panic!("the child ended by itself before it was killed: {status}; see its stderr above");
    }
    child.kill().expect("SIGKILL the child");
    let status = child.wait().expect("reap the child");
    assert!(!status.success(), "a killed child cannot have succeeded");
    reader.join().expect("stdout reader");
    // Lines still in the pipe were printed before the kill: acknowledged too.
    lines.extend(rx.try_iter());
    lines
}

#[derive(Debug, Default)]
struct Stats {
    runs: usize,
    ended: usize,
    events: usize,
}

/// What a run's log says its projections must be.
#[derive(Debug, Default)]
struct Derived {
    status: Option<RunStatus>,
    /// (hook, token, created_at, live), in creation order.
    hooks: Vec<(CorrelationId, HookToken, Timestamp, bool)>,
    ops: BTreeMap<CorrelationId, OpState>,
    timers: BTreeMap<CorrelationId, Timestamp>,
}

fn derive(run: RunId, log: &[Event]) -> Derived {
    let mut d = Derived::default();
    for (i, e) in log.iter().enumerate() {
        assert_eq!(
            e.seq, i as u64,
            "run {run}: the log has a gap or is out of order at {i}"
        );
        assert_eq!(
            i == 0,
            e.kind() == EventKind::RunCreated,
            "run {run}: run_created must be exactly the first event"
        );
        if i > 0 {
            assert!(
                log[i - 1].at <= e.at,
                "run {run}: timestamps go backwards at {i}"
            );
        }
        let op = |kind, closed| OpState { kind, closed };
        match &e.data {
            EventData::RunCreated { .. } => d.status = Some(RunStatus::Pending),
            EventData::RunStarted => d.status = Some(RunStatus::Running),
            EventData::RunCompleted { .. } => d.status = Some(RunStatus::Completed),
            EventData::RunFailed { .. } => d.status = Some(RunStatus::Failed),
            EventData::RunCancelled => d.status = Some(RunStatus::Cancelled),
            EventData::RunBlocked { .. } => d.status = Some(RunStatus::Blocked),
            EventData::StepCreated { step, .. } => {
                d.ops.insert(step.clone(), op(OpKind::Step, false));
            }
            EventData::StepStarted { step, .. } => {
                d.timers.remove(step);
            }
            EventData::StepRetrying { step, retry_at, .. } => {
                d.timers.insert(step.clone(), *retry_at);
            }
            EventData::StepCompleted { step, .. } | EventData::StepFailed { step, .. } => {
                d.timers.remove(step);
                d.ops.insert(step.clone(), op(OpKind::Step, true));
            }
            EventData::HookCreated { hook, token, .. } => {
                d.ops.insert(hook.clone(), op(OpKind::Hook, false));
                d.hooks.push((hook.clone(), token.clone(), e.at, true));
            }
            EventData::HookConflict { hook, .. } => {
                d.ops.insert(hook.clone(), op(OpKind::Hook, true));
            }
            EventData::HookDisposed { hook } => {
                d.ops.insert(hook.clone(), op(OpKind::Hook, true));
                for h in d.hooks.iter_mut().filter(|h| &h.0 == hook) {
                    h.3 = false;
                }
            }
            EventData::WaitCreated { wait, resume_at } => {
                d.ops.insert(wait.clone(), op(OpKind::Wait, false));
                d.timers.insert(wait.clone(), *resume_at);
            }
            EventData::WaitCompleted { wait } => {
                d.ops.insert(wait.clone(), op(OpKind::Wait, true));
                d.timers.remove(wait);
            }
            _ => {}
        }
        if e.kind().is_run_terminal() {
            for h in &mut d.hooks {
                h.3 = false;
            }
            d.timers.clear();
        }
    }
    d
}

/// Reopens `dir` and checks everything described in the file docs.
fn verify<B: CrashBackend>(dir: &Path, acked: &BTreeMap<(RunId, u64), Acked>) -> Stats {
    let store = B::open(dir).expect("reopen the store after the kill");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let mut runs: Vec<RunRecord> = Vec::new();
        loop {
            let page = store
                .list_runs(
                    RunQuery::default()
                        .after(runs.last().map(|r| r.id))
                        .limit(1000),
                )
                .await
                .expect("list_runs");
            let done = page.len() < 1000;
            runs.extend(page);
            if done {
                break;
            }
        }
        let mut stats = Stats {
            runs: runs.len(),
            ..Stats::default()
        };
        let queue = B::raw_table(&store, "queue");
        let ops = B::raw_table(&store, "ops");
        let mut logs = BTreeMap::new();
        let mut live_tokens = BTreeMap::new();
        let mut want_status_keys = BTreeSet::new();
        let mut want_workflow_keys = BTreeSet::new();
        let mut want_due_keys = BTreeSet::new();
        let mut want_ops = BTreeMap::new();

        for rec in &runs {
            let run = rec.id;
            let log = store.read_log(run).await.expect("read_log");
            let d = derive(run, &log);
            stats.events += log.len();
            stats.ended += usize::from(rec.status.is_terminal());
            // The run record agrees with its log.
            assert_eq!(
                rec.next_seq,
                log.len() as u64,
                "run {run}: next_seq vs log length"
            );
            assert_eq!(Some(rec.status), d.status, "run {run}: status vs log");
            assert_eq!(rec.created_at, log[0].at, "run {run}: created_at");
            assert_eq!(
                rec.updated_at,
                log[log.len() - 1].at,
                "run {run}: updated_at"
            );
            want_status_keys.insert(status_key(rec.status, run));
            want_workflow_keys.insert(workflow_key(&rec.workflow, None, run));
            want_workflow_keys.insert(workflow_key(&rec.workflow, Some(rec.status), run));

            // Hooks agree with hook_created / hook_disposed / the run's end.
            let hooks: Vec<HookRecord> = store.list_hooks(run).await.expect("list_hooks");
            let got: Vec<_> = hooks
                .iter()
                .map(|h| (h.hook.clone(), h.token.clone(), h.created_at, h.live))
                .collect();
            assert_eq!(got, d.hooks, "run {run}: hooks vs log");
            for (hook, token, _, live) in &d.hooks {
                let found = store.get_hook(token).await.expect("get_hook");
                if *live {
                    let found = found.unwrap_or_else(|| {
                        panic!("run {run}: live hook {hook} not found by token")
                    });
                    assert_eq!((found.run_id, &found.hook), (run, hook));
                    live_tokens.insert(token.as_str().as_bytes().to_vec(), (run, hook.clone()));
                } else {
                    assert!(
                        found.is_none(),
                        "run {run}: released hook {hook} still found by token"
                    );
                }
            }

            // Operation states agree with the log.
            for (id, state) in &d.ops {
                want_ops.insert(op_key(run, id), *state);
            }

            // Queue timers agree with open waits and pending retries.
            let entry: Option<QueueEntry> = queue
                .get(&run.to_bytes()[..])
                .map(|b| codec::decode_record(b).expect("queue entry decodes"));
            if rec.status.is_terminal() {
                assert!(
                    entry.is_none(),
                    "run {run} ended but is still queued: {entry:?}"
                );
            }
            let timers = entry.as_ref().map(|e| e.timers.clone()).unwrap_or_default();
            assert_eq!(
                timers, d.timers,
                "run {run}: queue timers vs open waits/retries"
            );
            if let Some(at) = entry.as_ref().and_then(QueueEntry::effective_due) {
                want_due_keys.insert(due_key(at, run));
            }
            logs.insert(run, log);
        }

        // Every queue entry belongs to a run.
        for key in queue.keys() {
            let run = RunId::from_bytes(key.as_slice().try_into().expect("16-byte queue key"));
            assert!(logs.contains_key(&run), "queue entry for unknown run {run}");
        }
        // Indexes agree with what they index.
        let status_keys: BTreeSet<_> = B::raw_table(&store, "status").into_keys().collect();
        assert_eq!(status_keys, want_status_keys, "status index vs run records");
        let workflow_keys: BTreeSet<_> = B::raw_table(&store, "workflows").into_keys().collect();
        assert_eq!(
            workflow_keys, want_workflow_keys,
            "workflow index vs run records"
        );
        let due_keys: BTreeSet<_> = B::raw_table(&store, "due").into_keys().collect();
        assert_eq!(due_keys, want_due_keys, "due index vs queue entries");
        let tokens: BTreeMap<Vec<u8>, (RunId, CorrelationId)> = B::raw_table(&store, "tokens")
            .into_iter()
            .map(|(k, v)| {
                let owner: workflow_store::backend::TokenOwner =
                    codec::decode_record(&v).expect("token owner decodes");
                (k, (owner.run_id, owner.hook))
            })
            .collect();
        assert_eq!(tokens, live_tokens, "token index vs live hooks in the logs");
        let got_ops: BTreeMap<Vec<u8>, OpState> = ops
            .into_iter()
            .map(|(k, v)| (k, codec::decode_record(&v).expect("op state decodes")))
            .collect();
        assert_eq!(got_ops, want_ops, "operation states vs logs");

        // Every acknowledged write is there, exactly as acknowledged.
        for ((run, seq), ack) in acked {
            let log = logs
                .get(run)
                .unwrap_or_else(|| panic!("acknowledged run {run} is gone after the crash"));
            let event = log.get(*seq as usize).unwrap_or_else(|| {
                panic!(
                    "acknowledged event {seq} of run {run} is gone after the crash (log has {})",
                    log.len()
                )
            });
            match ack {
                Acked::Event(want) => assert_eq!(event, want, "run {run} seq {seq} changed"),
                Acked::Received { hook, payload } => assert_eq!(
                    &event.data,
                    &EventData::HookReceived {
                        hook: hook.clone(),
                        payload: payload.clone(),
                    },
                    "run {run} seq {seq} changed"
                ),
            }
        }
        stats
    })
}

fn status_key(status: RunStatus, run: RunId) -> Vec<u8> {
    let mut key = vec![status.code()];
    key.extend_from_slice(&run.to_bytes());
    key
}

/// A key of the workflow index: a family byte (0: by workflow, 1: by
/// workflow and status), the name with its length, the status, the run.
fn workflow_key(workflow: &str, status: Option<RunStatus>, run: RunId) -> Vec<u8> {
    let mut key = vec![u8::from(status.is_some())];
    let len = u16::try_from(workflow.len()).expect("a short workflow name");
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(workflow.as_bytes());
    if let Some(s) = status {
        key.push(s.code());
    }
    key.extend_from_slice(&run.to_bytes());
    key
}

fn due_key(at: Timestamp, run: RunId) -> Vec<u8> {
    let mut key = at.as_millis().to_be_bytes().to_vec();
    key.extend_from_slice(&run.to_bytes());
    key
}

fn op_key(run: RunId, id: &CorrelationId) -> Vec<u8> {
    let mut key = run.to_bytes().to_vec();
    key.extend_from_slice(id.as_str().as_bytes());
    key
}
