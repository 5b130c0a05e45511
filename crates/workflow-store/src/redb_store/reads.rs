//! Reads of [`super::RedbStore`]: each one in its own redb read transaction,
//! a consistent snapshot of the last commit. The store commits a batch only
//! once its write-ahead log record is synced, so reads return acknowledged
//! writes only (but for lease renewals, not synced: see "Leases" in the
//! module docs of [`super`]),
//! and a read that combines tables (a run via the status index, a hook via its
//! token) sees them as of one commit.

use redb::{ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable, TableHandle};

use super::damage::redb_error;
use super::layout::{self, decode, decode_event, Def};
use super::Inner;
use crate::codec::CodecError;
use crate::error::StoreError;
use crate::event::{Event, Payload, Timestamp};
use crate::id::{HookToken, RunId};
use crate::kv::Table;
use crate::record::{HookRecord, RunQuery, RunRecord, TokenOwner};
use crate::stream::{ChunkKey, RunStreams};

/// A table in a read transaction.
type ReadTable = ReadOnlyTable<&'static [u8], &'static [u8]>;

impl Inner {
    /// A snapshot of the last commit.
    pub(super) fn snapshot(&self) -> Result<ReadTransaction, StoreError> {
        self.db
            .begin_read()
            .map_err(|e| redb_error(&self.file, "starting a read transaction", None, e))
    }

    pub(super) fn table(&self, txn: &ReadTransaction, def: Def) -> Result<ReadTable, StoreError> {
        txn.open_table(def).map_err(|e| {
            redb_error(
                &self.file,
                "opening a table for reading",
                Some(&format_args!("table {:?}", def.name())),
                e,
            )
        })
    }

    /// The value of `key` in `table` (named `name`); `key_name` says what the
    /// key is, for errors.
    fn get(
        &self,
        table: &ReadTable,
        name: &str,
        key: &[u8],
        key_name: impl FnOnce() -> String,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        match table.get(key) {
            Ok(found) => Ok(found.map(|v| v.value().to_vec())),
            Err(e) => Err(self.read_failed(name, key_name())(e)),
        }
    }

    /// Maps a failed read of `table` (at `key`, if not empty) to a typed error.
    fn read_failed<'a>(
        &'a self,
        table: &'a str,
        key: String,
    ) -> impl FnOnce(redb::StorageError) -> StoreError + 'a {
        move |e| {
            let what = if key.is_empty() {
                format!("table {table:?}")
            } else {
                format!("table {table:?}, {key}")
            };
            redb_error(&self.file, "reading", Some(&what), e)
        }
    }

    fn record_in(
        &self,
        txn: &ReadTransaction,
        run: RunId,
    ) -> Result<Option<RunRecord>, StoreError> {
        let runs = self.table(txn, layout::RUNS)?;
        self.get(&runs, "runs", &layout::run_key(run), || {
            format!("run {run}")
        })?
        .map(|b| decode(&b, "run", || run.to_string()))
        .transpose()
    }

    pub(super) fn run_record(&self, run: RunId) -> Result<Option<RunRecord>, StoreError> {
        self.record_in(&self.snapshot()?, run)
    }

    /// Up to `limit` events of `run` from seq `from`, checked against each
    /// other and the run's record: a gap, or a log that ends before the
    /// record's `next_seq`, is [`StoreError::Corrupt`].
    pub(super) fn read_events(
        &self,
        run: RunId,
        from: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let txn = self.snapshot()?;
        let runs = self.table(&txn, layout::RUNS)?;
        let record = self
            .get(&runs, "runs", &layout::run_key(run), || {
                format!("run {run}")
            })?
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
        let events = self.table(&txn, layout::EVENTS)?;
        let start = layout::event_key(run, from);
        let end = layout::event_key(run, u64::MAX);
        let range = events
            .range::<&[u8]>(start.as_slice()..=end.as_slice())
            .map_err(self.read_failed("events", format!("run {run}")))?;
        let mut out = Vec::with_capacity(limit.min(crate::store::READ_PAGE));
        let mut expected = from;
        for item in range.take(limit) {
            let (key, value) = item.map_err(self.read_failed("events", format!("run {run}")))?;
            let seq = layout::parse_event_seq(key.value()).unwrap_or(u64::MAX);
            if seq != expected {
                return Err(damaged(
                    expected,
                    format!("event {expected} is missing: the next stored event is {seq}"),
                ));
            }
            out.push(decode_event(value.value(), run, seq)?);
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
        let txn = self.snapshot()?;
        let runs = self.table(&txn, layout::RUNS)?;
        // The index that answers the query, as a key prefix in a table: run
        // ids follow the prefix, so the cursor is the prefix plus an id.
        let (index, prefix) =
            match crate::kv::listing_index(query.status, query.workflow.as_deref()) {
                Some((table, prefix)) => (Some(table), prefix),
                None => (None, Vec::new()),
            };
        let scanned = match index {
            Some(table) => self.table(&txn, layout::def(table))?,
            None => self.table(&txn, layout::RUNS)?,
        };
        let name = index.map_or("runs", Table::name);
        let (lo, hi) = crate::kv::listing_range(&prefix, query);
        let bounds = (
            lo.as_ref().map(Vec::as_slice),
            hi.as_ref().map(Vec::as_slice),
        );
        let range = scanned
            .range::<&[u8]>(bounds)
            .map_err(self.read_failed(name, String::new()))?;
        let items: Box<dyn Iterator<Item = _>> = if query.newest_first {
            Box::new(range.rev())
        } else {
            Box::new(range)
        };
        for item in items {
            let (k, value) = item.map_err(self.read_failed(name, String::new()))?;
            let rec: RunRecord = if index.is_none() {
                decode(value.value(), "run", || layout::hex(k.value()))?
            } else {
                let run = layout::trailing_run_id(k.value(), "run index key")?;
                let record = self
                    .get(&runs, "runs", &layout::run_key(run), || {
                        format!("run {run}")
                    })?
                    .map(|b| decode::<RunRecord>(&b, "run", || run.to_string()))
                    .transpose()?;
                match record {
                    Some(rec) => rec,
                    None => {
                        // One snapshot: the index agrees with the records,
                        // unless damaged.
                        tracing::warn!(%run, "a run index names a run that has no record");
                        continue;
                    }
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
        let txn = self.snapshot()?;
        let tokens = self.table(&txn, layout::TOKENS)?;
        let owner: Option<TokenOwner> = self
            .get(&tokens, "tokens", token.as_str().as_bytes(), || {
                format!("token {:?}", token.as_str())
            })?
            .map(|b| decode(&b, "token owner", || format!("{token:?}")))
            .transpose()?;
        let Some(owner) = owner else {
            return Ok(None);
        };
        Ok(self
            .hooks_in(&txn, owner.run_id)?
            .into_iter()
            .find(|h| h.hook == owner.hook && h.live))
    }

    fn hooks_in(&self, txn: &ReadTransaction, run: RunId) -> Result<Vec<HookRecord>, StoreError> {
        let table = self.table(txn, layout::RUN_HOOKS)?;
        Ok(self
            .get(&table, "run_hooks", &layout::run_key(run), || {
                format!("run {run}")
            })?
            .map(|b| decode(&b, "hook list", || run.to_string()))
            .transpose()?
            .unwrap_or_default())
    }

    /// A run's hooks; [`StoreError::RunNotFound`] if there is no such run.
    pub(super) fn list_hooks(&self, run: RunId) -> Result<Vec<HookRecord>, StoreError> {
        let txn = self.snapshot()?;
        let runs = self.table(&txn, layout::RUNS)?;
        if self
            .get(&runs, "runs", &layout::run_key(run), || {
                format!("run {run}")
            })?
            .is_none()
        {
            return Err(StoreError::RunNotFound { run });
        }
        self.hooks_in(&txn, run)
    }

    /// A run's streams record.
    pub(super) fn run_streams(&self, run: RunId) -> Result<Option<RunStreams>, StoreError> {
        let txn = self.snapshot()?;
        let streams = self.table(&txn, layout::STREAMS)?;
        self.get(&streams, "streams", &layout::run_key(run), || {
            format!("run {run}")
        })?
        .map(|b| decode(&b, "streams record", || run.to_string()))
        .transpose()
    }

    /// The payloads of chunk rows, in the order asked.
    pub(super) fn chunks(
        &self,
        run: RunId,
        keys: &[ChunkKey],
    ) -> Result<Vec<Option<Payload>>, StoreError> {
        let txn = self.snapshot()?;
        let chunks = self.table(&txn, layout::CHUNKS)?;
        keys.iter()
            .map(|key| {
                Ok(self
                    .get(&chunks, "chunks", &crate::kv::chunk_key(run, key), || {
                        format!("run {run}")
                    })?
                    .map(Payload::from))
            })
            .collect()
    }

    /// Up to `limit` runs due at `now`, earliest first.
    pub(super) fn due_runs(&self, now: Timestamp, limit: usize) -> Result<Vec<RunId>, StoreError> {
        let mut runs = Vec::with_capacity(limit.min(1024));
        if limit == 0 {
            return Ok(runs);
        }
        let txn = self.snapshot()?;
        let due = self.table(&txn, layout::DUE)?;
        let end = layout::due_key(now, RunId::from_u128(u128::MAX));
        let range = due
            .range::<&[u8]>(..=end.as_slice())
            .map_err(self.read_failed("due", String::new()))?;
        for item in range {
            let (key, _) = item.map_err(self.read_failed("due", String::new()))?;
            match layout::parse_due_key(key.value()) {
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
        let txn = self.snapshot()?;
        let due = self.table(&txn, layout::DUE)?;
        let first = due
            .first()
            .map_err(self.read_failed("due", String::new()))?;
        match first {
            Some((key, _)) => Ok(Some(layout::parse_due_key(key.value())?.0)),
            None => Ok(None),
        }
    }
}
