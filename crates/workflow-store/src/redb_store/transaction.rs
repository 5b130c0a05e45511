//! Writes of [`super::RedbStore`] inside one redb write transaction: the
//! shared rules ([`crate::backend`]) read through a [`TxView`] of the
//! transaction's tables, and their [`Changes`] are written, with the due and
//! status indexes, into the same transaction. The writer thread
//! (`group_commit.rs`) puts the writes of several writers in one transaction.

use std::path::Path;

use redb::{Durability, ReadableDatabase, ReadableTable, WriteTransaction};
use tokio::sync::oneshot;

use super::damage::redb_error;
use super::layout::{self, decode, decode_event};
use crate::apply::{Changes, ReadView, Staged};
use crate::error::StoreError;
use crate::event::{Event, Timestamp};
use crate::id::{CorrelationId, HookToken, RunId};
use crate::kv::{encode_changes, Table, Write};
use crate::record::{Change, HookRecord, OpState, QueueEntry, RunRecord, TokenOwner};
use crate::stream::RunStreams;
use crate::wal::{Wal, WAL_LSN_KEY};

/// One table of a write transaction.
type TxTable<'txn> = redb::Table<'txn, &'static [u8], &'static [u8]>;

/// The tables a write transaction spans, opened once per batch (redb allows
/// one handle per table and transaction), in the order of [`Table::ALL`].
pub(crate) struct TxTables<'txn> {
    tables: Vec<TxTable<'txn>>,
}

impl<'txn> TxTables<'txn> {
    fn open(txn: &'txn WriteTransaction, file: &Path) -> Result<Self, StoreError> {
        let mut tables = Vec::with_capacity(Table::ALL.len());
        for table in Table::ALL {
            tables.push(txn.open_table(layout::def(table)).map_err(|e| {
                redb_error(
                    file,
                    "opening a table for writing",
                    Some(&format_args!("table {:?}", table.name())),
                    e,
                )
            })?);
        }
        Ok(TxTables { tables })
    }

    fn table(&self, table: Table) -> &TxTable<'txn> {
        &self.tables[table_slot(table)]
    }

    /// Writes encoded changes into the transaction. A failure here leaves the
    /// transaction with part of a job in it: the caller must not commit it.
    fn apply(&mut self, writes: &[Write], file: &Path) -> Result<(), StoreError> {
        for (target, key, value) in writes {
            let table = &mut self.tables[table_slot(*target)];
            let done = match value {
                Some(value) => table.insert(key.as_slice(), value.as_slice()).map(drop),
                None => table.remove(key.as_slice()).map(drop),
            };
            done.map_err(|e| {
                redb_error(
                    file,
                    "writing",
                    Some(&format_args!(
                        "table {:?}, key {}",
                        target.name(),
                        layout::hex(key)
                    )),
                    e,
                )
            })?;
        }
        Ok(())
    }
}

/// The slot of `table` in a write transaction's tables: its position in
/// [`Table::ALL`]. Exhaustive (a unit test checks the order), so a new
/// table cannot silently write into another one.
pub(crate) fn table_slot(table: Table) -> usize {
    match table {
        Table::Runs => 0,
        Table::Events => 1,
        Table::Ops => 2,
        Table::Tokens => 3,
        Table::RunHooks => 4,
        Table::Queue => 5,
        Table::Due => 6,
        Table::Status => 7,
        Table::Workflows => 8,
        Table::Streams => 9,
        Table::Chunks => 10,
    }
}

/// Reads by key inside the batch's transaction, for [`crate::backend`]: a job
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
        self.get(self.tables.table(Table::Runs), "runs", &layout::run_key(id))?
            .map(|b| decode(&b, "run", || id.to_string()))
            .transpose()
    }

    fn event(&mut self, run: RunId, seq: u64) -> Result<Option<Event>, StoreError> {
        self.get(
            self.tables.table(Table::Events),
            "events",
            &layout::event_key(run, seq),
        )?
        .map(|b| decode_event(&b, run, seq))
        .transpose()
    }

    fn op(&mut self, run: RunId, id: &CorrelationId) -> Result<Option<OpState>, StoreError> {
        self.get(
            self.tables.table(Table::Ops),
            "ops",
            &layout::op_key(run, id),
        )?
        .map(|b| decode(&b, "operation", || format!("{run}/{id}")))
        .transpose()
    }

    fn token(&mut self, token: &HookToken) -> Result<Option<TokenOwner>, StoreError> {
        self.get(
            self.tables.table(Table::Tokens),
            "tokens",
            token.as_str().as_bytes(),
        )?
        .map(|b| decode(&b, "token owner", || format!("{token:?}")))
        .transpose()
    }

    fn run_hooks(&mut self, run: RunId) -> Result<Vec<HookRecord>, StoreError> {
        Ok(self
            .get(
                self.tables.table(Table::RunHooks),
                "run_hooks",
                &layout::run_key(run),
            )?
            .map(|b| decode(&b, "hook list", || run.to_string()))
            .transpose()?
            .unwrap_or_default())
    }

    fn queue(&mut self, run: RunId) -> Result<Option<QueueEntry>, StoreError> {
        self.get(
            self.tables.table(Table::Queue),
            "queue",
            &layout::run_key(run),
        )?
        .map(|b| decode(&b, "queue entry", || run.to_string()))
        .transpose()
    }

    fn streams(&mut self, run: RunId) -> Result<Option<RunStreams>, StoreError> {
        self.get(
            self.tables.table(Table::Streams),
            "streams",
            &layout::run_key(run),
        )?
        .map(|b| decode(&b, "streams record", || run.to_string()))
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
    /// Whether the job's batch must be committed durably (all but lease
    /// renewals, see [`job`]).
    fn durable(&self) -> bool;
}

/// A [`Job`] for an operation with value `T`.
struct TypedJob<T, F> {
    op: Option<F>,
    durable: bool,
    outcome: Option<Result<T, StoreError>>,
    done: oneshot::Sender<Result<T, StoreError>>,
}

/// The writer's end of a job: resolves once the job's batch is committed.
pub(crate) struct Completion<T>(oneshot::Receiver<Result<T, StoreError>>);

/// A job for `op`, and the completion its writer awaits. `durable: false`
/// is for a write that need not be durable when acknowledged: a batch of
/// such jobs only is committed with [`Durability::None`], which the next
/// durable commit (of any batch) persists. Used for lease renewals; see
/// "Leases" in the `redb_store` module docs.
pub(crate) fn job<T: Send + 'static>(
    op: impl WriteOp<T>,
    durable: bool,
) -> (Box<dyn Job>, Completion<T>) {
    let (done, rx) = oneshot::channel();
    let job = TypedJob {
        op: Some(op),
        durable,
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

    fn durable(&self) -> bool {
        self.durable
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
/// write transaction (each job sees the writes of the jobs before it),
/// appends the batch's writes to the write-ahead log (synced unless every job
/// is a lease renewal), and only then commits the transaction, without a
/// sync of its own ([`Durability::None`]; see `wal.rs`): readers see the
/// batch once it is durable. Returns the notifications of the jobs that
/// wrote; each job keeps its own outcome for [`Job::answer`].
///
/// A job whose rules fail writes nothing and keeps its own error. An error of
/// redb itself (opening, writing or committing) or of the log is returned:
/// the transaction is then dropped uncommitted (its log record taken back),
/// and every job of the batch must fail.
pub(crate) fn commit_batch(
    db: &redb::Database,
    file: &Path,
    wal: &mut Wal,
    now: Timestamp,
    jobs: &mut [Box<dyn Job>],
) -> Result<Vec<Change>, StoreError> {
    let mut txn = db
        .begin_write()
        .map_err(|e| redb_error(file, "starting a write transaction", None, e))?;
    txn.set_durability(Durability::None)
        .map_err(|e| redb_error(file, "setting the commit's durability", None, e))?;
    let durable = jobs.iter().any(|j| j.durable());
    let mut notify = Vec::new();
    let mut logged = Vec::new();
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
                Ok(mut writes) => {
                    tables.apply(&writes, file)?;
                    logged.append(&mut writes);
                    notify.append(&mut changes.notify);
                }
                Err(e) => job.reject(e),
            }
        }
    }
    if logged.is_empty() {
        // Nothing written (every job failed its rules): nothing to log.
        return Ok(notify);
    }
    let record_start = wal.len();
    let lsn = wal.next_lsn();
    {
        let mut meta = txn
            .open_table(layout::META)
            .map_err(|e| redb_error(file, "opening table \"meta\"", None, e))?;
        meta.insert(WAL_LSN_KEY, lsn.to_be_bytes().as_slice())
            .map_err(|e| redb_error(file, "recording the batch's log position", None, e))?;
    }
    wal.append(&logged, durable)?;
    if let Err(e) = txn.commit() {
        // Not in the database: not in the log either.
        wal.take_back(record_start)?;
        return Err(redb_error(file, "committing writes", None, e));
    }
    Ok(notify)
}

/// Writes the records of the write-ahead log a crash left unapplied into the
/// database, and commits them durably with the log position of the last.
pub(crate) fn replay(
    db: &redb::Database,
    file: &Path,
    records: &[crate::wal::Record],
) -> Result<(), StoreError> {
    let Some((last, _)) = records.last() else {
        return Ok(());
    };
    let mut txn = db
        .begin_write()
        .map_err(|e| redb_error(file, "starting the replay of the write-ahead log", None, e))?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| redb_error(file, "setting the commit's durability", None, e))?;
    {
        let mut tables = TxTables::open(&txn, file)?;
        for (_, writes) in records {
            tables.apply(writes, file)?;
        }
    }
    {
        let mut meta = txn
            .open_table(layout::META)
            .map_err(|e| redb_error(file, "opening table \"meta\"", None, e))?;
        meta.insert(WAL_LSN_KEY, last.to_be_bytes().as_slice())
            .map_err(|e| redb_error(file, "recording the replayed log position", None, e))?;
    }
    txn.commit()
        .map_err(|e| redb_error(file, "committing the replayed write-ahead log", None, e))
}

/// Makes every commit so far durable (one synced commit), after which the
/// write-ahead log is emptied: a checkpoint.
pub(crate) fn checkpoint(
    db: &redb::Database,
    file: &Path,
    wal: &mut Wal,
) -> Result<(), StoreError> {
    let mut txn = db
        .begin_write()
        .map_err(|e| redb_error(file, "starting a checkpoint", None, e))?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| redb_error(file, "setting the checkpoint's durability", None, e))?;
    txn.commit()
        .map_err(|e| redb_error(file, "committing a checkpoint", None, e))?;
    wal.reset()
}

/// The log position of the last batch the database holds (0 for none).
pub(crate) fn applied_lsn(db: &redb::Database, file: &Path) -> Result<u64, StoreError> {
    let txn = db
        .begin_read()
        .map_err(|e| redb_error(file, "starting a read transaction", None, e))?;
    let meta = txn
        .open_table(layout::META)
        .map_err(|e| redb_error(file, "opening table \"meta\"", None, e))?;
    let found = meta
        .get(WAL_LSN_KEY)
        .map_err(|e| redb_error(file, "reading the log position", None, e))?;
    match found {
        None => Ok(0),
        Some(v) => {
            let bytes: [u8; 8] = v.value().try_into().map_err(|_| StoreError::Damaged {
                location: format!("the redb database {}", file.display()),
                detail: "the recorded write-ahead log position is not 8 bytes".into(),
            })?;
            Ok(u64::from_be_bytes(bytes))
        }
    }
}
