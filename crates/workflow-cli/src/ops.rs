//! The operations the CLI offers, on an engine: shared by the local target
//! (the data directory opened directly) and the admin API of `workflow serve`.

use std::time::Duration;

use workflow_core::{Engine, EngineError, PurgeOptions, ResumeError};
use workflow_store::{RunId, RunQuery, RunStatus, StoreError, StreamInfo, StreamName, STREAM_PAGE};

use crate::view::{ActionView, EventView, HookView, PurgeRequest, PurgeView, RunView};

/// Why an operation failed, with the HTTP status the admin API answers.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// Bad input from the caller (unknown workflow, input that does not fit, bad id).
    #[error("{0}")]
    BadRequest(String),
    /// The run or token does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The run's status does not allow the change (it has ended, or it is
    /// not blocked when asked to retry a blocked run).
    #[error("{0}")]
    Conflict(String),
    /// The store failed.
    #[error("storage failed: {0}")]
    Store(String),
}

impl OpError {
    /// The HTTP status for this error.
    pub fn status(&self) -> http::StatusCode {
        match self {
            OpError::BadRequest(_) => http::StatusCode::BAD_REQUEST,
            OpError::NotFound(_) => http::StatusCode::NOT_FOUND,
            OpError::Conflict(_) => http::StatusCode::CONFLICT,
            OpError::Store(_) => http::StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<EngineError> for OpError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::UnknownWorkflow { .. } | EngineError::InvalidInput { .. } => {
                OpError::BadRequest(e.to_string())
            }
            EngineError::RunNotFound { .. } => OpError::NotFound(e.to_string()),
            EngineError::RunConflict { .. }
            | EngineError::RunEnded { .. }
            | EngineError::RunNotBlocked { .. } => OpError::Conflict(e.to_string()),
            other => OpError::Store(other.to_string()),
        }
    }
}

impl From<ResumeError> for OpError {
    fn from(e: ResumeError) -> Self {
        match e {
            ResumeError::InvalidToken(_)
            | ResumeError::Rejected { .. }
            | ResumeError::Encode(_) => OpError::BadRequest(e.to_string()),
            ResumeError::NotFound { .. } => OpError::NotFound(e.to_string()),
            other => OpError::Store(other.to_string()),
        }
    }
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        OpError::Store(e.to_string())
    }
}

/// Parses a run id given by a user.
pub fn parse_run(id: &str) -> Result<RunId, OpError> {
    id.parse()
        .map_err(|e: workflow_store::IdError| OpError::BadRequest(e.to_string()))
}

/// Parses a status name given by a user.
pub fn parse_status(s: &str) -> Result<RunStatus, OpError> {
    RunStatus::ALL
        .into_iter()
        .find(|st| st.as_str() == s)
        .ok_or_else(|| {
            OpError::BadRequest(format!(
                "unknown status {s:?}: use one of pending, running, blocked, completed, failed, cancelled"
            ))
        })
}

/// The CLI's operations on one engine.
#[derive(Clone, Debug)]
pub struct Operations {
    engine: Engine,
}

impl Operations {
    /// Operations on `engine`.
    pub fn new(engine: Engine) -> Self {
        Operations { engine }
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Starts a run of `workflow` with a JSON input.
    pub async fn start(
        &self,
        workflow: &str,
        input: &serde_json::Value,
    ) -> Result<ActionView, OpError> {
        if !self.engine.workflows().any(|w| w == workflow) {
            let mut known: Vec<&str> = self.engine.workflows().collect();
            known.sort_unstable();
            return Err(OpError::BadRequest(format!(
                "unknown workflow {workflow:?}: this server knows {}",
                known.join(", ")
            )));
        }
        let run = self.engine.start(workflow, input).await?;
        Ok(ActionView {
            run: run.to_string(),
            hook: None,
            seq: None,
        })
    }

    /// Runs, oldest first, optionally of one status; at most `limit` (the
    /// newest), read from the store's indexes.
    pub async fn runs(
        &self,
        status: Option<RunStatus>,
        limit: usize,
    ) -> Result<Vec<RunView>, OpError> {
        let query = RunQuery::default()
            .status(status)
            .newest_first()
            .limit(limit);
        let page = self.engine.store().list_runs(query).await?;
        Ok(page.iter().rev().map(RunView::from).collect())
    }

    /// Deletes ended runs that `req` selects (see `Engine::purge_runs`).
    /// A status that is not final is a [`OpError::BadRequest`].
    pub async fn purge(&self, req: &PurgeRequest) -> Result<PurgeView, OpError> {
        let mut options = PurgeOptions::older_than(Duration::from_secs(req.older_than_secs));
        if let Some(status) = req.status.as_deref().map(parse_status).transpose()? {
            if !status.is_terminal() {
                return Err(OpError::BadRequest(format!(
                    "only ended runs are purged: use --status completed, failed or cancelled, not {status}"
                )));
            }
            options = options.status(status);
        }
        if let Some(w) = &req.workflow {
            options = options.workflow(w.clone());
        }
        let purged = self.engine.purge_runs(&options).await?;
        Ok(PurgeView { purged })
    }

    /// A run's events.
    pub async fn events(&self, run: &str) -> Result<Vec<EventView>, OpError> {
        let run = parse_run(run)?;
        if self.engine.store().get_run(run).await?.is_none() {
            return Err(OpError::NotFound(format!("run {run} does not exist")));
        }
        let log = self.engine.store().read_log(run).await?;
        Ok(log.iter().map(EventView::from).collect())
    }

    /// A run's streams (those readers can see).
    pub async fn streams(&self, run: &str) -> Result<Vec<StreamInfo>, OpError> {
        let run = parse_run(run)?;
        if self.engine.store().get_run(run).await?.is_none() {
            return Err(OpError::NotFound(format!("run {run} does not exist")));
        }
        Ok(self.engine.store().list_streams(run).await?)
    }

    /// The committed chunks of a run's stream from `from`, as NDJSON readers
    /// get them ([`workflow_http::stream::chunk_line`]), each handed to
    /// `line`; returns whether the stream is closed. Reads what is stored
    /// and does not wait: only the process driving the run adds to it.
    pub async fn tail_stored(
        &self,
        run: &str,
        stream: &str,
        from: u64,
        mut line: impl FnMut(serde_json::Value),
    ) -> Result<bool, OpError> {
        let run = parse_run(run)?;
        let name = StreamName::new(stream).map_err(|e| OpError::BadRequest(e.to_string()))?;
        let store = self.engine.store();
        let mut next = from;
        loop {
            let Some(page) = store.read_stream(run, &name, next, STREAM_PAGE).await? else {
                return Err(OpError::NotFound(format!("run {run} has no stream {name}")));
            };
            for (index, payload) in &page.chunks {
                line(workflow_http::stream::chunk_line(*index, payload));
                next = index + 1;
            }
            if page.chunks.is_empty() || next >= page.len {
                return Ok(page.closed);
            }
        }
    }

    /// Live hooks of all runs that have not ended.
    pub async fn hooks(&self) -> Result<Vec<HookView>, OpError> {
        let mut out = Vec::new();
        for status in [RunStatus::Pending, RunStatus::Running, RunStatus::Blocked] {
            let mut after = None;
            loop {
                let page = self
                    .engine
                    .store()
                    .list_runs(RunQuery::default().status(status).after(after).limit(500))
                    .await?;
                let Some(last) = page.last() else { break };
                after = Some(last.id);
                for run in page {
                    for h in self.engine.store().list_hooks(run.id).await? {
                        if h.live {
                            out.push(HookView::from(&h));
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Sends a JSON payload to the hook with `token`.
    pub async fn resume(
        &self,
        token: &str,
        payload: &serde_json::Value,
    ) -> Result<ActionView, OpError> {
        let r = self.engine.resume_hook(token, payload).await?;
        Ok(ActionView {
            run: r.run_id.to_string(),
            hook: Some(r.hook.to_string()),
            seq: Some(r.seq),
        })
    }

    /// Cancels a run.
    pub async fn cancel(&self, run: &str) -> Result<ActionView, OpError> {
        let id = parse_run(run)?;
        self.engine.cancel(&id).await?;
        Ok(ActionView {
            run: id.to_string(),
            hook: None,
            seq: None,
        })
    }

    /// Retries a blocked run: wakes it so it is replayed with the workflows
    /// registered now (by this engine's workers, or the next engine that runs).
    /// [`OpError::Conflict`] if the run is not blocked.
    pub async fn unblock(&self, run: &str) -> Result<ActionView, OpError> {
        let id = parse_run(run)?;
        self.engine.retry_blocked(&id).await?;
        Ok(ActionView {
            run: id.to_string(),
            hook: None,
            seq: None,
        })
    }
}
