//! The server: accepts TLS connections, authenticates them, then serves requests.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_proto::auth::{Method, Principal, ServerAuth, ServerStep};
use ferry_proto::message::{ErrorCode, ErrorMsg, Message};
use ferry_proto::session::SessionId;
use ferry_store::{LocalBackend, Store};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::{LazyConfigAcceptor, TlsAcceptor};

use crate::admission::{Admission, Pending};
use crate::changes::ChangeFeed;
pub use crate::engine::Limits;
use crate::engine::authn::{AuthCtx, PasswordAttempt};
use crate::engine::{Core, Engine, ServerBackend};
use crate::server_dir::ServerDir;
use crate::service;
use crate::wire::{PRE_AUTH_LIMIT, Wire};
use crate::{Error, tls};

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
    /// folder still supplies the configuration, keys and accounts.
    pub fn backend<B2: ServerBackend>(self, backend: B2) -> ServerBuilder<B2> {
        ServerBuilder {
            dir: self.dir,
            backend,
            limits: self.limits,
        }
    }

    /// Changes limits after they are read from `ferry.toml` (applied in order at `build`).
    pub fn limits(mut self, f: impl FnOnce(&mut Limits) + Send + 'static) -> Self {
        self.limits.push(Box::new(f));
        self
    }

    fn finish<B2: ServerBackend>(
        dir: &ServerDir,
        limits: Vec<LimitsEdit>,
        open: impl FnOnce(Core, &crate::config::Config) -> Result<Engine<B2>, Error>,
    ) -> Result<Server<B2>, Error> {
        dir.warn_if_open_to_others();
        let config = dir.config()?;
        let identity = dir.identity()?;
        let core = Core::open(dir, &config, &identity)?;
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
        Self::finish(&dir, self.limits, |core, config| {
            Engine::open_store(core, &dir, config)
        })
    }
}

impl<B: ServerBackend> ServerBuilder<B> {
    /// Loads the folder and puts the server over the backend given.
    pub fn build(self) -> Result<Server<B>, Error> {
        let backend = self.backend;
        Self::finish(&self.dir, self.limits, |core, _| {
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
        })
    }
}

/// A server with its socket bound.
pub struct BoundServer<B = LocalBackend> {
    listener: TcpListener,
    engine: Arc<Engine<B>>,
    acceptor: TlsAcceptor,
    local_addr: SocketAddr,
}

impl BoundServer {
    /// The server's store, for code embedded in the same process; see [`Server::store`].
    pub fn store(&self) -> Arc<Store> {
        self.engine.backend.store().clone()
    }
}

impl<B: ServerBackend> BoundServer<B> {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A new follower of the store's change log, for code embedded in the same process (see
    /// [`ChangeFeed`]). Take it before [`BoundServer::run`], which consumes the server.
    pub fn changes(&self) -> ChangeFeed<B> {
        self.engine.feed.clone()
    }

    /// Serves until `shutdown` resolves, then lets open connections finish their current
    /// request for the grace period.
    ///
    /// Connections not yet authenticated and authenticated ones have budgets of their own
    /// (`max_pending`, `max_connections`), and one source address holds at most
    /// `max_pending_per_address` of the first: idle sockets cannot keep others out. At start
    /// the open-file soft limit is raised to the hard limit, and the budgets are fitted
    /// under it (see the log).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let engine = self.engine;
        let acceptor = self.acceptor;
        let (max_connections, max_pending) = crate::fdlimit::fit(
            crate::fdlimit::raise(),
            engine.limits.max_connections,
            engine.limits.max_pending,
        );
        let authenticated = Arc::new(Semaphore::new(max_connections));
        let pending = Arc::new(Semaphore::new(max_pending));
        let admission = Admission::new(engine.limits.max_pending_per_address);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut conns = JoinSet::new();
        // Abandoned uploads were swept by `bind`; from now on periodically.
        let sweeper = tokio::spawn(sweep_uploads(engine.clone(), stop_rx.clone()));
        tokio::pin!(shutdown);
        loop {
            while conns.try_join_next().is_some() {}
            // Waiting for a slot leaves new connections in the kernel's backlog; a slot frees
            // within the hello deadline at most, whatever the peer holding it does.
            let slot = tokio::select! {
                () = &mut shutdown => break,
                p = pending.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let (tcp, peer) = tokio::select! {
                () = &mut shutdown => break,
                r = self.listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // Typically out of file descriptors: back off instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Some(slot) = admission.admit(peer.ip(), slot) else {
                tracing::debug!("{peer}: too many unauthenticated connections from its address");
                drop(tcp);
                continue;
            };
            let engine = engine.clone();
            let acceptor = acceptor.clone();
            let stop = stop_rx.clone();
            let authenticated = authenticated.clone();
            conns.spawn(async move {
                if let Err(e) =
                    serve_connection(&engine, &acceptor, tcp, peer, stop, slot, authenticated).await
                {
                    match e {
                        Error::Closed => {}
                        e => tracing::debug!("{peer}: {e}"),
                    }
                }
            });
        }
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
        // Awaited (a sweep in progress ends first), so that no task holds the engine and its
        // store once `run` returns.
        let _ = sweeper.await;
        let grace = engine.limits.shutdown_grace;
        if tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} })
            .await
            .is_err()
        {
            conns.abort_all();
        }
        Ok(())
    }
}

/// Removes abandoned resumable uploads every `upload_sweep`, until `stop` turns true.
async fn sweep_uploads<B: ServerBackend>(engine: Arc<Engine<B>>, mut stop: watch::Receiver<bool>) {
    let every = engine.limits.upload_sweep.max(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if let Err(e) = engine.sweep_uploads(crate::clock::now()).await {
            tracing::warn!("upload sweep failed: {e}");
        }
    }
}

/// A fatal TLS alert `no_application_protocol` (RFC 8446 §6, RFC 7301 §3.2) as a plaintext
/// record: what the server sends, before any handshake message of its own, to a ClientHello
/// that does not offer `ferry/1`.
const NO_APPLICATION_PROTOCOL: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x78];

/// Runs the TLS handshake: the ClientHello must arrive within the hello deadline and offer
/// ALPN `ferry/1`; the rest must finish by `deadline`. `None` if the connection is to close.
async fn accept_tls(
    engine: &Core,
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    deadline: tokio::time::Instant,
) -> Option<TlsStream<TcpStream>> {
    let hello_deadline = deadline.min(tokio::time::Instant::now() + engine.limits.hello_timeout);
    let mut hello = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp);
    let start = match tokio::time::timeout_at(hello_deadline, &mut hello).await {
        Ok(Ok(start)) => start,
        Ok(Err(e)) => {
            tracing::debug!("{peer}: no TLS ClientHello: {e}");
            return None;
        }
        Err(_) => {
            tracing::debug!("{peer}: no TLS ClientHello in time");
            return None;
        }
    };
    let offers_ferry = start
        .client_hello()
        .alpn()
        .is_some_and(|mut offered| offered.any(|p| p == ferry_proto::ALPN));
    if !offers_ferry {
        // rustls itself refuses a client offering only other protocols, but serves one
        // offering none (RFC 7301 allows that); ferry requires `ferry/1` in both cases.
        tracing::info!("{peer}: TLS refused: the client does not offer ALPN ferry/1");
        let mut tcp = start.io;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            tcp.write_all(&NO_APPLICATION_PROTOCOL).await?;
            tcp.shutdown().await
        })
        .await;
        return None;
    }
    let config = acceptor.config().clone();
    match tokio::time::timeout_at(deadline, start.into_stream(config)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!("{peer}: TLS handshake failed: {e}");
            None
        }
        Err(_) => {
            tracing::debug!("{peer}: TLS handshake timed out");
            None
        }
    }
}

async fn serve_connection<B: ServerBackend>(
    engine: &Arc<Engine<B>>,
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
    pending: Pending,
    authenticated: Arc<Semaphore>,
) -> Result<(), Error> {
    let _ = tcp.set_nodelay(true);
    let deadline = tokio::time::Instant::now() + engine.limits.handshake_timeout;
    let Some(tls) = accept_tls(engine, acceptor, tcp, peer, deadline).await else {
        return Ok(());
    };
    let exporter = tls::export(tls.get_ref().1)?;
    // A password change proves the current password with a login bound to this connection.
    let change_exporter = exporter.clone();
    let mut wire = Wire::new(tls);
    wire.set_limit(PRE_AUTH_LIMIT);
    let (principal, session) =
        match tokio::time::timeout_at(deadline, authenticate(engine, &mut wire, exporter, peer))
            .await
        {
            Ok(Ok(Some(p))) => p,
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(e)) => {
                tracing::info!("{peer}: authentication aborted: {e}");
                return Ok(());
            }
            Err(_) => {
                tracing::info!("{peer}: authentication timed out");
                return Ok(());
            }
        };
    // From here on the connection counts against the authenticated budget, not the other.
    drop(pending);
    let Ok(_permit) = authenticated.try_acquire_owned() else {
        tracing::warn!(
            "{peer}: {} refused: already serving max_connections authenticated connections",
            principal.name
        );
        wire.send(&Message::Error(ErrorMsg {
            code: ErrorCode::Internal,
            message: "the server is serving as many connections as it may; try again later".into(),
        }))
        .await?;
        let _ = wire.shutdown().await;
        return Ok(());
    };
    wire.set_limit(ferry_proto::frame::MAX_BODY_LEN);
    loop {
        let msg = tokio::select! {
            r = tokio::time::timeout(engine.limits.idle_timeout, wire.recv_message()) => match r {
                Ok(r) => r?,
                Err(_) => return Err(Error::Timeout("the next request")),
            },
            _ = stop.changed() => break,
        };
        if let Message::Logout(_) = msg {
            if let Some(id) = session {
                engine.end_session(id).await?;
                tracing::info!("{peer}: {} logged out", principal.name);
            }
            wire.send(&Message::LogoutOk(Default::default())).await?;
            break;
        }
        if !engine.still_valid(&principal, peer.ip()) {
            tracing::info!(
                "{peer}: {} is no longer authorised; closing",
                principal.name
            );
            wire.send(&Message::AuthFailed(Default::default())).await?;
            break;
        }
        match msg {
            Message::PasswordChangeStart(req) => {
                let ended = crate::account_service::change_password(
                    engine,
                    &mut wire,
                    &principal,
                    &change_exporter,
                    peer,
                    req,
                )
                .await?;
                if ended {
                    break;
                }
            }
            msg @ (Message::MeshState(_) | Message::MeshList(_)) => {
                crate::mesh::serve::handle(engine, &mut wire, &principal, msg).await?
            }
            Message::Watch(req) => {
                let ended = crate::watch_service::serve(
                    engine,
                    &mut wire,
                    &principal,
                    peer.ip(),
                    req,
                    &mut stop,
                )
                .await?;
                if ended {
                    break;
                }
            }
            msg => service::handle(engine, &mut wire, &principal, msg).await?,
        }
    }
    let _ = wire.shutdown().await;
    Ok(())
}

/// Runs the authentication exchange. Returns the principal and the session the connection
/// belongs to, or `None` if authentication failed (already answered).
async fn authenticate(
    engine: &Core,
    wire: &mut Wire<TlsStream<TcpStream>>,
    exporter: ferry_proto::secret::Exporter,
    peer: SocketAddr,
) -> Result<Option<(Principal, Option<SessionId>)>, Error> {
    let first = wire.recv_message().await?;
    let first = match first {
        Message::MeshJoinStart(m) => {
            let max_delay = engine.limits.handshake_timeout / 2;
            crate::mesh::serve::join(
                &engine.mesh,
                &engine.dir,
                wire,
                &exporter,
                peer,
                m,
                max_delay,
            )
            .await?;
            let _ = wire.shutdown().await;
            return Ok(None);
        }
        other => other,
    };
    let mut pending = Some(first);
    let mut attempt: Option<PasswordAttempt<'_>> = None;
    let mut state = ServerAuth::new(exporter);
    loop {
        let msg = match pending.take() {
            Some(m) => m,
            None => wire.recv_message().await?,
        };
        let now = crate::clock::now();
        let step = {
            let ctx = AuthCtx::new(engine, peer.ip(), now);
            let step = state.handle(msg, &ctx, &mut rand_core::OsRng, now);
            if let Some(user) = ctx.admitted.lock().ok().and_then(|mut a| a.take()) {
                attempt = Some(PasswordAttempt::new(&engine.limiter, user, peer.ip(), now));
            }
            step
        };
        match step {
            ServerStep::Continue { reply, next } => {
                wire.send(&reply).await?;
                state = next;
            }
            ServerStep::Accept {
                reply,
                principal,
                session,
            } => {
                let session_id = engine.accepted(&principal, session, now).await?;
                if let Some(a) = attempt.as_mut()
                    && matches!(principal.method, Method::Password { .. })
                {
                    a.succeeded();
                }
                // Gathered: it leaves with the answer to a request the client sent right
                // behind its proof, or as soon as the connection waits for the client.
                wire.queue(&reply).await?;
                tracing::info!(
                    "{peer}: authenticated {} (role {}) by {}",
                    principal.name,
                    principal.role().unwrap_or("-"),
                    principal.method.name()
                );
                return Ok(Some((principal, session_id)));
            }
            ServerStep::Register {
                reply,
                invite,
                record,
            } => {
                let name = invite.name().to_owned();
                let stored = engine.register(invite, record, now).await?;
                if stored {
                    tracing::info!("{peer}: registered user {name}");
                    wire.send(&reply).await?;
                } else {
                    tracing::warn!("{peer}: registration for {name} lost to another");
                    wire.send(&Message::AuthFailed(Default::default())).await?;
                }
                let _ = wire.shutdown().await;
                return Ok(None);
            }
            ServerStep::Reject {
                reply,
                reason,
                user,
            } => {
                // An evaluated password attempt counts as it is dropped (`PasswordAttempt`);
                // one refused because of a lock says nothing and does not extend it.
                tracing::warn!(
                    "{peer}: authentication failed ({reason:?}{})",
                    user.map(|u| format!(", user {u}")).unwrap_or_default()
                );
                wire.send(&reply).await?;
                let _ = wire.shutdown().await;
                return Ok(None);
            }
        }
    }
}
