//! Waiting on the store's change feed: the one place that knows how a feed
//! ends (lagged: something may have been missed; closed or absent: poll).
//!
//! Every caller looks at the store again after a wake-up, so a wake-up too
//! many costs a read and a missed one is impossible: a lagging feed wakes, and
//! without a feed the caller's poll interval does.

use std::time::Duration;

use tokio::sync::broadcast::{error::RecvError, Receiver};
use workflow_store::Change;

/// A store's change feed, if it has one ([`workflow_store::Store::subscribe`]).
pub(crate) type Feed = Option<Receiver<Change>>;

/// Resolves when the feed reports a change `wanted` accepts, or lagged (so
/// one may have been missed); changes already queued behind it are skipped,
/// since the caller reads the store next anyway. Never resolves without a
/// feed, or once it has closed: put it beside a timer.
pub(crate) async fn next_change(feed: &mut Feed, wanted: impl Fn(&Change) -> bool) {
    let Some(rx) = feed.as_mut() else {
        return std::future::pending().await;
    };
    loop {
        match rx.recv().await {
            Ok(change) if wanted(&change) => break,
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => break,
            Err(RecvError::Closed) => return std::future::pending().await,
        }
    }
    while rx.try_recv().is_ok() {}
}

/// [`next_change`], or `wait` at most (the poll interval of a store without
/// a feed).
pub(crate) async fn wait_for_change(
    feed: &mut Feed,
    wait: Duration,
    wanted: impl Fn(&Change) -> bool,
) {
    let _ = tokio::time::timeout(wait, next_change(feed, wanted)).await;
}
