//! The store: redb index plus content-addressed blob folder.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::ops::Bound;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction};

use crate::fsutil::{self, TMP_FILE_MODE, blob_location, hex, parse_blob_name};
use crate::record::{Record, check_by};
use crate::writer::{BlobWriter, StagedBlob};
use crate::{Entry, Hash, Meta, StoreError};

/// Source name (UTF-8 bytes) → current record: the live entry, or a tombstone.
///
/// Keys are byte strings rather than `&str` so that a damaged key is reported as
/// [`StoreError::Corrupt`] instead of panicking inside redb's UTF-8 decoding. Byte order is
/// the same as `str` order.
const CURRENT: TableDefinition<&[u8], &[u8]> = TableDefinition::new("current");
/// (source name, version) → record of a live version (the current one included).
const VERSIONS: TableDefinition<(&[u8], u64), &[u8]> = TableDefinition::new("versions");
/// Blob hash → number of `VERSIONS` records that reference it. Absent means zero.
const BLOB_REFS: TableDefinition<&[u8; 32], u64> = TableDefinition::new("blob_refs");
/// Store-wide settings; `"format"` holds [`FORMAT_VERSION`].
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

const FORMAT_KEY: &str = "format";
/// 2 added the `changes` table and `meta["last_seq"]`; 3 the `usage` table (what each
/// principal's kept versions take); 4 a version's optional metadata at the end of its record
/// (record.rs; nothing to upgrade: a record without it is unchanged); 5 the `manifests` and
/// `pack_refs` tables of contents made of chunks (store/packs.rs; they start empty); 6 the
/// chunk index (`chunks`, `file_chunks`, store/chunk_index.rs) and `dedup_pending`
/// (store/dedup.rs; an upgrade queues the whole contents already stored). An older index is upgraded on open (a format-1 log
/// starts empty; the usage is counted from the versions); a binary that knows only an older
/// format refuses a newer index, so it cannot commit without keeping the tables the newer one
/// added.
const FORMAT_VERSION: u64 = 6;
/// Formats [`init_tables`] upgrades to [`FORMAT_VERSION`].
const UPGRADABLE_FORMATS: &[u64] = &[1, 2, 3, 4, 5];

const INDEX_FILE: &str = "index.redb";
const BLOBS_DIR: &str = "blobs";
const TMP_DIR: &str = "tmp";
const UPLOADS_DIR: &str = "uploads";

type VersionsTable<'t> = Table<'t, (&'static [u8], u64), &'static [u8]>;
type RefsTable<'t> = Table<'t, &'static [u8; 32], u64>;

/// A test hook called at each step of a dedup rewrite.
#[cfg(test)]
type DedupHook = Box<dyn FnMut(&'static str) + Send>;

/// A content made of chunks, as a commit records it.
struct Composed {
    pack: Option<Hash>,
    extents: Vec<Extent>,
    /// Whether its chunks go into the chunk index (store/chunk_index.rs).
    index: bool,
}

/// Options for [`Store::open`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// How many versions of each source to keep, the current one included. Older versions
    /// are pruned when a new one is committed. `0` is treated as `1`.
    pub keep_versions: u32,
    /// How many of the latest changes the change log keeps (see [`Store::changes_since`]);
    /// older ones are pruned in the transaction that logs a new one. `0` is treated as `1`.
    pub keep_changes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            keep_versions: 3,
            keep_changes: 100_000,
        }
    }
}

impl Record {
    fn into_entry(self, source: String) -> Entry {
        Entry {
            source,
            version: self.version,
            size: self.size,
            hash: self.hash,
            modified: self.modified,
            by: self.by,
            meta: self.meta,
        }
    }
}

/// The embedded store. `Send + Sync`; share it in an `Arc`.
///
/// All methods block on disk I/O: call them from `spawn_blocking` in async code.
pub struct Store {
    dir: PathBuf,
    blobs: PathBuf,
    tmp: PathBuf,
    uploads: PathBuf,
    /// Keys of the resumable uploads with an open handle (see `store/uploads.rs`).
    open_uploads: uploads::OpenUploads,
    db: Database,
    keep_versions: u64,
    keep_changes: u64,
    /// Moved to the new sequence number after every transaction that logged a change.
    changed: tokio::sync::watch::Sender<u64>,
    /// Readers hold it shared across "look up + open the blob file", and commits across
    /// "place the blob file + index transaction"; deleting unreferenced blob files holds it
    /// exclusively. So no file is deleted between a lookup and its open, nor between a
    /// commit finding a blob file present and recording its reference.
    blob_lock: RwLock<()>,
    /// Makes temp names unique to this `Store` instance.
    tmp_prefix: String,
    tmp_counter: AtomicU64,
    /// Test hook run once by `open_blob` between the index lookup and opening the file.
    #[cfg(test)]
    before_blob_open: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// Contents open for reading ([`Content`]).
    open_reads: std::sync::Arc<AtomicU64>,
    /// One dedup pass at a time (store/dedup.rs).
    dedup_lock: std::sync::Mutex<()>,
    /// Wakes the dedup worker after a change (dedup_worker.rs).
    pub(crate) dedup_signal: std::sync::Arc<crate::dedup_worker::Signal>,
    /// Whether a dedup worker was started for this store.
    pub(crate) dedup_worker_started: std::sync::atomic::AtomicBool,
    /// Test hook called at each step of a dedup rewrite.
    #[cfg(test)]
    dedup_hook: std::sync::Mutex<Option<DedupHook>>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("keep_versions", &self.keep_versions)
            .field("keep_changes", &self.keep_changes)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir`.
    ///
    /// Creates `dir`, `blobs/`, `tmp/` and `uploads/` (mode `0o700`) and `index.redb`, then
    /// deletes every file in `tmp/` and every blob file the index does not reference (left by
    /// a crash between placing a blob and committing the index). Resumable uploads in
    /// `uploads/` are kept: [`Store::sweep_uploads`] removes abandoned ones.
    ///
    /// Only one `Store` can have a directory open at a time: a second open fails with
    /// [`StoreError::Database`] (redb's file lock) before touching any file.
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<Store, StoreError> {
        fsutil::create_dir_all(dir)?;
        let blobs = dir.join(BLOBS_DIR);
        let tmp = dir.join(TMP_DIR);
        let created_blobs = fsutil::create_dir(&blobs)?;
        let created_tmp = fsutil::create_dir(&tmp)?;
        let uploads = dir.join(UPLOADS_DIR);
        let created_uploads = fsutil::create_dir(&uploads)?;

        let index = dir.join(INDEX_FILE);
        // Create the file ourselves so that it gets mode 0o600; redb initialises an empty file.
        let created_index = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(TMP_FILE_MODE)
            .open(&index)
        {
            Ok(_) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(e.into()),
        };
        if created_blobs || created_tmp || created_uploads || created_index {
            fsutil::fsync_dir(dir)?;
        }
        let db = Database::create(&index)?;
        init_tables(&db)?;

        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let store = Store {
            dir: dir.to_path_buf(),
            blobs,
            tmp,
            uploads,
            open_uploads: Default::default(),
            db,
            keep_versions: u64::from(opts.keep_versions.max(1)),
            keep_changes: opts.keep_changes.max(1),
            changed: tokio::sync::watch::Sender::new(0),
            blob_lock: RwLock::new(()),
            tmp_prefix: format!("{:x}-{nanos:x}", std::process::id()),
            tmp_counter: AtomicU64::new(0),
            #[cfg(test)]
            before_blob_open: std::sync::Mutex::new(None),
            open_reads: Default::default(),
            dedup_lock: std::sync::Mutex::new(()),
            dedup_signal: Default::default(),
            dedup_worker_started: Default::default(),
            #[cfg(test)]
            dedup_hook: std::sync::Mutex::new(None),
        };
        store.changed.send_replace(store.last_seq()?);
        let swept_tmp = store.sweep_tmp()?;
        let (orphans, unexpected) = store.sweep_orphan_blobs()?;
        tracing::info!(
            dir = %store.dir.display(),
            swept_tmp,
            orphans,
            unexpected,
            "store opened"
        );
        Ok(store)
    }

    /// Starts an upload: a temp file in `tmp/` that hashes what is written to it.
    pub fn begin_put(&self) -> Result<BlobWriter, StoreError> {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let path = self.tmp.join(format!("{}-{n:016x}.part", self.tmp_prefix));
        Ok(BlobWriter::create(path)?)
    }

    /// Makes a finished upload the new current version of `source` and returns its entry.
    ///
    /// Versions count up from 1 per source and never repeat, even after a delete. The blob
    /// file is placed (and its folder fsynced) before the index transaction; versions beyond
    /// `keep_versions` are pruned in the same transaction, and their blob files deleted after
    /// it committed if nothing else references them.
    pub fn commit(
        &self,
        source: &str,
        staged: StagedBlob,
        by: &str,
        now: u64,
    ) -> Result<Entry, StoreError> {
        check_by(by)?;
        let content = (staged.hash(), staged.size(), staged.meta());
        let size = content.1;
        let (entry, freed, seq) = {
            let _placing = self.read_lock();
            let composed = self.composition_to_commit(&staged)?;
            self.place_blob(staged)?;
            self.commit_index(source, content, composed, by, now)?
        };
        self.notify(seq);
        self.remove_unreferenced(&freed);
        tracing::debug!(source, version = entry.version, size, seq, "committed");
        Ok(entry)
    }

    /// The current entry of `source`; `None` if it is missing or deleted.
    pub fn stat(&self, source: &str) -> Result<Option<Entry>, StoreError> {
        let txn = self.db.begin_read()?;
        let current = txn.open_table(CURRENT)?;
        let rec = match current.get(source.as_bytes())? {
            Some(guard) => Record::decode(guard.value())?,
            None => return Ok(None),
        };
        Ok((!rec.deleted).then(|| rec.into_entry(source.to_owned())))
    }

    /// Looks up a version of `source` (`None`: the current one) and opens its blob file, both
    /// under one lock, so a concurrent prune cannot delete the file in between. Returns `None`
    /// if there is no such live version.
    ///
    /// The returned file stays readable even if the version is pruned afterwards.
    pub fn open_blob(
        &self,
        source: &str,
        version: Option<u64>,
    ) -> Result<Option<(Entry, Content)>, StoreError> {
        let _reading = self.read_lock();
        let txn = self.db.begin_read()?;
        let rec = match version {
            None => {
                let current = txn.open_table(CURRENT)?;
                let rec = match current.get(source.as_bytes())? {
                    Some(guard) => Record::decode(guard.value())?,
                    None => return Ok(None),
                };
                if rec.deleted {
                    return Ok(None);
                }
                rec
            }
            Some(v) => {
                let versions = txn.open_table(VERSIONS)?;
                match versions.get((source.as_bytes(), v))? {
                    Some(guard) => decode_version(guard.value(), v)?,
                    None => return Ok(None),
                }
            }
        };
        #[cfg(test)]
        {
            let hook = self
                .before_blob_open
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(hook) = hook {
                hook();
            }
        }
        let content = match self.open_content(&rec.hash)? {
            Some(content) => content,
            // Pruned since the lookup: its file, if it had one, is still there (files go
            // only under the write lock), as it was when the version was looked up.
            None => match self.open_file_content(&rec.hash)? {
                Some(content) => content,
                None => return Ok(None),
            },
        };
        if content.size() != rec.size {
            return Err(StoreError::Corrupt(format!(
                "blob {} of {source:?} version {} has {} bytes, the index says {}",
                hex(&rec.hash),
                rec.version,
                content.size(),
                rec.size
            )));
        }
        Ok(Some((rec.into_entry(source.to_owned()), content)))
    }

    /// Current entries whose source name starts with `prefix` (a plain string prefix), sorted
    /// by name: at most `limit` of them, starting strictly after `after` if given (for paging:
    /// pass the last name of the previous page). Deleted sources are skipped.
    pub fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        Ok(self
            .scan(prefix, after, limit, false)?
            .into_iter()
            .map(|(name, rec)| rec.into_entry(name))
            .collect())
    }

    /// The records of [`Store::list`], tombstones included if `deleted` is set.
    fn scan(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        deleted: bool,
    ) -> Result<Vec<(String, Record)>, StoreError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let start: Bound<&[u8]> = match after {
            Some(a) if a >= prefix => Bound::Excluded(a.as_bytes()),
            _ => Bound::Included(prefix.as_bytes()),
        };
        let txn = self.db.begin_read()?;
        let current = txn.open_table(CURRENT)?;
        for item in current.range::<&[u8]>((start, Bound::Unbounded))? {
            let (key, value) = item?;
            let name = key.value();
            // Names with the prefix are contiguous and sort from the prefix itself on.
            if !name.starts_with(prefix.as_bytes()) {
                break;
            }
            let rec = Record::decode(value.value())?;
            if rec.deleted && !deleted {
                continue;
            }
            out.push((source_name(name)?, rec));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Deletes `source`: records a tombstone (so its version counter continues), drops all its
    /// versions and deletes the blob files nobody else references. Returns the tombstone's
    /// version, or `None` if the source did not exist (or was already deleted).
    pub fn delete(&self, source: &str, by: &str, now: u64) -> Result<Option<u64>, StoreError> {
        check_by(by)?;
        let txn = self.db.begin_write()?;
        let outcome = {
            let mut current = txn.open_table(CURRENT)?;
            let mut versions = txn.open_table(VERSIONS)?;
            let mut refs = txn.open_table(BLOB_REFS)?;
            let mut usage = txn.open_table(USAGE)?;
            let prev = match current.get(source.as_bytes())? {
                Some(guard) => Some(Record::decode(guard.value())?),
                None => None,
            };
            match prev {
                Some(prev) if !prev.deleted => {
                    let version = next_version(&prev, source)?;
                    let tombstone = Record {
                        deleted: true,
                        version,
                        size: 0,
                        hash: [0; 32],
                        modified: now,
                        by: by.to_owned(),
                        meta: Meta::default(),
                    };
                    current.insert(source.as_bytes(), tombstone.encode()?.as_slice())?;
                    let mut freed = Vec::new();
                    let mut tables = (&mut versions, &mut refs, &mut usage);
                    prune_versions(&mut tables, source, 0, &mut freed)?;
                    Some((version, freed, tombstone))
                }
                _ => None,
            }
        };
        let Some((version, mut freed, tombstone)) = outcome else {
            txn.abort()?;
            return Ok(None);
        };
        packs::release_contents(&txn, &mut freed)?;
        let seq = changes::append(&txn, source, &tombstone, self.keep_changes)?;
        txn.commit()?;
        self.notify(seq);
        self.remove_unreferenced(&freed);
        tracing::debug!(source, version, seq, "deleted");
        Ok(Some(version))
    }

    fn read_lock(&self) -> RwLockReadGuard<'_, ()> {
        // The lock guards no data, so a poisoned lock is still sound to use.
        self.blob_lock
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write_lock(&self) -> RwLockWriteGuard<'_, ()> {
        self.blob_lock
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves a staged upload to `blobs/xx/hash`, or drops it if that blob is already there.
    /// Called with the read lock held.
    fn place_blob(&self, mut staged: StagedBlob) -> Result<(), StoreError> {
        let Some(hash) = staged.file_hash() else {
            return Ok(()); // a delta that brought no chunk: no file
        };
        let (dir, dest) = blob_location(&self.blobs, &hash);
        match fs::symlink_metadata(&dest) {
            Ok(meta) if meta.is_file() && meta.len() == staged.file_size() => {
                drop(staged); // deletes the temp file
                // The file may have been placed by a commit still in flight: make sure its
                // folder entry is durable before the index refers to it.
                fsutil::fsync_dir(&dir)?;
                return Ok(());
            }
            Ok(meta) => {
                tracing::warn!(
                    path = %dest.display(),
                    len = meta.len(),
                    expected = staged.file_size(),
                    "blob file has the wrong size or type; replacing it"
                );
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        if fsutil::create_dir(&dir)? {
            fsutil::fsync_dir(&self.blobs)?;
        }
        let src = staged
            .guard_mut()
            .path()
            .ok_or_else(|| StoreError::InvalidArgument("staged blob has no file".into()))?
            .to_path_buf();
        fs::rename(&src, &dest)?;
        staged.guard_mut().disarm();
        fsutil::fsync_dir(&dir)?;
        Ok(())
    }

    /// What a commit of `staged` must record if it is made of chunks: checked, with the read
    /// lock held, that every file its extents use is still there
    /// ([`StoreError::BlobNotFound`] if one went, with the version it came from).
    fn composition_to_commit(&self, staged: &StagedBlob) -> Result<Option<Composed>, StoreError> {
        let Some(c) = staged.composition() else {
            return Ok(None);
        };
        if !self.files_present(&c.extents, c.pack.as_ref())? {
            return Err(StoreError::BlobNotFound);
        }
        Ok(Some(Composed {
            pack: c.pack,
            extents: c.extents.clone(),
            index: true,
        }))
    }

    /// The index half of [`Store::commit`]: one write transaction, which also logs the
    /// change. Returns the entry, the blobs it freed and the change's sequence number.
    fn commit_index(
        &self,
        source: &str,
        (hash, size, meta): (Hash, u64, Meta),
        composed: Option<Composed>,
        by: &str,
        now: u64,
    ) -> Result<(Entry, Vec<Hash>, u64), StoreError> {
        let txn = self.db.begin_write()?;
        let (entry, freed, seq) =
            self.commit_in(&txn, source, (hash, size, meta), composed, by, now)?;
        txn.commit()?;
        Ok((entry, freed, seq))
    }

    /// [`Store::commit_index`] inside the write transaction `txn`, which the caller commits.
    fn commit_in(
        &self,
        txn: &WriteTransaction,
        source: &str,
        (hash, size, meta): (Hash, u64, Meta),
        composed: Option<Composed>,
        by: &str,
        now: u64,
    ) -> Result<(Entry, Vec<Hash>, u64), StoreError> {
        let (rec, mut freed, was_live) = {
            let mut current = txn.open_table(CURRENT)?;
            let mut versions = txn.open_table(VERSIONS)?;
            let mut refs = txn.open_table(BLOB_REFS)?;
            let mut usage = txn.open_table(USAGE)?;
            // Read the previous version inside the write transaction: redb serialises write
            // transactions, so concurrent commits get distinct, increasing versions.
            let version = match current.get(source.as_bytes())? {
                Some(guard) => next_version(&Record::decode(guard.value())?, source)?,
                None => 1,
            };
            let rec = Record {
                deleted: false,
                version,
                size,
                hash,
                modified: now,
                by: by.to_owned(),
                meta,
            };
            let bytes = rec.encode()?;
            versions.insert((source.as_bytes(), version), bytes.as_slice())?;
            usage::added(&mut usage, &rec)?;
            current.insert(source.as_bytes(), bytes.as_slice())?;
            let was_live = refs.get(&hash)?.is_some();
            add_ref(&mut refs, &hash)?;
            if composed.is_none() {
                dedup::queue(txn, &hash, size)?;
            }
            let mut freed = Vec::new();
            let mut tables = (&mut versions, &mut refs, &mut usage);
            prune_versions(&mut tables, source, self.keep_versions, &mut freed)?;
            (rec, freed, was_live)
        };
        if let Some(c) = composed {
            if was_live {
                // Already stored: the pack this delta brought is not needed.
                freed.extend(c.pack);
            } else {
                packs::add_content(txn, &hash, &c.extents, c.index)?;
            }
        }
        packs::release_contents(txn, &mut freed)?;
        let seq = changes::append(txn, source, &rec, self.keep_changes)?;
        Ok((rec.into_entry(source.to_owned()), freed, seq))
    }

    /// After a committed transaction: deletes the blob files whose reference count reached
    /// zero, unless a later commit referenced them again. Failures are logged, not returned
    /// (the transaction did commit); the next [`Store::open`] removes what is left.
    fn remove_unreferenced(&self, freed: &[Hash]) {
        if freed.is_empty() {
            return;
        }
        let _deleting = self.write_lock();
        let result = (|| -> Result<(), StoreError> {
            let txn = self.db.begin_read()?;
            for hash in freed {
                if packs::file_needed(&txn, hash)? {
                    continue; // referenced again by a commit since
                }
                let (_, path) = blob_location(&self.blobs, hash);
                match fsutil::remove_file_if_exists(&path) {
                    Ok(_) => tracing::debug!(blob = %hex(hash), "deleted unreferenced blob"),
                    Err(e) => tracing::warn!(
                        path = %path.display(),
                        error = %e,
                        "could not delete unreferenced blob; the next open retries"
                    ),
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not check blob references; the next open retries");
        }
    }

    /// Deletes everything in `tmp/`. Returns how many entries it removed.
    fn sweep_tmp(&self) -> Result<u64, StoreError> {
        let mut removed = 0;
        for item in fs::read_dir(&self.tmp)? {
            let item = item?;
            let path = item.path();
            if item.file_type()?.is_dir() {
                fs::remove_dir_all(&path)?;
            } else {
                fs::remove_file(&path)?;
            }
            removed += 1;
        }
        Ok(removed)
    }

    /// Deletes blob files the index does not reference. Returns how many it deleted, and how
    /// many entries of `blobs/` it left alone because they are not named like blobs.
    fn sweep_orphan_blobs(&self) -> Result<(u64, u64), StoreError> {
        let txn = self.db.begin_read()?;
        let (mut removed, mut unexpected) = (0, 0);
        for sub in fs::read_dir(&self.blobs)? {
            let sub = sub?;
            let sub_name = sub.file_name();
            let Some(sub_name) = sub_name
                .to_str()
                .filter(|_| sub.file_type().is_ok_and(|t| t.is_dir()))
            else {
                tracing::warn!(path = %sub.path().display(), "unexpected entry in blobs/, left alone");
                unexpected += 1;
                continue;
            };
            for item in fs::read_dir(sub.path())? {
                let item = item?;
                let path = item.path();
                let hash = item
                    .file_name()
                    .to_str()
                    .and_then(|name| parse_blob_name(sub_name, name))
                    .filter(|_| item.file_type().is_ok_and(|t| t.is_file()));
                let Some(hash) = hash else {
                    tracing::warn!(path = %path.display(), "unexpected entry in blobs/, left alone");
                    unexpected += 1;
                    continue;
                };
                if !packs::file_needed(&txn, &hash)? {
                    fsutil::remove_file_if_exists(&path)?;
                    tracing::debug!(path = %path.display(), "deleted orphan blob");
                    removed += 1;
                }
            }
        }
        Ok((removed, unexpected))
    }
}

/// Creates the tables and checks the format version.
fn init_tables(db: &Database) -> Result<(), StoreError> {
    let txn = db.begin_write()?;
    {
        txn.open_table(CURRENT)?;
        txn.open_table(VERSIONS)?;
        txn.open_table(BLOB_REFS)?;
        txn.open_table(changes::CHANGES)?;
        txn.open_table(USAGE)?;
        txn.open_table(packs::MANIFESTS)?;
        txn.open_table(packs::PACK_REFS)?;
        txn.open_table(chunk_index::CHUNKS)?;
        txn.open_table(chunk_index::FILE_CHUNKS)?;
        txn.open_table(dedup::DEDUP_PENDING)?;
        let mut meta = txn.open_table(META)?;
        let format = meta.get(FORMAT_KEY)?.map(|guard| guard.value());
        match format {
            None => {
                meta.insert(FORMAT_KEY, FORMAT_VERSION)?;
            }
            Some(FORMAT_VERSION) => {}
            Some(old) if UPGRADABLE_FORMATS.contains(&old) => {
                // The tables above were created if missing; the usage is counted once.
                let counted = usage::rebuild(&txn)?;
                let queued = dedup::queue_stored(&txn)?;
                tracing::info!(
                    from = old,
                    to = FORMAT_VERSION,
                    versions = counted,
                    queued,
                    "store index upgraded"
                );
                meta.insert(FORMAT_KEY, FORMAT_VERSION)?;
            }
            Some(other) => {
                return Err(StoreError::Corrupt(format!(
                    "index format {other} is not supported (expected {FORMAT_VERSION})"
                )));
            }
        }
    }
    txn.commit()?;
    Ok(())
}

fn source_name(bytes: &[u8]) -> Result<String, StoreError> {
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|e| StoreError::Corrupt(format!("source name in index is not UTF-8: {e}")))
}

fn next_version(prev: &Record, source: &str) -> Result<u64, StoreError> {
    prev.version
        .checked_add(1)
        .ok_or_else(|| StoreError::Corrupt(format!("version counter of {source:?} is exhausted")))
}

/// Decodes a `VERSIONS` record, checking it agrees with its key.
fn decode_version(bytes: &[u8], version: u64) -> Result<Record, StoreError> {
    let rec = Record::decode(bytes)?;
    if rec.deleted || rec.version != version {
        return Err(StoreError::Corrupt(format!(
            "version record {version} holds version {} (tombstone: {})",
            rec.version, rec.deleted
        )));
    }
    Ok(rec)
}

fn add_ref(refs: &mut RefsTable<'_>, hash: &Hash) -> Result<(), StoreError> {
    let count = refs.get(hash)?.map_or(0, |guard| guard.value());
    let count = count.checked_add(1).ok_or_else(|| {
        StoreError::Corrupt(format!("reference count of blob {} overflows", hex(hash)))
    })?;
    refs.insert(hash, count)?;
    Ok(())
}

/// Drops one reference to `hash`; records it in `freed` when none is left.
fn release_ref(
    refs: &mut RefsTable<'_>,
    hash: &Hash,
    freed: &mut Vec<Hash>,
) -> Result<(), StoreError> {
    let count = refs.get(hash)?.map(|guard| guard.value());
    match count {
        None | Some(0) => Err(StoreError::Corrupt(format!(
            "blob {} is referenced by a version but has no reference count",
            hex(hash)
        ))),
        Some(1) => {
            refs.remove(hash)?;
            freed.push(*hash);
            Ok(())
        }
        Some(n) => {
            refs.insert(hash, n - 1)?;
            Ok(())
        }
    }
}

/// The tables a version's removal changes.
type PruneTables<'a, 't> = (
    &'a mut VersionsTable<'t>,
    &'a mut RefsTable<'t>,
    &'a mut UsageTable<'t>,
);

/// Removes the oldest versions of `source` so that at most `keep` remain, releasing their
/// blobs and their principals' usage.
fn prune_versions(
    (versions, refs, usage): &mut PruneTables<'_, '_>,
    source: &str,
    keep: u64,
    freed: &mut Vec<Hash>,
) -> Result<(), StoreError> {
    let key = source.as_bytes();
    // Version numbers only (normally keep + 1 of them), oldest first.
    let mut present = Vec::new();
    for item in versions.range((key, 0u64)..=(key, u64::MAX))? {
        let (k, _) = item?;
        present.push(k.value().1);
    }
    let excess = present
        .len()
        .saturating_sub(usize::try_from(keep).unwrap_or(usize::MAX));
    for version in present.into_iter().take(excess) {
        let rec = match versions.remove((key, version))? {
            Some(guard) => decode_version(guard.value(), version)?,
            None => continue,
        };
        release_ref(refs, &rec.hash, freed)?;
        usage::removed(usage, &rec)?;
    }
    Ok(())
}

mod batch;
mod changes;
mod chunk_index;
mod content;
mod dedup;
mod packs;
pub(crate) mod read;
mod replica;
mod uploads;
mod usage;

use usage::{USAGE, UsageTable};

pub use batch::SmallPut;
pub use content::Content;
pub use dedup::{DEDUP_MAX, DEDUP_MIN, DedupReport};
pub(crate) use packs::Extent;
pub use uploads::ResumableUpload;

#[cfg(test)]
mod batch_tests;
#[cfg(test)]
mod dedup_tests;
#[cfg(test)]
mod delta_tests;
#[cfg(test)]
mod tests;
