//! A run as a waterfall: one row per operation (step, sleep, hook, webhook,
//! webhook request) with a bar from its creation to its completion on the
//! run's time axis, built from the run's log, and drawn as SVG on the server.
//!
//! A step's bar is made of segments: waiting for its first attempt, each
//! attempt, and each wait before a retry. Failed attempts are hatched and
//! end in a cross, so failures do not rely on colour; an operation still
//! open extends to "now" while the run is live (to the run's end once it
//! has ended). Every row is focusable and carries its details (name,
//! attempts, duration, error) in an SVG `<title>` and an `aria-label`.

use std::collections::HashMap;
use std::fmt::Write as _;

use workflow_store::{Event, EventData, RunStatus, Timestamp, WebhookResponse};

use super::convert::{duration_text, payload_json, Scrubber};
use super::html::esc;

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

// ---- SVG --------------------------------------------------------------------

/// Width of the drawing, its label column, and its note column, in pixels.
const WIDTH: f64 = 1120.0;
const LABEL_WIDTH: f64 = 250.0;
const NOTE_WIDTH: f64 = 150.0;
const AXIS_HEIGHT: f64 = 28.0;
const ROW_HEIGHT: f64 = 26.0;
const BAR_HEIGHT: f64 = 14.0;
/// The narrowest bar drawn, so that instant operations stay visible.
const MIN_BAR: f64 = 3.0;
/// More rows than this are not drawn (the table below has every event).
pub(crate) const MAX_ROWS: usize = 400;

/// Maps times to x positions.
struct Scale {
    start: u64,
    span: f64,
    x0: f64,
    width: f64,
}

impl Scale {
    fn x(&self, t: Timestamp) -> f64 {
        let ms = t.as_millis().saturating_sub(self.start) as f64;
        self.x0 + (ms / self.span).min(1.0) * self.width
    }
}

/// A tick spacing giving at most about eight ticks over `span_ms`.
fn tick_step(span_ms: u64) -> u64 {
    const STEPS: [u64; 27] = [
        1,
        2,
        5,
        10,
        20,
        50,
        100,
        200,
        500,
        1_000,
        2_000,
        5_000,
        10_000,
        15_000,
        30_000,
        60_000,
        120_000,
        300_000,
        600_000,
        900_000,
        1_800_000,
        3_600_000,
        7_200_000,
        21_600_000,
        43_200_000,
        86_400_000,
        604_800_000,
    ];
    STEPS
        .into_iter()
        .find(|s| span_ms / s <= 8)
        .unwrap_or(604_800_000)
}

/// The words a row's tooltip, aria-label and detail line say.
fn row_summary(row: &OpRow, until: Timestamp) -> String {
    let mut s = format!("{} {}", row.kind.as_str(), row.name);
    let duration = duration_text(row.duration_ms(until));
    match row.outcome {
        Outcome::Open => {
            let _ = write!(s, ", open for {duration}");
        }
        Outcome::Done => {
            let _ = write!(s, ", took {duration}");
        }
        Outcome::Failed => {
            let _ = write!(s, ", failed after {duration}");
        }
    }
    if row.kind == OpKind::Step {
        let failed = row.segments.iter().filter(|g| g.failed).count();
        let _ = write!(
            s,
            ", {} attempt{}",
            row.attempts,
            if row.attempts == 1 { "" } else { "s" }
        );
        if failed > 0 {
            let _ = write!(s, " ({failed} failed)");
        }
    }
    if let Some(note) = &row.note {
        let _ = write!(s, ", {note}");
    }
    match (&row.error, row.outcome) {
        (Some(err), Outcome::Failed) => {
            let _ = write!(s, "; error: {err}");
        }
        (Some(err), _) => {
            let _ = write!(s, "; last failed attempt: {err}");
        }
        (None, _) => {}
    }
    s
}

fn segment_summary(row: &OpRow, g: &Segment, until: Timestamp) -> String {
    let ms = g
        .end
        .unwrap_or(until)
        .as_millis()
        .saturating_sub(g.start.as_millis());
    let d = duration_text(ms);
    let what = match g.kind {
        SegmentKind::Queued => format!("waiting for its first attempt: {d}"),
        SegmentKind::Attempt(n) if g.failed => format!("attempt {n} failed after {d}"),
        SegmentKind::Attempt(n) if g.end.is_none() => format!("attempt {n} running for {d}"),
        SegmentKind::Attempt(n) => format!("attempt {n} took {d}"),
        SegmentKind::RetryWait(n) => format!("waiting {d} before attempt {n}"),
        SegmentKind::Waiting => match row.kind {
            OpKind::Sleep => format!("sleeping: {d}"),
            OpKind::Request => format!("waiting for the workflow's answer: {d}"),
            _ => format!("live: {d}"),
        },
    };
    match &g.error {
        Some(e) => format!("{} {}: {what}; error: {e}", row.kind.as_str(), row.name),
        None => format!("{} {}: {what}", row.kind.as_str(), row.name),
    }
}

/// The first `n` characters of `s`, with `…` when cut.
fn cut(s: &str, n: usize) -> String {
    if s.chars().count() > n {
        let mut out: String = s.chars().take(n.saturating_sub(1)).collect();
        out.push('…');
        out
    } else {
        s.to_string()
    }
}

/// The waterfall as an SVG figure with a legend and a detail line.
pub(crate) fn svg(w: &Waterfall) -> String {
    let mut out = String::new();
    let shown = &w.rows[..w.rows.len().min(MAX_ROWS)];
    let span = w.end.as_millis().saturating_sub(w.start.as_millis()).max(1);
    let scale = Scale {
        start: w.start.as_millis(),
        span: span as f64,
        x0: LABEL_WIDTH + 10.0,
        width: WIDTH - LABEL_WIDTH - NOTE_WIDTH - 20.0,
    };
    let height = AXIS_HEIGHT + ROW_HEIGHT * shown.len() as f64 + 8.0;
    let _ = write!(
        out,
        "<section id=\"waterfall\"><h2>Waterfall <span class=\"hint\">{n} operation{s} over {d}{live}</span></h2>",
        n = w.rows.len(),
        s = if w.rows.len() == 1 { "" } else { "s" },
        d = esc(&duration_text(span)),
        live = if w.live { ", open ones growing while the run is live" } else { "" },
    );
    if w.rows.is_empty() {
        out.push_str("<p class=\"empty\">No operations yet.</p></section>");
        return out;
    }
    if shown.len() < w.rows.len() {
        let _ = write!(
            out,
            "<p class=\"hint\">Showing the first {} of {} operations.</p>",
            shown.len(),
            w.rows.len()
        );
    }
    let _ = write!(
        out,
        "<div class=\"wf-scroll\"><svg class=\"waterfall\" xmlns=\"http://www.w3.org/2000/svg\" \
         width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" role=\"list\" \
         aria-label=\"Operations of the run on a time axis, ordered by start\" \
         data-start=\"{start}\" data-end=\"{end}\">",
        start = w.start.as_millis(),
        end = w.end.as_millis(),
    );
    out.push_str(
        "<defs><pattern id=\"wf-hatch\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" \
         patternTransform=\"rotate(45)\"><rect width=\"6\" height=\"6\" class=\"wf-hatch-bg\"/>\
         <line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"6\" class=\"wf-hatch-line\"/></pattern></defs>",
    );
    // The axis: ticks and their offsets from the run's start.
    let step = tick_step(span);
    out.push_str("<g class=\"wf-axis\" aria-hidden=\"true\">");
    let mut t = 0u64;
    while t <= span {
        let x = scale.x(Timestamp(w.start.as_millis().saturating_add(t)));
        let _ = write!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{y1}\" x2=\"{x:.1}\" y2=\"{height}\"/>\
             <text x=\"{x:.1}\" y=\"14\" text-anchor=\"middle\">+{label}</text>",
            y1 = AXIS_HEIGHT - 8.0,
            label = esc(&duration_text(t)),
        );
        t = t.saturating_add(step);
    }
    if w.live {
        let x = scale.x(w.end);
        let _ = write!(
            out,
            "<line class=\"wf-now\" x1=\"{x:.1}\" y1=\"{y1}\" x2=\"{x:.1}\" y2=\"{height}\"/>\
             <text class=\"wf-now-label\" x=\"{x:.1}\" y=\"{y1}\" text-anchor=\"end\">now</text>",
            y1 = AXIS_HEIGHT - 2.0,
        );
    }
    out.push_str("</g>");
    for (i, row) in shown.iter().enumerate() {
        let y = AXIS_HEIGHT + ROW_HEIGHT * i as f64;
        row_svg(&mut out, row, y, &scale, w.end);
    }
    out.push_str("</svg></div>");
    out.push_str(
        "<p class=\"wf-detail\" id=\"wf-detail\" aria-live=\"polite\">Point at or tab to an operation for its details.</p>\
         <ul class=\"wf-legend\" aria-label=\"Legend\">\
         <li><svg width=\"26\" height=\"12\" aria-hidden=\"true\"><rect class=\"wf-seg wf-attempt\" x=\"1\" y=\"1\" width=\"24\" height=\"10\"/></svg> attempt that succeeded</li>\
         <li><svg width=\"26\" height=\"12\" aria-hidden=\"true\"><rect class=\"wf-seg wf-failed\" x=\"1\" y=\"1\" width=\"24\" height=\"10\"/></svg> ✕ failed (hatched)</li>\
         <li><svg width=\"26\" height=\"12\" aria-hidden=\"true\"><rect class=\"wf-seg wf-retry-wait\" x=\"1\" y=\"3\" width=\"24\" height=\"6\"/></svg> waiting to retry</li>\
         <li><svg width=\"26\" height=\"12\" aria-hidden=\"true\"><rect class=\"wf-seg wf-queued\" x=\"1\" y=\"4\" width=\"24\" height=\"4\"/></svg> waiting to start</li>\
         <li><svg width=\"26\" height=\"12\" aria-hidden=\"true\"><rect class=\"wf-seg wf-waiting wf-sleep\" x=\"1\" y=\"1\" width=\"24\" height=\"10\"/></svg> sleeping / hook live</li>\
         <li><svg width=\"14\" height=\"12\" aria-hidden=\"true\"><path class=\"wf-mark\" d=\"M7 1 L12 6 L7 11 L2 6 Z\"/></svg> payload received / due time</li>\
         <li>▸ still open</li></ul>\
         <p class=\"hint\">The log records a step's attempt when it ends; its start is inferred \
         (a retry starts when it comes due, a first attempt with the run's previous event), \
         so an attempt's bar may begin a little early.</p></section>",
    );
    out
}

fn row_svg(out: &mut String, row: &OpRow, y: f64, scale: &Scale, until: Timestamp) {
    let summary = row_summary(row, until);
    let mid = y + ROW_HEIGHT / 2.0;
    let _ = write!(
        out,
        "<g class=\"wf-op wf-k-{kind} wf-is-{outcome}\" id=\"op-{id}\" role=\"listitem\" tabindex=\"0\" \
         aria-label=\"{label}\" data-kind=\"{kind}\" data-start=\"{start}\" data-outcome=\"{outcome}\">\
         <title>{label}</title>\
         <rect class=\"wf-row-bg\" x=\"0\" y=\"{y:.1}\" width=\"{WIDTH}\" height=\"{ROW_HEIGHT}\"/>\
         <text class=\"wf-label\" x=\"8\" y=\"{ty:.1}\"><tspan class=\"wf-kind\">{kind}</tspan> {name}</text>",
        kind = row.kind.as_str(),
        outcome = row.outcome.as_str(),
        id = esc(&row.id),
        label = esc(&summary),
        start = row.start.as_millis(),
        ty = mid + 4.0,
        name = esc(&cut(&row.name, 30)),
    );
    let top = mid - BAR_HEIGHT / 2.0;
    if row.segments.is_empty() {
        // An instant operation (a request answered at once, a conflict).
        let x = scale.x(row.start);
        let class = if row.outcome == Outcome::Failed {
            "wf-seg wf-failed"
        } else {
            "wf-seg wf-instant"
        };
        let _ = write!(
            out,
            "<rect class=\"{class}\" x=\"{x:.1}\" y=\"{top:.1}\" width=\"{MIN_BAR}\" height=\"{BAR_HEIGHT}\"/>"
        );
    }
    for g in &row.segments {
        let x1 = scale.x(g.start);
        let x2 = scale.x(g.end.unwrap_or(until)).max(x1 + MIN_BAR);
        let (class, h) = match g.kind {
            SegmentKind::Queued => ("wf-queued", 4.0),
            SegmentKind::RetryWait(_) => ("wf-retry-wait", 6.0),
            SegmentKind::Attempt(_) if g.failed => ("wf-failed", BAR_HEIGHT),
            SegmentKind::Attempt(_) => ("wf-attempt", BAR_HEIGHT),
            SegmentKind::Waiting if row.kind == OpKind::Sleep => {
                ("wf-waiting wf-sleep", BAR_HEIGHT)
            }
            SegmentKind::Waiting => ("wf-waiting", BAR_HEIGHT - 4.0),
        };
        let open = if g.end.is_none() { " wf-open" } else { "" };
        let _ = write!(
            out,
            "<rect class=\"wf-seg {class}{open}\" x=\"{x1:.1}\" y=\"{sy:.1}\" width=\"{w:.1}\" height=\"{h}\" \
             data-segment=\"{seg}\"><title>{t}</title></rect>",
            sy = mid - h / 2.0,
            w = x2 - x1,
            seg = match g.kind {
                SegmentKind::Queued => "queued".to_string(),
                SegmentKind::Attempt(n) => format!("attempt-{n}"),
                SegmentKind::RetryWait(n) => format!("retry-wait-{n}"),
                SegmentKind::Waiting => "waiting".to_string(),
            },
            t = esc(&segment_summary(row, g, until)),
        );
        if g.failed {
            let _ = write!(
                out,
                "<text class=\"wf-cross\" x=\"{x:.1}\" y=\"{ty:.1}\" aria-hidden=\"true\">✕</text>",
                x = x2 + 1.0,
                ty = top - 1.0,
            );
        }
    }
    for m in &row.marks {
        let x = scale.x(m.at);
        let _ = write!(
            out,
            "<path class=\"wf-mark\" d=\"M{x:.1} {a:.1} L{r:.1} {mid:.1} L{x:.1} {b:.1} L{l:.1} {mid:.1} Z\">\
             <title>{t}</title></path>",
            a = mid - 5.0,
            b = mid + 5.0,
            l = x - 4.0,
            r = x + 4.0,
            t = esc(&format!("{}: {}", row.name, m.label)),
        );
    }
    if row.end.is_none() {
        let x = scale.x(until);
        let _ = write!(
            out,
            "<text class=\"wf-open-mark\" x=\"{x:.1}\" y=\"{ty:.1}\" aria-hidden=\"true\">▸</text>",
            x = x + 2.0,
            ty = mid + 4.0,
        );
    }
    // The note column: duration and how it went, in words.
    let status = match row.outcome {
        Outcome::Open => "open",
        Outcome::Done => "",
        Outcome::Failed => "✕ failed",
    };
    let attempts = if row.kind == OpKind::Step && row.attempts > 1 {
        format!(" ×{}", row.attempts)
    } else {
        String::new()
    };
    let _ = write!(
        out,
        "<text class=\"wf-note\" x=\"{x:.1}\" y=\"{ty:.1}\">{d}{attempts} {status}</text></g>",
        x = WIDTH - NOTE_WIDTH + 4.0,
        ty = mid + 4.0,
        d = esc(&duration_text(row.duration_ms(until))),
    );
}

#[cfg(test)]
mod tests {
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

    fn log() -> Vec<Event> {
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

    #[test]
    fn the_svg_has_a_focusable_row_per_operation_and_marks_failures() {
        let w = build(
            &log(),
            &Scrubber::default(),
            RunStatus::Running,
            Timestamp(3_000),
        );
        let s = svg(&w);
        assert_eq!(s.matches("<g class=\"wf-op ").count(), 6);
        assert_eq!(s.matches("tabindex=\"0\"").count(), 6);
        assert!(s.contains("wf-failed"), "the failed attempt is hatched");
        assert!(s.contains("✕"), "and crossed");
        assert!(s.contains("attempt 1 failed after 90 ms; error: busy"));
        assert!(s.contains("wf-open"), "open segments are marked");
    }

    #[test]
    fn ticks_are_few() {
        assert_eq!(tick_step(1), 1);
        assert_eq!(tick_step(10_000), 2_000);
        assert!(86_400_000 / tick_step(86_400_000) <= 8);
    }
}
