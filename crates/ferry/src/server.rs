//! The server: accepts TLS connections, authenticates them, then serves requests.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::net::IpAddr;

use ferry_proto::auth::{
    KnownUser, Method, Principal, ServerAuth, ServerContext, ServerStep, StoredSession,
};
use ferry_proto::claims::Claims;
use ferry_proto::message::{ErrorCode, ErrorMsg, Message};
use ferry_proto::password::{KsfParams, OpaqueKeys};
use ferry_proto::secret::MasterKey;
use ferry_proto::session::SessionId;
use ferry_store::{Store, StoreOptions};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::{LazyConfigAcceptor, TlsAcceptor};

use crate::accounts::{Invites, SessionEntry, Sessions, Users, session_id_text};
use crate::admission::{Admission, Pending};
use crate::changes::ChangeFeed;
use crate::config::SessionLimits;
use crate::limiter::Limiter;
use crate::live::LiveFile;
use crate::policy::Policy;
use crate::registry::{LiveRegistry, Registry};
use crate::server_dir::ServerDir;
use crate::service;
use crate::wire::{PRE_AUTH_LIMIT, Wire};
use crate::{Error, tls};

/// Limits a server enforces.
#[derive(Clone, Debug)]
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
}

pub(crate) struct Shared {
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) master: MasterKey,
    pub(crate) registry: LiveRegistry,
    pub(crate) policy: Policy,
    pub(crate) store: Arc<Store>,
    /// Wakes watch streams after every change to `store`.
    pub(crate) feed: ChangeFeed,
    pub(crate) limits: Limits,
    pub(crate) dir: ServerDir,
    pub(crate) opaque: OpaqueKeys,
    pub(crate) users: LiveFile<Users>,
    pub(crate) invites: LiveFile<Invites>,
    pub(crate) sessions: LiveFile<Sessions>,
    pub(crate) limiter: Limiter,
    pub(crate) session_limits: SessionLimits,
    pub(crate) new_ksf: KsfParams,
    pub(crate) mesh: crate::mesh::serve::MeshShared,
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
        dir.warn_if_open_to_others();
        let config = dir.config()?;
        let identity = dir.identity()?;
        let master = dir.master_key()?;
        let registry = LiveRegistry::open(dir.registry_path())?;
        let policy = Policy::new(&config.roles)?;
        let store = Store::open(
            &dir.store_path(),
            StoreOptions {
                keep_versions: config.keep_versions,
                keep_changes: config.keep_changes,
            },
        )?;
        let limits = Limits {
            hello_timeout: Duration::from_secs(config.hello_timeout_secs),
            handshake_timeout: Duration::from_secs(config.handshake_timeout_secs),
            idle_timeout: Duration::from_secs(config.idle_timeout_secs),
            transfer_timeout: Duration::from_secs(60),
            max_connections: config.max_connections,
            max_pending: config.max_pending,
            max_pending_per_address: config.max_pending_per_address,
            shutdown_grace: Duration::from_secs(5),
            watch_ping: Duration::from_millis(ferry_proto::message::DEFAULT_PING_MS),
            list_scan: crate::service::LIST_SCAN_BUDGET,
        };
        let store = Arc::new(store);
        let feed = ChangeFeed::install(store.clone())?;
        let acceptor = TlsAcceptor::from(Arc::new(identity.server_config()?));
        let device = crate::mesh::device::DeviceKey::from_identity(&identity)?;
        Ok(Self {
            shared: Arc::new(Shared {
                acceptor,
                master,
                registry,
                policy,
                store,
                feed,
                limits,
                opaque: dir.opaque_keys()?,
                users: LiveFile::open(dir.file("users.toml"))?,
                invites: LiveFile::open(dir.file("invites.toml"))?,
                sessions: LiveFile::open(dir.file("sessions.toml"))?,
                limiter: Limiter::new(config.login.clone()),
                session_limits: config.sessions.clone(),
                new_ksf: config.password,
                mesh: crate::mesh::serve::MeshShared::open(
                    dir,
                    device,
                    config.mesh.max_join_failures,
                )?,
                dir: dir.clone(),
            }),
            listen: config.listen,
        })
    }

    /// The address from the configuration.
    pub fn configured_listen(&self) -> &str {
        &self.listen
    }

    /// The server's store, for code embedded in the same process (a store directory can be
    /// open only once). Changes made through it, such as
    /// [`Store::commit_replica`](ferry_store::Store::commit_replica), wake watch streams and
    /// every [`ChangeFeed`] like the server's own. Its methods block: call them from
    /// `spawn_blocking`.
    pub fn store(&self) -> Arc<Store> {
        self.shared.store.clone()
    }

    /// A new follower of the store's change log (see [`ChangeFeed`]).
    pub fn changes(&self) -> ChangeFeed {
        self.shared.feed.clone()
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

    /// The server's store, for code embedded in the same process; see [`Server::store`].
    pub fn store(&self) -> Arc<Store> {
        self.shared.store.clone()
    }

    /// A new follower of the store's change log, for code embedded in the same process (see
    /// [`ChangeFeed`]). Take it before [`BoundServer::run`], which consumes the server.
    pub fn changes(&self) -> ChangeFeed {
        self.shared.feed.clone()
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
        let shared = self.shared;
        let (max_connections, max_pending) = crate::fdlimit::fit(
            crate::fdlimit::raise(),
            shared.limits.max_connections,
            shared.limits.max_pending,
        );
        let authenticated = Arc::new(Semaphore::new(max_connections));
        let pending = Arc::new(Semaphore::new(max_pending));
        let admission = Admission::new(shared.limits.max_pending_per_address);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut conns = JoinSet::new();
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
            let shared = shared.clone();
            let stop = stop_rx.clone();
            let authenticated = authenticated.clone();
            conns.spawn(async move {
                if let Err(e) =
                    serve_connection(&shared, tcp, peer, stop, slot, authenticated).await
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
    shared: &'a Shared,
    registry: Arc<Registry>,
    users: Arc<Users>,
    invites: Arc<Invites>,
    sessions: Arc<Sessions>,
    ip: IpAddr,
    now: u64,
    /// The user whose password attempt this step admitted for evaluation, if any.
    admitted: std::sync::Mutex<Option<String>>,
}

/// A password attempt evaluated against a real record: it counts as a failure when dropped,
/// unless it succeeded. So a guess counts whether the client sends its finish or hangs up
/// after KE2 (from which an OPAQUE client already knows whether its guess was right), and
/// every attempt evaluated side by side counts, not only those finishing before a lock.
/// Logins and the proof of the current password in a password change both use it.
pub(crate) struct PasswordAttempt<'a> {
    limiter: &'a crate::limiter::Limiter,
    user: String,
    ip: IpAddr,
    now: u64,
    succeeded: bool,
}

impl<'a> PasswordAttempt<'a> {
    /// An attempt for `user` the limiter admitted; a failure unless [`Self::succeeded`].
    pub(crate) fn new(
        limiter: &'a crate::limiter::Limiter,
        user: String,
        ip: IpAddr,
        now: u64,
    ) -> Self {
        Self {
            limiter,
            user,
            ip,
            now,
            succeeded: false,
        }
    }

    /// The password was right: count a success when dropped.
    pub(crate) fn succeeded(&mut self) {
        self.succeeded = true;
    }
}

impl Drop for PasswordAttempt<'_> {
    fn drop(&mut self) {
        if self.succeeded {
            self.limiter.success(&self.user);
        } else {
            self.limiter.failure(&self.user, self.ip, self.now);
        }
    }
}

impl<'a> AuthCtx<'a> {
    fn new(shared: &'a Shared, ip: IpAddr, now: u64) -> Self {
        Self {
            shared,
            registry: shared.registry.current(),
            users: shared.users.current(),
            invites: shared.invites.current(),
            sessions: shared.sessions.current(),
            ip,
            now,
            admitted: std::sync::Mutex::new(None),
        }
    }

    /// Whether a principal may (still) act: its credential current, its user present, its
    /// session live.
    fn valid(&self, p: &Principal) -> bool {
        match &p.method {
            Method::Psk { epoch } => self.registry.is_current(&p.name, *epoch),
            Method::Password { generation } => {
                current_generation(&self.users, &p.name, *generation)
            }
            Method::Session { id } => self.live_session(id).is_some(),
            Method::Mesh { device, epoch } => self.shared.mesh.still_valid(device, *epoch),
            _ => false,
        }
    }

    fn live_session(&self, id: &SessionId) -> Option<StoredSession> {
        let entry = self.sessions.sessions.get(&session_id_text(id))?;
        if !entry.live(self.now) {
            return None;
        }
        let principal = entry.principal()?;
        // A session lives only as long as what opened it.
        if !self.valid(&principal) {
            return None;
        }
        Some(StoredSession {
            secret: entry.secret.clone(),
            principal,
        })
    }
}

impl ServerContext for AuthCtx<'_> {
    fn master_key(&self) -> &MasterKey {
        &self.shared.master
    }

    fn claims_current(&self, claims: &Claims) -> bool {
        self.registry.is_current(claims.name(), claims.epoch())
    }

    fn invite_current(&self, claims: &Claims) -> bool {
        self.invites
            .invites
            .get(claims.name())
            .is_some_and(|i| !i.spent && i.serial == claims.epoch())
    }

    fn opaque_keys(&self) -> Option<&OpaqueKeys> {
        Some(&self.shared.opaque)
    }

    fn user(&self, name: &str) -> Option<KnownUser> {
        let u = self.users.users.get(name)?;
        Some(KnownUser {
            record: u.user_record()?,
            attributes: u.attributes.clone(),
            generation: u.generation,
        })
    }

    fn login_allowed(&self, name: &str) -> bool {
        let allowed = self.shared.limiter.allowed(name, self.ip, self.now);
        if allowed && let Ok(mut admitted) = self.admitted.lock() {
            *admitted = Some(name.to_owned());
        }
        allowed
    }

    fn new_record_ksf(&self) -> KsfParams {
        self.shared.new_ksf
    }

    fn session(&self, id: &SessionId) -> Option<StoredSession> {
        self.live_session(id)
    }

    fn session_lifetimes(&self) -> (u64, u64) {
        (
            self.shared.session_limits.idle_secs,
            self.shared.session_limits.max_secs,
        )
    }
}

/// Whether `name` exists with its record still of `generation` (no password change, reset,
/// re-registration or re-invitation since).
fn current_generation(users: &Users, name: &str, generation: u64) -> bool {
    users
        .users
        .get(name)
        .is_some_and(|u| u.generation == generation)
}

impl Shared {
    /// Whether a principal authenticated earlier may still act (not revoked, not re-issued,
    /// user not removed, its record not changed since the login, session not ended).
    ///
    /// Runs before every request, so it reads only the file the principal depends on: a
    /// credential needs the client registry alone, a password login the users alone.
    pub(crate) fn still_valid(&self, p: &Principal, ip: IpAddr) -> bool {
        match &p.method {
            Method::Psk { epoch } => self.registry.current().is_current(&p.name, *epoch),
            Method::Password { generation } => {
                current_generation(&self.users.current(), &p.name, *generation)
            }
            _ => AuthCtx::new(self, ip, crate::clock::now()).valid(p),
        }
    }
}

async fn blocking(f: impl FnOnce() -> Result<(), Error> + Send + 'static) -> Result<(), Error> {
    crate::pipe::join(tokio::task::spawn_blocking(f)).await
}

/// A fatal TLS alert `no_application_protocol` (RFC 8446 §6, RFC 7301 §3.2) as a plaintext
/// record: what the server sends, before any handshake message of its own, to a ClientHello
/// that does not offer `ferry/1`.
const NO_APPLICATION_PROTOCOL: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x78];

/// Runs the TLS handshake: the ClientHello must arrive within the hello deadline and offer
/// ALPN `ferry/1`; the rest must finish by `deadline`. `None` if the connection is to close.
async fn accept_tls(
    shared: &Shared,
    tcp: TcpStream,
    peer: SocketAddr,
    deadline: tokio::time::Instant,
) -> Option<TlsStream<TcpStream>> {
    let hello_deadline = deadline.min(tokio::time::Instant::now() + shared.limits.hello_timeout);
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
    let config = shared.acceptor.config().clone();
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

async fn serve_connection(
    shared: &Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
    pending: Pending,
    authenticated: Arc<Semaphore>,
) -> Result<(), Error> {
    let _ = tcp.set_nodelay(true);
    let deadline = tokio::time::Instant::now() + shared.limits.handshake_timeout;
    let Some(tls) = accept_tls(shared, tcp, peer, deadline).await else {
        return Ok(());
    };
    let exporter = tls::export(tls.get_ref().1)?;
    // A password change proves the current password with a login bound to this connection.
    let change_exporter = exporter.clone();
    let mut wire = Wire::new(tls);
    wire.set_limit(PRE_AUTH_LIMIT);
    let (principal, session) =
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
            r = tokio::time::timeout(shared.limits.idle_timeout, wire.recv_message()) => match r {
                Ok(r) => r?,
                Err(_) => return Err(Error::Timeout("the next request")),
            },
            _ = stop.changed() => break,
        };
        if let Message::Logout(_) = msg {
            if let Some(id) = session {
                let dir = shared.dir.clone();
                blocking(move || dir.revoke_session(&session_id_text(&id)).map(|_| ())).await?;
                tracing::info!("{peer}: {} logged out", principal.name);
            }
            wire.send(&Message::LogoutOk(Default::default())).await?;
            break;
        }
        if !shared.still_valid(&principal, peer.ip()) {
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
                    shared,
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
                crate::mesh::serve::handle(&shared.mesh, &shared.store, &mut wire, &principal, msg)
                    .await?
            }
            Message::Watch(req) => {
                let ended = crate::watch_service::serve(
                    shared,
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
            msg => service::handle(shared, &mut wire, &principal, msg).await?,
        }
    }
    let _ = wire.shutdown().await;
    Ok(())
}

/// Runs the authentication exchange. Returns the principal and the session the connection
/// belongs to, or `None` if authentication failed (already answered).
async fn authenticate(
    shared: &Shared,
    wire: &mut Wire<TlsStream<TcpStream>>,
    exporter: ferry_proto::secret::Exporter,
    peer: SocketAddr,
) -> Result<Option<(Principal, Option<SessionId>)>, Error> {
    let first = wire.recv_message().await?;
    let first = match first {
        Message::MeshJoinStart(m) => {
            let max_delay = shared.limits.handshake_timeout / 2;
            crate::mesh::serve::join(
                &shared.mesh,
                &shared.dir,
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
        Message::MeshAuth(m) => {
            return match crate::mesh::serve::member_auth(&shared.mesh, wire, &exporter, peer, m)
                .await?
            {
                Some(p) => Ok(Some((p, None))),
                None => {
                    let _ = wire.shutdown().await;
                    Ok(None)
                }
            };
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
            let ctx = AuthCtx::new(shared, peer.ip(), now);
            let step = state.handle(msg, &ctx, &mut rand_core::OsRng, now);
            if let Some(user) = ctx.admitted.lock().ok().and_then(|mut a| a.take()) {
                attempt = Some(PasswordAttempt::new(&shared.limiter, user, peer.ip(), now));
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
                let mut session_id = None;
                if let Some(s) = session
                    && let Some(origin) = SessionEntry::origin_of(&principal.method)
                {
                    let entry = SessionEntry {
                        name: principal.name.clone(),
                        attributes: principal.attributes.clone(),
                        origin,
                        secret: s.secret,
                        created: now,
                        last_used: now,
                        idle_secs: s.idle_secs,
                        expires: s.expires,
                    };
                    let dir = shared.dir.clone();
                    let id = s.id;
                    blocking(move || dir.add_session(&id, entry, now)).await?;
                    session_id = Some(s.id);
                }
                if let Method::Session { id } = principal.method {
                    let dir = shared.dir.clone();
                    blocking(move || dir.touch_session(&id, now)).await?;
                    session_id = Some(id);
                }
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
                let dir = shared.dir.clone();
                let name = invite.name().to_owned();
                let stored = crate::pipe::join(tokio::task::spawn_blocking(move || {
                    dir.register_user(&invite, &record, now)
                }))
                .await?;
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
