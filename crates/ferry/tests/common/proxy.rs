//! A TCP proxy in front of a test server that counts the bytes going each way, can close a
//! connection once a number of bytes has passed in one direction (`cut_after`, read when a
//! connection is accepted), and can hold the client's next request after a reply while the
//! test changes something (the [`Gate`]). It sees only TLS records: it never terminates TLS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// Which direction `cut_after` counts.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Bytes from the server (a download).
    Down,
    /// Bytes from the client (an upload).
    Up,
}

pub struct Proxy {
    pub addr: SocketAddr,
    pub from_server: Arc<AtomicU64>,
    pub from_client: Arc<AtomicU64>,
    /// Non-zero: each new connection is closed once this many bytes went the `Cut` way.
    pub cut_after: Arc<AtomicU64>,
    pub gate: Arc<Gate>,
}

/// Holds a client's request between the reply before it and the server: once armed, the
/// first bytes the server sends (the reply to the request in flight) set `replied`, and the
/// next bytes the client sends (its next request, which it only sends after reading that
/// reply) wait until the test calls `release`. No timing is involved: the order of the
/// client's messages decides.
#[derive(Default)]
pub struct Gate {
    armed: AtomicBool,
    replied: AtomicBool,
    /// Notified when a request is being held.
    holding: Notify,
    /// Notified by the test to let the held request through.
    pub release: Notify,
}

impl Gate {
    /// Arms the gate; call when the client is idle, just before its next request.
    pub fn arm(&self) {
        self.replied.store(false, Ordering::SeqCst);
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Waits (at most 20 s) until a request is held.
    pub async fn held(&self) {
        tokio::time::timeout(Duration::from_secs(20), self.holding.notified())
            .await
            .expect("the client's request after the reply was not held");
    }
}

/// Copies `from` to `to` (`way` says which way), counting into `count`; stops after `limit`
/// bytes if non-zero. Each read consults the gate before its bytes are passed on.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    count: &AtomicU64,
    limit: u64,
    gate: &Gate,
    way: Cut,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut passed = 0u64;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        match way {
            // The client's next request after the reply waits for the test.
            Cut::Up => {
                if gate.armed.load(Ordering::SeqCst) && gate.replied.load(Ordering::SeqCst) {
                    gate.armed.store(false, Ordering::SeqCst);
                    gate.holding.notify_one();
                    gate.release.notified().await;
                }
            }
            // Marked before the client can see the reply, so before it can answer it.
            Cut::Down => {
                if gate.armed.load(Ordering::SeqCst) {
                    gate.replied.store(true, Ordering::SeqCst);
                }
            }
        }
        let n = if limit > 0 {
            (n as u64).min(limit - passed) as usize
        } else {
            n
        };
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        passed += n as u64;
        count.fetch_add(n as u64, Ordering::SeqCst);
        if limit > 0 && passed >= limit {
            return;
        }
    }
}

pub async fn start_proxy(upstream: SocketAddr, cut: Cut) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = Proxy {
        addr: listener.local_addr().unwrap(),
        from_server: Arc::default(),
        from_client: Arc::default(),
        cut_after: Arc::default(),
        gate: Arc::default(),
    };
    let (down_count, up_count) = (proxy.from_server.clone(), proxy.from_client.clone());
    let (cut_after, gate) = (proxy.cut_after.clone(), proxy.gate.clone());
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(upstream).await else {
                continue;
            };
            let limit = cut_after.load(Ordering::SeqCst);
            let (down_limit, up_limit) = match cut {
                Cut::Down => (limit, 0),
                Cut::Up => (0, limit),
            };
            let (down_count, up_count, gate) = (down_count.clone(), up_count.clone(), gate.clone());
            tokio::spawn(async move {
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let up = pump(cr, sw, &up_count, up_limit, &gate, Cut::Up);
                let down = pump(sr, cw, &down_count, down_limit, &gate, Cut::Down);
                // Whichever direction ends first closes both.
                tokio::select! {
                    () = up => {}
                    () = down => {}
                }
            });
        }
    });
    proxy
}
