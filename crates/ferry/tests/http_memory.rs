//! A 64 MiB put and get over the HTTP front, byte-identical, in bounded memory: alone in its
//! test binary, so that the process's peak memory is this transfer's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod http_common;

use http_common::{HashSink, HttpServer, PatternReader, peak_rss};

#[tokio::test]
async fn a_64_mib_put_and_get_are_byte_identical_in_bounded_memory() {
    const LEN: u64 = 64 << 20;
    let s = HttpServer::start().await;
    let c = s.client(&s.issue("alice", "writer"));
    let before = peak_rss();
    let e = c
        .put("big", PatternReader::new("64", LEN), Some(LEN))
        .await
        .unwrap();
    let want = PatternReader::hash("64", LEN);
    assert_eq!((e.size, e.hash), (LEN, want));
    let mut sink = HashSink::new(None);
    let got = c.get_to("big", None, 0, &mut sink).await.unwrap();
    assert_eq!((got.len, got.size), (LEN, LEN));
    assert_eq!(*sink.hasher.finalize().as_bytes(), want);
    let grew = peak_rss().saturating_sub(before);
    println!(
        "peak RSS grew by {} KiB over a 64 MiB put and get",
        grew / 1024
    );
    assert!(
        grew < 32 << 20,
        "peak memory grew by {grew} bytes for a 64 MiB transfer"
    );
    s.stop().await;
}
