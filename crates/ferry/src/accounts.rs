//! User accounts, invites and sessions on disk: reading and writing the files whose formats
//! live in [`ferry_proto::files`].
//!
//! ```text
//! DIR/opaque.key     the server's OPAQUE keys, hex (mode 0600)
//! DIR/users.toml     per user: attributes, OPAQUE record, Argon2id parameters (no password, no hash of it)
//! DIR/invites.toml   per name: serial, attributes, expiry, spent
//! DIR/sessions.toml  per session ID: owner, how it was opened, secret, expiry (mode 0600)
//! ```
//!
//! All are written whole and atomically under `clients.lock`; a running server re-reads them
//! when they change (`live.rs`).

use std::path::Path;

pub use ferry_proto::files::{
    FileError, InviteEntry, Invites, SessionEntry, Sessions, UserEntry, Users, session_id_text,
};

use crate::live::Loadable;
use crate::{Error, fsutil};

/// Reads a secret state file as text; `None` if it does not exist.
pub(crate) fn read(path: &Path) -> Result<Option<zeroize::Zeroizing<String>>, Error> {
    match fsutil::read_secret_text(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Config(format!("{}: {e}", path.display()))),
    }
}

fn write(path: &Path, text: Result<zeroize::Zeroizing<String>, FileError>) -> Result<(), Error> {
    let text = text.map_err(|e| Error::Internal(format!("{}: {e}", path.display())))?;
    fsutil::write_secret(path, text.as_bytes())?;
    Ok(())
}

/// Writing a state file whole, atomically, mode 0600.
pub trait FileIo {
    /// Writes the file.
    fn save(&self, path: &Path) -> Result<(), Error>;
}

macro_rules! file_io {
    ($t:ty) => {
        impl Loadable for $t {
            fn load(path: &Path) -> Result<Self, Error> {
                match read(path)? {
                    Some(text) => <$t>::parse(&text)
                        .map_err(|e| Error::Config(format!("{}: {e}", path.display()))),
                    None => Ok(<$t>::default()),
                }
            }
        }

        impl FileIo for $t {
            fn save(&self, path: &Path) -> Result<(), Error> {
                write(path, self.to_toml())
            }
        }
    };
}

file_io!(Users);
file_io!(Invites);
file_io!(Sessions);
