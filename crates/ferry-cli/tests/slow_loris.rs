//! 500 slow-loris connections (a TLS record trickled a byte at a time) and 500 half-open
//! TLS handshakes (a real ClientHello, then silence), from 40 loopback addresses, against a
//! real `ferry serve` with its default ferry.toml: an honest client's 1 MiB get still
//! completes promptly, the server's resident memory stays under the bound stated in
//! docs/BENCHMARKS.md ("Memory under connection floods"), and a second flood reuses the
//! memory of the first rather than adding to it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Setup;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Resident memory of `pid` in KiB (`VmRSS`).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A connection from `127.0.0.N` (`n`): the server counts addresses apart.
async fn connect_from(n: u8, addr: std::net::SocketAddr) -> TcpStream {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind((std::net::Ipv4Addr::new(127, 0, 0, n), 0).into())
        .unwrap();
    s.connect(addr).await.unwrap()
}

/// The bound on the server's resident memory during the flood (see docs/BENCHMARKS.md).
const PEAK_BOUND_KIB: u64 = 128 * 1024;

/// One flood against the server of `s`: 500 slow-loris sockets and 500 half-open
/// handshakes, an honest 1 MiB get in the middle of it (checked), then the attackers leave.
/// Returns the server's peak resident memory (KiB) and how long the honest get took.
async fn flood(s: &Setup, want: blake3::Hash) -> (u64, Duration) {
    let pid = s.server.pid();
    let addr: std::net::SocketAddr = s.server.addr.parse().unwrap();
    // 500 slow-loris sockets: 20 addresses × 25 (under max_pending_per_address = 32), each
    // sending a TLS record header and then one byte every 250 ms.
    let mut loris = Vec::new();
    for n in 10..30u8 {
        for _ in 0..25 {
            loris.push(connect_from(n, addr).await);
        }
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let trickle = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut sent = 0usize;
            // Bounded: at most 40 rounds of 250 ms.
            for round in 0..40 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let byte: &[u8] = if round == 0 {
                    &[0x16, 0x03, 0x01, 0x02, 0x00]
                } else {
                    &[0x01]
                };
                for sock in &mut loris {
                    if sock.write_all(byte).await.is_ok() {
                        sent += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            sent
        })
    };

    // 500 half-open handshakes: a real ClientHello offering ferry/1, then nothing.
    let cred =
        ferry::proto::credential::Credential::parse(&std::fs::read_to_string(&s.reader).unwrap())
            .unwrap();
    let config = Arc::new(ferry::tls::client_config(cred.server_id).unwrap());
    let mut half_open = Vec::new();
    for n in 30..50u8 {
        for _ in 0..25 {
            let name = rustls::pki_types::ServerName::try_from("ferry.invalid").unwrap();
            let mut tls = rustls::ClientConnection::new(config.clone(), name).unwrap();
            let mut hello = Vec::new();
            tls.write_tls(&mut hello).unwrap();
            let mut sock = connect_from(n, addr).await;
            sock.write_all(&hello).await.unwrap();
            half_open.push(sock);
        }
    }

    // The honest client, from 127.0.0.1, with all of that going on.
    let mut peak = rss_kib(pid);
    let started = Instant::now();
    let out = s.with(&s.reader, &["get", "m"]);
    let took = started.elapsed();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(blake3::hash(&out.stdout), want);
    for _ in 0..20 {
        peak = peak.max(rss_kib(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = trickle.await.unwrap();
    assert!(sent >= 1000, "the slow-loris sockets sent nothing");
    drop(half_open);
    (peak, took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_and_half_open_handshakes_do_not_stop_an_honest_get() {
    let s = Setup::new();
    let file = s.env.join("one-mib");
    let want = common::write_pattern(&file, "loris", 1 << 20);
    s.with(&s.writer, &["put", "m", file.to_str().unwrap()])
        .ok();
    let before = rss_kib(s.server.pid());
    let (first, took1) = flood(&s, want).await;
    // Memory the first flood took is used again by the second, not added to: no leak per
    // connection.
    let (second, took2) = flood(&s, want).await;
    eprintln!(
        "server RSS: {before} KiB before, peak {first} KiB in a flood of 500 slow-loris + 500 \
         half-open handshakes, {second} KiB in a second one; honest 1 MiB get in {took1:?} \
         and {took2:?}"
    );
    for (peak, took) in [(first, took1), (second, took2)] {
        assert!(
            peak < PEAK_BOUND_KIB,
            "peak RSS {peak} KiB over {PEAK_BOUND_KIB} KiB"
        );
        // A liveness bound, far above the milliseconds it takes, not a speed test.
        assert!(
            took < Duration::from_secs(10),
            "the honest get took {took:?}"
        );
    }
    assert!(
        second < first + first / 4,
        "the second flood took more memory ({second} KiB) than the first ({first} KiB)"
    );
    // Still serving.
    s.with(&s.reader, &["stat", "m"]).ok();
}
