//! `ferry serve --http ADDR --http-tls`: the HTTP front over HTTPS with the server's own
//! identity, the client pinning its server ID exactly as over the TLS front.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod http_common;

use ferry::{Error, HttpClient, ServerDir};
use http_common::HttpServer;

#[tokio::test]
async fn https_with_the_server_identity_is_pinned_by_server_id() {
    let s = HttpServer::start_https().await;
    let cred = s.issue("alice", "writer");
    let pin = s.server_dir.identity().unwrap().server_id();
    assert!(s.url().starts_with("https://"));

    let alice = HttpClient::new(&s.url(), &cred)
        .unwrap()
        .with_server_id(pin)
        .unwrap();
    let e = alice
        .put("tls/a", &b"over https"[..], Some(10))
        .await
        .unwrap();
    let mut out = Vec::new();
    alice.get_to("tls/a", None, 0, &mut out).await.unwrap();
    assert_eq!(out, b"over https");
    assert_eq!(alice.stat("tls/a").await.unwrap(), e);

    // Another server's ID: the handshake is refused by the client's pin.
    let other = tempfile::tempdir().unwrap();
    let other = ServerDir::new(other.path().join("srv"));
    other.init().unwrap();
    let wrong = other.identity().unwrap().server_id();
    let mallory = HttpClient::new(&s.url(), &cred)
        .unwrap()
        .with_server_id(wrong)
        .unwrap();
    let r = mallory.stat("tls/a").await;
    assert!(matches!(r, Err(Error::ServerIdMismatch(_))), "{r:?}");

    // Plain HTTP to the HTTPS front gets no answer it could believe.
    let plain = HttpClient::new(&format!("http://{}", s.http), &cred).unwrap();
    assert!(plain.stat("tls/a").await.is_err());
    assert_eq!(s.stats.refusals().accepted, 3);
    s.stop().await;
}
