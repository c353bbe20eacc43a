//! The everyday flow through the real binaries: put, get, ls, stat, rm.
// Helpers outside #[test] functions unwrap too: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;

use common::Setup;

fn blake3_hex(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

/// Random-looking bytes.
fn data(seed: &str, len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    blake3::Hasher::new()
        .update(seed.as_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

#[test]
fn put_get_ls_stat_rm() {
    let s = Setup::new();
    let content = data("flow", 3 << 20);
    let file = s.env.join("report.bin");
    fs::write(&file, &content).unwrap();

    // Put a file.
    let out = s
        .with(&s.writer, &["put", "reports/q3", file.to_str().unwrap()])
        .ok();
    let line = out.text();
    assert!(
        line.starts_with("stored reports/q3 v1 (3145728 bytes, blake3 "),
        "{line}"
    );
    assert_eq!(line.lines().count(), 1);

    // Put standard input, both without a FILE and with "-".
    let note = b"hello from stdin\n".to_vec();
    let out = s.env.run_stdin(
        &["put", "notes/today", "--cred", s.writer.to_str().unwrap()],
        note.clone(),
    );
    assert!(
        out.ok()
            .text()
            .starts_with("stored notes/today v1 (17 bytes")
    );
    let out = s.env.run_stdin(
        &[
            "put",
            "notes/today",
            "-",
            "--cred",
            s.writer.to_str().unwrap(),
        ],
        note.clone(),
    );
    assert!(
        out.ok()
            .text()
            .starts_with("stored notes/today v2 (17 bytes")
    );

    // The reader gets both back, byte for byte, to stdout and to a file.
    let out = s.with(&s.reader, &["get", "reports/q3"]).ok();
    assert!(out.stdout == content, "stdout differs from the original");
    let out = s.with(&s.reader, &["get", "notes/today", "-o", "-"]).ok();
    assert_eq!(out.stdout, note);
    let copy = s.env.join("copy.bin");
    let out = s
        .with(
            &s.reader,
            &["get", "reports/q3", "-o", copy.to_str().unwrap()],
        )
        .ok();
    assert!(
        out.text().starts_with("saved reports/q3 v1"),
        "{}",
        out.text()
    );
    assert!(
        fs::read(&copy).unwrap() == content,
        "file differs from the original"
    );

    // FERRY_CRED works in place of --cred.
    let mut cmd = s.env.command(&["get", "notes/today"]);
    cmd.env("FERRY_CRED", &s.reader);
    let out = common::run(cmd, None, common::SHORT).ok();
    assert_eq!(out.stdout, note);

    // ls, all and by prefix, human and JSON.
    let out = s.with(&s.reader, &["ls"]).ok().text();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("notes/today") && lines[0].contains("v2"),
        "{out}"
    );
    assert!(lines[1].starts_with("reports/q3"), "{out}");
    for want in ["3145728", "v1", "alice"] {
        assert!(lines[1].contains(want), "{out}");
    }
    let out = s.with(&s.reader, &["ls", "reports/", "--json"]).ok();
    let items = common::json_lines(&out.stdout);
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["source"], "reports/q3");
    assert_eq!(items[0]["hash"], blake3_hex(&content));

    // stat --json.
    let out = s.with(&s.reader, &["stat", "reports/q3", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["source"], "reports/q3");
    assert_eq!(v["size"], content.len() as u64);
    assert_eq!(v["version"], 1);
    assert_eq!(v["hash"], blake3_hex(&content));
    assert_eq!(v["by"], "alice");
    assert!(v["modified"].as_u64().unwrap() > 1_600_000_000);
    let human = s.with(&s.reader, &["stat", "notes/today"]).ok().text();
    assert!(human.contains(&blake3_hex(&note)), "{human}");

    // rm, then stat says not found.
    let out = s.with(&s.writer, &["rm", "reports/q3"]).ok();
    assert!(
        out.text().starts_with("deleted reports/q3"),
        "{}",
        out.text()
    );
    let out = s.with(&s.reader, &["stat", "reports/q3"]);
    assert_eq!(out.code, 5, "{}", out.stderr);
    assert_eq!(out.stderr, "ferry: not found: no source 'reports/q3'\n");
    let out = s.with(&s.reader, &["ls", "reports/"]).ok();
    assert!(out.stdout.is_empty());
}

#[test]
fn get_of_a_missing_source_leaves_the_file_alone() {
    let s = Setup::new();
    let target = s.env.join("precious.txt");
    fs::write(&target, b"keep me").unwrap();
    let before: Vec<_> = fs::read_dir(s.env.path()).unwrap().collect();
    let out = s.with(
        &s.reader,
        &["get", "no/such/source", "-o", target.to_str().unwrap()],
    );
    assert_eq!(out.code, 5, "{}", out.stderr);
    assert_eq!(out.stderr, "ferry: not found: no source 'no/such/source'\n");
    assert_eq!(fs::read(&target).unwrap(), b"keep me");
    let after: Vec<_> = fs::read_dir(s.env.path()).unwrap().collect();
    assert_eq!(before.len(), after.len(), "no temporary file left behind");

    // A get that succeeds replaces the file.
    s.env
        .run_stdin(
            &["put", "doc", "--cred", s.writer.to_str().unwrap()],
            b"new".to_vec(),
        )
        .ok();
    s.with(&s.reader, &["get", "doc", "-o", target.to_str().unwrap()])
        .ok();
    assert_eq!(fs::read(&target).unwrap(), b"new");
    let after: Vec<_> = fs::read_dir(s.env.path()).unwrap().collect();
    assert_eq!(before.len(), after.len(), "no temporary file left behind");
}

#[test]
fn empty_source_round_trips() {
    let s = Setup::new();
    let empty = s.env.join("empty");
    fs::write(&empty, b"").unwrap();
    let out = s
        .with(&s.writer, &["put", "e", empty.to_str().unwrap()])
        .ok();
    assert!(
        out.text().starts_with("stored e v1 (0 bytes"),
        "{}",
        out.text()
    );
    let out = s.with(&s.reader, &["get", "e"]).ok();
    assert!(out.stdout.is_empty());
}

/// `-o` onto something that is not a regular file must stream into it, never rename a
/// temporary file over it (that once replaced /dev/null with a regular file); `-o` onto a
/// symbolic link writes its target and keeps the link.
#[test]
fn get_into_a_fifo_and_through_a_symlink() {
    use std::os::unix::fs::FileTypeExt;
    let s = Setup::new();
    let content = data("special", 300_000);
    let file = s.env.join("src.bin");
    fs::write(&file, &content).unwrap();
    s.with(&s.writer, &["put", "doc", file.to_str().unwrap()])
        .ok();

    let fifo = s.env.join("pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let reader_path = fifo.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    // If the get never writes into the FIFO this thread waits forever; the test then fails
    // on the timeout below instead of hanging (the stuck thread ends with the process).
    std::thread::spawn(move || tx.send(fs::read(reader_path).unwrap()));
    let out = s.with(&s.reader, &["get", "doc", "-o", fifo.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let got = rx.recv_timeout(std::time::Duration::from_secs(30));
    assert!(
        got == Ok(content.clone()),
        "the FIFO did not receive the content"
    );
    assert!(
        fs::metadata(&fifo).unwrap().file_type().is_fifo(),
        "the FIFO was replaced"
    );

    let target = s.env.join("real.bin");
    fs::write(&target, b"old").unwrap();
    let link = s.env.join("link.bin");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    s.with(&s.reader, &["get", "doc", "-o", link.to_str().unwrap()])
        .ok();
    assert!(
        fs::symlink_metadata(&link).unwrap().is_symlink(),
        "the link was replaced"
    );
    assert_eq!(fs::read(&target).unwrap(), content);
}

/// `ferry get x | head -c 10`: the reader goes away; ferry stops quietly with 141, as a
/// process killed by SIGPIPE would, instead of printing an error.
#[test]
fn a_closed_output_pipe_ends_quietly() {
    use std::io::Read;
    let s = Setup::new();
    let file = s.env.join("big.bin");
    fs::write(&file, data("pipe", 8 << 20)).unwrap();
    s.with(&s.writer, &["put", "big", file.to_str().unwrap()])
        .ok();
    let mut cmd = s
        .env
        .command(&["get", "big", "--cred", s.reader.to_str().unwrap()]);
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 10];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let status = common::wait_timeout(&mut child, std::time::Duration::from_secs(30))
        .expect("ferry get did not stop after its reader went away");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(141), "stderr: {err}");
    assert_eq!(err, "");
}

#[test]
fn old_versions_are_listed_and_fetched() {
    let s = Setup::new();
    let file = s.env.join("doc.txt");
    for i in 1..=3 {
        fs::write(&file, format!("version {i}\n")).unwrap();
        s.with(&s.writer, &["put", "doc", file.to_str().unwrap()])
            .ok();
    }
    // Newest first, one line each (keep_versions = 3 by default).
    let out = s.with(&s.writer, &["ls", "--versions", "doc"]).ok();
    let versions: Vec<String> = out
        .text()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_owned))
        .collect();
    assert_eq!(versions, ["v3", "v2", "v1"], "{}", out.text());
    let json = s
        .with(&s.writer, &["ls", "--versions", "doc", "--json"])
        .ok();
    assert_eq!(common::json_lines(&json.stdout).len(), 3);

    // An old version, to a file and to standard output; the current one by default.
    let target = s.env.join("old.txt");
    s.with(
        &s.writer,
        &[
            "get",
            "doc",
            "--version",
            "1",
            "-o",
            target.to_str().unwrap(),
        ],
    )
    .ok();
    assert_eq!(fs::read_to_string(&target).unwrap(), "version 1\n");
    let out = s.with(&s.writer, &["get", "doc", "--version", "2"]).ok();
    assert_eq!(out.text(), "version 2\n");
    let out = s.with(&s.writer, &["get", "doc"]).ok();
    assert_eq!(out.text(), "version 3\n");
    // A version the server does not keep: not found (exit 5), one line.
    let out = s.with(&s.writer, &["get", "doc", "--version", "9"]);
    assert_eq!(out.code, 5, "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
}
