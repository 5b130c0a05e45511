//! Keys and values of the embedded key-value backends (`SledStore`,
//! `RedbStore`): both keep the same tables under the same byte-string keys,
//! and turn a [`Changes`] set into the same list of writes.
//!
//! Every key that holds a number stores it big-endian, so the stores' byte
//! order is the numeric order: a run's events sort by `seq`, the due index by
//! time, the run indexes by run id (ULIDs: creation order).

use serde::de::DeserializeOwned;

use crate::apply::Changes;
use crate::codec::{self, CodecError};
use crate::error::StoreError;
use crate::event::{Event, Timestamp};
use crate::id::{CorrelationId, RunId};
use crate::record::{QueueEntry, RunStatus};
use crate::stream::ChunkKey;

/// A table (sled tree, redb table) of the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Table {
    /// Run records: `run_id` (16 bytes) -> `RunRecord`.
    Runs,
    /// Events: `run_id ++ seq` (16 + 8 bytes) -> `Event`.
    Events,
    /// Operation states: `run_id ++ correlation id` -> `OpState`.
    Ops,
    /// Live tokens: token bytes -> `TokenOwner`.
    Tokens,
    /// Each run's hooks: `run_id` -> `Vec<HookRecord>`.
    RunHooks,
    /// Work-queue rows: `run_id` -> `QueueEntry`.
    Queue,
    /// Index of queue rows by effective due time: `due_ms ++ run_id` -> empty.
    Due,
    /// Index of runs by status: `status code ++ run_id` -> empty.
    Status,
    /// Index of runs by workflow, two key families: `0 ++ name ++ run_id`
    /// and `1 ++ name ++ status code ++ run_id` -> empty, where `name` is
    /// the workflow name's length (2 bytes) and bytes.
    Workflows,
    /// Each run's streams record: `run_id` -> `RunStreams`.
    Streams,
    /// Stream chunk rows: [`chunk_key`] -> the payload's bytes.
    Chunks,
}

impl Table {
    /// Every table that [`encode_changes`] writes to.
    pub(crate) const ALL: [Table; 11] = [
        Table::Runs,
        Table::Events,
        Table::Ops,
        Table::Tokens,
        Table::RunHooks,
        Table::Queue,
        Table::Due,
        Table::Status,
        Table::Workflows,
        Table::Streams,
        Table::Chunks,
    ];

    /// The table's (tree's) name.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Table::Runs => "runs",
            Table::Events => "events",
            Table::Ops => "ops",
            Table::Tokens => "tokens",
            Table::RunHooks => "run_hooks",
            Table::Queue => "queue",
            Table::Due => "due",
            Table::Status => "status",
            Table::Workflows => "workflows",
            Table::Streams => "streams",
            Table::Chunks => "chunks",
        }
    }
}

/// Name of the table of store-wide metadata (the layout version).
pub(crate) const META: &str = "meta";

/// Key in [`META`] of the layout version.
pub(crate) const LAYOUT_VERSION_KEY: &[u8] = b"layout_version";

/// Runs a call into the embedded database (sled or redb), turning a panic
/// into `Err(message)`.
///
/// `AssertUnwindSafe` is sound in the sense that matters: the store keeps no
/// state of its own that a panic inside the database could leave
/// half-updated (its locks are not held across such calls, or are released
/// by guards). The database's own state may be: the sled store therefore
/// stops its writes after a caught panic; redb is built to stay usable after
/// one (a write transaction dropped while unwinding is abandoned).
pub(crate) fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(|payload| panic_message(&*payload))
}

/// The message of a panic (its `&str` or `String` payload).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// One key to set (`Some`) or delete (`None`).
pub(crate) type Write = (Table, Vec<u8>, Option<Vec<u8>>);

fn encode<T: serde::Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, StoreError> {
    Ok(codec::encode_record(value)?)
}

/// Encodes a change set as writes, with the due, status and workflow index
/// keys that keep the indexes in step with it. Pure: an encoding failure
/// writes nothing.
pub(crate) fn encode_changes(changes: &Changes) -> Result<Vec<Write>, StoreError> {
    let mut w: Vec<Write> = Vec::with_capacity(8);
    for (id, (before, rec)) in &changes.runs {
        w.push((Table::Runs, run_key(*id).to_vec(), Some(encode(rec)?)));
        if *before != Some(rec.status) {
            let name = rec.workflow.as_str();
            match before {
                Some(before) => {
                    w.push((Table::Status, status_key(*before, *id).to_vec(), None));
                    w.push((
                        Table::Workflows,
                        workflow_key(name, Some(*before), *id),
                        None,
                    ));
                }
                None => w.push((
                    Table::Workflows,
                    workflow_key(name, None, *id),
                    Some(Vec::new()),
                )),
            }
            w.push((
                Table::Status,
                status_key(rec.status, *id).to_vec(),
                Some(Vec::new()),
            ));
            w.push((
                Table::Workflows,
                workflow_key(name, Some(rec.status), *id),
                Some(Vec::new()),
            ));
        }
    }
    for (id, purged) in &changes.purged {
        let rec = &purged.record;
        w.push((Table::Runs, run_key(*id).to_vec(), None));
        w.push((Table::Status, status_key(rec.status, *id).to_vec(), None));
        for status in [None, Some(rec.status)] {
            w.push((
                Table::Workflows,
                workflow_key(&rec.workflow, status, *id),
                None,
            ));
        }
        for seq in 0..rec.next_seq {
            w.push((Table::Events, event_key(*id, seq).to_vec(), None));
        }
        for op in &purged.ops {
            w.push((Table::Ops, op_key(*id, op), None));
        }
        w.push((Table::RunHooks, run_key(*id).to_vec(), None));
        if let Some(streams) = &purged.streams {
            w.push((Table::Streams, run_key(*id).to_vec(), None));
            for key in streams.chunk_keys() {
                w.push((Table::Chunks, chunk_key(*id, &key), None));
            }
        }
    }
    for (run, streams) in &changes.streams {
        w.push((
            Table::Streams,
            run_key(*run).to_vec(),
            Some(encode(streams)?),
        ));
    }
    for (run, key, payload) in &changes.chunks {
        w.push((
            Table::Chunks,
            chunk_key(*run, key),
            payload.as_ref().map(|p| p.as_bytes().to_vec()),
        ));
    }
    for (run, event) in &changes.events {
        w.push((
            Table::Events,
            event_key(*run, event.seq).to_vec(),
            Some(codec::encode_event(event)?),
        ));
    }
    for ((run, id), state) in &changes.ops {
        w.push((Table::Ops, op_key(*run, id), Some(encode(state)?)));
    }
    for (token, owner) in &changes.tokens {
        let value = owner.as_ref().map(encode).transpose()?;
        w.push((Table::Tokens, token.as_str().as_bytes().to_vec(), value));
    }
    for (run, hooks) in &changes.run_hooks {
        w.push((
            Table::RunHooks,
            run_key(*run).to_vec(),
            Some(encode(hooks)?),
        ));
    }
    for (run, (before, entry)) in &changes.queue {
        let after = entry.as_ref().and_then(QueueEntry::effective_due);
        if *before != after {
            if let Some(at) = before {
                w.push((Table::Due, due_key(*at, *run).to_vec(), None));
            }
            if let Some(at) = after {
                w.push((Table::Due, due_key(at, *run).to_vec(), Some(Vec::new())));
            }
        }
        let value = entry.as_ref().map(encode).transpose()?;
        w.push((Table::Queue, run_key(*run).to_vec(), value));
    }
    Ok(w)
}

/// The keys of a listing whose keys are `prefix ++ run id`: the ids after
/// the query's cursor, in the query's order (the caller iterates the range
/// backwards for newest first).
pub(crate) fn listing_range(
    prefix: &[u8],
    query: &crate::record::RunQuery,
) -> (std::ops::Bound<Vec<u8>>, std::ops::Bound<Vec<u8>>) {
    use std::ops::Bound::{Excluded, Included};
    let key = |id: RunId| {
        let mut k = prefix.to_vec();
        k.extend_from_slice(&id.to_bytes());
        k
    };
    let lowest = Included(key(RunId::from_u128(0)));
    let highest = Included(key(RunId::from_u128(u128::MAX)));
    match (query.newest_first, query.after) {
        (false, Some(c)) => (Excluded(key(c)), highest),
        (true, Some(c)) => (lowest, Excluded(key(c))),
        (_, None) => (lowest, highest),
    }
}

/// The key prefix and table that answer a run listing of `status` and
/// `workflow`; run ids follow the prefix. `None`: the run records themselves.
pub(crate) fn listing_index(
    status: Option<RunStatus>,
    workflow: Option<&str>,
) -> Option<(Table, Vec<u8>)> {
    match (workflow, status) {
        (Some(w), status) => Some((Table::Workflows, workflow_prefix(w, status))),
        (None, Some(status)) => Some((Table::Status, vec![status.code()])),
        (None, None) => None,
    }
}

/// Length of a due-index key.
pub(crate) const DUE_KEY_LEN: usize = 8 + 16;

/// Key of a chunk row in [`Table::Chunks`]: the run, the stream's and the
/// step's names (length-prefixed), the attempt and the chunk's number.
pub(crate) fn chunk_key(run: RunId, key: &ChunkKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(16 + 4 + key.stream.as_str().len() + 32);
    k.extend_from_slice(&run_key(run));
    put_name(&mut k, key.stream.as_str());
    put_name(&mut k, key.writer.step.as_str());
    k.extend_from_slice(&key.writer.attempt.to_be_bytes());
    k.extend_from_slice(&key.n.to_be_bytes());
    k
}

/// Key of a run in [`Table::Runs`], [`Table::RunHooks`], [`Table::Queue`]
/// and [`Table::Streams`].
pub(crate) fn run_key(run: RunId) -> [u8; 16] {
    run.to_bytes()
}

/// Key of event `seq` of `run` in [`Table::Events`].
pub(crate) fn event_key(run: RunId, seq: u64) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(&run.to_bytes());
    key[16..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// Key of an operation in [`Table::Ops`]. The run id has a fixed length, so the
/// correlation id after it needs no separator.
pub(crate) fn op_key(run: RunId, id: &CorrelationId) -> Vec<u8> {
    let mut key = Vec::with_capacity(16 + id.as_str().len());
    key.extend_from_slice(&run.to_bytes());
    key.extend_from_slice(id.as_str().as_bytes());
    key
}

/// Key of a run in the [`Table::Due`] index.
pub(crate) fn due_key(at: Timestamp, run: RunId) -> [u8; DUE_KEY_LEN] {
    let mut key = [0u8; DUE_KEY_LEN];
    key[..8].copy_from_slice(&at.as_millis().to_be_bytes());
    key[8..].copy_from_slice(&run.to_bytes());
    key
}

/// Splits a [`Table::Due`] key into its time and run.
pub(crate) fn parse_due_key(key: &[u8]) -> Result<(Timestamp, RunId), StoreError> {
    let malformed = || StoreError::Corrupt {
        what: "due index key",
        key: hex(key),
        source: CodecError::Malformed(format!(
            "a due-index key is {DUE_KEY_LEN} bytes, found {}",
            key.len()
        )),
    };
    let (at, run) = key.split_at_checked(8).ok_or_else(malformed)?;
    let at: [u8; 8] = at.try_into().map_err(|_| malformed())?;
    let run: [u8; 16] = run.try_into().map_err(|_| malformed())?;
    Ok((Timestamp(u64::from_be_bytes(at)), RunId::from_bytes(run)))
}

/// Key of a run in the [`Table::Status`] index.
pub(crate) fn status_key(status: RunStatus, run: RunId) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = status.code();
    key[1..].copy_from_slice(&run.to_bytes());
    key
}

/// `name` as stored in a [`Table::Workflows`] key: its length, then its bytes.
fn put_name(key: &mut Vec<u8>, name: &str) {
    // Workflow names are short; a longer one is cut for the key (the run
    // record still has it whole, and listings check the record).
    let bytes = &name.as_bytes()[..name.len().min(usize::from(u16::MAX))];
    key.extend_from_slice(&u16::try_from(bytes.len()).unwrap_or(u16::MAX).to_be_bytes());
    key.extend_from_slice(bytes);
}

/// Prefix of the [`Table::Workflows`] keys of a workflow's runs, optionally of one status.
pub(crate) fn workflow_prefix(name: &str, status: Option<RunStatus>) -> Vec<u8> {
    let mut key = Vec::with_capacity(3 + name.len() + 17);
    key.push(u8::from(status.is_some()));
    put_name(&mut key, name);
    if let Some(s) = status {
        key.push(s.code());
    }
    key
}

/// Key of a run in [`Table::Workflows`] (`status: None`: the workflow-only family).
pub(crate) fn workflow_key(name: &str, status: Option<RunStatus>, run: RunId) -> Vec<u8> {
    let mut key = workflow_prefix(name, status);
    key.extend_from_slice(&run.to_bytes());
    key
}

/// The run id at the end of an index key (its last 16 bytes).
pub(crate) fn trailing_run_id(key: &[u8], what: &'static str) -> Result<RunId, StoreError> {
    let run: [u8; 16] = key
        .len()
        .checked_sub(16)
        .and_then(|start| key.get(start..))
        .and_then(|r| r.try_into().ok())
        .ok_or_else(|| StoreError::Corrupt {
            what,
            key: hex(key),
            source: CodecError::Malformed(format!(
                "an index key ends with a 16-byte run id, found {} bytes",
                key.len()
            )),
        })?;
    Ok(RunId::from_bytes(run))
}

/// Decodes a stored record; a failure names what and where, and touches nothing else.
pub(crate) fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    what: &'static str,
    key: impl FnOnce() -> String,
) -> Result<T, StoreError> {
    codec::decode_record(bytes).map_err(|source| StoreError::Corrupt {
        what,
        key: key(),
        source,
    })
}

/// Decodes event `seq` of `run`, checking that it is the event its key says.
pub(crate) fn decode_event(bytes: &[u8], run: RunId, seq: u64) -> Result<Event, StoreError> {
    let key = || format!("{run}/{seq}");
    let event: Event = decode(bytes, "event", key)?;
    if event.seq != seq {
        return Err(StoreError::Corrupt {
            what: "event",
            key: key(),
            source: CodecError::Malformed(format!(
                "the record says seq {} but is stored at seq {seq}",
                event.seq
            )),
        });
    }
    Ok(event)
}

/// The seq of an [`Table::Events`] key.
pub(crate) fn parse_event_seq(key: &[u8]) -> Option<u64> {
    let seq: [u8; 8] = key.get(16..)?.try_into().ok()?;
    Some(u64::from_be_bytes(seq))
}

/// Bytes as lower-case hex, for naming a malformed key.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_messages_are_kept() {
        let r = guarded(|| -> u8 { panic!("index out of bounds: the len is 3") });
        assert_eq!(r, Err("index out of bounds: the len is 3".to_owned()));
        let n = 7;
        let r = guarded(|| -> u8 { panic!("formatted {n}") });
        assert_eq!(r, Err("formatted 7".to_owned()));
        assert_eq!(guarded(|| 5), Ok(5));
    }

    #[test]
    fn numeric_keys_sort_like_numbers() {
        let run = RunId::new();
        assert!(event_key(run, 255) < event_key(run, 256));
        assert!(due_key(Timestamp(255), run) < due_key(Timestamp(256), RunId::from_u128(0)));
        assert!(
            status_key(RunStatus::Pending, RunId::from_u128(u128::MAX))
                < status_key(RunStatus::Running, RunId::from_u128(0))
        );
    }

    #[test]
    fn keys_round_trip() {
        let run = RunId::new();
        assert_eq!(
            parse_due_key(&due_key(Timestamp(42), run)).unwrap(),
            (Timestamp(42), run)
        );
        assert_eq!(
            trailing_run_id(&status_key(RunStatus::Failed, run), "status key").unwrap(),
            run
        );
        assert_eq!(
            trailing_run_id(&workflow_key("w", Some(RunStatus::Failed), run), "key").unwrap(),
            run
        );
        assert!(workflow_key("ab", None, run) < workflow_key("ab", Some(RunStatus::Pending), run));
        assert!(trailing_run_id(b"short", "key").is_err());
        assert_eq!(parse_event_seq(&event_key(run, 7)), Some(7));
        assert!(matches!(
            parse_due_key(b"short"),
            Err(StoreError::Corrupt {
                what: "due index key",
                ..
            })
        ));
    }
}
