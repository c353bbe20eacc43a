//! The habits of scp, rsync and rclone, through the real binary: `--quiet` and `--verbose`,
//! `--json` on every command with a result, exit code 2 and clap's suggestions for usage
//! errors, the terminal hint and empty-read refusal of `put`, `--server` and `--profile`, and
//! `client issue` / `user invite` refusing to guess the server's address.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::{Env, Served, Setup, json_lines};
use ferry::proto::credential::Credential;
use serde_json::Value;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The single JSON object a command printed on stdout (one line).
fn one(out: &common::Out) -> Value {
    let text = out.text();
    assert_eq!(text.lines().count(), 1, "one JSON line: {text:?}");
    serde_json::from_str(text.trim()).unwrap()
}

#[test]
fn quiet_prints_only_errors_and_verbose_tells_the_connection() {
    let st = Setup::new();
    let file = st.env.join("q.txt");
    fs::write(&file, b"quiet").unwrap();
    // Without either: the confirmation.
    let out = st.with(&st.writer, &["put", "q", s(&file)]).ok();
    assert!(out.text().starts_with("stored q v1"), "{}", out.text());
    // --quiet: nothing at all on success, before or after the command's name.
    for args in [
        &["put", "-q", "q", s(&file)][..],
        &["--quiet", "put", "q", s(&file)],
    ] {
        let out = st.with(&st.writer, args).ok();
        assert!(out.stdout.is_empty(), "{}", out.text());
        assert_eq!(out.stderr, "");
    }
    // Notes (a skipped link in a folder) go too; the summary line goes; errors stay.
    let dir = st.env.join("tree");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("a"), b"a").unwrap();
    std::os::unix::fs::symlink("a", dir.join("link")).unwrap();
    let out = st.with(&st.writer, &["put", "-r", s(&dir), "t/"]).ok();
    assert!(out.stderr.contains("skipping"), "{}", out.stderr);
    assert!(out.text().contains("put 1 files"), "{}", out.text());
    let out = st
        .with(&st.writer, &["put", "-r", "-q", s(&dir), "t/"])
        .ok();
    assert_eq!(out.stderr, "");
    assert!(out.stdout.is_empty(), "{}", out.text());
    let out = st.with(&st.reader, &["rm", "-q", "q"]);
    assert_eq!(out.code, 4);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    // A result asked for is still printed.
    let out = st.with(&st.reader, &["ls", "-q"]).ok();
    assert!(out.text().contains("t/a"), "{}", out.text());
    let out = st.with(&st.reader, &["get", "-q", "q"]).ok();
    assert_eq!(out.stdout, b"quiet");
    assert_eq!(out.stderr, "");

    // --verbose: address, who, the pinned server ID, timings.
    let cred = Credential::parse(&fs::read_to_string(&st.reader).unwrap()).unwrap();
    let out = st.with(&st.reader, &["stat", "q", "--verbose"]).ok();
    for want in [
        format!("connecting to {}", st.server.addr),
        "as client bob (role reader".to_owned(),
        format!("pinning server ID {}", cred.server_id),
        "connection up in".to_owned(),
        "finished in".to_owned(),
    ] {
        assert!(out.stderr.contains(&want), "{want}: {}", out.stderr);
    }
    assert!(out.text().starts_with("source    q\n"), "{}", out.text());
    // Not both.
    let out = st.with(&st.reader, &["ls", "-q", "-v"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
}

#[test]
fn json_on_every_command_with_a_result() {
    let st = Setup::new();
    let w = |args: &[&str]| st.with(&st.writer, args);
    let file = st.env.join("a.txt");
    fs::write(&file, b"hello json").unwrap();
    let hash = blake3::hash(b"hello json").to_hex().to_string();

    // put, get -o, stat: an entry.
    let v = one(&w(&["put", "docs/a", s(&file), "--json"]).ok());
    assert_eq!(
        (
            &v["source"],
            &v["version"],
            &v["size"],
            &v["hash"],
            &v["by"]
        ),
        (
            &"docs/a".into(),
            &1.into(),
            &10.into(),
            &hash.clone().into(),
            &"alice".into()
        )
    );
    w(&["put", "docs/a", s(&file), "--no-resume"]).ok();
    let dest = st.env.join("got.txt");
    let v = one(&w(&["get", "docs/a", "-o", s(&dest), "--json"]).ok());
    assert_eq!(v["path"], s(&dest));
    assert_eq!(v["version"], 2);
    assert_eq!(v["hash"], hash);
    // Standard output carries the data: no JSON there.
    let out = w(&["get", "docs/a", "--json"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("-o FILE"), "{}", out.stderr);
    let v = one(&w(&["--json", "stat", "docs/a"]).ok());
    assert!(v["modified"].as_u64().unwrap() > 0, "{v}");

    // ls and ls --versions: JSON Lines.
    w(&["put", "docs/b", s(&file)]).ok();
    let items = json_lines(&w(&["ls", "docs/", "--json"]).ok().stdout);
    let names: Vec<&str> = items
        .iter()
        .map(|e| e["source"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["docs/a", "docs/b"]);
    let items = json_lines(&w(&["ls", "--versions", "docs/a", "--json"]).ok().stdout);
    let versions: Vec<u64> = items
        .iter()
        .map(|e| e["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [2, 1]);

    // rm.
    let v = one(&w(&["rm", "docs/b", "--json"]).ok());
    assert_eq!(
        (&v["source"], &v["deleted"]),
        (&"docs/b".into(), &true.into())
    );
    assert_eq!(v["version"], 2);

    // put -r, get -r, sync and its dry run: summaries.
    let tree = st.env.join("tree");
    fs::create_dir_all(tree.join("sub")).unwrap();
    fs::write(tree.join("x"), b"xx").unwrap();
    fs::write(tree.join("sub/y"), b"yyy").unwrap();
    let v = one(&w(&["put", "-r", s(&tree), "t/", "--json"]).ok());
    assert_eq!(
        (&v["op"], &v["files"], &v["bytes"]),
        (&"put".into(), &2.into(), &5.into())
    );
    assert_eq!(v["failed"], serde_json::json!([]));
    let back = st.env.join("back");
    let v = one(&w(&["get", "-r", "t/", s(&back), "--json"]).ok());
    assert_eq!(
        (&v["op"], &v["files"], &v["bytes"]),
        (&"get".into(), &2.into(), &5.into())
    );
    fs::write(tree.join("x"), b"changed").unwrap();
    let lines = json_lines(&w(&["sync", s(&tree), "t/", "-n", "--json"]).ok().stdout);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(
        (&lines[0]["would"], &lines[0]["source"]),
        (&"put".into(), &"t/x".into())
    );
    assert_eq!(
        (&lines[1]["op"], &lines[1]["files"]),
        (&"dry-run".into(), &1.into())
    );
    let v = one(&w(&["sync", s(&tree), "t/", "--json"]).ok());
    assert_eq!(
        (&v["op"], &v["files"], &v["unchanged"]),
        (&"sync put".into(), &1.into(), &1.into())
    );

    // Administration: init, client issue, client list.
    let env = Env::new();
    let v = one(&env.run(&["init", "--json"]).ok());
    assert!(v["server_id"].as_str().unwrap().len() > 10, "{v}");
    let cred = env.join("c.cred");
    let v = one(&env
        .run(&[
            "client",
            "issue",
            "c",
            "--role",
            "reader",
            "--server",
            "h:1",
            "--out",
            s(&cred),
            "--json",
        ])
        .ok());
    assert_eq!(
        (&v["name"], &v["role"], &v["epoch"], &v["server"]),
        (&"c".into(), &"reader".into(), &1.into(), &"h:1".into())
    );
    assert_eq!(v["path"], s(&cred));
    let list: Value =
        serde_json::from_slice(&env.run(&["client", "list", "--json"]).ok().stdout).unwrap();
    assert_eq!(list[0]["name"], "c");
    // A command without a result refuses --json.
    let out = env.run(&["serve", "--json"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("no JSON output"), "{}", out.stderr);
    // --help documents the shapes.
    let help = env.run(&["--help"]).ok().text();
    assert!(
        help.contains("JSON output (--json)") && help.contains("JSON Lines"),
        "{help}"
    );
}

#[test]
fn login_prints_json() {
    let env = Env::new();
    env.init();
    let server = Served::start(&env);
    let invite = env.join("carol.invite");
    env.run(&[
        "user",
        "invite",
        "carol",
        "--role",
        "writer",
        "--server",
        &server.addr,
        "--out",
        s(&invite),
    ])
    .ok();
    env.run_stdin(
        &["register", "--invite", s(&invite), "--password-stdin"],
        b"a good password\n".to_vec(),
    )
    .ok();
    let out = env
        .run_stdin(
            &["login", "--password-stdin", "--json"],
            b"a good password\n".to_vec(),
        )
        .ok();
    let v = one(&out);
    assert_eq!(
        (&v["user"], &v["role"], &v["server"]),
        (
            &"carol".into(),
            &"writer".into(),
            &server.addr.clone().into()
        )
    );
    assert!(v["expires"].as_u64().is_some(), "{v}");
}

#[test]
fn usage_errors_exit_2_and_keep_suggestions() {
    let env = Env::new();
    env.init();
    // clap's "did you mean", kept in the one line.
    let out = env.run(&["puts", "x"]);
    assert_eq!(out.code, 2);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("a similar subcommand exists: 'put'"),
        "{}",
        out.stderr
    );
    let out = env.run(&["ls", "--jsn"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("'--json'"), "{}", out.stderr);
    // Local files named as arguments that cannot be read.
    let missing = env.join("missing.txt");
    let cred = env.join("nowhere.cred");
    let out = env.run(&["put", "x", s(&missing), "--cred", s(&cred)]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("cannot open"), "{}", out.stderr);
    let file = env.join("f.txt");
    fs::write(&file, b"f").unwrap();
    let out = env.run(&["put", "x", s(&file), "--cred", s(&cred)]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("cannot read credential file"),
        "{}",
        out.stderr
    );
    let bad = env.join("bad.cred");
    fs::write(&bad, b"not a credential").unwrap();
    fs::set_permissions(&bad, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = env.run(&["ls", "--cred", s(&bad)]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    // A server address that is not HOST:PORT.
    let out = env.run(&["ls", "--server", "nope"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
}

#[test]
fn the_empty_read_rule_is_decided_by_terminal_and_flag() {
    // The decision `put` takes on standard input is unit-tested in the binary; here, through
    // a real pseudo-terminal when util-linux `script` is available.
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: util-linux `script` is not installed, so no pseudo-terminal");
        return;
    }
    let st = Setup::new();
    // Runs `ferry put` with a terminal as its standard input; `typed` is what is typed.
    let in_pty = |extra: &str, typed: &[u8]| {
        let args = format!("put tty/x --cred {} {extra}", s(&st.writer));
        common::in_pty(&st.env, &args, typed).unwrap()
    };
    // Ctrl-D at once: nothing stored, exit 2, and the hint was shown.
    let out = in_pty("", b"\x04");
    common::assert_empty_tty_refused(&out);
    assert_eq!(st.with(&st.reader, &["stat", "tty/x"]).code, 5);
    // With --allow-empty, the empty source is stored.
    let out = in_pty("--allow-empty", b"\x04");
    assert_eq!(out.code, 0, "{}", out.text());
    let v = one(&st.with(&st.reader, &["stat", "tty/x", "--json"]).ok());
    assert_eq!(v["size"], 0);
    // Typed text is stored as typed.
    let out = in_pty("", b"typed line\n\x04");
    assert_eq!(out.code, 0, "{}", out.text());
    let got = st.with(&st.reader, &["get", "tty/x"]).ok();
    assert_eq!(got.stdout, b"typed line\n");
    // From a pipe, empty is deliberate: stored, and no hint.
    let out = st
        .env
        .run_stdin(&["put", "pipe/x", "--cred", s(&st.writer)], Vec::new())
        .ok();
    assert!(!out.stderr.contains("Ctrl-D"), "{}", out.stderr);
}

#[test]
fn profiles_and_server_override_reach_two_servers() {
    // Two servers, each with its own folder and a writer credential.
    let a = Env::new();
    a.init();
    let srv_a = Served::start(&a);
    let cred_a = a.issue("me", "writer", &srv_a.addr);
    let b = Env::new();
    b.init();
    let srv_b = Served::start(&b);
    let cred_b = b.issue("me", "writer", &srv_b.addr);
    // The client's config folder: profile "b" names its credential relative to it.
    let user = Env::new();
    fs::create_dir_all(user.config_dir()).unwrap();
    fs::copy(&cred_b, user.config_dir().join("b.cred")).unwrap();
    fs::set_permissions(
        user.config_dir().join("b.cred"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    fs::write(
        user.config_dir().join("profiles.toml"),
        format!(
            "[profiles.a]\ncred = \"{}\"\n[profiles.b]\ncred = \"b.cred\"\n",
            s(&cred_a)
        ),
    )
    .unwrap();
    let file = user.join("f.txt");
    fs::write(&file, b"to a").unwrap();
    user.run(&["put", "only/a", s(&file), "--profile", "a"])
        .ok();
    fs::write(&file, b"to b").unwrap();
    let mut c = user.command(&["put", "only/b", s(&file)]);
    c.env("FERRY_PROFILE", "b");
    common::run(c, None, common::SHORT).ok();
    let names = |profile: &str| -> Vec<String> {
        json_lines(
            &user
                .run(&["ls", "--json", "--profile", profile])
                .ok()
                .stdout,
        )
        .iter()
        .map(|e| e["source"].as_str().unwrap().to_owned())
        .collect()
    };
    assert_eq!(names("a"), ["only/a"]);
    assert_eq!(names("b"), ["only/b"]);
    // Mistakes are usage errors that say what exists.
    let out = user.run(&["ls", "--profile", "c"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("no profile 'c'") && out.stderr.contains("a, b"),
        "{}",
        out.stderr
    );
    let out = user.run(&["ls", "--profile", "a", "--cred", s(&cred_a)]);
    assert_eq!(out.code, 2, "{}", out.stderr);

    // --server: a credential whose address leads nowhere works with the right one...
    let wrong = a.join("wrong.cred");
    a.run(&common::issue_args(
        "other",
        "reader",
        "127.0.0.1:9",
        &wrong,
    ))
    .ok();
    let out = a.run(&["ls", "--cred", s(&wrong)]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let out = a
        .run(&["ls", "--cred", s(&wrong), "--server", &srv_a.addr])
        .ok();
    assert!(out.text().contains("only/a"), "{}", out.text());
    // ...and the server ID is still checked: server b is not the one it pins.
    let out = a.run(&["ls", "--cred", s(&wrong), "--server", &srv_b.addr]);
    assert_eq!(out.code, 6, "{}", out.stderr);
    // A profile's own server overrides its credential's address.
    fs::write(
        user.config_dir().join("profiles.toml"),
        format!(
            "[profiles.w]\ncred = \"{}\"\nserver = \"{}\"\n",
            s(&wrong),
            srv_a.addr
        ),
    )
    .unwrap();
    let out = user.run(&["ls", "--profile", "w"]).ok();
    assert!(out.text().contains("only/a"), "{}", out.text());
}

#[test]
fn invites_need_an_address_too() {
    let env = Env::new();
    env.init();
    let out = env.run(&["user", "invite", "carol", "--role", "writer"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--server HOST:PORT"), "{}", out.stderr);
    assert!(!env.join("carol.invite").exists());
    // ferry init says how to set it.
    let other = Env::new();
    let out = other.run(&["init"]).ok();
    assert!(out.stderr.contains("--server HOST:7443"), "{}", out.stderr);
    let toml = fs::read_to_string(other.server_dir().join("ferry.toml")).unwrap();
    assert!(toml.contains("# address = "), "{toml}");
}

#[test]
fn quiet_holds_for_administration_and_mesh_commands_too() {
    // init and mesh create: their result (the ID) on stdout, their notes only without -q.
    for args in [&["init"][..], &["mesh", "create", "--name", "alpha"]] {
        let env = Env::new();
        let loud = env.run(args).ok();
        assert!(!loud.stderr.is_empty(), "{args:?}");
        let env = Env::new();
        let mut quiet = args.to_vec();
        quiet.push("-q");
        let out = env.run(&quiet).ok();
        assert_eq!(out.stderr, "", "{args:?}");
        assert_eq!(out.text().lines().count(), 1, "{args:?}: {}", out.text());
    }
}
