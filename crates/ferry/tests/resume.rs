//! Resumable gets over real loopback TLS, through a counting TCP proxy that can cut the
//! connection after a number of bytes from the server, or hold the client's next request
//! after a reply (the gate of `common::proxy`) while the test changes the source.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::proxy::{Cut, Proxy, start_proxy};
use common::{Pattern, TestServer, panics};
use ferry::proto::credential::Credential;
use ferry::{Client, Partial};

const MIB: u64 = 1024 * 1024;
const SIZE: u64 = 8 * MIB;
const CUT_AT: u64 = 3 * MIB;

async fn connect(proxy: &Proxy, cred: &Credential) -> Client {
    tokio::time::timeout(
        Duration::from_secs(20),
        Client::connect_to(&proxy.addr.to_string(), cred.server_id, cred),
    )
    .await
    .unwrap()
    .unwrap()
}

fn blake3_of(path: &std::path::Path) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    std::io::copy(&mut std::fs::File::open(path).unwrap(), &mut h).unwrap();
    *h.finalize().as_bytes()
}

fn open_rw(path: &std::path::Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap()
}

/// Gets `source` through the proxy, cut after `CUT_AT` bytes; returns the partial length.
async fn cut_get(proxy: &Proxy, cred: &Credential, source: &str, file: &std::path::Path) -> u64 {
    proxy.cut_after.store(CUT_AT, Ordering::SeqCst);
    let mut c = connect(proxy, cred).await;
    let r = tokio::time::timeout(
        Duration::from_secs(60),
        c.get_resume(source, open_rw(file), None, &mut |_, _| Ok(()), &mut |_| {}),
    )
    .await
    .expect("the cut get ends");
    assert!(r.is_err(), "a get cut after {CUT_AT} bytes cannot succeed");
    drop(c);
    proxy.cut_after.store(0, Ordering::SeqCst);
    let len = std::fs::metadata(file).unwrap().len();
    assert!(len > 0 && len < SIZE, "partial of {len} bytes");
    len
}

/// Resumes the get of "resume/blob" into `file` through the proxy from `partial`. Returns
/// the outcome and what `on_start` was told (version, offset); closes the client on success.
async fn resume_get(
    proxy: &Proxy,
    cred: &Credential,
    file: &std::path::Path,
    partial: Partial,
) -> (Result<(u64, u64), ferry::Error>, Option<(u64, u64)>) {
    let mut c = connect(proxy, cred).await;
    let mut started = None;
    let r = tokio::time::timeout(
        Duration::from_secs(60),
        c.get_resume(
            "resume/blob",
            open_rw(file),
            Some(partial),
            &mut |e, off| {
                started = Some((e.version, off));
                Ok(())
            },
            &mut |_| {},
        ),
    )
    .await
    .unwrap();
    let r = match r {
        Ok((entry, offset, f)) => {
            drop(f);
            c.close().await.unwrap();
            Ok((entry.version, offset))
        }
        Err(e) => Err(e),
    };
    (r, started)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_get_resumes_from_its_length_and_moves_only_the_missing_bytes() {
    let srv = TestServer::start().await;
    let writer = srv.issue("w", "writer");
    let reader = srv.issue("r", "reader");
    let mut c = Client::connect(&writer).await.unwrap();
    let v1 = c
        .put(
            "resume/blob",
            Pattern::new("one", SIZE),
            Some(SIZE),
            &mut |_| {},
        )
        .await
        .unwrap();
    c.close().await.unwrap();

    let proxy = start_proxy(srv.addr, Cut::Down).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("blob.partial");
    let len = cut_get(&proxy, &reader, "resume/blob", &file).await;

    let before = proxy.from_server.load(Ordering::SeqCst);
    let partial = Partial {
        version: v1.version,
        hash: v1.hash,
        len,
    };
    let (r, started) = resume_get(&proxy, &reader, &file, partial).await;
    let wire = proxy.from_server.load(Ordering::SeqCst) - before;

    assert_eq!(r.unwrap(), (v1.version, len));
    assert_eq!(started, Some((v1.version, len)));
    assert_eq!(std::fs::metadata(&file).unwrap().len(), SIZE);
    assert_eq!(blake3_of(&file), Pattern::hash("one", SIZE), "bytes differ");
    let mut expected = Vec::new();
    Pattern::new("one", SIZE)
        .read_to_end(&mut expected)
        .unwrap();
    assert!(std::fs::read(&file).unwrap() == expected, "bytes differ");

    // The missing bytes, plus one chunk, plus framing, TLS records and the handshake.
    let missing = SIZE - len;
    let chunk = ferry::pipe::CHUNK as u64;
    let overhead = 64 * 1024 + missing / 100;
    eprintln!("partial {len} bytes; resumed get moved {wire} bytes for {missing} missing");
    assert!(
        wire <= missing + chunk + overhead,
        "the resumed get moved {wire} bytes for {missing} missing"
    );
    assert!(
        wire >= missing,
        "fewer bytes than missing crossed: {wire} < {missing}"
    );
    srv.stop().await;
    assert_eq!(panics(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_replaced_between_cut_and_resume_restarts_from_zero_without_splicing() {
    let srv = TestServer::start().await;
    let writer = srv.issue("w", "writer");
    let reader = srv.issue("r", "reader");
    let mut c = Client::connect(&writer).await.unwrap();
    let v1 = c
        .put(
            "resume/blob",
            Pattern::new("one", SIZE),
            Some(SIZE),
            &mut |_| {},
        )
        .await
        .unwrap();

    let proxy = start_proxy(srv.addr, Cut::Down).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("blob.partial");
    let len = cut_get(&proxy, &reader, "resume/blob", &file).await;

    // A new version (longer, so a splice would also show in the length).
    let size2 = SIZE + 12345;
    let v2 = c
        .put(
            "resume/blob",
            Pattern::new("two", size2),
            Some(size2),
            &mut |_| {},
        )
        .await
        .unwrap();
    c.close().await.unwrap();
    assert!(v2.version > v1.version);

    let partial = Partial {
        version: v1.version,
        hash: v1.hash,
        len,
    };
    let (r, started) = resume_get(&proxy, &reader, &file, partial).await;
    assert_eq!(r.unwrap(), (v2.version, 0));
    assert_eq!(started, Some((v2.version, 0)));
    assert_eq!(std::fs::metadata(&file).unwrap().len(), size2);
    assert_eq!(
        blake3_of(&file),
        Pattern::hash("two", size2),
        "spliced or wrong bytes"
    );
    srv.stop().await;
    assert_eq!(panics(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_partial_fails_the_whole_content_hash() {
    let srv = TestServer::start().await;
    let writer = srv.issue("w", "writer");
    let reader = srv.issue("r", "reader");
    let mut c = Client::connect(&writer).await.unwrap();
    let v1 = c
        .put(
            "resume/blob",
            Pattern::new("one", SIZE),
            Some(SIZE),
            &mut |_| {},
        )
        .await
        .unwrap();
    c.close().await.unwrap();

    let proxy = start_proxy(srv.addr, Cut::Down).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("blob.partial");
    let len = cut_get(&proxy, &reader, "resume/blob", &file).await;
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[(len / 2) as usize] ^= 0x40;
    std::fs::write(&file, &bytes).unwrap();

    let partial = Partial {
        version: v1.version,
        hash: v1.hash,
        len,
    };
    let (r, _) = resume_get(&proxy, &reader, &file, partial).await;
    assert!(
        matches!(r, Err(ferry::Error::HashMismatch)),
        "a flipped partial byte must fail the hash: {r:?}"
    );
    srv.stop().await;
    assert_eq!(panics(), 0);
}

/// The version a partial belongs to vanishes between the client's stat (which still names it)
/// and its ranged get: the gate holds the get until `change` has run on the server.
/// Returns what `get_resume` gave and what `on_start` was told.
async fn resume_across_a_change(
    proxy: &Proxy,
    reader: &Credential,
    file: &std::path::Path,
    partial: Partial,
    change: impl std::future::Future<Output = ()>,
) -> (Result<(u64, u64), ferry::Error>, Option<(u64, u64)>) {
    let mut c = connect(proxy, reader).await;
    // The stat goes through; the get after it is held.
    proxy.gate.arm();
    let f = open_rw(file);
    let task = tokio::spawn(async move {
        let mut started = None;
        let r = c
            .get_resume(
                "resume/blob",
                f,
                Some(partial),
                &mut |e, off| {
                    started = Some((e.version, off));
                    Ok(())
                },
                &mut |_| {},
            )
            .await;
        let r = match r {
            Ok((entry, offset, f)) => {
                drop(f);
                c.close().await.unwrap();
                Ok((entry.version, offset))
            }
            Err(e) => Err(e),
        };
        (r, started)
    });
    proxy.gate.held().await;
    change.await;
    proxy.gate.release.notify_one();
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the resumed get ends")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_pruned_between_stat_and_get_restarts_the_download_from_zero() {
    let srv = TestServer::start_with_config(|t| {
        assert!(t.contains("keep_versions = 3"), "{t}");
        t.replace("keep_versions = 3", "keep_versions = 1")
    })
    .await;
    let writer = srv.issue("w", "writer");
    let reader = srv.issue("r", "reader");
    let mut w = Client::connect(&writer).await.unwrap();
    let v1 = w
        .put(
            "resume/blob",
            Pattern::new("one", SIZE),
            Some(SIZE),
            &mut |_| {},
        )
        .await
        .unwrap();
    let proxy = start_proxy(srv.addr, Cut::Down).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("blob.partial");
    let len = cut_get(&proxy, &reader, "resume/blob", &file).await;
    let partial = Partial {
        version: v1.version,
        hash: v1.hash,
        len,
    };

    // Shorter than the partial, so bytes of v1 left after it would show in the length.
    let size2 = len / 2;
    let mut v2 = None;
    let (r, started) = resume_across_a_change(&proxy, &reader, &file, partial, async {
        let e = w
            .put(
                "resume/blob",
                Pattern::new("two", size2),
                Some(size2),
                &mut |_| {},
            )
            .await
            .unwrap();
        v2 = Some(e);
    })
    .await;
    let v2 = v2.unwrap();
    assert!(v2.version > v1.version);
    // keep_versions = 1: v1 is gone, the ranged get of it was refused with not_found.
    let mut check = Client::connect(&reader).await.unwrap();
    let gone = check
        .raw_request(&ferry::proto::message::Message::Get(
            ferry::proto::message::Get {
                source: "resume/blob".into(),
                version: Some(v1.version),
                offset: 0,
                len: None,
            },
        ))
        .await
        .unwrap();
    assert_eq!(gone.type_name(), "error", "v1 is still retained: {gone:?}");

    assert_eq!(r.unwrap(), (v2.version, 0), "not restarted from zero");
    assert_eq!(started, Some((v2.version, 0)));
    assert_eq!(std::fs::metadata(&file).unwrap().len(), size2);
    assert_eq!(
        blake3_of(&file),
        Pattern::hash("two", size2),
        "spliced bytes"
    );
    w.close().await.unwrap();
    srv.stop().await;
    assert_eq!(panics(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_deleted_between_stat_and_get_fails_with_not_found() {
    let srv =
        TestServer::start_with_config(|t| t.replace("keep_versions = 3", "keep_versions = 1"))
            .await;
    let writer = srv.issue("w", "writer");
    let reader = srv.issue("r", "reader");
    let mut w = Client::connect(&writer).await.unwrap();
    let v1 = w
        .put(
            "resume/blob",
            Pattern::new("one", SIZE),
            Some(SIZE),
            &mut |_| {},
        )
        .await
        .unwrap();
    let proxy = start_proxy(srv.addr, Cut::Down).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("blob.partial");
    let len = cut_get(&proxy, &reader, "resume/blob", &file).await;
    let partial = Partial {
        version: v1.version,
        hash: v1.hash,
        len,
    };

    let (r, started) = resume_across_a_change(&proxy, &reader, &file, partial, async {
        w.delete("resume/blob").await.unwrap();
    })
    .await;
    assert!(
        matches!(r, Err(ferry::Error::NotFound(_))),
        "expected not_found, got {r:?}"
    );
    assert_eq!(started, None, "nothing may be written for a deleted source");
    // The partial is left as it was, for the caller to discard.
    assert_eq!(std::fs::metadata(&file).unwrap().len(), len);
    w.close().await.unwrap();
    srv.stop().await;
    assert_eq!(panics(), 0);
}
