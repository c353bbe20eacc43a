//! Exit code 2 for every usage or bad-input error, wherever it is caught: by clap, or later by
//! the command (invalid names and prefixes, a folder given as FILE, conflicting or missing
//! options, bad passwords). Each is one line on stderr, and nothing reaches a network: the
//! credential named does not even exist.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;

use common::Env;

#[test]
fn usage_and_bad_input_exit_2() {
    let env = Env::new();
    env.init();
    let cred = env.join("nowhere.cred");
    let cred = cred.to_str().unwrap();
    let file = env.join("f.txt");
    fs::write(&file, b"x").unwrap();
    let file = file.to_str().unwrap();
    let dir = env.join("adir");
    fs::create_dir(&dir).unwrap();
    let dir = dir.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        // clap's own errors.
        (&["frobnicate"], "unrecognized subcommand"),
        (&["put"], "required"),
        (&["get", "x", "--bogus"], "--bogus"),
        // Names and prefixes, checked by the command.
        (
            &["put", "bad\u{1b}name", file, "--cred", cred],
            "character 4 is U+001B, a control character",
        ),
        (&["get", "", "--cred", cred], "it is empty"),
        (&["stat", "a/../b", "--cred", cred], "segment 2 is '..'"),
        (&["rm", "~x", "--cred", cred], "character 1 is U+007E"),
        (&["ls", "a\u{7}", "--cred", cred], "character 2 is U+0007"),
        (&["watch", "a\u{202e}", "--cred", cred], "bidirectional"),
        // Arguments that are wrong in another way.
        (&["put", "x", dir, "--cred", cred], "is a folder"),
        (&["get", "x", "-o", dir, "--cred", cred], "is a folder"),
        (
            &["client", "issue", "a b", "--role", "writer"],
            "invalid client name",
        ),
        (
            &["client", "issue", "a", "--role", "writer", "--out", dir],
            "it is a folder",
        ),
        (
            &[
                "client", "issue", "a", "--role", "r", "--attr", "k=1", "--attr", "k=2",
            ],
            "twice",
        ),
        (
            &[
                "login",
                "--user",
                "carol",
                "--server",
                "127.0.0.1:9",
                "--server-id",
                "NOT-AN-ID",
                "--password-stdin",
            ],
            "server ID",
        ),
    ];
    for (args, says) in cases {
        let out = env.run(args);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{args:?}: {}", out.stderr);
        assert!(!out.stderr.contains('\u{1b}'), "{args:?}: {:?}", out.stderr);
    }
    // --help says so.
    let help = env.run(&["--help"]).ok().text();
    assert!(
        help.contains("2  usage error: a bad argument or bad input"),
        "{help}"
    );
}
