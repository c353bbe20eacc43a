//! The local hash cache of `ferry sync` and `ferry get -r` (format and trust rule:
//! `ferry_proto::hash_cache`): the BLAKE3 of a local file is read from the cache instead of
//! the file when nothing about the file changed since it was hashed.
//!
//! One cache file per local folder, `<cache dir>/ferry/hashes/<BLAKE3 of the folder's
//! canonical path, 32 hex>` (the cache dir is `$XDG_CACHE_HOME` or `~/.cache`), mode 0600 in a
//! 0700 folder: it names the files. It is an optimisation only: a missing, unreadable or
//! malformed cache is rebuilt, a failure to save it is a note, never an error of the command.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use ferry::proto::hash_cache::{self, Cached, Stamp};
use ferry::proto::message::Digest;

/// `path`'s name under `root`, the cache's key (lossy for a name that is not UTF-8: two such
/// names could share a key, but never a stamp, which holds the inode).
pub(crate) fn rel(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

/// The cache of one local folder, for one run.
pub(crate) struct HashCache {
    /// Where it is saved; `None` when there is no cache folder.
    file: Option<PathBuf>,
    /// What the last run left.
    old: BTreeMap<String, Cached>,
    /// What this run saw: saved in place of `old`.
    new: BTreeMap<String, Cached>,
    /// `false` with `--checksum`: every file is read, the cache only written.
    believe: bool,
    /// Files whose hash came from the cache.
    pub hits: u64,
}

fn nanos(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// The stamp of a file's metadata.
pub(crate) fn stamp(m: &fs::Metadata) -> Stamp {
    Stamp {
        size: m.len(),
        mtime_ns: nanos(m.mtime(), m.mtime_nsec()),
        ctime_ns: nanos(m.ctime(), m.ctime_nsec()),
        ino: m.ino(),
        dev: m.dev(),
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Where the cache of folder `root` lives, if there is a cache folder.
fn location(root: &Path) -> Option<PathBuf> {
    let canonical = fs::canonicalize(root).ok()?;
    let id = blake3::hash(canonical.as_os_str().as_encoded_bytes()).to_hex();
    Some(
        dirs::cache_dir()?
            .join("ferry")
            .join("hashes")
            .join(&id.as_str()[..32]),
    )
}

/// The cache file's bytes, if it is at most [`hash_cache::MAX_LEN`] (a larger one is not
/// read into memory: it is ignored and rebuilt).
fn read_bounded(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let limit = u64::try_from(hash_cache::MAX_LEN).ok()?;
    let mut bytes = Vec::new();
    fs::File::open(path)
        .ok()?
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .ok()?;
    (bytes.len() as u64 <= limit).then_some(bytes)
}

impl HashCache {
    /// The cache of folder `root` (`believe = false`: read every file, as `--checksum`).
    pub(crate) fn open(root: &Path, believe: bool) -> HashCache {
        let file = location(root);
        let old = file
            .as_deref()
            .and_then(read_bounded)
            .and_then(|bytes| hash_cache::decode(&bytes).ok())
            .unwrap_or_default();
        HashCache {
            file,
            old,
            new: BTreeMap::new(),
            believe,
            hits: 0,
        }
    }

    /// The BLAKE3 of the file at `path`, known as `rel` (its path under the folder): from the
    /// cache if it may be believed, else read (and remembered if the file held still while it
    /// was read and had been left alone long enough before).
    pub(crate) async fn hash(&mut self, path: &Path, rel: &str) -> std::io::Result<Digest> {
        let meta = fs::symlink_metadata(path)?;
        if !meta.is_file() {
            return Err(std::io::Error::other("not a regular file"));
        }
        let now = stamp(&meta);
        if let Some(c) = self.old.get(rel)
            && let Some(h) = c.trusted(&now).filter(|_| self.believe)
        {
            self.hits += 1;
            self.new.insert(rel.to_owned(), *c);
            return Ok(h);
        }
        let file = fs::File::open(path)?;
        let before = stamp(&file.metadata()?);
        let hashed_at_ns = now_ns();
        let (file, _, hash) = ferry::client::hash_file(file)
            .await
            .map_err(std::io::Error::other)?;
        let after = stamp(&file.metadata()?);
        let c = Cached {
            stamp: before,
            hashed_at_ns,
            hash,
        };
        if before == after && c.trusted(&after).is_some() && hash_cache::storable(rel) {
            self.new.insert(rel.to_owned(), c);
        }
        Ok(hash)
    }

    /// Whether the file at `path` is a regular file (not a link) with `size` bytes and BLAKE3
    /// `hash`.
    pub(crate) async fn matches(
        &mut self,
        path: &Path,
        rel: &str,
        size: u64,
        hash: &Digest,
    ) -> bool {
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_file() && m.len() == size => {}
            _ => return false,
        }
        self.hash(path, rel).await.is_ok_and(|h| h == *hash)
    }

    /// Forgets `rel` (a file about to be sent because it differed: if its remembered hash was
    /// what made it differ, that hash is not believed again).
    pub(crate) fn forget(&mut self, rel: &str) {
        self.new.remove(rel);
    }

    /// Saves what this run saw; files not looked at this run are forgotten (so the cache
    /// never holds more than the folder's last run needed).
    pub(crate) fn save(mut self) {
        let Some(file) = self.file.take() else {
            return;
        };
        let text = hash_cache::encode(&self.new);
        let saved = file
            .parent()
            .map_or(Ok(()), ferry::fsutil::create_private_dir)
            .and_then(|()| ferry::fsutil::write_atomic(&file, text.as_bytes(), 0o600));
        if let Err(e) = saved {
            eprintln!(
                "note: could not save the hash cache {}: {e}",
                file.display()
            );
        }
    }
}
