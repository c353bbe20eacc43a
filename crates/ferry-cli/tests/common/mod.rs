//! Running the real `ferry` binary in temporary folders, with bounded waits.
#![allow(dead_code)]
// Test support: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub mod mesh;

pub const BIN: &str = env!("CARGO_BIN_EXE_ferry");
/// Bound on any ordinary command.
pub const SHORT: Duration = Duration::from_secs(60);

/// What a finished command produced.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Out {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "command failed: {}", self.stderr);
        self
    }
}

/// A temporary home: HOME, the data folder and the default server folder all live inside it,
/// so nothing touches the real user's files.
pub struct Env {
    pub tmp: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("home")).unwrap();
        Self { tmp }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    /// The default server folder ($FERRY_DIR).
    pub fn server_dir(&self) -> PathBuf {
        self.join("srv")
    }

    /// The client's configuration folder ($FERRY_CONFIG: profile.toml, session.toml).
    pub fn config_dir(&self) -> PathBuf {
        self.join("config")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args);
        self.apply(&mut c);
        c
    }

    /// Gives `c` this env's folders and environment (for a `ferry` run through a wrapper
    /// such as `ip netns exec`).
    pub fn apply(&self, c: &mut Command) {
        c.current_dir(self.path())
            .env("HOME", self.join("home"))
            .env("XDG_DATA_HOME", self.join("home/.local/share"))
            .env("XDG_CONFIG_HOME", self.join("home/.config"))
            .env("FERRY_DIR", self.server_dir())
            .env("FERRY_CONFIG", self.config_dir())
            .env_remove("FERRY_CRED")
            .env_remove("FERRY_LOG");
    }

    pub fn run(&self, args: &[&str]) -> Out {
        run(self.command(args), None, SHORT)
    }

    pub fn run_stdin(&self, args: &[&str], input: Vec<u8>) -> Out {
        run(self.command(args), Some(input), SHORT)
    }

    /// `ferry init` in the default folder; returns the printed server ID.
    pub fn init(&self) -> String {
        let out = self.run(&["init"]).ok();
        out.text().trim().to_owned()
    }

    /// Issues a credential to `NAME.cred` in the temp folder, for the server at `addr`.
    pub fn issue(&self, name: &str, role: &str, addr: &str) -> PathBuf {
        let path = self.join(&format!("{name}.cred"));
        self.run(&issue_args(name, role, addr, &path)).ok();
        path
    }
}

/// `ferry client issue NAME --role ROLE --server ADDR --out PATH`.
pub fn issue_args<'a>(name: &'a str, role: &'a str, addr: &'a str, path: &'a Path) -> [&'a str; 9] {
    let path = path.to_str().unwrap();
    [
        "client", "issue", name, "--role", role, "--server", addr, "--out", path,
    ]
}

/// Runs `cmd` to completion, killing it and failing the test if it takes longer than
/// `timeout`.
/// Runs `ferry ARGS` (`args`: the arguments as one shell line) with a pseudo-terminal as its
/// standard input, where `typed` is typed, through util-linux `script`; `None` (after saying
/// so) where `script` is not installed.
#[allow(dead_code)]
pub fn in_pty(env: &Env, args: &str, typed: &[u8]) -> Option<Out> {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: util-linux `script` is not installed, so no pseudo-terminal");
        return None;
    }
    let mut c = Command::new("script");
    c.args(["-qec", &format!("{BIN} {args}"), "/dev/null"]);
    env.apply(&mut c);
    Some(run(c, Some(typed.to_vec()), SHORT))
}

/// What `put` does when Ctrl-D is pressed at once on a terminal ([`in_pty`]): exit 2, after
/// the hint that it reads standard input and the way to store an empty source.
#[allow(dead_code)]
pub fn assert_empty_tty_refused(out: &Out) {
    let shown = out.text();
    assert_eq!(out.code, 2, "{shown}");
    assert!(
        shown.contains("reading standard input; Ctrl-D to end"),
        "{shown}"
    );
    assert!(shown.contains("--allow-empty"), "{shown}");
}

pub fn run(mut cmd: Command, input: Option<Vec<u8>>, timeout: Duration) -> Out {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let writer = child.stdin.take().map(|mut stdin| {
        let data = input.unwrap_or_default();
        thread::spawn(move || {
            let _ = stdin.write_all(&data);
        })
    });
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_t = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err_t = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let status = match wait_timeout(&mut child, timeout) {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            let err = err_t.join().unwrap_or_default();
            panic!(
                "{cmd:?} did not finish within {timeout:?}; stderr: {}",
                String::from_utf8_lossy(&err)
            );
        }
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    Out {
        code: status.code().unwrap_or(-1),
        stdout: out_t.join().unwrap(),
        stderr: String::from_utf8_lossy(&err_t.join().unwrap()).into_owned(),
    }
}

/// Waits for `child` at most `timeout`.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// A `ferry serve` child on a loopback port, killed when dropped.
pub struct Served {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    /// `127.0.0.1:PORT`, read from the "listening on" line.
    pub addr: String,
}

impl Served {
    /// Starts `ferry serve --listen 127.0.0.1:0` on `env`'s default folder.
    pub fn start(env: &Env) -> Self {
        Self::start_with(env, &[])
    }

    /// Same, with extra environment variables.
    pub fn start_with(env: &Env, vars: &[(&str, &str)]) -> Self {
        Self::start_full(env, "127.0.0.1:0", vars)
    }

    /// Starts `ferry serve --listen ADDR` (for example the address of a server that was
    /// stopped, so that credentials issued for it still point here).
    pub fn start_on(env: &Env, listen: &str) -> Self {
        Self::start_full(env, listen, &[])
    }

    fn start_full(env: &Env, listen: &str, vars: &[(&str, &str)]) -> Self {
        let mut cmd = env.command(&["serve", "--listen", listen]);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let served = Self::spawn(cmd);
        assert!(served.addr.starts_with("127.0.0.1:"), "{}", served.addr);
        served
    }

    /// Spawns a long-running `ferry` command (`serve`, `mesh up`), collects its stderr, and
    /// waits for its "listening on ADDR" line.
    pub fn spawn(mut cmd: Command) -> Self {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let mut served = Self {
            child,
            log,
            addr: String::new(),
        };
        let line = served
            .wait_for_log("listening on ", Duration::from_secs(30))
            .unwrap_or_else(|| panic!("server did not start; log: {:?}", served.log()));
        // Up to the end of the word: the line may be text or a JSON object.
        let addr = line
            .split("listening on ")
            .nth(1)
            .unwrap()
            .split(|c: char| c.is_whitespace() || c == '"')
            .next()
            .unwrap()
            .to_owned();
        assert!(!addr.ends_with(":0"), "{addr}");
        served.addr = addr;
        served
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits at most `timeout` for a log line containing `needle`; returns it.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.log().into_iter().find(|l| l.contains(needle)) {
                return Some(l);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends a signal with `kill`.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits at most `timeout` for the server to exit.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_timeout(&mut self.child, timeout)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An env with an initialised server running, and a writer and a reader credential.
pub struct Setup {
    pub env: Env,
    pub server: Served,
    pub writer: PathBuf,
    pub reader: PathBuf,
}

impl Setup {
    pub fn new() -> Self {
        let env = Env::new();
        env.init();
        let server = Served::start(&env);
        let writer = env.issue("alice", "writer", &server.addr);
        let reader = env.issue("bob", "reader", &server.addr);
        Self {
            env,
            server,
            writer,
            reader,
        }
    }

    /// Runs a command with `--cred CRED` appended.
    pub fn with(&self, cred: &Path, args: &[&str]) -> Out {
        let mut v = args.to_vec();
        v.extend(["--cred", cred.to_str().unwrap()]);
        self.env.run(&v)
    }
}

/// BLAKE3 of a file's content, streamed.
pub fn hash_file(path: &Path) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update_reader(std::fs::File::open(path).unwrap()).unwrap();
    h.finalize()
}

/// Writes `len` pseudo-random bytes (BLAKE3 XOF of `seed`) to `path` a MiB at a time;
/// returns their hash.
pub fn write_pattern(path: &Path, seed: &str, len: u64) -> blake3::Hash {
    let mut xof = blake3::Hasher::new().update(seed.as_bytes()).finalize_xof();
    let mut hasher = blake3::Hasher::new();
    let mut w = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        xof.fill(&mut buf[..n]);
        hasher.update(&buf[..n]);
        w.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    w.flush().unwrap();
    hasher.finalize()
}

/// The resumable upload parts of the server folder `server_dir`, with their lengths.
pub fn upload_parts(server_dir: &Path) -> Vec<(PathBuf, u64)> {
    let Ok(items) = std::fs::read_dir(server_dir.join("store").join("uploads")) else {
        return Vec::new();
    };
    items
        .filter_map(|e| {
            let p = e.ok()?.path();
            let len = std::fs::metadata(&p).ok()?.len();
            p.extension()
                .is_some_and(|x| x == "part")
                .then_some((p, len))
        })
        .collect()
}

/// Parses JSON Lines (`ls --json`, `watch --json`): one JSON value per non-empty line.
pub fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8(stdout.to_vec())
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}
