//! Where a store's timestamps come from.
//!
//! Backends read time only through a [`Clock`], so tests (and the conformance
//! suite) can move time by hand and check due times without sleeping.

#[cfg(any(feature = "test-util", test))]
use std::sync::atomic::{AtomicU64, Ordering};

use crate::event::Timestamp;

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that moves only when told to, for tests (feature `test-util`).
///
/// ```
/// use std::time::Duration;
/// use workflow_store::{Clock, ManualClock, Timestamp};
/// let clock = ManualClock::new(Timestamp(1_000));
/// clock.advance(Duration::from_secs(1));
/// assert_eq!(clock.now(), Timestamp(2_000));
/// ```
#[cfg(any(feature = "test-util", test))]
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

#[cfg(any(feature = "test-util", test))]
impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: Timestamp) -> Self {
        ManualClock(AtomicU64::new(start.0))
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: std::time::Duration) {
        self.0.fetch_add(crate::record::millis(d), Ordering::SeqCst);
    }

    /// Sets the clock to `t` (it may go backwards: stores must cope).
    pub fn set(&self, t: Timestamp) {
        self.0.store(t.0, Ordering::SeqCst);
    }
}

#[cfg(any(feature = "test-util", test))]
impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}
