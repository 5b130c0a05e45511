//! How [`super::RedbStore`] lays its data out in redb: table names, key
//! encodings, and decoding stored values into typed errors.
//!
//! The tables and keys are those of the sled backend (byte-string keys, numbers
//! big-endian so that redb's byte order is numeric order), so the two layouts
//! can be read by the same tools and tests. Every table maps bytes to bytes.

use redb::TableDefinition;
use serde::de::DeserializeOwned;

use crate::codec::{self, CodecError};
use crate::error::StoreError;
use crate::event::{Event, Timestamp};
use crate::id::{CorrelationId, RunId};
use crate::record::RunStatus;

/// A table of the store: byte-string keys and values.
pub(crate) type Def = TableDefinition<'static, &'static [u8], &'static [u8]>;

/// Run records: `run_id` (16 bytes) -> `RunRecord`.
pub(crate) const RUNS: Def = TableDefinition::new("runs");
/// Events: `run_id ++ seq` (16 + 8 bytes) -> `Event`.
pub(crate) const EVENTS: Def = TableDefinition::new("events");
/// Operation states: `run_id ++ correlation id` -> `OpState`.
pub(crate) const OPS: Def = TableDefinition::new("ops");
/// Live tokens: token bytes -> `TokenOwner`.
pub(crate) const TOKENS: Def = TableDefinition::new("tokens");
/// Each run's hooks: `run_id` -> `Vec<HookRecord>`.
pub(crate) const RUN_HOOKS: Def = TableDefinition::new("run_hooks");
/// Work-queue rows: `run_id` -> `QueueEntry`.
pub(crate) const QUEUE: Def = TableDefinition::new("queue");
/// Index of queue rows by effective due time: `due_ms ++ run_id` -> empty.
pub(crate) const DUE: Def = TableDefinition::new("due");
/// Index of runs by status: `status code ++ run_id` -> empty.
pub(crate) const STATUS: Def = TableDefinition::new("status");
/// Store-wide metadata (the layout version).
pub(crate) const META: Def = TableDefinition::new("meta");

/// Every table, for creating them in a new database.
pub(crate) const ALL: [Def; 9] = [
    RUNS, EVENTS, OPS, TOKENS, RUN_HOOKS, QUEUE, DUE, STATUS, META,
];

/// Key in [`META`] of the layout version.
pub(crate) const LAYOUT_VERSION_KEY: &[u8] = b"layout_version";

/// The layout (table names and key encodings) this build writes and reads.
/// Raised when keys or tables change; a database written with a newer layout
/// is refused rather than misread.
pub(crate) const LAYOUT_VERSION: u8 = 1;

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

/// The run id of a [`STATUS`] index key.
pub(crate) fn parse_status_key(key: &[u8]) -> Result<RunId, StoreError> {
    let run: [u8; 16] = key
        .get(1..)
        .and_then(|r| r.try_into().ok())
        .ok_or_else(|| StoreError::Corrupt {
            what: "status index key",
            key: hex(key),
            source: CodecError::Malformed(format!(
                "a status-index key is 17 bytes, found {}",
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
            parse_status_key(&status_key(RunStatus::Failed, run)).unwrap(),
            run
        );
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
