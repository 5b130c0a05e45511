//! The on-disk format: CBOR records inside a versioned envelope.
//!
//! Every stored record (an event, a run, a hook) is written as
//!
//! ```text
//! +------+---------+----------------------+
//! | 0xCE | version | CBOR body (ciborium) |
//! +------+---------+----------------------+
//! ```
//!
//! The magic byte catches records that are not ours (or a torn write); the version
//! byte lets a later release read logs written today: decoding dispatches on it, and
//! a version newer than this build knows is [`CodecError::UnsupportedVersion`], not
//! a guess. Decoding never panics and never allocates more than the input can hold:
//! ciborium reads byte strings in chunks and limits nesting depth.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::event::Event;

/// First byte of every record.
pub const MAGIC: u8 = 0xCE;

/// The envelope version this build writes.
pub const FORMAT_VERSION: u8 = 1;

/// A record that could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Fewer bytes than an envelope header.
    #[error("record is truncated: {len} bytes, an envelope needs at least 3")]
    Truncated {
        /// Length of the input.
        len: usize,
    },
    /// The first byte is not [`MAGIC`]: not a record of this library, or damaged.
    #[error("record does not start with the envelope marker 0xCE (found {found:#04x}): it is damaged or not a workflow record")]
    BadMagic {
        /// The byte found.
        found: u8,
    },
    /// Written by a newer release of the library.
    #[error("record format version {found} is newer than this build understands (up to {supported}): upgrade the library to read it")]
    UnsupportedVersion {
        /// Version in the record.
        found: u8,
        /// Newest version this build reads.
        supported: u8,
    },
    /// The CBOR body is not a valid record of the expected type.
    #[error("record body is malformed: {0}")]
    Malformed(String),
    /// Bytes after the end of the CBOR body.
    #[error("record has {extra} unexpected bytes after its body")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// A value could not be serialized.
    #[error("value could not be encoded as CBOR: {0}")]
    Encode(String),
}

/// Encodes `value` as a record: envelope header, then CBOR.
pub fn encode_record<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut buf = Vec::with_capacity(128);
    buf.push(MAGIC);
    buf.push(FORMAT_VERSION);
    ciborium::into_writer(value, &mut buf).map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(buf)
}

/// Decodes a record written by [`encode_record`] (by this or an older version).
pub fn decode_record<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let [magic, version, body @ ..] = bytes else {
        return Err(CodecError::Truncated { len: bytes.len() });
    };
    if body.is_empty() {
        return Err(CodecError::Truncated { len: bytes.len() });
    }
    if *magic != MAGIC {
        return Err(CodecError::BadMagic { found: *magic });
    }
    match *version {
        // Version 1 is the first format; later versions add arms here that decode
        // their own layout and convert, so old logs stay readable.
        1 => decode_cbor(body),
        found => Err(CodecError::UnsupportedVersion {
            found,
            supported: FORMAT_VERSION,
        }),
    }
}

/// Decodes one complete CBOR value; trailing bytes are an error.
pub(crate) fn decode_cbor<T: DeserializeOwned>(body: &[u8]) -> Result<T, CodecError> {
    let mut reader = body;
    let value = ciborium::from_reader(&mut reader).map_err(|e| match e {
        ciborium::de::Error::Io(_) => CodecError::Malformed("unexpected end of input".into()),
        other => CodecError::Malformed(other.to_string()),
    })?;
    if !reader.is_empty() {
        return Err(CodecError::TrailingBytes {
            extra: reader.len(),
        });
    }
    Ok(value)
}

/// Encodes an event as a record.
///
/// ```
/// use workflow_store::{codec, Event, EventData, Timestamp};
/// let event = Event { seq: 0, at: Timestamp(1), data: EventData::RunStarted };
/// let bytes = codec::encode_event(&event).unwrap();
/// assert_eq!(codec::decode_event(&bytes).unwrap(), event);
/// assert!(codec::decode_event(&bytes[..bytes.len() - 1]).is_err());
/// ```
pub fn encode_event(event: &Event) -> Result<Vec<u8>, CodecError> {
    encode_record(event)
}

/// Decodes an event record; corrupt, truncated or future-version input is an error.
pub fn decode_event(bytes: &[u8]) -> Result<Event, CodecError> {
    decode_record(bytes)
}
