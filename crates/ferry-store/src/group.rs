//! The queue in front of [`Store::commit_batch`]: small puts made while a batch is being
//! committed wait together and go in the next batch, so under load every batch carries all
//! that arrived during the one before (group commit), and a lone put waits for nothing.
//!
//! At most one task commits at a time. The first put that finds none running starts one on
//! tokio's blocking pool; that task commits batches until the queue is empty, then stops.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use crate::store::SmallPut;
use crate::{Entry, Store, StoreError};

/// Most puts in one batch.
const MAX_PUTS: usize = 512;
/// Most content bytes in one batch (a batch takes at least one put, whatever its size).
const MAX_BYTES: usize = 32 << 20;

type Waiting = (SmallPut, oneshot::Sender<Result<Entry, StoreError>>);

/// Small puts waiting for a commit.
#[derive(Debug, Default)]
pub(crate) struct Group {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    waiting: Vec<Waiting>,
    /// Whether a task is committing (and will take what waits before it stops).
    running: bool,
}

impl Group {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A batch is taken whole under the lock; a panic elsewhere leaves it consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `put` and returns where its result will come. Starts a committing task if
    /// none runs; must be called inside a tokio runtime.
    pub(crate) fn queue(
        self: &Arc<Self>,
        store: &Arc<Store>,
        put: SmallPut,
    ) -> oneshot::Receiver<Result<Entry, StoreError>> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut state = self.state();
            state.waiting.push((put, tx));
            !std::mem::replace(&mut state.running, true)
        };
        if start {
            let (group, store) = (self.clone(), store.clone());
            tokio::task::spawn_blocking(move || group.commit_all(&store));
        }
        rx
    }

    /// Commits batches until nothing waits.
    fn commit_all(&self, store: &Store) {
        let mut stop = Stopping {
            group: self,
            armed: true,
        };
        // Bounded: every round takes at least one put off the queue, and stops when none
        // is left (new puts are taken by this task only while it runs).
        loop {
            let batch = {
                let mut state = self.state();
                if state.waiting.is_empty() {
                    state.running = false;
                    stop.armed = false;
                    return;
                }
                take_batch(&mut state.waiting)
            };
            let (puts, senders): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            let results = store.commit_batch(puts);
            for (tx, result) in senders.into_iter().zip(results) {
                // The caller may have gone (its connection closed): the put stays committed.
                let _ = tx.send(result);
            }
        }
    }
}

/// The next batch from the front of `waiting`: at most [`MAX_PUTS`] puts and
/// [`MAX_BYTES`] bytes, and at least one put.
fn take_batch(waiting: &mut Vec<Waiting>) -> Vec<Waiting> {
    let mut bytes = 0usize;
    let mut n = 0;
    for (put, _) in waiting.iter().take(MAX_PUTS) {
        bytes = bytes.saturating_add(put.content.len());
        if n > 0 && bytes > MAX_BYTES {
            break;
        }
        n += 1;
    }
    let rest = waiting.split_off(n);
    std::mem::replace(waiting, rest)
}

/// If the committing task ends without emptying the queue (a panic), the next put starts a
/// new one, and the puts that waited hear that they failed (their senders drop).
struct Stopping<'a> {
    group: &'a Group,
    armed: bool,
}

impl Drop for Stopping<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut state = self.group.state();
            state.running = false;
            state.waiting.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(len: usize) -> Waiting {
        let (tx, _rx) = oneshot::channel();
        let content = vec![0u8; len];
        let put = SmallPut {
            source: "s".into(),
            expected: *blake3::hash(&content).as_bytes(),
            content,
            meta: Default::default(),
            by: "b".into(),
            now: 0,
        };
        (put, tx)
    }

    #[test]
    fn batches_are_bounded_in_puts_and_bytes_and_never_empty() {
        let mut waiting: Vec<_> = (0..MAX_PUTS + 3).map(|_| put(1)).collect();
        assert_eq!(take_batch(&mut waiting).len(), MAX_PUTS);
        assert_eq!(waiting.len(), 3);

        let mut waiting: Vec<_> = (0..4).map(|_| put(MAX_BYTES / 3)).collect();
        assert_eq!(take_batch(&mut waiting).len(), 3);
        assert_eq!(waiting.len(), 1);

        // One put larger than the byte bound still goes.
        let mut waiting = vec![put(MAX_BYTES + 1), put(1)];
        assert_eq!(take_batch(&mut waiting).len(), 1);
        assert_eq!(waiting.len(), 1);
    }
}
