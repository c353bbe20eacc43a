//! The datagram rules of [`super::Node`], driven in memory.

use std::net::SocketAddr;

use super::*;
use crate::mesh::announce::{Body, Event, seal};
use crate::mesh::catch_up::MIN_INTERVAL_MS;
use crate::mesh::replay::first_counter;
use crate::mesh::state::Member;
use crate::secret::MeshKey;

const NOW: u64 = 1_700_000_000_000;

fn member(name: &str) -> Member {
    Member {
        spki: name.as_bytes().to_vec(),
        name: name.into(),
        addr: String::new(),
    }
}

fn id(name: &str) -> ServerId {
    ServerId::from_spki(name.as_bytes())
}

/// A mesh of `me` and `other` at epoch 1, and the node of `me`.
fn setup() -> (MeshState, Node) {
    let mut mesh = MeshState::create("home", member("me"), MeshKey::from_bytes([7; 32]));
    assert!(mesh.add_member(member("other")));
    (mesh, Node::new(id("me"), 60_000))
}

fn from() -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 2], 4434))
}

/// A datagram sealed for `mesh`'s epoch from `sender`.
fn datagram(mesh: &MeshState, sender: &str, counter: u64, event: Event) -> Vec<u8> {
    let body = Body {
        sender: *id(sender).as_bytes(),
        counter,
        time: NOW,
        addr: vec![10, 0, 0, 2],
        port: 7443,
        manual: true,
        event,
    };
    let key = announce_key(&mesh.key, mesh.epoch);
    seal(&key, mesh.epoch, [counter as u8; 24], &body).unwrap_or_else(|_| unreachable!())
}

fn change(source: &str, version: u64) -> Event {
    Event::Change {
        source: source.into(),
        version,
        hash: [3; 32],
        deleted: false,
    }
}

/// A forged datagram claiming `epoch` (nobody needs a key to write one).
fn forged(epoch: u64) -> Vec<u8> {
    let mut d = announce::seal_raw(&[0; 32], epoch, [1; 24], b"\xa0");
    d.truncate(announce::HEADER_LEN + announce::TAG_LEN);
    d
}

#[test]
fn a_member_change_is_fetched_once_and_its_replay_and_alterations_are_dropped() {
    let (mesh, mut node) = setup();
    let d = datagram(&mesh, "other", first_counter(NOW), change("docs/a", 2));
    let peer = Peer {
        id: id("other"),
        addr: "10.0.0.2:7443".parse().unwrap_or_else(|_| unreachable!()),
    };
    let entry = MeshEntry {
        source: "docs/a".into(),
        version: 2,
        hash: [3; 32],
        deleted: false,
    };
    assert_eq!(
        node.handle(NOW, from(), &d, &mesh),
        Action::Change { peer, entry }
    );
    assert_eq!(
        node.handle(NOW, from(), &d, &mesh),
        Action::Drop(Dropped::Stale(id("other"), Stale::Replayed))
    );
    let mut flipped = d.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert_eq!(
        node.handle(NOW, from(), &flipped, &mesh),
        Action::Drop(Dropped::Unopened(OpenError::Unauthentic))
    );
    // Too old by the time it arrives.
    let late = datagram(&mesh, "other", first_counter(NOW) + 1, change("docs/a", 3));
    assert_eq!(
        node.handle(NOW + 60_001, from(), &late, &mesh),
        Action::Drop(Dropped::Stale(id("other"), Stale::OutsideWindow))
    );
    // Its own datagrams, beacons and junk.
    let own = datagram(&mesh, "me", 1, change("docs/a", 2));
    assert_eq!(
        node.handle(NOW, from(), &own, &mesh),
        Action::Drop(Dropped::Own)
    );
    let b = beacon::encode(&beacon::Beacon {
        device: [1; 32],
        addr: vec![10, 0, 0, 1],
        port: 7443,
        mesh: "home".into(),
        name: "x".into(),
    });
    assert_eq!(
        node.handle(NOW, from(), &b, &mesh),
        Action::Drop(Dropped::Beacon)
    );
    for junk in [&b""[..], b"FRYA", &[0u8; 1500]] {
        assert_eq!(
            node.handle(NOW, from(), junk, &mesh),
            Action::Drop(Dropped::Unopened(OpenError::NotAnnouncement))
        );
    }
}

#[test]
fn invalid_source_names_and_absurd_versions_from_a_member_are_dropped() {
    let (mesh, mut node) = setup();
    let mut counter = first_counter(NOW);
    for (source, version) in [
        ("../x", 1),
        ("a\u{1b}[2Jb", 1),
        ("a\nb", 1),
        ("a//b", 1),
        ("ok", 0),
        ("ok", u64::MAX),
        ("ok", crate::mesh::wire::MAX_VERSION + 1),
    ] {
        counter += 1;
        let d = datagram(&mesh, "other", counter, change(source, version));
        let got = node.handle(NOW, from(), &d, &mesh);
        assert!(
            matches!(got, Action::Drop(Dropped::Invalid(s, _)) if s == id("other")),
            "{source:?} {version}: {got:?}"
        );
    }
}

#[test]
fn a_digest_says_whether_members_differ() {
    let (mesh, mut node) = setup();
    let ours = mesh.members_digest();
    let event = |members| Event::Digest {
        sources: [9; 32],
        members,
    };
    let same = datagram(&mesh, "other", 10, event(ours));
    let other = datagram(&mesh, "other", 11, event([0; 32]));
    assert!(matches!(
        node.handle(NOW, from(), &same, &mesh),
        Action::Digest { members_differ: false, sources, .. } if sources == [9; 32]
    ));
    assert!(matches!(
        node.handle(NOW, from(), &other, &mesh),
        Action::Digest {
            members_differ: true,
            ..
        }
    ));
}

#[test]
fn a_newcomer_with_the_key_is_merged_and_a_removed_device_is_dropped() {
    let (mut mesh, mut node) = setup();
    let d = datagram(&mesh, "newcomer", 5, change("a", 1));
    assert!(matches!(
        node.handle(NOW, from(), &d, &mesh),
        Action::State(p) if p.id == id("newcomer")
    ));
    // Removed (the key rotates; a datagram sealed with the new key still does not count).
    assert!(mesh.remove(&id("other"), MeshKey::from_bytes([8; 32])));
    let d = datagram(&mesh, "other", 6, change("a", 1));
    assert_eq!(
        node.handle(NOW, from(), &d, &mesh),
        Action::Drop(Dropped::Removed(id("other")))
    );
}

#[test]
fn forged_newer_epochs_start_few_catch_ups() {
    let (mesh, mut node) = setup();
    // A huge jump never starts one.
    for e in [3, 1000, u64::MAX] {
        assert_eq!(
            node.handle(NOW, from(), &forged(e), &mesh),
            Action::Drop(Dropped::NoCatchUp(NoCatchUp::TooFar(e)))
        );
    }
    // The next epoch: one catch-up, then none until the interval has passed, doubling while
    // catch-ups find nothing. Every claim is counted for its source address.
    assert_eq!(
        node.handle(NOW, from(), &forged(2), &mesh),
        Action::CatchUp { claims: 4 }
    );
    node.catch_up_finished(NOW + 100, false);
    let mut started = vec![NOW];
    for step in 1..=600 {
        // One forged datagram a second for ten minutes.
        let now = NOW + step * 1000;
        match node.handle(now, from(), &forged(2), &mesh) {
            Action::CatchUp { .. } => {
                started.push(now);
                node.catch_up_finished(now + 100, false);
            }
            Action::Drop(Dropped::NoCatchUp(NoCatchUp::Throttled(2))) => {}
            other => panic!("{other:?}"),
        }
    }
    let gaps: Vec<u64> = started.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(
        gaps,
        [11_000, 21_000, 41_000, 81_000, 161_000, 301_000][..gaps.len()]
    );
    assert!(started.len() <= 7, "{started:?}");
    assert!(gaps[0] > 2 * MIN_INTERVAL_MS);
}

#[test]
fn announced_addresses() {
    struct B {
        addr: Vec<u8>,
        port: u16,
    }
    fn body(addr: Vec<u8>, port: u16) -> B {
        B { addr, port }
    }
    fn announced_addr(b: &B, from: SocketAddr) -> Option<SocketAddr> {
        super::announced_addr(&b.addr, b.port, from)
    }
    let with_port = super::with_port;
    let v4: SocketAddr = "10.0.0.2:4000".parse().unwrap_or_else(|_| unreachable!());
    let v6: SocketAddr = "[fd00::2]:4000".parse().unwrap_or_else(|_| unreachable!());
    let mapped: SocketAddr = "[::ffff:10.0.0.3]:4000"
        .parse()
        .unwrap_or_else(|_| unreachable!());
    let explicit = body(vec![10, 0, 0, 9], 7443);
    assert_eq!(
        announced_addr(&explicit, v6),
        Some("10.0.0.9:7443".parse().unwrap_or_else(|_| unreachable!()))
    );
    let any4 = body(vec![0; 4], 7443);
    assert_eq!(announced_addr(&any4, v4), Some(with_port(v4, 7443)));
    assert_eq!(announced_addr(&any4, v6), None);
    assert_eq!(
        announced_addr(&any4, mapped),
        Some("10.0.0.3:7443".parse().unwrap_or_else(|_| unreachable!()))
    );
    let any6 = body(vec![0; 16], 7443);
    assert_eq!(announced_addr(&any6, v6), Some(with_port(v6, 7443)));
    assert_eq!(announced_addr(&any6, v4), Some(with_port(v4, 7443)));
    assert_eq!(announced_addr(&body(vec![1; 5], 1), v4), None);
}
