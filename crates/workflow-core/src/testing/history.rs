//! A run's history as a test reads it: the recorded events, the operations
//! the workflow issued, and each step's attempts.

use std::fmt;
use std::time::Duration;

use workflow_store::{CorrelationId, Event, EventData, EventKind, RunId, Timestamp};

/// A run's recorded events, with helpers for assertions (see
/// [`TestEngine::history`](super::TestEngine::history)).
///
/// Its `Display` is a timeline (one event a line, times relative to the
/// run's creation), handy in an assertion's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    run: RunId,
    events: Vec<Event>,
}

/// An operation a workflow issued, in the order it issued them: what
/// [`History::operations`] lists.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Operation {
    /// A step, by name.
    Step {
        /// The step's name.
        name: String,
    },
    /// A durable sleep, by its length (from when its timer was recorded).
    Sleep {
        /// How long.
        duration: Duration,
    },
    /// A hook, by token (also a hook whose token was taken: `hook_conflict`).
    Hook {
        /// The token.
        token: String,
    },
    /// A webhook, by token.
    Webhook {
        /// The token.
        token: String,
    },
}

impl Operation {
    /// A step called `name`.
    pub fn step(name: impl Into<String>) -> Self {
        Operation::Step { name: name.into() }
    }

    /// A durable sleep of `duration`.
    pub fn sleep(duration: Duration) -> Self {
        Operation::Sleep { duration }
    }

    /// A hook with `token`.
    pub fn hook(token: impl Into<String>) -> Self {
        Operation::Hook {
            token: token.into(),
        }
    }

    /// A webhook with `token`.
    pub fn webhook(token: impl Into<String>) -> Self {
        Operation::Webhook {
            token: token.into(),
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operation::Step { name } => write!(f, "step {name:?}"),
            Operation::Sleep { duration } => write!(f, "sleep {duration:?}"),
            Operation::Hook { token } => write!(f, "hook {token:?}"),
            Operation::Webhook { token } => write!(f, "webhook {token:?}"),
        }
    }
}

/// One attempt of a step, as recorded: what [`History::step_attempts`] lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepAttempt {
    /// The attempt's number, from 1.
    pub number: u32,
    /// When it started (the store's, here virtual, time).
    pub started_at: Timestamp,
    /// How it ended.
    pub outcome: AttemptOutcome,
}

/// How a recorded step attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttemptOutcome {
    /// The step completed (`step_completed`).
    Completed,
    /// It failed and the step is retried at `retry_at` (`step_retrying`).
    Retrying {
        /// The attempt's error.
        error: String,
        /// When the next attempt is due.
        retry_at: Timestamp,
    },
    /// It failed and the step failed for good (`step_failed`).
    Failed {
        /// The error.
        error: String,
    },
    /// No outcome is recorded (yet): the attempt runs, or was lost.
    Unfinished,
}

impl History {
    pub(crate) fn new(run: RunId, events: Vec<Event>) -> Self {
        History { run, events }
    }

    /// The run.
    pub fn run_id(&self) -> RunId {
        self.run
    }

    /// Every recorded event, in log order, typed ([`EventData`]).
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The kinds of the recorded events, in log order.
    pub fn kinds(&self) -> Vec<EventKind> {
        self.events.iter().map(Event::kind).collect()
    }

    /// The operations the workflow issued (steps, sleeps, hooks, webhooks),
    /// in the order they were recorded, which is program order.
    pub fn operations(&self) -> Vec<Operation> {
        self.events
            .iter()
            .filter_map(|e| match &e.data {
                EventData::StepCreated { name, .. } => Some(Operation::step(name.as_str())),
                EventData::WaitCreated { resume_at, .. } => {
                    Some(Operation::sleep(resume_at.saturating_duration_since(e.at)))
                }
                EventData::HookCreated {
                    token,
                    webhook: None,
                    ..
                }
                | EventData::HookConflict { token, .. } => Some(Operation::hook(token.as_str())),
                EventData::HookCreated {
                    token,
                    webhook: Some(_),
                    ..
                } => Some(Operation::webhook(token.as_str())),
                _ => None,
            })
            .collect()
    }

    /// Panics, listing both, unless the workflow issued exactly `expected`.
    ///
    /// ```
    /// # use workflow_core::testing::{History, Operation};
    /// # fn check(history: &History) {
    /// use std::time::Duration;
    /// history.assert_operations(&[
    ///     Operation::step("reserve"),
    ///     Operation::sleep(Duration::from_secs(3600)),
    ///     Operation::step("charge"),
    /// ]);
    /// # }
    /// ```
    #[track_caller]
    pub fn assert_operations(&self, expected: &[Operation]) {
        let found = self.operations();
        if found != expected {
            let list = |ops: &[Operation]| {
                ops.iter()
                    .enumerate()
                    .map(|(i, op)| format!("  {i}: {op}\n"))
                    .collect::<String>()
            };
            panic!(
                "run {} issued other operations than expected\nexpected:\n{}found:\n{}",
                self.run,
                list(expected),
                list(&found)
            );
        }
    }

    /// The names of the steps the workflow issued, in order.
    pub fn step_names(&self) -> Vec<&str> {
        self.events
            .iter()
            .filter_map(|e| match &e.data {
                EventData::StepCreated { name, .. } => Some(name.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The recorded attempts of every step called `name`, in log order.
    pub fn step_attempts(&self, name: &str) -> Vec<StepAttempt> {
        let ids: Vec<_> = self
            .events
            .iter()
            .filter_map(|e| match &e.data {
                EventData::StepCreated { step, name: n, .. } if n == name => Some(step),
                _ => None,
            })
            .collect();
        let mut attempts: Vec<StepAttempt> = Vec::new();
        // Each step's latest attempt, by position in `attempts`.
        let mut latest: Vec<(&CorrelationId, usize)> = Vec::new();
        for e in &self.events {
            let Some(id) = e.data.correlation_id() else {
                continue;
            };
            if !ids.contains(&id) {
                continue;
            }
            let outcome = match &e.data {
                EventData::StepStarted { attempt, .. } => {
                    latest.retain(|(step, _)| *step != id);
                    latest.push((id, attempts.len()));
                    attempts.push(StepAttempt {
                        number: *attempt,
                        started_at: e.at,
                        outcome: AttemptOutcome::Unfinished,
                    });
                    continue;
                }
                EventData::StepCompleted { .. } => AttemptOutcome::Completed,
                EventData::StepRetrying {
                    error, retry_at, ..
                } => AttemptOutcome::Retrying {
                    error: error.message.clone(),
                    retry_at: *retry_at,
                },
                EventData::StepFailed { error, .. } => AttemptOutcome::Failed {
                    error: error.message.clone(),
                },
                _ => continue,
            };
            // An outcome ends the step's latest attempt; a step abandoned
            // while it waited for a retry has no attempt left to end.
            if let Some(&(_, i)) = latest.iter().find(|(step, _)| *step == id) {
                if attempts[i].outcome == AttemptOutcome::Unfinished {
                    attempts[i].outcome = outcome;
                }
            }
        }
        attempts
    }

    /// When the run was created (the time of `run_created`).
    pub fn created_at(&self) -> Timestamp {
        self.events.first().map(|e| e.at).unwrap_or_default()
    }

    /// The run's last recorded event, if it ended the run: completed, failed
    /// or cancelled.
    pub fn end(&self) -> Option<&EventData> {
        self.events
            .last()
            .map(|e| &e.data)
            .filter(|d| d.kind().is_run_terminal())
    }
}

impl fmt::Display for History {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "run {}", self.run)?;
        let start = self.created_at();
        for e in &self.events {
            let at = e.at.saturating_duration_since(start);
            write!(f, "  #{:<3} +{:<12} {}", e.seq, format!("{at:?}"), e.kind())?;
            if let Some(id) = e.data.correlation_id() {
                write!(f, " {id}")?;
            }
            match &e.data {
                EventData::StepCreated { name, .. } => write!(f, " {name:?}")?,
                EventData::StepStarted { attempt, .. } => write!(f, " attempt {attempt}")?,
                EventData::StepRetrying {
                    error, retry_at, ..
                } => write!(
                    f,
                    " ({}) retry at +{:?}",
                    error.message,
                    retry_at.saturating_duration_since(start)
                )?,
                EventData::StepFailed { error, .. }
                | EventData::RunFailed { error }
                | EventData::RunBlocked { error } => write!(f, " ({})", error.message)?,
                EventData::HookCreated { token, .. } | EventData::HookConflict { token, .. } => {
                    write!(f, " {token}")?
                }
                EventData::WaitCreated { resume_at, .. } => write!(
                    f,
                    " until +{:?}",
                    resume_at.saturating_duration_since(start)
                )?,
                _ => {}
            }
            writeln!(f)?;
        }
        Ok(())
    }
}
