//! `ferry put/get/ls/stat/rm --via http` against `ferry serve --http`, directly (no proxy):
//! files and standard input/output, and a clear refusal without a URL. (Through nginx:
//! tests/http_nginx.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Env, Served, hash_file, write_pattern};

#[test]
fn put_get_ls_stat_rm_via_http() {
    let env = Env::new();
    env.init();
    let server =
        Served::spawn(env.command(&["serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"]));
    let line = server
        .wait_for_log("HTTP front listening on ", Duration::from_secs(30))
        .expect("the HTTP front starts");
    let url = format!(
        "http://{}",
        line.split("HTTP front listening on ")
            .nth(1)
            .unwrap()
            .trim()
    );
    // A credential issued without --http-url: --via http needs the URL from somewhere.
    let alice = env.issue("alice", "writer", &server.addr);
    let alice = alice.to_str().unwrap();
    let out = env.run(&["stat", "x", "--via", "http", "--cred", alice]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("--http-url"), "{}", out.stderr);
    let via = |args: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        v.extend(["--via", "http", "--http-url", &url, "--cred", alice].map(str::to_owned));
        v
    };
    let src = env.join("f.bin");
    let want = write_pattern(&src, "via", 3 << 20);
    let out = run(&env, &via(&["put", "dir/f", src.to_str().unwrap()])).ok();
    assert!(out.text().contains("stored dir/f v1"), "{}", out.text());
    let dst = env.join("f.out");
    run(&env, &via(&["get", "dir/f", "-o", dst.to_str().unwrap()])).ok();
    assert_eq!(hash_file(&dst), want);
    let out = run(&env, &via(&["stat", "dir/f", "--json"])).ok();
    assert!(
        out.text().contains(&want.to_hex().to_string()),
        "{}",
        out.text()
    );
    let out = run(&env, &via(&["ls", "dir/"])).ok();
    assert!(out.text().contains("dir/f"), "{}", out.text());
    // Standard input and output.
    run_stdin(
        &env,
        &via(&["put", "dir/s", "-"]),
        b"hello, http\n".to_vec(),
    )
    .ok();
    let out = run(&env, &via(&["get", "dir/s"])).ok();
    assert_eq!(out.stdout, b"hello, http\n");
    let out = run(&env, &via(&["rm", "dir/f"])).ok();
    assert!(out.text().contains("deleted dir/f"), "{}", out.text());
    let out = run(&env, &via(&["stat", "dir/f"]));
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("not found"), "{}", out.stderr);
    // From a terminal (a pseudo-terminal, when util-linux `script` is there): the hint, an
    // empty read refused, typed text stored; as without --via http.
    let args = format!("put tty/x --via http --http-url {url} --cred {alice}");
    let in_pty = |typed: &[u8]| common::in_pty(&env, &args, typed);
    let Some(out) = in_pty(b"\x04") else {
        return;
    };
    common::assert_empty_tty_refused(&out);
    assert_ne!(run(&env, &via(&["stat", "tty/x"])).code, 0);
    let out = in_pty(b"typed over http\n\x04").unwrap();
    assert_eq!(out.code, 0, "{}", out.text());
    let out = run(&env, &via(&["get", "tty/x"])).ok();
    assert_eq!(out.stdout, b"typed over http\n");
}

fn run(env: &Env, args: &[String]) -> common::Out {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    env.run(&args)
}

fn run_stdin(env: &Env, args: &[String], input: Vec<u8>) -> common::Out {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    env.run_stdin(&args, input)
}

#[test]
fn folder_transfers_via_http_are_refused_as_usage_errors() {
    let env = Env::new();
    std::fs::create_dir(env.join("dir")).unwrap();
    std::fs::write(env.join("f"), b"x").unwrap();
    for args in [
        vec!["put", "-r", "dir", "p/", "--via", "http"],
        vec!["put", "f", "p/", "--via", "http"],
        vec!["get", "-r", "p/", "dir", "--via", "http"],
        vec!["get", "p/f", "dir/", "--via", "http"],
    ] {
        let out = env.run(&args);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("not available with --via http"),
            "{}",
            out.stderr
        );
    }
}

/// A password user through the HTTP front only: `ferry login --via http` (OPAQUE over two
/// requests), then put and get `--via http` signed by the stored session, without --cred.
#[test]
fn a_password_user_logs_in_and_transfers_via_http() {
    let env = Env::new();
    env.init();
    let conf = env.server_dir().join("ferry.toml");
    let text = std::fs::read_to_string(&conf).unwrap();
    let fast = text.replace("m_kib = 65536\nt = 3", "m_kib = 1024\nt = 1");
    assert_ne!(fast, text, "ferry.toml's [password] section changed shape");
    std::fs::write(&conf, fast).unwrap();
    let server =
        Served::spawn(env.command(&["serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"]));
    let line = server
        .wait_for_log("HTTP front listening on ", Duration::from_secs(30))
        .expect("the HTTP front starts");
    let url = format!(
        "http://{}",
        line.split("HTTP front listening on ")
            .nth(1)
            .unwrap()
            .trim()
    );
    let pw = b"correct horse battery staple\n".to_vec();
    env.run(&[
        "user",
        "invite",
        "carol",
        "--role",
        "writer",
        "--server",
        &server.addr,
    ])
    .ok();
    let invite = env.join("carol.invite");
    env.run_stdin(
        &[
            "register",
            "--invite",
            invite.to_str().unwrap(),
            "--password-stdin",
        ],
        pw.clone(),
    )
    .ok();
    // A wrong password: the one refusal, nothing stored.
    let out = env.run_stdin(
        &[
            "login",
            "--via",
            "http",
            "--http-url",
            &url,
            "--user",
            "carol",
            "--password-stdin",
        ],
        b"not the password\n".to_vec(),
    );
    assert_eq!(out.code, 3, "{}", out.stderr);
    let out = env
        .run_stdin(
            &[
                "login",
                "--via",
                "http",
                "--http-url",
                &url,
                "--user",
                "carol",
                "--password-stdin",
            ],
            pw,
        )
        .ok();
    assert!(out.text().contains("logged in as carol"), "{}", out.text());
    let src = env.join("p.bin");
    let want = write_pattern(&src, "password via http", 2 << 20);
    let out = env
        .run(&["put", "p/f", src.to_str().unwrap(), "--via", "http"])
        .ok();
    assert!(out.text().contains("stored p/f v1"), "{}", out.text());
    let dst = env.join("p.out");
    env.run(&["get", "p/f", "-o", dst.to_str().unwrap(), "--via", "http"])
        .ok();
    assert_eq!(hash_file(&dst), want);
    let out = env.run(&["stat", "p/f", "--via", "http", "--json"]).ok();
    assert!(out.text().contains("\"carol\""), "{}", out.text());
}
