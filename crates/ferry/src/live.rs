//! Files that a running server re-reads whenever they change on disk.
//!
//! `ferry client ...` and `ferry user ...` change these files while a server runs (atomically,
//! under `clients.lock`). The server compares the file's inode, size and modification time on
//! every use, which costs one `stat`, and reloads it when they differ, so a revocation takes
//! effect on the very next authentication or request.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::Error;

/// A file type that can be (re)loaded; a missing file loads as the default.
pub trait Loadable: Default + Send + Sync + 'static {
    /// Reads the file.
    fn load(path: &Path) -> Result<Self, Error>;
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        ino: m.ino(),
        len: m.len(),
        mtime: m.mtime(),
        mtime_nsec: m.mtime_nsec(),
    })
}

/// The current contents of a file.
pub struct LiveFile<T> {
    path: PathBuf,
    state: RwLock<(Option<Stamp>, Arc<T>)>,
}

impl<T> std::fmt::Debug for LiveFile<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveFile")
            .field("path", &self.path)
            .finish()
    }
}

impl<T: Loadable> LiveFile<T> {
    /// Loads the file at `path`.
    pub fn open(path: PathBuf) -> Result<Self, Error> {
        let st = stamp(&path);
        let value = T::load(&path)?;
        Ok(Self {
            path,
            state: RwLock::new((st, Arc::new(value))),
        })
    }

    /// The current contents, re-read if the file changed. If the new file does not parse,
    /// the contents are empty (fail closed) until it is fixed.
    pub fn current(&self) -> Arc<T> {
        let now = stamp(&self.path);
        if let Ok(guard) = self.state.read()
            && guard.0 == now
        {
            return guard.1.clone();
        }
        let value = match T::load(&self.path) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(
                    "{e}; treating {} as empty until it is fixed",
                    self.path.display()
                );
                T::default()
            }
        };
        let value = Arc::new(value);
        if let Ok(mut guard) = self.state.write() {
            *guard = (now, value.clone());
        }
        value
    }
}
