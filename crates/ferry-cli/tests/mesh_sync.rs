//! `ferry mesh up` over loopback: three real peers announce to each other by unicast UDP
//! (`--announce-to`) and fetch over TLS. The same runtime runs on a real LAN segment in
//! `mesh_netns.rs`; these cover its logic where network namespaces are unavailable, and the
//! attacks against running peers: replayed, altered and old-epoch datagrams, and a removed
//! member.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::UdpSocket;
use std::thread;
use std::time::{Duration, Instant};

use common::mesh::{Peer, eventually, noise};
use ferry::proto::mesh::announce;

/// Bound on any one convergence.
const CONVERGE: Duration = Duration::from_secs(20);

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Three peers: `alpha` creates the mesh, `bravo` and `charlie` join it; each announces to
/// the others' ports and to `extra` (a capturing socket), with a digest every second.
fn three_peers(extra: &[String]) -> [Peer; 3] {
    let ports: Vec<String> = (0..3).map(|_| free_udp_port().to_string()).collect();
    let start = |p: &mut Peer, i: usize| {
        let mut to: Vec<String> = (0..3)
            .filter(|&j| j != i)
            .map(|j| format!("127.0.0.1:{}", ports[j]))
            .collect();
        to.extend(extra.iter().cloned());
        p.start(
            &[
                "--listen",
                "127.0.0.1:0",
                "--announce-port",
                &ports[i],
                "--announce-to",
                &to.join(","),
                "--digest-every",
                "1s",
            ],
            None,
        );
    };
    let mut a = Peer::local();
    a.create("alpha");
    start(&mut a, 0);
    a.open();
    let mut b = Peer::local();
    b.join("bravo", &a);
    start(&mut b, 1);
    let mut c = Peer::local();
    c.join("charlie", &a);
    start(&mut c, 2);
    [a, b, c]
}

/// The peer's announcement port, from its log. `mesh up` says "listening on" (which is what
/// starting it waits for) before its mesh runtime binds the UDP sockets and says this.
fn port_of(p: &Peer) -> u16 {
    let line = p
        .wait_for_log("announcements on UDP port ", Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no announcement port; log: {:#?}", p.log()));
    line.rsplit(' ').next().unwrap().trim().parse().unwrap()
}

#[test]
fn three_peers_share_puts_deletes_and_concurrent_writes() {
    let [mut a, mut b, mut c] = three_peers(&[]);
    let wa = a.issue("alice", "writer");
    let wb = b.issue("bob", "admin");
    let wc = c.issue("carol", "writer");

    // A put on one peer appears, byte-identical, on the other two.
    let data = noise(300_000, 1);
    a.put(&wa, "docs/report", &data);
    assert!(
        eventually(CONVERGE, || {
            b.get(&wb, "docs/report").as_deref() == Some(&data[..])
                && c.get(&wc, "docs/report").as_deref() == Some(&data[..])
        }),
        "not replicated; logs:\nB {:#?}\nC {:#?}",
        b.log(),
        c.log()
    );
    // The version's metadata (the file's modification time) travels with it.
    let mtime = |p: &Peer, cred: &std::path::Path| {
        let out = p.with(cred, &["stat", "docs/report", "--json"]).ok();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["mtime"].clone()
    };
    let on_a = mtime(&a, &wa);
    assert!(on_a.as_u64().is_some_and(|t| t > 0), "{on_a}");
    assert_eq!(mtime(&b, &wb), on_a);
    assert_eq!(mtime(&c, &wc), on_a);

    // A new version from another peer replaces it everywhere.
    let v2 = noise(5000, 2);
    c.put(&wc, "docs/report", &v2);
    assert!(eventually(CONVERGE, || {
        a.get(&wa, "docs/report").as_deref() == Some(&v2[..])
            && b.get(&wb, "docs/report").as_deref() == Some(&v2[..])
    }));

    // Concurrent writes to one source: every peer ends with the same content, one of the two.
    let (x1, x2) = (b"written on bravo".to_vec(), b"written on charlie".to_vec());
    thread::scope(|s| {
        s.spawn(|| b.put(&wb, "shared/x", &x1));
        s.spawn(|| c.put(&wc, "shared/x", &x2));
    });
    assert!(
        eventually(CONVERGE, || {
            let got = [
                a.get(&wa, "shared/x"),
                b.get(&wb, "shared/x"),
                c.get(&wc, "shared/x"),
            ];
            got[0].is_some() && got[0] == got[1] && got[1] == got[2]
        }),
        "did not converge"
    );
    let winner = a.get(&wa, "shared/x").unwrap();
    assert!(winner == x1 || winner == x2);

    // A delete on one peer deletes everywhere.
    b.with(&wb, &["rm", "docs/report"]).ok();
    assert!(eventually(CONVERGE, || {
        a.get(&wa, "docs/report").is_none() && c.get(&wc, "docs/report").is_none()
    }));

    // Every member has been heard from, and every peer is still running.
    // (last-seen times are written when a member is first heard and with every digest).
    let members = || a.run(&["mesh", "members"]).ok().text();
    assert!(
        eventually(CONVERGE, || !members().contains("never")),
        "{}",
        members()
    );
    let members = members();
    assert!(
        members.contains("bravo") && members.contains("charlie"),
        "{members}"
    );
    assert!(a.running() && b.running() && c.running());
}

#[test]
fn replayed_altered_and_old_epoch_datagrams_are_ignored_and_a_removed_member_is_cut_off() {
    let capture = UdpSocket::bind("127.0.0.1:0").unwrap();
    capture
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let [mut a, mut b, mut c] = three_peers(&[capture.local_addr().unwrap().to_string()]);
    let wa = a.issue("alice", "writer");
    let wb = b.issue("bob", "reader");
    let wc = c.issue("carol", "writer");
    a.put(&wa, "x/one", b"one");
    assert!(eventually(CONVERGE, || b.get(&wb, "x/one").is_some()));

    // Capture one of alpha's announcements (a change or a digest): sent from alpha's announce
    // port and framed as an announcement, not as one of the join beacons alpha also sends
    // while it is open.
    let alpha_port = port_of(&a);
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + CONVERGE;
    let captured = loop {
        assert!(
            Instant::now() < deadline,
            "no announcement from alpha captured"
        );
        let Ok((n, from)) = capture.recv_from(&mut buf) else {
            continue;
        };
        if from.port() == alpha_port && buf[..n].starts_with(announce::MAGIC) {
            break buf[..n].to_vec();
        }
    };
    let to_b = format!("127.0.0.1:{}", port_of(&b));
    // bravo's log says what it did with what the capture socket (and nothing else) sent.
    let from_capture = format!("{}: dropped ", capture.local_addr().unwrap());
    let count = |p: &Peer, what: &str| {
        p.log()
            .iter()
            .filter(|l| l.contains(&from_capture) && l.contains(what))
            .count()
    };
    let sees = |p: &Peer, what: &str, n: usize| {
        eventually(Duration::from_secs(10), || count(p, what) >= n)
    };

    // Replayed: already seen (alpha's counter has moved on, or it is this very one).
    capture.send_to(&captured, &to_b).unwrap();
    assert!(
        sees(&b, "announcement counter already seen", 1),
        "{:#?}",
        b.log()
    );
    // One flipped bit anywhere in the sealed part, or garbage: refused.
    let mut flipped = captured.clone();
    let last = flipped.len() - 1;
    flipped[last - 4] ^= 0x10;
    capture.send_to(&flipped, &to_b).unwrap();
    assert!(
        sees(&b, "announcement failed authentication", 1),
        "{:#?}",
        b.log()
    );
    assert_eq!(count(&b, "not a ferry announcement"), 0, "{:#?}", b.log());
    for junk in [Vec::new(), noise(40, 3), noise(1500, 4)] {
        capture.send_to(&junk, &to_b).unwrap();
    }
    assert!(sees(&b, "not a ferry announcement", 3), "{:#?}", b.log());
    assert!(b.running());

    // Remove charlie on alpha: the key rotates; bravo learns it from alpha's announcements.
    a.run(&["mesh", "remove", &c.id]).ok();
    assert!(
        eventually(CONVERGE, || {
            b.run(&["mesh", "members"]).text().contains("epoch 2")
        }),
        "bravo did not catch up: {:#?}",
        b.log()
    );
    // The captured datagram is now of an old epoch.
    capture.send_to(&captured, &to_b).unwrap();
    assert!(
        sees(
            &b,
            "announcement of epoch 1, which this peer has no key for",
            1
        ),
        "{:#?}",
        b.log()
    );

    // charlie can no longer announce, nor fetch.
    c.put(&wc, "x/removed", b"from a removed member");
    a.put(&wa, "x/after", b"after the removal");
    assert!(eventually(CONVERGE, || b.get(&wb, "x/after").is_some()));
    // Three more digests go by.
    thread::sleep(Duration::from_secs(3));
    assert_eq!(a.get(&wa, "x/removed"), None);
    assert_eq!(b.get(&wb, "x/removed"), None);
    assert_eq!(c.get(&wc, "x/after"), None);
    let refused = |p: &Peer| {
        eventually(Duration::from_secs(10), || {
            p.log()
                .iter()
                .any(|l| l.contains("authentication failed (NotMember"))
        })
    };
    assert!(
        refused(&a) || refused(&b),
        "charlie's catch-up was not refused: {:#?}",
        c.log()
    );
    assert!(a.running() && b.running() && c.running());
}

#[test]
fn join_by_discovery_finds_the_open_peer_by_its_beacon() {
    let beacon_port = free_udp_port().to_string();
    let mut a = Peer::local();
    a.create("alpha");
    a.start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--announce-port",
            "0",
            "--announce-to",
            &format!("127.0.0.1:{beacon_port}"),
        ],
        None,
    );
    let discover = |p: &Peer, password: &str, wait: &str| {
        p.run_stdin(
            &[
                "mesh",
                "join",
                "--discover",
                "--announce-port",
                &beacon_port,
                "--discover-for",
                wait,
                "--name",
                "bravo",
                "--password-stdin",
            ],
            &format!("{password}\n"),
        )
    };
    let b = Peer::local();
    // Not open: no beacon.
    let none = discover(&b, common::mesh::PASSWORD, "2s");
    assert_eq!(none.code, 5, "{}", none.stderr);
    assert!(
        none.stderr.contains("no open peer heard"),
        "{}",
        none.stderr
    );

    a.open();
    // Found, but the wrong password: the generic join failure.
    let wrong = discover(&b, "not the password", "10s");
    assert_eq!(wrong.code, 3, "{}", wrong.stderr);
    assert!(wrong.stderr.contains(&a.id), "{}", wrong.stderr);
    // Found and joined.
    let ok = discover(&b, common::mesh::PASSWORD, "10s").ok();
    let b_id = ok.text().trim().to_owned();
    assert_eq!(b_id.len(), a.id.len());
    let members = a.run(&["mesh", "members"]).ok().text();
    assert!(
        members.contains(&b_id) && members.contains("bravo"),
        "{members}"
    );
}

#[test]
fn forged_newer_epochs_start_at_most_one_catch_up_and_huge_ones_none() {
    let unused = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut a = Peer::local();
    a.create("alpha");
    a.start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--announce-port",
            "0",
            "--announce-to",
            &unused.local_addr().unwrap().to_string(),
        ],
        None,
    );
    let to_a = format!("127.0.0.1:{}", port_of(&a));
    let forger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let from_forger = format!("{}: ", forger.local_addr().unwrap());
    // Nobody needs a key to write a datagram that claims an epoch.
    let forged = |epoch: u64| announce::seal_raw(&[0; 32], epoch, [9; 24], b"\xa0");
    let count = |what: &str| {
        a.log()
            .iter()
            .filter(|l| l.contains(&from_forger) && l.contains(what))
            .count()
    };
    let catch_ups = || {
        a.log()
            .iter()
            .filter(|l| l.contains("catching up found no newer epoch"))
            .count()
    };

    // alpha is at epoch 1: a jump past the next epoch is dropped, however large.
    for e in [u64::MAX, 1 << 40, 3] {
        forger.send_to(&forged(e), &to_a).unwrap();
    }
    assert!(
        eventually(Duration::from_secs(10), || count("more than one ahead")
            == 3),
        "{:#?}",
        a.log()
    );
    // The next epoch, twenty times in two seconds: one catch-up (it finds nothing), the
    // rest dropped as too soon; every claim from the address is counted.
    for _ in 0..20 {
        forger.send_to(&forged(2), &to_a).unwrap();
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        eventually(Duration::from_secs(10), || {
            count("last catch-up was too recent") == 19 && catch_ups() == 1
        }),
        "{:#?}",
        a.log()
    );
    assert_eq!(
        count("(4 from this address): catching up"),
        1,
        "{:#?}",
        a.log()
    );
    assert_eq!(count("catching up"), 1, "{:#?}", a.log());
    assert!(a.running());
}
