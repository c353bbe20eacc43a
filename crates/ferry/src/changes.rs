//! The change feed: a wake-up channel over the backend's change log.
//!
//! Every backend moves a `tokio::sync::watch` signal to the last sequence number after each
//! change it makes visible ([`Index::subscribe`]). A [`ChangeFeed`] is a receiver of that
//! signal plus the backend: watch streams use it, and so can code embedded in the same
//! process (the LAN mesh). Changes made through
//! [`BoundServer::store`](crate::BoundServer::store), replica commits included, wake every
//! feed like the server's own.

use ferry_backend::{Changes, Index};
use ferry_store::LocalBackend;
use tokio::sync::watch;

use crate::Error;

/// Follows a server's change log: wakes up when something changed, reads what did.
///
/// Cloning gives an independent follower. Obtain one from
/// [`BoundServer::changes`](crate::BoundServer::changes).
///
/// ```no_run
/// # async fn demo(bound: &ferry::BoundServer) -> Result<(), ferry::Error> {
/// let mut feed = bound.changes();
/// let mut after = feed.last_seq(); // from now on
/// loop {
///     let page = feed.next_batch(after, 256).await?;
///     if page.gap {
///         eprintln!("missed changes before {}", page.oldest);
///     }
///     for change in &page.changes {
///         println!("{} v{} by {}", change.source, change.version, change.by);
///         after = change.seq;
///     }
/// }
/// # }
/// ```
#[derive(Clone)]
pub struct ChangeFeed<B = LocalBackend> {
    backend: B,
    rx: watch::Receiver<u64>,
}

impl<B> std::fmt::Debug for ChangeFeed<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeFeed")
            .field("last_seq", &*self.rx.borrow())
            .finish_non_exhaustive()
    }
}

impl<B: Index + Clone> ChangeFeed<B> {
    /// Follows `backend`'s change log from its last change on.
    pub(crate) fn new(backend: B) -> Self {
        let rx = backend.subscribe();
        Self { backend, rx }
    }

    /// The latest sequence number the feed has been told about (0: no change yet).
    pub fn last_seq(&self) -> u64 {
        *self.rx.borrow()
    }

    /// Marks the current state as seen and returns its sequence number: a later
    /// [`ChangeFeed::changed`] waits for a change after this call. Call it before reading
    /// the log, then wait with `changed`, and no change can slip between the two.
    pub fn mark_seen(&mut self) -> u64 {
        *self.rx.borrow_and_update()
    }

    /// Waits until a change newer than the last [`ChangeFeed::mark_seen`] (or
    /// [`ChangeFeed::next_batch`]) is committed. Cancel-safe.
    pub async fn changed(&mut self) -> Result<(), Error> {
        self.rx
            .changed()
            .await
            .map_err(|_| Error::Internal("the backend's change signal is gone".into()))
    }

    /// Reads up to `limit` changes after `after` now, without waiting.
    pub async fn read(&self, after: u64, limit: usize) -> Result<Changes, Error> {
        Ok(self.backend.changes_since(after, limit).await?)
    }

    /// Waits until there are changes after `after`, then returns up to `limit` of them
    /// (oldest first). Returns at once with `gap` set if changes after `after` were pruned,
    /// or if `after` is beyond the log (then `changes` holds what the log has from its
    /// oldest entry). Cancel-safe.
    pub async fn next_batch(&mut self, after: u64, limit: usize) -> Result<Changes, Error> {
        loop {
            let latest = self.mark_seen();
            if latest != after {
                let page = self.read(after, limit.max(1)).await?;
                if !page.changes.is_empty() || page.gap {
                    return Ok(page);
                }
            }
            self.changed().await?;
        }
    }
}
