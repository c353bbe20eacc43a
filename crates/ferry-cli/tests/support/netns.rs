//! Small LANs of Linux network namespaces for tests that need real broadcast and multicast.
//!
//! [`Lan::create`] builds, without touching the host's own network namespace:
//!
//! - a "switch" namespace holding a bridge `br0` (multicast snooping off, so every
//!   multicast frame is flooded to every port; STP off, ports forward at once);
//! - `n` host namespaces, each with one veth `eth0` whose peer `p<i>` is a port of the
//!   bridge, `lo` up, IPv4 `10.A.B.(i+1)/24` with broadcast `10.A.B.255`, IPv6 ULA
//!   `fd66:6572:7279:K::(i+1)/64` plus the kernel's link-local address, both usable at
//!   once (duplicate address detection is off), and routes for `224.0.0.0/4` and
//!   `255.255.255.255` through `eth0` (the kernel adds `ff00::/8` itself).
//!
//! Every namespace name is `ferrytest-PID-START-K-...` (PID and start time of the test
//! process, K a per-process counter), so tests running in parallel never collide; names
//! left behind by a crashed run are removed (their processes killed) before reuse, and
//! namespaces of test processes that no longer exist are collected once per process.
//! Dropping the [`Lan`] kills every process still running in its namespaces and deletes
//! them (which deletes the veths and the bridge); it never panics.
//!
//! Programs run inside a host with [`Host::command`] (`ip netns exec NAME program`). Small
//! UDP probes ([`Host::udp_listen`], [`Host::udp_send`]) re-execute the current test binary
//! in a helper role, so the test crate must define, at its root:
//!
//! ```ignore
//! #[test]
//! fn netns_helper() {
//!     support::netns::helper_main();
//! }
//! ```
//!
//! (it returns at once in an ordinary test run). A probe binds its port like any program:
//! it cannot share a port with a peer listening in the same host namespace.
//!
//! [`Host::drop_udp_percent`] (one port) and [`Host::drop_all_udp_percent`] drop a random
//! share of a host's incoming UDP datagrams (unicast, broadcast and multicast, IPv4 and
//! IPv6) with an nftables rule, and [`Host::udp_dropped`] counts what they dropped
//! (`tc netem` needs kernel support that is often missing; nft needs the `nftables`
//! package, and when it is missing these return a [`Skip`] for that part of a test).
//!
//! When namespaces are unavailable (not root, no `ip`, no kernel support), `Lan::create`
//! returns a [`Skip`]; [`or_skip!`] prints `SKIPPED: reason` and returns from the test:
//!
//! ```ignore
//! let lan = netns::or_skip!(netns::Lan::create(3));
//! ```
//!
//! Set `FERRY_NETNS_REQUIRED=1` to turn every skip into a failure (for a CI that must run
//! these tests), or `FERRY_NETNS_SKIP=1` to skip them on purpose.
//!
//! Every external command is bounded in time ([`run_bounded`]).
// Each test file uses only part of this module.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// Name of the `#[test]` function, at the root of the test crate, that calls
/// [`helper_main`]; the harness runs it with `--exact`.
pub const HELPER_TEST: &str = "netns_helper";
/// Set to a non-empty value other than `0` to make every [`Skip`] a test failure.
pub const REQUIRED_ENV: &str = "FERRY_NETNS_REQUIRED";
/// Set to a non-empty value other than `0` to skip namespace tests on purpose.
pub const SKIP_ENV: &str = "FERRY_NETNS_SKIP";

/// Environment variable carrying a helper role's instructions.
const HELPER_ENV: &str = "FERRY_NETNS_HELPER";
/// Prefix of every namespace this module creates.
const PREFIX: &str = "ferrytest";
/// Bound on one `ip`, `nft` or `sh` command.
const CMD_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on a helper's start (bind, join, report ready).
const HELPER_START: Duration = Duration::from_secs(20);
/// A helper receiver exits on its own after this long, even if nobody stops it.
const HELPER_MAX_LIFE: Duration = Duration::from_secs(600);
/// Namespaces of dead test processes younger than this are left alone (in case they
/// belong to a process this one cannot see).
const STALE_AGE: Duration = Duration::from_secs(600);
/// The interface name inside every host namespace.
const IFNAME: &str = "eth0";
/// The nftables table used by [`Host::drop_udp_percent`].
const NFT_TABLE: &str = "ferry_netns";

// ---------------------------------------------------------------------------------------
// Skipping

/// Why a namespace test cannot run here; see [`Skip::report`] and [`or_skip!`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip(pub String);

impl Skip {
    fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }

    /// Prints `SKIPPED: reason` to stderr (even when the harness captures test output);
    /// panics instead when `FERRY_NETNS_REQUIRED` is set.
    #[track_caller]
    pub fn report(&self) {
        if env_flag(REQUIRED_ENV) {
            panic!("{REQUIRED_ENV} is set but the network-namespace test cannot run: {self}");
        }
        // Straight to stderr, past the test harness's capture: a skip must be seen even
        // when the test passes.
        let _ = writeln!(io::stderr(), "SKIPPED: {self}");
    }
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Skip {}

/// `result.or_skip()`: the value, or `None` after reporting the skip ([`Skip::report`]).
pub trait OrSkip<T> {
    /// The value, or `None` after printing `SKIPPED: reason`.
    fn or_skip(self) -> Option<T>;
}

impl<T> OrSkip<T> for Result<T, Skip> {
    #[track_caller]
    fn or_skip(self) -> Option<T> {
        match self {
            Ok(v) => Some(v),
            Err(skip) => {
                skip.report();
                None
            }
        }
    }
}

/// `or_skip!(expr)`: the `Ok` value of a `Result<T, Skip>`, or, on `Err`, prints
/// `SKIPPED: reason` to stderr and returns from the enclosing test (which must return `()`).
#[allow(unused_macros)]
macro_rules! or_skip {
    ($e:expr) => {
        match $e {
            ::std::result::Result::Ok(v) => v,
            ::std::result::Result::Err(skip) => {
                skip.report();
                return;
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use or_skip;

fn env_flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty() && v != "0")
}

// ---------------------------------------------------------------------------------------
// Bounded commands

/// Runs `cmd` (stdin from /dev/null, output captured) and waits at most `timeout`; on
/// expiry kills it and returns an `io::ErrorKind::TimedOut` error.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> io::Result<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let Some(status) = wait_timeout(&mut child, timeout)? else {
        let _ = child.kill();
        let _ = wait_timeout(&mut child, Duration::from_secs(5));
        let stderr = collect(&err, Duration::from_millis(200));
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "{cmd:?} did not finish within {timeout:?} (killed); stderr: {}",
                String::from_utf8_lossy(&stderr).trim()
            ),
        ));
    };
    // A grandchild may keep a pipe open: do not wait for it forever.
    let stdout = collect(&out, Duration::from_secs(2));
    let stderr = collect(&err, Duration::from_secs(2));
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// Waits at most `timeout` for `child` to exit; `Ok(None)` if it is still running.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    if let Some(mut pipe) = pipe {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            let _ = tx.send(buf);
        });
    }
    rx
}

fn collect(rx: &mpsc::Receiver<Vec<u8>>, timeout: Duration) -> Vec<u8> {
    rx.recv_timeout(timeout).unwrap_or_default()
}

/// A child process killed (and reaped, within a bound) when dropped.
#[derive(Debug)]
pub struct Spawned(Child);

impl Spawned {
    /// Spawns `cmd` under the guard.
    pub fn spawn(cmd: &mut Command) -> io::Result<Self> {
        cmd.spawn().map(Self)
    }

    /// Puts an already spawned child under the guard.
    pub fn new(child: Child) -> Self {
        Self(child)
    }

    /// Waits at most `timeout` for the child to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        wait_timeout(&mut self.0, timeout)
    }
}

impl Deref for Spawned {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl DerefMut for Spawned {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = wait_timeout(&mut self.0, Duration::from_secs(5));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Tools and the environment

fn find_tool(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for d in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        dirs.push(PathBuf::from(d));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

fn ip_tool() -> Result<&'static Path, Skip> {
    static IP: OnceLock<Option<PathBuf>> = OnceLock::new();
    IP.get_or_init(|| find_tool("ip"))
        .as_deref()
        .ok_or_else(|| Skip::new("the `ip` command (iproute2) is not installed"))
}

fn nft_tool() -> Result<&'static Path, Skip> {
    static NFT: OnceLock<Option<PathBuf>> = OnceLock::new();
    NFT.get_or_init(|| find_tool("nft"))
        .as_deref()
        .ok_or_else(|| {
            Skip::new("the `nft` command is not installed (apt-get install -y nftables)")
        })
}

/// Runs `ip ARGS`, bounded; `Err` carries the command and its stderr.
fn ip(args: &[&str]) -> Result<String, String> {
    let tool = ip_tool().map_err(|s| s.0)?;
    let mut cmd = Command::new(tool);
    cmd.args(args);
    checked(&mut cmd)
}

fn checked(cmd: &mut Command) -> Result<String, String> {
    let shown = format!("{cmd:?}");
    match run_bounded(cmd, CMD_TIMEOUT) {
        Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        Ok(out) => Err(format!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("{shown}: {e}")),
    }
}

/// `ip -n NS WORDS...` (`cmdline` split at whitespace), bounded.
fn ipn(ns: &str, cmdline: &str) -> Result<String, String> {
    let mut args = vec!["-n", ns];
    args.extend(cmdline.split_whitespace());
    ip(&args)
}

/// `ip netns exec NS sh -c SCRIPT`, bounded.
fn ns_sh(ns: &str, script: &str) -> Result<String, String> {
    let tool = ip_tool().map_err(|s| s.0)?;
    checked(
        Command::new(tool)
            .args(["netns", "exec", ns, "sh", "-c", script])
            .env("LC_ALL", "C"),
    )
}

/// The effective user id, from /proc/self/status.
fn euid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Start time (clock ticks since boot) of process `pid`, from /proc/PID/stat.
fn start_time(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 2 (comm) is in parentheses and may contain spaces; field 22 is the start time.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// What every test process checks once: can it make namespaces at all?
fn preflight() -> Result<(), Skip> {
    static CHECK: OnceLock<Result<(), Skip>> = OnceLock::new();
    CHECK
        .get_or_init(|| {
            if !cfg!(target_os = "linux") {
                return Err(Skip::new("network namespaces exist only on Linux"));
            }
            if env_flag(SKIP_ENV) {
                return Err(Skip::new(format!("{SKIP_ENV} is set")));
            }
            match euid() {
                Some(0) => {}
                Some(uid) => {
                    return Err(Skip::new(format!(
                        "network namespaces need root (running as uid {uid})"
                    )));
                }
                None => return Err(Skip::new("cannot read the user id from /proc/self/status")),
            }
            ip_tool()?;
            ip(&["-V"]).map_err(|e| Skip::new(format!("`ip` does not run: {e}")))?;
            if !Path::new("/proc/sys/net/ipv6").exists() {
                return Err(Skip::new("IPv6 is disabled in this kernel"));
            }
            collect_stale();
            Ok(())
        })
        .clone()
}

/// A `Command` for the `ip` tool (found in PATH or the sbin folders), in this process's
/// namespace.
pub fn ip_command() -> Command {
    Command::new(ip_tool().map(Path::as_os_str).unwrap_or(OsStr::new("ip")))
}

/// Names of every network namespace listed by `ip netns list` (empty if that fails).
pub fn namespace_names() -> Vec<String> {
    netns_names()
}

fn netns_names() -> Vec<String> {
    ip(&["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Deletes the namespaces of test processes that have exited (a crashed or killed run),
/// once they are old enough.
fn collect_stale() {
    for name in netns_names() {
        let Some(rest) = name.strip_prefix(&format!("{PREFIX}-")) else {
            continue;
        };
        let mut parts = rest.split('-');
        let (Some(pid), Some(start)) = (parts.next(), parts.next()) else {
            continue;
        };
        let alive = start_time(pid).is_some_and(|t| t.to_string() == start);
        if alive {
            continue;
        }
        let age = std::fs::metadata(Path::new("/run/netns").join(&name))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok());
        if age.is_some_and(|a| a >= STALE_AGE) {
            remove_ns(&name);
        }
    }
}

/// Kills every process in namespace `name`, then deletes it; errors are ignored.
fn remove_ns(name: &str) {
    for round in 0..10 {
        let pids: Vec<String> = ip(&["netns", "pids", name])
            .unwrap_or_default()
            .split_whitespace()
            .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
            .map(str::to_owned)
            .collect();
        if pids.is_empty() {
            break;
        }
        let mut kill = Command::new("sh");
        kill.args(["-c", "kill -9 \"$@\" 2>/dev/null; true", "sh"])
            .args(&pids);
        let _ = run_bounded(&mut kill, CMD_TIMEOUT);
        thread::sleep(Duration::from_millis(10 * (round + 1)));
    }
    if let Err(e) = ip(&["netns", "del", name])
        && netns_names().iter().any(|n| n == name)
    {
        eprintln!("netns: could not delete namespace {name}: {e}");
    }
}

// ---------------------------------------------------------------------------------------
// The LAN

/// One host of a [`Lan`]: a network namespace with one interface, `eth0`.
#[derive(Debug, Clone)]
pub struct Host {
    index: usize,
    ns: String,
    v4: Ipv4Addr,
    v6: Ipv6Addr,
    link_local: Ipv6Addr,
    ifindex: u32,
}

/// A bridge and `n` hosts, each in its own network namespace; see the module doc.
#[derive(Debug)]
pub struct Lan {
    switch: String,
    hosts: Vec<Host>,
    /// Every namespace created so far (switch first), for teardown.
    created: Vec<String>,
    net: [u8; 2],
    v6_prefix: [u16; 4],
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Lan {
    /// Builds a LAN of `n` hosts (1 to 250), or says why it cannot.
    pub fn create(n: usize) -> Result<Lan, Skip> {
        assert!((1..=250).contains(&n), "a Lan has 1 to 250 hosts, not {n}");
        preflight()?;
        let pid = std::process::id();
        let start = start_time("self").unwrap_or(0);
        let k = COUNTER.fetch_add(1, Ordering::Relaxed);
        let base = format!("{PREFIX}-{pid}-{start}-{k}");
        // The subnet only makes logs readable: each Lan is its own isolated segment.
        let net = [(16 + pid % 200) as u8, (k % 256) as u8];
        let v6_prefix = [0xfd66, 0x6572, 0x7279, (k % 0x1_0000) as u16];
        let mut lan = Lan {
            switch: format!("{base}-sw"),
            hosts: Vec::with_capacity(n),
            created: Vec::new(),
            net,
            v6_prefix,
        };
        // On error `lan` is dropped here, which deletes what was created.
        lan.build(&base, n).map_err(|e| {
            Skip::new(format!(
                "cannot set up network namespaces (root, iproute2, veth and bridge support \
                 are needed): {e}"
            ))
        })?;
        Ok(lan)
    }

    fn add_ns(&mut self, name: &str) -> Result<(), String> {
        // Leftovers of a crashed run that had the same pid, start time and counter.
        if netns_names().iter().any(|n| n == name) {
            remove_ns(name);
        }
        ip(&["netns", "add", name])?;
        self.created.push(name.to_owned());
        Ok(())
    }

    fn build(&mut self, base: &str, n: usize) -> Result<(), String> {
        let sw = self.switch.clone();
        self.add_ns(&sw)?;
        // The switch needs no addresses; keep it quiet.
        ns_sh(
            &sw,
            "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; \
             echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6",
        )?;
        ipn(
            &sw,
            "link add br0 type bridge mcast_snooping 0 stp_state 0 forward_delay 0",
        )?;
        ipn(&sw, "link set br0 up")?;

        for i in 0..n {
            let ns = format!("{base}-h{i}");
            self.add_ns(&ns)?;
            // Set before eth0 exists, so eth0 inherits it: addresses usable at once.
            ns_sh(
                &ns,
                "for c in all default; do \
                   echo 0 > /proc/sys/net/ipv6/conf/$c/disable_ipv6; \
                   echo 0 > /proc/sys/net/ipv6/conf/$c/accept_dad; \
                 done",
            )?;
            ipn(
                &sw,
                &format!("link add p{i} type veth peer name {IFNAME} netns {ns}"),
            )?;
            ipn(&sw, &format!("link set p{i} master br0 up"))?;
            let v4 = Ipv4Addr::new(10, self.net[0], self.net[1], (i + 1) as u8);
            let v6 = self.v6_addr(i);
            ipn(&ns, "link set lo up")?;
            ipn(&ns, &format!("link set {IFNAME} up"))?;
            ipn(&ns, &format!("addr add {v4}/24 brd + dev {IFNAME}"))?;
            ipn(&ns, &format!("-6 addr add {v6}/64 dev {IFNAME} nodad"))?;
            // Without these, sending to a multicast group or to 255.255.255.255 fails with
            // "network unreachable" (there is no default route).
            ipn(&ns, &format!("route add 224.0.0.0/4 dev {IFNAME}"))?;
            ipn(&ns, &format!("route add 255.255.255.255/32 dev {IFNAME}"))?;
            self.hosts.push(Host {
                index: i,
                ns,
                v4,
                v6,
                link_local: Ipv6Addr::UNSPECIFIED,
                ifindex: 0,
            });
        }
        self.wait_ready()
    }

    /// Waits until every bridge port forwards and every host has its interface index and a
    /// usable (not tentative) link-local address.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let n = self.hosts.len();
        let ports: Vec<String> = (0..n).map(|i| format!("p{i}")).collect();
        let script = format!(
            "for p in {}; do cat /sys/class/net/br0/brif/$p/state; done",
            ports.join(" ")
        );
        loop {
            let states = ns_sh(&self.switch, &script)?;
            // 3 is BR_STATE_FORWARDING.
            if states.split_whitespace().filter(|s| *s == "3").count() == n {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!("bridge ports not forwarding: {states:?}"));
            }
            thread::sleep(Duration::from_millis(20));
        }
        for h in &mut self.hosts {
            let link = ipn(&h.ns, &format!("-o link show dev {IFNAME}"))?;
            h.ifindex = link
                .split(':')
                .next()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| format!("no interface index in {link:?}"))?;
            loop {
                let addrs = ipn(&h.ns, &format!("-o -6 addr show dev {IFNAME} scope link"))?;
                let ready = addrs
                    .lines()
                    .find(|l| !l.contains("tentative"))
                    .and_then(|l| {
                        let mut words = l.split_whitespace();
                        words.find(|w| *w == "inet6")?;
                        words.next()?.split('/').next()?.parse::<Ipv6Addr>().ok()
                    });
                if let Some(a) = ready {
                    h.link_local = a;
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(format!(
                        "no usable link-local address in {}: {addrs:?}",
                        h.ns
                    ));
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    fn v6_addr(&self, i: usize) -> Ipv6Addr {
        let p = self.v6_prefix;
        Ipv6Addr::new(p[0], p[1], p[2], p[3], 0, 0, 0, (i + 1) as u16)
    }

    /// Number of hosts.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Always false: a Lan has at least one host.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Host `i` (panics if out of range).
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// All hosts, in order.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The IPv4 network address, `10.A.B.0` (prefix length 24).
    pub fn subnet_v4(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.net[0], self.net[1], 0)
    }

    /// The IPv4 directed broadcast address, `10.A.B.255`.
    pub fn broadcast_v4(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.net[0], self.net[1], 255)
    }

    /// The IPv6 ULA prefix (length 64), `fd66:6572:7279:K::`.
    pub fn prefix_v6(&self) -> Ipv6Addr {
        let p = self.v6_prefix;
        Ipv6Addr::new(p[0], p[1], p[2], p[3], 0, 0, 0, 0)
    }

    /// The namespace holding the bridge.
    pub fn switch_name(&self) -> &str {
        &self.switch
    }

    /// Every namespace of this Lan (switch and hosts).
    pub fn namespaces(&self) -> Vec<String> {
        self.created.clone()
    }

    /// [`Host::drop_udp_percent`] on host `i`.
    pub fn drop_udp_percent(&self, i: usize, port: u16, percent: u8) -> Result<(), Skip> {
        self.hosts[i].drop_udp_percent(port, percent)
    }

    /// Kills every process left in the Lan's namespaces and deletes them. Idempotent,
    /// never panics; also done on drop.
    pub fn teardown(&mut self) {
        // Hosts first (their veths go with them), then the switch.
        for name in self.created.drain(..).rev() {
            remove_ns(&name);
        }
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        self.teardown();
    }
}

impl Host {
    /// Index in the Lan.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The namespace name (for `ip netns exec`, `ip -n`).
    pub fn name(&self) -> &str {
        &self.ns
    }

    /// `10.A.B.(i+1)`.
    pub fn addr_v4(&self) -> Ipv4Addr {
        self.v4
    }

    /// The ULA `fd66:6572:7279:K::(i+1)`.
    pub fn addr_v6(&self) -> Ipv6Addr {
        self.v6
    }

    /// The kernel-assigned `fe80::` address of `eth0`.
    pub fn link_local_v6(&self) -> Ipv6Addr {
        self.link_local
    }

    /// The interface name inside the namespace: `eth0`.
    pub fn ifname(&self) -> &'static str {
        IFNAME
    }

    /// The interface index of `eth0` inside the namespace (IPv6 scope id, multicast joins).
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// `ip netns exec NAME program`: add arguments, environment (inherited by default,
    /// `ip netns exec` keeps it), current folder and stdio as usual. Processes still running in the namespace when the Lan is dropped are
    /// killed; wrap the child in [`Spawned`] to kill it sooner.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = ip_command();
        cmd.args(["netns", "exec", &self.ns]).arg(program);
        cmd
    }

    /// Drops `percent`% of the UDP datagrams arriving for `port` (IPv4 and IPv6), at random,
    /// with an nftables rule on the namespace's input hook (broadcast and multicast
    /// included). Rules add up. `Err` (to skip that part) when nft is missing or unusable.
    pub fn drop_udp_percent(&self, port: u16, percent: u8) -> Result<(), Skip> {
        self.add_drop_rule(&format!("udp dport {port}"), percent)
    }

    /// Drops `percent`% of all UDP datagrams arriving at this host, whatever their port.
    pub fn drop_all_udp_percent(&self, percent: u8) -> Result<(), Skip> {
        self.add_drop_rule("meta l4proto udp", percent)
    }

    fn nft(&self, words: &str) -> Result<String, Skip> {
        let nft = nft_tool()?;
        let mut cmd = self.command(nft);
        // The chain's `{ ...; }` is one word for nft; nothing else has spaces.
        match words.split_once(" { ") {
            Some((head, body)) => cmd.args(head.split_whitespace()).arg(format!("{{ {body}")),
            None => cmd.args(words.split_whitespace()),
        };
        checked(&mut cmd).map_err(Skip::new)
    }

    fn add_drop_rule(&self, matcher: &str, percent: u8) -> Result<(), Skip> {
        assert!(percent <= 100, "percent {percent} > 100");
        self.nft(&format!("add table inet {NFT_TABLE}"))
            .map_err(|e| Skip::new(format!("nftables does not work in a namespace: {e}")))?;
        self.nft(&format!(
            "add chain inet {NFT_TABLE} input {{ type filter hook input priority 0 ; policy accept ; }}"
        ))?;
        self.nft(&format!(
            "add rule inet {NFT_TABLE} input {matcher} numgen random mod 100 lt {percent} counter drop"
        ))?;
        Ok(())
    }

    /// How many UDP datagrams the rules of [`Host::drop_udp_percent`] and
    /// [`Host::drop_all_udp_percent`] have dropped so far (0 if there are none).
    pub fn udp_dropped(&self) -> Result<u64, Skip> {
        let listed = match self.nft(&format!("list table inet {NFT_TABLE}")) {
            Ok(listed) => listed,
            Err(_) if self.nft("list tables").is_ok() => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut dropped = 0;
        for line in listed.lines().filter(|l| l.contains(" drop")) {
            let mut words = line.split_whitespace();
            if words.any(|w| w == "packets") {
                dropped += words
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
        Ok(dropped)
    }

    /// Removes every rule added by [`Host::drop_udp_percent`] and
    /// [`Host::drop_all_udp_percent`].
    pub fn clear_udp_drops(&self) -> Result<(), Skip> {
        self.nft(&format!("delete table inet {NFT_TABLE}"))
            .map(drop)
    }

    /// Starts a UDP receiver in this namespace bound to `bind` (e.g. `0.0.0.0:PORT`, or
    /// `[::]:PORT`, which also receives IPv4), joined to multicast group `join` if given (on
    /// `eth0`). Returns once the socket is bound and joined.
    pub fn udp_listen(&self, bind: SocketAddr, join: Option<IpAddr>) -> io::Result<UdpProbe> {
        let mut spec = format!(
            "recv;bind={bind};iface4={};ifindex={}",
            self.v4, self.ifindex
        );
        if let Some(g) = join {
            spec.push_str(&format!(";join={g}"));
        }
        UdpProbe::start(self, &spec)
    }

    /// Sends `count` datagrams carrying `payload` to `to` from this namespace, `gap` apart,
    /// from an ephemeral port with broadcast allowed; IPv4 multicast leaves through `eth0`
    /// (route), IPv6 link-local and multicast destinations get `eth0`'s scope id unless
    /// `to` has one. Returns when all are sent.
    pub fn udp_send(
        &self,
        to: SocketAddr,
        payload: &[u8],
        count: usize,
        gap: Duration,
    ) -> io::Result<()> {
        let scope = match to {
            SocketAddr::V6(a) if a.scope_id() != 0 => a.scope_id(),
            SocketAddr::V6(a) if a.ip().is_multicast() || a.ip().is_unicast_link_local() => {
                self.ifindex
            }
            _ => 0,
        };
        self.udp_send_raw(to, scope, payload, count, gap)
    }

    /// As [`Host::udp_send`] but with exactly the scope id given (0: let the kernel route).
    pub fn udp_send_raw(
        &self,
        to: SocketAddr,
        scope: u32,
        payload: &[u8],
        count: usize,
        gap: Duration,
    ) -> io::Result<()> {
        let spec = format!(
            "send;to={ip};port={port};scope={scope};count={count};gap_us={gap};payload={hex}",
            ip = to.ip(),
            port = to.port(),
            gap = gap.as_micros(),
            hex = hex(payload),
        );
        let exe = std::env::current_exe()?;
        let mut cmd = self.command(exe);
        cmd.args([HELPER_TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env(HELPER_ENV, &spec);
        let timeout = gap * count as u32 + Duration::from_secs(30);
        let out = run_bounded(&mut cmd, timeout)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let sent = format!("NETNS SENT {count}");
        if out.status.success() && stdout.lines().any(|l| l.ends_with(&sent)) {
            return Ok(());
        }
        Err(io::Error::other(format!(
            "udp_send helper in {} failed ({}); stdout: {} stderr: {}{}",
            self.ns,
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim(),
            missing_helper_hint(&stdout),
        )))
    }
}

fn missing_helper_hint(stdout: &str) -> String {
    if stdout.contains("running 0 tests") {
        format!(
            " (the test crate has no `#[test] fn {HELPER_TEST}() {{ netns::helper_main(); }}` \
             at its root)"
        )
    } else {
        String::new()
    }
}

// ---------------------------------------------------------------------------------------
// UDP probes

/// A datagram received by a [`UdpProbe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// Sender address (IPv4 senders appear as IPv4 even on a `[::]` socket).
    pub from: SocketAddr,
    /// Payload.
    pub data: Vec<u8>,
}

#[derive(Default)]
struct ProbeState {
    ready: bool,
    done: bool,
    error: Option<String>,
    got: Vec<Datagram>,
}

/// A UDP receiver running in a namespace (see [`Host::udp_listen`]); killed when dropped.
pub struct UdpProbe {
    child: Spawned,
    stdin: Option<ChildStdin>,
    state: Arc<(Mutex<ProbeState>, Condvar)>,
    stderr: mpsc::Receiver<Vec<u8>>,
    ns: String,
}

impl UdpProbe {
    fn start(host: &Host, spec: &str) -> io::Result<Self> {
        let exe = std::env::current_exe()?;
        let mut cmd = host.command(exe);
        cmd.args([HELPER_TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env(HELPER_ENV, spec)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = Spawned::spawn(&mut cmd)?;
        let stdin = child.stdin.take();
        let stderr = drain(child.stderr.take());
        let state = Arc::new((Mutex::new(ProbeState::default()), Condvar::new()));
        if let Some(out) = child.stdout.take() {
            let state = Arc::clone(&state);
            thread::spawn(move || read_probe_output(out, &state));
        }
        let probe = Self {
            child,
            stdin,
            state,
            stderr,
            ns: host.ns.clone(),
        };
        probe.wait_state(HELPER_START, |s| s.ready || s.done)?;
        let s = probe.lock();
        if s.ready {
            drop(s);
            return Ok(probe);
        }
        let msg = s.error.clone().unwrap_or_default();
        drop(s);
        Err(probe.failure(&format!("did not start: {msg}")))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ProbeState> {
        self.state.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `cond` holds or `timeout` passes; `Ok(true)` if it holds.
    fn wait_state(
        &self,
        timeout: Duration,
        cond: impl Fn(&ProbeState) -> bool,
    ) -> io::Result<bool> {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.state;
        let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if cond(&s) {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            s = cv
                .wait_timeout(s, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    fn failure(mut self, what: &str) -> io::Error {
        let _ = self.child.kill();
        let _ = self.child.wait_timeout(Duration::from_secs(5));
        let stderr = collect(&self.stderr, Duration::from_secs(1));
        let stderr = String::from_utf8_lossy(&stderr);
        io::Error::other(format!(
            "UDP probe in {} {what}; stderr: {}{}",
            self.ns,
            stderr.trim(),
            missing_helper_hint(&stderr),
        ))
    }

    /// The datagrams received so far.
    pub fn received(&self) -> Vec<Datagram> {
        self.lock().got.clone()
    }

    /// Waits at most `timeout` until at least `count` datagrams have arrived; returns how
    /// many have.
    pub fn wait_for(&self, count: usize, timeout: Duration) -> usize {
        let _ = self.wait_state(timeout, |s| s.got.len() >= count || s.done);
        self.lock().got.len()
    }

    /// Stops the receiver (after `settle`, for datagrams still in flight) and returns every
    /// datagram it received.
    pub fn finish(mut self, settle: Duration) -> io::Result<Vec<Datagram>> {
        thread::sleep(settle);
        // EOF on its stdin tells the helper to drain its socket and exit.
        drop(self.stdin.take());
        let done = self.wait_state(Duration::from_secs(20), |s| s.done)?;
        let s = self.lock();
        let error = s.error.clone();
        let got = s.got.clone();
        drop(s);
        match (done, error) {
            (true, None) => {
                let _ = self.child.wait_timeout(Duration::from_secs(5));
                Ok(got)
            }
            (true, Some(e)) => Err(self.failure(&format!("failed: {e}"))),
            (false, _) => Err(self.failure("did not stop")),
        }
    }
}

fn read_probe_output(out: impl Read, state: &(Mutex<ProbeState>, Condvar)) {
    let (lock, cv) = state;
    for line in BufReader::new(out).lines() {
        let Ok(line) = line else { break };
        let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
        // The test harness may print "test netns_helper ... " before the first line.
        let Some((_, msg)) = line.split_once("NETNS ") else {
            let hint = missing_helper_hint(&line);
            if !hint.is_empty() {
                s.error = Some(hint.trim().to_owned());
            }
            continue;
        };
        if msg == "READY" {
            s.ready = true;
        } else if msg == "DONE" {
            s.done = true;
        } else if let Some(e) = msg.strip_prefix("ERROR ") {
            s.error = Some(e.to_owned());
        } else if let Some(d) = msg.strip_prefix("DGRAM ").and_then(parse_dgram) {
            s.got.push(d);
        }
        cv.notify_all();
    }
    let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
    if !s.done {
        s.done = true;
        if s.error.is_none() {
            s.error = Some("exited without finishing (killed?)".to_owned());
        }
    }
    cv.notify_all();
}

/// `IP PORT SCOPE HEX`
fn parse_dgram(s: &str) -> Option<Datagram> {
    let mut w = s.split(' ');
    let ip: IpAddr = w.next()?.parse().ok()?;
    let port: u16 = w.next()?.parse().ok()?;
    let scope: u32 = w.next()?.parse().ok()?;
    let data = unhex(w.next()?)?;
    let from = match ip {
        IpAddr::V4(a) => SocketAddr::V4(SocketAddrV4::new(a, port)),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
            None => SocketAddr::V6(SocketAddrV6::new(a, port, 0, scope)),
        },
    };
    Some(Datagram { from, data })
}

fn hex(data: &[u8]) -> String {
    if data.is_empty() {
        return "-".to_owned();
    }
    data.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s == "-" {
        return Some(Vec::new());
    }
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Helper roles (run inside a namespace by re-executing the test binary)

/// Call from `#[test] fn netns_helper()` at the test crate's root. In an ordinary test run
/// it returns at once; in a process started by the harness it plays its helper role and
/// exits the process.
pub fn helper_main() {
    let Some(spec) = std::env::var_os(HELPER_ENV) else {
        return;
    };
    let spec = spec.to_string_lossy().into_owned();
    let code = match run_helper(&spec) {
        Ok(()) => 0,
        Err(e) => {
            emit(&format!("ERROR {e}"));
            emit("DONE");
            1
        }
    };
    std::process::exit(code);
}

/// One protocol line on stdout (bypassing the test harness's output capture).
fn emit(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "\nNETNS {line}");
    let _ = out.flush();
}

fn run_helper(spec: &str) -> Result<(), String> {
    let mut parts = spec.split(';');
    let role = parts.next().unwrap_or_default();
    let kv: Vec<(&str, &str)> = parts.filter_map(|p| p.split_once('=')).collect();
    let get = |k: &str| kv.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
    let need = |k: &str| get(k).ok_or_else(|| format!("helper spec {spec:?} lacks {k}"));
    fn parse<T: std::str::FromStr>(k: &str, v: &str) -> Result<T, String> {
        v.parse().map_err(|_| format!("bad {k}: {v:?}"))
    }
    match role {
        "recv" => {
            let bind: SocketAddr = parse("bind", need("bind")?)?;
            let iface4: Ipv4Addr = parse("iface4", need("iface4")?)?;
            let ifindex: u32 = parse("ifindex", need("ifindex")?)?;
            let join: Option<IpAddr> = get("join").map(|g| parse("join", g)).transpose()?;
            helper_recv(bind, join, iface4, ifindex).map_err(|e| e.to_string())
        }
        "send" => {
            let ip: IpAddr = parse("to", need("to")?)?;
            let port: u16 = parse("port", need("port")?)?;
            let scope: u32 = parse("scope", need("scope")?)?;
            let count: usize = parse("count", need("count")?)?;
            let gap_us: u64 = parse("gap_us", need("gap_us")?)?;
            let payload = unhex(need("payload")?).ok_or("bad payload")?;
            let to = match ip {
                IpAddr::V4(a) => SocketAddr::V4(SocketAddrV4::new(a, port)),
                IpAddr::V6(a) => SocketAddr::V6(SocketAddrV6::new(a, port, 0, scope)),
            };
            helper_send(to, &payload, count, Duration::from_micros(gap_us))
                .map_err(|e| format!("sending to {to}: {e}"))
        }
        other => Err(format!("unknown helper role {other:?}")),
    }
}

fn helper_recv(
    bind: SocketAddr,
    join: Option<IpAddr>,
    iface4: Ipv4Addr,
    ifindex: u32,
) -> io::Result<()> {
    let sock = UdpSocket::bind(bind)?;
    match join {
        Some(IpAddr::V4(g)) => sock.join_multicast_v4(&g, &iface4)?,
        Some(IpAddr::V6(g)) => sock.join_multicast_v6(&g, ifindex)?,
        None => {}
    }
    sock.set_read_timeout(Some(Duration::from_millis(50)))?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let _ = io::copy(&mut io::stdin().lock(), &mut io::sink());
            stop.store(true, Ordering::SeqCst);
        });
    }
    emit("READY");
    let born = Instant::now();
    let mut buf = vec![0u8; 65536];
    loop {
        let stopping = stop.load(Ordering::SeqCst) || born.elapsed() > HELPER_MAX_LIFE;
        if stopping {
            // Take what is already queued, then leave.
            sock.set_nonblocking(true)?;
        }
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                let (ip, scope) = match from {
                    SocketAddr::V4(a) => (IpAddr::V4(*a.ip()), 0),
                    SocketAddr::V6(a) => (IpAddr::V6(*a.ip()), a.scope_id()),
                };
                emit(&format!(
                    "DGRAM {ip} {} {scope} {}",
                    from.port(),
                    hex(&buf[..n])
                ));
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if stopping {
                    break;
                }
            }
            Err(e) => return Err(e),
        }
    }
    emit("DONE");
    Ok(())
}

fn helper_send(to: SocketAddr, payload: &[u8], count: usize, gap: Duration) -> io::Result<()> {
    let local: SocketAddr = match to {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(local)?;
    if to.is_ipv4() {
        sock.set_broadcast(true)?;
    }
    for i in 0..count {
        if i > 0 && !gap.is_zero() {
            thread::sleep(gap);
        }
        sock.send_to(payload, to)?;
    }
    emit(&format!("SENT {count}"));
    Ok(())
}
