//! Transfers over real loopback TLS against a real store on disk.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Pattern, TestServer, eventually, panics};
use ferry::Client;
use ferry::pipe::HashingWriter;
use ferry::proto::message::{Message, Put, PutEnd};
use ferry::wire::Chunk;

const MIB: u64 = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_puts_256_mib_and_reader_gets_it_back_identical() {
    let srv = TestServer::start().await;
    let writer = srv.issue("w", "writer");
    let reader = srv.issue("r", "reader");
    let size = 256 * MIB;

    let mut c = Client::connect(&writer).await.unwrap();
    let entry = c
        .put(
            "big/blob",
            Pattern::new("big", size),
            Some(size),
            &mut |_| {},
        )
        .await
        .unwrap();
    assert_eq!(entry.size, size);
    assert_eq!(entry.version, 1);
    assert_eq!(entry.hash, Pattern::hash("big", size));
    c.close().await.unwrap();

    let mut c = Client::connect(&reader).await.unwrap();
    let mut seen = 0;
    let (got, sink) = c
        .get("big/blob", HashingWriter::new(std::io::sink()), &mut |n| {
            seen = n
        })
        .await
        .unwrap();
    let (_, hash, len) = sink.into_parts();
    assert_eq!((len, seen), (size, size));
    assert_eq!(hash, Pattern::hash("big", size), "bytes differ");
    assert_eq!(got.by, "w");
    c.close().await.unwrap();
    srv.stop().await;
    assert_eq!(panics(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_style_put_without_size_and_empty_blob() {
    let srv = TestServer::start().await;
    let mut c = Client::connect(&srv.issue("w", "writer")).await.unwrap();
    let e = c
        .put("a", Pattern::new("x", 3 * MIB + 7), None, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(e.size, 3 * MIB + 7);
    let e = c.put_bytes("empty", Vec::new()).await.unwrap();
    assert_eq!(e.size, 0);
    assert_eq!(c.get_bytes("empty").await.unwrap(), b"");
    // A file that turns out shorter than announced is refused by the client.
    let short = c
        .put("b", Pattern::new("x", 10), Some(20), &mut |_| {})
        .await;
    assert!(short.is_err());
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_list_stat_delete() {
    let srv = TestServer::start().await;
    let mut c = Client::connect(&srv.issue("w", "writer")).await.unwrap();
    assert_eq!(c.put_bytes("d/a", b"1".to_vec()).await.unwrap().version, 1);
    assert_eq!(c.put_bytes("d/a", b"22".to_vec()).await.unwrap().version, 2);
    c.put_bytes("d/b", b"3".to_vec()).await.unwrap();
    c.put_bytes("e/c", b"4".to_vec()).await.unwrap();
    assert_eq!(c.get_bytes("d/a").await.unwrap(), b"22");
    let names: Vec<_> = c
        .list("d/")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.source)
        .collect();
    assert_eq!(names, ["d/a", "d/b"]);
    assert_eq!(c.list("").await.unwrap().len(), 3);
    assert_eq!(c.stat("d/a").await.unwrap().size, 2);
    assert_eq!(c.delete("d/a").await.unwrap(), 3);
    assert!(matches!(
        c.stat("d/a").await,
        Err(ferry::Error::NotFound(_))
    ));
    assert!(matches!(
        c.get_bytes("d/a").await,
        Err(ferry::Error::NotFound(_))
    ));
    assert_eq!(c.put_bytes("d/a", b"5".to_vec()).await.unwrap().version, 4);
    // Invalid names never reach the server.
    assert!(matches!(c.stat("../x").await, Err(ferry::Error::Name(_))));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_past_one_frame() {
    let srv = TestServer::start().await;
    let mut c = Client::connect(&srv.issue("w", "writer")).await.unwrap();
    for i in 0..2500 {
        c.put_bytes(&format!("many/{i:05}"), vec![1]).await.unwrap();
    }
    let all = c.list("many/").await.unwrap();
    assert_eq!(all.len(), 2500);
    assert!(all.windows(2).all(|w| w[0].source < w[1].source));
    srv.stop().await;
}

/// Files an unfinished upload could leave: staged blobs in `tmp/` and upload parts in
/// `uploads/` (a plain put stages through a part under a random key).
fn tmp_files(srv: &TestServer) -> usize {
    ["tmp", "uploads"]
        .iter()
        .map(|d| {
            std::fs::read_dir(srv.server_dir.store_path().join(d))
                .map(|d| d.count())
                .unwrap_or(0)
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_cut_off_midway_leaves_the_previous_version() {
    let srv = TestServer::start().await;
    let cred = srv.issue("w", "writer");
    let mut c = Client::connect(&cred).await.unwrap();
    let v1 = c.put_bytes("doc", b"version one".to_vec()).await.unwrap();

    let mut wire = common::raw_session(srv.addr, &cred).await;
    wire.send(&Message::Put(Put {
        source: "doc".into(),
        size: Some(8 * MIB),
        offset: 0,
        hash: None,
        streamed: false,
        mtime: None,
        executable: false,
        chunks: None,
    }))
    .await
    .unwrap();
    assert!(matches!(
        wire.recv_message().await.unwrap(),
        Message::PutReady(_)
    ));
    for _ in 0..8 {
        let mut chunk = Chunk::with_capacity(256 * 1024);
        chunk
            .fill_from(&mut Pattern::new("cut", 256 * 1024))
            .unwrap();
        wire.send_chunk(&mut chunk).await.unwrap();
    }
    wire.flush().await.unwrap();
    // Cut: drop the TCP connection without finishing.
    drop(wire);

    assert!(
        eventually(Duration::from_secs(5), || tmp_files(&srv) == 0).await,
        "the partial upload's temporary file or part was not removed"
    );
    let now = c.stat("doc").await.unwrap();
    assert_eq!(now, v1);
    assert_eq!(c.get_bytes("doc").await.unwrap(), b"version one");
    assert_eq!(c.list("").await.unwrap().len(), 1);
    srv.stop().await;
    assert_eq!(panics(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_whose_hash_does_not_match_is_refused_and_invisible() {
    let srv = TestServer::start().await;
    let cred = srv.issue("w", "writer");
    let mut wire = common::raw_session(srv.addr, &cred).await;
    wire.send(&Message::Put(Put {
        source: "doc".into(),
        size: None,
        offset: 0,
        hash: None,
        streamed: false,
        mtime: None,
        executable: false,
        chunks: None,
    }))
    .await
    .unwrap();
    assert!(matches!(
        wire.recv_message().await.unwrap(),
        Message::PutReady(_)
    ));
    let mut chunk = Chunk::with_capacity(1000);
    chunk.fill_from(&mut Pattern::new("h", 1000)).unwrap();
    wire.send_chunk(&mut chunk).await.unwrap();
    wire.send(&Message::PutEnd(PutEnd {
        size: 1000,
        hash: [0; 32],
    }))
    .await
    .unwrap();
    let Message::Error(e) = wire.recv_message().await.unwrap() else {
        panic!("accepted a wrong hash")
    };
    assert_eq!(e.code, ferry::proto::message::ErrorCode::HashMismatch);
    let mut c = Client::connect(&cred).await.unwrap();
    assert!(matches!(
        c.stat("doc").await,
        Err(ferry::Error::NotFound(_))
    ));
    assert!(eventually(Duration::from_secs(5), || tmp_files(&srv) == 0).await);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gets_of_one_frame_or_less_with_offsets_and_get_bytes_at_every_size() {
    use ferry::proto::message::Get;
    use ferry::wire::Incoming;
    let srv = TestServer::start().await;
    let cred = srv.issue("w", "writer");
    let mut c = Client::connect(&cred).await.unwrap();
    // Empty, small, exactly one frame, one byte more than a frame (the streamed path).
    let chunk = ferry::pipe::CHUNK;
    for len in [0usize, 1000, chunk, chunk + 1] {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let name = format!("s/{len}");
        c.put_bytes(&name, data.clone()).await.unwrap();
        assert_eq!(c.get_bytes(&name).await.unwrap(), data, "{len} bytes");
    }

    // Offsets, on the raw protocol: the tail, nothing at the very end, an error beyond it.
    let mut wire = common::raw_session(srv.addr, &cred).await;
    let data: Vec<u8> = (0..1000).map(|i| (i % 251) as u8).collect();
    for offset in [400u64, 1000] {
        wire.send(&Message::Get(Get {
            source: "s/1000".into(),
            version: None,
            offset,
            len: None,
        }))
        .await
        .unwrap();
        match wire.recv_message().await.unwrap() {
            Message::GetOk(ok) => assert_eq!((ok.offset, ok.entry.size), (offset, 1000)),
            other => panic!("{other:?}"),
        }
        if offset < 1000 {
            match wire.recv().await.unwrap() {
                Incoming::Data(d) => assert_eq!(d, data[offset as usize..]),
                other => panic!("{other:?}"),
            }
        }
    }
    wire.send(&Message::Get(Get {
        source: "s/1000".into(),
        version: None,
        offset: 1001,
        len: None,
    }))
    .await
    .unwrap();
    match wire.recv_message().await.unwrap() {
        Message::Error(e) => assert_eq!(e.code, ferry::proto::message::ErrorCode::BadRequest),
        other => panic!("{other:?}"),
    }
    // The connection still serves after all of that.
    let stat = wire
        .send(&Message::Stat(ferry::proto::message::SourceRef {
            source: "s/0".into(),
        }))
        .await;
    stat.unwrap();
    assert!(matches!(
        wire.recv_message().await.unwrap(),
        Message::StatOk(_)
    ));
    srv.stop().await;
    assert_eq!(panics(), 0);
}

/// Store reads run in place only on a multi-thread runtime (`block_in_place` would panic on
/// this one): a server embedded in a current-thread runtime must still answer.
#[tokio::test]
async fn a_server_on_a_current_thread_runtime_answers_stat_and_get() {
    let srv = TestServer::start().await;
    let mut c = Client::connect(&srv.issue("w", "writer")).await.unwrap();
    c.put_bytes("doc", b"one".to_vec()).await.unwrap();
    assert_eq!(c.stat("doc").await.unwrap().size, 3);
    assert_eq!(c.get_bytes("doc").await.unwrap(), b"one");
    c.close().await.unwrap();
    srv.stop().await;
    assert_eq!(panics(), 0);
}
