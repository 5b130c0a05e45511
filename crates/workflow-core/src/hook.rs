//! Hooks: a workflow waits for payloads that the outside world sends by token.
//!
//! [`crate::Context::create_hook`] returns a [`Hook`] at once with its token. The
//! token is recorded in `hook_created` at the workflow's next pause and read
//! back from the log on replay. Default tokens are 192 bits from the operating
//! system's random source, never derived from the run id or the run's seed, so
//! nobody can guess them. Payloads arrive through
//! [`crate::Engine::resume_hook`] (or a webhook) and are delivered in the order
//! the store recorded them, each once, including those that arrived before the
//! workflow started waiting.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use base64::Engine as _;
use rand::RngCore;
use serde::de::DeserializeOwned;
use serde::Serialize;
use workflow_store::{CodecError, CorrelationId, HookToken, Payload, RunId};

use crate::replay::{lock, SharedState, SlotKind};

/// Bytes of OS randomness in a default token (192 bits).
const TOKEN_BYTES: usize = 24;

/// A new random token, as default hooks get: 192 bits from the OS random
/// source, base64url-encoded (32 characters).
pub fn random_token() -> HookToken {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    match HookToken::new(text) {
        Ok(token) => token,
        // base64url uses only A-Z a-z 0-9 - _, all valid token characters.
        Err(e) => unreachable!("base64url text is always a valid token: {e}"),
    }
}

/// How a hook is created: its token and the metadata kept with it.
///
/// ```
/// use workflow_core::HookOptions;
/// let opts = HookOptions::token("order:42").metadata(&"reviewer@example.com");
/// ```
#[derive(Debug, Clone, Default)]
pub struct HookOptions {
    pub(crate) token: Option<String>,
    pub(crate) metadata: Option<Payload>,
    pub(crate) metadata_error: Option<CodecError>,
}

impl HookOptions {
    /// A hook with a random token (the default).
    pub fn new() -> Self {
        Self::default()
    }

    /// A hook with this token, one a sender can rebuild (`order:42`). It must be
    /// 1 to 256 URL-safe characters (see [`HookToken`]); otherwise creating
    /// the hook fails with [`HookError::InvalidToken`].
    pub fn token(token: impl Into<String>) -> Self {
        HookOptions {
            token: Some(token.into()),
            ..Self::default()
        }
    }

    /// Data kept with the hook, readable with [`crate::Engine::get_hook`].
    /// Metadata that cannot be encoded makes the hook yield
    /// [`HookError::InvalidMetadata`].
    pub fn metadata<M: Serialize + ?Sized>(mut self, metadata: &M) -> Self {
        match Payload::encode(metadata) {
            Ok(p) => {
                self.metadata = Some(p);
                self.metadata_error = None;
            }
            Err(e) => self.metadata_error = Some(e),
        }
        self
    }
}

/// Why a hook yields no payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HookError {
    /// The token is live in another hook (of this or another run).
    #[error("hook token {token} is already in use by run {run}")]
    Conflict {
        /// The contested token.
        token: String,
        /// The run holding it.
        run: RunId,
    },
    /// A payload did not decode as the hook's type; it stays in the log and the
    /// next call yields the next payload. `message` names the field path and
    /// what was expected; `source` is the codec's error. Equality compares
    /// `source` by its path and message.
    #[error("hook payload does not decode as the expected type: {message}")]
    Decode {
        /// What did not decode and where, in plain words.
        message: String,
        /// The decoding error, when the payload was decoded by the hook.
        #[source]
        source: Option<CodecError>,
    },
    /// The custom token given in [`HookOptions::token`] is not a valid token.
    #[error("invalid hook token: {message}")]
    InvalidToken {
        /// Why.
        message: String,
    },
    /// The metadata given in [`HookOptions::metadata`] could not be encoded.
    #[error("invalid hook metadata: {message}")]
    InvalidMetadata {
        /// Why.
        message: String,
    },
}

/// A hook: a token and the stream of payloads sent to it.
///
/// `next().await` yields payloads in order; `Hook<T>` is also a
/// [`futures::Stream`]. Dropping a hook leaves its token live until the run ends;
/// [`Hook::dispose`] frees it now.
pub struct Hook<T> {
    pub(crate) state: SharedState,
    pub(crate) index: u64,
    pub(crate) id: CorrelationId,
    pub(crate) token: HookToken,
    pub(crate) _payload: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Hook<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hook")
            .field("id", &self.id)
            .field("token", &self.token)
            .finish()
    }
}

impl<T: DeserializeOwned> Hook<T> {
    /// The token that resumes this hook.
    pub fn token(&self) -> &str {
        self.token.as_str()
    }

    /// The hook's correlation id in the run (`hook:2`).
    pub fn id(&self) -> &CorrelationId {
        &self.id
    }

    /// Waits for the next payload.
    // Named like `StreamExt::next` on purpose: the same meaning, without the Option.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> HookNext<'_, T> {
        HookNext { hook: self }
    }

    /// Disposes the hook: records `hook_disposed` and frees the token for reuse.
    /// Payloads already received and not taken are dropped with it.
    pub fn dispose(self) {
        lock(&self.state).request_dispose(self.index);
        // Drop marks the slot dropped.
    }

    fn poll_payload(&mut self, cx: &mut TaskContext<'_>) -> Poll<Option<Result<T, HookError>>> {
        let mut st = lock(&self.state);
        let Some(slot) = st.ops.get_mut(&self.index) else {
            return Poll::Pending;
        };
        let SlotKind::Hook(h) = &mut slot.kind else {
            return Poll::Pending;
        };
        if let Some(run) = h.conflict {
            return Poll::Ready(Some(Err(HookError::Conflict {
                token: self.token.to_string(),
                run,
            })));
        }
        if let Some(payload) = h.payloads.pop_front() {
            return Poll::Ready(Some(payload.decode::<T>().map_err(|e| HookError::Decode {
                message: e.to_string(),
                source: Some(e),
            })));
        }
        if h.disposed {
            return Poll::Ready(None);
        }
        slot.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl<T> Drop for Hook<T> {
    fn drop(&mut self) {
        lock(&self.state).release_op(self.index);
    }
}

impl<T: DeserializeOwned> futures::Stream for Hook<T> {
    type Item = Result<T, HookError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_payload(cx)
    }
}

/// The future of [`Hook::next`].
#[must_use = "futures do nothing unless awaited"]
pub struct HookNext<'a, T> {
    hook: &'a mut Hook<T>,
}

impl<T: DeserializeOwned> Future for HookNext<'_, T> {
    type Output = Result<T, HookError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match this.hook.poll_payload(cx) {
            Poll::Ready(Some(r)) => Poll::Ready(r),
            // A disposed hook is consumed by dispose(), so this cannot be
            // observed through `next`; stay pending rather than invent a value.
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }
}
