//! Small conversions the dashboard needs: recorded CBOR payloads as JSON,
//! timestamps as RFC 3339 text, masked tokens, and scrubbing tokens out of
//! values that are shown.

use serde_json::Value as Json;
use workflow_store::{Payload, Timestamp};

/// A recorded payload as JSON. CBOR byte strings become text when they are
/// UTF-8 (HTTP bodies and headers usually are), else arrays of numbers; an
/// undecodable payload becomes `{"undecodable": why, "bytes": length}`.
///
/// ```
/// let p = workflow_store::Payload::encode(&("hi", 2)).unwrap();
/// assert_eq!(workflow_http::dashboard::payload_json(&p), serde_json::json!(["hi", 2]));
/// ```
pub fn payload_json(p: &Payload) -> Json {
    match ciborium::from_reader::<ciborium::Value, _>(p.as_bytes()) {
        Ok(v) => cbor_json(v),
        Err(e) => serde_json::json!({ "undecodable": e.to_string(), "bytes": p.len() }),
    }
}

fn cbor_json(v: ciborium::Value) -> Json {
    use ciborium::Value as C;
    match v {
        C::Null => Json::Null,
        C::Bool(b) => Json::Bool(b),
        C::Integer(i) => {
            let i = i128::from(i);
            i64::try_from(i)
                .map(Json::from)
                .or_else(|_| u64::try_from(i).map(Json::from))
                .unwrap_or_else(|_| Json::String(i.to_string()))
        }
        C::Float(f) => serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number),
        C::Text(t) => Json::String(t),
        C::Bytes(b) => match String::from_utf8(b) {
            Ok(text) => Json::String(text),
            Err(e) => Json::Array(e.into_bytes().into_iter().map(Json::from).collect()),
        },
        C::Array(items) => Json::Array(items.into_iter().map(cbor_json).collect()),
        C::Map(entries) => Json::Object(
            entries
                .into_iter()
                .map(|(k, v)| {
                    let key = match k {
                        C::Text(t) => t,
                        other => cbor_json(other).to_string(),
                    };
                    (key, cbor_json(v))
                })
                .collect(),
        ),
        C::Tag(_, inner) => cbor_json(*inner),
        _ => Json::Null,
    }
}

/// A timestamp as RFC 3339 text, UTC with milliseconds:
/// `2024-05-01T12:00:00.250Z`.
///
/// ```
/// use workflow_store::Timestamp;
/// assert_eq!(workflow_http::dashboard::time_text(Timestamp(250)), "1970-01-01T00:00:00.250Z");
/// ```
pub fn time_text(t: Timestamp) -> String {
    let ms = t.as_millis();
    let secs = ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Year, month, day of the `days`th day after 1970-01-01 (proleptic Gregorian).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Howard Hinnant's algorithm, for non-negative day numbers.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// A duration in milliseconds, in words: `850 ms`, `1.25 s`, `42 s`,
/// `3 min 5 s`, `2 h 10 min`, `3 days 4 h`.
pub(crate) fn duration_text(ms: u64) -> String {
    if ms < 1_000 {
        format!("{ms} ms")
    } else if ms < 10_000 {
        format!("{:.2} s", ms as f64 / 1000.0)
    } else if ms < 60_000 {
        format!("{} s", ms / 1000)
    } else if ms < 3_600_000 {
        let s = ms / 1000;
        match s % 60 {
            0 => format!("{} min", s / 60),
            r => format!("{} min {r} s", s / 60),
        }
    } else if ms < 86_400_000 {
        let m = ms / 60_000;
        match m % 60 {
            0 => format!("{} h", m / 60),
            r => format!("{} h {r} min", m / 60),
        }
    } else {
        let h = ms / 3_600_000;
        match h % 24 {
            0 => format!("{} days", h / 24),
            r => format!("{} days {r} h", h / 24),
        }
    }
}

/// How long from `now` until `at`, or since, in words: `in 1.5 s`, `3 min ago`.
pub(crate) fn relative(at: Timestamp, now: Timestamp) -> String {
    let (ms, future) = if at >= now {
        (at.as_millis() - now.as_millis(), true)
    } else {
        (now.as_millis() - at.as_millis(), false)
    };
    let text = if ms < 10_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if ms < 120_000 {
        format!("{} s", ms / 1000)
    } else if ms < 7_200_000 {
        format!("{} min", ms / 60_000)
    } else if ms < 172_800_000 {
        format!("{} h", ms / 3_600_000)
    } else {
        format!("{} days", ms / 86_400_000)
    };
    if future {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

/// A token as shown when tokens are hidden: its first characters (at most 4,
/// at most a third of it) and `…`.
pub(crate) fn mask(token: &str) -> String {
    let keep = (token.chars().count() / 3).min(4);
    let mut out: String = token.chars().take(keep).collect();
    out.push('…');
    out
}

/// Tokens shorter than this are masked where they are named as tokens, but
/// not searched for inside other text (they would garble it, and are
/// guessable anyway).
const MIN_SCRUBBED_LEN: usize = 4;

/// Header names whose values are hidden in recorded requests and responses
/// when tokens are hidden.
const SECRET_HEADER_PARTS: [&str; 7] = [
    "authorization",
    "cookie",
    "token",
    "secret",
    "api-key",
    "apikey",
    "password",
];

/// Replaces every occurrence of a run's tokens (plain or percent-encoded) in
/// the values shown, when tokens are hidden. Inactive when tokens are shown.
#[derive(Debug, Default)]
pub(crate) struct Scrubber {
    /// (text to find, replacement), longest first.
    patterns: Vec<(String, String)>,
    active: bool,
}

impl Scrubber {
    /// A scrubber for `tokens`; with `show_tokens` it changes nothing.
    pub(crate) fn new<'a>(tokens: impl IntoIterator<Item = &'a str>, show_tokens: bool) -> Self {
        if show_tokens {
            return Scrubber::default();
        }
        let mut patterns = Vec::new();
        for token in tokens {
            if token.len() < MIN_SCRUBBED_LEN {
                continue;
            }
            let masked = mask(token);
            let encoded = workflow_core::webhook::encode_path_segment(token);
            let lower = lower_hex_escapes(&encoded);
            for find in [token.to_string(), encoded, lower] {
                if !patterns.iter().any(|(f, _)| *f == find) {
                    patterns.push((find, masked.clone()));
                }
            }
        }
        // Longest first, so that a token inside another one does not break it.
        patterns.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        Scrubber {
            patterns,
            active: true,
        }
    }

    /// Whether tokens are hidden.
    pub(crate) fn hides(&self) -> bool {
        self.active
    }

    /// A token named as such: masked when tokens are hidden.
    pub(crate) fn token(&self, token: &str) -> String {
        if self.active {
            mask(token)
        } else {
            token.to_string()
        }
    }

    /// `text` with the tokens it contains masked.
    pub(crate) fn text(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (find, with) in &self.patterns {
            if out.contains(find.as_str()) {
                out = out.replace(find.as_str(), with);
            }
        }
        out
    }

    /// `value` with the tokens in its strings (and keys) masked.
    pub(crate) fn value(&self, value: Json) -> Json {
        if self.patterns.is_empty() {
            return value;
        }
        match value {
            Json::String(s) => Json::String(self.text(&s)),
            Json::Array(items) => Json::Array(items.into_iter().map(|v| self.value(v)).collect()),
            Json::Object(map) => Json::Object(
                map.into_iter()
                    .map(|(k, v)| (self.text(&k), self.value(v)))
                    .collect(),
            ),
            other => other,
        }
    }

    /// Hides the values of secret-looking headers in a recorded HTTP request
    /// or response (an object with `headers: [[name, value], ...]`).
    pub(crate) fn headers(&self, mut value: Json) -> Json {
        if !self.active {
            return value;
        }
        if let Some(Json::Array(headers)) = value.get_mut("headers") {
            for pair in headers.iter_mut() {
                if let Json::Array(nv) = pair {
                    let secret = nv.first().and_then(Json::as_str).is_some_and(|name| {
                        let name = name.to_ascii_lowercase();
                        SECRET_HEADER_PARTS.iter().any(|p| name.contains(p))
                    });
                    if secret {
                        if let Some(v) = nv.get_mut(1) {
                            *v = Json::String("[hidden]".to_string());
                        }
                    }
                }
            }
        }
        value
    }
}

/// `%3A` as `%3a`: senders may escape with either case.
fn lower_hex_escapes(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut escape = 0;
    for c in encoded.chars() {
        if c == '%' {
            escape = 2;
            out.push(c);
        } else if escape > 0 {
            escape -= 1;
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(time_text(Timestamp(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            time_text(Timestamp(951_782_400_123)),
            "2000-02-29T00:00:00.123Z"
        );
        assert_eq!(
            time_text(Timestamp(1_714_564_800_250)),
            "2024-05-01T12:00:00.250Z"
        );
        assert_eq!(
            time_text(Timestamp(4_102_444_799_999)),
            "2099-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn relative_times_read_naturally() {
        let now = Timestamp(1_000_000);
        assert_eq!(relative(Timestamp(1_001_500), now), "in 1.5 s");
        assert_eq!(relative(Timestamp(1_000_000 - 180_000), now), "3 min ago");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration_text(0), "0 ms");
        assert_eq!(duration_text(1_250), "1.25 s");
        assert_eq!(duration_text(42_000), "42 s");
        assert_eq!(duration_text(185_000), "3 min 5 s");
        assert_eq!(duration_text(7_800_000), "2 h 10 min");
        assert_eq!(duration_text(86_400_000 * 3), "3 days");
    }

    #[test]
    fn tokens_are_masked() {
        assert_eq!(mask("ab12cd34ef56gh78"), "ab12…");
        assert_eq!(mask("order:42"), "or…");
        assert_eq!(mask("ab"), "…");
    }

    #[test]
    fn scrubbing_masks_plain_and_encoded_tokens() {
        let s = Scrubber::new(["order:42", "abc"], false);
        let v = serde_json::json!({
            "uri": "/.well-known/workflow/v1/webhook/order%3A42?x=1",
            "lower": "/hooks/order%3a42",
            "plain": ["see order:42", "abc stays"],
        });
        let v = s.value(v);
        assert_eq!(v["uri"], "/.well-known/workflow/v1/webhook/or…?x=1");
        assert_eq!(v["lower"], "/hooks/or…");
        assert_eq!(v["plain"][0], "see or…");
        assert_eq!(v["plain"][1], "abc stays");
        assert_eq!(s.token("abc"), "a…");
        let shown = Scrubber::new(["order:42"], true);
        assert_eq!(shown.text("order:42"), "order:42");
        assert_eq!(shown.token("order:42"), "order:42");
    }

    #[test]
    fn secret_headers_are_hidden() {
        let s = Scrubber::new([], false);
        let v = serde_json::json!({ "headers": [["authorization", "Bearer x"], ["content-type", "text/plain"], ["X-Api-Key", "k"]] });
        let v = s.headers(v);
        assert_eq!(v["headers"][0][1], "[hidden]");
        assert_eq!(v["headers"][1][1], "text/plain");
        assert_eq!(v["headers"][2][1], "[hidden]");
    }

    #[test]
    fn cbor_payloads_become_json() {
        let p = Payload::encode(&("<b>", 7u8, vec![1.5f64], u64::MAX)).expect("encode");
        assert_eq!(
            payload_json(&p),
            serde_json::json!(["<b>", 7, [1.5], u64::MAX])
        );
        let bad = Payload::from(vec![0xff, 0x00]);
        assert!(payload_json(&bad)["undecodable"].is_string());
    }
}
