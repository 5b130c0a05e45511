//! The engine overview page: runs per minute as SVG, runs by status, step
//! durations, the next due timer, live hooks and blocked runs, each with the
//! `workflow` command that shows or acts on it, and what was sampled.

use std::fmt::Write as _;
use std::time::Duration;

use workflow_store::{RunStatus, Timestamp};

use super::convert::{duration_text, relative, time_text};
use super::html::{command, esc, layout, query_value, short, status_badge, time_cell, Site};
use super::overview::{
    fingerprint, Minute, Overview, HOOK_RUNS, MINUTES, STARTED_CAP, STATUS_CAP, STEP_RUNS,
};

/// How often the page refreshes itself, in milliseconds.
const REFRESH_MS: u64 = 5000;
/// A due time this far in the past means no engine is keeping up.
const OVERDUE_MS: u64 = 10_000;

const CHART_WIDTH: f64 = 1120.0;
const CHART_LABEL: f64 = 170.0;
const CHART_TOTAL: f64 = 120.0;
const SERIES_HEIGHT: f64 = 54.0;
const BAR_MAX: f64 = 40.0;

/// The count of a status as shown: `12` or `1000+`.
fn count_text(count: usize, more: bool) -> String {
    if more {
        format!("{count}+")
    } else {
        count.to_string()
    }
}

/// `HH:MM` (UTC) of a time.
fn clock(t: Timestamp) -> String {
    time_text(t).get(11..16).unwrap_or_default().to_string()
}

/// The per-minute chart: one row per series, one bar per minute.
fn minutes_svg(o: &Overview) -> String {
    type Pick = fn(&Minute) -> usize;
    let series: [(&str, &str, Pick); 4] = [
        ("started", "mn-started", |m| m.started),
        ("completed", "mn-completed", |m| m.completed),
        ("failed", "mn-failed", |m| m.failed),
        ("blocked", "mn-blocked", |m| m.blocked),
    ];
    let max = o
        .minutes
        .iter()
        .flat_map(|m| series.iter().map(move |(_, _, f)| f(m)))
        .max()
        .unwrap_or(0)
        .max(1);
    let slot = (CHART_WIDTH - CHART_LABEL - CHART_TOTAL) / MINUTES as f64;
    let height = SERIES_HEIGHT * series.len() as f64 + 22.0;
    let totals: Vec<usize> = series
        .iter()
        .map(|(_, _, f)| o.minutes.iter().map(f).sum())
        .collect();
    let summary = series
        .iter()
        .zip(&totals)
        .map(|((name, _, _), n)| format!("{n} {name}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut s = String::new();
    let _ = write!(
        s,
        "<div class=\"wf-scroll\"><svg class=\"minutes\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{CHART_WIDTH}\" \
         height=\"{height}\" viewBox=\"0 0 {CHART_WIDTH} {height}\" role=\"img\" \
         aria-label=\"Runs per minute over the last hour: {summary}\">\
         <defs><pattern id=\"mn-hatch\" width=\"5\" height=\"5\" patternUnits=\"userSpaceOnUse\" \
         patternTransform=\"rotate(45)\"><rect width=\"5\" height=\"5\" class=\"wf-hatch-bg\"/>\
         <line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"5\" class=\"wf-hatch-line\"/></pattern>\
         <pattern id=\"mn-dots\" width=\"4\" height=\"4\" patternUnits=\"userSpaceOnUse\">\
         <rect width=\"4\" height=\"4\" class=\"mn-dots-bg\"/><circle cx=\"2\" cy=\"2\" r=\"1\" class=\"mn-dots-dot\"/></pattern></defs>",
        summary = esc(&summary),
    );
    for (row, ((name, class, pick), total)) in series.iter().zip(&totals).enumerate() {
        let base = SERIES_HEIGHT * (row as f64 + 1.0);
        let _ = write!(
            s,
            "<g class=\"mn-series {class}\" data-series=\"{name}\">\
             <text class=\"mn-label\" x=\"8\" y=\"{ty:.1}\">{name}</text>\
             <line class=\"mn-base\" x1=\"{CHART_LABEL}\" y1=\"{base:.1}\" x2=\"{x2:.1}\" y2=\"{base:.1}\"/>",
            ty = base - 14.0,
            x2 = CHART_WIDTH - CHART_TOTAL,
        );
        for (i, m) in o.minutes.iter().enumerate() {
            let n = pick(m);
            if n == 0 {
                continue;
            }
            let h = (n as f64 / max as f64 * BAR_MAX).max(2.0);
            let start = Timestamp(o.window_start.as_millis() + i as u64 * 60_000);
            let _ = write!(
                s,
                "<rect class=\"mn-bar\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" data-minute=\"{i}\" \
                 data-count=\"{n}\"><title>{t} UTC: {n} {name}</title></rect>",
                x = CHART_LABEL + slot * i as f64 + 1.0,
                y = base - h,
                w = (slot - 2.0).max(1.0),
                t = clock(start),
            );
        }
        let _ = write!(
            s,
            "<text class=\"mn-total\" x=\"{x:.1}\" y=\"{ty:.1}\">{total} in the hour</text></g>",
            x = CHART_WIDTH - CHART_TOTAL + 8.0,
            ty = base - 14.0,
        );
    }
    // The time axis: every 15 minutes.
    let axis_y = SERIES_HEIGHT * series.len() as f64 + 16.0;
    s.push_str("<g class=\"wf-axis\" aria-hidden=\"true\">");
    for i in (0..=MINUTES).step_by(15) {
        let t = Timestamp(o.window_start.as_millis() + i as u64 * 60_000);
        let label = if i == MINUTES {
            "now".to_string()
        } else {
            format!("{} UTC", clock(t))
        };
        let _ = write!(
            s,
            "<text x=\"{x:.1}\" y=\"{axis_y:.1}\" text-anchor=\"middle\">{label}</text>",
            x = CHART_LABEL + slot * i as f64,
            label = esc(&label),
        );
    }
    let _ = write!(
        s,
        "</g></svg></div><p class=\"hint\">Every bar is drawn to one scale: the tallest is {max} runs in a minute.</p>"
    );
    s
}

/// The per-minute numbers as a table (minutes with any run only).
fn minutes_table(o: &Overview) -> String {
    let mut s = String::from(
        "<details class=\"minutes-table\"><summary>The numbers, minute by minute</summary>",
    );
    let rows: Vec<(usize, &Minute)> = o
        .minutes
        .iter()
        .enumerate()
        .filter(|(_, m)| m.started + m.completed + m.failed + m.blocked > 0)
        .collect();
    if rows.is_empty() {
        s.push_str("<p class=\"empty\">No runs started or ended in the last hour.</p>");
    } else {
        s.push_str(
            "<table><thead><tr><th>Minute (UTC)</th><th class=\"num\">Started</th><th class=\"num\">Completed</th>\
             <th class=\"num\">Failed</th><th class=\"num\">Blocked</th></tr></thead><tbody>",
        );
        for (i, m) in rows.into_iter().rev() {
            let t = Timestamp(o.window_start.as_millis() + i as u64 * 60_000);
            let _ = write!(
                s,
                "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                clock(t),
                m.started,
                m.completed,
                m.failed,
                m.blocked
            );
        }
        s.push_str("</tbody></table>");
    }
    s.push_str("</details>");
    s
}

/// The overview page; `took` is how long reading the store took.
pub(crate) fn overview_page(site: &Site<'_>, o: &Overview, took: Duration) -> String {
    let p = site.prefix;
    let mut c = String::new();
    let _ = write!(
        c,
        "<main id=\"content\" class=\"overview\" data-fingerprint=\"{fp}\" data-grow=\"{REFRESH_MS}\">\
         <h1>Engine overview <span class=\"live\" title=\"this page refreshes itself every {secs} s\">live</span></h1>\
         <p class=\"hint\">Read at {now}, in {took} ms, from the store's indexes.</p>",
        fp = esc(&fingerprint(o)),
        secs = REFRESH_MS / 1000,
        now = time_cell(o.now),
        took = took.as_millis(),
    );

    // Runs by status.
    c.push_str("<section id=\"by-status\"><h2>Runs by status now</h2><ul class=\"status-counts\">");
    for sc in &o.by_status {
        let _ = write!(
            c,
            "<li data-status=\"{s}\"><a href=\"{href}\">{badge}<span class=\"count\">{n}</span></a></li>",
            s = esc(sc.status.as_str()),
            href = esc(&format!("{}?status={}", site.home(), query_value(sc.status.as_str()))),
            badge = status_badge(sc.status),
            n = esc(&count_text(sc.count, sc.capped)),
        );
    }
    let _ = write!(
        c,
        "</ul><p class=\"hint\">Counted up to {STATUS_CAP} per status (“{STATUS_CAP}+” beyond). \
         List them: {cmd}</p></section>",
        cmd = command("workflow runs --status blocked"),
    );

    // Runs per minute.
    c.push_str("<section id=\"per-minute\"><h2>Runs per minute, last hour</h2>");
    c.push_str(&minutes_svg(o));
    let mut sampled = format!(
        "Started: runs created in the hour, by creation time (up to the {STARTED_CAP} newest). \
         Completed, failed, blocked: the {STATUS_CAP} newest runs of each status, by the time of their last event."
    );
    if let Some(since) = o.started_since {
        let _ = write!(
            sampled,
            " More than {STARTED_CAP} runs started in the hour: started counts cover {} UTC to now.",
            clock(since)
        );
    }
    let _ = write!(c, "<p class=\"hint\">{}</p>", esc(&sampled));
    c.push_str(&minutes_table(o));
    c.push_str("</section>");

    c.push_str("<div class=\"overview-panels\">");
    // Step durations.
    let _ = write!(
        c,
        "<section id=\"step-durations\"><h2>Step durations <span class=\"hint\">per attempt, from the {n} newest runs</span></h2>",
        n = o.step_runs.min(STEP_RUNS)
    );
    if o.steps.is_empty() {
        c.push_str("<p class=\"empty\">No step attempts in those runs.</p>");
    } else {
        c.push_str(
            "<table><thead><tr><th>Step</th><th class=\"num\">Attempts</th><th class=\"num\">Failed</th>\
             <th class=\"num\">p50</th><th class=\"num\">p95</th><th class=\"num\">Max</th></tr></thead><tbody>",
        );
        for s in &o.steps {
            let _ = write!(
                c,
                "<tr><td class=\"nowrap\">{name}</td><td class=\"num\">{n}</td><td class=\"num\">{f}</td>\
                 <td class=\"num\">{p50}</td><td class=\"num\">{p95}</td><td class=\"num\">{max}</td></tr>",
                name = esc(&s.name),
                n = s.attempts,
                f = if s.failed > 0 {
                    format!("✕ {}", s.failed)
                } else {
                    "0".to_string()
                },
                p50 = esc(&duration_text(s.p50_ms)),
                p95 = esc(&duration_text(s.p95_ms)),
                max = esc(&duration_text(s.max_ms)),
            );
        }
        c.push_str("</tbody></table>");
    }
    c.push_str("</section>");

    // Timers and hooks.
    c.push_str("<section id=\"timers-hooks\"><h2>Timers and hooks</h2><dl class=\"facts\">");
    c.push_str("<dt>Earliest pending timer</dt><dd id=\"next-due\">");
    match o.next_due {
        Some(t) => {
            let overdue = o.now.as_millis().saturating_sub(t.as_millis());
            let _ = write!(
                c,
                "{} <span class=\"hint\">({})</span>",
                time_cell(t),
                esc(&relative(t, o.now))
            );
            if overdue > OVERDUE_MS {
                let _ = write!(
                    c,
                    " <strong class=\"overdue\">⚠ overdue by {}: are workers running?</strong>",
                    esc(&duration_text(overdue))
                );
            }
        }
        None => c.push_str("none"),
    }
    let _ = write!(
        c,
        "</dd><dt>Live hooks</dt><dd id=\"live-hooks\">{n}{more} <span class=\"hint\">on the {runs} newest runs that have not ended</span></dd></dl>",
        n = o.live_hooks,
        more = if o.hook_runs_capped { "+" } else { "" },
        runs = o.hook_runs.min(HOOK_RUNS),
    );
    if !o.hooks.is_empty() {
        c.push_str(
            "<table><thead><tr><th>Token</th><th>Kind</th><th>Run</th><th>Created</th></tr></thead><tbody>",
        );
        for h in &o.hooks {
            let run = h.record.run_id.to_string();
            let _ = write!(
                c,
                "<tr><td><code class=\"token\">{tok}</code></td><td>{kind}</td>\
                 <td><a class=\"mono\" href=\"{href}\">{run_e}</a> <span class=\"hint\">{wf}</span></td>\
                 <td><time datetime=\"{t}\" title=\"{t}\">{ago}</time></td></tr>",
                tok = esc(&h.token),
                kind = if h.record.webhook.is_some() { "webhook" } else { "hook" },
                href = esc(&format!("{p}/runs/{run}#hooks")),
                run_e = esc(&run),
                wf = esc(&h.workflow),
                t = esc(&time_text(h.record.created_at)),
                ago = esc(&relative(h.record.created_at, o.now)),
            );
        }
        c.push_str("</tbody></table>");
    }
    let _ = write!(
        c,
        "<p class=\"hint\">All of them: {}</p>",
        command("workflow hooks")
    );
    c.push_str("</section>");

    // Blocked runs.
    let blocked = o.count(RunStatus::Blocked);
    let _ = write!(
        c,
        "<section id=\"blocked\"><h2>Blocked runs <span class=\"hint\">{}</span></h2>",
        blocked.map_or_else(String::new, |b| count_text(b.count, b.capped))
    );
    if o.blocked.is_empty() {
        c.push_str("<p class=\"empty\">None: every run matches the code deployed.</p>");
    } else {
        c.push_str("<ul class=\"blocked-runs\">");
        for b in &o.blocked {
            let run = b.record.id.to_string();
            let _ = write!(
                c,
                "<li data-run=\"{run_e}\"><a class=\"mono\" href=\"{href}\">{run_e}</a> <span class=\"hint\">{wf}, blocked {since}</span>\
                 <div class=\"err\">{err}</div>Retry with the current code: {cmd}</li>",
                run_e = esc(&run),
                href = esc(&format!("{p}/runs/{run}#run-error")),
                wf = esc(&b.record.workflow),
                since = esc(&relative(b.record.updated_at, o.now)),
                err = esc(&short(&b.error)),
                cmd = command(&format!("workflow unblock {run}")),
            );
        }
        c.push_str("</ul>");
        let _ = write!(
            c,
            "<p class=\"hint\">Check every run against the code first: {}</p>",
            command("workflow check-replay")
        );
    }
    c.push_str("</section></div></main>");
    layout(site, "Engine overview", &c)
}
