//! Resumable uploads: parts kept in `uploads/` under a caller's key, across reopening.
//!
//! `uploads/<key>.part` (mode `0o600`) holds the bytes received so far; its length is the
//! offset a continued upload appends at, and its modification time is the upload's last
//! activity (set to the `now` given to [`Store::begin_upload`] when the handle closes), which
//! [`Store::sweep_uploads`] compares. [`Store::open`] leaves this folder alone. A finished
//! upload is checked against its expected BLAKE3, moved to `tmp/` and returned as a
//! [`StagedBlob`], from where [`Store::commit`] places it as any other upload.
//!
//! Bytes are durable once [`ResumableUpload::sync`] returned. After a crash the file may
//! also hold bytes written after the last sync (or, on some file systems, zeros in their
//! place); the final hash check catches any such damage, so it can fail an upload but never
//! make wrong content visible.

use std::collections::HashSet;
use std::io::{BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_backend::UploadKey;

use super::*;
use crate::writer::TempGuard;

mod delta;

/// Suffix of a part file in `uploads/`.
const PART_SUFFIX: &str = ".part";

/// The keys with an open [`ResumableUpload`].
pub(super) type OpenUploads = Arc<Mutex<HashSet<String>>>;

/// An open resumable upload. Dropping it keeps what was written (see [`Store::begin_upload`]).
#[derive(Debug)]
pub struct ResumableUpload {
    file: Option<File>,
    path: PathBuf,
    tmp: PathBuf,
    key: UploadKey,
    hasher: blake3::Hasher,
    len: u64,
    touched: u64,
    open: OpenUploads,
    staged_name: String,
}

impl Store {
    /// Whether a transfer is in progress: an upload with an open handle, or a content open
    /// for reading.
    pub(crate) fn transfers_open(&self) -> bool {
        self.open_reads.load(Ordering::Relaxed) > 0 || !lock_set(&self.open_uploads).is_empty()
    }

    fn part_path(&self, key: &UploadKey) -> PathBuf {
        self.uploads.join(format!("{}{PART_SUFFIX}", key.as_str()))
    }

    /// Opens the resumable upload `key`, creating it empty or continuing it from the bytes
    /// already held ([`ResumableUpload::len`]); those are read back once to resume the hash.
    /// `now` (unix seconds) becomes its last activity. [`StoreError::UploadBusy`] if another
    /// handle has it open.
    pub fn begin_upload(&self, key: &UploadKey, now: u64) -> Result<ResumableUpload, StoreError> {
        {
            let mut open = lock_set(&self.open_uploads);
            if !open.insert(key.as_str().to_owned()) {
                return Err(StoreError::UploadBusy);
            }
        }
        // From here on the key is claimed; a failure must release it.
        let claim = Claim {
            open: &self.open_uploads,
            key: key.as_str(),
            armed: true,
        };
        let path = self.part_path(key);
        let created = !path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(TMP_FILE_MODE)
            .open(&path)?;
        if created {
            fsutil::fsync_dir(&self.uploads)?;
        }
        let mut hasher = blake3::Hasher::new();
        let len = std::io::copy(&mut BufReader::new(&mut file), &mut hasher)?;
        file.set_modified(unix_time(now))?;
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let upload = ResumableUpload {
            file: Some(file),
            path,
            tmp: self.tmp.clone(),
            key: key.clone(),
            hasher,
            len,
            touched: now,
            open: self.open_uploads.clone(),
            staged_name: format!("{}-{n:016x}.staged", self.tmp_prefix),
        };
        claim.disarm();
        Ok(upload)
    }

    /// Bytes held by the upload `key`; `None` if there is none.
    pub fn upload_status(&self, key: &UploadKey) -> Result<Option<u64>, StoreError> {
        match fs::metadata(self.part_path(key)) {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes the upload `key`. Returns whether there was one; [`StoreError::UploadBusy`]
    /// if a handle has it open.
    pub fn abort_upload(&self, key: &UploadKey) -> Result<bool, StoreError> {
        let open = lock_set(&self.open_uploads);
        if open.contains(key.as_str()) {
            return Err(StoreError::UploadBusy);
        }
        Ok(fsutil::remove_file_if_exists(&self.part_path(key))?)
    }

    /// Deletes every upload whose last activity is before `older_than` (unix seconds) and
    /// that no handle has open. Entries of `uploads/` not named like parts are left alone.
    /// Returns how many uploads it deleted.
    pub fn sweep_uploads(&self, older_than: u64) -> Result<u64, StoreError> {
        let open = lock_set(&self.open_uploads);
        let mut removed = 0;
        for item in fs::read_dir(&self.uploads)? {
            let item = item?;
            let name = item.file_name();
            let key = name
                .to_str()
                .and_then(|n| n.strip_suffix(PART_SUFFIX))
                .and_then(|k| UploadKey::new(k).ok())
                .filter(|_| item.file_type().is_ok_and(|t| t.is_file()));
            let Some(key) = key else {
                tracing::warn!(path = %item.path().display(), "unexpected entry in uploads/, left alone");
                continue;
            };
            if open.contains(key.as_str()) {
                continue;
            }
            let touched = item
                .metadata()?
                .modified()?
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if touched < older_than && fsutil::remove_file_if_exists(&item.path())? {
                tracing::debug!(upload = key.as_str(), "swept an abandoned upload");
                removed += 1;
            }
        }
        Ok(removed)
    }
}

impl ResumableUpload {
    /// The upload's key.
    pub fn key(&self) -> &UploadKey {
        &self.key
    }

    /// Bytes held: the offset the next write appends at.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing is held yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn file(&mut self) -> Result<&mut File, StoreError> {
        // `file` is only taken by `finish`, which consumes the handle.
        self.file
            .as_mut()
            .ok_or_else(|| StoreError::InvalidArgument("upload already finished".into()))
    }

    /// Appends `data`. If the write fails part way, the handle is unusable (the file and the
    /// hash may disagree); begin the upload again to continue from what the file holds.
    pub fn write(&mut self, data: &[u8]) -> Result<u64, StoreError> {
        let file = self.file()?;
        if let Err(e) = file.write_all(data) {
            self.file = None;
            return Err(e.into());
        }
        self.hasher.update(data);
        self.len += data.len() as u64;
        Ok(self.len)
    }

    /// Makes every byte written so far durable; returns [`ResumableUpload::len`].
    pub fn sync(&mut self) -> Result<u64, StoreError> {
        self.file()?.sync_data()?;
        Ok(self.len)
    }

    /// Checks the content against `expected` and stages it: fsynced, read-only, moved to
    /// `tmp/`, ready for [`Store::commit`]. On a mismatch the upload is deleted and the
    /// error is [`StoreError::HashMismatch`].
    pub fn finish(mut self, expected: &Hash) -> Result<StagedBlob, StoreError> {
        let file = self.file.take().ok_or_else(|| {
            StoreError::InvalidArgument("an earlier write to this upload failed".into())
        })?;
        let actual = *self.hasher.finalize().as_bytes();
        if actual != *expected {
            drop(file);
            fsutil::remove_file_if_exists(&self.path)?;
            return Err(StoreError::HashMismatch {
                expected: *expected,
                actual,
            });
        }
        let staged = self.tmp.join(&self.staged_name);
        fs::rename(&self.path, &staged)?;
        // From here on the guard deletes the staged file if anything fails or it is dropped.
        let guard = TempGuard::new(staged);
        file.set_permissions(std::fs::Permissions::from_mode(fsutil::BLOB_FILE_MODE))?;
        file.sync_all()?;
        Ok(StagedBlob::new(actual, self.len, guard))
    }
}

impl Drop for ResumableUpload {
    fn drop(&mut self) {
        if let Some(file) = self.file.take()
            && let Err(e) = file.set_modified(unix_time(self.touched))
        {
            tracing::warn!(path = %self.path.display(), error = %e, "could not set upload time");
        }
        lock_set(&self.open).remove(self.key.as_str());
    }
}

/// Releases a claimed key unless disarmed.
struct Claim<'a> {
    open: &'a OpenUploads,
    key: &'a str,
    armed: bool,
}

impl Claim<'_> {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if self.armed {
            lock_set(self.open).remove(self.key);
        }
    }
}

fn lock_set(set: &Mutex<HashSet<String>>) -> std::sync::MutexGuard<'_, HashSet<String>> {
    // Every critical section is a single insert, remove or lookup: never half done.
    set.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unix_time(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}
