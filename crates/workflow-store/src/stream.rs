//! Durable output streams: named, append-only sequences of chunks a run's
//! steps write and clients read from any index.
//!
//! # Chunk identity: attempt-scoped, visible when the attempt is recorded
//!
//! A step attempt writes its chunks with [`crate::Store::write_stream`] as it
//! goes: each chunk is stored durably at once under its *writer* (the step and
//! attempt, [`ChunkWriter`]) and its number `n` within that attempt's share of
//! the stream. Writing chunk `n` again stores the same row again (idempotent:
//! a writer retrying a write whose acknowledgement it lost cannot duplicate
//! it). These chunks are **pending**: no reader sees them.
//!
//! The append that records the attempt's outcome settles them, in the same
//! atomic write:
//!
//! - `step_completed` **commits** them: each stream the attempt wrote gets a
//!   [`Segment`] placing the attempt's chunks `0..count` at the stream's next
//!   indexes, and the attempt's `close` and read grants take effect;
//! - `step_retrying` and `step_failed` **discard** them (their rows are
//!   deleted): only successful attempts are ever visible, so a crash or an
//!   error halfway through never leaves half a sequence or a duplicate.
//!
//! Writes of an attempt that is settled are refused
//! ([`crate::StoreError::InvalidStreamWrite`]), and writes are fenced by the
//! writer's lease, so an engine that lost its run cannot add to another
//! engine's attempt. A run that ends closes its streams and discards what
//! is still pending.
//!
//! Indexes are therefore assigned at commit, gapless from 0, and never
//! change: a reader resuming at index `i` sees exactly the chunks after
//! `i - 1`. Purging a run deletes its streams and chunks.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

use crate::event::Payload;
use crate::id::{CorrelationId, HookToken, IdError};

/// The name of the stream each run has by default (see [`StreamName::default_stream`]).
pub const DEFAULT_STREAM: &str = "default";

/// Longest stream name, in bytes.
pub const MAX_STREAM_NAME_LEN: usize = 128;

/// Largest chunk a stream accepts, in bytes of its encoded payload (1 MiB).
pub const MAX_CHUNK_BYTES: usize = 1 << 20;

/// The name of a stream of a run: 1 to [`MAX_STREAM_NAME_LEN`] bytes of
/// `A-Z a-z 0-9 - . _ ~`, so it stands unescaped in a URL path segment.
///
/// ```
/// use workflow_store::StreamName;
/// assert!(StreamName::new("progress").is_ok());
/// assert!(StreamName::new("").is_err());
/// assert!(StreamName::new("a/b").is_err());
/// assert_eq!(StreamName::default_stream().as_str(), "default");
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct StreamName(String);

impl StreamName {
    /// A stream name, validated as described on [`StreamName`].
    pub fn new(name: impl Into<String>) -> Result<Self, IdError> {
        let name = name.into();
        if name.is_empty() || name.len() > MAX_STREAM_NAME_LEN {
            return Err(IdError::InvalidStreamName {
                reason: format!("{} bytes (1 to {MAX_STREAM_NAME_LEN})", name.len()),
            });
        }
        if let Some(ch) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')))
        {
            return Err(IdError::InvalidStreamName {
                reason: format!("{ch:?} is not one of A-Z a-z 0-9 - . _ ~"),
            });
        }
        Ok(StreamName(name))
    }

    /// The run's default stream, [`DEFAULT_STREAM`].
    pub fn default_stream() -> Self {
        StreamName(DEFAULT_STREAM.to_owned())
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamName({:?})", self.0)
    }
}

impl FromStr for StreamName {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StreamName::new(s)
    }
}

impl<'de> Deserialize<'de> for StreamName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        StreamName::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A secret that lets a client read one stream of one run (over HTTP, where
/// the run id alone is not enough). Same form as a [`HookToken`]; granted by
/// a step attempt ([`StreamWrite::grant`]) and valid once that attempt is
/// committed.
pub type StreamToken = HookToken;

/// Who wrote a pending chunk: a step and its attempt number.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChunkWriter {
    /// The step.
    pub step: CorrelationId,
    /// Its attempt, counted from 1.
    pub attempt: u32,
}

/// What one call of [`crate::Store::write_stream`] adds to an attempt's share
/// of a stream: chunks numbered from `first`, and perhaps a close or a grant.
///
/// ```
/// use workflow_store::{Payload, StreamName, StreamWrite};
/// let w = StreamWrite::chunks(StreamName::default_stream(), 0, vec![Payload::encode(&1).unwrap()]);
/// assert_eq!(w.chunks.len(), 1);
/// assert!(!w.close);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamWrite {
    /// The stream.
    pub stream: StreamName,
    /// The number of the first chunk within the attempt's share of the stream.
    pub first: u64,
    /// The chunks, numbered `first..first + len`.
    pub chunks: Vec<Payload>,
    /// Closes the stream when the attempt is committed.
    pub close: bool,
    /// A read token for the stream, valid once the attempt is committed.
    pub grant: Option<StreamToken>,
}

impl StreamWrite {
    /// Chunks `first..` of `stream`, no close, no grant.
    pub fn chunks(stream: StreamName, first: u64, chunks: Vec<Payload>) -> Self {
        StreamWrite {
            stream,
            first,
            chunks,
            close: false,
            grant: None,
        }
    }
}

/// What a reader sees of a stream: its committed length and whether it is closed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    /// The stream.
    pub name: StreamName,
    /// Committed chunks (indexes `0..len`).
    pub len: u64,
    /// Closed: no chunk will follow.
    pub closed: bool,
}

/// One page of a stream ([`crate::Store::read_stream`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamPage {
    /// Chunks with their indexes, in order from the index asked for.
    pub chunks: Vec<(u64, Payload)>,
    /// The stream's committed length.
    pub len: u64,
    /// Whether the stream is closed.
    pub closed: bool,
}

/// Where a chunk's row is: the run's stream, the writer, its number.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChunkKey {
    /// The stream.
    pub stream: StreamName,
    /// Who wrote it.
    pub writer: ChunkWriter,
    /// Its number within the writer's share of the stream.
    pub n: u64,
}

/// A committed attempt's chunks `0..count`, at indexes `base..base + count`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// The attempt.
    pub writer: ChunkWriter,
    /// Index of its chunk 0.
    pub base: u64,
    /// How many chunks.
    pub count: u64,
}

/// An attempt's share of a stream, written but not settled yet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingShare {
    /// Chunks `0..count` are stored (one past the highest number written).
    pub count: u64,
    /// Close on commit.
    pub close: bool,
    /// Tokens to grant on commit.
    pub grants: Vec<StreamToken>,
}

/// One stream's state (part of [`RunStreams`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamState {
    /// Committed chunks.
    pub len: u64,
    /// Closed.
    pub closed: bool,
    /// Committed attempts, by `base`.
    pub segments: Vec<Segment>,
    /// Tokens that may read the stream.
    pub grants: Vec<StreamToken>,
    /// Pending shares of attempts not settled yet.
    pub pending: BTreeMap<ChunkWriter, PendingShare>,
}

impl StreamState {
    /// Whether readers know the stream: something was committed to it (a
    /// chunk, a close, a grant). A stream with only pending chunks is unknown.
    pub fn is_visible(&self) -> bool {
        self.len > 0 || self.closed || !self.grants.is_empty()
    }

    /// The rows of indexes `from..` (at most `limit`), with their indexes.
    pub fn keys_from(&self, name: &StreamName, from: u64, limit: usize) -> Vec<(u64, ChunkKey)> {
        let mut out = Vec::new();
        let start = self.segments.partition_point(|s| s.base + s.count <= from);
        for seg in &self.segments[start..] {
            let mut i = from.max(seg.base);
            while i < seg.base + seg.count {
                if out.len() >= limit {
                    return out;
                }
                out.push((
                    i,
                    ChunkKey {
                        stream: name.clone(),
                        writer: seg.writer.clone(),
                        n: i - seg.base,
                    },
                ));
                i += 1;
            }
        }
        out
    }
}

/// Everything a backend keeps about a run's streams besides the chunk rows:
/// one record per run (for backend authors).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStreams {
    /// The streams, by name.
    pub streams: BTreeMap<StreamName, StreamState>,
    /// Per step, the highest attempt settled: its writes and those of
    /// earlier attempts are refused.
    pub settled: BTreeMap<CorrelationId, u32>,
}

impl RunStreams {
    /// The visible streams.
    pub fn infos(&self) -> Vec<StreamInfo> {
        self.streams
            .iter()
            .filter(|(_, s)| s.is_visible())
            .map(|(name, s)| StreamInfo {
                name: name.clone(),
                len: s.len,
                closed: s.closed,
            })
            .collect()
    }

    /// Every chunk row the run has (committed or pending), for purging.
    pub fn chunk_keys(&self) -> Vec<ChunkKey> {
        let mut out = Vec::new();
        for (name, s) in &self.streams {
            let shares = s
                .segments
                .iter()
                .map(|seg| (&seg.writer, seg.count))
                .chain(s.pending.iter().map(|(w, p)| (w, p.count)));
            for (writer, count) in shares {
                for n in 0..count {
                    out.push(ChunkKey {
                        stream: name.clone(),
                        writer: writer.clone(),
                        n,
                    });
                }
            }
        }
        out
    }

    /// Whether `token` may read `stream`.
    pub fn grants(&self, stream: &StreamName, token: &StreamToken) -> bool {
        self.streams.get(stream).is_some_and(|s| {
            s.grants
                .iter()
                .any(|g| constant_time_eq(g.as_str().as_bytes(), token.as_str().as_bytes()))
        })
    }
}

/// Compares secrets without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(step: u64, attempt: u32) -> ChunkWriter {
        ChunkWriter {
            step: CorrelationId::from_parts("step", step),
            attempt,
        }
    }

    #[test]
    fn keys_from_walks_segments_in_index_order() {
        let name = StreamName::default_stream();
        let s = StreamState {
            len: 5,
            segments: vec![
                Segment {
                    writer: writer(0, 2),
                    base: 0,
                    count: 3,
                },
                Segment {
                    writer: writer(1, 1),
                    base: 3,
                    count: 2,
                },
            ],
            ..StreamState::default()
        };
        let keys = s.keys_from(&name, 2, 10);
        let got: Vec<(u64, u32, u64)> = keys
            .iter()
            .map(|(i, k)| (*i, k.writer.attempt, k.n))
            .collect();
        assert_eq!(got, vec![(2, 2, 2), (3, 1, 0), (4, 1, 1)]);
        assert_eq!(s.keys_from(&name, 0, 2).len(), 2);
        assert!(s.keys_from(&name, 5, 10).is_empty());
    }

    #[test]
    fn names_are_checked() {
        assert!(StreamName::new("x".repeat(MAX_STREAM_NAME_LEN)).is_ok());
        assert!(StreamName::new("x".repeat(MAX_STREAM_NAME_LEN + 1)).is_err());
        assert!(StreamName::new("é").is_err());
    }
}
