//! Two mesh peers whose data lives in the in-memory backend: the mesh runtime (announcer,
//! listener, synchroniser) reads heads and installs fetched versions through the backend
//! traits only, so a put on one peer's server reaches the other's backend, and so does a
//! delete. Loopback, real TLS, real UDP announcements.

#![allow(clippy::unwrap_used, clippy::expect_used)]

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

/// Runs `dir` as a mesh peer over `memory`, announcing on `port` to `to`.
async fn up(
    dir: &ServerDir,
    memory: &MemoryBackend,
    port: u16,
    to: u16,
) -> (
    SocketAddr,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
    ferry::metrics::Metrics,
) {
    let bound = Server::builder(dir)
        .backend(memory.clone())
        .build()
        .unwrap()
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = bound.local_addr();
    let metrics = bound.metrics();
    let mut opts = MeshOptions::new(port);
    opts.targets = vec![SocketAddr::from(([127, 0, 0, 1], to))];
    opts.digest_every = Duration::from_secs(1);
    let (tx, rx) = oneshot::channel::<()>();
    let dir = dir.clone();
    let task = tokio::spawn(async move {
        run(dir, bound, opts, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    (addr, tx, task, metrics)
}

/// The content bytes a server sent in gets, from its metrics.
fn sent_bytes(m: &ferry::metrics::Metrics) -> u64 {
    let text = m.render();
    let line = text
        .lines()
        .find(|l| l.starts_with("ferry_sent_bytes_total "))
        .unwrap_or_else(|| panic!("no sent bytes in {text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
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

/// Two running peers over memory backends: `a` made the mesh, `b` joined it.
struct Peers {
    _tmp: tempfile::TempDir,
    a: ServerDir,
    addr_a: SocketAddr,
    metrics_a: ferry::metrics::Metrics,
    mem_b: MemoryBackend,
    stops: Vec<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
}

impl Peers {
    async fn stop(self) {
        for (tx, task) in self.stops.into_iter().rev() {
            tx.send(()).unwrap();
            task.await.unwrap();
        }
    }
}

async fn two_peers() -> Peers {
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
        MemoryBackend::new(Retention::default()),
        MemoryBackend::new(Retention::default()),
    );
    let (addr_a, stop_a, task_a, metrics_a) = up(&a, &mem_a, port_a, port_b).await;

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
    let (_addr_b, stop_b, task_b, _) = up(&b, &mem_b, port_b, port_a).await;
    Peers {
        _tmp: tmp,
        a,
        addr_a,
        metrics_a,
        mem_b,
        stops: vec![(stop_a, task_a), (stop_b, task_b)],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_replicates_between_two_memory_backends() {
    let peers = two_peers().await;
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

/// A small edit of a large source moves only the changed chunks to the other member: its
/// fetch is a delta against its own copy. Counted by the serving member (its content bytes
/// sent in gets; the chunk list, about 36 bytes per 64 KiB, is not counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_replicates_a_small_edit_as_a_delta() {
    let peers = two_peers().await;
    let (a, addr_a, mem_b) = (&peers.a, peers.addr_a, &peers.mem_b);
    let role = BTreeMap::from([("role".to_owned(), "writer".to_owned())]);
    let cred = a
        .issue_client("w", role, Some(&addr_a.to_string()), 0)
        .unwrap();
    let mut c = Client::connect(&cred).await.unwrap();
    let size = 16 << 20;
    let mut data = vec![0u8; size];
    blake3::Hasher::new()
        .update(b"mesh delta")
        .finalize_xof()
        .fill(&mut data);
    let v1 = c.put_bytes("s/big", data.clone()).await.unwrap();
    let arrived = |hash: [u8; 32]| {
        let mem_b = mem_b.clone();
        within_30s(move || {
            let mem_b = mem_b.clone();
            async move {
                mem_b
                    .stat("s/big")
                    .await
                    .unwrap()
                    .is_some_and(|e| e.hash == hash)
            }
        })
    };
    assert!(arrived(v1.hash).await, "the first version did not arrive");
    let before = sent_bytes(&peers.metrics_a);
    assert!(before >= size as u64, "the first version came whole");

    data[size / 3] ^= 0x40;
    let v2 = c.put_bytes("s/big", data.clone()).await.unwrap();
    assert!(arrived(v2.hash).await, "the edit did not arrive");
    let moved = sent_bytes(&peers.metrics_a) - before;
    assert!(
        moved <= 1 << 20,
        "the edit moved {moved} bytes to the other member"
    );
    let copy = mem_b.read(&v2.hash, 0, v2.size).await.unwrap();
    assert!(copy == data, "the other member's copy differs");
    peers.stop().await;
}
