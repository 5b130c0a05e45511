//! Replay of arbitrary event logs against a sample workflow: the logic of the
//! `replay_log` fuzz target, shared with its corpus replay test
//! (`crates/workflow-core/tests/fuzz_corpus.rs`), which imports this file with
//! `#[path]`.
//!
//! The fuzz input is decoded ([`decode`]) into a run status and a log of up to
//! [`MAX_EVENTS`] events: a small opcode language whose correlation ids
//! (`step:N`, `hook:N`, `wait:N`), names, tokens and workflow names come mostly
//! from small pools, so the fuzzer reaches logs that almost match the sample
//! workflow, and whose payloads are raw bytes (CBOR or not). A read-only
//! [`FixedLog`] store serves that one run, and [`Engine::check_replay`] replays
//! it against [`sample`]. It must return a report or an error: never panic and
//! never hang ([`run`] fails after [`TIMEOUT`]).
//!
//! [`encode`] writes a status and a log in the same language (for the seed
//! corpus: real logs of the sample workflow, and hand-made tricky ones).

#![allow(dead_code)]

use std::pin::pin;
use std::sync::mpsc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::Either;
use workflow_core::{
    Backoff, Context, Engine, EngineBuilder, EngineError, HookOptions, ReplayReport, StepError,
    StepOptions, WebhookOptions, WorkflowError,
};
use workflow_store::{
    Appended, CorrelationId, CreatedRun, ErrorRecord, Event, EventData, HookRecord, HookToken,
    HttpResponseRecord, Lease, NewRun, Payload, PurgeQuery, Purged, Resumed, RunId, RunQuery,
    RunRecord, RunStatus, Store, StoreError, Timestamp, WebhookResponse,
};

/// Timestamps are offsets from this time (ms since the epoch).
pub const BASE_MS: u64 = 1_700_000_000_000;
/// The longest log decoded from one input.
pub const MAX_EVENTS: usize = 512;
/// How long one replay may take before it counts as a hang.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Step names: the sample workflow's, and some it never uses.
pub const NAMES: &[&str] = &["fetch", "flaky", "compensate", "left", "right", "", "other"];
/// Workflow names: the registered one, and others.
pub const WORKFLOWS: &[&str] = &["sample", "unregistered", ""];
/// Hook tokens: the sample workflow's custom tokens (`sample:{input}`), and another.
pub const TOKENS: &[&str] = &["sample:0", "sample:1", "sample:2", "other-token"];

/// The run the fixed store serves.
pub fn run_id() -> RunId {
    RunId::from_u128(0x0190_0000_0000_0000_0000_0000_0000_0042)
}

// ---------------------------------------------------------------------------
// The sample workflow: steps (one retrying, one compensating), a sleep, a
// hook, a manual webhook, a race resolved in log order, concurrent steps.
// ---------------------------------------------------------------------------

/// The workflow replayed against every log.
pub async fn sample(ctx: Context, input: u32) -> Result<u32, WorkflowError> {
    let fetched: u32 = ctx
        .step("fetch", move |_| async move {
            Ok::<_, StepError>(input.wrapping_add(1))
        })
        .await?;
    let retry = StepOptions::default().max_attempts(2).backoff(Backoff {
        initial: Duration::from_millis(1),
        factor: 2.0,
        max: Duration::from_millis(4),
    });
    // Odd inputs fail for good and are compensated.
    let flaky = ctx
        .step_with("flaky", retry, move |s| async move {
            if s.attempt() == 1 || input % 2 == 1 {
                Err(StepError::retryable("the attempt fails"))
            } else {
                Ok(2u32)
            }
        })
        .await;
    let flaky = match flaky {
        Ok(v) => v,
        Err(_) => {
            ctx.step("compensate", |_| async { Ok::<_, StepError>(0u32) })
                .await?
        }
    };
    ctx.sleep(Duration::from_millis(5)).await?;
    let mut hook =
        ctx.create_hook::<u32>(HookOptions::token(format!("sample:{input}")).metadata(&"meta"))?;
    let mut webhook = ctx.create_webhook(WebhookOptions::new().manual(Duration::from_secs(5)))?;
    let value = hook.next().await?;
    let request = webhook.next().await?;
    let answer = http::Response::builder()
        .status(201)
        .header("x-sample", "yes")
        .body(request.body.clone())
        .map_err(WorkflowError::fatal)?;
    request.respond(answer);
    // A race resolved in log order: a second payload, or a timer.
    let raced = {
        let next = pin!(hook.next());
        let timer = pin!(ctx.sleep(Duration::from_millis(20)));
        match futures::future::select(next, timer).await {
            Either::Left((v, _)) => v?,
            Either::Right((r, _)) => {
                r?;
                0
            }
        }
    };
    let (left, right) = futures::join!(
        ctx.step("left", move |_| async move { Ok::<_, StepError>(value) }),
        ctx.step("right", move |_| async move { Ok::<_, StepError>(raced) }),
    );
    hook.dispose();
    Ok(fetched
        .wrapping_add(flaky)
        .wrapping_add(left?)
        .wrapping_add(right?))
}

/// An engine builder on `store` with [`sample`] registered as `sample`.
pub fn engine_builder(store: impl Store) -> EngineBuilder {
    Engine::builder(store).workflow("sample", sample)
}

// ---------------------------------------------------------------------------
// The read-only store that serves one fixed log.
// ---------------------------------------------------------------------------

/// A [`Store`] holding one run with a fixed log and status; every write fails.
#[derive(Debug, Clone)]
pub struct FixedLog {
    record: RunRecord,
    events: Vec<Event>,
}

impl FixedLog {
    /// The store for `events` of [`run_id`], reported with `status`.
    pub fn new(status: RunStatus, events: Vec<Event>) -> Self {
        let workflow = match events.first().map(|e| &e.data) {
            Some(EventData::RunCreated { workflow, .. }) => workflow.clone(),
            _ => "sample".to_string(),
        };
        let record = RunRecord {
            id: run_id(),
            workflow,
            status,
            error: None,
            created_at: events.first().map(|e| e.at).unwrap_or_default(),
            updated_at: events.last().map(|e| e.at).unwrap_or_default(),
            next_seq: events.len() as u64,
        };
        FixedLog { record, events }
    }
}

fn read_only() -> StoreError {
    StoreError::Backend {
        message: "this store is read-only".into(),
        source: None,
    }
}

#[async_trait]
impl Store for FixedLog {
    async fn create_run(&self, _run: NewRun) -> Result<CreatedRun, StoreError> {
        Err(read_only())
    }

    async fn append(
        &self,
        _run: RunId,
        _events: Vec<EventData>,
        _fence: Option<workflow_store::LeaseId>,
    ) -> Result<Appended, StoreError> {
        Err(read_only())
    }

    async fn read_events(
        &self,
        run: RunId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        if run != self.record.id {
            return Err(StoreError::RunNotFound { run });
        }
        let from = usize::try_from(from_seq).unwrap_or(usize::MAX);
        Ok(self.events.iter().skip(from).take(limit).cloned().collect())
    }

    async fn get_run(&self, run: RunId) -> Result<Option<RunRecord>, StoreError> {
        Ok((run == self.record.id).then(|| self.record.clone()))
    }

    async fn purge_runs(&self, _: PurgeQuery) -> Result<Purged, StoreError> {
        Err(read_only())
    }
    async fn list_runs(&self, query: RunQuery) -> Result<Vec<RunRecord>, StoreError> {
        Ok(
            if query.is_after_cursor(self.record.id)
                && query.matches(&self.record)
                && query.limit > 0
            {
                vec![self.record.clone()]
            } else {
                Vec::new()
            },
        )
    }

    async fn get_hook(&self, _token: &HookToken) -> Result<Option<HookRecord>, StoreError> {
        Ok(None)
    }

    async fn list_hooks(&self, _run: RunId) -> Result<Vec<HookRecord>, StoreError> {
        Ok(Vec::new())
    }

    async fn resume_hook(
        &self,
        token: &HookToken,
        _payload: Payload,
    ) -> Result<Resumed, StoreError> {
        Err(StoreError::HookNotFound {
            token: token.clone(),
        })
    }

    async fn wake(&self, _run: RunId) -> Result<(), StoreError> {
        Err(read_only())
    }

    async fn lease_due(&self, _limit: usize, _ttl: Duration) -> Result<Vec<Lease>, StoreError> {
        Ok(Vec::new())
    }

    async fn renew_lease(&self, lease: &Lease, _ttl: Duration) -> Result<Lease, StoreError> {
        Err(StoreError::LeaseLost { run: lease.run_id })
    }

    async fn release_lease(&self, _lease: &Lease) -> Result<(), StoreError> {
        Ok(())
    }

    async fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        Ok(None)
    }

    fn now(&self) -> Timestamp {
        Timestamp(BASE_MS)
    }
}

// ---------------------------------------------------------------------------
// Running one input.
// ---------------------------------------------------------------------------

/// Replays the log `status, events` with [`Engine::check_replay`] (no timeout).
pub fn replay(status: RunStatus, events: Vec<Event>) -> Result<ReplayReport, EngineError> {
    let engine = engine_builder(FixedLog::new(status, events)).build();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(engine.check_replay())
}

/// Decodes `data` and replays it on another thread; panics if that panics,
/// reports a panic caught inside the workflow, or takes longer than [`TIMEOUT`].
pub fn run(data: &[u8]) -> Result<ReplayReport, EngineError> {
    let (status, events) = decode(data);
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let _ = tx.send(replay(status, events));
    });
    match rx.recv_timeout(TIMEOUT) {
        Ok(result) => {
            let _ = worker.join();
            // The sample workflow never panics (it uses wrapping arithmetic and
            // no unwraps), so a panic caught while polling it came from the
            // library's own operations (step, hook, sleep): a bug.
            if let Ok(report) = &result {
                for m in &report.mismatches {
                    assert!(
                        !m.message.contains("panicked"),
                        "library code panicked during replay: {}",
                        m.message
                    );
                }
            }
            result
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("check_replay did not return within {TIMEOUT:?}: it hangs")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the worker sends before it ends"),
        },
    }
}

// ---------------------------------------------------------------------------
// The input language.
// ---------------------------------------------------------------------------

/// Event kinds by opcode (`op & 0x1f`); other values are skipped.
const KINDS: usize = 18;
/// Opcode flag: this event's seq skips one.
const SEQ_GAP: u8 = 0x20;
/// Opcode flag: the time is an absolute `u32` offset from [`BASE_MS`], not a `u16` delta.
const ABS_TIME: u8 = 0x40;
/// Opcode flag: this event repeats the previous seq.
const SEQ_REPEAT: u8 = 0x80;
/// Selector byte: the value follows as a string.
const EXPLICIT: u8 = 0xFF;

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    fn bytes(&mut self, n: usize) -> Bytes {
        let start = self.pos.min(self.data.len());
        let end = start.saturating_add(n).min(self.data.len());
        self.pos = self.pos.saturating_add(n);
        Bytes::copy_from_slice(&self.data[start..end])
    }

    fn string(&mut self) -> String {
        let n = usize::from(self.u8());
        String::from_utf8_lossy(&self.bytes(n)).into_owned()
    }

    fn payload(&mut self) -> Payload {
        let n = usize::from(self.u16());
        Payload(self.bytes(n))
    }

    fn pick(&mut self, pool: &[&str]) -> String {
        match self.u8() {
            EXPLICIT => self.string(),
            b => pool[usize::from(b) % pool.len()].to_string(),
        }
    }

    fn cid(&mut self, natural: &str) -> CorrelationId {
        match self.u8() {
            EXPLICIT => CorrelationId::new(self.string())
                .unwrap_or_else(|_| CorrelationId::from_parts("bad", 0)),
            b => {
                let prefix = ["", "step", "hook", "wait"][usize::from(b >> 6)];
                let prefix = if prefix.is_empty() { natural } else { prefix };
                CorrelationId::from_parts(prefix, u64::from(b & 0x3f))
            }
        }
    }

    fn token(&mut self) -> HookToken {
        let text = self.pick(TOKENS);
        HookToken::new(text).unwrap_or_else(|_| HookToken::new(TOKENS[0]).expect("a valid token"))
    }

    fn time(&mut self) -> Timestamp {
        Timestamp(BASE_MS + u64::from(self.u32()))
    }

    fn error(&mut self) -> ErrorRecord {
        ErrorRecord::new(self.string())
    }

    fn response(&mut self) -> HttpResponseRecord {
        let status = self.u16();
        let headers = (0..self.u8() % 4)
            .map(|_| {
                (self.string(), {
                    let n = usize::from(self.u8());
                    self.bytes(n)
                })
            })
            .collect();
        let n = usize::from(self.u16());
        HttpResponseRecord {
            status,
            headers,
            body: self.bytes(n),
        }
    }

    fn webhook(&mut self) -> Option<WebhookResponse> {
        match self.u8() % 4 {
            0 => None,
            1 => Some(WebhookResponse::Accepted),
            2 => Some(WebhookResponse::Static(self.response())),
            _ => Some(WebhookResponse::Manual {
                timeout_ms: u64::from(self.u32()),
            }),
        }
    }

    fn event(&mut self, kind: u8) -> EventData {
        match kind {
            0 => EventData::RunCreated {
                workflow: self.pick(WORKFLOWS),
                input: self.payload(),
                parent: None,
            },
            1 => EventData::RunStarted,
            2 => EventData::RunCompleted {
                output: self.payload(),
            },
            3 => EventData::RunFailed {
                error: self.error(),
            },
            4 => EventData::RunCancelled,
            5 => EventData::RunBlocked {
                error: self.error(),
            },
            6 => EventData::StepCreated {
                step: self.cid("step"),
                name: self.pick(NAMES),
                input_digest: match usize::from(self.u8()) {
                    0 => None,
                    n => Some(self.bytes(n - 1)),
                },
            },
            7 => EventData::StepStarted {
                step: self.cid("step"),
                attempt: match self.u8() {
                    EXPLICIT => u32::MAX,
                    b => u32::from(b),
                },
            },
            8 => EventData::StepCompleted {
                step: self.cid("step"),
                result: self.payload(),
            },
            9 => EventData::StepRetrying {
                step: self.cid("step"),
                error: self.error(),
                retry_at: self.time(),
            },
            10 => EventData::StepFailed {
                step: self.cid("step"),
                error: self.error(),
            },
            11 => EventData::HookCreated {
                hook: self.cid("hook"),
                token: self.token(),
                metadata: match self.u8() % 2 {
                    0 => None,
                    _ => Some(self.payload()),
                },
                webhook: self.webhook(),
            },
            12 => EventData::HookReceived {
                hook: self.cid("hook"),
                payload: self.payload(),
            },
            13 => EventData::HookResponded {
                hook: self.cid("hook"),
                request_id: self.string(),
                response: self.response(),
            },
            14 => EventData::HookDisposed {
                hook: self.cid("hook"),
            },
            15 => EventData::HookConflict {
                hook: self.cid("hook"),
                token: self.token(),
                holder: match self.u8() {
                    0 => run_id(),
                    EXPLICIT => {
                        let mut id = [0u8; 16];
                        for b in &mut id {
                            *b = self.u8();
                        }
                        RunId::from_bytes(id)
                    }
                    b => RunId::from_u128(u128::from(b)),
                },
            },
            16 => EventData::WaitCreated {
                wait: self.cid("wait"),
                resume_at: self.time(),
            },
            _ => EventData::WaitCompleted {
                wait: self.cid("wait"),
            },
        }
    }
}

/// Decodes any bytes into a run status and a log (see the module docs).
pub fn decode(data: &[u8]) -> (RunStatus, Vec<Event>) {
    let mut r = Reader { data, pos: 0 };
    let status = RunStatus::ALL[usize::from(r.u8()) % RunStatus::ALL.len()];
    let mut events: Vec<Event> = Vec::new();
    while !r.done() && events.len() < MAX_EVENTS {
        let op = r.u8();
        let kind = op & 0x1f;
        if usize::from(kind) >= KINDS {
            continue;
        }
        let prev_at = events.last().map_or(BASE_MS, |e| e.at.0);
        let at = if op & ABS_TIME != 0 {
            BASE_MS + u64::from(r.u32())
        } else {
            prev_at + u64::from(r.u16())
        };
        let next = events.last().map_or(0, |e| e.seq.saturating_add(1));
        let seq = match (op & SEQ_GAP != 0, op & SEQ_REPEAT != 0) {
            (false, false) => next,
            (true, false) => next.saturating_add(1),
            (false, true) => next.saturating_sub(1),
            (true, true) => u64::MAX,
        };
        let data = r.event(kind);
        events.push(Event {
            seq,
            at: Timestamp(at),
            data,
        });
    }
    (status, events)
}

struct Writer(Vec<u8>);

impl Writer {
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn string(&mut self, s: &str) {
        let mut end = s.len().min(255);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.0.push(end as u8);
        self.0.extend_from_slice(&s.as_bytes()[..end]);
    }

    fn bytes8(&mut self, b: &[u8]) {
        let b = &b[..b.len().min(255)];
        self.0.push(b.len() as u8);
        self.0.extend_from_slice(b);
    }

    fn payload(&mut self, p: &[u8]) {
        let p = &p[..p.len().min(usize::from(u16::MAX))];
        self.u16(p.len() as u16);
        self.0.extend_from_slice(p);
    }

    fn pick(&mut self, pool: &[&str], value: &str) {
        match pool.iter().position(|p| *p == value) {
            Some(i) => self.0.push(i as u8),
            None => {
                self.0.push(EXPLICIT);
                self.string(value);
            }
        }
    }

    fn cid(&mut self, natural: &str, id: &CorrelationId) {
        let parsed = id
            .as_str()
            .split_once(':')
            .and_then(|(p, i)| Some((p, i.parse::<u8>().ok()?)));
        let selector = match parsed {
            Some((p, i)) if i < 0x3f => {
                if p == natural {
                    Some(i)
                } else {
                    ["step", "hook", "wait"]
                        .iter()
                        .position(|k| *k == p)
                        .map(|k| ((k as u8 + 1) << 6) | i)
                }
            }
            _ => None,
        };
        match selector {
            Some(b) => self.0.push(b),
            None => {
                self.0.push(EXPLICIT);
                self.string(id.as_str());
            }
        }
    }

    fn time(&mut self, t: Timestamp) {
        let offset = t.0.saturating_sub(BASE_MS);
        self.u32(u32::try_from(offset).unwrap_or(u32::MAX));
    }

    fn response(&mut self, r: &HttpResponseRecord) {
        self.u16(r.status);
        let headers = &r.headers[..r.headers.len().min(3)];
        self.0.push(headers.len() as u8);
        for (name, value) in headers {
            self.string(name);
            self.bytes8(value);
        }
        self.payload(&r.body);
    }

    fn event(&mut self, data: &EventData) {
        match data {
            EventData::RunCreated {
                workflow, input, ..
            } => {
                self.pick(WORKFLOWS, workflow);
                self.payload(&input.0);
            }
            EventData::RunStarted | EventData::RunCancelled => {}
            EventData::RunCompleted { output } => self.payload(&output.0),
            EventData::RunFailed { error } | EventData::RunBlocked { error } => {
                self.string(&error.message)
            }
            EventData::StepCreated {
                step,
                name,
                input_digest,
            } => {
                self.cid("step", step);
                self.pick(NAMES, name);
                match input_digest {
                    None => self.0.push(0),
                    Some(d) => {
                        let d = &d[..d.len().min(254)];
                        self.0.push(d.len() as u8 + 1);
                        self.0.extend_from_slice(d);
                    }
                }
            }
            EventData::StepStarted { step, attempt } => {
                self.cid("step", step);
                self.0.push(u8::try_from(*attempt).unwrap_or(EXPLICIT));
            }
            EventData::StepCompleted { step, result } => {
                self.cid("step", step);
                self.payload(&result.0);
            }
            EventData::StepRetrying {
                step,
                error,
                retry_at,
            } => {
                self.cid("step", step);
                self.string(&error.message);
                self.time(*retry_at);
            }
            EventData::StepFailed { step, error } => {
                self.cid("step", step);
                self.string(&error.message);
            }
            EventData::HookCreated {
                hook,
                token,
                metadata,
                webhook,
            } => {
                self.cid("hook", hook);
                self.pick(TOKENS, token.as_str());
                match metadata {
                    None => self.0.push(0),
                    Some(m) => {
                        self.0.push(1);
                        self.payload(&m.0);
                    }
                }
                match webhook {
                    None => self.0.push(0),
                    Some(WebhookResponse::Static(r)) => {
                        self.0.push(2);
                        self.response(r);
                    }
                    Some(WebhookResponse::Manual { timeout_ms }) => {
                        self.0.push(3);
                        self.u32(u32::try_from(*timeout_ms).unwrap_or(u32::MAX));
                    }
                    Some(_) => self.0.push(1),
                }
            }
            EventData::HookReceived { hook, payload } => {
                self.cid("hook", hook);
                self.payload(&payload.0);
            }
            EventData::HookResponded {
                hook,
                request_id,
                response,
            } => {
                self.cid("hook", hook);
                self.string(request_id);
                self.response(response);
            }
            EventData::HookDisposed { hook } => self.cid("hook", hook),
            EventData::HookConflict {
                hook,
                token,
                holder,
            } => {
                self.cid("hook", hook);
                self.pick(TOKENS, token.as_str());
                match u8::try_from(holder.as_u128()) {
                    _ if *holder == run_id() => self.0.push(0),
                    Ok(b) if b != 0 && b != EXPLICIT => self.0.push(b),
                    _ => {
                        self.0.push(EXPLICIT);
                        self.0.extend_from_slice(&holder.to_bytes());
                    }
                }
            }
            EventData::WaitCreated { wait, resume_at } => {
                self.cid("wait", wait);
                self.time(*resume_at);
            }
            EventData::WaitCompleted { wait } => self.cid("wait", wait),
            _ => {}
        }
    }
}

fn opcode(data: &EventData) -> u8 {
    match data {
        EventData::RunCreated { .. } => 0,
        EventData::RunStarted => 1,
        EventData::RunCompleted { .. } => 2,
        EventData::RunFailed { .. } => 3,
        EventData::RunCancelled => 4,
        EventData::RunBlocked { .. } => 5,
        EventData::StepCreated { .. } => 6,
        EventData::StepStarted { .. } => 7,
        EventData::StepCompleted { .. } => 8,
        EventData::StepRetrying { .. } => 9,
        EventData::StepFailed { .. } => 10,
        EventData::HookCreated { .. } => 11,
        EventData::HookReceived { .. } => 12,
        EventData::HookResponded { .. } => 13,
        EventData::HookDisposed { .. } => 14,
        EventData::HookConflict { .. } => 15,
        EventData::WaitCreated { .. } => 16,
        _ => 17,
    }
}

/// Encodes a status and a log so that [`decode`] gives them back (as far as
/// the language can say them: strings of up to 255 bytes, payloads of up to
/// 64 KiB, times from [`BASE_MS`], seqs that follow, repeat or skip one).
pub fn encode(status: RunStatus, events: &[Event]) -> Vec<u8> {
    let mut w = Writer(Vec::new());
    let status_index = RunStatus::ALL
        .iter()
        .position(|s| *s == status)
        .unwrap_or(0);
    w.0.push(status_index as u8);
    let mut prev: Option<&Event> = None;
    for e in events {
        let next = prev.map_or(0, |p| p.seq.saturating_add(1));
        let mut op = opcode(&e.data);
        if e.seq == next.saturating_add(1) {
            op |= SEQ_GAP;
        } else if e.seq != next && e.seq == next.saturating_sub(1) {
            op |= SEQ_REPEAT;
        } else if e.seq == u64::MAX && e.seq != next {
            op |= SEQ_GAP | SEQ_REPEAT;
        }
        let prev_at = prev.map_or(BASE_MS, |p| p.at.0);
        match e.at.0.checked_sub(prev_at) {
            Some(delta) if delta <= u64::from(u16::MAX) => {
                w.0.push(op);
                w.u16(delta as u16);
            }
            _ => {
                w.0.push(op | ABS_TIME);
                w.time(e.at);
            }
        }
        w.event(&e.data);
        prev = Some(e);
    }
    w.0
}
