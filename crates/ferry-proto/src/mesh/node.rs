//! A mesh peer's datagram rules, sans IO: what to do with each datagram that arrives on the
//! announce port.
//!
//! The runtime feeds every datagram to [`Node::handle`] with its clock (`now_ms`), the
//! datagram's source address and the current [`MeshState`], and does what the returned
//! [`Action`] says (fetch, list, merge, catch up, or nothing); when a catch-up ends it
//! reports back with [`Node::catch_up_finished`]. The node keeps the rules' state: the
//! replay guard (per-sender counters) and the catch-up schedule. It reads no clock and
//! touches no socket, so tests drive it in memory.
//!
//! The rules, in order: join beacons and this peer's own datagrams are skipped; a datagram
//! must open under the current epoch's key ([`super::announce::open`]); one of the next epoch
//! may start a catch-up ([`CatchUpThrottle`]); it must say where its sender serves TLS; a
//! removed sender is dropped; it must be fresh ([`ReplayGuard`]); a fresh one from a device
//! that is not a member means it joined through another member (merge its state); a change
//! must name a valid source at a sane version ([`MeshEntry::check`]).

use std::net::{IpAddr, SocketAddr};

use super::announce::{self, Event, OpenError};
use super::beacon;
use super::catch_up::{CatchUpThrottle, NoCatchUp};
use super::key::announce_key;
use super::replay::{ReplayGuard, Stale};
use super::state::MeshState;
use super::wire::{InvalidEntry, MeshEntry};
use crate::message::Digest;
use crate::server_id::ServerId;

/// A member and where it serves TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its device ID.
    pub id: ServerId,
    /// Its TLS address.
    pub addr: SocketAddr,
}

/// What to do with a datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing; the reason, for the log.
    Drop(Dropped),
    /// Someone announces under the next epoch: ask the members for the mesh state.
    CatchUp {
        /// Datagrams of a newer epoch from this source address so far.
        claims: u64,
    },
    /// A device that holds the key but is not a member yet (it joined through another
    /// member): fetch its mesh state and merge.
    State(Peer),
    /// A member changed a source: fetch it if it wins over ours.
    Change {
        /// The member (heard from just now).
        peer: Peer,
        /// The source's state on it (valid name and version).
        entry: MeshEntry,
    },
    /// A member's digest: compare `sources` with ours (list it if they differ), and merge
    /// its mesh state if `members_differ`.
    Digest {
        /// The member (heard from just now).
        peer: Peer,
        /// Its sources digest.
        sources: Digest,
        /// Whether its members digest differs from ours.
        members_differ: bool,
    },
}

/// Why a datagram was dropped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Dropped {
    /// A join beacon (for `mesh join --discover`).
    #[error("join beacon")]
    Beacon,
    /// This peer's own announcement (looped back).
    #[error("own announcement")]
    Own,
    /// Did not open.
    #[error("{0}")]
    Unopened(OpenError),
    /// Of a newer epoch, but no catch-up now.
    #[error("{0}")]
    NoCatchUp(NoCatchUp),
    /// Says nothing usable about where its sender serves.
    #[error("announcement from {0} without a usable address")]
    NoAddress(ServerId),
    /// From a removed device.
    #[error("announcement from removed device {0}")]
    Removed(ServerId),
    /// Stale or replayed.
    #[error("announcement from {0}: {1}")]
    Stale(ServerId, Stale),
    /// An authentic change that names an invalid source or an absurd version.
    #[error("announcement from {0}: {1}")]
    Invalid(ServerId, InvalidEntry),
}

/// The datagram rules of one peer.
#[derive(Debug)]
pub struct Node {
    me: ServerId,
    replay: ReplayGuard,
    catch_up: CatchUpThrottle,
}

impl Node {
    /// The rules for device `me`, accepting announcement times within `window_ms` of ours.
    pub fn new(me: ServerId, window_ms: u64) -> Self {
        Self {
            me,
            replay: ReplayGuard::new(window_ms),
            catch_up: CatchUpThrottle::new(),
        }
    }

    /// Decides what to do with `datagram`, received from `from` at `now_ms` (Unix ms) while
    /// this peer's view of the mesh is `mesh`. Never panics, whatever the bytes.
    pub fn handle(
        &mut self,
        now_ms: u64,
        from: SocketAddr,
        datagram: &[u8],
        mesh: &MeshState,
    ) -> Action {
        match self.decide(now_ms, from, datagram, mesh) {
            Ok(a) => a,
            Err(d) => Action::Drop(d),
        }
    }

    fn decide(
        &mut self,
        now_ms: u64,
        from: SocketAddr,
        datagram: &[u8],
        mesh: &MeshState,
    ) -> Result<Action, Dropped> {
        if datagram.starts_with(beacon::MAGIC) {
            return Err(Dropped::Beacon);
        }
        let opened = announce::open(datagram, |e| {
            (e == mesh.epoch).then(|| announce_key(&mesh.key, e))
        });
        let body = match opened {
            Ok(b) => b,
            Err(OpenError::UnknownEpoch(e)) if e > mesh.epoch => {
                return self
                    .catch_up
                    .claim(now_ms, from.ip(), mesh.epoch, e)
                    .map(|claims| Action::CatchUp { claims })
                    .map_err(Dropped::NoCatchUp);
            }
            Err(e) => return Err(Dropped::Unopened(e)),
        };
        let sender = ServerId::from_bytes(body.sender);
        if sender == self.me {
            return Err(Dropped::Own);
        }
        // A copy that cannot tell where its sender serves (an unspecified IPv4 address
        // arriving over IPv6) is skipped before the replay check: its IPv4 copy will do.
        let addr = announced_addr(&body.addr, body.port, from).ok_or(Dropped::NoAddress(sender))?;
        let peer = Peer { id: sender, addr };
        if mesh.removed.contains(&sender) {
            self.replay.forget(&sender);
            return Err(Dropped::Removed(sender));
        }
        self.replay
            .check(sender, body.counter, body.time, now_ms)
            .map_err(|e| Dropped::Stale(sender, e))?;
        if !mesh.is_member(&sender) {
            return Ok(Action::State(peer));
        }
        match body.event {
            Event::Change {
                source,
                version,
                hash,
                deleted,
            } => {
                let entry = MeshEntry {
                    source,
                    version,
                    hash,
                    deleted,
                };
                entry.check().map_err(|e| Dropped::Invalid(sender, e))?;
                Ok(Action::Change { peer, entry })
            }
            Event::Digest { sources, members } => Ok(Action::Digest {
                peer,
                sources,
                members_differ: members != mesh.members_digest(),
            }),
        }
    }

    /// A catch-up that [`Action::CatchUp`] started ended at `now_ms`, having found a newer
    /// epoch or not.
    pub fn catch_up_finished(&mut self, now_ms: u64, found_newer: bool) {
        self.catch_up.finished(now_ms, found_newer);
    }
}

/// The TLS address a datagram announces: its `addr` and `port`, or the datagram's source
/// address when the sender listens on an unspecified address of the same family.
pub fn announced_addr(addr: &[u8], port: u16, from: SocketAddr) -> Option<SocketAddr> {
    let ip = match addr.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(addr).ok()?),
        16 => IpAddr::from(<[u8; 16]>::try_from(addr).ok()?),
        _ => return None,
    };
    if !ip.is_unspecified() {
        return Some(SocketAddr::new(ip, port));
    }
    match (ip, from) {
        // Listening on [::] accepts IPv4 too (dual stack), so any source address will do.
        (IpAddr::V6(_), _) => Some(with_port(from, port)),
        (IpAddr::V4(_), SocketAddr::V4(_)) => Some(with_port(from, port)),
        (IpAddr::V4(_), SocketAddr::V6(v6)) => v6
            .ip()
            .to_ipv4_mapped()
            .map(|v4| SocketAddr::new(v4.into(), port)),
    }
}

/// `from` with another port, keeping an IPv6 scope.
fn with_port(mut from: SocketAddr, port: u16) -> SocketAddr {
    from.set_port(port);
    from
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
