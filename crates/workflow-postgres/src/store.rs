//! [`PostgresStore`]: the [`Store`] on PostgreSQL.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::{broadcast, mpsc};
use tokio_postgres::config::Host;
use tokio_postgres::types::ToSql;
use tokio_postgres::NoTls;
use workflow_store::backend::purge_candidates;
use workflow_store::backend::{self as apply, Changes, ChunkKey, RunStreams, Staged};
use workflow_store::{
    Appended, Change, Clock, CorrelationId, CreatedRun, Event, EventData, EventKind, HookRecord,
    HookToken, Lease, LeaseId, NewRun, Payload, PurgeQuery, Purged, Resumed, RunId, RunQuery,
    RunRecord, Store, StoreError, Timestamp, WebhookResponse,
};
use workflow_store::{ChunkWriter, StreamWrite};

use crate::config::{check_schema, redact, PostgresConfig, TimeSource};
use crate::notify::{self, AbortOnDrop};
use crate::pg::{self, to_i64, Uuid};
use crate::schema::{self, Sql};
use crate::tx::{p, Step, Tx};
use crate::view::{
    self, decode_event, decode_hook, decode_queue, decode_run, Batch, Key, TxError, View,
};

/// How many times a write whose transaction hit a retryable conflict
/// (serialization failure, deadlock, unique violation) is run again.
const MAX_ATTEMPTS: u32 = 20;

/// How many times one write may go back for reads its prefetch missed.
const MAX_FETCH_ROUNDS: usize = 8;

/// Capacity of the change feed; a receiver that falls further behind polls.
const CHANGE_FEED_CAPACITY: usize = 4096;

/// A [`Store`] on PostgreSQL: several engine processes can share one database.
///
/// ```no_run
/// use workflow_postgres::{PostgresConfig, PostgresStore};
/// # async fn demo() -> Result<(), workflow_store::StoreError> {
/// // One schema ("workflow" unless configured) holds the store's tables;
/// // the store creates and migrates it.
/// let store = PostgresStore::connect("postgres://app@db.internal:5432/orders").await?;
/// let other = PostgresStore::connect_with(
///     PostgresConfig::new("postgres://app@db.internal:5432/orders")
///         .schema("workflow_staging")
///         .pool_size(32),
/// )
/// .await?;
/// # Ok(()) }
/// ```
///
/// # How it keeps the [`Store`] invariants
///
/// Every write runs the shared rules of [`workflow_store::backend`] in one
/// `READ COMMITTED` transaction, sent in two pipelined batches:
///
/// 1. `BEGIN`, then lock the run's row (`SELECT … FOR UPDATE`): writes to one
///    run are serialized, so `seq` comes from the locked `next_seq` and has no
///    gaps. In the same batch, prefetch what the rules will read: the run's
///    queue row (`FOR UPDATE`, so a lease cannot be taken or lost mid-write),
///    the states of the batch's correlation ids, the owners of its hook tokens,
///    the run's hooks, event 0 for `create_run`. (`resume_hook` and
///    `resume_webhook` first look up the token's run, then lock that run and
///    re-read the token's row, which holds its webhook mode; if the token
///    changed hands meanwhile the write starts over. Only writes to the run
///    holding a token change its row, so the mode `resume_webhook` checks is
///    the one of the hook it records into.) A read the prefetch
///    missed is fetched and the rules run again from scratch.
/// 2. The staged changes (events, run, operations, tokens, hooks, queue), then
///    `COMMIT`.
///
/// Token uniqueness is the `tokens` primary key: when two runs race to create
/// a hook with one token, the second `INSERT` fails with a unique violation,
/// the write is retried, and the retry records `hook_conflict`. Serialization
/// failures, deadlocks and unique violations are retried up to 20 times with
/// jittered backoff; other database errors are [`StoreError::Backend`] and leave
/// nothing written. A write is acknowledged after `COMMIT` returns, so it is as
/// durable as the server's `synchronous_commit` makes it.
///
/// `lease_due` selects due queue rows (`due <= now`, earliest first)
/// `FOR UPDATE SKIP LOCKED`, so concurrent engines never wait for each other
/// nor take the same run, and applies [`apply::try_lease`] to each in one
/// transaction.
///
/// # Time
///
/// By default ([`TimeSource::Database`]) every time a write records or compares
/// (event timestamps, wake-ups, lease expiry, the `due <= now` of `lease_due`)
/// is the database server's `clock_timestamp()`, read in the write's
/// transaction after its locks: engine hosts whose clocks disagree still agree
/// on when a lease expires. [`Store::now`] follows that clock between writes
/// (the local clock plus the last measured offset). [`TimeSource::Clock`] makes
/// the configured [`Clock`] decide instead, for tests with a manual clock.
///
/// # Tables
///
/// In the configured schema: `runs` (indexed by status), `events` (primary
/// key `(run_id, seq)`, the [`Event`] in the codec's envelope in `body`, plus
/// `at` and `kind` for people reading the table), `ops`, `tokens` (live hooks,
/// primary key `token`), `hooks`, `queue` (indexed by effective `due`, which
/// is NULL while nothing makes the run due, e.g. a parked (blocked) run with
/// only timers; the lease in columns), `streams` (each run's streams record,
/// encoded) and `chunks` (stream chunk rows, pending and committed, primary
/// key `(run_id, stream, step, attempt, n)`; purged with their run) and
/// `schema_migrations`. Run and lease ids are `uuid`s
/// holding the ULID's 16 bytes. A row that does not decode is
/// [`StoreError::Corrupt`] for the operations that read it; other runs are
/// unaffected.
///
/// # Change feed
///
/// [`Store::subscribe`] carries this store's changes (published after each
/// commit) and, through LISTEN/NOTIFY on a dedicated connection, those of
/// other stores on the same schema, in this process or another. A store's
/// committed changes are sent by a background task right after the commit,
/// batched (see [`PostgresConfig::notify_in_transaction`] for why, and for
/// notifying inside the write's transaction instead). Notifications are hints:
/// while the listening connection is down (it is re-opened with backoff)
/// changes are missed, and engines poll as well.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    sql: Sql,
    schema: String,
    target: String,
    clock: Arc<dyn Clock>,
    time_source: TimeSource,
    /// The database's clock minus the local clock, in milliseconds, as last
    /// measured (with [`TimeSource::Database`]); what `now` adds.
    db_offset_ms: AtomicI64,
    feed: broadcast::Sender<Change>,
    channel: String,
    instance: u128,
    notifications: bool,
    notify_in_transaction: bool,
    sender: Option<(mpsc::UnboundedSender<Vec<Change>>, AbortOnDrop)>,
    _listener: Option<AbortOnDrop>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.inner.pool.status();
        f.debug_struct("PostgresStore")
            .field("target", &self.inner.target)
            .field("schema", &self.inner.schema)
            .field("pool_size", &status.max_size)
            .field("connections", &status.size)
            .field("notifications", &self.inner.notifications)
            .field("clock", &self.inner.clock)
            .field("time_source", &self.inner.time_source)
            .finish()
    }
}

/// `host:port/dbname as user`, for messages (never the password).
fn describe_target(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().or(config.get_user()).unwrap_or("");
    match config.get_user() {
        Some(user) => format!("{host}:{port}/{db} (user {user})"),
        None => format!("{host}:{port}/{db}"),
    }
}

/// Which run a write locks.
enum Target {
    /// This run.
    Run(RunId),
    /// The run holding this live token (`resume_hook`).
    Token(HookToken),
}

/// How one attempt of a write ended.
enum Attempt<T> {
    /// Committed (or nothing to write): the value, the changes to publish, and
    /// those still to notify to other processes.
    Done(T, Vec<Change>, Vec<Change>),
    /// Start over (the hook's owner changed under us).
    Retry,
}

impl PostgresStore {
    /// Connects to `url` with the defaults of [`PostgresConfig::new`] (schema
    /// `workflow`, system clock), creating or migrating the schema.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(PostgresConfig::new(url)).await
    }

    /// Connects as `config` says, creating or migrating the schema, and starts
    /// listening for changes (unless turned off).
    ///
    /// Fails with [`StoreError::Backend`] when the URL does not parse, the
    /// server does not answer or refuses the login (the message names the host,
    /// port, database and user, never the password), or the schema cannot be
    /// migrated.
    pub async fn connect_with(config: PostgresConfig) -> Result<Self, StoreError> {
        check_schema(&config.schema)?;
        let mut pg_config =
            tokio_postgres::Config::from_str(&config.url).map_err(|e| StoreError::Backend {
                message: format!(
                    "invalid PostgreSQL connection string {:?}: {e}; expected a URL like \
                     postgres://user:password@host:5432/database",
                    redact(&config.url)
                ),
                source: Some(Box::new(e)),
            })?;
        pg_config.connect_timeout(config.connect_timeout);
        if pg_config.get_application_name().is_none() {
            pg_config.application_name("workflow-postgres");
        }
        let target = describe_target(&pg_config);
        let manager = Manager::from_config(
            pg_config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(config.connect_timeout))
            .wait_timeout(Some(config.connect_timeout))
            .build()
            .map_err(|e| StoreError::backend("cannot build the PostgreSQL connection pool", e))?;
        let mut client = pool.get().await.map_err(|e| StoreError::Backend {
            message: format!(
                "cannot connect to PostgreSQL at {target}: {e}; check that the server is running \
                 and accepts this user (set the URL, e.g. postgres://user@host:5432/database)"
            ),
            source: Some(Box::new(e)),
        })?;
        schema::migrate(&mut client, &config.schema).await?;
        let sql = Sql::new(&config.schema);
        let db_offset_ms = match config.time_source {
            TimeSource::Database => {
                let rows = view::query(&client, &sql.db_now, &[])
                    .await
                    .map_err(|e| pg::backend("reading the database's clock", e))?;
                let db_now = rows
                    .first()
                    .map(|row| row.try_get::<_, i64>(0))
                    .transpose()
                    .map_err(|e| pg::backend("reading the database's clock", e))?
                    .unwrap_or_default();
                offset_ms(db_now, config.clock.now())
            }
            _ => 0,
        };
        drop(client);

        let (feed, _) = broadcast::channel(CHANGE_FEED_CAPACITY);
        let channel = notify::channel(&config.schema);
        let instance = LeaseId::new().as_u128();
        let listener = if config.notifications {
            Some(
                notify::start(
                    pg_config,
                    channel.clone(),
                    instance,
                    feed.clone(),
                    config.connect_timeout,
                )
                .await?,
            )
        } else {
            None
        };
        let sender = (config.notifications && !config.notify_in_transaction)
            .then(|| notify::start_sender(pool.clone(), channel.clone(), instance));
        tracing::debug!(%target, schema = %config.schema, "connected PostgreSQL workflow store");
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                pool,
                sql,
                schema: config.schema,
                target,
                clock: config.clock,
                time_source: config.time_source,
                db_offset_ms: AtomicI64::new(db_offset_ms),
                feed,
                channel,
                instance,
                notifications: config.notifications,
                notify_in_transaction: config.notify_in_transaction,
                sender,
                _listener: listener,
            }),
        })
    }

    /// The schema holding this store's tables.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// The newest schema migration this build applies.
    pub fn schema_version() -> i32 {
        schema::latest_version()
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.inner
            .pool
            .get()
            .await
            .map_err(|e| StoreError::Backend {
                message: format!(
                    "cannot get a PostgreSQL connection to {}: {e}",
                    self.inner.target
                ),
                source: Some(Box::new(e)),
            })
    }

    /// Runs one write (`op`, a rule of `apply`) on the run `target` names,
    /// retrying conflicts; publishes its changes after the commit.
    async fn write<T, K, F>(
        &self,
        what: &str,
        target: Target,
        keys: K,
        mut op: F,
    ) -> Result<T, StoreError>
    where
        T: Send,
        K: Fn(RunId) -> Vec<Key> + Send + Sync,
        F: FnMut(&mut Staged<'_, View>) -> Result<T, StoreError> + Send,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = self.write_once(&target, &keys, &mut op).await;
            match outcome {
                Ok(Attempt::Done(value, changes, _)) => {
                    self.publish(changes);
                    return Ok(value);
                }
                Ok(Attempt::Retry) if attempt < MAX_ATTEMPTS => {}
                Err(TxError::Pg(e)) if pg::is_retryable(&e) && attempt < MAX_ATTEMPTS => {
                    tracing::debug!(what, attempt, error = %e, "retrying a conflicting write");
                }
                Ok(Attempt::Retry) => {
                    return Err(StoreError::Backend {
                        message: format!(
                            "{what} gave up after {MAX_ATTEMPTS} attempts: the hook's owner kept changing"
                        ),
                        source: None,
                    })
                }
                Err(e) => return Err(view::into_store(what, e)),
            }
            backoff(attempt).await;
        }
    }

    /// One attempt of a write: its own transaction on a pooled connection.
    async fn write_once<T, K, F>(
        &self,
        target: &Target,
        keys: &K,
        op: &mut F,
    ) -> Result<Attempt<T>, TxError>
    where
        K: Fn(RunId) -> Vec<Key>,
        F: FnMut(&mut Staged<'_, View>) -> Result<T, StoreError>,
    {
        let mut tx = Tx::new(self.client().await?);
        let result = self.write_in(&mut tx, target, keys, op).await;
        self.conclude(tx, result).await
    }

    async fn write_in<T, K, F>(
        &self,
        tx: &mut Tx,
        target: &Target,
        keys: &K,
        op: &mut F,
    ) -> Result<Attempt<T>, TxError>
    where
        K: Fn(RunId) -> Vec<Key>,
        F: FnMut(&mut Staged<'_, View>) -> Result<T, StoreError>,
    {
        let sql = &self.inner.sql;
        let mut view = View::default();
        let mut batch = Batch::default();
        batch.raw(Step::Simple("BEGIN"));
        tx.set_open(true);
        let mut expected_owner = None;
        let mut extra = Vec::new();
        let run = match target {
            Target::Run(run) => Some(*run),
            Target::Token(token) => {
                batch.raw(Step::Query(
                    &sql.token_owner,
                    vec![p(token.as_str().to_owned())],
                ));
                let raw = std::mem::take(&mut batch).run(tx, &mut view).await?;
                match raw.get(1).and_then(|rows| rows.first()) {
                    None => {
                        view.tokens.insert(token.clone(), None);
                        None
                    }
                    Some(row) => {
                        let run: Uuid = row.try_get(0)?;
                        let hook: &str = row.try_get(1)?;
                        let run = RunId::from_u128(run.0);
                        // Re-read after the lock: the owner may have changed.
                        extra.push(Key::Token(token.clone()));
                        if let Ok(hook) = CorrelationId::new(hook) {
                            extra.push(Key::Op(run, hook));
                        }
                        expected_owner = Some((token.clone(), run));
                        Some(run)
                    }
                }
            }
        };
        let db_time = run.is_some() && self.inner.time_source == TimeSource::Database;
        if let Some(run) = run {
            let mut wanted = keys(run);
            wanted.extend(extra);
            batch.lock_run(sql, run).fetch(sql, &view, wanted);
            if db_time {
                // After the locks: a lease compared with this time cannot have
                // changed since.
                batch.raw(Step::Query(&sql.db_now, Vec::new()));
            }
        }
        let mut now = None;
        if !batch.is_empty() {
            let raw = batch.run(tx, &mut view).await?;
            if db_time {
                now = Some(self.database_time(raw.last().and_then(|rows| rows.first()), 0)?);
            }
        }
        if let Some((token, run)) = &expected_owner {
            let owner = view.tokens.get(token).cloned().flatten();
            if owner.map(|o| o.run_id) != Some(*run) {
                // The token changed hands between the lookup and the lock.
                return Ok(Attempt::Retry);
            }
        }
        // Read once per attempt. Without a run there is nothing to lock and
        // nothing the rules will write (the token is unknown).
        let now = now.unwrap_or_else(|| self.now());
        let mut rounds = 0;
        let (value, changes) = loop {
            let mut staged = Staged::new(&mut view, now);
            let result = op(&mut staged);
            let changes = staged.into_changes();
            let missing = view.take_missing();
            if missing.is_empty() {
                break (result, changes);
            }
            rounds += 1;
            if rounds > MAX_FETCH_ROUNDS {
                return Err(TxError::Store(StoreError::Backend {
                    message: "internal: a write kept reading keys it had not prefetched".into(),
                    source: None,
                }));
            }
            let mut more = Batch::default();
            more.fetch(sql, &view, missing);
            more.run(tx, &mut view).await?;
        };
        // A rule that refuses the write fails it here; `conclude` rolls back.
        let value = value?;
        self.commit(tx, &view, changes, value).await
    }

    /// Writes `changes` and commits, in one batch.
    async fn commit<T>(
        &self,
        tx: &mut Tx,
        view: &View,
        changes: Changes,
        value: T,
    ) -> Result<Attempt<T>, TxError> {
        if changes.is_empty() {
            tx.run(&[Step::Simple("ROLLBACK")])
                .await?
                .into_iter()
                .collect::<Result<Vec<_>, _>>()?;
            tx.set_open(false);
            return Ok(Attempt::Done(value, changes.notify, Vec::new()));
        }
        let sql = &self.inner.sql;
        let mut steps = view::write_steps(sql, view, &changes)?;
        let mut after = Vec::new();
        if self.inner.notifications && self.inner.notify_in_transaction {
            for payload in notify::encode(self.inner.instance, &changes.notify) {
                steps.push(Step::Query(
                    &sql.notify,
                    vec![p(self.inner.channel.clone()), p(payload)],
                ));
            }
        } else if self.inner.notifications {
            after.clone_from(&changes.notify);
        }
        steps.push(Step::Simple("COMMIT"));
        let results = tx.run(&steps).await?;
        // COMMIT ended the transaction (as a rollback if a write before it
        // failed) unless the connection itself failed.
        match results.last() {
            Some(Err(e)) if e.as_db_error().is_none() => {}
            _ => tx.set_open(false),
        }
        view::first_cause_of(results)?;
        Ok(Attempt::Done(value, changes.notify, after))
    }

    /// Ends an attempt: rolls back a failed one; hands the changes of a
    /// committed one to the notification sender (without waiting for it).
    async fn conclude<T>(
        &self,
        mut tx: Tx,
        result: Result<Attempt<T>, TxError>,
    ) -> Result<Attempt<T>, TxError> {
        match result {
            Ok(Attempt::Done(value, changes, notify_after)) => {
                drop(tx);
                if !notify_after.is_empty() {
                    if let Some(sender) = &self.inner.sender {
                        // The sender only stops with the store.
                        let _ = sender.0.send(notify_after);
                    }
                }
                Ok(Attempt::Done(value, changes, Vec::new()))
            }
            other => {
                tx.rollback().await;
                other
            }
        }
    }

    fn publish(&self, changes: Vec<Change>) {
        for change in changes {
            // No receivers is fine: nobody is waiting.
            let _ = self.inner.feed.send(change);
        }
    }

    /// One attempt of `lease_due`.
    async fn lease_once(&self, limit: i64, ttl: Duration) -> Result<Attempt<Vec<Lease>>, TxError> {
        let mut tx = Tx::new(self.client().await?);
        let result = self.lease_in(&mut tx, limit, ttl).await;
        self.conclude(tx, result).await
    }

    async fn lease_in(
        &self,
        tx: &mut Tx,
        limit: i64,
        ttl: Duration,
    ) -> Result<Attempt<Vec<Lease>>, TxError> {
        let sql = &self.inner.sql;
        let mut now = self.inner.clock.now();
        let mut view = View::default();
        let mut batch = Batch::default();
        batch.raw(Step::Simple("BEGIN"));
        let db_time = self.inner.time_source == TimeSource::Database;
        if db_time {
            batch.raw(Step::Query(&sql.queue_due_lock_db, vec![p(limit)]));
        } else {
            batch.raw(Step::Query(
                &sql.queue_due_lock,
                vec![p(to_i64(now.0)), p(limit)],
            ));
        }
        tx.set_open(true);
        let raw = batch.run(tx, &mut view).await?;
        let rows = raw.get(1).map(Vec::as_slice).unwrap_or(&[]);
        if db_time {
            // No due row, no time (and nothing to lease).
            if rows.is_empty() {
                return self.commit(tx, &view, Changes::default(), Vec::new()).await;
            }
            now = self.database_time(rows.first(), QUEUE_DB_NOW_COL)?;
        }
        let mut candidates = Vec::with_capacity(rows.len());
        for row in rows {
            match decode_queue(row) {
                Ok((run, entry)) => {
                    view.queue.insert(run, Some(entry));
                    candidates.push(run);
                }
                // One damaged queue row must not stop every other run.
                Err(e) => tracing::error!(error = %e, "skipping a corrupt queue row"),
            }
        }
        let mut staged = Staged::new(&mut view, now);
        let mut leases = Vec::with_capacity(candidates.len());
        for run in candidates {
            if let Some(lease) = apply::try_lease(&mut staged, run, ttl)? {
                leases.push(lease);
            }
        }
        let changes = staged.into_changes();
        self.commit(tx, &view, changes, leases).await
    }

    /// The database's time in column `col` of `row`; remembers its offset to
    /// the local clock for [`Store::now`].
    fn database_time(
        &self,
        row: Option<&tokio_postgres::Row>,
        col: usize,
    ) -> Result<Timestamp, TxError> {
        let ms: i64 = row
            .ok_or_else(|| StoreError::Backend {
                message: "internal: the database's clock was not read".into(),
                source: None,
            })?
            .try_get(col)?;
        let local = self.inner.clock.now();
        self.inner
            .db_offset_ms
            .store(offset_ms(ms, local), Ordering::Relaxed);
        pg::to_u64(ms).map(Timestamp).ok_or_else(|| {
            TxError::Store(StoreError::Backend {
                message: format!("the database's clock reads {ms} ms before 1970"),
                source: None,
            })
        })
    }

    async fn read_run(&self, run: RunId) -> Result<Option<RunRecord>, StoreError> {
        let client = self.client().await?;
        let rows = view::query(&client, &self.inner.sql.run_get, &[&Uuid(run.as_u128())])
            .await
            .map_err(|e| pg::backend("reading a run", e))?;
        rows.first().map(decode_run).transpose()
    }

    async fn run_exists(&self, run: RunId) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let rows = view::query(&client, &self.inner.sql.run_exists, &[&Uuid(run.as_u128())])
            .await
            .map_err(|e| pg::backend("reading a run", e))?;
        Ok(!rows.is_empty())
    }
}

/// The column of `queue_due_lock_db` that holds the database's time.
const QUEUE_DB_NOW_COL: usize = 9;

/// `db` minus `local`, in milliseconds (saturating).
fn offset_ms(db: i64, local: Timestamp) -> i64 {
    db.saturating_sub(to_i64(local.0))
}

/// Sleeps a little longer after each failed attempt, with jitter so racing
/// writers spread out.
async fn backoff(attempt: u32) {
    let base = 1u64 << attempt.min(6);
    let jitter = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos()),
    ) % (base * 1000);
    tokio::time::sleep(Duration::from_micros(base * 500 + jitter)).await;
}

/// What `append` reads: the run's queue row, the states of the batch's
/// correlation ids, the owners of its tokens, and its hooks if it touches them.
fn append_keys(run: RunId, events: &[EventData]) -> Vec<Key> {
    let mut keys = vec![Key::Queue(run)];
    let mut hooks = false;
    let mut streams = false;
    for e in events {
        if let Some(id) = e.correlation_id() {
            keys.push(Key::Op(run, id.clone()));
        }
        if let EventData::HookCreated { token, .. } = e {
            keys.push(Key::Token(token.clone()));
        }
        let kind = e.kind();
        hooks |= kind.is_run_terminal()
            || matches!(
                kind,
                EventKind::HookCreated | EventKind::HookResponded | EventKind::HookDisposed
            );
        // A step's outcome settles its pending stream chunks; a run's end
        // closes its streams.
        streams |= kind.is_run_terminal()
            || matches!(
                kind,
                EventKind::StepCompleted | EventKind::StepFailed | EventKind::StepRetrying
            );
    }
    if hooks {
        keys.push(Key::Hooks(run));
    }
    if streams {
        keys.push(Key::Streams(run));
    }
    keys
}

#[async_trait]
impl Store for PostgresStore {
    async fn create_run(&self, run: NewRun) -> Result<CreatedRun, StoreError> {
        self.write(
            "create_run",
            Target::Run(run.id),
            |id| vec![Key::Event(id, 0), Key::Queue(id)],
            |st| apply::create_run(st, &run),
        )
        .await
    }

    async fn create_run_leased(
        &self,
        run: NewRun,
        ttl: Duration,
    ) -> Result<(CreatedRun, Option<Lease>), StoreError> {
        self.write(
            "create_run_leased",
            Target::Run(run.id),
            |id| vec![Key::Event(id, 0), Key::Queue(id)],
            |st| apply::create_run_leased(st, &run, ttl),
        )
        .await
    }

    async fn append(
        &self,
        run: RunId,
        events: Vec<EventData>,
        fence: Option<LeaseId>,
    ) -> Result<Appended, StoreError> {
        let keys = append_keys(run, &events);
        self.write(
            "append",
            Target::Run(run),
            |_| keys.clone(),
            |st| apply::append(st, run, events.clone(), fence),
        )
        .await
    }

    async fn read_events(
        &self,
        run: RunId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let rows = view::query(
            &client,
            &self.inner.sql.events_read,
            &[&Uuid(run.as_u128()), &to_i64(from_seq), &limit],
        )
        .await
        .map_err(|e| pg::backend("reading events", e))?;
        drop(client);
        if rows.is_empty() && !self.run_exists(run).await? {
            return Err(StoreError::RunNotFound { run });
        }
        rows.iter().map(|r| decode_event(run, r)).collect()
    }

    async fn get_run(&self, run: RunId) -> Result<Option<RunRecord>, StoreError> {
        self.read_run(run).await
    }

    async fn list_runs(&self, query: RunQuery) -> Result<Vec<RunRecord>, StoreError> {
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        let sql = self.inner.sql.runs_list(
            query.status.is_some(),
            query.workflow.is_some(),
            query.after.is_some(),
            query.newest_first,
        );
        let mut params: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(limit)];
        if let Some(s) = query.status {
            params.push(Box::new(s.as_str()));
        }
        if let Some(w) = query.workflow.clone() {
            params.push(Box::new(w));
        }
        if let Some(a) = query.after {
            params.push(Box::new(Uuid(a.as_u128())));
        }
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect();
        let client = self.client().await?;
        let rows = view::query(&client, &sql, &refs)
            .await
            .map_err(|e| pg::backend("listing runs", e))?;
        rows.iter().map(decode_run).collect()
    }

    async fn purge_runs(&self, query: PurgeQuery) -> Result<Purged, StoreError> {
        let (candidates, next) = purge_candidates(self, &query).await?;
        if candidates.is_empty() {
            return Ok(Purged {
                runs: Vec::new(),
                next,
            });
        }
        let ids: Vec<Uuid> = candidates.iter().map(|r| Uuid(r.as_u128())).collect();
        let cutoff = i64::try_from(query.ended_before.as_millis()).unwrap_or(i64::MAX);
        let status = query.status.map(|s| s.as_str());
        let client = self.client().await?;
        // One statement, so one atomic write; each run is checked again in it.
        let rows = view::query(
            &client,
            &self.inner.sql.runs_purge,
            &[&ids, &cutoff, &query.workflow, &status],
        )
        .await
        .map_err(|e| pg::backend("purging runs", e))?;
        let mut runs = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: Uuid = row
                .try_get(0)
                .map_err(|e| pg::corrupt("run", "purged run id", e.to_string()))?;
            runs.push(RunId::from_u128(id.0));
        }
        Ok(Purged { runs, next })
    }

    async fn get_hook(&self, token: &HookToken) -> Result<Option<HookRecord>, StoreError> {
        let client = self.client().await?;
        let rows = view::query(&client, &self.inner.sql.hook_by_token, &[&token.as_str()])
            .await
            .map_err(|e| pg::backend("reading a hook", e))?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let run: Uuid = row
            .try_get(2)
            .map_err(|e| pg::corrupt("hook", format!("tokens/{token}"), e.to_string()))?;
        decode_hook(RunId::from_u128(run.0), row).map(Some)
    }

    async fn list_hooks(&self, run: RunId) -> Result<Vec<HookRecord>, StoreError> {
        let client = self.client().await?;
        let rows = view::query(&client, &self.inner.sql.hooks_get, &[&Uuid(run.as_u128())])
            .await
            .map_err(|e| pg::backend("reading hooks", e))?;
        drop(client);
        if rows.is_empty() && !self.run_exists(run).await? {
            return Err(StoreError::RunNotFound { run });
        }
        rows.iter().map(|r| decode_hook(run, r)).collect()
    }

    async fn resume_hook(
        &self,
        token: &HookToken,
        payload: Payload,
    ) -> Result<Resumed, StoreError> {
        self.write(
            "resume_hook",
            Target::Token(token.clone()),
            |run| vec![Key::Queue(run)],
            |st| apply::resume_hook(st, token, payload.clone()),
        )
        .await
    }

    /// One transaction: the run holding the token is locked, then the token's
    /// row (which carries the webhook mode) is read again and checked, so a
    /// token that changes hands meanwhile cannot take the request into a plain
    /// hook.
    async fn resume_webhook(
        &self,
        token: &HookToken,
        payload: Payload,
    ) -> Result<(Resumed, WebhookResponse), StoreError> {
        self.write(
            "resume_webhook",
            Target::Token(token.clone()),
            |run| vec![Key::Queue(run)],
            |st| apply::resume_webhook(st, token, payload.clone()),
        )
        .await
    }

    async fn wake(&self, run: RunId) -> Result<(), StoreError> {
        self.write(
            "wake",
            Target::Run(run),
            |id| vec![Key::Queue(id)],
            |st| apply::wake(st, run),
        )
        .await
    }

    async fn lease_due(&self, limit: usize, ttl: Duration) -> Result<Vec<Lease>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.lease_once(limit, ttl).await {
                Ok(Attempt::Done(leases, changes, _)) => {
                    self.publish(changes);
                    return Ok(leases);
                }
                Ok(Attempt::Retry) => {}
                Err(TxError::Pg(e)) if pg::is_retryable(&e) && attempt < MAX_ATTEMPTS => {}
                Err(e) => return Err(view::into_store("lease_due", e)),
            }
            backoff(attempt).await;
        }
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<Lease, StoreError> {
        self.write(
            "renew_lease",
            Target::Run(lease.run_id),
            |id| vec![Key::Queue(id)],
            |st| apply::renew_lease(st, lease, ttl),
        )
        .await
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        self.write(
            "release_lease",
            Target::Run(lease.run_id),
            |id| vec![Key::Queue(id)],
            |st| apply::release_lease(st, lease),
        )
        .await
    }

    async fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        let client = self.client().await?;
        let rows = view::query(&client, &self.inner.sql.next_due, &[])
            .await
            .map_err(|e| pg::backend("reading the queue", e))?;
        let due: Option<i64> = match rows.first() {
            Some(row) => row
                .try_get(0)
                .map_err(|e| pg::backend("reading the queue", e))?,
            None => None,
        };
        Ok(due.and_then(pg::to_u64).map(Timestamp))
    }

    /// With [`TimeSource::Database`], the local clock plus its offset to the
    /// database's clock as last measured (by the latest write or lease); with
    /// [`TimeSource::Clock`], the configured clock.
    fn now(&self) -> Timestamp {
        let local = self.inner.clock.now();
        match self.inner.time_source {
            TimeSource::Clock => local,
            TimeSource::Database => {
                let offset = self.inner.db_offset_ms.load(Ordering::Relaxed);
                Timestamp(local.0.saturating_add_signed(offset))
            }
        }
    }

    fn subscribe(&self) -> Option<broadcast::Receiver<Change>> {
        self.inner
            .notifications
            .then(|| self.inner.feed.subscribe())
    }

    /// One transaction on the run's locked row: the chunk rows and the
    /// run's streams record are written together.
    async fn write_stream(
        &self,
        run: RunId,
        writer: &ChunkWriter,
        write: StreamWrite,
        fence: Option<LeaseId>,
    ) -> Result<(), StoreError> {
        let step = writer.step.clone();
        self.write(
            "write_stream",
            Target::Run(run),
            |id| vec![Key::Queue(id), Key::Op(id, step.clone()), Key::Streams(id)],
            |st| apply::write_stream(st, run, writer, write.clone(), fence),
        )
        .await
    }

    async fn run_streams(&self, run: RunId) -> Result<Option<RunStreams>, StoreError> {
        let client = self.client().await?;
        let rows = view::query(
            &client,
            &self.inner.sql.streams_get,
            &[&Uuid(run.as_u128())],
        )
        .await
        .map_err(|e| pg::backend("reading streams", e))?;
        rows.first()
            .map(|r| view::decode_streams(run, r))
            .transpose()
    }

    async fn read_chunks(
        &self,
        run: RunId,
        keys: &[ChunkKey],
    ) -> Result<Vec<Option<Payload>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let (streams, steps, attempts, ns) = view::chunk_key_arrays(keys.iter());
        let client = self.client().await?;
        let rows = view::query(
            &client,
            &self.inner.sql.chunks_get,
            &[&Uuid(run.as_u128()), &streams, &steps, &attempts, &ns],
        )
        .await
        .map_err(|e| pg::backend("reading stream chunks", e))?;
        if rows.len() != keys.len() {
            return Err(pg::corrupt(
                "stream chunks",
                format!("chunks/{run}"),
                format!("{} rows for {} keys", rows.len(), keys.len()),
            ));
        }
        rows.iter()
            .map(|row| {
                row.try_get::<_, Option<Vec<u8>>>(0)
                    .map(|b| b.map(Payload::from))
                    .map_err(|e| {
                        pg::corrupt("stream chunk", format!("chunks/{run}"), e.to_string())
                    })
            })
            .collect()
    }
}
