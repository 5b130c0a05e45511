//! [`AdminAuth`]: the gate in front of operator surfaces.

use std::sync::Arc;

use axum::extract::{OriginalUri, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;

/// The cookie that keeps a browser signed in after `?token=` (see
/// [`AdminAuth`]).
pub const SESSION_COOKIE: &str = "workflow_admin";

/// Compares a token given by a caller with the expected one in time that
/// depends only on the expected token's length (and on the given one's,
/// which its sender knows), not on where they differ.
pub(crate) fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    let given_len = u64::try_from(given.len()).unwrap_or(u64::MAX);
    let expected_len = u64::try_from(expected.len()).unwrap_or(u64::MAX);
    let mut same = given_len.ct_eq(&expected_len);
    for (i, e) in expected.iter().enumerate() {
        // Only the branch on the given length, which the caller knows, varies.
        let g = given.get(i).copied().unwrap_or(0);
        same &= g.ct_eq(e);
    }
    same.into()
}

/// [`AdminAuth::with_token`] was given an empty token, which no request
/// could present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the admin token is empty: give a non-empty token, or none")]
pub struct EmptyTokenError;

/// One gate in front of every operator surface (the dashboard, an admin API
/// beside it), applied with [`AdminAuth::protect`].
///
/// It does two checks, in this order:
///
/// 1. **Host** (with [`AdminAuth::loopback_hosts_only`]): the request must
///    name `localhost`, `127.0.0.1` or `[::1]` (any port) as its host, else
///    `421 Misdirected Request`. A page of another site that rebinds its DNS
///    name to 127.0.0.1 still sends its own name as `Host`, so it cannot read
///    or drive a server that listens on loopback.
/// 2. **Bearer token** (with [`AdminAuth::with_token`]): the request must
///    carry `Authorization: Bearer <token>`, else `401` with
///    `WWW-Authenticate: Bearer`. Tokens are compared with
///    a constant-time comparison.
///
/// A browser cannot add a header to a link, so for reads a browser signs in
/// once: `GET <any protected page>?token=<token>` with the right token
/// answers `303 See Other` to the same address without `token`, and sets the
/// cookie [`SESSION_COOKIE`] (`HttpOnly`, so scripts cannot read it;
/// `SameSite=Strict`, so other sites' pages do not send it; no expiry, so it
/// ends with the browser session). The cookie holds the token and is accepted
/// for `GET` and `HEAD` only: anything that changes state needs the header.
/// A wrong `?token=` answers `401` and sets nothing.
///
/// ```
/// use workflow_http::dashboard::{self, AdminAuth, DashboardConfig};
///
/// # fn demo(engine: workflow_core::Engine) -> Result<(), workflow_http::dashboard::EmptyTokenError> {
/// let auth = AdminAuth::with_token("s3cret")?.loopback_hosts_only();
/// let admin: axum::Router = dashboard::router(engine, DashboardConfig::new().with_show_tokens(true));
/// let app = auth.protect(admin);
/// # let _ = app;
/// # Ok(())
/// # }
/// ```
///
/// Its `Debug` output does not show the token.
#[derive(Clone)]
pub struct AdminAuth {
    inner: Arc<Inner>,
}

struct Inner {
    token: Option<String>,
    /// The cookie's value: the token, percent-encoded.
    cookie_value: Option<String>,
    loopback_hosts: bool,
}

impl AdminAuth {
    /// No token: every request that passes the host check (if enabled) is
    /// served. For a server on a loopback address used by its own machine.
    ///
    /// ```
    /// let auth = workflow_http::dashboard::AdminAuth::open();
    /// assert!(!auth.requires_token() && !auth.checks_host());
    /// ```
    pub fn open() -> Self {
        AdminAuth {
            inner: Arc::new(Inner {
                token: None,
                cookie_value: None,
                loopback_hosts: false,
            }),
        }
    }

    /// Every request needs `Authorization: Bearer <token>` (or, for reads,
    /// the session cookie). An empty token is refused.
    ///
    /// ```
    /// use workflow_http::dashboard::AdminAuth;
    /// assert!(AdminAuth::with_token("s3cret").is_ok_and(|a| a.requires_token()));
    /// assert!(AdminAuth::with_token("").is_err());
    /// ```
    pub fn with_token(token: impl Into<String>) -> Result<Self, EmptyTokenError> {
        let token = token.into();
        if token.is_empty() {
            return Err(EmptyTokenError);
        }
        let cookie_value = workflow_core::webhook::encode_path_segment(&token);
        Ok(AdminAuth {
            inner: Arc::new(Inner {
                token: Some(token),
                cookie_value: Some(cookie_value),
                loopback_hosts: false,
            }),
        })
    }

    /// Also refuses (`421`) requests whose host is not `localhost`,
    /// `127.0.0.1` or `[::1]`: use it when listening on a loopback address.
    ///
    /// ```
    /// let auth = workflow_http::dashboard::AdminAuth::open().loopback_hosts_only();
    /// assert!(auth.checks_host());
    /// ```
    pub fn loopback_hosts_only(self) -> Self {
        AdminAuth {
            inner: Arc::new(Inner {
                token: self.inner.token.clone(),
                cookie_value: self.inner.cookie_value.clone(),
                loopback_hosts: true,
            }),
        }
    }

    /// Whether requests need the token.
    pub fn requires_token(&self) -> bool {
        self.inner.token.is_some()
    }

    /// Whether the `Host` must be a loopback name.
    pub fn checks_host(&self) -> bool {
        self.inner.loopback_hosts
    }

    /// `router` with every one of its routes behind this gate. Routes merged
    /// into the result afterwards are not covered, so protect the operator
    /// routes and then merge them with the public ones (such as the webhook
    /// route).
    pub fn protect<S>(&self, router: Router<S>) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        router.layer(axum::middleware::from_fn_with_state(self.clone(), gate))
    }

    /// What to do with a request: `None` serves it, `Some` answers instead.
    fn check(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Option<Response> {
        let wants_html = wants_html(headers);
        if self.inner.loopback_hosts {
            let host = uri
                .authority()
                .map(|a| a.as_str())
                .or_else(|| headers.get(header::HOST).and_then(|v| v.to_str().ok()));
            if !host.is_some_and(is_loopback_host) {
                return Some(refusal(
                    StatusCode::MISDIRECTED_REQUEST,
                    "this server answers only to localhost, 127.0.0.1 or [::1] as the Host",
                    wants_html,
                ));
            }
        }
        let (Some(token), Some(cookie_value)) = (&self.inner.token, &self.inner.cookie_value)
        else {
            return None;
        };
        if let Some(given) = bearer(headers) {
            if constant_time_eq(given.as_bytes(), token.as_bytes()) {
                return None;
            }
            return Some(unauthorized("wrong admin token", wants_html));
        }
        let read = *method == Method::GET || *method == Method::HEAD;
        if read && cookies(headers).any(|c| constant_time_eq(c.as_bytes(), cookie_value.as_bytes()))
        {
            return None;
        }
        if *method == Method::GET {
            if let Some(given) = query_token(uri) {
                if constant_time_eq(given.as_bytes(), token.as_bytes()) {
                    return Some(sign_in(uri, cookie_value));
                }
                return Some(unauthorized("wrong admin token", wants_html));
            }
        }
        Some(unauthorized(
            "this needs the admin token: send `Authorization: Bearer <token>`",
            wants_html,
        ))
    }
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAuth")
            .field("token", &self.inner.token.as_ref().map(|_| "[hidden]"))
            .field("loopback_hosts", &self.inner.loopback_hosts)
            .finish()
    }
}

async fn gate(State(auth): State<AdminAuth>, request: Request, next: Next) -> Response {
    // Behind `nest`, the original URI is the one the client sent.
    let uri = request
        .extensions()
        .get::<OriginalUri>()
        .map(|o| o.0.clone())
        .unwrap_or_else(|| request.uri().clone());
    match auth.check(request.method(), &uri, request.headers()) {
        None => next.run(request).await,
        Some(refused) => refused,
    }
}

/// Whether `host` (a `Host` header or URI authority) names a loopback
/// address: `localhost`, `127.0.0.1` or `[::1]`, with or without a port.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let (name, port) = if host.starts_with('[') {
        match host.find(']') {
            Some(end) => (&host[..=end], &host[end + 1..]),
            None => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, _)) => (name, &host[name.len()..]),
            None => (host, ""),
        }
    };
    let port_ok = port.is_empty()
        || port.strip_prefix(':').is_some_and(|p| {
            !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
        });
    port_ok && (name.eq_ignore_ascii_case("localhost") || name == "127.0.0.1" || name == "[::1]")
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The values of every cookie named [`SESSION_COOKIE`].
fn cookies(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == SESSION_COOKIE).then_some(value)
        })
}

/// The decoded value of the `token` query parameter, if there is one.
fn query_token(uri: &Uri) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (super::decode_component(k) == "token").then(|| super::decode_component(v))
    })
}

/// `303` to `uri` without its `token` parameter, setting the session cookie.
fn sign_in(uri: &Uri, cookie_value: &str) -> Response {
    let rest: Vec<&str> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|pair| {
            let k = pair.split_once('=').map_or(*pair, |(k, _)| k);
            !pair.is_empty() && super::decode_component(k) != "token"
        })
        .collect();
    // One leading slash: never a protocol-relative `//host` address.
    let mut location = format!("/{}", uri.path().trim_start_matches('/'));
    if !rest.is_empty() {
        location.push('?');
        location.push_str(&rest.join("&"));
    }
    let cookie = format!("{SESSION_COOKIE}={cookie_value}; Path=/; HttpOnly; SameSite=Strict");
    let mut r = StatusCode::SEE_OTHER.into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        h.insert(header::SET_COOKIE, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// Whether the caller is a browser asking for a page.
fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

fn unauthorized(message: &str, html: bool) -> Response {
    let mut r = refusal(StatusCode::UNAUTHORIZED, message, html);
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// An error answer: a small page for a browser, else `{"error": message}`.
fn refusal(status: StatusCode, message: &str, html: bool) -> Response {
    let mut r = if html {
        let help = if status == StatusCode::UNAUTHORIZED {
            "<p>Scripts send <code>Authorization: Bearer &lt;token&gt;</code>. In a browser, open \
             this address once with <code>?token=&lt;token&gt;</code> added: you are then signed \
             in for this browser session and the token is removed from the address.</p>"
        } else {
            "<p>Open it as <code>http://127.0.0.1:&lt;port&gt;/</code> or \
             <code>http://localhost:&lt;port&gt;/</code>.</p>"
        };
        let page = format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <title>{code}</title></head><body><h1>{code}</h1><p>{message}.</p>{help}</body></html>\n",
            code = status,
            message = super::html::esc(message),
        );
        let mut r = (status, page).into_response();
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'"),
        );
        r
    } else {
        let body = serde_json::json!({ "error": message }).to_string();
        let mut r = (status, body).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    };
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_whole_tokens() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"abd", b"abc"));
        assert!(!constant_time_eq(b"xbc", b"abc"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(!constant_time_eq(b"abcd", b"abc"));
        assert!(!constant_time_eq(b"abc\0", b"abc"));
        assert!(!constant_time_eq(b"", b"abc"));
        assert!(!constant_time_eq(b"abc", b""));
        // A prefix padded with what a shorter input reads as (0) is not equal.
        assert!(!constant_time_eq(b"ab", b"ab\0"));
    }

    #[test]
    fn loopback_hosts_are_recognized() {
        for ok in [
            "localhost",
            "LOCALHOST:3000",
            "127.0.0.1",
            "127.0.0.1:3917",
            "[::1]",
            "[::1]:8080",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:3000",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "127.0.0.2",
            "0.0.0.0:3000",
            "localhost:",
            "localhost:abc",
            "localhost:3000:1",
            "[::1]x",
            "[::1",
            "[::2]:80",
            "",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(n.clone(), HeaderValue::from_str(v).expect("header value"));
        }
        h
    }

    #[test]
    fn the_gate_checks_host_then_token() {
        let uri: Uri = "/x".parse().expect("uri");
        let open = AdminAuth::open();
        assert!(open.check(&Method::POST, &uri, &HeaderMap::new()).is_none());
        let local = AdminAuth::open().loopback_hosts_only();
        let evil = headers(&[(header::HOST, "evil.example")]);
        let refused = local.check(&Method::GET, &uri, &evil).map(|r| r.status());
        assert_eq!(refused, Some(StatusCode::MISDIRECTED_REQUEST));
        assert!(local.check(&Method::GET, &uri, &HeaderMap::new()).is_some());
        let fine = headers(&[(header::HOST, "127.0.0.1:1")]);
        assert!(local.check(&Method::POST, &uri, &fine).is_none());

        let auth = AdminAuth::with_token("t0k:en").expect("token");
        let status = |m: &Method, u: &Uri, h: &HeaderMap| auth.check(m, u, h).map(|r| r.status());
        assert_eq!(
            status(&Method::GET, &uri, &HeaderMap::new()),
            Some(StatusCode::UNAUTHORIZED)
        );
        let good = headers(&[(header::AUTHORIZATION, "Bearer t0k:en")]);
        assert_eq!(status(&Method::POST, &uri, &good), None);
        let lower = headers(&[(header::AUTHORIZATION, "bearer t0k:en")]);
        assert_eq!(status(&Method::GET, &uri, &lower), None);
        let wrong = headers(&[(header::AUTHORIZATION, "Bearer t0k:eN")]);
        assert_eq!(
            status(&Method::GET, &uri, &wrong),
            Some(StatusCode::UNAUTHORIZED)
        );
        // The cookie holds the encoded token, and only reads accept it.
        let cookie = headers(&[(header::COOKIE, "a=b; workflow_admin=t0k%3Aen")]);
        assert_eq!(status(&Method::GET, &uri, &cookie), None);
        assert_eq!(status(&Method::HEAD, &uri, &cookie), None);
        assert_eq!(
            status(&Method::POST, &uri, &cookie),
            Some(StatusCode::UNAUTHORIZED)
        );
        // `?token=` signs in and drops the token from the address.
        let signin: Uri = "/d/runs/1?a=1&token=t0k%3Aen&b=2".parse().expect("uri");
        let r = auth
            .check(&Method::GET, &signin, &HeaderMap::new())
            .expect("an answer");
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(r.headers()[header::LOCATION], "/d/runs/1?a=1&b=2");
        assert_eq!(
            r.headers()[header::SET_COOKIE],
            "workflow_admin=t0k%3Aen; Path=/; HttpOnly; SameSite=Strict"
        );
        let wrong: Uri = "/d/?token=nope".parse().expect("uri");
        assert_eq!(
            status(&Method::GET, &wrong, &HeaderMap::new()),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            status(&Method::POST, &signin, &HeaderMap::new()),
            Some(StatusCode::UNAUTHORIZED)
        );
        let twice: Uri = "//evil.example/?token=t0k%3Aen".parse().expect("uri");
        let r = auth
            .check(&Method::GET, &twice, &HeaderMap::new())
            .expect("an answer");
        assert_eq!(r.headers()[header::LOCATION], "/evil.example/");
        assert!(!format!("{auth:?}").contains("t0k"));
    }
}
