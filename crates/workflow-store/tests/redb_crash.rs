//! Crash test for `RedbStore` with real processes and `SIGKILL`: the shared
//! machinery of `crash/mod.rs` on redb. `WORKFLOW_REDB_CRASH_KILLS` sets the
//! number of kills (default 20).

#![cfg(feature = "redb")]

mod crash;

use std::collections::BTreeMap;
use std::path::Path;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use workflow_store::{RedbStore, StoreError};

struct Redb;

impl crash::CrashBackend for Redb {
    type Store = RedbStore;
    const NAME: &'static str = "redb";

    fn open(dir: &Path) -> Result<RedbStore, StoreError> {
        RedbStore::open(dir)
    }

    fn raw_table(store: &RedbStore, name: &str) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let txn = store.raw_db().begin_read().expect("read transaction");
        let table = txn
            .open_table(TableDefinition::<&[u8], &[u8]>::new(name))
            .expect("open a raw table");
        table
            .iter()
            .expect("iterate a raw table")
            .map(|kv| {
                let (k, v) = kv.expect("read a raw table");
                (k.value().to_vec(), v.value().to_vec())
            })
            .collect()
    }
}

/// The child process (see `crash/mod.rs`); passes trivially in a normal run.
#[test]
fn crash_child_process() {
    crash::child::<Redb>();
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    crash::parent::<Redb>();
}
