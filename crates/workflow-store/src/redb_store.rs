//! `RedbStore`: the embedded, durable [`Store`], on [redb](https://docs.rs/redb/4).
//!
//! # Data layout
//!
//! The store lives in a directory holding one redb database file,
//! `<dir>/workflow.redb` ([`RedbConfig::file`]), so that the same `--data DIR`
//! works for every embedded backend. Its tables are those of `SledStore`'s
//! trees, byte strings to byte strings: numbers in keys are big-endian (redb's
//! byte order is then numeric order), run ids are the 16 big-endian bytes of
//! the ULID ([`RunId::to_bytes`]), and every value is a record in the
//! versioned envelope of [`crate::codec`].
//!
//! | table       | key                              | value                       |
//! |-------------|----------------------------------|-----------------------------|
//! | `runs`      | run id                           | `RunRecord`                 |
//! | `events`    | run id ++ seq (u64)              | `Event` ([`crate::codec::encode_event`]) |
//! | `ops`       | run id ++ correlation id (UTF-8) | `OpState`                   |
//! | `tokens`    | token (UTF-8)                    | `TokenOwner` (live hooks only) |
//! | `run_hooks` | run id                           | `Vec<HookRecord>`           |
//! | `queue`     | run id                           | `QueueEntry`                |
//! | `due`       | effective due ms (u64) ++ run id | empty: index of `queue`     |
//! | `status`    | status code (u8) ++ run id       | empty: index of `runs`      |
//! | `workflows` | 0 ++ name ++ run id; 1 ++ name ++ status code ++ run id | empty: indexes of `runs` by workflow (and status) |
//! | `meta`      | `layout_version`                 | the layout version          |
//!
//! (`name` is the workflow name's length as a big-endian u16, then its bytes.)
//!
//! A database whose layout version is newer than this build's is refused with
//! [`StoreError::Codec`]`(`[`CodecError::UnsupportedVersion`]`)`. A record that
//! does not decode is [`StoreError::Corrupt`] naming the record; it affects
//! only the operations that read that record, so the other runs stay readable.
//!
//! # Durability: what is on disk when a write is acknowledged
//!
//! Every write (`create_run`, `append`, `resume_hook`, `resume_webhook`,
//! `wake`, and the lease operations) runs the shared rules of [`crate::backend`]
//! inside a redb write transaction and writes the events, their projections
//! and both indexes in it, all or nothing. The transaction's writes (tables,
//! keys, new values) are then appended to a **write-ahead log**, the file
//! `wal` in the store's directory, which is `fdatasync`ed; only then is the
//! transaction committed, with [`redb::Durability::None`] (no sync of the
//! database's pages). **A write is acknowledged (its future resolves `Ok`)
//! only after its log record is synced and its transaction committed**, and
//! its change notifications are published only after that too. So an
//! acknowledged write survives a crash of the process and of the machine (as
//! far as the disk honours `fsync`).
//!
//! A durable write thus costs one append and one `fdatasync` of a small
//! file, not a sync of the B-tree pages the transaction touched (measured: a
//! step's write went from about 2.3x to 1.4x an append + `fdatasync` of 128
//! bytes, `cargo bench -p workflow-http --bench peers`). The database is made
//! durable by a *checkpoint*: a commit with [`redb::Durability::Immediate`],
//! after which the log is emptied. The writer makes one when the log passes
//! 32 MiB or 4,096 batches, and when the store is closed. Each batch also
//! records its log position (`wal_lsn` in the `meta` table); opening the
//! store replays, onto redb's last durable commit, the records of the log
//! above the position that commit holds, and checkpoints. A record is whole
//! or ignored (a length and a CRC-32 guard it), and replaying one is
//! idempotent (it holds new values). `wal.rs` has the format and the rules
//! for a failing log (after a failed `fdatasync` it refuses writes until the
//! store is reopened).
//!
//! A write that was not acknowledged when the crash came (its future was
//! pending or dropped; dropping it does not cancel a queued write) may or may
//! not be there, but entirely or not at all: each batch is one log record,
//! replayed whole or not at all, so each run's log stays gapless and its
//! projections agree with it. `tests/redb_crash.rs` checks exactly this by
//! killing a writing process with `SIGKILL` again and again and reopening its
//! directory.
//!
//! # Readers see only acknowledged writes
//!
//! Each read runs in its own redb read transaction: a snapshot of the last
//! commit. A transaction is committed only after its log record is synced,
//! so no read can return a write a crash could still lose, and a read that
//! combines tables (a run through the status index, a hook through its
//! token) sees them as of one commit. Readers never wait for writers (MVCC),
//! nor writers for readers. (One exception: a lease renewal is not synced,
//! see "Leases" below, and is visible at once; only the store's own lease
//! rules read it.)
//!
//! # Group commit
//!
//! All writes go through one writer thread per store (`group_commit.rs`). A
//! writer queues its write and waits for the answer without holding a thread.
//! The writer thread takes every queued write, runs them in order in one write
//! transaction (each sees the writes before it; one whose rules fail writes
//! nothing and gets its own error, the others go on), logs and syncs them in
//! one record, commits once, publishes the notifications, and answers each
//! writer. A lone writer pays one `fdatasync` per write; concurrent writers
//! share it. `lease_due`
//! queues one write per due run, together, so they share a commit.
//!
//! # Leases
//!
//! A database is opened by one process, so a lease never keeps another
//! process out. Taking and releasing a lease are still durable writes, for
//! the reasons given in the `SledStore` docs (the lease is the only durable
//! trace that a run was being driven, which makes the lost attempts of a
//! crash countable; a lost release would make the next lease look like a
//! takeover). A renewal only moves the expiry, which no other process reads:
//! a batch of renewals only is logged without `fdatasync`, and the next
//! durable write's sync persists it. Such a renewal is
//! visible to readers before it is durable; nothing but the queue's lease
//! changes, which only the store's own rules read.
//!
//! If redb or the log fails while committing a batch (an I/O error), every
//! write of that batch is [`StoreError::Backend`] and none of it is recorded
//! (its log record is taken back); redb then refuses further writes until the
//! store is reopened.
//!
//! # Damaged files and redb's failures
//!
//! A damaged file is input from outside: the store answers it with typed
//! errors, never with a panic.
//!
//! - **A record that does not decode** is [`StoreError::Corrupt`] naming the
//!   record; only the operations that read it fail.
//! - **Damage redb detects** (a page that fails its checksum, a damaged
//!   header; redb checks on opening after a crash, and on every open with
//!   [`RedbConfig::check_integrity_on_open`]) is [`StoreError::Damaged`]
//!   naming the database file and the table and key being read. Every other
//!   redb error is [`StoreError::Backend`] with redb's own message (and the
//!   file) in it, and the redb error as its source.
//! - **redb panics** on some damage it does not detect (its docs say a plain
//!   open of an altered file may panic). Every call the store makes into redb
//!   runs under [`std::panic::catch_unwind`]: opening, every read, and every
//!   commit on the writer thread. The panic becomes [`StoreError::Damaged`]
//!   carrying redb's panic message; for a commit, every write of the batch
//!   fails and none is recorded (redb abandons a write transaction dropped
//!   while unwinding and stays usable). The panic still reaches the process's
//!   panic hook first (printed to stderr by default). Built with
//!   `panic = "abort"`, nothing can be caught.
//!
//! # Threads
//!
//! redb's calls block on the disk, so reads run on tokio's blocking pool
//! ([`tokio::task::spawn_blocking`]) and writes on the store's writer thread,
//! never on the async executor. Used outside a tokio runtime, reads run on the
//! calling thread. Dropping the last handle of a store lets the writer thread
//! commit what is queued, waits for it, and closes the file.
//!
//! # One process per database
//!
//! redb locks the file: opening a directory whose database is open elsewhere
//! (in another process, or another `RedbStore` in this one) waits
//! [`RedbConfig::lock_wait`] and then fails with [`StoreError::Locked`].

mod damage;
mod group_commit;
mod layout;
mod reads;
mod transaction;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redb::{ReadableTable, TableHandle};
use tokio::sync::broadcast;

use self::damage::redb_error;
use self::group_commit::Writer;
use self::transaction::WriteOp;
use crate::apply;
use crate::clock::{Clock, SystemClock};
use crate::codec::{self, CodecError};
use crate::error::StoreError;
use crate::event::{Event, EventData, Payload, Timestamp, WebhookResponse};
use crate::id::{HookToken, LeaseId, RunId};
use crate::memory::CHANGE_FEED_CAPACITY;
use crate::record::{
    Appended, Change, CreatedRun, HookRecord, Lease, NewRun, PurgeQuery, Purged, Resumed, RunQuery,
    RunRecord,
};
use crate::store::{purge_candidates, Store};
use crate::stream::{ChunkKey, ChunkWriter, RunStreams, StreamWrite};
use crate::wal::Wal;

/// The name of the database file in the store's directory.
const DATABASE_FILE: &str = RedbConfig::FILE_NAME;

/// Default for [`RedbConfig::cache_size`]: 256 MiB.
const DEFAULT_CACHE_SIZE: usize = 256 * 1024 * 1024;

/// How to open a [`RedbStore`]: the directory, and options with defaults.
///
/// ```no_run
/// use std::sync::Arc;
/// use workflow_store::{RedbConfig, RedbStore, SystemClock};
/// let store = RedbStore::open_with(
///     RedbConfig::new("./workflow-data")
///         .clock(Arc::new(SystemClock))
///         .cache_size(64 * 1024 * 1024),
/// )?;
/// # Ok::<(), workflow_store::StoreError>(())
/// ```
#[derive(Clone, Debug)]
pub struct RedbConfig {
    dir: PathBuf,
    clock: Arc<dyn Clock>,
    cache_size: usize,
    lock_wait: Duration,
    check_integrity_on_open: bool,
}

impl RedbConfig {
    /// The name of the database file in the store's directory.
    pub const FILE_NAME: &'static str = "workflow.redb";

    /// Options for the store in directory `dir` (created if missing, holding
    /// the database file `workflow.redb`), on the system clock, with a
    /// 256 MiB cache.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        RedbConfig {
            dir: dir.into(),
            clock: Arc::new(SystemClock),
            cache_size: DEFAULT_CACHE_SIZE,
            lock_wait: Duration::from_secs(1),
            check_integrity_on_open: false,
        }
    }

    /// Where timestamps and due times come from (tests use a
    /// [`crate::ManualClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The most memory, in bytes, redb's page cache may use (default 256 MiB).
    pub fn cache_size(mut self, bytes: usize) -> Self {
        self.cache_size = bytes;
        self
    }

    /// How long opening waits for the database file's lock (default 1 s)
    /// before it reports [`StoreError::Locked`]. A store dropped a moment ago
    /// on another thread of this process may still be closing; another
    /// process holding the file is reported once this has passed.
    pub fn lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = wait;
        self
    }

    /// Whether opening verifies the checksum of every page (default `false`:
    /// redb checks only after a crash). Opening then reads the whole file,
    /// and a file altered behind redb's back is [`StoreError::Damaged`] at
    /// once instead of when the damaged part is read.
    pub fn check_integrity_on_open(mut self, check: bool) -> Self {
        self.check_integrity_on_open = check;
        self
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The database file: `workflow.redb` in the directory.
    pub fn file(&self) -> PathBuf {
        self.dir.join(DATABASE_FILE)
    }
}

/// A durable [`Store`] in one redb database file. Cloning is cheap and shares
/// the database.
///
/// # Guarantees
///
/// - Each write (`create_run`, `append`, `resume_hook`, `wake`, the lease
///   operations) is applied in one redb write transaction: the events, their
///   projections and the indexes, all or nothing.
/// - **Commit point:** a write's future resolves `Ok` only after redb has
///   committed it with [`redb::Durability::Immediate`] (`fsync`ed); change
///   notifications are published after that too. Concurrent writers share
///   commits (one writer thread, group commit).
/// - **Visibility:** reads run in redb read transactions and return only
///   committed, hence durable, writes (lease renewals aside, see "Leases" in
///   the module docs); they never wait for writers.
/// - **After a crash** of the process or the machine nothing acknowledged is
///   lost; an unacknowledged write is there entirely or not at all.
/// - A record that fails to decode is [`StoreError::Corrupt`] for the
///   operations that read it; other runs stay readable. Damage redb detects,
///   and redb's panics (caught), are [`StoreError::Damaged`].
/// - One process per database: a directory in use elsewhere is
///   [`StoreError::Locked`]. A database written by a newer release with an
///   unknown layout is refused with [`StoreError::Codec`].
///
/// ```no_run
/// use workflow_store::{NewRun, Payload, RedbStore, RunId, Store};
/// # async fn demo() -> Result<(), workflow_store::StoreError> {
/// let store = RedbStore::open("./workflow-data")?;
/// let id = RunId::new();
/// let input = Payload::encode(&42)?;
/// store.create_run(NewRun { id, workflow: "answer".into(), input }).await?;
/// // Acknowledged, hence committed durably: it survives a crash from here on.
/// assert_eq!(store.read_log(id).await?.len(), 1);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedbStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Commits writes; dropped (and joined) before the database closes.
    writer: Writer,
    db: Arc<redb::Database>,
    dir: PathBuf,
    file: PathBuf,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStore")
            .field("file", &self.inner.file)
            .field("clock", &self.inner.clock)
            .field("writes", &self.inner.writer.stats().jobs())
            .field("commits", &self.inner.writer.stats().batches())
            .finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens (or creates) the store in directory `dir` with default options.
    ///
    /// Fails with [`StoreError::Locked`] if the database is in use by another
    /// process (or store), with [`StoreError::Codec`] if it was written by a
    /// newer release with a layout this build does not know, and with
    /// [`StoreError::Damaged`] if redb finds the file damaged (or panics on
    /// it). Errors from redb carry redb's message and the file.
    pub fn open(dir: impl AsRef<Path>) -> Result<RedbStore, StoreError> {
        Self::open_with(RedbConfig::new(dir.as_ref()))
    }

    /// Opens (or creates) the store described by `config`; errors as
    /// [`RedbStore::open`].
    pub fn open_with(config: RedbConfig) -> Result<RedbStore, StoreError> {
        let file = config.file();
        let RedbConfig {
            dir,
            clock,
            cache_size,
            lock_wait,
            check_integrity_on_open,
        } = config;
        std::fs::create_dir_all(&dir).map_err(|e| {
            StoreError::backend(
                format!("could not create the data directory {}: {e}", dir.display()),
                e,
            )
        })?;
        let db = match damage::guarded(|| {
            open_database(&dir, &file, cache_size, lock_wait, check_integrity_on_open)
        }) {
            Ok(opened) => opened?,
            Err(panic) => {
                tracing::error!(file = %file.display(), %panic, "redb panicked opening the store");
                return Err(damage::panicked(&file, "opening it", None, &panic));
            }
        };
        let wal = match damage::guarded(|| recover(&db, &dir, &file)) {
            Ok(recovered) => recovered?,
            Err(panic) => {
                tracing::error!(file = %file.display(), %panic, "redb panicked replaying the write-ahead log");
                return Err(damage::panicked(
                    &file,
                    "replaying its write-ahead log",
                    None,
                    &panic,
                ));
            }
        };
        let db = Arc::new(db);
        let (changes, _) = broadcast::channel(CHANGE_FEED_CAPACITY);
        let writer = Writer::start(Arc::clone(&db), wal, &file, Arc::clone(&clock), changes)?;
        tracing::info!(file = %file.display(), "opened redb workflow store");
        Ok(RedbStore {
            inner: Arc::new(Inner {
                writer,
                db,
                dir,
                file,
                clock,
            }),
        })
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.inner.dir
    }

    /// The database file in the store's directory.
    pub fn file(&self) -> &Path {
        &self.inner.file
    }

    /// The underlying redb database, for inspection and tests (the conformance
    /// suite damages a record through it).
    ///
    /// Tables (byte strings to byte strings, see the layout in the module
    /// docs): `runs`, `events` (run id ++ seq u64 -> `Event`), `ops`,
    /// `tokens`, `run_hooks`, `queue`, `due`, `status` and `meta`; keys hold
    /// numbers big-endian and run ids as [`RunId::to_bytes`], values are
    /// [`crate::codec`] records. Open them with
    /// `redb::TableDefinition::<&[u8], &[u8]>::new(name)`.
    /// Reading is harmless. **Writing through it bypasses the store's rules and
    /// voids its invariants** (gapless logs, projections that agree with them),
    /// and a write transaction opened here holds the store's writes off until
    /// it ends. Calls through it are not guarded: redb may panic in them on a
    /// damaged file.
    pub fn raw_db(&self) -> &redb::Database {
        &self.inner.db
    }

    /// Write transactions run so far and the writes in them, for tests of the
    /// group commit.
    #[cfg(test)]
    fn commit_counts(&self) -> (u64, u64) {
        let stats = self.inner.writer.stats();
        (stats.batches(), stats.jobs())
    }

    /// Write transactions committed without `fsync` so far, for tests.
    #[cfg(test)]
    fn unflushed_commits(&self) -> u64 {
        self.inner.writer.stats().unflushed()
    }

    /// Runs the read `f` (doing `doing`, on `what`) on tokio's blocking pool
    /// (on this thread outside a runtime). A panic inside redb is caught and
    /// becomes [`StoreError::Damaged`].
    async fn read<T: Send + 'static>(
        &self,
        doing: &'static str,
        what: Option<String>,
        f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = Arc::clone(&self.inner);
        let guarded = move || {
            damage::guarded(|| f(&inner)).unwrap_or_else(|panic| {
                tracing::error!(file = %inner.file.display(), doing, %panic, "redb panicked in a read");
                let what = what.as_ref().map(|w| w as &dyn fmt::Display);
                Err(damage::panicked(&inner.file, doing, what, &panic))
            })
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle
                .spawn_blocking(guarded)
                .await
                .map_err(|e| StoreError::backend(format!("a blocking redb read failed: {e}"), e))?,
            Err(_) => guarded(),
        }
    }

    /// One write: committed with whatever other writes are pending (group
    /// commit); its notifications are published by then.
    async fn write<T: Send + 'static>(&self, op: impl WriteOp<T>) -> Result<T, StoreError> {
        let (job, done) = transaction::job(op, true);
        self.inner.writer.submit(vec![job])?;
        done.outcome().await
    }
}

/// Opens the write-ahead log in `dir` and replays into the database what a
/// crash left in it (see `wal.rs`); the log is then empty.
fn recover(db: &redb::Database, dir: &Path, file: &Path) -> Result<Wal, StoreError> {
    let applied = transaction::applied_lsn(db, file)?;
    let (mut wal, records) = Wal::open(dir, applied)?;
    if wal.len() > 0 {
        if !records.is_empty() {
            tracing::info!(
                file = %file.display(),
                batches = records.len(),
                "replaying the write-ahead log"
            );
        }
        transaction::replay(db, file, &records)?;
        wal.reset()?;
    }
    Ok(wal)
}

/// Opens redb's database in `file` (waiting up to `lock_wait` for its lock),
/// creates the store's tables and checks the layout. May panic inside redb:
/// the caller runs it guarded.
fn open_database(
    dir: &Path,
    file: &Path,
    cache_size: usize,
    lock_wait: Duration,
    check_integrity: bool,
) -> Result<redb::Database, StoreError> {
    let mut builder = redb::Builder::new();
    builder
        .set_cache_size(cache_size)
        .set_check_integrity_on_open(check_integrity);
    let started = Instant::now();
    let db = loop {
        match builder.create(file) {
            Ok(db) => break db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) if started.elapsed() < lock_wait => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::Locked {
                    path: dir.to_path_buf(),
                })
            }
            Err(e) => return Err(redb_error(file, "opening the redb database", None, e)),
        }
    };
    prepare(&db, file)?;
    Ok(db)
}

/// Creates the store's tables if missing and checks (or, in a new database,
/// stamps) the layout version, in one commit.
fn prepare(db: &redb::Database, file: &Path) -> Result<(), StoreError> {
    fn failed<'a, E: Into<redb::Error>>(
        file: &'a Path,
        doing: &'static str,
    ) -> impl FnOnce(E) -> StoreError + 'a {
        move |e| redb_error(file, doing, None, e)
    }
    let txn = db.begin_write().map_err(failed(
        file,
        "starting the transaction that prepares the tables",
    ))?;
    for def in layout::ALL {
        txn.open_table(def).map_err(|e| {
            redb_error(
                file,
                "creating the store's tables",
                Some(&format_args!("table {:?}", def.name())),
                e,
            )
        })?;
    }
    {
        let mut meta = txn
            .open_table(layout::META)
            .map_err(failed(file, "opening table \"meta\""))?;
        let found = meta
            .get(layout::LAYOUT_VERSION_KEY)
            .map_err(failed(file, "checking the layout version"))?
            .map(|v| v.value().to_vec());
        match found {
            Some(bytes) => check_layout(&bytes)?,
            None => {
                let stamp = codec::encode_record(&layout::LAYOUT_VERSION)?;
                meta.insert(layout::LAYOUT_VERSION_KEY, stamp.as_slice())
                    .map_err(failed(file, "stamping the layout version"))?;
            }
        }
    }
    txn.commit()
        .map_err(failed(file, "committing the prepared tables"))?;
    Ok(())
}

/// Refuses a layout newer than this build's.
fn check_layout(bytes: &[u8]) -> Result<(), StoreError> {
    let found: u64 = match codec::decode_record(bytes) {
        Ok(found) => found,
        Err(e @ CodecError::UnsupportedVersion { .. }) => return Err(StoreError::Codec(e)),
        Err(source) => {
            return Err(StoreError::Corrupt {
                what: "store layout version",
                key: "meta/layout_version".into(),
                source,
            })
        }
    };
    if found > u64::from(layout::LAYOUT_VERSION) {
        return Err(StoreError::Codec(CodecError::UnsupportedVersion {
            found: u8::try_from(found).unwrap_or(u8::MAX),
            supported: layout::LAYOUT_VERSION,
        }));
    }
    Ok(())
}

#[async_trait]
impl Store for RedbStore {
    async fn create_run(&self, run: NewRun) -> Result<CreatedRun, StoreError> {
        self.write(move |st| apply::create_run(st, &run)).await
    }

    async fn create_run_leased(
        &self,
        run: NewRun,
        ttl: Duration,
    ) -> Result<(CreatedRun, Option<Lease>), StoreError> {
        self.write(move |st| apply::create_run_leased(st, &run, ttl))
            .await
    }

    async fn append(
        &self,
        run: RunId,
        events: Vec<EventData>,
        fence: Option<LeaseId>,
    ) -> Result<Appended, StoreError> {
        self.write(move |st| apply::append(st, run, events, fence))
            .await
    }

    async fn read_events(
        &self,
        run: RunId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.read("reading events", Some(format!("run {run}")), move |inner| {
            inner.read_events(run, from_seq, limit)
        })
        .await
    }

    async fn get_run(&self, run: RunId) -> Result<Option<RunRecord>, StoreError> {
        self.read("reading a run", Some(format!("run {run}")), move |inner| {
            inner.run_record(run)
        })
        .await
    }

    async fn list_runs(&self, query: RunQuery) -> Result<Vec<RunRecord>, StoreError> {
        self.read("listing runs", None, move |inner| inner.list_runs(&query))
            .await
    }

    async fn purge_runs(&self, query: PurgeQuery) -> Result<Purged, StoreError> {
        let (candidates, next) = purge_candidates(self, &query).await?;
        if candidates.is_empty() {
            return Ok(Purged {
                runs: Vec::new(),
                next,
            });
        }
        let runs = self
            .write(move |st| apply::purge(st, &candidates, &query))
            .await?;
        Ok(Purged { runs, next })
    }

    async fn get_hook(&self, token: &HookToken) -> Result<Option<HookRecord>, StoreError> {
        let token = token.clone();
        let what = format!("token {:?}", token.as_str());
        self.read("reading a hook", Some(what), move |inner| {
            inner.get_hook(&token)
        })
        .await
    }

    async fn list_hooks(&self, run: RunId) -> Result<Vec<HookRecord>, StoreError> {
        self.read("listing hooks", Some(format!("run {run}")), move |inner| {
            inner.list_hooks(run)
        })
        .await
    }

    async fn write_stream(
        &self,
        run: RunId,
        writer: &ChunkWriter,
        write: StreamWrite,
        fence: Option<LeaseId>,
    ) -> Result<(), StoreError> {
        let writer = writer.clone();
        self.write(move |st| apply::write_stream(st, run, &writer, write, fence))
            .await
    }

    async fn run_streams(&self, run: RunId) -> Result<Option<RunStreams>, StoreError> {
        self.read(
            "reading streams",
            Some(format!("run {run}")),
            move |inner| inner.run_streams(run),
        )
        .await
    }

    async fn read_chunks(
        &self,
        run: RunId,
        keys: &[ChunkKey],
    ) -> Result<Vec<Option<Payload>>, StoreError> {
        let keys = keys.to_vec();
        self.read(
            "reading stream chunks",
            Some(format!("run {run}")),
            move |inner| inner.chunks(run, &keys),
        )
        .await
    }

    async fn resume_hook(
        &self,
        token: &HookToken,
        payload: Payload,
    ) -> Result<Resumed, StoreError> {
        let token = token.clone();
        self.write(move |st| apply::resume_hook(st, &token, payload))
            .await
    }

    async fn resume_webhook(
        &self,
        token: &HookToken,
        payload: Payload,
    ) -> Result<(Resumed, WebhookResponse), StoreError> {
        let token = token.clone();
        self.write(move |st| apply::resume_webhook(st, &token, payload))
            .await
    }

    async fn wake(&self, run: RunId) -> Result<(), StoreError> {
        self.write(move |st| apply::wake(st, run)).await
    }

    async fn lease_due(&self, limit: usize, ttl: Duration) -> Result<Vec<Lease>, StoreError> {
        let now = self.inner.clock.now();
        let candidates = self
            .read("reading the due index", None, move |inner| {
                inner.due_runs(now, limit)
            })
            .await?;
        // One write per run, queued together: they share a commit. Each lease
        // is decided by the rules in that commit, so a candidate leased or
        // changed meanwhile is simply not leased.
        let (jobs, completions): (Vec<_>, Vec<_>) = candidates
            .iter()
            .map(|&run| transaction::job(move |st| apply::try_lease(st, run, ttl), true))
            .unzip();
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        self.inner.writer.submit(jobs)?;
        let mut leases = Vec::new();
        let mut first_error = None;
        for (run, done) in candidates.into_iter().zip(completions) {
            match done.outcome().await {
                Ok(Some(lease)) => leases.push(lease),
                Ok(None) => {}
                Err(e) => {
                    // One damaged run must not stop the others from being driven.
                    tracing::warn!(%run, error = %e, "could not lease a due run; skipping it");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if leases.is_empty() => Err(e),
            _ => Ok(leases),
        }
    }

    /// Renews without a durable commit of its own: see "Leases" in the
    /// module docs.
    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<Lease, StoreError> {
        let lease = lease.clone();
        let (job, done) = transaction::job(move |st| apply::renew_lease(st, &lease, ttl), false);
        self.inner.writer.submit(vec![job])?;
        done.outcome().await
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        let lease = lease.clone();
        self.write(move |st| apply::release_lease(st, &lease)).await
    }

    async fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        self.read("reading the due index", None, |inner| inner.next_due())
            .await
    }

    fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    fn subscribe(&self) -> Option<broadcast::Receiver<Change>> {
        Some(self.inner.writer.subscribe())
    }
}

#[cfg(test)]
mod tests;
