//! Resumable puts over real loopback TLS, through a counting TCP proxy that can cut the
//! connection after a number of bytes from the client.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::proxy::{Cut, Proxy, start_proxy};
use common::{Pattern, TestServer, eventually, panics};
use ferry::Client;
use ferry::proto::credential::Credential;
use ferry::proto::message::{Message, Put};

const MIB: u64 = 1024 * 1024;
const SIZE: u64 = 8 * MIB;
const CUT_AT: u64 = 3 * MIB;
const SOURCE: &str = "resume/up";

async fn connect_via(addr: SocketAddr, cred: &Credential) -> Client {
    tokio::time::timeout(
        Duration::from_secs(20),
        Client::connect_to(&addr.to_string(), cred.server_id, cred),
    )
    .await
    .unwrap()
    .unwrap()
}

/// Writes `SIZE` bytes of the pattern `seed` to a file in `dir`.
fn pattern_file(dir: &Path, seed: &str) -> PathBuf {
    let path = dir.join(seed);
    let mut f = std::fs::File::create(&path).unwrap();
    std::io::copy(&mut Pattern::new(seed, SIZE), &mut f).unwrap();
    path
}

/// Puts `file` resumably through the proxy, cut after `CUT_AT` bytes from the client.
async fn cut_put(proxy: &Proxy, cred: &Credential, file: &Path) {
    proxy.cut_after.store(CUT_AT, Ordering::SeqCst);
    let mut c = connect_via(proxy.addr, cred).await;
    let r = tokio::time::timeout(
        Duration::from_secs(60),
        c.put_resume(
            SOURCE,
            std::fs::File::open(file).unwrap(),
            &mut |_| {},
            &mut |_| {},
        ),
    )
    .await
    .expect("the cut put ends");
    // A cut connection, never a local error (which the CLI would take for its own output).
    assert!(
        matches!(
            r,
            Err(ferry::Error::Connection(_) | ferry::Error::Closed | ferry::Error::Timeout(_))
        ),
        "a put cut after {CUT_AT} bytes cannot succeed, and says its connection broke: {r:?}"
    );
    drop(c);
    proxy.cut_after.store(0, Ordering::SeqCst);
}

/// Puts `file` resumably to `addr`; returns the entry's hash, its version and the offset
/// the server continued from.
async fn resume_put(addr: SocketAddr, cred: &Credential, file: &Path) -> ([u8; 32], u64, u64) {
    let mut c = connect_via(addr, cred).await;
    let mut ready = None;
    let (entry, offset) = tokio::time::timeout(
        Duration::from_secs(60),
        c.put_resume(
            SOURCE,
            std::fs::File::open(file).unwrap(),
            &mut |o| ready = Some(o),
            &mut |_| {},
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(ready, Some(offset), "on_ready saw the offset");
    c.close().await.unwrap();
    (entry.hash, entry.version, offset)
}

/// The upload parts the server holds.
fn parts(srv: &TestServer) -> Vec<PathBuf> {
    let dir = srv.server_dir.path().join("store").join("uploads");
    match std::fs::read_dir(dir) {
        Ok(d) => d
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "part"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// What the server stores now under SOURCE.
async fn stored(srv: &TestServer, cred: &Credential) -> [u8; 32] {
    let mut c = connect_via(srv.addr, cred).await;
    let data = c.get_bytes(SOURCE).await.unwrap();
    c.close().await.unwrap();
    *blake3::hash(&data).as_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_put_resumes_and_sends_only_the_missing_bytes() {
    let srv = TestServer::start().await;
    let writer = srv.issue("w", "writer");
    let dir = tempfile::tempdir().unwrap();
    let file = pattern_file(dir.path(), "one");
    let proxy = start_proxy(srv.addr, Cut::Up).await;
    cut_put(&proxy, &writer, &file).await;
    assert_eq!(parts(&srv).len(), 1, "the cut upload keeps its part");

    let before = proxy.from_client.load(Ordering::SeqCst);
    let (hash, _, offset) = resume_put(proxy.addr, &writer, &file).await;
    let wire = proxy.from_client.load(Ordering::SeqCst) - before;

    assert_eq!(hash, Pattern::hash("one", SIZE));
    assert_eq!(stored(&srv, &writer).await, Pattern::hash("one", SIZE));
    let chunk = ferry::pipe::CHUNK as u64;
    // The server holds what fully arrived: the cut loses at most the frame in flight.
    assert!(
        offset + 2 * chunk >= CUT_AT && offset <= CUT_AT,
        "resumed at {offset}, cut at {CUT_AT}"
    );
    // The missing bytes plus framing, TLS records and the handshake.
    let missing = SIZE - offset;
    let overhead = 64 * 1024 + missing / 100;
    eprintln!("resumed at {offset}; the rerun sent {wire} bytes for {missing} missing");
    assert!(
        wire <= missing + overhead,
        "the resumed put sent {wire} bytes for {missing} missing"
    );
    assert!(
        wire >= missing,
        "fewer bytes than missing: {wire} < {missing}"
    );
    assert!(parts(&srv).is_empty(), "a committed upload leaves no part");
    srv.stop().await;
    assert_eq!(panics(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_put_resumes_after_the_server_restarts() {
    let srv = TestServer::start().await;
    let writer = srv.issue("w", "writer");
    let dir = tempfile::tempdir().unwrap();
    let file = pattern_file(dir.path(), "one");
    let proxy = start_proxy(srv.addr, Cut::Up).await;
    cut_put(&proxy, &writer, &file).await;

    let srv = srv.restart(|t| t).await;
    let (hash, version, offset) = resume_put(srv.addr, &writer, &file).await;
    assert!(offset > 0, "the restarted server lost the part");
    assert_eq!((hash, version), (Pattern::hash("one", SIZE), 1));
    assert_eq!(stored(&srv, &writer).await, Pattern::hash("one", SIZE));
    srv.stop().await;
    assert_eq!(panics(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_content_under_the_same_name_and_size_does_not_reuse_the_parts() {
    let srv = TestServer::start().await;
    let writer = srv.issue("w", "writer");
    let dir = tempfile::tempdir().unwrap();
    let one = pattern_file(dir.path(), "one");
    let two = pattern_file(dir.path(), "two");
    let proxy = start_proxy(srv.addr, Cut::Up).await;
    cut_put(&proxy, &writer, &one).await;

    // Same source, same size, other content: from 0, and the result is the new content.
    let (hash, version, offset) = resume_put(srv.addr, &writer, &two).await;
    assert_eq!(offset, 0, "other content continued the old parts");
    assert_eq!((hash, version), (Pattern::hash("two", SIZE), 1));
    assert_eq!(stored(&srv, &writer).await, Pattern::hash("two", SIZE));

    // The first content's part is untouched and still continues.
    let (hash, version, offset) = resume_put(srv.addr, &writer, &one).await;
    assert!(offset > 0);
    assert_eq!((hash, version), (Pattern::hash("one", SIZE), 2));
    srv.stop().await;
    assert_eq!(panics(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_principal_does_not_continue_an_upload() {
    let srv = TestServer::start().await;
    let first = srv.issue("w", "writer");
    let other = srv.issue("x", "writer");
    let dir = tempfile::tempdir().unwrap();
    let file = pattern_file(dir.path(), "one");
    let proxy = start_proxy(srv.addr, Cut::Up).await;
    cut_put(&proxy, &first, &file).await;

    let (_, _, offset) = resume_put(srv.addr, &other, &file).await;
    assert_eq!(offset, 0, "another principal got the first one's offset");
    let (_, _, offset) = resume_put(srv.addr, &first, &file).await;
    assert!(offset > 0, "the first principal's part is still there");
    srv.stop().await;
    assert_eq!(panics(), 0);
}

/// Sets every part's last activity to `age` ago.
fn age_parts(srv: &TestServer, age: Duration) {
    for p in parts(srv) {
        let f = std::fs::File::options().append(true).open(&p).unwrap();
        f.set_modified(std::time::SystemTime::now() - age).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_idle_past_its_keep_time_is_swept_and_the_put_starts_over() {
    let srv = TestServer::start().await;
    let writer = srv.issue("w", "writer");
    let dir = tempfile::tempdir().unwrap();
    let file = pattern_file(dir.path(), "one");
    let proxy = start_proxy(srv.addr, Cut::Up).await;
    cut_put(&proxy, &writer, &file).await;
    assert_eq!(parts(&srv).len(), 1);

    // A restart waits for the cut connection to put its upload down: its time is final.
    let srv = srv.restart(|t| t).await;
    // Two hours idle: kept under the default (a day)...
    age_parts(&srv, Duration::from_secs(2 * 3600));
    let srv = srv.restart(|t| t).await;
    assert_eq!(parts(&srv).len(), 1, "swept before its time");
    // ... and swept at start by a server that keeps uploads for an hour.
    let srv = srv
        .restart(|t| t.replace("keep_secs = 86400", "keep_secs = 3600"))
        .await;
    assert!(
        parts(&srv).is_empty(),
        "an abandoned upload survived the sweep"
    );
    let (hash, version, offset) = resume_put(srv.addr, &writer, &file).await;
    assert_eq!(offset, 0);
    assert_eq!((hash, version), (Pattern::hash("one", SIZE), 1));
    srv.stop().await;
    assert_eq!(panics(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_server_sweeps_abandoned_uploads_periodically() {
    let srv =
        TestServer::start_with_config(|t| t.replace("keep_secs = 86400", "keep_secs = 1")).await;
    let writer = srv.issue("w", "writer");
    let dir = tempfile::tempdir().unwrap();
    let file = pattern_file(dir.path(), "one");
    let proxy = start_proxy(srv.addr, Cut::Up).await;
    cut_put(&proxy, &writer, &file).await;
    // Its last activity was at the start of the put; the sweep runs every second.
    assert!(
        eventually(Duration::from_secs(20), || parts(&srv).is_empty()).await,
        "the periodic sweep did not remove the abandoned upload"
    );
    srv.stop().await;
    assert_eq!(panics(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_put_of_an_upload_in_progress_is_refused_as_busy_then_continues() {
    let srv = TestServer::start_with(|l| l.upload_wait = Duration::from_millis(300)).await;
    let writer = srv.issue("w", "writer");
    let dir = tempfile::tempdir().unwrap();
    let file = pattern_file(dir.path(), "one");
    let (_, size, hash) = ferry::client::hash_file(std::fs::File::open(&file).unwrap())
        .await
        .unwrap();

    // A first connection opens the upload and keeps it.
    let mut holder = connect_via(srv.addr, &writer).await;
    let ready = holder
        .raw_request(&Message::Put(Put {
            source: SOURCE.into(),
            size: Some(size),
            offset: 0,
            hash: Some(hash),
            streamed: false,
            mtime: None,
            executable: false,
            chunks: None,
        }))
        .await
        .unwrap();
    assert!(
        matches!(&ready, Message::PutReady(r) if r.offset == 0),
        "{ready:?}"
    );

    let mut c = connect_via(srv.addr, &writer).await;
    let r = c
        .put_resume(
            SOURCE,
            std::fs::File::open(&file).unwrap(),
            &mut |_| {},
            &mut |_| {},
        )
        .await;
    assert!(matches!(r, Err(ferry::Error::Busy(_))), "{r:?}");
    // The refusal leaves the connection usable; once the holder is gone the put goes through
    // (each try waits for the release up to `upload_wait`; bounded in case the server sees
    // the holder's end late).
    drop(holder);
    let mut done = None;
    for _ in 0..50 {
        match c
            .put_resume(
                SOURCE,
                std::fs::File::open(&file).unwrap(),
                &mut |_| {},
                &mut |_| {},
            )
            .await
        {
            Err(ferry::Error::Busy(_)) => continue,
            r => {
                done = Some(r.unwrap());
                break;
            }
        }
    }
    let (entry, _) = done.expect("the upload was never released");
    assert_eq!(entry.hash, Pattern::hash("one", SIZE));
    c.close().await.unwrap();
    srv.stop().await;
    assert_eq!(panics(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumable_put_with_a_wrong_hash_is_refused_and_discarded() {
    let srv = TestServer::start().await;
    let writer = srv.issue("w", "writer");
    let dir = tempfile::tempdir().unwrap();
    let file = pattern_file(dir.path(), "one");
    let mut c = connect_via(srv.addr, &writer).await;
    let r = c
        .put_resume_hashed(
            SOURCE,
            std::fs::File::open(&file).unwrap(),
            SIZE,
            Pattern::hash("two", SIZE),
            &mut |_| {},
            &mut |_| {},
        )
        .await;
    assert!(matches!(r, Err(ferry::Error::HashMismatch)), "{r:?}");
    assert!(parts(&srv).is_empty(), "a mismatched upload keeps no part");
    assert!(matches!(
        c.stat(SOURCE).await,
        Err(ferry::Error::NotFound(_))
    ));
    c.close().await.unwrap();
    srv.stop().await;
    assert_eq!(panics(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_file_puts_resumably_and_leaves_no_part() {
    let srv = TestServer::start().await;
    let writer = srv.issue("w", "writer");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("empty");
    std::fs::write(&file, b"").unwrap();
    let (hash, version, offset) = resume_put(srv.addr, &writer, &file).await;
    assert_eq!(
        (hash, version, offset),
        (*blake3::hash(b"").as_bytes(), 1, 0)
    );
    assert!(parts(&srv).is_empty());
    srv.stop().await;
    assert_eq!(panics(), 0);
}

/// The upload key of PROTOCOL.md §5, computed from the specification's text.
fn spec_key(kind: &str, name: &str, source: &str, size: u64, hash: &[u8; 32]) -> String {
    let mut m = b"ferry put upload v1\0".to_vec();
    for f in [kind, name, source] {
        m.extend_from_slice(&(f.len() as u64).to_be_bytes());
        m.extend_from_slice(f.as_bytes());
    }
    m.extend_from_slice(&size.to_be_bytes());
    m.extend_from_slice(hash);
    blake3::hash(&m).to_hex().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_part_under_the_specified_key_is_committed_without_sending_data() {
    let srv = TestServer::start().await;
    let writer = srv.issue("w", "writer");
    let dir = tempfile::tempdir().unwrap();
    let file = pattern_file(dir.path(), "one");
    let hash = Pattern::hash("one", SIZE);
    // Every byte already held under the key PROTOCOL.md §5 derives: only `put_end` is missing.
    let part = srv.server_dir.path().join("store/uploads").join(format!(
        "{}.part",
        spec_key("client", "w", SOURCE, SIZE, &hash)
    ));
    std::fs::copy(&file, &part).unwrap();

    let proxy = start_proxy(srv.addr, Cut::Up).await;
    let (got, version, offset) = resume_put(proxy.addr, &writer, &file).await;
    assert_eq!((got, version, offset), (hash, 1, SIZE));
    let sent = proxy.from_client.load(Ordering::SeqCst);
    assert!(sent < 64 * 1024, "{sent} bytes sent for a complete upload");
    assert!(!part.exists(), "the committed part is gone");
    assert_eq!(stored(&srv, &writer).await, hash);
    srv.stop().await;
    assert_eq!(panics(), 0);
}
