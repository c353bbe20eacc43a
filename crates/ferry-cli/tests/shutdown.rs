//! SIGTERM to a server in the middle of a get and of a put: the server lets the transfer run
//! for its grace period, then tells it `shutting_down` and exits 0; the client says so (a get
//! reads it in place of its next data frame, a put between two of its own), tries again, and
//! once the server is back, resumes and completes byte-identical (never exit 141).
//! A throttling proxy between client and server keeps each transfer running long past the
//! grace period, whatever the machine's speed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Stdio;
use std::thread;
use std::time::Duration;

use common::{Env, Served};

const LEN: u64 = 48 << 20;

/// Which way the proxy slows down.
#[derive(Clone, Copy, PartialEq)]
enum Slow {
    /// Server to client (a get).
    Down,
    /// Client to server (a put).
    Up,
}

/// Copies `from` to `to`, at about 12 MiB/s if `slow`, until either side ends.
fn pump(mut from: TcpStream, mut to: TcpStream, slow: bool) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        if slow {
            thread::sleep(Duration::from_millis(5));
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// A TCP proxy to `upstream` (which may be down for a while), slowing one direction. Runs
/// until the test process ends.
fn proxy(upstream: String, slow: Slow) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            // The server is down (restarting): close, the client tries again.
            let Ok(server) = TcpStream::connect(&upstream) else {
                continue;
            };
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            thread::spawn(move || pump(client, server, slow == Slow::Up));
            thread::spawn(move || pump(s2, c2, slow == Slow::Down));
        }
    });
    addr
}

fn transfer_survives_sigterm(slow: Slow) {
    let env = Env::new();
    env.init();
    let conf = env.server_dir().join("ferry.toml");
    let text = std::fs::read_to_string(&conf).unwrap();
    assert!(text.contains("shutdown_grace_secs = 5"));
    std::fs::write(
        &conf,
        text.replace("shutdown_grace_secs = 5", "shutdown_grace_secs = 1"),
    )
    .unwrap();
    let mut server = Served::start(&env);
    let addr = server.addr.clone();
    let via = proxy(addr.clone(), slow);
    let direct = env.issue("w", "writer", &addr);
    let slowed = env.issue("s", "writer", &via);
    let file = env.join("big");
    let want = common::write_pattern(&file, "shutdown", LEN);
    let out = env.join("out");
    let args = match slow {
        Slow::Down => {
            let put = [
                "put",
                "big",
                file.to_str().unwrap(),
                "--cred",
                direct.to_str().unwrap(),
            ];
            env.run(&put).ok();
            vec!["get", "big", "-o", out.to_str().unwrap()]
        }
        Slow::Up => vec!["put", "big", file.to_str().unwrap()],
    };
    let mut cmd = env.command(&args);
    cmd.args(["--cred", slowed.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut client = cmd.spawn().unwrap();
    let err = client.stderr.take().unwrap();
    let err = thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::BufReader::new(err).read_to_string(&mut s);
        s
    });
    // The transfer is under way (a put: its first bytes are in the server's upload part)...
    match slow {
        Slow::Down => {
            server
                .wait_for_log("get v1", Duration::from_secs(30))
                .expect("the get started");
        }
        Slow::Up => {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while common::upload_parts(&env.server_dir())
                .iter()
                .all(|(_, len)| *len == 0)
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the put did not start"
                );
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
    // ...when the server is told to stop: it exits 0 within its grace period and the 2 s
    // the transfer has to end.
    server.signal("TERM");
    // From then on new connections are refused at once (not queued, then reset), while the
    // transfer runs out its grace period.
    server
        .wait_for_log("shutting down", Duration::from_secs(10))
        .expect("the server says it is shutting down");
    let refused = TcpStream::connect(&addr).unwrap_err();
    assert_eq!(
        refused.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{refused}"
    );
    assert!(server.running(), "the server did not wait for the transfer");
    let status = server
        .wait(Duration::from_secs(15))
        .expect("the server stops after its grace period");
    assert!(status.success(), "{status:?}: {:?}", server.log());
    let log = server.log();
    assert!(
        log.iter()
            .any(|l| l.contains("still busy after the grace period")),
        "the transfer ended before the deadline, so this test checked nothing: {log:?}"
    );
    drop(server);
    // Back on the same address: the client's retry reaches it, resumes and completes.
    let _server = Served::start_on(&env, &addr);
    let status = common::wait_timeout(&mut client, Duration::from_secs(90))
        .expect("the client completes once the server is back");
    let err = err.join().unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains("trying again"), "{err}");
    // A get reads the server's word in place of the next data frame; a put between two of
    // its own frames.
    assert!(err.contains("the server is shutting down"), "{err}");
    if slow == Slow::Down {
        assert_eq!(common::hash_file(&out), want);
    } else {
        let got = env
            .run(&["get", "big", "--cred", direct.to_str().unwrap()])
            .ok();
        assert_eq!(blake3::hash(&got.stdout), want);
    }
}

#[test]
fn a_get_cut_by_sigterm_is_told_why_and_resumes_when_the_server_is_back() {
    transfer_survives_sigterm(Slow::Down);
}

#[test]
fn a_put_cut_by_sigterm_resumes_when_the_server_is_back() {
    transfer_survives_sigterm(Slow::Up);
}
