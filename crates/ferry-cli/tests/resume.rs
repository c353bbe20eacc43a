//! `ferry get -o FILE` killed mid-transfer resumes when run again.
// Helpers outside #[test] functions unwrap too: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Setup, hash_file, upload_parts, write_pattern};

const LEN: u64 = 64 << 20;

fn partials(dst: &Path) -> (PathBuf, PathBuf) {
    let name = dst.file_name().unwrap().to_str().unwrap();
    (
        dst.with_file_name(format!(".{name}.ferry-partial")),
        dst.with_file_name(format!(".{name}.ferry-partial.toml")),
    )
}

/// Puts LEN pseudo-random bytes as `big`; returns their hash.
fn put_big(s: &Setup) -> blake3::Hash {
    let src = s.env.join("big.bin");
    write_pattern(&src, "ferry resume", LEN);
    s.with(&s.writer, &["put", "big", src.to_str().unwrap()])
        .ok();
    let h = hash_file(&src);
    std::fs::remove_file(&src).unwrap();
    h
}

/// Starts `ferry get big -o dst` and SIGKILLs it once its partial file holds some data but
/// not all. Retries (bounded) if a run finishes before it could be killed.
fn get_killed_midway(s: &Setup, dst: &Path) -> u64 {
    let (part, meta) = partials(dst);
    for _attempt in 0..5 {
        let mut get = s.env.command(&["get", "big", "-o", dst.to_str().unwrap()]);
        get.args(["--cred", s.reader.to_str().unwrap(), "--no-resume"]);
        get.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = get.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut killed = false;
        while Instant::now() < deadline {
            let len = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
            if len > 0 && len < LEN && meta.exists() {
                child.kill().unwrap(); // SIGKILL
                killed = true;
                break;
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if !killed {
            let _ = child.kill();
        }
        let _ = child.wait();
        if killed {
            assert!(!dst.exists(), "a killed get must not create the target");
            let len = std::fs::metadata(&part).unwrap().len();
            assert!(meta.exists(), "the sidecar stays");
            return len;
        }
        let _ = std::fs::remove_file(dst);
    }
    panic!("could not kill a get midway in 5 attempts");
}

#[test]
fn a_get_killed_with_sigkill_resumes_and_completes_byte_identical() {
    let s = Setup::new();
    let want = put_big(&s);
    let dst = s.env.join("copy.bin");
    let len = get_killed_midway(&s, &dst);
    eprintln!("killed with {len} bytes in the partial file");

    let out = s
        .with(&s.reader, &["get", "big", "-o", dst.to_str().unwrap()])
        .ok();
    assert!(
        out.stderr.contains(&format!("resuming at {len} bytes")),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::metadata(&dst).unwrap().len(), LEN);
    assert_eq!(hash_file(&dst), want, "the copy differs from the original");
    let (part, meta) = partials(&dst);
    assert!(
        !part.exists() && !meta.exists(),
        "partial files left behind"
    );
}

#[test]
fn a_corrupted_partial_is_detected_removed_and_the_next_run_starts_over() {
    let s = Setup::new();
    let want = put_big(&s);
    let dst = s.env.join("copy.bin");
    let len = get_killed_midway(&s, &dst);
    let (part, meta) = partials(&dst);
    {
        let mut bytes = std::fs::read(&part).unwrap();
        bytes[(len / 2) as usize] ^= 0x01;
        std::fs::write(&part, &bytes).unwrap();
    }
    let out = s.with(&s.reader, &["get", "big", "-o", dst.to_str().unwrap()]);
    assert_ne!(out.code, 0, "a corrupt partial must not end in success");
    assert!(out.stderr.contains("BLAKE3"), "{}", out.stderr);
    assert!(!dst.exists(), "nothing is saved under the target");
    assert!(
        !part.exists() && !meta.exists(),
        "the corrupt partial is removed"
    );

    let out = s
        .with(&s.reader, &["get", "big", "-o", dst.to_str().unwrap()])
        .ok();
    assert!(!out.stderr.contains("resuming"), "{}", out.stderr);
    assert_eq!(hash_file(&dst), want);
}

#[test]
fn a_partial_of_another_source_is_discarded_with_a_message() {
    let s = Setup::new();
    let src = s.env.join("small.txt");
    std::fs::write(&src, b"small content").unwrap();
    s.with(&s.writer, &["put", "small", src.to_str().unwrap()])
        .ok();
    let dst = s.env.join("out.txt");
    let (part, meta) = partials(&dst);
    std::fs::write(&part, b"xx").unwrap();
    std::fs::write(
        &meta,
        format!(
            "format = 1\nsource = \"other\"\nversion = 1\nsize = 10\nhash = \"{}\"\n",
            "00".repeat(32)
        ),
    )
    .unwrap();
    let out = s
        .with(&s.reader, &["get", "small", "-o", dst.to_str().unwrap()])
        .ok();
    assert!(out.stderr.contains("another source"), "{}", out.stderr);
    assert_eq!(std::fs::read(&dst).unwrap(), b"small content");
    assert!(!part.exists() && !meta.exists());
}

#[test]
fn a_partial_older_than_7_days_is_discarded_and_the_get_starts_over() {
    let s = Setup::new();
    let src = s.env.join("small.txt");
    std::fs::write(&src, b"fresh content").unwrap();
    s.with(&s.writer, &["put", "small", src.to_str().unwrap()])
        .ok();
    let hash = blake3::hash(b"fresh content").to_hex().to_string();
    let dst = s.env.join("out.txt");
    let (part, meta) = partials(&dst);
    // A valid description of version 1 and a genuine prefix, but last touched 8 days ago.
    std::fs::write(&part, b"fresh").unwrap();
    std::fs::write(
        &meta,
        format!("format = 1\nsource = \"small\"\nversion = 1\nsize = 13\nhash = \"{hash}\"\n"),
    )
    .unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(8 * 24 * 3600);
    File::options()
        .write(true)
        .open(&part)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let out = s
        .with(&s.reader, &["get", "small", "-o", dst.to_str().unwrap()])
        .ok();
    assert!(out.stderr.contains("older than 7 days"), "{}", out.stderr);
    assert!(!out.stderr.contains("resuming"), "{}", out.stderr);
    assert_eq!(std::fs::read(&dst).unwrap(), b"fresh content");
    assert!(!part.exists() && !meta.exists());
}

/// Starts `ferry put big SRC` and SIGKILLs it once the server's upload part holds some data
/// but not all; returns that length. Retries (bounded) if a run finishes before it could be
/// killed.
fn put_killed_midway(s: &Setup, src: &Path) -> u64 {
    for _attempt in 0..5 {
        let mut put = s.env.command(&["put", "big", src.to_str().unwrap()]);
        put.args(["--cred", s.writer.to_str().unwrap()]);
        put.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = put.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut killed = None;
        while Instant::now() < deadline {
            let held = upload_parts(&s.env.server_dir())
                .iter()
                .map(|(_, l)| *l)
                .max()
                .unwrap_or(0);
            if held > 0 && held < LEN {
                child.kill().unwrap(); // SIGKILL
                killed = Some(held);
                break;
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if killed.is_none() {
            let _ = child.kill();
        }
        let _ = child.wait();
        if let Some(held) = killed {
            return held;
        }
    }
    panic!("could not kill a put midway in 5 attempts");
}

#[test]
fn a_put_killed_with_sigkill_resumes_and_stores_the_same_bytes() {
    let s = Setup::new();
    let src = s.env.join("big.bin");
    write_pattern(&src, "ferry put resume", LEN);
    let want = hash_file(&src);
    let held = put_killed_midway(&s, &src);
    eprintln!("killed with {held} bytes held by the server");

    let out = s
        .with(&s.writer, &["put", "big", src.to_str().unwrap()])
        .ok();
    let offset: u64 = out
        .stderr
        .split("resuming at ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no 'resuming at N bytes' in: {}", out.stderr));
    assert!(
        offset >= held && offset < LEN,
        "resumed at {offset}, the server held {held}"
    );
    assert!(
        out.text().contains(&format!("({LEN} bytes")),
        "{}",
        out.text()
    );
    assert!(
        upload_parts(&s.env.server_dir()).is_empty(),
        "a stored upload leaves no part"
    );

    let dst = s.env.join("copy.bin");
    s.with(&s.reader, &["get", "big", "-o", dst.to_str().unwrap()])
        .ok();
    assert_eq!(
        hash_file(&dst),
        want,
        "the stored content differs from the file"
    );

    // --no-resume sends a plain put: no part is kept, nothing is read ahead.
    let out = s
        .with(
            &s.writer,
            &["put", "big", src.to_str().unwrap(), "--no-resume"],
        )
        .ok();
    assert!(!out.stderr.contains("resuming"), "{}", out.stderr);
}
