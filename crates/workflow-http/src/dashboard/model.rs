//! What the dashboard shows, read from the store: pages of runs (newest first,
//! from the store's indexes) and a run's detail (timeline, steps,
//! live hooks, pending timers), with tokens masked as configured. The JSON API
//! and the HTML pages both render these views.

use std::collections::HashMap;

use serde_json::{json, Value as Json};
use workflow_core::Engine;
use workflow_store::{
    Event, EventData, EventKind, RunId, RunQuery, RunRecord, RunStatus, Store, StoreError,
    Timestamp,
};

use super::convert::{relative, time_text, Scrubber};
use super::views::{event_data, HookView, RunView};
use super::waterfall::{self, SegmentKind, Waterfall};

/// Default page size of the runs list.
pub(crate) const DEFAULT_LIMIT: usize = 50;
/// Largest page size of the runs list.
pub(crate) const MAX_LIMIT: usize = 500;

/// Which runs a list page shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ListQuery {
    pub status: Option<RunStatus>,
    pub workflow: Option<String>,
    /// Runs newer than this id (the page just newer than a cursor).
    pub after: Option<RunId>,
    /// Runs older than this id (the page just older than a cursor).
    pub before: Option<RunId>,
    pub limit: usize,
}

/// One run as listed.
#[derive(Debug, Clone)]
pub(crate) struct RunSummary {
    pub record: RunRecord,
    /// The newest event: its seq, kind and time.
    pub last: Option<(u64, EventKind, Timestamp)>,
    /// The run's error message, tokens masked.
    pub error: Option<String>,
}

/// A page of runs, newest first, with the cursors of its neighbours.
#[derive(Debug, Clone)]
pub(crate) struct RunsPage {
    pub runs: Vec<RunSummary>,
    /// `after` cursor of the next newer page, if there are newer runs.
    pub newer: Option<RunId>,
    /// `before` cursor of the next older page, if there are older runs.
    pub older: Option<RunId>,
    pub query: ListQuery,
}

impl ListQuery {
    /// The store query for up to `n` runs after `cursor`, in `newest_first`
    /// order or oldest first.
    fn store_query(&self, cursor: Option<RunId>, newest_first: bool, n: usize) -> RunQuery {
        let mut q = RunQuery::default()
            .status(self.status)
            .after(cursor)
            .limit(n);
        q.workflow.clone_from(&self.workflow);
        q.newest_first = newest_first;
        q
    }
}

/// Up to `n` runs matching `q` with ids below `before` (all, without it),
/// newest first, from the store's indexes.
async fn newest_before(
    store: &dyn Store,
    q: &ListQuery,
    before: Option<RunId>,
    n: usize,
) -> Result<Vec<RunRecord>, StoreError> {
    store.list_runs(q.store_query(before, true, n)).await
}

/// Up to `n` runs matching `q` with ids above `after`, oldest first.
async fn oldest_after(
    store: &dyn Store,
    q: &ListQuery,
    after: Option<RunId>,
    n: usize,
) -> Result<Vec<RunRecord>, StoreError> {
    store.list_runs(q.store_query(after, false, n)).await
}

/// The page of runs `q` asks for, newest first.
pub(crate) async fn runs_page(
    engine: &Engine,
    q: ListQuery,
    show_tokens: bool,
) -> Result<RunsPage, StoreError> {
    let store = engine.store().as_ref();
    let limit = q.limit;
    let (records, newer, older) = if let Some(after) = q.after {
        let mut v = oldest_after(store, &q, Some(after), limit + 1).await?;
        let newer = if v.len() > limit {
            v.truncate(limit);
            v.last().map(|r| r.id)
        } else {
            None
        };
        v.reverse();
        let older = match v.last() {
            Some(oldest) => {
                let more = newest_before(store, &q, Some(oldest.id), 1).await?;
                (!more.is_empty()).then_some(oldest.id)
            }
            None => None,
        };
        (v, newer, older)
    } else {
        let mut v = newest_before(store, &q, q.before, limit + 1).await?;
        let older = if v.len() > limit {
            v.truncate(limit);
            v.last().map(|r| r.id)
        } else {
            None
        };
        let newer = match (q.before, v.first()) {
            (Some(_), Some(newest)) => {
                let more = oldest_after(store, &q, Some(newest.id), 1).await?;
                (!more.is_empty()).then_some(newest.id)
            }
            _ => None,
        };
        (v, newer, older)
    };
    let mut runs = Vec::with_capacity(records.len());
    for record in records {
        runs.push(summary(store, record, show_tokens).await?);
    }
    Ok(RunsPage {
        runs,
        newer,
        older,
        query: q,
    })
}

/// A run as listed: its record, its newest event and its error, tokens masked.
pub(crate) async fn summary(
    store: &dyn Store,
    record: RunRecord,
    show_tokens: bool,
) -> Result<RunSummary, StoreError> {
    let last = match record.next_seq.checked_sub(1) {
        Some(seq) => store
            .read_events(record.id, seq, 1)
            .await?
            .into_iter()
            .next()
            .map(|e| (e.seq, e.kind(), e.at)),
        None => None,
    };
    let error = match &record.error {
        Some(e) if !show_tokens => {
            let hooks = store.list_hooks(record.id).await?;
            let scrub = Scrubber::new(hooks.iter().map(|h| h.token.as_str()), false);
            Some(scrub.text(&e.message))
        }
        Some(e) => Some(e.message.clone()),
        None => None,
    };
    Ok(RunSummary {
        record,
        last,
        error,
    })
}

/// One event of a run's timeline, ready to show.
#[derive(Debug, Clone)]
pub(crate) struct EventView {
    pub seq: u64,
    pub at: Timestamp,
    pub kind: EventKind,
    pub correlation: Option<String>,
    /// The step's name, for step events.
    pub step: Option<String>,
    /// The attempt, for `step_started`.
    pub attempt: Option<u32>,
    /// The error, for failures and retries (tokens masked).
    pub error: Option<String>,
    /// The event's data with payloads decoded (tokens masked).
    pub data: Json,
}

/// A step of a run and how it went.
#[derive(Debug, Clone)]
pub(crate) struct StepView {
    pub correlation: String,
    pub name: String,
    pub attempts: u32,
    /// `created`, `running`, `retrying`, `completed` or `failed`.
    pub state: &'static str,
    pub error: Option<String>,
    pub retry_at: Option<Timestamp>,
}

/// A timer the run waits for: a durable sleep or a step's next attempt.
#[derive(Debug, Clone)]
pub(crate) struct TimerView {
    pub correlation: String,
    /// `sleep` or `retry`.
    pub kind: &'static str,
    /// For retries: the step's name and the attempt that comes next.
    pub step: Option<String>,
    pub attempt: Option<u32>,
    pub due: Timestamp,
}

/// How many of a stream's last chunks the run page shows.
pub(crate) const STREAM_TAIL: u64 = 20;

/// A stream of a run as the run page shows it: its length, whether it is
/// closed, and its last [`STREAM_TAIL`] chunks as NDJSON readers get them.
#[derive(Debug, Clone)]
pub(crate) struct StreamPanel {
    pub name: String,
    pub len: u64,
    pub closed: bool,
    pub tail: Vec<Json>,
}

/// Everything the run page shows.
#[derive(Debug, Clone)]
pub(crate) struct RunDetail {
    /// The run's streams.
    pub streams: Vec<StreamPanel>,
    pub summary: RunSummary,
    pub events: Vec<EventView>,
    pub steps: Vec<StepView>,
    pub hooks: Vec<HookView>,
    pub timers: Vec<TimerView>,
    /// The operations on a time axis.
    pub waterfall: Waterfall,
    /// The store's time when this was read.
    pub now: Timestamp,
    /// Whether tokens are masked.
    pub masked: bool,
    /// The run that started this one, for a child run.
    pub parent: Option<RunId>,
    /// The child runs this run started, in order: id, workflow, and
    /// `running`, `completed` or `failed` as far as this run's log says.
    pub children: Vec<(RunId, String, &'static str)>,
}

/// The parent of a run and the children it started, from its log.
fn family(log: &[Event]) -> (Option<RunId>, Vec<(RunId, String, &'static str)>) {
    let mut parent = None;
    let mut children: Vec<(RunId, String, &'static str)> = Vec::new();
    for e in log {
        match &e.data {
            EventData::RunCreated {
                parent: Some(p), ..
            } => parent = Some(p.run),
            EventData::ChildCreated { run, workflow, .. } => {
                children.push((*run, workflow.clone(), "running"))
            }
            EventData::ChildCompleted { run, .. } | EventData::ChildFailed { run, .. } => {
                let state = if matches!(e.data, EventData::ChildCompleted { .. }) {
                    "completed"
                } else {
                    "failed"
                };
                if let Some(c) = children.iter_mut().find(|c| c.0 == *run) {
                    c.2 = state;
                }
            }
            _ => {}
        }
    }
    (parent, children)
}

/// A run's detail, or `None` if there is no such run.
pub(crate) async fn run_detail(
    engine: &Engine,
    id: RunId,
    show_tokens: bool,
) -> Result<Option<RunDetail>, StoreError> {
    let store = engine.store().as_ref();
    let Some(record) = store.get_run(id).await? else {
        return Ok(None);
    };
    let log = store.read_log(id).await?;
    let hooks = store.list_hooks(id).await?;
    let now = store.now();
    let mut tokens: Vec<&str> = hooks.iter().map(|h| h.token.as_str()).collect();
    for e in &log {
        if let EventData::HookCreated { token, .. } | EventData::HookConflict { token, .. } =
            &e.data
        {
            tokens.push(token.as_str());
        }
    }
    let scrub = Scrubber::new(tokens, show_tokens);
    let mut streams = Vec::new();
    for info in store.list_streams(id).await? {
        let from = info.len.saturating_sub(STREAM_TAIL);
        let page = store
            .read_stream(id, &info.name, from, STREAM_TAIL as usize)
            .await?;
        let tail = page
            .map(|p| {
                p.chunks
                    .iter()
                    .map(|(i, payload)| crate::stream::chunk_line(*i, payload))
                    .collect()
            })
            .unwrap_or_default();
        streams.push(StreamPanel {
            name: info.name.to_string(),
            len: info.len,
            closed: info.closed,
            tail,
        });
    }
    let (events, steps, timers) = timeline(&log, &scrub, record.status);
    let waterfall = waterfall::build(&log, &scrub, record.status, now);
    let last = log.last().map(|e| (e.seq, e.kind(), e.at));
    let error = record.error.as_ref().map(|e| scrub.text(&e.message));
    let hooks = hooks
        .iter()
        .filter(|h| h.live)
        .map(|h| HookView::scrubbed(h, &scrub))
        .collect();
    let (parent, children) = family(&log);
    Ok(Some(RunDetail {
        parent,
        children,
        streams,
        summary: RunSummary {
            record,
            last,
            error,
        },
        events,
        steps,
        hooks,
        timers,
        waterfall,
        now,
        masked: scrub.hides(),
    }))
}

/// The timeline, the steps, and the pending timers derived from the log:
/// a `wait_created` without its `wait_completed`, and a `step_retrying` with
/// no later event of its step (a run that has ended has none).
fn timeline(
    log: &[Event],
    scrub: &Scrubber,
    status: RunStatus,
) -> (Vec<EventView>, Vec<StepView>, Vec<TimerView>) {
    let mut steps: Vec<StepView> = Vec::new();
    let mut step_index: HashMap<String, usize> = HashMap::new();
    let mut webhooks: Vec<String> = Vec::new();
    let mut waits: Vec<(String, Timestamp)> = Vec::new();
    let mut events = Vec::with_capacity(log.len());
    for e in log {
        let correlation = e.data.correlation_id().map(|c| c.to_string());
        let mut attempt = None;
        let mut error = None;
        match &e.data {
            EventData::RunFailed { error: err } | EventData::RunBlocked { error: err } => {
                error = Some(scrub.text(&err.message));
            }
            EventData::StepCreated { step, name, .. } => {
                step_index.insert(step.to_string(), steps.len());
                steps.push(StepView {
                    correlation: step.to_string(),
                    name: name.clone(),
                    attempts: 0,
                    state: "created",
                    error: None,
                    retry_at: None,
                });
            }
            EventData::StepStarted { step, attempt: a } => {
                attempt = Some(*a);
                if let Some(s) = step_mut(&mut steps, &step_index, step.as_str()) {
                    s.attempts = s.attempts.max(*a);
                    s.state = "running";
                    s.retry_at = None;
                }
            }
            EventData::StepCompleted { step, .. } => {
                if let Some(s) = step_mut(&mut steps, &step_index, step.as_str()) {
                    s.state = "completed";
                    s.retry_at = None;
                }
            }
            EventData::StepRetrying {
                step,
                error: err,
                retry_at,
            } => {
                let message = scrub.text(&err.message);
                error = Some(message.clone());
                if let Some(s) = step_mut(&mut steps, &step_index, step.as_str()) {
                    s.state = "retrying";
                    s.error = Some(message);
                    s.retry_at = Some(*retry_at);
                }
            }
            EventData::StepFailed { step, error: err } => {
                let message = scrub.text(&err.message);
                error = Some(message.clone());
                if let Some(s) = step_mut(&mut steps, &step_index, step.as_str()) {
                    s.state = "failed";
                    s.error = Some(message);
                    s.retry_at = None;
                }
            }
            EventData::HookCreated {
                hook,
                webhook: Some(_),
                ..
            } => webhooks.push(hook.to_string()),
            EventData::WaitCreated { wait, resume_at } => {
                waits.push((wait.to_string(), *resume_at));
            }
            EventData::WaitCompleted { wait } => {
                waits.retain(|(w, _)| w != wait.as_str());
            }
            _ => {}
        }
        let webhook = match &e.data {
            EventData::HookReceived { hook, .. } => webhooks.iter().any(|w| w == hook.as_str()),
            _ => false,
        };
        let data = event_data(e, scrub, webhook);
        let step = correlation
            .as_deref()
            .and_then(|c| step_index.get(c))
            .and_then(|&i| steps.get(i))
            .map(|s| s.name.clone());
        events.push(EventView {
            seq: e.seq,
            at: e.at,
            kind: e.kind(),
            correlation,
            step,
            attempt,
            error,
            data,
        });
    }
    let mut timers = Vec::new();
    if !status.is_terminal() {
        timers.extend(waits.into_iter().map(|(correlation, due)| TimerView {
            correlation,
            kind: "sleep",
            step: None,
            attempt: None,
            due,
        }));
        timers.extend(
            steps
                .iter()
                .filter(|s| s.state == "retrying")
                .filter_map(|s| {
                    s.retry_at.map(|due| TimerView {
                        correlation: s.correlation.clone(),
                        kind: "retry",
                        step: Some(s.name.clone()),
                        attempt: Some(s.attempts.saturating_add(1)),
                        due,
                    })
                }),
        );
        timers.sort_by_key(|t| t.due);
    }
    (events, steps, timers)
}

fn step_mut<'a>(
    steps: &'a mut [StepView],
    index: &HashMap<String, usize>,
    step: &str,
) -> Option<&'a mut StepView> {
    index.get(step).and_then(|&i| steps.get_mut(i))
}

// ---- JSON forms -------------------------------------------------------------

/// A string that changes whenever what a runs page shows changes.
pub(crate) fn page_fingerprint(page: &RunsPage) -> String {
    page.runs
        .iter()
        .map(summary_fingerprint)
        .collect::<Vec<_>>()
        .join(",")
}

/// A string that changes whenever a run changes.
pub(crate) fn summary_fingerprint(s: &RunSummary) -> String {
    format!(
        "{}:{}:{}",
        s.record.id,
        s.record.status.as_str(),
        s.record.next_seq
    )
}

/// A run as listed, as JSON.
pub(crate) fn summary_json(s: &RunSummary) -> Json {
    let r = &s.record;
    let mut v = to_object(&RunView::with_error(r, s.error.clone()));
    v.insert("error".into(), json!(s.error));
    v.insert("active".into(), json!(!r.status.is_terminal()));
    v.insert("created_at".into(), json!(r.created_at.as_millis()));
    v.insert("updated_at".into(), json!(r.updated_at.as_millis()));
    v.insert(
        "last_event".into(),
        json!(s.last.map(|(seq, kind, at)| json!({
            "seq": seq,
            "kind": kind.as_str(),
            "time": time_text(at),
            "at": at.as_millis(),
        }))),
    );
    Json::Object(v)
}

/// A view as a JSON object (empty if it does not serialize to one).
fn to_object<T: serde::Serialize>(view: &T) -> serde_json::Map<String, Json> {
    match serde_json::to_value(view) {
        Ok(Json::Object(map)) => map,
        _ => serde_json::Map::new(),
    }
}

/// A runs page as JSON.
pub(crate) fn page_json(page: &RunsPage) -> Json {
    json!({
        "runs": page.runs.iter().map(summary_json).collect::<Vec<_>>(),
        "newer": page.newer.map(|id| id.to_string()),
        "older": page.older.map(|id| id.to_string()),
        "limit": page.query.limit,
        "fingerprint": page_fingerprint(page),
    })
}

/// A run's detail as JSON; only the events with `seq >= from_seq`.
pub(crate) fn detail_json(d: &RunDetail, from_seq: u64) -> Json {
    let status = d.summary.record.status;
    let error = d.summary.error.as_ref().map(|message| {
        json!({
            "kind": if status == RunStatus::Blocked { "nondeterminism" } else { "failure" },
            "message": message,
        })
    });
    json!({
        "run": summary_json(&d.summary),
        "error": error,
        "now": time_text(d.now),
        "tokens_masked": d.masked,
        "events": d.events.iter().filter(|e| e.seq >= from_seq).map(|e| json!({
            "seq": e.seq,
            "time": time_text(e.at),
            "at": e.at.as_millis(),
            "kind": e.kind.as_str(),
            "correlation": e.correlation,
            "step": e.step,
            "attempt": e.attempt,
            "error": e.error,
            "data": e.data,
        })).collect::<Vec<_>>(),
        "steps": d.steps.iter().map(|s| json!({
            "correlation": s.correlation,
            "name": s.name,
            "attempts": s.attempts,
            "state": s.state,
            "error": s.error,
            "retry_at": s.retry_at.map(time_text),
        })).collect::<Vec<_>>(),
        "hooks": d.hooks.iter().map(|h| {
            let mut v = to_object(h);
            // Kept for callers of the earlier form; `hook` is the same.
            v.insert("correlation".into(), json!(h.hook));
            v.insert("webhook".into(), json!(h.webhook));
            v.insert("webhook_path".into(), json!(h.webhook_path));
            Json::Object(v)
        }).collect::<Vec<_>>(),
        "timers": d.timers.iter().map(|t| json!({
            "correlation": t.correlation,
            "kind": t.kind,
            "step": t.step,
            "attempt": t.attempt,
            "due": time_text(t.due),
            "due_at": t.due.as_millis(),
            "due_in": relative(t.due, d.now),
        })).collect::<Vec<_>>(),
        "operations": operations_json(&d.waterfall),
        "fingerprint": summary_fingerprint(&d.summary),
    })
}

/// The waterfall's rows as JSON: times in milliseconds since the epoch,
/// `end_ms` null while an operation is open.
fn operations_json(w: &Waterfall) -> Json {
    Json::Array(
        w.rows
            .iter()
            .map(|r| {
                json!({
                    "id": r.id,
                    "kind": r.kind.as_str(),
                    "name": r.name,
                    "outcome": r.outcome.as_str(),
                    "start_ms": r.start.as_millis(),
                    "end_ms": r.end.map(|t| t.as_millis()),
                    "duration_ms": r.duration_ms(w.end),
                    "attempts": r.attempts,
                    "error": r.error,
                    "note": r.note,
                    "segments": r.segments.iter().map(|g| {
                        let (kind, attempt) = match g.kind {
                            SegmentKind::Queued => ("queued", None),
                            SegmentKind::Attempt(n) => ("attempt", Some(n)),
                            SegmentKind::RetryWait(n) => ("retry_wait", Some(n)),
                            SegmentKind::Waiting => ("waiting", None),
                        };
                        json!({
                            "kind": kind,
                            "attempt": attempt,
                            "start_ms": g.start.as_millis(),
                            "end_ms": g.end.map(|t| t.as_millis()),
                            "failed": g.failed,
                            "error": g.error,
                        })
                    }).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}
