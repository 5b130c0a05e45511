//! The conformance suite of `workflow_store` against a real PostgreSQL.
//!
//! On the server `WORKFLOW_TEST_POSTGRES_URL` names, or else on this binary's
//! throwaway cluster (see `common::cluster`). Each store the suite opens gets a schema of its
//! own, dropped when the test ends.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use common::{exec, url_or_skip, uuid_text, Schemas};
use workflow_postgres::PostgresStore;
use workflow_store::conformance::{run_category, Backend, Category};
use workflow_store::{Clock, RunId, StoreError};

/// Fresh PostgreSQL stores, one schema each.
struct PostgresBackend {
    schemas: Schemas,
}

#[async_trait]
impl Backend for PostgresBackend {
    type Store = PostgresStore;

    async fn open(&self, clock: Arc<dyn Clock>) -> Result<PostgresStore, StoreError> {
        let schema = self.schemas.fresh();
        self.schemas.store(&schema, clock).await
    }

    async fn reopen(
        &self,
        store: PostgresStore,
        clock: Arc<dyn Clock>,
    ) -> Option<Result<PostgresStore, StoreError>> {
        let schema = store.schema().to_owned();
        // Closes the pool and the listener: nothing is kept in the process.
        drop(store);
        Some(self.schemas.store(&schema, clock).await)
    }

    async fn corrupt_event(&self, store: &PostgresStore, run: RunId, seq: u64) -> bool {
        let sql = format!(
            "UPDATE \"{}\".events SET body = '\\xce01ff00206461616d61676564'::bytea \
             WHERE run_id = '{}'::uuid AND seq = {seq}",
            store.schema(),
            uuid_text(run)
        );
        exec(&self.schemas.url, &sql)
            .await
            .expect("damage an event");
        true
    }
}

/// Runs one category, or prints that it was skipped.
fn run(test: &str, category: Category) {
    let Some(url) = url_or_skip(test) else {
        return;
    };
    let backend = PostgresBackend {
        schemas: Schemas::new(url),
    };
    run_category(&backend, category);
}

#[test]
fn postgres_atomicity() {
    run("postgres_atomicity", Category::Atomicity);
}

#[test]
fn postgres_ordering() {
    run("postgres_ordering", Category::Ordering);
}

#[test]
fn postgres_idempotency() {
    run("postgres_idempotency", Category::Idempotency);
}

#[test]
fn postgres_hooks() {
    run("postgres_hooks", Category::Hooks);
}

#[test]
fn postgres_terminal() {
    run("postgres_terminal", Category::Terminal);
}

#[test]
fn postgres_leases() {
    run("postgres_leases", Category::Leases);
}

#[test]
fn postgres_queue() {
    run("postgres_queue", Category::Queue);
}

#[test]
fn postgres_notification() {
    run("postgres_notification", Category::Notification);
}

#[test]
fn postgres_corruption() {
    run("postgres_corruption", Category::Corruption);
}

#[test]
fn postgres_durability() {
    run("postgres_durability", Category::Durability);
}

#[test]
fn postgres_concurrency() {
    run("postgres_concurrency", Category::Concurrency);
}

#[test]
fn postgres_model() {
    run("postgres_model", Category::Model);
}

#[test]
fn postgres_listing() {
    run("postgres_listing", Category::Listing);
}

#[test]
fn postgres_purge() {
    run("postgres_purge", Category::Purge);
}

#[test]
fn postgres_streams() {
    run("postgres_streams", Category::Streams);
}
