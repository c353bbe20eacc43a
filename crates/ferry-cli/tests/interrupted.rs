//! A 256 MiB transfer through the real binaries, interrupted three times in three ways (the
//! client killed with SIGKILL, the server killed with SIGKILL and restarted on the same folder
//! and port, the connection cut), then completed by one more run: byte-identical, no partial
//! files left, and only the missing bytes (plus at most one chunk per interruption) crossed
//! the wire, counted by a TCP proxy every run goes through.
//!
//! The proxy decides where each interruption lands: it stops reading the bulk direction of a
//! connection after a byte budget, so a run is held mid-file until the test has interrupted it
//! (never after completion), and what the receiver holds can be awaited exactly.
//!
//! The harness (proxy, runs, interruptions) is generic over the transfer: [`Transfer`] says
//! which command to run, which way the content flows and how much the receiver holds.
// Helpers outside #[test] functions unwrap too: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{Env, Out, SHORT, Served, hash_file, upload_parts, write_pattern};

const MIB: u64 = 1 << 20;
/// The content: 256 MiB.
const LEN: u64 = 256 * MIB;
/// Bytes of data per transfer frame.
const CHUNK: u64 = ferry::pipe::CHUNK as u64;
/// Wire bytes per connection that carry no content, in both directions together: the TLS 1.3
/// handshake (with the server's certificate), authentication, stat and get or put requests
/// and replies, close_notify. Measured at about 4 KiB; 16 KiB allowed.
const HANDSHAKE: u64 = 16 * 1024;
/// Framing of one data frame on the wire: its 5-byte frame header, and TLS 1.3 record
/// overhead (5-byte header, content type byte, 16-byte tag) on each of the at most
/// `CHUNK / 16 KiB + 1` records the frame fills (the header may travel in a record of its own).
const FRAME_OVERHEAD: u64 = 5 + 22 * (CHUNK / 16384 + 1);
/// Bound on any one run of the transfer, and on any wait inside one.
const RUN: Duration = Duration::from_secs(300);
/// The server's log filter: its debug line for an interrupted upload says when it has let
/// go of the part and how many bytes the part keeps.
const SERVER_LOG: &str = "info,ferry::engine::put=debug";

/// Wire bytes that carry `content` bytes of content in data frames, beyond the content.
fn framing(content: u64) -> u64 {
    content.div_ceil(CHUNK) * FRAME_OVERHEAD
}

// ---------------------------------------------------------------------------------------------
// The counting proxy.

/// A direction through the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    /// Client to server.
    Up = 0,
    /// Server to client.
    Down = 1,
}

/// A TCP proxy in front of the server. It counts every byte it forwards, per direction, and
/// stops *reading* a direction of a connection once that connection's budget for it is spent
/// (so the sender's bytes stay in its own socket buffers: they have not crossed) until the
/// test releases or cuts the connection.
struct Proxy {
    addr: String,
    shared: Arc<ProxyShared>,
}

struct ProxyShared {
    upstream: String,
    /// Budgets given to the next connection accepted, per direction.
    next_budget: Mutex<[Option<u64>; 2]>,
    conns: Mutex<Vec<Arc<Conn>>>,
    total: [AtomicU64; 2],
}

/// One proxied connection.
struct Conn {
    /// The client's socket and the one to the server, kept to shut both down; closed (taken)
    /// when the connection is cut.
    ends: Mutex<Option<[TcpStream; 2]>>,
    passed: [AtomicU64; 2],
    state: Mutex<ConnState>,
    changed: Condvar,
}

struct ConnState {
    budget: [Option<u64>; 2],
    closed: bool,
}

impl Proxy {
    fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let shared = Arc::new(ProxyShared {
            upstream: upstream.to_owned(),
            next_budget: Mutex::new([None, None]),
            conns: Mutex::new(Vec::new()),
            total: [AtomicU64::new(0), AtomicU64::new(0)],
        });
        let s = shared.clone();
        // The accept loop lives as long as the test process; each connection is bounded by
        // its pumps' deadlines.
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&s.upstream) else {
                    continue;
                };
                let budget = *s.next_budget.lock().unwrap();
                let conn = Arc::new(Conn {
                    ends: Mutex::new(Some([client, server])),
                    passed: [AtomicU64::new(0), AtomicU64::new(0)],
                    state: Mutex::new(ConnState {
                        budget,
                        closed: false,
                    }),
                    changed: Condvar::new(),
                });
                s.conns.lock().unwrap().push(conn.clone());
                for dir in [Dir::Up, Dir::Down] {
                    let (conn, s) = (conn.clone(), s.clone());
                    thread::spawn(move || conn.pump(dir, &s.total[dir as usize]));
                }
            }
        });
        Self { addr, shared }
    }

    /// Budgets for the connections accepted from now on (`None`: unlimited).
    fn set_budget(&self, dir: Dir, budget: Option<u64>) {
        self.shared.next_budget.lock().unwrap()[dir as usize] = budget;
    }

    /// Waits (bounded) for the `n`th connection (from 1) and returns it.
    fn conn(&self, n: usize) -> Arc<Conn> {
        let deadline = Instant::now() + SHORT;
        loop {
            if let Some(c) = self.shared.conns.lock().unwrap().get(n - 1) {
                return c.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no connection {n} within {SHORT:?}"
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn conns(&self) -> usize {
        self.shared.conns.lock().unwrap().len()
    }

    /// Bytes forwarded in `dir` over all connections so far.
    fn total(&self, dir: Dir) -> u64 {
        self.shared.total[dir as usize].load(Ordering::SeqCst)
    }
}

impl Conn {
    /// Copies bytes in `dir` until either side ends, the connection is cut, or a spent budget
    /// has been held for [`RUN`]; then closes both sides.
    fn pump(&self, dir: Dir, total: &AtomicU64) {
        let (from, to) = match dir {
            Dir::Up => (0, 1),
            Dir::Down => (1, 0),
        };
        let ends = self
            .ends
            .lock()
            .unwrap()
            .as_ref()
            .map(|e| (e[from].try_clone(), e[to].try_clone()));
        let Some((Ok(mut from), Ok(mut to))) = ends else {
            return self.cut();
        };
        let d = dir as usize;
        let mut buf = vec![0u8; 64 * 1024];
        let deadline = Instant::now() + RUN;
        'copy: loop {
            let allowed = {
                let mut st = self.state.lock().unwrap();
                loop {
                    if st.closed {
                        break 'copy;
                    }
                    let left = match st.budget[d] {
                        None => u64::MAX,
                        Some(b) => b - self.passed[d].load(Ordering::SeqCst),
                    };
                    if left > 0 {
                        break left;
                    }
                    let now = Instant::now();
                    if now >= deadline {
                        break 'copy;
                    }
                    st = self.changed.wait_timeout(st, deadline - now).unwrap().0;
                }
            };
            let want = buf
                .len()
                .min(usize::try_from(allowed).unwrap_or(usize::MAX));
            let n = match from.read(&mut buf[..want]) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
            self.passed[d].fetch_add(n as u64, Ordering::SeqCst);
            total.fetch_add(n as u64, Ordering::SeqCst);
        }
        self.cut();
    }

    /// Whether `dir` has spent its whole budget.
    fn held(&self, dir: Dir) -> bool {
        let st = self.state.lock().unwrap();
        st.budget[dir as usize] == Some(self.passed[dir as usize].load(Ordering::SeqCst))
    }

    /// Lifts the budget of `dir`: bytes flow again.
    fn release(&self, dir: Dir) {
        self.state.lock().unwrap().budget[dir as usize] = None;
        self.changed.notify_all();
    }

    /// Cuts the connection: both sides see it end, without any TLS close_notify. The sockets
    /// are shut down, which wakes the pumps (they then drop their copies), and closed: a side
    /// that goes on sending (a client in the middle of a put) is answered with a reset, as a
    /// dead peer's host would answer it, instead of filling a socket nobody reads.
    fn cut(&self) {
        self.state.lock().unwrap().closed = true;
        self.changed.notify_all();
        if let Some(ends) = self.ends.lock().unwrap().take() {
            for end in &ends {
                let _ = end.shutdown(Shutdown::Both);
            }
        }
    }

    fn passed(&self, dir: Dir) -> u64 {
        self.passed[dir as usize].load(Ordering::SeqCst)
    }
}

// ---------------------------------------------------------------------------------------------
// The rig: a server folder, `ferry serve` on it, the proxy in front.

struct Rig {
    env: Env,
    server: Served,
    /// The server's listening address: a restart listens here again.
    server_addr: String,
    proxy: Proxy,
    /// A writer credential that talks to the server directly (to set up content).
    direct_writer: PathBuf,
}

impl Rig {
    fn new() -> Self {
        let env = Env::new();
        env.init();
        let server = Served::start_with(&env, &[("FERRY_LOG", SERVER_LOG)]);
        let server_addr = server.addr.clone();
        let proxy = Proxy::start(&server_addr);
        let direct_writer = env.issue("setup", "writer", &server_addr);
        Self {
            env,
            server,
            server_addr,
            proxy,
            direct_writer,
        }
    }

    /// Issues a credential that names the proxy as the server's address.
    fn proxied_cred(&self, name: &str, role: &str) -> PathBuf {
        self.env.issue(name, role, &self.proxy.addr)
    }

    /// SIGKILLs the server and waits for it to be gone.
    fn kill_server(&mut self) {
        self.server.signal("KILL");
        assert!(
            self.server.wait(SHORT).is_some(),
            "the server outlived SIGKILL"
        );
    }

    /// Starts the server again on the same folder and the same address.
    fn restart_server(&mut self) {
        let mut cmd = self
            .env
            .command(&["serve", "--listen", self.server_addr.as_str()]);
        cmd.env("FERRY_LOG", SERVER_LOG);
        self.server = Served::spawn(cmd);
        assert_eq!(self.server.addr, self.server_addr);
    }

    /// Puts `len` pseudo-random bytes (BLAKE3 XOF of `seed`) as `source` straight to the
    /// server, streamed through standard input (never held in memory or on disk); returns
    /// their hash.
    fn put_pattern(&self, source: &str, seed: &str, len: u64) -> blake3::Hash {
        let mut cmd = self.env.command(&["put", source]);
        cmd.args(["--cred", self.direct_writer.to_str().unwrap()]);
        cmd.stdin(Stdio::piped());
        let mut run = Running::spawn(cmd);
        let mut stdin = run.child.stdin.take().unwrap();
        let mut xof = blake3::Hasher::new().update(seed.as_bytes()).finalize_xof();
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; MIB as usize];
        let mut left = len;
        while left > 0 {
            let n = left.min(MIB) as usize;
            xof.fill(&mut buf[..n]);
            hasher.update(&buf[..n]);
            stdin.write_all(&buf[..n]).unwrap();
            left -= n as u64;
        }
        drop(stdin);
        let out = run.finish(RUN).ok();
        assert!(
            out.text()
                .starts_with(&format!("stored {source} v1 ({len} bytes")),
            "{}",
            out.text()
        );
        hasher.finalize()
    }
}

/// A `ferry` child whose output is collected as it runs.
struct Running {
    child: Child,
    out: Option<JoinHandle<Vec<u8>>>,
    err: Option<JoinHandle<Vec<u8>>>,
}

impl Running {
    fn spawn(mut cmd: Command) -> Self {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let collect = |mut r: Box<dyn Read + Send>| {
            thread::spawn(move || {
                let mut v = Vec::new();
                let _ = r.read_to_end(&mut v);
                v
            })
        };
        let out = collect(Box::new(child.stdout.take().unwrap()));
        let err = collect(Box::new(child.stderr.take().unwrap()));
        Self {
            child,
            out: Some(out),
            err: Some(err),
        }
    }

    /// Waits at most `timeout` for the child to exit (killing it and failing if it does not).
    fn finish(mut self, timeout: Duration) -> Out {
        let status = common::wait_timeout(&mut self.child, timeout);
        if status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let stdout = self.out.take().unwrap().join().unwrap();
        let stderr =
            String::from_utf8_lossy(&self.err.take().unwrap().join().unwrap()).into_owned();
        let Some(status) = status else {
            panic!("the run did not finish within {timeout:?}; stderr: {stderr}");
        };
        Out {
            code: status.code().unwrap_or(-1),
            stdout,
            stderr,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The generic interruption harness.

/// A transfer the harness can run, interrupt and check. The same command is run every time:
/// resuming is the command's own business.
trait Transfer {
    /// The direction the content flows through the proxy.
    fn bulk(&self) -> Dir;
    /// The command for one run (its credential must name the proxy).
    fn command(&self, env: &Env) -> Command;
    /// Content bytes the receiving side holds for a later run to continue from.
    fn held(&self) -> u64;
    /// What a run that continues from `at` bytes says on standard error.
    fn resume_note(&self, at: u64) -> String;
    /// Waits (bounded) after an interruption until the receiver has stopped adding to what it
    /// holds, which is then at least `floor` bytes. A receiver that is the test's own
    /// client process has stopped when that process has; the default does nothing.
    fn settle(&self, _rig: &Rig, _way: Interruption, _floor: u64) {}
    /// Checks what an interrupted run left: the kept progress, nothing passed off as done.
    fn check_interrupted(&self, env: &Env, out: Option<&Out>);
    /// Checks the finished transfer: the whole content, byte-identical, nothing left over.
    fn check_done(&self, env: &Env);
}

/// The three ways a run is interrupted.
#[derive(Clone, Copy, Debug)]
enum Interruption {
    /// The client process is killed with SIGKILL.
    KillClient,
    /// The server process is killed with SIGKILL, and started again on the same folder and
    /// address once the client has noticed.
    KillServer,
    /// The connection is cut in the network (no TLS close_notify either way).
    Cut,
}

/// What crossed the wire, for the assertions and the log.
struct WireCount {
    /// Bytes (both directions) per run, the finishing run last.
    per_run: Vec<u64>,
    /// What the receiver held after each interrupted run.
    held: Vec<u64>,
    total: u64,
    /// Of `total`, the bytes that went client to server.
    up: u64,
    conns: usize,
}

/// Runs `t` three times, interrupting each run in one of the three ways once the receiver
/// holds about 1/4, 1/2 and 3/4 of `len` bytes, then once more to completion. Checks every
/// rerun continues from exactly what the receiver held.
fn interrupt_three_times(rig: &mut Rig, t: &dyn Transfer, len: u64) -> WireCount {
    let bulk = t.bulk();
    let ways = [
        Interruption::KillClient,
        Interruption::KillServer,
        Interruption::Cut,
    ];
    let mut per_run = Vec::new();
    let mut held_after = Vec::new();
    let mut before = 0u64;
    for (i, way) in ways.into_iter().enumerate() {
        let mark = len / 4 * (i as u64 + 1);
        assert!(
            before < mark,
            "run {i} starts at {before}, past its mark {mark}"
        );
        // The bulk direction of this run's connection stops after `budget` bytes: the
        // handshake and the content up to the mark.
        let budget = mark - before;
        rig.proxy.set_budget(bulk, Some(budget));
        let wire_before = rig.proxy.total(Dir::Up) + rig.proxy.total(Dir::Down);
        let run_start = Instant::now();
        let mut run = Running::spawn(t.command(&rig.env));
        let conn = rig.proxy.conn(i + 1);
        // The receiver holds everything that crossed except the handshake, the framing and
        // at most one incomplete frame.
        let floor = before + budget - HANDSHAKE - framing(budget) - CHUNK;
        let deadline = Instant::now() + RUN;
        while !(conn.held(bulk) && t.held() >= floor) {
            // A run that threw away what the receiver held would only be caught at the
            // deadline otherwise.
            assert!(
                t.held() >= before,
                "run {i}: the receiver's {before} bytes shrank to {}: not continued",
                t.held()
            );
            if let Some(status) = run.child.try_wait().unwrap() {
                let out = run.finish(SHORT);
                panic!("run {i} ended ({status}) before it was interrupted: {out:?}");
            }
            assert!(
                Instant::now() < deadline,
                "run {i}: the receiver holds {} of the {floor} bytes it should by now \
                 ({} bytes passed)",
                t.held(),
                conn.passed(bulk)
            );
            thread::sleep(Duration::from_millis(2));
        }
        let out = match way {
            Interruption::KillClient => {
                run.child.kill().unwrap(); // SIGKILL
                run.child.wait().unwrap();
                drop(run);
                // What the dead client's socket still held reaches the server, then the end
                // (the proxy only notices the end in a direction it reads).
                conn.release(Dir::Up);
                None
            }
            Interruption::KillServer => {
                rig.kill_server();
                // What the dead server's socket still held reaches the client, then the end.
                conn.release(bulk);
                let out = run.finish(RUN);
                rig.restart_server();
                Some(out)
            }
            Interruption::Cut => {
                conn.cut();
                Some(run.finish(RUN))
            }
        };
        if let Some(out) = &out {
            assert_ne!(out.code, 0, "run {i} ({way:?}) succeeded: {}", out.stderr);
            if i > 0 {
                assert!(
                    out.stderr.contains(&t.resume_note(before)),
                    "run {i} did not continue from {before}: {}",
                    out.stderr
                );
            }
        }
        t.settle(rig, way, floor);
        t.check_interrupted(&rig.env, out.as_ref());
        let held = t.held();
        eprintln!(
            "run {i} ({way:?}): held {before} -> {held} bytes; wire {} bytes; {:?}",
            rig.proxy.total(Dir::Up) + rig.proxy.total(Dir::Down) - wire_before,
            run_start.elapsed()
        );
        assert!(
            held >= floor && held < len,
            "run {i} left {held} bytes (floor {floor})"
        );
        per_run.push(rig.proxy.total(Dir::Up) + rig.proxy.total(Dir::Down) - wire_before);
        held_after.push(held);
        before = held;
    }

    // The finishing run, unhindered.
    rig.proxy.set_budget(bulk, None);
    let wire_before = rig.proxy.total(Dir::Up) + rig.proxy.total(Dir::Down);
    let out = Running::spawn(t.command(&rig.env)).finish(RUN).ok();
    assert!(
        out.stderr.contains(&t.resume_note(before)),
        "the last run did not continue from {before}: {}",
        out.stderr
    );
    t.check_done(&rig.env);
    let total = rig.proxy.total(Dir::Up) + rig.proxy.total(Dir::Down);
    per_run.push(total - wire_before);
    WireCount {
        per_run,
        held: held_after,
        total,
        up: rig.proxy.total(Dir::Up),
        conns: rig.proxy.conns(),
    }
}

/// Asserts the wire count of a transfer of `len` bytes interrupted three times: at most the
/// content, one chunk per interruption, the handshake of every connection, and the framing.
fn assert_wire(w: &WireCount, len: u64) {
    let interruptions = 3;
    assert_eq!(w.conns, 4, "one connection per run");
    let allowed = len
        + interruptions * CHUNK
        + w.conns as u64 * HANDSHAKE
        + framing(len + interruptions * CHUNK)
        + interruptions * FRAME_OVERHEAD;
    eprintln!(
        "wire: {} bytes for {len} of content ({} over; {} up, {} down), allowed {allowed}; \
         per run {:?}; held after each interruption {:?}",
        w.total,
        w.total as i64 - len as i64,
        w.up,
        w.total - w.up,
        w.per_run,
        w.held
    );
    assert!(
        w.total <= allowed,
        "{} bytes crossed the wire for {len} bytes of content (allowed {allowed})",
        w.total
    );
    assert!(w.total >= len, "fewer bytes than the content crossed");
}

// ---------------------------------------------------------------------------------------------
// The get half.

/// `ferry get SOURCE -o FILE` with a credential that goes through the proxy.
struct GetTransfer {
    source: String,
    cred: PathBuf,
    dst: PathBuf,
    part: PathBuf,
    meta: PathBuf,
    want: blake3::Hash,
    len: u64,
}

impl GetTransfer {
    fn new(rig: &Rig, source: &str, dst: PathBuf, want: blake3::Hash, len: u64) -> Self {
        let name = dst.file_name().unwrap().to_str().unwrap().to_owned();
        Self {
            source: source.to_owned(),
            cred: rig.proxied_cred("reader", "reader"),
            part: dst.with_file_name(format!(".{name}.ferry-partial")),
            meta: dst.with_file_name(format!(".{name}.ferry-partial.toml")),
            dst,
            want,
            len,
        }
    }
}

impl Transfer for GetTransfer {
    fn bulk(&self) -> Dir {
        Dir::Down
    }

    fn command(&self, env: &Env) -> Command {
        let mut c = env.command(&["get", &self.source, "-o", self.dst.to_str().unwrap()]);
        // Each interruption ends the run (no retries of its own): the rerun resumes.
        c.args(["--cred", self.cred.to_str().unwrap(), "--retries", "0"]);
        c.stdin(Stdio::null());
        c
    }

    fn held(&self) -> u64 {
        std::fs::metadata(&self.part).map_or(0, |m| m.len())
    }

    fn resume_note(&self, at: u64) -> String {
        format!("resuming at {at} bytes")
    }

    fn check_interrupted(&self, _env: &Env, out: Option<&Out>) {
        assert!(!self.dst.exists(), "an interrupted get created its target");
        assert!(
            self.part.exists() && self.meta.exists(),
            "the partial was not kept"
        );
        if let Some(out) = out {
            assert!(
                out.stderr.contains("download interrupted"),
                "{}",
                out.stderr
            );
        }
    }

    fn check_done(&self, _env: &Env) {
        assert_eq!(std::fs::metadata(&self.dst).unwrap().len(), self.len);
        assert_eq!(hash_file(&self.dst), self.want, "the copy differs");
        assert!(
            !self.part.exists() && !self.meta.exists(),
            "partial files left behind"
        );
    }
}

#[test]
fn a_256_mib_get_interrupted_three_ways_completes_byte_identical_moving_each_byte_once() {
    let start = Instant::now();
    let mut rig = Rig::new();
    let want = rig.put_pattern("big", "ferry interrupted get", LEN);
    let put_time = start.elapsed();
    let get = GetTransfer::new(&rig, "big", rig.env.join("copy.bin"), want, LEN);
    let wire = interrupt_three_times(&mut rig, &get, LEN);
    std::fs::remove_file(&get.dst).unwrap();
    assert_wire(&wire, LEN);
    eprintln!("put {put_time:?}, whole test {:?}", start.elapsed());
}

// ---------------------------------------------------------------------------------------------
// The put half.

/// `ferry put SOURCE FILE` of a regular file with a credential that goes through the proxy.
/// Every run first hashes the whole file (the CLI reads it locally: no wire bytes, only
/// time); the server reads its part back once per continued run to resume its own hash
/// (local too). The receiver's holding is the part in the server folder's `store/uploads/`.
struct PutTransfer {
    source: String,
    cred: PathBuf,
    /// A reader credential that talks to the server directly, for the checks.
    direct: PathBuf,
    file: PathBuf,
    server_dir: PathBuf,
    want: blake3::Hash,
    len: u64,
}

impl PutTransfer {
    fn new(rig: &Rig, source: &str, file: PathBuf, want: blake3::Hash, len: u64) -> Self {
        Self {
            source: source.to_owned(),
            cred: rig.proxied_cred("uploader", "writer"),
            direct: rig.env.issue("checker", "reader", &rig.server_addr),
            file,
            server_dir: rig.env.server_dir(),
            want,
            len,
        }
    }

    /// The upload parts in the server folder, with their sizes.
    fn parts(&self) -> Vec<(PathBuf, u64)> {
        upload_parts(&self.server_dir)
    }

    /// `ferry stat` of the source straight from the server.
    fn stat(&self, env: &Env) -> Out {
        let mut c = env.command(&["stat", &self.source]);
        c.args(["--cred", self.direct.to_str().unwrap()]);
        common::run(c, None, SHORT)
    }
}

/// The `held=N` of the server's "upload interrupted; its part is kept" debug line.
fn kept_in(line: &str) -> Option<u64> {
    if !line.contains("its part is kept") {
        return None;
    }
    let rest = line.split("held=").nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

impl Transfer for PutTransfer {
    fn bulk(&self) -> Dir {
        Dir::Up
    }

    fn command(&self, env: &Env) -> Command {
        let mut c = env.command(&["put", &self.source, self.file.to_str().unwrap()]);
        // Each interruption ends the run (no retries of its own): the rerun resumes.
        c.args(["--cred", self.cred.to_str().unwrap(), "--retries", "0"]);
        c.stdin(Stdio::null());
        c
    }

    fn held(&self) -> u64 {
        let parts = self.parts();
        assert!(parts.len() <= 1, "more than one upload part: {parts:?}");
        parts.first().map_or(0, |p| p.1)
    }

    fn resume_note(&self, at: u64) -> String {
        format!("resuming at {at} bytes")
    }

    /// After a killed client or a cut connection the server is still draining what crossed:
    /// wait for its line saying it let go of the part, and check the part holds what that
    /// line says. A killed server has stopped writing (it was restarted since): its part is
    /// what reached the file.
    fn settle(&self, rig: &Rig, way: Interruption, floor: u64) {
        if matches!(way, Interruption::KillServer) {
            return;
        }
        let deadline = Instant::now() + RUN;
        let kept = loop {
            // Lines of earlier interruptions say less than this run's floor.
            let kept = rig
                .server
                .log()
                .iter()
                .filter_map(|l| kept_in(l))
                .find(|&n| n >= floor);
            if let Some(n) = kept {
                break n;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not let go of the upload ({way:?}); log: {:?}",
                rig.server.log()
            );
            thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(
            self.held(),
            kept,
            "the part differs from what the server kept"
        );
    }

    fn check_interrupted(&self, env: &Env, out: Option<&Out>) {
        if let Some(out) = out {
            assert!(
                !out.text().contains("stored"),
                "an interrupted put said it stored: {}",
                out.text()
            );
        }
        assert_eq!(self.parts().len(), 1, "the upload part was not kept");
        let stat = self.stat(env);
        assert!(
            stat.code != 0 && stat.stderr.contains("not found"),
            "an interrupted put made a version: {} {}",
            stat.text(),
            stat.stderr
        );
    }

    fn check_done(&self, env: &Env) {
        assert!(self.parts().is_empty(), "upload parts left behind");
        let stat = self.stat(env).ok().text();
        let field = |name: &str| {
            stat.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.split_whitespace().next().unwrap_or("").to_owned())
                .unwrap_or_else(|| panic!("no {name} in {stat}"))
        };
        assert_eq!(field("version"), "1", "{stat}");
        assert_eq!(field("size"), self.len.to_string(), "{stat}");
        assert_eq!(field("blake3"), self.want.to_hex().as_str(), "{stat}");
        // The stored bytes themselves, read back straight from the server and hashed as
        // they arrive (never on disk).
        let mut c = env.command(&["get", &self.source]);
        c.args(["--cred", self.direct.to_str().unwrap()]);
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = c.spawn().unwrap();
        let mut h = blake3::Hasher::new();
        let got = std::io::copy(&mut child.stdout.take().unwrap(), &mut h).unwrap();
        let status = common::wait_timeout(&mut child, RUN).expect("the get back did not end");
        assert!(status.success(), "the get back failed: {status}");
        assert_eq!(got, self.len);
        assert_eq!(h.finalize(), self.want, "the stored content differs");
    }
}

#[test]
fn a_256_mib_put_interrupted_three_ways_completes_byte_identical_moving_each_byte_once() {
    let start = Instant::now();
    let mut rig = Rig::new();
    let file = rig.env.join("upload.bin");
    let want = write_pattern(&file, "ferry interrupted put", LEN);
    let write_time = start.elapsed();
    let put = PutTransfer::new(&rig, "big", file, want, LEN);
    let wire = interrupt_three_times(&mut rig, &put, LEN);
    std::fs::remove_file(&put.file).unwrap();
    assert_wire(&wire, LEN);
    eprintln!(
        "file written {write_time:?}, whole test {:?}",
        start.elapsed()
    );
}
