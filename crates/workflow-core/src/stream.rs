//! Durable output streams: a step writes named, typed chunks; clients read
//! them from any index, live or later.
//!
//! - In a step, [`StepContext::stream`] (or [`StepContext::default_stream`])
//!   gives a [`StreamWriter`]; each [`write`](StreamWriter::write) is one
//!   chunk, stored durably at once; [`close`](StreamWriter::close) ends the
//!   stream; [`read_token`](StreamWriter::read_token) grants a random token
//!   that lets an HTTP client read it.
//! - In a workflow, [`crate::Context::stream_token`] is that grant as a step
//!   of its own, so the workflow can hand the token out.
//! - Anywhere, [`crate::Engine::read_stream`] replays a stream's chunks from
//!   an index and then follows it live (on the store's change feed) until it
//!   is closed.
//!
//! A reader sees the chunks of a step attempt only once the attempt is
//! recorded as completed, all at once; the chunks of an attempt that fails
//! (and is retried) or is lost in a crash are never seen. So a reader that
//! resumes from the index after the last one it got misses nothing and sees
//! nothing twice. See `docs/streams.md`.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::sync::broadcast::error::RecvError;
use workflow_store::{
    Change, ChunkWriter, CodecError, CorrelationId, IdError, LeaseId, Payload, RunId, Store,
    StoreError, StreamName, StreamToken, StreamWrite, STREAM_PAGE,
};

use crate::error::{EngineError, StepError, WorkflowError};
use crate::step::StepContext;
use crate::{Context, Engine};

/// Where the step attempts of one activation write: the store and the
/// activation's lease (the writes are fenced by it).
#[derive(Clone)]
pub(crate) struct StreamSink {
    store: Arc<dyn Store>,
    fence: LeaseId,
}

impl fmt::Debug for StreamSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamSink")
            .field("fence", &self.fence)
            .finish_non_exhaustive()
    }
}

impl StreamSink {
    pub(crate) fn new(store: Arc<dyn Store>, fence: LeaseId) -> Self {
        StreamSink { store, fence }
    }

    /// The streams of one attempt.
    pub(crate) fn attempt(&self, run: RunId, step: CorrelationId, attempt: u32) -> AttemptStreams {
        AttemptStreams {
            sink: self.clone(),
            run,
            writer: ChunkWriter { step, attempt },
            next: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

/// The streams one step attempt writes, with the next chunk number of each.
#[derive(Clone)]
pub(crate) struct AttemptStreams {
    sink: StreamSink,
    run: RunId,
    writer: ChunkWriter,
    /// Per stream, the number of its next chunk (shared by the attempt's
    /// writers of that stream), behind an async lock held while writing so
    /// that a failed write's number is used again.
    next: Arc<Mutex<HashMap<StreamName, Arc<tokio::sync::Mutex<u64>>>>>,
}

impl fmt::Debug for AttemptStreams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttemptStreams")
            .field("run", &self.run)
            .field("writer", &self.writer)
            .finish_non_exhaustive()
    }
}

impl AttemptStreams {
    fn counter(&self, stream: &StreamName) -> Arc<tokio::sync::Mutex<u64>> {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(next.entry(stream.clone()).or_default())
    }
}

/// Why a stream write failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The stream name is not valid.
    #[error(transparent)]
    Name(#[from] IdError),
    /// A chunk could not be encoded.
    #[error("stream chunk could not be encoded: {0}")]
    Encode(#[source] CodecError),
    /// This step context has no store to write to (a mocked attempt).
    #[error("this step attempt cannot write streams (it is mocked or has no store)")]
    Unavailable,
    /// The store refused or failed the write (a lost lease, a recorded
    /// attempt, a chunk over the size limit, an I/O error).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Raw bytes as one chunk (a CBOR byte string), for streams of bytes.
///
/// ```
/// use workflow_core::stream::RawChunk;
/// let p = workflow_store::Payload::encode(&RawChunk(b"hi".to_vec())).unwrap();
/// assert_eq!(p.decode::<RawChunk>().unwrap().0, b"hi");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawChunk(pub Vec<u8>);

impl Serialize for RawChunk {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for RawChunk {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawChunk;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<RawChunk, E> {
                Ok(RawChunk(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<RawChunk, E> {
                Ok(RawChunk(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// Writes chunks of type `T` to one stream of the run, from one step attempt.
///
/// ```no_run
/// use workflow_core::{Context, StepError, WorkflowError};
/// async fn import(ctx: Context, files: Vec<String>) -> Result<u32, WorkflowError> {
///     ctx.step("import", move |s| {
///         let files = files.clone();
///         async move {
///             let mut progress = s.stream::<String>("progress")?;
///             for f in &files {
///                 progress.write(&format!("imported {f}")).await?;
///             }
///             progress.close().await?;
///             Ok::<_, StepError>(files.len() as u32)
///         }
///     })
///     .await
/// }
/// ```
pub struct StreamWriter<T> {
    streams: AttemptStreams,
    stream: StreamName,
    _chunk: PhantomData<fn(&T)>,
}

impl<T> fmt::Debug for StreamWriter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamWriter")
            .field("stream", &self.stream)
            .field("writer", &self.streams.writer)
            .finish()
    }
}

impl<T: Serialize> StreamWriter<T> {
    /// The stream's name.
    pub fn name(&self) -> &StreamName {
        &self.stream
    }

    /// Writes one chunk. Durable when this returns; visible to readers once
    /// the attempt is recorded as completed.
    pub async fn write(&mut self, chunk: &T) -> Result<(), StreamError> {
        let payload = Payload::encode(chunk).map_err(StreamError::Encode)?;
        self.send(vec![payload], false, None).await
    }

    /// Writes several chunks in one store write (faster than one by one).
    pub async fn write_all(&mut self, chunks: &[T]) -> Result<(), StreamError> {
        let payloads = chunks
            .iter()
            .map(Payload::encode)
            .collect::<Result<Vec<_>, _>>()
            .map_err(StreamError::Encode)?;
        self.send(payloads, false, None).await
    }

    /// Closes the stream (once the attempt is recorded): readers reach its
    /// end. A run's streams are also closed when the run ends.
    pub async fn close(mut self) -> Result<(), StreamError> {
        self.send(Vec::new(), true, None).await
    }

    /// A new random token that lets an HTTP client read this stream, valid
    /// once the attempt is recorded as completed. Return it from the step so
    /// the workflow can hand it out.
    pub async fn read_token(&mut self) -> Result<StreamToken, StreamError> {
        let token = crate::hook::random_token();
        self.send(Vec::new(), false, Some(token.clone())).await?;
        Ok(token)
    }

    async fn send(
        &mut self,
        chunks: Vec<Payload>,
        close: bool,
        grant: Option<StreamToken>,
    ) -> Result<(), StreamError> {
        let counter = self.streams.counter(&self.stream);
        let mut next = counter.lock().await;
        let count = chunks.len() as u64;
        let write = StreamWrite {
            stream: self.stream.clone(),
            first: *next,
            chunks,
            close,
            grant,
        };
        let s = &self.streams;
        s.sink
            .store
            .write_stream(s.run, &s.writer, write, Some(s.sink.fence))
            .await?;
        *next += count;
        Ok(())
    }
}

impl StepContext {
    /// A writer for the run's stream `name` (see [`StreamWriter`]).
    pub fn stream<T: Serialize>(&self, name: &str) -> Result<StreamWriter<T>, StreamError> {
        let stream = StreamName::new(name)?;
        let streams = self.streams.clone().ok_or(StreamError::Unavailable)?;
        Ok(StreamWriter {
            streams,
            stream,
            _chunk: PhantomData,
        })
    }

    /// A writer for the run's default stream ([`workflow_store::DEFAULT_STREAM`]).
    pub fn default_stream<T: Serialize>(&self) -> Result<StreamWriter<T>, StreamError> {
        self.stream(workflow_store::DEFAULT_STREAM)
    }
}

impl Context {
    /// A random read token for the run's stream `name`, granted by a step
    /// of its own (so it is recorded, and the same on replay): hand it to the
    /// client that reads the stream over HTTP.
    ///
    /// ```no_run
    /// # use workflow_core::{Context, WorkflowError};
    /// async fn report(ctx: Context, _: ()) -> Result<String, WorkflowError> {
    ///     let token = ctx.stream_token("progress").await?;
    ///     Ok(token.to_string())
    /// }
    /// ```
    pub async fn stream_token(&self, name: &str) -> Result<StreamToken, WorkflowError> {
        let name = name.to_owned();
        self.step("stream_token", move |s| {
            let name = name.clone();
            async move {
                let mut w = s.stream::<()>(&name)?;
                Ok::<_, StepError>(w.read_token().await?)
            }
        })
        .await
    }
}

/// What [`Engine::read_stream`] yields: a chunk's index and value.
pub type StreamItem<T> = Result<(u64, T), EngineError>;

struct Reader {
    store: Arc<dyn Store>,
    run: RunId,
    stream: StreamName,
    next: u64,
    feed: Option<tokio::sync::broadcast::Receiver<Change>>,
    poll: Duration,
    buffered: VecDeque<(u64, Payload)>,
    done: bool,
}

impl Reader {
    /// The next chunk, or `None` at the end of a closed stream (or of an
    /// ended run that never had the stream).
    async fn next_chunk(&mut self) -> Result<Option<(u64, Payload)>, EngineError> {
        loop {
            if let Some(chunk) = self.buffered.pop_front() {
                return Ok(Some(chunk));
            }
            if self.done {
                return Ok(None);
            }
            match self
                .store
                .read_stream(self.run, &self.stream, self.next, STREAM_PAGE)
                .await?
            {
                Some(page) if !page.chunks.is_empty() => {
                    if let Some((last, _)) = page.chunks.last() {
                        self.next = last + 1;
                    }
                    self.buffered.extend(page.chunks);
                    continue;
                }
                Some(page) if page.closed && self.next >= page.len => return Ok(None),
                Some(_) => {}
                None => match self.store.get_run(self.run).await? {
                    None => return Err(EngineError::RunNotFound { run: self.run }),
                    Some(r) if r.status.is_terminal() => return Ok(None),
                    Some(_) => {}
                },
            }
            self.wait().await;
        }
    }

    /// Waits for a change to this stream or the end of the run (or, without
    /// a change feed, one poll interval).
    async fn wait(&mut self) {
        let Some(feed) = self.feed.as_mut() else {
            tokio::time::sleep(self.poll).await;
            return;
        };
        loop {
            match feed.recv().await {
                Ok(Change::Stream { run, stream, .. })
                    if run == self.run && stream == self.stream =>
                {
                    return
                }
                Ok(Change::Status { run, status }) if run == self.run && status.is_terminal() => {
                    return
                }
                Ok(_) => {}
                // Missed changes: read again.
                Err(RecvError::Lagged(_)) => return,
                Err(RecvError::Closed) => {
                    self.feed = None;
                    return;
                }
            }
        }
    }
}

impl Engine {
    /// The chunks of a run's stream from index `from`: those stored, then
    /// new ones as steps commit them, until the stream is closed (a run's
    /// streams close when it ends). Each item is `(index, chunk)`; resume
    /// after a disconnect with `from` = the last index + 1.
    ///
    /// A stream nobody has written yet is waited for while the run lives.
    /// Errors end the stream: [`EngineError::RunNotFound`], a chunk that does
    /// not decode as `T` ([`EngineError::OutputDecode`]), a store failure.
    ///
    /// ```no_run
    /// # async fn demo(engine: workflow_core::Engine, run: workflow_store::RunId) {
    /// use futures::StreamExt;
    /// let mut chunks = std::pin::pin!(engine.read_stream::<String>(run, "progress", 0));
    /// while let Some(Ok((index, line))) = chunks.next().await {
    ///     println!("{index}: {line}");
    /// }
    /// # }
    /// ```
    pub fn read_stream<T: DeserializeOwned + 'static>(
        &self,
        run: RunId,
        name: &str,
        from: u64,
    ) -> impl Stream<Item = StreamItem<T>> + Send + 'static {
        let store = Arc::clone(self.store());
        // Subscribed before the first read, so no commit slips between.
        let feed = store.subscribe();
        let reader = StreamName::new(name).map(|stream| Reader {
            store,
            run,
            stream,
            next: from,
            feed,
            poll: self.settings().poll_interval,
            buffered: VecDeque::new(),
            done: false,
        });
        let start = reader.map_err(EngineError::from);
        futures::stream::unfold(Some(start), move |state| async move {
            let mut reader = match state? {
                Ok(reader) => reader,
                Err(e) => return Some((Err(e), None)),
            };
            match reader.next_chunk().await {
                Ok(Some((index, payload))) => {
                    let item = payload.decode::<T>().map(|v| (index, v)).map_err(|e| {
                        EngineError::OutputDecode {
                            run: reader.run,
                            message: format!("chunk {index} of stream {}: {e}", reader.stream),
                            source: e,
                        }
                    });
                    if item.is_err() {
                        reader.done = true;
                        reader.buffered.clear();
                    }
                    Some((item, Some(Ok(reader))))
                }
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        })
    }
}
