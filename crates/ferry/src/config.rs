//! The server's configuration file, `ferry.toml`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

pub use crate::backend_config::{AccountsBackend, BackendConfig, UrlSource};

use crate::Error;
use crate::policy::Rule;

/// The default port.
pub const DEFAULT_PORT: u16 = 7443;

/// The text `ferry init` writes.
pub const DEFAULT_CONFIG: &str = r#"# ferry server configuration.

# Where `ferry serve` listens (override with --listen).
listen = "0.0.0.0:7443"
# The address written into credentials and invites: how clients reach this server (a name or
# address other machines can use). Without it, `ferry client issue` and `ferry user invite`
# need --server HOST:PORT.
# address = "files.example.com:7443"
# How many versions of each source are kept.
keep_versions = 3
# How many of the latest changes are kept for `ferry watch` to catch up on after a cut.
keep_changes = 100000
# Most authenticated connections served at once; one authenticated beyond that is answered
# with an error and closed.
max_connections = 16384
# Most connections still in their TLS handshake or authentication, a budget of their own;
# more wait in the kernel's backlog.
max_pending = 1024
# Most of those from one source address (IPv6: one /64); more are closed at once.
max_pending_per_address = 32
# Seconds a new connection has to send its first TLS message (the ClientHello).
hello_timeout_secs = 5
# Seconds a client has to finish the TLS handshake and authenticate.
handshake_timeout_secs = 10
# At start the server raises its open-file soft limit to the hard limit; if the budgets above
# still do not fit under it, it serves fewer connections and says so in its log.
# Seconds an authenticated connection may sit idle between requests.
idle_timeout_secs = 300
# Seconds transfers in progress have to finish when the server stops (SIGTERM); then each is
# told the server is shutting down (clients resume once it is back) and closed.
shutdown_grace_secs = 5

# Roles: what each role may do. `ops` lists put, get, list, stat, delete (or "*");
# `sources` lists glob patterns on source names: "*" matches within one segment,
# "**" across segments, and "{name}" stands for the client's own name.
[roles]
admin = [{ ops = ["*"], sources = ["**"] }]
writer = [{ ops = ["put", "get", "list", "stat", "delete"], sources = ["**"] }]
reader = [{ ops = ["get", "list", "stat"], sources = ["**"] }]

# Failed password logins: after max_failures within window_secs, the account and the source
# address are locked for lockout_secs, doubling with each further failure (at most an hour).
[login]
max_failures = 5
window_secs = 900
lockout_secs = 60

# Sessions end after idle_secs without use, and after max_secs in any case.
[sessions]
idle_secs = 604800
max_secs = 2592000

# Argon2id parameters for new password records (RFC 9106): memory in KiB, passes, lanes.
# Raising them affects new and reset passwords; existing records keep their own.
[password]
m_kib = 65536
t = 3
p = 1

# Joining a LAN mesh (`ferry mesh open`): after max_join_failures failed joins, however they
# end (a wrong password, or a joiner that hangs up once it has the answer), the open window
# closes and its password is removed; open it again to accept more joins.
[mesh]
max_join_failures = 10

# Limits per principal and per address. `ferry serve` re-reads them on SIGHUP.
[limits]
# Largest content one put may store, in bytes (0: no limit; default 1 TiB). A larger put is
# answered `too_large`.
max_upload_bytes = 1099511627776
# Puts and gets one principal may have in progress at once (0: no limit); more are answered
# `busy`, and the client tries again.
max_transfers_per_principal = 32
# Authenticated connections from one address (IPv6: one /64) at once (0: no limit); more are
# answered `busy`.
max_connections_per_address = 1024
# Per principal, the most its kept versions may take, in bytes and in versions (0: no
# quota). A put past either is answered `quota_exceeded`. Every kept version counts (also
# old ones up to keep_versions), counted before the new one prunes any.
quota_bytes = 0
quota_versions = 0

# Resumable uploads (`ferry put SOURCE FILE`): the bytes of an interrupted upload are kept for
# keep_secs after its last activity, for the same command to continue it; older ones are
# removed (at start and at least hourly) and never become a version.
[uploads]
keep_secs = 86400
"#;

/// The parsed configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listening address.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Address given to clients in credentials and invites; none unless configured (ferry
    /// does not guess one: a wrong guess makes credentials that lead nowhere).
    #[serde(default)]
    pub address: Option<String>,
    /// Versions kept per source.
    #[serde(default = "default_keep")]
    pub keep_versions: u32,
    /// Changes kept in the change log that watchers resume from.
    #[serde(default = "default_keep_changes")]
    pub keep_changes: u64,
    /// Most authenticated connections at once.
    #[serde(default = "default_max_conn")]
    pub max_connections: usize,
    /// Most connections not yet authenticated at once.
    #[serde(default = "default_max_pending")]
    pub max_pending: usize,
    /// Most connections not yet authenticated from one address (IPv6: one /64).
    #[serde(default = "default_max_pending_per_address")]
    pub max_pending_per_address: usize,
    /// Deadline for a new connection's first TLS message, seconds.
    #[serde(default = "default_hello")]
    pub hello_timeout_secs: u64,
    /// Handshake and authentication deadline, seconds.
    #[serde(default = "default_handshake")]
    pub handshake_timeout_secs: u64,
    /// Idle deadline between requests, seconds.
    #[serde(default = "default_idle")]
    pub idle_timeout_secs: u64,
    /// Grace period for transfers at shutdown, seconds.
    #[serde(default = "default_grace")]
    pub shutdown_grace_secs: u64,
    /// Role rules.
    #[serde(default)]
    pub roles: BTreeMap<String, Vec<Rule>>,
    /// Limits on failed password logins.
    #[serde(default)]
    pub login: LoginLimits,
    /// Session lifetimes.
    #[serde(default)]
    pub sessions: SessionLimits,
    /// Argon2id parameters for new password records (existing records keep theirs).
    #[serde(default = "default_ksf")]
    pub password: ferry_proto::password::KsfParams,
    /// Limits on joining the mesh.
    #[serde(default)]
    pub mesh: MeshLimits,
    /// How long interrupted resumable uploads are kept.
    #[serde(default)]
    pub uploads: UploadLimits,
    /// Limits per principal and per address.
    #[serde(default)]
    pub limits: PrincipalLimits,
    /// Where the account data lives, from `[backend]`. Decoded by hand
    /// ([`BackendConfig::from_toml`]), never by serde: so no error quotes a value of the
    /// section (a URL put there by mistake could hold a password).
    #[serde(default, deserialize_with = "crate::backend_config::skip")]
    pub backend: BackendConfig,
}

/// Limits per principal and per address, from `[limits]` (reloaded by SIGHUP).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PrincipalLimits {
    /// Largest content one put may store, in bytes; 0: no limit.
    #[serde(default = "default_max_upload")]
    pub max_upload_bytes: u64,
    /// Puts and gets in progress at once per principal; 0: no limit.
    #[serde(default = "default_max_transfers")]
    pub max_transfers_per_principal: usize,
    /// Authenticated connections at once per address (IPv6: one /64); 0: no limit.
    #[serde(default = "default_max_conn_per_address")]
    pub max_connections_per_address: usize,
    /// Bytes of kept versions per principal; 0: no quota.
    #[serde(default)]
    pub quota_bytes: u64,
    /// Kept versions per principal; 0: no quota.
    #[serde(default)]
    pub quota_versions: u64,
}

impl Default for PrincipalLimits {
    fn default() -> Self {
        Self {
            max_upload_bytes: default_max_upload(),
            max_transfers_per_principal: default_max_transfers(),
            max_connections_per_address: default_max_conn_per_address(),
            quota_bytes: 0,
            quota_versions: 0,
        }
    }
}

fn default_grace() -> u64 {
    5
}

fn default_max_upload() -> u64 {
    1 << 40
}

fn default_max_transfers() -> usize {
    32
}

fn default_max_conn_per_address() -> usize {
    1024
}

/// Resumable uploads, from `[uploads]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadLimits {
    /// Seconds an interrupted upload is kept after its last activity (default 24 hours).
    #[serde(default = "default_upload_keep")]
    pub keep_secs: u64,
}

impl Default for UploadLimits {
    fn default() -> Self {
        Self {
            keep_secs: default_upload_keep(),
        }
    }
}

fn default_upload_keep() -> u64 {
    86400
}

/// Limits on joining the mesh, from `[mesh]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshLimits {
    /// Failed joins after which an open window closes.
    #[serde(default = "default_max_join_failures")]
    pub max_join_failures: u32,
}

impl Default for MeshLimits {
    fn default() -> Self {
        Self {
            max_join_failures: default_max_join_failures(),
        }
    }
}

fn default_max_join_failures() -> u32 {
    10
}

/// Session lifetimes, from `[sessions]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionLimits {
    /// Seconds of inactivity that end a session.
    #[serde(default = "default_session_idle")]
    pub idle_secs: u64,
    /// Seconds after which a session ends regardless.
    #[serde(default = "default_session_max")]
    pub max_secs: u64,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            idle_secs: default_session_idle(),
            max_secs: default_session_max(),
        }
    }
}

fn default_session_idle() -> u64 {
    7 * 86400
}
fn default_session_max() -> u64 {
    30 * 86400
}
fn default_ksf() -> ferry_proto::password::KsfParams {
    ferry_proto::password::KsfParams::DEFAULT
}

fn default_listen() -> String {
    format!("0.0.0.0:{DEFAULT_PORT}")
}
fn default_keep() -> u32 {
    3
}
fn default_keep_changes() -> u64 {
    100_000
}
fn default_max_conn() -> usize {
    16384
}
fn default_max_pending() -> usize {
    1024
}
fn default_max_pending_per_address() -> usize {
    32
}
fn default_hello() -> u64 {
    5
}
fn default_handshake() -> u64 {
    10
}
fn default_idle() -> u64 {
    300
}

impl Config {
    /// Parses configuration text.
    pub fn parse(text: &str) -> Result<Self, Error> {
        // The [backend] section (and a stray top-level `url`) first, by hand: serde's errors
        // quote the offending line, which must never be a connection URL.
        let backend = match toml::from_str::<toml::Table>(text) {
            Ok(table) => BackendConfig::from_toml(&table)?,
            Err(_) => BackendConfig::default(), // the full parse below reports it
        };
        let mut c: Self =
            toml::from_str(text).map_err(|e| Error::Config(format!("ferry.toml: {e}")))?;
        c.backend = backend;
        if c.keep_versions == 0 || c.keep_changes == 0 {
            return Err(Error::Config(
                "ferry.toml: keep_versions and keep_changes must be at least 1".into(),
            ));
        }
        if c.max_connections == 0
            || c.max_pending == 0
            || c.max_pending_per_address == 0
            || c.hello_timeout_secs == 0
            || c.handshake_timeout_secs == 0
            || c.idle_timeout_secs == 0
        {
            return Err(Error::Config(
                "ferry.toml: connection budgets and timeouts must be positive".into(),
            ));
        }
        if c.mesh.max_join_failures == 0 {
            return Err(Error::Config(
                "ferry.toml: [mesh] max_join_failures must be at least 1".into(),
            ));
        }
        if c.password.argon2().is_none() {
            return Err(Error::Config(
                "ferry.toml: [password] parameters are out of range for Argon2id".into(),
            ));
        }
        // Compile the rules now so a bad pattern is reported at start.
        crate::policy::Policy::new(&c.roles)?;
        Ok(c)
    }

    /// Reads `ferry.toml` from a server folder.
    pub fn load(dir: &Path) -> Result<Self, Error> {
        let path = dir.join("ferry.toml");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        Self::parse(&text)
    }
}

/// Limits on failed password logins, from `[login]` in `ferry.toml`: after `max_failures`
/// failures within `window_secs`, the account (or the source address) is locked for
/// `lockout_secs`, doubling with every further failure up to an hour. A locked account still
/// runs the whole protocol against a dummy record and gets the same generic failure, so the
/// lock itself reveals nothing.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginLimits {
    /// Failures allowed within the window before a lock.
    #[serde(default = "default_max")]
    pub max_failures: u32,
    /// Seconds over which failures count.
    #[serde(default = "default_window")]
    pub window_secs: u64,
    /// First lock's length, seconds.
    #[serde(default = "default_lockout")]
    pub lockout_secs: u64,
}

fn default_max() -> u32 {
    5
}
fn default_window() -> u64 {
    900
}
fn default_lockout() -> u64 {
    60
}

impl LoginLimits {
    /// The rule the account data applies.
    pub fn policy(&self) -> ferry_backend::accounts::LoginPolicy {
        ferry_backend::accounts::LoginPolicy {
            max_failures: self.max_failures,
            window_secs: self.window_secs,
            lockout_secs: self.lockout_secs,
        }
    }
}

impl Default for LoginLimits {
    fn default() -> Self {
        Self {
            max_failures: default_max(),
            window_secs: default_window(),
            lockout_secs: default_lockout(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_parses() {
        let c = Config::parse(DEFAULT_CONFIG).unwrap();
        assert_eq!(c.roles.len(), 3);
        assert_eq!(c.keep_versions, 3);
        assert_eq!(c.keep_changes, 100_000);
        assert_eq!(Config::parse("").unwrap().keep_changes, 100_000);
        assert_eq!(c.mesh.max_join_failures, 10);
        assert_eq!(Config::parse("").unwrap().mesh.max_join_failures, 10);
        assert_eq!(c.uploads.keep_secs, 86400);
        assert_eq!(Config::parse("").unwrap().uploads.keep_secs, 86400);
        assert_eq!(
            Config::parse("[uploads]\nkeep_secs = 60")
                .unwrap()
                .uploads
                .keep_secs,
            60
        );
        // The connection budgets written by `ferry init` are the defaults.
        let empty = Config::parse("").unwrap();
        assert_eq!(
            (
                c.max_pending,
                c.max_pending_per_address,
                c.hello_timeout_secs
            ),
            (1024, 32, 5)
        );
        assert_eq!(
            (
                empty.max_pending,
                empty.max_pending_per_address,
                empty.hello_timeout_secs
            ),
            (1024, 32, 5)
        );
    }

    #[test]
    fn bad_configs() {
        assert!(Config::parse("keep_versions = 0").is_err());
        assert!(Config::parse("keep_changes = 0").is_err());
        assert!(Config::parse("nonsense = 1").is_err());
        assert!(Config::parse("[mesh]\nmax_join_failures = 0").is_err());
        assert!(Config::parse("max_pending = 0").is_err());
        assert!(Config::parse("[uploads]\nkeep = 1").is_err());
        assert!(Config::parse("max_pending_per_address = 0").is_err());
        assert!(Config::parse("hello_timeout_secs = 0").is_err());
        assert!(Config::parse("[roles]\nx = [{ ops = [\"fly\"], sources = [\"**\"] }]").is_err());
        assert!(Config::parse("[roles]\nx = [{ ops = [\"get\"], sources = [\"[\"] }]").is_err());
    }
}
