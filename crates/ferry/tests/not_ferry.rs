//! A credential pointing at something that is not a ferry server gets one clear error that
//! says so, not TLS jargon: an HTTP server (no TLS at all), and a TLS server that speaks
//! another protocol (ALPN `h2` only).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::TestServer;
use ferry::{Client, Error};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_server_and_a_tls_server_of_another_protocol_are_named_as_such() {
    let srv = TestServer::start().await;
    let mut cred = srv.issue("alice", "writer");

    // Plain HTTP: answers the ClientHello with a 400.
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    cred.server = http.local_addr().unwrap().to_string();
    let serve_http = tokio::spawn(async move {
        let (mut s, _) = http.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).await;
        let _ = s
            .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            .await;
        let _ = s.shutdown().await;
    });
    let err = Client::connect(&cred).await.unwrap_err();
    assert!(
        matches!(err, Error::NotFerry { why, .. } if why.contains("TLS")),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("is not a ferry server"), "{text}");
    serve_http.await.unwrap();

    // TLS with the server's own key, offering only h2.
    let mut config = srv.server_dir.identity().unwrap().server_config().unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let tls = TcpListener::bind("127.0.0.1:0").await.unwrap();
    cred.server = tls.local_addr().unwrap().to_string();
    let serve_tls = tokio::spawn(async move {
        let (s, _) = tls.accept().await.unwrap();
        let _ = acceptor.accept(s).await;
    });
    let err = Client::connect(&cred).await.unwrap_err();
    assert!(
        matches!(err, Error::NotFerry { why, .. } if why.contains("ferry/1")),
        "{err:?}"
    );
    serve_tls.await.unwrap();
    srv.stop().await;
}
