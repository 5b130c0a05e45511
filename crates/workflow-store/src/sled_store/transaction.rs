//! Writes of [`super::SledStore`]: the shared rules ([`crate::backend`]) run over
//! sled's transactional trees, and their [`Changes`] are written, with the due and
//! status indexes, in the same transaction. A group commit (see
//! `group_commit.rs`) puts the writes of several writers in one transaction.

use std::any::Any;
use std::marker::PhantomData;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use sled::transaction::{
    ConflictableTransactionError, TransactionError, Transactional, TransactionalTree,
    UnabortableTransactionError,
};
use sled::{IVec, Tree};
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

/// The same trees inside one transaction.
struct TxTrees<'t> {
    runs: &'t TransactionalTree,
    events: &'t TransactionalTree,
    ops: &'t TransactionalTree,
    tokens: &'t TransactionalTree,
    run_hooks: &'t TransactionalTree,
    queue: &'t TransactionalTree,
    due: &'t TransactionalTree,
    status: &'t TransactionalTree,
    workflows: &'t TransactionalTree,
    streams: &'t TransactionalTree,
    chunks: &'t TransactionalTree,
}

/// Error type of the transaction closure. Writes never abort the transaction
/// (a failed write is reported to its writer alone), so only sled's own errors
/// travel this way.
type TxError = ConflictableTransactionError<StoreError>;

/// A write operation, given the staged view; sled may run it more than once.
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

/// Commits a batch of jobs: runs each job's rules at time `now`, in order, in
/// one sled transaction over all write trees (each job sees the writes of the
/// jobs before it), then makes it durable with `log` (given the batch's
/// writes, and whether any job needs them durable now: all but
/// [`Job::unflushed`] ones do), then completes every job.
///
/// A job whose rules fail writes nothing and gets its own error; the others
/// are unaffected. A failure of sled itself (in the transaction or the flush)
/// fails every job that would have written.
///
/// Readers see the batch only once it is durable and its jobs are completed:
/// the transaction publishes the batch's footprint to `gate`, which is cleared
/// when this returns (see `visibility.rs`).
pub(crate) fn commit_batch(
    trees: &Trees,
    gate: &Gate,
    dir: &Path,
    log: impl FnOnce(&[Write], bool) -> Result<(), StoreError>,
    now: Timestamp,
    jobs: &[Arc<Job>],
) {
    // Dropped last: after the jobs are completed, or on a panic.
    let _in_flight = gate.in_flight();
    let transacted = {
        let _exclusive = gate.exclusive();
        transact(trees, gate, dir, now, jobs)
    };
    #[cfg(test)]
    gate.pause.point();
    let durable = jobs.iter().any(|j| j.flush);
    let flushed = transacted.and_then(|(outcomes, writes)| {
        if !writes.is_empty() {
            log(&writes, durable)?;
        }
        Ok(outcomes)
    });
    match flushed {
        Ok(outcomes) => {
            for (job, outcome) in jobs.iter().zip(outcomes) {
                job.complete(outcome);
            }
        }
        Err(e) => fail_batch(jobs, e),
    }
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

/// The transaction of [`commit_batch`]; returns each job's outcome, and the
/// batch's writes.
fn transact(
    trees: &Trees,
    gate: &Gate,
    dir: &Path,
    now: Timestamp,
    jobs: &[Arc<Job>],
) -> Result<(Vec<Outcome>, Vec<Write>), StoreError> {
    // More trees than sled's tuples take: a slice, in this order.
    let all: [&Tree; 11] = [
        &trees.runs,
        &trees.events,
        &trees.ops,
        &trees.tokens,
        &trees.run_hooks,
        &trees.queue,
        &trees.due,
        &trees.status,
        &trees.workflows,
        &trees.streams,
        &trees.chunks,
    ];
    let outcome = all[..].transaction(|t: &Vec<TransactionalTree>| {
        let [runs, events, ops, tokens, run_hooks, queue, due, status, workflows, streams, chunks] =
            &t[..]
        else {
            return Err(ConflictableTransactionError::Abort(StoreError::Backend {
                message: "internal error: a transaction over the wrong trees".into(),
                source: None,
            }));
        };
        let tx = TxTrees {
            runs,
            events,
            ops,
            tokens,
            run_hooks,
            queue,
            due,
            status,
            workflows,
            streams,
            chunks,
        };
        let mut view = TxView {
            tx: &tx,
            failure: None,
        };
        let mut outcomes = Vec::with_capacity(jobs.len());
        let mut logged = Vec::new();
        let mut footprint = Footprint::default();
        for job in jobs {
            let mut staged = Staged::new(&mut view, now);
            let result = (job.op)(&mut staged);
            let mut changes = staged.into_changes();
            // A read that failed inside sled (most importantly a conflict)
            // must reach sled as such, so it retries or reports it, whatever
            // error the rules turned it into.
            if let Some(failure) = view.failure.take() {
                return Err(TxError::from(failure));
            }
            let staged = result.and_then(|value| Ok((value, encode_changes(&changes)?)));
            outcomes.push(match staged {
                Ok((value, mut writes)) => {
                    apply_writes(&tx, &writes)?;
                    logged.append(&mut writes);
                    footprint.add(&changes);
                    Ok((value, std::mem::take(&mut changes.notify)))
                }
                Err(e) => Err(e),
            });
        }
        // Before sled applies the writes (when this closure returns), so
        // that a reader who sees them also sees them marked as in flight.
        gate.publish(footprint);
        Ok((outcomes, logged))
    });
    outcome.map_err(|e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => damage::sled_error(
            dir,
            "running the write transaction",
            Some(&"trees runs, events, ops, tokens, run_hooks, queue, due, status, workflows"),
            e,
        ),
    })
}

/// Reads by key inside the transaction, for [`crate::backend`].
pub(crate) struct TxView<'t> {
    tx: &'t TxTrees<'t>,
    /// The first sled error of the transaction, stashed so that the closure can
    /// return it to sled unchanged.
    failure: Option<UnabortableTransactionError>,
}

impl TxView<'_> {
    fn get(
        failure: &mut Option<UnabortableTransactionError>,
        tree: &TransactionalTree,
        key: &[u8],
    ) -> Result<Option<IVec>, StoreError> {
        tree.get(key).map_err(|e| {
            let message = format!("sled read in a transaction failed: {e}");
            failure.get_or_insert(e);
            StoreError::Backend {
                message,
                source: None,
            }
        })
    }
}

impl ReadView for TxView<'_> {
    fn run(&mut self, id: RunId) -> Result<Option<RunRecord>, StoreError> {
        Self::get(&mut self.failure, self.tx.runs, &layout::run_key(id))?
            .map(|b| decode(&b, "run", || id.to_string()))
            .transpose()
    }

    fn event(&mut self, run: RunId, seq: u64) -> Result<Option<Event>, StoreError> {
        Self::get(
            &mut self.failure,
            self.tx.events,
            &layout::event_key(run, seq),
        )?
        .map(|b| decode_event(&b, run, seq))
        .transpose()
    }

    fn op(&mut self, run: RunId, id: &CorrelationId) -> Result<Option<OpState>, StoreError> {
        Self::get(&mut self.failure, self.tx.ops, &layout::op_key(run, id))?
            .map(|b| decode(&b, "operation", || format!("{run}/{id}")))
            .transpose()
    }

    fn token(&mut self, token: &HookToken) -> Result<Option<TokenOwner>, StoreError> {
        Self::get(&mut self.failure, self.tx.tokens, token.as_str().as_bytes())?
            .map(|b| decode(&b, "token owner", || format!("{token:?}")))
            .transpose()
    }

    fn run_hooks(&mut self, run: RunId) -> Result<Vec<HookRecord>, StoreError> {
        Ok(
            Self::get(&mut self.failure, self.tx.run_hooks, &layout::run_key(run))?
                .map(|b| decode(&b, "hook list", || run.to_string()))
                .transpose()?
                .unwrap_or_default(),
        )
    }

    fn queue(&mut self, run: RunId) -> Result<Option<QueueEntry>, StoreError> {
        Self::get(&mut self.failure, self.tx.queue, &layout::run_key(run))?
            .map(|b| decode(&b, "queue entry", || run.to_string()))
            .transpose()
    }

    fn streams(&mut self, run: RunId) -> Result<Option<RunStreams>, StoreError> {
        Self::get(&mut self.failure, self.tx.streams, &layout::run_key(run))?
            .map(|b| decode(&b, "streams record", || run.to_string()))
            .transpose()
    }
}

/// Applies encoded writes in the transaction.
fn apply_writes(tx: &TxTrees<'_>, writes: &[Write]) -> Result<(), TxError> {
    for (target, key, value) in writes {
        let tree = match target {
            Table::Runs => tx.runs,
            Table::Events => tx.events,
            Table::Ops => tx.ops,
            Table::Tokens => tx.tokens,
            Table::RunHooks => tx.run_hooks,
            Table::Queue => tx.queue,
            Table::Due => tx.due,
            Table::Status => tx.status,
            Table::Workflows => tx.workflows,
            Table::Streams => tx.streams,
            Table::Chunks => tx.chunks,
        };
        match value {
            Some(value) => tree.insert(key.as_slice(), value.as_slice())?,
            None => tree.remove(key.as_slice())?,
        };
    }
    Ok(())
}
