//! A soak: 8 clients at once against a real `ferry serve`, each looping over puts (up to
//! 512 KiB), gets (checked against what it put), listings and deletes on its own sources,
//! for `FERRY_SOAK_SECS` (default 120 s under CI, 20 s otherwise). It must end with zero
//! errors, every source exactly as its client left it, and the server's memory flat: its
//! resident size at the end no more than 25 % above what it was after the first quarter of
//! the run (warmed up).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::Setup;
use ferry::Client;
use ferry::proto::credential::Credential;

const CLIENTS: usize = 8;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// One client's loop until `until`; returns what it believes the server holds and the
/// number of operations it did. Any error fails the test.
async fn worker(
    cred: Credential,
    id: usize,
    until: Instant,
) -> (BTreeMap<String, blake3::Hash>, u64) {
    let mut held: BTreeMap<String, blake3::Hash> = BTreeMap::new();
    let mut x = (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let mut ops = 0u64;
    let mut client = Client::connect(&cred).await.unwrap();
    while Instant::now() < until {
        // Now and then a new connection, as one-shot commands make.
        if next(20) == 0 {
            client = Client::connect(&cred).await.unwrap();
        }
        let source = format!("w{id}/{}", next(16));
        match next(10) {
            0..=3 => {
                let len = match next(3) {
                    0 => next(100) as usize,
                    1 => next(16 << 10) as usize,
                    _ => next(512 << 10) as usize,
                };
                let fill = next(256) as u8;
                let data: Vec<u8> = (0..len).map(|i| fill ^ (i as u8)).collect();
                let e = client.put_bytes(&source, data.clone()).await.unwrap();
                assert_eq!(e.size, len as u64);
                held.insert(source, blake3::hash(&data));
            }
            4..=6 => match held.get(&source) {
                Some(want) => {
                    let got = client.get_bytes(&source).await.unwrap();
                    assert_eq!(blake3::hash(&got), *want, "{source} read back wrong");
                }
                None => assert!(matches!(
                    client.stat(&source).await,
                    Err(ferry::Error::NotFound(_))
                )),
            },
            7 | 8 => {
                let listed = client.list(&format!("w{id}/")).await.unwrap();
                assert_eq!(listed.len(), held.len(), "w{id}/ lists another set");
            }
            _ => {
                if held.remove(&source).is_some() {
                    client.delete(&source).await.unwrap();
                }
            }
        }
        ops += 1;
    }
    (held, ops)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_clients_mixed_operations_no_errors_no_loss_flat_memory() {
    // A few minutes in CI, 20 s in a developer's `cargo test`, as long as asked by flag.
    let default = if std::env::var_os("CI").is_some() {
        120
    } else {
        20
    };
    let secs: u64 = std::env::var("FERRY_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    let s = Setup::new();
    let pid = s.server.pid();
    let cred = Credential::parse(&std::fs::read_to_string(&s.writer).unwrap()).unwrap();
    let start = Instant::now();
    let until = start + Duration::from_secs(secs);
    let workers: Vec<_> = (0..CLIENTS)
        .map(|id| tokio::spawn(worker(cred.clone(), id, until)))
        .collect();
    tokio::time::sleep(Duration::from_secs(secs) / 4).await;
    let warmed = rss_kib(pid);
    let mut peak = warmed;
    while Instant::now() < until {
        peak = peak.max(rss_kib(pid));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut total = 0;
    let mut model = BTreeMap::new();
    for w in workers {
        let (held, ops) = tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .expect("a client is stuck")
            .expect("a client failed");
        total += ops;
        model.extend(held);
    }
    let end = rss_kib(pid);
    // Everything as the clients left it.
    let mut c = Client::connect(&cred).await.unwrap();
    let listed: BTreeMap<String, [u8; 32]> = c
        .list("w")
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.source, e.hash))
        .collect();
    assert_eq!(
        listed.keys().collect::<Vec<_>>(),
        model.keys().collect::<Vec<_>>()
    );
    for (source, want) in &model {
        assert_eq!(listed[source], *want.as_bytes(), "{source}");
        assert_eq!(blake3::hash(&c.get_bytes(source).await.unwrap()), *want);
    }
    eprintln!(
        "soak: {CLIENTS} clients, {secs} s, {total} operations, {} sources at the end; server \
         RSS {warmed} KiB warmed up, peak {peak} KiB, {end} KiB at the end",
        model.len()
    );
    assert!(total > 100, "only {total} operations: the soak did not run");
    assert!(
        end <= warmed + warmed / 4,
        "server memory grew from {warmed} KiB to {end} KiB"
    );
}
