//! `ferry watch` as a real process against a real server: JSON and text lines, reconnecting
//! and resuming across a server restart without loss or duplicates, refusals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{Env, Served, Setup, wait_timeout};
use serde_json::Value;

/// Bound on waiting for any one line.
const WAIT: Duration = Duration::from_secs(20);

/// A running `ferry watch`, its stdout lines arriving on a channel. Killed when dropped.
struct Watcher {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// Ends when ferry's stderr closes (at its exit).
    stderr_reader: thread::JoinHandle<()>,
}

impl Watcher {
    fn start(env: &Env, args: &[&str]) -> Self {
        let mut cmd = env.command(args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        let err = child.stderr.take().unwrap();
        let stderr_reader = thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Self {
            child,
            lines,
            stderr,
            stderr_reader,
        }
    }

    fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    #[track_caller]
    fn line(&self) -> String {
        self.lines.recv_timeout(WAIT).unwrap_or_else(|e| {
            panic!(
                "no line from ferry watch within {WAIT:?} ({e}); stderr: {:?}",
                self.stderr()
            )
        })
    }

    #[track_caller]
    fn json(&self) -> Value {
        let line = self.line();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"))
    }

    /// Waits at most `WAIT` for a stderr line containing `needle`.
    fn wait_stderr(&self, needle: &str) -> bool {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if self.stderr().iter().any(|l| l.contains(needle)) {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn signal(&self, sig: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits at most `WAIT` for the exit code, and then (at most `WAIT` more) for the
    /// stderr reader to have stored the last lines ferry wrote before it exited.
    fn exit_code(&mut self) -> i32 {
        let status = wait_timeout(&mut self.child, WAIT)
            .unwrap_or_else(|| panic!("ferry watch still running; stderr: {:?}", self.stderr()));
        let deadline = Instant::now() + WAIT;
        while !self.stderr_reader.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        status.code().unwrap_or(-1)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cred(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn put(s: &Setup, source: &str, data: &[u8]) {
    s.env
        .run_stdin(
            &["put", source, "-", "--cred", cred(&s.writer)],
            data.to_vec(),
        )
        .ok();
}

fn rm(s: &Setup, source: &str) {
    s.with(&s.writer, &["rm", source]).ok();
}

#[test]
fn watch_json_resumes_across_a_server_restart_without_loss_or_duplicates() {
    let mut s = Setup::new();
    // From the start of the log: no race with the watcher's connection.
    let w = Watcher::start(
        &s.env,
        &["watch", "--json", "--since", "0", "--cred", cred(&s.reader)],
    );
    put(&s, "docs/a.txt", b"one");
    let first = w.json();
    assert_eq!(first["seq"], 1);
    assert_eq!(first["op"], "put");
    assert_eq!(first["source"], "docs/a.txt");
    assert_eq!(first["version"], 1);
    assert_eq!(first["deleted"], false);
    assert_eq!(first["size"], 3);
    assert_eq!(
        first["hash"].as_str().unwrap(),
        blake3::hash(b"one").to_hex().as_str()
    );
    assert_eq!(first["by"], "alice");
    assert!(first["modified"].as_u64().unwrap() > 1_700_000_000);

    // The server dies hard and comes back on the same address.
    let addr = s.server.addr.clone();
    s.server.signal("KILL");
    assert!(s.server.wait(WAIT).is_some());
    assert!(w.wait_stderr("connection lost"), "stderr: {:?}", w.stderr());
    s.server = Served::start_on(&s.env, &addr);

    put(&s, "docs/b.txt", b"two");
    rm(&s, "docs/a.txt");
    put(&s, "docs/c.txt", b"three");
    let seen: Vec<(u64, String, String, u64)> = (0..3)
        .map(|_| {
            let e = w.json();
            (
                e["seq"].as_u64().unwrap(),
                e["op"].as_str().unwrap().to_owned(),
                e["source"].as_str().unwrap().to_owned(),
                e["version"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (2, "put".into(), "docs/b.txt".into(), 1),
            (3, "rm".into(), "docs/a.txt".into(), 2),
            (4, "put".into(), "docs/c.txt".into(), 1),
        ]
    );
    // A sentinel proves nothing was repeated after the last expected line.
    put(&s, "docs/end", b"");
    let end = w.json();
    assert_eq!(
        (end["seq"].as_u64(), end["source"].as_str()),
        (Some(5), Some("docs/end"))
    );
    let lost = w
        .stderr()
        .iter()
        .filter(|l| l.contains("connection lost"))
        .count();
    assert_eq!(lost, 1, "one line per cut: {:?}", w.stderr());

    // Ctrl-C ends it normally.
    let mut w = w;
    w.signal("INT");
    assert_eq!(w.exit_code(), 0, "stderr: {:?}", w.stderr());
}

#[test]
fn watch_prints_text_lines_for_its_prefix_and_refusals_are_fatal() {
    let s = Setup::new();
    let help = s.env.run(&["watch", "--help"]).ok().text();
    assert!(
        help.contains("reconnects") && help.contains("--json"),
        "{help}"
    );

    put(&s, "other/x", b"not shown");
    put(&s, "docs/a.txt", b"one");
    rm(&s, "docs/a.txt");
    let w = Watcher::start(
        &s.env,
        &["watch", "docs/", "--since", "0", "--cred", cred(&s.reader)],
    );
    let line = w.line();
    let hash = blake3::hash(b"one").to_hex();
    assert_eq!(
        line,
        format!(
            "seq 2  put  docs/a.txt  v1  3 B  blake3:{}…  by alice",
            &hash[..16]
        )
    );
    assert_eq!(w.line(), "seq 3  rm   docs/a.txt  v2  by alice");

    // Revoked while watching: the next change ends the stream with "authentication failed".
    s.env.run(&["client", "revoke", "bob"]).ok();
    put(&s, "docs/after", b"x");
    let mut w = w;
    assert_eq!(w.exit_code(), 3, "stderr: {:?}", w.stderr());
    assert!(
        w.stderr()
            .iter()
            .any(|l| l == "ferry: authentication failed"),
        "{:?}",
        w.stderr()
    );

    // And it cannot start again.
    let out = s.with(&s.reader, &["watch", "--json"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    // A malformed prefix is a usage-level failure before any connection.
    let out = s.with(&s.writer, &["watch", "a\u{7}b"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("prefix"), "{}", out.stderr);
}
