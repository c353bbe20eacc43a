//! The mesh's messages, carried in message frames like every other (see [`crate::message`]).

use serde::{Deserialize, Serialize};

use crate::message::Digest;
use crate::secret::MeshKey;

/// Joiner → opener: the first CPace message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshJoinStart {
    /// CPace share `Ya`.
    #[serde(with = "serde_bytes")]
    pub share: Vec<u8>,
    /// The joiner's DER SubjectPublicKeyInfo (its device ID is the SHA-256 of it).
    #[serde(with = "serde_bytes")]
    pub device: Vec<u8>,
    /// The joiner's chosen display name.
    pub name: String,
    /// The port the joiner serves TLS on (its address is the connection's source).
    pub port: u16,
}

/// Opener → joiner: the CPace answer and the opener's confirmation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshJoinResponse {
    /// CPace share `Yb`.
    #[serde(with = "serde_bytes")]
    pub share: Vec<u8>,
    /// `confirm_r`.
    #[serde(with = "serde_bytes")]
    pub confirm: Digest,
}

/// Joiner → opener: the joiner's confirmation and device signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshJoinFinish {
    /// `confirm_i`.
    #[serde(with = "serde_bytes")]
    pub confirm: Digest,
    /// Ed25519 signature over `device_proof("join", exporter)`.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// One member, as the mesh state lists it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MemberInfo {
    /// DER SubjectPublicKeyInfo of the member's TLS key; its device ID is the SHA-256 of it.
    #[serde(with = "serde_bytes")]
    pub spki: Vec<u8>,
    /// Display name.
    pub name: String,
    /// Where it was last known to serve TLS, `ip:port` (may be empty).
    #[serde(default)]
    pub addr: String,
}

/// The mesh state a member holds: handed to a joiner, and fetched by members to catch up.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshGrant {
    /// The mesh's name.
    pub name: String,
    /// The key's epoch.
    pub epoch: u64,
    /// The mesh key of that epoch.
    #[serde(with = "key_bytes")]
    pub key: MeshKey,
    /// Current members, the sender included.
    pub members: Vec<MemberInfo>,
    /// Device IDs removed from the mesh: never readmitted by merging member lists.
    #[serde(default)]
    pub removed: Vec<serde_bytes::ByteArray<32>>,
}

impl core::fmt::Debug for MeshGrant {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MeshGrant")
            .field("name", &self.name)
            .field("epoch", &self.epoch)
            .field("members", &self.members.len())
            .finish_non_exhaustive()
    }
}

/// Member → member: authentication with the member key and the device key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshAuth {
    /// The member's device ID.
    #[serde(with = "serde_bytes")]
    pub device: [u8; 32],
    /// The epoch of the key the MAC uses.
    pub epoch: u64,
    /// `member_mac(key, epoch, device, 'c', exporter)`.
    #[serde(with = "serde_bytes")]
    pub mac: Digest,
    /// Ed25519 signature over `device_proof("auth", exporter)`.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// One source's state, tombstones included, for mesh synchronisation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshEntry {
    /// Source name.
    pub source: String,
    /// Version.
    pub version: u64,
    /// BLAKE3 of the content; all zero for a tombstone.
    #[serde(with = "serde_bytes")]
    pub hash: Digest,
    /// Whether it is a tombstone.
    pub deleted: bool,
}

/// The highest version a member may announce or list. Versions count writes from 1, so no
/// honest source comes near; a member that announced one near `u64::MAX` would leave every
/// peer unable to write that source again (a local write continues from the highest version
/// seen).
pub const MAX_VERSION: u64 = 1 << 48;

/// Why a member's source state is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEntry {
    /// The source name breaks the rules of requests ([`crate::names`]).
    #[error("{0}")]
    Name(#[from] crate::names::NameError),
    /// Version 0, or above [`MAX_VERSION`].
    #[error("source version {0} is out of range")]
    Version(u64),
}

impl MeshEntry {
    /// Checks a member's source state: a valid source name (the rules requests follow) in
    /// NFC, as every server stores them, and a version from 1 to [`MAX_VERSION`].
    pub fn check(&self) -> Result<(), InvalidEntry> {
        crate::names::SourceName::parse_canonical(&self.source)?;
        if self.version == 0 || self.version > MAX_VERSION {
            return Err(InvalidEntry::Version(self.version));
        }
        Ok(())
    }
}

/// Ask for a page of every source's state, tombstones included.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshList {
    /// Start strictly after this name.
    #[serde(default)]
    pub after: Option<String>,
}

/// A page of source states, sorted by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshListOk {
    /// The page.
    pub entries: Vec<MeshEntry>,
    /// Whether more follow.
    pub more: bool,
}

/// Serialises a mesh key as a CBOR byte string (MeshKey itself has no `Serialize`, so it can
/// only reach the wire through a grant).
mod key_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::secret::MeshKey;

    pub(super) fn serialize<S: Serializer>(key: &MeshKey, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(key.expose_secret())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<MeshKey, D::Error> {
        let mut bytes = serde_bytes::ByteArray::<32>::deserialize(d)?.into_array();
        let key = MeshKey::from_bytes(bytes);
        zeroize::Zeroize::zeroize(&mut bytes);
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(source: &str, version: u64) -> MeshEntry {
        MeshEntry {
            source: source.into(),
            version,
            hash: [1; 32],
            deleted: false,
        }
    }

    #[test]
    fn entries_need_a_valid_name_and_a_sane_version() {
        assert_eq!(entry("docs/a.txt", 1).check(), Ok(()));
        assert_eq!(entry("docs/a.txt", MAX_VERSION).check(), Ok(()));
        assert_eq!(entry("Q3 report.pdf", 1).check(), Ok(()));
        assert_eq!(entry("\u{65e5}\u{672c}/\u{e9}t\u{e9}", 1).check(), Ok(()));
        for bad in [
            "",
            "../etc/passwd",
            "a//b",
            "a/./b",
            "a\u{1b}[2J",
            "x\n",
            "a\u{202e}b",
            // Not in NFC: a server stores only NFC names, so no member can hold this one.
            "e\u{301}t\u{e9}",
        ] {
            assert!(
                matches!(entry(bad, 1).check(), Err(InvalidEntry::Name(_))),
                "{bad:?}"
            );
        }
        assert!(
            entry(&"n".repeat(crate::names::MAX_SOURCE_LEN + 1), 1)
                .check()
                .is_err()
        );
        for v in [0, MAX_VERSION + 1, u64::MAX - 1, u64::MAX] {
            assert_eq!(entry("a", v).check(), Err(InvalidEntry::Version(v)));
        }
    }
}
