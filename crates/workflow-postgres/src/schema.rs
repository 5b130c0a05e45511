//! The tables, their migrations, and the SQL the store runs against them.
//!
//! Migrations are numbered; the schema's `schema_migrations` table records the
//! ones applied. [`migrate`] applies the missing ones in one transaction that
//! first takes `pg_advisory_xact_lock` on a key derived from the schema name, so
//! several processes starting at once apply each migration exactly once (the
//! others wait for the lock, then find nothing left to do). A schema already
//! up to date is only read. A schema migrated by a newer release (an unknown
//! version) is refused rather than guessed at.

use tokio_postgres::{Client, Transaction};
use workflow_store::{codec, HookRecord, RunStatus, StoreError};

use crate::pg;

/// One migration: its version, what it does, its SQL (`{s}` is the schema),
/// and the rows it fills in from data only Rust can decode.
struct Migration {
    version: i32,
    description: &'static str,
    sql: &'static str,
    backfill: Option<Backfill>,
}

/// Data a migration derives from encoded records, after its SQL.
#[derive(Clone, Copy)]
enum Backfill {
    /// `tokens.webhook` from the live hook records of the token's run.
    TokenWebhookModes,
}

/// Every migration, oldest first. Never edit one that has shipped: add another.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "runs, events, ops, tokens, hooks, queue",
        sql: r#"
CREATE TABLE {s}.runs (
    id          uuid PRIMARY KEY,
    workflow    text NOT NULL,
    status      text NOT NULL,
    error       bytea,
    created_at  bigint NOT NULL,
    updated_at  bigint NOT NULL,
    next_seq    bigint NOT NULL
);
CREATE INDEX runs_status_id ON {s}.runs (status, id);

CREATE TABLE {s}.events (
    run_id  uuid NOT NULL,
    seq     bigint NOT NULL,
    at      bigint NOT NULL,
    kind    text NOT NULL,
    body    bytea NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE {s}.ops (
    run_id       uuid NOT NULL,
    correlation  text NOT NULL,
    kind         text NOT NULL,
    closed       boolean NOT NULL,
    PRIMARY KEY (run_id, correlation)
);

CREATE TABLE {s}.tokens (
    token   text PRIMARY KEY,
    run_id  uuid NOT NULL,
    hook    text NOT NULL
);

CREATE TABLE {s}.hooks (
    run_id      uuid NOT NULL,
    hook        text NOT NULL,
    position    integer NOT NULL,
    token       text NOT NULL,
    live        boolean NOT NULL,
    created_at  bigint NOT NULL,
    record      bytea NOT NULL,
    PRIMARY KEY (run_id, hook)
);

CREATE TABLE {s}.queue (
    run_id         uuid PRIMARY KEY,
    due            bigint NOT NULL,
    wake_gen       bigint NOT NULL,
    wake_due       bigint,
    timer_ids      text[] NOT NULL,
    timer_dues     bigint[] NOT NULL,
    lease_id       uuid,
    lease_expires  bigint,
    lease_wake     bigint
);
CREATE INDEX queue_due ON {s}.queue (due, run_id);
"#,
        backfill: None,
    },
    Migration {
        version: 2,
        description: "queue: parked (blocked) runs; due is NULL when nothing makes a run due",
        sql: r#"
ALTER TABLE {s}.queue ADD COLUMN parked boolean NOT NULL DEFAULT false;
ALTER TABLE {s}.queue ALTER COLUMN due DROP NOT NULL;
"#,
        backfill: None,
    },
    Migration {
        version: 3,
        description: "tokens: the webhook response mode (NULL for plain hooks), so \
                      resume_webhook checks it in the row it locks",
        sql: r#"
ALTER TABLE {s}.tokens ADD COLUMN webhook bytea;
"#,
        backfill: Some(Backfill::TokenWebhookModes),
    },
    Migration {
        version: 4,
        description:
            "runs: indexes for listing by workflow (and status); tokens by run, for purging",
        sql: r#"
CREATE INDEX runs_workflow_id ON {s}.runs (workflow, id);
CREATE INDEX runs_workflow_status_id ON {s}.runs (workflow, status, id);
CREATE INDEX tokens_run_id ON {s}.tokens (run_id);
"#,
        backfill: None,
    },
    Migration {
        version: 5,
        description: "streams: each run's streams record; stream chunk rows (pending and \
                      committed) by run, stream, step, attempt and number",
        sql: r#"
CREATE TABLE {s}.streams (
    run_id  uuid PRIMARY KEY,
    record  bytea NOT NULL
);

CREATE TABLE {s}.chunks (
    run_id   uuid NOT NULL,
    stream   text NOT NULL,
    step     text NOT NULL,
    attempt  bigint NOT NULL,
    n        bigint NOT NULL,
    payload  bytea NOT NULL,
    PRIMARY KEY (run_id, stream, step, attempt, n)
);
"#,
        backfill: None,
    },
];

/// The newest migration this build knows.
pub(crate) fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// A stable 64-bit key for the schema's migration lock (FNV-1a).
fn lock_key(schema: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in "workflow-postgres/migrate/".bytes().chain(schema.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(h.to_ne_bytes())
}

/// The newest migration applied to `schema`, if its migrations table exists.
async fn applied_version(
    client: &(impl tokio_postgres::GenericClient + Sync),
    schema: &str,
) -> Result<Option<i32>, tokio_postgres::Error> {
    // A plain catalog query (a fresh snapshot), not to_regclass: name lookups
    // through the relation cache can miss a table another process just created.
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = 'schema_migrations'",
            &[&schema],
        )
        .await?
        .is_some();
    if !exists {
        return Ok(None);
    }
    let table = format!("\"{schema}\".schema_migrations");
    let row = client
        .query_one(&format!("SELECT max(version) FROM {table}"), &[])
        .await?;
    Ok(Some(row.get::<_, Option<i32>>(0).unwrap_or(0)))
}

fn newer_than_known(schema: &str, applied: i32) -> StoreError {
    StoreError::Backend {
        message: format!(
            "the workflow schema \"{schema}\" is at migration {applied}, newer than this build \
             of workflow-postgres knows (up to {}): upgrade the library",
            latest_version()
        ),
        source: None,
    }
}

/// Creates the schema if needed and applies the migrations it lacks.
///
/// An up-to-date schema is only read (no DDL, no lock), so a database user
/// with no `CREATE` privilege works once the schema exists.
pub(crate) async fn migrate(client: &mut Client, schema: &str) -> Result<(), StoreError> {
    let what = format!("migrating the workflow schema \"{schema}\"");
    let err = |e| pg::backend(&what, e);
    match applied_version(&*client, schema).await.map_err(err)? {
        Some(v) if v == latest_version() => return Ok(()),
        Some(v) if v > latest_version() => return Err(newer_than_known(schema, v)),
        _ => {}
    }
    let s = format!("\"{schema}\"");
    let tx = client.transaction().await.map_err(err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key(schema)])
        .await
        .map_err(err)?;
    let applied = match applied_version(&tx, schema).await.map_err(err)? {
        Some(v) => v,
        None => {
            let exists = tx
                .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
                .await
                .map_err(err)?
                .is_some();
            if !exists {
                tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {s}"))
                    .await
                    .map_err(err)?;
            }
            tx.batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {s}.schema_migrations (
                     version      integer PRIMARY KEY,
                     description  text NOT NULL,
                     applied_at   timestamptz NOT NULL DEFAULT now()
                 )"
            ))
            .await
            .map_err(err)?;
            0
        }
    };
    if applied > latest_version() {
        return Err(newer_than_known(schema, applied));
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > applied) {
        tracing::info!(
            schema,
            version = m.version,
            "applying migration: {}",
            m.description
        );
        tx.batch_execute(&m.sql.replace("{s}", &s))
            .await
            .map_err(err)?;
        match m.backfill {
            Some(Backfill::TokenWebhookModes) => {
                backfill_token_webhook_modes(&tx, &s).await.map_err(err)?
            }
            None => {}
        }
        tx.execute(
            &format!("INSERT INTO {s}.schema_migrations (version, description) VALUES ($1, $2)"),
            &[&m.version, &m.description],
        )
        .await
        .map_err(err)?;
    }
    tx.commit().await.map_err(err)
}

/// Copies each live token's webhook mode from its hook record (encoded, so
/// not readable in SQL) into `tokens.webhook`. A record that does not decode
/// leaves its token a plain hook, with a warning: `get_hook` reports that
/// record as corrupt anyway.
async fn backfill_token_webhook_modes(
    tx: &Transaction<'_>,
    s: &str,
) -> Result<(), tokio_postgres::Error> {
    let rows = tx
        .query(
            &format!(
                "SELECT t.token, h.record FROM {s}.tokens t \
                 JOIN {s}.hooks h ON h.run_id = t.run_id AND h.hook = t.hook"
            ),
            &[],
        )
        .await?;
    let (mut tokens, mut modes) = (Vec::new(), Vec::new());
    for row in &rows {
        let token: String = row.try_get(0)?;
        let record: &[u8] = row.try_get(1)?;
        match codec::decode_record::<HookRecord>(record) {
            Ok(HookRecord {
                webhook: Some(mode),
                ..
            }) => match codec::encode_record(&mode) {
                Ok(bytes) => {
                    tokens.push(token);
                    modes.push(bytes);
                }
                Err(e) => tracing::warn!(%token, error = %e, "cannot encode a webhook mode"),
            },
            Ok(_) => {}
            Err(e) => tracing::warn!(
                %token,
                error = %e,
                "a hook record does not decode; its token is migrated as a plain hook"
            ),
        }
    }
    if !tokens.is_empty() {
        tx.execute(
            &format!(
                "UPDATE {s}.tokens t SET webhook = v.mode \
                 FROM unnest($1::text[], $2::bytea[]) AS v(token, mode) WHERE t.token = v.token"
            ),
            &[&tokens, &modes],
        )
        .await?;
    }
    Ok(())
}

/// The columns of a `runs` row, in the order [`crate::view`] decodes them.
const RUN_COLS: &str = "id, workflow, status, error, created_at, updated_at, next_seq";
/// The columns of a `queue` row, in the order [`crate::view`] decodes them.
const QUEUE_COLS: &str =
    "run_id, wake_gen, wake_due, timer_ids, timer_dues, lease_id, lease_expires, lease_wake, \
     parked";

/// The database server's clock in milliseconds since the Unix epoch, as a
/// `bigint`: `clock_timestamp()` (the time the statement runs, not the
/// transaction's start, so it is read after the locks taken before it).
const DB_NOW_MS: &str = "floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// Every statement the store runs, with its schema spliced in.
#[derive(Debug)]
pub(crate) struct Sql {
    pub(crate) run_lock: String,
    pub(crate) run_get: String,
    pub(crate) run_exists: String,
    /// The schema, quoted, for statements built per call ([`Sql::runs_list`]).
    pub(crate) schema: String,
    pub(crate) runs_purge: String,
    pub(crate) run_insert: String,
    pub(crate) run_update: String,
    pub(crate) event_get: String,
    pub(crate) events_read: String,
    pub(crate) events_insert: String,
    pub(crate) ops_get: String,
    pub(crate) ops_upsert: String,
    pub(crate) tokens_get: String,
    pub(crate) token_owner: String,
    pub(crate) token_insert: String,
    pub(crate) token_update: String,
    pub(crate) token_delete: String,
    pub(crate) hooks_get: String,
    pub(crate) hook_by_token: String,
    pub(crate) hook_upsert: String,
    pub(crate) hooks_truncate: String,
    pub(crate) queue_lock: String,
    pub(crate) queue_due_lock: String,
    pub(crate) queue_due_lock_db: String,
    pub(crate) db_now: String,
    pub(crate) queue_upsert: String,
    pub(crate) queue_delete: String,
    pub(crate) next_due: String,
    pub(crate) notify: String,
    pub(crate) streams_get: String,
    pub(crate) streams_upsert: String,
    pub(crate) chunks_upsert: String,
    pub(crate) chunks_delete: String,
    pub(crate) chunks_get: String,
}

impl Sql {
    /// The listing of `query`: its SQL, with `$1` the limit, then the status,
    /// the workflow and the cursor as far as the query has them, in that
    /// order. Answered from the indexes on `(status, id)`, `(workflow, id)`
    /// and `(workflow, status, id)`.
    pub(crate) fn runs_list(
        &self,
        status: bool,
        workflow: bool,
        after: bool,
        newest: bool,
    ) -> String {
        let s = &self.schema;
        let mut conds = Vec::new();
        let mut n = 1;
        let mut param = || {
            n += 1;
            format!("${n}")
        };
        if status {
            conds.push(format!("status = {}", param()));
        }
        if workflow {
            conds.push(format!("workflow = {}", param()));
        }
        if after {
            let op = if newest { "<" } else { ">" };
            conds.push(format!("id {op} {}", param()));
        }
        let filter = if conds.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conds.join(" AND "))
        };
        let order = if newest { "DESC" } else { "ASC" };
        format!("SELECT {RUN_COLS} FROM {s}.runs {filter} ORDER BY id {order} LIMIT $1")
    }

    /// The statements for `schema`.
    pub(crate) fn new(schema: &str) -> Sql {
        let s = format!("\"{schema}\"");
        let ended = RunStatus::ALL
            .iter()
            .filter(|st| st.is_terminal())
            .map(|st| format!("'{st}'"))
            .collect::<Vec<_>>()
            .join(", ");
        Sql {
            run_lock: format!("SELECT {RUN_COLS} FROM {s}.runs WHERE id = $1 FOR UPDATE"),
            run_get: format!("SELECT {RUN_COLS} FROM {s}.runs WHERE id = $1"),
            run_exists: format!("SELECT 1 FROM {s}.runs WHERE id = $1"),
            schema: s.clone(),
            runs_purge: format!(
                "WITH gone AS (DELETE FROM {s}.runs WHERE id = ANY($1) \
                   AND status IN ({ended}) AND updated_at < $2 \
                   AND ($3::text IS NULL OR workflow = $3) AND ($4::text IS NULL OR status = $4) \
                   RETURNING id), \
                 e AS (DELETE FROM {s}.events WHERE run_id IN (SELECT id FROM gone)), \
                 o AS (DELETE FROM {s}.ops WHERE run_id IN (SELECT id FROM gone)), \
                 h AS (DELETE FROM {s}.hooks WHERE run_id IN (SELECT id FROM gone)), \
                 t AS (DELETE FROM {s}.tokens WHERE run_id IN (SELECT id FROM gone)), \
                 q AS (DELETE FROM {s}.queue WHERE run_id IN (SELECT id FROM gone)), \
                 st AS (DELETE FROM {s}.streams WHERE run_id IN (SELECT id FROM gone)), \
                 ch AS (DELETE FROM {s}.chunks WHERE run_id IN (SELECT id FROM gone)) \
                 SELECT id FROM gone ORDER BY id"
            ),
            run_insert: format!(
                "INSERT INTO {s}.runs ({RUN_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            ),
            run_update: format!(
                "UPDATE {s}.runs SET status = $2, error = $3, updated_at = $4, next_seq = $5 \
                 WHERE id = $1"
            ),
            event_get: format!("SELECT seq, body FROM {s}.events WHERE run_id = $1 AND seq = $2"),
            events_read: format!(
                "SELECT seq, body FROM {s}.events WHERE run_id = $1 AND seq >= $2 \
                 ORDER BY seq LIMIT $3"
            ),
            events_insert: format!(
                "INSERT INTO {s}.events (run_id, seq, at, kind, body) \
                 SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::text[], $5::bytea[])"
            ),
            ops_get: format!(
                "SELECT correlation, kind, closed FROM {s}.ops \
                 WHERE run_id = $1 AND correlation = ANY($2)"
            ),
            ops_upsert: format!(
                "INSERT INTO {s}.ops (run_id, correlation, kind, closed) \
                 SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::boolean[]) \
                 ON CONFLICT (run_id, correlation) \
                 DO UPDATE SET kind = EXCLUDED.kind, closed = EXCLUDED.closed"
            ),
            tokens_get: format!(
                "SELECT token, run_id, hook, webhook FROM {s}.tokens WHERE token = ANY($1)"
            ),
            token_owner: format!("SELECT run_id, hook FROM {s}.tokens WHERE token = $1"),
            token_insert: format!(
                "INSERT INTO {s}.tokens (token, run_id, hook, webhook) VALUES ($1, $2, $3, $4)"
            ),
            token_update: format!(
                "UPDATE {s}.tokens SET run_id = $2, hook = $3, webhook = $4 WHERE token = $1"
            ),
            token_delete: format!("DELETE FROM {s}.tokens WHERE token = $1"),
            hooks_get: format!(
                "SELECT hook, record FROM {s}.hooks WHERE run_id = $1 ORDER BY position"
            ),
            hook_by_token: format!(
                "SELECT h.hook, h.record, h.run_id FROM {s}.tokens t \
                 JOIN {s}.hooks h ON h.run_id = t.run_id AND h.hook = t.hook \
                 WHERE t.token = $1 AND h.live"
            ),
            hook_upsert: format!(
                "INSERT INTO {s}.hooks (run_id, hook, position, token, live, created_at, record) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (run_id, hook) DO UPDATE SET position = EXCLUDED.position, \
                 token = EXCLUDED.token, live = EXCLUDED.live, \
                 created_at = EXCLUDED.created_at, record = EXCLUDED.record"
            ),
            hooks_truncate: format!("DELETE FROM {s}.hooks WHERE run_id = $1 AND position >= $2"),
            queue_lock: format!("SELECT {QUEUE_COLS} FROM {s}.queue WHERE run_id = $1 FOR UPDATE"),
            queue_due_lock: format!(
                "SELECT {QUEUE_COLS} FROM {s}.queue WHERE due <= $1 \
                 ORDER BY due, run_id LIMIT $2 FOR UPDATE SKIP LOCKED"
            ),
            // The same, by the database's clock (read once), which is
            // returned as the last column.
            queue_due_lock_db: format!(
                "WITH t AS (SELECT {DB_NOW_MS} AS now) \
                 SELECT {QUEUE_COLS}, t.now FROM {s}.queue, t WHERE due <= t.now \
                 ORDER BY due, run_id LIMIT $1 FOR UPDATE OF queue SKIP LOCKED"
            ),
            db_now: format!("SELECT {DB_NOW_MS}"),
            queue_upsert: format!(
                "INSERT INTO {s}.queue (run_id, due, wake_gen, wake_due, timer_ids, timer_dues, \
                 lease_id, lease_expires, lease_wake, parked) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (run_id) DO UPDATE SET due = EXCLUDED.due, \
                 wake_gen = EXCLUDED.wake_gen, wake_due = EXCLUDED.wake_due, \
                 timer_ids = EXCLUDED.timer_ids, timer_dues = EXCLUDED.timer_dues, \
                 lease_id = EXCLUDED.lease_id, lease_expires = EXCLUDED.lease_expires, \
                 lease_wake = EXCLUDED.lease_wake, parked = EXCLUDED.parked"
            ),
            queue_delete: format!("DELETE FROM {s}.queue WHERE run_id = $1"),
            next_due: format!("SELECT min(due) FROM {s}.queue"),
            notify: "SELECT pg_notify($1, $2)".to_owned(),
            streams_get: format!("SELECT record FROM {s}.streams WHERE run_id = $1"),
            streams_upsert: format!(
                "INSERT INTO {s}.streams (run_id, record) VALUES ($1, $2) \
                 ON CONFLICT (run_id) DO UPDATE SET record = EXCLUDED.record"
            ),
            chunks_upsert: format!(
                "INSERT INTO {s}.chunks (run_id, stream, step, attempt, n, payload) \
                 SELECT $1, * FROM unnest($2::text[], $3::text[], $4::bigint[], $5::bigint[], \
                 $6::bytea[]) \
                 ON CONFLICT (run_id, stream, step, attempt, n) \
                 DO UPDATE SET payload = EXCLUDED.payload"
            ),
            chunks_delete: format!(
                "DELETE FROM {s}.chunks c USING unnest($2::text[], $3::text[], $4::bigint[], \
                 $5::bigint[]) AS u(stream, step, attempt, n) \
                 WHERE c.run_id = $1 AND c.stream = u.stream AND c.step = u.step \
                 AND c.attempt = u.attempt AND c.n = u.n"
            ),
            // The payloads of the rows asked for, in the order asked (NULL:
            // no such row).
            chunks_get: format!(
                "SELECT c.payload FROM unnest($2::text[], $3::text[], $4::bigint[], \
                 $5::bigint[]) WITH ORDINALITY AS u(stream, step, attempt, n, i) \
                 LEFT JOIN {s}.chunks c ON c.run_id = $1 AND c.stream = u.stream \
                 AND c.step = u.step AND c.attempt = u.attempt AND c.n = u.n ORDER BY u.i"
            ),
        }
    }
}
