//! Small adapters between the store's types and PostgreSQL's: ids as `uuid`,
//! `u64` as `bigint`, and which errors a write retries.

use std::error::Error as StdError;

use bytes::BytesMut;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};
use workflow_store::{CodecError, StoreError};

/// A 128-bit id (a [`workflow_store::RunId`] or [`workflow_store::LeaseId`])
/// as a PostgreSQL `uuid`: its 16 big-endian bytes, so `uuid` order is id order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Uuid(pub(crate) u128);

impl ToSql for Uuid {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        out.extend_from_slice(&self.0.to_be_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::UUID
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for Uuid {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        let bytes: [u8; 16] = raw.try_into()?;
        Ok(Uuid(u128::from_be_bytes(bytes)))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::UUID
    }
}

/// A `u64` (timestamp, seq, generation) as `bigint`. Values above `i64::MAX`
/// (292 million years of milliseconds) are stored as `i64::MAX`.
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A `bigint` read back as `u64`; `None` for a negative value (never written).
pub(crate) fn to_u64(v: i64) -> Option<u64> {
    u64::try_from(v).ok()
}

/// `StoreError::Corrupt` for a row that does not hold a valid value.
pub(crate) fn corrupt(what: &'static str, key: impl Into<String>, why: String) -> StoreError {
    StoreError::Corrupt {
        what,
        key: key.into(),
        source: CodecError::Malformed(why),
    }
}

/// Whether a failed transaction can simply be run again: a serialization
/// failure, a deadlock, or a unique violation (two writers raced to insert the
/// same run, token or event; the retry reads the winner's row).
pub(crate) fn is_retryable(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE
            || *c == SqlState::T_R_DEADLOCK_DETECTED
            || *c == SqlState::UNIQUE_VIOLATION
    )
}

/// A PostgreSQL error as a [`StoreError::Backend`] saying what was being done.
pub(crate) fn backend(what: &str, e: tokio_postgres::Error) -> StoreError {
    let message = match e.as_db_error() {
        Some(db) => format!(
            "PostgreSQL refused {what}: {} (SQLSTATE {})",
            db.message(),
            db.code().code()
        ),
        None if e.is_closed() => {
            format!("{what} failed: the connection to PostgreSQL was closed; retry")
        }
        None => format!("{what} failed: {e}"),
    };
    StoreError::backend(message, e)
}
