//! Reads by version and by hash: kept versions, and ranged reads of visible blobs.

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
        Ok(self.open_content(hash)?.map(|c| c.size()))
    }

    /// `len` bytes of the blob `hash` from `offset` (`offset + len` may equal its size).
    /// [`StoreError::BlobNotFound`] if no kept version references it,
    /// [`StoreError::RangeOutOfBounds`] past its end. The reference check and the open
    /// happen under the blob lock, so a concurrent prune cannot delete a file in between.
    pub fn read_blob(&self, hash: &Hash, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        let content = {
            let _reading = self.read_lock();
            self.open_content(hash)?.ok_or(StoreError::BlobNotFound)?
        };
        let size = content.size();
        let out_of_bounds = StoreError::RangeOutOfBounds { offset, len, size };
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(out_of_bounds);
        }
        let n = usize::try_from(len).map_err(|_| out_of_bounds)?;
        let mut buf = vec![0; n];
        content
            .read_exact_at(&mut buf, offset)
            .map_err(short_file)?;
        Ok(buf)
    }

    /// Opens the blob `hash` for reading `len` bytes from `offset`: its content, positioned
    /// at `offset` (same errors as [`Store::read_blob`]). It stays readable even if the
    /// blob is pruned afterwards.
    pub fn open_blob_range(
        &self,
        hash: &Hash,
        offset: u64,
        len: u64,
    ) -> Result<Content, StoreError> {
        use std::io::{Seek, SeekFrom};
        let mut content = {
            let _reading = self.read_lock();
            self.open_content(hash)?.ok_or(StoreError::BlobNotFound)?
        };
        let size = content.size();
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(StoreError::RangeOutOfBounds { offset, len, size });
        }
        content.seek(SeekFrom::Start(offset))?;
        Ok(content)
    }
}

/// A file shorter than the index says is damage, not a short read.
pub(super) fn short_file(e: io::Error) -> StoreError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        StoreError::Corrupt(e.to_string())
    } else {
        e.into()
    }
}
