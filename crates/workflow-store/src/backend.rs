//! For backend authors: what it takes to implement [`Store`](crate::Store).
//!
//! Users of the library need none of this; it is the part of the crate that
//! a storage backend builds on, kept in one place so that the rest of the
//! public API can stay small and stable.
//!
//! # The shared rules
//!
//! A write operation (create a run, append, resume a hook, lease, purge, …)
//! reads the current projections through a [`ReadView`], checks the store's
//! invariants, and stages everything it would change in a [`Changes`] set
//! (a [`Staged`] view overlays the staged changes on the reads). The backend
//! commits that set atomically (a sled or redb transaction, a mutex, an SQL
//! transaction), and only then publishes the staged notifications
//! ([`Changes::notify`]). Nothing is staged for a failed operation, so a
//! rejected append leaves no trace: atomicity is the backend's commit.
//!
//! So a backend implements reads by key ([`ReadView`]) and an
//! all-or-nothing commit of a [`Changes`] set, and calls the rule functions
//! here ([`create_run`], [`append`], [`resume_hook`], [`resume_webhook`],
//! [`wake`], [`try_lease`], [`renew_lease`], [`release_lease`], [`purge`])
//! inside its write; it never re-implements the invariants. Backends with a
//! query language of their own may still do so (the PostgreSQL backend's
//! purge is one SQL statement), and the conformance suite keeps them honest.
//!
//! # The projections
//!
//! Besides run records, events and hooks (public types at the crate root), a
//! backend stores per run the state of each operation ([`OpState`]), the
//! live owner of each token ([`TokenOwner`]) and one work-queue entry
//! ([`QueueEntry`]: timers, the wake-up and the lease), indexed by its
//! effective due time ([`QueueEntry::effective_due`]).
//!
//! # Checking a backend
//!
//! Run the conformance suite (feature `conformance`) in an integration test:
//! `workflow_store::conformance_tests!(my_backend, MyBackend::new());` expands
//! to one test per category; see `docs/conformance.md` for what each checks
//! and how the suite itself is mutation-tested.

pub use crate::apply::{
    append, create_run, create_run_leased, purge, release_lease, renew_lease, resume_hook,
    resume_webhook, try_lease, wake, write_stream, Changes, PurgedRun, ReadView, Staged,
};
pub use crate::record::{OpKind, OpState, QueueEntry, TokenOwner};
pub use crate::store::purge_candidates;
pub use crate::stream::{ChunkKey, PendingShare, RunStreams, Segment, StreamState};
