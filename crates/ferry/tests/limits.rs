//! `[limits]` in ferry.toml, as the server enforces them: the most one put may store, the
//! transfers one principal may have in progress, the connections one address may hold. Each
//! test reads the server's refusal off the wire.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Pattern, TestServer, panics};
use ferry::Client;
use ferry::proto::message::{ErrorCode, Get, Message, Put};
use ferry::wire::Chunk;

/// ferry.toml with `[limits]` set to `upload`, `transfers` and `per_address`.
fn limits(upload: u64, transfers: usize, per_address: usize) -> impl FnOnce(String) -> String {
    with_limits(upload, transfers, per_address, (0, 0))
}

/// ferry.toml with `[limits]` set, quotas (bytes, versions) too.
fn with_limits(
    upload: u64,
    transfers: usize,
    per_address: usize,
    (quota_bytes, quota_versions): (u64, u64),
) -> impl FnOnce(String) -> String {
    move |text: String| {
        let mut text = text;
        for (line, value) in [
            ("quota_bytes = 0", format!("quota_bytes = {quota_bytes}")),
            (
                "quota_versions = 0",
                format!("quota_versions = {quota_versions}"),
            ),
            (
                "max_upload_bytes = 1099511627776",
                format!("max_upload_bytes = {upload}"),
            ),
            (
                "max_transfers_per_principal = 32",
                format!("max_transfers_per_principal = {transfers}"),
            ),
            (
                "max_connections_per_address = 1024",
                format!("max_connections_per_address = {per_address}"),
            ),
        ] {
            assert!(text.contains(line), "[limits] changed shape: no {line}");
            text = text.replace(line, &value);
        }
        text
    }
}

fn put(source: &str, size: Option<u64>) -> Message {
    Message::Put(Put {
        source: source.into(),
        size,
        offset: 0,
        hash: None,
        streamed: false,
        mtime: None,
        executable: false,
        chunks: None,
    })
}

fn refused(msg: Message) -> ErrorCode {
    match msg {
        Message::Error(e) => e.code,
        other => panic!("the server answered {}, not an error", other.type_name()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_larger_than_max_upload_bytes_is_refused_announced_or_streamed() {
    let srv = TestServer::start_with_config(limits(1000, 32, 1024)).await;
    let cred = srv.issue("w", "writer");
    let mut c = Client::connect(&cred).await.unwrap();
    c.put_bytes("fits", vec![1; 1000]).await.unwrap();
    let err = c.put_bytes("big", vec![1; 1001]).await.unwrap_err();
    assert!(matches!(err, ferry::Error::TooLarge(_)), "{err:?}");
    assert!(err.to_string().contains("max_upload_bytes"), "{err}");

    // Announced: refused before any byte moves.
    let mut wire = common::raw_session(srv.addr, &cred).await;
    wire.send(&put("big", Some(1001))).await.unwrap();
    assert_eq!(
        refused(wire.recv_message().await.unwrap()),
        ErrorCode::TooLarge
    );
    // Not announced (standard input): refused once the content passes the limit.
    wire.send(&put("big", None)).await.unwrap();
    assert!(matches!(
        wire.recv_message().await.unwrap(),
        Message::PutReady(_)
    ));
    let mut chunk = Chunk::with_capacity(1500);
    chunk.fill_from(&mut Pattern::new("big", 1500)).unwrap();
    wire.send_chunk(&mut chunk).await.unwrap();
    wire.flush().await.unwrap();
    assert_eq!(
        refused(wire.recv_message().await.unwrap()),
        ErrorCode::TooLarge
    );
    drop(wire);

    let mut c = Client::connect(&cred).await.unwrap();
    assert!(matches!(
        c.stat("big").await,
        Err(ferry::Error::NotFound(_))
    ));
    srv.stop().await;
    assert_eq!(panics(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_past_max_transfers_is_answered_busy_until_one_ends() {
    let srv = TestServer::start_with_config(limits(0, 1, 1024)).await;
    let cred = srv.issue("w", "writer");
    let other = srv.issue("v", "writer");
    Client::connect(&cred)
        .await
        .unwrap()
        .put_bytes("x", vec![2; 10])
        .await
        .unwrap();
    // One put in progress holds w's only place...
    let mut first = common::raw_session(srv.addr, &cred).await;
    first.send(&put("y", Some(1 << 20))).await.unwrap();
    assert!(matches!(
        first.recv_message().await.unwrap(),
        Message::PutReady(_)
    ));
    // ...so w's get and put on another connection are answered busy, at once.
    let mut second = common::raw_session(srv.addr, &cred).await;
    second
        .send(&Message::Get(Get {
            source: "x".into(),
            version: None,
            offset: 0,
            len: None,
        }))
        .await
        .unwrap();
    assert_eq!(
        refused(second.recv_message().await.unwrap()),
        ErrorCode::Busy
    );
    second.send(&put("z", Some(10))).await.unwrap();
    assert_eq!(
        refused(second.recv_message().await.unwrap()),
        ErrorCode::Busy
    );
    // Another principal is not held back.
    let mut v = Client::connect(&other).await.unwrap();
    assert_eq!(v.get_bytes("x").await.unwrap(), vec![2; 10]);
    // When the put ends (here: cut), w's place is free again.
    drop(first);
    let mut c = Client::connect(&cred).await.unwrap();
    let mut got = None;
    for _ in 0..200 {
        match c.get_bytes("x").await {
            Ok(b) => {
                got = Some(b);
                break;
            }
            Err(ferry::Error::Busy(_)) => tokio::time::sleep(Duration::from_millis(25)).await,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(got.expect("w's place was never given back"), vec![2; 10]);
    srv.stop().await;
    assert_eq!(panics(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_past_max_connections_per_address_is_answered_busy() {
    let srv = TestServer::start_with_config(limits(0, 0, 2)).await;
    let cred = srv.issue("w", "writer");
    let held = [
        common::raw_session(srv.addr, &cred).await,
        common::raw_session(srv.addr, &cred).await,
    ];
    let mut third = common::raw_session(srv.addr, &cred).await;
    assert_eq!(
        refused(third.recv_message().await.unwrap()),
        ErrorCode::Busy
    );
    let err = Client::connect(&cred)
        .await
        .unwrap()
        .stat("x")
        .await
        .unwrap_err();
    assert!(matches!(err, ferry::Error::Busy(_)), "{err:?}");
    drop(held);
    let mut ok = false;
    for _ in 0..200 {
        match Client::connect(&cred).await.unwrap().list("").await {
            Ok(_) => {
                ok = true;
                break;
            }
            Err(ferry::Error::Busy(_)) => tokio::time::sleep(Duration::from_millis(25)).await,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(ok, "the address's places were never given back");
    srv.stop().await;
    assert_eq!(panics(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_past_a_principals_quota_are_refused_until_it_deletes() {
    let srv = TestServer::start_with_config(with_limits(0, 0, 0, (10, 3))).await;
    let cred = srv.issue("w", "writer");
    let mut c = Client::connect(&cred).await.unwrap();
    c.put_bytes("a", vec![1; 6]).await.unwrap();
    // 6 + 5 > 10 bytes: refused before any byte moves.
    let err = c.put_bytes("b", vec![2; 5]).await.unwrap_err();
    assert!(matches!(err, ferry::Error::QuotaExceeded(_)), "{err:?}");
    assert!(err.to_string().contains("quota_bytes"), "{err}");
    c.put_bytes("b", vec![2; 4]).await.unwrap();
    c.put_bytes("c", Vec::new()).await.unwrap();
    // A fourth kept version is past quota_versions = 3, even empty.
    let err = c.put_bytes("d", Vec::new()).await.unwrap_err();
    assert!(matches!(err, ferry::Error::QuotaExceeded(_)), "{err:?}");
    // Another principal has a quota of its own.
    let other = srv.issue("v", "writer");
    Client::connect(&other)
        .await
        .unwrap()
        .put_bytes("v1", vec![3; 10])
        .await
        .unwrap();
    // Deleting frees room: 4 bytes in 2 versions now.
    c.delete("a").await.unwrap();
    // A put without size is measured at its end: 4 + 7 > 10, refused by the server.
    let mut wire = common::raw_session(srv.addr, &cred).await;
    wire.send(&put("e", None)).await.unwrap();
    assert!(matches!(
        wire.recv_message().await.unwrap(),
        Message::PutReady(_)
    ));
    let mut chunk = Chunk::with_capacity(7);
    chunk.fill_from(&mut Pattern::new("e", 7)).unwrap();
    wire.send_chunk(&mut chunk).await.unwrap();
    wire.send(&Message::PutEnd(ferry::proto::message::PutEnd {
        size: 7,
        hash: Pattern::hash("e", 7),
    }))
    .await
    .unwrap();
    assert_eq!(
        refused(wire.recv_message().await.unwrap()),
        ErrorCode::QuotaExceeded
    );
    drop(wire);
    assert!(matches!(c.stat("e").await, Err(ferry::Error::NotFound(_))));
    c.put_bytes("d", vec![4; 6]).await.unwrap();
    srv.stop().await;
    assert_eq!(panics(), 0);
}

/// Small puts sent ahead are committed while the server reads on (engine/put_small.rs), so
/// the quota counts the ones not committed yet too: a burst stops exactly at the quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_small_puts_sent_ahead_stops_exactly_at_the_quota() {
    for (quota, size, allowed) in [((0, 5), 10usize, 5usize), ((100, 0), 30, 3)] {
        let srv = TestServer::start_with_config(with_limits(0, 0, 0, quota)).await;
        let cred = srv.issue("w", "writer");
        let mut c = Client::connect(&cred).await.unwrap();
        let mut p = c.pipeline().await.unwrap();
        const N: usize = 10;
        for i in 0..N {
            p.send_put_with(
                &format!("burst/{i}"),
                &vec![i as u8; size],
                Default::default(),
            )
            .await
            .unwrap();
        }
        let mut stored = 0;
        for i in 0..N {
            match p.recv_put().await {
                Ok(e) => {
                    assert!(i < allowed, "put {i} stored past the quota {quota:?}");
                    assert_eq!(e.size, size as u64);
                    stored += 1;
                }
                Err(ferry::Error::QuotaExceeded(_)) => {
                    assert!(i >= allowed, "put {i} refused inside the quota {quota:?}")
                }
                Err(e) => panic!("put {i}: {e:?}"),
            }
        }
        drop(p);
        assert_eq!(stored, allowed);
        let listed = c.list("burst/").await.unwrap();
        assert_eq!(listed.len(), allowed, "{quota:?}");
        srv.stop().await;
        assert_eq!(panics(), 0);
    }
}
