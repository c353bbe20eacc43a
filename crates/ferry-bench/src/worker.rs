//! The processes the harness starts: ferry and bare-rustls servers and bulk clients.
//!
//! Each runs as `ferry-bench __worker KIND ARGS...`, so that every side has its own peak RSS.
//! Servers print `addr ADDR` once listening and stop when their standard input closes (so
//! they die with the harness). Clients print one line
//! `ok BYTES HASH_HEX SECONDS VMHWM_KIB [SUITE GROUP]` and exit.

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use ferry::proto::credential::Credential;
use ferry::proto::server_id::ServerId;
use ferry::{Client, Server, ServerDir};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Buffer size of the bare TLS baseline: the same as ferry's chunk.
pub const BUF: usize = 256 * 1024;
/// Deadline for any single bare-TLS step.
const STEP: Duration = Duration::from_secs(60);

/// Bare protocol operations (first byte the client sends, then a u64be length).
pub const OP_GET: u8 = b'G';
/// Client uploads `len` bytes; server answers with their BLAKE3.
pub const OP_PUT: u8 = b'P';
/// Server answers `len` bytes (small request/response).
pub const OP_ECHO: u8 = b'R';

/// Peak resident set of this process, KiB.
pub fn own_hwm_kib() -> u64 {
    crate::procs::status_kib(std::process::id(), "VmHWM").unwrap_or(0)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Runs the worker named by `args[0]`.
pub fn run(args: &[String]) -> Result<()> {
    let arg = |i: usize| {
        args.get(i)
            .cloned()
            .ok_or_else(|| anyhow!("worker {:?}: missing argument {i}", args.first()))
    };
    let rt = runtime()?;
    match arg(0)?.as_str() {
        "ferry-serve" => rt.block_on(ferry_serve(arg(1)?)),
        "tls-serve" => rt.block_on(tls_serve(arg(1)?, arg(2)?, arg(3)?)),
        "ferry-get" => rt.block_on(ferry_get(arg(1)?, arg(2)?)),
        "ferry-put" => rt.block_on(ferry_put(arg(1)?, arg(2)?, arg(3)?)),
        "tls-get" => rt.block_on(tls_get(
            arg(1)?,
            arg(2)?,
            arg(3)?.parse()?,
            args.get(4).is_some_and(|a| a == UNHASHED),
        )),
        "tls-put" => rt.block_on(tls_put(arg(1)?, arg(2)?, arg(3)?)),
        other => bail!("unknown worker {other}"),
    }
}

/// Resolves when standard input reaches its end (the harness closed it or died).
async fn stdin_closed() {
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
    })
    .await;
}

fn announce(addr: std::net::SocketAddr) {
    println!("addr {addr}");
}

async fn ferry_serve(dir: String) -> Result<()> {
    let dir = ServerDir::new(dir);
    let bound = Server::open(&dir)?.bind("127.0.0.1:0").await?;
    announce(bound.local_addr());
    bound.run(stdin_closed()).await?;
    Ok(())
}

fn read_cred(path: &str) -> Result<Credential> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    Ok(Credential::parse(&text)?)
}

fn report(bytes: u64, hash: &[u8; 32], secs: f64, extra: &str) {
    println!(
        "ok {bytes} {} {secs:.6} {} {extra}",
        ferry::client::hex(hash),
        own_hwm_kib()
    );
}

async fn ferry_get(cred: String, source: String) -> Result<()> {
    let cred = read_cred(&cred)?;
    let start = Instant::now();
    let mut client = Client::connect_pipelined(&cred).await?;
    // `get` checks the BLAKE3 of what it received against the entry and fails otherwise.
    let (entry, _) = client
        .get(&source, std::io::sink(), &mut |_| {})
        .await
        .context("ferry get")?;
    client.close().await?;
    report(entry.size, &entry.hash, start.elapsed().as_secs_f64(), "");
    Ok(())
}

async fn ferry_put(cred: String, source: String, file: String) -> Result<()> {
    let cred = read_cred(&cred)?;
    let f = std::fs::File::open(&file)?;
    let len = f.metadata()?.len();
    if std::env::var("FERRY_BENCH_PUT_RESUMABLE").is_ok_and(|v| v == "prehashed") {
        // The server's resumable path alone: the hash is computed before the clock starts.
        let (f, size, hash) = ferry::client::hash_file(f).await?;
        let start = Instant::now();
        let mut client = Client::connect_pipelined(&cred).await?;
        let (entry, _) = client
            .put_resume_hashed(&source, f, size, hash, &mut |_| {}, &mut |_| {})
            .await
            .context("ferry put (resumable, prehashed)")?;
        client.close().await?;
        report(entry.size, &entry.hash, start.elapsed().as_secs_f64(), "");
        return Ok(());
    }
    let start = Instant::now();
    if std::env::var_os("FERRY_BENCH_PUT_RESUMABLE").is_some() {
        // What `ferry put SOURCE FILE` does: hash the file while connecting, then a
        // resumable put (a finished upload leaves no part, so every run sends it all).
        let (hashed, client) = tokio::join!(
            ferry::client::hash_file(f),
            Client::connect_pipelined(&cred)
        );
        let (f, size, hash) = hashed?;
        let mut client = client?;
        let (entry, _) = client
            .put_resume_hashed(&source, f, size, hash, &mut |_| {}, &mut |_| {})
            .await
            .context("ferry put (resumable)")?;
        client.close().await?;
        report(entry.size, &entry.hash, start.elapsed().as_secs_f64(), "");
        return Ok(());
    }
    let mut client = Client::connect_pipelined(&cred).await?;
    // `put` hashes what it sends and fails unless the server stored that hash.
    let entry = client
        .put(&source, f, Some(len), &mut |_| {})
        .await
        .context("ferry put")?;
    client.close().await?;
    report(entry.size, &entry.hash, start.elapsed().as_secs_f64(), "");
    Ok(())
}

/// The bare baseline's server: ferry's own TLS configuration (same provider, groups, no
/// tickets, same Ed25519 identity), no framing or authentication above it.
async fn tls_serve(dir: String, file: String, store: String) -> Result<()> {
    let identity = ServerDir::new(dir).identity()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(identity.server_config()?));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    announce(listener.local_addr()?);
    let file = Arc::new(file);
    let store = Arc::new(store);
    let accept = async {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let acceptor = acceptor.clone();
            let (file, store) = (file.clone(), store.clone());
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let conn = async {
                    let tls = acceptor.accept(tcp).await?;
                    tls_serve_one(tls, &file, &store).await
                };
                if let Ok(Err(e)) = tokio::time::timeout(STEP * 2, conn).await {
                    eprintln!("tls-serve: {e:#}");
                }
            });
        }
    };
    tokio::select! {
        () = accept => {}
        () = stdin_closed() => {}
    }
    Ok(())
}

/// Reads until the peer's close_notify or EOF, so that closing never resets data in flight.
async fn drain<S: AsyncRead + Unpin>(s: &mut S) {
    let mut b = [0u8; 256];
    let _ = tokio::time::timeout(STEP, async {
        while matches!(s.read(&mut b).await, Ok(n) if n > 0) {}
    })
    .await;
}

async fn tls_serve_one<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    file: &str,
    store: &str,
) -> Result<()> {
    let mut head = [0u8; 9];
    s.read_exact(&mut head).await?;
    let len = u64::from_be_bytes(head[1..].try_into()?);
    // Sized for what is asked: a small answer does not zero a transfer-sized buffer.
    let mut buf = vec![0u8; usize::try_from(len).unwrap_or(BUF).min(BUF)];
    match head[0] {
        OP_GET => {
            let mut f = std::fs::File::open(file)?;
            let mut left = len;
            while left > 0 {
                let want = left.min(BUF as u64) as usize;
                f.read_exact(&mut buf[..want])?;
                s.write_all(&buf[..want]).await?;
                left -= want as u64;
            }
            s.flush().await?;
            // The client acknowledges the whole transfer before anyone closes.
            let mut ack = [0u8; 1];
            s.read_exact(&mut ack).await?;
        }
        OP_PUT => {
            let mut h = blake3::Hasher::new();
            let mut out = if store == "-" {
                None
            } else {
                Some(tempfile::NamedTempFile::new_in(store)?)
            };
            let mut left = len;
            while left > 0 {
                let want = left.min(BUF as u64) as usize;
                let n = s.read(&mut buf[..want]).await?;
                if n == 0 {
                    bail!("upload cut after {} bytes", len - left);
                }
                h.update(&buf[..n]);
                if let Some(o) = out.as_mut() {
                    std::io::Write::write_all(o, &buf[..n])?;
                }
                left -= n as u64;
            }
            if let Some(o) = out.as_mut() {
                o.as_file().sync_all()?;
            }
            s.write_all(h.finalize().as_bytes()).await?;
            s.flush().await?;
        }
        OP_ECHO => {
            s.write_all(&buf).await?;
            s.flush().await?;
        }
        op => bail!("unknown op {op}"),
    }
    drain(&mut s).await;
    let _ = s.shutdown().await;
    Ok(())
}

/// Opens a bare TLS connection with ferry's client configuration (pinned, no resumption).
pub async fn tls_connect(
    addr: &str,
    pin: ServerId,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(ferry::tls::client_config(pin)?));
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from("ferry.invalid")?;
    Ok(connector.connect(name, tcp).await?)
}

async fn request<S: AsyncWrite + Unpin>(s: &mut S, op: u8, len: u64) -> Result<()> {
    let mut head = [0u8; 9];
    head[0] = op;
    head[1..].copy_from_slice(&len.to_be_bytes());
    s.write_all(&head).await?;
    s.flush().await?;
    Ok(())
}

/// Closes a bare client connection: close_notify, then read to the end.
pub async fn tls_close<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) {
    let _ = s.shutdown().await;
    drain(s).await;
}

/// One bare request/response of `len` bytes on a fresh connection (connect, handshake,
/// request, answer, close).
pub async fn tls_echo(addr: &str, pin: ServerId, len: usize) -> Result<()> {
    let mut s = tls_connect(addr, pin).await?;
    request(&mut s, OP_ECHO, len as u64).await?;
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf).await?;
    // Like `ferry::Client::close`: close_notify, without waiting for the server's.
    s.shutdown().await?;
    Ok(())
}

fn negotiated(s: &tokio_rustls::client::TlsStream<TcpStream>) -> String {
    let c = s.get_ref().1;
    let suite = c
        .negotiated_cipher_suite()
        .map_or("none".to_owned(), |s| format!("{:?}", s.suite()));
    let group = c
        .negotiated_key_exchange_group()
        .map_or("none".to_owned(), |g| format!("{:?}", g.name()));
    format!("{suite},{group}").replace(' ', "_")
}

/// Hash reported by a bare get that did not hash what it received.
pub const UNHASHED: &str = "unhashed";

/// A bare get: hashes what it receives inline (like-for-like with ferry's end-to-end check),
/// or with `unhashed` only counts it (the fastest a bare stream goes; checked by size only).
async fn tls_get(addr: String, pin: String, len: u64, unhashed: bool) -> Result<()> {
    let pin = ServerId::parse(&pin)?;
    let start = Instant::now();
    let mut s = tls_connect(&addr, pin).await?;
    let info = negotiated(&s);
    request(&mut s, OP_GET, len).await?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; BUF];
    let mut got = 0u64;
    while got < len {
        let want = (len - got).min(BUF as u64) as usize;
        let n = tokio::time::timeout(STEP, s.read(&mut buf[..want])).await??;
        if n == 0 {
            bail!("download cut after {got} bytes");
        }
        if !unhashed {
            h.update(&buf[..n]);
        }
        got += n as u64;
    }
    s.write_all(&[1]).await?;
    s.flush().await?;
    tls_close(&mut s).await;
    let secs = start.elapsed().as_secs_f64();
    if unhashed {
        println!("ok {got} {UNHASHED} {secs:.6} {} {info}", own_hwm_kib());
    } else {
        report(got, h.finalize().as_bytes(), secs, &info);
    }
    Ok(())
}

async fn tls_put(addr: String, pin: String, file: String) -> Result<()> {
    let pin = ServerId::parse(&pin)?;
    let mut f = std::fs::File::open(&file)?;
    let len = f.metadata()?.len();
    let start = Instant::now();
    let mut s = tls_connect(&addr, pin).await?;
    let info = negotiated(&s);
    request(&mut s, OP_PUT, len).await?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; BUF];
    let mut left = len;
    while left > 0 {
        let want = left.min(BUF as u64) as usize;
        f.read_exact(&mut buf[..want])?;
        h.update(&buf[..want]);
        tokio::time::timeout(STEP, s.write_all(&buf[..want])).await??;
        left -= want as u64;
    }
    s.flush().await?;
    let mut theirs = [0u8; 32];
    tokio::time::timeout(STEP, s.read_exact(&mut theirs)).await??;
    tls_close(&mut s).await;
    let ours = h.finalize();
    if &theirs != ours.as_bytes() {
        bail!("the server hashed different bytes");
    }
    report(len, ours.as_bytes(), start.elapsed().as_secs_f64(), &info);
    Ok(())
}
