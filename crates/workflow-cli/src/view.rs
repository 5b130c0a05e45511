//! What the CLI and the admin API show: runs, events and hooks as JSON-ready
//! values, with recorded payloads decoded from CBOR.

use serde::{Deserialize, Serialize};
use workflow_http::dashboard::{payload_json, time_text};
use workflow_store::{Event, EventData, HookRecord, RunRecord};

/// One run, as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunView {
    /// Run id.
    pub id: String,
    /// Workflow name.
    pub workflow: String,
    /// Status (`running`, `completed`, …).
    pub status: String,
    /// Creation time (RFC 3339).
    pub created: String,
    /// Time of the latest event (RFC 3339).
    pub updated: String,
    /// Number of events.
    pub events: u64,
    /// Error of a failed or blocked run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl From<&RunRecord> for RunView {
    fn from(r: &RunRecord) -> Self {
        RunView {
            id: r.id.to_string(),
            workflow: r.workflow.clone(),
            status: r.status.as_str().to_string(),
            created: time_text(r.created_at),
            updated: time_text(r.updated_at),
            events: r.next_seq,
            error: r.error.as_ref().map(|e| e.message.clone()),
        }
    }
}

/// One event of a run's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventView {
    /// Position in the log.
    pub seq: u64,
    /// When it was recorded (RFC 3339).
    pub time: String,
    /// Kind (`step_completed`).
    pub kind: String,
    /// Correlation id of its operation, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation: Option<String>,
    /// The event's data with payloads decoded.
    pub data: serde_json::Value,
}

impl From<&Event> for EventView {
    fn from(e: &Event) -> Self {
        use serde_json::json;
        let data = match &e.data {
            EventData::RunCreated { workflow, input } => {
                json!({ "workflow": workflow, "input": payload_json(input) })
            }
            EventData::RunCompleted { output } => json!({ "output": payload_json(output) }),
            EventData::RunFailed { error } | EventData::RunBlocked { error } => {
                json!({ "error": error.message })
            }
            EventData::StepCreated { name, .. } => json!({ "name": name }),
            EventData::StepStarted { attempt, .. } => json!({ "attempt": attempt }),
            EventData::StepCompleted { result, .. } => json!({ "result": payload_json(result) }),
            EventData::StepRetrying {
                error, retry_at, ..
            } => json!({ "error": error.message, "retry_at": time_text(*retry_at) }),
            EventData::StepFailed { error, .. } => json!({ "error": error.message }),
            EventData::HookCreated { token, webhook, .. } => json!({
                "token": token.as_str(),
                "webhook": webhook.is_some(),
            }),
            EventData::HookReceived { payload, .. } => json!({ "payload": payload_json(payload) }),
            EventData::HookResponded {
                request_id,
                response,
                ..
            } => json!({
                "request_id": request_id,
                "status": response.status,
                "body": String::from_utf8_lossy(&response.body),
            }),
            EventData::HookConflict { token, holder, .. } => {
                json!({ "token": token.as_str(), "holder": holder.to_string() })
            }
            EventData::WaitCreated { resume_at, .. } => {
                json!({ "resume_at": time_text(*resume_at) })
            }
            _ => json!({}),
        };
        EventView {
            seq: e.seq,
            time: time_text(e.at),
            kind: e.kind().as_str().to_string(),
            correlation: e.data.correlation_id().map(|c| c.to_string()),
            data,
        }
    }
}

/// A live hook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookView {
    /// The token that resumes it.
    pub token: String,
    /// Its run.
    pub run: String,
    /// Its correlation id in the run.
    pub hook: String,
    /// Whether it is a webhook, and its URL path if so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_path: Option<String>,
    /// Metadata kept with it.
    pub metadata: serde_json::Value,
}

impl From<&HookRecord> for HookView {
    fn from(h: &HookRecord) -> Self {
        HookView {
            token: h.token.to_string(),
            run: h.run_id.to_string(),
            hook: h.hook.to_string(),
            webhook_path: h
                .webhook
                .as_ref()
                .map(|_| workflow_core::webhook_path(h.token.as_str())),
            metadata: h
                .metadata
                .as_ref()
                .map(payload_json)
                .unwrap_or(serde_json::Value::Null),
        }
    }
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
