//! `init`, `client issue|revoke|list`, help and usage errors.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::Env;
use ferry::proto::credential::Credential;
use ferry::proto::server_id::ServerId;

#[test]
fn init_prints_a_server_id_and_refuses_to_overwrite() {
    let env = Env::new();
    let out = env.run(&["init"]).ok();
    let text = out.text();
    assert_eq!(
        text.lines().count(),
        1,
        "stdout must be just the ID: {text:?}"
    );
    ServerId::parse(text.trim()).unwrap();
    assert!(env.server_dir().join("ferry.toml").exists());
    assert!(out.stderr.contains("ferry serve"), "{}", out.stderr);

    let again = env.run(&["init"]);
    assert_eq!(again.code, 1);
    assert!(again.stdout.is_empty());
    assert_eq!(again.stderr.lines().count(), 1, "{}", again.stderr);
    assert!(again.stderr.starts_with("ferry: "), "{}", again.stderr);
    assert!(again.stderr.contains("already holds a ferry server"));
}

#[test]
fn init_defaults_to_the_data_folder_without_ferry_dir() {
    let env = Env::new();
    let mut cmd = env.command(&["init"]);
    cmd.env_remove("FERRY_DIR");
    let out = common::run(cmd, None, common::SHORT).ok();
    ServerId::parse(out.text().trim()).unwrap();
    assert!(env.join("home/.local/share/ferry/master.key").exists());
}

#[test]
fn issue_writes_a_0600_credential_and_reissue_bumps_the_epoch() {
    let env = Env::new();
    let id = env.init();
    let args = [
        "client", "issue", "alice", "--role", "writer", "--attr", "team=ops",
    ];
    // No --server and no address in ferry.toml: refused (ferry does not guess where clients
    // reach it), saying how to fix it; nothing is issued.
    let out = env.run(&args);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    for want in [
        "--server HOST:PORT",
        "address = \"HOST:PORT\"",
        "ferry.toml",
    ] {
        assert!(out.stderr.contains(want), "{want}: {}", out.stderr);
    }
    assert!(!env.join("alice.cred").exists());
    let list = env.run(&["client", "list", "--json"]).ok();
    assert_eq!(list.text().trim(), "[]");
    // The address configured in ferry.toml is the default.
    let toml = env.server_dir().join("ferry.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(&toml, format!("address = \"files.example:7443\"\n{text}")).unwrap();
    let out = env.run(&args).ok();
    assert!(out.stderr.contains("alice.cred"), "{}", out.stderr);
    let path = env.join("alice.cred");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let cred = Credential::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(cred.server_id.to_string(), id);
    assert_eq!(
        cred.server, "files.example:7443",
        "defaults to the config's address"
    );
    assert_eq!(cred.claims.epoch(), 1);
    assert_eq!(cred.claims.role(), "writer");
    assert_eq!(cred.claims.attributes()["team"], "ops");

    let out = env
        .run(&["client", "issue", "alice", "--role", "writer", "--out", "-"])
        .ok();
    let cred2 = Credential::parse(&out.text()).unwrap();
    assert_eq!(cred2.claims.epoch(), 2);
    assert!(out.stderr.contains("invalidated"), "{}", out.stderr);
    assert!(
        !out.stderr.contains("key"),
        "no key on stderr: {}",
        out.stderr
    );
}

#[test]
fn attribute_mistakes_are_usage_errors() {
    let env = Env::new();
    env.init();
    for attr in ["role=admin", "team", "Team=x", "team="] {
        let out = env.run(&["client", "issue", "a", "--role", "reader", "--attr", attr]);
        assert_eq!(out.code, 2, "{attr}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
        assert!(out.stderr.starts_with("ferry: "), "{}", out.stderr);
    }
    let out = env.run(&[
        "client", "issue", "a", "--role", "reader", "--attr", "role=x",
    ]);
    assert!(out.stderr.contains("--role"), "{}", out.stderr);
    let out = env.run(&[
        "client", "issue", "a", "--role", "reader", "--attr", "t=1", "--attr", "t=2",
    ]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("twice"), "{}", out.stderr);
    assert!(!env.join("a.cred").exists());
    // Nothing was issued by the refused commands.
    let list = env.run(&["client", "list", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 0);
}

#[test]
fn revoke_and_list() {
    let env = Env::new();
    env.init();
    env.run(&[
        "client", "issue", "alice", "--role", "writer", "--attr", "team=ops", "--server", "h:1",
    ])
    .ok();
    env.run(&[
        "client", "issue", "bob", "--role", "reader", "--server", "h:1",
    ])
    .ok();
    env.run(&["client", "revoke", "bob"]).ok();
    let missing = env.run(&["client", "revoke", "carol"]);
    assert_eq!(missing.code, 5);
    assert_eq!(missing.stderr, "ferry: no client named 'carol'\n");

    let table = env.run(&["client", "list"]).ok().text();
    let alice = table.lines().find(|l| l.starts_with("alice")).unwrap();
    for want in ["writer", "team=ops", "active"] {
        assert!(alice.contains(want), "{alice}");
    }
    let bob = table.lines().find(|l| l.starts_with("bob")).unwrap();
    assert!(bob.contains("revoked"), "{bob}");

    let json = env.run(&["client", "list", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let items = v.as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["name"], "alice");
    assert_eq!(items[0]["role"], "writer");
    assert_eq!(items[0]["attributes"]["team"], "ops");
    assert_eq!(items[0]["epoch"], 1);
    assert_eq!(items[0]["status"], "active");
    assert_eq!(items[1]["status"], "revoked");
}

#[test]
fn help_and_usage() {
    let env = Env::new();
    let help = env.run(&["--help"]).ok().text();
    for want in [
        "Exit codes",
        "authentication failed",
        "server ID mismatch",
        "ferry init",
    ] {
        assert!(help.contains(want), "{want} missing from:\n{help}");
    }
    for cmd in [
        "init", "serve", "put", "get", "ls", "stat", "rm", "demo", "register", "login", "logout",
        "passwd",
    ] {
        let out = env.run(&[cmd, "--help"]).ok();
        assert!(out.text().contains("Usage: ferry"), "{cmd}");
    }
    let out = env.run(&["client", "issue", "--help"]).ok();
    assert!(out.text().contains("--attr"));

    let out = env.run(&["frobnicate"]);
    assert_eq!(out.code, 2);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    // Without a credential and without a login session, one line says how to get either.
    let out = env.run(&["ls"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("--cred"), "{}", out.stderr);
    assert!(out.stderr.contains("ferry login"), "{}", out.stderr);
}

#[test]
fn commands_on_a_missing_server_folder_explain() {
    let env = Env::new();
    let out = env.run(&["client", "list"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("ferry init"), "{}", out.stderr);
    let out = env.run(&["serve"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("ferry init"), "{}", out.stderr);
}

#[test]
fn issuing_an_unknown_role_is_refused_without_force() {
    let env = Env::new();
    env.init();
    let cred = env.join("x.cred");
    let args = |force: bool| {
        let mut v = vec![
            "client",
            "issue",
            "x",
            "--role",
            "wrtier",
            "--server",
            "127.0.0.1:7443",
            "--out",
            cred.to_str().unwrap(),
        ];
        if force {
            v.push("--force");
        }
        v
    };
    let out = env.run(&args(false));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("no role 'wrtier'")
            && out.stderr.contains("admin, reader, writer")
            && out.stderr.contains("--force"),
        "{}",
        out.stderr
    );
    // Nothing issued: no file, and the name is not in the registry.
    assert!(!cred.exists());
    let list = env.run(&["client", "list"]).ok();
    assert!(
        !list
            .text()
            .lines()
            .any(|l| l.split_whitespace().next() == Some("x")),
        "{}",
        list.text()
    );
    // With --force it is issued, with the warning.
    let out = env.run(&args(true)).ok();
    assert!(cred.exists());
    assert!(
        out.stderr.contains("defines no role 'wrtier'"),
        "{}",
        out.stderr
    );
}
