//! Identifiers: runs, correlation ids, hook tokens and leases.
//!
//! Ids are newtypes so a token can never be passed where a run id is expected.
//! `RunId` and `LeaseId` are ULIDs: 128 bits, time-ordered, so listing runs by id
//! lists them oldest first. `HookToken` is validated on construction, which is
//! why every other part of the library can put it in a URL path unescaped.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use ulid::Ulid;

/// The identity of one workflow run: a ULID, so ids sort by creation time.
///
/// ```
/// use workflow_store::RunId;
/// let id = RunId::new();
/// let parsed: RunId = id.to_string().parse().unwrap();
/// assert_eq!(id, parsed);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunId(Ulid);

impl RunId {
    /// A new id for the current time with 80 random bits.
    pub fn new() -> Self {
        RunId(Ulid::new())
    }

    /// The id whose 128-bit value is `value` (big-endian ULID layout).
    pub fn from_u128(value: u128) -> Self {
        RunId(Ulid(value))
    }

    /// The id as a 128-bit number; its big-endian bytes sort like the id.
    pub fn as_u128(self) -> u128 {
        self.0 .0
    }

    /// The id as 16 big-endian bytes, the form backends use as a key prefix.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0 .0.to_be_bytes()
    }

    /// The id stored as 16 big-endian bytes by [`RunId::to_bytes`].
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        RunId(Ulid(u128::from_be_bytes(bytes)))
    }
}

impl Default for RunId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RunId({})", self.0)
    }
}

impl FromStr for RunId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ulid::from_string(s)
            .map(RunId)
            .map_err(|_| IdError::InvalidRunId(s.chars().take(64).collect()))
    }
}

impl Serialize for RunId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_bytes(&self.to_bytes())
        }
    }
}

impl<'de> Deserialize<'de> for RunId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            let bytes: serde_bytes_array::Bytes16 = Deserialize::deserialize(d)?;
            Ok(RunId::from_bytes(bytes.0))
        }
    }
}

/// The identity of one lease on a run's work (see [`crate::Lease`]).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct LeaseId(pub(crate) u128);

impl LeaseId {
    /// A new, unique lease id.
    pub fn new() -> Self {
        LeaseId(Ulid::new().0)
    }

    /// The id as a 128-bit number.
    pub fn as_u128(self) -> u128 {
        self.0
    }

    /// The lease id with this 128-bit value.
    pub fn from_u128(value: u128) -> Self {
        LeaseId(value)
    }
}

impl Default for LeaseId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&Ulid(self.0), f)
    }
}

impl Serialize for LeaseId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0.to_be_bytes())
    }
}

impl<'de> Deserialize<'de> for LeaseId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes: serde_bytes_array::Bytes16 = Deserialize::deserialize(d)?;
        Ok(LeaseId(u128::from_be_bytes(bytes.0)))
    }
}

/// Longest correlation id or hook token accepted, in bytes.
pub const MAX_ID_LEN: usize = 256;

/// Names one operation inside a run (`step:0`, `hook:1`, `wait:2`): the key
/// that ties a `*_created` event to the events that follow it.
///
/// ```
/// use workflow_store::CorrelationId;
/// let id = CorrelationId::from_parts("step", 3);
/// assert_eq!(id.as_str(), "step:3");
/// assert!(CorrelationId::new("").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct CorrelationId(String);

impl CorrelationId {
    /// A correlation id from any non-empty string of at most [`MAX_ID_LEN`] bytes.
    pub fn new(id: impl Into<String>) -> Result<Self, IdError> {
        let id = id.into();
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return Err(IdError::InvalidCorrelationId { len: id.len() });
        }
        Ok(CorrelationId(id))
    }

    /// The id `"{kind}:{index}"`, the form the replay engine uses.
    pub fn from_parts(kind: &str, index: u64) -> Self {
        let mut id = format!("{kind}:{index}");
        if id.len() > MAX_ID_LEN || kind.is_empty() {
            id = format!("op:{index}");
        }
        CorrelationId(id)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CorrelationId({:?})", self.0)
    }
}

impl<'de> Deserialize<'de> for CorrelationId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        CorrelationId::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// The token that resumes a hook: 1 to 256 bytes, each a character that may
/// stand unescaped in a URL path segment (RFC 3986 `pchar` without `%`):
/// `A-Z a-z 0-9 - . _ ~ : @ ! $ & ' ( ) * + , ; =`.
///
/// ```
/// use workflow_store::HookToken;
/// assert!(HookToken::new("order:42").is_ok());
/// assert!(HookToken::new("").is_err());
/// assert!(HookToken::new("a b").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct HookToken(String);

impl HookToken {
    /// A token, validated as described on [`HookToken`].
    pub fn new(token: impl Into<String>) -> Result<Self, IdError> {
        let token = token.into();
        if token.is_empty() {
            return Err(IdError::EmptyToken);
        }
        if token.len() > MAX_ID_LEN {
            return Err(IdError::TokenTooLong { len: token.len() });
        }
        if let Some((position, ch)) = token.char_indices().find(|&(_, c)| !Self::is_token_char(c)) {
            return Err(IdError::InvalidTokenChar { ch, position });
        }
        Ok(HookToken(token))
    }

    /// Whether `c` may appear in a token.
    pub fn is_token_char(c: char) -> bool {
        c.is_ascii_alphanumeric()
            || matches!(
                c,
                '-' | '.'
                    | '_'
                    | '~'
                    | ':'
                    | '@'
                    | '!'
                    | '$'
                    | '&'
                    | '\''
                    | '('
                    | ')'
                    | '*'
                    | '+'
                    | ','
                    | ';'
                    | '='
            )
    }

    /// The token as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HookToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Tokens are secrets when generated: `Debug` shows only their length and a prefix.
impl fmt::Debug for HookToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix: String = self.0.chars().take(4).collect();
        write!(f, "HookToken({prefix}…, {} bytes)", self.0.len())
    }
}

impl FromStr for HookToken {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HookToken::new(s)
    }
}

impl<'de> Deserialize<'de> for HookToken {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        HookToken::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// An id or token that does not have the required form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The text is not a 26-character ULID.
    #[error(
        "invalid run id {0:?}: expected a 26-character ULID such as 01ARZ3NDEKTSV4RRFFQ69G5FAV"
    )]
    InvalidRunId(String),
    /// A correlation id must be 1 to 256 bytes.
    #[error("invalid correlation id of {len} bytes: it must be 1 to 256 bytes")]
    InvalidCorrelationId {
        /// Length of the rejected id.
        len: usize,
    },
    /// A hook token must not be empty.
    #[error("hook token is empty: a token is 1 to 256 URL-safe characters")]
    EmptyToken,
    /// A hook token longer than 256 bytes.
    #[error("hook token is {len} bytes long: at most 256 are allowed")]
    TokenTooLong {
        /// Length of the rejected token.
        len: usize,
    },
    /// A hook token with a character that is not URL-safe.
    #[error("hook token has {ch:?} at byte {position}: only A-Z a-z 0-9 and -._~:@!$&'()*+,;= are allowed")]
    InvalidTokenChar {
        /// The offending character.
        ch: char,
        /// Its byte offset.
        position: usize,
    },
    /// A stream name that is empty, too long or has a character outside `A-Z a-z 0-9 - . _ ~`.
    #[error("invalid stream name: {reason}")]
    InvalidStreamName {
        /// What is wrong with it.
        reason: String,
    },
}

/// Deserializes exactly 16 bytes from a CBOR byte string.
mod serde_bytes_array {
    use serde::de::{Error, Visitor};
    use serde::{Deserialize, Deserializer};
    use std::fmt;

    pub(crate) struct Bytes16(pub [u8; 16]);

    impl<'de> Deserialize<'de> for Bytes16 {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Bytes16;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("16 bytes")
                }
                fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Bytes16, E> {
                    let arr: [u8; 16] = v
                        .try_into()
                        .map_err(|_| E::invalid_length(v.len(), &self))?;
                    Ok(Bytes16(arr))
                }
            }
            d.deserialize_bytes(V)
        }
    }
}
