//! Checking stored runs against the code before a deploy.
//!
//! [`Engine::check_replay`] replays every stored run with the workflows this
//! engine has registered, delivering the recorded events exactly as the driver
//! does, but without running steps, writing anything or taking leases. A run
//! whose history the code no longer reproduces is reported with the position of
//! the first mismatch: deploying that code would block the run.
//!
//! It also reports, for each patch the code checks ([`crate::Context::patched`]),
//! which runs that have not ended still take the old branch (the patch must
//! stay) and which have its marker in their history (the call, or at least
//! [`crate::Context::deprecate_patch`], must stay).

use std::collections::BTreeMap;

use workflow_store::{EventData, RunId, RunQuery, RunStatus};

use crate::driver::RunInstance;
use crate::engine::Engine;
use crate::error::{EngineError, WorkflowError};
use crate::replay::lock;

/// One run whose history does not match the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayMismatch {
    /// The run.
    pub run: RunId,
    /// Its workflow.
    pub workflow: String,
    /// The operation index of the first mismatch, when the error has one.
    pub position: Option<u64>,
    /// What is wrong, in words.
    pub message: String,
}

impl std::fmt::Display for ReplayMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "run {} of {:?} does not replay", self.run, self.workflow)?;
        if let Some(position) = self.position {
            write!(f, " at operation {position}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Which stored runs that have not ended still need a patch
/// (see [`ReplayReport::patches`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatchUsage {
    /// Runs whose history predates the patch: `patched` returns `false` for
    /// them, so the old branch must stay until they end.
    pub old_runs: Vec<RunId>,
    /// Runs with the patch's marker in their history: removing the call
    /// (rather than replacing it with `deprecate_patch`) would block them.
    pub marked_runs: Vec<RunId>,
}

/// The outcome of [`Engine::check_replay`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Runs replayed.
    pub checked: usize,
    /// Runs whose history the code does not reproduce.
    pub mismatches: Vec<ReplayMismatch>,
    /// Runs of workflows this engine does not register (not checked).
    pub unknown_workflow: Vec<(RunId, String)>,
    /// By patch id: the runs that have not ended and still depend on it.
    /// A patch no such run depends on is absent: its old branch and its
    /// call can be removed.
    pub patches: BTreeMap<String, PatchUsage>,
}

impl ReplayReport {
    /// Whether every checked run replays cleanly.
    pub fn is_clean(&self) -> bool {
        self.mismatches.is_empty()
    }
}

impl Engine {
    /// Replays every stored run against the registered workflows without
    /// running steps or writing, and reports the runs that no longer match.
    ///
    /// Run it against a copy of production data (or the data directory, with
    /// the server stopped) before deploying new workflow code.
    pub async fn check_replay(&self) -> Result<ReplayReport, EngineError> {
        let mut report = ReplayReport::default();
        let mut after = None;
        loop {
            let page = self
                .store()
                .list_runs(RunQuery::default().after(after).limit(256))
                .await?;
            let Some(last) = page.last() else {
                return Ok(report);
            };
            after = Some(last.id);
            for rec in page {
                self.check_run(rec.id, rec.status, &mut report).await?;
            }
        }
    }

    /// Replays one run (of status `status`) and adds what it finds to `report`.
    pub(crate) async fn check_run(
        &self,
        run: RunId,
        status: RunStatus,
        report: &mut ReplayReport,
    ) -> Result<(), EngineError> {
        let log = self.store().read_log(run).await?;
        let Some(EventData::RunCreated {
            workflow, input, ..
        }) = log.first().map(|e| e.data.clone())
        else {
            return Ok(());
        };
        let Some(registered) = self.registered(&workflow) else {
            report.unknown_workflow.push((run, workflow));
            return Ok(());
        };
        report.checked += 1;
        let mismatch = |position, message| ReplayMismatch {
            run,
            workflow: workflow.clone(),
            position,
            message,
        };
        let recorded_end = log.last().map(|e| e.data.clone());
        let mut inst = RunInstance::start(&registered, run, log, input);
        loop {
            if let Err(message) = inst.poll_until_idle() {
                report.mismatches.push(mismatch(None, message));
                return Ok(());
            }
            let mut st = lock(&inst.state);
            if let Some(e) = st.nondeterminism.clone() {
                drop(st);
                // A workflow that stopped on a value it can no longer decode
                // (its input, a step result) is reported with that error, not
                // with the operation it then failed to issue.
                let report_as = match inst.output() {
                    Some(Err(decode @ WorkflowError::Decode { .. })) => {
                        mismatch(None, format!("the code stops early on replay: {decode}"))
                    }
                    _ => mismatch(
                        (e.position != u64::MAX).then_some(e.position),
                        e.to_string(),
                    ),
                };
                report.mismatches.push(report_as);
                return Ok(());
            }
            if !st.deliver_next() {
                break;
            }
        }
        if !status.is_terminal() {
            let st = lock(&inst.state);
            for patch in &st.patches_old {
                report
                    .patches
                    .entry(patch.clone())
                    .or_default()
                    .old_runs
                    .push(run);
            }
            for patch in &st.patches_marked {
                report
                    .patches
                    .entry(patch.clone())
                    .or_default()
                    .marked_runs
                    .push(run);
            }
        }
        // A run that ended must end the same way (a cancelled one ended from outside).
        let ended = status.is_terminal() && status != RunStatus::Cancelled;
        let problem = match (&recorded_end, inst.output()) {
            _ if !ended => None,
            (_, None) => Some(format!(
                "the run {status} in its history, but the code does not finish on replay"
            )),
            (Some(EventData::RunCompleted { output }), Some(Ok(now))) if now != output => {
                Some("the run completed with a different output than the code now returns".into())
            }
            (Some(EventData::RunCompleted { .. }), Some(Err(e))) => Some(format!(
                "the run completed in its history, but the code now fails: {e}"
            )),
            (Some(EventData::RunFailed { error }), Some(Ok(_))) => Some(format!(
                "the run failed in its history ({}), but the code now completes",
                error.message
            )),
            _ => None,
        };
        if let Some(message) = problem {
            report.mismatches.push(mismatch(None, message));
        }
        Ok(())
    }
}
