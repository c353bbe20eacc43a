//! Mesh member authentication (`mesh`), both ends: members authenticating to each other after
//! they joined.
//!
//! ```text
//! member → member   mesh_auth { device, epoch, mac: member_mac(K, epoch, device, 'c', exporter),
//!                               signature: Ed25519(device key, device_proof("auth", exporter)) }
//! member ← member   auth_ok   { method: "mesh", proof: member_mac(K, epoch, server device, 's', exporter) }
//! ```
//!
//! The MAC shows the peer holds the mesh key of `epoch`; the signature shows it holds the TLS
//! key of `device`, so even a member that knows the mesh key cannot act as another device, and
//! a removed device is refused by its ID alone. Both cover the exporter (RFC 9266 style channel
//! binding), so neither can be replayed on, or relayed to, another connection. The accepting
//! member's own identity is its TLS certificate, which the connecting member pinned.
//!
//! The key schedule and the MAC are in [`crate::mesh::key`], the signed message in
//! [`crate::mesh::join::device_proof`]. The accepting side asks its [`ServerContext::mesh`]
//! for the mesh's members and keys; a server in no mesh refuses like any other failure.

use std::collections::BTreeMap;

use crate::mesh::join::device_proof;
use crate::mesh::key::{Side, mac_eq, member_mac};
use crate::mesh::wire::MeshAuth;
use crate::message::{AuthOk, Digest, Message};
use crate::secret::{Exporter, MeshKey};
use crate::server_id::ServerId;

use super::{
    AuthError, Authenticated, ClientAuth, ClientStep, Method, Principal, RejectReason,
    ServerContext, ServerStep, principal_from, reject,
};

/// The role every authenticated member has.
pub const MESH_ROLE: &str = "mesh";

/// What the accepting member needs to check a `mesh_auth` ([`ServerContext::mesh`]).
pub trait MeshDirectory {
    /// This member's device ID.
    fn me(&self) -> ServerId;
    /// The SPKI of a current member (`None` for unknown and removed devices).
    fn member_spki(&self, device: &ServerId) -> Option<Vec<u8>>;
    /// The key of `epoch`, if it is the current epoch or the one before it (kept so that a
    /// member that missed a rotation can still fetch the new key).
    fn key_for(&self, epoch: u64) -> Option<MeshKey>;
    /// The current epoch.
    fn epoch(&self) -> u64;
    /// Whether `signature` is a valid Ed25519 signature of `message` by the key in `spki`.
    fn verify_signature(&self, spki: &[u8], message: &[u8], signature: &[u8]) -> bool;
}

/// The principal name a member gets: `mesh:` and its device ID.
pub fn principal_name(device: &ServerId) -> String {
    format!("mesh:{device}")
}

/// The server's answer to `mesh_auth`.
pub(super) fn start(exporter: Exporter, m: MeshAuth, ctx: &dyn ServerContext) -> ServerStep {
    let Some(dir) = ctx.mesh() else {
        return reject(RejectReason::NoMesh);
    };
    let device = ServerId::from_bytes(m.device);
    let spki = dir.member_spki(&device);
    let key = dir.key_for(m.epoch);
    let (Some(spki), Some(key)) = (spki, key) else {
        return reject(RejectReason::NotMember);
    };
    let mac_ok = mac_eq(
        &member_mac(&key, m.epoch, &device, Side::Client, &exporter),
        &m.mac,
    );
    let sig_ok = dir.verify_signature(&spki, &device_proof("auth", &exporter), &m.signature);
    if !(mac_ok && sig_ok) {
        return reject(RejectReason::BadProof);
    }
    let principal = Principal {
        name: principal_name(&device),
        attributes: BTreeMap::from([("role".to_owned(), MESH_ROLE.to_owned())]),
        method: Method::Mesh {
            device,
            epoch: m.epoch,
        },
    };
    ServerStep::Accept {
        reply: Message::AuthOk(AuthOk {
            method: "mesh".into(),
            proof: member_mac(&key, m.epoch, &dir.me(), Side::Server, &exporter).to_vec(),
            principal: principal.info(),
            session: None,
        }),
        principal,
        session: None,
    }
}

// ---- Client side -----------------------------------------------------------------------

/// Starts member authentication as `me`, to the member `peer` (whose TLS key was pinned),
/// with the key of `epoch` and a signature over `device_proof("auth", exporter)`.
pub fn member_auth(
    key: &MeshKey,
    epoch: u64,
    me: &ServerId,
    peer: &ServerId,
    signature: Vec<u8>,
    exporter: &Exporter,
) -> (Message, ClientAuth) {
    let msg = Message::MeshAuth(MeshAuth {
        device: *me.as_bytes(),
        epoch,
        mac: member_mac(key, epoch, me, Side::Client, exporter),
        signature,
    });
    let expected = member_mac(key, epoch, peer, Side::Server, exporter);
    (
        msg,
        ClientAuth::Mesh(ExpectProof {
            expected,
            me: *me,
            epoch,
        }),
    )
}

/// The connecting member after `mesh_auth`: waits for the accepting member's proof.
#[derive(Debug)]
pub struct ExpectProof {
    expected: Digest,
    me: ServerId,
    epoch: u64,
}

impl ExpectProof {
    pub(super) fn handle(self, msg: Message) -> Result<ClientStep, AuthError> {
        match msg {
            Message::AuthOk(ok) if ok.method == "mesh" => {
                if !mac_eq(&self.expected, &ok.proof) {
                    return Err(AuthError::BadServerProof);
                }
                let method = Method::Mesh {
                    device: self.me,
                    epoch: self.epoch,
                };
                Ok(ClientStep::Done(Authenticated {
                    principal: principal_from(ok.principal, method),
                    session: None,
                }))
            }
            _ => Err(AuthError::Unexpected),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::ServerAuth;
    use crate::message::{Empty, PrincipalInfo};
    use crate::secret::MasterKey;
    use rand_core::OsRng;

    /// Signatures are modelled as "spki ‖ message" so the test needs no key pair; the real
    /// directory (in the `ferry` crate) verifies Ed25519.
    struct Dir {
        me: ServerId,
        members: Vec<Vec<u8>>,
        epoch: u64,
        key: MeshKey,
        previous: Option<MeshKey>,
    }

    impl MeshDirectory for Dir {
        fn me(&self) -> ServerId {
            self.me
        }
        fn member_spki(&self, device: &ServerId) -> Option<Vec<u8>> {
            self.members
                .iter()
                .find(|s| ServerId::from_spki(s) == *device)
                .cloned()
        }
        fn key_for(&self, epoch: u64) -> Option<MeshKey> {
            if epoch == self.epoch {
                Some(self.key.clone())
            } else if epoch + 1 == self.epoch {
                self.previous.clone()
            } else {
                None
            }
        }
        fn epoch(&self) -> u64 {
            self.epoch
        }
        fn verify_signature(&self, spki: &[u8], message: &[u8], signature: &[u8]) -> bool {
            signature == [spki, message].concat()
        }
    }

    /// A server context with a mesh (`Some`) or in none; it serves no other method.
    struct Ctx {
        master: MasterKey,
        mesh: Option<Dir>,
    }

    impl ServerContext for Ctx {
        fn master_key(&self) -> &MasterKey {
            &self.master
        }
        fn claims_current(&self, _: &crate::claims::Claims) -> bool {
            false
        }
        fn mesh(&self) -> Option<&dyn MeshDirectory> {
            self.mesh.as_ref().map(|d| d as &dyn MeshDirectory)
        }
    }

    fn sign(spki: &[u8], e: &Exporter) -> Vec<u8> {
        [spki, &device_proof("auth", e)].concat()
    }

    fn dir() -> Dir {
        Dir {
            me: ServerId::from_spki(b"server"),
            members: vec![b"server".to_vec(), b"alice".to_vec()],
            epoch: 2,
            key: MeshKey::from_bytes([2; 32]),
            previous: Some(MeshKey::from_bytes([1; 32])),
        }
    }

    fn ctx(mesh: Option<Dir>) -> Ctx {
        Ctx {
            master: MasterKey::from_bytes([9; 32]),
            mesh,
        }
    }

    /// Both ends through `ServerAuth` and `ClientAuth`, in a mesh. The server's principal, or
    /// why it refused; and what the client concluded.
    fn attempt_in(
        ctx: &Ctx,
        spki: &[u8],
        key: [u8; 32],
        epoch: u64,
        exporter_client: [u8; 32],
        signer: &[u8],
    ) -> (
        Result<Principal, RejectReason>,
        Result<Principal, AuthError>,
    ) {
        let e_client = Exporter::from_bytes(exporter_client);
        let e_server = Exporter::from_bytes([7; 32]);
        let me = ServerId::from_spki(spki);
        let server = ServerId::from_spki(b"server");
        let (msg, client) = member_auth(
            &MeshKey::from_bytes(key),
            epoch,
            &me,
            &server,
            sign(signer, &e_client),
            &e_client,
        );
        let (reply, accepted) = match ServerAuth::new(e_server).handle(msg, ctx, &mut OsRng, 0) {
            ServerStep::Accept {
                reply,
                principal,
                session,
            } => {
                assert!(session.is_none(), "a member opens no session");
                (reply, Ok(principal))
            }
            ServerStep::Reject { reply, reason, .. } => {
                assert_eq!(reply, Message::AuthFailed(Empty {}), "every failure alike");
                (reply, Err(reason))
            }
            other => panic!("mesh_auth is one message: {other:?}"),
        };
        let client = match client.handle(reply, &mut OsRng) {
            Ok(ClientStep::Done(a)) => Ok(a.principal),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        };
        (accepted, client)
    }

    fn attempt(
        spki: &[u8],
        key: [u8; 32],
        epoch: u64,
        exporter_client: [u8; 32],
        signer: &[u8],
    ) -> (
        Result<Principal, RejectReason>,
        Result<Principal, AuthError>,
    ) {
        attempt_in(&ctx(Some(dir())), spki, key, epoch, exporter_client, signer)
    }

    #[test]
    fn a_member_authenticates_with_the_current_or_previous_key() {
        let alice = ServerId::from_spki(b"alice");
        let (server, client) = attempt(b"alice", [2; 32], 2, [7; 32], b"alice");
        let p = server.unwrap();
        assert_eq!(p.role(), Some(MESH_ROLE));
        assert_eq!(p.name, principal_name(&alice));
        assert_eq!(
            p.method,
            Method::Mesh {
                device: alice,
                epoch: 2
            }
        );
        let c = client.unwrap();
        assert_eq!(c.name, p.name);
        assert_eq!(c.method, p.method);
        let (server, client) = attempt(b"alice", [1; 32], 1, [7; 32], b"alice");
        assert_eq!(
            server.map(|p| p.method),
            Ok(Method::Mesh {
                device: alice,
                epoch: 1
            })
        );
        assert!(client.is_ok());
    }

    #[test]
    fn wrong_key_old_epoch_stranger_impostor_relay_and_no_mesh_fail_alike() {
        use RejectReason::{BadProof, NoMesh, NotMember};
        // (device, key, epoch, the client's exporter, signer, the server's reason)
        type Case = (
            &'static [u8],
            [u8; 32],
            u64,
            [u8; 32],
            &'static [u8],
            RejectReason,
        );
        let cases: [Case; 5] = [
            // Wrong key for the epoch.
            (b"alice", [9; 32], 2, [7; 32], b"alice", BadProof),
            // An epoch two behind (its key was dropped).
            (b"alice", [0; 32], 0, [7; 32], b"alice", NotMember),
            // Not a member, though it holds the mesh key (a removed device).
            (b"mallory", [2; 32], 2, [7; 32], b"mallory", NotMember),
            // A member claiming alice's device without alice's signing key.
            (b"alice", [2; 32], 2, [7; 32], b"mallory", BadProof),
            // A proof made for another connection.
            (b"alice", [2; 32], 2, [8; 32], b"alice", BadProof),
        ];
        for (spki, key, epoch, exporter, signer, why) in cases {
            let (server, client) = attempt(spki, key, epoch, exporter, signer);
            assert_eq!(server.map(|p| p.name), Err(why));
            assert_eq!(client.map(|p| p.name), Err(AuthError::Rejected));
        }
        // A server in no mesh refuses the same way.
        let (server, client) = attempt_in(&ctx(None), b"alice", [2; 32], 2, [7; 32], b"alice");
        assert_eq!(server.map(|p| p.name), Err(NoMesh));
        assert_eq!(client.map(|p| p.name), Err(AuthError::Rejected));
    }

    #[test]
    fn the_client_refuses_a_server_without_the_key() {
        let e = Exporter::from_bytes([7; 32]);
        let me = ServerId::from_spki(b"alice");
        let server = ServerId::from_spki(b"server");
        let (_, client) = member_auth(&MeshKey::from_bytes([2; 32]), 2, &me, &server, vec![], &e);
        let forged = Message::AuthOk(AuthOk {
            method: "mesh".into(),
            proof: member_mac(&MeshKey::from_bytes([3; 32]), 2, &server, Side::Server, &e).to_vec(),
            principal: PrincipalInfo {
                name: "x".into(),
                attributes: BTreeMap::new(),
            },
            session: None,
        });
        assert_eq!(
            client.handle(forged, &mut OsRng).unwrap_err(),
            AuthError::BadServerProof
        );
    }
}
