//! Resuming hooks from outside a workflow: by token from Rust
//! ([`Engine::resume_hook`], [`HookDefinition`]) or over HTTP
//! ([`Engine::resume_webhook`], framework-neutral on the `http` crate).

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::{debug, warn};
use workflow_store::{
    Change, EventData, HookRecord, HookToken, Payload, Resumed, RunId, StoreError, WebhookResponse,
};

use crate::context::Context;
use crate::engine::Engine;
use crate::feed::{wait_for_change, Feed};
use crate::hook::{Hook, HookError, HookOptions};
use crate::webhook::{http_response, WebhookRequest};

/// Why a payload was not delivered. Nothing was recorded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResumeError {
    /// The token is not a valid token (empty, too long, or not URL-safe).
    #[error(transparent)]
    InvalidToken(#[from] workflow_store::IdError),
    /// No live hook has this token: never created, disposed, or its run ended.
    #[error("no live hook has token {token}")]
    NotFound {
        /// The token.
        token: String,
    },
    /// The payload could not be encoded; the codec's error is also the `source()`.
    #[error("payload could not be encoded: {0}")]
    Encode(#[source] workflow_store::CodecError),
    /// A [`HookDefinition`]'s validation rejected the payload.
    #[error("payload rejected: {message}")]
    Rejected {
        /// The validator's reason.
        message: String,
    },
    /// [`Engine::wait_for_hook`]: no live hook had the token within the time given.
    #[error("no live hook had token {token} within {waited:?}")]
    TimedOut {
        /// The token.
        token: String,
        /// How long it was waited for.
        waited: Duration,
    },
    /// [`Engine::wait_for_live_hook`]: the run had no live hook within the
    /// time given.
    #[error("run {run} had no live hook within {waited:?}")]
    NoLiveHook {
        /// The run.
        run: RunId,
        /// How long it was waited for.
        waited: Duration,
    },
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for ResumeError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::HookNotFound { token } => ResumeError::NotFound {
                token: token.to_string(),
            },
            other => ResumeError::Store(other),
        }
    }
}

impl Engine {
    /// Delivers `payload` to the live hook with `token`: records
    /// `hook_received` and makes the run due, in one atomic write. Returns the
    /// run and hook ids; [`ResumeError::NotFound`] for an unknown or released token.
    pub async fn resume_hook<T: Serialize + ?Sized>(
        &self,
        token: &str,
        payload: &T,
    ) -> Result<Resumed, ResumeError> {
        let token = HookToken::new(token)?;
        let payload = Payload::encode(payload).map_err(ResumeError::Encode)?;
        let resumed = self.store().resume_hook(&token, payload).await?;
        debug!(run = %resumed.run_id, hook = %resumed.hook, "hook received");
        Ok(resumed)
    }

    /// The live hook with `token`: its run, id, metadata and webhook mode.
    pub async fn get_hook(&self, token: &str) -> Result<Option<HookRecord>, ResumeError> {
        let token = HookToken::new(token)?;
        Ok(self.store().get_hook(&token).await?)
    }

    /// Waits until a live hook holds `token` (a run has reached the point
    /// where it creates it) and returns it; [`ResumeError::TimedOut`] after
    /// `timeout`. For a sender that knows a custom token before the run gets
    /// there: no polling loop. It wakes on the store's change feed (a new hook
    /// is an append to its run), and checks again every
    /// [`EngineSettings::poll_interval`](crate::EngineSettings) for stores
    /// without one.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn demo(engine: workflow_core::Engine) -> Result<(), workflow_core::ResumeError> {
    /// engine.wait_for_hook("order:42", Duration::from_secs(5)).await?;
    /// engine.resume_hook("order:42", &true).await?;
    /// # Ok(()) }
    /// ```
    pub async fn wait_for_hook(
        &self,
        token: &str,
        timeout: Duration,
    ) -> Result<HookRecord, ResumeError> {
        let token = HookToken::new(token)?;
        let found = self
            .wait_for_a_hook(timeout, None, || async {
                self.store().get_hook(&token).await
            })
            .await?;
        found.ok_or_else(|| ResumeError::TimedOut {
            token: token.to_string(),
            waited: timeout,
        })
    }

    /// Looks for a hook with `probe` until it finds one or `timeout` has
    /// passed (`Ok(None)`), looking again whenever the store's change feed
    /// reports an append (to `run`, if given), and every poll interval for
    /// stores without a feed. Subscribed before the first look, so a hook
    /// created in between wakes it.
    async fn wait_for_a_hook<F, Fut>(
        &self,
        timeout: Duration,
        run: Option<RunId>,
        probe: F,
    ) -> Result<Option<HookRecord>, StoreError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Option<HookRecord>, StoreError>>,
    {
        let mut feed = self.store().subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        let poll = self.settings().poll_interval;
        loop {
            if let Some(hook) = probe().await? {
                return Ok(Some(hook));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            // A new hook is an append to its run.
            wait_for_change(
                &mut feed,
                (deadline - now).min(poll),
                |c| matches!(c, Change::Appended { run: r, .. } if run.is_none_or(|run| *r == run)),
            )
            .await;
        }
    }

    /// Waits until `run` has a live hook (it has reached a point where it
    /// waits for one) and returns the first one; [`ResumeError::NoLiveHook`]
    /// after `timeout`. For a caller that does not know the token in
    /// advance (a random one): the hook's record has it. Woken like
    /// [`Engine::wait_for_hook`], without a polling loop.
    pub async fn wait_for_live_hook(
        &self,
        run: &RunId,
        timeout: Duration,
    ) -> Result<HookRecord, ResumeError> {
        let found = self
            .wait_for_a_hook(timeout, Some(*run), || async {
                let hooks = self.store().list_hooks(*run).await?;
                Ok(hooks.into_iter().find(|h| h.live))
            })
            .await?;
        found.ok_or(ResumeError::NoLiveHook {
            run: *run,
            waited: timeout,
        })
    }

    /// Resumes the webhook with `token` with an HTTP request, and answers it.
    ///
    /// | case | answer |
    /// |---|---|
    /// | empty or invalid token | `400` |
    /// | no live webhook with this token | `404`, empty body |
    /// | default mode | `202 Accepted`, empty body, once recorded |
    /// | static mode | the stored response |
    /// | manual mode | the workflow's [`WebhookRequest::respond`]; `202` with a text body at once if the webhook is disposed or the run ends first; `504` after the timeout |
    /// | store failure | `503` |
    ///
    /// What a status says about the request: `400`, `404` and `413` (from the
    /// adapters) mean nothing was recorded; every other answer but `503` means
    /// it was recorded, once (`504` included: the workflow will still see it).
    /// `503` means the store failed and the write was not acknowledged: it may
    /// or may not have been recorded, and a retry may record it twice.
    ///
    /// The manual answer reaches the caller through the store's change feed (or
    /// by polling), so it works when another engine process drives the run.
    pub async fn resume_webhook(
        &self,
        token: &str,
        request: http::Request<Bytes>,
    ) -> http::Response<Bytes> {
        let token = match HookToken::new(token) {
            Ok(t) => t,
            Err(e) => return plain(http::StatusCode::BAD_REQUEST, e.to_string()),
        };
        let request_id = ulid::Ulid::new().to_string();
        let recorded = WebhookRequest::from_http(request_id.clone(), &request);
        let payload = match Payload::encode(&recorded) {
            Ok(p) => p,
            Err(e) => return plain(http::StatusCode::BAD_REQUEST, e.to_string()),
        };
        // Subscribed before recording, so a manual answer cannot slip past. Only
        // manual webhooks wait for one, but the mode is known only after the
        // (single, atomic) write, and a subscription costs no I/O.
        let feed = self.store().subscribe();
        let (resumed, mode) = match self.store().resume_webhook(&token, payload).await {
            Ok(r) => r,
            // Unknown, released, or a plain hook (which takes typed payloads, not requests).
            Err(StoreError::HookNotFound { .. }) => return empty(http::StatusCode::NOT_FOUND),
            Err(e) => return unavailable(e),
        };
        debug!(run = %resumed.run_id, hook = %resumed.hook, %request_id, "webhook received");
        let response = match mode {
            WebhookResponse::Static(rec) => http_response(&rec),
            WebhookResponse::Manual { timeout_ms } => {
                let timeout = Duration::from_millis(timeout_ms);
                self.wait_for_answer(&resumed, &request_id, timeout, feed)
                    .await
            }
            _ => empty(http::StatusCode::ACCEPTED),
        };
        debug!(run = %resumed.run_id, %request_id, status = response.status().as_u16(), "webhook answered");
        response
    }

    /// Waits for `hook_responded` with `request_id` in the run's log after the
    /// request. Answers at once when no answer can come any more (the
    /// webhook was disposed or the run ended first), `504` at the timeout.
    async fn wait_for_answer(
        &self,
        resumed: &Resumed,
        request_id: &str,
        timeout: Duration,
        mut feed: Feed,
    ) -> http::Response<Bytes> {
        let run = resumed.run_id;
        let mut from = resumed.seq + 1;
        let deadline = tokio::time::Instant::now() + timeout;
        let poll = self.settings().poll_interval;
        loop {
            match self
                .store()
                .read_events(run, from, workflow_store::READ_PAGE)
                .await
            {
                Ok(events) => {
                    for e in events {
                        from = e.seq + 1;
                        match e.data {
                            EventData::HookResponded {
                                request_id: id,
                                response,
                                ..
                            } if id == request_id => return http_response(&response),
                            EventData::HookDisposed { hook } if hook == resumed.hook => {
                                return no_answer("the workflow disposed the webhook");
                            }
                            d if d.kind().is_run_terminal() => {
                                return no_answer("the run ended");
                            }
                            _ => {}
                        }
                    }
                }
                Err(e) => warn!(error = %e, "reading the webhook's answer failed"),
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return empty(http::StatusCode::GATEWAY_TIMEOUT);
            }
            let wait = (deadline - now).min(poll);
            wait_for_change(
                &mut feed,
                wait,
                |c| matches!(c, Change::Appended { run: r, .. } if *r == run),
            )
            .await;
        }
    }
}

/// The answer to a manual webhook request that was recorded but will never
/// be answered by the workflow: `202 Accepted`, saying why.
fn no_answer(why: &str) -> http::Response<Bytes> {
    debug!(why, "manual webhook request recorded; no answer will come");
    plain(
        http::StatusCode::ACCEPTED,
        format!("recorded; no answer will come: {why} before answering"),
    )
}

fn empty(status: http::StatusCode) -> http::Response<Bytes> {
    let mut r = http::Response::new(Bytes::new());
    *r.status_mut() = status;
    r
}

fn plain(status: http::StatusCode, message: String) -> http::Response<Bytes> {
    let mut r = http::Response::new(Bytes::from(message));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn unavailable(e: StoreError) -> http::Response<Bytes> {
    warn!(error = %e, "webhook could not be served: store failed");
    empty(http::StatusCode::SERVICE_UNAVAILABLE)
}

type Validator<T> = Arc<dyn Fn(&T) -> Result<(), String> + Send + Sync>;

/// A hook type shared by the workflow that waits and the code that resumes:
/// one payload type on both sides, and validation before anything is recorded.
///
/// ```
/// use workflow_core::HookDefinition;
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Decision { approved: bool, reviewer: String }
///
/// let decisions = HookDefinition::<Decision>::new().validate(|d| {
///     if d.reviewer.is_empty() { Err("reviewer is required".into()) } else { Ok(()) }
/// });
/// // In the workflow: let mut hook = decisions.create(&ctx, HookOptions::token("order:42"));
/// // Outside:         decisions.resume(&engine, "order:42", &decision).await?;
/// ```
pub struct HookDefinition<T> {
    validate: Option<Validator<T>>,
    _payload: PhantomData<fn(T)>,
}

impl<T> Clone for HookDefinition<T> {
    fn clone(&self) -> Self {
        HookDefinition {
            validate: self.validate.clone(),
            _payload: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for HookDefinition<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookDefinition")
            .field("payload", &std::any::type_name::<T>())
            .field("validates", &self.validate.is_some())
            .finish()
    }
}

impl<T: Serialize + DeserializeOwned> Default for HookDefinition<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Serialize + DeserializeOwned> HookDefinition<T> {
    /// A definition without validation.
    pub fn new() -> Self {
        HookDefinition {
            validate: None,
            _payload: PhantomData,
        }
    }

    /// Adds a check run on every payload before it is recorded.
    pub fn validate(
        mut self,
        check: impl Fn(&T) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.validate = Some(Arc::new(check));
        self
    }

    /// Creates the hook in a workflow (see [`Context::create_hook`]).
    pub fn create(&self, ctx: &Context, options: HookOptions) -> Result<Hook<T>, HookError> {
        ctx.create_hook(options)
    }

    /// Validates `payload`, then resumes the hook with `token`.
    /// A rejected payload is [`ResumeError::Rejected`] and is not recorded.
    pub async fn resume(
        &self,
        engine: &Engine,
        token: &str,
        payload: &T,
    ) -> Result<Resumed, ResumeError> {
        if let Some(check) = &self.validate {
            check(payload).map_err(|message| ResumeError::Rejected { message })?;
        }
        engine.resume_hook(token, payload).await
    }
}
