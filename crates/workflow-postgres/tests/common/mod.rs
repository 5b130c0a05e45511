//! Shared test set-up: the database (given, or a throwaway cluster), fresh
//! schemas, and their clean-up.
#![allow(dead_code)]

pub mod cluster;

use std::io::Write;
use std::sync::{Arc, Mutex, Once};

use tokio_postgres::NoTls;
use workflow_postgres::{PostgresConfig, PostgresStore, TimeSource};
use workflow_store::{Clock, RunId, StoreError};

/// The environment variable naming the test database.
pub const URL_VAR: &str = "WORKFLOW_TEST_POSTGRES_URL";

/// The test database's URL: `WORKFLOW_TEST_POSTGRES_URL` if set, else this
/// test binary's throwaway cluster ([`cluster::shared`]). `None` only when no
/// PostgreSQL server binaries are installed; then the first test to ask says
/// `SKIPPED` on stderr, once for the whole binary.
pub fn url_or_skip(test: &str) -> Option<String> {
    if let Ok(url) = std::env::var(URL_VAR) {
        if !url.trim().is_empty() {
            return Some(url);
        }
    }
    if let Some(cluster) = cluster::shared() {
        return Some(cluster.url.clone());
    }
    static SKIP_NOTICE: Once = Once::new();
    SKIP_NOTICE.call_once(|| {
        let binary = std::env::current_exe()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_default();
        // Straight to stderr, past the test harness's capture.
        let _ = writeln!(
            std::io::stderr(),
            "\n{bar}\nSKIPPED: every PostgreSQL test of {binary} (first: {test}): no PostgreSQL \
             server binaries (initdb, postgres) found via pg_config --bindir, PATH or \
             /usr/lib/postgresql/*/bin, and {URL_VAR} is not set. Install PostgreSQL \
             (e.g. apt-get install postgresql) or set {URL_VAR}.\n{bar}\n",
            bar = "!".repeat(78)
        );
    });
    None
}

/// A schema name no other test uses.
pub fn unique_schema() -> String {
    format!("wft_{:032x}", RunId::new().as_u128())
}

/// Runs SQL on a direct connection (no store).
pub async fn exec(url: &str, sql: &str) -> Result<(), tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
    let driver = tokio::spawn(conn);
    let r = client.batch_execute(sql).await;
    drop(client);
    let _ = driver.await;
    r
}

/// Schemas created by a test, dropped when this is dropped (even on panic).
pub struct Schemas {
    pub url: String,
    names: Mutex<Vec<String>>,
}

impl Schemas {
    pub fn new(url: String) -> Self {
        Schemas {
            url,
            names: Mutex::new(Vec::new()),
        }
    }

    /// A new unique schema name, remembered for clean-up.
    pub fn fresh(&self) -> String {
        let name = unique_schema();
        self.names.lock().unwrap().push(name.clone());
        name
    }

    /// A store on `schema` whose times come from `clock` (the conformance
    /// suite's manual clock decides lease expiry and due times).
    pub async fn store(
        &self,
        schema: &str,
        clock: Arc<dyn Clock>,
    ) -> Result<PostgresStore, StoreError> {
        self.connect(schema, clock, TimeSource::Clock).await
    }

    /// A store on `schema` whose times come from the database's clock;
    /// `clock` only stands in for the host's clock between reads of it.
    pub async fn store_on_database_time(
        &self,
        schema: &str,
        clock: Arc<dyn Clock>,
    ) -> Result<PostgresStore, StoreError> {
        self.connect(schema, clock, TimeSource::Database).await
    }

    async fn connect(
        &self,
        schema: &str,
        clock: Arc<dyn Clock>,
        time: TimeSource,
    ) -> Result<PostgresStore, StoreError> {
        PostgresStore::connect_with(
            PostgresConfig::new(self.url.clone())
                .schema(schema)
                .clock(clock)
                .time_source(time)
                .pool_size(8),
        )
        .await
    }
}

impl Drop for Schemas {
    fn drop(&mut self) {
        let names = std::mem::take(&mut *self.names.lock().unwrap_or_else(|e| e.into_inner()));
        if names.is_empty() {
            return;
        }
        let sql: String = names
            .iter()
            .map(|n| format!("DROP SCHEMA IF EXISTS \"{n}\" CASCADE;"))
            .collect();
        let url = self.url.clone();
        // Outside any runtime here (tests drop this after run_category returns),
        // but use a thread so a drop inside a runtime works too.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime for clean-up");
            if let Err(e) = rt.block_on(exec(&url, &sql)) {
                eprintln!("could not drop test schemas: {e}");
            }
        })
        .join();
    }
}

/// A run id as PostgreSQL's `uuid` text.
pub fn uuid_text(run: RunId) -> String {
    let h = format!("{:032x}", run.as_u128());
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}
