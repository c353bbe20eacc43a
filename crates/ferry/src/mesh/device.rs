//! A peer's device key: its TLS identity key, also used to sign device proofs (Ed25519,
//! RFC 8032, through the rustls provider) so that a member cannot pose as another device.

use std::sync::Arc;

use ferry_proto::mesh::join::device_proof;
use ferry_proto::secret::Exporter;
use ferry_proto::server_id::ServerId;
use rustls::SignatureScheme;
use rustls::sign::SigningKey;

use crate::identity::Identity;
use crate::{Error, tls};

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410 §4); the raw key follows.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Signs device proofs with the identity key.
#[derive(Clone)]
pub struct DeviceKey {
    key: Arc<dyn SigningKey>,
    spki: Vec<u8>,
    id: ServerId,
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl DeviceKey {
    /// The device key of a server identity.
    pub fn from_identity(identity: &Identity) -> Result<Self, Error> {
        let key = tls::provider()
            .key_provider
            .load_private_key(identity.private_key())
            .map_err(Error::Tls)?;
        Ok(Self {
            key,
            spki: identity.spki()?,
            id: identity.server_id(),
        })
    }

    /// The device ID.
    pub fn id(&self) -> ServerId {
        self.id
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki(&self) -> &[u8] {
        &self.spki
    }

    /// Signs `device_proof(purpose, exporter)`.
    pub fn prove(&self, purpose: &str, exporter: &Exporter) -> Result<Vec<u8>, Error> {
        let signer = self
            .key
            .choose_scheme(&[SignatureScheme::ED25519])
            .ok_or_else(|| Error::Config("the identity key is not Ed25519".into()))?;
        signer
            .sign(&device_proof(purpose, exporter))
            .map_err(Error::Tls)
    }
}

/// Whether `signature` is an Ed25519 signature of `message` by the key in `spki`.
pub fn verify(spki: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let Some(raw) = spki.strip_prefix(&ED25519_SPKI_PREFIX[..]) else {
        return false;
    };
    if raw.len() != 32 {
        return false;
    }
    let provider = tls::provider();
    provider
        .signature_verification_algorithms
        .mapping
        .iter()
        .find(|(scheme, _)| *scheme == SignatureScheme::ED25519)
        .and_then(|(_, algs)| algs.first())
        .is_some_and(|alg| alg.verify_signature(raw, message, signature).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_verify_only_for_their_key_purpose_and_connection() {
        let a = DeviceKey::from_identity(&Identity::generate().unwrap()).unwrap();
        let b = DeviceKey::from_identity(&Identity::generate().unwrap()).unwrap();
        assert_eq!(ServerId::from_spki(a.spki()), a.id());
        let e = Exporter::from_bytes([1; 32]);
        let sig = a.prove("auth", &e).unwrap();
        assert!(verify(a.spki(), &device_proof("auth", &e), &sig));
        assert!(!verify(b.spki(), &device_proof("auth", &e), &sig));
        assert!(!verify(a.spki(), &device_proof("join", &e), &sig));
        let e2 = Exporter::from_bytes([2; 32]);
        assert!(!verify(a.spki(), &device_proof("auth", &e2), &sig));
        let mut bad = sig.clone();
        bad[0] ^= 1;
        assert!(!verify(a.spki(), &device_proof("auth", &e), &bad));
        assert!(!verify(&a.spki()[1..], &device_proof("auth", &e), &sig));
        assert!(!verify(b"", b"", b""));
    }
}
