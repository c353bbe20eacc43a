//! Delta transfers (docs/PROTOCOL.md §5.4) over real loopback TLS, through a TCP proxy that
//! counts the bytes on the wire: after a small edit of a 256 MiB file only the chunks
//! around it move, up and down; a delta whose body does not match its chunk list is refused
//! by the server; and a principal that may not read a source is never told which of its
//! chunks the server holds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::proxy::{Cut, start_proxy};
use common::{Pattern, TestServer};
use ferry::Client;
use ferry::client::hash_and_chunk_file;
use ferry::proto::credential::Credential;

const MIB: u64 = 1024 * 1024;

async fn connect_via(addr: SocketAddr, cred: &Credential) -> Client {
    tokio::time::timeout(
        Duration::from_secs(20),
        Client::connect_to(&addr.to_string(), cred.server_id, cred),
    )
    .await
    .unwrap()
    .unwrap()
}

fn write_pattern(path: &Path, seed: &str, len: u64) {
    let mut f = std::fs::File::create(path).unwrap();
    std::io::copy(&mut Pattern::new(seed, len), &mut f).unwrap();
}

/// Puts `path` as a delta (if the server takes it); returns whether it did and the bytes
/// that went from the client to the server meanwhile, handshake included.
async fn delta_put(
    proxy: &common::proxy::Proxy,
    cred: &Credential,
    source: &str,
    path: &Path,
) -> (bool, u64, ferry::proto::message::Entry) {
    let before = proxy.from_client.load(Ordering::SeqCst);
    let (file, size, hash, chunks) = hash_and_chunk_file(std::fs::File::open(path).unwrap())
        .await
        .unwrap();
    let mut c = connect_via(proxy.addr, cred).await;
    let (entry, stats) = c
        .put_resume_chunked(
            source,
            file,
            (size, hash),
            Some(&chunks),
            &mut |_| {},
            &mut |_| {},
        )
        .await
        .unwrap();
    c.close().await.unwrap();
    assert_eq!((entry.size, entry.hash), (size, hash));
    let moved = proxy.from_client.load(Ordering::SeqCst) - before;
    eprintln!(
        "put {source} of {size} bytes: delta {}, {moved} bytes up",
        stats.delta
    );
    (stats.delta, moved, entry)
}

/// Downloads `source` into a new file next to `old`, as a delta against `old`; returns the
/// bytes that came from the server meanwhile, and the new file's content hash.
async fn delta_get(
    proxy: &common::proxy::Proxy,
    cred: &Credential,
    source: &str,
    old: &Path,
    out: &Path,
) -> (u64, ferry::client::DeltaStats) {
    let before = proxy.from_server.load(Ordering::SeqCst);
    let old = std::fs::File::open(old).unwrap();
    let mut new = std::fs::File::create(out).unwrap();
    let mut c = connect_via(proxy.addr, cred).await;
    let (entry, stats) = c.get_delta(source, None, &old, &mut new).await.unwrap();
    c.close().await.unwrap();
    let mut h = blake3::Hasher::new();
    std::io::copy(&mut std::fs::File::open(out).unwrap(), &mut h).unwrap();
    assert_eq!(h.finalize().as_bytes(), &entry.hash);
    let came = proxy.from_server.load(Ordering::SeqCst) - before;
    eprintln!("delta get of {source}: {came} bytes down, {stats:?}");
    (came, stats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_edits_of_a_256_mib_file_move_at_most_a_mebibyte_each_way() {
    let srv = TestServer::start().await;
    let writer = srv.issue("w", "writer");
    let proxy = start_proxy(srv.addr, Cut::Up).await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    let size = 256 * MIB;
    write_pattern(&a, "delta 256", size);

    // First version: whole (nothing to compare with).
    let (delta, moved, v1) = delta_put(&proxy, &writer, "big/file", &a).await;
    assert!(!delta, "the first version has no base");
    assert!(moved >= size);

    // One byte changed in the middle.
    std::fs::copy(&a, &b).unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&b)
        .unwrap();
    let mut byte = [0u8];
    f.read_exact_at(&mut byte, size / 2).unwrap();
    f.write_all_at(&[byte[0] ^ 0xff], size / 2).unwrap();
    drop(f);
    let (delta, moved, v2) = delta_put(&proxy, &writer, "big/file", &b).await;
    assert!(delta, "the server took the delta");
    assert!(moved <= MIB, "a one-byte change moved {moved} bytes up");
    assert_eq!(v2.version, v1.version + 1);

    // Down: a client holding the first version fetches only what changed.
    let (came, stats) = delta_get(&proxy, &writer, "big/file", &a, &c).await;
    assert!(came <= MIB, "a one-byte change moved {came} bytes down");
    assert!(stats.fetched <= 2 * 256 * 1024 && stats.reused >= size - MIB);

    // 100 bytes inserted near the start: every later byte shifts, few chunks change.
    {
        let mut src = std::fs::File::open(&b).unwrap();
        let mut dst = std::fs::File::create(&c).unwrap();
        let mut head = vec![0u8; 1000];
        src.read_exact(&mut head).unwrap();
        dst.write_all(&head).unwrap();
        dst.write_all(&[0x5a; 100]).unwrap();
        std::io::copy(&mut src, &mut dst).unwrap();
    }
    let (delta, moved, v3) = delta_put(&proxy, &writer, "big/file", &c).await;
    assert!(delta);
    assert!(moved <= MIB, "a 100-byte insertion moved {moved} bytes up");
    assert_eq!(v3.size, size + 100);
    let (came, _) = delta_get(&proxy, &writer, "big/file", &b, &a).await;
    assert!(came <= MIB, "a 100-byte insertion moved {came} bytes down");

    // Every kept version still reads back whole (they share chunks on the server).
    let mut client = connect_via(srv.addr, &writer).await;
    for v in [v1, v2, v3] {
        let (e, _) = client
            .get_version_with_start(
                &v.source,
                Some(v.version),
                std::io::sink(),
                &mut |_| {},
                &mut |_| {},
            )
            .await
            .unwrap();
        assert_eq!(e.hash, v.hash);
    }
}

/// The server checks a delta body chunk by chunk and as a whole: a client whose body does
/// not match the chunk list it announced is refused and nothing becomes visible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_whose_body_differs_from_its_list_is_refused() {
    let srv = TestServer::start().await;
    let writer = srv.issue("w", "writer");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    write_pattern(&path, "delta refused", 4 * MIB);
    let mut c = connect_via(srv.addr, &writer).await;
    let (file, size, hash) = ferry::client::hash_file(std::fs::File::open(&path).unwrap())
        .await
        .unwrap();
    let (v1, _) = c
        .put_resume_hashed("r/f", file, size, hash, &mut |_| {}, &mut |_| {})
        .await
        .unwrap();
    // Edit, chunk, then change the file again before sending: the body no longer matches.
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(b"edited", MIB).unwrap();
    let (file, size, hash, chunks) = hash_and_chunk_file(std::fs::File::open(&path).unwrap())
        .await
        .unwrap();
    f.write_all_at(b"again!", MIB).unwrap();
    drop(f);
    let r = c
        .put_resume_chunked(
            "r/f",
            file,
            (size, hash),
            Some(&chunks),
            &mut |_| {},
            &mut |_| {},
        )
        .await;
    assert!(matches!(r, Err(ferry::Error::HashMismatch)), "{r:?}");
    let now = c.stat("r/f").await.unwrap();
    assert_eq!(
        (now.version, now.hash),
        (v1.version, v1.hash),
        "nothing became visible"
    );
}

/// Whether the server holds a chunk is said only of content the principal may read: a
/// principal that may put to a source but not get it is asked for every byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_that_cannot_read_a_source_learns_nothing_of_its_chunks() {
    let srv = TestServer::start_with_config(|t| {
        t.replace(
            "[roles]\n",
            "[roles]\ndropbox = [{ ops = [\"put\"], sources = [\"inbox/**\"] }]\n",
        )
    })
    .await;
    let writer = srv.issue("w", "writer");
    let spy = srv.issue("spy", "dropbox");
    let proxy = start_proxy(srv.addr, Cut::Up).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    write_pattern(&secret, "someone's secret", 2 * MIB);
    let (_, _, stored) = delta_put(&proxy, &writer, "inbox/secret", &secret).await;
    // The spy guesses the content exactly and offers it as a delta.
    let (delta, moved, entry) = delta_put(&proxy, &spy, "inbox/secret", &secret).await;
    assert!(
        !delta,
        "the server answered a delta to a principal that may not read"
    );
    assert!(
        moved >= 2 * MIB,
        "the spy sent {moved} bytes: it was spared some"
    );
    assert_eq!(entry.hash, stored.hash);
    // A writer (who may read) is spared them.
    let (delta, moved, _) = delta_put(&proxy, &writer, "inbox/secret", &secret).await;
    assert!(delta && moved < MIB);
}

/// Deduplication across sources is silent and after the fact (docs/SECURITY.md): a
/// principal that may put but not read uploads a near copy of someone's content under
/// another name. The server's answer to its put is the one fresh content gets (read off
/// the wire), it sends every byte, and only later, in the background, does the store keep
/// little more than one copy; both read back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_near_copy_under_another_source_is_sent_whole_answered_as_fresh_and_stored_once() {
    use ferry::proto::message::{Message, Put, PutReady};
    let srv = TestServer::start_with_config(|t| {
        t.replace(
            "[roles]\n",
            "[roles]\ndropbox = [{ ops = [\"put\"], sources = [\"inbox/**\"] }]\n",
        )
    })
    .await;
    let writer = srv.issue("w", "writer");
    let spy = srv.issue("spy", "dropbox");
    let proxy = start_proxy(srv.addr, Cut::Up).await;
    let dir = tempfile::tempdir().unwrap();
    let size = 16 * MIB;
    let (secret, copy, fresh) = (
        dir.path().join("secret"),
        dir.path().join("copy"),
        dir.path().join("fresh"),
    );
    write_pattern(&secret, "someone else's secret", size);
    write_pattern(&fresh, "the spy's own", size);
    std::fs::copy(&secret, &copy).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&copy).unwrap();
    for at in [100, 5 * MIB, 12 * MIB] {
        f.write_all_at(b"guess", at).unwrap();
    }
    drop(f);
    let (_, _, stored) = delta_put(&proxy, &writer, "inbox/secret", &secret).await;

    // The first answer to a put that offers the chunk list, for the near copy and for
    // fresh content: the same message, with no `need`.
    let mut answers = Vec::new();
    for (path, source) in [(&copy, "inbox/probe-copy"), (&fresh, "inbox/probe-fresh")] {
        let (_, size, hash, chunks) = hash_and_chunk_file(std::fs::File::open(path).unwrap())
            .await
            .unwrap();
        let mut c = connect_via(srv.addr, &spy).await;
        let put = Message::Put(Put {
            source: source.into(),
            size: Some(size),
            offset: 0,
            hash: Some(hash),
            streamed: false,
            mtime: None,
            executable: false,
            chunks: Some(ferry::proto::chunking::encode_list(&chunks)),
        });
        answers.push(c.raw_request(&put).await.unwrap());
    }
    for a in &answers {
        assert!(
            matches!(
                a,
                Message::PutReady(PutReady {
                    offset: 0,
                    need: None
                })
            ),
            "{a:?}"
        );
    }

    // Both sent whole, byte for byte the same amount, and answered alike.
    let (delta_c, moved_copy, copy_entry) = delta_put(&proxy, &spy, "inbox/copy", &copy).await;
    let (delta_f, moved_fresh, fresh_entry) = delta_put(&proxy, &spy, "inbox/fresh", &fresh).await;
    assert!(!delta_c && !delta_f);
    assert!(moved_copy >= size, "the near copy moved {moved_copy} bytes");
    assert!(
        moved_copy.abs_diff(moved_fresh) < 4096,
        "near copy {moved_copy} bytes, fresh content {moved_fresh}"
    );
    assert_eq!(
        (copy_entry.version, copy_entry.size),
        (fresh_entry.version, fresh_entry.size)
    );

    // Later, in the background: the secret and the near copy share their chunks on disk.
    let started = std::time::Instant::now();
    let deadline = started + Duration::from_secs(120);
    let mut bytes = blob_usage(&srv).0;
    while bytes > 2 * size + 2 * MIB && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        bytes = blob_usage(&srv).0;
    }
    eprintln!(
        "blob files {bytes} bytes, {:?} after the last put",
        started.elapsed()
    );
    assert!(
        bytes <= 2 * size + 2 * MIB,
        "three contents of {size} bytes, two nearly alike, take {bytes} bytes"
    );
    let mut c = connect_via(srv.addr, &writer).await;
    for e in [&stored, &copy_entry, &fresh_entry] {
        let (got, _) = c
            .get_version_with_start(
                &e.source,
                Some(e.version),
                std::io::sink(),
                &mut |_| {},
                &mut |_| {},
            )
            .await
            .unwrap();
        assert_eq!(got.hash, e.hash, "{}", e.source);
    }
}

/// Bytes and number of the files under a server's blob folder.
fn blob_usage(srv: &TestServer) -> (u64, usize) {
    let blobs = srv.server_dir.path().join("store").join("blobs");
    let (mut bytes, mut files) = (0, 0);
    for sub in std::fs::read_dir(blobs).unwrap() {
        for f in std::fs::read_dir(sub.unwrap().path()).unwrap() {
            bytes += f.unwrap().metadata().unwrap().len();
            files += 1;
        }
    }
    (bytes, files)
}

/// Ten versions of a 64 MiB file, each a small edit of the one before, put as deltas: the
/// server holds little more than one copy, every version reads back whole, and deleting the
/// source frees it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_versions_of_a_64_mib_file_take_little_more_than_one() {
    let srv =
        TestServer::start_with_config(|t| t.replace("keep_versions = 3", "keep_versions = 10"))
            .await;
    let writer = srv.issue("w", "writer");
    let proxy = start_proxy(srv.addr, Cut::Up).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let size = 64 * MIB;
    write_pattern(&path, "ten versions", size);
    let mut kept = Vec::new();
    for round in 0..10u64 {
        if round > 0 {
            let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            f.write_all_at(&round.to_be_bytes(), round * 6_000_011)
                .unwrap();
        }
        let (delta, _, entry) = delta_put(&proxy, &writer, "ten/f", &path).await;
        assert_eq!(delta, round > 0);
        kept.push(entry);
    }
    let (bytes, _) = blob_usage(&srv);
    assert!(
        bytes <= size + 9 * 2 * 256 * 1024,
        "ten versions of {size} bytes take {bytes} bytes"
    );
    let mut c = connect_via(srv.addr, &writer).await;
    for v in &kept {
        let (e, _) = c
            .get_version_with_start(
                &v.source,
                Some(v.version),
                std::io::sink(),
                &mut |_| {},
                &mut |_| {},
            )
            .await
            .unwrap();
        assert_eq!(e.hash, v.hash, "version {}", v.version);
    }
    c.delete("ten/f").await.unwrap();
    assert_eq!(
        blob_usage(&srv),
        (0, 0),
        "deleting the source frees every file"
    );
}

/// A delta put cut in the middle of its body resumes from what the server holds: the same
/// exchange, and only the rest of the needed chunks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_delta_put_resumes_where_it_was_cut() {
    let srv = TestServer::start().await;
    let writer = srv.issue("w", "writer");
    let proxy = start_proxy(srv.addr, Cut::Up).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    write_pattern(&path, "cut delta", 32 * MIB);
    delta_put(&proxy, &writer, "cut/f", &path).await;
    // Edits spread over the file: a body of a few MiB.
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    for i in 0..40u64 {
        f.write_all_at(b"edit", i * 800_000 + 7).unwrap();
    }
    drop(f);
    let (file, size, hash, chunks) = hash_and_chunk_file(std::fs::File::open(&path).unwrap())
        .await
        .unwrap();
    proxy.cut_after.store(MIB + MIB / 2, Ordering::SeqCst);
    let mut c = connect_via(proxy.addr, &writer).await;
    let cut = c
        .put_resume_chunked(
            "cut/f",
            file,
            (size, hash),
            Some(&chunks),
            &mut |_| {},
            &mut |_| {},
        )
        .await;
    assert!(cut.is_err(), "the put was cut");
    proxy.cut_after.store(0, Ordering::SeqCst);
    // The server noticed the cut and kept what arrived; the same put continues it.
    let mut offset = 0;
    for _ in 0..100 {
        let file = std::fs::File::open(&path).unwrap();
        let mut c = connect_via(proxy.addr, &writer).await;
        let r = c
            .put_resume_chunked(
                "cut/f",
                file,
                (size, hash),
                Some(&chunks),
                &mut |_| {},
                &mut |_| {},
            )
            .await;
        match r {
            Ok((entry, stats)) => {
                assert!(stats.delta && stats.offset > 0, "{stats:?}");
                offset = stats.offset;
                assert_eq!(entry.hash, hash);
                break;
            }
            // The cut connection still holds the upload for a moment.
            Err(ferry::Error::Busy(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(offset > 0, "the resumed put did not continue the cut one");
}

/// A chunk list that does not decode, or one without the size and hash it describes, is
/// refused `bad_request` by the server, and the connection goes on (PROTOCOL.md §5.4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunk_list_is_refused_and_the_connection_goes_on() {
    use ferry::proto::message::{ErrorCode, Message, Put};
    let srv = TestServer::start().await;
    let writer = srv.issue("w", "writer");
    let mut c = connect_via(srv.addr, &writer).await;
    let put = |size: Option<u64>, hash: Option<[u8; 32]>, chunks: Vec<u8>| {
        Message::Put(Put {
            source: "bad/list".into(),
            size,
            offset: 0,
            hash,
            streamed: false,
            mtime: None,
            executable: false,
            chunks: Some(chunks),
        })
    };
    let one = ferry::proto::chunking::encode_list(&[ferry::proto::chunking::ChunkRef {
        hash: [1; 32],
        len: 10,
    }]);
    for (what, msg) in [
        (
            "not a multiple of 36 bytes",
            put(Some(10), Some([2; 32]), vec![0; 35]),
        ),
        (
            "lengths not adding up to the size",
            put(Some(11), Some([2; 32]), one.clone()),
        ),
        ("no size and hash", put(None, None, one.clone())),
    ] {
        match c.raw_request(&msg).await.unwrap() {
            Message::Error(e) => assert_eq!(e.code, ErrorCode::BadRequest, "{what}: {e:?}"),
            other => panic!("{what}: answered {other:?}"),
        }
    }
    assert!(matches!(
        c.stat("bad/list").await,
        Err(ferry::Error::NotFound(_))
    ));
}
