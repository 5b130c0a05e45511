//! Change notification: a subscriber wakes on a write, and learns when a
//! run's status changes.

use std::time::Duration;

use super::{fresh, hook_created, new_run, payload, skipped, token, Backend};
use crate::event::EventData;
use crate::record::{Change, RunStatus};
use crate::store::Store;

/// Runs the notification checks.
pub async fn run<B: Backend>(b: &B) {
    subscriber_wakes_on_write(b).await;
}

async fn next_matching(
    rx: &mut tokio::sync::broadcast::Receiver<Change>,
    want: impl Fn(&Change) -> bool,
    what: &str,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(c)) if want(&c) => return,
            Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(e)) => panic!("notification: feed closed while waiting for {what}: {e}"),
            Err(_) => panic!("notification: no {what} notification within 10 s"),
        }
    }
}

/// Appends, resumes and run creation each notify a waiting subscriber; a
/// run that ends is announced with its status.
pub async fn subscriber_wakes_on_write<B: Backend>(b: &B) {
    let (store, _) = fresh(b).await;
    let Some(mut rx) = store.subscribe() else {
        skipped(
            "notification::subscriber_wakes_on_write",
            "the backend has no change feed (workers poll)",
        );
        return;
    };
    let run = new_run(&store, "wf").await;
    next_matching(
        &mut rx,
        |c| matches!(c, Change::Due { run: r, .. } if *r == run),
        "Due after create_run",
    )
    .await;
    let waiter = {
        let mut rx = store.subscribe().expect("second subscriber");
        tokio::spawn(async move {
            next_matching(
                &mut rx,
                |c| matches!(c, Change::Appended { run: r, next_seq: 3 } if *r == run),
                "Appended",
            )
            .await;
        })
    };
    tokio::task::yield_now().await;
    store
        .append(
            run,
            vec![EventData::RunStarted, hook_created("hook:0", "notify")],
            None,
        )
        .await
        .expect("append");
    waiter.await.expect("waiter task");
    store
        .resume_hook(&token("notify"), payload(&1))
        .await
        .expect("resume");
    next_matching(
        &mut rx,
        |c| matches!(c, Change::Appended { run: r, next_seq: 4 } if *r == run),
        "Appended after resume",
    )
    .await;
    // A status change is announced, so that a waiter for a run's end need
    // not read the run after each of its appends.
    store
        .append(run, vec![EventData::RunCancelled], None)
        .await
        .expect("cancel");
    next_matching(
        &mut rx,
        |c| matches!(c, Change::Status { run: r, status: RunStatus::Cancelled } if *r == run),
        "Status(cancelled) after the run ended",
    )
    .await;
}
