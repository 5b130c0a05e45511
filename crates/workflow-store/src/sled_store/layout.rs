//! How [`super::SledStore`] lays its data out in sled: one tree per table of
//! [`crate::kv`], named after it, with its keys and values.

#[cfg(test)]
pub(crate) use crate::kv::status_key;
use crate::kv::Table;
pub(crate) use crate::kv::{
    decode, decode_event, due_key, event_key, hex, op_key, parse_due_key, parse_event_seq, run_key,
    trailing_run_id, workflow_key, LAYOUT_VERSION_KEY,
};

/// Tree names: those of the tables (see [`Table`] for what each holds).
pub(crate) const RUNS: &str = Table::Runs.name();
pub(crate) const EVENTS: &str = Table::Events.name();
pub(crate) const OPS: &str = Table::Ops.name();
pub(crate) const TOKENS: &str = Table::Tokens.name();
pub(crate) const RUN_HOOKS: &str = Table::RunHooks.name();
pub(crate) const QUEUE: &str = Table::Queue.name();
pub(crate) const DUE: &str = Table::Due.name();
pub(crate) const STATUS: &str = Table::Status.name();
pub(crate) const WORKFLOWS: &str = Table::Workflows.name();
pub(crate) const STREAMS: &str = Table::Streams.name();
pub(crate) const CHUNKS: &str = Table::Chunks.name();
pub(crate) const META: &str = crate::kv::META;

/// The layout (tree names and key encodings) this build writes and reads.
/// Raised when keys or trees change; a store written with a newer layout is
/// refused rather than misread.
///
/// 1: the first layout. 2: adds [`WORKFLOWS`] (built from the run records
/// when a layout-1 store is opened).
pub(crate) const LAYOUT_VERSION: u8 = 2;
