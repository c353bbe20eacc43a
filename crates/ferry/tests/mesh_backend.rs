//! Two mesh peers whose data lives in the in-memory backend: the mesh runtime (announcer,
//! listener, synchroniser) reads heads and installs fetched versions through the backend
//! traits only, so a put on one peer's server reaches the other's backend, and so does a
//! delete. Loopback, real TLS, real UDP announcements.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use ferry::backend::{Blobs, Index, MemoryBackend, Retention};
use ferry::mesh::device::DeviceKey;
use ferry::mesh::runtime::{MeshOptions, run};
use ferry::proto::mesh::state::{Member, MeshState};
use ferry::proto::secret::MeshKey;
use ferry::{Client, Server, ServerDir};
use tokio::sync::oneshot;

const PASSWORD: &str = "correct horse battery staple";

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `dir` as a mesh peer over `backend`, announcing on `port` to `to` that it serves at
/// `advertise` (where it listens if `None`).
async fn up<B: ferry::ServerBackend + Clone>(
    dir: &ServerDir,
    backend: &B,
    port: u16,
    to: u16,
    advertise: impl AsyncFnOnce(SocketAddr) -> Option<SocketAddr>,
) -> (SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let bound = Server::builder(dir)
        .backend(backend.clone())
        .build()
        .unwrap()
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = bound.local_addr();
    let mut opts = MeshOptions::new(port);
    opts.targets = vec![SocketAddr::from(([127, 0, 0, 1], to))];
    opts.digest_every = Duration::from_secs(1);
    opts.advertise = advertise(addr).await;
    let (tx, rx) = oneshot::channel::<()>();
    let dir = dir.clone();
    let task = tokio::spawn(async move {
        run(dir, bound, opts, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    (addr, tx, task)
}

/// Polls `f` every 50 ms for at most 30 s.
async fn within_30s<F, Fut>(mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..600 {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Two running peers: `a` made the mesh, `b` joined it.
struct Peers<B> {
    _tmp: tempfile::TempDir,
    a: ServerDir,
    addr_a: SocketAddr,
    mem_b: B,
    stops: Vec<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
}

impl<B> Peers<B> {
    async fn stop(self) {
        for (tx, task) in self.stops.into_iter().rev() {
            tx.send(()).unwrap();
            task.await.unwrap();
        }
    }
}

/// Two peers over backends `make` opens in a folder; `a` announces `advertise_a(its address)`.
async fn two_peers<B: ferry::ServerBackend + Clone>(
    make: impl Fn(&std::path::Path) -> B,
    advertise_a: impl AsyncFnOnce(SocketAddr) -> Option<SocketAddr>,
) -> Peers<B> {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (
        ServerDir::new(tmp.path().join("a")),
        ServerDir::new(tmp.path().join("b")),
    );
    a.init().unwrap();
    b.init().unwrap();
    // `a` creates the mesh and opens it to joins.
    let device_a = DeviceKey::from_identity(&a.identity().unwrap()).unwrap();
    let me = Member {
        spki: device_a.spki().to_vec(),
        name: "alpha".into(),
        addr: String::new(),
    };
    let state = MeshState::create("m", me, MeshKey::from_bytes([7; 32]));
    a.update_mesh(|s| {
        *s = Some(state);
        (true, ())
    })
    .unwrap();
    a.open_mesh(PASSWORD.to_owned().into(), ferry::clock::now() + 600)
        .unwrap();
    let (port_a, port_b) = (free_udp_port(), free_udp_port());
    let (mem_a, mem_b) = (
        make(&tmp.path().join("a-data")),
        make(&tmp.path().join("b-data")),
    );
    let (addr_a, stop_a, task_a) = up(&a, &mem_a, port_a, port_b, advertise_a).await;

    // `b` joins through `a`'s running server, then runs over its own memory backend.
    let device_b = DeviceKey::from_identity(&b.identity().unwrap()).unwrap();
    let grant = ferry::mesh::peer::join(
        &addr_a.to_string(),
        device_a.id(),
        &device_b,
        "bravo",
        0,
        PASSWORD.as_bytes(),
    )
    .await
    .unwrap();
    let mut joined = MeshState::from_grant(grant).unwrap();
    if let Some(m) = joined.members.get_mut(&device_a.id()) {
        m.addr = addr_a.to_string();
    }
    b.update_mesh(|s| {
        *s = Some(joined);
        (true, ())
    })
    .unwrap();
    let (_addr_b, stop_b, task_b) = up(&b, &mem_b, port_b, port_a, async |_| None).await;
    Peers {
        _tmp: tmp,
        a,
        addr_a,
        mem_b,
        stops: vec![(stop_a, task_a), (stop_b, task_b)],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_replicates_between_two_memory_backends() {
    let memory = |_: &std::path::Path| MemoryBackend::new(Retention::default());
    let peers = two_peers(memory, async |_| None).await;
    let (a, addr_a, mem_b) = (&peers.a, peers.addr_a, &peers.mem_b);

    // A put on `a`'s server lands in `b`'s backend, byte for byte.
    let role = BTreeMap::from([("role".to_owned(), "writer".to_owned())]);
    let cred = a
        .issue_client("w", role, Some(&addr_a.to_string()), 0)
        .unwrap();
    let mut c = Client::connect(&cred).await.unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let put = c.put_bytes("s/x", data.clone()).await.unwrap();
    let arrived = within_30s(|| {
        let mem_b = mem_b.clone();
        async move { mem_b.stat("s/x").await.unwrap().is_some() }
    })
    .await;
    assert!(arrived, "the put did not reach the other peer's backend");
    let entry = mem_b.stat("s/x").await.unwrap().unwrap();
    assert_eq!((entry.version, entry.hash), (put.version, put.hash));
    let copy = mem_b.read(&entry.hash, 0, entry.size).await.unwrap();
    assert_eq!(copy, data);

    // A delete on `a` becomes a tombstone in `b`'s backend.
    c.delete("s/x").await.unwrap();
    let deleted = within_30s(|| {
        let mem_b = mem_b.clone();
        async move { mem_b.stat("s/x").await.unwrap().is_none() }
    })
    .await;
    assert!(deleted, "the delete did not reach the other peer's backend");
    assert!(mem_b.head("s/x").await.unwrap().unwrap().deleted);

    peers.stop().await;
}

/// A one-byte edit of a 256 MiB source moves at most 1 MiB to the other member: it fetches
/// the new version as a delta against its own copy. Both peers keep their data in the local
/// store; `a` announces a TCP proxy in front of itself, which counts every byte on the wire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_replicates_a_small_edit_as_a_delta() {
    use std::os::unix::fs::FileExt;
    use std::sync::atomic::Ordering;
    let proxy = std::sync::Arc::new(std::sync::Mutex::new(None));
    let keep = proxy.clone();
    let local =
        |d: &std::path::Path| ferry::store::LocalBackend::open(d, Retention::default()).unwrap();
    let peers = two_peers(local, async move |a| {
        let p = common::proxy::start_proxy(a, common::proxy::Cut::Down).await;
        let addr = p.addr;
        *keep.lock().unwrap() = Some(p);
        Some(addr)
    })
    .await;
    let proxy = proxy.lock().unwrap().take().unwrap();
    let (a, addr_a, b) = (&peers.a, peers.addr_a, &peers.mem_b);
    let role = BTreeMap::from([("role".to_owned(), "writer".to_owned())]);
    let cred = a
        .issue_client("w", role, Some(&addr_a.to_string()), 0)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big");
    let size = 256u64 << 20;
    let mut f = std::fs::File::create(&path).unwrap();
    std::io::copy(&mut common::Pattern::new("mesh delta", size), &mut f).unwrap();
    drop(f);
    let put = async |path: &std::path::Path| {
        let mut c = Client::connect(&cred).await.unwrap();
        let file = std::fs::File::open(path).unwrap();
        c.put_resume("s/big", file, &mut |_| {}, &mut |_| {})
            .await
            .unwrap()
            .0
    };
    // 256 MiB through a debug build on a busy machine: up to 2 minutes each.
    let arrived = async |hash: [u8; 32]| {
        for _ in 0..2400 {
            if b.stat("s/big")
                .await
                .unwrap()
                .is_some_and(|e| e.hash == hash)
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    };
    let v1 = put(&path).await;
    assert!(arrived(v1.hash).await, "the first version did not arrive");
    let before = proxy.from_server.load(Ordering::SeqCst);
    assert!(
        before >= size,
        "the first version came whole, through the proxy"
    );

    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut byte = [0u8];
    f.read_exact_at(&mut byte, size / 3).unwrap();
    f.write_all_at(&[byte[0] ^ 0x40], size / 3).unwrap();
    drop(f);
    let v2 = put(&path).await;
    assert!(arrived(v2.hash).await, "the edit did not arrive");
    let moved = proxy.from_server.load(Ordering::SeqCst) - before;
    assert!(
        moved <= 1 << 20,
        "the edit moved {moved} bytes to the other member"
    );
    eprintln!("the one-byte edit of {size} bytes moved {moved} bytes between the members");
    let mut r = b.reader(&v2.hash, 0, v2.size).await.unwrap();
    let mut h = blake3::Hasher::new();
    for _ in 0..100_000 {
        if ferry::backend::BlobReader::remaining(&r) == 0 {
            break;
        }
        let buf = ferry::backend::BlobReader::read_into(&mut r, Vec::new(), 1 << 20)
            .await
            .unwrap();
        h.update(&buf);
    }
    assert_eq!(
        h.finalize().as_bytes(),
        &v2.hash,
        "the other member's copy differs"
    );
    peers.stop().await;
}
