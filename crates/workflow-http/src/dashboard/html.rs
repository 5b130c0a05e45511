//! The HTML pages, rendered on the server. Every piece of text that comes
//! from the store (names, payloads, errors) goes through [`esc`].

use std::fmt::Write as _;

use workflow_store::{EventKind, RunStatus};

use super::convert::{relative, time_text};
use super::model::{
    page_fingerprint, summary_fingerprint, EventView, RunDetail, RunSummary, RunsPage,
};
use super::waterfall_svg;

/// Payloads longer than this (pretty-printed) are cut in the HTML; the JSON
/// API has them whole.
const MAX_PAYLOAD_CHARS: usize = 16 * 1024;
/// The run page shows at most this many events (the newest); the JSON API has all.
const MAX_EVENTS_SHOWN: usize = 2000;
/// How often a live run's page with open operations refreshes, in milliseconds.
const GROW_MS: u64 = 3000;

/// Escapes text for HTML element content and quoted attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query value.
pub(crate) fn query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// What every page needs to know about where it is served.
pub(crate) struct Site<'a> {
    pub prefix: &'a str,
    pub actions: bool,
}

impl Site<'_> {
    /// The runs list.
    pub(crate) fn home(&self) -> String {
        format!("{}/", self.prefix)
    }
}

/// A shell command the reader can copy: the text, and a button that copies
/// it (with the dashboard's script; without it the text is selectable).
pub(crate) fn command(text: &str) -> String {
    format!(
        "<span class=\"cmd\"><code>{t}</code><button type=\"button\" class=\"copy\" data-copy=\"{t}\" \
         aria-label=\"Copy the command {t}\">Copy</button></span>",
        t = esc(text)
    )
}

/// `text` quoted for a POSIX shell when it needs to be.
pub(crate) fn shell_word(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/@%+=,".contains(&b));
    if plain {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// The page around `content`: head, header with the navigation.
pub(crate) fn layout(site: &Site<'_>, title: &str, content: &str) -> String {
    let p = esc(site.prefix);
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"referrer\" content=\"no-referrer\">\n\
         <title>{title}</title>\n\
         <link rel=\"stylesheet\" href=\"{p}/assets/dashboard.css\">\n\
         <script src=\"{p}/assets/dashboard.js\" defer></script>\n</head>\n\
         <body data-prefix=\"{p}\">\n\
         <header class=\"top\"><a class=\"brand\" href=\"{home}\">workflow runs</a>\
         <nav class=\"pages\"><a href=\"{home}\">Runs</a><a href=\"{overview}\">Overview</a></nav>\
         <span class=\"mode\">{mode}</span></header>\n{content}\n</body>\n</html>\n",
        title = esc(title),
        home = esc(&site.home()),
        overview = esc(&format!("{}/overview", site.prefix)),
        mode = if site.actions {
            "actions enabled"
        } else {
            "read-only"
        },
    )
}

pub(crate) fn status_badge(status: RunStatus) -> String {
    format!(
        "<span class=\"badge status-{s}\">{s}</span>",
        s = esc(status.as_str())
    )
}

fn kind_class(kind: EventKind) -> &'static str {
    let name = kind.as_str();
    if matches!(
        kind,
        EventKind::RunFailed | EventKind::StepFailed | EventKind::RunBlocked
    ) {
        "kind-bad"
    } else if kind == EventKind::StepRetrying {
        "kind-warn"
    } else if name.starts_with("run_") {
        "kind-run"
    } else if name.starts_with("step_") {
        "kind-step"
    } else if name.starts_with("hook_") {
        "kind-hook"
    } else {
        "kind-wait"
    }
}

pub(crate) fn time_cell(t: workflow_store::Timestamp) -> String {
    time_text_cell(&time_text(t))
}

/// A time already as RFC 3339 text.
fn time_text_cell(text: &str) -> String {
    format!(
        "<time datetime=\"{t}\">{d}</time>",
        t = esc(text),
        d = esc(&text.replace('T', " "))
    )
}

fn pretty(value: &serde_json::Value) -> String {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|e| e.to_string());
    if text.chars().count() > MAX_PAYLOAD_CHARS {
        let cut: String = text.chars().take(MAX_PAYLOAD_CHARS).collect();
        format!(
            "{}\n… cut at {MAX_PAYLOAD_CHARS} characters of {}; the JSON API has it whole",
            esc(&cut),
            text.chars().count()
        )
    } else {
        esc(&text)
    }
}

/// The runs list.
pub(crate) fn runs_page(site: &Site<'_>, workflows: &[String], page: &RunsPage) -> String {
    let p = site.prefix;
    let q = &page.query;
    let mut c = String::new();
    let first_page = q.after.is_none() && q.before.is_none();
    let mut filters = String::new();
    if let Some(s) = q.status {
        let _ = write!(filters, "&status={}", query_value(s.as_str()));
    }
    if let Some(w) = &q.workflow {
        let _ = write!(filters, "&workflow={}", query_value(w));
    }
    let _ = write!(filters, "&limit={}", q.limit);
    let api = format!("{p}/api/runs?{}", filters.trim_start_matches('&'));
    if first_page {
        let _ = write!(
            c,
            "<main id=\"content\" data-poll=\"{}\" data-fingerprint=\"{}\">",
            esc(&api),
            esc(&page_fingerprint(page))
        );
    } else {
        c.push_str("<main id=\"content\">");
    }
    c.push_str("<h1>Runs</h1>");
    // Filters: a plain GET form.
    let _ = write!(
        c,
        "<form class=\"filters\" method=\"get\" action=\"{}\">",
        esc(&site.home())
    );
    c.push_str("<label>Status <select name=\"status\"><option value=\"\">any</option>");
    for s in RunStatus::ALL {
        let _ = write!(
            c,
            "<option value=\"{v}\"{sel}>{v}</option>",
            v = esc(s.as_str()),
            sel = if q.status == Some(s) { " selected" } else { "" }
        );
    }
    c.push_str("</select></label> <label>Workflow <select name=\"workflow\"><option value=\"\">any</option>");
    let mut names: Vec<&str> = workflows.iter().map(String::as_str).collect();
    if let Some(w) = q.workflow.as_deref() {
        if !names.contains(&w) {
            names.push(w);
        }
    }
    names.sort_unstable();
    for w in names {
        let _ = write!(
            c,
            "<option value=\"{v}\"{sel}>{v}</option>",
            v = esc(w),
            sel = if q.workflow.as_deref() == Some(w) {
                " selected"
            } else {
                ""
            }
        );
    }
    let _ = write!(
        c,
        "</select></label> <input type=\"hidden\" name=\"limit\" value=\"{}\"> \
         <button type=\"submit\">Filter</button>",
        q.limit
    );
    if first_page {
        c.push_str(" <span class=\"live\" title=\"this page refreshes itself\">live</span>");
    }
    c.push_str("</form>");

    if page.runs.is_empty() {
        c.push_str("<p class=\"empty\">No runs match.</p>");
    } else {
        c.push_str(
            "<table class=\"runs\"><thead><tr><th>Run</th><th>Workflow</th><th>Status</th>\
             <th>Created</th><th>Last event</th><th class=\"num\">Events</th><th>Error</th></tr></thead><tbody>",
        );
        for s in &page.runs {
            run_row(&mut c, p, s);
        }
        c.push_str("</tbody></table>");
    }
    c.push_str("<nav class=\"paging\">");
    if !first_page {
        let _ = write!(
            c,
            "<a href=\"{}\">« Newest</a> ",
            esc(&format!(
                "{}?{}",
                site.home(),
                filters.trim_start_matches('&')
            ))
        );
    }
    if let Some(newer) = page.newer {
        let _ = write!(
            c,
            "<a rel=\"prev\" href=\"{}\">‹ Newer</a> ",
            esc(&format!("{}?after={newer}{filters}", site.home()))
        );
    }
    if let Some(older) = page.older {
        let _ = write!(
            c,
            "<a rel=\"next\" href=\"{}\">Older ›</a>",
            esc(&format!("{}?before={older}{filters}", site.home()))
        );
    }
    c.push_str("</nav></main>");
    layout(site, "Workflow runs", &c)
}

fn run_row(c: &mut String, prefix: &str, s: &RunSummary) {
    let r = &s.record;
    let id = r.id.to_string();
    let last = match s.last {
        Some((_, kind, at)) => format!(
            "<span class=\"kind {cls}\">{k}</span> {t}",
            cls = kind_class(kind),
            k = esc(kind.as_str()),
            t = time_cell(at)
        ),
        None => "-".to_string(),
    };
    let _ = write!(
        c,
        "<tr data-run=\"{id_e}\"><td><a class=\"mono\" href=\"{href}\">{id_e}</a></td><td>{wf}</td><td>{st}</td>\
         <td>{created}</td><td>{last}</td><td class=\"num\">{n}</td><td class=\"err\">{err}</td></tr>",
        id_e = esc(&id),
        href = esc(&format!("{prefix}/runs/{id}")),
        wf = esc(&r.workflow),
        st = status_badge(r.status),
        created = time_cell(r.created_at),
        n = r.next_seq,
        err = match (&s.error, r.status) {
            (Some(e), RunStatus::Blocked) => format!(
                "<a class=\"err\" href=\"{}\">{}</a> <span class=\"hint\">retry: <code>workflow unblock {}</code></span>",
                esc(&format!("{prefix}/runs/{id}#run-error")),
                esc(&short(e)),
                esc(&id)
            ),
            (Some(e), _) => esc(&short(e)),
            (None, _) => String::new(),
        },
    );
}

/// The first line of a message, at most 120 characters.
pub(crate) fn short(message: &str) -> String {
    let line = message.lines().next().unwrap_or_default();
    if line.chars().count() > 120 {
        let cut: String = line.chars().take(119).collect();
        format!("{cut}…")
    } else {
        line.to_string()
    }
}

/// The run's streams: each one's length, state and last chunks. An open
/// stream's new chunks arrive with the events that commit them, so the live
/// page's refresh tails it.
fn stream_panels(c: &mut String, d: &RunDetail) {
    if d.streams.is_empty() {
        return;
    }
    c.push_str("<section id=\"streams\"><h2>Streams</h2>");
    for s in &d.streams {
        let state = if s.closed {
            "closed"
        } else {
            "open: more may come"
        };
        let shown = s.tail.len() as u64;
        let _ = write!(
            c,
            "<h3 class=\"mono\" data-stream=\"{name}\">{name}</h3><p class=\"hint\">{len} chunk(s), {state}{last}. \
             Follow it with <code>workflow tail {run} {name}</code>.</p>",
            name = esc(&s.name),
            len = s.len,
            state = esc(state),
            last = if shown < s.len {
                format!("; the last {shown} shown")
            } else {
                String::new()
            },
            run = esc(&d.summary.record.id.to_string()),
        );
        if !s.tail.is_empty() {
            c.push_str("<table class=\"stream-tail\"><thead><tr><th>Index</th><th>Chunk</th></tr></thead><tbody>");
            for line in &s.tail {
                let index = line.get("index").and_then(|i| i.as_u64()).unwrap_or(0);
                let chunk = match (line.get("chunk"), line.get("bytes"), line.get("error")) {
                    (Some(v), _, _) => v.to_string(),
                    (_, Some(b), _) => format!("bytes (base64) {}", b.as_str().unwrap_or("")),
                    (_, _, Some(e)) => format!("undecodable: {}", e.as_str().unwrap_or("")),
                    _ => String::new(),
                };
                let _ = write!(
                    c,
                    "<tr><td class=\"mono\">{index}</td><td><code>{}</code></td></tr>",
                    esc(&chunk)
                );
            }
            c.push_str("</tbody></table>");
        }
    }
    c.push_str("</section>");
}

/// A run's page.
pub(crate) fn run_page(site: &Site<'_>, d: &RunDetail) -> String {
    let p = site.prefix;
    let r = &d.summary.record;
    let id = r.id.to_string();
    let active = !r.status.is_terminal();
    let mut c = String::new();
    if active {
        // Open operations grow with the clock: refresh even when no event came.
        let grow = if d.waterfall.rows.iter().any(|row| row.end.is_none()) {
            format!(" data-grow=\"{GROW_MS}\"")
        } else {
            String::new()
        };
        let _ = write!(
            c,
            "<main id=\"content\" data-run=\"{id_e}\" data-poll=\"{poll}\" data-fingerprint=\"{fp}\"{grow}>",
            id_e = esc(&id),
            poll = esc(&format!("{p}/api/runs/{id}/status")),
            fp = esc(&summary_fingerprint(&d.summary)),
        );
    } else {
        let _ = write!(c, "<main id=\"content\" data-run=\"{}\">", esc(&id));
    }
    let _ = write!(
        c,
        "<p class=\"crumbs\"><a href=\"{home}\">Runs</a> › <span class=\"mono\">{id_e}</span></p>\
         <h1>Run <span class=\"mono\" id=\"run-id\">{id_e}</span> {badge}{live}</h1>",
        home = esc(&site.home()),
        id_e = esc(&id),
        badge = status_badge(r.status),
        live = if active {
            " <span class=\"live\" title=\"this page refreshes itself while the run is active\">live</span>"
        } else {
            ""
        }
    );
    let _ = write!(
        c,
        "<dl class=\"facts\"><dt>Workflow</dt><dd>{wf}</dd><dt>Created</dt><dd>{created}</dd>\
         <dt>Last event</dt><dd>{updated}</dd><dt>Events</dt><dd>{n}</dd>\
         <dt>API</dt><dd><a href=\"{api}\">this run as JSON</a></dd></dl>",
        wf = esc(&r.workflow),
        created = time_cell(r.created_at),
        updated = time_cell(r.updated_at),
        n = r.next_seq,
        api = esc(&format!("{p}/api/runs/{id}")),
    );
    // Parent and child runs, linked.
    if d.parent.is_some() || !d.children.is_empty() {
        c.push_str("<dl class=\"facts\" id=\"family\">");
        if let Some(parent) = d.parent {
            let _ = write!(
                c,
                "<dt>Parent run</dt><dd><a class=\"mono\" href=\"{href}\">{id}</a></dd>",
                href = esc(&format!("{p}/runs/{parent}")),
                id = esc(&parent.to_string()),
            );
        }
        if !d.children.is_empty() {
            let links: Vec<String> = d
                .children
                .iter()
                .map(|(child, workflow, state)| {
                    format!(
                        "<a class=\"mono\" href=\"{href}\">{id}</a> {wf} ({state})",
                        href = esc(&format!("{p}/runs/{child}")),
                        id = esc(&child.to_string()),
                        wf = esc(workflow),
                    )
                })
                .collect();
            let _ = write!(c, "<dt>Child runs</dt><dd>{}</dd>", links.join("<br>"));
        }
        c.push_str("</dl>");
    }
    // The same from a terminal.
    let mut commands = vec![command(&format!("workflow events {id}"))];
    if r.status == RunStatus::Blocked {
        commands.push(command(&format!("workflow unblock {id}")));
    }
    if active {
        commands.push(command(&format!("workflow cancel {id}")));
        if !d.masked {
            for h in &d.hooks {
                commands.push(command(&format!(
                    "workflow resume {} '<payload as JSON>'",
                    shell_word(&h.token)
                )));
            }
        }
    }
    let _ = write!(
        c,
        "<p class=\"commands\"><span class=\"hint\">In a terminal:</span> {}</p>",
        commands.join(" ")
    );
    if site.actions && active {
        c.push_str("<div class=\"actions\">");
        let _ = write!(
            c,
            "<button type=\"button\" class=\"danger\" data-action=\"cancel\" data-url=\"{}\">Cancel run</button> ",
            esc(&format!("{p}/api/runs/{id}/cancel"))
        );
        let _ = write!(
            c,
            "<button type=\"button\" data-action=\"resume\" data-url=\"{}\">{}</button>",
            esc(&format!("{p}/api/runs/{id}/resume")),
            if r.status == RunStatus::Blocked {
                "Retry (replay with the current code)"
            } else {
                "Wake now"
            }
        );
        c.push_str(" <span class=\"hint\">asks for the dashboard's bearer token</span></div>");
    }
    if let Some(message) = &d.summary.error {
        let title = if r.status == RunStatus::Blocked {
            "Blocked: the workflow's code no longer matches this run's history (nondeterminism)"
        } else {
            "Error"
        };
        let retry = if r.status == RunStatus::Blocked {
            format!(
                "<p>After deploying code that matches this run's history, retry it: {}</p>",
                command(&format!("workflow unblock {id}"))
            )
        } else {
            String::new()
        };
        let _ = write!(
            c,
            "<section class=\"error-box\" id=\"run-error\"><h2>{}</h2><pre>{}</pre>{retry}</section>",
            esc(title),
            esc(message)
        );
    }
    c.push_str(&waterfall_svg::svg(&d.waterfall));

    stream_panels(&mut c, d);

    // Live hooks, pending timers, steps.
    c.push_str("<div class=\"panels\">");
    c.push_str("<section id=\"hooks\"><h2>Live hooks</h2>");
    if d.hooks.is_empty() {
        c.push_str("<p class=\"empty\">None.</p>");
    } else {
        c.push_str(
            "<table><thead><tr><th>Hook</th><th>Token</th><th>Webhook</th><th>Created</th><th>Metadata</th></tr></thead><tbody>",
        );
        for h in &d.hooks {
            let webhook = match (&h.webhook, &h.webhook_path) {
                (Some(mode), Some(path)) => format!(
                    "<code>{}</code><br><span class=\"hint\">{}</span>",
                    esc(path),
                    esc(mode)
                ),
                (Some(mode), None) => format!(
                    "<span class=\"hint\">path hidden</span><br><span class=\"hint\">{}</span>",
                    esc(mode)
                ),
                (None, _) => "-".to_string(),
            };
            let _ = write!(
                c,
                "<tr><td class=\"mono\">{corr}</td><td><code class=\"token\">{tok}</code></td><td>{webhook}</td>\
                 <td>{created}</td><td><code>{meta}</code></td></tr>",
                corr = esc(&h.hook),
                tok = esc(&h.token),
                created = time_text_cell(&h.created),
                meta = esc(&h.metadata.to_string()),
            );
        }
        c.push_str("</tbody></table>");
        if d.masked {
            c.push_str("<p class=\"hint\">Tokens are masked and webhook paths hidden: this dashboard is not configured to show them.</p>");
        }
    }
    c.push_str("</section>");

    c.push_str("<section id=\"timers\"><h2>Pending timers</h2>");
    if d.timers.is_empty() {
        c.push_str("<p class=\"empty\">None.</p>");
    } else {
        c.push_str("<table><thead><tr><th>Timer</th><th>For</th><th>Due</th></tr></thead><tbody>");
        for t in &d.timers {
            let what = match (t.kind, &t.step, t.attempt) {
                ("retry", Some(step), Some(a)) => {
                    format!("retry of <b>{}</b>, attempt {a}", esc(step))
                }
                _ => "durable sleep".to_string(),
            };
            let _ = write!(
                c,
                "<tr><td class=\"mono\">{corr}</td><td>{what}</td><td>{due} <span class=\"hint\">({rel})</span></td></tr>",
                corr = esc(&t.correlation),
                due = time_cell(t.due),
                rel = esc(&relative(t.due, d.now)),
            );
        }
        c.push_str("</tbody></table>");
    }
    c.push_str("</section>");

    c.push_str("<section id=\"steps\"><h2>Steps</h2>");
    if d.steps.is_empty() {
        c.push_str("<p class=\"empty\">None.</p>");
    } else {
        c.push_str(
            "<table><thead><tr><th>Step</th><th>Name</th><th class=\"num\">Attempts</th><th>State</th><th>Last error</th></tr></thead><tbody>",
        );
        for s in &d.steps {
            let _ = write!(
                c,
                "<tr><td class=\"mono\">{corr}</td><td class=\"nowrap\">{name}</td><td class=\"num\">{n}</td>\
                 <td><span class=\"badge step-{st}\">{st}</span></td><td class=\"err\">{err}</td></tr>",
                corr = esc(&s.correlation),
                name = esc(&s.name),
                n = s.attempts,
                st = esc(s.state),
                err = esc(s.error.as_deref().unwrap_or("")),
            );
        }
        c.push_str("</tbody></table>");
    }
    c.push_str("</section></div>");

    // The timeline.
    let total = d.events.len();
    let shown = &d.events[total.saturating_sub(MAX_EVENTS_SHOWN)..];
    let _ = write!(
        c,
        "<section id=\"timeline\"><h2>Timeline <span class=\"hint\">{total} events</span></h2>"
    );
    if shown.len() < total {
        let _ = write!(
            c,
            "<p class=\"hint\">Showing the newest {} of {total} events; the JSON API has all of them.</p>",
            shown.len()
        );
    }
    c.push_str(
        "<table class=\"events\"><thead><tr><th class=\"num\">Seq</th><th>Time</th><th>Kind</th>\
         <th>Correlation</th><th>Details</th></tr></thead><tbody>",
    );
    for e in shown {
        let mut details = String::new();
        if let Some(step) = &e.step {
            let _ = write!(details, "<div>step <b>{}</b>", esc(step));
            if let Some(a) = e.attempt {
                let _ = write!(details, ", attempt {a}");
            }
            details.push_str("</div>");
        }
        if let Some(err) = &e.error {
            let _ = write!(details, "<div class=\"err\">{}</div>", esc(err));
        }
        let rest = shown_data(e);
        if let Some(rest) = rest {
            let compact = rest.to_string();
            if compact.chars().count() <= INLINE_DATA_CHARS {
                let _ = write!(details, "<code class=\"data\">{}</code>", esc(&compact));
            } else {
                let _ = write!(details, "<pre class=\"payload\">{}</pre>", pretty(&rest));
            }
        }
        let _ = write!(
            c,
            "<tr id=\"event-{seq}\" class=\"event\"><td class=\"num\">{seq}</td><td>{time}</td>\
             <td><span class=\"kind {cls}\">{kind}</span></td><td class=\"mono\">{corr}</td><td>{details}</td></tr>",
            seq = e.seq,
            time = time_cell(e.at),
            cls = kind_class(e.kind),
            kind = esc(e.kind.as_str()),
            corr = esc(e.correlation.as_deref().unwrap_or("")),
        );
    }
    c.push_str("</tbody></table></section></main>");
    layout(site, &format!("Run {id}"), &c)
}

/// Data up to this long (as compact JSON) is shown on one line.
const INLINE_DATA_CHARS: usize = 60;

/// An event's data without what its row already shows (the step's name, the
/// attempt, the error); `None` when nothing is left.
fn shown_data(e: &EventView) -> Option<serde_json::Value> {
    let mut data = e.data.clone();
    if let Some(map) = data.as_object_mut() {
        match e.kind {
            EventKind::StepCreated => {
                map.remove("name");
            }
            EventKind::StepStarted => {
                map.remove("attempt");
            }
            _ => {}
        }
        if e.error.is_some() {
            map.remove("error");
        }
        if e.kind == EventKind::StepRetrying {
            map.remove("retry_at_ms");
        }
        if e.kind == EventKind::WaitCreated {
            map.remove("resume_at_ms");
        }
        if map.is_empty() {
            return None;
        }
    }
    Some(data)
}

/// A page that says what went wrong.
pub(crate) fn error_page(site: &Site<'_>, title: &str, message: &str) -> String {
    let c = format!(
        "<main id=\"content\"><h1>{}</h1><p>{}</p><p><a href=\"{}\">All runs</a></p></main>",
        esc(title),
        esc(message),
        esc(&site.home())
    );
    layout(site, title, &c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(query_value("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn long_messages_are_shortened() {
        assert_eq!(short("one\ntwo"), "one");
        assert_eq!(short(&"x".repeat(200)).chars().count(), 120);
    }
}
