//! Self-tests of the network-namespace harness (`super::netns`): broadcast, multicast,
//! unicast, random loss with nftables, isolation between LANs and teardown. Each skips
//! (printing `SKIPPED: ...`) where namespaces are unavailable. About 2.5 s as root.
//!
//! Include it beside the harness from a test file that has the helper function:
//!
//! ```ignore
//! mod support {
//!     pub mod netns;
//!     pub mod netns_selftest;
//! }
//!
//! #[test]
//! fn netns_helper() {
//!     support::netns::helper_main();
//! }
//! ```
// Test support: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use super::netns::{self, Datagram, Lan};

const GAP: Duration = Duration::from_millis(1);
const SETTLE: Duration = Duration::from_millis(100);

fn count(got: &[Datagram], payload: &[u8]) -> usize {
    got.iter().filter(|d| d.data == payload).count()
}

fn ip_lines(args: &[&str]) -> Vec<String> {
    let out = netns::run_bounded(netns::ip_command().args(args), Duration::from_secs(20)).unwrap();
    assert!(out.status.success(), "ip {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Interface names in this process's (the root) namespace.
fn root_links() -> BTreeSet<String> {
    ip_lines(&["-o", "link", "show"])
        .iter()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or_default().to_owned())
        .collect()
}

fn netns_list() -> BTreeSet<String> {
    netns::namespace_names().into_iter().collect()
}

#[test]
fn broadcast_v4_reaches_every_other_host() {
    let lan = netns::or_skip!(Lan::create(3));
    let port = 47001;
    let bind: SocketAddr = (Ipv4Addr::UNSPECIFIED, port).into();
    let listeners = [1, 2].map(|i| lan.host(i).udp_listen(bind, None).unwrap());
    let h0 = lan.host(0);
    h0.udp_send((lan.broadcast_v4(), port).into(), b"directed", 5, GAP)
        .unwrap();
    h0.udp_send((Ipv4Addr::BROADCAST, port).into(), b"limited", 3, GAP)
        .unwrap();
    for (i, l) in [1, 2].into_iter().zip(listeners) {
        let got = l.finish(SETTLE).unwrap();
        eprintln!(
            "host {i}: {} datagrams ({} to {}, {} to 255.255.255.255)",
            got.len(),
            count(&got, b"directed"),
            lan.broadcast_v4(),
            count(&got, b"limited")
        );
        assert_eq!(count(&got, b"directed"), 5, "host {i}: {got:?}");
        assert_eq!(count(&got, b"limited"), 3, "host {i}: {got:?}");
        assert_eq!(got.len(), 8, "host {i}: {got:?}");
        assert!(got.iter().all(|d| d.from.ip() == h0.addr_v4()), "{got:?}");
    }
}

#[test]
fn multicast_v4_reaches_members_only() {
    let lan = netns::or_skip!(Lan::create(3));
    let port = 47002;
    let group = Ipv4Addr::new(239, 255, 70, 1);
    let other = Ipv4Addr::new(239, 255, 70, 2);
    let bind: SocketAddr = (Ipv4Addr::UNSPECIFIED, port).into();
    let listeners = [1, 2].map(|i| lan.host(i).udp_listen(bind, Some(group.into())).unwrap());
    let h0 = lan.host(0);
    h0.udp_send((group, port).into(), b"member", 4, GAP)
        .unwrap();
    // Nobody joined this one: the hosts' kernels must not deliver it.
    h0.udp_send((other, port).into(), b"stranger", 4, GAP)
        .unwrap();
    for (i, l) in [1, 2].into_iter().zip(listeners) {
        let got = l.finish(SETTLE).unwrap();
        eprintln!(
            "host {i}: {} of 4 to {group}, {} of 4 to unjoined {other}",
            count(&got, b"member"),
            count(&got, b"stranger")
        );
        assert_eq!(count(&got, b"member"), 4, "host {i}: {got:?}");
        assert_eq!(got.len(), 4, "host {i}: {got:?}");
        assert!(got.iter().all(|d| d.from.ip() == h0.addr_v4()), "{got:?}");
    }
}

#[test]
fn multicast_v6_reaches_members() {
    let lan = netns::or_skip!(Lan::create(3));
    let port = 47003;
    let group: Ipv6Addr = "ff12::7770:1".parse().unwrap();
    let bind: SocketAddr = (Ipv6Addr::UNSPECIFIED, port).into();
    let listeners = [1, 2].map(|i| lan.host(i).udp_listen(bind, Some(group.into())).unwrap());
    let h0 = lan.host(0);
    // With eth0's scope id (what udp_send adds), and with none (the kernel's ff00::/8 route).
    h0.udp_send((group, port).into(), b"scoped", 4, GAP)
        .unwrap();
    h0.udp_send_raw((group, port).into(), 0, b"unscoped", 3, GAP)
        .unwrap();
    for (i, l) in [1, 2].into_iter().zip(listeners) {
        let got = l.finish(SETTLE).unwrap();
        eprintln!(
            "host {i}: {} of 4 scoped, {} of 3 unscoped to {group}; from {:?}",
            count(&got, b"scoped"),
            count(&got, b"unscoped"),
            got.first().map(|d| d.from)
        );
        assert_eq!(count(&got, b"scoped"), 4, "host {i}: {got:?}");
        assert_eq!(count(&got, b"unscoped"), 3, "host {i}: {got:?}");
        assert!(
            got.iter().all(|d| d.from.ip() == h0.link_local_v6()),
            "{got:?}"
        );
    }
}

#[test]
fn unicast_v4_and_v6_between_hosts() {
    let lan = netns::or_skip!(Lan::create(2));
    let port = 47004;
    // A dual-stack socket receives both families.
    let l = lan
        .host(1)
        .udp_listen((Ipv6Addr::UNSPECIFIED, port).into(), None)
        .unwrap();
    let (h0, h1) = (lan.host(0), lan.host(1));
    h0.udp_send((h1.addr_v4(), port).into(), b"v4", 2, GAP)
        .unwrap();
    h0.udp_send((h1.addr_v6(), port).into(), b"ula", 2, GAP)
        .unwrap();
    h0.udp_send((h1.link_local_v6(), port).into(), b"ll", 2, GAP)
        .unwrap();
    assert_eq!(l.wait_for(6, Duration::from_secs(10)), 6);
    let got = l.finish(Duration::ZERO).unwrap();
    eprintln!(
        "host 1: {} v4 from {:?}, {} ULA, {} link-local",
        count(&got, b"v4"),
        got.iter().find(|d| d.data == b"v4").map(|d| d.from),
        count(&got, b"ula"),
        count(&got, b"ll")
    );
    assert_eq!(count(&got, b"v4"), 2);
    assert_eq!(count(&got, b"ula"), 2);
    assert_eq!(count(&got, b"ll"), 2);
    assert!(
        got.iter()
            .any(|d| d.data == b"v4" && d.from.ip() == h0.addr_v4())
    );
    assert!(
        got.iter()
            .any(|d| d.data == b"ula" && d.from.ip() == h0.addr_v6())
    );
}

#[test]
fn nft_drops_about_a_fifth() {
    let lan = netns::or_skip!(Lan::create(3));
    let port = 47005;
    if let Err(skip) = lan.drop_udp_percent(1, port, 20) {
        skip.report();
        return;
    }
    let bind: SocketAddr = (Ipv4Addr::UNSPECIFIED, port).into();
    let lossy = lan.host(1).udp_listen(bind, None).unwrap();
    let clean = lan.host(2).udp_listen(bind, None).unwrap();
    // Another port on the lossy host is not affected.
    let other = lan
        .host(1)
        .udp_listen((Ipv4Addr::UNSPECIFIED, port + 1).into(), None)
        .unwrap();
    let h0 = lan.host(0);
    let n = 500;
    h0.udp_send((lan.broadcast_v4(), port).into(), b"x", n, GAP)
        .unwrap();
    h0.udp_send((lan.host(1).addr_v4(), port + 1).into(), b"y", 50, GAP)
        .unwrap();
    let lossy = lossy.finish(SETTLE).unwrap().len();
    let clean = clean.finish(SETTLE).unwrap().len();
    let other = other.finish(SETTLE).unwrap().len();
    let dropped = lan.host(1).udp_dropped().unwrap();
    eprintln!(
        "20% drop rule: {lossy}/{n} received ({:.1}% lost), rule counted {dropped} drops; \
         host without the rule {clean}/{n}; other port {other}/50",
        100.0 * (n - lossy) as f64 / n as f64
    );
    assert_eq!(clean, n);
    assert_eq!(other, 50);
    assert_eq!(lossy as u64 + dropped, n as u64);
    assert!(
        (n * 60 / 100..=n * 95 / 100).contains(&lossy),
        "{lossy} of {n}"
    );
    lan.host(1).clear_udp_drops().unwrap();
    assert_eq!(lan.host(1).udp_dropped().unwrap(), 0);
    let again = lan.host(1).udp_listen(bind, None).unwrap();
    h0.udp_send((lan.broadcast_v4(), port).into(), b"z", 100, GAP)
        .unwrap();
    assert_eq!(again.finish(SETTLE).unwrap().len(), 100);

    // Every port, IPv6 multicast included.
    lan.host(2).drop_all_udp_percent(50).unwrap();
    let group: std::net::Ipv6Addr = "ff12::7770:5".parse().unwrap();
    let v6 = lan
        .host(2)
        .udp_listen((Ipv6Addr::UNSPECIFIED, 47009).into(), Some(group.into()))
        .unwrap();
    h0.udp_send((group, 47009).into(), b"w", 200, GAP).unwrap();
    let got = v6.finish(SETTLE).unwrap().len();
    let dropped = lan.host(2).udp_dropped().unwrap();
    eprintln!("50% drop of all UDP: {got}/200 IPv6 multicast received, {dropped} counted");
    assert_eq!(got as u64 + dropped, 200);
    assert!((40..=160).contains(&got), "{got} of 200");
}

#[test]
fn lans_are_isolated_from_each_other() {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Lan::create(2));
        let b = s.spawn(|| Lan::create(2));
        (a.join().unwrap(), b.join().unwrap())
    });
    let a = netns::or_skip!(a);
    let b = netns::or_skip!(b);
    let port = 47007;
    let bind: SocketAddr = (Ipv4Addr::UNSPECIFIED, port).into();
    let la = a.host(1).udp_listen(bind, None).unwrap();
    let lb = b.host(1).udp_listen(bind, None).unwrap();
    a.host(0)
        .udp_send((Ipv4Addr::BROADCAST, port).into(), b"A", 3, GAP)
        .unwrap();
    b.host(0)
        .udp_send((Ipv4Addr::BROADCAST, port).into(), b"B", 3, GAP)
        .unwrap();
    let ga = la.finish(SETTLE).unwrap();
    let gb = lb.finish(SETTLE).unwrap();
    eprintln!(
        "{} and {}: A got {}A/{}B, B got {}A/{}B",
        a.host(0).name(),
        b.host(0).name(),
        count(&ga, b"A"),
        count(&ga, b"B"),
        count(&gb, b"A"),
        count(&gb, b"B")
    );
    assert_ne!(a.host(0).name(), b.host(0).name());
    assert_eq!((count(&ga, b"A"), ga.len()), (3, 3));
    assert_eq!((count(&gb, b"B"), gb.len()), (3, 3));
}

#[test]
fn teardown_removes_everything_and_kills_processes() {
    let before = root_links();
    let t = Instant::now();
    let lan = netns::or_skip!(Lan::create(3));
    eprintln!("creating a 3-host Lan took {:?}", t.elapsed());
    let names = lan.namespaces();
    assert_eq!(names.len(), 4);
    let listed = netns_list();
    assert!(
        names.iter().all(|n| listed.contains(n)),
        "{names:?} {listed:?}"
    );
    assert_eq!(
        root_links(),
        before,
        "the root namespace gained or lost links"
    );
    // Inside a namespace, only lo and eth0.
    let out = netns::run_bounded(
        lan.host(0)
            .command(netns::ip_command().get_program())
            .args(["-o", "link", "show"]),
        Duration::from_secs(20),
    )
    .unwrap();
    let links = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(links.lines().count(), 2, "{links}");
    // A process left running (no guard) and one under a guard.
    let mut loose = lan.host(1).command("sleep").arg("300").spawn().unwrap();
    let guarded = netns::Spawned::spawn(lan.host(2).command("sleep").arg("300")).unwrap();
    let guarded_pid = guarded.id();
    drop(guarded);
    assert!(
        !std::path::Path::new(&format!("/proc/{guarded_pid}")).exists(),
        "guarded child still exists"
    );
    let t = Instant::now();
    drop(lan);
    let took = t.elapsed();
    let status = netns::wait_timeout(&mut loose, Duration::from_secs(5)).unwrap();
    assert!(
        status.is_some(),
        "a process in the namespace survived teardown"
    );
    let listed = netns_list();
    eprintln!(
        "teardown took {took:?}; loose child ended with {status:?}; left: {:?}",
        names
            .iter()
            .filter(|n| listed.contains(*n))
            .collect::<Vec<_>>()
    );
    assert!(names.iter().all(|n| !listed.contains(n)), "{listed:?}");
    assert_eq!(
        root_links(),
        before,
        "the root namespace gained or lost links"
    );
}

#[test]
fn bounded_commands_time_out() {
    let t = Instant::now();
    let err = netns::run_bounded(Command::new("sleep").arg("30"), Duration::from_millis(300))
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}
