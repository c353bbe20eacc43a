//! The accepting side of the mesh's messages: joins, member authentication, mesh state and
//! the mesh listing.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use ferry_proto::auth::{Method, Principal};
use ferry_proto::mesh::join::Opener;
use ferry_proto::mesh::member_auth::{self, MeshDirectory};
use ferry_proto::mesh::state::{Member, MeshState};
use ferry_proto::mesh::wire::{MeshEntry, MeshJoinResponse, MeshJoinStart, MeshList, MeshListOk};
use ferry_proto::message::{Empty, Message};
use ferry_proto::secret::{Exporter, MeshKey};
use ferry_proto::server_id::ServerId;
use tokio::io::{AsyncRead, AsyncWrite};

use super::device::{self, DeviceKey};
use super::files::{MeshFile, OpenFile};
use crate::live::LiveFile;
use crate::server_dir::ServerDir;
use crate::wire::Wire;
use crate::{Error, clock};

/// After this many failed joins in one open window, the window closes.
pub const MAX_JOIN_FAILURES: u32 = 20;
/// Delay before answering a join after `n` failures: 250 ms doubling, at most 4 s. The
/// server also keeps it under half its handshake timeout, so that a slowed attempt still
/// gets its answer (and is counted) rather than running into the connection's deadline.
pub fn join_delay(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(250u64 << failures.saturating_sub(1).min(4))
}

/// What the server knows of its mesh.
#[derive(Debug)]
pub(crate) struct MeshShared {
    pub(crate) state: LiveFile<MeshFile>,
    pub(crate) open: LiveFile<OpenFile>,
    pub(crate) device: DeviceKey,
    /// (end of the open window the count belongs to, failed joins in it).
    failures: Mutex<(u64, u32)>,
}

impl MeshShared {
    pub(crate) fn open(dir: &ServerDir, device: DeviceKey) -> Result<Self, Error> {
        Ok(Self {
            state: LiveFile::open(dir.file(super::files::MESH_FILE))?,
            open: LiveFile::open(dir.file(super::files::OPEN_FILE))?,
            device,
            failures: Mutex::new((0, 0)),
        })
    }

    /// Failed joins in the window that ends at `until` (0: no window). A new window starts
    /// from zero, so reopening after the limit closed one is not slowed by the old count.
    fn failures(&self, until: u64) -> u32 {
        match self.failures.lock() {
            Ok(g) if g.0 == until => g.1,
            Ok(_) => 0,
            Err(_) => MAX_JOIN_FAILURES,
        }
    }

    /// Counts a failure in the window ending at `until`, or (with `failed == false`) clears the
    /// count after a success. Returns the new count.
    fn record(&self, until: u64, failed: bool) -> u32 {
        match self.failures.lock() {
            Ok(mut g) => {
                let count = if g.0 == until { g.1 } else { 0 };
                *g = (until, if failed { count.saturating_add(1) } else { 0 });
                g.1
            }
            Err(_) => MAX_JOIN_FAILURES,
        }
    }

    /// Whether a mesh principal may still act.
    pub(crate) fn still_valid(&self, device: &ServerId, epoch: u64) -> bool {
        let state = self.state.current();
        state
            .0
            .as_ref()
            .is_some_and(|s| s.is_member(device) && s.key_for(epoch).is_some())
    }
}

struct Directory<'a> {
    me: ServerId,
    state: &'a MeshState,
}

impl MeshDirectory for Directory<'_> {
    fn me(&self) -> ServerId {
        self.me
    }
    fn member_spki(&self, device: &ServerId) -> Option<Vec<u8>> {
        self.state.members.get(device).map(|m| m.spki.clone())
    }
    fn key_for(&self, epoch: u64) -> Option<MeshKey> {
        self.state.key_for(epoch).cloned()
    }
    fn epoch(&self) -> u64 {
        self.state.epoch
    }
    fn verify_signature(&self, spki: &[u8], message: &[u8], signature: &[u8]) -> bool {
        device::verify(spki, message, signature)
    }
}

/// Checks a `mesh_auth`; answers it. Returns the member, or `None` (answered `auth_failed`).
pub(crate) async fn member_auth<S: AsyncRead + AsyncWrite + Unpin>(
    mesh: &MeshShared,
    wire: &mut Wire<S>,
    exporter: &Exporter,
    peer: SocketAddr,
    m: ferry_proto::mesh::wire::MeshAuth,
) -> Result<Option<Principal>, Error> {
    let state = mesh.state.current();
    let result = match &state.0 {
        Some(s) => member_auth::accept(
            &m,
            exporter,
            &Directory {
                me: mesh.device.id(),
                state: s,
            },
        )
        .map_err(|e| e.to_string()),
        None => Err("this peer is in no mesh".to_owned()),
    };
    match result {
        Ok(ok) => {
            wire.send(&ok.reply).await?;
            tracing::info!("{peer}: mesh member {} authenticated", ok.principal.name);
            Ok(Some(ok.principal))
        }
        Err(why) => {
            tracing::warn!("{peer}: mesh authentication failed ({why})");
            wire.send(&Message::AuthFailed(Empty {})).await?;
            Ok(None)
        }
    }
}

/// Runs a join as the opener. Always ends the connection.
pub(crate) async fn join<S: AsyncRead + AsyncWrite + Unpin>(
    mesh: &MeshShared,
    dir: &ServerDir,
    wire: &mut Wire<S>,
    exporter: &Exporter,
    peer: SocketAddr,
    start: MeshJoinStart,
    max_delay: Duration,
) -> Result<(), Error> {
    let window = mesh.open.current();
    let until = window.0.as_ref().map_or(0, |w| w.until);
    tokio::time::sleep(join_delay(mesh.failures(until)).min(max_delay)).await;
    let now = clock::now();
    let in_mesh = mesh.state.current().0.is_some();
    let password = match &window.0 {
        Some(w) if w.until > now && in_mesh => Some(w.password.clone()),
        _ => None,
    };
    let open = password.is_some();
    let joiner = ServerId::from_spki(&start.device);
    let me = mesh.device.id();
    let mut rng = rand_core_10::UnwrapErr(getrandom_04::SysRng);
    let responded = Opener::respond(
        password.as_ref().map(|p| p.as_bytes()),
        exporter,
        &me,
        &joiner,
        &start.share,
        &mut rng,
    );
    let outcome = match responded {
        Err(_) => Err("invalid PAKE share"),
        Ok((share, confirm, opener)) => {
            wire.send(&Message::MeshJoinResponse(MeshJoinResponse {
                share,
                confirm,
            }))
            .await?;
            match wire.recv_message().await? {
                Message::MeshJoinFinish(f) => {
                    let confirmed = opener.finish(&f.confirm).is_ok();
                    let signed = device::verify(
                        &start.device,
                        &ferry_proto::mesh::join::device_proof("join", exporter),
                        &f.signature,
                    );
                    match (open, confirmed, signed) {
                        (false, _, _) => Err("the mesh is not open for joins"),
                        (true, false, _) => Err("wrong password"),
                        (true, true, false) => Err("bad device signature"),
                        (true, true, true) => Ok(()),
                    }
                }
                _ => Err("unexpected message"),
            }
        }
    };
    if let Err(why) = outcome {
        let n = mesh.record(until, true);
        tracing::warn!("{peer}: mesh join failed ({why}); {n} failures in this window");
        if n >= MAX_JOIN_FAILURES && open {
            tracing::warn!("too many failed joins: closing the mesh to joins");
            let dir = dir.clone();
            let _ = tokio::task::spawn_blocking(move || dir.close_mesh()).await;
        }
        wire.send(&Message::AuthFailed(Empty {})).await?;
        return Ok(());
    }
    mesh.record(until, false);
    let member = Member {
        spki: start.device.clone(),
        name: start.name.clone(),
        addr: SocketAddr::new(peer.ip(), start.port).to_string(),
    };
    let dir2 = dir.clone();
    let grant = crate::pipe::join(tokio::task::spawn_blocking(move || {
        dir2.update_mesh(|s| match s {
            Some(s) => {
                if s.add_member(member) {
                    (true, Some(s.grant()))
                } else {
                    (false, None)
                }
            }
            None => (false, None),
        })
    }))
    .await?;
    match grant {
        Some(g) => {
            tracing::info!("{peer}: {} joined the mesh as {joiner}", start.name);
            wire.send(&Message::MeshJoinOk(Box::new(g))).await?;
        }
        None => {
            tracing::warn!("{peer}: join by a removed device {joiner} refused");
            wire.send(&Message::AuthFailed(Empty {})).await?;
        }
    }
    Ok(())
}

/// Answers `mesh_state` and `mesh_list` from a member.
pub(crate) async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
    mesh: &MeshShared,
    store: &std::sync::Arc<ferry_store::Store>,
    wire: &mut Wire<S>,
    p: &Principal,
    msg: Message,
) -> Result<(), Error> {
    if !matches!(p.method, Method::Mesh { .. }) {
        return Err(Error::Protocol(format!(
            "{} from a non-member",
            msg.type_name()
        )));
    }
    match msg {
        Message::MeshState(_) => {
            let state = mesh.state.current();
            match &state.0 {
                Some(s) => wire.send(&Message::MeshStateOk(Box::new(s.grant()))).await,
                None => Err(Error::Protocol("no mesh".into())),
            }
        }
        Message::MeshList(MeshList { after }) => {
            let store = store.clone();
            let page = crate::pipe::join(tokio::task::spawn_blocking(move || {
                Ok(store.heads(after.as_deref(), LIST_PAGE + 1)?)
            }))
            .await?;
            let more = page.len() > LIST_PAGE;
            let entries = page
                .into_iter()
                .take(LIST_PAGE)
                .map(|(source, head)| {
                    let (version, hash) = head.key();
                    MeshEntry {
                        source,
                        version,
                        hash,
                        deleted: head.deleted,
                    }
                })
                .collect();
            wire.send(&Message::MeshListOk(MeshListOk { entries, more }))
                .await
        }
        other => Err(Error::Protocol(format!(
            "unexpected {} in mesh handling",
            other.type_name()
        ))),
    }
}

/// Source states per `mesh_list_ok` page (each at most ~600 bytes, so a page fits a frame).
const LIST_PAGE: usize = 1000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_delay_doubles_up_to_four_seconds() {
        let ms = |n| join_delay(n).as_millis();
        assert_eq!(
            (0..8).map(ms).collect::<Vec<_>>(),
            [0, 250, 500, 1000, 2000, 4000, 4000, 4000]
        );
        assert_eq!(ms(u32::MAX), 4000);
    }
}
