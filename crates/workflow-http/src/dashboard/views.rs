//! Runs, events and hooks as JSON-ready values, built in one place for every
//! operator surface: the dashboard's JSON API and pages, and the admin API
//! and CLI of `workflow serve` (which serialize these types as they are).
//!
//! Recorded payloads are decoded from CBOR ([`payload_json`]) and times are
//! RFC 3339 text ([`time_text`]). The `From` conversions show everything
//! (tokens in full), for callers that are already authenticated; the
//! dashboard builds the same values with tokens masked when it is configured
//! to hide them.
//!
//! ```
//! use workflow_http::dashboard::views::EventView;
//! use workflow_store::{Event, EventData, Payload, Timestamp};
//!
//! let e = Event {
//!     seq: 3,
//!     at: Timestamp(250),
//!     data: EventData::RunCompleted { output: Payload::encode(&"done").unwrap() },
//! };
//! let v = EventView::from(&e);
//! assert_eq!(v.kind, "run_completed");
//! assert_eq!(v.time, "1970-01-01T00:00:00.250Z");
//! assert_eq!(v.data, serde_json::json!({ "output": "done" }));
//! ```

use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};
use workflow_core::webhook_path;
use workflow_store::{Event, EventData, HookRecord, RunRecord, WebhookResponse};

use super::convert::{payload_json, time_text, Scrubber};

/// One run, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunView {
    /// Run id.
    pub id: String,
    /// Workflow name.
    pub workflow: String,
    /// Status (`running`, `completed`, …).
    pub status: String,
    /// Creation time (RFC 3339).
    pub created: String,
    /// Time of the latest change (RFC 3339).
    pub updated: String,
    /// Number of events.
    pub events: u64,
    /// Error of a failed or blocked run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RunView {
    /// The view of `r` with `error` as its error (the dashboard passes it
    /// with tokens masked).
    pub(crate) fn with_error(r: &RunRecord, error: Option<String>) -> Self {
        RunView {
            id: r.id.to_string(),
            workflow: r.workflow.clone(),
            status: r.status.as_str().to_string(),
            created: time_text(r.created_at),
            updated: time_text(r.updated_at),
            events: r.next_seq,
            error,
        }
    }
}

impl From<&RunRecord> for RunView {
    fn from(r: &RunRecord) -> Self {
        RunView::with_error(r, r.error.as_ref().map(|e| e.message.clone()))
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
    /// The event's data with payloads decoded: `{"input"}` for `run_created`,
    /// `{"result"}` for `step_completed`, `{"payload"}` for `hook_received`, …
    pub data: Json,
}

impl From<&Event> for EventView {
    /// The event with everything shown, tokens and request headers included.
    fn from(e: &Event) -> Self {
        EventView {
            seq: e.seq,
            time: time_text(e.at),
            kind: e.kind().as_str().to_string(),
            correlation: e.data.correlation_id().map(|c| c.to_string()),
            data: event_data(e, &Scrubber::default(), false),
        }
    }
}

/// A live hook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookView {
    /// The token that resumes it (masked where the dashboard hides tokens).
    pub token: String,
    /// Its run.
    pub run: String,
    /// Its correlation id in the run.
    pub hook: String,
    /// For a webhook: its URL path (absent where the dashboard hides tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_path: Option<String>,
    /// For a webhook: how it answers (`answers 202 Accepted`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// When it was created (RFC 3339).
    #[serde(default)]
    pub created: String,
    /// Metadata kept with it.
    pub metadata: Json,
}

impl HookView {
    /// The view of `h`, its token and metadata passed through `scrub`.
    pub(crate) fn scrubbed(h: &HookRecord, scrub: &Scrubber) -> Self {
        HookView {
            token: scrub.token(h.token.as_str()),
            run: h.run_id.to_string(),
            hook: h.hook.to_string(),
            webhook_path: h
                .webhook
                .as_ref()
                .filter(|_| !scrub.hides())
                .map(|_| webhook_path(h.token.as_str())),
            webhook: h.webhook.as_ref().map(webhook_mode),
            created: time_text(h.created_at),
            metadata: h
                .metadata
                .as_ref()
                .map(|m| scrub.value(payload_json(m)))
                .unwrap_or(Json::Null),
        }
    }
}

impl From<&HookRecord> for HookView {
    /// The hook with its token and webhook path shown.
    fn from(h: &HookRecord) -> Self {
        HookView::scrubbed(h, &Scrubber::default())
    }
}

/// How a webhook answers, in words.
pub(crate) fn webhook_mode(w: &WebhookResponse) -> String {
    match w {
        WebhookResponse::Accepted => "answers 202 Accepted".to_string(),
        WebhookResponse::Static(r) => format!("answers a static {}", r.status),
        WebhookResponse::Manual { timeout_ms } => {
            format!("answered by the workflow (timeout {timeout_ms} ms)")
        }
        _ => "webhook".to_string(),
    }
}

/// An event's data as shown: payloads decoded, tokens and error messages
/// passed through `scrub`. `webhook` says whether the hook of a
/// `hook_received` event is a webhook (its recorded request then has its
/// secret-looking headers hidden when `scrub` hides tokens).
pub(crate) fn event_data(e: &Event, scrub: &Scrubber, webhook: bool) -> Json {
    match &e.data {
        EventData::RunCreated {
            workflow,
            input,
            parent,
        } => match parent {
            Some(p) => json!({
                "workflow": workflow,
                "input": scrub.value(payload_json(input)),
                "parent": p.run.to_string(),
                "detached": p.detached,
            }),
            None => json!({ "workflow": workflow, "input": scrub.value(payload_json(input)) }),
        },
        EventData::ChildCreated {
            run,
            workflow,
            input,
            detached,
            ..
        } => json!({
            "child_run": run.to_string(),
            "workflow": workflow,
            "input": scrub.value(payload_json(input)),
            "detached": detached,
        }),
        EventData::ChildCompleted { run, output, .. } => json!({
            "child_run": run.to_string(),
            "output": scrub.value(payload_json(output)),
        }),
        EventData::ChildFailed { run, error, .. } => json!({
            "child_run": run.to_string(),
            "error": scrub.text(&error.message),
        }),
        EventData::PatchMarked { patch, .. } => json!({ "patch": patch }),
        EventData::RunCompleted { output } => {
            json!({ "output": scrub.value(payload_json(output)) })
        }
        EventData::RunFailed { error } | EventData::RunBlocked { error } => {
            let message = scrub.text(&error.message);
            match &error.details {
                Some(d) => json!({ "error": message, "details": scrub.value(payload_json(d)) }),
                None => json!({ "error": message }),
            }
        }
        EventData::StepCreated {
            name, input_digest, ..
        } => match input_digest {
            Some(d) => json!({ "name": name, "input_digest": hex(d) }),
            None => json!({ "name": name }),
        },
        EventData::StepStarted { attempt, .. } => json!({ "attempt": attempt }),
        EventData::StepCompleted { result, .. } => {
            json!({ "result": scrub.value(payload_json(result)) })
        }
        EventData::StepRetrying {
            error, retry_at, ..
        } => json!({
            "error": scrub.text(&error.message),
            "retry_at": time_text(*retry_at),
            "retry_at_ms": retry_at.as_millis(),
        }),
        EventData::StepFailed { error, .. } => json!({ "error": scrub.text(&error.message) }),
        EventData::HookCreated {
            token,
            metadata,
            webhook,
            ..
        } => json!({
            "token": scrub.token(token.as_str()),
            "webhook": webhook.as_ref().map(webhook_mode),
            "metadata": metadata.as_ref().map(|m| scrub.value(payload_json(m))),
        }),
        EventData::HookReceived { payload, .. } => {
            let mut decoded = scrub.value(payload_json(payload));
            if webhook {
                decoded = scrub.headers(decoded);
            }
            json!({ "payload": decoded })
        }
        EventData::HookResponded {
            request_id,
            response,
            ..
        } => {
            let headers: Vec<Json> = response
                .headers
                .iter()
                .map(|(n, v)| json!([n, String::from_utf8_lossy(v)]))
                .collect();
            let response = scrub.headers(json!({
                "status": response.status,
                "headers": headers,
                "body": String::from_utf8_lossy(&response.body),
            }));
            scrub.value(json!({ "request_id": request_id, "response": response }))
        }
        EventData::HookConflict { token, holder, .. } => {
            json!({ "token": scrub.token(token.as_str()), "holder": holder.to_string() })
        }
        EventData::WaitCreated { resume_at, .. } => json!({
            "resume_at": time_text(*resume_at),
            "resume_at_ms": resume_at.as_millis(),
        }),
        _ => json!({}),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use workflow_store::{CorrelationId, HookToken, Payload, RunId, Timestamp};

    fn cid(s: &str) -> CorrelationId {
        CorrelationId::new(s).expect("correlation id")
    }

    #[test]
    fn events_show_tokens_unless_scrubbed() {
        let e = Event {
            seq: 4,
            at: Timestamp(1_000),
            data: EventData::HookCreated {
                hook: cid("hook:4"),
                token: HookToken::new("order:42").expect("token"),
                metadata: Some(Payload::encode(&"see order:42").expect("encode")),
                webhook: Some(WebhookResponse::Accepted),
            },
        };
        let shown = EventView::from(&e);
        assert_eq!(shown.correlation.as_deref(), Some("hook:4"));
        assert_eq!(
            shown.data,
            json!({ "token": "order:42", "webhook": "answers 202 Accepted", "metadata": "see order:42" })
        );
        let masked = event_data(&e, &Scrubber::new(["order:42"], false), false);
        assert_eq!(masked["token"], "or…");
        assert_eq!(masked["metadata"], "see or…");
    }

    #[test]
    fn hooks_show_their_webhook_path_unless_scrubbed() {
        let h = HookRecord {
            token: HookToken::new("order:42").expect("token"),
            run_id: RunId::from_u128(1),
            hook: cid("hook:1"),
            metadata: None,
            webhook: Some(WebhookResponse::Accepted),
            created_at: Timestamp(0),
            live: true,
        };
        let shown = HookView::from(&h);
        assert_eq!(shown.token, "order:42");
        assert_eq!(
            shown.webhook_path.as_deref(),
            Some("/.well-known/workflow/v1/webhook/order%3A42")
        );
        let masked = HookView::scrubbed(&h, &Scrubber::new(["order:42"], false));
        assert_eq!(masked.token, "or…");
        assert_eq!(masked.webhook_path, None);
        assert_eq!(masked.webhook.as_deref(), Some("answers 202 Accepted"));
    }
}
