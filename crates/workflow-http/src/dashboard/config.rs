//! [`DashboardConfig`] and [`ActionsConfig`].

/// Where [`router`](super::router) serves the dashboard unless told otherwise.
///
/// ```
/// assert_eq!(workflow_http::dashboard::DEFAULT_PREFIX, "/workflow/dashboard");
/// ```
pub const DEFAULT_PREFIX: &str = "/workflow/dashboard";

/// How the dashboard is served: where, whether hook tokens are shown, and
/// whether write actions exist.
///
/// The defaults are the safe ones: served under [`DEFAULT_PREFIX`], tokens
/// masked (`ab12…`) and webhook paths hidden, no actions (read-only).
///
/// ```
/// use workflow_http::dashboard::{ActionsConfig, DashboardConfig};
///
/// let config = DashboardConfig::new()
///     .with_prefix("/ops/runs")
///     .with_show_tokens(true)
///     .with_actions(ActionsConfig::new("s3cret-operator-token"));
/// assert_eq!(config.prefix, "/ops/runs");
/// assert!(config.show_tokens);
/// assert!(config.actions.is_some());
///
/// let default = DashboardConfig::default();
/// assert_eq!(default.prefix, "/workflow/dashboard");
/// assert!(!default.show_tokens && default.actions.is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DashboardConfig {
    /// The path the dashboard is served under, normalized: it starts with
    /// `/` and has no trailing `/`; the empty string is the site's root.
    /// Set it with [`DashboardConfig::with_prefix`]. Default [`DEFAULT_PREFIX`].
    pub prefix: String,
    /// Whether hook tokens, webhook paths and secret-looking request headers
    /// are shown in full. When `false` (the default) a token is shown as its
    /// first characters and `…` (`ab12…`) wherever it appears (hook tables,
    /// event data, payloads, error messages), webhook paths are hidden, and
    /// header values such as `authorization` or `cookie` of recorded webhook
    /// requests are replaced by `[hidden]`. A token resumes a run, so only
    /// enable this where everyone who can reach the dashboard may do that.
    pub show_tokens: bool,
    /// Write actions (cancel, resume). `None` (the default): the dashboard is
    /// read-only and the action endpoints do not exist (`404`/`405`).
    pub actions: Option<ActionsConfig>,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            prefix: DEFAULT_PREFIX.to_string(),
            show_tokens: false,
            actions: None,
        }
    }
}

impl DashboardConfig {
    /// The defaults: under [`DEFAULT_PREFIX`], tokens masked, read-only.
    ///
    /// ```
    /// use workflow_http::dashboard::DashboardConfig;
    /// assert_eq!(DashboardConfig::new(), DashboardConfig::default());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves the dashboard under `prefix`.
    ///
    /// The prefix is normalized: a leading `/` is added, empty segments
    /// and a trailing `/` are dropped, and characters other than ASCII
    /// letters, digits, `-`, `.`, `_` and `~` are removed (so that the router
    /// can always be built). `""` or `"/"` serves it at the site's root.
    ///
    /// ```
    /// use workflow_http::dashboard::DashboardConfig;
    /// assert_eq!(DashboardConfig::new().with_prefix("ops/").prefix, "/ops");
    /// assert_eq!(DashboardConfig::new().with_prefix("//a//b/").prefix, "/a/b");
    /// assert_eq!(DashboardConfig::new().with_prefix("/").prefix, "");
    /// assert_eq!(DashboardConfig::new().with_prefix("/x/{id}").prefix, "/x/id");
    /// ```
    pub fn with_prefix(mut self, prefix: impl AsRef<str>) -> Self {
        self.prefix = normalize_prefix(prefix.as_ref());
        self
    }

    /// Shows hook tokens, webhook paths and secret-looking request headers in
    /// full (see [`DashboardConfig::show_tokens`]).
    ///
    /// ```
    /// use workflow_http::dashboard::DashboardConfig;
    /// assert!(DashboardConfig::new().with_show_tokens(true).show_tokens);
    /// ```
    pub fn with_show_tokens(mut self, show: bool) -> Self {
        self.show_tokens = show;
        self
    }

    /// Enables the write actions (cancel, resume), protected by a bearer token.
    ///
    /// ```
    /// use workflow_http::dashboard::{ActionsConfig, DashboardConfig};
    /// let config = DashboardConfig::new().with_actions(ActionsConfig::new("token"));
    /// assert_eq!(config.actions.map(|a| a.bearer_token), Some("token".to_string()));
    /// ```
    pub fn with_actions(mut self, actions: ActionsConfig) -> Self {
        self.actions = Some(actions);
        self
    }
}

/// The write actions of the dashboard and the bearer token that protects them.
///
/// With actions configured, `POST {prefix}/api/runs/{id}/cancel` cancels a run
/// and `POST {prefix}/api/runs/{id}/resume` makes a run that has not ended due
/// now (a blocked run is then replayed with the code of the engine that picks
/// it up). Each request needs `Authorization: Bearer <bearer_token>`; the run
/// page offers buttons that ask for the token. An empty token matches no
/// request, so the actions are then locked.
///
/// Its `Debug` output does not show the token.
///
/// ```
/// use workflow_http::dashboard::ActionsConfig;
/// let actions = ActionsConfig::new("s3cret");
/// assert_eq!(actions.bearer_token, "s3cret");
/// assert!(!format!("{actions:?}").contains("s3cret"));
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ActionsConfig {
    /// The token every action request must carry as `Authorization: Bearer <token>`.
    pub bearer_token: String,
}

impl ActionsConfig {
    /// Actions protected by `bearer_token`.
    ///
    /// ```
    /// let actions = workflow_http::dashboard::ActionsConfig::new("s3cret");
    /// # let _ = actions;
    /// ```
    pub fn new(bearer_token: impl Into<String>) -> Self {
        ActionsConfig {
            bearer_token: bearer_token.into(),
        }
    }

    /// Whether an `Authorization` header value carries this token.
    pub(crate) fn allows(&self, authorization: Option<&str>) -> bool {
        let Some(given) = authorization.and_then(|v| v.strip_prefix("Bearer ")) else {
            return false;
        };
        !self.bearer_token.is_empty()
            && super::auth::constant_time_eq(given.trim().as_bytes(), self.bearer_token.as_bytes())
    }
}

impl std::fmt::Debug for ActionsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActionsConfig")
            .field("bearer_token", &"[hidden]")
            .finish()
    }
}

fn normalize_prefix(prefix: &str) -> String {
    let mut out = String::new();
    for segment in prefix.split('/') {
        let clean: String = segment
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~'))
            .collect();
        if !clean.is_empty() {
            out.push('/');
            out.push_str(&clean);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_checked() {
        let a = ActionsConfig::new("abc");
        assert!(a.allows(Some("Bearer abc")));
        assert!(!a.allows(Some("Bearer abd")));
        assert!(!a.allows(Some("Bearer ab")));
        assert!(!a.allows(Some("Basic abc")));
        assert!(!a.allows(None));
        let empty = ActionsConfig::new("");
        assert!(!empty.allows(Some("Bearer ")));
        assert!(!empty.allows(Some("Bearer")));
    }

    #[test]
    fn prefixes_are_normalized() {
        assert_eq!(normalize_prefix(""), "");
        assert_eq!(
            normalize_prefix("/workflow/dashboard/"),
            "/workflow/dashboard"
        );
        assert_eq!(normalize_prefix("a/*rest"), "/a/rest");
        assert_eq!(normalize_prefix("/{}/"), "");
    }
}
