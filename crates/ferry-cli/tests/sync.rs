//! `ferry sync` both ways through the real binary against a real server: after 3 files change
//! and 1 is deleted, exactly those move (counted by the server: new versions going up, its
//! log of gets going down), `--delete` removes the one, and `--dry-run` changes nothing.

// Test support: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{Env, Served, hash_file, write_pattern};

/// The version and size of every source under `prefix`, from `ferry ls --json`.
fn versions(env: &Env, cred: &Path, prefix: &str) -> BTreeMap<String, (u64, u64)> {
    let out = env
        .run(&["ls", prefix, "--json", "--cred", cred.to_str().unwrap()])
        .ok();
    common::json_lines(&out.stdout)
        .iter()
        .map(|e| {
            (
                e["source"].as_str().unwrap().to_owned(),
                (e["version"].as_u64().unwrap(), e["size"].as_u64().unwrap()),
            )
        })
        .collect()
}

fn files(dir: &Path) -> BTreeMap<String, blake3::Hash> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                let rel = e.path().strip_prefix(dir).unwrap().to_owned();
                out.insert(rel.to_str().unwrap().to_owned(), hash_file(&e.path()));
            }
        }
    }
    out
}

/// Sources the server's log says it sent to `who`, from log line `from` on.
fn gets_logged(server: &Served, who: &str, from: usize) -> Vec<String> {
    let needle = format!("{who} gets ");
    server.log()[from..]
        .iter()
        .filter_map(|l| {
            let (_, rest) = l.split_once(&needle)?;
            Some(rest.rsplit_once(" v")?.0.to_owned())
        })
        .collect()
}

#[test]
fn sync_moves_exactly_what_changed_both_ways() {
    let env = Env::new();
    env.init();
    let server = Served::start_with(&env, &[("FERRY_LOG", "info,ferry::net::data=debug")]);
    let alice = env.issue("alice", "writer", &server.addr);
    let bob = env.issue("bob", "writer", &server.addr);
    let run = |cred: &Path, args: &[&str]| {
        let mut v = args.to_vec();
        v.extend(["--cred", cred.to_str().unwrap()]);
        env.run(&v)
    };
    let src = env.join("src");
    for i in 0..40 {
        let d = src.join(format!("d{}", i % 4));
        std::fs::create_dir_all(&d).unwrap();
        write_pattern(
            &d.join(format!("été {i}.txt")),
            &format!("v1 {i}"),
            5000 + i,
        );
    }

    // Up, the first time: everything.
    let first = run(&alice, &["sync", "./src", "set/"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert!(first.text().contains("put 40 files, "), "{}", first.text());
    let v1 = versions(&env, &alice, "set/");
    assert_eq!(v1.len(), 40);
    assert!(v1.values().all(|(v, _)| *v == 1));

    // Change 3 (one keeping its size, so only BLAKE3 tells), delete 1.
    write_pattern(&src.join("d1/été 1.txt"), "v2 1", 5001);
    write_pattern(&src.join("d2/été 2.txt"), "v2 2", 7777);
    write_pattern(&src.join("d3/été 7.txt"), "v2 7", 1);
    std::fs::remove_file(src.join("d0/été 4.txt")).unwrap();
    let changed = ["set/d1/été 1.txt", "set/d2/été 2.txt", "set/d3/été 7.txt"];

    // A dry run says so and changes nothing.
    let dry = run(&alice, &["sync", "src", "set/", "--delete", "--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(
        dry.text()
            .contains("dry run: would put 3 files, 12779 bytes, delete 1; 36 unchanged"),
        "{}",
        dry.text()
    );
    assert!(
        dry.text().contains("would delete set/d0/été 4.txt"),
        "{}",
        dry.text()
    );
    assert_eq!(versions(&env, &alice, "set/"), v1);

    // Without --delete nothing is deleted; the 3 go up, nothing else.
    let up = run(&alice, &["sync", "src", "set/"]);
    assert_eq!(up.code, 0, "{}", up.stderr);
    assert!(
        up.text()
            .contains("put 3 files, 12779 bytes, 36 unchanged, 0 failed"),
        "{}",
        up.text()
    );
    let v2 = versions(&env, &alice, "set/");
    for (name, (version, _)) in &v2 {
        let expect = if changed.contains(&name.as_str()) {
            2
        } else {
            1
        };
        assert_eq!(*version, expect, "{name}");
    }
    assert!(v2.contains_key("set/d0/été 4.txt"));
    // With --delete: nothing moves again, the one is deleted.
    let del = run(&alice, &["sync", "src", "set/", "--delete"]);
    assert_eq!(del.code, 0, "{}", del.stderr);
    assert!(
        del.text()
            .contains("put 0 files, 0 bytes, 39 unchanged, 1 deleted, 0 failed"),
        "{}",
        del.text()
    );
    let v3 = versions(&env, &alice, "set/");
    assert_eq!(v3.len(), 39);
    assert!(v3.iter().all(|(n, v)| v2.get(n) == Some(v)));

    // Down: bob's copy, then 3 sources change on the server and 1 is deleted there.
    let copy = env.join("copy");
    let down = run(&bob, &["sync", "set/", "./copy"]);
    assert_eq!(down.code, 0, "{}", down.stderr);
    assert_eq!(files(&copy), files(&src));
    for (i, name) in ["d0/été 0.txt", "d1/été 5.txt", "d2/été 10.txt"]
        .iter()
        .enumerate()
    {
        let f = env.join(&format!("new{i}"));
        write_pattern(&f, &format!("v3 {i}"), 100 + i as u64);
        run(
            &alice,
            &["put", &format!("set/{name}"), f.to_str().unwrap()],
        )
        .ok();
        write_pattern(&src.join(name), &format!("v3 {i}"), 100 + i as u64);
    }
    run(&alice, &["rm", "set/d3/été 11.txt"]).ok();
    std::fs::remove_file(src.join("d3/été 11.txt")).unwrap();

    let before = server.log().len();
    let dry = run(&bob, &["sync", "set/", "copy", "--delete", "-n"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(
        dry.text()
            .contains("dry run: would get 3 files, 303 bytes, delete 1; 35 unchanged"),
        "{}",
        dry.text()
    );
    assert!(gets_logged(&server, "bob", before).is_empty());
    assert_ne!(files(&copy), files(&src));

    let down = run(&bob, &["sync", "set/", "copy", "--delete"]);
    assert_eq!(down.code, 0, "{}", down.stderr);
    assert!(
        down.text()
            .contains("got 3 files, 303 bytes, 35 unchanged, 1 deleted, 0 failed"),
        "{}",
        down.text()
    );
    let mut gets = gets_logged(&server, "bob", before);
    gets.sort();
    assert_eq!(
        gets,
        ["set/d0/été 0.txt", "set/d1/été 5.txt", "set/d2/été 10.txt"]
    );
    assert_eq!(files(&copy), files(&src));
}

#[test]
fn sync_refuses_to_guess_which_side_is_local() {
    let env = Env::new();
    std::fs::create_dir(env.join("a")).unwrap();
    std::fs::create_dir(env.join("b")).unwrap();
    let both = env.run(&["sync", "a", "b", "--cred", "none.cred"]);
    assert_eq!(both.code, 2, "{}", both.stderr);
    assert!(
        both.stderr.contains("write the local one as ./NAME"),
        "{}",
        both.stderr
    );
    let neither = env.run(&["sync", "x/", "y/", "--cred", "none.cred"]);
    assert_eq!(neither.code, 2, "{}", neither.stderr);
    let paths = env.run(&["sync", "./a", "./b", "--cred", "none.cred"]);
    assert_eq!(paths.code, 2, "{}", paths.stderr);
}

/// The hash cache file of local folder `dir` under the test's home, and its lines.
fn cache_of(env: &Env, dir: &Path) -> (std::path::PathBuf, Vec<String>) {
    let folder = env.join("home/.cache/ferry/hashes");
    let canonical = std::fs::canonicalize(dir).unwrap();
    let id = blake3::hash(canonical.as_os_str().as_encoded_bytes()).to_hex();
    let file = folder.join(&id.as_str()[..32]);
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    (file, text.lines().skip(1).map(str::to_owned).collect())
}

#[test]
fn sync_believes_its_hash_cache_only_while_a_file_is_untouched() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    env.init();
    let server = Served::start(&env);
    let alice = env.issue("alice", "writer", &server.addr);
    let run = |args: &[&str]| {
        let mut v = args.to_vec();
        v.extend(["--cred", alice.to_str().unwrap()]);
        let out = env.run(&v);
        assert_eq!(out.code, 0, "{:?}: {}", args, out.stderr);
        out.text()
    };
    let src = env.join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    write_pattern(&src.join("big.bin"), "big", 1 << 20);
    write_pattern(&src.join("d/b.txt"), "b", 3000);
    write_pattern(&src.join("d/c.txt"), "c", 3000);
    // A hash is remembered only for a file left alone for 2 s before it was read.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert!(run(&["sync", "./src", "set/"]).contains("put 3 files, "));
    let again = run(&["sync", "./src", "set/"]);
    assert!(
        again.contains("put 0 files, 0 bytes, 3 unchanged"),
        "{again}"
    );

    // The cache: one line per file, private to its owner.
    let (file, lines) = cache_of(&env, &src);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(file.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );

    // It is believed: a remembered hash that is wrong (the file untouched) makes that file
    // go up again, though its content did not change. Reading the file would have found it
    // unchanged.
    let doctor = |name: &str| {
        let (file, lines) = cache_of(&env, &src);
        let mut text = String::from("ferry-hash-cache 1\n");
        for l in lines {
            if l.ends_with(name) {
                text.push_str(&"0".repeat(64));
                text.push_str(&l[64..]);
            } else {
                text.push_str(&l);
            }
            text.push('\n');
        }
        std::fs::write(&file, text).unwrap();
    };
    doctor("d/b.txt");
    let out = run(&["sync", "./src", "set/"]);
    assert!(
        out.contains("put 1 files, 3000 bytes, 2 unchanged"),
        "{out}"
    );
    // ...and forgotten once the file went up: the next run reads it again, finds it equal.
    let out = run(&["sync", "./src", "set/"]);
    assert!(out.contains("put 0 files, 0 bytes, 3 unchanged"), "{out}");

    // --checksum reads every file: the same doctored cache moves nothing.
    doctor("d/b.txt");
    let out = run(&["sync", "./src", "set/", "--checksum"]);
    assert!(out.contains("put 0 files, 0 bytes, 3 unchanged"), "{out}");

    // A file rewritten with the same size and given back its old modification time is read
    // again (its change time moved), and goes up.
    let f = src.join("d/c.txt");
    let mtime = std::fs::metadata(&f).unwrap().modified().unwrap();
    write_pattern(&f, "c, changed", 3000);
    std::fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_eq!(std::fs::metadata(&f).unwrap().modified().unwrap(), mtime);
    let out = run(&["sync", "./src", "set/"]);
    assert!(
        out.contains("put 1 files, 3000 bytes, 2 unchanged"),
        "{out}"
    );
    assert_eq!(
        versions(&env, &alice, "set/")["set/d/c.txt"],
        (2, 3000),
        "c.txt went up again"
    );
}
