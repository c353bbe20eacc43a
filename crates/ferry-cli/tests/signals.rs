//! The server shuts down cleanly on SIGINT and SIGTERM.
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
