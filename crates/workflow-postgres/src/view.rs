//! The bridge between SQL rows and the shared rules of [`workflow_store::backend`].
//!
//! `apply` reads through the synchronous [`ReadView`] trait, so a write first
//! *prefetches* what it will read into a [`View`] (inside its transaction, after
//! locking the run's row). A read the prefetch did not cover is recorded as
//! missing and fails the rule with a placeholder error; the caller then fetches
//! the missing keys and runs the rule again from scratch (rules are pure
//! functions of the view, so a rerun is exact). Then [`write_changes`] turns the
//! staged [`Changes`] into SQL in the same transaction.

use std::collections::{BTreeMap, HashMap};

use deadpool_postgres::GenericClient;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use workflow_store::backend::{Changes, ReadView};
use workflow_store::backend::{ChunkKey, OpKind, OpState, QueueEntry, RunStreams, TokenOwner};
use workflow_store::{
    codec, CorrelationId, ErrorRecord, Event, HookRecord, HookToken, Lease, LeaseId, Payload,
    RunId, RunRecord, RunStatus, StoreError, Timestamp,
};

use crate::pg::{self, corrupt, to_i64, to_u64, Uuid};
use crate::schema::Sql;
use crate::tx::{p, Step, Tx};

/// A failed step of a transaction: PostgreSQL's error (perhaps retryable) or
/// the store's own.
#[derive(Debug)]
pub(crate) enum TxError {
    /// From PostgreSQL.
    Pg(tokio_postgres::Error),
    /// From the store (a rule, a corrupt row, the pool).
    Store(StoreError),
}

impl From<tokio_postgres::Error> for TxError {
    fn from(e: tokio_postgres::Error) -> Self {
        TxError::Pg(e)
    }
}

impl From<workflow_store::CodecError> for TxError {
    fn from(e: workflow_store::CodecError) -> Self {
        TxError::Store(StoreError::Codec(e))
    }
}

impl From<StoreError> for TxError {
    fn from(e: StoreError) -> Self {
        TxError::Store(e)
    }
}

/// The first error of pipelined statements that is a cause, not a consequence:
/// once one statement fails, those after it fail with "transaction aborted".
fn first_cause<T>(results: Vec<Result<T, TxError>>) -> Result<Vec<T>, TxError> {
    let mut oks = Vec::with_capacity(results.len());
    let mut consequence = None;
    for r in results {
        match r {
            Ok(v) => oks.push(v),
            Err(TxError::Pg(e)) if e.code() == Some(&SqlState::IN_FAILED_SQL_TRANSACTION) => {
                consequence.get_or_insert(TxError::Pg(e));
            }
            Err(e) => return Err(e),
        }
    }
    match consequence {
        Some(e) => Err(e),
        None => Ok(oks),
    }
}

/// Runs a cached prepared statement (reads outside write transactions).
pub(crate) async fn query(
    c: &(impl GenericClient + ?Sized),
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, tokio_postgres::Error> {
    let st = c.prepare_cached(sql).await?;
    c.query(&st, params).await
}

/// Something a rule may read.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    /// A run's row (not locked).
    Run(RunId),
    /// One event.
    Event(RunId, u64),
    /// An operation's state.
    Op(RunId, CorrelationId),
    /// A token's owner.
    Token(HookToken),
    /// A run's hooks.
    Hooks(RunId),
    /// A run's queue row, locked `FOR UPDATE`.
    Queue(RunId),
    /// A run's streams record.
    Streams(RunId),
}

/// What a write has read, as of its transaction; the [`ReadView`] of `apply`.
#[derive(Debug, Default)]
pub(crate) struct View {
    pub(crate) runs: HashMap<RunId, Option<RunRecord>>,
    events: HashMap<(RunId, u64), Option<Event>>,
    ops: HashMap<(RunId, CorrelationId), Option<OpState>>,
    pub(crate) tokens: HashMap<HookToken, Option<TokenOwner>>,
    hooks: HashMap<RunId, Vec<HookRecord>>,
    pub(crate) queue: HashMap<RunId, Option<QueueEntry>>,
    streams: HashMap<RunId, Option<RunStreams>>,
    missing: Vec<Key>,
}

impl View {
    fn miss(&mut self, key: Key) -> StoreError {
        self.missing.push(key);
        StoreError::Backend {
            message: "internal: a read of the PostgreSQL store was not prefetched".into(),
            source: None,
        }
    }

    /// The keys rules asked for that were not there (and forgets them).
    pub(crate) fn take_missing(&mut self) -> Vec<Key> {
        std::mem::take(&mut self.missing)
    }

    fn has(&self, key: &Key) -> bool {
        match key {
            Key::Run(r) => self.runs.contains_key(r),
            Key::Event(r, s) => self.events.contains_key(&(*r, *s)),
            Key::Op(r, c) => self.ops.contains_key(&(*r, c.clone())),
            Key::Token(t) => self.tokens.contains_key(t),
            Key::Hooks(r) => self.hooks.contains_key(r),
            Key::Queue(r) => self.queue.contains_key(r),
            Key::Streams(r) => self.streams.contains_key(r),
        }
    }
}

impl ReadView for View {
    fn run(&mut self, id: RunId) -> Result<Option<RunRecord>, StoreError> {
        match self.runs.get(&id) {
            Some(r) => Ok(r.clone()),
            None => Err(self.miss(Key::Run(id))),
        }
    }
    fn event(&mut self, run: RunId, seq: u64) -> Result<Option<Event>, StoreError> {
        match self.events.get(&(run, seq)) {
            Some(e) => Ok(e.clone()),
            None => Err(self.miss(Key::Event(run, seq))),
        }
    }
    fn op(&mut self, run: RunId, id: &CorrelationId) -> Result<Option<OpState>, StoreError> {
        match self.ops.get(&(run, id.clone())) {
            Some(o) => Ok(*o),
            None => Err(self.miss(Key::Op(run, id.clone()))),
        }
    }
    fn token(&mut self, token: &HookToken) -> Result<Option<TokenOwner>, StoreError> {
        match self.tokens.get(token) {
            Some(o) => Ok(o.clone()),
            None => Err(self.miss(Key::Token(token.clone()))),
        }
    }
    fn run_hooks(&mut self, run: RunId) -> Result<Vec<HookRecord>, StoreError> {
        match self.hooks.get(&run) {
            Some(h) => Ok(h.clone()),
            None => Err(self.miss(Key::Hooks(run))),
        }
    }
    fn queue(&mut self, run: RunId) -> Result<Option<QueueEntry>, StoreError> {
        match self.queue.get(&run) {
            Some(q) => Ok(q.clone()),
            None => Err(self.miss(Key::Queue(run))),
        }
    }
    fn streams(&mut self, run: RunId) -> Result<Option<RunStreams>, StoreError> {
        match self.streams.get(&run) {
            Some(s) => Ok(s.clone()),
            None => Err(self.miss(Key::Streams(run))),
        }
    }
}

/// How to take in the rows of one statement of a [`Batch`].
enum Decode {
    /// Keep the rows for the caller.
    Raw,
    /// A run's row (locked or not).
    Run(RunId),
    /// One event.
    Event(RunId, u64),
    /// Operation states of these correlation ids.
    Ops(RunId, Vec<CorrelationId>),
    /// Owners of these tokens.
    Tokens(Vec<HookToken>),
    /// A run's hooks.
    Hooks(RunId),
    /// A run's queue row.
    Queue(RunId),
    /// A run's streams record.
    Streams(RunId),
}

/// Statements sent together, and how their rows go into a [`View`].
#[derive(Default)]
pub(crate) struct Batch<'a> {
    steps: Vec<Step<'a>>,
    decodes: Vec<Decode>,
}

impl<'a> Batch<'a> {
    /// A statement whose rows are returned by [`Batch::run`].
    pub(crate) fn raw(&mut self, step: Step<'a>) -> &mut Self {
        self.steps.push(step);
        self.decodes.push(Decode::Raw);
        self
    }

    /// Locks a run's row (`FOR UPDATE`) and reads it into the view.
    pub(crate) fn lock_run(&mut self, sql: &'a Sql, run: RunId) -> &mut Self {
        self.steps
            .push(Step::Query(&sql.run_lock, vec![p(Uuid(run.as_u128()))]));
        self.decodes.push(Decode::Run(run));
        self
    }

    /// Reads `keys` (those not in `view` yet).
    pub(crate) fn fetch(&mut self, sql: &'a Sql, view: &View, keys: Vec<Key>) -> &mut Self {
        let mut ops: BTreeMap<RunId, Vec<CorrelationId>> = BTreeMap::new();
        let mut tokens: Vec<HookToken> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for key in keys {
            if view.has(&key) || !seen.insert(key.clone()) {
                continue;
            }
            let id = |run: RunId| p(Uuid(run.as_u128()));
            match key {
                Key::Run(run) => {
                    self.steps.push(Step::Query(&sql.run_get, vec![id(run)]));
                    self.decodes.push(Decode::Run(run));
                }
                Key::Event(run, seq) => {
                    self.steps
                        .push(Step::Query(&sql.event_get, vec![id(run), p(to_i64(seq))]));
                    self.decodes.push(Decode::Event(run, seq));
                }
                Key::Op(run, c) => ops.entry(run).or_default().push(c),
                Key::Token(t) => tokens.push(t),
                Key::Hooks(run) => {
                    self.steps.push(Step::Query(&sql.hooks_get, vec![id(run)]));
                    self.decodes.push(Decode::Hooks(run));
                }
                Key::Queue(run) => {
                    self.steps.push(Step::Query(&sql.queue_lock, vec![id(run)]));
                    self.decodes.push(Decode::Queue(run));
                }
                Key::Streams(run) => {
                    self.steps
                        .push(Step::Query(&sql.streams_get, vec![id(run)]));
                    self.decodes.push(Decode::Streams(run));
                }
            }
        }
        for (run, ids) in ops {
            let names: Vec<String> = ids.iter().map(|c| c.as_str().to_owned()).collect();
            self.steps.push(Step::Query(
                &sql.ops_get,
                vec![p(Uuid(run.as_u128())), p(names)],
            ));
            self.decodes.push(Decode::Ops(run, ids));
        }
        if !tokens.is_empty() {
            let names: Vec<String> = tokens.iter().map(|t| t.as_str().to_owned()).collect();
            self.steps
                .push(Step::Query(&sql.tokens_get, vec![p(names)]));
            self.decodes.push(Decode::Tokens(tokens));
        }
        self
    }

    /// Whether there is nothing to send.
    pub(crate) fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Sends the batch, reads the answers into `view`, and returns the rows
    /// of the [`Batch::raw`] statements.
    pub(crate) async fn run(self, tx: &Tx, view: &mut View) -> Result<Vec<Vec<Row>>, TxError> {
        let results = tx.run(&self.steps).await?;
        let results = first_cause(
            results
                .into_iter()
                .map(|r| r.map_err(TxError::Pg))
                .collect(),
        )?;
        let mut raw = Vec::new();
        for (rows, decode) in results.into_iter().zip(self.decodes) {
            match decode {
                Decode::Raw => raw.push(rows),
                Decode::Run(run) => {
                    view.runs
                        .insert(run, rows.first().map(decode_run).transpose()?);
                }
                Decode::Event(run, seq) => {
                    let e = rows.first().map(|r| decode_event(run, r)).transpose()?;
                    view.events.insert((run, seq), e);
                }
                Decode::Ops(run, asked) => {
                    for id in asked {
                        view.ops.insert((run, id), None);
                    }
                    for row in &rows {
                        let (id, state) = decode_op(run, row)?;
                        view.ops.insert((run, id), Some(state));
                    }
                }
                Decode::Tokens(asked) => {
                    for t in asked {
                        view.tokens.insert(t, None);
                    }
                    for row in &rows {
                        let (t, owner) = decode_token(row)?;
                        view.tokens.insert(t, Some(owner));
                    }
                }
                Decode::Hooks(run) => {
                    let hooks = rows
                        .iter()
                        .map(|r| decode_hook(run, r))
                        .collect::<Result<_, _>>()?;
                    view.hooks.insert(run, hooks);
                }
                Decode::Queue(run) => {
                    let q = rows.first().map(decode_queue).transpose()?.map(|(_, e)| e);
                    view.queue.insert(run, q);
                }
                Decode::Streams(run) => {
                    let s = rows.first().map(|r| decode_streams(run, r)).transpose()?;
                    view.streams.insert(run, s);
                }
            }
        }
        Ok(raw)
    }
}

fn col<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    i: usize,
    what: &'static str,
    key: &dyn Fn() -> String,
) -> Result<T, StoreError> {
    row.try_get(i)
        .map_err(|e| corrupt(what, key(), format!("column {i}: {e}")))
}

fn uint(v: i64, what: &'static str, key: &dyn Fn() -> String) -> Result<u64, StoreError> {
    to_u64(v).ok_or_else(|| corrupt(what, key(), format!("negative value {v}")))
}

/// A `runs` row (columns as in `schema::RUN_COLS`).
pub(crate) fn decode_run(row: &Row) -> Result<RunRecord, StoreError> {
    let id: Uuid = col(row, 0, "run", &|| "runs row".into())?;
    let id = RunId::from_u128(id.0);
    let key = || format!("runs/{id}");
    let status: &str = col(row, 2, "run", &key)?;
    let status = RunStatus::ALL
        .into_iter()
        .find(|s| s.as_str() == status)
        .ok_or_else(|| corrupt("run", key(), format!("unknown status {status:?}")))?;
    let error: Option<&[u8]> = col(row, 3, "run", &key)?;
    let error = error
        .map(codec::decode_record::<ErrorRecord>)
        .transpose()
        .map_err(|source| StoreError::Corrupt {
            what: "run error",
            key: key(),
            source,
        })?;
    Ok(RunRecord {
        id,
        workflow: col(row, 1, "run", &key)?,
        status,
        error,
        created_at: Timestamp(uint(col(row, 4, "run", &key)?, "run", &key)?),
        updated_at: Timestamp(uint(col(row, 5, "run", &key)?, "run", &key)?),
        next_seq: uint(col(row, 6, "run", &key)?, "run", &key)?,
    })
}

/// An `events` row (`seq, body`) of `run`.
pub(crate) fn decode_event(run: RunId, row: &Row) -> Result<Event, StoreError> {
    let key = || format!("events/{run}");
    let seq: i64 = col(row, 0, "event", &key)?;
    let key = || format!("events/{run}/{seq}");
    let body: &[u8] = col(row, 1, "event", &key)?;
    let event = codec::decode_event(body).map_err(|source| StoreError::Corrupt {
        what: "event",
        key: key(),
        source,
    })?;
    if to_u64(seq) != Some(event.seq) {
        return Err(corrupt(
            "event",
            key(),
            format!("the record holds seq {}", event.seq),
        ));
    }
    Ok(event)
}

fn decode_op(run: RunId, row: &Row) -> Result<(CorrelationId, OpState), StoreError> {
    let key = || format!("ops/{run}");
    let id: &str = col(row, 0, "operation", &key)?;
    let key = || format!("ops/{run}/{id}");
    let cid = CorrelationId::new(id).map_err(|e| corrupt("operation", key(), e.to_string()))?;
    let kind: &str = col(row, 1, "operation", &key)?;
    let kind = match kind {
        "step" => OpKind::Step,
        "hook" => OpKind::Hook,
        "wait" => OpKind::Wait,
        "child" => OpKind::Child,
        "patch" => OpKind::Patch,
        other => {
            return Err(corrupt(
                "operation",
                key(),
                format!("unknown kind {other:?}"),
            ))
        }
    };
    let closed: bool = col(row, 2, "operation", &key)?;
    Ok((cid, OpState { kind, closed }))
}

fn op_kind_str(kind: OpKind) -> &'static str {
    match kind {
        OpKind::Step => "step",
        OpKind::Hook => "hook",
        OpKind::Wait => "wait",
        OpKind::Child => "child",
        OpKind::Patch => "patch",
    }
}

fn decode_token(row: &Row) -> Result<(HookToken, TokenOwner), StoreError> {
    let key = || "tokens row".to_owned();
    let token: &str = col(row, 0, "token", &key)?;
    let key = || format!("tokens/{token}");
    let t = HookToken::new(token).map_err(|e| corrupt("token", key(), e.to_string()))?;
    let run: Uuid = col(row, 1, "token", &key)?;
    let hook: &str = col(row, 2, "token", &key)?;
    let hook = CorrelationId::new(hook).map_err(|e| corrupt("token", key(), e.to_string()))?;
    let webhook: Option<&[u8]> = col(row, 3, "token", &key)?;
    let webhook = webhook
        .map(codec::decode_record)
        .transpose()
        .map_err(|source| StoreError::Corrupt {
            what: "token",
            key: key(),
            source,
        })?;
    Ok((
        t,
        TokenOwner {
            run_id: RunId::from_u128(run.0),
            hook,
            webhook,
        },
    ))
}

/// A `hooks` row (`hook, record`) of `run`.
pub(crate) fn decode_hook(run: RunId, row: &Row) -> Result<HookRecord, StoreError> {
    let key = || format!("hooks/{run}");
    let hook: &str = col(row, 0, "hook", &key)?;
    let key = || format!("hooks/{run}/{hook}");
    let record: &[u8] = col(row, 1, "hook", &key)?;
    codec::decode_record(record).map_err(|source| StoreError::Corrupt {
        what: "hook",
        key: key(),
        source,
    })
}

/// A `streams` row (`record`) of `run`.
pub(crate) fn decode_streams(run: RunId, row: &Row) -> Result<RunStreams, StoreError> {
    let key = || format!("streams/{run}");
    let record: &[u8] = col(row, 0, "streams record", &key)?;
    codec::decode_record(record).map_err(|source| StoreError::Corrupt {
        what: "streams record",
        key: key(),
        source,
    })
}

/// The key columns of chunk rows as arrays: stream, step, attempt, number.
pub(crate) type ChunkKeyArrays = (Vec<String>, Vec<String>, Vec<i64>, Vec<i64>);

/// The key columns of chunk rows, as the arrays the chunk statements take
/// (`$2` to `$5`: stream, step, attempt, number).
pub(crate) fn chunk_key_arrays<'k>(keys: impl Iterator<Item = &'k ChunkKey>) -> ChunkKeyArrays {
    let (mut streams, mut steps, mut attempts, mut ns) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for k in keys {
        streams.push(k.stream.as_str().to_owned());
        steps.push(k.writer.step.as_str().to_owned());
        attempts.push(i64::from(k.writer.attempt));
        ns.push(to_i64(k.n));
    }
    (streams, steps, attempts, ns)
}

/// A `queue` row (columns as in `schema::QUEUE_COLS`).
pub(crate) fn decode_queue(row: &Row) -> Result<(RunId, QueueEntry), StoreError> {
    let run: Uuid = col(row, 0, "queue entry", &|| "queue row".into())?;
    let run = RunId::from_u128(run.0);
    let key = || format!("queue/{run}");
    let what = "queue entry";
    let wake_gen = uint(col(row, 1, what, &key)?, what, &key)?;
    let wake_due: Option<i64> = col(row, 2, what, &key)?;
    let ids: Vec<String> = col(row, 3, what, &key)?;
    let dues: Vec<i64> = col(row, 4, what, &key)?;
    if ids.len() != dues.len() {
        return Err(corrupt(
            what,
            key(),
            format!("{} timer ids but {} due times", ids.len(), dues.len()),
        ));
    }
    let mut timers = BTreeMap::new();
    for (id, due) in ids.into_iter().zip(dues) {
        let id = CorrelationId::new(id).map_err(|e| corrupt(what, key(), e.to_string()))?;
        timers.insert(id, Timestamp(uint(due, what, &key)?));
    }
    let lease_id: Option<Uuid> = col(row, 5, what, &key)?;
    let lease_expires: Option<i64> = col(row, 6, what, &key)?;
    let lease_wake: Option<i64> = col(row, 7, what, &key)?;
    let parked: bool = col(row, 8, what, &key)?;
    let lease = match (lease_id, lease_expires, lease_wake) {
        (Some(id), Some(expires), Some(wake)) => Some(Lease {
            run_id: run,
            id: LeaseId::from_u128(id.0),
            expires_at: Timestamp(uint(expires, what, &key)?),
            wake: uint(wake, what, &key)?,
            taken_over: false,
        }),
        (None, None, None) => None,
        _ => {
            return Err(corrupt(
                what,
                key(),
                "lease columns are partly empty".into(),
            ))
        }
    };
    Ok((
        run,
        QueueEntry {
            wake_gen,
            wake_due: wake_due
                .map(|d| uint(d, what, &key).map(Timestamp))
                .transpose()?,
            timers,
            lease,
            parked,
        },
    ))
}

/// The statements that write `changes` (staged by `apply` over `view`).
pub(crate) fn write_steps<'a>(
    sql: &'a Sql,
    view: &View,
    changes: &Changes,
) -> Result<Vec<Step<'a>>, StoreError> {
    let mut steps = Vec::new();
    for (id, (before, rec)) in &changes.runs {
        let error = rec.error.as_ref().map(codec::encode_record).transpose()?;
        let (id, status) = (p(Uuid(id.as_u128())), p(rec.status.as_str()));
        let (updated, next_seq) = (p(to_i64(rec.updated_at.0)), p(to_i64(rec.next_seq)));
        steps.push(if before.is_none() {
            Step::Query(
                &sql.run_insert,
                vec![
                    id,
                    p(rec.workflow.clone()),
                    status,
                    p(error),
                    p(to_i64(rec.created_at.0)),
                    updated,
                    next_seq,
                ],
            )
        } else {
            Step::Query(
                &sql.run_update,
                vec![id, status, p(error), updated, next_seq],
            )
        });
    }

    if !changes.events.is_empty() {
        let n = changes.events.len();
        let (mut runs, mut seqs, mut ats, mut kinds, mut bodies) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for (run, e) in &changes.events {
            runs.push(Uuid(run.as_u128()));
            seqs.push(to_i64(e.seq));
            ats.push(to_i64(e.at.0));
            kinds.push(e.kind().as_str());
            bodies.push(codec::encode_event(e)?);
        }
        steps.push(Step::Query(
            &sql.events_insert,
            vec![p(runs), p(seqs), p(ats), p(kinds), p(bodies)],
        ));
    }

    if !changes.ops.is_empty() {
        let n = changes.ops.len();
        let (mut runs, mut ids, mut kinds, mut closed) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for ((run, id), state) in &changes.ops {
            runs.push(Uuid(run.as_u128()));
            ids.push(id.as_str().to_owned());
            kinds.push(op_kind_str(state.kind));
            closed.push(state.closed);
        }
        steps.push(Step::Query(
            &sql.ops_upsert,
            vec![p(runs), p(ids), p(kinds), p(closed)],
        ));
    }

    for (token, owner) in &changes.tokens {
        let t = p(token.as_str().to_owned());
        steps.push(match owner {
            None => Step::Query(&sql.token_delete, vec![t]),
            Some(o) => {
                let (run, hook) = (p(Uuid(o.run_id.as_u128())), p(o.hook.as_str().to_owned()));
                let webhook = p(o.webhook.as_ref().map(codec::encode_record).transpose()?);
                // A token this transaction saw taken (released and taken again
                // in one batch) is updated; a free one is inserted, and the
                // primary key turns a race with another run into a retry.
                match view.tokens.get(token) {
                    Some(Some(_)) => Step::Query(&sql.token_update, vec![t, run, hook, webhook]),
                    _ => Step::Query(&sql.token_insert, vec![t, run, hook, webhook]),
                }
            }
        });
    }

    for (run, list) in &changes.run_hooks {
        let before = view.hooks.get(run).map(Vec::as_slice).unwrap_or(&[]);
        for (i, h) in list.iter().enumerate() {
            if before.get(i) == Some(h) {
                continue;
            }
            steps.push(Step::Query(
                &sql.hook_upsert,
                vec![
                    p(Uuid(run.as_u128())),
                    p(h.hook.as_str().to_owned()),
                    p(i32::try_from(i).unwrap_or(i32::MAX)),
                    p(h.token.as_str().to_owned()),
                    p(h.live),
                    p(to_i64(h.created_at.0)),
                    p(codec::encode_record(h)?),
                ],
            ));
        }
        if list.len() < before.len() {
            steps.push(Step::Query(
                &sql.hooks_truncate,
                vec![
                    p(Uuid(run.as_u128())),
                    p(i32::try_from(list.len()).unwrap_or(i32::MAX)),
                ],
            ));
        }
    }

    for (run, (_, entry)) in &changes.queue {
        let id = p(Uuid(run.as_u128()));
        steps.push(match entry {
            None => Step::Query(&sql.queue_delete, vec![id]),
            // `due` is NULL while nothing makes the run due (a parked run with
            // only timers): the row is kept, but no due query finds it.
            Some(e) => Step::Query(
                &sql.queue_upsert,
                vec![
                    id,
                    p(e.effective_due().map(|due| to_i64(due.0))),
                    p(to_i64(e.wake_gen)),
                    p(e.wake_due.map(|t| to_i64(t.0))),
                    p(e.timers
                        .keys()
                        .map(|k| k.as_str().to_owned())
                        .collect::<Vec<_>>()),
                    p(e.timers.values().map(|t| to_i64(t.0)).collect::<Vec<_>>()),
                    p(e.lease.as_ref().map(|l| Uuid(l.id.as_u128()))),
                    p(e.lease.as_ref().map(|l| to_i64(l.expires_at.0))),
                    p(e.lease.as_ref().map(|l| to_i64(l.wake))),
                    p(e.parked),
                ],
            ),
        });
    }

    for (run, streams) in &changes.streams {
        steps.push(Step::Query(
            &sql.streams_upsert,
            vec![p(Uuid(run.as_u128())), p(codec::encode_record(streams)?)],
        ));
    }

    // Chunk rows: the last write of each key counts (a row written and
    // deleted in one change set is deleted).
    let mut chunks: BTreeMap<(RunId, &ChunkKey), Option<&Payload>> = BTreeMap::new();
    for (run, key, payload) in &changes.chunks {
        chunks.insert((*run, key), payload.as_ref());
    }
    type Rows<'c> = (Vec<(&'c ChunkKey, &'c Payload)>, Vec<&'c ChunkKey>);
    let mut by_run: BTreeMap<RunId, Rows<'_>> = BTreeMap::new();
    for ((run, key), payload) in chunks {
        let (puts, dels) = by_run.entry(run).or_default();
        match payload {
            Some(payload) => puts.push((key, payload)),
            None => dels.push(key),
        }
    }
    for (run, (puts, dels)) in by_run {
        if !puts.is_empty() {
            let (streams, steps_, attempts, ns) = chunk_key_arrays(puts.iter().map(|(k, _)| *k));
            let payloads: Vec<Vec<u8>> = puts.iter().map(|(_, v)| v.as_bytes().to_vec()).collect();
            steps.push(Step::Query(
                &sql.chunks_upsert,
                vec![
                    p(Uuid(run.as_u128())),
                    p(streams),
                    p(steps_),
                    p(attempts),
                    p(ns),
                    p(payloads),
                ],
            ));
        }
        if !dels.is_empty() {
            let (streams, steps_, attempts, ns) = chunk_key_arrays(dels.into_iter());
            steps.push(Step::Query(
                &sql.chunks_delete,
                vec![
                    p(Uuid(run.as_u128())),
                    p(streams),
                    p(steps_),
                    p(attempts),
                    p(ns),
                ],
            ));
        }
    }
    Ok(steps)
}

/// The rows of a batch's statements, or its first error that is a cause.
pub(crate) fn first_cause_of(
    results: Vec<Result<Vec<Row>, tokio_postgres::Error>>,
) -> Result<Vec<Vec<Row>>, TxError> {
    first_cause(
        results
            .into_iter()
            .map(|r| r.map_err(TxError::Pg))
            .collect(),
    )
}

/// Maps a PostgreSQL error to a store error (what the caller sees when a
/// transaction fails for good).
pub(crate) fn into_store(what: &str, e: TxError) -> StoreError {
    match e {
        TxError::Pg(e) => pg::backend(what, e),
        TxError::Store(e) => e,
    }
}
