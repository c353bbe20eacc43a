//! `{:?}` of every config, credential and state type shows no key bytes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestServer;
use ferry::Client;
use ferry::proto::auth::ServerAuth;
use ferry::proto::credential::Credential;
use ferry::proto::message::Message;
use ferry::proto::psk::PskClient;
use ferry::proto::secret::{Exporter, MasterKey, Psk};

/// Every way 32 bytes could show up in a Debug string.
fn leaks(text: &str, key: &[u8; 32]) -> bool {
    let hex = data_encoding::HEXLOWER.encode(key);
    let upper = data_encoding::HEXUPPER.encode(key);
    let dec = format!("{key:?}"); // "[171, 171, ...]"
    let list = dec.trim_start_matches('[').trim_end_matches(']');
    let b64 = data_encoding::BASE64.encode(key);
    text.contains(&hex[..16])
        || text.contains(&upper[..16])
        || text.contains(&list[..list.len().min(40)])
        || text.contains(&b64[..16])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_debug_output_shows_key_bytes() {
    let srv = TestServer::start().await;
    let cred = srv.issue("alice", "writer");
    let key = *cred.key.expose_secret();
    let master = srv.server_dir.master_key().unwrap();
    let master_bytes = *master.expose_secret();
    let exporter_bytes = [0x5a; 32];
    let exporter = Exporter::from_bytes(exporter_bytes);
    let (hello, wait) = PskClient::new(cred.claims.clone(), cred.key.clone()).start(&exporter);
    let Message::PskAuth(auth) = &hello else {
        panic!()
    };
    let mac = auth.mac;

    let client = Client::connect(&cred).await.unwrap();
    // A server-side session entry, as `sessions.toml` holds it and every snapshot clones it.
    let session_bytes = [0x3c; 32];
    let mut sessions = ferry::accounts::Sessions::default();
    sessions.insert(
        "00".repeat(16),
        ferry::accounts::SessionEntry {
            name: "alice".into(),
            attributes: Default::default(),
            origin: "psk:1".into(),
            secret: ferry::proto::secret::SessionSecret::from_bytes(session_bytes),
            created: 1,
            last_used: 1,
            idle_secs: 60,
            expires: 99,
        },
    );
    let session_text = sessions.to_toml().unwrap();
    let reread = ferry::accounts::Sessions::parse(&session_text).unwrap();
    let reparsed = Credential::parse(&cred.to_toml()).unwrap();
    let texts = [
        format!("{cred:?}"),
        format!("{reparsed:?}"),
        format!("{master:?}"),
        format!("{:?}", Psk::from_bytes(key)),
        format!("{:?}", MasterKey::from_bytes(master_bytes)),
        format!("{exporter:?}"),
        format!("{hello:?}"),
        format!("{wait:?}"),
        format!(
            "{:?}",
            PskClient::new(cred.claims.clone(), cred.key.clone())
        ),
        format!("{:?}", ServerAuth::new(exporter.clone())),
        format!("{client:?}"),
        format!("{:?}", srv.server_dir.identity().unwrap()),
        format!("{:?}", srv.server_dir.config().unwrap()),
        format!("{:?}", srv.server_dir.registry().unwrap()),
        format!(
            "{:?}",
            ferry::Server::open(&srv.server_dir).map(|_| ()).err()
        ),
        format!("{:?}", srv.server_dir),
        format!("{sessions:?}"),
        format!("{reread:?}"),
        format!("{:?}", reread.sessions.values().next().unwrap()),
        format!("{:?}", reread.sessions.values().next().unwrap().secret),
    ];
    for t in &texts {
        for (what, k) in [
            ("psk", &key),
            ("master", &master_bytes),
            ("exporter", &exporter_bytes),
            ("mac", &mac),
            ("session secret", &session_bytes),
        ] {
            assert!(!leaks(t, k), "{what} bytes in {t}");
        }
    }
    // The identity's private key never shows either.
    let pem = std::fs::read_to_string(srv.server_dir.path().join("identity.key")).unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    for t in &texts {
        assert!(!t.contains(&body[20..40]));
    }
    // The file itself holds the secret (that is its job), so the check can see it there.
    assert!(leaks(&session_text, &session_bytes));
    // The check itself can fail: a derived Debug of the raw bytes would be caught.
    assert!(leaks(&format!("{key:?}"), &key));
    assert!(leaks(&data_encoding::HEXLOWER.encode(&key), &key));
    drop(client);
    srv.stop().await;
}
