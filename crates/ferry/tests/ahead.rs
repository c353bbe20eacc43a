//! Requests sent ahead of their answers (PROTOCOL.md §5.2): the server answers them in
//! order, a refusal in the middle answers only its own request (a refused streamed put's
//! content is dropped), and the connection goes on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Pattern, TestServer, panics};
use ferry::proto::message::{ErrorCode, Get, Message, Put, PutEnd, SourceRef};
use ferry::wire::{Chunk, Incoming, Wire};
use ferry::{Client, Error, WINDOW};

/// A role that may write and read only under `in/`.
fn inbox(t: String) -> String {
    t.replace(
        "[roles]\n",
        "[roles]\ninbox = [{ ops = [\"put\", \"get\", \"stat\", \"list\"], sources = [\"in/**\"] }]\n",
    )
}

fn streamed(source: &str, size: Option<u64>, hash: Option<[u8; 32]>) -> Message {
    Message::Put(Put {
        source: source.into(),
        size,
        offset: 0,
        hash,
        streamed: true,
        mtime: None,
        executable: false,
        chunks: None,
    })
}

fn get(source: &str) -> Message {
    Message::Get(Get {
        source: source.into(),
        version: None,
        offset: 0,
        len: None,
    })
}

/// Queues `content` as data frames of at most 256 KiB, then its `put_end`.
async fn queue_content<S>(wire: &mut Wire<S>, seed: &str, len: u64)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut pattern = Pattern::new(seed, len);
    let mut left = len;
    while left > 0 {
        let n = left.min(256 * 1024);
        let mut chunk = Chunk::with_capacity(n as usize);
        chunk.fill_from(&mut pattern).unwrap();
        assert_eq!(chunk.len() as u64, n);
        wire.send_chunk(&mut chunk).await.unwrap();
        left -= n;
    }
    wire.queue(&Message::PutEnd(PutEnd {
        size: len,
        hash: Pattern::hash(seed, len),
    }))
    .await
    .unwrap();
}

async fn next<S>(wire: &mut Wire<S>) -> Message
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match wire.recv().await.unwrap() {
        Incoming::Message(m) => m,
        Incoming::Data(_) => panic!("data where an answer was due"),
    }
}

fn refused(m: Message, code: ErrorCode) {
    match m {
        Message::Error(e) => assert_eq!(e.code, code, "{}", e.message),
        other => panic!("expected error {code:?}, got {}", other.type_name()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_sent_ahead_are_answered_in_order_and_a_refusal_in_the_middle_changes_nothing_else()
 {
    let srv = TestServer::start_with_config(inbox).await;
    let cred = srv.issue("i", "inbox");
    let mut wire = common::raw_session(srv.addr, &cred).await;

    // Everything goes out before any answer is read.
    wire.queue(&streamed("in/a", Some(1000), None))
        .await
        .unwrap();
    queue_content(&mut wire, "a", 1000).await;
    // Forbidden, with content over two frames: dropped.
    wire.queue(&streamed("out/b", Some(300_000), None))
        .await
        .unwrap();
    queue_content(&mut wire, "b", 300_000).await;
    // A bad name: refused before its content, which is dropped.
    wire.queue(&streamed("in/../x", Some(10), None))
        .await
        .unwrap();
    queue_content(&mut wire, "x", 10).await;
    // A streamed put may not carry a hash.
    wire.queue(&streamed("in/h", Some(10), Some(Pattern::hash("h", 10))))
        .await
        .unwrap();
    queue_content(&mut wire, "h", 10).await;
    // Empty content: the put and its put_end only.
    wire.queue(&streamed("in/c", Some(0), None)).await.unwrap();
    queue_content(&mut wire, "c", 0).await;
    // A wrong hash: accepted, then refused at put_end; the next put is unaffected.
    wire.queue(&streamed("in/d", Some(5), None)).await.unwrap();
    let mut chunk = Chunk::with_capacity(5);
    chunk.fill_from(&mut Pattern::new("d", 5)).unwrap();
    wire.send_chunk(&mut chunk).await.unwrap();
    wire.queue(&Message::PutEnd(PutEnd {
        size: 5,
        hash: [0; 32],
    }))
    .await
    .unwrap();
    wire.queue(&streamed("in/e", Some(70_000), None))
        .await
        .unwrap();
    queue_content(&mut wire, "e", 70_000).await;
    for m in [
        get("in/a"),
        get("in/missing"),
        get("out/b"),
        get("in/c"),
        get("in/e"),
        Message::Stat(SourceRef {
            source: "in/a".into(),
        }),
    ] {
        wire.queue(&m).await.unwrap();
    }
    wire.flush().await.unwrap();

    let stored = |m: Message, source: &str, seed: &str, len: u64| match m {
        Message::PutOk(e) => {
            assert_eq!(e.source, source);
            assert_eq!(e.size, len);
            assert_eq!(e.hash, Pattern::hash(seed, len));
        }
        other => panic!("expected put_ok for {source}, got {}", other.type_name()),
    };
    let ready = |m: Message| assert!(matches!(m, Message::PutReady(r) if r.offset == 0));
    ready(next(&mut wire).await);
    stored(next(&mut wire).await, "in/a", "a", 1000);
    refused(next(&mut wire).await, ErrorCode::Forbidden);
    refused(next(&mut wire).await, ErrorCode::BadRequest);
    refused(next(&mut wire).await, ErrorCode::BadRequest);
    ready(next(&mut wire).await);
    stored(next(&mut wire).await, "in/c", "c", 0);
    ready(next(&mut wire).await);
    refused(next(&mut wire).await, ErrorCode::HashMismatch);
    ready(next(&mut wire).await);
    stored(next(&mut wire).await, "in/e", "e", 70_000);

    match next(&mut wire).await {
        Message::GetOk(ok) => {
            assert_eq!(ok.entry.source, "in/a");
            let mut got = Vec::new();
            while (got.len() as u64) < ok.entry.size {
                match wire.recv().await.unwrap() {
                    Incoming::Data(d) => got.extend_from_slice(&d),
                    Incoming::Message(m) => panic!("{} inside a get's data", m.type_name()),
                }
            }
            assert_eq!(*blake3::hash(&got).as_bytes(), Pattern::hash("a", 1000));
        }
        other => panic!("expected get_ok, got {}", other.type_name()),
    }
    refused(next(&mut wire).await, ErrorCode::NotFound);
    refused(next(&mut wire).await, ErrorCode::Forbidden);
    assert!(matches!(next(&mut wire).await, Message::GetOk(ok) if ok.entry.size == 0));
    match next(&mut wire).await {
        Message::GetOk(ok) => {
            assert_eq!(ok.entry.source, "in/e");
            let mut n = 0u64;
            let mut h = blake3::Hasher::new();
            while n < ok.entry.size {
                match wire.recv().await.unwrap() {
                    Incoming::Data(d) => {
                        n += d.len() as u64;
                        h.update(&d);
                    }
                    Incoming::Message(m) => panic!("{} inside a get's data", m.type_name()),
                }
            }
            assert_eq!(*h.finalize().as_bytes(), Pattern::hash("e", 70_000));
        }
        other => panic!("expected get_ok, got {}", other.type_name()),
    }
    assert!(matches!(next(&mut wire).await, Message::StatOk(e) if e.source == "in/a"));

    // Nothing refused became a source; the connection is still usable.
    wire.send(&Message::List(ferry::proto::message::List {
        prefix: String::new(),
        after: None,
    }))
    .await
    .unwrap();
    match next(&mut wire).await {
        Message::ListOk(l) => {
            let names: Vec<_> = l.entries.iter().map(|e| e.source.as_str()).collect();
            assert_eq!(names, ["in/a", "in/c", "in/e"]);
        }
        other => panic!("expected list_ok, got {}", other.type_name()),
    }
    srv.stop().await;
    assert_eq!(panics(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_put_without_size_or_with_too_much_content_closes_the_connection() {
    let srv = TestServer::start_with_config(inbox).await;
    let cred = srv.issue("i", "inbox");

    let mut wire = common::raw_session(srv.addr, &cred).await;
    wire.send(&streamed("in/a", None, None)).await.unwrap();
    refused(next(&mut wire).await, ErrorCode::BadRequest);
    assert!(wire.recv().await.is_err(), "the connection stayed open");

    // Refused (forbidden), then more content than announced: not drained forever.
    let mut wire = common::raw_session(srv.addr, &cred).await;
    wire.queue(&streamed("out/a", Some(10), None))
        .await
        .unwrap();
    let mut chunk = Chunk::with_capacity(11);
    chunk.fill_from(&mut Pattern::new("big", 11)).unwrap();
    wire.send_chunk(&mut chunk).await.unwrap();
    wire.flush().await.unwrap();
    refused(next(&mut wire).await, ErrorCode::BadRequest);
    assert!(wire.recv().await.is_err(), "the connection stayed open");
    srv.stop().await;
    assert_eq!(panics(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_moves_many_small_sources_and_survives_refusals() {
    let srv = TestServer::start_with_config(inbox).await;
    let cred = srv.issue("i", "inbox");
    let mut c = Client::connect_pipelined(&cred).await.unwrap();
    let n = 300usize;
    let name = |i: usize| {
        if i == 150 {
            "out/forbidden".to_owned()
        } else {
            format!("in/{i:04}")
        }
    };
    let content = |i: usize| format!("content {i} ").repeat(i % 50).into_bytes();

    let mut p = c.pipeline().await.unwrap();
    let mut stored = 0;
    let mut refusals = Vec::new();
    for i in 0..n {
        if p.outstanding() >= WINDOW {
            let k = i - p.outstanding();
            match p.recv_put().await {
                Ok(e) => {
                    assert_eq!(e.source, name(k));
                    stored += 1;
                }
                Err(e) => refusals.push((k, e)),
            }
        }
        p.send_put(&name(i), &content(i)).await.unwrap();
    }
    while p.outstanding() > 0 {
        let k = n - p.outstanding();
        match p.recv_put().await {
            Ok(_) => stored += 1,
            Err(e) => refusals.push((k, e)),
        }
    }
    assert!(p.is_usable());
    assert_eq!(stored, n - 1);
    assert_eq!(refusals.len(), 1);
    assert_eq!(refusals[0].0, 150);
    assert!(matches!(refusals[0].1, Error::Forbidden(_)));

    // Back down, with one missing source in the middle.
    let mut got = 0;
    let mut missing = 0;
    let mut sent = 0;
    while sent < n || p.outstanding() > 0 {
        while sent < n && p.outstanding() < WINDOW {
            p.send_get(&format!("in/{sent:04}")).await.unwrap();
            sent += 1;
        }
        let k = sent - p.outstanding();
        match p.recv_get(Vec::new(), &mut |_| {}).await {
            Ok((e, bytes)) => {
                assert_eq!(e.source, format!("in/{k:04}"));
                assert_eq!(bytes, content(k));
                got += 1;
            }
            Err(Error::NotFound(_)) => {
                assert_eq!(k, 150);
                missing += 1;
            }
            Err(e) => panic!("get {k}: {e}"),
        }
    }
    assert!(p.is_usable());
    assert_eq!((got, missing), (n - 1, 1));

    // Contents past STREAMED_MAX go to a writer made for them; if it cannot be made, the
    // content is read and dropped and the next answer is intact.
    drop(p);
    let big = Pattern::new("big", 3 * ferry::STREAMED_MAX);
    let big_len = 3 * ferry::STREAMED_MAX;
    c.put("in/big", big, Some(big_len), &mut |_| {})
        .await
        .unwrap();
    let mut p = c.pipeline().await.unwrap();
    for name in ["in/big", "in/big", "in/0007"] {
        p.send_get(name).await.unwrap();
    }
    let refused = p
        .recv_get_with(
            |_| Err::<Vec<u8>, _>(std::io::Error::other("cannot create")),
            &mut |_| {},
        )
        .await;
    assert!(matches!(refused, Err(Error::Io(_))), "{refused:?}");
    assert!(p.is_usable());
    match p
        .recv_get_with(|_| Ok(Vec::new()), &mut |_| {})
        .await
        .unwrap()
    {
        (e, ferry::Content::Written(w)) => {
            assert_eq!(e.size, big_len);
            assert_eq!(*blake3::hash(&w).as_bytes(), Pattern::hash("big", big_len));
        }
        (_, ferry::Content::Bytes(_)) => panic!("a large content was kept in memory"),
    }
    match p
        .recv_get_with(
            |_| -> std::io::Result<Vec<u8>> { panic!("no writer for a small content") },
            &mut |_| {},
        )
        .await
        .unwrap()
    {
        (e, ferry::Content::Bytes(b)) => {
            assert_eq!(e.source, "in/0007");
            assert_eq!(b, content(7));
        }
        (_, ferry::Content::Written(_)) => panic!("a small content went to a writer"),
    }
    drop(p);
    c.close().await.unwrap();
    srv.stop().await;
    assert_eq!(panics(), 0);
}
