//! A pipelined connection sends its first request right behind its credential proof
//! (PROTOCOL.md §4). These tests show that this saves the round trip and gives nothing away:
//! a server never serves a request whose proof failed, and a client never sends data or
//! believes an answer before the server has proved itself.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestServer, panics};
use ferry::identity::Identity;
use ferry::proto::claims::Claims;
use ferry::proto::credential::Credential;
use ferry::proto::message::{AuthOk, Entry, GetOk, Message, PrincipalInfo, PutReady};
use ferry::wire::{Incoming, Wire};
use ferry::{Client, Error};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_client_works_like_an_eager_one() {
    let srv = TestServer::start().await;
    let cred = srv.issue("w", "writer");
    let mut c = Client::connect_pipelined(&cred).await.unwrap();
    // Nothing has been read from the server yet.
    assert!(c.principal().is_none());
    let e = c.put_bytes("doc", b"one".to_vec()).await.unwrap();
    assert_eq!(e.version, 1);
    assert_eq!(c.principal().unwrap().role(), Some("writer"));
    assert_eq!(c.get_bytes("doc").await.unwrap(), b"one");
    assert_eq!(c.list("").await.unwrap().len(), 1);
    c.close().await.unwrap();

    // Every kind of first request works pipelined.
    let mut c = Client::connect_pipelined(&cred).await.unwrap();
    assert_eq!(c.get_bytes("doc").await.unwrap(), b"one");
    let mut c = Client::connect_pipelined(&cred).await.unwrap();
    assert_eq!(c.stat("doc").await.unwrap().size, 3);
    let mut c = Client::connect_pipelined(&cred).await.unwrap();
    assert_eq!(c.list("d").await.unwrap().len(), 1);
    let mut c = Client::connect_pipelined(&cred).await.unwrap();
    assert!(matches!(c.stat("none").await, Err(Error::NotFound(_))));
    // The connection stays usable after an error answer.
    assert_eq!(c.delete("doc").await.unwrap(), 2);
    // Checking the proof without any request works too.
    let mut c = Client::connect_pipelined(&cred).await.unwrap();
    assert_eq!(c.verified().await.unwrap().name, "w");
    srv.stop().await;
    assert_eq!(panics(), 0);
}

/// Credentials that must fail: an edited role, a wrong key, an unknown name.
fn bad_credentials(good: &Credential) -> Vec<(&'static str, Credential)> {
    let forged = Credential::parse(
        &good
            .to_toml()
            .replace("role = \"writer\"", "role = \"admin\""),
    )
    .unwrap();
    let mut wrong_key = good.clone();
    wrong_key.key = ferry::proto::secret::Psk::from_bytes([1; 32]);
    let mut other_name = good.clone();
    other_name.claims = Claims::new("ghost", 1, [("role", "writer")]).unwrap();
    vec![
        ("edited role", forged),
        ("wrong key", wrong_key),
        ("unknown name", other_name),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_behind_a_failed_proof_is_never_served() {
    let srv = TestServer::start().await;
    let writer = srv.issue("w", "writer");
    let mut w = Client::connect(&writer).await.unwrap();
    w.put_bytes("doc", b"original".to_vec()).await.unwrap();

    for (what, bad) in bad_credentials(&writer) {
        let mut c = Client::connect_pipelined(&bad).await.unwrap();
        let r = c.delete("doc").await;
        assert!(matches!(r, Err(Error::AuthFailed)), "{what}: {r:?}");
        let mut c = Client::connect_pipelined(&bad).await.unwrap();
        let r = c.put_bytes("doc", b"evil".to_vec()).await;
        assert!(matches!(r, Err(Error::AuthFailed)), "{what}: {r:?}");
        let mut c = Client::connect_pipelined(&bad).await.unwrap();
        let r = c.get_bytes("doc").await;
        assert!(matches!(r, Err(Error::AuthFailed)), "{what}: {r:?}");
    }
    // A client tricked into pinning a relaying MITM: its proof fails upstream, and the
    // request that rode behind it is not served either.
    let mitm = common::start_mitm(srv.addr.to_string(), writer.server_id).await;
    let mut c = Client::connect_pipelined_to(&mitm.addr, mitm.identity_id, &writer)
        .await
        .unwrap();
    let r = c.delete("doc").await;
    assert!(matches!(r, Err(Error::AuthFailed)), "relay: {r:?}");
    // The server refused the relayed proof (seen on the relayed wire) and never answered the
    // request behind it.
    mitm.assert_server_refused(&["auth_ok", "delete_ok"]).await;

    // Nothing changed, and the server still serves honest clients.
    let e = w.stat("doc").await.unwrap();
    assert_eq!((e.version, e.size), (1, 8));
    assert_eq!(w.get_bytes("doc").await.unwrap(), b"original");
    srv.stop().await;
    assert_eq!(panics(), 0);
}

/// What a fake server (holding the key the client pins, but not the credential's master
/// key) received, and how long it waited for the request before answering.
struct Seen {
    first: Message,
    request: Message,
    /// Frames (messages or data) that arrived after the fake's answer.
    frames_after: usize,
}

/// Accepts one connection, reads the proof and the request behind it *before answering
/// anything* (which only a pipelining client makes possible), then answers with a forged
/// `auth_ok` followed by `answer` (and `data`, if any), and records what arrives next.
async fn fake_server(answer: Message, data: Option<Vec<u8>>) -> (String, Identity, FakeHandle) {
    let identity = Identity::generate().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(identity.server_config().unwrap()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = acceptor.accept(tcp).await.unwrap();
        let mut wire = Wire::new(tls);
        let limit = Duration::from_secs(10);
        let first = tokio::time::timeout(limit, wire.recv_message())
            .await
            .expect("no proof")
            .unwrap();
        let request = tokio::time::timeout(limit, wire.recv_message())
            .await
            .expect("the request did not come with the proof")
            .unwrap();
        let forged = Message::AuthOk(AuthOk {
            method: "psk".into(),
            proof: vec![0x55; 32],
            principal: PrincipalInfo {
                name: "w".into(),
                attributes: [("role".to_owned(), "admin".to_owned())].into(),
            },
            session: None,
        });
        wire.queue(&forged).await.unwrap();
        wire.queue(&answer).await.unwrap();
        if let Some(d) = data {
            let mut chunk = ferry::wire::Chunk::with_capacity(d.len());
            chunk.fill_from(&mut d.as_slice()).unwrap();
            wire.send_chunk(&mut chunk).await.unwrap();
        }
        wire.flush().await.unwrap();
        let mut frames_after = 0;
        while let Ok(Ok(frame)) = tokio::time::timeout(limit, wire.recv()).await {
            if let Incoming::Message(m) = frame {
                eprintln!("fake server got {}", m.type_name());
            }
            frames_after += 1;
        }
        Seen {
            first,
            request,
            frames_after,
        }
    });
    (addr, identity, task)
}

type FakeHandle = tokio::task::JoinHandle<Seen>;

fn entry(data: &[u8]) -> Entry {
    Entry {
        source: "doc".into(),
        version: 1,
        size: data.len() as u64,
        hash: *blake3::hash(data).as_bytes(),
        modified: 0,
        by: "w".into(),
        mtime: None,
        executable: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_client_sends_no_data_and_believes_no_answer_before_the_proof() {
    let srv = TestServer::start().await;
    let cred = srv.issue("w", "writer");

    // A put: the fake says "ready" right behind its forged proof. The client must fail on
    // the proof and send no byte of the content.
    let (addr, identity, fake) = fake_server(
        Message::PutReady(PutReady {
            offset: 0,
            need: None,
        }),
        None,
    )
    .await;
    let mut c = Client::connect_pipelined_to(&addr, identity.server_id(), &cred)
        .await
        .unwrap();
    let r = c.put_bytes("doc", vec![7; 4096]).await;
    assert!(matches!(r, Err(Error::AuthFailed)), "{r:?}");
    drop(c);
    let seen = fake.await.unwrap();
    assert!(
        matches!(seen.first, Message::PskAuth(_)),
        "{:?}",
        seen.first
    );
    assert!(
        matches!(seen.request, Message::Put(_)),
        "{:?}",
        seen.request
    );
    assert_eq!(
        seen.frames_after, 0,
        "content left before the proof was checked"
    );

    // A get: a well-formed answer with matching data behind the forged proof must not be
    // returned as the content.
    let fake_content = b"fake content".to_vec();
    let ok = Message::GetOk(GetOk {
        entry: entry(&fake_content),
        offset: 0,
    });
    let (addr, identity, fake) = fake_server(ok, Some(fake_content)).await;
    let mut c = Client::connect_pipelined_to(&addr, identity.server_id(), &cred)
        .await
        .unwrap();
    let r = c.get_bytes("doc").await;
    assert!(matches!(r, Err(Error::AuthFailed)), "{r:?}");
    // Nor does a second request go out on that connection.
    assert!(matches!(c.stat("doc").await, Err(Error::AuthFailed)));
    drop(c);
    let seen = fake.await.unwrap();
    assert!(
        matches!(seen.request, Message::Get(_)),
        "{:?}",
        seen.request
    );
    assert_eq!(
        seen.frames_after, 0,
        "a second request left after the proof failed"
    );
    srv.stop().await;
}
