//! Child workflows: a run started by another run, awaited durably.
//!
//! [`crate::Context::start_child`] records `child_created` in the parent's log
//! at the workflow's next pause; the store creates the child run in that same
//! write, under an id derived from the parent's id and the operation's place
//! in the program, so a crash between deciding to start a child and starting
//! it can never start two. The child runs like any run, on any engine that
//! shares the store and registers its workflow. When it ends, the store
//! appends `child_completed` or `child_failed` to the parent in the same write
//! as the child's own end and makes the parent due: an awaiting parent holds
//! no task, and the child's end is an event of the parent's log, delivered in
//! log order like a step result or a timer (so races replay the same way).
//!
//! An attached child (the default) is cancelled when its parent ends or is
//! cancelled; a [`ChildOptions::detached`] child outlives it.
//!
//! ```no_run
//! use workflow_core::{Context, WorkflowError, WorkflowRef};
//!
//! const SHIP: WorkflowRef<String, u64> = WorkflowRef::new("ship");
//!
//! async fn order(ctx: Context, items: Vec<String>) -> Result<u64, WorkflowError> {
//!     let mut children = Vec::new();
//!     for item in &items {
//!         children.push(ctx.start_child(SHIP, item)?);
//!     }
//!     let mut total = 0;
//!     for child in children {
//!         total += child.await?;
//!     }
//!     Ok(total)
//! }
//! ```

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use serde::de::DeserializeOwned;
use workflow_store::RunId;

use crate::error::WorkflowError;
use crate::replay::{lock, SharedState, SlotKind};

/// How a child run relates to its parent (see [`crate::Context::start_child_with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChildOptions {
    detached: bool,
}

impl ChildOptions {
    /// An attached child (the default): cancelled when the parent ends or
    /// is cancelled before it.
    pub fn attached() -> Self {
        ChildOptions { detached: false }
    }

    /// A detached child: it keeps running whatever happens to the parent.
    /// The parent may still await its end while it runs.
    pub fn detached() -> Self {
        ChildOptions { detached: true }
    }

    /// Whether the child is detached.
    pub fn is_detached(&self) -> bool {
        self.detached
    }
}

/// A child run whose output is `O`, from [`crate::Context::start_child`].
///
/// Awaiting it suspends the parent durably until the child ends, then yields
/// the child's output, or [`WorkflowError::ChildFailed`] if it failed or was
/// cancelled. Dropping it does not stop the child.
#[must_use = "a child runs whether or not it is awaited; await it for its output"]
pub struct Child<O> {
    pub(crate) state: SharedState,
    pub(crate) index: u64,
    pub(crate) run: RunId,
    pub(crate) workflow: String,
    pub(crate) output: PhantomData<fn() -> O>,
}

impl<O> Child<O> {
    /// The child run's id: the same on every replay of the parent.
    pub fn run_id(&self) -> RunId {
        self.run
    }

    /// The child's workflow.
    pub fn workflow(&self) -> &str {
        &self.workflow
    }
}

impl<O> std::fmt::Debug for Child<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Child")
            .field("run", &self.run)
            .field("workflow", &self.workflow)
            .finish()
    }
}

impl<O: DeserializeOwned> Future for Child<O> {
    type Output = Result<O, WorkflowError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut st = lock(&self.state);
        let Some(slot) = st.ops.get_mut(&self.index) else {
            return Poll::Pending;
        };
        if let SlotKind::Child(c) = &slot.kind {
            match &c.outcome {
                Some(Ok(output)) => {
                    return Poll::Ready(output.decode().map_err(|e| WorkflowError::Decode {
                        what: format!("output of child run {}", self.run),
                        message: e.to_string(),
                        source: Some(e),
                    }))
                }
                Some(Err(error)) => {
                    return Poll::Ready(Err(WorkflowError::ChildFailed {
                        run: self.run,
                        workflow: self.workflow.clone(),
                        message: error.message.clone(),
                    }))
                }
                None => {}
            }
        }
        slot.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl<O> Drop for Child<O> {
    fn drop(&mut self) {
        lock(&self.state).release_op(self.index);
    }
}

/// The id of the child started by operation `index` of run `parent`: the
/// parent's time part (children sort next to their parent) and 80 bits mixed
/// from the parent's id and the index. Fixed forever: replays and other
/// engines must derive the same id.
pub(crate) fn child_run_id(parent: RunId, index: u64) -> RunId {
    fn mix(mut z: u64) -> u64 {
        // splitmix64's finaliser.
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let p = parent.as_u128();
    let (hi, lo) = ((p >> 64) as u64, p as u64);
    let a = mix(hi ^ mix(lo ^ mix(index)));
    let b = mix(a ^ lo ^ 0x9e37_79b9_7f4a_7c15);
    let time = p >> 80;
    let random = ((u128::from(a) << 64) | u128::from(b)) & ((1u128 << 80) - 1);
    RunId::from_u128((time << 80) | random)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_ids_are_stable_and_distinct() {
        let parent = RunId::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        assert_eq!(child_run_id(parent, 3), child_run_id(parent, 3));
        assert_ne!(child_run_id(parent, 3), child_run_id(parent, 4));
        assert_ne!(child_run_id(parent, 0), parent);
        // Same time part as the parent.
        assert_eq!(
            child_run_id(parent, 7).as_u128() >> 80,
            parent.as_u128() >> 80
        );
        // A fixed value: changing the derivation would orphan stored children.
        assert_eq!(
            child_run_id(parent, 0).to_string(),
            "014D2PF2DB9HCCX4G5571RN4YD"
        );
    }
}
