//! A put that meets a busy server says so, waits and tries again, and completes once a
//! connection slot frees: the server allows one connection, which a `ferry watch` holds
//! until the test ends it.
// Helpers outside #[test] functions unwrap too: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Env, Served};

#[test]
fn a_put_to_a_busy_server_tries_again_and_completes() {
    let env = Env::new();
    env.init();
    let config = env.server_dir().join("ferry.toml");
    let text = fs::read_to_string(&config).unwrap();
    fs::write(
        &config,
        text.replace("max_connections = 16384", "max_connections = 1"),
    )
    .unwrap();
    let server = Served::start(&env);
    let cred = env.issue("alice", "writer", &server.addr);
    let cred = cred.to_str().unwrap();

    // The one slot, held by a watch stream.
    let mut watch = env
        .command(&["watch", "", "--cred", cred])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The server takes the slot as it logs the authentication, before anything else runs.
    server
        .wait_for_log("authenticated alice", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("the watch never connected: {:?}", server.log()));
    let file = env.join("data.bin");
    fs::write(&file, vec![5u8; 1 << 20]).unwrap();
    let log = env.join("put.log");
    let mut put = env
        .command(&["put", "d", file.to_str().unwrap(), "--cred", cred])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Bounded: the first refusal comes within a second or two of the watch taking its slot.
    let start = Instant::now();
    let said = loop {
        let text = fs::read_to_string(&log).unwrap_or_default();
        if text.contains("trying again") || start.elapsed() > Duration::from_secs(15) {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        said.contains("the server is busy") && said.contains("trying again in 1 s"),
        "{said}"
    );
    watch.kill().unwrap();
    let _ = watch.wait();
    // Bounded: the retries take at most 1 + 2 + 4 + 8 s.
    let start = Instant::now();
    let status = loop {
        if let Some(s) = put.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "the put hangs");
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{text}");
    let out = env.run(&["stat", "d", "--cred", cred]).ok();
    assert!(out.text().contains("1048576"), "{}", out.text());
    drop(server);
}
