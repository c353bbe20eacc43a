//! The issued clients, `clients.toml`: name, epoch, attributes, revoked.
//!
//! The file holds no secrets: keys are re-derived from the master key. `ferry client ...`
//! changes it (atomically, under `clients.lock`) while a server runs; the server notices the
//! change on its next authentication or request, so revocation and re-issue take effect at
//! once.

use std::fs::{File, OpenOptions};
use std::path::Path;

pub use ferry_proto::files::Registry;

use crate::accounts::FileIo;
use crate::live::Loadable;
use crate::{Error, fsutil};

impl Loadable for Registry {
    /// Reads the file; a missing file is an empty registry. It holds no secrets, so unlike
    /// the account files it is not refused for being readable by others.
    fn load(path: &Path) -> Result<Self, Error> {
        match std::fs::read_to_string(path) {
            Ok(text) => Registry::parse(&text)
                .map_err(|e| Error::Config(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(Error::Config(format!("{}: {e}", path.display()))),
        }
    }
}

impl FileIo for Registry {
    /// Writes the file atomically (mode 0600).
    fn save(&self, path: &Path) -> Result<(), Error> {
        let text = self
            .to_toml()
            .map_err(|e| Error::Internal(format!("{}: {e}", path.display())))?;
        fsutil::write_atomic(path, text.as_bytes(), 0o600)?;
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::files::ClientRecord;

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
        let live = crate::live::LiveFile::<Registry>::open(path.clone()).unwrap();
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
        let text = reg.to_toml().unwrap();
        assert_eq!(Registry::parse(&text).unwrap(), reg);
        assert!(Registry::parse("[clients.a]\nepoch = 1\n").is_err());
    }
}
