//! [`PostgresConfig`]: where the store connects and how.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use workflow_store::{Clock, StoreError, SystemClock};

/// The schema a store uses unless told otherwise.
pub const DEFAULT_SCHEMA: &str = "workflow";

/// Connections a store's pool opens at most unless told otherwise.
pub const DEFAULT_POOL_SIZE: usize = 16;

/// Which clock decides times: lease expiry, due times, event timestamps.
///
/// ```
/// use std::sync::Arc;
/// use workflow_postgres::{PostgresConfig, TimeSource};
/// use workflow_store::{ManualClock, Timestamp};
///
/// // Production: the database server's clock decides (the default).
/// let config = PostgresConfig::new("postgres://app@db.internal:5432/orders");
/// assert_eq!(config.time_source, TimeSource::Database);
///
/// // A test that drives time by hand: the given clock decides.
/// let clock = Arc::new(ManualClock::new(Timestamp(1_700_000_000_000)));
/// let config = PostgresConfig::new("postgres://postgres@127.0.0.1:5432/test")
///     .clock(clock)
///     .time_source(TimeSource::Clock);
/// assert_eq!(config.time_source, TimeSource::Clock);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeSource {
    /// The database server's clock (`clock_timestamp()`), read inside each
    /// write's transaction after its locks are taken. Every process sharing
    /// the schema goes by the same clock, so skew between their hosts cannot
    /// let two of them hold a lease on one run. The default.
    #[default]
    Database,
    /// [`PostgresConfig::clock`]: for tests that drive time with a manual
    /// clock, or a single process. Processes whose clocks disagree can then
    /// both hold a lease on one run (the one running ahead takes over leases
    /// the others still hold).
    Clock,
}

/// How to connect a [`crate::PostgresStore`].
///
/// ```
/// use workflow_postgres::PostgresConfig;
/// let config = PostgresConfig::new("postgres://app@db.internal:5432/orders")
///     .schema("workflow_orders")
///     .pool_size(32);
/// assert_eq!(config.schema, "workflow_orders");
/// ```
#[derive(Clone)]
pub struct PostgresConfig {
    /// The connection string: a URL (`postgres://user:password@host:5432/db`)
    /// or `key=value` pairs (`host=localhost user=app dbname=orders`), as
    /// understood by [`tokio_postgres::Config`].
    pub url: String,
    /// The schema holding the store's tables, created if missing (default
    /// [`DEFAULT_SCHEMA`]). Lowercase ASCII letters, digits and `_`, starting
    /// with a letter or `_`, at most 54 bytes. Stores on different schemas of one
    /// database are independent (tests use one schema each).
    pub schema: String,
    /// The local clock (default: the system clock). With
    /// [`TimeSource::Clock`] it decides every time the store writes. With
    /// [`TimeSource::Database`] it only carries [`workflow_store::Store::now`]
    /// between reads of the database's clock: `now` is this clock plus the
    /// offset to the database's clock last measured, so what an engine
    /// computes from it (a sleep's wake-up time, how long to wait for the
    /// next due item) follows the database's clock too.
    pub clock: Arc<dyn Clock>,
    /// Which clock decides lease expiry, due times and event timestamps
    /// (default [`TimeSource::Database`]).
    pub time_source: TimeSource,
    /// The most connections the pool opens (default [`DEFAULT_POOL_SIZE`]);
    /// change notification uses one more.
    pub pool_size: usize,
    /// Whether to LISTEN for changes made by other processes (default `true`).
    /// Turn it off behind a transaction-pooling proxy (PgBouncer in transaction
    /// mode) where LISTEN does not work: [`crate::PostgresStore`] then offers no
    /// change feed and engines poll.
    pub notifications: bool,
    /// Whether NOTIFY goes inside each write's transaction (default `false`).
    ///
    /// By default a write's changes are notified right after its commit by a
    /// sender task that sends everything accumulated meanwhile in one
    /// transaction of its own (with `synchronous_commit` off). PostgreSQL
    /// serializes the commits of all notifying transactions (a global lock held
    /// through the commit's WAL flush), so notifying inside every write would
    /// serialize their flushes: the benchmark measures about half the
    /// throughput of concurrent writers that way. Either way only committed
    /// writes are notified; after the commit, a notification can be lost if the
    /// process dies in between, which polling covers. Set this to commit each
    /// notification atomically with its write instead.
    pub notify_in_transaction: bool,
    /// How long to wait for a connection, when opening one and when taking one
    /// from a busy pool (default 10 s).
    pub connect_timeout: Duration,
}

impl PostgresConfig {
    /// A configuration with the defaults, connecting to `url`.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresConfig {
            url: url.into(),
            schema: DEFAULT_SCHEMA.to_owned(),
            clock: Arc::new(SystemClock),
            time_source: TimeSource::Database,
            pool_size: DEFAULT_POOL_SIZE,
            notifications: true,
            notify_in_transaction: false,
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// Uses `schema` for the store's tables.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Uses `clock` as the local clock (see [`PostgresConfig::clock`]; it
    /// decides times only with [`TimeSource::Clock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Says which clock decides times (see [`TimeSource`]).
    pub fn time_source(mut self, source: TimeSource) -> Self {
        self.time_source = source;
        self
    }

    /// Opens at most `size` pooled connections (at least 1).
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size;
        self
    }

    /// Turns change notification (LISTEN/NOTIFY) on or off.
    pub fn notifications(mut self, on: bool) -> Self {
        self.notifications = on;
        self
    }

    /// Sends NOTIFY inside each write's transaction (see
    /// [`PostgresConfig::notify_in_transaction`]).
    pub fn notify_in_transaction(mut self, on: bool) -> Self {
        self.notify_in_transaction = on;
        self
    }

    /// Waits at most `timeout` for a connection.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &redact(&self.url))
            .field("schema", &self.schema)
            .field("clock", &self.clock)
            .field("time_source", &self.time_source)
            .field("pool_size", &self.pool_size)
            .field("notifications", &self.notifications)
            .field("notify_in_transaction", &self.notify_in_transaction)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// The connection string with any password replaced by `***`.
pub(crate) fn redact(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                return format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &rest[..colon],
                    &rest[at..]
                );
            }
        }
        return url.to_owned();
    }
    url.split_whitespace()
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks a schema name: it is spliced into SQL (and the notification channel
/// name), so only plain identifiers are allowed.
pub(crate) fn check_schema(schema: &str) -> Result<(), StoreError> {
    let mut chars = schema.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if first_ok && rest_ok && schema.len() <= 54 && !schema.starts_with("pg_") {
        Ok(())
    } else {
        Err(StoreError::Backend {
            message: format!(
                "invalid PostgreSQL schema name {schema:?}: use lowercase ASCII letters, digits \
                 and '_', starting with a letter or '_' (not 'pg_'), at most 54 bytes"
            ),
            source: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/orders"),
            "postgres://app:***@db:5432/orders"
        );
        assert_eq!(
            redact("postgres://app@db:5432/orders"),
            "postgres://app@db:5432/orders"
        );
        assert_eq!(
            redact("host=db user=app password=s3cret dbname=x"),
            "host=db user=app password=*** dbname=x"
        );
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(check_schema("workflow").is_ok());
        assert!(check_schema("_wf_1").is_ok());
        for bad in [
            "",
            "Workflow",
            "1wf",
            "wf; drop",
            "wf\"x",
            "pg_wf",
            &"a".repeat(55),
        ] {
            assert!(check_schema(bad).is_err(), "{bad:?} accepted");
        }
    }
}
