//! The connecting side of the mesh: finding an open peer by its beacon, joining through it,
//! and connecting to a member as a member.

use std::net::SocketAddr;
use std::time::Duration;

use ferry_proto::auth::{self, ClientStep};
use ferry_proto::mesh::beacon;
use ferry_proto::mesh::join::Joiner;
use ferry_proto::mesh::state::MeshState;
use ferry_proto::mesh::wire::{MeshEntry, MeshGrant, MeshJoinFinish, MeshJoinStart, MeshList};
use ferry_proto::message::{Empty, Message};
use ferry_proto::server_id::ServerId;

use super::device::DeviceKey;
use crate::client::{CONNECT_TIMEOUT, Client, RESPONSE_TIMEOUT};
use crate::wire::Wire;
use crate::{Error, tls};

/// Joins the mesh of the peer at `addr` (pinned to `peer`) with `password`, as device `me`
/// named `name`, serving TLS on `port`. Every failure of the PAKE is [`Error::AuthFailed`].
pub async fn join(
    addr: &str,
    peer: ServerId,
    me: &DeviceKey,
    name: &str,
    port: u16,
    password: &[u8],
) -> Result<MeshGrant, Error> {
    // The opener refuses an invalid name like any failed join; say why before connecting.
    ferry_proto::names::validate_display_name(name).map_err(|e| Error::Config(e.to_string()))?;
    let tls = Client::connect_tls(addr, peer).await?;
    let exporter = tls::export(tls.get_ref().1)?;
    let mut wire = Wire::new(tls);
    let run = async {
        let mut rng = rand_core_10::UnwrapErr(getrandom_04::SysRng);
        let (share, joiner) = Joiner::start(password, &exporter, &me.id(), peer, &mut rng)
            .map_err(|_| Error::AuthFailed)?;
        wire.send(&Message::MeshJoinStart(MeshJoinStart {
            share,
            device: me.spki().to_vec(),
            name: name.to_owned(),
            port,
        }))
        .await?;
        let (yb, confirm_r) = match recv(&mut wire).await? {
            Message::MeshJoinResponse(r) => (r.share, r.confirm),
            _ => return Err(Error::AuthFailed),
        };
        let signature = me.prove("join", &exporter)?;
        let confirm = match joiner.confirm(&yb, &confirm_r) {
            Ok(c) => c,
            Err(_) => {
                // Tell the opener, so it counts the failure, with a confirmation that fails.
                let _ = wire
                    .send(&Message::MeshJoinFinish(MeshJoinFinish {
                        confirm: [0; 32],
                        signature,
                    }))
                    .await;
                let _ = tokio::time::timeout(RESPONSE_TIMEOUT, wire.recv_message()).await;
                return Err(Error::AuthFailed);
            }
        };
        wire.send(&Message::MeshJoinFinish(MeshJoinFinish {
            confirm,
            signature,
        }))
        .await?;
        match recv(&mut wire).await? {
            Message::MeshJoinOk(g) => Ok(*g),
            _ => Err(Error::AuthFailed),
        }
    };
    // The opener may delay its answer after failed attempts (up to 4 s).
    let out = tokio::time::timeout(CONNECT_TIMEOUT + RESPONSE_TIMEOUT, run)
        .await
        .map_err(|_| Error::Timeout("the join"))?;
    let _ = wire.shutdown().await;
    out
}

async fn recv<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    wire: &mut Wire<S>,
) -> Result<Message, Error> {
    match tokio::time::timeout(RESPONSE_TIMEOUT, wire.recv_message()).await {
        Ok(Ok(m)) => Ok(m),
        Ok(Err(Error::Closed | Error::Connection(_) | Error::Io(_))) => Err(Error::AuthFailed),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Error::Timeout("the peer's answer")),
    }
}

/// Connects to member `peer` at `addr` and authenticates as member `me`, with the key of
/// `epoch` from `state` (the current one, or the previous one to catch up after a rotation).
pub async fn connect_member(
    addr: &str,
    peer: ServerId,
    me: &DeviceKey,
    state: &MeshState,
    epoch: u64,
) -> Result<Client, Error> {
    let key = state
        .key_for(epoch)
        .ok_or_else(|| Error::Config(format!("no mesh key for epoch {epoch}")))?
        .clone();
    let tls = Client::connect_tls(addr, peer).await?;
    let exporter = tls::export(tls.get_ref().1)?;
    let mut wire = Wire::new(tls);
    let signature = me.prove("auth", &exporter)?;
    let (first, state) = auth::member_auth(&key, epoch, &me.id(), &peer, signature, &exporter);
    let run = async {
        wire.send(&first).await?;
        let reply = recv(&mut wire).await?;
        match state.handle(reply, &mut rand_core::OsRng) {
            Ok(ClientStep::Done(a)) => Ok(a.principal),
            _ => Err(Error::AuthFailed),
        }
    };
    let principal = tokio::time::timeout(CONNECT_TIMEOUT, run)
        .await
        .map_err(|_| Error::Timeout("member authentication"))??;
    Ok(Client::from_parts(wire, principal))
}

/// The most source states [`Client::mesh_list`] accepts from one member.
pub const MAX_MESH_LIST: usize = 1_000_000;

impl Client {
    /// A member's mesh state (to a member connection).
    pub async fn mesh_state(&mut self) -> Result<MeshGrant, Error> {
        match self.raw_request(&Message::MeshState(Empty {})).await? {
            Message::MeshStateOk(g) => Ok(*g),
            Message::AuthFailed(_) => Err(Error::AuthFailed),
            m => Err(Error::Protocol(format!("unexpected {}", m.type_name()))),
        }
    }

    /// Every source's state on a member, tombstones included (to a member connection).
    /// Entries with an invalid source name or an absurd version ([`MeshEntry::check`]) are
    /// left out.
    pub async fn mesh_list(&mut self) -> Result<Vec<MeshEntry>, Error> {
        let mut out: Vec<MeshEntry> = Vec::new();
        let mut after: Option<String> = None;
        let mut listed = 0usize;
        // Bounded by MAX_MESH_LIST (pages hold up to 1000 entries) and the caller's timeout.
        loop {
            match self
                .raw_request(&Message::MeshList(MeshList {
                    after: after.clone(),
                }))
                .await?
            {
                Message::MeshListOk(page) => {
                    let more = page.more && !page.entries.is_empty();
                    // A member that keeps saying "more" must not grow this without bound.
                    listed = listed.saturating_add(page.entries.len());
                    if listed > MAX_MESH_LIST {
                        return Err(Error::Protocol(format!(
                            "a member listed more than {MAX_MESH_LIST} sources"
                        )));
                    }
                    after = page.entries.last().map(|e| e.source.clone());
                    for e in page.entries {
                        match e.check() {
                            Ok(()) => out.push(e),
                            Err(why) => tracing::info!("a member listed an invalid source: {why}"),
                        }
                    }
                    if !more {
                        return Ok(out);
                    }
                }
                Message::AuthFailed(_) => return Err(Error::AuthFailed),
                m => return Err(Error::Protocol(format!("unexpected {}", m.type_name()))),
            }
        }
    }
}

/// An open peer heard by [`discover`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// Its device ID (what the join pins the TLS connection to).
    pub device: ServerId,
    /// Where it serves TLS.
    pub addr: SocketAddr,
    /// The mesh's name.
    pub mesh: String,
    /// The peer's display name.
    pub name: String,
}

/// Listens on UDP `port` for join beacons of open peers, for at most `wait`, and returns the
/// distinct peers heard. Once one is heard it listens two beacon periods more (to notice a
/// second open peer), then returns. Beacons are unauthenticated: the join that follows
/// proves the peer knows the password.
pub async fn discover(port: u16, wait: Duration) -> Result<Vec<Found>, Error> {
    let sockets = super::udp::Sockets::bind(port)?;
    let mut buf = super::udp::Sockets::buffers();
    let deadline = tokio::time::Instant::now() + wait;
    let mut settle: Option<tokio::time::Instant> = None;
    let mut found: Vec<Found> = Vec::new();
    // Bounded by the deadline.
    loop {
        let until = settle.map_or(deadline, |s| s.min(deadline));
        let Ok(received) = tokio::time::timeout_at(until, sockets.recv(&mut buf)).await else {
            return Ok(found);
        };
        let (datagram, from) = match received {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!("receive failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(b) = beacon::decode(datagram) else {
            continue;
        };
        let Some(addr) = super::runtime::announced_addr(&b.addr, b.port, from) else {
            continue;
        };
        let device = ServerId::from_bytes(b.device);
        if found.iter().all(|f| f.device != device) && found.len() < 16 {
            found.push(Found {
                device,
                addr,
                mesh: b.mesh,
                name: b.name,
            });
        }
        settle
            .get_or_insert_with(|| tokio::time::Instant::now() + 2 * super::runtime::BEACON_EVERY);
    }
}
