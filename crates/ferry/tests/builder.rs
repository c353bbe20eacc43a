//! `Client::builder()`: every way in through one builder, and no option silently ignored.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestServer;
use ferry::{Client, Error};

const PW: &[u8] = b"correct horse battery staple";

fn pin(srv: &TestServer) -> ferry::proto::server_id::ServerId {
    srv.server_dir.identity().unwrap().server_id()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_password_and_session_all_connect_through_the_builder() {
    let srv = TestServer::start().await;
    let cred = srv.issue("alice", "writer");
    let mut c = Client::builder().credential(&cred).connect().await.unwrap();
    c.put_bytes("b/one", b"1".to_vec()).await.unwrap();
    c.close().await.unwrap();

    let mut c = Client::builder()
        .credential(&cred)
        .pipelined(true)
        .connect()
        .await
        .unwrap();
    assert_eq!(c.get_bytes("b/one").await.unwrap(), b"1");
    assert_eq!(c.verified().await.unwrap().name, "alice");
    c.close().await.unwrap();

    let mut invite = srv.invite("carol", "writer", 3600);
    invite.server = srv.addr.to_string();
    Client::register(&invite, PW).await.unwrap();
    let addr = srv.addr.to_string();
    let (mut c, session) = Client::builder()
        .server(&addr, pin(&srv))
        .password("carol", PW)
        .connect_opening_session()
        .await
        .unwrap();
    assert_eq!(c.get_bytes("b/one").await.unwrap(), b"1");
    c.close().await.unwrap();
    let c = Client::builder()
        .server(&addr, pin(&srv))
        .session(session.id, &session.secret)
        .connect()
        .await
        .unwrap();
    assert_eq!(c.principal().unwrap().name, "carol");
    c.close().await.unwrap();
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_that_cannot_apply_are_refused_not_ignored() {
    let srv = TestServer::start().await;
    let cred = srv.issue("alice", "writer");
    let addr = srv.addr.to_string();
    let config_error = |r: Result<Client, Error>, what: &str| match r {
        Err(Error::Config(m)) => assert!(m.contains(what), "{m}"),
        other => panic!("expected a configuration error about {what}, got {other:?}"),
    };
    config_error(Client::builder().connect().await, "authenticate");
    config_error(
        Client::builder().password("carol", PW).connect().await,
        "address",
    );
    config_error(
        Client::builder()
            .server(&addr, pin(&srv))
            .password("carol", PW)
            .pipelined(true)
            .connect()
            .await,
        "pipelined",
    );
    let session_from_credential = Client::builder()
        .credential(&cred)
        .connect_opening_session()
        .await;
    assert!(
        matches!(session_from_credential, Err(Error::Config(ref m)) if m.contains("session")),
        "{session_from_credential:?}"
    );
    // `server` overrides the credential's own pin: another server ID is refused before
    // anything is sent.
    let other = ferry::proto::server_id::ServerId::from_bytes([7; 32]);
    let wrong = Client::builder()
        .credential(&cred)
        .server(&addr, other)
        .connect()
        .await;
    assert!(
        matches!(wrong, Err(Error::ServerIdMismatch(_))),
        "{wrong:?}"
    );
    srv.stop().await;
}
