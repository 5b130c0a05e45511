//! Crash test for `SledStore` with real processes and `SIGKILL`: the shared
//! machinery of `crash/mod.rs` on sled. `WORKFLOW_SLED_CRASH_KILLS` sets the
//! number of kills (default 20).

#![cfg(feature = "sled")]

mod crash;

use std::collections::BTreeMap;
use std::path::Path;

use workflow_store::{SledStore, StoreError};

struct Sled;

impl crash::CrashBackend for Sled {
    type Store = SledStore;
    const NAME: &'static str = "sled";

    fn open(dir: &Path) -> Result<SledStore, StoreError> {
        SledStore::open(dir)
    }

    fn raw_table(store: &SledStore, name: &str) -> BTreeMap<Vec<u8>, Vec<u8>> {
        store
            .raw_db()
            .open_tree(name)
            .expect("open a raw tree")
            .iter()
            .map(|kv| {
                let (k, v) = kv.expect("read a raw tree");
                (k.to_vec(), v.to_vec())
            })
            .collect()
    }
}

/// The child process (see `crash/mod.rs`); passes trivially in a normal run.
#[test]
fn crash_child_process() {
    crash::child::<Sled>();
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    crash::parent::<Sled>();
}
