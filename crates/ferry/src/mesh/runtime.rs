//! `ferry mesh up`: the server, the announcer, the listener and the synchroniser of one peer.
//!
//! * The announcer sends a `change` announcement for every change to the peer's data (a put
//!   or delete by any client of this peer, or a version fetched from another member), and a
//!   `digest` of the whole state every [`MeshOptions::digest_every`].
//! * The listener hands each datagram to the sans-IO [`Node`], which opens it with the current
//!   epoch's key and drops what fails to open, what is stale or replayed and what comes from
//!   non-members or names an invalid source, and queues the work it asks for.
//! * The synchroniser works through that queue one job at a time: fetch a newer version from
//!   its announcer, list a member whose digest differs and fetch what wins there, merge a
//!   member's view of the mesh, or catch up with a rotation it missed.
//!
//! The peer's data is its server's storage backend, reached through the backend traits only
//! (`Index::heads` and `head`, uploads, `Backend::commit_replica` and `delete_replica`), so a
//! peer runs over any [`ServerBackend`].
//!
//! Conflicts resolve by [`ferry_backend::replica_wins`]: the higher version, then the larger
//! BLAKE3 hash (a tombstone's hash is zero). Every member applies the same rule to the same
//! candidates, so all converge on the same version of every source.

use std::collections::HashSet;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_backend::{Index, Staged, Upload, UploadKey, replica_wins};
use ferry_proto::mesh::announce::{self, Body, Event};
use ferry_proto::mesh::beacon::{self, Beacon};
use ferry_proto::mesh::key::announce_key;
pub(crate) use ferry_proto::mesh::node::announced_addr;
use ferry_proto::mesh::node::{Action, Dropped, Node, Peer};
use ferry_proto::mesh::replay::first_counter;
use ferry_proto::mesh::state::MeshState;
use ferry_proto::mesh::wire::{MeshEntry, MeshGrant};
use ferry_proto::message::Digest;
use ferry_proto::secret::MeshKey;
use ferry_proto::server_id::ServerId;
use sha2::{Digest as _, Sha256};
use tokio::sync::{mpsc, watch};

use super::device::DeviceKey;
use super::files::{MeshFile, OpenFile, Seen, SeenFile};
use super::peer;
use super::udp::Sockets;
use crate::changes::ChangeFeed;
use crate::engine::ServerBackend;
use crate::live::LiveFile;
use crate::net::BoundServer;
use crate::server_dir::ServerDir;
use crate::{Error, clock, tls};

/// How a peer runs.
#[derive(Clone, Debug)]
pub struct MeshOptions {
    /// UDP port announcements are received on.
    pub announce_port: u16,
    /// Where announcements are sent (broadcast and multicast addresses, or chosen peers).
    pub targets: Vec<SocketAddr>,
    /// How often the state digest is announced.
    pub digest_every: Duration,
    /// Announcements whose time is further than this from ours are dropped.
    pub window: Duration,
    /// The TLS address announced to the other members, if they must reach this peer
    /// somewhere else than where it listens (a port forward); where it listens if `None`.
    pub advertise: Option<SocketAddr>,
}

impl MeshOptions {
    /// Defaults for `announce_port`: IPv4 broadcast and both multicast groups, a digest every
    /// 10 s, a 60 s window.
    pub fn new(announce_port: u16) -> Self {
        Self {
            announce_port,
            targets: super::udp::default_targets(announce_port),
            digest_every: Duration::from_secs(10),
            window: Duration::from_secs(60),
            advertise: None,
        }
    }
}

/// Work for the synchroniser.
#[derive(Debug)]
enum Job {
    /// A member announced a change: fetch it if it wins over ours.
    Fetch { peer: Peer, entry: MeshEntry },
    /// A member's sources digest differs from ours: list its state, fetch what wins.
    Sync(Peer),
    /// A member's view of the mesh differs, or an unknown sender holds the key: merge.
    State(Peer),
    /// Someone announces under the next epoch: ask the members we know for the mesh state.
    CatchUp,
}

struct Ctx<B> {
    dir: ServerDir,
    device: DeviceKey,
    state: LiveFile<MeshFile>,
    open: LiveFile<OpenFile>,
    backend: B,
    /// (source, version) this peer installed from another member: announced as automatic.
    replicated: Mutex<HashSet<(String, u64)>>,
    /// The digest of the local sources; `None` after a change, until recomputed.
    digest: Mutex<Option<Digest>>,
    seen: Mutex<SeenFile>,
    /// The datagram rules (replay guard, catch-up schedule).
    node: Mutex<Node>,
}

impl<B: ServerBackend> Ctx<B> {
    fn mesh(&self) -> Option<MeshState> {
        self.state.current().0.clone()
    }

    /// Whether `ferry mesh open` set a window that is still open.
    fn is_open(&self) -> bool {
        self.open
            .current()
            .0
            .as_ref()
            .is_some_and(|w| w.until > clock::now())
    }

    /// The local sources digest, recomputed if something changed since the last time.
    async fn local_digest(&self) -> Result<Digest, Error> {
        if let Some(d) = *lock(&self.digest) {
            return Ok(d);
        }
        let d = sources_digest(&self.backend).await?;
        *lock(&self.digest) = Some(d);
        Ok(d)
    }
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it (every value kept
/// under these locks stays consistent between statements).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs a mesh peer: `server` (already bound) and the announcement loops, until `shutdown`
/// resolves.
pub async fn run<B: ServerBackend>(
    dir: ServerDir,
    server: BoundServer<B>,
    opts: MeshOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let device = DeviceKey::from_identity(&dir.identity()?)?;
    let me = device.id();
    let state = LiveFile::<MeshFile>::open(dir.file(super::files::MESH_FILE))?;
    if state.current().0.is_none() {
        return Err(Error::Config(format!(
            "{} is in no mesh: run `ferry mesh create` or `ferry mesh join` first",
            dir.path().display()
        )));
    }
    let sockets = Arc::new(Sockets::bind(opts.announce_port)?);
    let tls_addr = opts.advertise.unwrap_or(server.local_addr());
    let backend = server.backend();
    let feed = server.changes();
    let open = LiveFile::<OpenFile>::open(dir.file(super::files::OPEN_FILE))?;
    let ctx = Arc::new(Ctx {
        seen: Mutex::new(dir.mesh_seen()),
        open,
        dir,
        device,
        state,
        backend,
        replicated: Mutex::new(HashSet::new()),
        digest: Mutex::new(None),
        node: Mutex::new(Node::new(
            me,
            u64::try_from(opts.window.as_millis()).unwrap_or(u64::MAX),
        )),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let (jobs_tx, jobs_rx) = mpsc::channel::<Job>(256);
    tracing::info!(
        "mesh peer {} serving on {tls_addr}, announcements on UDP port {}",
        ctx.device.id(),
        sockets.port()
    );

    let mut stop = stop_rx.clone();
    let server_task = tokio::spawn(server.run(async move {
        let _ = stop.changed().await;
    }));
    let announcer = tokio::spawn(announce_loop(
        ctx.clone(),
        sockets.clone(),
        opts.clone(),
        tls_addr,
        feed,
        stop_rx.clone(),
    ));
    let listener = tokio::spawn(listen_loop(ctx.clone(), sockets, jobs_tx, stop_rx.clone()));
    let closer = tokio::spawn(super::window::expire_loop(ctx.dir.clone(), stop_rx.clone()));
    let worker = tokio::spawn(sync_loop(ctx.clone(), jobs_rx, stop_rx));
    shutdown.await;
    let _ = stop_tx.send(true);
    let _ = announcer.await;
    let _ = listener.await;
    let _ = closer.await;
    // A fetch in flight is abandoned: nothing of it is visible, and its upload part (under
    // a key nothing else can reach) goes with the server's sweep of idle uploads.
    worker.abort();
    let _ = worker.await;
    save_seen(&ctx);
    match server_task.await {
        Ok(r) => r,
        Err(e) => Err(Error::Internal(format!("server task failed: {e}"))),
    }
}

/// SHA-256 over every head (name, version, hash, tombstone flag) in name order: equal on two
/// peers exactly when they hold the same current version of every source.
async fn sources_digest<B: Index>(backend: &B) -> Result<Digest, Error> {
    let mut h = Sha256::new();
    h.update(b"ferry mesh sources v1\0");
    let mut after: Option<String> = None;
    // Bounded: each page advances past its last name.
    loop {
        let page = backend.heads(after.as_deref(), 1000).await?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        for (name, head) in &page {
            let (version, hash) = head.key();
            h.update((name.len() as u64).to_be_bytes());
            h.update(name.as_bytes());
            h.update(version.to_be_bytes());
            h.update(hash);
            h.update([u8::from(head.deleted)]);
        }
    }
    Ok(h.finalize().into())
}

/// Where this peer's TLS server is, for the announcement's `addr` field.
fn addr_bytes(addr: SocketAddr) -> Vec<u8> {
    match addr.ip() {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

struct Announcer<B> {
    ctx: Arc<Ctx<B>>,
    sockets: Arc<Sockets>,
    targets: Vec<SocketAddr>,
    tls_addr: SocketAddr,
    counter: u64,
}

impl<B: ServerBackend> Announcer<B> {
    async fn send(&mut self, manual: bool, event: Event) {
        let Some(mesh) = self.ctx.mesh() else { return };
        let mut nonce = [0u8; 24];
        if let Err(e) = tls::random_bytes(&mut nonce) {
            tracing::warn!("not announcing: {e}");
            return;
        }
        self.counter += 1;
        let body = Body {
            sender: *self.ctx.device.id().as_bytes(),
            counter: self.counter,
            time: clock::now_ms(),
            addr: addr_bytes(self.tls_addr),
            port: self.tls_addr.port(),
            manual,
            event,
        };
        let key = announce_key(&mesh.key, mesh.epoch);
        match announce::seal(&key, mesh.epoch, nonce, &body) {
            Ok(d) => self.sockets.send(&d, &self.targets).await,
            Err(e) => tracing::warn!("not announcing: {e}"),
        }
    }

    /// Sends a join beacon (while the mesh is open to joins).
    async fn beacon(&self) {
        let Some(mesh) = self.ctx.mesh() else { return };
        let me = self.ctx.device.id();
        let name = mesh
            .members
            .get(&me)
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let d = beacon::encode(&Beacon {
            device: *me.as_bytes(),
            addr: addr_bytes(self.tls_addr),
            port: self.tls_addr.port(),
            mesh: mesh.name.clone(),
            name,
        });
        self.sockets.send(&d, &self.targets).await;
    }
}

async fn announce_loop<B: ServerBackend>(
    ctx: Arc<Ctx<B>>,
    sockets: Arc<Sockets>,
    opts: MeshOptions,
    tls_addr: SocketAddr,
    mut feed: ChangeFeed<B>,
    mut stop: watch::Receiver<bool>,
) {
    let mut a = Announcer {
        ctx: ctx.clone(),
        sockets,
        targets: opts.targets.clone(),
        tls_addr,
        counter: first_counter(clock::now_ms()),
    };
    let mut ticker = tokio::time::interval(opts.digest_every);
    let mut beacons = tokio::time::interval(BEACON_EVERY);
    let mut cursor = feed.last_seq();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            page = feed.next_batch(cursor, 256) => {
                let page = match page {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!("change feed: {e}");
                        return;
                    }
                };
                *lock(&ctx.digest) = None;
                for c in page.changes {
                    cursor = cursor.max(c.seq);
                    let manual = !lock(&ctx.replicated).remove(&(c.source.clone(), c.version));
                    let event = Event::Change {
                        source: c.source,
                        version: c.version,
                        hash: if c.deleted { [0; 32] } else { c.hash },
                        deleted: c.deleted,
                    };
                    a.send(manual, event).await;
                }
                if page.gap {
                    // Pruned under us: the digest tells the others.
                    cursor = cursor.max(page.last);
                }
            }
            _ = beacons.tick() => {
                if ctx.is_open() {
                    a.beacon().await;
                }
            }
            _ = ticker.tick() => {
                let sources = match ctx.local_digest().await {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::warn!("cannot digest the store: {e}");
                        continue;
                    }
                };
                let Some(mesh) = ctx.mesh() else { continue };
                let event = Event::Digest { sources, members: mesh.members_digest() };
                a.send(false, event).await;
                save_seen(&ctx);
            }
        }
    }
}

/// How often an open peer sends its join beacon.
pub const BEACON_EVERY: Duration = Duration::from_secs(1);

fn save_seen<B>(ctx: &Ctx<B>) {
    let seen = lock(&ctx.seen).clone();
    if let Err(e) = ctx.dir.save_mesh_seen(&seen) {
        tracing::debug!("cannot save last-seen times: {e}");
    }
}

async fn listen_loop<B: ServerBackend>(
    ctx: Arc<Ctx<B>>,
    sockets: Arc<Sockets>,
    jobs: mpsc::Sender<Job>,
    mut stop: watch::Receiver<bool>,
) {
    let mut buf = Sockets::buffers();
    loop {
        let (datagram, from) = tokio::select! {
            _ = stop.changed() => return,
            r = sockets.recv(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!("receive failed: {e}");
                    // Bounded: an error that repeats at once is slowed down here.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let Some(mesh) = ctx.mesh() else { continue };
        let action = lock(&ctx.node).handle(clock::now_ms(), from, datagram, &mesh);
        let job = match action {
            Action::Drop(Dropped::Beacon | Dropped::Own) => continue,
            Action::Drop(why) => {
                tracing::debug!("{from}: dropped datagram: {why}");
                continue;
            }
            Action::CatchUp { claims } => {
                tracing::info!(
                    "{from}: announcement of a newer epoch ({claims} from this address): \
                     catching up"
                );
                Job::CatchUp
            }
            Action::State(peer) => Job::State(peer),
            Action::Change { peer, entry } => {
                heard(&ctx, peer);
                Job::Fetch { peer, entry }
            }
            Action::Digest {
                peer,
                sources,
                members_differ,
            } => {
                heard(&ctx, peer);
                if members_differ {
                    let _ = jobs.try_send(Job::State(peer));
                }
                match ctx.local_digest().await {
                    Ok(ours) if ours == sources => continue,
                    _ => Job::Sync(peer),
                }
            }
        };
        if jobs.try_send(job).is_err() {
            tracing::debug!("synchronisation queue full; the next digest will catch up");
        }
    }
}

/// Records that member `peer` was heard from just now.
fn heard<B>(ctx: &Ctx<B>, peer: Peer) {
    let first = lock(&ctx.seen)
        .seen
        .insert(
            peer.id.to_string(),
            Seen {
                at: clock::now(),
                addr: peer.addr.to_string(),
            },
        )
        .is_none_or(|before| before.addr != peer.addr.to_string());
    if first {
        // A new member or a new address: record it now, not only at the next digest.
        save_seen(ctx);
    }
}

async fn sync_loop<B: ServerBackend>(
    ctx: Arc<Ctx<B>>,
    mut jobs: mpsc::Receiver<Job>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let job = tokio::select! {
            _ = stop.changed() => return,
            j = jobs.recv() => match j { Some(j) => j, None => return },
        };
        let label = format!("{job:?}");
        let catching_up = matches!(job, Job::CatchUp);
        let epoch = ctx.mesh().map(|m| m.epoch);
        // Bounded: a job that hangs (a member that stops answering) is given up.
        match tokio::time::timeout(JOB_TIMEOUT, run_job(&ctx, job)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::info!("mesh sync: {label}: {e}"),
            Err(_) => tracing::info!("mesh sync: {label}: gave up after {JOB_TIMEOUT:?}"),
        }
        if catching_up {
            // Nothing newer found: the next catch-up waits longer.
            let found = ctx.mesh().map(|m| m.epoch) > epoch;
            if !found {
                tracing::info!("catching up found no newer epoch");
            }
            lock(&ctx.node).catch_up_finished(clock::now_ms(), found);
        }
    }
}

/// The longest one synchronisation job may take. A fetch of a large source that takes
/// longer is abandoned and retried from the next digest; raise it for slow links.
const JOB_TIMEOUT: Duration = Duration::from_secs(600);

async fn member<B: ServerBackend>(ctx: &Ctx<B>, p: Peer) -> Result<crate::client::Client, Error> {
    let mesh = ctx
        .mesh()
        .ok_or_else(|| Error::Config("in no mesh".into()))?;
    peer::connect_member(&p.addr.to_string(), p.id, &ctx.device, &mesh, mesh.epoch).await
}

async fn run_job<B: ServerBackend>(ctx: &Arc<Ctx<B>>, job: Job) -> Result<(), Error> {
    match job {
        Job::Fetch { peer, entry } => {
            if !wins_locally(ctx, &entry).await? {
                return Ok(());
            }
            let mut c = member(ctx, peer).await?;
            fetch(ctx, &mut c, entry).await?;
            let _ = c.close().await;
        }
        Job::Sync(peer) => {
            let mut c = member(ctx, peer).await?;
            for entry in c.mesh_list().await? {
                if wins_locally(ctx, &entry).await? {
                    fetch(ctx, &mut c, entry).await?;
                }
            }
            let _ = c.close().await;
        }
        Job::State(peer) => {
            let mut c = member(ctx, peer).await?;
            let grant = c.mesh_state().await?;
            let _ = c.close().await;
            merge(ctx, grant).await?;
        }
        Job::CatchUp => {
            let Some(mesh) = ctx.mesh() else {
                return Ok(());
            };
            // Bounded by the member list. Ask each member until one knows a newer epoch
            // (another member may have missed the rotation too). The previous epoch's key
            // authenticates us to a member that rotated (it accepts one epoch back).
            for m in mesh.members.values() {
                let id = m.device();
                if id == ctx.device.id() {
                    continue;
                }
                let Some(addr) = known_addr(ctx, &id, &m.addr) else {
                    continue;
                };
                let grant = async {
                    let mut c = member(ctx, Peer { id, addr }).await?;
                    let grant = c.mesh_state().await?;
                    let _ = c.close().await;
                    Ok::<_, Error>(grant)
                };
                match grant.await {
                    Ok(g) if g.epoch > mesh.epoch => return merge(ctx, g).await,
                    Ok(_) => tracing::debug!("catching up: {id} knows no newer epoch"),
                    Err(e) => tracing::debug!("catching up from {id}: {e}"),
                }
            }
        }
    }
    Ok(())
}

/// Where member `id` was last heard serving, else the address its grant recorded.
fn known_addr<B>(ctx: &Ctx<B>, id: &ServerId, recorded: &str) -> Option<SocketAddr> {
    let seen = lock(&ctx.seen)
        .seen
        .get(&id.to_string())
        .map(|s| s.addr.clone());
    seen.as_deref()
        .into_iter()
        .chain([recorded])
        .find_map(|a| a.parse().ok())
}

async fn merge<B>(ctx: &Ctx<B>, grant: MeshGrant) -> Result<(), Error> {
    let dir = ctx.dir.clone();
    let mut new_key = [0u8; 32];
    tls::random_bytes(&mut new_key)?;
    let key = MeshKey::from_bytes(new_key);
    zeroize::Zeroize::zeroize(&mut new_key);
    let merged = crate::pipe::join(tokio::task::spawn_blocking(move || {
        dir.update_mesh(|s| match s {
            Some(s) => {
                let m = s.merge(grant);
                if m.rotate {
                    s.rotate(key);
                }
                (m.changed || m.rotate, m)
            }
            None => (false, Default::default()),
        })
    }))
    .await?;
    if merged.changed || merged.rotate {
        tracing::info!(
            "mesh view updated (new key: {}, rotated: {})",
            merged.rekeyed,
            merged.rotate
        );
    }
    Ok(())
}

/// Whether `entry` (a member's head) wins over this peer's head of the same source.
async fn wins_locally<B: ServerBackend>(ctx: &Ctx<B>, entry: &MeshEntry) -> Result<bool, Error> {
    let local = ctx.backend.head(&entry.source).await?;
    let hash = if entry.deleted { [0; 32] } else { entry.hash };
    Ok(replica_wins(entry.version, &hash, local.as_ref()))
}

/// Installs a member's current version of `entry.source` (or its deletion) if it wins.
async fn fetch<B: ServerBackend>(
    ctx: &Ctx<B>,
    c: &mut crate::client::Client,
    entry: MeshEntry,
) -> Result<(), Error> {
    let backend = &ctx.backend;
    if entry.deleted {
        mark_replicated(ctx, &entry.source, entry.version);
        let applied = backend
            .delete_replica(&entry.source, entry.version, "mesh", clock::now())
            .await?;
        if applied {
            tracing::info!("mesh: deleted {} (version {})", entry.source, entry.version);
        }
        return Ok(());
    }
    // Staged through an upload part under a random key nothing else can reach, discarded
    // unless the fetched version is installed.
    if let Some(done) = fetch_delta(ctx, c, &entry).await? {
        return Ok(done);
    }
    let mut random = [0u8; 32];
    tls::random_bytes(&mut random)?;
    let key = UploadKey::derive(&random);
    let upload = backend.begin_upload(&key, clock::now()).await?;
    let writer = UploadWriter {
        upload,
        runtime: tokio::runtime::Handle::current(),
    };
    let fetched = c.get(&entry.source, writer, &mut |_| {}).await;
    let installed = match fetched {
        Ok((got, writer)) => install(ctx, &entry, got, writer.upload).await,
        Err(e) => Err(e),
    };
    if !matches!(installed, Ok(true))
        && let Err(e) = backend.abort_upload(&key).await
    {
        tracing::warn!("mesh: cannot discard a fetch's upload part: {e}");
    }
    match installed {
        // Deleted or changed on the member since it announced: its next announcement says.
        Err(Error::NotFound(_)) => Ok(()),
        other => other.map(|_| ()),
    }
}

/// A source whose current version here is at least this large is fetched as a delta
/// against it: below it, the chunk list costs more than it saves.
const DELTA_MIN: u64 = 1 << 20;

/// At most this much of a delta is asked for in one ranged get (it is held in memory).
const RANGE_MAX: u64 = 4 << 20;

/// Fetches a member's version of `entry.source` as a delta against this peer's current one
/// (docs/PROTOCOL.md §5.4): only the chunks this peer lacks travel. `None` when a delta does
/// not apply (no local version, a small content, or most of it changed): fetch it whole.
async fn fetch_delta<B: ServerBackend>(
    ctx: &Ctx<B>,
    c: &mut crate::client::Client,
    entry: &MeshEntry,
) -> Result<Option<()>, Error> {
    let backend = &ctx.backend;
    let Some(local) = backend.stat(&entry.source).await? else {
        return Ok(None);
    };
    if local.size < DELTA_MIN {
        return Ok(None);
    }
    let Some(held) = backend.chunks(&local.hash).await? else {
        return Ok(None);
    };
    let (got, chunks) = match c.chunks(&entry.source, Some(entry.version)).await {
        Ok(r) => r,
        // Changed on the member since it announced: its next announcement says.
        Err(Error::NotFound(_)) => return Ok(Some(())),
        Err(e) => return Err(e),
    };
    if !same_entry(&got, entry) {
        return Ok(None);
    }
    let held: std::collections::HashSet<_> = held.iter().map(|h| h.hash).collect();
    let need = ferry_proto::chunking::needed(&chunks, |h| held.contains(h));
    let body = ferry_proto::chunking::needed_bytes(&chunks, &need);
    let size = got.size;
    if body > size / 2 {
        return Ok(None);
    }
    let mut random = [0u8; 32];
    tls::random_bytes(&mut random)?;
    let key = UploadKey::derive(&random);
    let mut upload = backend.begin_upload(&key, clock::now()).await?;
    let runs = ferry_proto::chunking::needed_runs(&chunks, &need);
    let fetched: Result<(), Error> = async {
        for (offset, len) in runs {
            let mut done = 0;
            // Bounded: every round moves at least one byte of the run.
            while done < len {
                let n = (len - done).min(RANGE_MAX);
                let data = c.get_range(&got, offset + done, n).await?;
                upload.write(&data).await?;
                done += n;
            }
        }
        Ok(())
    }
    .await;
    let installed = match fetched {
        Ok(()) => match upload.finish_delta(&got.hash, &local.hash, chunks).await {
            Ok(staged) => install_staged(ctx, entry, got, staged).await,
            // The local version went meanwhile, or the member sent other bytes: whole.
            Err(ferry_backend::BackendError::BlobNotFound) => Ok(false),
            Err(e) => Err(e.into()),
        },
        Err(e) => {
            drop(upload);
            Err(e)
        }
    };
    if !matches!(installed, Ok(true))
        && let Err(e) = backend.abort_upload(&key).await
    {
        tracing::warn!("mesh: cannot discard a fetch's upload part: {e}");
    }
    match installed {
        Ok(true) => {
            tracing::info!(
                "mesh: {} version {} came as a delta: {body} of {} bytes",
                entry.source,
                entry.version,
                size
            );
            Ok(Some(()))
        }
        Ok(false) => Ok(None),
        Err(Error::NotFound(_)) => Ok(Some(())),
        Err(e) => Err(e),
    }
}

/// Commits a fetched version if it is the one asked for and still wins; whether it was.
async fn install<B: ServerBackend>(
    ctx: &Ctx<B>,
    entry: &MeshEntry,
    got: ferry_proto::message::Entry,
    upload: B::Upload,
) -> Result<bool, Error> {
    if !same_entry(&got, entry) {
        // Changed on the member since it announced or listed it (its next announcement
        // says), or a member sending something else than asked for: not installed.
        tracing::info!(
            "mesh: asked for {} version {}, got {} version {}; not installed",
            entry.source,
            entry.version,
            got.source,
            got.version
        );
        return Ok(false);
    }
    let staged = upload.finish(&got.hash).await?;
    install_staged(ctx, entry, got, staged).await
}

/// Commits a fetched and staged version (checked to be the one asked for) if it still wins.
async fn install_staged<B: ServerBackend>(
    ctx: &Ctx<B>,
    entry: &MeshEntry,
    got: ferry_proto::message::Entry,
    mut staged: B::Staged,
) -> Result<bool, Error> {
    if !same_entry(&got, entry) {
        return Ok(false);
    }
    staged.set_meta(ferry_backend::Meta {
        mtime: got.mtime,
        executable: got.executable,
    });
    // Mark before committing: the change feed may announce it before commit returns.
    mark_replicated(ctx, &got.source, got.version);
    let installed = ctx
        .backend
        .commit_replica(&got.source, staged, &got.by, got.modified, got.version)
        .await?;
    if installed.is_some() {
        tracing::info!(
            "mesh: fetched {} version {} ({} bytes)",
            got.source,
            got.version,
            got.size
        );
    } else {
        lock(&ctx.replicated).remove(&(got.source, got.version));
    }
    // Either way the part became a staged blob: committed, or discarded by commit_replica.
    Ok(true)
}

/// The synchronous writer a get fills on its blocking thread, writing into a backend upload
/// part through the runtime (as the server's own puts do).
struct UploadWriter<U> {
    upload: U,
    runtime: tokio::runtime::Handle,
}

impl<U: Upload> std::io::Write for UploadWriter<U> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.runtime
            .block_on(self.upload.write(buf))
            .map_err(std::io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whether a fetched entry is the one asked for: same source, version and content hash.
fn same_entry(got: &ferry_proto::message::Entry, asked: &MeshEntry) -> bool {
    got.source == asked.source && got.version == asked.version && got.hash == asked.hash
}

fn mark_replicated<B>(ctx: &Ctx<B>, source: &str, version: u64) {
    let mut r = lock(&ctx.replicated);
    // Bounded: entries leave when announced; cap it in case the feed lags far behind.
    if r.len() > 10_000 {
        r.clear();
    }
    r.insert((source.to_owned(), version));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fetched_entry_must_be_the_one_asked_for() {
        let asked = MeshEntry {
            source: "docs/a".into(),
            version: 4,
            hash: [1; 32],
            deleted: false,
        };
        let got = ferry_proto::message::Entry {
            source: "docs/a".into(),
            version: 4,
            size: 3,
            hash: [1; 32],
            modified: 0,
            by: "x".into(),
            mtime: None,
            executable: false,
        };
        assert!(same_entry(&got, &asked));
        for bad in [
            ferry_proto::message::Entry {
                source: "docs/b".into(),
                ..got.clone()
            },
            ferry_proto::message::Entry {
                version: 5,
                ..got.clone()
            },
            ferry_proto::message::Entry {
                hash: [2; 32],
                ..got.clone()
            },
        ] {
            assert!(!same_entry(&bad, &asked), "{bad:?}");
        }
    }
}
