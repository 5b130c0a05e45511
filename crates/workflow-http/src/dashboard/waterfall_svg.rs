//! The waterfall drawn as SVG: a time axis, one focusable row per
//! operation with its segments and marks, a note column with the duration
//! and outcome in words, a legend, and a detail line the dashboard's script
//! fills on hover and focus.

use std::fmt::Write as _;

use workflow_store::Timestamp;

use super::convert::duration_text;
use super::html::esc;
use super::waterfall::{OpKind, OpRow, Outcome, Segment, SegmentKind, Waterfall};

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
    use crate::dashboard::convert::Scrubber;
    use crate::dashboard::waterfall::{build, tests::log};
    use workflow_store::RunStatus;

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
