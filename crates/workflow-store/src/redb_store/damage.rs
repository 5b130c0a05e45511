//! redb's failures as typed errors: its errors (keeping redb's own message) and
//! its panics (caught where the store calls redb). The policy is described in
//! the module docs of [`super`] ("Damaged files and redb's failures").

use std::fmt;
use std::path::Path;

use crate::error::StoreError;

pub(super) use crate::kv::guarded;

/// A redb error as a [`StoreError`], keeping redb's message and naming the
/// database `file`, what was being done, and (`what`) the table and key where
/// known.
///
/// redb's `Corrupted` (and a lock that a panic poisoned) is
/// [`StoreError::Damaged`]; a database held elsewhere is
/// [`StoreError::Locked`]; everything else (I/O above all) is
/// [`StoreError::Backend`] with redb's message in it and the redb error as its
/// source.
pub(super) fn redb_error(
    file: &Path,
    doing: impl fmt::Display,
    what: Option<&dyn fmt::Display>,
    e: impl Into<redb::Error>,
) -> StoreError {
    let e: redb::Error = e.into();
    let what = what.map(|w| format!(", {w}")).unwrap_or_default();
    match e {
        redb::Error::DatabaseAlreadyOpen => StoreError::Locked {
            path: file.to_path_buf(),
        },
        redb::Error::Corrupted(_) | redb::Error::LockPoisoned(_) => StoreError::Damaged {
            location: format!("the redb database {}{what}", file.display()),
            detail: format!(
                "redb found it damaged while {doing} (redb: {e}); restore the file from a backup"
            ),
        },
        e => StoreError::Backend {
            message: format!("{doing} in {}{what} failed: {e}", file.display()),
            source: Some(Box::new(e)),
        },
    }
}

/// The error for a panic caught in redb (or in the store's code around it)
/// while `doing` something with the database `file`.
pub(super) fn panicked(
    file: &Path,
    doing: impl fmt::Display,
    what: Option<&dyn fmt::Display>,
    message: &str,
) -> StoreError {
    let what = what.map(|w| format!(", {w}")).unwrap_or_default();
    StoreError::Damaged {
        location: format!("the redb database {}{what}", file.display()),
        detail: format!(
            "redb panicked while {doing} ({message}); its file may be damaged: if this \
             repeats, restore it from a backup"
        ),
    }
}

/// A copy of a batch's error for the other writers of the batch: a
/// [`StoreError::Damaged`] as such, anything else as a
/// [`StoreError::Backend`] with its message (the source stays with the first).
pub(super) fn copy_of(e: &StoreError) -> StoreError {
    match e {
        StoreError::Damaged { location, detail } => StoreError::Damaged {
            location: location.clone(),
            detail: detail.clone(),
        },
        StoreError::Backend { message, .. } => StoreError::Backend {
            message: message.clone(),
            source: None,
        },
        other => StoreError::Backend {
            message: other.to_string(),
            source: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redb_errors_keep_redbs_message_and_name_the_place() {
        let file = Path::new("/data/wf/workflow.redb");
        let e = redb_error(
            file,
            "reading events",
            Some(&"table \"events\""),
            redb::StorageError::Io(std::io::Error::other("disk on fire")),
        );
        let text = e.to_string();
        assert!(matches!(e, StoreError::Backend { .. }), "{e:?}");
        assert!(text.contains("/data/wf/workflow.redb"), "{text}");
        assert!(text.contains("disk on fire"), "{text}");
        assert!(text.contains("table \"events\""), "{text}");

        let e = redb_error(
            file,
            "reading events",
            None,
            redb::StorageError::Corrupted("bad checksum".into()),
        );
        assert!(matches!(e, StoreError::Damaged { .. }), "{e:?}");
        assert!(e.to_string().contains("bad checksum"), "{e}");

        let e = redb_error(
            file,
            "opening",
            None,
            redb::DatabaseError::DatabaseAlreadyOpen,
        );
        assert!(matches!(e, StoreError::Locked { path } if path == file));
    }

    #[test]
    fn copies_keep_the_kind_and_message() {
        let e = StoreError::backend("flush failed", std::io::Error::other("eio"));
        let copy = copy_of(&e);
        assert!(matches!(&copy, StoreError::Backend { source: None, .. }));
        assert_eq!(copy.to_string(), e.to_string());
        let d = panicked(Path::new("/x"), "committing", None, "boom");
        assert!(matches!(copy_of(&d), StoreError::Damaged { .. }));
    }
}
