//! The credential ("psk") method's key derivation and MACs; its exchange, both ends, is
//! [`crate::auth::psk`].
//!
//! ```text
//! psk        = HKDF-SHA256(salt = none, ikm = master, info = "ferry psk v1" ‖ 0x00 ‖ claims)   RFC 5869
//! client_mac = HMAC-SHA256(psk, "ferry psk client v1" ‖ 0x00 ‖ exporter ‖ SHA-256(claims))   RFC 2104
//! server_mac = HMAC-SHA256(psk, "ferry psk server v1" ‖ 0x00 ‖ exporter ‖ SHA-256(claims))
//! ```
//!
//! `claims` is the canonical encoding (see [`crate::claims`]) and `exporter` the 32-byte TLS
//! exporter of the connection (RFC 8446 §7.5, label [`crate::EXPORTER_LABEL`], no context).
//! Because the server derives the key from the claims it received, a client that edits a claim
//! (its role, say) holds the wrong key and fails exactly like a wrong key; because both MACs
//! cover the exporter, a proof made on one TLS connection is worthless on any other.

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::claims::Claims;
use crate::message;
use crate::secret::{Exporter, InviteKey, MasterKey, Psk};

pub use crate::auth::psk::{PskClient, PskClientWait};

const DERIVE_INFO: &[u8] = b"ferry psk v1\0";
const CLIENT_LABEL: &[u8] = b"ferry psk client v1\0";
const SERVER_LABEL: &[u8] = b"ferry psk server v1\0";
const INVITE_INFO: &[u8] = b"ferry invite v1\0";
const INVITE_CLIENT_LABEL: &[u8] = b"ferry invite client v1\0";

/// Derives a client's psk from the master key and its claims.
pub fn derive_psk(master: &MasterKey, claims: &Claims) -> Psk {
    derive_psk_from_encoded(master, &claims.encode())
}

pub(crate) fn derive_psk_from_encoded(master: &MasterKey, encoded_claims: &[u8]) -> Psk {
    Psk::from_bytes(*derive(master, DERIVE_INFO, encoded_claims))
}

fn derive(master: &MasterKey, info: &[u8], encoded_claims: &[u8]) -> zeroize::Zeroizing<[u8; 32]> {
    let hk = Hkdf::<Sha256>::new(None, master.expose_secret());
    let mut okm = zeroize::Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's limit of 255 * 32.
    let _ = hk.expand_multi_info(&[info, encoded_claims], okm.as_mut());
    okm
}

/// Derives a one-time invite's key: like a psk, under its own label, so an invite can never
/// serve as a credential nor the reverse.
pub fn derive_invite_key(master: &MasterKey, claims: &Claims) -> InviteKey {
    derive_invite_key_from_encoded(master, &claims.encode())
}

pub(crate) fn derive_invite_key_from_encoded(master: &MasterKey, encoded: &[u8]) -> InviteKey {
    InviteKey::from_bytes(*derive(master, INVITE_INFO, encoded))
}

/// The invite holder's proof on the connection with `exporter`.
pub fn invite_mac(key: &InviteKey, exporter: &Exporter, encoded_claims: &[u8]) -> message::Digest {
    mac(
        &Psk::from_bytes(*key.expose_secret()),
        INVITE_CLIENT_LABEL,
        exporter,
        encoded_claims,
    )
}

fn mac(psk: &Psk, label: &[u8], exporter: &Exporter, encoded_claims: &[u8]) -> message::Digest {
    let claims_hash = Sha256::digest(encoded_claims);
    // HMAC accepts keys of any length.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(psk.expose_secret())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    m.update(label);
    m.update(exporter.expose_secret());
    m.update(&claims_hash);
    m.finalize().into_bytes().into()
}

pub(crate) fn client_mac(psk: &Psk, exporter: &Exporter, claims: &[u8]) -> message::Digest {
    mac(psk, CLIENT_LABEL, exporter, claims)
}

pub(crate) fn server_mac(psk: &Psk, exporter: &Exporter, claims: &[u8]) -> message::Digest {
    mac(psk, SERVER_LABEL, exporter, claims)
}

/// Constant-time equality of two MACs.
pub(crate) fn mac_eq(a: &message::Digest, b: &[u8]) -> bool {
    a.as_slice().ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivation_depends_on_every_claim() {
        let master = MasterKey::from_bytes([1; 32]);
        let base = Claims::new("alice", 1, [("role", "reader")]).unwrap();
        let k = derive_psk(&master, &base);
        for other in [
            Claims::new("alice", 1, [("role", "writer")]).unwrap(),
            Claims::new("alicf", 1, [("role", "reader")]).unwrap(),
            Claims::new("alice", 2, [("role", "reader")]).unwrap(),
            Claims::new("alice", 1, [("role", "reader"), ("x", "y")]).unwrap(),
        ] {
            assert_ne!(derive_psk(&master, &other), k);
        }
        assert_ne!(derive_psk(&MasterKey::from_bytes([2; 32]), &base), k);
        assert_eq!(derive_psk(&master, &base), k);
    }

    #[test]
    fn macs_differ_by_direction_and_exporter() {
        let psk = Psk::from_bytes([5; 32]);
        let e1 = Exporter::from_bytes([1; 32]);
        let e2 = Exporter::from_bytes([2; 32]);
        assert_ne!(client_mac(&psk, &e1, b"c"), server_mac(&psk, &e1, b"c"));
        assert_ne!(client_mac(&psk, &e1, b"c"), client_mac(&psk, &e2, b"c"));
        assert_ne!(client_mac(&psk, &e1, b"c"), client_mac(&psk, &e1, b"d"));
    }

    /// RFC 5869 appendix A.1 (HKDF-SHA256 test case 1), checking that the primitive we call
    /// is the standard one; and RFC 4231 test case 2 for HMAC-SHA256.
    #[test]
    fn primitives_match_rfc_vectors() {
        let ikm = [0x0bu8; 22];
        let salt: Vec<u8> = (0x00..=0x0c).collect();
        let info: Vec<u8> = (0xf0..=0xf9).collect();
        let mut okm = [0u8; 42];
        Hkdf::<Sha256>::new(Some(&salt), &ikm)
            .expand(&info, &mut okm)
            .unwrap();
        assert_eq!(
            data_encoding::HEXLOWER.encode(&okm),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        );
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(b"Jefe").unwrap();
        m.update(b"what do ya want for nothing?");
        assert_eq!(
            data_encoding::HEXLOWER.encode(&m.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
