//! The [`Blobs`] side: visible content is a `ferry_blobs` row (size, object, references);
//! reads are ranged reads of its object; chunk lists are computed from the object the
//! first time they are asked for and kept in the row. Uploads are in `upload.rs`.

use ferry_backend::{BackendError, Blobs, ChunkRef, Hash, Result, UploadKey};
use ferry_proto::chunking::{CHUNK_REF_LEN, Chunker, encode_list};

use super::objects::{PART, SharedReader};
use super::upload::SharedUpload;
use super::write::SharedStaged;
use super::{SharedBackend, col_u64};
use crate::rows::get;
use crate::sql::{c_exec, c_opt};

/// A visible blob's size and object.
pub(crate) struct BlobRow {
    pub(crate) size: u64,
    pub(crate) object: String,
    pub(crate) chunks: Option<Vec<u8>>,
}

/// Decodes a kept chunk list (no count limit: this is storage, not a message).
pub(crate) fn decode_chunks(bytes: &[u8], size: u64) -> Result<Vec<ChunkRef>> {
    let corrupt = || BackendError::Corrupt("a kept chunk list does not decode".into());
    if !bytes.len().is_multiple_of(CHUNK_REF_LEN) {
        return Err(corrupt());
    }
    let mut out = Vec::with_capacity(bytes.len() / CHUNK_REF_LEN);
    let mut sum = 0u64;
    for entry in bytes.chunks_exact(CHUNK_REF_LEN) {
        let (hash, len) = entry.split_at(32);
        let hash: Hash = hash.try_into().map_err(|_| corrupt())?;
        let len = u32::from_be_bytes(len.try_into().map_err(|_| corrupt())?);
        sum += u64::from(len);
        out.push(ChunkRef { hash, len });
    }
    if sum != size {
        return Err(corrupt());
    }
    Ok(out)
}

impl SharedBackend {
    pub(crate) async fn blob(&self, hash: &Hash) -> Result<Option<BlobRow>> {
        let c = self.conn().await?;
        let row = c_opt(
            &c,
            "SELECT size, object, chunks FROM ferry_blobs WHERE hash = $1",
            &[&hash.as_slice()],
        )
        .await?;
        row.map(|r| {
            Ok(BlobRow {
                size: col_u64(&r, "size")?,
                object: get(&r, "object")?,
                chunks: get(&r, "chunks")?,
            })
        })
        .transpose()
    }

    /// The chunks of a visible blob: kept, or computed from its object and kept.
    pub(crate) async fn chunks_of(&self, hash: &Hash, blob: &BlobRow) -> Result<Vec<ChunkRef>> {
        if let Some(kept) = &blob.chunks {
            return decode_chunks(kept, blob.size);
        }
        let mut reader = SharedReader::new(
            self.inner.objects.clone(),
            blob.object.clone(),
            0,
            blob.size,
        );
        let mut chunker = Chunker::new();
        for _ in 0..=blob.size / PART as u64 + 1 {
            let piece = reader.next(PART).await?;
            if piece.is_empty() {
                break;
            }
            chunker.push(&piece);
        }
        if chunker.total() != blob.size {
            return Err(BackendError::Corrupt(format!(
                "object {} is shorter than its content",
                blob.object
            )));
        }
        let chunks = chunker.finish();
        let c = self.conn().await?;
        c_exec(
            &c,
            "UPDATE ferry_blobs SET chunks = $2 WHERE hash = $1 AND chunks IS NULL",
            &[&hash.as_slice(), &encode_list(&chunks)],
        )
        .await?;
        Ok(chunks)
    }
}

impl Blobs for SharedBackend {
    type Staged = SharedStaged;
    type Upload = SharedUpload;
    type Reader = SharedReader;

    async fn begin_upload(&self, key: &UploadKey, now: u64) -> Result<SharedUpload> {
        SharedUpload::begin(self, key, now).await
    }

    async fn upload_status(&self, key: &UploadKey) -> Result<Option<u64>> {
        self.upload_bytes(key).await
    }

    async fn abort_upload(&self, key: &UploadKey) -> Result<bool> {
        self.abort(key).await
    }

    async fn sweep_uploads(&self, older_than: u64) -> Result<u64> {
        self.sweep_idle_uploads(older_than).await
    }

    async fn blob_size(&self, hash: &Hash) -> Result<Option<u64>> {
        Ok(self.blob(hash).await?.map(|b| b.size))
    }

    async fn chunks(&self, hash: &Hash) -> Result<Option<Vec<ChunkRef>>> {
        match self.blob(hash).await? {
            None => Ok(None),
            Some(blob) => self.chunks_of(hash, &blob).await.map(Some),
        }
    }

    async fn read(&self, hash: &Hash, offset: u64, len: u64) -> Result<Vec<u8>> {
        let n = usize::try_from(len)
            .map_err(|_| BackendError::InvalidArgument("range too long".into()))?;
        let mut r = self.reader(hash, offset, len).await?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..=len / PART as u64 + 1 {
            let before = out.len();
            out = ferry_backend::BlobReader::read_into(&mut r, out, n - before).await?;
            if out.len() == n || out.len() == before {
                break;
            }
        }
        if out.len() != n {
            return Err(BackendError::Corrupt(
                "an object is shorter than its content".into(),
            ));
        }
        Ok(out)
    }

    async fn reader(&self, hash: &Hash, offset: u64, len: u64) -> Result<SharedReader> {
        let blob = self.blob(hash).await?.ok_or(BackendError::BlobNotFound)?;
        let end = offset
            .checked_add(len)
            .filter(|end| *end <= blob.size)
            .ok_or(BackendError::RangeOutOfBounds {
                offset,
                len,
                size: blob.size,
            })?;
        Ok(SharedReader::new(
            self.inner.objects.clone(),
            blob.object,
            offset,
            end,
        ))
    }
}
