//! Folder transfers through the real binary against a real server on loopback: `put -r` and
//! `get -r` of a large tree with real file names, destinations ending in '/', files that
//! cannot go (and do not stop the others), and a `get -r` killed midway and run again.

// Test support: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use common::{Served, Setup, hash_file, run, write_pattern};

const MIB: u64 = 1 << 20;
const LONG: Duration = Duration::from_secs(300);

/// Every regular file under `dir` (relative path → BLAKE3), and every folder.
fn tree(dir: &Path) -> (BTreeMap<PathBuf, blake3::Hash>, BTreeSet<PathBuf>) {
    tree_of(dir, |p| Some(hash_file(p)))
}

/// The files of a folder that a running `get -r` is writing: a temporary file may be renamed
/// between being listed and being read; it is then left out.
fn tree_changing(dir: &Path) -> BTreeMap<PathBuf, blake3::Hash> {
    let hash = |p: &Path| {
        let mut h = blake3::Hasher::new();
        h.update_reader(std::fs::File::open(p).ok()?).ok()?;
        Some(h.finalize())
    };
    tree_of(dir, hash).0
}

fn tree_of(
    dir: &Path,
    hash: impl Fn(&Path) -> Option<blake3::Hash>,
) -> (BTreeMap<PathBuf, blake3::Hash>, BTreeSet<PathBuf>) {
    let mut files = BTreeMap::new();
    let mut folders = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(dir).unwrap().to_path_buf();
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                folders.insert(rel);
                stack.push(e.path());
            } else if t.is_file()
                && let Some(h) = hash(&e.path())
            {
                files.insert(rel, h);
            }
        }
    }
    (files, folders)
}

/// Writes `n` small files in nested folders with UTF-8 names; some are empty.
fn small_tree(root: &Path, n: usize) {
    let folders = [
        "",
        "Q3 report",
        "été/données",
        "日本/ファイル",
        "a/b/c/d/e",
        "mixed ñ 中文/x y",
    ];
    for i in 0..n {
        let dir = root.join(folders[i % folders.len()]);
        std::fs::create_dir_all(&dir).unwrap();
        let name = match i % 4 {
            0 => format!("file {i}.txt"),
            1 => format!("café-{i}.csv"),
            2 => format!("写真_{i}.bin"),
            _ => format!("{i}"),
        };
        let len = if i % 97 == 0 { 0 } else { (i * 37) % 9000 };
        write_pattern(&dir.join(name), &format!("s{i}"), len as u64);
    }
}

#[test]
fn a_tree_of_2000_files_goes_up_and_comes_back_byte_identical() {
    let s = Setup::new();
    let src = s.env.join("src");
    small_tree(&src, 2000);
    write_pattern(&src.join("Q3 report/big 64 MiB.bin"), "big", 64 * MIB);
    std::fs::create_dir_all(src.join("empty folder")).unwrap();
    let (files, _) = tree(&src);
    assert_eq!(files.len(), 2001);

    let put = s.with(
        &s.writer,
        &["put", "-r", src.to_str().unwrap(), "backup/2026/"],
    );
    assert_eq!(put.code, 0, "{}", put.stderr);
    assert!(
        put.text().contains("put 2001 files, ") && put.text().contains(", 0 failed"),
        "{}",
        put.text()
    );
    assert!(
        put.stderr.contains("empty folder") && put.stderr.contains("a server stores files"),
        "{}",
        put.stderr
    );
    let ls = s.with(&s.reader, &["ls", "backup/2026/日本/"]).ok();
    assert!(
        ls.text().contains("backup/2026/日本/ファイル/"),
        "{}",
        ls.text()
    );

    let dst = s.env.join("dst");
    let get = s.with(
        &s.reader,
        &["get", "-r", "backup/2026", dst.to_str().unwrap()],
    );
    assert_eq!(get.code, 0, "{}", get.stderr);
    assert!(get.text().contains("got 2001 files, "), "{}", get.text());
    // No progress bar when stderr is not a terminal.
    for out in [&put.stderr, &get.stderr] {
        assert!(!out.contains('\r') && !out.contains("ETA"), "{out}");
    }
    let (back, folders) = tree(&dst);
    assert_eq!(back, files, "the tree did not come back identical");
    // The empty folder did not travel: a server stores files only.
    assert!(!folders.contains(Path::new("empty folder")));

    // Again: nothing moves.
    let again = s.with(
        &s.reader,
        &["get", "-r", "backup/2026/", dst.to_str().unwrap()],
    );
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        again
            .text()
            .contains("got 0 files, 0 bytes, 2001 unchanged, 0 failed"),
        "{}",
        again.text()
    );
}

#[test]
fn a_destination_ending_in_a_slash_keeps_the_file_name() {
    let s = Setup::new();
    let q3 = s.env.join("q3.csv");
    let h = write_pattern(&q3, "q3", 1000);
    let put = s
        .with(&s.writer, &["put", q3.to_str().unwrap(), "reports/"])
        .ok();
    assert!(
        put.text().contains("stored reports/q3.csv v1"),
        "{}",
        put.text()
    );
    let put = s.with(&s.writer, &["put", q3.to_str().unwrap(), "/"]).ok();
    assert!(put.text().contains("stored q3.csv v1"), "{}", put.text());

    let out = s.env.join("out");
    std::fs::create_dir(&out).unwrap();
    // Into the current folder, into a folder named with and without its slash.
    s.with(&s.reader, &["get", "reports/q3.csv", "./"]).ok();
    assert_eq!(hash_file(&q3), h);
    std::fs::remove_file(&q3).unwrap();
    s.with(&s.reader, &["get", "reports/q3.csv", "./"]).ok();
    assert_eq!(hash_file(&s.env.join("q3.csv")), h);
    s.with(&s.reader, &["get", "reports/q3.csv", "out/"]).ok();
    assert_eq!(hash_file(&out.join("q3.csv")), h);
    s.with(&s.reader, &["get", "q3.csv", "out"]).ok();
    assert_eq!(hash_file(&out.join("q3.csv")), h);
    // A DEST that is no folder and has no slash is the file to write.
    s.with(&s.reader, &["get", "reports/q3.csv", "out/renamed"])
        .ok();
    assert_eq!(hash_file(&out.join("renamed")), h);
}

#[test]
fn files_that_cannot_go_are_named_and_the_others_still_move() {
    let s = Setup::new();
    let src = s.env.join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    for i in 0..20 {
        write_pattern(&src.join(format!("sub/ok {i}")), &format!("o{i}"), 3000);
    }
    // A control character cannot be in a source name.
    write_pattern(&src.join("bad\tname"), "bad", 10);
    // A symbolic link and a FIFO are skipped with a note, not failures.
    std::os::unix::fs::symlink("/etc/hostname", src.join("link")).unwrap();
    let fifo = std::process::Command::new("mkfifo")
        .arg(src.join("fifo"))
        .status()
        .unwrap();
    assert!(fifo.success());
    // Unreadable (unless we are root, who reads it anyway).
    let locked = src.join("sub/locked");
    write_pattern(&locked, "locked", 100);
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    let readable = std::fs::File::open(&locked).is_ok();

    let put = s.with(&s.writer, &["put", "-r", src.to_str().unwrap(), "in"]);
    assert_eq!(put.code, 23, "{}\n{}", put.text(), put.stderr);
    let failed = if readable { 1 } else { 2 };
    let moved = if readable { 21 } else { 20 };
    assert!(
        put.text().contains(&format!("put {moved} files, ")),
        "{}",
        put.text()
    );
    assert!(
        put.text().contains(&format!(", {failed} failed")),
        "{}",
        put.text()
    );
    // The failure line names the file and says why; the last line counts and names them.
    assert!(put.stderr.contains("bad"), "{}", put.stderr);
    assert!(put.stderr.contains("control character"), "{}", put.stderr);
    assert!(
        put.stderr.contains(&format!("ferry: {failed} file")),
        "{}",
        put.stderr
    );
    assert!(
        put.stderr.contains("link: a symbolic link"),
        "{}",
        put.stderr
    );
    assert!(
        put.stderr.contains("fifo: not a regular file"),
        "{}",
        put.stderr
    );
    if !readable {
        assert!(put.stderr.contains("locked: cannot read"), "{}", put.stderr);
    }
    let ls = s.with(&s.reader, &["ls", "in/", "--json"]).ok();
    assert_eq!(common::json_lines(&ls.stdout).len(), moved);
}

#[test]
fn get_r_never_writes_through_a_link_or_over_a_file_in_the_way() {
    let s = Setup::new();
    let outside = s.env.join("outside");
    std::fs::create_dir(&outside).unwrap();
    for name in ["set/link/x", "set/file/y", "set/ok/z"] {
        let f = s.env.join("content");
        write_pattern(&f, name, 100);
        s.with(&s.writer, &["put", name, f.to_str().unwrap()]).ok();
    }
    // DIR already holds a link to a folder elsewhere and a file where a folder is needed.
    let dst = s.env.join("dst");
    std::fs::create_dir(&dst).unwrap();
    std::os::unix::fs::symlink(&outside, dst.join("link")).unwrap();
    std::fs::write(dst.join("file"), b"mine").unwrap();
    let get = s.with(&s.reader, &["get", "-r", "set/", dst.to_str().unwrap()]);
    assert_eq!(get.code, 23, "{}\n{}", get.text(), get.stderr);
    assert!(
        get.text().contains("got 1 files, 100 bytes, 2 failed"),
        "{}",
        get.text()
    );
    assert!(
        get.stderr.contains("set/link/x: not written") && get.stderr.contains("in the way"),
        "{}",
        get.stderr
    );
    assert!(
        get.stderr.contains("set/file/y: not written"),
        "{}",
        get.stderr
    );
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "wrote through the link"
    );
    assert_eq!(std::fs::read(dst.join("file")).unwrap(), b"mine");
    assert!(dst.join("ok/z").is_file());
}

// ---------------------------------------------------------------------------------------------
// Interrupting a get -r.

/// A TCP proxy that forwards the server's bytes to the client, on its first connection only
/// up to a budget; then it holds that connection (reading nothing more from the server) until
/// it is dropped, or with `cut` closes it. Later connections pass everything.
struct Throttle {
    addr: String,
    sent: Arc<(Mutex<u64>, Condvar)>,
    _hold: mpsc::Sender<()>,
}

/// Copies `from` to `to` until either end closes.
fn pass(mut from: TcpStream, mut to: TcpStream) {
    thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(std::net::Shutdown::Both);
    });
}

impl Throttle {
    fn start(upstream: &str, budget: u64) -> Self {
        Self::start_with(upstream, budget, false)
    }

    fn start_with(upstream: &str, budget: u64, cut: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let sent = Arc::new((Mutex::new(0u64), Condvar::new()));
        let (hold_tx, hold_rx) = mpsc::channel::<()>();
        let hold_rx = Arc::new(Mutex::new(hold_rx));
        let upstream = upstream.to_owned();
        let counter = sent.clone();
        thread::spawn(move || {
            // One connection: the get -r's.
            let Ok((client, _)) = listener.accept() else {
                return;
            };
            let server = TcpStream::connect(&upstream).unwrap();
            let (mut c_r, mut s_w) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            thread::spawn(move || {
                let _ = std::io::copy(&mut c_r, &mut s_w);
            });
            let (mut s_r, mut c_w) = (server, client);
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let left = budget - *counter.0.lock().unwrap();
                if left == 0 {
                    if cut {
                        let _ = c_w.shutdown(std::net::Shutdown::Both);
                        let _ = s_r.shutdown(std::net::Shutdown::Both);
                        // Later connections go through untouched.
                        for conn in listener.incoming() {
                            let Ok(client) = conn else { return };
                            let Ok(server) = TcpStream::connect(&upstream) else {
                                return;
                            };
                            pass(client.try_clone().unwrap(), server.try_clone().unwrap());
                            pass(server, client);
                        }
                        return;
                    }
                    // Hold both ends open until the test is done.
                    let _ = hold_rx.lock().unwrap().recv();
                    return;
                }
                let want = buf.len().min(left as usize);
                let n = match s_r.read(&mut buf[..want]) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if c_w.write_all(&buf[..n]).is_err() {
                    return;
                }
                *counter.0.lock().unwrap() += n as u64;
                counter.1.notify_all();
            }
        });
        Self {
            addr,
            sent,
            _hold: hold_tx,
        }
    }

    /// Waits until the whole budget went to the client.
    fn wait_for(&self, budget: u64, timeout: Duration) -> bool {
        let (lock, cv) = &*self.sent;
        let guard = lock.lock().unwrap();
        let (guard, _) = cv
            .wait_timeout_while(guard, timeout, |n| *n < budget)
            .unwrap();
        *guard >= budget
    }
}

/// Names of the sources a server's log says it sent, from `from` on.
fn gets_logged(server: &Served, from: usize) -> Vec<String> {
    server.log()[from..]
        .iter()
        .filter_map(|l| {
            let (_, rest) = l.split_once("bob gets ")?;
            Some(rest.rsplit_once(" v")?.0.to_owned())
        })
        .collect()
}

#[test]
fn a_get_r_killed_midway_and_run_again_moves_only_what_was_missing() {
    let env = common::Env::new();
    env.init();
    let server = Served::start_with(&env, &[("FERRY_LOG", "info,ferry::net::data=debug")]);
    let writer = env.issue("alice", "writer", &server.addr);
    let src = env.join("src");
    let n = 200;
    for i in 0..n {
        std::fs::create_dir_all(src.join(format!("d{}", i % 7))).unwrap();
        write_pattern(
            &src.join(format!("d{}/f{i:03}", i % 7)),
            &format!("f{i}"),
            64 * 1024,
        );
    }
    let put = env.run(&[
        "put",
        "-r",
        src.to_str().unwrap(),
        "set/",
        "--cred",
        writer.to_str().unwrap(),
    ]);
    assert_eq!(put.code, 0, "{}", put.stderr);
    let (files, _) = tree(&src);

    // The first run goes through a proxy that lets about half the content through.
    let budget = (n as u64 * 64 * 1024) / 2;
    let proxy = Throttle::start(&server.addr, budget);
    let slow = env.issue("slow", "reader", &proxy.addr);
    let dst = env.join("dst");
    let mut first = env.command(&[
        "get",
        "-r",
        "set/",
        dst.to_str().unwrap(),
        "--cred",
        slow.to_str().unwrap(),
    ]);
    let mut child = first
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(proxy.wait_for(budget, LONG), "the first run did not start");
    // What it received it writes: wait (bounded) until a quarter of the files are complete.
    let complete = |dst: &Path| -> BTreeSet<PathBuf> {
        tree_changing(dst)
            .into_iter()
            .filter(|(p, h)| files.get(p) == Some(h))
            .map(|(p, _)| p)
            .collect()
    };
    let deadline = Instant::now() + LONG;
    while complete(&dst).len() < n / 4 {
        assert!(
            Instant::now() < deadline,
            "the first run completed too little"
        );
        thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    drop(proxy);
    let done = complete(&dst);
    assert!(done.len() < n, "the first run was not interrupted");
    eprintln!(
        "{} of {n} files were complete when the first run was killed",
        done.len()
    );

    // The second run, direct: only the missing files are asked for.
    let before = server.log().len();
    let bob = env.issue("bob", "reader", &server.addr);
    let again = run(
        env.command(&[
            "get",
            "-r",
            "set/",
            dst.to_str().unwrap(),
            "--cred",
            bob.to_str().unwrap(),
        ]),
        None,
        LONG,
    );
    assert_eq!(again.code, 0, "{}", again.stderr);
    let (back, _) = tree(&dst);
    assert_eq!(back, files, "not identical after the second run");
    // The server's log of the second run: every get is of a file that was not complete.
    let gets = gets_logged(&server, before);
    assert_eq!(gets.len(), n - done.len(), "{gets:?}");
    for name in &gets {
        let rel = PathBuf::from(name.strip_prefix("set/").unwrap());
        assert!(!done.contains(&rel), "{name} was complete and moved again");
    }
    assert!(
        again.text().contains(&format!(
            "got {} files, {} bytes, {} unchanged, 0 failed",
            n - done.len(),
            (n - done.len()) as u64 * 64 * 1024,
            done.len()
        )),
        "{}",
        again.text()
    );
}

#[test]
fn a_get_r_whose_connection_is_cut_tries_again_and_moves_only_what_was_missing() {
    let env = common::Env::new();
    env.init();
    let server = Served::start_with(&env, &[("FERRY_LOG", "info,ferry::net::data=debug")]);
    let writer = env.issue("alice", "writer", &server.addr);
    let src = env.join("src");
    let n = 200;
    for i in 0..n {
        std::fs::create_dir_all(src.join(format!("d{}", i % 5))).unwrap();
        write_pattern(
            &src.join(format!("d{}/f{i:03}", i % 5)),
            &format!("c{i}"),
            64 * 1024,
        );
    }
    let put = env.run(&[
        "put",
        "-r",
        src.to_str().unwrap(),
        "set/",
        "--cred",
        writer.to_str().unwrap(),
    ]);
    assert_eq!(put.code, 0, "{}", put.stderr);
    let (files, _) = tree(&src);

    // The first connection is cut after about half the content; the retry goes through.
    let proxy = Throttle::start_with(&server.addr, (n as u64 * 64 * 1024) / 2, true);
    let bob = env.issue("bob", "reader", &proxy.addr);
    let before = server.log().len();
    let dst = env.join("dst");
    let get = run(
        env.command(&[
            "get",
            "-r",
            "set/",
            dst.to_str().unwrap(),
            "--retries",
            "2",
            "--cred",
            bob.to_str().unwrap(),
        ]),
        None,
        LONG,
    );
    assert_eq!(get.code, 0, "{}", get.stderr);
    assert!(get.stderr.contains("trying again"), "{}", get.stderr);
    let (back, _) = tree(&dst);
    assert_eq!(back, files);
    // Every source was sent; again only those in flight when the cut came (at most a
    // window's worth), never those already complete.
    let gets = gets_logged(&server, before);
    let distinct: BTreeSet<&String> = gets.iter().collect();
    assert_eq!(distinct.len(), n);
    assert!(
        gets.len() - n <= ferry::WINDOW,
        "{} gets for {n} files",
        gets.len()
    );
    // The run that finished counts what it moved and what it found complete.
    let last = get.text().lines().last().unwrap().to_owned();
    let words: Vec<&str> = last.split([' ', ',']).filter(|w| !w.is_empty()).collect();
    assert_eq!(words[0], "got", "{last}");
    let moved: usize = words[1].parse().unwrap();
    let unchanged: usize = words[5].parse().unwrap();
    assert!(
        moved > 0 && unchanged > 0 && moved + unchanged == n,
        "{last}"
    );
    assert!(last.ends_with(", 0 failed"), "{last}");
}

#[test]
fn modification_times_and_the_executable_bit_go_with_the_content() {
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};
    let s = Setup::new();
    let src = s.env.join("meta-src");
    std::fs::create_dir_all(src.join("bin")).unwrap();
    let (script, notes, big) = (
        src.join("bin/run.sh"),
        src.join("notes.txt"),
        src.join("big.bin"),
    );
    write_pattern(&script, "#!/bin/sh", 100);
    write_pattern(&notes, "notes", 100);
    // Above STREAMED_MAX: goes as a resumable put, not in the pipeline.
    write_pattern(&big, "big", 3 << 20);
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o750)).unwrap();
    std::fs::set_permissions(&notes, std::fs::Permissions::from_mode(0o640)).unwrap();
    let times = [
        (
            &script,
            UNIX_EPOCH + Duration::new(1_000_000_000, 123_456_789),
        ),
        (&notes, UNIX_EPOCH + Duration::new(1_500_000_000, 0)),
        (&big, UNIX_EPOCH + Duration::new(1_600_000_000, 5)),
    ];
    for (path, t) in &times {
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(*t)
            .unwrap();
    }
    s.with(&s.writer, &["put", "-r", src.to_str().unwrap(), "m/"])
        .ok();

    // The server keeps them: stat shows them.
    let stat = s.with(&s.reader, &["stat", "m/bin/run.sh", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_slice(&stat.stdout).unwrap();
    assert_eq!(v["mtime"], 1_000_000_000_123_456_789u64, "{v}");
    assert_eq!(v["executable"], true, "{v}");
    let stat = s.with(&s.reader, &["stat", "m/notes.txt", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_slice(&stat.stdout).unwrap();
    assert_eq!(v["mtime"], 1_500_000_000_000_000_000u64, "{v}");
    assert!(v.get("executable").is_none(), "{v}");

    // get -r and a single get give them back.
    let out = s.env.join("meta-out");
    s.with(&s.reader, &["get", "-r", "m/", out.to_str().unwrap()])
        .ok();
    let single = s.env.join("single.bin");
    s.with(
        &s.reader,
        &["get", "m/big.bin", "-o", single.to_str().unwrap()],
    )
    .ok();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    for (path, t) in &times {
        let rel = path.strip_prefix(&src).unwrap();
        assert_eq!(mtime(&out.join(rel)), *t, "{}", rel.display());
    }
    assert_eq!(mtime(&single), times[2].1);
    let run = out.join("bin/run.sh");
    assert_eq!(mode(&run) & 0o100, 0o100, "{:o}", mode(&run));
    // Execute permission only where the file may be read.
    assert_eq!(mode(&run) & 0o011, (mode(&run) & 0o044) >> 2);
    assert_eq!(mode(&out.join("notes.txt")) & 0o111, 0);
    assert!(mtime(&out.join("notes.txt")) < SystemTime::now() - Duration::from_secs(3600));
}
