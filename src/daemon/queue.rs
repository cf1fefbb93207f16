//! The queue: hands settled bundles to at most `concurrency` workers in
//! arrival order, schedules retries after a backoff, retries a bundle whose
//! worker panicked (rather than forgetting it until the next restart), and
//! on stop gives in-flight imports `grace` to finish.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::QUEUE_CAPACITY;
use super::worker::Attempt;
use crate::metrics::{Metrics, Outcome};
use crate::push::registry::RetryPolicy;
use crate::watch::ReadyBundle;

/// How the queue runs.
pub(super) struct Queue {
    /// Where the queue length and failed workers are counted.
    pub metrics: Arc<Metrics>,
    /// The backoff between attempts.
    pub retry: RetryPolicy,
    /// Workers at once.
    pub concurrency: usize,
    /// Time in-flight work gets after a stop.
    pub grace: Duration,
}

/// The delay before retrying after the `attempt`-th failure: the import
/// retry policy (exponential with jitter, capped, no limit).
pub(super) fn backoff(retry: &RetryPolicy, attempt: u32) -> Duration {
    retry
        .delay(attempt.max(1), None)
        .unwrap_or(retry.max_backoff)
}

impl Queue {
    /// Runs until `stop` turns true (or `ready` closes), handing each
    /// bundle to `work`.
    pub(super) async fn run<W, F>(
        self,
        mut ready: mpsc::Receiver<ReadyBundle>,
        requeue: mpsc::Sender<ReadyBundle>,
        mut stop: watch::Receiver<bool>,
        work: W,
    ) where
        W: Fn(ReadyBundle) -> F,
        F: Future<Output = Attempt> + Send + 'static,
    {
        let concurrency = self.concurrency.max(1);
        let mut running: JoinSet<(ReadyBundle, Attempt)> = JoinSet::new();
        // What each worker handles, so a worker that panics is retried.
        let mut handling: HashMap<tokio::task::Id, ReadyBundle> = HashMap::new();
        let mut retries = JoinSet::new();
        loop {
            self.metrics
                .set_queued(QUEUE_CAPACITY.saturating_sub(requeue.capacity()));
            tokio::select! {
                () = stopped(&mut stop) => break,
                Some(done) = running.join_next_with_id(), if !running.is_empty() => {
                    let retry = match done {
                        Ok((id, (bundle, attempt))) => {
                            handling.remove(&id);
                            match attempt {
                                Attempt::RetryAfter(delay) => Some((bundle, delay)),
                                Attempt::Done => None,
                            }
                        }
                        Err(error) => {
                            let bundle = handling.remove(&error.id());
                            let delay = backoff(&self.retry, 1);
                            tracing::error!(error = %error, bundle = ?bundle.as_ref().map(|b| &b.bundle), retry_in = ?delay, "an import worker failed; will retry");
                            self.metrics.bundle_finished(Outcome::Failed);
                            bundle.filter(|_| error.is_panic()).map(|b| (b, delay))
                        }
                    };
                    if let Some((bundle, delay)) = retry {
                        let requeue = requeue.clone();
                        let mut stop = stop.clone();
                        retries.spawn(async move {
                            tokio::select! {
                                () = tokio::time::sleep(delay) => {
                                    let _ = requeue.send(bundle).await;
                                }
                                () = stopped(&mut stop) => {}
                            }
                        });
                    }
                    while retries.try_join_next().is_some() {}
                }
                bundle = ready.recv(), if running.len() < concurrency => {
                    let Some(bundle) = bundle else { break };
                    let attempt = work(bundle.clone());
                    let handled = bundle.clone();
                    let task = running.spawn(async move { (bundle, attempt.await) });
                    handling.insert(task.id(), handled);
                }
            }
        }
        retries.abort_all();
        if running.is_empty() {
            return;
        }
        let deadline = tokio::time::sleep(self.grace);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = running.join_next() => if next.is_none() { break },
                () = &mut deadline => {
                    tracing::warn!(imports = running.len(), "grace period over; in-flight imports resume at the next start");
                    running.abort_all();
                    break;
                }
            }
        }
    }
}

/// Resolves once the daemon is asked to stop.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::watch::FileState;

    #[tokio::test]
    async fn a_worker_that_panics_is_retried_not_forgotten() {
        let metrics = Arc::new(Metrics::new());
        let queue = Queue {
            metrics: Arc::clone(&metrics),
            retry: RetryPolicy {
                max_attempts: u32::MAX,
                initial_backoff: Duration::from_millis(10),
                max_backoff: Duration::from_millis(20),
            },
            concurrency: 1,
            grace: Duration::from_secs(1),
        };
        let (ready_tx, ready_rx) = mpsc::channel(8);
        let (stop_tx, stop_rx) = watch::channel(false);
        let calls = Arc::new(AtomicU32::new(0));
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        let counted = Arc::clone(&calls);
        let state = FileState {
            size: 1,
            mtime_ns: 1,
        };
        ready_tx
            .send(ReadyBundle {
                bundle: "/drop/a.zst".into(),
                signature: "/drop/a.sig.bin".into(),
                state,
                signature_state: state,
                other_signatures: Vec::new(),
            })
            .await
            .expect("queue");
        let running = tokio::spawn(queue.run(ready_rx, ready_tx, stop_rx, move |bundle| {
            let call = counted.fetch_add(1, Ordering::SeqCst);
            let done = done_tx.clone();
            async move {
                assert!(call > 0, "the first attempt panics");
                let _ = done.send(bundle.bundle);
                Attempt::Done
            }
        }));
        let handled = tokio::time::timeout(Duration::from_secs(10), done_rx.recv())
            .await
            .expect("the bundle was not retried after the panic");
        assert_eq!(handled, Some("/drop/a.zst".into()));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let _ = stop_tx.send(true);
        running.await.expect("queue stops");
    }
}
