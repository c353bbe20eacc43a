//! The issued clients, `clients.toml`: name, epoch, attributes, revoked.
//!
//! The file holds no secrets: keys are re-derived from the master key. `ferry client ...`
//! changes it (atomically, under `clients.lock`) while a server runs; the server notices the
//! change on its next authentication or request, so revocation and re-issue take effect at
//! once.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Error, fsutil};

/// One issued client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientRecord {
    /// Current epoch; credentials of older epochs no longer work.
    pub epoch: u64,
    /// Attributes of the current credential.
    pub attributes: BTreeMap<String, String>,
    /// When the current credential was issued (Unix seconds).
    pub issued: u64,
    /// Revoked clients cannot authenticate.
    #[serde(default)]
    pub revoked: bool,
}

/// All issued clients.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    /// By name.
    #[serde(default)]
    pub clients: BTreeMap<String, ClientRecord>,
}

impl Registry {
    /// Parses the file's text.
    pub fn parse(text: &str) -> Result<Self, Error> {
        toml::from_str(text).map_err(|e| Error::Config(format!("clients.toml: {e}")))
    }

    /// Reads the file; a missing file is an empty registry.
    pub fn load(path: &Path) -> Result<Self, Error> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(Error::Config(format!("{}: {e}", path.display()))),
        }
    }

    /// Writes the file atomically.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let text = toml::to_string(self).map_err(|e| Error::Internal(e.to_string()))?;
        let text =
            format!("# Issued ferry clients. Holds no keys. Managed by `ferry client`.\n{text}");
        fsutil::write_atomic(path, text.as_bytes(), 0o600)?;
        Ok(())
    }

    /// Whether `name` exists, is not revoked and is at `epoch`.
    pub fn is_current(&self, name: &str, epoch: u64) -> bool {
        self.clients
            .get(name)
            .is_some_and(|c| !c.revoked && c.epoch == epoch)
    }
}

/// An exclusive lock on a server folder's client registry, held while changing it.
pub struct RegistryLock {
    _file: File,
}

impl RegistryLock {
    /// Waits for and takes the lock.
    pub fn acquire(dir: &Path) -> Result<Self, Error> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("clients.lock"))?;
        file.lock()?;
        Ok(Self { _file: file })
    }
}

impl crate::live::Loadable for Registry {
    fn load(path: &Path) -> Result<Self, Error> {
        Registry::load(path)
    }
}

/// The client registry as a running server sees it, re-read whenever the file changes.
pub type LiveRegistry = crate::live::LiveFile<Registry>;

#[cfg(test)]
mod tests {
    use super::*;

    fn record(epoch: u64) -> ClientRecord {
        ClientRecord {
            epoch,
            attributes: [("role".to_owned(), "reader".to_owned())].into(),
            issued: 1,
            revoked: false,
        }
    }

    #[test]
    fn live_registry_sees_changes_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clients.toml");
        let mut reg = Registry::default();
        reg.clients.insert("a".into(), record(1));
        reg.save(&path).unwrap();
        let live = LiveRegistry::open(path.clone()).unwrap();
        assert!(live.current().is_current("a", 1));
        reg.clients.get_mut("a").unwrap().revoked = true;
        reg.save(&path).unwrap();
        assert!(!live.current().is_current("a", 1));
        reg.clients.insert("a".into(), record(2));
        reg.save(&path).unwrap();
        assert!(!live.current().is_current("a", 1));
        assert!(live.current().is_current("a", 2));
        std::fs::write(&path, "garbage = [").unwrap();
        assert!(!live.current().is_current("a", 2));
    }

    #[test]
    fn round_trip() {
        let mut reg = Registry::default();
        reg.clients.insert("a".into(), record(3));
        let text = toml::to_string(&reg).unwrap();
        assert_eq!(Registry::parse(&text).unwrap(), reg);
    }
}
