//! The three measured sections: bulk transfers, connection setup, idle-connection scale.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ferry::proto::credential::Credential;
use ferry::proto::server_id::ServerId;
use ferry::{Client, ServerDir};

use crate::Opts;
use crate::procs::{self, Env, Guard};
use crate::report::{Goal, Report, median};
use crate::worker;

/// The rep_movsb threshold that sidesteps glibc's 4 KiB-aliasing slow path.
pub const TUNED: &str = "glibc.cpu.x86_rep_movsb_threshold=2097152";

/// The environments the bulk section runs under.
pub fn envs(which: &str) -> Vec<Env> {
    let unset = Env { tunables: None };
    let set = Env {
        tunables: Some(TUNED.to_owned()),
    };
    match which {
        "unset" => vec![unset],
        "set" => vec![set],
        "inherit" => vec![Env {
            tunables: std::env::var("GLIBC_TUNABLES").ok(),
        }],
        _ => vec![unset, set],
    }
}

/// A ferry server folder with a writer credential, served by a worker process.
pub struct FerryServer {
    /// The server process.
    pub guard: Guard,
    /// Its address.
    pub addr: String,
    /// The folder.
    pub dir: ServerDir,
    /// A writer credential.
    pub cred: Credential,
    /// The credential, as a file for client workers.
    pub cred_path: PathBuf,
}

/// Creates a server folder under `parent` and starts a server on it.
pub fn start_ferry(exe: &Path, parent: &Path, name: &str, env: &Env) -> Result<FerryServer> {
    let root = parent.join(name);
    let dir = ServerDir::new(root.join("srv"));
    dir.init()?;
    let srv = dir.path().to_string_lossy().into_owned();
    let (guard, addr) = procs::start_worker_server(exe, &["ferry-serve", &srv], env)?;
    let attrs = BTreeMap::from([("role".to_owned(), "writer".to_owned())]);
    let cred = dir.issue_client("bench", attrs, Some(&addr), 0)?;
    let cred_path = root.join("bench.cred");
    std::fs::write(&cred_path, cred.to_toml().as_bytes())?;
    Ok(FerryServer {
        guard,
        addr,
        dir,
        cred,
        cred_path,
    })
}

/// Writes `mib` MiB of pseudo-random bytes (BLAKE3 XOF) to `path`; returns their BLAKE3.
pub fn make_source(path: &Path, bytes: u64) -> Result<String> {
    let mut xof = blake3::Hasher::new()
        .update(b"ferry-bench source")
        .finalize_xof();
    let mut h = blake3::Hasher::new();
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        xof.fill(&mut buf[..n]);
        h.update(&buf[..n]);
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(h.finalize().to_hex().to_string())
}

/// A temporary folder in memory (tmpfs) when the machine has one, else on disk.
fn memory_dir(prefix: &str) -> Result<(tempfile::TempDir, bool)> {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(d) = tempfile::Builder::new().prefix(prefix).tempdir_in(shm)
    {
        return Ok((d, true));
    }
    Ok((tempfile::Builder::new().prefix(prefix).tempdir()?, false))
}

fn mbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}

/// Checks a client report against the expected size and hash.
pub fn check(r: &procs::ClientReport, size: u64, hash: &str, what: &str) -> Result<()> {
    if r.bytes != size || r.hash != hash {
        bail!(
            "{what}: moved {} bytes with BLAKE3 {}, expected {size} bytes with {hash}",
            r.bytes,
            r.hash
        );
    }
    Ok(())
}

#[derive(Default)]
struct Series {
    ferry: Vec<f64>,
    base: Vec<f64>,
    ferry_client_kib: u64,
    base_client_kib: u64,
}

/// Bulk get and put: ferry against bare rustls, OpenSSL, scp and curl.
pub fn bulk(o: &Opts, exe: &Path, env: &Env, rep: &mut Report) -> Result<()> {
    let label = env.label();
    eprintln!("bulk transfers ({label})");
    let size = o.size_mib * 1024 * 1024;
    let (mem, is_tmpfs) = memory_dir("ferry-bench-mem-")?;
    let disk_parent = o.disk_dir.clone().unwrap_or_else(std::env::temp_dir);
    let disk = tempfile::Builder::new()
        .prefix("ferry-bench-disk-")
        .tempdir_in(&disk_parent)?;
    let src = mem.path().join("source.bin");
    let hash = make_source(&src, size)?;
    let src_s = src.to_string_lossy().into_owned();

    let mut f_mem = start_ferry(exe, mem.path(), "ferry", env)?;
    let mut f_disk = start_ferry(exe, disk.path(), "ferry", env)?;
    let pin = f_mem.dir.identity()?.server_id().to_string();
    let pin_disk = f_disk.dir.identity()?.server_id().to_string();
    let store_mem = mem.path().join("bare-store");
    let store_disk = disk.path().join("bare-store");
    std::fs::create_dir_all(&store_mem)?;
    std::fs::create_dir_all(&store_disk)?;
    let srv_mem = f_mem.dir.path().to_string_lossy().into_owned();
    let srv_disk = f_disk.dir.path().to_string_lossy().into_owned();
    let (mut t_mem, t_mem_addr) = procs::start_worker_server(
        exe,
        &["tls-serve", &srv_mem, &src_s, &store_mem.to_string_lossy()],
        env,
    )?;
    let (mut t_disk, t_disk_addr) = procs::start_worker_server(
        exe,
        &[
            "tls-serve",
            &srv_disk,
            &src_s,
            &store_disk.to_string_lossy(),
        ],
        env,
    )?;
    let cred_mem = f_mem.cred_path.to_string_lossy().into_owned();
    let cred_disk = f_disk.cred_path.to_string_lossy().into_owned();

    // The source the gets read, stored once (not timed).
    let r = procs::run_worker_client(exe, &["ferry-put", &cred_mem, "bench/data", &src_s], env)?;
    check(&r, size, &hash, "initial ferry put")?;

    let mut get = Series::default();
    let mut get_raw = Series::default();
    let mut put_mem = Series::default();
    let mut put_disk = Series::default();
    let mut ext = crate::ext::External::new(o, &src, size, &hash, env, rep)?;
    let size_s = size.to_string();
    for i in 0..o.reps {
        let ferry_first = i % 2 == 0;
        // get: ferry vs bare
        let run_pair = |series: &mut Series,
                        ferry: &dyn Fn() -> Result<procs::ClientReport>,
                        base: &dyn Fn() -> Result<procs::ClientReport>,
                        what: &str|
         -> Result<()> {
            let (fr, br) = if ferry_first {
                let f = ferry()?;
                (f, base()?)
            } else {
                let b = base()?;
                (ferry()?, b)
            };
            check(&fr, size, &hash, &format!("ferry {what}"))?;
            check(&br, size, &hash, &format!("bare rustls {what}"))?;
            series.ferry.push(mbps(fr.bytes, fr.secs));
            series.base.push(mbps(br.bytes, br.secs));
            series.ferry_client_kib = series.ferry_client_kib.max(fr.hwm_kib);
            series.base_client_kib = series.base_client_kib.max(br.hwm_kib);
            Ok(())
        };
        run_pair(
            &mut get,
            &|| procs::run_worker_client(exe, &["ferry-get", &cred_mem, "bench/data"], env),
            &|| {
                let r =
                    procs::run_worker_client(exe, &["tls-get", &t_mem_addr, &pin, &size_s], env)?;
                Ok(r)
            },
            "get",
        )?;
        // The fastest a bare stream goes: no hashing at all, checked by size only, paired
        // with this repetition's ferry get.
        let raw = procs::run_worker_client(
            exe,
            &["tls-get", &t_mem_addr, &pin, &size_s, worker::UNHASHED],
            env,
        )?;
        if raw.bytes != size || raw.hash != worker::UNHASHED {
            bail!(
                "bare rustls unhashed get: moved {} bytes, expected {size}",
                raw.bytes
            );
        }
        rep.note(format!(
            "bare rustls negotiated (same config as ferry): {}",
            raw.info
        ));
        if let Some(f) = get.ferry.last() {
            get_raw.ferry.push(*f);
            get_raw.base.push(mbps(raw.bytes, raw.secs));
        }
        run_pair(
            &mut put_mem,
            &|| procs::run_worker_client(exe, &["ferry-put", &cred_mem, "bench/put", &src_s], env),
            &|| {
                let r =
                    procs::run_worker_client(exe, &["tls-put", &t_mem_addr, &pin, &src_s], env)?;
                Ok(r)
            },
            "put (memory)",
        )?;
        run_pair(
            &mut put_disk,
            &|| procs::run_worker_client(exe, &["ferry-put", &cred_disk, "bench/put", &src_s], env),
            &|| {
                let r = procs::run_worker_client(
                    exe,
                    &["tls-put", &t_disk_addr, &pin_disk, &src_s],
                    env,
                )?;
                Ok(r)
            },
            "put (disk)",
        )?;
        // Clear the bare server's stored copies between runs.
        for d in [&store_mem, &store_disk] {
            for e in std::fs::read_dir(d)?.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        ext.rep(i, &mut get.ferry, &mut put_mem.ferry)?;
        eprintln!("  repetition {} of {} done", i + 1, o.reps);
    }
    let mem_kind = if is_tmpfs { "tmpfs" } else { "disk (no tmpfs)" };
    let sec = format!("bulk, {label}");
    let get_what = format!("get {} MiB → sink, MB/s", o.size_mib);
    let put_mem_what = format!("put {} MiB, store in {mem_kind}, MB/s", o.size_mib);
    let put_disk_what = format!("put {} MiB, store on disk (disk-bound), MB/s", o.size_mib);
    let rows = [
        (
            &get_what,
            &get,
            "bare rustls (hashing inline, like for like)",
            Goal::AtLeast(0.9),
        ),
        (
            &get_what,
            &get_raw,
            "bare rustls, unhashed (size checked only)",
            Goal::None,
        ),
        (&put_mem_what, &put_mem, "bare rustls", Goal::AtLeast(0.8)),
        (&put_disk_what, &put_disk, "bare rustls", Goal::AtLeast(0.8)),
    ];
    for (what, series, base, goal) in rows {
        rep.compare(&sec, what, &series.ferry, base, &series.base, "MB/s", goal);
    }
    rep.note(
        "get against bare rustls unhashed: no target, since its bytes are not checked (a fast wrong transfer cannot score); it prices ferry's end-to-end BLAKE3 check, which the like-for-like row pays on both sides".to_owned(),
    );
    rep.note(
        "put against bare rustls: both servers hash the upload, write it to a file in the same folder (tmpfs or disk) and fsync that file before answering; ferry also fsyncs the blob's folder and commits its index (redb, fsynced), which the bare server has not got".to_owned(),
    );
    ext.finish(&sec, rep);
    let srv_mem_kib = f_mem.guard.sample();
    let srv_disk_kib = f_disk.guard.sample();
    let t_mem_kib = t_mem.sample();
    let t_disk_kib = t_disk.sample();
    rep.memory(
        &format!("ferry get + put (memory), {label}"),
        Some(get.ferry_client_kib.max(put_mem.ferry_client_kib)),
        Some(srv_mem_kib),
    );
    rep.memory(
        &format!("ferry put (disk), {label}"),
        Some(put_disk.ferry_client_kib),
        Some(srv_disk_kib),
    );
    rep.memory(
        &format!("bare rustls get + put (memory), {label}"),
        Some(get.base_client_kib.max(put_mem.base_client_kib)),
        Some(t_mem_kib),
    );
    rep.memory(
        &format!("bare rustls put (disk), {label}"),
        Some(put_disk.base_client_kib),
        Some(t_disk_kib),
    );
    Ok(())
}

/// Runs `n` operations (rounded up to a multiple of `conc`) on `conc` concurrent tasks;
/// returns how many ran and the seconds they took.
async fn rate_ops<F, Fut>(conc: usize, n: usize, op: F) -> Result<(usize, f64)>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let op = Arc::new(op);
    let per = n.div_ceil(conc);
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..conc {
        let op = op.clone();
        set.spawn(async move {
            for _ in 0..per {
                op().await?;
            }
            Ok::<(), anyhow::Error>(())
        });
    }
    let all = async {
        while let Some(r) = set.join_next().await {
            r??;
        }
        Ok::<(), anyhow::Error>(())
    };
    tokio::time::timeout(Duration::from_secs(300), all)
        .await
        .context("connection test took over 300 s")??;
    Ok((per * conc, start.elapsed().as_secs_f64()))
}

/// Runs `n` operations on `conc` concurrent tasks; returns operations per second.
async fn rate<F, Fut>(conc: usize, n: usize, op: F) -> Result<f64>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let (ops, secs) = rate_ops(conc, n, op).await?;
    Ok(ops as f64 / secs)
}

/// Slices each side of a paired measurement is cut into.
const SLICES: usize = 6;

/// Rates of ferry and of its baseline, `n` operations each, measured in alternating slices
/// (ferry, bare, bare, ferry, ... or the reverse when `ferry_first` is false) so that a
/// change of load on the shared machine falls on both alike. Each closure runs its given
/// number of operations and returns how many ran and their seconds.
async fn paired_rates<FA, FutA, FB, FutB>(
    n: usize,
    ferry_first: bool,
    ferry: FA,
    base: FB,
) -> Result<(f64, f64)>
where
    FA: Fn(usize) -> FutA,
    FutA: std::future::Future<Output = Result<(usize, f64)>>,
    FB: Fn(usize) -> FutB,
    FutB: std::future::Future<Output = Result<(usize, f64)>>,
{
    let slice = n.div_ceil(SLICES).max(1);
    let (mut f, mut b) = ((0usize, 0f64), (0usize, 0f64));
    for s in 0..SLICES {
        let add = |acc: &mut (usize, f64), (ops, secs): (usize, f64)| {
            acc.0 += ops;
            acc.1 += secs;
        };
        if (s % 2 == 0) == ferry_first {
            add(&mut f, ferry(slice).await?);
            add(&mut b, base(slice).await?);
        } else {
            add(&mut b, base(slice).await?);
            add(&mut f, ferry(slice).await?);
        }
    }
    Ok((f.0 as f64 / f.1, b.0 as f64 / b.1))
}

/// Median latencies (ms) of `n` ferry operations and `n` baseline ones, run one by one in
/// alternation (which goes first alternates too), so that both see the same load.
async fn paired_latency<FA, FutA, FB, FutB>(n: usize, ferry: FA, base: FB) -> Result<(f64, f64)>
where
    FA: Fn() -> FutA,
    FutA: std::future::Future<Output = Result<()>>,
    FB: Fn() -> FutB,
    FutB: std::future::Future<Output = Result<()>>,
{
    let (mut fv, mut bv) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let limit = Duration::from_secs(30);
    for i in 0..n {
        for side in [i % 2 == 0, i % 2 != 0] {
            let t = Instant::now();
            if side {
                tokio::time::timeout(limit, ferry())
                    .await
                    .context("one request took over 30 s")??;
                fv.push(t.elapsed().as_secs_f64() * 1e3);
            } else {
                tokio::time::timeout(limit, base())
                    .await
                    .context("one request took over 30 s")??;
                bv.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    Ok((median(&fv), median(&bv)))
}

/// Median latency of `n` sequential operations, in milliseconds.
async fn latency<F, Fut>(n: usize, op: F) -> Result<(f64, f64)>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        tokio::time::timeout(Duration::from_secs(30), op())
            .await
            .context("one request took over 30 s")??;
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let max = v.iter().copied().fold(0.0, f64::max);
    Ok((median(&v), max))
}

/// One authenticated connection plus a `stat`, then a clean close.
async fn ferry_conn_stat(addr: Arc<String>, pin: ServerId, cred: Arc<Credential>) -> Result<()> {
    let mut c = Client::connect_pipelined_to(&addr, pin, &cred).await?;
    let e = c.stat("bench/1k").await?;
    if e.size != 1024 {
        bail!("stat answered the wrong entry");
    }
    c.close().await?;
    Ok(())
}

/// Connect, authenticate, get 1 KiB (hash checked by the client, bytes compared), close.
async fn ferry_conn_get(addr: &str, pin: ServerId, cred: &Credential, want: &[u8]) -> Result<()> {
    let mut c = Client::connect_pipelined_to(addr, pin, cred).await?;
    let got = c.get_bytes("bench/1k").await?;
    if got != want {
        bail!("1 KiB get returned other bytes");
    }
    c.close().await?;
    Ok(())
}

fn small_source() -> Vec<u8> {
    (0..1024u32).map(|i| (i * 7 % 251) as u8).collect()
}

/// Connection setup rate and small-request latency.
pub fn setup(o: &Opts, exe: &Path, env: &Env, rep: &mut Report) -> Result<()> {
    eprintln!("connection setup ({})", env.label());
    let (mem, _) = memory_dir("ferry-bench-setup-")?;
    let f = start_ferry(exe, mem.path(), "ferry", env)?;
    let srv = f.dir.path().to_string_lossy().into_owned();
    let (_t, t_addr) =
        procs::start_worker_server(exe, &["tls-serve", &srv, "/dev/null", "-"], env)?;
    let pin = f.dir.identity()?.server_id();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let small = small_source();
    let addr = Arc::new(f.addr.clone());
    let cred = Arc::new(f.cred.clone());
    let t_addr = Arc::new(t_addr);
    rt.block_on(async {
        let mut c = Client::connect_to(&addr, pin, &cred).await?;
        c.put_bytes("bench/1k", small.clone()).await?;
        c.close().await?;
        let sec = format!("setup, {}", env.label());
        for conc in [1usize, 16] {
            let (mut fv, mut bv) = (Vec::new(), Vec::new());
            for i in 0..o.reps {
                let fr = |n: usize| {
                    let (a, c) = (addr.clone(), cred.clone());
                    rate_ops(conc, n, move || ferry_conn_stat(a.clone(), pin, c.clone()))
                };
                let br = |n: usize| {
                    let a = t_addr.clone();
                    rate_ops(conc, n, move || {
                        let a = a.clone();
                        async move { worker::tls_echo(&a, pin, 16).await }
                    })
                };
                let (f, b) = paired_rates(o.conns, i % 2 == 0, fr, br).await?;
                fv.push(f);
                bv.push(b);
            }
            rep.compare(
                &sec,
                &format!("connections/s at concurrency {conc} (ferry: TLS + credential proof + stat; bare: TLS + 16-byte request/response)"),
                &fv,
                "bare rustls full handshakes",
                &bv,
                "/s",
                Goal::AtLeast(0.85),
            );
        }
        let samples = if o.quick { 10 } else { 200 };
        let (mut fv, mut bv) = (Vec::new(), Vec::new());
        for _ in 0..o.reps {
            let (f, b) = paired_latency(
                samples,
                || ferry_conn_get(&addr, pin, &cred, &small),
                || worker::tls_echo(&t_addr, pin, 1024),
            )
            .await?;
            fv.push(f);
            bv.push(b);
        }
        rep.compare(
            &sec,
            &format!("1 KiB get end to end (new connection), median of {samples}, ms"),
            &fv,
            "bare TLS connect + 1 KiB request/response",
            &bv,
            "ms",
            Goal::AtMost(1.2),
        );
        Ok::<(), anyhow::Error>(())
    })?;
    Ok(())
}

/// The password the login section registers.
const LOGIN_PASSWORD: &[u8] = b"ferry-bench login password";

/// Argon2id for the login section's record: the least the library accepts. The stretching
/// runs on the client only; the server's share of a login does not depend on it.
const CHEAP_KSF: (&str, &str) = ("m_kib = 8\nt = 1\n", "8 KiB, 1 pass");

/// `op` run `n` times on `conc` tasks, with the CPU time the process `pid` spent meanwhile:
/// returns operations per second of wall time and per second of that process's CPU.
async fn rate_and_cpu<F, Fut>(pid: u32, conc: usize, n: usize, op: F) -> Result<(f64, f64)>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let before = procs::cpu_secs(pid).context("reading the server's CPU time")?;
    let per = n.div_ceil(conc);
    let wall = rate(conc, n, op).await?;
    // Let the server finish closing the last connections before reading its clock.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let cpu = procs::cpu_secs(pid).context("reading the server's CPU time")? - before;
    // One clock tick at least, so a tiny quick run cannot divide by zero.
    Ok((wall, (per * conc) as f64 / cpu.max(0.01)))
}

/// Password logins (OPAQUE): server CPU per login against a bare TLS handshake's, and the
/// end-to-end rate.
pub fn login(o: &Opts, exe: &Path, env: &Env, rep: &mut Report) -> Result<()> {
    eprintln!("password logins ({})", env.label());
    let (mem, _) = memory_dir("ferry-bench-login-")?;
    let root = mem.path().join("ferry");
    let dir = ServerDir::new(root.join("srv"));
    dir.init()?;
    // Cheap stretching for the bench user's record, so that the client's Argon2id does not
    // hide the server's share.
    let cfg = dir.path().join("ferry.toml");
    let text = std::fs::read_to_string(&cfg)?;
    let cheap = text.replace("m_kib = 65536\nt = 3\n", CHEAP_KSF.0);
    if cheap == text {
        bail!("ferry.toml has no default [password] section to replace");
    }
    std::fs::write(&cfg, cheap)?;
    let srv = dir.path().to_string_lossy().into_owned();
    let (f_guard, addr) = procs::start_worker_server(exe, &["ferry-serve", &srv], env)?;
    let (t_guard, t_addr) =
        procs::start_worker_server(exe, &["tls-serve", &srv, "/dev/null", "-"], env)?;
    let pin = dir.identity()?.server_id();
    let attrs = BTreeMap::from([("role".to_owned(), "writer".to_owned())]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let invite = dir.invite_user("bench-user", attrs, Some(&addr), 3600, now)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let addr = Arc::new(addr);
    let t_addr = Arc::new(t_addr);
    let (f_pid, t_pid) = (f_guard.pid(), t_guard.pid());
    rt.block_on(async {
        Client::register(&invite, LOGIN_PASSWORD).await?;
        let sec = format!("login, {}", env.label());
        let conc = 16;
        let (mut f_wall, mut f_cpu, mut b_wall, mut b_cpu) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in 0..o.reps {
            let fr = || {
                let a = addr.clone();
                rate_and_cpu(f_pid, conc, o.conns, move || {
                    let a = a.clone();
                    async move {
                        let (c, _) =
                            Client::login(&a, pin, "bench-user", LOGIN_PASSWORD, false).await?;
                        c.close().await?;
                        Ok(())
                    }
                })
            };
            let br = || {
                let a = t_addr.clone();
                rate_and_cpu(t_pid, conc, o.conns, move || {
                    let a = a.clone();
                    async move { worker::tls_echo(&a, pin, 16).await }
                })
            };
            let ((fw, fc), (bw, bc)) = if i % 2 == 0 {
                let f = fr().await?;
                (f, br().await?)
            } else {
                let b = br().await?;
                (fr().await?, b)
            };
            f_wall.push(fw);
            f_cpu.push(fc);
            b_wall.push(bw);
            b_cpu.push(bc);
        }
        rep.compare(
            &sec,
            &format!(
                "password logins (OPAQUE) per second of server CPU (TLS handshake + login + close; client Argon2id {})",
                CHEAP_KSF.1
            ),
            &f_cpu,
            "bare rustls handshakes + 16-byte request/response per second of server CPU",
            &b_cpu,
            "/s",
            Goal::None,
        );
        // The login's own server cost: its CPU per connection minus a bare handshake's.
        let own: Vec<f64> = f_cpu
            .iter()
            .zip(&b_cpu)
            .map(|(f, b)| 1.0 / (1.0 / f - 1.0 / b))
            .filter(|r| r.is_finite() && *r > 0.0)
            .collect();
        rep.absolute(
            &sec,
            "server CPU of the OPAQUE login alone (per login minus per bare handshake), as logins per CPU-second",
            if own.is_empty() {
                "not measurable (within the clock-tick resolution)".to_owned()
            } else {
                format!("{:.0} /s", median(&own))
            },
            "-".to_owned(),
            None,
        );
        rep.compare(
            &sec,
            &format!("password logins/s end to end at concurrency {conc} (client Argon2id {}; client and server share the 2 cores)", CHEAP_KSF.1),
            &f_wall,
            "bare rustls full handshakes",
            &b_wall,
            "/s",
            Goal::None,
        );
        Ok::<(), anyhow::Error>(())
    })?;
    drop((f_guard, t_guard));
    Ok(())
}

fn nofile_soft() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        })
        .unwrap_or(1024)
}

/// Idle authenticated connections held by one server, its memory per connection, and a new
/// client's latency meanwhile.
pub fn scale(o: &Opts, exe: &Path, env: &Env, rep: &mut Report) -> Result<()> {
    let counts: Vec<usize> = o
        .scale
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let soft = nofile_soft();
    for want in counts {
        eprintln!("scale: {want} idle connections");
        let sec = "scale".to_owned();
        let n = want.min(soft.saturating_sub(200) as usize);
        if n < want {
            rep.note(format!(
                "scale: RLIMIT_NOFILE is {soft}: opened {n} connections instead of {want} (raise `ulimit -n` to measure more)"
            ));
        }
        let (mem, _) = memory_dir("ferry-bench-scale-")?;
        let mut f = start_ferry(exe, mem.path(), "ferry", env)?;
        let pin = f.dir.identity()?.server_id();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let small = small_source();
        let addr = Arc::new(f.addr.clone());
        let cred = Arc::new(f.cred.clone());
        let server_pid = f.guard.pid();
        let (held, rss_before, rss_after, lat) = rt.block_on(async {
            let mut c = Client::connect_to(&addr, pin, &cred).await?;
            c.put_bytes("bench/1k", small.clone()).await?;
            c.close().await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let before = procs::status_kib(server_pid, "VmRSS").unwrap_or(0);
            let conns = Arc::new(tokio::sync::Mutex::new(Vec::with_capacity(n)));
            let conc = 16;
            let mut set = tokio::task::JoinSet::new();
            for t in 0..conc {
                let (a, c, conns) = (addr.clone(), cred.clone(), conns.clone());
                let mine = n / conc + usize::from(t < n % conc);
                set.spawn(async move {
                    for _ in 0..mine {
                        let client = Client::connect_to(&a, pin, &c).await?;
                        conns.lock().await.push(client);
                    }
                    Ok::<(), anyhow::Error>(())
                });
            }
            let opened = tokio::time::timeout(Duration::from_secs(600), async {
                let mut first_err = None;
                while let Some(r) = set.join_next().await {
                    if let Err(e) | Ok(Err(e)) = r.map_err(anyhow::Error::from) {
                        first_err.get_or_insert(e);
                    }
                }
                first_err
            })
            .await;
            let held = conns.lock().await.len();
            match opened {
                Ok(Some(e)) => eprintln!("  scale: stopped opening at {held}: {e:#}"),
                Err(_) => eprintln!("  scale: opening took over 600 s; held {held}"),
                Ok(None) => {}
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let after = procs::status_kib(server_pid, "VmRSS").unwrap_or(0);
            let samples = if o.quick { 5 } else { 20 };
            let lat = latency(samples, || ferry_conn_get(&addr, pin, &cred, &small)).await?;
            // Still all there? A get on the oldest connection proves they are alive.
            let mut guard = conns.lock().await;
            if let Some(first) = guard.first_mut() {
                first.stat("bench/1k").await?;
            }
            drop(guard);
            Ok::<_, anyhow::Error>((held, before, after, lat))
        })?;
        let per_conn = rss_after.saturating_sub(rss_before) as f64 / held.max(1) as f64;
        let total_mib = rss_after as f64 / 1024.0;
        rep.absolute(
            &sec,
            &format!("idle authenticated connections held (asked {want})"),
            held.to_string(),
            format!("{want}"),
            Some(held >= want),
        );
        rep.absolute(
            &sec,
            &format!("server RSS with {held} idle connections"),
            format!(
                "{total_mib:.0} MiB ({per_conn:.1} KiB per connection over {:.1} MiB idle)",
                rss_before as f64 / 1024.0
            ),
            if want >= 10_000 {
                "≤ 1024 MiB".into()
            } else {
                "-".into()
            },
            (want >= 10_000).then_some(total_mib <= 1024.0),
        );
        rep.absolute(
            &sec,
            "new client's 1 KiB get meanwhile (median / max), ms",
            format!("{:.2} / {:.2} ms", lat.0, lat.1),
            "≤ 100 ms".into(),
            Some(lat.1 <= 100.0),
        );
        f.guard.sample();
        drop(rt);
    }
    Ok(())
}
