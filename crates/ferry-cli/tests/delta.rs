//! `ferry put` and `ferry sync` move only the changed chunks of a larger file that the other
//! side has an older copy of (docs/PROTOCOL.md §5.4), through the real binary against a real
//! server, and the result is byte for byte the new file.

// Test support: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;

use common::{Env, Served, hash_file, write_pattern};

const MIB: u64 = 1024 * 1024;

/// Flips one byte of `path` at `at`.
fn flip(path: &Path, at: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0xff], at).unwrap();
}

/// The one JSON summary line of a folder command.
fn summary(stdout: &[u8]) -> serde_json::Value {
    common::json_lines(stdout).pop().unwrap()
}

#[test]
fn sync_and_put_move_only_the_changed_chunks_both_ways() {
    let env = Env::new();
    env.init();
    let server = Served::start(&env);
    let alice = env.issue("alice", "writer", &server.addr);
    let run = |args: &[&str]| {
        let mut v = args.to_vec();
        v.extend(["--cred", alice.to_str().unwrap()]);
        env.run(&v)
    };
    let (up, down) = (env.join("up"), env.join("down"));
    std::fs::create_dir_all(&up).unwrap();
    let big = up.join("big.bin");
    write_pattern(&big, "delta cli", 24 * MIB);
    write_pattern(&up.join("small.txt"), "small", 1000);

    // Both sides start with the whole of it.
    let first = run(&["sync", "up", "d/", "--json"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(summary(&first.stdout)["delta_files"], 0);
    let first = run(&["sync", "d/", "./down", "--json"]);
    assert_eq!(first.code, 0, "{}", first.stderr);

    // One byte changes: sync up sends a chunk or two, not 24 MiB.
    flip(&big, 13 * MIB);
    let out = run(&["sync", "up", "d/", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let s = summary(&out.stdout);
    assert_eq!(
        (s["files"].as_u64(), s["delta_files"].as_u64()),
        (Some(1), Some(1)),
        "{s}"
    );
    assert!(s["delta_sent"].as_u64().unwrap() <= 2 * 256 * 1024, "{s}");

    // And sync down fetches only that, into a file equal to the new one.
    let out = run(&["sync", "d/", "./down", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let s = summary(&out.stdout);
    assert_eq!(
        (s["files"].as_u64(), s["delta_files"].as_u64()),
        (Some(1), Some(1)),
        "{s}"
    );
    assert!(s["delta_sent"].as_u64().unwrap() <= 2 * 256 * 1024, "{s}");
    assert_eq!(hash_file(&down.join("big.bin")), hash_file(&big));
    assert_eq!(
        hash_file(&down.join("small.txt")),
        hash_file(&up.join("small.txt"))
    );

    // `ferry put` of the edited file again after another edit: it says what it sent.
    flip(&big, 2 * MIB);
    let out = run(&["put", "d/big.bin", big.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("only the chunks the server did not have"),
        "{}",
        out.stderr
    );
    let got = env.join("got.bin");
    let out = run(&["get", "d/big.bin", "-o", got.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(hash_file(&got), hash_file(&big));
}
