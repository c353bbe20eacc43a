//! The thread that runs the store's dedup pass (store/dedup.rs) in the background, started
//! by [`crate::LocalBackend`]: never on a put's path, and only when the store is quiet (no
//! change for [`QUIET`], no upload open and no content open for reading), so it does not take CPU and disk from
//! transfers; after [`MAX_DEFER`] of waiting for quiet it runs anyway, one content at a
//! time.
//!
//! It holds the store only by a weak reference between passes and stops once the store is
//! dropped; a pass in progress is cancelled (its temp file removed, nothing swapped) as soon
//! as the worker holds the last reference, so closing a store is not held up by it.

use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use crate::Store;

/// How long the store must see no change before a pass starts.
pub(crate) const QUIET: Duration = Duration::from_secs(2);
/// The longest a waiting content is deferred for lack of quiet.
pub(crate) const MAX_DEFER: Duration = Duration::from_secs(600);
/// How often the worker looks again without being woken.
const TICK: Duration = Duration::from_secs(1);

/// A counter of changes that the worker waits on.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    changes: Mutex<u64>,
    cv: Condvar,
}

impl Signal {
    /// Called after every change.
    pub(crate) fn wake(&self) {
        let mut n = self.changes.lock().unwrap_or_else(PoisonError::into_inner);
        *n = n.wrapping_add(1);
        self.cv.notify_all();
    }

    /// The counter once it differs from `seen`, or after `timeout`.
    fn wait(&self, seen: u64, timeout: Duration) -> u64 {
        let n = self.changes.lock().unwrap_or_else(PoisonError::into_inner);
        let (n, _) = self
            .cv
            .wait_timeout_while(n, timeout, |n| *n == seen)
            .unwrap_or_else(PoisonError::into_inner);
        *n
    }
}

/// Starts the worker for `store` unless one runs already.
pub(crate) fn start(store: &Arc<Store>) {
    use std::sync::atomic::Ordering;
    if store.dedup_worker_started.swap(true, Ordering::SeqCst) {
        return;
    }
    let weak = Arc::downgrade(store);
    let signal = store.dedup_signal.clone();
    let spawned = std::thread::Builder::new()
        .name("ferry-dedup".into())
        .spawn(move || run(&weak, &signal));
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start the dedup worker; contents stay whole");
    }
}

fn run(weak: &Weak<Store>, signal: &Signal) {
    let mut seen = signal.wait(0, Duration::ZERO);
    let mut last_change = Instant::now();
    let mut waiting_since: Option<Instant> = None;
    let mut busy = false;
    loop {
        let now = signal.wait(seen, if busy { Duration::ZERO } else { TICK });
        if now != seen {
            seen = now;
            last_change = Instant::now();
        }
        busy = false;
        let Some(store) = weak.upgrade() else {
            return; // the store is closed
        };
        let pending = match store.dedup_pending() {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "dedup worker: could not read the queue");
                continue;
            }
        };
        if pending == 0 {
            waiting_since = None;
            continue;
        }
        let since = *waiting_since.get_or_insert_with(Instant::now);
        let quiet = last_change.elapsed() >= QUIET && !store.transfers_open();
        if !quiet && since.elapsed() < MAX_DEFER {
            continue;
        }
        let closing = || Arc::strong_count(&store) == 1;
        match store.dedup_pass_with(1, &closing) {
            Ok(report) => {
                busy = report.examined > 0;
                if report.rewritten > 0 {
                    tracing::info!(saved = report.saved, "deduplicated a content");
                }
            }
            Err(e) => tracing::warn!(error = %e, "dedup pass failed"),
        }
        waiting_since = None;
    }
}
