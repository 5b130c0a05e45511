//! The engine at a glance, read from the store with bounded work so that the
//! page can refresh every few seconds however many runs the store holds.
//!
//! Every figure comes from indexed queries ([`Store::list_runs`] by status,
//! newest first, with a limit; [`Store::list_hooks`] and
//! [`Store::read_events`] of a bounded number of runs; [`Store::next_due`]),
//! never from a scan of all runs. What is sampled is part of the result, and
//! the page says it:
//!
//! - runs by status: counted up to [`STATUS_CAP`] per status (`1000+` past it);
//! - runs started per minute: the runs created in the last hour, up to
//!   [`STARTED_CAP`] of them (the newest), by creation time;
//! - completed, failed and blocked per minute: the [`STATUS_CAP`] newest runs
//!   of each of those statuses, by the time of their last event (a run that
//!   ended in the hour but is older than those is not counted);
//! - step durations: every finished attempt in the logs of the [`STEP_RUNS`]
//!   newest runs (an attempt's start inferred as the waterfall infers it);
//! - live hooks: those of the [`HOOK_RUNS`] newest runs that have not ended.

use std::collections::BTreeMap;

use serde_json::{json, Value as Json};
use workflow_store::{HookRecord, RunQuery, RunRecord, RunStatus, Store, StoreError, Timestamp};

use super::convert::{relative, time_text, Scrubber};
use super::waterfall::{self, OpKind, SegmentKind, Waterfall};

/// Runs of each status are counted up to this many.
pub(crate) const STATUS_CAP: usize = 1000;
/// At most this many of the runs created in the last hour are read.
pub(crate) const STARTED_CAP: usize = 2000;
/// Step durations come from the logs of this many of the newest runs.
pub(crate) const STEP_RUNS: usize = 100;
/// Live hooks are counted on this many of the newest runs that have not ended.
pub(crate) const HOOK_RUNS: usize = 200;
/// The overview lists at most this many blocked runs and live hooks.
pub(crate) const LISTED: usize = 10;
/// The window of the per-minute counts, in minutes.
pub(crate) const MINUTES: usize = 60;
const MINUTE_MS: u64 = 60_000;
/// Runs listed per query while reading the last hour's runs.
const PAGE: usize = 500;

/// Runs started, completed, failed and blocked in one minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Minute {
    pub started: usize,
    pub completed: usize,
    pub failed: usize,
    pub blocked: usize,
}

/// The number of runs of one status, up to [`STATUS_CAP`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct StatusCount {
    pub status: RunStatus,
    pub count: usize,
    /// Whether there are more than `count`.
    pub capped: bool,
}

/// Attempt durations of one step name.
#[derive(Debug, Clone)]
pub(crate) struct StepStats {
    pub name: String,
    pub attempts: usize,
    pub failed: usize,
    pub p50_ms: u64,
    pub p95_ms: u64,
    pub max_ms: u64,
}

/// A blocked run with its error.
#[derive(Debug, Clone)]
pub(crate) struct BlockedRun {
    pub record: RunRecord,
    /// The error, tokens masked.
    pub error: String,
}

/// A live hook and its run.
#[derive(Debug, Clone)]
pub(crate) struct LiveHook {
    pub record: HookRecord,
    pub workflow: String,
    /// The token as shown (masked unless tokens are shown).
    pub token: String,
}

/// Everything the overview shows.
#[derive(Debug, Clone)]
pub(crate) struct Overview {
    pub now: Timestamp,
    /// The start of the first minute of the window.
    pub window_start: Timestamp,
    /// [`MINUTES`] minutes, oldest first; the last is the current minute.
    pub minutes: Vec<Minute>,
    /// When [`STARTED_CAP`] cut the hour short: the creation time of the
    /// oldest run counted as started.
    pub started_since: Option<Timestamp>,
    pub by_status: Vec<StatusCount>,
    pub steps: Vec<StepStats>,
    /// How many runs' logs the step durations come from.
    pub step_runs: usize,
    /// When the earliest queued work (a timer, a retry, a wake-up) is due.
    pub next_due: Option<Timestamp>,
    pub live_hooks: usize,
    /// How many runs' hooks were counted, and whether there were more.
    pub hook_runs: usize,
    pub hook_runs_capped: bool,
    /// The newest live hooks (up to [`LISTED`]).
    pub hooks: Vec<LiveHook>,
    /// The newest blocked runs (up to [`LISTED`]).
    pub blocked: Vec<BlockedRun>,
}

impl Overview {
    /// The count of `status`.
    pub(crate) fn count(&self, status: RunStatus) -> Option<StatusCount> {
        self.by_status.iter().copied().find(|c| c.status == status)
    }
}

/// Up to `limit` runs of `status`, newest first.
async fn newest(
    store: &dyn Store,
    status: RunStatus,
    limit: usize,
) -> Result<Vec<RunRecord>, StoreError> {
    store
        .list_runs(
            RunQuery::default()
                .status(status)
                .newest_first()
                .limit(limit),
        )
        .await
}

/// The runs created since `since`, newest first, at most `cap`, and at
/// least the newest page (for the step durations when the hour was quiet).
async fn created_since(
    store: &dyn Store,
    since: Timestamp,
    cap: usize,
) -> Result<Vec<RunRecord>, StoreError> {
    let mut out: Vec<RunRecord> = Vec::new();
    loop {
        let want = PAGE.min(cap.saturating_sub(out.len()));
        if want == 0 {
            return Ok(out);
        }
        let page = store
            .list_runs(
                RunQuery::default()
                    .newest_first()
                    .after(out.last().map(|r| r.id))
                    .limit(want),
            )
            .await?;
        let full = page.len() == want;
        let reached = page.last().is_some_and(|r| r.created_at < since);
        out.extend(page);
        if !full || reached {
            return Ok(out);
        }
    }
}

/// The overview of the engine's store at `store.now()`.
pub(crate) async fn overview(store: &dyn Store, show_tokens: bool) -> Result<Overview, StoreError> {
    let now = store.now();
    let current_minute = now.as_millis() / MINUTE_MS * MINUTE_MS;
    let window_start = Timestamp(current_minute.saturating_sub((MINUTES as u64 - 1) * MINUTE_MS));
    let bucket = |t: Timestamp| -> Option<usize> {
        if t < window_start || t.as_millis() >= current_minute + MINUTE_MS {
            return None;
        }
        usize::try_from((t.as_millis() - window_start.as_millis()) / MINUTE_MS).ok()
    };
    let mut minutes = vec![Minute::default(); MINUTES];

    // Runs by status, and the newest of each status.
    let mut by_status = Vec::with_capacity(RunStatus::ALL.len());
    let mut lists: BTreeMap<u8, Vec<RunRecord>> = BTreeMap::new();
    for status in RunStatus::ALL {
        let mut runs = newest(store, status, STATUS_CAP + 1).await?;
        let capped = runs.len() > STATUS_CAP;
        runs.truncate(STATUS_CAP);
        by_status.push(StatusCount {
            status,
            count: runs.len(),
            capped,
        });
        lists.insert(status.code(), runs);
    }
    let list = |s: RunStatus| lists.get(&s.code()).map(Vec::as_slice).unwrap_or(&[]);
    for (status, field) in [
        (RunStatus::Completed, 0usize),
        (RunStatus::Failed, 1),
        (RunStatus::Blocked, 2),
    ] {
        for r in list(status) {
            if let Some(m) = bucket(r.updated_at).and_then(|i| minutes.get_mut(i)) {
                match field {
                    0 => m.completed += 1,
                    1 => m.failed += 1,
                    _ => m.blocked += 1,
                }
            }
        }
    }

    // Runs started in the hour.
    let recent = created_since(store, window_start, STARTED_CAP).await?;
    for r in &recent {
        if let Some(m) = bucket(r.created_at).and_then(|i| minutes.get_mut(i)) {
            m.started += 1;
        }
    }
    let started_since = (recent.len() >= STARTED_CAP)
        .then(|| recent.last().map(|r| r.created_at))
        .flatten()
        .filter(|&t| t >= window_start);

    // Step durations from the newest runs' logs.
    let mut durations: BTreeMap<String, (Vec<u64>, usize)> = BTreeMap::new();
    let step_runs = recent.len().min(STEP_RUNS);
    for r in recent.iter().take(STEP_RUNS) {
        let log = store.read_log(r.id).await?;
        let w = waterfall::build(&log, &Scrubber::default(), r.status, now);
        attempt_durations(&w, &mut durations);
    }
    let steps = durations
        .into_iter()
        .map(|(name, (mut ms, failed))| {
            ms.sort_unstable();
            StepStats {
                name,
                attempts: ms.len(),
                failed,
                p50_ms: percentile(&ms, 50),
                p95_ms: percentile(&ms, 95),
                max_ms: ms.last().copied().unwrap_or(0),
            }
        })
        .collect();

    // Live hooks of the newest runs that have not ended.
    let mut active: Vec<&RunRecord> = [RunStatus::Pending, RunStatus::Running, RunStatus::Blocked]
        .into_iter()
        .flat_map(|s| list(s).iter())
        .collect();
    active.sort_unstable_by_key(|r| std::cmp::Reverse(r.id));
    let hook_runs_capped = active.len() > HOOK_RUNS
        || [RunStatus::Pending, RunStatus::Running, RunStatus::Blocked]
            .into_iter()
            .any(|s| by_status.iter().any(|c| c.status == s && c.capped));
    active.truncate(HOOK_RUNS);
    let mut live_hooks = 0;
    let mut hooks = Vec::new();
    for r in &active {
        for h in store.list_hooks(r.id).await? {
            if !h.live {
                continue;
            }
            live_hooks += 1;
            if hooks.len() < LISTED {
                let token = Scrubber::new([], show_tokens).token(h.token.as_str());
                hooks.push(LiveHook {
                    record: h,
                    workflow: r.workflow.clone(),
                    token,
                });
            }
        }
    }

    // The newest blocked runs, with their errors (tokens masked).
    let mut blocked = Vec::new();
    for r in list(RunStatus::Blocked).iter().take(LISTED) {
        let message = r.error.as_ref().map(|e| e.message.as_str()).unwrap_or("");
        let error = if show_tokens {
            message.to_string()
        } else {
            let run_hooks = store.list_hooks(r.id).await?;
            Scrubber::new(run_hooks.iter().map(|h| h.token.as_str()), false).text(message)
        };
        blocked.push(BlockedRun {
            record: r.clone(),
            error,
        });
    }

    Ok(Overview {
        now,
        window_start,
        minutes,
        started_since,
        by_status,
        steps,
        step_runs,
        next_due: store.next_due().await?,
        live_hooks,
        hook_runs: active.len(),
        hook_runs_capped,
        hooks,
        blocked,
    })
}

/// Adds the duration of every finished attempt of `w`'s steps to `out`, by
/// step name, counting the failed ones. Attempt starts are inferred as the
/// waterfall infers them.
fn attempt_durations(w: &Waterfall, out: &mut BTreeMap<String, (Vec<u64>, usize)>) {
    for row in w.rows.iter().filter(|r| r.kind == OpKind::Step) {
        for g in &row.segments {
            let (SegmentKind::Attempt(_), Some(end)) = (g.kind, g.end) else {
                continue;
            };
            let entry = out.entry(row.name.clone()).or_default();
            entry
                .0
                .push(end.as_millis().saturating_sub(g.start.as_millis()));
            if g.failed {
                entry.1 += 1;
            }
        }
    }
}

/// The `p`th percentile of sorted `ms` (nearest rank); 0 when empty.
fn percentile(ms: &[u64], p: usize) -> u64 {
    if ms.is_empty() {
        return 0;
    }
    let rank = (p * ms.len()).div_ceil(100).max(1);
    ms.get(rank - 1).copied().unwrap_or(0)
}

/// The overview as JSON.
pub(crate) fn overview_json(o: &Overview) -> Json {
    json!({
        "now": time_text(o.now),
        "window_start": time_text(o.window_start),
        "minutes": o.minutes.iter().enumerate().map(|(i, m)| json!({
            "start": time_text(Timestamp(o.window_start.as_millis() + i as u64 * MINUTE_MS)),
            "started": m.started,
            "completed": m.completed,
            "failed": m.failed,
            "blocked": m.blocked,
        })).collect::<Vec<_>>(),
        "started_since": o.started_since.map(time_text),
        "by_status": o.by_status.iter().map(|c| (c.status.as_str().to_string(), json!({
            "count": c.count,
            "more": c.capped,
        }))).collect::<serde_json::Map<_, _>>(),
        "steps": o.steps.iter().map(|s| json!({
            "name": s.name,
            "attempts": s.attempts,
            "failed": s.failed,
            "p50_ms": s.p50_ms,
            "p95_ms": s.p95_ms,
            "max_ms": s.max_ms,
        })).collect::<Vec<_>>(),
        "next_due": o.next_due.map(|t| json!({
            "time": time_text(t),
            "at": t.as_millis(),
            "relative": relative(t, o.now),
        })),
        "live_hooks": o.live_hooks,
        "sampled": {
            "status_cap": STATUS_CAP,
            "started_cap": STARTED_CAP,
            "step_runs": o.step_runs,
            "hook_runs": o.hook_runs,
            "hook_runs_capped": o.hook_runs_capped,
        },
        "hooks": o.hooks.iter().map(|h| json!({
            "run": h.record.run_id.to_string(),
            "workflow": h.workflow,
            "hook": h.record.hook.to_string(),
            "token": h.token,
            "webhook": h.record.webhook.is_some(),
            "created": time_text(h.record.created_at),
        })).collect::<Vec<_>>(),
        "blocked": o.blocked.iter().map(|b| json!({
            "run": b.record.id.to_string(),
            "workflow": b.record.workflow,
            "error": b.error,
            "since": time_text(b.record.updated_at),
        })).collect::<Vec<_>>(),
        "fingerprint": fingerprint(o),
    })
}

/// Changes whenever the figures change (not with the clock alone).
pub(crate) fn fingerprint(o: &Overview) -> String {
    let counts: Vec<String> = o
        .by_status
        .iter()
        .map(|c| format!("{}{}", c.count, if c.capped { "+" } else { "" }))
        .collect();
    let totals = o.minutes.iter().fold([0usize; 4], |mut t, m| {
        t[0] += m.started;
        t[1] += m.completed;
        t[2] += m.failed;
        t[3] += m.blocked;
        t
    });
    format!(
        "{}:{:?}:{}:{}:{:?}",
        counts.join(","),
        totals,
        o.live_hooks,
        o.window_start.as_millis(),
        o.next_due.map(|t| t.as_millis())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let ms: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&ms, 50), 50);
        assert_eq!(percentile(&ms, 95), 95);
        assert_eq!(percentile(&[7], 95), 7);
        assert_eq!(percentile(&[], 50), 0);
        assert_eq!(percentile(&[1, 2, 3], 50), 2);
    }
}
