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

    /// The file at `path`, read at its first use (so one that does not parse yet is met
    /// there, as any later change is).
    pub fn lazy(path: PathBuf) -> Self {
        Self {
            path,
            // No stamp matches an existing file, so the first use reads it; a missing file
            // has no stamp either and reads as the default it already holds.
            state: RwLock::new((None, Arc::new(T::default()))),
        }
    }

    /// The current contents, re-read if the file changed. If the new file does not parse,
    /// the contents are empty (fail closed) until it is fixed.
    pub fn current(&self) -> Arc<T> {
        self.try_current().unwrap_or_else(|e| {
            tracing::error!(
                "{e}; treating {} as empty until it is fixed",
                self.path.display()
            );
            Arc::new(T::default())
        })
    }

    /// The current contents, re-read if the file changed; an error while the file does not
    /// parse (or cannot be read).
    pub fn try_current(&self) -> Result<Arc<T>, Error> {
        let now = stamp(&self.path);
        if let Ok(guard) = self.state.read()
            && guard.0 == now
        {
            return Ok(guard.1.clone());
        }
        let value = Arc::new(T::load(&self.path)?);
        if let Ok(mut guard) = self.state.write() {
            *guard = (now, value.clone());
        }
        Ok(value)
    }
}
