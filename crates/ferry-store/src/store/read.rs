//! Reads by version and by hash: kept versions, and ranged reads of visible blobs.

use std::os::unix::fs::FileExt;

use super::*;

impl Store {
    /// A kept live version of `source`; `None` if there is none.
    pub fn stat_version(&self, source: &str, version: u64) -> Result<Option<Entry>, StoreError> {
        let txn = self.db.begin_read()?;
        let versions = txn.open_table(VERSIONS)?;
        let rec = match versions.get((source.as_bytes(), version))? {
            Some(guard) => decode_version(guard.value(), version)?,
            None => return Ok(None),
        };
        Ok(Some(rec.into_entry(source.to_owned())))
    }

    /// The kept versions of `source`, oldest first.
    pub fn versions(&self, source: &str) -> Result<Vec<Entry>, StoreError> {
        let txn = self.db.begin_read()?;
        let versions = txn.open_table(VERSIONS)?;
        let key = source.as_bytes();
        let mut out = Vec::new();
        for item in versions.range((key, 0u64)..=(key, u64::MAX))? {
            let (k, v) = item?;
            let rec = decode_version(v.value(), k.value().1)?;
            out.push(rec.into_entry(source.to_owned()));
        }
        Ok(out)
    }

    /// Size of the blob `hash` if a kept version references it; `None` otherwise.
    pub fn blob_size(&self, hash: &Hash) -> Result<Option<u64>, StoreError> {
        let _reading = self.read_lock();
        match self.open_visible(hash)? {
            Some((_, size)) => Ok(Some(size)),
            None => Ok(None),
        }
    }

    /// `len` bytes of the blob `hash` from `offset` (`offset + len` may equal its size).
    /// [`StoreError::BlobNotFound`] if no kept version references it,
    /// [`StoreError::RangeOutOfBounds`] past its end. The reference check and the open
    /// happen under the blob lock, so a concurrent prune cannot delete the file in between.
    pub fn read_blob(&self, hash: &Hash, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        let (file, size) = {
            let _reading = self.read_lock();
            self.open_visible(hash)?.ok_or(StoreError::BlobNotFound)?
        };
        let out_of_bounds = StoreError::RangeOutOfBounds { offset, len, size };
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(out_of_bounds);
        }
        let n = usize::try_from(len).map_err(|_| out_of_bounds)?;
        let mut buf = vec![0; n];
        file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    /// Opens the blob `hash` for reading `len` bytes from `offset`: its file, positioned at
    /// `offset` (same errors as [`Store::read_blob`]). The file stays readable even if the
    /// blob is pruned afterwards.
    pub fn open_blob_range(&self, hash: &Hash, offset: u64, len: u64) -> Result<File, StoreError> {
        use std::io::{Seek, SeekFrom};
        let (mut file, size) = {
            let _reading = self.read_lock();
            self.open_visible(hash)?.ok_or(StoreError::BlobNotFound)?
        };
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(StoreError::RangeOutOfBounds { offset, len, size });
        }
        file.seek(SeekFrom::Start(offset))?;
        Ok(file)
    }

    /// Opens the file of a referenced blob and checks its size against the file. Called
    /// with the read lock held.
    fn open_visible(&self, hash: &Hash) -> Result<Option<(File, u64)>, StoreError> {
        let txn = self.db.begin_read()?;
        let refs = txn.open_table(BLOB_REFS)?;
        if refs.get(hash)?.is_none() {
            return Ok(None);
        }
        let (_, path) = blob_location(&self.blobs, hash);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::Corrupt(format!(
                    "referenced blob {} is missing",
                    hex(hash)
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let size = file.metadata()?.len();
        Ok(Some((file, size)))
    }
}
