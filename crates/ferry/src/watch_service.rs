//! The server side of `watch`: turns a connection into a stream of change events.
//!
//! After `watch_ok` the server loops: re-check that the principal may still act, read the
//! change log after the stream's cursor (off the async threads), send the events the
//! principal may see, then wait for the store's wake-up, the keep-alive timer, the server's
//! shutdown or the client closing. Each send is awaited (bounded by the transfer deadline),
//! so a slow client slows its own stream and nothing piles up in memory.

use std::net::IpAddr;

use ferry_proto::auth::Principal;
use ferry_proto::message::{
    ErrorCode, ErrorMsg, Message, Watch, WatchEvent, WatchGap, WatchOk, WatchPing,
};
use ferry_proto::names::validate_prefix;
use ferry_store::Change;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::Error;
use crate::engine::Engine;
use crate::policy::Op;
use crate::wire::Wire;

/// Changes read from the log at a time.
const BATCH: usize = 256;

/// Serves a `watch` request. Returns `Ok(false)` if it was refused and the connection goes
/// on with requests, `Ok(true)` when the stream has ended and the connection must close.
pub(crate) async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    engine: &Engine,
    wire: &mut Wire<S>,
    p: &Principal,
    ip: IpAddr,
    req: Watch,
    stop: &mut watch::Receiver<bool>,
) -> Result<bool, Error> {
    if let Err(e) = validate_prefix(&req.prefix) {
        wire.send(&Message::Error(ErrorMsg {
            code: ErrorCode::BadRequest,
            message: e.to_string(),
        }))
        .await?;
        return Ok(false);
    }
    let mut feed = engine.feed.clone();
    feed.mark_seen();
    // Where the server is, and whether the requested position is still in the log.
    let start = feed.read(req.after.unwrap_or(0), 0).await?;
    let mut cursor = match req.after {
        None => start.last,
        Some(after) => after,
    };
    let ping = engine.limits.watch_ping;
    let deadline = engine.limits.transfer_timeout;
    send(
        deadline,
        wire,
        Message::WatchOk(WatchOk {
            seq: start.last,
            ping_ms: u64::try_from(ping.as_millis()).unwrap_or(u64::MAX),
        }),
    )
    .await?;
    tracing::info!(
        "{} watches '{}' from {cursor} (server at {})",
        p.name,
        req.prefix,
        start.last
    );
    let mut last_sent = Instant::now();
    let mut byte = [0u8; 1];
    loop {
        if !engine.still_valid(p, ip) {
            tracing::info!("{} is no longer authorised; closing its watch", p.name);
            send(deadline, wire, Message::AuthFailed(Default::default())).await?;
            return Ok(true);
        }
        feed.mark_seen();
        let page = feed.read(cursor, BATCH).await?;
        if page.gap {
            // Resume from the oldest change the log still has.
            cursor = page.oldest.saturating_sub(1);
            tracing::info!(
                "{}'s watch skips to {cursor}: older changes are gone",
                p.name
            );
            send(
                deadline,
                wire,
                Message::WatchGap(WatchGap {
                    oldest: page.oldest,
                    seq: cursor,
                }),
            )
            .await?;
            last_sent = Instant::now();
        }
        let full = page.changes.len() >= BATCH;
        for change in page.changes {
            cursor = change.seq;
            if visible(engine, p, &req.prefix, &change) {
                send(deadline, wire, Message::Event(to_wire(change))).await?;
                last_sent = Instant::now();
            }
        }
        if full {
            continue;
        }
        tokio::select! {
            biased;
            _ = stop.changed() => return Ok(true),
            r = feed.changed() => r?,
            () = tokio::time::sleep_until(last_sent + ping) => {
                send(deadline, wire, Message::WatchPing(WatchPing { seq: cursor })).await?;
                last_sent = Instant::now();
            }
            // The client sends nothing after `watch`: a read ends only when it closes.
            // Reading one byte is cancel-safe: nothing is lost if another branch wins.
            r = wire.get_mut().read(&mut byte) => {
                return match r {
                    Ok(0) => Ok(true),
                    Ok(_) => Err(Error::Protocol("data from the client during a watch".into())),
                    Err(e) => Err(Error::Io(e)),
                };
            }
        }
    }
}

/// Sends one message; a client that does not take it within `deadline` is dropped.
async fn send<S: AsyncRead + AsyncWrite + Unpin>(
    deadline: std::time::Duration,
    wire: &mut Wire<S>,
    msg: Message,
) -> Result<(), Error> {
    tokio::time::timeout(deadline, wire.send(&msg))
        .await
        .map_err(|_| Error::Timeout("the watcher to read"))?
}

/// Whether the principal sees this change: under the prefix, and a source its role may list
/// (an event tells what a listing would).
fn visible(engine: &Engine, p: &Principal, prefix: &str, c: &Change) -> bool {
    c.source.starts_with(prefix) && engine.allows(p, Op::List, &c.source)
}

fn to_wire(c: Change) -> WatchEvent {
    WatchEvent {
        seq: c.seq,
        source: c.source,
        version: c.version,
        deleted: c.deleted,
        size: c.size,
        hash: c.hash,
        modified: c.modified,
        by: c.by,
    }
}
