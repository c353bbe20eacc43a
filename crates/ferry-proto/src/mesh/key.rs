//! The mesh key schedule.
//!
//! ```text
//! announce_key = HKDF-SHA256(salt = none, ikm = mesh_key, info = "ferry mesh announce v1" ‖ 0x00 ‖ epoch)  RFC 5869
//! member_key   = HKDF-SHA256(salt = none, ikm = mesh_key, info = "ferry mesh member v1" ‖ 0x00 ‖ epoch ‖ device)
//! member_mac   = HMAC-SHA256(member_key, "ferry mesh auth v1" ‖ 0x00 ‖ side ‖ exporter)           RFC 2104
//! ```
//!
//! `epoch` is 8 bytes big-endian, `device` the 32-byte device ID (the SHA-256 of the peer's TLS
//! SubjectPublicKeyInfo, as [`crate::server_id::ServerId`]) and `side` one byte: `c` for the
//! connecting member, `s` for the member that accepted. No key here is ever derived from the
//! group password: the password only runs the join PAKE ([`super::join`]).

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::message::Digest;
use crate::secret::{Exporter, MeshKey};
use crate::server_id::ServerId;

const ANNOUNCE_INFO: &[u8] = b"ferry mesh announce v1\0";
const MEMBER_INFO: &[u8] = b"ferry mesh member v1\0";
const AUTH_LABEL: &[u8] = b"ferry mesh auth v1\0";
const KEY_ID_INFO: &[u8] = b"ferry mesh key id v1\0";

/// Which end of a connection a member MAC speaks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The member that opened the connection.
    Client,
    /// The member that accepted it.
    Server,
}

impl Side {
    fn byte(self) -> u8 {
        match self {
            Side::Client => b'c',
            Side::Server => b's',
        }
    }
}

fn expand(key: &MeshKey, parts: &[&[u8]]) -> Zeroizing<[u8; 32]> {
    let hk = Hkdf::<Sha256>::new(None, key.expose_secret());
    let mut okm = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's limit of 255 * 32.
    let _ = hk.expand_multi_info(parts, okm.as_mut());
    okm
}

/// The AEAD key announcements of `epoch` are sealed with.
pub fn announce_key(key: &MeshKey, epoch: u64) -> Zeroizing<[u8; 32]> {
    expand(key, &[ANNOUNCE_INFO, &epoch.to_be_bytes()])
}

/// A public identifier of a mesh key, which orders two keys made at the same epoch by two
/// members removing devices at once (the larger wins).
pub fn key_id(key: &MeshKey) -> [u8; 32] {
    *expand(key, &[KEY_ID_INFO])
}

/// The key `device` proves membership with at `epoch`.
pub fn member_key(key: &MeshKey, epoch: u64, device: &ServerId) -> Zeroizing<[u8; 32]> {
    expand(key, &[MEMBER_INFO, &epoch.to_be_bytes(), device.as_bytes()])
}

/// The MAC `side` sends to prove it holds `device`'s member key on the connection with
/// `exporter`.
pub fn member_mac(
    key: &MeshKey,
    epoch: u64,
    device: &ServerId,
    side: Side,
    exporter: &Exporter,
) -> Digest {
    let mk = member_key(key, epoch, device);
    // HMAC accepts keys of any length.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(mk.as_ref()) else {
        return [0; 32];
    };
    mac.update(AUTH_LABEL);
    mac.update(&[side.byte()]);
    mac.update(exporter.expose_secret());
    mac.finalize().into_bytes().into()
}

/// Constant-time comparison of two MACs.
pub fn mac_eq(a: &Digest, b: &[u8]) -> bool {
    b.len() == a.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_separated_by_epoch_device_and_purpose() {
        let k = MeshKey::from_bytes([9; 32]);
        let a = ServerId::from_spki(b"a");
        let b = ServerId::from_spki(b"b");
        assert_ne!(*announce_key(&k, 1), *announce_key(&k, 2));
        assert_ne!(*member_key(&k, 1, &a), *member_key(&k, 1, &b));
        assert_ne!(*member_key(&k, 1, &a), *member_key(&k, 2, &a));
        assert_ne!(*member_key(&k, 1, &a), *announce_key(&k, 1));
        let other = MeshKey::from_bytes([8; 32]);
        assert_ne!(*announce_key(&k, 1), *announce_key(&other, 1));
    }

    #[test]
    fn member_macs_bind_side_and_exporter() {
        let k = MeshKey::from_bytes([9; 32]);
        let d = ServerId::from_spki(b"d");
        let e1 = Exporter::from_bytes([1; 32]);
        let e2 = Exporter::from_bytes([2; 32]);
        let c = member_mac(&k, 3, &d, Side::Client, &e1);
        assert!(mac_eq(&c, &member_mac(&k, 3, &d, Side::Client, &e1)));
        assert!(!mac_eq(&c, &member_mac(&k, 3, &d, Side::Server, &e1)));
        assert!(!mac_eq(&c, &member_mac(&k, 3, &d, Side::Client, &e2)));
        assert!(!mac_eq(&c, &c[..31]));
    }
}
