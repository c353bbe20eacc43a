//! `ferry mesh` on a real LAN segment: three peers in network namespaces that the test
//! creates (veth pairs on a bridge), announcing by IPv4 broadcast and IPv4/IPv6 multicast on
//! the default port, fetching over TLS; then the same with 20% of incoming announcement
//! datagrams dropped on every peer. Where namespaces cannot be created (not root, no
//! iproute2) each test prints `SKIPPED: reason` and passes; `mesh_sync.rs` covers the same
//! runtime over loopback. `FERRY_NETNS_REQUIRED=1` turns a skip into a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support {
    pub mod netns;
    pub mod netns_selftest;
}

use std::time::Duration;

use common::BIN;
use common::mesh::{Peer, eventually, noise};
use support::netns::{self, Lan};

/// The harness's helper role (UDP probes re-execute this binary); returns at once in an
/// ordinary run.
#[test]
fn netns_helper() {
    netns::helper_main();
}

const TLS_PORT: u16 = 7443;

/// A peer whose commands run in `host`'s namespace.
fn in_namespace(host: &netns::Host) -> Peer {
    let ns = host.name().to_owned();
    Peer::new(move || {
        let mut c = netns::ip_command();
        c.args(["netns", "exec", &ns, BIN]);
        c
    })
}
const ANNOUNCE_PORT: u16 = 4434;

/// Creates the mesh on host 0, joins hosts 1 and 2 over the LAN, and runs `mesh up` on all
/// three with the default announcement targets and a digest every second.
fn lan_mesh(lan: &Lan) -> Vec<Peer> {
    lan_mesh_of(lan, &["alpha", "bravo", "charlie"])
}

/// A mesh of the first `names.len()` hosts of `lan`, running as [`lan_mesh`] describes.
fn lan_mesh_of(lan: &Lan, names: &[&str]) -> Vec<Peer> {
    let mut peers: Vec<Peer> = lan
        .hosts()
        .iter()
        .take(names.len())
        .map(in_namespace)
        .collect();
    let listen = format!("0.0.0.0:{TLS_PORT}");
    let start = |p: &mut Peer, i: usize| {
        p.start(
            &["--listen", &listen, "--digest-every", "1s"],
            Some(format!("{}:{TLS_PORT}", lan.host(i).addr_v4())),
        );
    };
    peers[0].create(names[0]);
    start(&mut peers[0], 0);
    peers[0].open();
    let (first, rest) = peers.split_at_mut(1);
    for (k, p) in rest.iter_mut().enumerate() {
        p.join(names[k + 1], &first[0]);
        start(p, k + 1);
    }
    peers
}

#[test]
fn a_put_on_one_peer_appears_on_the_others_over_broadcast_and_multicast() {
    let lan = netns::or_skip!(Lan::create(3));
    let mut peers = lan_mesh(&lan);
    let creds: Vec<_> = peers.iter().map(|p| p.issue("local", "writer")).collect();
    let data = noise(1 << 20, 7);
    peers[0].put(&creds[0], "lan/photo", &data);
    assert!(
        eventually(Duration::from_secs(10), || {
            (1..3).all(|i| peers[i].get(&creds[i], "lan/photo").as_deref() == Some(&data[..]))
        }),
        "not replicated within 10 s; logs: {:#?}",
        peers.iter().map(Peer::log).collect::<Vec<_>>()
    );
    // Announcements arrived by broadcast or multicast: the peers' logs show whom they heard.
    let members = peers[1].run(&["mesh", "members"]).ok().text();
    assert!(
        members.contains(&lan.host(0).addr_v4().to_string()),
        "{members}"
    );
    assert!(peers.iter_mut().all(Peer::running));
}

#[test]
fn peers_converge_with_a_fifth_of_the_datagrams_dropped() {
    let lan = netns::or_skip!(Lan::create(3));
    let mut peers = lan_mesh(&lan);
    for i in 0..3 {
        netns::or_skip!(lan.drop_udp_percent(i, ANNOUNCE_PORT, 20));
    }
    let creds: Vec<_> = peers.iter().map(|p| p.issue("local", "writer")).collect();
    // Twelve puts spread over the three peers, some of them to the same sources.
    let mut expected = std::collections::BTreeMap::new();
    for k in 0..12u64 {
        let i = (k % 3) as usize;
        let source = format!("lossy/{}", k % 5);
        let data = noise(2000 + k as usize * 100, k + 100);
        peers[i].put(&creds[i], &source, &data);
        expected.insert(source, ());
        std::thread::sleep(Duration::from_millis(150));
    }
    let listing = |i: usize| peers[i].with(&creds[i], &["ls", "lossy/"]).ok().text();
    let contents = |i: usize| -> Vec<Option<Vec<u8>>> {
        expected
            .keys()
            .map(|s| peers[i].get(&creds[i], s))
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(30), || {
            let c0 = contents(0);
            c0.iter().all(Option::is_some) && contents(1) == c0 && contents(2) == c0
        }),
        "did not converge: {:?} {:?} {:?}",
        listing(0),
        listing(1),
        listing(2)
    );
    let dropped: u64 = lan
        .hosts()
        .iter()
        .map(|h| h.udp_dropped().unwrap_or(0))
        .sum();
    assert!(dropped > 0, "the loss rule dropped nothing");
    eprintln!("converged with {dropped} announcement datagrams dropped");
    assert!(peers.iter_mut().all(Peer::running));
}

#[test]
fn each_announcement_path_alone_carries_a_change() {
    let lan = netns::or_skip!(Lan::create(2));
    let mut peers = lan_mesh_of(&lan, &["alpha", "bravo"]);
    let creds: Vec<_> = peers.iter().map(|p| p.issue("local", "writer")).collect();
    let paths = [
        (format!("{}:{ANNOUNCE_PORT}", lan.broadcast_v4()), "0.0.0.0"),
        (format!("255.255.255.255:{ANNOUNCE_PORT}"), "0.0.0.0"),
        (format!("239.255.70.77:{ANNOUNCE_PORT}"), "0.0.0.0"),
        // Over IPv6 only, a peer must serve on [::] (dual stack) to be reachable.
        (format!("[ff12::7077]:{ANNOUNCE_PORT}"), "[::]"),
    ];
    for (k, (target, host)) in paths.iter().enumerate() {
        let listen = format!("{host}:{TLS_PORT}");
        for (i, p) in peers.iter_mut().enumerate() {
            p.stop();
            let addr = format!("{}:{TLS_PORT}", lan.host(i).addr_v4());
            // A long digest period: the change must travel by its own announcement.
            p.start(
                &[
                    "--listen",
                    &listen,
                    "--announce-to",
                    target,
                    "--digest-every",
                    "1h",
                ],
                Some(addr),
            );
        }
        let source = format!("path/{k}");
        let data = noise(10_000, k as u64 + 1);
        peers[0].put(&creds[0], &source, &data);
        assert!(
            eventually(Duration::from_secs(10), || {
                peers[1].get(&creds[1], &source).as_deref() == Some(&data[..])
            }),
            "nothing arrived by {target}; logs: {:#?}",
            peers.iter().map(Peer::log).collect::<Vec<_>>()
        );
    }
}

#[test]
fn a_peer_joins_by_discovering_the_open_peer_on_the_lan() {
    let lan = netns::or_skip!(Lan::create(2));
    let mut peers = lan_mesh_of(&lan, &["alpha"]);
    let b = in_namespace(lan.host(1));
    let out = b
        .run_stdin(
            &[
                "mesh",
                "join",
                "--discover",
                "--name",
                "bravo",
                "--password-stdin",
            ],
            &format!("{}\n", common::mesh::PASSWORD),
        )
        .ok();
    assert!(
        out.stderr
            .contains(&format!("at {}:{TLS_PORT}", lan.host(0).addr_v4())),
        "{}",
        out.stderr
    );
    let b_id = out.text().trim().to_owned();
    let members = peers[0].run(&["mesh", "members"]).ok().text();
    assert!(members.contains(&b_id), "{members}");
    assert!(peers[0].running());
}
