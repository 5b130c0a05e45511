//! sled's failures as typed errors: its errors (keeping sled's own message),
//! its panics (caught where the store calls sled), and the store's refusal to
//! write after a panic. The policy is described in the module docs of
//! [`super`] ("Damaged files and sled's failures").

use std::fmt;
use std::path::Path;
use std::sync::OnceLock;

use crate::error::StoreError;

/// The file in which sled 0.34 keeps its log.
pub(super) const SLED_DATA_FILE: &str = "db";

pub(super) use crate::kv::guarded;

/// A sled error as a [`StoreError`], keeping sled's message and naming the
/// store (`dir`), what was being done, and (`what`) the tree and key where
/// known.
///
/// sled's `Corruption` is [`StoreError::Damaged`], naming the file (the log
/// `db` with the offset, or a blob file) when sled says where; every other
/// error is [`StoreError::Backend`] with sled's message in it and the sled
/// error as its source.
pub(super) fn sled_error(
    dir: &Path,
    doing: impl fmt::Display,
    what: Option<&dyn fmt::Display>,
    e: sled::Error,
) -> StoreError {
    let what = what.map(|w| format!(", {w}")).unwrap_or_default();
    match e {
        sled::Error::Corruption { at, .. } => {
            let said = e.to_string();
            let file = match at {
                Some(sled::DiskPtr::Inline(offset)) => format!(
                    " (file {} at offset {offset})",
                    dir.join(SLED_DATA_FILE).display()
                ),
                Some(sled::DiskPtr::Blob(_, blob)) => {
                    format!(
                        " (blob file {})",
                        dir.join("blobs").join(blob.to_string()).display()
                    )
                }
                None => String::new(),
            };
            StoreError::Damaged {
                location: format!("the sled database in {}{file}{what}", dir.display()),
                detail: format!(
                    "sled found corrupted data while {doing} (sled: {said}); restore the \
                     directory from a backup"
                ),
            }
        }
        e => StoreError::Backend {
            message: format!("{doing} in {}{what} failed: {e}", dir.display()),
            source: Some(Box::new(e)),
        },
    }
}

/// The error for a panic caught in sled while `doing` something in the
/// store in `dir`; `what` names the tree and key where known.
pub(super) fn panicked(
    dir: &Path,
    doing: impl fmt::Display,
    what: Option<&dyn fmt::Display>,
    message: &str,
) -> StoreError {
    let what = what.map(|w| format!(", {w}")).unwrap_or_default();
    StoreError::Damaged {
        location: format!("the sled database in {}{what}", dir.display()),
        detail: format!(
            "sled panicked while {doing} ({message}); the store accepts no more writes until \
             it is reopened"
        ),
    }
}

/// Whether the store still accepts writes: after sled panicked once, it does
/// not (see the module docs of [`super`]).
#[derive(Debug, Default)]
pub(super) struct Poison {
    /// What happened, once it has.
    cause: OnceLock<String>,
}

impl Poison {
    /// Records that sled panicked while `doing` something (the first such
    /// panic is the one reported afterwards).
    pub(super) fn set(&self, dir: &Path, doing: impl fmt::Display, message: &str) {
        let cause = format!("sled panicked while {doing} ({message})");
        if self.cause.set(cause).is_ok() {
            tracing::error!(
                path = %dir.display(),
                %doing,
                panic = %message,
                "sled panicked: the store refuses writes from now on; reopen it"
            );
        }
    }

    /// `Ok` while writes are accepted; afterwards the error every write gets.
    pub(super) fn check(&self, dir: &Path) -> Result<(), StoreError> {
        match self.cause.get() {
            None => Ok(()),
            Some(cause) => Err(StoreError::Damaged {
                location: format!("the sled database in {}", dir.display()),
                detail: format!(
                    "{cause}, so the store refuses writes: sled's state in memory may be \
                     inconsistent and writing on could damage what is on disk. Reopen the store \
                     (sled then recovers from its files); if it fails again, restore the \
                     directory from a backup"
                ),
            }),
        }
    }

    /// Whether sled has panicked in this store.
    pub(super) fn is_set(&self) -> bool {
        self.cause.get().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sled_errors_keep_sleds_message_and_name_the_place() {
        let dir = Path::new("/data/wf");
        let e = sled_error(
            dir,
            "reading events",
            Some(&"tree \"events\", run 01ARZ3NDEKTSV4RRFFQ69G5FAV"),
            sled::Error::Unsupported("no".into()),
        );
        let text = e.to_string();
        assert!(matches!(e, StoreError::Backend { .. }), "{e:?}");
        assert!(text.contains("/data/wf"), "{text}");
        assert!(text.contains("Unsupported: no"), "{text}");
        assert!(text.contains("tree \"events\""), "{text}");

        let e = sled_error(
            dir,
            "reading events",
            None,
            sled::Error::Io(std::io::Error::other("disk on fire")),
        );
        assert!(e.to_string().contains("disk on fire"), "{e}");

        let e = sled_error(
            dir,
            "opening it",
            None,
            sled::Error::Corruption {
                at: Some(sled::DiskPtr::Inline(4096)),
                bt: (),
            },
        );
        let text = e.to_string();
        assert!(matches!(e, StoreError::Damaged { .. }), "{e:?}");
        assert!(text.contains("/data/wf/db at offset 4096"), "{text}");
    }

    #[test]
    fn a_poisoned_store_says_why() {
        let poison = Poison::default();
        let dir = Path::new("/data/wf");
        assert!(poison.check(dir).is_ok());
        poison.set(dir, "committing writes", "boom");
        poison.set(dir, "reading", "second");
        let e = poison.check(dir).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, StoreError::Damaged { .. }));
        assert!(text.contains("committing writes (boom)"), "{text}");
        assert!(!text.contains("second"), "{text}");
        assert!(poison.is_set());
    }
}
