//! The mesh as the engine knows it: the mesh's state and open join window (live files), this
//! device's key, the join-failure gate; and the two operations a member may ask after
//! authenticating, `mesh_state` (the state a member catches up with) and `mesh_list` (the
//! heads of every source, page by page, for sync).

use ferry_proto::auth::Principal;
use ferry_proto::mesh::wire::{MeshEntry, MeshGrant, MeshList, MeshListOk};
use ferry_proto::server_id::ServerId;
use zeroize::Zeroizing;

use super::{Core, Engine, ServerBackend};
use crate::live::LiveFile;
use crate::mesh::device::DeviceKey;
use crate::mesh::files::{MeshFile, OpenFile};
use crate::mesh::join_gate::JoinGate;
use crate::server_dir::ServerDir;
use crate::{Error, clock};

/// Source states per `mesh_list_ok` page (each at most ~600 bytes, so a page fits a frame).
const LIST_PAGE: usize = 1000;

/// What the server knows of its mesh.
#[derive(Debug)]
pub(crate) struct MeshShared {
    pub(crate) state: LiveFile<MeshFile>,
    pub(crate) open: LiveFile<OpenFile>,
    pub(crate) device: DeviceKey,
    pub(crate) gate: JoinGate,
}

impl MeshShared {
    /// Loads the mesh files of `dir`, first removing an open window that has ended (so its
    /// password does not outlive it on disk). Joins close a window after
    /// `max_join_failures` failures.
    pub(crate) fn open(
        dir: &ServerDir,
        device: DeviceKey,
        max_join_failures: u32,
    ) -> Result<Self, Error> {
        match dir.sweep_mesh_window(clock::now()) {
            Ok(true) => tracing::info!("the mesh's join window had ended: its password is removed"),
            Ok(false) => {}
            Err(e) => tracing::warn!("cannot remove an ended join window: {e}"),
        }
        Ok(Self {
            state: LiveFile::open(dir.file(crate::mesh::files::MESH_FILE))?,
            open: LiveFile::open(dir.file(crate::mesh::files::OPEN_FILE))?,
            device,
            gate: JoinGate::new(max_join_failures),
        })
    }

    /// The end of the open window (0: none), whatever its state.
    pub(crate) fn window_until(&self) -> u64 {
        self.open.current().0.as_ref().map_or(0, |w| w.until)
    }

    /// The join password, if the window ending at `until` is still the open one, has not
    /// ended, and has not been closed by failures, and this peer is in a mesh.
    pub(crate) fn password(&self, until: u64) -> Option<Zeroizing<String>> {
        let window = self.open.current();
        let w = window.0.as_ref()?;
        let open = w.until == until
            && until > clock::now()
            && !self.gate.closed(until)
            && self.state.current().0.is_some();
        open.then(|| w.password.clone())
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

impl Core {
    /// The mesh's state for a member to catch up with. A non-member, or a server no longer
    /// in a mesh, is a protocol error: the connection closes.
    pub(crate) fn mesh_state(&self, p: &Principal) -> Result<MeshGrant, Error> {
        self.member_only(p, "mesh_state")?;
        let state = self.mesh.state.current();
        match &state.0 {
            Some(s) => Ok(s.grant()),
            None => Err(Error::Protocol("no mesh".into())),
        }
    }

    pub(crate) fn member_only(&self, p: &Principal, what: &str) -> Result<(), Error> {
        if self.may_sync_mesh(p) {
            Ok(())
        } else {
            Err(Error::Protocol(format!("{what} from a non-member")))
        }
    }
}

impl<B: ServerBackend> Engine<B> {
    /// One page of every source's head after `req.after`, deleted ones included.
    pub(crate) async fn mesh_list(
        &self,
        p: &Principal,
        req: MeshList,
    ) -> Result<MeshListOk, Error> {
        self.member_only(p, "mesh_list")?;
        let page = self
            .backend
            .heads(req.after.as_deref(), LIST_PAGE + 1)
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
        Ok(MeshListOk { entries, more })
    }
}
