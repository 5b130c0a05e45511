//! Durable sleep: a timer recorded in the log and kept in the store's queue.
//!
//! A sleeping run holds no task: the driver records `wait_created`, releases the
//! run, and the store makes it due at `resume_at`, after a restart too. When a
//! worker leases it then, the driver records `wait_completed`, which resolves
//! the [`Sleep`] future.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use workflow_store::Timestamp;

use crate::error::WorkflowError;
use crate::replay::{lock, SharedState, SlotKind};

/// The future of a durable sleep, from [`crate::Context::sleep`].
#[must_use = "a sleep does nothing unless awaited"]
pub struct Sleep {
    pub(crate) state: SharedState,
    pub(crate) index: u64,
    pub(crate) resume_at: Timestamp,
}

impl Sleep {
    /// When the sleep ends.
    pub fn resume_at(&self) -> Timestamp {
        self.resume_at
    }
}

impl Future for Sleep {
    type Output = Result<(), WorkflowError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut st = lock(&self.state);
        let Some(slot) = st.ops.get_mut(&self.index) else {
            return Poll::Pending;
        };
        if let SlotKind::Wait(w) = &slot.kind {
            if w.done {
                return Poll::Ready(Ok(()));
            }
        }
        slot.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        lock(&self.state).release_op(self.index);
    }
}
