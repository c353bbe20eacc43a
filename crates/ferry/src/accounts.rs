//! User accounts, invites and sessions on disk.
//!
//! ```text
//! DIR/opaque.key     the server's OPAQUE keys, hex (mode 0600)
//! DIR/users.toml     per user: attributes, OPAQUE record, Argon2id parameters (no password, no hash of it)
//! DIR/invites.toml   per name: serial, attributes, expiry, spent
//! DIR/sessions.toml  per session ID: owner, how it was opened, secret, expiry (mode 0600)
//! ```
//!
//! All are written whole and atomically under `clients.lock`; a running server re-reads them
//! when they change (see [`crate::live`]).

use std::collections::BTreeMap;
use std::path::Path;

use ferry_proto::auth::{Method, Principal};
use ferry_proto::password::{KsfParams, UserRecord};
use ferry_proto::secret::SessionSecret;
use ferry_proto::session::SessionId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::live::Loadable;
use crate::{Error, fsutil};

fn load_toml<T: DeserializeOwned + Default>(path: &Path) -> Result<T, Error> {
    match fsutil::read_small(path) {
        Ok(bytes) => {
            let text = std::str::from_utf8(&bytes)
                .map_err(|_| Error::Config(format!("{}: not UTF-8", path.display())))?;
            toml::from_str(text)
                .map_err(|e| Error::Config(format!("{}: {}", path.display(), e.message())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(Error::Config(format!("{}: {e}", path.display()))),
    }
}

fn save_toml<T: Serialize>(path: &Path, header: &str, value: &T) -> Result<(), Error> {
    let text = toml::to_string(value).map_err(|e| Error::Internal(e.to_string()))?;
    let text = zeroize::Zeroizing::new(format!("{header}\n{text}"));
    fsutil::write_secret(path, text.as_bytes())?;
    Ok(())
}

/// One user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    /// Attributes, `role` among them.
    pub attributes: BTreeMap<String, String>,
    /// The OPAQUE registration record, base64.
    pub record: String,
    /// Argon2id parameters of the record.
    pub ksf: KsfParams,
    /// When the password was set (Unix seconds).
    pub created: u64,
}

impl UserEntry {
    /// The record in the form the protocol takes.
    pub fn user_record(&self) -> Option<UserRecord> {
        let record = data_encoding::BASE64.decode(self.record.as_bytes()).ok()?;
        Some(UserRecord {
            record,
            ksf: self.ksf,
        })
    }
}

/// All users.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Users {
    /// By name.
    #[serde(default)]
    pub users: BTreeMap<String, UserEntry>,
}

impl Loadable for Users {
    fn load(path: &Path) -> Result<Self, Error> {
        load_toml(path)
    }
}

impl Users {
    /// Writes the file.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        save_toml(
            path,
            "# ferry users: OPAQUE records only, never passwords. Managed by `ferry user`.",
            self,
        )
    }
}

/// One invite.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InviteEntry {
    /// Serial: the invite claims' epoch; a new invite for the same name takes the next one.
    pub serial: u64,
    /// Attributes the user will get.
    pub attributes: BTreeMap<String, String>,
    /// Unix seconds after which the invite is void.
    pub expires: u64,
    /// Whether it was redeemed.
    #[serde(default)]
    pub spent: bool,
}

/// All invites (the latest per name).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Invites {
    /// By user name.
    #[serde(default)]
    pub invites: BTreeMap<String, InviteEntry>,
}

impl Loadable for Invites {
    fn load(path: &Path) -> Result<Self, Error> {
        load_toml(path)
    }
}

impl Invites {
    /// Writes the file.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        save_toml(
            path,
            "# ferry invites. Managed by `ferry user invite`.",
            self,
        )
    }
}

/// One session.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionEntry {
    /// Owner's name.
    pub name: String,
    /// Owner's attributes.
    pub attributes: BTreeMap<String, String>,
    /// How it was opened: `password`, or `psk:EPOCH`.
    pub origin: String,
    /// The secret, hex.
    pub secret: String,
    /// When it was opened.
    pub created: u64,
    /// When it was last used.
    pub last_used: u64,
    /// Idle lifetime, seconds.
    pub idle_secs: u64,
    /// Absolute end.
    pub expires: u64,
}

impl std::fmt::Debug for SessionEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionEntry")
            .field("name", &self.name)
            .field("origin", &self.origin)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

impl SessionEntry {
    /// Whether it is still live at `now`.
    pub fn live(&self, now: u64) -> bool {
        now < self.expires && now < self.last_used.saturating_add(self.idle_secs)
    }

    /// The method that opened it.
    pub fn origin_method(&self) -> Option<Method> {
        match self.origin.as_str() {
            "password" => Some(Method::Password),
            o => o
                .strip_prefix("psk:")
                .and_then(|e| e.parse().ok())
                .map(|epoch| Method::Psk { epoch }),
        }
    }

    /// The secret.
    pub fn secret(&self) -> Option<SessionSecret> {
        let mut key = zeroize::Zeroizing::new([0u8; 32]);
        if self.secret.len() != 64 {
            return None;
        }
        data_encoding::HEXLOWER_PERMISSIVE
            .decode_mut(self.secret.as_bytes(), key.as_mut())
            .ok()?;
        Some(SessionSecret::from_bytes(*key))
    }

    /// The principal it opened as.
    pub fn principal(&self) -> Option<Principal> {
        Some(Principal {
            name: self.name.clone(),
            attributes: self.attributes.clone(),
            method: self.origin_method()?,
        })
    }
}

/// Session IDs as they appear in files and on the command line.
pub fn session_id_text(id: &SessionId) -> String {
    data_encoding::HEXLOWER.encode(id)
}

/// All sessions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sessions {
    /// By hex session ID.
    #[serde(default)]
    pub sessions: BTreeMap<String, SessionEntry>,
}

impl Loadable for Sessions {
    fn load(path: &Path) -> Result<Self, Error> {
        load_toml(path)
    }
}

impl Sessions {
    /// Writes the file (mode 0600: it holds session secrets).
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        save_toml(
            path,
            "# ferry sessions (secrets: keep private). Managed by the server and `ferry session`.",
            self,
        )
    }

    /// Drops sessions that ended before `now`.
    pub fn prune(&mut self, now: u64) {
        self.sessions.retain(|_, s| s.live(now));
    }
}
