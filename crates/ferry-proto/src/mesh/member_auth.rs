//! Members authenticating to each other after they joined.
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

use std::collections::BTreeMap;

use super::join::device_proof;
use super::key::{Side, mac_eq, member_mac};
use super::wire::MeshAuth;
use crate::auth::{AuthError, Method, Principal};
use crate::message::{AuthOk, Digest, Message, PrincipalInfo};
use crate::secret::{Exporter, MeshKey};
use crate::server_id::ServerId;

/// The role every authenticated member has.
pub const MESH_ROLE: &str = "mesh";

/// What the accepting member needs to check a `mesh_auth`.
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

/// A member's authentication succeeded.
#[derive(Debug)]
pub struct MemberAccepted {
    /// Send this.
    pub reply: Message,
    /// The member.
    pub principal: Principal,
}

/// Why a member's authentication failed (for the log; the peer sees `auth_failed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MemberRejected {
    /// Not a current member (unknown or removed), or an epoch with no key here.
    #[error("not a current member, or no key for its epoch")]
    NotMember,
    /// The MAC or the signature did not verify.
    #[error("bad member proof")]
    BadProof,
}

/// Checks a `mesh_auth` on the connection with `exporter`.
pub fn accept(
    m: &MeshAuth,
    exporter: &Exporter,
    dir: &dyn MeshDirectory,
) -> Result<MemberAccepted, MemberRejected> {
    let device = ServerId::from_bytes(m.device);
    let spki = dir.member_spki(&device);
    let key = dir.key_for(m.epoch);
    let (Some(spki), Some(key)) = (spki, key) else {
        return Err(MemberRejected::NotMember);
    };
    let mac_ok = mac_eq(
        &member_mac(&key, m.epoch, &device, Side::Client, exporter),
        &m.mac,
    );
    let sig_ok = dir.verify_signature(&spki, &device_proof("auth", exporter), &m.signature);
    if !(mac_ok && sig_ok) {
        return Err(MemberRejected::BadProof);
    }
    let principal = Principal {
        name: principal_name(&device),
        attributes: BTreeMap::from([("role".to_owned(), MESH_ROLE.to_owned())]),
        method: Method::Mesh {
            device,
            epoch: m.epoch,
        },
    };
    let reply = Message::AuthOk(AuthOk {
        method: "mesh".into(),
        proof: member_mac(&key, m.epoch, &dir.me(), Side::Server, exporter).to_vec(),
        principal: principal.info(),
        session: None,
    });
    Ok(MemberAccepted { reply, principal })
}

/// The connecting member, waiting for the accepting member's proof.
#[derive(Debug)]
pub struct MemberWait {
    expected: Digest,
}

/// Starts member authentication as `me`, to the member `peer` (whose TLS key was pinned),
/// with the key of `epoch` and a signature over `device_proof("auth", exporter)`.
pub fn start(
    key: &MeshKey,
    epoch: u64,
    me: &ServerId,
    peer: &ServerId,
    signature: Vec<u8>,
    exporter: &Exporter,
) -> (Message, MemberWait) {
    let msg = Message::MeshAuth(MeshAuth {
        device: *me.as_bytes(),
        epoch,
        mac: member_mac(key, epoch, me, Side::Client, exporter),
        signature,
    });
    let expected = member_mac(key, epoch, peer, Side::Server, exporter);
    (msg, MemberWait { expected })
}

impl MemberWait {
    /// Checks the answer.
    pub fn finish(self, msg: Message) -> Result<PrincipalInfo, AuthError> {
        match msg {
            Message::AuthOk(ok) if ok.method == "mesh" => {
                if mac_eq(&self.expected, &ok.proof) {
                    Ok(ok.principal)
                } else {
                    Err(AuthError::BadServerProof)
                }
            }
            Message::AuthFailed(_) => Err(AuthError::Rejected),
            _ => Err(AuthError::Unexpected),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn attempt(
        spki: &[u8],
        key: [u8; 32],
        epoch: u64,
        exporter_client: [u8; 32],
        signer: &[u8],
    ) -> Result<PrincipalInfo, String> {
        let e_client = Exporter::from_bytes(exporter_client);
        let e_server = Exporter::from_bytes([7; 32]);
        let me = ServerId::from_spki(spki);
        let d = dir();
        let (msg, wait) = start(
            &MeshKey::from_bytes(key),
            epoch,
            &me,
            &d.me,
            sign(signer, &e_client),
            &e_client,
        );
        let Message::MeshAuth(m) = msg else {
            return Err("not mesh_auth".into());
        };
        let accepted = accept(&m, &e_server, &d).map_err(|e| e.to_string())?;
        wait.finish(accepted.reply).map_err(|e| e.to_string())
    }

    #[test]
    fn a_member_authenticates_with_the_current_or_previous_key() {
        let p = attempt(b"alice", [2; 32], 2, [7; 32], b"alice").unwrap();
        assert_eq!(p.attributes.get("role").map(String::as_str), Some("mesh"));
        assert!(attempt(b"alice", [1; 32], 1, [7; 32], b"alice").is_ok());
    }

    #[test]
    fn wrong_key_old_epoch_stranger_impostor_and_relay_fail() {
        // Wrong key for the epoch.
        assert!(attempt(b"alice", [9; 32], 2, [7; 32], b"alice").is_err());
        // An epoch two behind (its key was dropped).
        assert!(attempt(b"alice", [0; 32], 0, [7; 32], b"alice").is_err());
        // Not a member, though it holds the mesh key (a removed device).
        assert!(attempt(b"mallory", [2; 32], 2, [7; 32], b"mallory").is_err());
        // A member claiming alice's device without alice's signing key.
        assert!(attempt(b"alice", [2; 32], 2, [7; 32], b"mallory").is_err());
        // A proof made for another connection.
        assert!(attempt(b"alice", [2; 32], 2, [8; 32], b"alice").is_err());
    }

    #[test]
    fn the_client_refuses_a_server_without_the_key() {
        let e = Exporter::from_bytes([7; 32]);
        let me = ServerId::from_spki(b"alice");
        let server = ServerId::from_spki(b"server");
        let (_, wait) = start(&MeshKey::from_bytes([2; 32]), 2, &me, &server, vec![], &e);
        let forged = Message::AuthOk(AuthOk {
            method: "mesh".into(),
            proof: member_mac(&MeshKey::from_bytes([3; 32]), 2, &server, Side::Server, &e).to_vec(),
            principal: PrincipalInfo {
                name: "x".into(),
                attributes: BTreeMap::new(),
            },
            session: None,
        });
        assert_eq!(wait.finish(forged), Err(AuthError::BadServerProof));
    }
}
