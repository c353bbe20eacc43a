//! Malformed input and misbehaving peers: an error or a timeout, never a panic, and the
//! server keeps serving others.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{TestServer, panics};
use ferry::Client;
use ferry::wire::Wire;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn still_serves(srv: &TestServer) {
    let mut c = Client::connect(&srv.issue("probe", "writer"))
        .await
        .unwrap();
    c.put_bytes("probe", b"ok".to_vec()).await.unwrap();
    assert_eq!(c.get_bytes("probe").await.unwrap(), b"ok");
}

/// Reads until the peer closes; true if it closed within `limit`.
async fn closed_within(s: &mut (impl AsyncReadExt + Unpin), limit: Duration) -> bool {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_and_a_non_tls_client_are_dropped() {
    let srv = TestServer::start().await;
    let mut seed = blake3::Hasher::new().update(b"noise").finalize_xof();
    for len in [1usize, 5, 100, 5000, 70_000] {
        let mut noise = vec![0u8; len];
        seed.fill(&mut noise);
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        let _ = s.write_all(&noise).await;
        assert!(
            closed_within(&mut s, Duration::from_secs(5)).await,
            "len {len}"
        );
    }
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(5)).await);
    still_serves(&srv).await;
    srv.stop().await;
    assert_eq!(panics(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stalling_mid_handshake_times_out() {
    let srv = TestServer::start_with(|l| l.handshake_timeout = Duration::from_millis(800)).await;
    // A TCP connection that never says anything, and one that stops after 3 bytes of a
    // TLS record header.
    let mut silent = TcpStream::connect(srv.addr).await.unwrap();
    let mut partial = TcpStream::connect(srv.addr).await.unwrap();
    partial.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    // Meanwhile others are served.
    still_serves(&srv).await;
    assert!(closed_within(&mut silent, Duration::from_secs(5)).await);
    assert!(closed_within(&mut partial, Duration::from_secs(5)).await);

    // A client that completes TLS but never authenticates is dropped too.
    let cred = srv.issue("c", "writer");
    let mut tls = Client::connect_tls(&srv.addr.to_string(), cred.server_id)
        .await
        .unwrap();
    assert!(closed_within(&mut tls, Duration::from_secs(5)).await);
    still_serves(&srv).await;
    srv.stop().await;
    assert_eq!(panics(), 0);
}

async fn authenticated_raw(srv: &TestServer) -> Wire<tokio_rustls::client::TlsStream<TcpStream>> {
    common::raw_session(srv.addr, &srv.issue("raw", "writer")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_oversized_and_garbage_frames_inside_tls() {
    let srv = TestServer::start().await;
    let cases: [&[u8]; 6] = [
        // Oversized length prefix.
        &[0xff, 0xff, 0xff, 0xff, 0x01],
        &[0x00, 0x10, 0x00, 0x01, 0x02],
        // Zero length, unknown kind.
        &[0, 0, 0, 0, 1],
        &[0, 0, 0, 1, 9],
        // A message frame holding garbage CBOR.
        &[0, 0, 0, 4, 1, 0xff, 0xfe, 0xfd],
        // A frame announcing 100 bytes that delivers 10, then the client closes.
        &[0, 0, 0, 101, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
    ];
    for case in cases {
        let mut wire = authenticated_raw(&srv).await;
        wire.get_mut().write_all(case).await.unwrap();
        wire.get_mut().flush().await.unwrap();
        if case.len() == 15 {
            wire.get_mut().shutdown().await.unwrap();
        }
        assert!(
            closed_within(wire.get_mut(), Duration::from_secs(5)).await,
            "{case:?}"
        );
    }
    // A zero length is refused as soon as its four bytes are in: no fifth byte is needed.
    let mut wire = authenticated_raw(&srv).await;
    wire.get_mut().write_all(&[0, 0, 0, 0]).await.unwrap();
    wire.get_mut().flush().await.unwrap();
    assert!(
        closed_within(wire.get_mut(), Duration::from_secs(5)).await,
        "the server waited for a fifth byte"
    );
    // Before authentication, frames are capped at 16 KiB.
    let cred = srv.issue("pre", "writer");
    let mut tls = Client::connect_tls(&srv.addr.to_string(), cred.server_id)
        .await
        .unwrap();
    tls.write_all(&[0, 1, 0, 0, 1]).await.unwrap();
    tls.flush().await.unwrap();
    assert!(closed_within(&mut tls, Duration::from_secs(5)).await);
    still_serves(&srv).await;
    srv.stop().await;
    assert_eq!(panics(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferry_negotiates_the_post_quantum_hybrid_group() {
    let srv = TestServer::start().await;
    let cred = srv.issue("c", "writer");
    let tls = Client::connect_tls(&srv.addr.to_string(), cred.server_id)
        .await
        .unwrap();
    let conn = tls.get_ref().1;
    assert_eq!(
        conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(
        conn.negotiated_key_exchange_group().map(|g| g.name()),
        Some(rustls::NamedGroup::X25519MLKEM768)
    );
    assert_eq!(conn.alpn_protocol(), Some(&b"ferry/1"[..]));
    srv.stop().await;
}

fn openssl_available() -> bool {
    Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn s_client(addr: &str, version_flag: &str) -> (bool, String) {
    let out = Command::new("openssl")
        .args([
            "s_client",
            version_flag,
            "-connect",
            addr,
            "-servername",
            "ferry",
            "-alpn",
            "ferry/1",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standard_tls_client_completes_tls13_with_x25519_and_tls12_is_refused() {
    if !openssl_available() {
        // .ci/run installs openssl; a developer machine without it skips, saying so.
        eprintln!("SKIPPED: openssl is not installed");
        return;
    }
    let srv = TestServer::start().await;
    let addr = srv.addr.to_string();
    let a = addr.clone();
    let (ok, text) = tokio::task::spawn_blocking(move || s_client(&a, "-tls1_3"))
        .await
        .unwrap();
    assert!(ok, "{text}");
    assert!(text.contains("TLSv1.3"), "{text}");
    assert!(text.contains("Server Temp Key: X25519"), "{text}");
    let (ok, text) = tokio::task::spawn_blocking(move || s_client(&addr, "-tls1_2"))
        .await
        .unwrap();
    assert!(!ok, "TLS 1.2 was accepted:\n{text}");
    still_serves(&srv).await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_a_download_is_dropped() {
    let srv = TestServer::start_with(|l| l.transfer_timeout = Duration::from_millis(500)).await;
    let cred = srv.issue("slow", "writer");
    let mut c = Client::connect(&cred).await.unwrap();
    c.put(
        "big",
        common::Pattern::new("slow", 64 << 20),
        Some(64 << 20),
        &mut |_| {},
    )
    .await
    .unwrap();
    // Ask for 64 MiB, read only the answer header, then stop reading.
    let mut wire = authenticated_raw(&srv).await;
    wire.send(&ferry::proto::message::Message::Get(
        ferry::proto::message::Get {
            source: "big".into(),
            version: None,
            offset: 0,
            len: None,
        },
    ))
    .await
    .unwrap();
    assert!(matches!(
        wire.recv_message().await.unwrap(),
        ferry::proto::message::Message::GetOk(_)
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The server gave up writing: draining now reaches the end well before 64 MiB.
    let mut drained = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match wire.get_mut().read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n as u64,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server kept the stalled download open");
    assert!(
        drained < 64 << 20,
        "the server sent everything ({drained} bytes)"
    );
    still_serves(&srv).await;
    srv.stop().await;
    assert_eq!(panics(), 0);
}

/// Opens `n` TCP connections to `addr` from the loopback address `from` that never send a
/// byte.
async fn idle_sockets(addr: std::net::SocketAddr, from: [u8; 4], n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind((std::net::Ipv4Addr::from(from), 0).into()).unwrap();
        out.push(s.connect(addr).await.unwrap());
    }
    out
}

/// How many of `socks` the server has closed (their end of stream is waiting to be read).
fn closed_by_server(socks: &[TcpStream]) -> usize {
    let mut buf = [0u8; 16];
    socks
        .iter()
        .filter(|s| match s.try_read(&mut buf) {
            Ok(0) => true,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
            Ok(_) => false,
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_from_one_address_do_not_starve_an_honest_client() {
    // As in the review: a small connection budget, and 400 sockets from one address that
    // never send a ClientHello (from 127.0.0.2; the honest client comes from 127.0.0.1).
    let srv = TestServer::start_with(|l| {
        l.max_connections = 64;
        l.max_pending = 128;
        l.max_pending_per_address = 32;
        l.hello_timeout = Duration::from_secs(2);
    })
    .await;
    let cred = srv.issue("honest", "writer");
    let idle = idle_sockets(srv.addr, [127, 0, 0, 2], 400).await;
    // Let the server accept what it will.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(5), async {
        let mut c = Client::connect(&cred).await?;
        c.put_bytes("still-here", b"yes".to_vec()).await?;
        c.stat("still-here").await
    })
    .await;
    let took = started.elapsed();
    assert!(
        matches!(answer, Ok(Ok(ref e)) if e.size == 3),
        "the honest client got no answer within 5 s ({took:?}): {answer:?}"
    );
    // The address's surplus was closed at once, and the rest at the hello deadline.
    assert!(
        common::eventually(Duration::from_secs(5), || closed_by_server(&idle)
            >= 400 - 32)
        .await,
        "only {} closed",
        closed_by_server(&idle)
    );
    assert!(
        common::eventually(Duration::from_secs(10), || closed_by_server(&idle) == 400).await,
        "{} of 400 idle sockets still open after the hello deadline",
        400 - closed_by_server(&idle)
    );
    still_serves(&srv).await;
    srv.stop().await;
    assert_eq!(panics(), 0);
}

/// A TLS handshake with the server by a plain rustls client offering `alpn`: the rustls
/// error, if it failed.
async fn handshake_offering(srv: &TestServer, alpn: &[&[u8]]) -> Result<(), rustls::Error> {
    let cred = srv.issue("alpn", "writer");
    let mut cfg = ferry::tls::client_config(cred.server_id).unwrap();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(srv.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("ferry.invalid").unwrap();
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg)).connect(name, tcp),
    )
    .await
    .expect("the handshake ends");
    match r {
        Ok(_) => Ok(()),
        Err(e) => Err(e
            .get_ref()
            .and_then(|i| i.downcast_ref::<rustls::Error>())
            .cloned()
            .unwrap_or_else(|| panic!("not a TLS error: {e}"))),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_not_offering_alpn_ferry_is_refused_by_the_server() {
    let srv = TestServer::start().await;
    // The refusal is the server's: the client receives its no_application_protocol alert.
    let refused = Err(rustls::Error::AlertReceived(
        rustls::AlertDescription::NoApplicationProtocol,
    ));
    assert_eq!(handshake_offering(&srv, &[]).await, refused, "no ALPN");
    assert_eq!(handshake_offering(&srv, &[b"h2"]).await, refused, "h2");
    // Offering ferry/1 among others is served.
    assert_eq!(handshake_offering(&srv, &[b"h2", b"ferry/1"]).await, Ok(()));
    still_serves(&srv).await;
    srv.stop().await;
    assert_eq!(panics(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticated_connections_have_their_own_budget() {
    let srv = TestServer::start_with(|l| {
        l.max_connections = 1;
        l.max_pending = 4;
    })
    .await;
    let cred = srv.issue("busy", "writer");
    // Unauthenticated sockets do not take the one authenticated slot...
    let idle = idle_sockets(srv.addr, [127, 0, 0, 3], 3).await;
    let mut first = Client::connect(&cred).await.unwrap();
    first.put_bytes("a", b"1".to_vec()).await.unwrap();
    // ...and a second authenticated connection is told the server is busy within a
    // second, not left waiting.
    let second = tokio::time::timeout(Duration::from_secs(1), async {
        let mut c = Client::connect(&cred).await?;
        c.stat("a").await
    })
    .await
    .expect("an answer, not a wait");
    assert!(
        matches!(&second, Err(ferry::Error::Busy(message)) if message.contains("as many connections")),
        "{second:?}"
    );
    drop(first);
    drop(idle);
    // The slot is free again once the server has seen the first connection end.
    let mut served = false;
    for _ in 0..50 {
        if let Ok(mut c) = Client::connect(&cred).await
            && c.stat("a").await.is_ok()
        {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "the slot was never given back");
    srv.stop().await;
    assert_eq!(panics(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_waiting_between_requests_is_told_the_server_is_shutting_down() {
    let srv = TestServer::start().await;
    let cred = srv.issue("idle", "writer");
    let mut c = Client::connect(&cred).await.unwrap();
    c.put_bytes("a", b"1".to_vec()).await.unwrap();
    srv.stop().await;
    let r = c.stat("a").await;
    assert!(matches!(r, Err(ferry::Error::ShuttingDown)), "{r:?}");
    assert_eq!(
        r.unwrap_err().to_string(),
        "the server is shutting down; try again shortly"
    );
    assert_eq!(panics(), 0);
}
