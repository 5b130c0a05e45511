//! The hot-run cache: suspended workflow futures kept in memory so a new event
//! costs a delivery, not a replay of the whole history.
//!
//! Bounded; the least recently used run is evicted (and will be replayed from
//! its log when it next becomes due). An entry is taken out while a worker
//! drives the run, so a cached instance is never shared.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use workflow_store::RunId;

use crate::driver::RunInstance;

#[derive(Default)]
struct Entries {
    by_run: HashMap<RunId, (u64, RunInstance)>,
    by_age: BTreeMap<u64, RunId>,
    tick: u64,
}

/// A bounded LRU map of suspended runs.
pub(crate) struct RunCache {
    entries: Mutex<Entries>,
    capacity: usize,
}

impl RunCache {
    pub fn new(capacity: usize) -> Self {
        RunCache {
            entries: Mutex::new(Entries::default()),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a run's instance out of the cache.
    pub fn take(&self, run: RunId) -> Option<RunInstance> {
        let mut e = self.lock();
        let (tick, inst) = e.by_run.remove(&run)?;
        e.by_age.remove(&tick);
        Some(inst)
    }

    /// Puts an instance back, evicting the oldest beyond capacity.
    pub fn put(&self, run: RunId, inst: RunInstance) {
        if self.capacity == 0 {
            return;
        }
        let evicted = {
            let mut e = self.lock();
            e.tick += 1;
            let tick = e.tick;
            if let Some((old, _)) = e.by_run.insert(run, (tick, inst)) {
                e.by_age.remove(&old);
            }
            e.by_age.insert(tick, run);
            let mut evicted = Vec::new();
            while e.by_run.len() > self.capacity {
                let Some((_, oldest)) = e.by_age.pop_first() else {
                    break;
                };
                if let Some((_, inst)) = e.by_run.remove(&oldest) {
                    evicted.push(inst);
                }
            }
            evicted
        };
        // Dropping a workflow future runs user destructors: not under the lock.
        drop(evicted);
    }

    /// Drops every cached instance; their runs will be replayed.
    pub fn clear(&self) {
        let all = std::mem::take(&mut *self.lock());
        drop(all);
    }

    /// Undelivered events held by cached runs, and their payload bytes.
    pub fn pending_footprint(&self) -> (usize, usize) {
        self.lock()
            .by_run
            .values()
            .map(|(_, inst)| inst.pending_footprint())
            .fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
    }

    /// How many runs are cached.
    pub fn len(&self) -> usize {
        self.lock().by_run.len()
    }
}
