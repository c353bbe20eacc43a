//! `ferry serve --metrics ADDR --log-format json`: the counters match what the test did, every
//! log line is one JSON object and a connection's lines carry its ID, audit lines record
//! puts, gets, deletes and refusals, and no log line holds a key, a password or a session
//! secret.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Env, Served};

const PW: &str = "correct horse battery staple";

/// `GET /metrics` over a plain socket: the body of the answer.
fn scrape(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    body.to_owned()
}

/// The value of the sample `name` (with its labels, exactly as rendered), or 0 if absent.
fn sample(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0, |v| v.trim().parse().unwrap())
}

fn field<'a>(v: &'a serde_json::Value, path: &[&str]) -> Option<&'a str> {
    let mut v = v;
    for p in path {
        v = v.get(p)?;
    }
    v.as_str()
}

#[test]
fn metrics_count_what_happened_and_json_logs_carry_connection_and_audit() {
    let env = Env::new();
    env.init();
    let conf = env.server_dir().join("ferry.toml");
    let text = fs::read_to_string(&conf).unwrap();
    fs::write(
        &conf,
        text.replace("m_kib = 65536\nt = 3", "m_kib = 1024\nt = 1"),
    )
    .unwrap();
    let mut cmd = env.command(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
        "--log-format",
        "json",
    ]);
    // Everything, debug lines included, so that the secret check sees every line.
    cmd.env("FERRY_LOG", "debug");
    let server = Served::spawn(cmd);
    let line = server
        .wait_for_log("metrics on http://", Duration::from_secs(10))
        .unwrap();
    let metrics_addr = line
        .split("metrics on http://")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();

    let alice = env.issue("alice", "writer", &server.addr);
    let bob = env.issue("bob", "reader", &server.addr);
    let with = |cred: &std::path::Path, args: &[&str]| {
        let mut v = args.to_vec();
        v.extend(["--cred", cred.to_str().unwrap()]);
        env.run(&v)
    };
    let data = env.join("data");
    fs::write(&data, vec![7u8; 5000]).unwrap();
    with(&alice, &["put", "r/x", data.to_str().unwrap()]).ok();
    let got = with(&bob, &["get", "r/x"]).ok();
    assert_eq!(got.stdout.len(), 5000);
    // A reader may not put, nor delete; a missing source is not found.
    assert_ne!(with(&bob, &["put", "r/y", data.to_str().unwrap()]).code, 0);
    assert_ne!(with(&bob, &["rm", "r/x"]).code, 0);
    assert_ne!(with(&alice, &["get", "r/none"]).code, 0);
    with(&alice, &["rm", "r/x"]).ok();
    // A credential with its key changed fails to authenticate.
    let forged = env.join("forged.cred");
    let text = fs::read_to_string(&alice).unwrap();
    let key_line = text.lines().find(|l| l.starts_with("key = ")).unwrap();
    let key = key_line
        .trim_start_matches("key = ")
        .trim_matches('"')
        .to_owned();
    let flipped = format!(
        "key = \"{}{}\"",
        if &key[..1] == "0" { "1" } else { "0" },
        &key[1..]
    );
    fs::write(&forged, text.replace(key_line, &flipped)).unwrap();
    rustix_chmod(&forged);
    assert_eq!(with(&forged, &["stat", "r/x"]).code, 3);
    // A password user: invited, registered, logged in, one listing on the session.
    let invite = env.join("carol.invite");
    env.run(&[
        "user",
        "invite",
        "carol",
        "--role",
        "reader",
        "--server",
        &server.addr,
        "--out",
        invite.to_str().unwrap(),
    ])
    .ok();
    env.run_stdin(
        &[
            "register",
            "--invite",
            invite.to_str().unwrap(),
            "--password-stdin",
        ],
        format!("{PW}\n").into_bytes(),
    )
    .ok();
    env.run_stdin(
        &["login", "--user", "carol", "--password-stdin"],
        format!("{PW}\n").into_bytes(),
    )
    .ok();
    // Its secret, to look for in the log below (logout removes the file).
    let session = fs::read_to_string(env.config_dir().join("session.toml")).unwrap();
    env.run(&["ls", "r/"]).ok();
    env.run(&["logout"]).ok();

    // A client may exit before the server has closed its side: wait (bounded) until no
    // connection is open, so every count of the last one is in.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let m = loop {
        let m = scrape(&metrics_addr);
        if sample(&m, "ferry_connections_open") == 0 || std::time::Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let expect = [
        ("ferry_requests_total{op=\"put\",outcome=\"ok\"}", 1),
        ("ferry_requests_total{op=\"put\",outcome=\"forbidden\"}", 1),
        ("ferry_requests_total{op=\"get\",outcome=\"ok\"}", 1),
        ("ferry_requests_total{op=\"get\",outcome=\"not_found\"}", 1),
        ("ferry_requests_total{op=\"delete\",outcome=\"ok\"}", 1),
        (
            "ferry_requests_total{op=\"delete\",outcome=\"forbidden\"}",
            1,
        ),
        ("ferry_requests_total{op=\"list\",outcome=\"ok\"}", 1),
        // alice: put, get none, rm; bob: get, put, rm.
        (
            "ferry_authentications_total{method=\"psk\",outcome=\"ok\"}",
            6,
        ),
        (
            "ferry_authentications_total{method=\"psk\",outcome=\"failed\"}",
            1,
        ),
        (
            "ferry_authentications_total{method=\"invite\",outcome=\"ok\"}",
            1,
        ),
        (
            "ferry_authentications_total{method=\"password\",outcome=\"ok\"}",
            1,
        ),
        (
            // ls and logout.
            "ferry_authentications_total{method=\"session\",outcome=\"ok\"}",
            2,
        ),
        ("ferry_connections_refused_total{reason=\"auth_failed\"}", 1),
        ("ferry_received_bytes_total", 5000),
        ("ferry_sent_bytes_total", 5000),
        ("ferry_transfer_duration_seconds_count{op=\"put\"}", 1),
        ("ferry_transfer_duration_seconds_count{op=\"get\"}", 1),
        ("ferry_uploads_in_progress", 0),
    ];
    for gauge in ["ferry_kept_bytes ", "ferry_kept_versions "] {
        assert!(
            m.lines().any(|l| l.starts_with(gauge)),
            "no {gauge} in\n{m}"
        );
    }
    for (name, want) in expect {
        assert_eq!(sample(&m, name), want, "{name} in\n{m}");
    }
    // Every connection so far was counted (7 with credentials, register, login, ls,
    // logout), and none is open.
    assert_eq!(sample(&m, "ferry_connections_total"), 11, "{m}");
    assert_eq!(sample(&m, "ferry_connections_open"), 0, "{m}");

    // Every line is a JSON object; the connection's lines carry its ID.
    let log = server.log();
    let lines: Vec<serde_json::Value> = log
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let audit: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|v| field(v, &["target"]) == Some("ferry::audit"))
        .collect();
    let find = |op: &str, outcome: &str, who: &str| {
        audit.iter().copied().find(|v| {
            field(v, &["fields", "op"]) == Some(op)
                && field(v, &["fields", "outcome"]) == Some(outcome)
                && field(v, &["fields", "principal"]) == Some(who)
        })
    };
    for (op, outcome, who, source) in [
        ("put", "ok", "alice", "r/x"),
        ("get", "ok", "bob", "r/x"),
        ("put", "forbidden", "bob", "r/y"),
        ("delete", "forbidden", "bob", "r/x"),
        ("get", "not_found", "alice", "r/none"),
        ("delete", "ok", "alice", "r/x"),
    ] {
        let line = find(op, outcome, who)
            .unwrap_or_else(|| panic!("no audit line for {op} {outcome} by {who}: {log:#?}"));
        assert_eq!(field(line, &["fields", "source"]), Some(source), "{line}");
        let span = line
            .get("span")
            .expect("an audit line has its connection's span");
        assert!(span.get("id").and_then(|i| i.as_u64()).is_some(), "{line}");
        assert_eq!(field(span, &["principal"]), Some(who), "{line}");
        assert!(field(span, &["peer"]).is_some_and(|p| p.starts_with("127.0.0.1:")));
    }
    // Account changes and authentications are audit lines too.
    for (op, outcome, who) in [
        ("register", "ok", Some("carol")),
        ("authenticate", "ok", Some("carol")),
        ("logout", "ok", Some("carol")),
        ("authenticate", "failed", None),
    ] {
        assert!(
            audit.iter().any(|v| field(v, &["fields", "op"]) == Some(op)
                && field(v, &["fields", "outcome"]) == Some(outcome)
                && (who.is_none() || field(v, &["fields", "principal"]) == who)),
            "no audit line for {op} {outcome} by {who:?}: {log:#?}"
        );
    }
    let auth_failed = lines
        .iter()
        .find(|v| {
            field(v, &["fields", "message"]).is_some_and(|m| m.starts_with("authentication failed"))
        })
        .expect("the forged credential's failure is logged");
    assert!(
        auth_failed["span"]["id"].as_u64().is_some(),
        "{auth_failed}"
    );

    // No secret in any line: not the credential keys, not the password, not the session's
    // secret.
    let session: toml::Value = toml::from_str(&session).unwrap();
    let bob_cred: toml::Value = toml::from_str(&fs::read_to_string(&bob).unwrap()).unwrap();
    let mut secrets = vec![
        PW.to_owned(),
        key,
        bob_cred["key"].as_str().unwrap().to_owned(),
    ];
    let table = session.as_table().unwrap();
    let secret_fields: Vec<&str> = table
        .iter()
        .filter(|(k, _)| k.contains("secret"))
        .filter_map(|(_, v)| v.as_str())
        .collect();
    assert!(
        !secret_fields.is_empty(),
        "session.toml has no secret field: {table:?}"
    );
    secrets.extend(secret_fields.iter().map(|s| s.to_string()));
    for line in &log {
        for s in &secrets {
            assert!(!line.contains(s.as_str()), "a secret in the log: {line}");
        }
    }
}

#[test]
fn metrics_on_a_reachable_address_need_metrics_public() {
    let env = Env::new();
    env.init();
    let out = env.run(&["serve", "--listen", "127.0.0.1:0", "--metrics", "0.0.0.0:0"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("--metrics-public"), "{}", out.stderr);
}

fn rustix_chmod(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}
