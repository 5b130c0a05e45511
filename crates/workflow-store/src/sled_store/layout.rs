//! How [`super::SledStore`] lays its data out in sled: tree names, key encodings,
//! and decoding stored values into typed errors.
//!
//! Every key that holds a number stores it big-endian, so sled's byte order is the
//! numeric order: a run's events sort by `seq`, the due index by time.

use serde::de::DeserializeOwned;

use crate::codec::{self, CodecError};
use crate::error::StoreError;
use crate::event::{Event, Timestamp};
use crate::id::{CorrelationId, RunId};
use crate::record::RunStatus;

/// Tree of run records: `run_id` (16 bytes) -> `RunRecord`.
pub(crate) const RUNS: &str = "runs";
/// Tree of events: `run_id ++ seq` (16 + 8 bytes) -> `Event`.
pub(crate) const EVENTS: &str = "events";
/// Tree of operation states: `run_id ++ correlation id` -> `OpState`.
pub(crate) const OPS: &str = "ops";
/// Tree of live tokens: token bytes -> `TokenOwner`.
pub(crate) const TOKENS: &str = "tokens";
/// Tree of each run's hooks: `run_id` -> `Vec<HookRecord>`.
pub(crate) const RUN_HOOKS: &str = "run_hooks";
/// Tree of work-queue rows: `run_id` -> `QueueEntry`.
pub(crate) const QUEUE: &str = "queue";
/// Index of queue rows by effective due time: `due_ms ++ run_id` -> empty.
pub(crate) const DUE: &str = "due";
/// Index of runs by status: `status code ++ run_id` -> empty.
pub(crate) const STATUS: &str = "status";
/// Index of runs by workflow, two key families: `0 ++ name ++ run_id` and
/// `1 ++ name ++ status code ++ run_id` -> empty, where `name` is the
/// workflow name's length (2 bytes) and bytes.
pub(crate) const WORKFLOWS: &str = "workflows";
/// Tree of store-wide metadata (the layout version).
pub(crate) const META: &str = "meta";

/// Key in [`META`] of the layout version.
pub(crate) const LAYOUT_VERSION_KEY: &[u8] = b"layout_version";

/// The layout (tree names and key encodings) this build writes and reads.
/// Raised when keys or trees change; a store written with a newer layout is
/// refused rather than misread.
///
/// 1: the first layout. 2: adds [`WORKFLOWS`] (built from the run records
/// when a layout-1 store is opened).
pub(crate) const LAYOUT_VERSION: u8 = 2;

/// Length of a due-index key.
pub(crate) const DUE_KEY_LEN: usize = 8 + 16;

/// Key of a run in [`RUNS`], [`RUN_HOOKS`] and [`QUEUE`].
pub(crate) fn run_key(run: RunId) -> [u8; 16] {
    run.to_bytes()
}

/// Key of event `seq` of `run` in [`EVENTS`].
pub(crate) fn event_key(run: RunId, seq: u64) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(&run.to_bytes());
    key[16..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// Key of an operation in [`OPS`]. The run id has a fixed length, so the
/// correlation id after it needs no separator.
pub(crate) fn op_key(run: RunId, id: &CorrelationId) -> Vec<u8> {
    let mut key = Vec::with_capacity(16 + id.as_str().len());
    key.extend_from_slice(&run.to_bytes());
    key.extend_from_slice(id.as_str().as_bytes());
    key
}

/// Key of a run in the [`DUE`] index.
pub(crate) fn due_key(at: Timestamp, run: RunId) -> [u8; DUE_KEY_LEN] {
    let mut key = [0u8; DUE_KEY_LEN];
    key[..8].copy_from_slice(&at.as_millis().to_be_bytes());
    key[8..].copy_from_slice(&run.to_bytes());
    key
}

/// Splits a [`DUE`] key into its time and run.
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

/// Key of a run in the [`STATUS`] index.
pub(crate) fn status_key(status: RunStatus, run: RunId) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = status.code();
    key[1..].copy_from_slice(&run.to_bytes());
    key
}

/// `name` as stored in a [`WORKFLOWS`] key: its length, then its bytes.
fn put_name(key: &mut Vec<u8>, name: &str) {
    // Workflow names are short; a longer one is cut for the key (the run
    // record still has it whole, and listings check the record).
    let bytes = &name.as_bytes()[..name.len().min(usize::from(u16::MAX))];
    key.extend_from_slice(&u16::try_from(bytes.len()).unwrap_or(u16::MAX).to_be_bytes());
    key.extend_from_slice(bytes);
}

/// Prefix of the [`WORKFLOWS`] keys of a workflow's runs, optionally of one status.
pub(crate) fn workflow_prefix(name: &str, status: Option<RunStatus>) -> Vec<u8> {
    let mut key = Vec::with_capacity(3 + name.len() + 17);
    key.push(u8::from(status.is_some()));
    put_name(&mut key, name);
    if let Some(s) = status {
        key.push(s.code());
    }
    key
}

/// Key of a run in [`WORKFLOWS`] (`status: None`: the workflow-only family).
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

/// The seq of an [`EVENTS`] key.
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
