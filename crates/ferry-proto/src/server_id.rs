//! The server ID clients pin.
//!
//! A server ID is the SHA-256 of the DER SubjectPublicKeyInfo (RFC 5280 §4.1.2.7) of the
//! server's TLS key. People read it as RFC 4648 base32 (A–Z, 2–7, no padding: 52 characters)
//! in 13 groups of 4 joined by `-`, which avoids look-alike characters such as 0/O and 1/l.
//! Parsing ignores case, `-` and spaces.

use core::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The fingerprint of a server's public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerId([u8; 32]);

/// A string that is not a server ID.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid server ID: expected 52 base32 characters (A-Z, 2-7), grouped by '-'")]
pub struct ServerIdError;

impl ServerId {
    /// The ID of the key whose DER SubjectPublicKeyInfo is given.
    pub fn from_spki(spki_der: &[u8]) -> Self {
        Self(Sha256::digest(spki_der).into())
    }

    /// Wraps raw bytes received from a peer (an ID, not a key to hash).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Constant-time comparison, for use where the ID gates trust.
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    /// Parses the readable form.
    pub fn parse(s: &str) -> Result<Self, ServerIdError> {
        let cleaned: String = s
            .chars()
            .filter(|c| *c != '-' && !c.is_whitespace())
            .map(|c| c.to_ascii_uppercase())
            .collect();
        if cleaned.len() != 52 {
            return Err(ServerIdError);
        }
        let bytes = data_encoding::BASE32_NOPAD
            .decode(cleaned.as_bytes())
            .map_err(|_| ServerIdError)?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| ServerIdError)?;
        Ok(Self(arr))
    }
}

impl fmt::Display for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = data_encoding::BASE32_NOPAD.encode(&self.0);
        for (i, chunk) in s.as_bytes().chunks(4).enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            // Base32 output is ASCII.
            f.write_str(core::str::from_utf8(chunk).map_err(|_| fmt::Error)?)?;
        }
        Ok(())
    }
}

impl fmt::Debug for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerId({self})")
    }
}

impl core::str::FromStr for ServerId {
    type Err = ServerIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable_round_trip() {
        let id = ServerId::from_spki(b"key");
        let s = id.to_string();
        assert_eq!(s.len(), 52 + 12);
        assert!(s.split('-').all(|g| g.len() == 4));
        assert_eq!(ServerId::parse(&s).unwrap(), id);
        assert_eq!(
            ServerId::parse(&s.to_lowercase().replace('-', " ")).unwrap(),
            id
        );
    }

    #[test]
    fn known_value() {
        // SHA-256("") = e3b0c442…; its base32 starts with 4OYM.
        let id = ServerId::from_spki(b"");
        assert!(id.to_string().starts_with("4OYM-IQUY-"));
    }

    #[test]
    fn malformed() {
        for s in [
            "",
            "ABCD",
            &"A".repeat(53),
            &"0".repeat(52),
            &"A".repeat(52),
        ] {
            // 52 'A's decode to 32 zero bytes only if the trailing bits are zero; that is
            // valid, so check it separately.
            if s == "A".repeat(52) {
                assert!(ServerId::parse(s).is_ok());
            } else {
                assert!(ServerId::parse(s).is_err(), "{s:?}");
            }
        }
        // Non-zero trailing bits are not canonical base32.
        assert!(ServerId::parse(&format!("{}B", "A".repeat(51))).is_err());
    }
}
