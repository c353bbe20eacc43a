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
        http_url: None,
        http_seal: None,
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

/// One listing page, asked for by hand so the test sees its `next`.
async fn list_page(
    wire: &mut Wire<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    prefix: &str,
    after: Option<String>,
) -> Message {
    wire.send(&Message::List(ferry::proto::message::List {
        prefix: prefix.into(),
        after,
    }))
    .await
    .unwrap();
    wire.recv_message().await.unwrap()
}

/// Follows a listing to its end; returns the names seen and every `next` given.
async fn list_all(
    wire: &mut Wire<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    prefix: &str,
) -> (Vec<String>, Vec<String>) {
    let (mut names, mut nexts) = (Vec::new(), Vec::new());
    let mut after = None;
    for _ in 0..10_000 {
        let Message::ListOk(page) = list_page(wire, prefix, after.take()).await else {
            panic!("not a listing")
        };
        names.extend(page.entries.into_iter().map(|e| e.source));
        match page.next {
            Some(n) => {
                nexts.push(n.clone());
                after = Some(n);
            }
            None => return (names, nexts),
        }
    }
    panic!("the listing never ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_cursor_never_names_a_source_the_caller_may_not_list() {
    let srv = TestServer::start_with_config(|t| {
        t.replace(
            "[roles]\n",
            "[roles]\nouter = [{ ops = [\"list\", \"get\"], sources = [\"pub/**\"] }]\n",
        )
    })
    .await;
    // A full page of names the `outer` role may not list, then three it may.
    let mut admin = Client::connect(&srv.issue("boss", "admin")).await.unwrap();
    for i in 0..1000 {
        admin
            .put_bytes(&format!("hr/layoffs-{i:04}.xlsx"), vec![])
            .await
            .unwrap();
    }
    for name in ["pub/a", "pub/b", "pub/c"] {
        admin.put_bytes(name, b"x".to_vec()).await.unwrap();
    }
    let outer = srv.issue("outsider", "outer");
    let mut wire = common::raw_session(srv.addr, &outer).await;
    let (names, nexts) = list_all(&mut wire, "").await;
    assert_eq!(names, ["pub/a", "pub/b", "pub/c"]);
    assert!(
        nexts.iter().all(|n| !n.starts_with("hr/")),
        "a cursor named a hidden source: {nexts:?}"
    );
    srv.stop().await;

    // With a scan budget smaller than the hidden run, the pages come back empty with a sealed
    // cursor that names nothing, and the listing still reaches every visible name.
    let srv = TestServer::start_full(
        |t| {
            t.replace(
                "[roles]\n",
                "[roles]\nouter = [{ ops = [\"list\"], sources = [\"pub/**\"] }]\n",
            )
        },
        |l| l.list_scan = 7,
    )
    .await;
    let mut admin = Client::connect(&srv.issue("boss", "admin")).await.unwrap();
    for i in 0..20 {
        admin
            .put_bytes(&format!("hr/secret-{i:02}"), vec![])
            .await
            .unwrap();
    }
    admin.put_bytes("pub/z", b"z".to_vec()).await.unwrap();
    let outer = srv.issue("outsider", "outer");
    let mut wire = common::raw_session(srv.addr, &outer).await;
    let (names, nexts) = list_all(&mut wire, "").await;
    assert_eq!(names, ["pub/z"]);
    assert!(
        nexts.iter().filter(|n| n.starts_with('~')).count() >= 2,
        "{nexts:?}"
    );
    for n in &nexts {
        // A sealed cursor, or a name the caller may list.
        assert!(n.starts_with('~') || n.starts_with("pub/"), "{n}");
        assert!(!n.contains("hr/") && !n.contains("secret"), "{n}");
    }
    // An admin's listing hands back plain names (it may list them all).
    let mut admin_wire = common::raw_session(srv.addr, &srv.issue("boss2", "admin")).await;
    let (all, admin_nexts) = list_all(&mut admin_wire, "").await;
    assert_eq!(all.len(), 21);
    assert!(
        admin_nexts.iter().all(|n| !n.starts_with('~')),
        "{admin_nexts:?}"
    );
    // `after` is validated: not a name, a forged cursor, or a cursor sealed for someone else
    // or another prefix are refused, and the connection stays usable.
    for bad in [
        "../etc".to_owned(),
        "~AAAA".to_owned(),
        "a//b".to_owned(),
        format!("{}x", nexts[0]),
    ] {
        match list_page(&mut wire, "", Some(bad.clone())).await {
            Message::Error(e) => assert_eq!(
                e.code,
                ferry::proto::message::ErrorCode::BadRequest,
                "{bad}"
            ),
            other => panic!("{bad}: {other:?}"),
        }
    }
    let mut other_wire = common::raw_session(srv.addr, &srv.issue("outsider2", "outer")).await;
    for (prefix, w) in [("", &mut other_wire), ("p", &mut wire)] {
        match list_page(w, prefix, Some(nexts[0].clone())).await {
            Message::Error(e) => {
                assert_eq!(e.code, ferry::proto::message::ErrorCode::BadRequest)
            }
            other => panic!("{other:?}"),
        }
    }
    srv.stop().await;
    assert_eq!(panics(), 0);
}
