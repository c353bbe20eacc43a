//! A small edit replicated between two LAN mesh members (issue 16's mesh row): two peers on
//! the local store, in this process, `a` announcing a TCP proxy in front of itself so that
//! every byte `b` fetches is counted on the wire. `b` fetches the new version as a delta
//! against its own copy.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use ferry::backend::{Index, Retention};
use ferry::mesh::device::DeviceKey;
use ferry::mesh::runtime::{MeshOptions, run};
use ferry::proto::mesh::state::{Member, MeshState};
use ferry::proto::secret::MeshKey;
use ferry::store::LocalBackend;
use ferry::{Client, Server, ServerDir};

use crate::delta::Counter;
use crate::report::Report;

const PASSWORD: &str = "ferry bench mesh password";

fn free_udp_port() -> Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Runs `dir` as a mesh peer over `backend`, announcing `advertise` (if given) as its address.
async fn up(
    dir: &ServerDir,
    backend: &LocalBackend,
    ports: (u16, u16),
    advertise: Option<SocketAddr>,
) -> Result<(SocketAddr, tokio::sync::oneshot::Sender<()>)> {
    let bound = Server::builder(dir)
        .backend(backend.clone())
        .build()?
        .bind("127.0.0.1:0")
        .await?;
    let addr = bound.local_addr();
    let mut opts = MeshOptions::new(ports.0);
    opts.targets = vec![SocketAddr::from(([127, 0, 0, 1], ports.1))];
    opts.digest_every = Duration::from_secs(1);
    opts.advertise = advertise;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let dir = dir.clone();
    tokio::spawn(async move {
        if let Err(e) = run(dir, bound, opts, async {
            let _ = rx.await;
        })
        .await
        {
            eprintln!("mesh peer: {e}");
        }
    });
    Ok((addr, tx))
}

/// Waits (at most 120 s) until `b` holds `hash` as the current version of `source`; the
/// seconds it took.
async fn arrival(b: &LocalBackend, source: &str, hash: [u8; 32]) -> Result<f64> {
    let start = Instant::now();
    // Bounded: 120 s.
    while start.elapsed() < Duration::from_secs(120) {
        if b.stat(source).await?.is_some_and(|e| e.hash == hash) {
            return Ok(start.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    anyhow::bail!("{source} did not reach the other member in 120 s")
}

/// Puts `path` to `source` on the server of `cred`.
async fn put(
    cred: &ferry::proto::credential::Credential,
    source: &str,
    path: &Path,
) -> Result<[u8; 32]> {
    let mut c = Client::connect(cred).await?;
    let (e, _) = c
        .put_resume(source, std::fs::File::open(path)?, &mut |_| {}, &mut |_| {})
        .await?;
    Ok(e.hash)
}

/// The mesh row: bytes on the wire and seconds for a one-byte edit of a `size`-byte file.
pub fn mesh_row(size: u64, work: &Path, rep: &mut Report) -> Result<()> {
    const SEC: &str = "delta";
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (a, b) = (ServerDir::new(work.join("mesh-a")), ServerDir::new(work.join("mesh-b")));
        a.init()?;
        b.init()?;
        let device_a = DeviceKey::from_identity(&a.identity()?)?;
        let me = Member {
            spki: device_a.spki().to_vec(),
            name: "alpha".into(),
            addr: String::new(),
        };
        let mut key = [0u8; 32];
        getrandom_key(&mut key)?;
        let state = MeshState::create("bench", me, MeshKey::from_bytes(key));
        a.update_mesh(|s| {
            *s = Some(state);
            (true, ())
        })?;
        a.open_mesh(PASSWORD.to_owned().into(), ferry::clock::now() + 600)?;
        let (store_a, store_b) = (
            LocalBackend::open(&work.join("mesh-a-data"), Retention::default())?,
            LocalBackend::open(&work.join("mesh-b-data"), Retention::default())?,
        );
        let (port_a, port_b) = (free_udp_port()?, free_udp_port()?);
        // The proxy goes in front of `a`'s TLS port, known once `a` is bound.
        let counter = Counter::start(0)?;
        let proxy_addr = SocketAddr::from(([127, 0, 0, 1], counter.port));
        let (addr_a, stop_a) = up(&a, &store_a, (port_a, port_b), Some(proxy_addr)).await?;
        counter.set_upstream(addr_a.port());
        let device_b = DeviceKey::from_identity(&b.identity()?)?;
        let grant = ferry::mesh::peer::join(
            &addr_a.to_string(),
            device_a.id(),
            &device_b,
            "bravo",
            0,
            PASSWORD.as_bytes(),
        )
        .await?;
        let mut joined = MeshState::from_grant(grant)?;
        if let Some(m) = joined.members.get_mut(&device_a.id()) {
            m.addr = proxy_addr.to_string();
        }
        b.update_mesh(|s| {
            *s = Some(joined);
            (true, ())
        })?;
        let (_, stop_b) = up(&b, &store_b, (port_b, port_a), None).await?;
        let role = BTreeMap::from([("role".to_owned(), "writer".to_owned())]);
        let cred = a.issue_client("bench", role, Some(&addr_a.to_string()), 0)?;

        let file = work.join("mesh.bin");
        crate::sections::make_source(&file, size)?;
        let h1 = put(&cred, "m/f.bin", &file).await?;
        arrival(&store_b, "m/f.bin", h1).await?;
        crate::delta::edit(&file, "one byte")?;
        let before = counter.counts();
        let h2 = put(&cred, "m/f.bin", &file).await?;
        let secs = arrival(&store_b, "m/f.bin", h2).await?;
        let after = counter.counts();
        let moved = (after.0 + after.1 - before.0 - before.1) as f64 / (1024.0 * 1024.0);
        let got = store_b.stat("m/f.bin").await?.context("the edit is gone")?;
        ensure!(got.hash == h2, "the other member holds other content");
        rep.absolute(
            SEC,
            &format!(
                "one byte of {} MiB replicated to the other mesh member: MiB on the wire (both directions), seconds from the put's answer to arrival",
                size >> 20
            ),
            format!("{moved:.2} MiB, {secs:.2} s"),
            "Syncthing (issue 16, not rerun): 0.21 MiB".into(),
            None,
        );
        let _ = stop_b.send(());
        let _ = stop_a.send(());
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok(())
    })
}

/// A random mesh key (the OS's source, as `ferry mesh create` uses).
fn getrandom_key(key: &mut [u8; 32]) -> Result<()> {
    ferry::tls::random_bytes(key).map_err(|e| anyhow::anyhow!("random: {e}"))
}
