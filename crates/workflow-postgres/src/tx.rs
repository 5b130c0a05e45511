//! Pipelined transactions on a pooled connection.
//!
//! A write sends its statements in a few batches: `BEGIN`, the run lock and the
//! prefetch reads in one; the writes and `COMMIT` in another. Each batch is
//! sent at once and executed by the server in the order sent (tokio-postgres
//! puts a statement on the wire the first time its future is polled, and
//! [`join_in_order`] polls them in order), so a write costs two round trips
//! plus the commit's WAL flush.
//!
//! [`Tx`] tracks whether a transaction is open on its connection; dropped
//! while one is (the caller's future was cancelled, or a connection failed
//! mid-way), it takes the connection out of the pool and closes it, so the
//! server rolls back and no pooled connection is ever left inside a transaction.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use deadpool_postgres::{ClientWrapper, Object};
use futures::future::{maybe_done, BoxFuture, MaybeDone};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Error, Row};

/// An owned statement parameter.
pub(crate) type Param = Box<dyn ToSql + Sync + Send>;

/// Boxes a parameter.
pub(crate) fn p<T: ToSql + Sync + Send + 'static>(v: T) -> Param {
    Box::new(v)
}

/// One statement of a batch.
pub(crate) enum Step<'a> {
    /// A statement without parameters (`BEGIN`, `COMMIT`, …), simple protocol.
    Simple(&'static str),
    /// A prepared (cached) statement with its parameters.
    Query(&'a str, Vec<Param>),
}

/// Runs futures to completion, polling them in order (so the first poll of
/// each, which sends its statement, happens in order); results in order.
pub(crate) async fn join_in_order<T>(futs: Vec<BoxFuture<'_, T>>) -> Vec<T> {
    let mut slots: Vec<MaybeDone<BoxFuture<'_, T>>> = futs.into_iter().map(maybe_done).collect();
    futures::future::poll_fn(|cx| {
        let mut done = true;
        for slot in slots.iter_mut() {
            if Pin::new(slot).poll(cx).is_pending() {
                done = false;
            }
        }
        if done {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    slots
        .iter_mut()
        .filter_map(|s| Pin::new(s).take_output())
        .collect()
}

/// A pooled connection and whether a transaction is open on it.
pub(crate) struct Tx {
    obj: Option<Object>,
    open: bool,
}

impl Tx {
    /// Wraps a connection on which no transaction is open.
    pub(crate) fn new(obj: Object) -> Tx {
        Tx {
            obj: Some(obj),
            open: false,
        }
    }

    fn client(&self) -> &ClientWrapper {
        // `obj` is only taken in `drop`.
        self.obj.as_ref().expect("Tx used after drop")
    }

    /// Marks the transaction open (before sending `BEGIN`) or closed (after a
    /// `COMMIT` or `ROLLBACK` went through).
    pub(crate) fn set_open(&mut self, open: bool) {
        self.open = open;
    }

    /// Sends `steps` at once and waits for all their results, in order. A
    /// failed prepare fails the whole batch before anything is sent.
    pub(crate) async fn run(
        &self,
        steps: &[Step<'_>],
    ) -> Result<Vec<Result<Vec<Row>, Error>>, Error> {
        let client = self.client();
        let mut statements = Vec::with_capacity(steps.len());
        for step in steps {
            statements.push(match step {
                Step::Simple(_) => None,
                Step::Query(sql, _) => Some(client.prepare_cached(sql).await?),
            });
        }
        let futs: Vec<BoxFuture<'_, Result<Vec<Row>, Error>>> = steps
            .iter()
            .zip(statements)
            .map(
                |(step, statement)| -> BoxFuture<'_, Result<Vec<Row>, Error>> {
                    match (step, statement) {
                        (Step::Query(_, params), Some(statement)) => Box::pin(async move {
                            let refs: Vec<&(dyn ToSql + Sync)> =
                                params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect();
                            client.query(&statement, &refs).await
                        }),
                        (Step::Simple(sql), _) | (Step::Query(sql, _), None) => Box::pin(
                            async move { client.batch_execute(sql).await.map(|()| Vec::new()) },
                        ),
                    }
                },
            )
            .collect();
        Ok(join_in_order(futs).await)
    }

    /// Runs SQL (several statements, no parameters) in the simple protocol.
    pub(crate) async fn batch_execute(&self, sql: &str) -> Result<(), Error> {
        self.client().batch_execute(sql).await
    }

    /// Rolls back the open transaction, if any. A connection that cannot even
    /// do that is closed on drop.
    pub(crate) async fn rollback(&mut self) {
        if self.open && self.client().batch_execute("ROLLBACK").await.is_ok() {
            self.open = false;
        }
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if self.open {
            if let Some(obj) = self.obj.take() {
                tracing::debug!("closing a PostgreSQL connection left inside a transaction");
                drop(Object::take(obj));
            }
        }
    }
}
