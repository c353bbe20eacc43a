//! Every attack the design claims to stop, tried for real over loopback TLS.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::Ordering;

use common::{TestServer, panics};
use ferry::identity::Identity;
use ferry::proto::claims::Claims;
use ferry::proto::credential::Credential;
use ferry::proto::message::Message;
use ferry::proto::psk::PskClient;
use ferry::wire::Wire;
use ferry::{Client, Error};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_cannot_put_or_delete() {
    let srv = TestServer::start().await;
    let mut w = Client::connect(&srv.issue("w", "writer")).await.unwrap();
    w.put_bytes("doc", b"original".to_vec()).await.unwrap();
    let mut r = Client::connect(&srv.issue("r", "reader")).await.unwrap();
    match r.put_bytes("doc", b"evil".to_vec()).await {
        Err(Error::Forbidden(m)) => assert!(m.contains("reader") && m.contains("put"), "{m}"),
        other => panic!("reader put: {other:?}"),
    }
    assert!(matches!(r.delete("doc").await, Err(Error::Forbidden(_))));
    // The connection is still usable, and nothing changed.
    assert_eq!(r.get_bytes("doc").await.unwrap(), b"original");
    assert_eq!(r.stat("doc").await.unwrap().version, 1);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_with_an_edited_role_fails_authentication() {
    let srv = TestServer::start().await;
    let reader = srv.issue("r", "reader");
    let text = reader.to_toml();
    assert!(text.contains("role = \"reader\""));
    let forged =
        Credential::parse(&text.replace("role = \"reader\"", "role = \"writer\"")).unwrap();
    assert_eq!(forged.claims.role(), "writer");
    assert!(matches!(
        Client::connect(&forged).await,
        Err(Error::AuthFailed)
    ));
    // Likewise an edited name or epoch, or a wrong key.
    let mut other = reader.clone();
    other.claims = Claims::new("w", 1, [("role", "reader")]).unwrap();
    assert!(matches!(
        Client::connect(&other).await,
        Err(Error::AuthFailed)
    ));
    let mut wrong_key = reader.clone();
    wrong_key.key = ferry::proto::secret::Psk::from_bytes([1; 32]);
    assert!(matches!(
        Client::connect(&wrong_key).await,
        Err(Error::AuthFailed)
    ));
    assert!(Client::connect(&reader).await.is_ok());
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_and_rotation_take_effect_on_a_running_server() {
    let srv = TestServer::start().await;
    let cred = srv.issue("c", "writer");
    let mut open = Client::connect(&cred).await.unwrap();
    open.put_bytes("x", b"1".to_vec()).await.unwrap();

    assert!(srv.server_dir.revoke_client("c").unwrap());
    // New connections fail at once, and so does the next request on an open one.
    assert!(matches!(
        Client::connect(&cred).await,
        Err(Error::AuthFailed)
    ));
    assert!(matches!(open.stat("x").await, Err(Error::AuthFailed)));

    // Re-issuing gives epoch 2; the epoch-1 credential stays dead, the new one works.
    let new = srv.issue("c", "writer");
    assert_eq!(new.claims.epoch(), 2);
    assert!(matches!(
        Client::connect(&cred).await,
        Err(Error::AuthFailed)
    ));
    let mut c = Client::connect(&new).await.unwrap();
    assert_eq!(c.get_bytes("x").await.unwrap(), b"1");

    // Rotation without revocation: re-issue again, the epoch-2 session ends.
    let newer = srv.issue("c", "reader");
    assert!(matches!(c.stat("x").await, Err(Error::AuthFailed)));
    assert!(matches!(
        Client::connect(&new).await,
        Err(Error::AuthFailed)
    ));
    assert_eq!(
        Client::connect(&newer)
            .await
            .unwrap()
            .principal()
            .unwrap()
            .role(),
        Some("reader")
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_for_unknown_name_fails() {
    let srv = TestServer::start().await;
    // Derived correctly from the master key, but never issued.
    let master = srv.server_dir.master_key().unwrap();
    let claims = Claims::new("ghost", 1, [("role", "admin")]).unwrap();
    let ghost = Credential {
        server: srv.addr.to_string(),
        server_id: srv.server_dir.identity().unwrap().server_id(),
        key: ferry::proto::psk::derive_psk(&master, &claims),
        claims,
    };
    assert!(matches!(
        Client::connect(&ghost).await,
        Err(Error::AuthFailed)
    ));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_pinned_to_another_server_fails_before_any_data() {
    let srv = TestServer::start().await;
    let mut cred = srv.issue("c", "writer");
    cred.server_id = Identity::generate().unwrap().server_id();
    match Client::connect(&cred).await {
        Err(Error::ServerIdMismatch(addr)) => assert_eq!(addr, srv.addr.to_string()),
        other => panic!("expected a pin mismatch, got {other:?}"),
    }
    // The failure is inside the TLS handshake: connect_tls, which sends no application
    // data at all, already fails.
    assert!(matches!(
        Client::connect_tls(&srv.addr.to_string(), cred.server_id).await,
        Err(Error::ServerIdMismatch(_))
    ));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_captured_on_one_connection_fails_on_another() {
    let srv = TestServer::start().await;
    let cred = srv.issue("c", "writer");
    let addr = srv.addr.to_string();

    // Connection 1: make the genuine proof, as an eavesdropper inside TLS would see it.
    let tls1 = Client::connect_tls(&addr, cred.server_id).await.unwrap();
    let e1 = ferry::tls::export(tls1.get_ref().1).unwrap();
    let (captured, _) = PskClient::new(cred.claims.clone(), cred.key.clone()).start(&e1);

    // Connection 2: replay it byte for byte.
    let tls2 = Client::connect_tls(&addr, cred.server_id).await.unwrap();
    let e2 = ferry::tls::export(tls2.get_ref().1).unwrap();
    assert_ne!(e1, e2, "exporters of two connections must differ");
    let mut wire = Wire::new(tls2);
    wire.send(&captured).await.unwrap();
    assert!(matches!(
        wire.recv_message().await.unwrap(),
        Message::AuthFailed(_)
    ));
    // And the server closed the connection after refusing.
    assert!(wire.recv().await.is_err());

    // The same proof is still good on its own connection.
    let mut wire1 = Wire::new(tls1);
    wire1.send(&captured).await.unwrap();
    assert!(matches!(
        wire1.recv_message().await.unwrap(),
        Message::AuthOk(_)
    ));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relaying_man_in_the_middle_cannot_authenticate() {
    let srv = TestServer::start().await;
    let cred = srv.issue("c", "writer");
    let mitm = common::start_mitm(srv.addr.to_string(), cred.server_id).await;

    // A client that pins the real server refuses the MITM's TLS outright.
    assert!(matches!(
        Client::connect_to(&mitm.addr, cred.server_id, &cred).await,
        Err(Error::ServerIdMismatch(_))
    ));

    // Even a client tricked into pinning the MITM's key cannot be relayed: its proof is
    // bound to the client↔MITM exporter, the server checks it against MITM↔server.
    let result = Client::connect_to(&mitm.addr, mitm.identity_id, &cred).await;
    assert!(matches!(result, Err(Error::AuthFailed)), "{result:?}");
    assert!(
        common::eventually(std::time::Duration::from_secs(5), || mitm
            .relayed
            .load(Ordering::SeqCst)
            > 0)
        .await,
        "the relay never carried the proof, so the test proved nothing"
    );
    // The server's own decision, read off the relayed wire: it refused the proof. (The
    // client's `AuthFailed` alone proves nothing: a relayed client fails its own check of the
    // server's proof even when the server accepts.)
    mitm.assert_server_refused(&["auth_ok"]).await;

    // The server still serves honest clients.
    assert!(Client::connect(&cred).await.is_ok());
    srv.stop().await;
    assert_eq!(panics(), 0);
}
