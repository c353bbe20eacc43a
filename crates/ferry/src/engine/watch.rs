//! `watch`: a principal's view of the change log under a prefix, batch by batch.
//!
//! [`Engine::watch`] checks the request and says where the log stands; the [`Watcher`] it
//! returns reads the log after its cursor (off the async threads) and keeps the changes the
//! principal may see: under the prefix, and a source its role may list (an event tells what
//! a listing would). When older changes are gone it skips to the oldest the log still has
//! and says so. The front sends each batch, keeps the stream alive with pings, and re-checks
//! before each batch that the principal may still act.

use ferry_proto::auth::Principal;
use ferry_proto::message::{ErrorCode, Watch};
use ferry_proto::names::validate_prefix;
use ferry_store::Change;

use super::{Core, Engine, Outcome, Refusal, ServerBackend};
use crate::Error;
use crate::changes::ChangeFeed;
use crate::policy::Op;

/// Changes read from the log at a time.
const BATCH: usize = 256;

/// A watch stream's position in the change log.
pub(crate) struct Watcher<B> {
    feed: ChangeFeed<B>,
    prefix: String,
    cursor: u64,
}

/// What the log held after the cursor, as the principal may see it.
pub(crate) struct Batch {
    /// Older changes were gone: `(oldest the log has, the cursor skipped to)`.
    pub(crate) gap: Option<(u64, u64)>,
    /// The visible changes, in order.
    pub(crate) events: Vec<Change>,
    /// The log may hold more right away: read again before waiting.
    pub(crate) full: bool,
}

impl<B: ServerBackend> Engine<B> {
    /// Starts a watch of `req.prefix` after `req.after` (now if absent). The reply is the
    /// log's last sequence number, and the watcher.
    pub(crate) async fn watch(&self, p: &Principal, req: Watch) -> Outcome<(u64, Watcher<B>)> {
        let prefix = req.prefix.clone();
        let out = self.watch_answer(p, req).await;
        self.answered("watch", &p.name, &prefix, &out, |_| None);
        out
    }

    async fn watch_answer(&self, p: &Principal, req: Watch) -> Outcome<(u64, Watcher<B>)> {
        if let Err(e) = validate_prefix(&req.prefix) {
            return Ok(Err(Refusal::new(ErrorCode::BadRequest, e.to_string())));
        }
        let mut feed = self.feed.clone();
        feed.mark_seen();
        // Where the server is, and whether the requested position is still in the log.
        let start = feed.read(req.after.unwrap_or(0), 0).await?;
        let cursor = req.after.unwrap_or(start.last);
        tracing::info!(
            "{} watches '{}' from {cursor} (server at {})",
            p.name,
            req.prefix,
            start.last
        );
        Ok(Ok((
            start.last,
            Watcher {
                feed,
                prefix: req.prefix,
                cursor,
            },
        )))
    }
}

impl<B: ServerBackend> Watcher<B> {
    /// The last change read (visible or not).
    pub(crate) fn cursor(&self) -> u64 {
        self.cursor
    }

    /// The next changes after the cursor that `p` may see; moves the cursor past them.
    pub(crate) async fn next_batch(
        &mut self,
        engine: &Core,
        p: &Principal,
    ) -> Result<Batch, Error> {
        self.feed.mark_seen();
        let page = self.feed.read(self.cursor, BATCH).await?;
        let mut gap = None;
        if page.gap {
            // Resume from the oldest change the log still has.
            self.cursor = page.oldest.saturating_sub(1);
            tracing::info!(
                "{}'s watch skips to {}: older changes are gone",
                p.name,
                self.cursor
            );
            gap = Some((page.oldest, self.cursor));
        }
        let full = page.changes.len() >= BATCH;
        let mut events = Vec::new();
        for change in page.changes {
            self.cursor = change.seq;
            if change.source.starts_with(&self.prefix) && engine.allows(p, Op::List, &change.source)
            {
                events.push(change);
            }
        }
        Ok(Batch { gap, events, full })
    }

    /// Waits until the log may hold changes after those last read.
    pub(crate) async fn changed(&mut self) -> Result<(), Error> {
        self.feed.changed().await
    }
}
