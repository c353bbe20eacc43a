//! The values that cross the seam: entries, heads, changes, upload keys.

use crate::{BackendError, Hash};

/// One version of a source, as recorded in the index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The source's name.
    pub source: String,
    /// Version number: counts up from 1 per source and never repeats, even after a delete.
    pub version: u64,
    /// Size of the blob in bytes.
    pub size: u64,
    /// BLAKE3 hash of the blob.
    pub hash: Hash,
    /// When this version was committed, in unix seconds (as given to the commit).
    pub modified: u64,
    /// Name of the principal that committed this version.
    pub by: String,
    /// What the uploader said about the file (kept, never interpreted).
    pub meta: Meta,
}

/// Optional metadata of a version, as its uploader gave it: kept with the version, returned
/// with it, never interpreted by the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    /// The file's modification time, in nanoseconds since the Unix epoch.
    pub mtime: Option<u64>,
    /// The file was executable.
    pub executable: bool,
}

/// A source's current record as the replica rule sees it: a live version or a tombstone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// The current version number (a tombstone's too).
    pub version: u64,
    /// BLAKE3 of the current content; all zeros for a tombstone.
    pub hash: Hash,
    /// `true` if the source is deleted (the head is a tombstone).
    pub deleted: bool,
}

impl Head {
    /// What the conflict rule compares: the version, then the hash (zeros for a tombstone).
    pub fn key(&self) -> (u64, Hash) {
        (self.version, if self.deleted { [0; 32] } else { self.hash })
    }
}

/// Whether a replicated `(version, hash)` replaces `current` (`None`: the source is unknown
/// here). A tombstone is passed as `hash = [0; 32]`.
///
/// The LAN mesh copies versions between peers that may change the same source concurrently;
/// every peer must end with the same head whatever order copies arrive in, so the greater
/// `(version, hash)` wins and an equal pair changes nothing (applying a copy twice is a no-op).
pub fn replica_wins(version: u64, hash: &Hash, current: Option<&Head>) -> bool {
    current.is_none_or(|c| (version, *hash) > c.key())
}

/// One logged change: a commit (a new current version) or a delete (a tombstone).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Backend-wide sequence number: from 1, strictly increasing, never reused.
    pub seq: u64,
    /// The source that changed.
    pub source: String,
    /// The version the change made current (a delete's tombstone takes a version too).
    pub version: u64,
    /// `true` for a delete.
    pub deleted: bool,
    /// Size of the new content (0 for a delete).
    pub size: u64,
    /// BLAKE3 of the new content (all zeros for a delete).
    pub hash: Hash,
    /// When the change was made, in unix seconds (as given to the backend).
    pub modified: u64,
    /// Name of the principal that made it.
    pub by: String,
}

/// A page of the change log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Changes {
    /// Changes with a sequence number above the one asked for, oldest first.
    pub changes: Vec<Change>,
    /// `true` if some changes after the one asked for are gone: pruned from the log, or the
    /// number asked for is beyond [`Changes::last`] (it comes from another store's history).
    /// `changes` then starts at [`Changes::oldest`].
    pub gap: bool,
    /// The oldest sequence number still in the log (`last + 1` if the log is empty).
    pub oldest: u64,
    /// The last sequence number given out (0 if none), as of this read.
    pub last: u64,
}

/// The name of a resumable upload: 1 to 128 characters from `[A-Za-z0-9_-]`, so that every
/// backend can use it as a file name or an object key as it is.
///
/// The engine derives it from what may continue the upload (principal, source, size and
/// whole-content hash, hashed together), so a different principal or different content
/// cannot reach another upload's parts.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UploadKey(String);

impl UploadKey {
    /// Longest key accepted.
    pub const MAX_LEN: usize = 128;

    /// Checks `key` and wraps it.
    pub fn new(key: &str) -> Result<UploadKey, BackendError> {
        let ok = !key.is_empty()
            && key.len() <= Self::MAX_LEN
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(UploadKey(key.to_owned()))
        } else {
            Err(BackendError::InvalidArgument(format!(
                "upload key must be 1-{} characters of [A-Za-z0-9_-]",
                Self::MAX_LEN
            )))
        }
    }

    /// A key derived from arbitrary bytes: the hex BLAKE3 of `material`.
    pub fn derive(material: &[u8]) -> UploadKey {
        UploadKey(blake3::hash(material).to_hex().to_string())
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks a principal name: at most 65535 bytes (the local index's length prefix).
pub fn check_by(by: &str) -> Result<(), BackendError> {
    if by.len() > usize::from(u16::MAX) {
        return Err(BackendError::InvalidArgument(format!(
            "principal name is {} bytes, at most {} are allowed",
            by.len(),
            u16::MAX
        )));
    }
    Ok(())
}

/// Checks a source name: 1 to 65535 bytes (the local change log's length prefix).
pub fn check_source(source: &str) -> Result<(), BackendError> {
    if source.is_empty() || source.len() > usize::from(u16::MAX) {
        return Err(BackendError::InvalidArgument(format!(
            "source name is {} bytes, 1 to {} are allowed",
            source.len(),
            u16::MAX
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn upload_keys_are_file_name_safe() {
        assert!(UploadKey::new("abc-DEF_09").is_ok());
        for bad in ["", "a/b", "..", "a b", "é", &"a".repeat(129)] {
            assert!(
                matches!(UploadKey::new(bad), Err(BackendError::InvalidArgument(_))),
                "{bad:?}"
            );
        }
        let derived = UploadKey::derive(b"alice\0src");
        assert_eq!(UploadKey::new(derived.as_str()).unwrap(), derived);
        assert_ne!(derived, UploadKey::derive(b"bob\0src"));
    }

    #[test]
    fn replica_rule_orders_version_then_hash() {
        let h = |v, b, d| Head {
            version: v,
            hash: [b; 32],
            deleted: d,
        };
        assert!(replica_wins(1, &[0; 32], None));
        assert!(replica_wins(2, &[0; 32], Some(&h(1, 9, false))));
        assert!(replica_wins(1, &[2; 32], Some(&h(1, 1, false))));
        assert!(!replica_wins(1, &[1; 32], Some(&h(1, 1, false))));
        // A tombstone counts as hash zero: any live content of the same version beats it.
        assert!(replica_wins(3, &[1; 32], Some(&h(3, 7, true))));
    }
}

/// What one principal's kept versions take in the index: the versions it committed that are
/// still kept (not pruned, not deleted) and the sum of their sizes. Shared content counts for
/// each version that references it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Sum of the sizes of the kept versions.
    pub bytes: u64,
    /// Number of kept versions.
    pub versions: u64,
}
