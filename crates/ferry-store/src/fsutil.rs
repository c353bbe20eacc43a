//! Small file system helpers (Unix).

use std::fmt::Write as _;
use std::fs::{self, DirBuilder, File};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::Hash;

/// Mode of every folder the store creates.
pub(crate) const DIR_MODE: u32 = 0o700;
/// Mode of a temp file while it is written.
pub(crate) const TMP_FILE_MODE: u32 = 0o600;
/// Mode of a finished blob file.
pub(crate) const BLOB_FILE_MODE: u32 = 0o400;

/// Creates `dir` (one level) with [`DIR_MODE`]. Returns `true` if it was created, `false`
/// if it already existed as a folder.
pub(crate) fn create_dir(dir: &Path) -> io::Result<bool> {
    match DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Creates `dir` and its missing parents with [`DIR_MODE`].
pub(crate) fn create_dir_all(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Flushes a folder's entries (created, renamed files) to stable storage.
pub(crate) fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes a file, treating "already gone" as success. Returns whether it removed one.
pub(crate) fn remove_file_if_exists(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// `blobs/ab` and `cdef…` for a hash: the subfolder and the file name.
pub(crate) fn blob_location(blobs: &Path, hash: &Hash) -> (PathBuf, PathBuf) {
    let dir = blobs.join(hex(&hash[..1]));
    let file = dir.join(hex(&hash[1..]));
    (dir, file)
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Parses a blob's subfolder name (2 hex chars) and file name (62 hex chars), lowercase
/// only, back into its hash. `None` if they are not a blob's names.
pub(crate) fn parse_blob_name(dir: &str, file: &str) -> Option<Hash> {
    if dir.len() != 2 || file.len() != 62 {
        return None;
    }
    let mut hash = [0u8; 32];
    let digits = dir.bytes().chain(file.bytes());
    let mut high: Option<u8> = None;
    let mut i = 0usize;
    for c in digits {
        let v = hex_value(c)?;
        match high.take() {
            None => high = Some(v),
            Some(h) => {
                *hash.get_mut(i)? = (h << 4) | v;
                i += 1;
            }
        }
    }
    (i == 32).then_some(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_names_round_trip() {
        let hash: Hash = *blake3::hash(b"hello").as_bytes();
        let (dir, file) = blob_location(Path::new("/b"), &hash);
        let d = dir.file_name().unwrap().to_str().unwrap();
        let f = file.file_name().unwrap().to_str().unwrap();
        assert_eq!(format!("{d}{f}"), blake3::hash(b"hello").to_hex().as_str());
        assert_eq!(parse_blob_name(d, f), Some(hash));
    }

    #[test]
    fn rejects_non_blob_names() {
        let f = "0".repeat(62);
        assert_eq!(parse_blob_name("00", &f), Some([0u8; 32]));
        assert_eq!(parse_blob_name("0", &f), None);
        assert_eq!(parse_blob_name("00", &f[1..]), None);
        assert_eq!(parse_blob_name("AB", &f), None);
        assert_eq!(parse_blob_name("0g", &f), None);
        let upper = "A".repeat(62);
        assert_eq!(parse_blob_name("00", &upper), None);
        assert_eq!(parse_blob_name("00", &format!("{f}.tmp")), None);
        // Multi-byte UTF-8 of the right byte length is rejected, not sliced.
        let weird = format!("é{}", "0".repeat(60));
        assert_eq!(parse_blob_name("00", &weird), None);
    }
}
