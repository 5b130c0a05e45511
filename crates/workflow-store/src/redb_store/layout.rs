//! How [`super::RedbStore`] lays its data out in redb: one table per
//! [`Table`] of [`crate::kv`] (the sled backend's trees, under the same names,
//! keys and values), every table mapping bytes to bytes.

use redb::TableDefinition;

#[cfg(test)]
pub(crate) use crate::kv::status_key;
use crate::kv::Table;
pub(crate) use crate::kv::{
    decode, decode_event, due_key, event_key, hex, op_key, parse_due_key, parse_event_seq, run_key,
    trailing_run_id, LAYOUT_VERSION_KEY,
};

/// A table of the store: byte-string keys and values.
pub(crate) type Def = TableDefinition<'static, &'static [u8], &'static [u8]>;

/// The redb table of `table`.
pub(crate) const fn def(table: Table) -> Def {
    TableDefinition::new(table.name())
}

/// Run records.
pub(crate) const RUNS: Def = def(Table::Runs);
/// Events.
pub(crate) const EVENTS: Def = def(Table::Events);
/// Live tokens.
pub(crate) const TOKENS: Def = def(Table::Tokens);
/// Each run's hooks.
pub(crate) const RUN_HOOKS: Def = def(Table::RunHooks);
/// The due index.
pub(crate) const DUE: Def = def(Table::Due);
/// Work-queue rows.
#[cfg(test)]
pub(crate) const QUEUE: Def = def(Table::Queue);
/// The status index.
#[cfg(test)]
pub(crate) const STATUS: Def = def(Table::Status);
/// Each run's streams record.
pub(crate) const STREAMS: Def = def(Table::Streams);
/// Stream chunk rows.
pub(crate) const CHUNKS: Def = def(Table::Chunks);
/// Store-wide metadata (the layout version).
pub(crate) const META: Def = TableDefinition::new(crate::kv::META);

/// Every table, for creating them in a new database.
pub(crate) const ALL: [Def; 12] = [
    def(Table::ALL[0]),
    def(Table::ALL[1]),
    def(Table::ALL[2]),
    def(Table::ALL[3]),
    def(Table::ALL[4]),
    def(Table::ALL[5]),
    def(Table::ALL[6]),
    def(Table::ALL[7]),
    def(Table::ALL[8]),
    def(Table::ALL[9]),
    def(Table::ALL[10]),
    META,
];

/// The layout (table names and key encodings) this build writes and reads.
/// Raised when keys or tables change; a database written with a newer layout
/// is refused rather than misread.
pub(crate) const LAYOUT_VERSION: u8 = 1;
