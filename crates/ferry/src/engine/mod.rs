//! The engine: the server's state and every operation on it, with no sockets.
//!
//! Like mini-redis's `Db` apart from its listener, [`Engine`] owns what the server knows: a
//! [`Core`] (configuration-derived limits, the live account files, the login limiter, the
//! role policy, the mesh state and the keys: authentication and authorization) and the
//! storage backend `B` with its change feed (the data operations). The fronts (the TLS
//! front in `net/`, the HTTP front in `http_front/`) hold an `Arc<Engine<B>>`, decode requests, call it
//! and encode what it returns; nothing here imports a front.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use ferry_backend::Backend;
use ferry_proto::message::ErrorCode;
use ferry_proto::password::OpaqueKeys;
use ferry_proto::secret::MasterKey;
use ferry_store::{LocalBackend, Store, StoreOptions};

use ferry_backend::accounts::DynAccounts;

use crate::Error;
use crate::changes::ChangeFeed;
use crate::config::Config;
use crate::identity::Identity;
use crate::server_dir::ServerDir;
use crate::tally::Tally;
use rules::LiveRules;

mod account;
pub(crate) mod authn;
mod authz;
mod chunks;
mod delete;
mod get;
mod list;
pub(crate) mod mesh;
mod mesh_join;
mod observe;
mod put;
pub(crate) mod put_small;
pub(crate) mod rules;
mod stat;
mod versions;
mod watch;

pub(crate) use get::{BEYOND_END, Body, GetReply};
pub(crate) use list::LIST_SCAN_BUDGET;
pub(crate) use observe::AUDIT;
pub(crate) use put::{Failed, TooMuch, Upload};

/// A request the engine refuses, and why: the front answers it as an error message and goes
/// on with the next request.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
}

impl Refusal {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The refusal of a source that does not exist.
    pub(crate) fn not_found(source: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("no source '{source}'"))
    }
}

/// What an operation comes to: its reply, or a refusal to answer (`Ok(Err(..))`); `Err` means
/// the server failed and the connection must close.
pub(crate) type Outcome<T> = Result<Result<T, Refusal>, Error>;

/// The value of a `Result<T, Refusal>`, or else returns the refusal as the operation's
/// [`Outcome`] (the `?` of a refusal).
macro_rules! or_refuse {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(r) => return Ok(Err(r)),
        }
    };
}
pub(crate) use or_refuse;

/// Limits a server enforces. Read from `ferry.toml`; change them with
/// [`Server::with_limits`](crate::Server::with_limits). New limits may be added in any
/// release, so the struct cannot be built field by field outside ferry.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Limits {
    /// Deadline for a new connection's first TLS message (its ClientHello), from accept.
    pub hello_timeout: Duration,
    /// Deadline for the TLS handshake plus authentication, from accept.
    pub handshake_timeout: Duration,
    /// Deadline between requests.
    pub idle_timeout: Duration,
    /// Deadline for each frame within a transfer.
    pub transfer_timeout: Duration,
    /// Authenticated connections served at once.
    pub max_connections: usize,
    /// Connections in their TLS handshake or authentication at once (a separate budget).
    pub max_pending: usize,
    /// Of those, most from one source address (IPv6: one /64).
    pub max_pending_per_address: usize,
    /// Grace period for connections to finish at shutdown.
    pub shutdown_grace: Duration,
    /// A watch stream with nothing to send sends a `watch_ping` after this long.
    pub watch_ping: Duration,
    /// Names one listing request examines at most, visible to the principal or not.
    pub list_scan: usize,
    /// An interrupted resumable upload is kept this long after its last activity
    /// (`[uploads] keep_secs`); older ones are swept at start and periodically.
    pub upload_keep: Duration,
    /// How often idle uploads are swept (at most an hour, at most `upload_keep`).
    pub upload_sweep: Duration,
    /// A resumable put whose upload another connection holds waits this long for it to be
    /// released (the other one is typically a cut connection the server has not noticed
    /// closing yet) before it is refused as `busy`.
    pub upload_wait: Duration,
    /// The HTTP front's freshness window and nonce cache (docs/HTTP.md §6): how far a
    /// request's timestamp may be from the server's clock, and how many nonces are kept.
    pub http_replay: ferry_proto::http::ReplayConfig,
}

/// What a server stores its data in: a [`Backend`] the engine can hand to the tasks it
/// spawns (cheap to clone, as the local and in-memory backends are).
pub trait ServerBackend: Backend<Upload: 'static> + Clone + 'static {}

impl<T: Backend<Upload: 'static> + Clone + 'static> ServerBackend for T {}

/// The server's state: everything a request may read or change, apart from any connection.
/// Authentication and authorization live on its [`Core`] (reached through `Deref`), the
/// data operations on the engine itself.
pub(crate) struct Engine<B = LocalBackend> {
    core: Core,
    /// Where sources, versions, the change log and content live.
    pub(crate) backend: B,
    /// Wakes watch streams after every change to the backend.
    pub(crate) feed: ChangeFeed<B>,
}

impl<B> Deref for Engine<B> {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
    }
}

impl<B> DerefMut for Engine<B> {
    fn deref_mut(&mut self) -> &mut Core {
        &mut self.core
    }
}

impl<B: ServerBackend> Engine<B> {
    /// An engine over `backend`, with the keys, accounts and rules of `core`.
    pub(crate) fn new(core: Core, backend: B) -> Self {
        Self {
            core,
            feed: ChangeFeed::new(backend.clone()),
            backend,
        }
    }
}

impl Engine<LocalBackend> {
    /// An engine over the folder's own store (`store/`), with the keys, accounts and rules
    /// of `core`.
    pub(crate) fn open_store(core: Core, dir: &ServerDir, config: &Config) -> Result<Self, Error> {
        let store = Store::open(
            &dir.store_path(),
            StoreOptions {
                keep_versions: config.keep_versions,
                keep_changes: config.keep_changes,
            },
        )
        .map_err(|e| match e {
            ferry_store::StoreError::InUse => Error::Config(format!(
                "{} is already served by another process (its store is locked): stop that \
                 server first, or serve another folder",
                dir.path().display()
            )),
            e => e.into(),
        })?;
        Ok(Self::new(core, LocalBackend::new(Arc::new(store))))
    }
}

/// Everything of the server's state but its data: keys, limits, the account data (clients,
/// users, invites, sessions, failed logins), the role policy and the mesh state.
pub(crate) struct Core {
    pub(crate) master: MasterKey,
    /// Roles, login limits, session lifetimes, password parameters: what a reload changes.
    pub(crate) rules: LiveRules,
    pub(crate) limits: Limits,
    pub(crate) dir: ServerDir,
    pub(crate) opaque: OpaqueKeys,
    /// Clients, users, invites, sessions and failed logins.
    pub(crate) accounts: Arc<dyn DynAccounts>,
    pub(crate) mesh: mesh::MeshShared,
    /// Wakes resumable puts waiting for an upload another connection held.
    pub(crate) uploads_released: Arc<tokio::sync::Notify>,
    /// What the server counts, for monitoring.
    pub(crate) metrics: crate::metrics::Metrics,
    /// Puts and gets in progress per principal (`max_transfers_per_principal`).
    pub(crate) transfers: Arc<Tally<String>>,
    /// Authenticated connections per address (`max_connections_per_address`).
    pub(crate) per_address: Arc<Tally<std::net::IpAddr>>,
}

impl Core {
    /// Loads the state of a server folder but its store and its account data (`accounts`):
    /// keys, rules and mesh.
    pub(crate) fn open(
        dir: &ServerDir,
        config: &Config,
        identity: &Identity,
        accounts: Arc<dyn DynAccounts>,
    ) -> Result<Self, Error> {
        let master = dir.master_key()?;
        let rules = LiveRules::new(config)?;
        let limits = Limits {
            hello_timeout: Duration::from_secs(config.hello_timeout_secs),
            handshake_timeout: Duration::from_secs(config.handshake_timeout_secs),
            idle_timeout: Duration::from_secs(config.idle_timeout_secs),
            transfer_timeout: Duration::from_secs(60),
            max_connections: config.max_connections,
            max_pending: config.max_pending,
            max_pending_per_address: config.max_pending_per_address,
            shutdown_grace: Duration::from_secs(config.shutdown_grace_secs),
            watch_ping: Duration::from_millis(ferry_proto::message::DEFAULT_PING_MS),
            list_scan: LIST_SCAN_BUDGET,
            upload_keep: Duration::from_secs(config.uploads.keep_secs),
            upload_sweep: Duration::from_secs(config.uploads.keep_secs.clamp(1, 3600)),
            upload_wait: Duration::from_secs(5),
            http_replay: ferry_proto::http::ReplayConfig::default(),
        };
        let device = crate::mesh::device::DeviceKey::from_identity(identity)?;
        Ok(Self {
            master,
            rules,
            limits,
            opaque: dir.opaque_keys()?,
            accounts,
            mesh: mesh::MeshShared::open(dir, device, config.mesh.max_join_failures)?,
            dir: dir.clone(),
            uploads_released: Arc::new(tokio::sync::Notify::new()),
            metrics: crate::metrics::Metrics::new(),
            transfers: Arc::default(),
            per_address: Arc::default(),
        })
    }
}
