//! `SledStore`: the embedded, durable [`Store`], on [sled](https://docs.rs/sled/0.34.7).
//!
//! # Data layout
//!
//! One sled database (a directory) holds these trees. Numbers in keys are
//! big-endian, so sled's byte order is numeric order; run ids are the 16
//! big-endian bytes of the ULID ([`RunId::to_bytes`]). Every value is a record
//! in the versioned envelope of [`crate::codec`].
//!
//! | tree        | key                              | value                       |
//! |-------------|----------------------------------|-----------------------------|
//! | `runs`      | run id                           | `RunRecord`                 |
//! | `events`    | run id ++ seq (u64)              | `Event` ([`crate::codec::encode_event`]) |
//! | `ops`       | run id ++ correlation id (UTF-8) | `OpState`                   |
//! | `tokens`    | token (UTF-8)                    | `TokenOwner` (live hooks only) |
//! | `run_hooks` | run id                           | `Vec<HookRecord>`           |
//! | `queue`     | run id                           | `QueueEntry`                |
//! | `due`       | effective due ms (u64) ++ run id | empty: index of `queue`     |
//! | `status`    | status code (u8) ++ run id       | empty: index of `runs`      |
//! | `meta`      | `layout_version`                 | the layout version (u8)     |
//!
//! Opening a directory whose layout version is newer than this build's is refused
//! with [`StoreError::Codec`]`(`[`CodecError::UnsupportedVersion`]`)`. A record that
//! does not decode is [`StoreError::Corrupt`] naming the record; it affects only
//! the operations that read that record, so the other runs stay readable.
//!
//! # Writes and the commit point
//!
//! Every write (`create_run`, `append`, `resume_hook`, `wake`, and the lease
//! operations) runs the shared rules of [`crate::backend`] over the trees
//! above (as the writes before it in its batch left them), which give the
//! events, their projections and both indexes as writes (trees, keys, new
//! values). These are appended as one record to the store's **write-ahead
//! log**, the file `wal` in the directory, and (unless [`SledConfig::fsync`]
//! is off) the log is `fdatasync`ed; only then are they applied to sled's
//! trees. **A write is acknowledged (its future resolves `Ok`) only after
//! that**, and only then are its change notifications published. The log
//! record is what makes a write all or nothing: no sled transaction is used
//! (each of those writes sled's own log buffer out, a disk round trip), the
//! group commit's leader is the only writer, and the gate below keeps
//! readers off a batch being applied.
//!
//! sled itself is flushed only at a *checkpoint*: when the log passes 32 MiB
//! or 4,096 batches, and when the store is closed. A checkpoint `fsync`s the
//! blob files sled wrote, flushes sled, `fdatasync`s its data file, and then
//! empties the log. Opening the store replays every record of the log (what
//! a crash left since the last checkpoint) onto the state sled recovered,
//! then checkpoints: each record holds new values, so replaying them all in
//! order onto any prefix of them gives the state after the last. A torn or
//! damaged record at the end of the log (a length and a CRC-32 guard each)
//! was never acknowledged and is cut off; `wal.rs` has the format.
//!
//! A durable write so costs one write and one `fdatasync` of a preallocated
//! file, where a flush of sled costs a `pwrite` and a `sync_file_range` of
//! sled's log and then the `fdatasync` (measured: a step's write went from
//! about 2.3x to 1.3x an append + `fdatasync` of 128 bytes, `cargo bench -p
//! workflow-http --bench peers`).
//!
//! Dropping a write's future does not cancel the write: once queued it is
//! committed, only not acknowledged.
//!
//! # Readers see only acknowledged writes
//!
//! A batch reaches sled's trees only once its log record is synced, one tree
//! write after another; a read in the middle could see part of it (an event
//! without the run record that counts it). So the reads (`read_events`,
//! `get_run`, `list_runs`, `get_hook`, `list_hooks`, `next_due`) pass a gate
//! (`visibility.rs`): the commit publishes what its batch writes (which runs,
//! tokens, whether run records or the due index change) just before it
//! applies the batch to sled, and clears that once the batch's writers are
//! acknowledged. A read waits while the
//! batch in flight touches what it reads, and checks again after reading; if a
//! batch touching it committed meanwhile, it reads again while holding the next
//! batch off (so a busy run cannot starve its readers).
//!
//! The cost: a read of something the batch being applied writes waits for
//! that, a few tree writes; reads of other
//! runs do not wait, and the commit never waits for readers except, for the
//! length of one read, for a reader that was overtaken by a batch. `list_runs`
//! waits whenever the batch in flight changes any run record, `next_due`
//! whenever it changes the due index. The scan that picks `lease_due`'s
//! candidates is not gated: each lease is decided by the rules in a later
//! batch, committed after the earlier one is durable.
//!
//! If logging a batch fails, its writers get an error saying the write is not
//! known to be durable, and nothing of it reaches sled. If sled fails while a
//! logged batch is applied, its writers get an error, and the store refuses
//! further writes until it is reopened (which replays the log).
//!
//! # Group commit
//!
//! Concurrent writers share log records and syncs (see `group_commit.rs`):
//! each write is queued; one *leader* at a time (on tokio's blocking pool) takes
//! every queued write, runs them in order as one batch (each sees the writes
//! before it; one whose rules fail writes nothing and gets its own error, the
//! others go on), logs and syncs the batch once, applies it, and wakes their
//! writers; meanwhile new writes queue for its next round. A lone writer pays
//! one sync per write; under concurrency a whole batch pays one.
//!
//! # Leases in a single-process store
//!
//! A directory is opened by one process, so a lease never keeps another
//! process out: after a crash every lease is dead. Which lease writes still
//! need to be durable at acknowledgement?
//!
//! - **Taking a lease** (`lease_due`): yes. The engine runs a step's body
//!   before anything of it is recorded (creation, attempt and result are one
//!   write), so the lease is the only durable trace that a run was being
//!   driven when the process died. The next lease on that run says so
//!   ([`Lease::taken_over`]) and the engine charges the attempts that may have
//!   been running as lost; a lease lost in the crash would let a step with
//!   `max_attempts(1)` run twice. `lease_due` queues one write per due run,
//!   together, so they share one log record and one sync.
//! - **Releasing a lease**: yes. A release lost in a crash would make the next
//!   lease look like a takeover, and charge a lost attempt to a step that
//!   never ran.
//! - **Renewing a lease**: no. Only the expiry changes; no other process reads
//!   it, and after a crash an older expiry only lets the run be taken over
//!   sooner. The lease itself, durable since it was taken, still marks the
//!   takeover. So a renewal is acknowledged once logged, without a sync of
//!   its own; the next synced write (the log is written in order) makes it
//!   durable. A renewal costs no `fsync`, so a long step no longer
//!   makes its run wait on the disk every `ttl/3`.
//!
//! # What a crash may lose
//!
//! Every acknowledged write is in the write-ahead log, written with `write`
//! and (with `fsync`, the default) `fdatasync`ed before the acknowledgement:
//! it survives a crash of the process (the data is in the kernel) and, with
//! `fsync`, a power cut or kernel crash. [`SledConfig::fsync`]`(false)` skips
//! the `fdatasync` and keeps only the first. Large payloads are in the log
//! like small ones. At a checkpoint, sled's own files are made durable before
//! the log is emptied: sled writes values too large for a log segment (a tree
//! node above about 128 KiB) to separate blob files which it never `fsync`s,
//! so the store `fsync`s those and the blob directory first, then flushes
//! sled (`pwrite` and `sync_file_range` of its log, which do not reach the
//! disk's cache) and `fdatasync`s sled's data file (`<dir>/db`).
//!
//! Hence after a crash of the process (and, with `fsync`, of the machine):
//!
//! - nothing acknowledged is lost;
//! - a write that was not acknowledged (its future was pending or dropped) may
//!   or may not be there, but entirely or not at all, so each run's log stays
//!   gapless and its projections agree with it.
//!
//! `tests/sled_crash.rs` checks exactly this by killing a writing process with
//! `SIGKILL` again and again and reopening its directory.
//!
//! If a checkpoint fails (an I/O error in sled's flush), the log keeps its
//! records and the next checkpoint or open tries again; nothing acknowledged
//! depends on it.
//!
//! # Damaged files and sled's failures
//!
//! A damaged file in the directory (a flipped bit, a torn sector, a file
//! copied from elsewhere) is input from outside: the store answers it with
//! typed errors, never with a panic.
//!
//! - **A record that does not decode** is [`StoreError::Corrupt`] naming the
//!   record; only the operations that read it fail, other runs stay readable
//!   and writable.
//! - **Damage sled detects** (a page that fails its checksum when it is read,
//!   a damaged snapshot or `conf` file) is [`StoreError::Damaged`] naming the
//!   database directory, the file when sled says where (`db` and the offset,
//!   or a blob file), and the tree and key that were being read. Opening such
//!   a directory fails; for a page, only the reads that need it fail. Every
//!   other sled error is [`StoreError::Backend`] with sled's own message (and
//!   the directory) in it, and the sled error as its source.
//! - **sled panics** on some damage instead of returning an error (seen in
//!   `tests/sled_corruption.rs`: `tried to serialize Uninitialized` in its
//!   snapshot code while opening; reported elsewhere, `index out of bounds`
//!   in its segment accounting). Every call the store makes into sled runs under
//!   [`std::panic::catch_unwind`]: opening, every read (on the blocking pool
//!   or the caller's thread), and the group commit's batches and checkpoints
//!   on the blocking pool. The panic becomes [`StoreError::Damaged`] carrying
//!   sled's panic message. The panic still reaches the process's panic hook
//!   first (by default it is printed to stderr): the hook belongs to the
//!   application, the store leaves it alone. Built with `panic = "abort"`,
//!   nothing can be caught, and a damaged file aborts the process.
//!   [`SledStore::raw_db`] gives unguarded access, and dropping the last
//!   handle runs sled's shutdown (a final flush of what is committed) on the
//!   dropping thread, unguarded; no trial has seen that panic.
//!
//! **After a caught panic the store refuses writes.** A panic can leave sled's
//! state in memory half-updated (a batch half applied to the trees, the
//! segment accounting mid-change; sled's locks do not poison), and sled's
//! panics come from its own metadata, which every write relies on. Writing on
//! could persist that state over the intact data on disk and turn damage that
//! a reopen survives into permanent damage. So from the first caught panic
//! on, every write (and `lease_due`) is [`StoreError::Damaged`] saying why,
//! without touching sled; the batch that panicked is reported to its writers
//! as possibly recorded. Reads go on (each still guarded), so runs that are
//! intact stay readable. Reopening the store runs sled's recovery from the
//! files again and replays the write-ahead log over what it recovers. Errors sled *returns* (checksum failures included) do not stop
//! the store's writes: the operation that got one changed nothing (sled itself
//! refuses writes after an I/O error in a flush).
//!
//! **What sled does not detect.** sled's recovery checks each message of its
//! log against its checksum and takes the first one that fails for the torn
//! end of the log after a crash: it drops that message and everything logged
//! after it, and reports nothing (a damaged blob file that recovery reads is
//! treated the same way). So a damaged byte in the middle of `db` often reads
//! as lost writes, not as an error: runs written after the damage do not exist
//! ([`StoreError::RunNotFound`]) and logs end early. Acknowledged writes are
//! gone, and the store cannot tell this apart from a crash before them. In
//! such a cut sled does not always keep a transaction whole: a run's record
//! can count more events than its log holds. Reading a log checks it against
//! the run's record and for gaps, so that case is [`StoreError::Corrupt`]
//! (`event log`, naming the run and seq), not a silently short log. Also seen:
//! a damaged tree whose scans miss a key that a lookup finds, so `list_runs`
//! can leave out a run that `get_run` returns. Nothing wrong is returned in
//! these cases, only less. Keep backups of the directory; detecting lost
//! writes would need a record of the last acknowledged commit outside sled's
//! log.
//!
//! **sled's background threads.** sled's flusher thread (which would flush,
//! clean segments and `fsync` every 500 ms) is not started
//! (`flush_every_ms(None)`): it runs sled code the store cannot guard, and if
//! it panicked the thread would end while sled's shutdown waits for it forever
//! (dropping the store would hang). The store flushes sled at checkpoints; sled
//! still cleans segments as part of writes; with [`SledConfig::fsync`] off, a
//! thread of the store `fsync`s the data file periodically instead
//! ([`SledConfig::background_flush`]), plain file I/O only. sled's I/O thread
//! pool (log writes, reading segment headers at recovery, truncating the
//! file) runs each task under sled's own `catch_unwind`: a panic there ends
//! that thread (printed by the panic hook, the process goes on) and marks
//! sled's pool broken for the whole process, so later sled calls may fail with
//! sled's `ReportableBug` error, reported as [`StoreError::Backend`]; a caller
//! waiting for a header read sees the failure as a panic on its own thread,
//! which the store catches. One case remains that the store cannot guard: a
//! panic in a log write *before* it marks its buffer written would leave the
//! flush waiting for it, so the commit and its writers would wait forever. It
//! would take an internal inconsistency of sled rather than a damaged file,
//! and no trial has produced it.
//!
//! # Threads
//!
//! sled's calls block (a write may wait for a running flush, a flush waits
//! for the disk), so the store runs them on tokio's blocking pool
//! ([`tokio::task::spawn_blocking`]), never on the async executor; writers wait
//! for their group commit without holding a thread. Used outside a tokio
//! runtime, the calls run on the calling thread instead.
//!
//! sled allows one process per directory: opening a directory that is open
//! elsewhere (in another process, or another `SledStore` in this one) is a
//! [`StoreError::Locked`].

mod damage;
mod group_commit;
mod layout;
mod reads;
mod transaction;
mod visibility;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;

use self::damage::{Poison, SLED_DATA_FILE};
use self::group_commit::GroupCommit;
use self::transaction::{Job, Trees, WriteOp};
use self::visibility::{Gate, Read};
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
use crate::wal::{Wal, CHECKPOINT_BYTES};

/// Batches after which the store makes a checkpoint even if its write-ahead
/// log is still small (bounds what a reopening replays).
const CHECKPOINT_BATCHES: u64 = 4096;
use crate::stream::{ChunkKey, ChunkWriter, RunStreams, StreamWrite};

/// Default for [`SledConfig::cache_capacity`]: 256 MiB.
const DEFAULT_CACHE_CAPACITY: u64 = 256 * 1024 * 1024;

/// How to open a [`SledStore`]: the directory, and options with defaults.
///
/// ```no_run
/// use std::sync::Arc;
/// use workflow_store::{SledConfig, SledStore, SystemClock};
/// let store = SledStore::open_with(
///     SledConfig::new("./workflow-data")
///         .clock(Arc::new(SystemClock))
///         .cache_capacity(64 * 1024 * 1024),
/// )?;
/// # Ok::<(), workflow_store::StoreError>(())
/// ```
#[derive(Clone, Debug)]
pub struct SledConfig {
    path: PathBuf,
    clock: Arc<dyn Clock>,
    cache_capacity: u64,
    background_flush: Option<Duration>,
    fsync: bool,
    lock_wait: Duration,
}

impl SledConfig {
    /// Options for the database in directory `path` (created if missing), on the
    /// system clock, with a 256 MiB cache.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SledConfig {
            path: path.into(),
            clock: Arc::new(SystemClock),
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            background_flush: Some(Duration::from_millis(500)),
            fsync: true,
            lock_wait: Duration::from_secs(1),
        }
    }

    /// Where timestamps and due times come from (tests use a
    /// [`crate::ManualClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The most memory, in bytes, sled's page cache may use.
    pub fn cache_capacity(mut self, bytes: u64) -> Self {
        self.cache_capacity = bytes;
        self
    }

    /// How often, with [`fsync`](Self::fsync) off, a background thread of the
    /// store `fsync`s its write-ahead log and sled's data file (default every
    /// 500 ms; `None`: never).
    /// With `fsync` on (the default) every commit already `fsync`s and this
    /// does nothing.
    ///
    /// sled's own background flusher thread is never used: it runs sled code
    /// the store cannot guard, and if it panics (possible on a damaged file)
    /// sled's shutdown then waits for it forever (see the module docs,
    /// "Damaged files and sled's failures"). Writes are logged by the store
    /// before they are acknowledged anyway; this thread does plain file I/O
    /// only.
    pub fn background_flush(mut self, every: Option<Duration>) -> Self {
        self.background_flush = every;
        self
    }

    /// Whether each commit `fdatasync`s the store's write-ahead log before it
    /// is acknowledged (default `true`).
    ///
    /// Without it a commit is a `write` to the log: that survives a crash of
    /// the process, but not a power cut or kernel crash (without `fsync` the
    /// store's background thread `fsync`s only every
    /// [`background_flush`](Self::background_flush) interval). With `fsync`,
    /// an acknowledged write survives those too. Without it, writes are faster
    /// (no disk round trip per commit) and survive process crashes only.
    pub fn fsync(mut self, fsync: bool) -> Self {
        self.fsync = fsync;
        self
    }

    /// How long opening waits for the directory's lock (default 1 s) before it
    /// reports the directory as in use. A store dropped a moment ago in this
    /// process may still be shutting down its threads; another process holding
    /// the directory is reported once this has passed.
    pub fn lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = wait;
        self
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A durable [`Store`] in a local sled database directory. Cloning is cheap and
/// shares the database.
///
/// # Guarantees
///
/// - Each write (`create_run`, `append`, `resume_hook`, `wake`, the lease
///   operations) is one record of the store's write-ahead log: the events,
///   their projections and the indexes, all or nothing.
/// - **Commit point:** a write's future resolves `Ok` only after its record
///   in the store's write-ahead log has been written and (by default, see
///   [`SledConfig::fsync`]) `fdatasync`ed; change notifications are published
///   after that too. Concurrent writers share transactions and syncs (group
///   commit), so throughput grows with concurrency while a lone writer pays
///   one sync per write.
/// - **Visibility:** reads return only acknowledged (durable) writes, never one
///   a crash could still lose. A read of a run (or token) that the commit in
///   progress writes waits for that commit's log sync; reads of other runs do not
///   wait. `list_runs` waits for a commit in progress that changes any run,
///   `next_due` for one that changes a due time.
/// - **After a crash** (of the process; with `fsync` also of the machine)
///   nothing acknowledged is lost. A write that was not yet acknowledged may or
///   may not be there, but whole or not at all: logs stay gapless and
///   projections agree with them. Large payloads included: they are in the
///   log like small ones.
/// - A record that fails to decode is [`StoreError::Corrupt`] for the
///   operations that read it; other runs stay readable.
/// - **Damaged files** give typed errors, never a panic: sled's checksum
///   failures and sled's own panics (caught) are [`StoreError::Damaged`]
///   naming the directory, file, tree and key where known; after a caught
///   panic the store refuses writes until it is reopened. Damage in the middle
///   of sled's log is taken by sled for a crash and often reads as lost
///   writes (see the `sled_store` module docs).
/// - One process per directory: a directory in use elsewhere is
///   [`StoreError::Backend`] saying so. A directory written by a newer release
///   with an unknown layout is refused with [`StoreError::Codec`].
/// - sled's calls block, so they run on tokio's blocking pool, never on the
///   async executor (outside a tokio runtime, on the calling thread).
///
/// ```no_run
/// use workflow_store::{NewRun, Payload, RunId, SledStore, Store};
/// # async fn demo() -> Result<(), workflow_store::StoreError> {
/// let store = SledStore::open("./workflow-data")?;
/// let id = RunId::new();
/// let input = Payload::encode(&42)?;
/// store.create_run(NewRun { id, workflow: "answer".into(), input }).await?;
/// // Acknowledged, hence in the synced log: it survives a crash from here on.
/// assert_eq!(store.read_log(id).await?.len(), 1);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SledStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    trees: Trees,
    /// sled's data file, to `fsync` after each flush (`None`: `fsync` is off).
    data_file: Option<std::fs::File>,
    /// The newest blob file `fsync`ed (sled names them by log position),
    /// and how many have been; `None` when `fsync` is off.
    blobs: Option<Mutex<BlobSync>>,
    path: PathBuf,
    clock: Arc<dyn Clock>,
    changes: broadcast::Sender<Change>,
    commit: GroupCommit<Job>,
    /// Keeps readers from seeing a committed batch before it is durable.
    gate: Gate,
    /// Set once sled has panicked: from then on writes are refused.
    poison: Poison,
    /// The write-ahead log: what makes a batch durable (see the module docs).
    wal: Mutex<Wal>,
    /// Batches logged since the last checkpoint.
    since_checkpoint: std::sync::atomic::AtomicU64,
    /// The background `fsync` with `fsync` off; stops when dropped.
    _background: Option<BackgroundSync>,
    /// Synced appends to the write-ahead log so far (for tests).
    #[cfg(test)]
    syncs: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for SledStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.inner.path)
            .field("clock", &self.inner.clock)
            .field("writes", &self.inner.commit.jobs())
            .field("commits", &self.inner.commit.batches())
            .field("refuses_writes", &self.inner.poison.is_set())
            .finish_non_exhaustive()
    }
}

impl SledStore {
    /// Opens (or creates) the store in directory `path` with default options.
    ///
    /// Fails with [`StoreError::Locked`] if the directory is in use by another
    /// process, with [`StoreError::Codec`] if it was written by a newer
    /// release with a layout this build does not know, and with
    /// [`StoreError::Damaged`] if sled finds its files damaged (or panics on
    /// them). Errors from sled carry sled's message and the directory.
    pub fn open(path: impl AsRef<Path>) -> Result<SledStore, StoreError> {
        Self::open_with(SledConfig::new(path.as_ref()))
    }

    /// Opens (or creates) the store described by `config`; errors as [`SledStore::open`].
    pub fn open_with(config: SledConfig) -> Result<SledStore, StoreError> {
        let SledConfig {
            path,
            clock,
            cache_capacity,
            background_flush,
            fsync,
            lock_wait,
        } = config;
        let sled_config = sled::Config::new()
            .path(&path)
            .cache_capacity(cache_capacity)
            // The store flushes sled itself at checkpoints, and sled's flusher thread
            // is code the store cannot guard (see the module docs).
            .flush_every_ms(None);
        let (db, trees) = match damage::guarded(|| open_sled(&sled_config, &path, lock_wait)) {
            Ok(opened) => opened?,
            Err(panic) => {
                tracing::error!(path = %path.display(), %panic, "sled panicked opening the store");
                return Err(StoreError::Damaged {
                    location: format!("the sled database in {}", path.display()),
                    detail: format!(
                        "sled panicked while opening it ({panic}): its files are damaged; \
                         restore the directory from a backup"
                    ),
                });
            }
        };
        // sled 0.34 keeps its whole log in `<dir>/db`. fsync acts on the file,
        // so our own handle on it makes sled's writes durable.
        let data_file = if fsync {
            Some(open_data_file(&path)?)
        } else {
            None
        };
        let (wal, unapplied) = Wal::open(&path, 0)?;
        let background = match background_flush {
            Some(every) if !fsync => Some(BackgroundSync::start(&path, every)?),
            _ => None,
        };
        tracing::info!(
            path = %path.display(),
            recovered = db.was_recovered(),
            "opened sled workflow store"
        );
        let (changes, _) = broadcast::channel(CHANGE_FEED_CAPACITY);
        let store = SledStore {
            inner: Arc::new(Inner {
                db,
                trees,
                blobs: data_file.as_ref().map(|_| Mutex::new(BlobSync::default())),
                data_file,
                path,
                clock,
                changes,
                commit: GroupCommit::default(),
                gate: Gate::default(),
                poison: Poison::default(),
                wal: Mutex::new(wal),
                since_checkpoint: std::sync::atomic::AtomicU64::new(0),
                _background: background,
                #[cfg(test)]
                syncs: std::sync::atomic::AtomicU64::new(0),
            }),
        };
        match damage::guarded(|| store.inner.recover(&unapplied)) {
            Ok(recovered) => recovered?,
            Err(panic) => {
                tracing::error!(path = %store.inner.path.display(), %panic, "sled panicked replaying the write-ahead log");
                store
                    .inner
                    .poison
                    .set(&store.inner.path, "replaying the write-ahead log", &panic);
                return Err(StoreError::Damaged {
                    location: format!("the sled database in {}", store.inner.path.display()),
                    detail: format!(
                        "sled panicked while the write-ahead log was replayed ({panic})"
                    ),
                });
            }
        }
        Ok(store)
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The underlying sled database, for inspection and tests (the conformance
    /// suite damages a record through it).
    ///
    /// Trees (named in UTF-8) and keys, numbers big-endian, run ids as
    /// [`RunId::to_bytes`], values [`crate::codec`] records:
    /// `runs` (run id -> `RunRecord`), `events` (run id ++ seq u64 -> `Event`),
    /// `ops` (run id ++ correlation id -> `OpState`), `tokens` (token -> owner),
    /// `run_hooks` (run id -> `Vec<HookRecord>`), `queue` (run id -> `QueueEntry`),
    /// `due` (due ms u64 ++ run id -> empty), `status` (status code u8 ++ run id
    /// -> empty) and `meta`. For example event `seq` of `run` is in tree
    /// `events` under `run.to_bytes() ++ seq.to_be_bytes()`.
    /// Reading is harmless. **Writing through it bypasses the store's rules and
    /// voids its invariants** (gapless logs, projections that agree with them,
    /// durability of acknowledged writes). Calls through it are not guarded:
    /// sled may panic in them on a damaged file.
    pub fn raw_db(&self) -> &sled::Db {
        &self.inner.db
    }

    /// Runs `f` (which reads, doing `doing`) on tokio's blocking pool (on this
    /// thread outside a runtime). A panic inside sled is caught: `f` returns
    /// [`StoreError::Damaged`] and the store stops accepting writes.
    async fn blocking<T: Send + 'static>(
        &self,
        doing: &'static str,
        what: Option<String>,
        f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = Arc::clone(&self.inner);
        let guarded = move || {
            damage::guarded(|| f(&inner)).unwrap_or_else(|panic| {
                let what = what.as_ref().map(|w| w as &dyn fmt::Display);
                inner.poison.set(&inner.path, doing, &panic);
                Err(damage::panicked(&inner.path, doing, what, &panic))
            })
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle
                .spawn_blocking(guarded)
                .await
                .map_err(|e| StoreError::backend(format!("a blocking sled task failed: {e}"), e))?,
            Err(_) => guarded(),
        }
    }

    /// Runs a read on tokio's blocking pool (like [`SledStore::blocking`]) such
    /// that it returns only acknowledged writes: `f` is given what it reads
    /// (`reads`), adds whatever else it finds to read, and may run more than
    /// once (see `visibility.rs`).
    async fn read<T: Send + 'static>(
        &self,
        doing: &'static str,
        what: Option<String>,
        reads: Vec<Read>,
        f: impl Fn(&Inner, &mut Vec<Read>) -> Result<T, StoreError> + Send + Sync + 'static,
    ) -> Result<T, StoreError> {
        let f = Arc::new(f);
        self.inner
            .gate
            .read(reads, |mut reads| {
                let f = Arc::clone(&f);
                let what = what.clone();
                async move {
                    let done = self
                        .blocking(doing, what, move |inner| {
                            let value = f(inner, &mut reads);
                            Ok((value, reads))
                        })
                        .await;
                    match done {
                        Ok(done) => done,
                        // The read never ran: nothing was seen.
                        Err(e) => (Err(e), Vec::new()),
                    }
                }
            })
            .await
    }

    fn publish(&self, notify: Vec<Change>) {
        for change in notify {
            // No receivers is fine: nobody is waiting.
            let _ = self.inner.changes.send(change);
        }
    }

    /// One write: committed and logged with whatever other writes are
    /// pending (group commit); then its notifications are published.
    async fn write<T: Send + 'static>(
        &self,
        op: impl WriteOp<T> + Send + Sync + 'static,
    ) -> Result<T, StoreError> {
        self.inner.poison.check(&self.inner.path)?;
        self.run_job(Job::new(op)).await
    }

    /// Commits one queued job and publishes its notifications.
    async fn run_job<T: Send + 'static>(
        &self,
        (job, done): (Arc<Job>, transaction::Completion<T>),
    ) -> Result<T, StoreError> {
        self.commit(vec![job]);
        let (value, notify) = done.outcome().await?;
        self.publish(notify);
        Ok(value)
    }

    /// Queues jobs for the group commit, starting a leader on tokio's blocking
    /// pool if none runs (outside a tokio runtime the caller leads, blocking).
    fn commit(&self, jobs: Vec<Arc<Job>>) {
        if !self.inner.commit.enqueue(jobs) {
            return;
        }
        let leader = Leader(Some(Arc::clone(&self.inner)));
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                // Detached: the leader completes every job it takes, and its
                // writers await their own completions.
                drop(handle.spawn_blocking(move || leader.run()));
            }
            Err(_) => leader.run(),
        }
    }
}

/// The duty to lead a group commit. It is carried out even if the blocking task
/// that should run it is dropped unrun (its runtime shutting down): otherwise
/// the store would wait forever for a leader that never comes.
struct Leader(Option<Arc<Inner>>);

impl Leader {
    fn run(mut self) {
        if let Some(inner) = self.0.take() {
            inner.lead();
        }
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        if let Some(inner) = self.0.take() {
            inner.lead();
        }
    }
}

/// Opens sled's database (waiting up to `lock_wait` for the directory's
/// lock), the store's trees, and checks the layout. May panic inside sled: the
/// caller runs it guarded.
fn open_sled(
    sled_config: &sled::Config,
    path: &Path,
    lock_wait: Duration,
) -> Result<(sled::Db, Trees), StoreError> {
    let started = std::time::Instant::now();
    let db = loop {
        match sled_config.open() {
            Ok(db) => break db,
            Err(e) if is_locked(&e) && started.elapsed() < lock_wait => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(open_error(path, e)),
        }
    };
    let tree = |name: &str| {
        db.open_tree(name)
            .map_err(|e| damage::sled_error(path, format_args!("opening tree {name:?}"), None, e))
    };
    let trees = Trees {
        runs: tree(layout::RUNS)?,
        events: tree(layout::EVENTS)?,
        ops: tree(layout::OPS)?,
        tokens: tree(layout::TOKENS)?,
        run_hooks: tree(layout::RUN_HOOKS)?,
        queue: tree(layout::QUEUE)?,
        due: tree(layout::DUE)?,
        status: tree(layout::STATUS)?,
        workflows: tree(layout::WORKFLOWS)?,
        streams: tree(layout::STREAMS)?,
        chunks: tree(layout::CHUNKS)?,
    };
    check_layout(&db, &tree(layout::META)?, &trees, path)?;
    Ok((db, trees))
}

/// Our own handle on sled's data file, to `fsync` it.
fn open_data_file(path: &Path) -> Result<std::fs::File, StoreError> {
    let file = path.join(SLED_DATA_FILE);
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&file)
        .map_err(|e| {
            StoreError::backend(
                format!(
                    "could not open sled's data file {} to fsync it: {e}",
                    file.display()
                ),
                e,
            )
        })
}

/// The store's background `fsync` of its write-ahead log and sled's data file
/// when `fsync` is off (see [`SledConfig::background_flush`]): plain file I/O, no sled code. The thread
/// ends when this is dropped.
struct BackgroundSync {
    /// Dropping it wakes the thread, which then ends.
    _stop: mpsc::Sender<()>,
}

impl BackgroundSync {
    fn start(path: &Path, every: Duration) -> Result<Self, StoreError> {
        let data = open_data_file(path)?;
        let wal_path = path.join(crate::wal::WAL_FILE);
        let wal = std::fs::File::open(&wal_path).map_err(|e| {
            StoreError::backend(
                format!(
                    "could not open the write-ahead log {}: {e}",
                    wal_path.display()
                ),
                e,
            )
        })?;
        let (stop, stopped) = mpsc::channel::<()>();
        let shown = path.display().to_string();
        std::thread::Builder::new()
            .name("workflow-sled-fsync".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    for file in [&wal, &data] {
                        if let Err(e) = file.sync_data() {
                            tracing::warn!(path = %shown, error = %e, "background fsync failed");
                        }
                    }
                }
            })
            .map_err(|e| {
                StoreError::backend(
                    format!(
                        "could not start the background fsync thread for {}: {e}",
                        path.display()
                    ),
                    e,
                )
            })?;
        Ok(BackgroundSync { _stop: stop })
    }
}

/// Whether sled could not open the directory because another handle holds it.
fn is_locked(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// Maps sled's open failure, telling a locked directory apart.
fn open_error(path: &Path, e: sled::Error) -> StoreError {
    if is_locked(&e) {
        StoreError::Locked {
            path: path.to_path_buf(),
        }
    } else {
        damage::sled_error(path, "opening the sled database", None, e)
    }
}

/// Refuses a layout newer than this build's; stamps a new database with ours.
fn check_layout(
    db: &sled::Db,
    meta: &sled::Tree,
    trees: &Trees,
    path: &Path,
) -> Result<(), StoreError> {
    let backend = |e| {
        damage::sled_error(
            path,
            "checking the layout version",
            Some(&"tree \"meta\""),
            e,
        )
    };
    let Some(bytes) = meta.get(layout::LAYOUT_VERSION_KEY).map_err(backend)? else {
        meta.insert(
            layout::LAYOUT_VERSION_KEY,
            codec::encode_record(&layout::LAYOUT_VERSION)?,
        )
        .map_err(backend)?;
        db.flush().map_err(backend)?;
        return Ok(());
    };
    let found: u64 = match codec::decode_record(&bytes) {
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
    if found < 2 {
        // Layout 1 had no workflow index: build it from the run records, then
        // stamp the new layout (a crash before the stamp builds it again).
        let runs_failed = |e| {
            damage::sled_error(
                path,
                "building the workflow index",
                Some(&"tree \"runs\""),
                e,
            )
        };
        for item in trees.runs.iter() {
            let (key, value) = item.map_err(runs_failed)?;
            let rec: RunRecord = match layout::decode(&value, "run", || layout::hex(&key)) {
                Ok(rec) => rec,
                Err(e) => {
                    // One damaged record must not keep the store from opening:
                    // it stays `Corrupt` for the reads that need it, and is
                    // missing from the workflow listings.
                    tracing::warn!(error = %e, "not indexing a run whose record does not decode");
                    continue;
                }
            };
            for status in [None, Some(rec.status)] {
                trees
                    .workflows
                    .insert(layout::workflow_key(&rec.workflow, status, rec.id), &[][..])
                    .map_err(runs_failed)?;
            }
        }
        meta.insert(
            layout::LAYOUT_VERSION_KEY,
            codec::encode_record(&layout::LAYOUT_VERSION)?,
        )
        .map_err(backend)?;
        db.flush().map_err(backend)?;
    }
    Ok(())
}

impl Inner {
    /// Commits pending writes, a batch per transaction and flush, until none is
    /// left. Blocks.
    ///
    /// A panic inside sled fails the writes of its batch with
    /// [`StoreError::Damaged`] and stops the store's writes; once stopped,
    /// every batch fails without touching sled.
    fn lead(&self) {
        self.commit.lead(|batch| {
            if let Err(refused) = self.poison.check(&self.path) {
                transaction::fail_batch(batch, refused);
                return;
            }
            let now = self.clock.now();
            let committed = damage::guarded(|| {
                transaction::commit_batch(
                    &self.trees,
                    &self.gate,
                    &self.path,
                    |writes, durable| self.log(writes, durable),
                    now,
                    batch,
                )
            });
            match &committed {
                Ok(Ok(())) => self.checkpoint_if_due(),
                Ok(Err(e)) => {
                    // sled has part of a logged batch: refuse writes until
                    // the store is reopened and replays the log.
                    self.wal
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .refuse(format!("a logged batch could not be applied to sled: {e}"));
                }
                Err(_) => {}
            }
            if let Err(panic) = committed {
                self.poison.set(&self.path, "committing writes", &panic);
                transaction::fail_batch(
                    batch,
                    StoreError::Damaged {
                        location: format!("the sled database in {}", self.path.display()),
                        detail: format!(
                            "sled panicked while committing writes ({panic}): the write may or \
                             may not have been recorded, and the store accepts no more writes \
                             until it is reopened"
                        ),
                    },
                );
            }
        });
    }

    /// Appends a batch's writes to the write-ahead log, synced if `durable`
    /// (and `fsync` is on): the batch is durable when this returns `Ok`. On
    /// an error the log holds nothing of it, and sled gets nothing of it.
    fn log(&self, writes: &[crate::kv::Write], durable: bool) -> Result<(), StoreError> {
        let sync = durable && self.data_file.is_some();
        let mut wal = self.wal.lock().unwrap_or_else(PoisonError::into_inner);
        wal.append(writes, sync)?;
        #[cfg(test)]
        if sync {
            self.syncs
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    /// After a batch is applied: a checkpoint when the log has grown past
    /// its limits. (Not before the batch is in sled: a checkpoint empties
    /// the log.)
    fn checkpoint_if_due(&self) {
        use std::sync::atomic::Ordering;
        let batches = self.since_checkpoint.fetch_add(1, Ordering::Relaxed) + 1;
        let mut wal = self.wal.lock().unwrap_or_else(PoisonError::into_inner);
        if wal.len() >= CHECKPOINT_BYTES || batches >= CHECKPOINT_BATCHES {
            if let Err(e) = self.checkpoint(&mut wal) {
                tracing::error!(path = %self.path.display(), error = %e, "a checkpoint failed; the write-ahead log keeps its records");
            }
        }
    }

    /// Makes sled hold every logged write durably ([`Inner::flush`]), then
    /// empties the write-ahead log.
    fn checkpoint(&self, wal: &mut Wal) -> Result<(), StoreError> {
        self.since_checkpoint
            .store(0, std::sync::atomic::Ordering::Relaxed);
        if wal.len() == 0 {
            return Ok(());
        }
        self.flush()?;
        wal.reset()
    }

    /// Writes the records a crash left in the write-ahead log into sled, in
    /// order, and checkpoints. Each record holds new values, so replaying
    /// every record since the last checkpoint onto whatever prefix of them
    /// sled recovered gives the state after the last.
    fn recover(&self, records: &[crate::wal::Record]) -> Result<(), StoreError> {
        let mut wal = self.wal.lock().unwrap_or_else(PoisonError::into_inner);
        if wal.len() == 0 {
            return Ok(());
        }
        tracing::info!(path = %self.path.display(), batches = records.len(), "replaying the write-ahead log");
        for (_, writes) in records {
            for (table, key, value) in writes {
                let tree = self.trees.table(*table);
                let done = match value {
                    Some(v) => tree.insert(key.as_slice(), v.as_slice()).map(drop),
                    None => tree.remove(key.as_slice()).map(drop),
                };
                done.map_err(|e| {
                    damage::sled_error(&self.path, "replaying the write-ahead log", None, e)
                })?;
            }
        }
        self.checkpoint(&mut wal)
    }

    /// Makes every committed write durable: (unless `fsync` is off) an
    /// `fsync` of the blob files sled wrote for it, then sled's flush, then an
    /// `fsync` of sled's data file.
    fn flush(&self) -> Result<(), StoreError> {
        let failed = |e: &dyn fmt::Display| {
            tracing::error!(path = %self.path.display(), error = %e, "flushing the sled log failed");
        };
        self.sync_new_blobs().inspect_err(|e| failed(e))?;
        self.db.flush().map_err(|e| {
            failed(&e);
            match damage::sled_error(&self.path, "flushing the sled log to disk", None, e) {
                StoreError::Backend { message, source } => StoreError::Backend {
                    message: format!("{message}: the write is not known to be durable"),
                    source,
                },
                other => other,
            }
        })?;
        if let Some(file) = &self.data_file {
            file.sync_data().map_err(|e| {
                failed(&e);
                StoreError::backend(
                    format!(
                        "fsync of the sled log {} failed: the write is not known to be \
                         durable: {e}",
                        self.path.join(SLED_DATA_FILE).display()
                    ),
                    e,
                )
            })?;
        }
        Ok(())
    }
}

impl Drop for Inner {
    /// Closing: sled holds everything durably and the log is empty, so the
    /// next open has nothing to replay. (After a failure the log keeps its
    /// records, and the next open replays them.)
    fn drop(&mut self) {
        if self.poison.is_set() {
            return;
        }
        let mut wal = self.wal.lock().unwrap_or_else(PoisonError::into_inner);
        match damage::guarded(|| self.checkpoint(&mut wal).and_then(|()| wal.close())) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(path = %self.path.display(), error = %e, "the checkpoint at close failed; the next open replays the write-ahead log")
            }
            Err(panic) => {
                tracing::error!(path = %self.path.display(), %panic, "sled panicked in the checkpoint at close; the next open replays the write-ahead log")
            }
        }
    }
}

/// What [`Inner::sync_new_blobs`] has done so far.
#[derive(Debug, Default)]
struct BlobSync {
    /// The blob files synced that still exist (sled removes blobs it no
    /// longer needs; those leave this set at the next listing).
    done: std::collections::HashSet<std::ffi::OsString>,
    /// How many blob files have been synced since the store was opened.
    synced: u64,
}

impl Inner {
    /// `fsync`s the blob files sled wrote since the last call, and the blob
    /// directory, before the flush that makes the log entries pointing at
    /// them durable.
    ///
    /// sled keeps a value (or a tree node) larger than a quarter of a log
    /// segment (about 128 KiB) in a file of its own under `blobs/`, named by
    /// its log position, and never `fsync`s it: without this an acknowledged
    /// large payload could be lost in a power cut, and its log entry would
    /// point at a damaged file. The files not yet synced are found by name
    /// (not by position: a blob written by another thread may appear out of
    /// order); the directory is one short listing, as sled removes blobs it
    /// no longer needs.
    fn sync_new_blobs(&self) -> Result<(), StoreError> {
        let Some(blobs) = &self.blobs else {
            return Ok(());
        };
        let mut state = blobs.lock().unwrap_or_else(PoisonError::into_inner);
        let dir = self.path.join("blobs");
        let failed = |what: &str, path: &Path, e: std::io::Error| {
            StoreError::backend(
                format!(
                    "{what} {} failed: the write is not known to be durable: {e}",
                    path.display()
                ),
                e,
            )
        };
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(failed("listing sled's blob directory", &dir, e)),
        };
        let mut present = std::collections::HashSet::new();
        let mut synced = 0;
        for entry in entries {
            let entry = entry.map_err(|e| failed("listing sled's blob directory", &dir, e))?;
            let name = entry.file_name();
            if state.done.contains(&name) {
                present.insert(name);
                continue;
            }
            let path = entry.path();
            match std::fs::File::open(&path) {
                Ok(f) => f
                    .sync_all()
                    .map_err(|e| failed("fsync of sled's blob", &path, e))?,
                // Removed by sled meanwhile: nothing to make durable.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(failed("opening sled's blob", &path, e)),
            }
            present.insert(name);
            synced += 1;
        }
        if synced > 0 {
            std::fs::File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| failed("fsync of sled's blob directory", &dir, e))?;
            state.synced += synced;
        }
        state.done = present;
        Ok(())
    }

    /// Blob files synced since the store was opened (for tests).
    #[cfg(test)]
    fn blobs_synced(&self) -> u64 {
        self.blobs.as_ref().map_or(0, |b| {
            b.lock().unwrap_or_else(PoisonError::into_inner).synced
        })
    }
}

#[async_trait]
impl Store for SledStore {
    async fn create_run(&self, run: NewRun) -> Result<CreatedRun, StoreError> {
        // Also for an existing run: waiting for the flush makes sure the run the
        // caller is told about is durable, even if its creator is still flushing.
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
        self.write(move |st| apply::append(st, run, events.clone(), fence))
            .await
    }

    async fn read_events(
        &self,
        run: RunId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.read(
            "reading events",
            Some(format!("run {run}")),
            vec![Read::Run(run)],
            move |inner, _| inner.read_events(run, from_seq, limit),
        )
        .await
    }

    async fn get_run(&self, run: RunId) -> Result<Option<RunRecord>, StoreError> {
        self.read(
            "reading a run",
            Some(format!("run {run}")),
            vec![Read::Run(run)],
            move |inner, _| inner.run_record(run),
        )
        .await
    }

    async fn list_runs(&self, query: RunQuery) -> Result<Vec<RunRecord>, StoreError> {
        self.read(
            "listing runs",
            None,
            vec![Read::AllRuns],
            move |inner, _| inner.list_runs(&query),
        )
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
        let reads = vec![Read::Token(token.clone())];
        let token = token.clone();
        self.read(
            "reading a hook",
            Some(format!("token {:?}", token.as_str())),
            reads,
            move |inner, reads| {
                let hook = inner.get_hook(&token)?;
                if let Some(h) = &hook {
                    reads.push(Read::Run(h.run_id));
                }
                Ok(hook)
            },
        )
        .await
    }

    async fn list_hooks(&self, run: RunId) -> Result<Vec<HookRecord>, StoreError> {
        self.read(
            "listing hooks",
            Some(format!("run {run}")),
            vec![Read::Run(run)],
            move |inner, _| {
                inner.require_run(run)?;
                inner.run_hooks(run)
            },
        )
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
        self.write(move |st| apply::write_stream(st, run, &writer, write.clone(), fence))
            .await
    }

    async fn run_streams(&self, run: RunId) -> Result<Option<RunStreams>, StoreError> {
        self.read(
            "reading streams",
            Some(format!("run {run}")),
            vec![Read::Run(run)],
            move |inner, _| inner.run_streams(run),
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
            vec![Read::Run(run)],
            move |inner, _| inner.chunks(run, &keys),
        )
        .await
    }

    async fn resume_hook(
        &self,
        token: &HookToken,
        payload: Payload,
    ) -> Result<Resumed, StoreError> {
        let token = token.clone();
        self.write(move |st| apply::resume_hook(st, &token, payload.clone()))
            .await
    }

    async fn resume_webhook(
        &self,
        token: &HookToken,
        payload: Payload,
    ) -> Result<(Resumed, WebhookResponse), StoreError> {
        let token = token.clone();
        self.write(move |st| apply::resume_webhook(st, &token, payload.clone()))
            .await
    }

    async fn wake(&self, run: RunId) -> Result<(), StoreError> {
        self.write(move |st| apply::wake(st, run)).await
    }

    async fn lease_due(&self, limit: usize, ttl: Duration) -> Result<Vec<Lease>, StoreError> {
        self.inner.poison.check(&self.inner.path)?;
        let now = self.inner.clock.now();
        // Not gated (see `visibility.rs`): this only picks candidates, and each
        // lease is decided in a later batch, once the current one is durable.
        let candidates = self
            .blocking("reading the due index", None, move |inner| {
                inner.due_runs(now, limit)
            })
            .await?;
        // One write per run, queued together: they share a commit and a flush.
        let (jobs, completions): (Vec<_>, Vec<_>) = candidates
            .iter()
            .map(|&run| Job::new(move |st| apply::try_lease(st, run, ttl)))
            .unzip();
        self.commit(jobs);
        let mut leases = Vec::new();
        let mut first_error = None;
        for (run, done) in candidates.into_iter().zip(completions) {
            match done.outcome().await {
                Ok((Some(lease), notify)) => {
                    leases.push(lease);
                    self.publish(notify);
                }
                Ok((None, _)) => {}
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

    /// Renews without waiting for a flush: see "Leases" in the module docs.
    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<Lease, StoreError> {
        self.inner.poison.check(&self.inner.path)?;
        let lease = lease.clone();
        self.run_job(Job::unflushed(move |st| {
            apply::renew_lease(st, &lease, ttl)
        }))
        .await
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        let lease = lease.clone();
        self.write(move |st| apply::release_lease(st, &lease)).await
    }

    async fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        self.read(
            "reading the due index",
            None,
            vec![Read::Due],
            |inner, _| inner.next_due(),
        )
        .await
    }

    fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    fn subscribe(&self) -> Option<broadcast::Receiver<Change>> {
        Some(self.inner.changes.subscribe())
    }
}

#[cfg(test)]
mod tests;
