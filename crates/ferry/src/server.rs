//! The server: accepts TLS connections, authenticates them, then serves requests.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_proto::auth::{Method, Principal, ServerAuth, ServerContext, ServerStep};
use ferry_proto::claims::Claims;
use ferry_proto::message::Message;
use ferry_proto::secret::MasterKey;
use ferry_store::{Store, StoreOptions};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::policy::Policy;
use crate::registry::{LiveRegistry, Registry};
use crate::server_dir::ServerDir;
use crate::service;
use crate::wire::{PRE_AUTH_LIMIT, Wire};
use crate::{Error, tls};

/// Limits a server enforces.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Deadline for the TLS handshake plus authentication.
    pub handshake_timeout: Duration,
    /// Deadline between requests.
    pub idle_timeout: Duration,
    /// Deadline for each frame within a transfer.
    pub transfer_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Grace period for connections to finish at shutdown.
    pub shutdown_grace: Duration,
}

pub(crate) struct Shared {
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) master: MasterKey,
    pub(crate) registry: LiveRegistry,
    pub(crate) policy: Policy,
    pub(crate) store: Arc<Store>,
    pub(crate) limits: Limits,
}

/// A server ready to bind.
pub struct Server {
    shared: Arc<Shared>,
    listen: String,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Loads a server folder: configuration, keys, registry and store.
    pub fn open(dir: &ServerDir) -> Result<Self, Error> {
        let config = dir.config()?;
        let identity = dir.identity()?;
        let master = dir.master_key()?;
        let registry = LiveRegistry::open(dir.registry_path())?;
        let policy = Policy::new(&config.roles)?;
        let store = Store::open(
            &dir.store_path(),
            StoreOptions {
                keep_versions: config.keep_versions,
            },
        )?;
        let limits = Limits {
            handshake_timeout: Duration::from_secs(config.handshake_timeout_secs),
            idle_timeout: Duration::from_secs(config.idle_timeout_secs),
            transfer_timeout: Duration::from_secs(60),
            max_connections: config.max_connections,
            shutdown_grace: Duration::from_secs(5),
        };
        let acceptor = TlsAcceptor::from(Arc::new(identity.server_config()?));
        Ok(Self {
            shared: Arc::new(Shared {
                acceptor,
                master,
                registry,
                policy,
                store: Arc::new(store),
                limits,
            }),
            listen: config.listen,
        })
    }

    /// The address from the configuration.
    pub fn configured_listen(&self) -> &str {
        &self.listen
    }

    /// Changes limits (for tests and embedding).
    pub fn with_limits(mut self, f: impl FnOnce(&mut Limits)) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            f(&mut shared.limits);
        }
        self
    }

    /// Binds the listening socket.
    pub async fn bind(self, addr: &str) -> Result<BoundServer, Error> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Config(format!("cannot listen on {addr}: {e}")))?;
        let local_addr = listener.local_addr()?;
        Ok(BoundServer {
            listener,
            shared: self.shared,
            local_addr,
        })
    }
}

/// A server with its socket bound.
pub struct BoundServer {
    listener: TcpListener,
    shared: Arc<Shared>,
    local_addr: SocketAddr,
}

impl BoundServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` resolves, then lets open connections finish their current
    /// request for the grace period.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let shared = self.shared;
        let permits = Arc::new(Semaphore::new(shared.limits.max_connections));
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut conns = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            while conns.try_join_next().is_some() {}
            let permit = tokio::select! {
                () = &mut shutdown => break,
                p = permits.clone().acquire_owned() => match p {
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
            let shared = shared.clone();
            let stop = stop_rx.clone();
            conns.spawn(async move {
                let _permit = permit;
                if let Err(e) = serve_connection(&shared, tcp, peer, stop).await {
                    match e {
                        Error::Closed => {}
                        e => tracing::debug!("{peer}: {e}"),
                    }
                }
            });
        }
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
        let grace = shared.limits.shutdown_grace;
        if tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} })
            .await
            .is_err()
        {
            conns.abort_all();
        }
        Ok(())
    }
}

struct AuthCtx<'a> {
    master: &'a MasterKey,
    registry: Arc<Registry>,
}

impl ServerContext for AuthCtx<'_> {
    fn master_key(&self) -> &MasterKey {
        self.master
    }

    fn claims_current(&self, claims: &Claims) -> bool {
        self.registry.is_current(claims.name(), claims.epoch())
    }
}

impl Shared {
    /// Whether a principal authenticated earlier may still act (not revoked, not re-issued).
    pub(crate) fn still_valid(&self, p: &Principal) -> bool {
        match p.method {
            Method::Psk { epoch } => self.registry.current().is_current(&p.name, epoch),
            _ => false,
        }
    }
}

async fn serve_connection(
    shared: &Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Error> {
    let _ = tcp.set_nodelay(true);
    let deadline = tokio::time::Instant::now() + shared.limits.handshake_timeout;
    let tls = match tokio::time::timeout_at(deadline, shared.acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!("{peer}: TLS handshake failed: {e}");
            return Ok(());
        }
        Err(_) => {
            tracing::debug!("{peer}: TLS handshake timed out");
            return Ok(());
        }
    };
    let exporter = tls::export(tls.get_ref().1)?;
    let mut wire = Wire::new(tls);
    wire.set_limit(PRE_AUTH_LIMIT);
    let principal =
        match tokio::time::timeout_at(deadline, authenticate(shared, &mut wire, exporter, peer))
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
    wire.set_limit(ferry_proto::frame::MAX_BODY_LEN);
    loop {
        let msg = tokio::select! {
            r = tokio::time::timeout(shared.limits.idle_timeout, wire.recv_message()) => match r {
                Ok(r) => r?,
                Err(_) => return Err(Error::Timeout("the next request")),
            },
            _ = stop.changed() => break,
        };
        if !shared.still_valid(&principal) {
            tracing::info!(
                "{peer}: {} is no longer authorised; closing",
                principal.name
            );
            wire.send(&Message::AuthFailed(Default::default())).await?;
            break;
        }
        service::handle(shared, &mut wire, &principal, msg).await?;
    }
    let _ = tokio::io::AsyncWriteExt::shutdown(wire.get_mut()).await;
    Ok(())
}

async fn authenticate(
    shared: &Shared,
    wire: &mut Wire<TlsStream<TcpStream>>,
    exporter: ferry_proto::secret::Exporter,
    peer: SocketAddr,
) -> Result<Option<Principal>, Error> {
    let mut state = ServerAuth::new(exporter);
    loop {
        let msg = wire.recv_message().await?;
        let ctx = AuthCtx {
            master: &shared.master,
            registry: shared.registry.current(),
        };
        let now = crate::clock::now();
        match state.handle(msg, &ctx, &mut rand_core::OsRng, now) {
            ServerStep::Continue { reply, next } => {
                wire.send(&reply).await?;
                state = next;
            }
            ServerStep::Accept {
                reply, principal, ..
            } => {
                wire.send(&reply).await?;
                tracing::info!(
                    "{peer}: authenticated {} (role {})",
                    principal.name,
                    principal.role().unwrap_or("-")
                );
                return Ok(Some(principal));
            }
            ServerStep::Register { .. } => {
                // This server offers no invites yet.
                tracing::warn!("{peer}: unexpected registration");
                wire.send(&Message::AuthFailed(Default::default())).await?;
                return Ok(None);
            }
            ServerStep::Reject { reply, reason, .. } => {
                tracing::warn!("{peer}: authentication failed ({reason:?})");
                wire.send(&reply).await?;
                let _ = tokio::io::AsyncWriteExt::shutdown(wire.get_mut()).await;
                return Ok(None);
            }
        }
    }
}
