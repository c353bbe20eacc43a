//! `GET /v1/changes?prefix=P&after=SEQ&wait=SECS`: change events by long poll, from the
//! engine's `Watcher` (the same view of the change log a TLS watch stream gets). The answer
//! comes as soon as there are visible changes after `after`, or after `wait` seconds (at
//! most [`MAX_WAIT`]) with none; the client asks again with the `seq` it got.

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_proto::message::Watch;
use hyper::Response;
use hyper::body::Incoming;

use super::auth::Authed;
use super::data::{number, small_request};
use super::{Front, reply};
use crate::engine::ServerBackend;
use crate::http_body::OutBody;

/// The longest a poll waits (`wait` is capped to it).
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(60);
/// How long a poll waits without `wait`.
const DEFAULT_WAIT: Duration = Duration::from_secs(25);

/// Answers one poll.
pub(super) async fn poll<B: ServerBackend>(
    front: &Front<B>,
    authed: &Authed,
    query: &BTreeMap<String, String>,
    body: Incoming,
) -> Response<OutBody> {
    if let Err(r) = small_request(front, authed, body, query, &["prefix", "after", "wait"]).await {
        return r;
    }
    let (after, wait) = match (
        number(authed, query, "after"),
        number(authed, query, "wait"),
    ) {
        (Ok(a), Ok(w)) => (a, w),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let wait = wait.map_or(DEFAULT_WAIT, Duration::from_secs).min(MAX_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    let engine = &front.engine;
    let p = &authed.principal;
    let req = Watch {
        prefix: query.get("prefix").cloned().unwrap_or_default(),
        after,
    };
    let (last, mut watcher) = match engine.watch(p, req).await {
        Ok(Ok(w)) => w,
        Ok(Err(r)) => return reply::refusal(authed, r),
        Err(e) => {
            tracing::error!("HTTP changes for {}: {e}", p.name);
            return reply::error(authed, 500, "internal", "internal error");
        }
    };
    // Bounded: each turn reads the log forward or waits, and the deadline ends the poll.
    loop {
        let batch = match watcher.next_batch(engine, p).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("HTTP changes for {}: {e}", p.name);
                return reply::error(authed, 500, "internal", "internal error");
            }
        };
        let expired = tokio::time::Instant::now() >= deadline;
        if !batch.events.is_empty() || batch.gap.is_some() || expired {
            let events: Vec<_> = batch
                .events
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "seq": c.seq,
                        "source": c.source,
                        "version": c.version,
                        "deleted": c.deleted,
                        "size": c.size,
                        "blake3": data_encoding::HEXLOWER.encode(&c.hash),
                        "modified": c.modified,
                        "by": c.by,
                    })
                })
                .collect();
            let gap = batch
                .gap
                .map(|(oldest, skipped_to)| serde_json::json!({"oldest": oldest, "skipped_to": skipped_to}));
            return reply::json(
                authed,
                200,
                &serde_json::json!({
                    "seq": watcher.cursor(),
                    "last": last.max(watcher.cursor()),
                    "gap": gap,
                    "events": events,
                }),
            );
        }
        if batch.full {
            continue;
        }
        match tokio::time::timeout_at(deadline, watcher.changed()).await {
            Ok(Ok(())) | Err(_) => {}
            Ok(Err(e)) => {
                tracing::error!("HTTP changes for {}: {e}", p.name);
                return reply::error(authed, 500, "internal", "internal error");
            }
        }
    }
}
