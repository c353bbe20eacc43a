//! Child processes: a guard that kills them, and their peak memory from /proc.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A field of /proc/PID/status in KiB (`VmHWM`, `VmRSS`).
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// CPU time (user + system, all threads, living and ended) `pid` has used so far, seconds,
/// from /proc/PID/stat (clock-tick resolution).
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields follow the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state (3rd field of the line), ..., utime (14th), stime (15th).
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / clock_ticks() as f64)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 if that fails, the Linux value).
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
            }
        }
    }
    out
}

/// Largest VmHWM of `pid` and any of its descendants (for tools that fork workers).
pub fn tree_hwm_kib(pid: u32) -> u64 {
    let mut max = 0;
    let mut todo = vec![pid];
    let mut seen = 0;
    while let Some(p) = todo.pop() {
        seen += 1;
        if seen > 4096 {
            break;
        }
        max = max.max(status_kib(p, "VmHWM").unwrap_or(0));
        todo.extend(children(p));
    }
    max
}

/// A child process that is killed and reaped when dropped.
pub struct Guard {
    child: Child,
    /// Held open: our own workers stop when it closes.
    pub stdin: Option<ChildStdin>,
    /// Peak VmHWM seen by [`Guard::sample`], KiB.
    pub peak_kib: u64,
    /// Ask it to stop with SIGTERM before killing it (nginx's master stops its workers).
    pub term_first: bool,
}

impl Guard {
    /// Starts `cmd`.
    pub fn spawn(cmd: &mut Command) -> Result<Self> {
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {:?}", cmd.get_program()))?;
        let stdin = child.stdin.take();
        Ok(Self {
            child,
            stdin,
            peak_kib: 0,
            term_first: false,
        })
    }

    /// Process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Records the peak memory of the process tree so far.
    pub fn sample(&mut self) -> u64 {
        self.peak_kib = self.peak_kib.max(tree_hwm_kib(self.pid()));
        self.peak_kib
    }

    /// Its standard output, once.
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// Whether it has exited (and how).
    pub fn try_wait(&mut self) -> Result<Option<std::process::ExitStatus>> {
        Ok(self.child.try_wait()?)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stdin = None;
        if self.term_first && matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(3)
                && matches!(self.child.try_wait(), Ok(None))
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Starts one of our own server workers and waits for its `addr` line.
pub fn start_worker_server(
    exe: &std::path::Path,
    args: &[&str],
    env: &Env,
) -> Result<(Guard, String)> {
    let mut cmd = Command::new(exe);
    cmd.arg("__worker").args(args);
    env.apply(&mut cmd);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut g = Guard::spawn(&mut cmd)?;
    let out = g.take_stdout().context("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .context("server worker did not start")?;
    let addr = line
        .trim()
        .strip_prefix("addr ")
        .with_context(|| format!("server worker said {line:?}"))?
        .to_owned();
    Ok((g, addr))
}

/// What one client worker reported.
#[derive(Debug, Clone)]
pub struct ClientReport {
    /// Bytes moved.
    pub bytes: u64,
    /// BLAKE3, hex.
    pub hash: String,
    /// Seconds, measured inside the worker from connect to verified end.
    pub secs: f64,
    /// Its own VmHWM at the end, KiB.
    pub hwm_kib: u64,
    /// Negotiated suite and group, when the worker knows them.
    pub info: String,
}

/// Runs one of our client workers to completion.
pub fn run_worker_client(exe: &std::path::Path, args: &[&str], env: &Env) -> Result<ClientReport> {
    let mut cmd = Command::new(exe);
    cmd.arg("__worker").args(args);
    env.apply(&mut cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running worker {args:?}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "worker {:?} failed: {}",
            args.first(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let line = text
        .lines()
        .find(|l| l.starts_with("ok "))
        .with_context(|| format!("worker said {text:?}"))?;
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 5 {
        bail!("short worker report {line:?}");
    }
    Ok(ClientReport {
        bytes: f[1].parse()?,
        hash: f[2].to_owned(),
        secs: f[3].parse()?,
        hwm_kib: f[4].parse()?,
        info: f[5..].join(" "),
    })
}

/// The environment given to every measured process.
#[derive(Clone, Debug)]
pub struct Env {
    /// `GLIBC_TUNABLES`, or none (removed).
    pub tunables: Option<String>,
}

impl Env {
    /// Sets it on a command.
    pub fn apply(&self, cmd: &mut Command) {
        match &self.tunables {
            Some(t) => cmd.env("GLIBC_TUNABLES", t),
            None => cmd.env_remove("GLIBC_TUNABLES"),
        };
    }

    /// How it reads in a table.
    pub fn label(&self) -> String {
        match &self.tunables {
            Some(t) => format!("GLIBC_TUNABLES={t}"),
            None => "GLIBC_TUNABLES unset".to_owned(),
        }
    }
}

/// A free loopback port (bound and released; good enough on a quiet loopback).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
