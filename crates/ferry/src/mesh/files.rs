//! The mesh's files in a peer's server folder.
//!
//! ```text
//! DIR/mesh.toml        the mesh: name, epoch, key (and the previous one), members, removed (0600)
//! DIR/mesh-open.toml   while joins are accepted: the join password and until when (0600)
//! DIR/mesh-seen.toml   when each member was last heard from, and where (written by `mesh up`)
//! ```
//!
//! `mesh.toml` and `mesh-open.toml` are written whole and atomically under `clients.lock`, by
//! the CLI and by a running `ferry mesh up` alike; a running peer re-reads them when they
//! change. The join password is kept only while the mesh is open: `ferry mesh close`, too
//! many failed joins, and the end of the window remove the file (a running `ferry mesh up`
//! removes it when the window ends, and every server start sweeps an expired one). A joiner
//! never stores it.

use std::collections::BTreeMap;

use ferry_proto::server_id::ServerId;
use std::path::Path;

use ferry_proto::files::parse_toml;
use ferry_proto::mesh::state::MeshState;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::accounts::read;
use crate::live::Loadable;
use crate::registry::RegistryLock;
use crate::server_dir::ServerDir;
use crate::{Error, fsutil};

/// `mesh.toml`.
pub const MESH_FILE: &str = "mesh.toml";
/// `mesh-open.toml`.
pub const OPEN_FILE: &str = "mesh-open.toml";
/// `mesh-seen.toml`.
pub const SEEN_FILE: &str = "mesh-seen.toml";

/// The mesh this peer belongs to, if any.
#[derive(Debug, Default)]
pub struct MeshFile(pub Option<MeshState>);

impl Loadable for MeshFile {
    fn load(path: &Path) -> Result<Self, Error> {
        match read(path)? {
            None => Ok(Self(None)),
            Some(text) => MeshState::parse(&text)
                .map(|s| Self(Some(s)))
                .map_err(|e| Error::Config(format!("{}: {e}", path.display()))),
        }
    }
}

/// Joins are accepted with `password` until `until` (Unix seconds).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenWindow {
    /// The join password.
    pub password: Zeroizing<String>,
    /// Unix seconds.
    pub until: u64,
}

impl std::fmt::Debug for OpenWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenWindow")
            .field("until", &self.until)
            .finish_non_exhaustive()
    }
}

/// The open window, if there is one.
#[derive(Debug, Default)]
pub struct OpenFile(pub Option<OpenWindow>);

impl Loadable for OpenFile {
    fn load(path: &Path) -> Result<Self, Error> {
        match read(path)? {
            None => Ok(Self(None)),
            Some(text) => parse_toml(&text)
                .map(|w| Self(Some(w)))
                .map_err(|e| Error::Config(format!("{}: {e}", path.display()))),
        }
    }
}

/// When and where a member was last heard from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// Unix seconds.
    pub at: u64,
    /// `ip:port` it serves TLS on.
    pub addr: String,
}

/// Last-seen times by device ID (as text).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenFile {
    /// By device ID.
    #[serde(default)]
    pub seen: BTreeMap<String, Seen>,
}

impl ServerDir {
    /// The mesh this peer belongs to, if any.
    pub fn mesh_state(&self) -> Result<Option<MeshState>, Error> {
        Ok(MeshFile::load(&self.file(MESH_FILE))?.0)
    }

    /// Reads, changes and (if `f` returns `true` as its first value) writes `mesh.toml`, under
    /// the folder's lock.
    pub fn update_mesh<R>(
        &self,
        f: impl FnOnce(&mut Option<MeshState>) -> (bool, R),
    ) -> Result<R, Error> {
        let _lock = RegistryLock::acquire(self.path())?;
        let path = self.file(MESH_FILE);
        let mut state = MeshFile::load(&path)?.0;
        let (write, out) = f(&mut state);
        if write && let Some(s) = &state {
            let text = s
                .to_toml()
                .map_err(|e| Error::Internal(format!("{}: {e}", path.display())))?;
            fsutil::write_secret(&path, text.as_bytes())?;
        }
        Ok(out)
    }

    /// Accepts joins with `password` until `until`.
    pub fn open_mesh(&self, password: Zeroizing<String>, until: u64) -> Result<(), Error> {
        let _lock = RegistryLock::acquire(self.path())?;
        let text = Zeroizing::new(
            toml::to_string(&OpenWindow { password, until })
                .map_err(|_| Error::Internal("cannot encode the open window".into()))?,
        );
        fsutil::write_secret(&self.file(OPEN_FILE), text.as_bytes())?;
        Ok(())
    }

    /// Stops accepting joins (removes the password from disk). Returns whether a window
    /// was there to remove.
    pub fn close_mesh(&self) -> Result<bool, Error> {
        let _lock = RegistryLock::acquire(self.path())?;
        match std::fs::remove_file(self.file(OPEN_FILE)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the open window if `ends(window)` says it has ended (expired, or closed by
    /// failed joins). Under the folder's lock, so a window opened meanwhile is kept. Returns
    /// whether a window was removed.
    pub fn close_mesh_if(&self, ends: impl FnOnce(&OpenWindow) -> bool) -> Result<bool, Error> {
        let _lock = RegistryLock::acquire(self.path())?;
        let path = self.file(OPEN_FILE);
        match OpenFile::load(&path)?.0 {
            Some(w) if ends(&w) => match std::fs::remove_file(&path) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e.into()),
            },
            _ => Ok(false),
        }
    }

    /// Removes the open window if it has expired at `now` (Unix seconds), so its password
    /// does not stay on disk. Returns whether one was removed.
    pub fn sweep_mesh_window(&self, now: u64) -> Result<bool, Error> {
        self.close_mesh_if(|w| w.until <= now)
    }

    /// Last-seen times (empty if never written).
    pub fn mesh_seen(&self) -> SeenFile {
        fsutil::read_small(&self.file(SEEN_FILE))
            .ok()
            .and_then(|b| {
                std::str::from_utf8(&b)
                    .ok()
                    .and_then(|t| parse_toml(t).ok())
            })
            .unwrap_or_default()
    }

    /// Writes last-seen times.
    pub fn save_mesh_seen(&self, seen: &SeenFile) -> Result<(), Error> {
        let text = toml::to_string(seen)
            .map_err(|_| Error::Internal("cannot encode last-seen times".into()))?;
        fsutil::write_atomic(&self.file(SEEN_FILE), text.as_bytes(), 0o600)?;
        Ok(())
    }
}

/// Members with their last-seen time, for `ferry mesh members`.
pub fn members_with_seen(
    state: &MeshState,
    seen: &SeenFile,
) -> Vec<(ServerId, String, String, Option<u64>)> {
    let mut by_id: BTreeMap<ServerId, (String, String, Option<u64>)> = BTreeMap::new();
    for (id, m) in &state.members {
        let s = seen.seen.get(&id.to_string());
        let addr = s
            .map(|s| s.addr.clone())
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| m.addr.clone());
        by_id.insert(*id, (m.name.clone(), addr, s.map(|s| s.at)));
    }
    by_id
        .into_iter()
        .map(|(id, (n, a, t))| (id, n, a, t))
        .collect()
}
