//! Writes of [`super::RedbStore`] inside one redb write transaction: the
//! shared rules ([`crate::apply`]) read through a [`TxView`] of the
//! transaction's tables, and their [`Changes`] are written, with the due and
//! status indexes, into the same transaction. The writer thread
//! (`group_commit.rs`) puts the writes of several writers in one transaction.

use std::path::Path;

use redb::{Durability, ReadableTable, Table, WriteTransaction};
use tokio::sync::oneshot;

use super::damage::redb_error;
use super::layout::{self, decode, decode_event, Def};
use crate::apply::{Changes, ReadView, Staged};
use crate::codec;
use crate::error::StoreError;
use crate::event::{Event, Timestamp};
use crate::id::{CorrelationId, HookToken, RunId};
use crate::record::{Change, HookRecord, OpState, QueueEntry, RunRecord, TokenOwner};

/// One table of a write transaction.
type TxTable<'txn> = Table<'txn, &'static [u8], &'static [u8]>;

/// The tables a write transaction spans, opened once per batch (redb allows
/// one handle per table and transaction).
pub(crate) struct TxTables<'txn> {
    runs: TxTable<'txn>,
    events: TxTable<'txn>,
    ops: TxTable<'txn>,
    tokens: TxTable<'txn>,
    run_hooks: TxTable<'txn>,
    queue: TxTable<'txn>,
    due: TxTable<'txn>,
    status: TxTable<'txn>,
}

impl<'txn> TxTables<'txn> {
    fn open(txn: &'txn WriteTransaction, file: &Path) -> Result<Self, StoreError> {
        let open = |def: Def| {
            txn.open_table(def).map_err(|e| {
                redb_error(
                    file,
                    "opening a table for writing",
                    Some(&format_args!("table {:?}", redb::TableHandle::name(&def))),
                    e,
                )
            })
        };
        Ok(TxTables {
            runs: open(layout::RUNS)?,
            events: open(layout::EVENTS)?,
            ops: open(layout::OPS)?,
            tokens: open(layout::TOKENS)?,
            run_hooks: open(layout::RUN_HOOKS)?,
            queue: open(layout::QUEUE)?,
            due: open(layout::DUE)?,
            status: open(layout::STATUS)?,
        })
    }

    fn table(&mut self, target: Target) -> (&mut TxTable<'txn>, &'static str) {
        match target {
            Target::Runs => (&mut self.runs, "runs"),
            Target::Events => (&mut self.events, "events"),
            Target::Ops => (&mut self.ops, "ops"),
            Target::Tokens => (&mut self.tokens, "tokens"),
            Target::RunHooks => (&mut self.run_hooks, "run_hooks"),
            Target::Queue => (&mut self.queue, "queue"),
            Target::Due => (&mut self.due, "due"),
            Target::Status => (&mut self.status, "status"),
        }
    }

    /// Writes encoded changes into the transaction. A failure here leaves the
    /// transaction with part of a job in it: the caller must not commit it.
    fn apply(&mut self, writes: &[Write], file: &Path) -> Result<(), StoreError> {
        for (target, key, value) in writes {
            let (table, name) = self.table(*target);
            let done = match value {
                Some(value) => table.insert(key.as_slice(), value.as_slice()).map(drop),
                None => table.remove(key.as_slice()).map(drop),
            };
            done.map_err(|e| {
                redb_error(
                    file,
                    "writing",
                    Some(&format_args!("table {name:?}, key {}", layout::hex(key))),
                    e,
                )
            })?;
        }
        Ok(())
    }
}

/// Reads by key inside the batch's transaction, for [`crate::apply`]: a job
/// sees every write of the jobs before it in its batch.
pub(crate) struct TxView<'a, 'txn> {
    tables: &'a TxTables<'txn>,
    file: &'a Path,
}

impl TxView<'_, '_> {
    fn get(
        &self,
        table: &TxTable<'_>,
        name: &str,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        match table.get(key) {
            Ok(found) => Ok(found.map(|v| v.value().to_vec())),
            Err(e) => Err(redb_error(
                self.file,
                "reading in a write transaction",
                Some(&format_args!("table {name:?}, key {}", layout::hex(key))),
                e,
            )),
        }
    }
}

impl ReadView for TxView<'_, '_> {
    fn run(&mut self, id: RunId) -> Result<Option<RunRecord>, StoreError> {
        self.get(&self.tables.runs, "runs", &layout::run_key(id))?
            .map(|b| decode(&b, "run", || id.to_string()))
            .transpose()
    }

    fn event(&mut self, run: RunId, seq: u64) -> Result<Option<Event>, StoreError> {
        self.get(&self.tables.events, "events", &layout::event_key(run, seq))?
            .map(|b| decode_event(&b, run, seq))
            .transpose()
    }

    fn op(&mut self, run: RunId, id: &CorrelationId) -> Result<Option<OpState>, StoreError> {
        self.get(&self.tables.ops, "ops", &layout::op_key(run, id))?
            .map(|b| decode(&b, "operation", || format!("{run}/{id}")))
            .transpose()
    }

    fn token(&mut self, token: &HookToken) -> Result<Option<TokenOwner>, StoreError> {
        self.get(&self.tables.tokens, "tokens", token.as_str().as_bytes())?
            .map(|b| decode(&b, "token owner", || format!("{token:?}")))
            .transpose()
    }

    fn run_hooks(&mut self, run: RunId) -> Result<Vec<HookRecord>, StoreError> {
        Ok(self
            .get(&self.tables.run_hooks, "run_hooks", &layout::run_key(run))?
            .map(|b| decode(&b, "hook list", || run.to_string()))
            .transpose()?
            .unwrap_or_default())
    }

    fn queue(&mut self, run: RunId) -> Result<Option<QueueEntry>, StoreError> {
        self.get(&self.tables.queue, "queue", &layout::run_key(run))?
            .map(|b| decode(&b, "queue entry", || run.to_string()))
            .transpose()
    }
}

/// A write operation: the shared rules, given the staged view of the batch's
/// transaction. Runs exactly once.
pub(crate) trait WriteOp<T>:
    FnOnce(&mut Staged<'_, TxView<'_, '_>>) -> Result<T, StoreError> + Send + 'static
{
}
impl<T, F> WriteOp<T> for F where
    F: FnOnce(&mut Staged<'_, TxView<'_, '_>>) -> Result<T, StoreError> + Send + 'static
{
}

/// One write waiting for the writer thread, with its type erased.
pub(crate) trait Job: Send {
    /// Runs the rules at `now` over `view`. Returns the changes to write if
    /// they passed; otherwise the job keeps its error and stages nothing.
    fn run(&mut self, view: &mut TxView<'_, '_>, now: Timestamp) -> Option<Changes>;
    /// The job's changes could not be encoded: it fails alone with `e`.
    fn reject(&mut self, e: StoreError);
    /// Answers the writer: with the job's own outcome once the batch is
    /// committed, or with `failure` if the batch as a whole failed.
    fn answer(self: Box<Self>, failure: Option<StoreError>);
}

/// A [`Job`] for an operation with value `T`.
struct TypedJob<T, F> {
    op: Option<F>,
    outcome: Option<Result<T, StoreError>>,
    done: oneshot::Sender<Result<T, StoreError>>,
}

/// The writer's end of a job: resolves once the job's batch is committed.
pub(crate) struct Completion<T>(oneshot::Receiver<Result<T, StoreError>>);

/// A job for `op`, and the completion its writer awaits.
pub(crate) fn job<T: Send + 'static>(op: impl WriteOp<T>) -> (Box<dyn Job>, Completion<T>) {
    let (done, rx) = oneshot::channel();
    let job = TypedJob {
        op: Some(op),
        outcome: None,
        done,
    };
    (Box::new(job), Completion(rx))
}

impl<T: Send + 'static, F: WriteOp<T>> Job for TypedJob<T, F> {
    fn run(&mut self, view: &mut TxView<'_, '_>, now: Timestamp) -> Option<Changes> {
        let op = self.op.take()?;
        let mut staged = Staged::new(view, now);
        let result = op(&mut staged);
        let changes = staged.into_changes();
        match result {
            Ok(value) => {
                self.outcome = Some(Ok(value));
                Some(changes)
            }
            Err(e) => {
                self.outcome = Some(Err(e));
                None
            }
        }
    }

    fn reject(&mut self, e: StoreError) {
        self.outcome = Some(Err(e));
    }

    fn answer(self: Box<Self>, failure: Option<StoreError>) {
        let outcome = match (failure, self.outcome) {
            (Some(e), _) => Err(e),
            (None, Some(outcome)) => outcome,
            (None, None) => Err(StoreError::Backend {
                message: "internal error: a write was answered without being run".into(),
                source: None,
            }),
        };
        // A writer that stopped waiting (its future was dropped) is fine:
        // the write is committed, only not acknowledged.
        let _ = self.done.send(outcome);
    }
}

impl<T> Completion<T> {
    /// The write's value once its batch is committed (durably), or why it failed.
    pub(crate) async fn outcome(self) -> Result<T, StoreError> {
        self.0.await.unwrap_or_else(|_| {
            Err(StoreError::Backend {
                message: "the store's writer thread stopped before answering this write (see \
                          the log): it may or may not have been recorded; read the run before \
                          retrying"
                    .into(),
                source: None,
            })
        })
    }
}

/// Commits a batch: runs each job's rules at time `now`, in order, in one
/// write transaction (each job sees the writes of the jobs before it), and
/// commits it with [`Durability::Immediate`]. Returns the notifications of
/// the jobs that wrote; each job keeps its own outcome for
/// [`Job::answer`].
///
/// A job whose rules fail writes nothing and keeps its own error. An error of
/// redb itself (opening, writing or committing) is returned: the transaction
/// is then dropped uncommitted, and every job of the batch must fail.
pub(crate) fn commit_batch(
    db: &redb::Database,
    file: &Path,
    now: Timestamp,
    jobs: &mut [Box<dyn Job>],
) -> Result<Vec<Change>, StoreError> {
    let mut txn = db
        .begin_write()
        .map_err(|e| redb_error(file, "starting a write transaction", None, e))?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| redb_error(file, "setting the commit's durability", None, e))?;
    let mut notify = Vec::new();
    {
        let mut tables = TxTables::open(&txn, file)?;
        for job in jobs.iter_mut() {
            let mut view = TxView {
                tables: &tables,
                file,
            };
            let Some(mut changes) = job.run(&mut view, now) else {
                continue;
            };
            match encode_changes(&changes) {
                Ok(writes) => {
                    tables.apply(&writes, file)?;
                    notify.append(&mut changes.notify);
                }
                Err(e) => job.reject(e),
            }
        }
    }
    txn.commit()
        .map_err(|e| redb_error(file, "committing writes", None, e))?;
    Ok(notify)
}

fn encode<T: serde::Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, StoreError> {
    Ok(codec::encode_record(value)?)
}

/// Which table a write goes to.
#[derive(Clone, Copy)]
enum Target {
    Runs,
    Events,
    Ops,
    Tokens,
    RunHooks,
    Queue,
    Due,
    Status,
}

/// One key to set (`Some`) or delete (`None`).
type Write = (Target, Vec<u8>, Option<Vec<u8>>);

/// Encodes a change set as writes, with the due and status index keys that keep
/// the indexes in step with it. Pure: an encoding failure writes nothing.
fn encode_changes(changes: &Changes) -> Result<Vec<Write>, StoreError> {
    let mut w: Vec<Write> = Vec::with_capacity(8);
    for (id, (before, rec)) in &changes.runs {
        w.push((
            Target::Runs,
            layout::run_key(*id).to_vec(),
            Some(encode(rec)?),
        ));
        if *before != Some(rec.status) {
            if let Some(before) = before {
                w.push((
                    Target::Status,
                    layout::status_key(*before, *id).to_vec(),
                    None,
                ));
            }
            w.push((
                Target::Status,
                layout::status_key(rec.status, *id).to_vec(),
                Some(Vec::new()),
            ));
        }
    }
    for (run, event) in &changes.events {
        w.push((
            Target::Events,
            layout::event_key(*run, event.seq).to_vec(),
            Some(codec::encode_event(event)?),
        ));
    }
    for ((run, id), state) in &changes.ops {
        w.push((Target::Ops, layout::op_key(*run, id), Some(encode(state)?)));
    }
    for (token, owner) in &changes.tokens {
        let value = owner.as_ref().map(encode).transpose()?;
        w.push((Target::Tokens, token.as_str().as_bytes().to_vec(), value));
    }
    for (run, hooks) in &changes.run_hooks {
        w.push((
            Target::RunHooks,
            layout::run_key(*run).to_vec(),
            Some(encode(hooks)?),
        ));
    }
    for (run, (before, entry)) in &changes.queue {
        let after = entry.as_ref().and_then(QueueEntry::effective_due);
        if *before != after {
            if let Some(at) = before {
                w.push((Target::Due, layout::due_key(*at, *run).to_vec(), None));
            }
            if let Some(at) = after {
                w.push((
                    Target::Due,
                    layout::due_key(at, *run).to_vec(),
                    Some(Vec::new()),
                ));
            }
        }
        let value = entry.as_ref().map(encode).transpose()?;
        w.push((Target::Queue, layout::run_key(*run).to_vec(), value));
    }
    Ok(w)
}
