//! The client side of `watch`: a connection that receives change events.
//!
//! [`Client::watch`] turns an authenticated connection into a [`Watch`]; [`Watch::next`]
//! returns events (and gaps) in order, answering keep-alives itself. To resume after a cut,
//! connect again and watch with `after = Some(watch.cursor())`: the server sends exactly the
//! changes after that position, so nothing is missed or repeated.

use std::time::Duration;

use ferry_proto::message::{Message, Watch as WatchRequest, WatchEvent};
use ferry_proto::names::normalize_prefix;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::wire::Wire;
use crate::{Client, Error};

/// What a watch stream delivers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchItem {
    /// A change the principal may see.
    Event(WatchEvent),
    /// Changes after the requested position are gone from the server's log (or the position
    /// is unknown to it), so some may have been missed. The stream goes on with the changes
    /// after `seq` (the oldest it still has).
    Gap {
        /// The oldest change the server still has.
        oldest: u64,
        /// The stream's new position.
        seq: u64,
    },
}

/// A connection streaming change events. Dropping it closes the connection.
pub struct Watch {
    wire: Wire<TlsStream<TcpStream>>,
    cursor: u64,
    server_seq: u64,
    silence: Duration,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("cursor", &self.cursor)
            .field("server_seq", &self.server_seq)
            .finish_non_exhaustive()
    }
}

/// How long a watch waits for anything from the server, given its keep-alive period.
fn silence_limit(ping: Duration) -> Duration {
    ping.saturating_mul(2) + Duration::from_secs(5)
}

impl Client {
    /// Turns this connection into a stream of the changes to sources starting with `prefix`
    /// that the principal may list: those after sequence number `after`, or only those from
    /// now if `after` is `None`.
    ///
    /// Fails like other requests (for example with [`Error::Remote`] for a malformed prefix).
    pub async fn watch(mut self, prefix: &str, after: Option<u64>) -> Result<Watch, Error> {
        let prefix = normalize_prefix(prefix)?;
        self.send_request(&Message::Watch(WatchRequest { prefix, after }))
            .await?;
        let ok = match self.recv().await? {
            Message::WatchOk(ok) => ok,
            m => return Err(Self::unexpected(&m)),
        };
        Ok(Watch {
            wire: self.wire,
            cursor: after.unwrap_or(ok.seq),
            server_seq: ok.seq,
            silence: silence_limit(Duration::from_millis(ok.ping_ms)),
        })
    }
}

impl Watch {
    /// The stream's position: every change up to it has been delivered, or is not visible
    /// to this principal. Resume with `after = Some(cursor)`.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// The last sequence number the server had given out when the stream started.
    pub fn server_seq(&self) -> u64 {
        self.server_seq
    }

    /// The next event or gap. Keep-alives are handled here; if the server stays silent for
    /// well over its keep-alive period the link is considered dead ([`Error::Timeout`]).
    /// A cut connection is [`Error::Closed`] or [`Error::Connection`]; [`Error::AuthFailed`] means the
    /// principal was revoked (reconnecting will fail too). Cancel-safe only between frames:
    /// drop the `Watch` after cancelling.
    pub async fn next(&mut self) -> Result<WatchItem, Error> {
        loop {
            let msg = tokio::time::timeout(self.silence, self.wire.recv_message())
                .await
                .map_err(|_| Error::Timeout("the server's keep-alive"))??;
            match msg {
                Message::Event(e) if e.seq > self.cursor => {
                    self.cursor = e.seq;
                    return Ok(WatchItem::Event(e));
                }
                Message::Event(e) => {
                    // Never deliver a change twice, whatever the server does.
                    tracing::debug!("ignoring repeated event {} (at {})", e.seq, self.cursor);
                }
                Message::WatchPing(p) => self.cursor = self.cursor.max(p.seq),
                Message::WatchGap(g) => {
                    self.cursor = g.seq;
                    return Ok(WatchItem::Gap {
                        oldest: g.oldest,
                        seq: g.seq,
                    });
                }
                Message::AuthFailed(_) => return Err(Error::AuthFailed),
                Message::Error(e) => return Err(Error::from_remote(e)),
                m => {
                    return Err(Error::Protocol(format!(
                        "unexpected {} during a watch",
                        m.type_name()
                    )));
                }
            }
        }
    }

    /// Closes the connection cleanly (TLS close_notify).
    pub async fn close(mut self) -> Result<(), Error> {
        self.wire.shutdown().await?;
        Ok(())
    }
}
