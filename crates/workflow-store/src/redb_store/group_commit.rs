//! Group commit: one writer thread commits the writes of all writers, a batch
//! per redb write transaction.
//!
//! A writer sends its write (a *job*, see `transaction.rs`) to the store's
//! writer thread and waits, without holding a thread, for the answer. The
//! thread takes every job that is pending, runs them in order in one write
//! transaction (each sees the writes before it; one whose rules fail writes
//! nothing and gets its own error), appends the batch's writes to the
//! write-ahead log and syncs it (not for a batch of lease renewals only),
//! commits the transaction without a sync of its own, publishes the batch's
//! change notifications, answers each job, and starts over; now and then it
//! makes a checkpoint (see `wal.rs`). While it commits, new writes queue up for the next round:
//! a lone writer pays one commit (and `fdatasync`) per write, concurrent writers
//! share one.
//!
//! A failure of redb (I/O, a damaged page) or a panic during a batch fails
//! every job of that batch: I/O as [`StoreError::Backend`], damage and
//! panics as [`StoreError::Damaged`]. Nothing of the batch is committed then.
//! The thread goes on with the next batch; it ends when the store is dropped,
//! after committing what is still queued.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use tokio::sync::broadcast;

use super::damage;
use super::transaction::{self, Job};
use crate::clock::Clock;
use crate::error::StoreError;
use crate::record::Change;
use crate::wal::{Wal, CHECKPOINT_BYTES};

/// Batches after which the writer makes a checkpoint even if the log is
/// still small (bounds the database pages redb holds for unsynced commits).
const CHECKPOINT_BATCHES: u64 = 4096;

/// Jobs sent together: they end up in the same batch.
type Jobs = Vec<Box<dyn Job>>;

/// Commits and writes counted so far.
#[derive(Debug, Default)]
pub(crate) struct CommitStats {
    /// Batches (write transactions) the thread ran, committed or failed.
    batches: AtomicU64,
    /// Jobs in them.
    jobs: AtomicU64,
    /// Batches logged without `fdatasync` (lease renewals only).
    unflushed: AtomicU64,
}

impl CommitStats {
    /// Batches run so far (one write transaction each).
    pub(crate) fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Jobs run so far.
    pub(crate) fn jobs(&self) -> u64 {
        self.jobs.load(Ordering::Relaxed)
    }

    /// Batches run so far that needed no durable commit.
    #[cfg(test)]
    pub(crate) fn unflushed(&self) -> u64 {
        self.unflushed.load(Ordering::Relaxed)
    }
}

/// The writer thread and the way to it. Dropping it lets the thread commit
/// what is queued and waits for it to end, so the database file is closed
/// (and its lock released) when the store is gone.
#[derive(Debug)]
pub(crate) struct Writer {
    jobs: Option<mpsc::Sender<Jobs>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<CommitStats>,
    /// The change feed the thread publishes to.
    changes: broadcast::Sender<Change>,
    /// When set, the next batch panics before its transaction (for tests).
    #[cfg(test)]
    pub(crate) panic_next: Arc<std::sync::atomic::AtomicBool>,
}

/// What the writer thread works with.
struct Committer {
    db: Arc<redb::Database>,
    wal: Wal,
    /// Batches logged since the last checkpoint.
    since_checkpoint: u64,
    file: PathBuf,
    clock: Arc<dyn Clock>,
    changes: broadcast::Sender<Change>,
    stats: Arc<CommitStats>,
    #[cfg(test)]
    panic_next: Arc<std::sync::atomic::AtomicBool>,
}

impl Writer {
    /// Starts the writer thread for `db` (the database in `file`).
    pub(crate) fn start(
        db: Arc<redb::Database>,
        wal: Wal,
        file: &Path,
        clock: Arc<dyn Clock>,
        changes: broadcast::Sender<Change>,
    ) -> Result<Writer, StoreError> {
        let (tx, rx) = mpsc::channel::<Jobs>();
        let stats = Arc::new(CommitStats::default());
        #[cfg(test)]
        let panic_next = Arc::default();
        let mut committer = Committer {
            db,
            wal,
            since_checkpoint: 0,
            file: file.to_path_buf(),
            clock,
            changes: changes.clone(),
            stats: Arc::clone(&stats),
            #[cfg(test)]
            panic_next: Arc::clone(&panic_next),
        };
        let thread = std::thread::Builder::new()
            .name("workflow-redb-writer".into())
            .spawn(move || committer.run(&rx))
            .map_err(|e| {
                StoreError::backend(
                    format!(
                        "could not start the writer thread for {}: {e}",
                        file.display()
                    ),
                    e,
                )
            })?;
        Ok(Writer {
            jobs: Some(tx),
            thread: Some(thread),
            stats,
            changes,
            #[cfg(test)]
            panic_next,
        })
    }

    /// Queues `jobs` for the writer thread, in one batch.
    pub(crate) fn submit(&self, jobs: Jobs) -> Result<(), StoreError> {
        let stopped = || StoreError::Backend {
            message: "the store's writer thread has stopped (see the log): reopen the store".into(),
            source: None,
        };
        let sender = self.jobs.as_ref().ok_or_else(stopped)?;
        // If the thread is gone, the jobs come back and are dropped here,
        // which answers their writers with an error as well.
        sender.send(jobs).map_err(|_| stopped())
    }

    /// A receiver of the change feed.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// What the thread has committed so far.
    pub(crate) fn stats(&self) -> &CommitStats {
        &self.stats
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the redb writer thread panicked");
            }
        }
    }
}

impl Committer {
    fn run(&mut self, rx: &mpsc::Receiver<Jobs>) {
        while let Ok(mut batch) = rx.recv() {
            while let Ok(more) = rx.try_recv() {
                batch.extend(more);
            }
            self.commit(batch);
            self.since_checkpoint += 1;
            if self.wal.len() >= CHECKPOINT_BYTES || self.since_checkpoint >= CHECKPOINT_BATCHES {
                self.checkpoint();
            }
        }
        // Closing: the database holds everything, the log is empty.
        self.checkpoint();
        if self.wal.len() == 0 {
            if let Err(e) = self.wal.close() {
                tracing::warn!(file = %self.file.display(), error = %e, "could not shrink the write-ahead log at close");
            }
        }
    }

    /// Makes the database durable and empties the log. A failure is logged:
    /// the log keeps its records, and the next open replays them.
    fn checkpoint(&mut self) {
        self.since_checkpoint = 0;
        if self.wal.len() == 0 {
            return;
        }
        let done = damage::guarded(|| transaction::checkpoint(&self.db, &self.file, &mut self.wal));
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(file = %self.file.display(), error = %e, "a checkpoint failed; the write-ahead log keeps its records")
            }
            Err(panic) => {
                tracing::error!(file = %self.file.display(), %panic, "redb panicked in a checkpoint; the write-ahead log keeps its records")
            }
        }
    }

    /// Commits one batch and answers its jobs.
    fn commit(&mut self, mut batch: Jobs) {
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats
            .jobs
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        if !batch.iter().any(|j| j.durable()) {
            self.stats.unflushed.fetch_add(1, Ordering::Relaxed);
        }
        let now = self.clock.now();
        let committed = damage::guarded(|| {
            #[cfg(test)]
            if self.panic_next.swap(false, Ordering::SeqCst) {
                panic!("injected panic in a commit");
            }
            transaction::commit_batch(&self.db, &self.file, &mut self.wal, now, &mut batch)
        });
        let failure = match committed {
            Ok(Ok(notify)) => {
                // Before the answers, so that a writer who subscribed before
                // writing finds its notifications when its write returns.
                for change in notify {
                    // No receivers is fine: nobody is waiting.
                    let _ = self.changes.send(change);
                }
                None
            }
            Ok(Err(e)) => {
                tracing::error!(
                    file = %self.file.display(),
                    writes = batch.len(),
                    error = %e,
                    "a redb commit failed: its writes are reported as failed"
                );
                Some(e)
            }
            Err(panic) => {
                tracing::error!(
                    file = %self.file.display(),
                    writes = batch.len(),
                    %panic,
                    "a redb commit panicked: its writes are reported as failed"
                );
                Some(damage::panicked(
                    &self.file,
                    "committing writes (none of the writes of that commit was recorded)",
                    None,
                    &panic,
                ))
            }
        };
        let mut jobs = batch.into_iter();
        let first = jobs.next();
        for job in jobs {
            job.answer(failure.as_ref().map(damage::copy_of));
        }
        // The first job gets the batch's error with its source.
        if let Some(first) = first {
            first.answer(failure);
        }
    }
}
