//! The event log of durable workflows.
//!
//! A workflow run is an append-only log of [`Event`]s. This crate defines that
//! log and everything a backend must keep consistent with it:
//!
//! - [`id`]: [`RunId`], [`CorrelationId`], [`HookToken`] newtypes;
//! - [`event`]: every [`EventKind`] and its data ([`EventData`]);
//! - [`codec`]: CBOR records in a versioned envelope;
//! - [`Store`]: the trait a backend implements, with the invariants it keeps;
//! - [`apply`]: those invariants, written once, for backends to reuse;
//! - [`MemoryStore`], (feature `sled`) [`SledStore`] and (feature `redb`)
//!   [`RedbStore`];
//! - [`faults`]: a wrapper that injects failures, timeouts and delays;
//! - (feature `conformance`) `conformance`: the property-based suite any backend runs.
//!
//! The crate knows nothing about replay or HTTP; `workflow-core` builds on it.
#![warn(missing_docs)]

pub mod apply;
pub mod clock;
pub mod codec;
mod error;
pub mod event;
pub mod faults;
pub mod id;
mod memory;
pub mod record;
mod store;

#[cfg(any(feature = "sled", feature = "redb"))]
mod kv;
#[cfg(feature = "redb")]
mod redb_store;
#[cfg(feature = "sled")]
mod sled_store;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use clock::{Clock, ManualClock, SystemClock};
pub use codec::CodecError;
pub use error::StoreError;
pub use event::{
    ErrorRecord, Event, EventData, EventKind, HttpResponseRecord, Payload, Timestamp,
    WebhookResponse,
};
pub use id::{CorrelationId, HookToken, IdError, LeaseId, RunId};
pub use memory::MemoryStore;
pub use record::{
    Appended, Change, CreatedRun, HookRecord, Lease, NewRun, PurgeQuery, Purged, Resumed, RunQuery,
    RunRecord, RunStatus,
};
pub use store::{purge_candidates, Store, READ_PAGE};

#[cfg(feature = "redb")]
pub use redb_store::{RedbConfig, RedbStore};
#[cfg(feature = "sled")]
pub use sled_store::{SledConfig, SledStore};
