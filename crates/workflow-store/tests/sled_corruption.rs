//! Damaged sled files give typed errors, never a panic.
//!
//! [`a_flipped_bit_is_a_typed_error_or_lost_writes_never_a_panic`] builds a
//! small `SledStore` (runs with a few events each, some with a hook, one with
//! a payload large enough for a sled blob file; written in two sessions so
//! that sled also keeps a snapshot), closes it, and then, for a fixed number
//! of seeded (deterministic) trials, copies the directory, flips one bit at a
//! seeded offset in one of its files (mostly sled's log `db`; also `conf`, the
//! snapshot and the blob file), opens the copy and reads every run, lists the
//! runs, reads the hooks and the due index, and writes. Each trial runs on
//! its own thread under `catch_unwind` and with a time limit. It checks:
//!
//! - no panic escapes the store and no operation hangs (the failing trial's
//!   seed, file, offset and bit are in the message);
//! - every failure is a typed [`StoreError`]; one from sled (`Damaged`,
//!   `Backend`) names the store's directory;
//! - nothing wrong is returned: a run's log is a prefix of what was written
//!   (a log that ends before its run's record says is a `Corrupt` error),
//!   its record agrees with its log, listed runs and hooks are ones written
//!   (sled's scans of a damaged tree can miss a run that reads: counted in
//!   the summary, not failed);
//! - data that is not damaged still reads: sled drops a damaged log message
//!   and everything logged after it (it takes it for the torn end of the log
//!   after a crash), so what survives must be everything committed before
//!   some point. The runs were written one after the other, so every run
//!   before the first one that is missing or cut short must read in full
//!   (unless reading it is a typed error), and every run after it must be
//!   missing (or a typed error). (A damaged blob file that sled reads while
//!   it recovers cuts the log short in the same way.)
//! - a store that opened also takes writes, or refuses them with a typed
//!   error.
//!
//! sled applies the writes of a transaction in the order of a randomly seeded
//! hash map, so the bytes of the store it builds differ a little from run to
//! run, and with them the outcome of some trials; the file, offset and bit of
//! each trial are fixed by its seed, and the checks hold whatever the outcome.
//! A failing trial keeps the undamaged store and prints its path, so that the
//! failure can be reproduced from it.
//!
//! A control trial without a flipped bit must read everything. The panics that
//! sled raises and the store catches are counted and reported (they are
//! printed by the panic hook only when `WORKFLOW_SLED_CORRUPTION_VERBOSE` is
//! set). `WORKFLOW_SLED_CORRUPTION_TRIALS` and `WORKFLOW_SLED_CORRUPTION_SEED`
//! run more or other trials.

#![cfg(feature = "sled")]

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use workflow_store::{
    CorrelationId, Event, EventData, HookToken, ManualClock, NewRun, Payload, RunId, RunQuery,
    SledConfig, SledStore, Store, StoreError, Timestamp,
};

/// Trials in a normal run (each under 0.1 s).
const TRIALS: u64 = 40;
/// The first trial's seed; trial `n` uses `SEED + n`.
const SEED: u64 = 0x5eed_0000;
/// Runs in the store, written in two sessions of half each.
const RUNS: u64 = 300;
/// A trial that takes longer than this hangs.
const TRIAL_LIMIT: Duration = Duration::from_secs(60);
const T0: Timestamp = Timestamp(1_700_000_000_000);

// ---------------------------------------------------------------------------
// Deterministic randomness: splitmix64.
// ---------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// ---------------------------------------------------------------------------
// The store every trial damages a copy of.
// ---------------------------------------------------------------------------

fn run_id(i: u64) -> RunId {
    RunId::from_u128(0x0100_0000_0000_0000_0000_0000_0000_0000 + u128::from(i))
}

fn token(i: u64) -> HookToken {
    HookToken::new(format!("tok-{i}")).expect("valid token")
}

fn cid(s: &str) -> CorrelationId {
    CorrelationId::new(s).expect("valid correlation id")
}

fn has_hook(i: u64) -> bool {
    i % 4 == 0
}

/// Run 7 carries a payload large enough for sled to put it in a blob file.
const BLOB_RUN: u64 = 7;

fn input(i: u64) -> Payload {
    let len = if i == BLOB_RUN {
        200 * 1024
    } else {
        40 + (i as usize % 9) * 30
    };
    let bytes: Vec<u8> = (0..len).map(|k| (i as usize + k) as u8).collect();
    Payload::encode(&bytes).expect("encodable input")
}

/// What run `i` is made of: its creation and then its appends.
fn appends(i: u64) -> Vec<Vec<EventData>> {
    let mut writes = vec![
        vec![EventData::RunStarted],
        vec![
            EventData::StepCreated {
                step: cid("step:0"),
                name: "fetch".into(),
                input_digest: None,
            },
            EventData::StepStarted {
                step: cid("step:0"),
                attempt: 1,
            },
        ],
        vec![EventData::StepCompleted {
            step: cid("step:0"),
            result: Payload::encode(&format!("result of run {i}")).expect("encodable"),
        }],
    ];
    if has_hook(i) {
        writes.push(vec![EventData::HookCreated {
            hook: cid("hook:1"),
            token: token(i),
            metadata: None,
            webhook: None,
        }]);
    }
    writes
}

/// Writes run `i` whole: created, then its appends, one write after another.
async fn write_run(store: &SledStore, i: u64) {
    let id = run_id(i);
    store
        .create_run(NewRun {
            id,
            workflow: "wf".into(),
            input: input(i),
        })
        .await
        .expect("create run");
    for events in appends(i) {
        store.append(id, events, None).await.expect("append");
    }
}

fn open(dir: &Path) -> Result<SledStore, StoreError> {
    SledStore::open_with(
        SledConfig::new(dir)
            .clock(Arc::new(ManualClock::new(T0)))
            // Building the base store need not survive a power cut, and the
            // background thread only matters without fsync.
            .fsync(false)
            .background_flush(None),
    )
}

/// Builds the store in `dir` and returns each run's log, in write order.
///
/// Two sessions: opening the second one makes sled write a snapshot of the
/// first one's writes (their pages are then read from the log only when
/// needed), while the second session's writes are replayed from the log at
/// every open. A flipped bit thus meets both of sled's ways of reading.
fn build(dir: &Path) -> Vec<(RunId, Vec<Event>)> {
    let rt = runtime();
    let store = open(dir).expect("open the base store");
    rt.block_on(async {
        for i in 0..RUNS / 2 {
            write_run(&store, i).await;
        }
    });
    drop(store);
    let store = open(dir).expect("reopen the base store");
    rt.block_on(async {
        for i in RUNS / 2..RUNS {
            write_run(&store, i).await;
        }
        let mut logs = Vec::new();
        for i in 0..RUNS {
            let id = run_id(i);
            logs.push((id, store.read_log(id).await.expect("read the base store")));
        }
        logs
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// The files of the store, relative to its directory, by kind.
fn files(dir: &Path) -> BTreeMap<&'static str, PathBuf> {
    let mut found = BTreeMap::new();
    found.insert("db", PathBuf::from("db"));
    found.insert("conf", PathBuf::from("conf"));
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("snap.") {
            found.insert("snapshot", PathBuf::from(name));
        }
    }
    if let Some(blob) = std::fs::read_dir(dir.join("blobs"))
        .into_iter()
        .flatten()
        .flatten()
        .next()
    {
        found.insert("blob", Path::new("blobs").join(blob.file_name()));
    }
    found
}

// ---------------------------------------------------------------------------
// Panics that sled raises (and the store catches), counted by a panic hook.
// ---------------------------------------------------------------------------

fn caught_panics() -> &'static Mutex<Vec<String>> {
    static CAUGHT: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    CAUGHT.get_or_init(|| {
        let verbose = std::env::var_os("WORKFLOW_SLED_CORRUPTION_VERBOSE").is_some();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_sled = info
                .location()
                .is_some_and(|l| l.file().contains("sled-0.34"));
            if in_sled {
                let thread = std::thread::current();
                caught_panics()
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(format!("[{}] {info}", thread.name().unwrap_or("unnamed")));
            }
            if !in_sled || verbose {
                previous(info);
            }
        }));
        Mutex::new(Vec::new())
    })
}

// ---------------------------------------------------------------------------
// One trial.
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Flip {
    seed: u64,
    /// `None`: the control trial, nothing flipped.
    at: Option<(&'static str, PathBuf, u64, u8)>,
}

impl std::fmt::Display for Flip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.at {
            None => write!(f, "control trial (nothing flipped)"),
            Some((_, file, offset, bit)) => write!(
                f,
                "trial seed {:#x}: bit {bit} of byte {offset} of {}",
                self.seed,
                file.display()
            ),
        }
    }
}

fn choose(seed: u64, base: &Path) -> Flip {
    let mut rng = Rng(seed);
    let files = files(base);
    let kind = match rng.below(20) {
        0 => "conf",
        1 if files.contains_key("snapshot") => "snapshot",
        2 if files.contains_key("blob") => "blob",
        _ => "db",
    };
    let file = files[kind].clone();
    let len = std::fs::metadata(base.join(&file)).expect("file").len();
    let offset = rng.below(len);
    let bit = rng.below(8) as u8;
    Flip {
        seed,
        at: Some((kind, file, offset, bit)),
    }
}

/// What a trial found, for the summary.
#[derive(Debug, Default)]
struct Outcome {
    open_error: Option<&'static str>,
    full: usize,
    cut_short: usize,
    missing: usize,
    errors: usize,
    writes_refused: bool,
    /// Runs that read but that `list_runs` did not return.
    unlisted: usize,
}

/// How one run read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Read {
    Full,
    CutShort,
    Missing,
    Error,
}

fn kind(e: &StoreError) -> &'static str {
    match e {
        StoreError::Damaged { .. } => "Damaged",
        StoreError::Corrupt { .. } => "Corrupt",
        StoreError::Backend { .. } => "Backend",
        StoreError::Codec(_) => "Codec",
        StoreError::RunNotFound { .. } => "RunNotFound",
        _ => "other",
    }
}

/// A failure that is allowed on a damaged store: typed, and if it comes from
/// sled it names the store's directory.
fn check_error(flip: &Flip, dir: &Path, doing: &str, e: &StoreError) {
    let text = e.to_string();
    match e {
        StoreError::Damaged { .. } | StoreError::Backend { .. } => assert!(
            text.contains(&dir.display().to_string()),
            "{flip}: {doing}: the error does not name the directory: {text}"
        ),
        StoreError::Corrupt { .. } | StoreError::Codec(_) | StoreError::RunNotFound { .. } => {}
        other => panic!("{flip}: {doing}: unexpected error {other:?}"),
    }
}

/// `reads` in short: `Full x6, Error x101, CutShort x1, Missing x92`.
fn runs_of(reads: &[Read]) -> String {
    let mut parts: Vec<(Read, usize)> = Vec::new();
    for read in reads {
        match parts.last_mut() {
            Some((last, n)) if last == read => *n += 1,
            _ => parts.push((*read, 1)),
        }
    }
    parts
        .iter()
        .map(|(read, n)| format!("{read:?} x{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn trial(flip: &Flip, base: &Path, written: &[(RunId, Vec<Event>)]) -> Outcome {
    let copy = tempfile::tempdir().expect("tempdir");
    let dir = copy.path().join("store");
    copy_dir(base, &dir);
    if let Some((_, file, offset, bit)) = &flip.at {
        let path = dir.join(file);
        let mut bytes = std::fs::read(&path).expect("read file");
        bytes[*offset as usize] ^= 1 << bit;
        std::fs::write(&path, bytes).expect("write file");
    }
    let mut outcome = Outcome::default();
    let store = match open(&dir) {
        Ok(store) => store,
        Err(e) => {
            check_error(flip, &dir, "open", &e);
            assert!(
                !matches!(e, StoreError::RunNotFound { .. }),
                "{flip}: open: {e}"
            );
            outcome.open_error = Some(kind(&e));
            return outcome;
        }
    };
    let rt = runtime();
    rt.block_on(async {
        // Every run: its log is a prefix of what was written, its record
        // agrees with it.
        let mut reads = Vec::new();
        for (id, expected) in written {
            let read = match store.read_log(*id).await {
                Ok(log) => {
                    assert!(
                        log.len() <= expected.len() && log[..] == expected[..log.len()],
                        "{flip}: run {id} read a log that was not written: {log:?}"
                    );
                    if let Ok(Some(record)) = store.get_run(*id).await {
                        assert_eq!(
                            record.next_seq,
                            log.len() as u64,
                            "{flip}: run {id}: the record disagrees with the log"
                        );
                    }
                    if log.len() == expected.len() {
                        Read::Full
                    } else {
                        Read::CutShort
                    }
                }
                Err(StoreError::RunNotFound { .. }) => Read::Missing,
                Err(e) => {
                    check_error(flip, &dir, "read_log", &e);
                    Read::Error
                }
            };
            reads.push(read);
        }
        // What survives is everything committed before some point.
        let cut = reads
            .iter()
            .position(|r| matches!(r, Read::CutShort | Read::Missing))
            .unwrap_or(reads.len());
        for (i, read) in reads.iter().enumerate() {
            let ok = if i < cut {
                matches!(read, Read::Full | Read::Error)
            } else if i == cut {
                true
            } else {
                matches!(read, Read::Missing | Read::Error)
            };
            assert!(
                ok,
                "{flip}: run {i} reads {read:?} although run {cut} reads {:?}: not what \
                 was committed up to some point ({})",
                reads[cut],
                runs_of(&reads)
            );
        }
        for read in &reads {
            match read {
                Read::Full => outcome.full += 1,
                Read::CutShort => outcome.cut_short += 1,
                Read::Missing => outcome.missing += 1,
                Read::Error => outcome.errors += 1,
            }
        }

        // Listing: only runs that were written, and every run that read.
        let known: BTreeSet<RunId> = written.iter().map(|(id, _)| *id).collect();
        let mut listed = BTreeSet::new();
        let mut after = None;
        let listing = loop {
            match store
                .list_runs(RunQuery::default().after(after).limit(50))
                .await
            {
                Ok(page) => {
                    after = page.last().map(|r| r.id);
                    let done = page.len() < 50;
                    listed.extend(page.into_iter().map(|r| r.id));
                    if done {
                        break Ok(());
                    }
                }
                Err(e) => break Err(e),
            }
        };
        match listing {
            Ok(()) => {
                assert!(
                    listed.is_subset(&known),
                    "{flip}: list_runs returned runs that were never written"
                );
                // sled's scans can miss keys of a damaged tree that its gets
                // still find: counted, not failed (nothing wrong is returned).
                outcome.unlisted = written
                    .iter()
                    .zip(&reads)
                    .filter(|((id, _), read)| {
                        matches!(read, Read::Full | Read::CutShort) && !listed.contains(id)
                    })
                    .count();
            }
            Err(e) => check_error(flip, &dir, "list_runs", &e),
        }

        // Hooks: a token finds its own run's hook, if any.
        for (i, ((id, _), read)) in written.iter().zip(&reads).enumerate() {
            if !has_hook(i as u64) {
                continue;
            }
            match store.get_hook(&token(i as u64)).await {
                Ok(Some(hook)) => assert_eq!(hook.run_id, *id, "{flip}: a token moved"),
                Ok(None) => assert!(
                    *read != Read::Full,
                    "{flip}: run {id} reads in full but its hook is gone"
                ),
                Err(e) => check_error(flip, &dir, "get_hook", &e),
            }
        }
        if let Err(e) = store.next_due().await {
            check_error(flip, &dir, "next_due", &e);
        }

        // Writes: taken, or refused with a typed error.
        if let Some(i) = reads.iter().position(|r| *r == Read::Full) {
            let id = written[i].0;
            let r = store
                .append(
                    id,
                    vec![EventData::StepCreated {
                        step: cid("step:9"),
                        name: "more".into(),
                        input_digest: None,
                    }],
                    None,
                )
                .await;
            if let Err(e) = r {
                check_error(flip, &dir, "append", &e);
                outcome.writes_refused = true;
            }
        }
        let fresh = run_id(RUNS + 1);
        match store
            .create_run(NewRun {
                id: fresh,
                workflow: "wf".into(),
                input: input(RUNS + 1),
            })
            .await
        {
            Ok(_) => match store.read_log(fresh).await {
                Ok(log) => assert_eq!(log.len(), 1, "{flip}: a new run reads back"),
                Err(e) => check_error(flip, &dir, "read a new run", &e),
            },
            Err(e) => {
                check_error(flip, &dir, "create_run", &e);
                outcome.writes_refused = true;
            }
        }
    });
    drop(store);
    drop(rt);
    outcome
}

/// Runs a trial on its own thread; `Err` says how it failed: a panic that
/// escaped (the store's, or a failed check) or a hang.
fn guarded_trial(
    flip: &Flip,
    base: &Arc<PathBuf>,
    written: &Arc<Vec<(RunId, Vec<Event>)>>,
) -> Result<Outcome, String> {
    let (tx, rx) = mpsc::channel();
    let (base, written, f) = (Arc::clone(base), Arc::clone(written), flip.clone());
    std::thread::Builder::new()
        .name(format!("trial-{:#x}", flip.seed))
        .spawn(move || {
            let result = catch_unwind(AssertUnwindSafe(|| trial(&f, &base, &written)));
            let _ = tx.send(result.map_err(|panic| {
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default()
            }));
        })
        .expect("spawn trial thread");
    match rx.recv_timeout(TRIAL_LIMIT) {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(panic)) => Err(format!("{flip}: a panic escaped: {panic}")),
        Err(_) => Err(format!("{flip}: hung for {TRIAL_LIMIT:?}")),
    }
}

/// Fails the test with `failure`, keeping the base store for reproducing it.
fn fail(base_dir: tempfile::TempDir, failure: String) -> ! {
    let kept = base_dir.keep();
    panic!(
        "{failure}\nThe undamaged store is kept in {}: flip the same bit in a copy of it to \
         reproduce this.",
        kept.join("store").display()
    );
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    let value = value.trim();
    match value.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => value.parse().ok(),
    }
}

#[test]
fn a_flipped_bit_is_a_typed_error_or_lost_writes_never_a_panic() {
    let caught = caught_panics();
    let started = Instant::now();
    let base_dir = tempfile::tempdir().expect("tempdir");
    let base = Arc::new(base_dir.path().join("store"));
    let written = Arc::new(build(&base));
    assert!(
        files(&base).contains_key("blob"),
        "the base store has a blob file"
    );
    let built = started.elapsed();

    let control = match guarded_trial(&Flip { seed: 0, at: None }, &base, &written) {
        Ok(control) => control,
        Err(failure) => fail(base_dir, failure),
    };
    assert_eq!(
        control.full, RUNS as usize,
        "the control trial reads everything"
    );

    let trials = env_u64("WORKFLOW_SLED_CORRUPTION_TRIALS").unwrap_or(TRIALS);
    let seed = env_u64("WORKFLOW_SLED_CORRUPTION_SEED").unwrap_or(SEED);
    let mut summary: BTreeMap<String, usize> = BTreeMap::new();
    for n in 0..trials {
        let flip = choose(seed + n, &base);
        let file = flip.at.as_ref().map_or("-", |(kind, ..)| *kind);
        let outcome = match guarded_trial(&flip, &base, &written) {
            Ok(outcome) => outcome,
            Err(failure) => fail(base_dir, failure),
        };
        let line = match outcome.open_error {
            Some(kind) => format!("{file}: open failed ({kind})"),
            None if outcome.missing + outcome.cut_short + outcome.errors == 0 => {
                format!("{file}: everything reads")
            }
            None => format!(
                "{file}: opened; {} runs lost or cut short, {} read errors{}{}",
                if outcome.missing + outcome.cut_short > 0 {
                    "some"
                } else {
                    "no"
                },
                if outcome.errors > 0 { "some" } else { "no" },
                if outcome.unlisted > 0 {
                    ", runs that read missing from list_runs"
                } else {
                    ""
                },
                if outcome.writes_refused {
                    ", writes refused"
                } else {
                    ""
                }
            ),
        };
        *summary.entry(line).or_default() += 1;
    }
    let caught = caught.lock().unwrap_or_else(|e| e.into_inner()).clone();
    eprintln!(
        "{trials} trials (seed {seed:#x}) in {:?} (building the store: {built:?}):",
        started.elapsed()
    );
    for (line, count) in &summary {
        eprintln!("  {count:3} x {line}");
    }
    eprintln!(
        "sled panicked {} times; the store caught each:",
        caught.len()
    );
    let mut sites: BTreeMap<String, usize> = BTreeMap::new();
    for panic in &caught {
        // `[thread] panicked at file:line:col:\nmessage`
        let (thread, rest) = panic.split_once("] ").unwrap_or(("", panic));
        let thread = if thread.starts_with("[trial-") {
            "the trial's thread"
        } else {
            thread.trim_start_matches('[')
        };
        let at = rest.lines().next().unwrap_or_default();
        let at = at.rsplit_once("sled-0.34.7/").map_or(at, |(_, file)| file);
        let message = rest.lines().nth(1).unwrap_or_default();
        *sites
            .entry(format!("{at} {message} (on {thread})"))
            .or_default() += 1;
    }
    for (site, count) in sites {
        eprintln!("  {count:3} x {site}");
    }
}
