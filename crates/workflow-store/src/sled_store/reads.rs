//! Reads of [`super::SledStore`]: gets and scans outside transactions. The
//! store runs them behind the visibility gate (`visibility.rs`), so that they
//! return only acknowledged writes; this module only reads.
//!
//! sled 0.34 commits a transaction under a lock that every single get (and each
//! step of a scan) also takes, so a get sees all of a write or none of it. A read
//! of several keys may see a write land in between: a scan of a run's events
//! then sees a longer prefix of the log, which is fine; the reads that combine
//! two trees (a run via the status index, a hook via its token) say how they
//! cope.

use super::damage;
use super::layout::{self, decode, decode_event};
use super::Inner;
use crate::codec::CodecError;
use crate::error::StoreError;
use crate::event::{Event, Payload, Timestamp};
use crate::id::{HookToken, RunId};
use crate::record::{HookRecord, RunQuery, RunRecord, TokenOwner};
use crate::stream::{ChunkKey, RunStreams};

impl Inner {
    /// Maps a failed sled read of `tree` (at the key `key` names, if it
    /// names one) to a typed error naming both
    /// ([`super::damage::sled_error`]).
    fn read_failed<'a>(
        &'a self,
        tree: &'static str,
        key: impl FnOnce() -> String + 'a,
    ) -> impl FnOnce(sled::Error) -> StoreError + 'a {
        move |e| {
            let key = key();
            let what = if key.is_empty() {
                format!("tree {tree:?}")
            } else {
                format!("tree {tree:?}, {key}")
            };
            damage::sled_error(&self.path, "reading", Some(&what), e)
        }
    }

    pub(super) fn run_record(&self, run: RunId) -> Result<Option<RunRecord>, StoreError> {
        self.trees
            .runs
            .get(layout::run_key(run))
            .map_err(self.read_failed(layout::RUNS, || format!("run {run}")))?
            .map(|b| decode(&b, "run", || run.to_string()))
            .transpose()
    }

    pub(super) fn require_run(&self, run: RunId) -> Result<(), StoreError> {
        let exists = self
            .trees
            .runs
            .contains_key(layout::run_key(run))
            .map_err(self.read_failed(layout::RUNS, || format!("run {run}")))?;
        if exists {
            Ok(())
        } else {
            Err(StoreError::RunNotFound { run })
        }
    }

    /// Up to `limit` events of `run` from seq `from`, checked against each
    /// other and the run's record: a gap, or a log that ends before the
    /// record's `next_seq`, is [`StoreError::Corrupt`] (sled does not always
    /// keep its transactions whole when its files are damaged).
    pub(super) fn read_events(
        &self,
        run: RunId,
        from: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        // The record first: a write landing in between only lengthens the log.
        let record = self
            .trees
            .runs
            .get(layout::run_key(run))
            .map_err(self.read_failed(layout::RUNS, || format!("run {run}")))?
            .ok_or(StoreError::RunNotFound { run })?;
        // A record that does not decode is reported by the reads of the record;
        // the log is still readable, only not checked against it.
        let next_seq = decode::<RunRecord>(&record, "run", || run.to_string())
            .ok()
            .map(|r| r.next_seq);
        let damaged = |seq: u64, why: String| StoreError::Corrupt {
            what: "event log",
            key: format!("{run}/{seq}"),
            source: CodecError::Malformed(why),
        };
        let range = layout::event_key(run, from)..=layout::event_key(run, u64::MAX);
        let mut out = Vec::with_capacity(limit.min(crate::store::READ_PAGE));
        let mut expected = from;
        for item in self.trees.events.range(range).take(limit) {
            let (key, value) =
                item.map_err(self.read_failed(layout::EVENTS, || format!("run {run}")))?;
            let seq = layout::parse_event_seq(&key).unwrap_or(u64::MAX);
            if seq != expected {
                return Err(damaged(
                    expected,
                    format!("event {expected} is missing: the next stored event is {seq}"),
                ));
            }
            out.push(decode_event(&value, run, seq)?);
            expected = expected.saturating_add(1);
        }
        match next_seq {
            Some(next_seq) if out.len() < limit && expected < next_seq => Err(damaged(
                expected,
                format!(
                    "the log ends at event {expected} but the run's record counts {next_seq} \
                     events"
                ),
            )),
            _ => Ok(out),
        }
    }

    pub(super) fn list_runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>, StoreError> {
        let mut out = Vec::with_capacity(query.limit.min(1024));
        if query.limit == 0 {
            return Ok(out);
        }
        // The index that answers the query, as a key prefix in a tree: run ids
        // follow the prefix, so the cursor is the prefix plus an id.
        let (tree, name, prefix) =
            match crate::kv::listing_index(query.status, query.workflow.as_deref()) {
                Some((table, prefix)) => (self.trees.table(table), table.name(), prefix),
                None => (&self.trees.runs, layout::RUNS, Vec::new()),
            };
        let range = tree.range(crate::kv::listing_range(&prefix, query));
        let items: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> =
            if query.newest_first {
                Box::new(range.rev())
            } else {
                Box::new(range)
            };
        for item in items {
            let (k, value) = item.map_err(self.read_failed(name, String::new))?;
            let rec = if query.workflow.is_none() && query.status.is_none() {
                decode(&value, "run", || layout::hex(&k))?
            } else {
                let run = layout::trailing_run_id(&k, "run index key")?;
                // The index and the record are read separately: skip a run
                // whose status changed in between.
                match self.run_record(run)? {
                    Some(rec) => rec,
                    None => continue,
                }
            };
            if query.matches(&rec) {
                out.push(rec);
                if out.len() == query.limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    pub(super) fn get_hook(&self, token: &HookToken) -> Result<Option<HookRecord>, StoreError> {
        let owner_of = |inner: &Inner| -> Result<Option<TokenOwner>, StoreError> {
            inner
                .trees
                .tokens
                .get(token.as_str().as_bytes())
                .map_err(
                    inner.read_failed(layout::TOKENS, || format!("token {:?}", token.as_str())),
                )?
                .map(|b| decode(&b, "token owner", || format!("{token:?}")))
                .transpose()
        };
        // The token and the hook list are read separately; if the token moved
        // to another hook in between, read again.
        let mut owner = owner_of(self)?;
        for _ in 0..4 {
            let Some(current) = owner else {
                return Ok(None);
            };
            let found = self
                .run_hooks(current.run_id)?
                .into_iter()
                .find(|h| h.hook == current.hook && h.live);
            if found.is_some() {
                return Ok(found);
            }
            let again = owner_of(self)?;
            if again.as_ref() == Some(&current) {
                return Ok(None);
            }
            owner = again;
        }
        Ok(None)
    }

    pub(super) fn run_hooks(&self, run: RunId) -> Result<Vec<HookRecord>, StoreError> {
        Ok(self
            .trees
            .run_hooks
            .get(layout::run_key(run))
            .map_err(self.read_failed(layout::RUN_HOOKS, || format!("run {run}")))?
            .map(|b| decode(&b, "hook list", || run.to_string()))
            .transpose()?
            .unwrap_or_default())
    }

    pub(super) fn run_streams(&self, run: RunId) -> Result<Option<RunStreams>, StoreError> {
        self.trees
            .streams
            .get(layout::run_key(run))
            .map_err(self.read_failed(layout::STREAMS, || format!("run {run}")))?
            .map(|b| decode(&b, "streams record", || run.to_string()))
            .transpose()
    }

    pub(super) fn chunks(
        &self,
        run: RunId,
        keys: &[ChunkKey],
    ) -> Result<Vec<Option<Payload>>, StoreError> {
        keys.iter()
            .map(|key| {
                Ok(self
                    .trees
                    .chunks
                    .get(crate::kv::chunk_key(run, key))
                    .map_err(self.read_failed(layout::CHUNKS, || format!("run {run}")))?
                    .map(|b| Payload::from(b.to_vec())))
            })
            .collect()
    }

    /// Up to `limit` runs due at `now`, earliest first.
    pub(super) fn due_runs(&self, now: Timestamp, limit: usize) -> Result<Vec<RunId>, StoreError> {
        let end = layout::due_key(now, RunId::from_u128(u128::MAX));
        let mut runs = Vec::with_capacity(limit.min(1024));
        if limit == 0 {
            return Ok(runs);
        }
        for item in self.trees.due.range(..=end) {
            let (key, _) = item.map_err(self.read_failed(layout::DUE, String::new))?;
            match layout::parse_due_key(&key) {
                Ok((_, run)) => runs.push(run),
                // A damaged index key must not stop all work from being leased.
                Err(e) => tracing::warn!(error = %e, "skipping a damaged due-index key"),
            }
            if runs.len() == limit {
                break;
            }
        }
        Ok(runs)
    }

    pub(super) fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        match self
            .trees
            .due
            .first()
            .map_err(self.read_failed(layout::DUE, String::new))?
        {
            Some((key, _)) => Ok(Some(layout::parse_due_key(&key)?.0)),
            None => Ok(None),
        }
    }
}
