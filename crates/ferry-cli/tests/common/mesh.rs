//! Mesh peers for tests: each a `ferry` server folder in its own temporary home, run with
//! `ferry mesh up` directly (loopback) or inside a network namespace.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use super::{BIN, Env, Out, SHORT, Served, run};

/// The join password every test mesh uses.
pub const PASSWORD: &str = "correct horse battery staple";

/// One peer.
pub struct Peer {
    pub env: Env,
    base: Box<dyn Fn() -> Command + Send + Sync>,
    /// Device ID, once created or joined.
    pub id: String,
    /// The running `ferry mesh up`.
    pub up: Option<Served>,
    /// Where other processes reach its TLS server.
    pub addr: String,
}

impl Peer {
    /// A peer whose commands run as they are (loopback tests).
    pub fn local() -> Self {
        Self::new(|| Command::new(BIN))
    }

    /// A peer whose commands start from `base` (e.g. `ip netns exec NS ferry`).
    pub fn new(base: impl Fn() -> Command + Send + Sync + 'static) -> Self {
        Self {
            env: Env::new(),
            base: Box::new(base),
            id: String::new(),
            up: None,
            addr: String::new(),
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = (self.base)();
        c.args(args);
        self.env.apply(&mut c);
        c
    }

    pub fn run(&self, args: &[&str]) -> Out {
        run(self.command(args), None, SHORT)
    }

    pub fn run_stdin(&self, args: &[&str], input: &str) -> Out {
        run(self.command(args), Some(input.as_bytes().to_vec()), SHORT)
    }

    /// `ferry mesh create`.
    pub fn create(&mut self, name: &str) {
        let out = self.run(&["mesh", "create", "--name", name]).ok();
        self.id = out.text().trim().to_owned();
    }

    /// `ferry mesh open` with [`PASSWORD`].
    pub fn open(&self) {
        self.run_stdin(
            &["mesh", "open", "--password-stdin"],
            &format!("{PASSWORD}\n"),
        )
        .ok();
    }

    /// `ferry mesh join` of `peer` (running), with `password`.
    pub fn try_join(&self, name: &str, peer: &Peer, password: &str) -> Out {
        self.run_stdin(
            &[
                "mesh",
                "join",
                "--name",
                name,
                "--peer",
                &peer.addr,
                "--peer-id",
                &peer.id,
                "--password-stdin",
            ],
            &format!("{password}\n"),
        )
    }

    /// Joins `peer` with [`PASSWORD`].
    pub fn join(&mut self, name: &str, peer: &Peer) {
        let out = self.try_join(name, peer, PASSWORD).ok();
        self.id = out.text().trim().to_owned();
    }

    /// Starts `ferry mesh up ARGS` (debug logs of the mesh runtime on); `addr` is where
    /// others reach it (`None`: the address it logs).
    pub fn start(&mut self, args: &[&str], addr: Option<String>) {
        let mut v = vec!["mesh", "up"];
        v.extend(args);
        let mut cmd = self.command(&v);
        cmd.env("FERRY_LOG", "info,ferry::mesh::runtime=debug");
        let served = Served::spawn(cmd);
        self.addr = addr.unwrap_or_else(|| served.addr.clone());
        self.up = Some(served);
    }

    /// Stops `mesh up`.
    pub fn stop(&mut self) {
        self.up = None;
    }

    /// The `mesh up` log.
    pub fn log(&self) -> Vec<String> {
        self.up.as_ref().map(Served::log).unwrap_or_default()
    }

    /// Waits at most `timeout` for a `mesh up` log line containing `needle`; returns it.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        self.up.as_ref()?.wait_for_log(needle, timeout)
    }

    /// Whether `mesh up` is still running.
    pub fn running(&mut self) -> bool {
        self.up.as_mut().is_some_and(Served::running)
    }

    /// Issues a credential for a local client of this peer.
    pub fn issue(&self, name: &str, role: &str) -> PathBuf {
        let path = self.env.join(&format!("{name}.cred"));
        self.run(&super::issue_args(name, role, &self.addr, &path))
            .ok();
        path
    }

    /// Runs `ferry ARGS --cred CRED`.
    pub fn with(&self, cred: &std::path::Path, args: &[&str]) -> Out {
        let mut v = args.to_vec();
        v.extend(["--cred", cred.to_str().unwrap()]);
        self.run(&v)
    }

    /// Puts `data` as `source` with `cred`.
    pub fn put(&self, cred: &std::path::Path, source: &str, data: &[u8]) {
        let file = self.env.join("upload.tmp");
        std::fs::write(&file, data).unwrap();
        self.with(cred, &["put", source, file.to_str().unwrap()])
            .ok();
    }

    /// The current content of `source`, or `None` if the peer does not have it.
    pub fn get(&self, cred: &std::path::Path, source: &str) -> Option<Vec<u8>> {
        let out = self.with(cred, &["get", source]);
        (out.code == 0).then_some(out.stdout)
    }
}

/// Polls `f` every 100 ms until it returns true or `timeout` passes; returns the last result.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Pseudo-random bytes (xorshift; content only needs to differ between calls).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
