//! SIGHUP makes `ferry serve` re-read ferry.toml: a role's new rights apply to the next
//! request without a restart and without dropping open connections; a file that does not
//! load is refused with the old rules kept; settings read only at start are named.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::Setup;

const WAIT: Duration = Duration::from_secs(20);

/// The default reader role, as `ferry init` writes it.
const READER: &str = r#"reader = [{ ops = ["get", "list", "stat"], sources = ["**"] }]"#;

#[test]
fn sighup_reloads_roles_keeps_connections_and_refuses_a_bad_file() {
    let s = Setup::new();
    let conf = s.env.server_dir().join("ferry.toml");
    let original = fs::read_to_string(&conf).unwrap();
    assert!(
        original.contains(READER),
        "ferry.toml's reader role changed shape"
    );
    let file = s.env.join("f");
    fs::write(&file, b"content").unwrap();
    let f = file.to_str().unwrap();

    // An open connection that must survive the reloads: bob's watch.
    let mut watch = s
        .env
        .command(&["watch", "r/", "--cred", s.reader.to_str().unwrap()]);
    watch.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut watch = watch.spawn().unwrap();
    let (tx, lines) = mpsc::channel();
    let out = watch.stdout.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let err = watch.stderr.take().unwrap();
    let err_lines = thread::spawn(move || {
        BufReader::new(err)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let saw = |source: &str| {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match lines.recv_timeout(left) {
                Ok(l) if l.contains(source) => return,
                Ok(_) => {}
                Err(e) => panic!("the watch did not print {source}: {e}"),
            }
        }
    };
    // The watch is connected once it reports a put.
    s.with(&s.writer, &["put", "r/a", f]).ok();
    saw("r/a");

    // A reader may not put...
    let refused = s.with(&s.reader, &["put", "r/b", f]);
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("may not put"), "{}", refused.stderr);

    // ...until ferry.toml says so and the server is told.
    let widened = original.replace(
        READER,
        r#"reader = [{ ops = ["put", "get", "list", "stat"], sources = ["**"] }]"#,
    );
    fs::write(&conf, &widened).unwrap();
    s.server.signal("HUP");
    s.server
        .wait_for_log("ferry.toml reloaded", WAIT)
        .expect("the reload is logged");
    s.with(&s.reader, &["put", "r/b", f]).ok();
    saw("r/b");

    // A file that does not load is refused; the rules in force stay.
    fs::write(
        &conf,
        widened.replace(
            r#"ops = ["put", "get", "list", "stat"]"#,
            r#"ops = ["fly"]"#,
        ),
    )
    .unwrap();
    s.server.signal("HUP");
    let line = s
        .server
        .wait_for_log("ferry.toml refused", WAIT)
        .expect("the refusal is logged");
    assert!(
        line.contains("fly"),
        "the error names the bad value: {line}"
    );
    s.with(&s.reader, &["put", "r/c", f]).ok();
    saw("r/c");

    // Narrowed again: the next request is refused.
    fs::write(
        &conf,
        original.replace("max_connections = 16384", "max_connections = 100"),
    )
    .unwrap();
    s.server.signal("HUP");
    let line = s
        .server
        .wait_for_log("take effect at the next start", WAIT)
        .expect("a start-only setting is named");
    assert!(line.contains("max_connections"), "{line}");
    assert_ne!(s.with(&s.reader, &["put", "r/d", f]).code, 0);

    // Through all of it, the server ran and the watch's connection was never cut.
    let mut server = s.server;
    assert!(server.running());
    let _ = watch.kill();
    let _ = watch.wait();
    let err = err_lines.join().unwrap();
    assert!(
        !err.iter().any(|l| l.contains("connection lost")),
        "the watch was cut: {err:?}"
    );
}
