//! A run as a waterfall: one row per operation (step, sleep, hook, webhook,
//! webhook request) with a bar from its creation to its completion on the
//! run's time axis, built from the run's log (drawn by `waterfall_svg`).
//!
//! A step's bar is made of segments: waiting for its first attempt, each
//! attempt, and each wait before a retry. Failed attempts are hatched and
//! end in a cross, so failures do not rely on colour; an operation still
//! open extends to "now" while the run is live (to the run's end once it
//! has ended). Every row is focusable and carries its details (name,
//! attempts, duration, error) in an SVG `<title>` and an `aria-label`.

use std::collections::HashMap;

use workflow_store::{Event, EventData, RunStatus, Timestamp, WebhookResponse};

use super::convert::{duration_text, payload_json, Scrubber};

/// What kind of operation a row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    Step,
    Sleep,
    Hook,
    Webhook,
    /// One HTTP request a webhook received.
    Request,
}

impl OpKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            OpKind::Step => "step",
            OpKind::Sleep => "sleep",
            OpKind::Hook => "hook",
            OpKind::Webhook => "webhook",
            OpKind::Request => "request",
        }
    }
}

/// How an operation ended, if it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Open,
    Done,
    Failed,
}

impl Outcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Open => "open",
            Outcome::Done => "done",
            Outcome::Failed => "failed",
        }
    }
}

/// What a stretch of a bar is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SegmentKind {
    /// A step created, its first attempt not begun.
    Queued,
    /// An attempt of a step (from 1).
    Attempt(u32),
    /// The wait before attempt `n` of a step.
    RetryWait(u32),
    /// A sleep, a live hook, or a request waiting for its answer.
    Waiting,
}

/// One stretch of a bar.
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    pub kind: SegmentKind,
    pub start: Timestamp,
    /// `None` while it lasts.
    pub end: Option<Timestamp>,
    /// For attempts: whether it failed.
    pub failed: bool,
    /// For failed attempts: the error (tokens masked).
    pub error: Option<String>,
}

/// An instant on a row: a payload a hook received, a sleep's due time, the
/// time a retry was due.
#[derive(Debug, Clone)]
pub(crate) struct Mark {
    pub at: Timestamp,
    pub label: String,
}

/// One operation of the run.
#[derive(Debug, Clone)]
pub(crate) struct OpRow {
    pub kind: OpKind,
    /// A stable id for the row: the correlation id, and for a request the
    /// hook's correlation id and the request's number.
    pub id: String,
    pub name: String,
    pub start: Timestamp,
    /// `None` while it lasts.
    pub end: Option<Timestamp>,
    pub outcome: Outcome,
    pub attempts: u32,
    pub error: Option<String>,
    /// A few words on what it is or how it ended (`answered 200`, `due …`).
    pub note: Option<String>,
    pub segments: Vec<Segment>,
    pub marks: Vec<Mark>,
    /// The seq of the event that created it, to order rows that start together.
    pub seq: u64,
    /// For a step waiting to retry: when the next attempt is due.
    retry_due: Option<Timestamp>,
}

impl OpRow {
    fn new(kind: OpKind, id: String, name: String, e: &Event) -> Self {
        OpRow {
            kind,
            id,
            name,
            start: e.at,
            end: None,
            outcome: Outcome::Open,
            attempts: 0,
            error: None,
            note: None,
            segments: Vec::new(),
            marks: Vec::new(),
            seq: e.seq,
            retry_due: None,
        }
    }

    fn open_segment(&mut self, kind: SegmentKind, at: Timestamp) {
        self.segments.push(Segment {
            kind,
            start: at,
            end: None,
            failed: false,
            error: None,
        });
    }

    /// Ends the open segment (if any) at `at`.
    fn close_segment(&mut self, at: Timestamp, error: Option<String>) {
        if let Some(s) = self.segments.last_mut().filter(|s| s.end.is_none()) {
            s.end = Some(at);
            s.failed = error.is_some();
            s.error = error;
        }
    }

    fn finish(&mut self, at: Timestamp, outcome: Outcome) {
        self.end = Some(at);
        self.outcome = outcome;
    }

    /// How long it took, or has lasted until `until`.
    pub(crate) fn duration_ms(&self, until: Timestamp) -> u64 {
        let end = self.end.unwrap_or(until);
        end.as_millis().saturating_sub(self.start.as_millis())
    }
}

/// The waterfall of one run.
#[derive(Debug, Clone)]
pub(crate) struct Waterfall {
    /// When the run was created: the left end of the axis.
    pub start: Timestamp,
    /// The right end of the axis: now while the run is live, else its last event.
    pub end: Timestamp,
    /// Whether the run has not ended (open rows grow).
    pub live: bool,
    /// The operations, ordered by start (then by log position).
    pub rows: Vec<OpRow>,
}

/// The operations of a run from its log. Open operations end at `now` while
/// the run is live; once it has ended, at its last event.
pub(crate) fn build(
    log: &[Event],
    scrub: &Scrubber,
    status: RunStatus,
    now: Timestamp,
) -> Waterfall {
    let start = log.first().map_or(now, |e| e.at);
    let last = log.last().map_or(start, |e| e.at);
    let live = !status.is_terminal();
    let end = if live { now.max(last) } else { last };
    let mut rows: Vec<OpRow> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    // For each webhook: its response mode and its requests (request id, row).
    let mut webhooks: HashMap<String, (WebhookResponse, Vec<(String, usize)>)> = HashMap::new();
    // The time of the write before the current one: events of one write share
    // their timestamp.
    let (mut previous_write, mut this_write) = (start, start);
    for e in log {
        if e.at > this_write {
            previous_write = this_write;
            this_write = e.at;
        }
        match &e.data {
            EventData::StepCreated { step, name, .. } => {
                let mut row = OpRow::new(OpKind::Step, step.to_string(), scrub.text(name), e);
                row.open_segment(SegmentKind::Queued, e.at);
                index.insert(row.id.clone(), rows.len());
                rows.push(row);
            }
            EventData::StepStarted { step, attempt } => {
                if let Some(row) = row_mut(&mut rows, &index, step.as_str()) {
                    // The engine records an attempt when it has finished, so
                    // its start is inferred: a retry began when it came due,
                    // a first attempt when the run's previous write made the
                    // workflow issue the step.
                    let same_write = row.start == e.at && row.attempts == 0;
                    let begun = match row.retry_due.take() {
                        Some(due) => due,
                        None if same_write => previous_write,
                        None => previous_write.max(row.start),
                    }
                    .min(e.at);
                    let begun = if same_write {
                        // Created in this same write: the bar starts with the attempt.
                        row.start = begun;
                        row.segments.clear();
                        begun
                    } else {
                        let floor = row.segments.last().map_or(row.start, |g| g.start);
                        let begun = begun.max(floor);
                        row.close_segment(begun, None);
                        begun
                    };
                    row.attempts = row.attempts.max(*attempt);
                    row.open_segment(SegmentKind::Attempt(*attempt), begun);
                }
            }
            EventData::StepCompleted { step, .. } => {
                if let Some(row) = row_mut(&mut rows, &index, step.as_str()) {
                    row.close_segment(e.at, None);
                    row.finish(e.at, Outcome::Done);
                }
            }
            EventData::StepRetrying {
                step,
                error,
                retry_at,
            } => {
                if let Some(row) = row_mut(&mut rows, &index, step.as_str()) {
                    let message = scrub.text(&error.message);
                    row.close_segment(e.at, Some(message.clone()));
                    row.error = Some(message);
                    let next = row.attempts.saturating_add(1);
                    row.open_segment(SegmentKind::RetryWait(next), e.at);
                    row.retry_due = Some((*retry_at).max(e.at));
                }
            }
            EventData::StepFailed { step, error } => {
                if let Some(row) = row_mut(&mut rows, &index, step.as_str()) {
                    let message = scrub.text(&error.message);
                    row.close_segment(e.at, Some(message.clone()));
                    row.error = Some(message);
                    row.finish(e.at, Outcome::Failed);
                }
            }
            EventData::WaitCreated { wait, resume_at } => {
                let planned = resume_at.as_millis().saturating_sub(e.at.as_millis());
                let mut row =
                    OpRow::new(OpKind::Sleep, wait.to_string(), duration_text(planned), e);
                row.note = Some(format!("due +{}", duration_text(planned)));
                row.open_segment(SegmentKind::Waiting, e.at);
                row.marks.push(Mark {
                    at: *resume_at,
                    label: "due".to_string(),
                });
                index.insert(row.id.clone(), rows.len());
                rows.push(row);
            }
            EventData::WaitCompleted { wait } => {
                if let Some(row) = row_mut(&mut rows, &index, wait.as_str()) {
                    row.close_segment(e.at, None);
                    row.finish(e.at, Outcome::Done);
                }
            }
            EventData::HookCreated {
                hook,
                token,
                webhook,
                ..
            } => {
                let kind = if webhook.is_some() {
                    OpKind::Webhook
                } else {
                    OpKind::Hook
                };
                let name = scrub.token(token.as_str());
                let mut row = OpRow::new(kind, hook.to_string(), name, e);
                row.open_segment(SegmentKind::Waiting, e.at);
                if let Some(mode) = webhook {
                    webhooks.insert(row.id.clone(), (mode.clone(), Vec::new()));
                }
                index.insert(row.id.clone(), rows.len());
                rows.push(row);
            }
            EventData::HookConflict {
                hook,
                token,
                holder,
            } => {
                let name = scrub.token(token.as_str());
                let mut row = OpRow::new(OpKind::Hook, hook.to_string(), name, e);
                row.error = Some(format!(
                    "token conflict: run {holder} holds this hook's token"
                ));
                row.finish(e.at, Outcome::Failed);
                index.insert(row.id.clone(), rows.len());
                rows.push(row);
            }
            EventData::HookReceived { hook, payload } => {
                let key = hook.as_str();
                let Some(&hook_row) = index.get(key) else {
                    continue;
                };
                let number = rows
                    .get(hook_row)
                    .map_or(1, |r| r.marks.len().saturating_add(1));
                if let Some(row) = rows.get_mut(hook_row) {
                    row.marks.push(Mark {
                        at: e.at,
                        label: format!("payload {number} received"),
                    });
                }
                if let Some((mode, requests)) = webhooks.get_mut(key) {
                    let request = payload_json(payload);
                    let request_id = request["request_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    let method = request["method"].as_str().unwrap_or("request");
                    let name = format!("{} #{number}", scrub.text(method));
                    let id = format!("{key}/{number}");
                    let mut row = OpRow::new(OpKind::Request, id, name, e);
                    match mode {
                        WebhookResponse::Manual { timeout_ms } => {
                            row.open_segment(SegmentKind::Waiting, e.at);
                            row.note = Some(format!(
                                "answered by the workflow within {}",
                                duration_text(*timeout_ms)
                            ));
                        }
                        WebhookResponse::Static(r) => {
                            row.finish(e.at, Outcome::Done);
                            row.note = Some(format!("answered {} at once", r.status));
                        }
                        _ => {
                            row.finish(e.at, Outcome::Done);
                            row.note = Some("answered 202 at once".to_string());
                        }
                    }
                    requests.push((request_id, rows.len()));
                    rows.push(row);
                }
            }
            EventData::HookResponded {
                hook,
                request_id,
                response,
            } => {
                let found = webhooks
                    .get(hook.as_str())
                    .and_then(|(_, reqs)| reqs.iter().find(|(id, _)| id == request_id))
                    .map(|&(_, i)| i);
                if let Some(row) = found.and_then(|i| rows.get_mut(i)) {
                    row.close_segment(e.at, None);
                    row.finish(e.at, Outcome::Done);
                    row.note = Some(format!("answered {}", response.status));
                }
            }
            EventData::HookDisposed { hook } => {
                if let Some(row) = row_mut(&mut rows, &index, hook.as_str()) {
                    row.close_segment(e.at, None);
                    row.finish(e.at, Outcome::Done);
                    row.note = Some("disposed".to_string());
                }
            }
            _ => {}
        }
    }
    // Manual requests nobody answered in time: their caller got 504.
    for (mode, requests) in webhooks.values() {
        let WebhookResponse::Manual { timeout_ms } = mode else {
            continue;
        };
        for &(_, i) in requests {
            let Some(row) = rows.get_mut(i) else { continue };
            let deadline = row
                .start
                .saturating_add(std::time::Duration::from_millis(*timeout_ms));
            if row.end.is_none() && (deadline <= end || !live) {
                let at = deadline.min(end);
                row.close_segment(at, Some("no answer in time".to_string()));
                row.error = Some(format!(
                    "the workflow did not answer within {}: the caller got 504",
                    duration_text(*timeout_ms)
                ));
                row.finish(at, Outcome::Failed);
            }
        }
    }
    // An ended run has released its hooks: they end with it.
    if !live {
        for row in rows.iter_mut().filter(|r| r.end.is_none()) {
            row.close_segment(end, None);
            if matches!(row.kind, OpKind::Hook | OpKind::Webhook) {
                row.note = Some("released when the run ended".to_string());
            }
            row.end = Some(end);
        }
    }
    rows.sort_by_key(|r| (r.start, r.seq));
    Waterfall {
        start,
        end,
        live,
        rows,
    }
}

fn row_mut<'a>(
    rows: &'a mut [OpRow],
    index: &HashMap<String, usize>,
    id: &str,
) -> Option<&'a mut OpRow> {
    index.get(id).and_then(|&i| rows.get_mut(i))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use workflow_store::{CorrelationId, ErrorRecord, HookToken, Payload};

    fn cid(s: &str) -> CorrelationId {
        CorrelationId::new(s).expect("correlation id")
    }

    fn ev(seq: u64, at: u64, data: EventData) -> Event {
        Event {
            seq,
            at: Timestamp(at),
            data,
        }
    }

    pub(crate) fn log() -> Vec<Event> {
        let request = |id: &str| {
            Payload::encode(&serde_json::json!({
                "request_id": id, "method": "POST", "uri": "/x", "headers": [], "body": ""
            }))
            .expect("encode")
        };
        vec![
            ev(
                0,
                1_000,
                EventData::RunCreated {
                    workflow: "w".into(),
                    input: Payload::encode(&()).expect("encode"),
                    parent: None,
                },
            ),
            ev(1, 1_000, EventData::RunStarted),
            ev(
                2,
                1_010,
                EventData::StepCreated {
                    step: cid("step:0"),
                    name: "reserve".into(),
                    input_digest: None,
                },
            ),
            ev(
                3,
                1_020,
                EventData::StepStarted {
                    step: cid("step:0"),
                    attempt: 1,
                },
            ),
            ev(
                4,
                1_100,
                EventData::StepRetrying {
                    step: cid("step:0"),
                    error: ErrorRecord::new("busy"),
                    retry_at: Timestamp(1_300),
                },
            ),
            ev(
                5,
                1_300,
                EventData::StepStarted {
                    step: cid("step:0"),
                    attempt: 2,
                },
            ),
            ev(
                6,
                1_400,
                EventData::StepCompleted {
                    step: cid("step:0"),
                    result: Payload::encode(&()).expect("encode"),
                },
            ),
            ev(
                7,
                1_400,
                EventData::WaitCreated {
                    wait: cid("wait:1"),
                    resume_at: Timestamp(2_400),
                },
            ),
            ev(
                8,
                2_410,
                EventData::WaitCompleted {
                    wait: cid("wait:1"),
                },
            ),
            ev(
                9,
                2_410,
                EventData::HookCreated {
                    hook: cid("hook:2"),
                    token: HookToken::new("secret-token-1").expect("token"),
                    metadata: None,
                    webhook: Some(WebhookResponse::Accepted),
                },
            ),
            ev(
                10,
                2_500,
                EventData::HookReceived {
                    hook: cid("hook:2"),
                    payload: request("r1"),
                },
            ),
            ev(
                11,
                2_600,
                EventData::HookReceived {
                    hook: cid("hook:2"),
                    payload: request("r2"),
                },
            ),
            ev(
                12,
                2_700,
                EventData::StepCreated {
                    step: cid("step:3"),
                    name: "charge".into(),
                    input_digest: None,
                },
            ),
            ev(
                13,
                2_700,
                EventData::StepStarted {
                    step: cid("step:3"),
                    attempt: 1,
                },
            ),
        ]
    }

    #[test]
    fn one_row_per_operation_in_start_order() {
        let scrub = Scrubber::new(["secret-token-1"], false);
        let w = build(&log(), &scrub, RunStatus::Running, Timestamp(3_000));
        let kinds: Vec<_> = w.rows.iter().map(|r| (r.kind, r.id.as_str())).collect();
        assert_eq!(
            kinds,
            [
                (OpKind::Step, "step:0"),
                (OpKind::Sleep, "wait:1"),
                (OpKind::Webhook, "hook:2"),
                (OpKind::Request, "hook:2/1"),
                (OpKind::Request, "hook:2/2"),
                (OpKind::Step, "step:3"),
            ]
        );
        let step = &w.rows[0];
        assert_eq!(step.attempts, 2);
        assert_eq!(step.outcome, Outcome::Done);
        let segs: Vec<_> = step.segments.iter().map(|g| (g.kind, g.failed)).collect();
        assert_eq!(
            segs,
            [
                (SegmentKind::Queued, false),
                (SegmentKind::Attempt(1), true),
                (SegmentKind::RetryWait(2), false),
                (SegmentKind::Attempt(2), false),
            ]
        );
        assert_eq!(step.segments[1].error.as_deref(), Some("busy"));
        // The open step and the live webhook grow to now.
        assert_eq!(w.end, Timestamp(3_000));
        assert_eq!(w.rows[5].end, None);
        // Created and started in one write: it began with the previous write.
        assert_eq!(w.rows[5].start, Timestamp(2_600));
        assert_eq!(w.rows[5].duration_ms(w.end), 400);
        assert_eq!(w.rows[2].end, None);
        // The token is masked in the webhook's name.
        assert!(
            !w.rows[2].name.contains("secret-token-1"),
            "{}",
            w.rows[2].name
        );
    }

    #[test]
    fn attempts_recorded_when_they_end_start_with_the_previous_write() {
        // As the engine records them: creation, start and outcome in one
        // write after the attempt; the retry when it came due.
        let step = || cid("step:0");
        let events = vec![
            ev(0, 1_000, EventData::RunStarted),
            ev(
                1,
                1_060,
                EventData::StepCreated {
                    step: step(),
                    name: "call".into(),
                    input_digest: None,
                },
            ),
            ev(
                2,
                1_060,
                EventData::StepStarted {
                    step: step(),
                    attempt: 1,
                },
            ),
            ev(
                3,
                1_060,
                EventData::StepRetrying {
                    step: step(),
                    error: ErrorRecord::new("no"),
                    retry_at: Timestamp(1_200),
                },
            ),
            ev(
                4,
                1_250,
                EventData::StepStarted {
                    step: step(),
                    attempt: 2,
                },
            ),
            ev(
                5,
                1_250,
                EventData::StepCompleted {
                    step: step(),
                    result: Payload::encode(&()).expect("encode"),
                },
            ),
        ];
        let w = build(
            &events,
            &Scrubber::default(),
            RunStatus::Running,
            Timestamp(2_000),
        );
        let row = &w.rows[0];
        assert_eq!(row.start, Timestamp(1_000));
        let spans: Vec<_> = row
            .segments
            .iter()
            .map(|g| (g.kind, g.start.as_millis(), g.end.map(|t| t.as_millis())))
            .collect();
        assert_eq!(
            spans,
            [
                (SegmentKind::Attempt(1), 1_000, Some(1_060)),
                (SegmentKind::RetryWait(2), 1_060, Some(1_200)),
                (SegmentKind::Attempt(2), 1_200, Some(1_250)),
            ]
        );
    }

    #[test]
    fn an_ended_run_closes_what_was_open() {
        let mut events = log();
        events.push(ev(
            14,
            2_800,
            EventData::RunFailed {
                error: ErrorRecord::new("stop"),
            },
        ));
        let w = build(
            &events,
            &Scrubber::default(),
            RunStatus::Failed,
            Timestamp(9_000),
        );
        assert_eq!(w.end, Timestamp(2_800), "the axis ends with the run");
        assert!(w.rows.iter().all(|r| r.end.is_some()));
    }
}
