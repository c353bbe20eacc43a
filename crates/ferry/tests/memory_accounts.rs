//! A server whose account data lives in the in-memory backend
//! (`Server::builder(dir).accounts(..)`): clients, users, invites, sessions and failed logins
//! are read and written through the `Accounts` trait only, never the folder's files. Every
//! way in (credential, invite registration, password login, session resumption) and every
//! later check (revocation, a password change ending old sessions, the login limit) is
//! decided by what the backend holds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use ferry::backend::Accounts;
use ferry::backend::{MemoryBackend, Retention};
use ferry::proto::auth::INVITE_EXPIRES;
use ferry::proto::claims::Claims;
use ferry::proto::credential::Credential;
use ferry::proto::psk;
use ferry::proto::secret::Psk;
use ferry::{Client, Server, ServerDir};

fn role(r: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("role".to_owned(), r.to_owned())])
}

/// A credential for the client record the backend holds (what `ferry client issue` writes
/// for a folder).
async fn issue(dir: &ServerDir, accounts: &MemoryBackend, name: &str, addr: &str) -> Credential {
    let record = accounts
        .issue_client(name, role("writer"), ferry::clock::now())
        .await
        .unwrap();
    let claims = Claims::new(name, record.epoch, record.attributes).unwrap();
    Credential {
        server: addr.to_owned(),
        server_id: dir.identity().unwrap().server_id(),
        key: psk::derive_psk(&dir.master_key().unwrap(), &claims),
        http_url: None,
        http_seal: None,
        claims,
    }
}

/// An invite for the invite record the backend holds.
async fn invite(dir: &ServerDir, accounts: &MemoryBackend, name: &str, addr: &str) -> Credential {
    let expires = ferry::clock::now() + 600;
    let entry = accounts
        .create_invite(name, role("reader"), expires)
        .await
        .unwrap();
    let mut attrs = role("reader");
    attrs.insert(INVITE_EXPIRES.to_owned(), expires.to_string());
    let claims = Claims::new(name, entry.serial, attrs).unwrap();
    let key = psk::derive_invite_key(&dir.master_key().unwrap(), &claims);
    Credential {
        server: addr.to_owned(),
        server_id: dir.identity().unwrap().server_id(),
        key: Psk::from_bytes(*key.expose_secret()),
        http_url: None,
        http_seal: None,
        claims,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_in_is_decided_by_the_accounts_backend() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ServerDir::new(tmp.path().join("srv"));
    dir.init().unwrap();
    std::fs::write(
        dir.file("ferry.toml"),
        std::fs::read_to_string(dir.file("ferry.toml"))
            .unwrap()
            .replace("max_failures = 5", "max_failures = 2"),
    )
    .unwrap();
    let memory = MemoryBackend::new(Retention::default());
    let bound = Server::builder(&dir)
        .backend(memory.clone())
        .accounts(memory.clone())
        .build()
        .unwrap()
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = bound.local_addr().to_string();
    let pin = dir.identity().unwrap().server_id();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(bound.run(async {
        let _ = stop_rx.await;
    }));

    // A credential the backend knows works; one issued in the folder's files does not.
    let cred = issue(&dir, &memory, "w", &addr).await;
    let mut c = Client::connect(&cred).await.unwrap();
    c.put_bytes("a/x", b"one".to_vec()).await.unwrap();
    let from_files = dir
        .issue_client("f", role("writer"), Some(&addr), 0)
        .unwrap();
    assert!(Client::connect(&from_files).await.is_err());

    // Revoked in the backend: the open connection's next request and new connections fail.
    assert!(memory.revoke_client("w").await.unwrap());
    assert!(c.get_bytes("a/x").await.is_err());
    assert!(Client::connect(&cred).await.is_err());

    // An invite the backend holds registers a user in the backend and is spent there.
    let inv = invite(&dir, &memory, "alice", &addr).await;
    Client::register(&inv, b"correct horse battery")
        .await
        .unwrap();
    let alice = memory.user("alice").await.unwrap().expect("registered");
    assert!(memory.invite("alice").await.unwrap().unwrap().spent);
    assert!(Client::register(&inv, b"another password").await.is_err());

    // A password login opens a session the backend stores; it resumes from the backend.
    let (mut u, session) = Client::login(&addr, pin, "alice", b"correct horse battery", true)
        .await
        .unwrap();
    let session = session.expect("a session");
    let id = ferry::accounts::session_id_text(&session.id);
    assert!(memory.session(&id).await.unwrap().is_some());
    assert_eq!(u.get_bytes("a/x").await.unwrap(), b"one");
    let mut resumed = Client::resume(&addr, pin, session.id, &session.secret)
        .await
        .unwrap();
    assert_eq!(resumed.get_bytes("a/x").await.unwrap(), b"one");

    // A password change replaces the record in the backend, which ends the old session and
    // every connection of the old password.
    u.change_password(b"correct horse battery", b"a brand new password")
        .await
        .unwrap();
    let changed = memory.user("alice").await.unwrap().unwrap();
    assert!(changed.generation > alice.generation);
    assert!(memory.session(&id).await.unwrap().is_none());
    assert!(resumed.get_bytes("a/x").await.is_err());
    assert!(
        Client::resume(&addr, pin, session.id, &session.secret)
            .await
            .is_err()
    );

    // Failed logins are counted in the backend: two wrong passwords lock the account, and
    // then even the right one fails.
    for _ in 0..2 {
        assert!(
            Client::login(&addr, pin, "alice", b"wrong password", false)
                .await
                .is_err()
        );
    }
    let state = memory.login_state("account:alice").await.unwrap();
    assert_eq!(state.failures, 2);
    assert!(!state.unlocked(ferry::clock::now()));
    assert!(
        Client::login(&addr, pin, "alice", b"a brand new password", false)
            .await
            .is_err()
    );
    // Unlocked in the backend (the account and the address it came from), the right
    // password works again.
    memory.login_succeeded("account:alice").await.unwrap();
    memory.login_succeeded("address:127.0.0.1").await.unwrap();
    Client::login(&addr, pin, "alice", b"a brand new password", false)
        .await
        .unwrap();

    // Nothing of it reached the folder's account files.
    for file in ["users.toml", "invites.toml", "sessions.toml"] {
        assert!(!dir.file(file).exists(), "{file}");
    }

    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}
