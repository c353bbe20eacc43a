//! Places where docs/PROTOCOL.md says exactly what the server and the reference client do,
//! checked over real loopback sockets: SNI, IPv6 addresses in credentials, unknown and
//! unexpected messages, a `get` at or past the end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{TestServer, panics};
use ferry::proto::message::{ErrorCode, Get, Message};
use ferry::{Client, Server, ServerDir};
use tokio::io::AsyncWriteExt;

/// The ClientHello the reference client sends when it dials `host` (with the port of a
/// listener that only reads the hello): its SNI and its ALPN offers.
async fn client_hello_for(host: &str) -> (Option<String>, Vec<Vec<u8>>) {
    let bind = if host == "::1" {
        "[::1]:0"
    } else {
        "127.0.0.1:0"
    };
    let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let start = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp)
            .await
            .unwrap();
        let hello = start.client_hello();
        (
            hello.server_name().map(str::to_owned),
            hello
                .alpn()
                .map(|a| a.map(<[u8]>::to_vec).collect())
                .unwrap_or_default(),
        )
    });
    let dial = match host {
        "::1" => format!("[::1]:{port}"),
        "127.0.0.1" => format!("127.0.0.1:{port}"),
        _ => format!("localhost:{port}"),
    };
    let pin = ferry::proto::server_id::ServerId::from_spki(b"any");
    // The listener hangs up after the hello, so the handshake fails; only the hello matters.
    let _ = Client::connect_tls(&dial, pin).await;
    tokio::time::timeout(Duration::from_secs(5), seen)
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_is_the_dialled_host_name_and_absent_for_an_ip_address() {
    let (sni, alpn) = client_hello_for("127.0.0.1").await;
    assert_eq!(sni, None);
    assert_eq!(alpn, [b"ferry/1".to_vec()]);
    let (sni, _) = client_hello_for("::1").await;
    assert_eq!(sni, None);
    // `localhost` resolves to a loopback address; the listener is on 127.0.0.1.
    if tokio::net::lookup_host("localhost:1")
        .await
        .is_ok_and(|mut a| a.any(|a| a.ip() == std::net::Ipv4Addr::LOCALHOST))
    {
        let (sni, _) = client_hello_for("localhost-dns").await;
        assert_eq!(sni.as_deref(), Some("localhost"));
    } else {
        eprintln!("SKIPPED (SNI of a name): localhost does not resolve to 127.0.0.1 here");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_address_in_a_credential_is_written_in_brackets() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("SKIPPED: no IPv6 loopback here");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = ServerDir::new(tmp.path().join("srv"));
    dir.init().unwrap();
    let bound = Server::open(&dir).unwrap().bind("[::1]:0").await.unwrap();
    let addr = bound.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(bound.run(async {
        let _ = stopped.await;
    }));
    let attrs = BTreeMap::from([("role".to_owned(), "writer".to_owned())]);
    let bracketed = format!("[::1]:{}", addr.port());
    assert_eq!(addr.to_string(), bracketed);
    let cred = dir
        .issue_client("six", attrs.clone(), Some(&bracketed), 0)
        .unwrap();
    let mut c = Client::connect(&cred).await.unwrap();
    c.put_bytes("v6", b"ok".to_vec()).await.unwrap();
    assert_eq!(c.stat("v6").await.unwrap().size, 2);
    // The reference client splits HOST from PORT at the last colon, so it also dials the
    // unbracketed form; PROTOCOL.md §7 asks writers for brackets all the same.
    let bare = dir
        .issue_client("bare", attrs, Some(&format!("::1:{}", addr.port())), 0)
        .unwrap();
    let mut c = Client::connect(&bare).await.unwrap();
    assert_eq!(c.stat("v6").await.unwrap().size, 2);
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_unexpected_messages_close_the_connection() {
    let srv = TestServer::start().await;
    let cred = srv.issue("odd", "writer");
    // An unknown message type, {"frobnicate": {}}: no answer, the connection closes.
    let mut wire = common::raw_session(srv.addr, &cred).await;
    let mut frame = vec![0, 0, 0, 14, 1, 0xa1, 0x6a];
    frame.extend_from_slice(b"frobnicate");
    frame.push(0xa0);
    wire.get_mut().write_all(&frame).await.unwrap();
    wire.get_mut().flush().await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), wire.recv()).await;
    assert!(matches!(r, Ok(Err(_))), "{r:?}");
    // A known type the server does not take from a client: `error bad_request`, then close.
    let mut wire = common::raw_session(srv.addr, &cred).await;
    wire.send(&Message::DeleteOk(ferry::proto::message::DeleteOk {
        version: 1,
    }))
    .await
    .unwrap();
    match wire.recv_message().await.unwrap() {
        Message::Error(e) => assert_eq!(e.code, ErrorCode::BadRequest),
        other => panic!("{other:?}"),
    }
    let r = tokio::time::timeout(Duration::from_secs(5), wire.recv()).await;
    assert!(matches!(r, Ok(Err(_))), "{r:?}");
    srv.stop().await;
    assert_eq!(panics(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_at_the_end_is_empty_and_past_the_end_is_bad_request() {
    let srv = TestServer::start().await;
    let cred = srv.issue("ends", "writer");
    let mut c = Client::connect(&cred).await.unwrap();
    c.put_bytes("five", b"12345".to_vec()).await.unwrap();
    let mut wire = common::raw_session(srv.addr, &cred).await;
    let get = |offset| {
        Message::Get(Get {
            source: "five".into(),
            version: None,
            offset,
            len: None,
        })
    };
    // At the end: get_ok and no data frame; the connection goes on.
    wire.send(&get(5)).await.unwrap();
    match wire.recv_message().await.unwrap() {
        Message::GetOk(ok) => assert_eq!((ok.offset, ok.entry.size), (5, 5)),
        other => panic!("{other:?}"),
    }
    // Past the end: error bad_request, and the connection stays usable.
    wire.send(&get(6)).await.unwrap();
    match wire.recv_message().await.unwrap() {
        Message::Error(e) => assert_eq!(e.code, ErrorCode::BadRequest),
        other => panic!("{other:?}"),
    }
    wire.send(&get(3)).await.unwrap();
    assert!(matches!(
        wire.recv_message().await.unwrap(),
        Message::GetOk(_)
    ));
    match wire.recv().await.unwrap() {
        ferry::wire::Incoming::Data(d) => assert_eq!(d, b"45"),
        other => panic!("{other:?}"),
    }
    srv.stop().await;
    assert_eq!(panics(), 0);
}
