//! The TLS front of `watch`: turns a connection into a stream of change events.
//!
//! After `watch_ok` the server loops: re-check that the principal may still act, take the
//! next batch from the engine's `Watcher` (engine/watch.rs: the log after the cursor,
//! filtered to what the principal may see), send it, then wait for the store's wake-up, the
//! keep-alive timer, the server's shutdown or the client closing. Each send is awaited
//! (bounded by the transfer deadline), so a slow client slows its own stream and nothing
//! piles up in memory.

use ferry_proto::auth::Principal;
use ferry_proto::message::{Message, Watch, WatchEvent, WatchGap, WatchOk, WatchPing};
use ferry_store::Change;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::Error;
use crate::engine::{Engine, ServerBackend};
use crate::wire::Wire;

/// Serves a `watch` request. Returns `Ok(false)` if it was refused and the connection goes
/// on with requests, `Ok(true)` when the stream has ended and the connection must close.
pub(crate) async fn serve<S: AsyncRead + AsyncWrite + Unpin, B: ServerBackend>(
    engine: &Engine<B>,
    wire: &mut Wire<S>,
    p: &Principal,
    req: Watch,
    stop: &mut watch::Receiver<bool>,
) -> Result<bool, Error> {
    let (seq, mut watcher) = match engine.watch(p, req).await? {
        Ok(w) => w,
        Err(r) => {
            wire.send(&crate::net::data::refusal(r)).await?;
            return Ok(false);
        }
    };
    let ping = engine.limits.watch_ping;
    let deadline = engine.limits.transfer_timeout;
    send(
        deadline,
        wire,
        Message::WatchOk(WatchOk {
            seq,
            ping_ms: u64::try_from(ping.as_millis()).unwrap_or(u64::MAX),
        }),
    )
    .await?;
    let mut last_sent = Instant::now();
    let mut byte = [0u8; 1];
    loop {
        if !engine.still_valid(p).await? {
            tracing::info!("{} is no longer authorised; closing its watch", p.name);
            send(deadline, wire, Message::AuthFailed(Default::default())).await?;
            return Ok(true);
        }
        let batch = watcher.next_batch(engine, p).await?;
        if let Some((oldest, seq)) = batch.gap {
            send(deadline, wire, Message::WatchGap(WatchGap { oldest, seq })).await?;
            last_sent = Instant::now();
        }
        for change in batch.events {
            send(deadline, wire, Message::Event(to_wire(change))).await?;
            last_sent = Instant::now();
        }
        if batch.full {
            continue;
        }
        tokio::select! {
            biased;
            _ = stop.changed() => return Ok(true),
            r = watcher.changed() => r?,
            () = tokio::time::sleep_until(last_sent + ping) => {
                let seq = watcher.cursor();
                send(deadline, wire, Message::WatchPing(WatchPing { seq })).await?;
                last_sent = Instant::now();
            }
            // The client sends nothing after `watch`: a read ends only when it closes.
            // Reading one byte is cancel-safe: nothing is lost if another branch wins.
            r = wire.get_mut().read(&mut byte) => {
                return match r {
                    Ok(0) => Ok(true),
                    Ok(_) => Err(Error::Protocol("data from the client during a watch".into())),
                    Err(e) => Err(Error::Connection(e)),
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
