//! Join beacons: an open peer's "here I am", for `ferry mesh join --discover`.
//!
//! ```text
//! datagram = "FRYB" ‖ 0x01 ‖ body                                      (at most 1,200 bytes)
//! body     = CBOR map (see [`Beacon`])
//! ```
//!
//! A beacon is neither sealed nor signed: the joiner has no key yet. It only says where to
//! run the join, and with which device ID to pin the TLS connection. A forged beacon leads
//! the joiner to a peer that does not know the password: CPace then fails, and the forger
//! learns only whether its one guess was right (RFC 9382 §1, §9), as with any online attempt.
//! Nothing in it derives from the password or the mesh key.

use serde::{Deserialize, Serialize};

use super::announce::MAX_DATAGRAM;

/// The beacons' magic bytes.
pub const MAGIC: &[u8; 4] = b"FRYB";
/// The format version this code writes and reads.
pub const FORMAT: u8 = 1;
/// Longest mesh name a beacon carries.
pub const MAX_NAME: usize = 64;

/// What an open peer announces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beacon {
    /// The open peer's device ID (its TLS identity; `--peer-id`).
    #[serde(with = "serde_bytes")]
    pub device: [u8; 32],
    /// The address it serves TLS on: 4 or 16 bytes (unspecified: the datagram's source).
    #[serde(with = "serde_bytes")]
    pub addr: Vec<u8>,
    /// Its TLS port.
    pub port: u16,
    /// The mesh's name, to tell meshes apart.
    pub mesh: String,
    /// The open peer's display name.
    pub name: String,
}

/// Encodes a beacon; names longer than [`MAX_NAME`] bytes are cut (at a character boundary).
pub fn encode(b: &Beacon) -> Vec<u8> {
    let mut b = b.clone();
    b.mesh = cut(&b.mesh);
    b.name = cut(&b.name);
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT);
    // Serialising a plain struct into a Vec cannot fail.
    let _ = ciborium::into_writer(&b, &mut out);
    out
}

fn cut(s: &str) -> String {
    let mut end = s.len().min(MAX_NAME);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// Decodes a beacon; `None` for anything else (an announcement, garbage, an oversized or
/// malformed one). Never panics, whatever the bytes.
pub fn decode(datagram: &[u8]) -> Option<Beacon> {
    if datagram.len() <= 5 || datagram.len() > MAX_DATAGRAM || &datagram[..4] != MAGIC {
        return None;
    }
    if datagram[4] != FORMAT {
        return None;
    }
    let b: Beacon = ciborium::from_reader(&datagram[5..]).ok()?;
    let valid = matches!(b.addr.len(), 4 | 16)
        && b.port != 0
        && b.mesh.len() <= MAX_NAME
        && b.name.len() <= MAX_NAME;
    valid.then_some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Beacon {
        Beacon {
            device: [7; 32],
            addr: vec![10, 0, 0, 1],
            port: 7443,
            mesh: "home".into(),
            name: "alpha".into(),
        }
    }

    #[test]
    fn round_trip_and_size() {
        let b = sample();
        let d = encode(&b);
        assert_eq!(decode(&d), Some(b));
        let long = Beacon {
            addr: vec![0; 16],
            mesh: "é".repeat(100),
            name: "n".repeat(500),
            ..sample()
        };
        let d = encode(&long);
        assert!(d.len() < 300, "{}", d.len());
        let got = decode(&d).unwrap();
        assert_eq!(got.mesh.len(), 64);
        assert_eq!(got.name.len(), 64);
    }

    #[test]
    fn malformed_beacons_are_refused() {
        let d = encode(&sample());
        assert_eq!(decode(&[]), None);
        assert_eq!(decode(b"FRYB\x01"), None);
        assert_eq!(decode(&d[..d.len() - 1]), None, "truncated");
        let mut wrong = d.clone();
        wrong[4] = 2;
        assert_eq!(decode(&wrong), None, "unknown format");
        let mut magic = d.clone();
        magic[0] = b'X';
        assert_eq!(decode(&magic), None);
        let mut big = d.clone();
        big.resize(MAX_DATAGRAM + 1, 0);
        assert_eq!(decode(&big), None);
        for bad in [
            Beacon {
                addr: vec![1; 5],
                ..sample()
            },
            Beacon {
                port: 0,
                ..sample()
            },
        ] {
            assert_eq!(decode(&encode(&bad)), None, "{bad:?}");
        }
        // Every truncation and every single flipped byte: no panic.
        for n in 0..d.len() {
            let _ = decode(&d[..n]);
            let mut x = d.clone();
            x[n] ^= 0xff;
            let _ = decode(&x);
        }
    }
}
