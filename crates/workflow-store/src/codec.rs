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

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

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
    /// The record is damaged in a way a store detected itself (a key that
    /// does not match its record, a missing part).
    #[error("record body is malformed: {0}")]
    Malformed(String),
    /// The CBOR data does not decode as the expected type: what did not fit
    /// and where. Its `source()` is the CBOR decoder's own error.
    #[error(transparent)]
    Decode(DecodeError),
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

/// Why CBOR data did not decode as the expected type, in plain words: the
/// field path where the mismatch is (`id`, `items[2].price`) when serde
/// gives one, and what was found and expected.
///
/// [`std::error::Error::source`] is the CBOR decoder's error. Clones share
/// it; equality compares the path and the message only.
///
/// ```
/// use workflow_store::{CodecError, Payload};
/// #[derive(Debug, serde::Deserialize)]
/// struct Order { id: u64 }
/// let p = Payload::encode(&std::collections::BTreeMap::from([("id", "x")])).unwrap();
/// let CodecError::Decode(e) = p.decode::<Order>().unwrap_err() else { panic!() };
/// assert_eq!(e.path(), Some("id"));
/// assert!(e.to_string().starts_with("field `id`: invalid type: string"));
/// ```
#[derive(Clone)]
pub struct DecodeError {
    path: Option<String>,
    message: String,
    source: Arc<ciborium::de::Error<std::io::Error>>,
}

impl DecodeError {
    fn new(path: Option<String>, error: ciborium::de::Error<std::io::Error>) -> Self {
        let message = match &error {
            ciborium::de::Error::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                "unexpected end of input: the data is truncated".to_string()
            }
            ciborium::de::Error::Io(e) => format!("the data could not be read: {e}"),
            ciborium::de::Error::Syntax(offset) => {
                format!("the data is not valid CBOR (at byte {offset})")
            }
            ciborium::de::Error::Semantic(_, message) => message.clone(),
            ciborium::de::Error::RecursionLimitExceeded => {
                "the data is nested too deeply to decode".to_string()
            }
        };
        DecodeError {
            path,
            message,
            source: Arc::new(error),
        }
    }

    /// Where in the value the mismatch is (`id`, `items[2].price`), if known
    /// and not the value as a whole.
    pub fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    /// What did not fit, without the path (`invalid type: string "x", expected u64`).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "field `{path}`: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

// By hand: the decoder's Debug output (`Semantic(None, "...")`) stays out.
impl fmt::Debug for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecodeError")
            .field("path", &self.path)
            .field("message", &self.message)
            .finish_non_exhaustive()
    }
}

impl PartialEq for DecodeError {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.message == other.message
    }
}

impl Eq for DecodeError {}

impl std::error::Error for DecodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// Formats a CBOR encoder's error in plain words.
pub(crate) fn encode_message(e: ciborium::ser::Error<std::io::Error>) -> String {
    match e {
        ciborium::ser::Error::Io(e) => format!("writing failed: {e}"),
        ciborium::ser::Error::Value(message) => message,
    }
}

/// Encodes `value` as a record: envelope header, then CBOR.
pub fn encode_record<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut buf = Vec::with_capacity(128);
    buf.push(MAGIC);
    buf.push(FORMAT_VERSION);
    ciborium::into_writer(value, &mut buf).map_err(|e| CodecError::Encode(encode_message(e)))?;
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
///
/// The first attempt decodes directly. Only when it fails is the value
/// decoded again with path tracking, to say where the mismatch is: the
/// common case pays nothing for it.
pub(crate) fn decode_cbor<T: DeserializeOwned>(body: &[u8]) -> Result<T, CodecError> {
    let mut reader = body;
    let value = match ciborium::from_reader(&mut reader) {
        Ok(value) => value,
        Err(first) => return Err(CodecError::Decode(locate::<T>(body, first))),
    };
    if !reader.is_empty() {
        return Err(CodecError::TrailingBytes {
            extra: reader.len(),
        });
    }
    Ok(value)
}

thread_local! {
    /// The path at which the last [`Tracked`] decode on this thread failed.
    static FAILED_AT: RefCell<Option<serde_path_to_error::Path>> = const { RefCell::new(None) };
}

/// `T`, decoded through a path tracker that leaves the failing path in
/// [`FAILED_AT`] (ciborium's deserializer is private, so the tracker cannot
/// wrap it directly).
struct Tracked<T>(#[allow(dead_code)] T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Tracked<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut track = serde_path_to_error::Track::new();
        match T::deserialize(serde_path_to_error::Deserializer::new(
            deserializer,
            &mut track,
        )) {
            Ok(value) => Ok(Tracked(value)),
            Err(e) => {
                let path = track.path();
                FAILED_AT.with(|at| *at.borrow_mut() = Some(path));
                Err(e)
            }
        }
    }
}

/// Decodes `body` again with path tracking after `first` failed, and says
/// where and why.
fn locate<T: DeserializeOwned>(
    body: &[u8],
    first: ciborium::de::Error<std::io::Error>,
) -> DecodeError {
    FAILED_AT.with(|at| at.borrow_mut().take());
    let mut reader = body;
    let error = match ciborium::from_reader::<Tracked<T>, _>(&mut reader) {
        Err(again) => again,
        // Cannot happen (decoding is deterministic); report the first error.
        Ok(_) => first,
    };
    let path = FAILED_AT
        .with(|at| at.borrow_mut().take())
        .filter(|path| path.iter().next().is_some())
        .map(|path| path.to_string());
    DecodeError::new(path, error)
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
