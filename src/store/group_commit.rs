//! Group commit: concurrent callers queue their work; whoever takes the writer lock runs
//! everything queued in one batch (one transaction, for the callers here) and answers each
//! caller with its own outcome. A caller still returns only after its batch is done.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::StoreError;

/// The answer channel of one queued item.
pub(crate) type Reply<R> = oneshot::Sender<Result<R, StoreError>>;

/// Items waiting for the next batch, and the lock the running batch holds.
pub(crate) struct GroupCommit<T, R> {
    waiting: Mutex<Vec<(T, Reply<R>)>>,
    writer: Arc<tokio::sync::Mutex<()>>,
    /// Most items one batch takes; the rest wait for the next.
    max: usize,
}

impl<T, R> std::fmt::Debug for GroupCommit<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

impl<T: Send + 'static, R: Send + 'static> GroupCommit<T, R> {
    /// A queue whose batches take at most `max` items.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            waiting: Mutex::new(Vec::new()),
            writer: Arc::new(tokio::sync::Mutex::new(())),
            max,
        }
    }

    /// Queues `item` and waits for its outcome. `run` is handed a batch (this item's, or one
    /// another caller formed that contains it) and must answer every item in it.
    pub(crate) async fn submit<F, Fut>(&self, item: T, run: F) -> Result<R, StoreError>
    where
        F: Fn(Vec<(T, Reply<R>)>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (reply, mut answer) = oneshot::channel();
        self.lock_waiting().push((item, reply));
        loop {
            tokio::select! {
                biased;
                answer = &mut answer => {
                    return answer.unwrap_or_else(|_| Err(StoreError::Corrupt(
                        "the batch writer stopped before answering".into(),
                    )));
                }
                guard = self.writer.clone().lock_owned() => {
                    // Holding the lock, the previous batch has answered; ours is queued or done.
                    let batch: Vec<_> = {
                        let mut waiting = self.lock_waiting();
                        let take = waiting.len().min(self.max);
                        waiting.drain(..take).collect()
                    };
                    if batch.is_empty() {
                        continue;
                    }
                    // Spawned, so a caller that goes away (a closed connection drops its
                    // future) cannot abandon the others in its batch.
                    let work = run(batch);
                    tokio::spawn(async move {
                        work.await;
                        drop(guard);
                    });
                }
            }
        }
    }

    fn lock_waiting(&self) -> std::sync::MutexGuard<'_, Vec<(T, Reply<R>)>> {
        // A panic while holding this lock cannot leave the Vec half-updated.
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Answers each caller of a batch with its own outcome, or every caller with the error that
/// stopped the whole batch.
pub(crate) fn answer_each<R>(
    replies: Vec<Reply<R>>,
    outcomes: Result<Vec<Result<R, StoreError>>, StoreError>,
) {
    match outcomes {
        Ok(outcomes) => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(outcome);
            }
        }
        Err(error) => {
            let message = error.to_string();
            for reply in replies {
                let _ = reply.send(Err(StoreError::Stopped(message.clone())));
            }
        }
    }
}
