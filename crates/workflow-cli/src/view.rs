//! What the CLI and the admin API show: runs, events and hooks as JSON-ready
//! values, with recorded payloads decoded from CBOR.
//!
//! [`RunView`], [`EventView`] and [`HookView`] are the dashboard's
//! ([`workflow_http::dashboard::views`]): one piece of code builds them for
//! the dashboard, the admin API and the CLI. The admin API is behind the
//! admin gate, so these show tokens in full.

use serde::{Deserialize, Serialize};

pub use workflow_http::dashboard::views::{EventView, HookView, RunView};

/// The answer to a purge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PurgeView {
    /// How many ended runs were deleted.
    pub purged: u64,
}

/// What to purge, as the admin API takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PurgeRequest {
    /// Runs that ended longer ago than this many seconds.
    pub older_than_secs: u64,
    /// Only runs of this workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// Only runs with this final status (completed, failed, cancelled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// The answer to starting, resuming, cancelling or unblocking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionView {
    /// The run concerned.
    pub run: String,
    /// The hook resumed, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook: Option<String>,
    /// The seq of the event recorded, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}
