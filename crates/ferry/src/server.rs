//! Building a server: [`Server`], [`ServerBuilder`] and binding. Serving is in `net/`.

use std::sync::Arc;

use ferry_backend::Accounts;
use ferry_backend::accounts::DynAccounts;
use ferry_store::{LocalBackend, Store};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::Error;
use crate::changes::ChangeFeed;
use crate::config::AccountsBackend;
use crate::engine::Limits;
use crate::engine::{Core, Engine, ServerBackend};
use crate::net::BoundServer;
use crate::server_dir::ServerDir;

/// A server ready to bind, over a storage backend `B` (the server folder's own store unless
/// it was built with [`ServerBuilder::backend`]).
pub struct Server<B = LocalBackend> {
    /// Not shared yet: [`Server::with_limits`] changes it in place until [`Server::bind`].
    engine: Engine<B>,
    acceptor: TlsAcceptor,
    listen: String,
}

impl<B> std::fmt::Debug for Server<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Loads a server folder: configuration, keys, registry and store. The same as
    /// `Server::builder(dir).build()`.
    pub fn open(dir: &ServerDir) -> Result<Self, Error> {
        Self::builder(dir).build()
    }

    /// Starts building a server on the folder `dir` (its configuration, keys and account
    /// files); its data lives in the folder's store unless [`ServerBuilder::backend`] says
    /// otherwise.
    pub fn builder(dir: &ServerDir) -> ServerBuilder {
        ServerBuilder {
            dir: dir.clone(),
            backend: FolderStore,
            accounts: None,
            limits: Vec::new(),
        }
    }

    /// The server's store, for code embedded in the same process (a store directory can be
    /// open only once). Changes made through it, such as
    /// [`Store::commit_replica`](ferry_store::Store::commit_replica), wake watch streams and
    /// every [`ChangeFeed`] like the server's own. Its methods block: call them from
    /// `spawn_blocking`.
    pub fn store(&self) -> Arc<Store> {
        self.engine.backend.store().clone()
    }
}

/// A change of limits given to [`ServerBuilder::limits`].
type LimitsEdit = Box<dyn FnOnce(&mut Limits) + Send>;

/// The storage of a [`ServerBuilder`] that was given no backend: the server folder's own
/// store (`store/`), opened by [`ServerBuilder::build`] as a [`LocalBackend`].
#[derive(Debug, Clone, Copy)]
pub struct FolderStore;

/// Builds a [`Server`]: from a server folder, optionally over another storage backend, with
/// limits changed. Made by [`Server::builder`].
///
/// ```no_run
/// # fn demo(dir: &ferry::ServerDir) -> Result<(), ferry::Error> {
/// use ferry::backend::{MemoryBackend, Retention};
/// // Keys, configuration and accounts from the folder; data in memory only.
/// let server = ferry::Server::builder(dir)
///     .backend(MemoryBackend::new(Retention::default()))
///     .limits(|l| l.max_connections = 64)
///     .build()?;
/// # Ok(()) }
/// ```
#[must_use = "a builder does nothing until `build`"]
pub struct ServerBuilder<B = FolderStore> {
    dir: ServerDir,
    backend: B,
    accounts: Option<Arc<dyn DynAccounts>>,
    limits: Vec<LimitsEdit>,
}

impl<B> std::fmt::Debug for ServerBuilder<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("dir", &self.dir.path())
            .field("backend", &std::any::type_name::<B>())
            .finish_non_exhaustive()
    }
}

impl<B> ServerBuilder<B> {
    /// Keeps the server's data in `backend` (for example a
    /// [`MemoryBackend`](ferry_backend::MemoryBackend)) instead of the folder's store. The
    /// folder still supplies the configuration and keys, and the accounts unless
    /// [`accounts`](Self::accounts) says otherwise.
    pub fn backend<B2: ServerBackend>(self, backend: B2) -> ServerBuilder<B2> {
        ServerBuilder {
            dir: self.dir,
            backend,
            accounts: self.accounts,
            limits: self.limits,
        }
    }

    /// Keeps the account data (clients, users, invites, sessions, failed logins) in
    /// `accounts` instead of the folder's files ([`LocalAccounts`](crate::LocalAccounts)).
    /// Required when `ferry.toml`'s `[backend]` names a shared backend (`build` refuses
    /// otherwise): the caller opens it, as `ferry serve` does.
    pub fn accounts(mut self, accounts: impl Accounts + 'static) -> Self {
        self.accounts = Some(Arc::new(accounts));
        self
    }

    /// [`accounts`](Self::accounts) for a backend already behind `dyn`.
    pub fn dyn_accounts(mut self, accounts: Arc<dyn DynAccounts>) -> Self {
        self.accounts = Some(accounts);
        self
    }

    /// Changes limits after they are read from `ferry.toml` (applied in order at `build`).
    pub fn limits(mut self, f: impl FnOnce(&mut Limits) + Send + 'static) -> Self {
        self.limits.push(Box::new(f));
        self
    }

    fn finish<B2: ServerBackend>(
        dir: &ServerDir,
        accounts: Option<Arc<dyn DynAccounts>>,
        limits: Vec<LimitsEdit>,
        open: impl FnOnce(Core, &crate::config::Config) -> Result<Engine<B2>, Error>,
    ) -> Result<Server<B2>, Error> {
        dir.warn_if_open_to_others();
        let config = dir.config()?;
        let identity = dir.identity()?;
        let accounts = match accounts {
            Some(accounts) => accounts,
            None if config.backend.accounts == AccountsBackend::Local => {
                Arc::new(crate::LocalAccounts::new(dir.path()))
            }
            // Serving the folder's files while the account commands write elsewhere would
            // split the account data.
            None => {
                return Err(Error::Config(format!(
                    "ferry.toml keeps the account data in {} ([backend] accounts): open it \
                     and give it to ServerBuilder::accounts (ferry serve does)",
                    config.backend.accounts.name()
                )));
            }
        };
        let core = Core::open(dir, &config, &identity, accounts)?;
        let mut engine = open(core, &config)?;
        for f in limits {
            f(&mut engine.limits);
        }
        let acceptor = TlsAcceptor::from(Arc::new(identity.server_config()?));
        Ok(Server {
            engine,
            acceptor,
            listen: config.listen,
        })
    }
}

impl ServerBuilder<FolderStore> {
    /// Loads the folder and opens its store.
    pub fn build(self) -> Result<Server<LocalBackend>, Error> {
        let dir = self.dir;
        Self::finish(&dir, self.accounts, self.limits, |core, config| {
            Engine::open_store(core, &dir, config)
        })
    }
}

impl<B: ServerBackend> ServerBuilder<B> {
    /// Loads the folder and puts the server over the backend given.
    pub fn build(self) -> Result<Server<B>, Error> {
        let backend = self.backend;
        Self::finish(&self.dir, self.accounts, self.limits, |core, _| {
            Ok(Engine::new(core, backend))
        })
    }
}

impl<B: ServerBackend> Server<B> {
    /// The address from the configuration.
    pub fn configured_listen(&self) -> &str {
        &self.listen
    }

    /// A new follower of the backend's change log (see [`ChangeFeed`]).
    pub fn changes(&self) -> ChangeFeed<B> {
        self.engine.feed.clone()
    }

    /// Changes limits (for tests and embedding).
    pub fn with_limits(mut self, f: impl FnOnce(&mut Limits)) -> Self {
        f(&mut self.engine.limits);
        self
    }

    /// Binds the listening socket. Before that, removes the resumable uploads left idle for
    /// longer than `[uploads] keep_secs` (then [`BoundServer::run`] does so periodically).
    pub async fn bind(self, addr: &str) -> Result<BoundServer<B>, Error> {
        if let Err(e) = self.engine.sweep_uploads(crate::clock::now()).await {
            tracing::warn!("upload sweep failed: {e}");
        }
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Config(format!("cannot listen on {addr}: {e}")))?;
        let local_addr = listener.local_addr()?;
        Ok(BoundServer {
            listener,
            engine: Arc::new(self.engine),
            acceptor: self.acceptor,
            local_addr,
            http: None,
            http_stats: Default::default(),
        })
    }
}
