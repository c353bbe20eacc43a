//! A server folder: configuration, keys, client registry and store.
//!
//! ```text
//! DIR/ferry.toml      configuration
//! DIR/master.key      256-bit master key, hex (mode 0600)
//! DIR/identity.key    TLS private key, PEM PKCS#8 (mode 0600)
//! DIR/identity.crt    TLS certificate, PEM
//! DIR/clients.toml    issued clients (no keys)
//! DIR/store/          index and blobs
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ferry_proto::claims::Claims;
use ferry_proto::credential::Credential;
use ferry_proto::psk;
use ferry_proto::secret::MasterKey;
use ferry_proto::server_id::ServerId;
use zeroize::Zeroizing;

use ferry_backend::accounts::{ClientRecord, DynAccounts};

use crate::accounts::{FileIo, Invites, Sessions, Users};
use crate::config::{AccountsBackend, BackendConfig, Config, DEFAULT_CONFIG};
use crate::identity::Identity;
use crate::live::Loadable;
use crate::registry::{Registry, RegistryLock};
use crate::{Error, fsutil, tls};
use ferry_proto::auth::INVITE_EXPIRES;
use ferry_proto::password::OpaqueKeys;

/// A server folder on disk.
#[derive(Clone, Debug)]
pub struct ServerDir {
    path: PathBuf,
}

impl ServerDir {
    /// Refers to an existing folder (nothing is read yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates a new server folder: configuration, master key and identity. Refuses a
    /// folder that already holds a server. Returns the server ID.
    pub fn init(&self) -> Result<ServerId, Error> {
        self.init_with(&BackendConfig::default())
    }

    /// [`init`](Self::init) with the account data in `backend`: its `[backend]` section is
    /// written into the new `ferry.toml`. For a shared backend the OPAQUE keys are made now
    /// too, so that copies of the folder's key files (what every instance of one server
    /// needs alike) include them, and no account file is written.
    pub fn init_with(&self, backend: &BackendConfig) -> Result<ServerId, Error> {
        if self.path.join("master.key").exists() || self.path.join("identity.key").exists() {
            return Err(Error::Config(format!(
                "{} already holds a ferry server; not overwriting it",
                self.path.display()
            )));
        }
        let cfg = self.path.join("ferry.toml");
        let local = backend.accounts == AccountsBackend::Local;
        if cfg.exists() && !local && Config::load(&self.path)?.backend != *backend {
            return Err(Error::Config(format!(
                "{} exists with another [backend] section; add the one wanted to it by hand, \
                 or init an empty folder",
                cfg.display()
            )));
        }
        // The folder is ferry's alone: an existing one open to others is closed (0700).
        fsutil::make_private_dir(&self.path)?;
        let mut key = Zeroizing::new([0u8; 32]);
        tls::random_bytes(key.as_mut())?;
        let hex = Zeroizing::new(data_encoding::HEXLOWER.encode(key.as_ref()) + "\n");
        fsutil::write_secret(&self.path.join("master.key"), hex.as_bytes())?;
        let identity = Identity::generate()?;
        identity.save(&self.path)?;
        if !cfg.exists() {
            let text = DEFAULT_CONFIG.to_owned() + &backend.section().unwrap_or_default();
            fsutil::write_atomic(&cfg, text.as_bytes(), 0o644)?;
        }
        if local {
            if !self.registry_path().exists() {
                Registry::default().save(&self.registry_path())?;
            }
        } else {
            self.opaque_keys()?;
        }
        Ok(identity.server_id())
    }

    /// The folder's mode if group or others have any access to it (`ferry init` makes it
    /// 0700; someone may have opened it since). Also logs a warning then.
    pub fn warn_if_open_to_others(&self) -> Option<u32> {
        let mode = fsutil::open_to_others(&self.path)?;
        tracing::warn!(
            "the server folder {} is open to other users (mode {mode:o}); run: chmod 700 {}",
            self.path.display(),
            self.path.display()
        );
        Some(mode)
    }

    /// Whether the folder holds a server.
    pub fn exists(&self) -> bool {
        self.path.join("master.key").exists()
    }

    fn check_exists(&self) -> Result<(), Error> {
        if self.exists() {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "{} is not a ferry server folder (run `ferry init --dir {}` first)",
                self.path.display(),
                self.path.display()
            )))
        }
    }

    /// Reads the master key.
    pub fn master_key(&self) -> Result<MasterKey, Error> {
        self.check_exists()?;
        let path = self.path.join("master.key");
        let text = fsutil::read_secret_text(&path)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        let mut key = Zeroizing::new([0u8; 32]);
        let hex = text.trim().as_bytes();
        if hex.len() != 64
            || data_encoding::HEXLOWER_PERMISSIVE
                .decode_mut(hex, key.as_mut())
                .is_err()
        {
            return Err(Error::Config(format!(
                "{}: expected 64 hexadecimal digits",
                path.display()
            )));
        }
        Ok(MasterKey::from_bytes(*key))
    }

    /// Reads the TLS identity.
    pub fn identity(&self) -> Result<Identity, Error> {
        self.check_exists()?;
        Identity::load(&self.path)
    }

    /// Reads the configuration.
    pub fn config(&self) -> Result<Config, Error> {
        self.check_exists()?;
        Config::load(&self.path)
    }

    /// Path of the client registry.
    pub fn registry_path(&self) -> PathBuf {
        self.path.join("clients.toml")
    }

    /// Path of the store.
    pub fn store_path(&self) -> PathBuf {
        self.path.join("store")
    }

    /// Reads the client registry.
    pub fn registry(&self) -> Result<Registry, Error> {
        self.check_exists()?;
        Registry::load(&self.registry_path())
    }

    /// Issues (or re-issues, with the next epoch) a credential for `name`. The previous
    /// credential of that name stops working at once.
    ///
    /// This writes the folder's `clients.toml`; a folder whose `ferry.toml` names another
    /// accounts backend refuses it (use [`issue_client_in`](Self::issue_client_in)).
    pub fn issue_client(
        &self,
        name: &str,
        attributes: BTreeMap<String, String>,
        server: Option<&str>,
        now: u64,
    ) -> Result<Credential, Error> {
        let keys = self.issuing(server, true)?;
        // Refuse bad claims (a missing role, a bad name) before recording anything.
        Claims::new(name, 1, attributes.clone()).map_err(|e| Error::Config(e.to_string()))?;
        let record = crate::local_accounts::issue_client(&self.path, name, attributes, now)?;
        keys.credential(name, record)
    }

    /// [`issue_client`](Self::issue_client) with the record kept in `accounts` (the backend
    /// `ferry.toml` names, opened by the caller): the folder supplies only the keys and the
    /// configuration.
    pub async fn issue_client_in(
        &self,
        accounts: &dyn DynAccounts,
        name: &str,
        attributes: BTreeMap<String, String>,
        server: Option<&str>,
        now: u64,
    ) -> Result<Credential, Error> {
        let keys = self.issuing(server, false)?;
        Claims::new(name, 1, attributes.clone()).map_err(|e| Error::Config(e.to_string()))?;
        let record = accounts.issue_client(name, attributes, now).await?;
        keys.credential(name, record)
    }

    /// What issuing a credential needs from the folder, read before anything is recorded.
    /// `local`: the caller writes the folder's files, which `ferry.toml` must then name as
    /// the accounts backend.
    fn issuing(&self, server: Option<&str>, local: bool) -> Result<Issuing, Error> {
        let master = self.master_key()?;
        let identity = self.identity()?;
        let config = self.config()?;
        if local {
            local_only(&config)?;
        }
        let server = address(server, &config)?;
        Ok(Issuing {
            master,
            server,
            server_id: identity.server_id(),
        })
    }

    /// Path of a file in the folder.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// The server's OPAQUE keys, created on first use.
    pub fn opaque_keys(&self) -> Result<OpaqueKeys, Error> {
        self.check_exists()?;
        let path = self.file("opaque.key");
        if !path.exists() {
            let _lock = RegistryLock::acquire(&self.path)?;
            if !path.exists() {
                let keys = OpaqueKeys::generate(&mut rand_core::OsRng);
                let hex = Zeroizing::new(data_encoding::HEXLOWER.encode(&keys.to_bytes()) + "\n");
                fsutil::write_secret(&path, hex.as_bytes())?;
            }
        }
        let text = fsutil::read_secret_text(&path)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        let bytes = Zeroizing::new(
            data_encoding::HEXLOWER_PERMISSIVE
                .decode(text.trim().as_bytes())
                .map_err(|_| Error::Config(format!("{}: not hexadecimal", path.display())))?,
        );
        OpaqueKeys::from_bytes(&bytes)
            .ok_or_else(|| Error::Config(format!("{}: not OPAQUE keys", path.display())))
    }

    /// Users.
    pub fn users(&self) -> Result<Users, Error> {
        self.check_exists()?;
        Users::load(&self.file("users.toml"))
    }

    /// Invites.
    pub fn invites(&self) -> Result<Invites, Error> {
        self.check_exists()?;
        Invites::load(&self.file("invites.toml"))
    }

    /// The server's HPKE public key for sealed HTTP bodies (docs/HTTP.md §11), derived from
    /// the master key: what clients pin to seal to this server.
    pub fn http_seal_key(&self) -> Result<ferry_proto::http::seal::SealPublicKey, Error> {
        Ok(ferry_proto::http::seal::server_key(&self.master_key()?).public_key())
    }

    /// Sessions.
    pub fn sessions(&self) -> Result<Sessions, Error> {
        self.check_exists()?;
        Sessions::load(&self.file("sessions.toml"))
    }

    /// Creates a one-time invite for `name`, valid for `valid_secs`. A newer invite for the
    /// same name replaces an older one. Re-inviting an existing user removes its password
    /// record and ends its password sessions: every connection that logged in with its
    /// password ends at its next request, and the old password no longer logs in (the
    /// attributes of the invite apply from its registration).
    ///
    /// This writes the folder's account files; a folder whose `ferry.toml` names another
    /// accounts backend refuses it (use [`invite_user_in`](Self::invite_user_in)).
    pub fn invite_user(
        &self,
        name: &str,
        attributes: BTreeMap<String, String>,
        server: Option<&str>,
        valid_secs: u64,
        now: u64,
    ) -> Result<Credential, Error> {
        let expires = now.saturating_add(valid_secs);
        let keys = self.inviting(name, &attributes, server, expires, true)?;
        let invite =
            crate::local_accounts::create_invite(&self.path, name, attributes.clone(), expires)?;
        keys.invite(name, attributes, expires, invite.serial)
    }

    /// [`invite_user`](Self::invite_user) with the invite kept in `accounts` (the backend
    /// `ferry.toml` names, opened by the caller).
    pub async fn invite_user_in(
        &self,
        accounts: &dyn DynAccounts,
        name: &str,
        attributes: BTreeMap<String, String>,
        server: Option<&str>,
        valid_secs: u64,
        now: u64,
    ) -> Result<Credential, Error> {
        let expires = now.saturating_add(valid_secs);
        let keys = self.inviting(name, &attributes, server, expires, false)?;
        let invite = accounts
            .create_invite(name, attributes.clone(), expires)
            .await?;
        keys.invite(name, attributes, expires, invite.serial)
    }

    fn inviting(
        &self,
        name: &str,
        attributes: &BTreeMap<String, String>,
        server: Option<&str>,
        expires: u64,
        local: bool,
    ) -> Result<Issuing, Error> {
        let keys = self.issuing(server, local)?;
        self.opaque_keys()?;
        // Refuse bad claims (a missing role, a bad name) before recording anything.
        invite_claims(name, attributes.clone(), expires, 1)?;
        Ok(keys)
    }

    /// Removes a user, its invite and its password sessions. Returns false if there was no
    /// such user.
    /// (The folder's files: refused if `ferry.toml` names another accounts backend.)
    pub fn remove_user(&self, name: &str) -> Result<bool, Error> {
        local_only(&self.config()?)?;
        crate::local_accounts::remove_user(&self.path, name)
    }

    /// Ends a session by its hex ID. Returns false if there was no such session. (The
    /// folder's files: refused if `ferry.toml` names another accounts backend.)
    pub fn revoke_session(&self, id_text: &str) -> Result<bool, Error> {
        local_only(&self.config()?)?;
        crate::local_accounts::remove_session(&self.path, &id_text.to_ascii_lowercase())
    }

    /// Revokes `name` (revoking it again changes nothing). Returns false if there was no
    /// such client. (The folder's files: refused if `ferry.toml` names another accounts
    /// backend.)
    pub fn revoke_client(&self, name: &str) -> Result<bool, Error> {
        local_only(&self.config()?)?;
        Ok(crate::local_accounts::revoke_client(&self.path, name)?
            || self.registry()?.clients.contains_key(name))
    }
}

/// Refuses to write the folder's account files when `ferry.toml` keeps the accounts
/// elsewhere: they would split from what the servers read.
fn local_only(config: &Config) -> Result<(), Error> {
    match config.backend.accounts {
        AccountsBackend::Local => Ok(()),
        other => Err(Error::Config(format!(
            "ferry.toml keeps the account data in {} ([backend] accounts): it is written \
             there (ferry client/user/session do so), not in this folder's files",
            other.name()
        ))),
    }
}

/// The keys and address a credential or invite is made with.
struct Issuing {
    master: MasterKey,
    server: String,
    server_id: ServerId,
}

impl Issuing {
    /// The credential of the client record `record`.
    fn credential(self, name: &str, record: ClientRecord) -> Result<Credential, Error> {
        let claims = Claims::new(name, record.epoch, record.attributes)
            .map_err(|e| Error::Config(e.to_string()))?;
        Ok(Credential {
            server: self.server,
            server_id: self.server_id,
            key: psk::derive_psk(&self.master, &claims),
            http_url: None,
            http_seal: None,
            claims,
        })
    }

    /// The invite `(name, serial)`.
    fn invite(
        self,
        name: &str,
        attributes: BTreeMap<String, String>,
        expires: u64,
        serial: u64,
    ) -> Result<Credential, Error> {
        let claims = invite_claims(name, attributes, expires, serial)?;
        let key = psk::derive_invite_key(&self.master, &claims);
        Ok(Credential {
            server: self.server,
            server_id: self.server_id,
            key: ferry_proto::secret::Psk::from_bytes(*key.expose_secret()),
            http_url: None,
            http_seal: None,
            claims,
        })
    }
}

/// An invite's claims: its attributes and its expiry, under its serial.
fn invite_claims(
    name: &str,
    mut attributes: BTreeMap<String, String>,
    expires: u64,
    serial: u64,
) -> Result<Claims, Error> {
    attributes.insert(INVITE_EXPIRES.to_owned(), expires.to_string());
    Claims::new(name, serial, attributes).map_err(|e| Error::Config(e.to_string()))
}

/// The address to write into a credential or invite: the one given, else `address` in
/// ferry.toml; never a guess.
fn address(given: Option<&str>, config: &Config) -> Result<String, Error> {
    given
        .or(config.address.as_deref())
        .map(str::to_owned)
        .ok_or_else(|| {
            Error::Config(
                "no server address to write: pass --server HOST:PORT, or set address in \
                 ferry.toml"
                    .into(),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_issue_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let sd = ServerDir::new(dir.path().join("srv"));
        let id = sd.init().unwrap();
        assert!(sd.init().is_err(), "init twice must refuse");
        assert_eq!(sd.identity().unwrap().server_id(), id);
        let attrs: BTreeMap<_, _> = [("role".to_owned(), "writer".to_owned())].into();
        // No address given and none configured: refused, and nothing recorded.
        let e = sd
            .issue_client("alice", attrs.clone(), None, 5)
            .unwrap_err();
        assert!(e.to_string().contains("--server HOST:PORT"), "{e}");
        assert!(sd.registry().unwrap().clients.is_empty());
        let e = sd
            .invite_user("carol", attrs.clone(), None, 60, 5)
            .unwrap_err();
        assert!(e.to_string().contains("--server HOST:PORT"), "{e}");
        // The configured address is the default.
        let toml = sd.file("ferry.toml");
        let text = std::fs::read_to_string(&toml).unwrap();
        std::fs::write(&toml, format!("address = \"files.example:7443\"\n{text}")).unwrap();
        let c1 = sd.issue_client("alice", attrs.clone(), None, 5).unwrap();
        assert_eq!(c1.claims.epoch(), 1);
        assert_eq!(c1.server, "files.example:7443");
        let c2 = sd.issue_client("alice", attrs, Some("h:1"), 6).unwrap();
        assert_eq!(c2.claims.epoch(), 2);
        assert_ne!(c1.key, c2.key);
        let reg = sd.registry().unwrap();
        assert!(!reg.is_current("alice", 1));
        assert!(reg.is_current("alice", 2));
        assert!(sd.revoke_client("alice").unwrap());
        assert!(!sd.registry().unwrap().is_current("alice", 2));
        assert!(!sd.revoke_client("bob").unwrap());
        assert!(
            sd.revoke_client("alice").unwrap(),
            "revoked again: it exists"
        );
    }

    #[test]
    fn a_folder_whose_accounts_are_elsewhere_refuses_its_file_writers() {
        use crate::config::UrlSource;
        let dir = tempfile::tempdir().unwrap();
        let sd = ServerDir::new(dir.path().join("srv"));
        let backend = BackendConfig {
            accounts: AccountsBackend::Postgres,
            url: Some(UrlSource::Env("FERRY_PG_URL".into())),
        };
        sd.init_with(&backend).unwrap();
        assert_eq!(sd.config().unwrap().backend, backend);
        assert!(sd.file("opaque.key").exists(), "made at init, for copies");
        let attrs: BTreeMap<_, _> = [("role".to_owned(), "writer".to_owned())].into();
        let refusals = [
            sd.issue_client("a", attrs.clone(), Some("h:1"), 5)
                .unwrap_err(),
            sd.invite_user("u", attrs, Some("h:1"), 60, 5).unwrap_err(),
            sd.remove_user("u").unwrap_err(),
            sd.revoke_session("00").unwrap_err(),
            sd.revoke_client("a").unwrap_err(),
        ];
        for e in refusals {
            assert!(e.to_string().contains("in postgres"), "{e}");
        }
        // A server built without the accounts ferry.toml names refuses to start.
        let e = crate::Server::open(&sd).unwrap_err().to_string();
        assert!(e.contains("ServerBuilder::accounts"), "{e}");
        for f in [
            "clients.toml",
            "users.toml",
            "invites.toml",
            "sessions.toml",
        ] {
            assert!(!sd.file(f).exists(), "{f}");
        }
        // An existing ferry.toml with another [backend] is not silently kept.
        let other = ServerDir::new(dir.path().join("other"));
        std::fs::create_dir(other.path()).unwrap();
        std::fs::write(other.file("ferry.toml"), "").unwrap();
        let e = other.init_with(&backend).unwrap_err().to_string();
        assert!(e.contains("another [backend]"), "{e}");
        assert!(!other.file("master.key").exists());
    }

    #[test]
    fn init_into_an_existing_open_folder_makes_it_0700() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("srv");
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let sd = ServerDir::new(&path);
        assert_eq!(sd.warn_if_open_to_others(), Some(0o755));
        sd.init().unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert_eq!(sd.warn_if_open_to_others(), None);
    }

    #[test]
    fn master_key_refused_when_readable_by_others() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let sd = ServerDir::new(dir.path());
        sd.init().unwrap();
        let p = dir.path().join("master.key");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = sd.master_key().unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }
}
