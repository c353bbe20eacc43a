//! What must be refused, with the right exit code and one clear line.
// Helpers outside #[test] functions unwrap too: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{Env, Served, Setup};

fn stat_json(s: &Setup, source: &str) -> serde_json::Value {
    let out = s.with(&s.writer, &["stat", source, "--json"]).ok();
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_reader_may_not_put() {
    let s = Setup::new();
    s.env
        .run_stdin(
            &["put", "x", "--cred", s.writer.to_str().unwrap()],
            b"original".to_vec(),
        )
        .ok();
    let before = stat_json(&s, "x");

    let out = s.env.run_stdin(
        &["put", "x", "--cred", s.reader.to_str().unwrap()],
        b"evil".to_vec(),
    );
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert_eq!(
        out.stderr,
        "ferry: permission denied: role 'reader' may not put 'x'\n"
    );
    assert!(out.stdout.is_empty());

    assert_eq!(stat_json(&s, "x"), before, "the stored source changed");
    let got = s.with(&s.reader, &["get", "x"]).ok();
    assert_eq!(got.stdout, b"original");

    let out = s.with(&s.reader, &["rm", "x"]);
    assert_eq!(out.code, 4);
    assert!(
        out.stderr.contains("role 'reader' may not delete 'x'"),
        "{}",
        out.stderr
    );
}

#[test]
fn an_edited_role_fails_authentication() {
    let s = Setup::new();
    let text = fs::read_to_string(&s.reader).unwrap();
    assert!(text.contains("role = \"reader\""));
    // Writing over the existing file keeps its mode 0600.
    fs::write(
        &s.reader,
        text.replace("role = \"reader\"", "role = \"writer\""),
    )
    .unwrap();
    let out = s.env.run_stdin(
        &["put", "x", "--cred", s.reader.to_str().unwrap()],
        b"evil".to_vec(),
    );
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert_eq!(out.stderr, "ferry: authentication failed\n");
    let out = s.with(&s.writer, &["stat", "x"]);
    assert_eq!(out.code, 5, "nothing was stored: {}", out.stderr);
}

#[test]
fn revocation_and_reissue_take_effect_on_a_running_server() {
    let s = Setup::new();
    s.with(&s.reader, &["ls"]).ok();

    s.env.run(&["client", "revoke", "bob"]).ok();
    let out = s.with(&s.reader, &["ls"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert_eq!(out.stderr, "ferry: authentication failed\n");

    let old = s.env.join("bob-epoch1.cred");
    fs::copy(&s.reader, &old).unwrap();
    let new = s.env.issue("bob", "reader", &s.server.addr);
    let cred = fs::read_to_string(&new).unwrap();
    assert!(cred.contains("epoch = 2"), "{cred}");
    let out = s.with(&old, &["ls"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert_eq!(out.stderr, "ferry: authentication failed\n");
    s.with(&new, &["ls"]).ok();

    // Re-issuing the writer invalidates its previous credential too.
    let writer_old = s.env.join("alice-epoch1.cred");
    fs::copy(&s.writer, &writer_old).unwrap();
    let writer_new = s.env.issue("alice", "writer", &s.server.addr);
    assert_eq!(s.with(&writer_old, &["ls"]).code, 3);
    s.with(&writer_new, &["ls"]).ok();
}

#[test]
fn a_credential_for_another_server_is_refused_before_authenticating() {
    let env = Env::new();
    env.init();
    // Log the server's TLS handshake failures so the test can see the attempt arrive.
    let server = Served::start_with(&env, &[("FERRY_LOG", "info,ferry::net=debug")]);
    let cred = env.issue("alice", "writer", &server.addr);

    let other = env.join("other");
    let other_id = env
        .run(&["init", "--dir", other.to_str().unwrap()])
        .ok()
        .text()
        .trim()
        .to_owned();
    let text = fs::read_to_string(&cred).unwrap();
    let line = text.lines().find(|l| l.starts_with("server_id")).unwrap();
    fs::write(
        &cred,
        text.replace(line, &format!("server_id = \"{other_id}\"")),
    )
    .unwrap();

    let out = env.run(&["ls", "--cred", cred.to_str().unwrap()]);
    assert_eq!(out.code, 6, "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("server ID mismatch"), "{}", out.stderr);

    // The client gave up during the TLS handshake: the server saw the handshake fail and
    // never got as far as authentication.
    server
        .wait_for_log("TLS handshake failed", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no handshake failure logged: {:?}", server.log()));
    let log = server.log();
    assert!(
        !log.iter().any(|l| l.contains("authenticat")),
        "the server saw an authentication attempt: {log:?}"
    );
}

#[test]
fn credential_files_must_be_private() {
    let s = Setup::new();
    for cred in [&s.writer, &s.reader] {
        let mode = fs::metadata(cred).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", cred.display());
    }
    fs::set_permissions(&s.reader, fs::Permissions::from_mode(0o644)).unwrap();
    // A credential file named on the command line that cannot be used is bad input.
    let out = s.with(&s.reader, &["ls"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("chmod 600"), "{}", out.stderr);
    assert!(
        s.server.log().iter().all(|l| !l.contains("bob")),
        "nothing was sent"
    );

    let out = s.with(&s.env.join("missing.cred"), &["ls"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.starts_with("ferry: cannot read credential file"),
        "{}",
        out.stderr
    );

    let garbage = s.env.join("garbage.cred");
    fs::write(&garbage, "not a credential").unwrap();
    fs::set_permissions(&garbage, fs::Permissions::from_mode(0o600)).unwrap();
    let out = s.with(&garbage, &["ls"]);
    assert_eq!(out.code, 2);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
}

#[test]
fn an_unreachable_server_is_one_line() {
    let env = Env::new();
    env.init();
    // Port 9 on loopback: nothing listens there.
    let cred = env.issue("alice", "writer", "127.0.0.1:9");
    let out = env.run(&["ls", "--cred", cred.to_str().unwrap()]);
    assert_eq!(out.code, 1);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr
            .starts_with("ferry: cannot connect to 127.0.0.1:9"),
        "{}",
        out.stderr
    );
}

#[test]
fn init_closes_an_existing_server_folder_and_serve_warns_when_it_is_open() {
    let env = Env::new();
    let dir = env.server_dir();
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    env.init();
    let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "init left the folder {mode:o}");

    // A private folder: no warning.
    let served = Served::start(&env);
    assert!(
        served
            .log()
            .iter()
            .all(|l| !l.contains("open to other users")),
        "{:?}",
        served.log()
    );
    drop(served);
    // Opened by someone since: `serve` says so in its log, and still serves.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o750)).unwrap();
    let served = Served::start(&env);
    let line = served
        .log()
        .into_iter()
        .find(|l| l.contains("open to other users"));
    let line = line.unwrap_or_else(|| panic!("no warning: {:?}", served.log()));
    assert!(
        line.contains("WARN") && line.contains("chmod 700"),
        "{line}"
    );
}

#[test]
fn a_second_server_on_the_same_folder_says_it_is_served_already() {
    let env = Env::new();
    env.init();
    let _served = Served::start(&env);
    let out = env.run(&["serve", "--listen", "127.0.0.1:0"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let last = out.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("ferry: ") && last.contains("is already served by another process"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("Database"), "{}", out.stderr);
}
