//! A real server with its HTTP front on loopback ports, in a temp dir, and a raw HTTP/1.1
//! exchange for requests a well-behaved client would never send.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry::proto::credential::Credential;
use ferry::{HttpClient, HttpStats, Server, ServerDir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

pub struct HttpServer {
    pub dir: tempfile::TempDir,
    pub server_dir: ServerDir,
    pub addr: SocketAddr,
    pub http: SocketAddr,
    /// Whether the HTTP front serves HTTPS.
    pub https: bool,
    pub stats: Arc<HttpStats>,
    /// The server's counters (both fronts).
    pub metrics: ferry::metrics::Metrics,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl HttpServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(limits: impl FnOnce(&mut ferry::Limits)) -> Self {
        Self::start_full(|t| t, limits).await
    }

    /// Starts a server whose ferry.toml is `edit(default text)`, password records with small
    /// Argon2id parameters (to keep tests quick).
    pub async fn start_with_config(edit: impl FnOnce(String) -> String) -> Self {
        Self::start_full(edit, |_| {}).await
    }

    pub async fn start_full(
        edit: impl FnOnce(String) -> String,
        limits: impl FnOnce(&mut ferry::Limits),
    ) -> Self {
        Self::boot(edit, limits, false).await
    }

    /// A server whose HTTP front serves HTTPS with its own identity (`--http-tls`).
    pub async fn start_https() -> Self {
        Self::boot(|t| t, |_| {}, true).await
    }

    async fn boot(
        edit: impl FnOnce(String) -> String,
        limits: impl FnOnce(&mut ferry::Limits),
        https: bool,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let server_dir = ServerDir::new(dir.path().join("srv"));
        server_dir.init().unwrap();
        let cfg = server_dir.path().join("ferry.toml");
        let text = std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("m_kib = 65536\nt = 3", "m_kib = 1024\nt = 1");
        std::fs::write(&cfg, edit(text)).unwrap();
        let mut bound = Server::open(&server_dir)
            .unwrap()
            .with_limits(limits)
            .bind("127.0.0.1:0")
            .await
            .unwrap();
        let http = if https {
            bound.bind_https("127.0.0.1:0").await.unwrap()
        } else {
            bound.bind_http("127.0.0.1:0").await.unwrap()
        };
        assert_eq!(bound.http_addr(), Some(http));
        let stats = bound.http_stats();
        let metrics = bound.metrics();
        let addr = bound.local_addr();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            bound
                .run(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        Self {
            dir,
            server_dir,
            addr,
            http,
            https,
            stats,
            metrics,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.http)
    }

    pub fn issue(&self, name: &str, role: &str) -> Credential {
        let attrs = BTreeMap::from([("role".to_owned(), role.to_owned())]);
        self.server_dir
            .issue_client(name, attrs, Some(&self.addr.to_string()), 0)
            .unwrap()
    }

    /// Invites `name` with `role` and registers `password` for it (over TLS).
    pub async fn enrol(&self, name: &str, role: &str, password: &[u8]) {
        let attrs = BTreeMap::from([("role".to_owned(), role.to_owned())]);
        let invite = self
            .server_dir
            .invite_user(
                name,
                attrs,
                Some(&self.addr.to_string()),
                3600,
                ferry::clock::now(),
            )
            .unwrap();
        ferry::Client::register(&invite, password).await.unwrap();
    }

    pub fn client(&self, cred: &Credential) -> HttpClient {
        HttpClient::new(&self.url(), cred).unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), t)
                .await
                .expect("server shuts down")
                .unwrap();
        }
    }
}

/// A raw response: status, headers (lower-case names), body.
pub struct Raw {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Raw {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `request` (a whole HTTP/1.1 request, `Connection: close`) and reads the response
/// to the end of the connection.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> Raw {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut got))
        .await
        .expect("response in time")
        .unwrap();
    parse(&got)
}

fn parse(got: &[u8]) -> Raw {
    let end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = std::str::from_utf8(&got[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    let mut body = got[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let len = usize::from_str_radix(std::str::from_utf8(&rest[..nl]).unwrap().trim(), 16)
                .unwrap();
            rest = &rest[nl + 2..];
            if len == 0 {
                break;
            }
            out.extend_from_slice(&rest[..len]);
            rest = &rest[len + 2..];
        }
        body = out;
    }
    Raw {
        status,
        headers,
        body,
    }
}

/// A signed request, as bytes, with the parts a test may alter after signing.
#[derive(Clone)]
pub struct Signed {
    pub method: String,
    pub target: String,
    pub authorization: String,
    pub body_hash: String,
    pub range: Option<String>,
    pub body: Vec<u8>,
}

impl Signed {
    /// Signs `method target` with `body` (its SHA-256) as `signer`, at `timestamp`.
    pub fn new(
        signer: &ferry::proto::http::RequestSigner,
        method: &str,
        target: &str,
        range: Option<&str>,
        body: &[u8],
        timestamp: u64,
    ) -> Self {
        use ferry::proto::http::{BodyHash, Nonce, RequestParts};
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let hash = BodyHash::of(body);
        let parts = RequestParts::new(method, path, query, hash).range(range.unwrap_or(""));
        let signed = signer
            .sign(&parts, timestamp, Nonce::generate(&mut rand_core::OsRng))
            .unwrap();
        Self {
            method: method.into(),
            target: target.into(),
            authorization: signed.authorization().into(),
            body_hash: hash.to_header(),
            range: range.map(str::to_owned),
            body: body.to_vec(),
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "{} {} HTTP/1.1\r\nhost: x\r\nconnection: close\r\nauthorization: {}\r\n\
             x-ferry-content-sha256: {}\r\ncontent-length: {}\r\n",
            self.method,
            self.target,
            self.authorization,
            self.body_hash,
            self.body.len()
        );
        if let Some(r) = &self.range {
            out.push_str(&format!("range: {r}\r\n"));
        }
        out.push_str("\r\n");
        let mut out = out.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

pub fn signer(cred: &Credential) -> ferry::proto::http::RequestSigner {
    ferry::proto::http::RequestSigner::new(cred.claims.clone(), cred.key.clone())
}

/// An `AsyncRead` of `len` pattern bytes (BLAKE3 XOF of `seed`), generated as read.
pub struct PatternReader {
    reader: blake3::OutputReader,
    left: u64,
}

impl PatternReader {
    pub fn new(seed: &str, len: u64) -> Self {
        Self {
            reader: blake3::Hasher::new().update(seed.as_bytes()).finalize_xof(),
            left: len,
        }
    }

    pub fn hash(seed: &str, len: u64) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        let mut r = blake3::Hasher::new().update(seed.as_bytes()).finalize_xof();
        let mut buf = vec![0u8; 1 << 16];
        let mut left = len;
        while left > 0 {
            let n = (buf.len() as u64).min(left) as usize;
            r.fill(&mut buf[..n]);
            h.update(&buf[..n]);
            left -= n as u64;
        }
        *h.finalize().as_bytes()
    }
}

impl tokio::io::AsyncRead for PatternReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let n = (buf.remaining() as u64).min(self.left) as usize;
        let dst = buf.initialize_unfilled_to(n);
        self.reader.fill(dst);
        buf.advance(n);
        self.left -= n as u64;
        std::task::Poll::Ready(Ok(()))
    }
}

/// An `AsyncWrite` that hashes what it gets, counts it, and fails once `fail_after` bytes
/// went through (if set).
pub struct HashSink {
    pub hasher: blake3::Hasher,
    pub len: u64,
    pub fail_after: Option<u64>,
}

impl HashSink {
    pub fn new(fail_after: Option<u64>) -> Self {
        Self {
            hasher: blake3::Hasher::new(),
            len: 0,
            fail_after,
        }
    }
}

impl tokio::io::AsyncWrite for HashSink {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let mut n = buf.len();
        if let Some(limit) = self.fail_after {
            if self.len >= limit {
                return std::task::Poll::Ready(Err(std::io::Error::other("cut by the test")));
            }
            n = n.min((limit - self.len) as usize);
        }
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        std::task::Poll::Ready(Ok(n))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// Peak resident memory of this process (VmHWM), in bytes.
pub fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// One relayed connection: the bytes the client sent, the bytes the server answered.
pub type Seen = Arc<Mutex<Vec<(Vec<u8>, Vec<u8>)>>>;

/// A relay to `upstream` that records every connection whole, as a proxy sees it.
pub async fn capturing_relay(upstream: SocketAddr) -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            // The connection's entry, in accept order; bytes are recorded before they are
            // passed on, so whatever a client has received is already in the log.
            let idx = {
                let mut log = log.lock().unwrap();
                log.push((Vec::new(), Vec::new()));
                log.len() - 1
            };
            let log = log.clone();
            tokio::spawn(async move {
                let server = TcpStream::connect(upstream).await.unwrap();
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up_log = log.clone();
                let up = async move {
                    let mut buf = vec![0u8; 1 << 16];
                    while let Ok(n @ 1..) = cr.read(&mut buf).await {
                        up_log.lock().unwrap()[idx].0.extend_from_slice(&buf[..n]);
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = sw.shutdown().await;
                };
                let down = async move {
                    let mut buf = vec![0u8; 1 << 16];
                    while let Ok(n @ 1..) = sr.read(&mut buf).await {
                        log.lock().unwrap()[idx].1.extend_from_slice(&buf[..n]);
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = cw.shutdown().await;
                };
                tokio::join!(up, down);
            });
        }
    });
    (addr, seen)
}
