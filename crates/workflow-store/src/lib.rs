//! The event log of durable workflows.
//!
//! A workflow run is an append-only log of [`Event`]s. This crate defines that
//! log and everything a backend must keep consistent with it:
//!
//! - [`id`]: [`RunId`], [`CorrelationId`], [`HookToken`] newtypes;
//! - [`event`]: every [`EventKind`] and its data ([`EventData`]);
//! - [`codec`]: CBOR records in a versioned envelope;
//! - [`Store`]: the trait a backend implements, with the invariants it keeps;
//! - [`stream`]: durable output streams, their chunks and who may read them;
//! - [`backend`]: for backend authors, those invariants written once
//!   (`apply` rules over a read view, committed as one change set) and the
//!   projections a backend keeps;
//! - [`MemoryStore`], (feature `sled`) [`SledStore`] and (feature `redb`)
//!   [`RedbStore`];
//! - (feature `test-util`) `faults`, a wrapper that injects failures,
//!   timeouts and delays, and `ManualClock`, a clock tests move by hand;
//! - (feature `conformance`) `conformance`: the property-based suite any backend runs.
//!
//! The crate knows nothing about replay or HTTP; `workflow-core` builds on it.
#![warn(missing_docs)]

mod apply;
pub mod backend;
pub mod clock;
pub mod codec;
mod error;
pub mod event;
#[cfg(any(feature = "test-util", test))]
pub mod faults;
pub mod id;
mod memory;
mod record;
mod store;
pub mod stream;

#[cfg(any(feature = "sled", feature = "redb"))]
mod kv;
#[cfg(feature = "redb")]
mod redb_store;
#[cfg(feature = "sled")]
mod sled_store;
#[cfg(any(feature = "sled", feature = "redb"))]
mod wal;

#[cfg(feature = "conformance")]
pub mod conformance;

#[cfg(any(feature = "test-util", test))]
pub use clock::ManualClock;
pub use clock::{Clock, SystemClock};
pub use codec::CodecError;
pub use error::StoreError;
pub use event::{
    ErrorRecord, Event, EventData, EventKind, HttpResponseRecord, ParentRun, Payload, Timestamp,
    WebhookResponse,
};
pub use id::{CorrelationId, HookToken, IdError, LeaseId, RunId};
pub use memory::MemoryStore;
pub use record::{
    Appended, Change, CreatedRun, HookRecord, Lease, NewRun, PurgeQuery, Purged, Resumed, RunQuery,
    RunRecord, RunStatus,
};
pub use store::{Store, READ_PAGE, STREAM_PAGE};
pub use stream::{
    ChunkWriter, StreamInfo, StreamName, StreamPage, StreamToken, StreamWrite, DEFAULT_STREAM,
};

#[cfg(feature = "redb")]
pub use redb_store::{RedbConfig, RedbStore};
#[cfg(feature = "sled")]
pub use sled_store::{SledConfig, SledStore};
