//! The server shuts down cleanly on SIGINT and SIGTERM; a client stopped by a signal in the
//! middle of a transfer exits with the conventional code (128 + the signal).
// Helpers outside #[test] functions unwrap too: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Env, Served};

fn stops_on(sig: &str) {
    let env = Env::new();
    env.init();
    let mut server = Served::start(&env);
    // Serve one request first, so the shutdown is not of an untouched server.
    let cred = env.issue("alice", "writer", &server.addr);
    env.run(&["ls", "--cred", cred.to_str().unwrap()]).ok();
    server.signal(sig);
    let status = server
        .wait(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("server still running 10 s after SIG{sig}"));
    assert!(
        status.success(),
        "exit status {status:?}; log: {:?}",
        server.log()
    );
}

#[test]
fn sigint_stops_the_server_with_status_0() {
    stops_on("INT");
}

#[test]
fn sigterm_stops_the_server_with_status_0() {
    stops_on("TERM");
}

/// A `ferry get` to a pipe nobody reads, stopped by `sig` in the middle of the transfer,
/// exits with 128 + the signal's number and says why in one line.
fn client_stops_on(sig: &str, code: i32, says: &str) {
    use std::process::Stdio;
    let s = common::Setup::new();
    let big = s.env.join("big");
    common::write_pattern(&big, "signals", 16 << 20);
    s.with(&s.writer, &["put", "big", big.to_str().unwrap()])
        .ok();
    let mut cmd = s
        .env
        .command(&["get", "big", "--cred", s.reader.to_str().unwrap()]);
    // stdout is a pipe the test never reads: the transfer stalls once it is full.
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    // The server opened the transfer (its audit line) before the signal is sent.
    s.server
        .wait_for_log("get v1", Duration::from_secs(20))
        .unwrap_or_else(|| panic!("the get did not start: {:?}", s.server.log()));
    let status = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = common::wait_timeout(&mut child, Duration::from_secs(20))
        .unwrap_or_else(|| panic!("ferry get still running 20 s after SIG{sig}"));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(code), "SIG{sig}: {err}");
    assert_eq!(err.trim(), format!("ferry: {says}"), "SIG{sig}");
}

#[test]
fn a_client_stopped_by_sigint_exits_130() {
    client_stops_on("INT", 130, "interrupted");
}

#[test]
fn a_client_stopped_by_sigterm_exits_143() {
    client_stops_on("TERM", 143, "terminated (SIGTERM)");
}

#[test]
fn a_client_stopped_by_sighup_exits_129() {
    client_stops_on("HUP", 129, "hung up (SIGHUP)");
}
