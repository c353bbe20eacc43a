//! What a member sends is checked, not trusted: a `mesh_list` from a member (here a fake one,
//! over real loopback TLS, that holds the mesh key) whose entries name invalid sources or
//! absurd versions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use ferry::identity::Identity;
use ferry::mesh::device::DeviceKey;
use ferry::mesh::peer;
use ferry::proto::auth::{MeshDirectory, ServerAuth, ServerContext, ServerStep};
use ferry::proto::claims::Claims;
use ferry::proto::mesh::state::{Member, MeshState};
use ferry::proto::mesh::wire::{MAX_VERSION, MeshEntry, MeshListOk};
use ferry::proto::message::Message;
use ferry::proto::secret::{MasterKey, MeshKey};
use ferry::proto::server_id::ServerId;

const KEY: [u8; 32] = [7; 32];

/// The fake member's view: it accepts any device holding the key.
struct Anyone(ServerId);

impl MeshDirectory for Anyone {
    fn me(&self) -> ServerId {
        self.0
    }
    fn member_spki(&self, _: &ServerId) -> Option<Vec<u8>> {
        Some(Vec::new())
    }
    fn key_for(&self, epoch: u64) -> Option<MeshKey> {
        (epoch == 1).then(|| MeshKey::from_bytes(KEY))
    }
    fn epoch(&self) -> u64 {
        1
    }
    fn verify_signature(&self, _: &[u8], _: &[u8], _: &[u8]) -> bool {
        true
    }
}

/// The fake member's server context: its mesh, and no other method.
struct FakeMember(Anyone, MasterKey);

impl ServerContext for FakeMember {
    fn master_key(&self) -> &MasterKey {
        &self.1
    }
    fn claims_current(&self, _: &Claims) -> bool {
        false
    }
    fn mesh(&self) -> Option<&dyn MeshDirectory> {
        Some(&self.0)
    }
}

fn entry(source: &str, version: u64) -> MeshEntry {
    MeshEntry {
        source: source.into(),
        version,
        hash: [1; 32],
        deleted: false,
    }
}

/// A member that authenticates one connection and answers its `mesh_list` requests with
/// `pages` in order. Returns its address, its device ID and the `after` of each request.
async fn fake_member(
    pages: Vec<MeshListOk>,
) -> (String, ServerId, Arc<Mutex<Vec<Option<String>>>>) {
    let identity = Identity::generate().unwrap();
    let id = identity.server_id();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(identity.server_config().unwrap()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let record = asked.clone();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = acceptor.accept(tcp).await.unwrap();
        let exporter = ferry::tls::export(tls.get_ref().1).unwrap();
        let mut wire = ferry::wire::Wire::new(tls);
        let first = wire.recv_message().await.unwrap();
        assert!(matches!(first, Message::MeshAuth(_)), "expected mesh_auth");
        let ctx = FakeMember(Anyone(id), MasterKey::from_bytes([0; 32]));
        let step = ServerAuth::new(exporter).handle(first, &ctx, &mut rand_core::OsRng, 0);
        let ServerStep::Accept { reply, .. } = step else {
            panic!("the fake member refused: {step:?}");
        };
        wire.send(&reply).await.unwrap();
        for page in pages {
            let Ok(Message::MeshList(l)) = wire.recv_message().await else {
                return;
            };
            record.lock().unwrap().push(l.after);
            wire.send(&Message::MeshListOk(page)).await.unwrap();
        }
    });
    (addr, id, asked)
}

#[tokio::test]
async fn a_mesh_list_with_invalid_names_or_absurd_versions_keeps_only_valid_entries() {
    let pages = vec![
        MeshListOk {
            entries: vec![entry("docs/a", 1), entry("../etc/passwd", 1)],
            more: true,
        },
        MeshListOk {
            entries: vec![
                entry("docs/b", u64::MAX),
                entry("docs/c", MAX_VERSION + 1),
                entry("docs/d", 0),
                entry("x\u{1b}[2Jy", 2),
                entry("docs/e", 2),
            ],
            more: false,
        },
    ];
    let (addr, id, asked) = fake_member(pages).await;
    let device = DeviceKey::from_identity(&Identity::generate().unwrap()).unwrap();
    let me = Member {
        spki: device.spki().to_vec(),
        name: "b".into(),
        addr: String::new(),
    };
    let state = MeshState::create("home", me, MeshKey::from_bytes(KEY));
    let mut c = peer::connect_member(&addr, id, &device, &state, 1)
        .await
        .unwrap();
    let listed = c.mesh_list().await.unwrap();
    let names: Vec<&str> = listed.iter().map(|e| e.source.as_str()).collect();
    assert_eq!(names, ["docs/a", "docs/e"]);
    // The next page starts after the last name the member listed, valid or not (so a member
    // cannot make the lister ask for the same page again and again).
    assert_eq!(
        *asked.lock().unwrap(),
        [None, Some("../etc/passwd".to_owned())]
    );
}
