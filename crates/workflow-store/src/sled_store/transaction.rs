//! Writes of [`super::SledStore`]: the shared rules ([`crate::backend`]) run
//! over sled's trees as a batch's earlier writes left them, and their
//! [`Changes`] become writes (with the due and status indexes) that are
//! logged, then applied to sled. A group commit (see `group_commit.rs`) puts
//! the writes of several writers in one batch.
//!
//! No sled transaction is used: the write-ahead log makes a batch atomic
//! (a crash replays its record whole), the group commit's leader is the only
//! writer, and the visibility gate keeps readers off a batch being applied.
//! A sled transaction would also write out sled's log buffer (a `pwrite`
//! and a `sync_file_range`, a disk round trip) every time it commits.

use std::any::Any;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use sled::Tree;
use tokio::sync::oneshot;

use super::damage;
use super::layout::{self, decode, decode_event};
use super::visibility::{Footprint, Gate};
use crate::apply::{ReadView, Staged};
use crate::error::StoreError;
use crate::event::{Event, Timestamp};
use crate::id::{CorrelationId, HookToken, RunId};
use crate::kv::{encode_changes, Table, Write};
use crate::record::{Change, HookRecord, OpState, QueueEntry, RunRecord, TokenOwner};
use crate::stream::RunStreams;

/// The trees a write transaction spans.
pub(crate) struct Trees {
    pub(crate) runs: Tree,
    pub(crate) events: Tree,
    pub(crate) ops: Tree,
    pub(crate) tokens: Tree,
    pub(crate) run_hooks: Tree,
    pub(crate) queue: Tree,
    pub(crate) due: Tree,
    pub(crate) status: Tree,
    pub(crate) workflows: Tree,
    pub(crate) streams: Tree,
    pub(crate) chunks: Tree,
}

impl Trees {
    /// The tree of `table`.
    pub(crate) fn table(&self, table: Table) -> &Tree {
        match table {
            Table::Runs => &self.runs,
            Table::Events => &self.events,
            Table::Ops => &self.ops,
            Table::Tokens => &self.tokens,
            Table::RunHooks => &self.run_hooks,
            Table::Queue => &self.queue,
            Table::Due => &self.due,
            Table::Status => &self.status,
            Table::Workflows => &self.workflows,
            Table::Streams => &self.streams,
            Table::Chunks => &self.chunks,
        }
    }
}

/// A write operation, given the staged view. Runs once.
pub(crate) trait WriteOp<T>:
    Fn(&mut Staged<'_, TxView<'_>>) -> Result<T, StoreError>
{
}
impl<T, F> WriteOp<T> for F where F: Fn(&mut Staged<'_, TxView<'_>>) -> Result<T, StoreError> {}

type ErasedOp =
    dyn Fn(&mut Staged<'_, TxView<'_>>) -> Result<Box<dyn Any + Send>, StoreError> + Send + Sync;

/// What a committed write produced: its value and its notifications.
type Outcome = Result<(Box<dyn Any + Send>, Vec<Change>), StoreError>;

/// One write waiting for a group commit.
pub(crate) struct Job {
    op: Box<ErasedOp>,
    /// Whether the job is acknowledged only once flushed (all but lease
    /// renewals, see [`Job::unflushed`]).
    flush: bool,
    /// Where the outcome goes; dropped uncompleted if the commit panicked.
    done: Mutex<Option<oneshot::Sender<Outcome>>>,
}

/// The writer's end of a [`Job`]: resolves once the job is committed and flushed.
pub(crate) struct Completion<T> {
    rx: oneshot::Receiver<Outcome>,
    value: PhantomData<fn() -> T>,
}

impl Job {
    /// A job for `op`, and the completion its writer awaits.
    pub(crate) fn new<T: Send + 'static>(
        op: impl WriteOp<T> + Send + Sync + 'static,
    ) -> (Arc<Job>, Completion<T>) {
        Job::with_flush(op, true)
    }

    fn with_flush<T: Send + 'static>(
        op: impl WriteOp<T> + Send + Sync + 'static,
        flush: bool,
    ) -> (Arc<Job>, Completion<T>) {
        let (tx, rx) = oneshot::channel();
        let job = Arc::new(Job {
            op: Box::new(move |st| op(st).map(|v| Box::new(v) as Box<dyn Any + Send>)),
            flush,
            done: Mutex::new(Some(tx)),
        });
        (
            job,
            Completion {
                rx,
                value: PhantomData,
            },
        )
    }

    /// Like [`Job::new`], for a write that need not be durable when it is
    /// acknowledged: a batch of such jobs only is committed without a flush
    /// (the next flush, of any batch, makes it durable, sled's log being
    /// written in order). Used for lease renewals; see `SledStore::renew_lease`.
    pub(crate) fn unflushed<T: Send + 'static>(
        op: impl WriteOp<T> + Send + Sync + 'static,
    ) -> (Arc<Job>, Completion<T>) {
        Job::with_flush(op, false)
    }

    fn complete(&self, outcome: Outcome) {
        let done = self
            .done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(done) = done {
            // A writer that stopped waiting (its future was dropped) is fine.
            let _ = done.send(outcome);
        }
    }
}

impl<T: 'static> Completion<T> {
    /// The write's value and its notifications once it is committed and
    /// flushed, or why it failed.
    pub(crate) async fn outcome(self) -> Result<(T, Vec<Change>), StoreError> {
        let (value, notify) = self.rx.await.unwrap_or_else(|_| {
            Err(StoreError::Backend {
                message: "the commit that carried this write failed (see the log): the write \
                          may or may not have been recorded; read the run before retrying"
                    .into(),
                source: None,
            })
        })?;
        match value.downcast::<T>() {
            Ok(value) => Ok((*value, notify)),
            Err(_) => Err(StoreError::Backend {
                message: "internal error: a write produced a value of an unexpected type".into(),
                source: None,
            }),
        }
    }
}

/// Commits a batch of jobs: runs each job's rules at time `now`, in order
/// (each job sees the writes of the jobs before it), makes the batch's
/// writes durable with `log` (given the writes, and whether any job needs
/// them durable now: all but [`Job::unflushed`] ones do), applies them to
/// sled's trees, then completes every job.
///
/// A job whose rules fail writes nothing and gets its own error; the others
/// are unaffected. A failure to log fails every job that would have written,
/// and nothing reaches sled. A failure of sled while applying a logged batch
/// fails every job and is returned: the caller must stop writing.
///
/// Readers see the batch only once it is durable and its jobs are completed:
/// it publishes the batch's footprint to `gate` before applying it, which is
/// cleared when this returns (see `visibility.rs`).
pub(crate) fn commit_batch(
    trees: &Trees,
    gate: &Gate,
    dir: &Path,
    log: impl FnOnce(&[Write], bool) -> Result<(), StoreError>,
    now: Timestamp,
    jobs: &[Arc<Job>],
) -> Result<(), StoreError> {
    // Dropped last: after the jobs are completed, or on a panic.
    let _in_flight = gate.in_flight();
    let (outcomes, writes, footprint) = run_jobs(trees, dir, now, jobs);
    let durable = jobs.iter().any(|j| j.flush);
    if !writes.is_empty() {
        if let Err(e) = log(&writes, durable) {
            fail_batch(jobs, e);
            return Ok(());
        }
        let _exclusive = gate.exclusive();
        // Before sled has them, so a reader who sees them also sees them
        // marked as in flight.
        gate.publish(footprint);
        if let Err(e) = apply_writes(trees, &writes, dir) {
            // Logged but applied in part: what readers see is off until the
            // store is reopened (which replays the log). Nothing is
            // acknowledged, and the caller stops the store's writes.
            fail_batch(jobs, copy_of(&e));
            return Err(e);
        }
    }
    #[cfg(test)]
    gate.pause.point();
    for (job, outcome) in jobs.iter().zip(outcomes) {
        job.complete(outcome);
    }
    Ok(())
}

/// Completes every job of a batch that failed as a whole with `e`: the first
/// one gets the error with its source, the others a copy. Jobs already
/// completed keep their outcome.
pub(crate) fn fail_batch(jobs: &[Arc<Job>], e: StoreError) {
    let Some((first, others)) = jobs.split_first() else {
        return;
    };
    for job in others {
        job.complete(Err(copy_of(&e)));
    }
    first.complete(Err(e));
}

/// A copy of a batch's error for its other writers: a
/// [`StoreError::Damaged`] as such, anything else as a
/// [`StoreError::Backend`] with its message (the source stays with the first).
fn copy_of(e: &StoreError) -> StoreError {
    match e {
        StoreError::Damaged { location, detail } => StoreError::Damaged {
            location: location.clone(),
            detail: detail.clone(),
        },
        StoreError::Backend { message, .. } => StoreError::Backend {
            message: message.clone(),
            source: None,
        },
        other => StoreError::Backend {
            message: other.to_string(),
            source: None,
        },
    }
}

/// Runs each job's rules over the trees under the writes of the jobs before
/// it; returns each job's outcome, the batch's writes (nothing is applied
/// yet), and what they touch.
fn run_jobs(
    trees: &Trees,
    dir: &Path,
    now: Timestamp,
    jobs: &[Arc<Job>],
) -> (Vec<Outcome>, Vec<Write>, Footprint) {
    let mut overlay = Overlay::new();
    let mut outcomes = Vec::with_capacity(jobs.len());
    let mut logged: Vec<Write> = Vec::new();
    let mut footprint = Footprint::default();
    for (k, job) in jobs.iter().enumerate() {
        let (result, mut changes) = {
            let mut view = TxView {
                trees,
                overlay: &overlay,
                dir,
            };
            let mut staged = Staged::new(&mut view, now);
            let result = (job.op)(&mut staged);
            (result, staged.into_changes())
        };
        let staged = result.and_then(|value| Ok((value, encode_changes(&changes)?)));
        outcomes.push(match staged {
            Ok((value, writes)) => {
                // Only a later job of the batch reads them back.
                if k + 1 < jobs.len() {
                    for (table, key, value) in &writes {
                        overlay.insert((*table, key.clone()), value.clone());
                    }
                }
                logged.extend(writes);
                footprint.add(&changes);
                Ok((value, std::mem::take(&mut changes.notify)))
            }
            Err(e) => Err(e),
        });
    }
    (outcomes, logged, footprint)
}

/// A batch's writes so far, by table and key (`None`: removed).
type Overlay = HashMap<(Table, Vec<u8>), Option<Vec<u8>>>;

/// Reads by key for [`crate::backend`]: the batch's earlier writes, else sled.
pub(crate) struct TxView<'t> {
    trees: &'t Trees,
    overlay: &'t Overlay,
    dir: &'t Path,
}

impl TxView<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if !self.overlay.is_empty() {
            if let Some(written) = self.overlay.get(&(table, key.to_vec())) {
                return Ok(written.clone());
            }
        }
        self.trees
            .table(table)
            .get(key)
            .map(|found| found.map(|v| v.to_vec()))
            .map_err(|e| {
                damage::sled_error(
                    self.dir,
                    "reading for a write",
                    Some(&format_args!("tree {:?}", table.name())),
                    e,
                )
            })
    }
}

impl ReadView for TxView<'_> {
    fn run(&mut self, id: RunId) -> Result<Option<RunRecord>, StoreError> {
        self.get(Table::Runs, &layout::run_key(id))?
            .map(|b| decode(&b, "run", || id.to_string()))
            .transpose()
    }

    fn event(&mut self, run: RunId, seq: u64) -> Result<Option<Event>, StoreError> {
        self.get(Table::Events, &layout::event_key(run, seq))?
            .map(|b| decode_event(&b, run, seq))
            .transpose()
    }

    fn op(&mut self, run: RunId, id: &CorrelationId) -> Result<Option<OpState>, StoreError> {
        self.get(Table::Ops, &layout::op_key(run, id))?
            .map(|b| decode(&b, "operation", || format!("{run}/{id}")))
            .transpose()
    }

    fn token(&mut self, token: &HookToken) -> Result<Option<TokenOwner>, StoreError> {
        self.get(Table::Tokens, token.as_str().as_bytes())?
            .map(|b| decode(&b, "token owner", || format!("{token:?}")))
            .transpose()
    }

    fn run_hooks(&mut self, run: RunId) -> Result<Vec<HookRecord>, StoreError> {
        Ok(self
            .get(Table::RunHooks, &layout::run_key(run))?
            .map(|b| decode(&b, "hook list", || run.to_string()))
            .transpose()?
            .unwrap_or_default())
    }

    fn queue(&mut self, run: RunId) -> Result<Option<QueueEntry>, StoreError> {
        self.get(Table::Queue, &layout::run_key(run))?
            .map(|b| decode(&b, "queue entry", || run.to_string()))
            .transpose()
    }

    fn streams(&mut self, run: RunId) -> Result<Option<RunStreams>, StoreError> {
        self.get(Table::Streams, &layout::run_key(run))?
            .map(|b| decode(&b, "streams record", || run.to_string()))
            .transpose()
    }
}

/// Applies a logged batch's writes to sled's trees.
fn apply_writes(trees: &Trees, writes: &[Write], dir: &Path) -> Result<(), StoreError> {
    for (table, key, value) in writes {
        let tree: &Tree = trees.table(*table);
        let done = match value {
            Some(value) => tree.insert(key.as_slice(), value.as_slice()).map(drop),
            None => tree.remove(key.as_slice()).map(drop),
        };
        done.map_err(|e| {
            damage::sled_error(
                dir,
                "applying a logged batch",
                Some(&format_args!("tree {:?}", table.name())),
                e,
            )
        })?;
    }
    Ok(())
}
