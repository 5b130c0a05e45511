//! Change notification across processes: LISTEN/NOTIFY.
//!
//! The changes of every committed write are sent with `pg_notify(channel,
//! payload)`: by default right after the commit, by a sender task that sends
//! all the changes accumulated meanwhile in one transaction ([`start_sender`]);
//! or, with `PostgresConfig::notify_in_transaction`, inside the write's own
//! transaction. PostgreSQL delivers a notification to every listener when (and
//! only if) the transaction that sent it commits. The payload is text: the
//! writing store's instance id, then one item per [`Change`]:
//!
//! ```text
//! <instance hex> a<run id>.<next_seq> d<run id>.<due ms> s<run id>.<status code>
//!     t<run id>.<stream length>.<closed: 0 or 1>.<stream name> ...
//! ```
//!
//! (Stream names are `A-Z a-z 0-9 - . _ ~`: no space, no quote.)
//!
//! split into several notifications when longer than [`MAX_PAYLOAD`] (the
//! server's limit is 8000 bytes).
//!
//! Each store keeps one dedicated connection that LISTENs on its schema's
//! channel and re-publishes other stores' changes on its broadcast feed (its
//! own are published directly after commit, so they arrive without the round
//! trip and are skipped when they come back). The connection is checked every
//! [`PING_EVERY`] and re-opened with backoff when it fails; changes made while
//! it was down are not replayed, which is why engines also poll.

use std::time::Duration;

use deadpool_postgres::Pool;
use futures::StreamExt;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_postgres::{AsyncMessage, NoTls};
use workflow_store::{Change, RunId, RunStatus, StoreError, StreamName, Timestamp};

use crate::tx::Tx;

/// The longest payload one notification carries.
pub(crate) const MAX_PAYLOAD: usize = 7_000;

/// The `application_name` of listening connections (in `pg_stat_activity`).
pub(crate) const LISTENER_NAME: &str = "workflow-postgres listener";

/// How often the listening connection is checked.
const PING_EVERY: Duration = Duration::from_secs(30);

/// The channel a schema's changes are notified on.
pub(crate) fn channel(schema: &str) -> String {
    format!("{schema}_changes")
}

/// Encodes `changes` of the store `instance` as notification payloads
/// (repeated changes once).
pub(crate) fn encode(instance: u128, changes: &[Change]) -> Vec<String> {
    let head = format!("{instance:032x}");
    let mut out = Vec::new();
    let mut cur = head.clone();
    let mut seen = std::collections::HashSet::new();
    for change in changes {
        let item = match change {
            Change::Appended { run, next_seq } => format!(" a{run}.{next_seq}"),
            Change::Due { run, at } => format!(" d{run}.{}", at.0),
            Change::Status { run, status } => format!(" s{run}.{}", status.code()),
            Change::Stream {
                run,
                stream,
                len,
                closed,
            } => format!(" t{run}.{len}.{}.{stream}", u8::from(*closed)),
            _ => continue,
        };
        if !seen.insert(item.clone()) {
            continue;
        }
        if cur.len() + item.len() > MAX_PAYLOAD {
            out.push(std::mem::replace(&mut cur, head.clone()));
        }
        cur.push_str(&item);
    }
    if cur.len() > head.len() {
        out.push(cur);
    }
    out
}

/// Decodes a payload: the sender's instance id and its changes. Items that do
/// not parse (from a newer release, say) are skipped.
pub(crate) fn decode(payload: &str) -> Option<(u128, Vec<Change>)> {
    let mut parts = payload.split(' ');
    let instance = u128::from_str_radix(parts.next()?, 16).ok()?;
    let changes = parts
        .filter_map(|item| {
            let (tag, rest) = item.split_at_checked(1)?;
            let (run, n) = rest.split_once('.')?;
            if tag == "t" {
                let mut parts = n.splitn(3, '.');
                let len: u64 = parts.next()?.parse().ok()?;
                let closed = match parts.next()? {
                    "0" => false,
                    "1" => true,
                    _ => return None,
                };
                return Some(Change::Stream {
                    run: run.parse().ok()?,
                    stream: StreamName::new(parts.next()?).ok()?,
                    len,
                    closed,
                });
            }
            let run: RunId = run.parse().ok()?;
            let n: u64 = n.parse().ok()?;
            match tag {
                "a" => Some(Change::Appended { run, next_seq: n }),
                "d" => Some(Change::Due {
                    run,
                    at: Timestamp(n),
                }),
                "s" => Some(Change::Status {
                    run,
                    status: u8::try_from(n).ok().and_then(RunStatus::from_code)?,
                }),
                _ => None,
            }
        })
        .collect();
    Some((instance, changes))
}

/// The SQL that sends `payloads` on `channel` in a transaction of its own
/// with `synchronous_commit` off (nothing to wait for: a notification is a
/// hint, and the writes it announces are already durable).
pub(crate) fn notify_sql(channel: &str, payloads: &[String]) -> String {
    let mut sql = String::from("BEGIN; SET LOCAL synchronous_commit TO OFF; ");
    for payload in payloads {
        // Payloads are hex, ids, numbers and spaces; channels are plain
        // identifiers (checked schema names): nothing to quote.
        debug_assert!(!payload.contains('\'') && !channel.contains('\''));
        sql.push_str(&format!("SELECT pg_notify('{channel}', '{payload}'); "));
    }
    sql.push_str("COMMIT");
    sql
}

/// Starts the task that sends committed writes' notifications. PostgreSQL
/// serializes the commits of notifying transactions (a global lock held
/// through the commit), so rather than each write notifying, this task sends
/// whatever has accumulated in one transaction at a time: under load one
/// notifying commit serves many writes.
pub(crate) fn start_sender(
    pool: Pool,
    channel: String,
    instance: u128,
) -> (mpsc::UnboundedSender<Vec<Change>>, AbortOnDrop) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<Change>>();
    let task = tokio::spawn(async move {
        while let Some(mut changes) = rx.recv().await {
            while let Ok(more) = rx.try_recv() {
                changes.extend(more);
            }
            let payloads = encode(instance, &changes);
            if payloads.is_empty() {
                continue;
            }
            let sql = notify_sql(&channel, &payloads);
            match pool.get().await {
                Ok(obj) => {
                    let mut conn = Tx::new(obj);
                    conn.set_open(true);
                    match conn.batch_execute(&sql).await {
                        Ok(()) => conn.set_open(false),
                        Err(e) => {
                            tracing::debug!(error = %e, "could not send change notifications")
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "could not send change notifications"),
            }
        }
    });
    (tx, AbortOnDrop(task))
}

/// Aborts a task when dropped.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the listener task; resolves once it LISTENs (or failed to).
pub(crate) async fn start(
    config: tokio_postgres::Config,
    channel: String,
    instance: u128,
    feed: broadcast::Sender<Change>,
    timeout: Duration,
) -> Result<AbortOnDrop, StoreError> {
    let mut config = config;
    config.application_name(LISTENER_NAME);
    let (ready_tx, ready_rx) = oneshot::channel();
    let task = AbortOnDrop(tokio::spawn(listen_loop(
        config,
        channel.clone(),
        instance,
        feed,
        ready_tx,
    )));
    match tokio::time::timeout(timeout, ready_rx).await {
        Ok(Ok(Ok(()))) => Ok(task),
        Ok(Ok(Err(e))) => Err(StoreError::backend(
            format!("cannot LISTEN on channel {channel} for change notification"),
            e,
        )),
        Ok(Err(_)) => Err(StoreError::Backend {
            message: "the change-notification listener stopped while starting".into(),
            source: None,
        }),
        Err(_) => Err(StoreError::Backend {
            message: format!(
                "change-notification listener did not start within {timeout:?}: is PostgreSQL overloaded?"
            ),
            source: None,
        }),
    }
}

async fn listen_loop(
    config: tokio_postgres::Config,
    channel: String,
    instance: u128,
    feed: broadcast::Sender<Change>,
    ready: oneshot::Sender<Result<(), tokio_postgres::Error>>,
) {
    let mut ready = Some(ready);
    let mut backoff = Duration::from_millis(100);
    loop {
        match listen_once(&config, &channel, instance, &feed, &mut ready).await {
            Ok(()) => {
                tracing::warn!(
                    channel,
                    "change-notification connection closed; reconnecting"
                );
                backoff = Duration::from_millis(100);
            }
            Err(e) => {
                if let Some(r) = ready.take() {
                    let _ = r.send(Err(e));
                    return;
                }
                tracing::warn!(channel, error = %e, ?backoff,
                    "change-notification connection failed; reconnecting (engines poll meanwhile)");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One listening connection, until it fails.
async fn listen_once(
    config: &tokio_postgres::Config,
    channel: &str,
    instance: u128,
    feed: &broadcast::Sender<Change>,
    ready: &mut Option<oneshot::Sender<Result<(), tokio_postgres::Error>>>,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _driver = AbortOnDrop(tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(n).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "change-notification connection error");
                    return;
                }
            }
        }
    }));
    client.batch_execute(&format!("LISTEN {channel}")).await?;
    tracing::debug!(channel, "listening for changes");
    if let Some(r) = ready.take() {
        let _ = r.send(Ok(()));
    }
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            n = rx.recv() => {
                let Some(n) = n else { return Ok(()) };
                match decode(n.payload()) {
                    Some((from, changes)) if from != instance => {
                        for c in changes {
                            // No receivers is fine: nobody is waiting.
                            let _ = feed.send(c);
                        }
                    }
                    Some(_) => {}
                    None => tracing::debug!(payload = n.payload(), "ignored a malformed notification"),
                }
            }
            _ = ping.tick() => {
                match tokio::time::timeout(Duration::from_secs(10), client.simple_query("")).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(e),
                    Err(_) => return Ok(()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_split() {
        let run = RunId::new();
        let changes: Vec<Change> = (0..500)
            .map(|i| match i % 4 {
                0 => Change::Appended { run, next_seq: i },
                1 => Change::Due {
                    run,
                    at: Timestamp(1_700_000_000_000 + i),
                },
                // Names with dots survive.
                2 => Change::Stream {
                    run,
                    stream: StreamName::new(format!("s.{i}.x")).expect("valid name"),
                    len: i,
                    closed: i % 8 == 2,
                },
                // Repeated changes are sent once: a run of its own each.
                _ => Change::Status {
                    run: RunId::new(),
                    status: RunStatus::ALL[(i % 6) as usize],
                },
            })
            .collect();
        let payloads = encode(42, &changes);
        assert!(payloads.len() > 1);
        let mut back = Vec::new();
        for p in &payloads {
            assert!(p.len() <= MAX_PAYLOAD);
            let (from, c) = decode(p).expect("decodes");
            assert_eq!(from, 42);
            back.extend(c);
        }
        assert_eq!(back, changes);
        assert!(encode(1, &[]).is_empty());
        assert!(decode("zz a1").is_none());
        assert_eq!(decode("1 xbogus a.1").map(|(_, c)| c.len()), Some(0));
        // A stream item with a bad flag or name is skipped.
        let bad = format!("1 t{run}.3.2.progress t{run}.3.1.a/b t{run}.3.1");
        assert_eq!(decode(&bad).map(|(_, c)| c.len()), Some(0));
    }
}
