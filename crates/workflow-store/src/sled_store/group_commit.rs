//! Group commit: concurrent writers share one sled transaction and one flush.
//!
//! A writer puts its write (a *job*) on the pending list. If no leader is
//! running, the writer starts one (on tokio's blocking pool); either way it then
//! waits, without holding a thread, for its job to be completed. The leader loops:
//! it takes every pending job, commits them in one sled transaction, flushes
//! once, completes each job (which wakes its writer), and starts over, until
//! nothing is pending; then it stops.
//!
//! While the leader commits and flushes a batch, new writers queue up; the next
//! round takes them all. So a lone writer pays one transaction and one flush per
//! write, and under concurrency both are shared by a whole batch, whose size
//! grows with the number of writers.
//!
//! Sharing only the flush (each writer committing its own transaction, then
//! waiting for a shared flush) is not enough with sled 0.34: every transaction
//! seals sled's current log buffer and writes it out, so the disk writes grow
//! with the number of transactions, whatever the number of flushes. Measured on
//! the development machine (2 cores) with one shared flush per batch, raw sled
//! 3-tree transactions reached only 1.6x the single-thread rate with 64 threads;
//! batching the transactions as well is what lets throughput grow with
//! concurrency. Waking writers through tokio rather than parking one thread per
//! writer on a lock avoids a context switch per write, which dominated the
//! profile of the lock-based version.
//!
//! Readers must not see a batch between its transaction and the end of its
//! flush; `visibility.rs` sees to that.
//!
//! This module knows nothing about sled or jobs: the commit is a closure, which is
//! how the tests below drive it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The pending list, whether a leader runs, and statistics (see the module docs).
#[derive(Debug)]
pub(crate) struct GroupCommit<J> {
    queue: Mutex<Queue<J>>,
    /// Batches committed (one transaction and one flush each).
    batches: AtomicU64,
    /// Jobs committed in them.
    jobs: AtomicU64,
}

#[derive(Debug)]
struct Queue<J> {
    pending: Vec<Arc<J>>,
    /// A leader is running and will take `pending` before it stops.
    leading: bool,
}

impl<J> Default for GroupCommit<J> {
    fn default() -> Self {
        GroupCommit {
            queue: Mutex::new(Queue {
                pending: Vec::new(),
                leading: false,
            }),
            batches: AtomicU64::new(0),
            jobs: AtomicU64::new(0),
        }
    }
}

impl<J> GroupCommit<J> {
    /// Queues `jobs` (they end up in the same batch). Returns `true` if no leader
    /// is running: the caller must then run [`GroupCommit::lead`], which will
    /// commit them; otherwise the running leader will.
    #[must_use = "when it returns true, the caller must run `lead`"]
    pub(crate) fn enqueue(&self, jobs: impl IntoIterator<Item = Arc<J>>) -> bool {
        let mut queue = self.lock();
        queue.pending.extend(jobs);
        let start = !queue.leading && !queue.pending.is_empty();
        queue.leading |= start;
        start
    }

    /// Commits batches with `commit` until nothing is pending. Blocks. `commit`
    /// must complete every job of the batch it is given (with an error if the
    /// batch failed); if it panics, the panic is logged, the jobs of that batch
    /// are dropped uncompleted (their writers must treat that as a failure) and
    /// the leader goes on with the next batch.
    pub(crate) fn lead(&self, mut commit: impl FnMut(&[Arc<J>])) {
        loop {
            let batch = {
                let mut queue = self.lock();
                if queue.pending.is_empty() {
                    queue.leading = false;
                    return;
                }
                std::mem::take(&mut queue.pending)
            };
            self.batches.fetch_add(1, Ordering::Relaxed);
            self.jobs.fetch_add(batch.len() as u64, Ordering::Relaxed);
            if catch_unwind(AssertUnwindSafe(|| commit(&batch))).is_err() {
                tracing::error!(
                    writes = batch.len(),
                    "a group commit panicked: its writes are reported as failed"
                );
            }
        }
    }

    /// Batches committed so far (each one transaction and one flush).
    pub(crate) fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Jobs committed so far.
    pub(crate) fn jobs(&self) -> u64 {
        self.jobs.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Queue<J>> {
        // Nothing panics while the lock is held (commits run outside it).
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::Barrier;
    use std::time::{Duration, Instant};

    use super::*;

    #[derive(Default)]
    struct TestJob(AtomicBool);

    impl TestJob {
        fn is_complete(&self) -> bool {
            self.0.load(Ordering::SeqCst)
        }

        fn wait(&self) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !self.is_complete() {
                assert!(Instant::now() < deadline, "job never completed");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    fn complete_all(batch: &[Arc<TestJob>]) {
        for job in batch {
            job.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_lone_writer_leads_and_commits_its_own_batch() {
        let gc = GroupCommit::default();
        for n in 1..=3 {
            let job = Arc::new(TestJob::default());
            assert!(gc.enqueue([job.clone()]));
            gc.lead(|batch| {
                assert_eq!(batch.len(), 1);
                complete_all(batch);
            });
            assert!(job.is_complete());
            assert_eq!((gc.batches(), gc.jobs()), (n, n));
        }
    }

    #[test]
    fn jobs_enqueued_together_share_a_batch() {
        let gc = GroupCommit::default();
        let jobs: Vec<_> = (0..5).map(|_| Arc::new(TestJob::default())).collect();
        assert!(gc.enqueue(jobs.clone()));
        gc.lead(complete_all);
        assert!(jobs.iter().all(|j| j.is_complete()));
        assert_eq!((gc.batches(), gc.jobs()), (1, 5));
    }

    #[test]
    fn a_second_writer_does_not_start_a_second_leader() {
        let gc = GroupCommit::default();
        assert!(gc.enqueue([Arc::new(TestJob::default())]));
        assert!(!gc.enqueue([Arc::new(TestJob::default())]));
        gc.lead(complete_all);
        assert_eq!((gc.batches(), gc.jobs()), (1, 2));
        assert!(
            gc.enqueue([Arc::new(TestJob::default())]),
            "the leader stopped"
        );
    }

    #[test]
    fn writers_queued_behind_a_leader_share_the_next_batch() {
        let gc = Arc::new(GroupCommit::default());
        let writers = 64;
        let start = Arc::new(Barrier::new(writers));
        let threads: Vec<_> = (0..writers)
            .map(|_| {
                let (gc, start) = (gc.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    let job = Arc::new(TestJob::default());
                    if gc.enqueue([job.clone()]) {
                        gc.lead(|batch| {
                            // A slow disk: everyone else queues meanwhile.
                            std::thread::sleep(Duration::from_millis(20));
                            complete_all(batch);
                        });
                    }
                    job.wait();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(gc.jobs(), writers as u64);
        assert!(
            gc.batches() <= 3,
            "{} batches for {writers} writers: they were not shared",
            gc.batches()
        );
    }

    #[test]
    fn a_panicking_commit_fails_its_batch_and_the_leader_goes_on() {
        let gc = GroupCommit::default();
        let doomed = Arc::new(TestJob::default());
        assert!(gc.enqueue([doomed.clone()]));
        let mut first = true;
        let next = Arc::new(TestJob::default());
        gc.lead(|batch| {
            if std::mem::take(&mut first) {
                // Another writer queues while this batch is being committed.
                assert!(!gc.enqueue([next.clone()]));
                panic!("commit failed hard");
            }
            complete_all(batch);
        });
        assert!(!doomed.is_complete());
        assert!(next.is_complete());
        assert!(
            gc.enqueue([Arc::new(TestJob::default())]),
            "the leader stopped"
        );
    }
}
