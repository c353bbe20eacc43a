//! The in-process change feed: a wake-up channel over the store's change log.
//!
//! The store calls a hook after every committed change (see
//! [`Store::on_change`](ferry_store::Store::on_change)); the server installs one that bumps a
//! `tokio::sync::watch` channel holding the latest sequence number. A [`ChangeFeed`] is a
//! receiver of that channel plus the store: watch streams use it, and so can code embedded in
//! the same process (the LAN mesh), since a store directory can be open only once. Changes
//! made through [`BoundServer::store`](crate::BoundServer::store), replica commits included,
//! wake every feed like the server's own.

use std::sync::Arc;

use ferry_store::{Changes, Store};
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
pub struct ChangeFeed {
    store: Arc<Store>,
    rx: watch::Receiver<u64>,
}

impl std::fmt::Debug for ChangeFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeFeed")
            .field("last_seq", &*self.rx.borrow())
            .finish_non_exhaustive()
    }
}

/// Moves the channel forward to `seq`. Hooks of concurrent commits may run out of order, so
/// it never moves back.
fn advance(tx: &watch::Sender<u64>, seq: u64) {
    tx.send_if_modified(|latest| {
        let newer = seq > *latest;
        if newer {
            *latest = seq;
        }
        newer
    });
}

impl ChangeFeed {
    /// Installs the wake-up hook on `store` and returns the first feed.
    pub(crate) fn install(store: Arc<Store>) -> Result<Self, Error> {
        let (tx, rx) = watch::channel(0);
        let tx = Arc::new(tx);
        let hook_tx = tx.clone();
        store.on_change(move |seq| advance(&hook_tx, seq));
        // Read after installing the hook, so that no change can fall in between.
        advance(&tx, store.last_seq()?);
        Ok(Self { store, rx })
    }

    /// The store the feed reads (the server's own instance).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
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
            .map_err(|_| Error::Internal("the store's change hook is gone".into()))
    }

    /// Reads up to `limit` changes after `after` now, without waiting (off the async
    /// threads).
    pub async fn read(&self, after: u64, limit: usize) -> Result<Changes, Error> {
        let store = self.store.clone();
        crate::pipe::join(tokio::task::spawn_blocking(move || {
            Ok(store.changes_since(after, limit)?)
        }))
        .await
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
