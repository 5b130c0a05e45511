//! The conformance suite on every backend in this crate: one test per
//! category and backend, named `<backend>::<category>`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use workflow_store::conformance::Backend;
use workflow_store::{Clock, MemoryStore, RunId, SledConfig, SledStore, StoreError};

/// Fresh in-memory stores.
struct MemoryBackend;

#[async_trait]
impl Backend for MemoryBackend {
    type Store = MemoryStore;
    async fn open(&self, clock: Arc<dyn Clock>) -> Result<MemoryStore, StoreError> {
        Ok(MemoryStore::with_clock(clock))
    }
}

workflow_store::conformance_tests!(memory, super::MemoryBackend);

/// Fresh sled stores, each in its own temporary directory (removed on drop).
#[derive(Default)]
struct SledBackend {
    dirs: Mutex<Vec<tempfile::TempDir>>,
}

#[async_trait]
impl Backend for SledBackend {
    type Store = SledStore;

    async fn open(&self, clock: Arc<dyn Clock>) -> Result<SledStore, StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::backend("temporary directory", e))?;
        let store = SledStore::open_with(SledConfig::new(dir.path()).clock(clock))?;
        self.dirs.lock().unwrap().push(dir);
        Ok(store)
    }

    async fn reopen(
        &self,
        store: SledStore,
        clock: Arc<dyn Clock>,
    ) -> Option<Result<SledStore, StoreError>> {
        let path: PathBuf = store.path().to_path_buf();
        drop(store);
        Some(SledStore::open_with(SledConfig::new(path).clock(clock)))
    }

    async fn corrupt_event(&self, store: &SledStore, run: RunId, seq: u64) -> bool {
        let mut key = run.to_bytes().to_vec();
        key.extend_from_slice(&seq.to_be_bytes());
        let events = store.raw_db().open_tree("events").expect("events tree");
        assert!(
            events.get(&key).expect("read").is_some(),
            "no event at {run}/{seq} to damage"
        );
        events
            .insert(key, &b"\xCE\x01\xff\x00 damaged"[..])
            .expect("damage");
        true
    }
}

workflow_store::conformance_tests!(sled, super::SledBackend::default());

/// Fresh redb stores, each in its own temporary directory (removed on drop).
#[cfg(feature = "redb")]
#[derive(Default)]
struct RedbBackend {
    dirs: Mutex<Vec<tempfile::TempDir>>,
}

#[cfg(feature = "redb")]
#[async_trait]
impl Backend for RedbBackend {
    type Store = workflow_store::RedbStore;

    async fn open(&self, clock: Arc<dyn Clock>) -> Result<Self::Store, StoreError> {
        use workflow_store::{RedbConfig, RedbStore};
        let dir = tempfile::tempdir().map_err(|e| StoreError::backend("temporary directory", e))?;
        // A small cache: the suite opens many stores at once.
        let config = RedbConfig::new(dir.path()).clock(clock).cache_size(4 << 20);
        let store = RedbStore::open_with(config)?;
        self.dirs.lock().unwrap().push(dir);
        Ok(store)
    }

    async fn reopen(
        &self,
        store: Self::Store,
        clock: Arc<dyn Clock>,
    ) -> Option<Result<Self::Store, StoreError>> {
        use workflow_store::{RedbConfig, RedbStore};
        let path: PathBuf = store.path().to_path_buf();
        drop(store);
        let config = RedbConfig::new(path).clock(clock).cache_size(4 << 20);
        Some(RedbStore::open_with(config))
    }

    async fn corrupt_event(&self, store: &Self::Store, run: RunId, seq: u64) -> bool {
        use ::redb::ReadableTable;
        let mut key = run.to_bytes().to_vec();
        key.extend_from_slice(&seq.to_be_bytes());
        let events = ::redb::TableDefinition::<&[u8], &[u8]>::new("events");
        let txn = store.raw_db().begin_write().expect("write transaction");
        {
            let mut table = txn.open_table(events).expect("events table");
            assert!(
                table.get(key.as_slice()).expect("read").is_some(),
                "no event at {run}/{seq} to damage"
            );
            table
                .insert(key.as_slice(), &b"\xCE\x01\xff\x00 damaged"[..])
                .expect("damage");
        }
        txn.commit().expect("commit the damage");
        true
    }
}

#[cfg(feature = "redb")]
workflow_store::conformance_tests!(redb, super::RedbBackend::default());
