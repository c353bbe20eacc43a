//! Shared test fixtures: a real server on a loopback port, in a temp dir.
#![allow(dead_code)]

pub mod proxy;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ferry::proto::credential::Credential;
use ferry::{Server, ServerDir};
use tokio::sync::oneshot;

static PANICS: AtomicUsize = AtomicUsize::new(0);
static HOOK: Once = Once::new();

/// Counts every panic in this test process, including in server tasks that tokio would
/// otherwise swallow.
pub fn install_panic_counter() {
    HOOK.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            prev(info);
        }));
    });
}

pub fn panics() -> usize {
    PANICS.load(Ordering::SeqCst)
}

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub server_dir: ServerDir,
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(limits: impl FnOnce(&mut ferry::Limits)) -> Self {
        Self::start_full(|t| t, limits).await
    }

    /// Starts a server whose ferry.toml is `edit(default text)`. Password records use small
    /// Argon2id parameters unless `edit` says otherwise, to keep tests quick.
    pub async fn start_with_config(edit: impl FnOnce(String) -> String) -> Self {
        Self::start_full(edit, |_| {}).await
    }

    pub async fn start_full(
        edit: impl FnOnce(String) -> String,
        limits: impl FnOnce(&mut ferry::Limits),
    ) -> Self {
        install_panic_counter();
        let dir = tempfile::tempdir().unwrap();
        let server_dir = ServerDir::new(dir.path().join("srv"));
        server_dir.init().unwrap();
        let cfg = server_dir.path().join("ferry.toml");
        let text = std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("m_kib = 65536\nt = 3", "m_kib = 1024\nt = 1");
        std::fs::write(&cfg, edit(text)).unwrap();
        let bound = Server::open(&server_dir)
            .unwrap()
            .with_limits(limits)
            .bind("127.0.0.1:0")
            .await
            .unwrap();
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
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Stops this server and starts another on the same folder, with ferry.toml edited.
    pub async fn restart(mut self, edit: impl FnOnce(String) -> String) -> Self {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .unwrap()
                .unwrap();
        }
        let cfg = self.server_dir.path().join("ferry.toml");
        let text = std::fs::read_to_string(&cfg).unwrap();
        std::fs::write(&cfg, edit(text)).unwrap();
        let bound = Server::open(&self.server_dir)
            .unwrap()
            .bind("127.0.0.1:0")
            .await
            .unwrap();
        self.addr = bound.local_addr();
        let (tx, rx) = oneshot::channel::<()>();
        self.task = Some(tokio::spawn(async move {
            bound
                .run(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        }));
        self.stop = Some(tx);
        self
    }

    /// An invite for `name` with `role`, valid for `secs`.
    pub fn invite(&self, name: &str, role: &str, secs: u64) -> Credential {
        let attrs = BTreeMap::from([("role".to_owned(), role.to_owned())]);
        self.server_dir
            .invite_user(
                name,
                attrs,
                Some(&self.addr.to_string()),
                secs,
                ferry::clock::now(),
            )
            .unwrap()
    }

    pub fn issue(&self, name: &str, role: &str) -> Credential {
        let attrs = BTreeMap::from([("role".to_owned(), role.to_owned())]);
        self.server_dir
            .issue_client(name, attrs, Some(&self.addr.to_string()), 0)
            .unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("server shuts down")
                .unwrap();
        }
    }
}

/// Deterministic pseudo-random bytes (BLAKE3 in XOF mode), `len` of them.
pub struct Pattern {
    reader: blake3::OutputReader,
    left: u64,
}

impl Pattern {
    pub fn new(seed: &str, len: u64) -> Self {
        Self {
            reader: blake3::Hasher::new().update(seed.as_bytes()).finalize_xof(),
            left: len,
        }
    }

    /// BLAKE3 of the whole pattern.
    pub fn hash(seed: &str, len: u64) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        std::io::copy(&mut Pattern::new(seed, len), &mut h).unwrap();
        *h.finalize().as_bytes()
    }
}

impl std::io::Read for Pattern {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        self.reader.fill(&mut buf[..n]);
        self.left -= n as u64;
        Ok(n)
    }
}

/// Waits until `f` is true, at most `limit`.
pub async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = tokio::time::Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

/// A connection authenticated by hand, as a raw framed wire, so a test can misbehave after
/// authentication.
pub async fn raw_session(
    addr: SocketAddr,
    cred: &Credential,
) -> ferry::wire::Wire<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tls = ferry::Client::connect_tls(&addr.to_string(), cred.server_id)
        .await
        .unwrap();
    let exporter = ferry::tls::export(tls.get_ref().1).unwrap();
    let mut wire = ferry::wire::Wire::new(tls);
    let (hello, wait) =
        ferry::proto::psk::PskClient::new(cred.claims.clone(), cred.key.clone()).start(&exporter);
    wire.send(&hello).await.unwrap();
    wait.finish(wire.recv_message().await.unwrap()).unwrap();
    wire
}

/// A man in the middle that terminates TLS on both sides and relays every byte between them.
/// It holds both connections in clear, so it also reads the frames the upstream server sends:
/// `server_said` lists the type of every message the server sent back (`auth_failed`,
/// `auth_ok`, ...), which is the server's decision on the relayed proof.
pub struct Mitm {
    pub addr: String,
    pub identity_id: ferry::proto::server_id::ServerId,
    pub relayed: Arc<AtomicUsize>,
    pub server_said: Arc<std::sync::Mutex<Vec<&'static str>>>,
}

impl Mitm {
    /// The types of the messages the upstream server has sent so far, in order.
    pub fn server_messages(&self) -> Vec<&'static str> {
        self.server_said.lock().unwrap().clone()
    }

    /// Waits (at most 5 s) until the upstream server has sent a message of type `name`.
    pub async fn server_sent(&self, name: &str) -> bool {
        eventually(Duration::from_secs(5), || {
            self.server_said.lock().unwrap().contains(&name)
        })
        .await
    }

    /// Asserts the server's decision on a relayed proof: it answered `auth_failed` and never
    /// sent any of `accepts` (its messages of success).
    pub async fn assert_server_refused(&self, accepts: &[&str]) {
        assert!(
            self.server_sent("auth_failed").await,
            "the server never answered auth_failed through the relay: {:?}",
            self.server_messages()
        );
        let said = self.server_messages();
        for a in accepts {
            assert!(!said.contains(a), "the server accepted the relay: {said:?}");
        }
    }
}

pub async fn start_mitm(upstream: String, upstream_id: ferry::proto::server_id::ServerId) -> Mitm {
    let identity = ferry::identity::Identity::generate().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(identity.server_config().unwrap()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let relayed = Arc::new(AtomicUsize::new(0));
    let server_said = Arc::new(std::sync::Mutex::new(Vec::new()));
    let count = relayed.clone();
    let said = server_said.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let upstream = upstream.clone();
            let count = count.clone();
            let said = said.clone();
            tokio::spawn(async move {
                let Ok(down) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(up) = ferry::Client::connect_tls(&upstream, upstream_id).await else {
                    return;
                };
                let (dr, dw) = tokio::io::split(down);
                let (ur, uw) = tokio::io::split(up);
                tokio::join!(
                    relay(dr, uw, count.clone(), None),
                    relay(ur, dw, count, Some(said))
                );
            });
        }
    });
    Mitm {
        addr,
        identity_id: identity.server_id(),
        relayed,
        server_said,
    }
}

/// Copies bytes one way, counting them as they pass. With `said`, also splits the stream into
/// frames (ferry-proto's decoders) and records the type of every message frame.
async fn relay(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    count: Arc<AtomicUsize>,
    said: Option<Arc<std::sync::Mutex<Vec<&'static str>>>>,
) {
    use ferry::proto::frame::{self, Kind};
    use ferry::proto::message::Message;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0; 16 * 1024];
    let mut frames: Vec<u8> = Vec::new();
    while let Ok(n) = from.read(&mut buf).await {
        if let Some(said) = &said {
            frames.extend_from_slice(&buf[..n]);
            while let Ok(Some((kind, body, used))) = frame::decode(&frames) {
                if kind == Kind::Message {
                    let name = Message::decode(body).map_or("undecodable", |m| m.type_name());
                    said.lock().unwrap().push(name);
                }
                frames.drain(..used);
            }
        }
        if n == 0 || to.write_all(&buf[..n]).await.is_err() || to.flush().await.is_err() {
            break;
        }
        count.fetch_add(n, Ordering::SeqCst);
    }
    let _ = to.shutdown().await;
}
