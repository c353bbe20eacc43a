//! Sealed UDP announcements.
//!
//! ```text
//! datagram   = header ‖ ciphertext                                  (at most 1,200 bytes)
//! header     = "FRYA" ‖ 0x01 ‖ epoch (u64 BE) ‖ nonce (24 random bytes)           37 bytes
//! ciphertext = XChaCha20-Poly1305(announce_key(epoch), nonce, aad = header, body)
//! body       = CBOR map (see [`Body`])
//! ```
//!
//! XChaCha20-Poly1305 is ChaCha20-Poly1305 (RFC 8439) with a 192-bit nonce
//! (draft-irtf-cfrg-xchacha), so random nonces never collide in practice. The key comes from
//! the mesh key ([`super::key::announce_key`]), never from the password, so a captured
//! datagram gives nothing to test password guesses against. Freshness (counter and time) is
//! checked by [`super::replay::ReplayGuard`] after a datagram opens.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

use crate::message::Digest;

/// The datagrams' magic bytes.
pub const MAGIC: &[u8; 4] = b"FRYA";
/// The format version this code seals and opens.
pub const FORMAT: u8 = 1;
/// Header length in bytes.
pub const HEADER_LEN: usize = 4 + 1 + 8 + 24;
/// Poly1305 tag length.
pub const TAG_LEN: usize = 16;
/// No datagram is larger than this (it fits any LAN's MTU without fragmentation).
pub const MAX_DATAGRAM: usize = 1200;

/// What an announcement says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A source changed on the sender: fetch it if this version wins over yours.
    Change {
        /// The source's name.
        source: String,
        /// Its version on the sender.
        version: u64,
        /// BLAKE3 of its content (all zero for a delete).
        #[serde(with = "serde_bytes")]
        hash: Digest,
        /// Whether the change is a delete.
        deleted: bool,
    },
    /// The sender's whole state in brief: compare, and synchronise if it differs.
    Digest {
        /// Digest of the sender's sources (see the mesh sync module).
        #[serde(with = "serde_bytes")]
        sources: Digest,
        /// Digest of the sender's member list.
        #[serde(with = "serde_bytes")]
        members: Digest,
    },
}

/// The sealed part of an announcement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Body {
    /// The sender's device ID.
    #[serde(with = "serde_bytes")]
    pub sender: [u8; 32],
    /// The sender's counter: strictly increasing across all its datagrams.
    pub counter: u64,
    /// The sender's clock, Unix milliseconds.
    pub time: u64,
    /// The address the sender serves TLS on: 4 or 16 bytes.
    #[serde(with = "serde_bytes")]
    pub addr: Vec<u8>,
    /// The TLS port.
    pub port: u16,
    /// `true` when a person's action caused it (a put or delete), `false` for the periodic
    /// digest and for changes that arrived by replication.
    pub manual: bool,
    /// What happened.
    pub event: Event,
}

/// Why a datagram was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Not a ferry announcement (length, magic or format version).
    #[error("not a ferry announcement")]
    NotAnnouncement,
    /// Sealed under an epoch this receiver holds no key for.
    #[error("announcement of epoch {0}, which this peer has no key for")]
    UnknownEpoch(u64),
    /// Did not open under the key (forged, altered, or another mesh's).
    #[error("announcement failed authentication")]
    Unauthentic,
    /// Opened, but the body is not a valid announcement.
    #[error("authentic announcement with a malformed body")]
    Malformed,
}

/// An announcement could not be sealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("announcement would be {0} bytes, over the {MAX_DATAGRAM}-byte limit")]
pub struct TooLarge(pub usize);

/// The epoch a datagram claims, read from its header without opening it.
pub fn peek_epoch(datagram: &[u8]) -> Result<u64, OpenError> {
    if datagram.len() < HEADER_LEN + TAG_LEN
        || datagram.len() > MAX_DATAGRAM
        || &datagram[..4] != MAGIC
        || datagram[4] != FORMAT
    {
        return Err(OpenError::NotAnnouncement);
    }
    let mut epoch = [0u8; 8];
    epoch.copy_from_slice(&datagram[5..13]);
    Ok(u64::from_be_bytes(epoch))
}

/// Seals `body` for `epoch` under `key` (from [`super::key::announce_key`]) with a fresh
/// random `nonce`.
pub fn seal(key: &[u8; 32], epoch: u64, nonce: [u8; 24], body: &Body) -> Result<Vec<u8>, TooLarge> {
    let mut plain = Vec::new();
    // Serialising a plain struct into a Vec cannot fail.
    let _ = ciborium::into_writer(body, &mut plain);
    let total = HEADER_LEN + plain.len() + TAG_LEN;
    if total > MAX_DATAGRAM {
        return Err(TooLarge(total));
    }
    Ok(seal_raw(key, epoch, nonce, &plain))
}

/// Seals arbitrary plaintext bytes as a datagram body, unchecked (for [`seal`], and for tests
/// and fuzzing, which need authentic datagrams whose body is not a valid [`Body`]).
#[doc(hidden)]
pub fn seal_raw(key: &[u8; 32], epoch: u64, nonce: [u8; 24], plain: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + plain.len() + TAG_LEN);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT);
    out.extend_from_slice(&epoch.to_be_bytes());
    out.extend_from_slice(&nonce);
    let cipher = XChaCha20Poly1305::new(&(*key).into());
    // Encryption fails only for plaintexts beyond 2^38 bytes; callers pass a datagram's worth.
    if let Ok(sealed) = cipher.encrypt(
        &XNonce::from(nonce),
        Payload {
            msg: plain,
            aad: &out,
        },
    ) {
        out.extend_from_slice(&sealed);
    }
    out
}

/// Opens a datagram with the announce key of its epoch, which `key_for` returns if this
/// receiver holds it. Never panics, whatever the bytes.
pub fn open(
    datagram: &[u8],
    key_for: impl FnOnce(u64) -> Option<zeroize::Zeroizing<[u8; 32]>>,
) -> Result<Body, OpenError> {
    let epoch = peek_epoch(datagram)?;
    let key = key_for(epoch).ok_or(OpenError::UnknownEpoch(epoch))?;
    let (header, sealed) = datagram.split_at(HEADER_LEN);
    let nonce = XNonce::try_from(&header[13..]).map_err(|_| OpenError::NotAnnouncement)?;
    let cipher = XChaCha20Poly1305::new(&(*key).into());
    let plain = cipher
        .decrypt(
            &nonce,
            Payload {
                msg: sealed,
                aad: header,
            },
        )
        .map_err(|_| OpenError::Unauthentic)?;
    let body: Body = ciborium::from_reader(plain.as_slice()).map_err(|_| OpenError::Malformed)?;
    if body.addr.len() != 4 && body.addr.len() != 16 {
        return Err(OpenError::Malformed);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeroize::Zeroizing;

    fn body(event: Event) -> Body {
        Body {
            sender: [7; 32],
            counter: 42,
            time: 1_700_000_000_000,
            addr: vec![10, 0, 0, 1],
            port: 4433,
            manual: true,
            event,
        }
    }

    fn change(source: &str) -> Event {
        Event::Change {
            source: source.into(),
            version: 3,
            hash: [5; 32],
            deleted: false,
        }
    }

    fn key() -> Option<Zeroizing<[u8; 32]>> {
        Some(Zeroizing::new([1; 32]))
    }

    #[test]
    fn round_trip() {
        for event in [
            change("docs/a.txt"),
            Event::Digest {
                sources: [1; 32],
                members: [2; 32],
            },
        ] {
            let b = body(event);
            let d = seal(&[1; 32], 9, [3; 24], &b).unwrap();
            assert!(d.len() <= MAX_DATAGRAM);
            assert_eq!(peek_epoch(&d), Ok(9));
            assert_eq!(open(&d, |e| (e == 9).then(key).flatten()), Ok(b));
        }
    }

    #[test]
    fn the_longest_source_name_fits() {
        let name = "n".repeat(crate::names::MAX_SOURCE_LEN);
        let mut b = body(change(&name));
        b.addr = vec![0xfe; 16];
        b.counter = u64::MAX;
        b.time = u64::MAX;
        b.event = Event::Change {
            source: name,
            version: u64::MAX,
            hash: [0xff; 32],
            deleted: true,
        };
        let d = seal(&[1; 32], u64::MAX, [3; 24], &b).unwrap();
        assert!(d.len() <= MAX_DATAGRAM, "{}", d.len());
    }

    #[test]
    fn every_flipped_bit_is_refused() {
        let d = seal(&[1; 32], 9, [3; 24], &body(change("a"))).unwrap();
        for i in 0..d.len() * 8 {
            let mut bad = d.clone();
            bad[i / 8] ^= 1 << (i % 8);
            let r = open(&bad, |e| (e == 9).then(key).flatten());
            assert!(r.is_err(), "bit {i} flipped still opened");
        }
    }

    #[test]
    fn wrong_key_epoch_and_garbage_are_refused() {
        let d = seal(&[1; 32], 9, [3; 24], &body(change("a"))).unwrap();
        assert_eq!(
            open(&d, |_| Some(Zeroizing::new([2; 32]))),
            Err(OpenError::Unauthentic)
        );
        assert_eq!(open(&d, |_| None), Err(OpenError::UnknownEpoch(9)));
        for len in 0..HEADER_LEN + TAG_LEN {
            assert_eq!(open(&d[..len], |_| key()), Err(OpenError::NotAnnouncement));
        }
        assert_eq!(
            open(&d[..d.len() - 1], |_| key()),
            Err(OpenError::Unauthentic)
        );
        let mut long = d.clone();
        long.resize(MAX_DATAGRAM + 1, 0);
        assert_eq!(open(&long, |_| key()), Err(OpenError::NotAnnouncement));
    }

    #[test]
    fn an_authentic_but_malformed_body_is_refused() {
        // Seal raw bytes that are not a Body, as a member with a bug might.
        let out = seal_raw(&[1; 32], 9, [3; 24], b"\xa0");
        assert_eq!(open(&out, |_| key()), Err(OpenError::Malformed));
    }
}
