//! Resumable uploads, shared by every instance.
//!
//! An upload's bytes go to the object store as multipart parts of [`PART`] bytes (one S3
//! multipart upload, created when the first part is full, its ID and every part's ETag kept
//! in PostgreSQL); the bytes after the last full part are kept in `ferry_upload_tail` rows.
//! Every `write` is durable when it returns (a tail row, or parts recorded in one
//! transaction), so an upload whose handle was dropped, or whose instance died, continues
//! on any instance from the offset the rows give. Bytes pass through PostgreSQL only while
//! they are less than a part.
//!
//! One handle per upload: the row's `holder` names it (`instance:token`). Another instance
//! gets `UploadBusy` while the holder's lease ([`LEASE`], refreshed by each write) runs;
//! within one instance an in-memory map of open handles decides at once, so a handle just
//! dropped (its release still on its way to the database) does not block its own instance.
//!
//! The whole-content hash is kept running while one handle writes from offset 0. A handle
//! that continued an upload with parts (their bytes are not readable before completion)
//! hashes the completed object again at `finish`.

use bytes::Bytes;
use ferry_backend::{BackendError, ChunkRef, Hash, Meta, Result, Upload, UploadKey};
use object_store::PutPayload;
use object_store::multipart::{MultipartStore, PartId};

use super::objects::{Objects, PART, SharedReader, s3};
use super::write::SharedStaged;
use super::{SharedBackend, col_u64};
use crate::db;
use crate::rows::{big, get};
use crate::sql::{c_exec, c_opt, t_all, t_exec, t_opt};

/// How long a holder that writes nothing keeps its upload from other instances.
const LEASE: &str = "10 minutes";

/// An open upload handle.
pub struct SharedUpload {
    backend: SharedBackend,
    key: UploadKey,
    holder: String,
    object: String,
    multipart: Option<String>,
    parts: Vec<PartId>,
    /// Bytes after the parts, as the tail rows hold them.
    buf: Vec<u8>,
    tail_n: i32,
    hasher: blake3::Hasher,
    /// The hasher saw every byte from offset 0.
    hashed_all: bool,
    offset: u64,
}

impl std::fmt::Debug for SharedUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedUpload")
            .field("key", &self.key)
            .field("object", &self.object)
            .field("parts", &self.parts.len())
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

/// Where the bytes of a finished upload are, for a delta's assembly.
pub(crate) enum Body {
    Memory(Bytes),
    Object(String, u64),
}

impl SharedBackend {
    pub(crate) async fn upload_bytes(&self, key: &UploadKey) -> Result<Option<u64>> {
        let c = self.conn().await?;
        let row = c_opt(
            &c,
            "SELECT u.parts_bytes + coalesce((SELECT sum(length(t.bytes)) FROM ferry_upload_tail t \
             WHERE t.key = u.key), 0)::bigint AS held FROM ferry_uploads u WHERE u.key = $1",
            &[&key.as_str()],
        )
        .await?;
        row.map(|r| col_u64(&r, "held")).transpose()
    }

    fn held_here(&self, key: &UploadKey) -> bool {
        self.open_uploads().contains_key(key.as_str())
    }

    /// Whether `holder` (fresh or not) keeps the upload from this instance.
    fn blocks(&self, holder: Option<&str>, fresh: bool) -> bool {
        let mine = format!("{}:", self.inner.instance);
        holder.is_some_and(|h| fresh && !h.starts_with(&mine))
    }

    pub(crate) async fn abort(&self, key: &UploadKey) -> Result<bool> {
        if self.held_here(key) {
            return Err(BackendError::UploadBusy);
        }
        let mut c = self.conn().await?;
        let t = c.transaction().await.map_err(db)?;
        let sql = format!(
            "SELECT object, multipart, holder, coalesce(held_at > now() - interval '{LEASE}', false) AS fresh \
             FROM ferry_uploads WHERE key = $1 FOR UPDATE"
        );
        let Some(row) = t_opt(&t, &sql, &[&key.as_str()]).await? else {
            return Ok(false);
        };
        if self.blocks(
            get::<Option<String>>(&row, "holder")?.as_deref(),
            get(&row, "fresh")?,
        ) {
            return Err(BackendError::UploadBusy);
        }
        t_exec(
            &t,
            "DELETE FROM ferry_uploads WHERE key = $1",
            &[&key.as_str()],
        )
        .await?;
        t.commit().await.map_err(db)?;
        self.abort_multipart(&get::<String>(&row, "object")?, get(&row, "multipart")?)
            .await;
        Ok(true)
    }

    async fn abort_multipart(&self, object: &str, multipart: Option<String>) {
        if let Some(id) = multipart {
            let objects = &self.inner.objects;
            let _ = objects
                .store
                .abort_multipart(&objects.path(object), &id)
                .await;
        }
    }

    pub(crate) async fn sweep_idle_uploads(&self, older_than: u64) -> Result<u64> {
        let open: Vec<String> = self.open_uploads().keys().cloned().collect();
        let mut c = self.conn().await?;
        let t = c.transaction().await.map_err(db)?;
        let sql = format!(
            "SELECT key, object, multipart, holder, coalesce(held_at > now() - interval '{LEASE}', false) AS fresh \
             FROM ferry_uploads WHERE touched < $1 AND NOT (key = ANY($2)) FOR UPDATE SKIP LOCKED"
        );
        let rows = t_all(&t, &sql, &[&big(older_than, "time")?, &open]).await?;
        let mut gone = Vec::new();
        for row in &rows {
            let holder: Option<String> = get(row, "holder")?;
            if !self.blocks(holder.as_deref(), get(row, "fresh")?) {
                gone.push((
                    get::<String>(row, "key")?,
                    get::<String>(row, "object")?,
                    get::<Option<String>>(row, "multipart")?,
                ));
            }
        }
        let keys: Vec<&str> = gone.iter().map(|(k, _, _)| k.as_str()).collect();
        t_exec(
            &t,
            "DELETE FROM ferry_uploads WHERE key = ANY($1)",
            &[&keys],
        )
        .await?;
        t.commit().await.map_err(db)?;
        for (_, object, multipart) in gone.iter().cloned() {
            self.abort_multipart(&object, multipart).await;
        }
        Ok(gone.len() as u64)
    }
}

impl SharedUpload {
    pub(crate) async fn begin(backend: &SharedBackend, key: &UploadKey, now: u64) -> Result<Self> {
        let holder = format!("{}:{}", backend.inner.instance, super::objects::token());
        {
            let mut open = backend.open_uploads();
            if open.contains_key(key.as_str()) {
                return Err(BackendError::UploadBusy);
            }
            open.insert(key.as_str().to_owned(), holder.clone());
        }
        let upload = SharedUpload {
            backend: backend.clone(),
            key: key.clone(),
            holder,
            object: String::new(),
            multipart: None,
            parts: Vec::new(),
            buf: Vec::new(),
            tail_n: 0,
            hasher: blake3::Hasher::new(),
            hashed_all: true,
            offset: 0,
        };
        // On an error, dropping `upload` takes the key out of the open map again.
        upload.claim(now).await
    }

    async fn claim(mut self, now: u64) -> Result<Self> {
        let backend = self.backend.clone();
        let key = self.key.as_str();
        let mut c = backend.conn().await?;
        let t = c.transaction().await.map_err(db)?;
        t_exec(
            &t,
            "INSERT INTO ferry_uploads (key, touched, object) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO NOTHING",
            &[&key, &big(now, "time")?, &Objects::upload_name()],
        )
        .await?;
        let sql = format!(
            "SELECT object, multipart, parts_bytes, holder, coalesce(held_at > now() - interval '{LEASE}', false) AS fresh \
             FROM ferry_uploads WHERE key = $1 FOR UPDATE"
        );
        let row = t_opt(&t, &sql, &[&key])
            .await?
            .ok_or(BackendError::UploadNotFound)?;
        if backend.blocks(
            get::<Option<String>>(&row, "holder")?.as_deref(),
            get(&row, "fresh")?,
        ) {
            return Err(BackendError::UploadBusy);
        }
        t_exec(
            &t,
            "UPDATE ferry_uploads SET holder = $2, held_at = now(), touched = $3 WHERE key = $1",
            &[&key, &self.holder, &big(now, "time")?],
        )
        .await?;
        let parts = t_all(
            &t,
            "SELECT etag FROM ferry_upload_parts WHERE key = $1 ORDER BY n",
            &[&key],
        )
        .await?;
        let tail = t_all(
            &t,
            "SELECT n, bytes FROM ferry_upload_tail WHERE key = $1 ORDER BY n",
            &[&key],
        )
        .await?;
        t.commit().await.map_err(db)?;

        self.object = get(&row, "object")?;
        self.multipart = get(&row, "multipart")?;
        for p in &parts {
            self.parts.push(PartId {
                content_id: get(p, "etag")?,
            });
        }
        let parts_bytes = col_u64(&row, "parts_bytes")?;
        if parts_bytes != (self.parts.len() * PART) as u64 {
            return Err(BackendError::Corrupt(format!(
                "upload {key} records {parts_bytes} bytes in {} parts",
                self.parts.len()
            )));
        }
        for r in &tail {
            let n: i32 = get(r, "n")?;
            let bytes: Vec<u8> = get(r, "bytes")?;
            self.buf.extend_from_slice(&bytes);
            self.tail_n = n.saturating_add(1);
        }
        self.hashed_all = self.parts.is_empty();
        if self.hashed_all {
            self.hasher.update(&self.buf);
        }
        self.offset = parts_bytes + self.buf.len() as u64;
        Ok(self)
    }

    fn path(&self) -> object_store::path::Path {
        self.backend.inner.objects.path(&self.object)
    }

    /// Sends the full parts at the front of the buffer and records them, with the rest of
    /// the buffer as the new tail, in one transaction.
    async fn flush_parts(&mut self) -> Result<()> {
        let store = self.backend.inner.objects.store.clone();
        let path = self.path();
        let id = match &self.multipart {
            Some(id) => id.clone(),
            None => store
                .create_multipart(&path)
                .await
                .map_err(|e| s3("create a multipart upload", e))?,
        };
        let full = self.buf.len() / PART;
        let data = Bytes::from(std::mem::take(&mut self.buf));
        let mut sent = Vec::with_capacity(full);
        for i in 0..full {
            let part = data.slice(i * PART..(i + 1) * PART);
            let n = self.parts.len() + i;
            let etag = store
                .put_part(&path, &id, n, PutPayload::from_bytes(part))
                .await;
            match etag {
                Ok(etag) => sent.push(etag),
                Err(e) => {
                    self.buf = data.to_vec();
                    return Err(s3("upload a part", e));
                }
            }
        }
        let rest = data.slice(full * PART..);
        let key = self.key.as_str();
        let parts_bytes = ((self.parts.len() + full) * PART) as u64;
        let outcome: Result<()> = async {
            let mut c = self.backend.conn().await?;
            let t = c.transaction().await.map_err(db)?;
            let n = t_exec(
                &t,
                "UPDATE ferry_uploads SET held_at = now(), multipart = $3, parts_bytes = $4 \
                 WHERE key = $1 AND holder = $2",
                &[&key, &self.holder, &id, &big(parts_bytes, "size")?],
            )
            .await?;
            if n == 0 {
                return Err(BackendError::UploadNotFound);
            }
            for (i, etag) in sent.iter().enumerate() {
                let n = i32::try_from(self.parts.len() + i)
                    .map_err(|_| BackendError::InvalidArgument("too many parts".into()))?;
                t_exec(
                    &t,
                    "INSERT INTO ferry_upload_parts (key, n, etag) VALUES ($1, $2, $3)",
                    &[&key, &n, &etag.content_id],
                )
                .await?;
            }
            t_exec(&t, "DELETE FROM ferry_upload_tail WHERE key = $1", &[&key]).await?;
            if !rest.is_empty() {
                t_exec(
                    &t,
                    "INSERT INTO ferry_upload_tail (key, n, bytes) VALUES ($1, 0, $2)",
                    &[&key, &rest.as_ref()],
                )
                .await?;
            }
            t.commit().await.map_err(db)
        }
        .await;
        if let Err(e) = outcome {
            self.buf = data.to_vec();
            return Err(e);
        }
        self.multipart = Some(id);
        self.parts.extend(sent);
        self.buf = rest.to_vec();
        self.tail_n = i32::from(!rest.is_empty());
        Ok(())
    }

    /// Removes the upload's rows (if this handle still holds it) and whatever it sent.
    async fn discard(&self) {
        if let Ok(c) = self.backend.conn().await {
            let _ = c_exec(
                &c,
                "DELETE FROM ferry_uploads WHERE key = $1 AND holder = $2",
                &[&self.key.as_str(), &self.holder],
            )
            .await;
        }
        self.backend
            .abort_multipart(&self.object, self.multipart.clone())
            .await;
    }

    /// Ends the upload's rows once its content is staged or assembled.
    async fn release_rows(&self) -> Result<()> {
        let c = self.backend.conn().await?;
        let n = c_exec(
            &c,
            "DELETE FROM ferry_uploads WHERE key = $1 AND holder = $2",
            &[&self.key.as_str(), &self.holder],
        )
        .await?;
        if n == 0 {
            return Err(BackendError::UploadNotFound);
        }
        Ok(())
    }

    /// Completes the upload's object (sending the tail as the last part) and returns where
    /// its bytes are. The rows stay until [`SharedUpload::release_rows`].
    pub(crate) async fn complete_body(&mut self) -> Result<Body> {
        let Some(id) = self.multipart.clone() else {
            return Ok(Body::Memory(Bytes::from(std::mem::take(&mut self.buf))));
        };
        let store = self.backend.inner.objects.store.clone();
        let path = self.path();
        if !self.buf.is_empty() {
            let last = Bytes::from(std::mem::take(&mut self.buf));
            let etag = store
                .put_part(&path, &id, self.parts.len(), PutPayload::from_bytes(last))
                .await
                .map_err(|e| s3("upload the last part", e))?;
            self.parts.push(etag);
        }
        store
            .complete_multipart(&path, &id, self.parts.clone())
            .await
            .map_err(|e| s3("complete a multipart upload", e))?;
        Ok(Body::Object(self.object.clone(), self.offset))
    }

    /// The BLAKE3 of the object `name` of `size` bytes, read back.
    async fn rehash(&self, name: &str, size: u64) -> Result<Hash> {
        let mut reader =
            SharedReader::new(self.backend.inner.objects.clone(), name.to_owned(), 0, size);
        let mut hasher = blake3::Hasher::new();
        let mut seen = 0u64;
        for _ in 0..=size / PART as u64 + 1 {
            let piece = reader.next(PART).await?;
            if piece.is_empty() {
                break;
            }
            seen += piece.len() as u64;
            hasher.update(&piece);
        }
        if seen != size {
            return Err(BackendError::Corrupt(format!(
                "object {name} is shorter than the upload"
            )));
        }
        Ok(*hasher.finalize().as_bytes())
    }

    async fn finish_inner(&mut self, expected: &Hash) -> Result<SharedStaged> {
        let objects = self.backend.inner.objects.clone();
        if self.multipart.is_none() {
            let actual = *self.hasher.finalize().as_bytes();
            if actual != *expected {
                self.discard().await;
                return Err(BackendError::HashMismatch {
                    expected: *expected,
                    actual,
                });
            }
            let content = std::mem::take(&mut self.buf);
            let chunks =
                ferry_proto::chunking::encode_list(&ferry_proto::chunking::chunk_all(&content));
            let staged = self
                .backend
                .stage_whole(actual, content, Some(chunks))
                .await?;
            if let Err(e) = self.release_rows().await {
                objects.delete_quietly(&staged.object).await;
                return Err(e);
            }
            return Ok(staged);
        }
        self.backend.note_staged(&self.object).await?;
        let Body::Object(name, size) = self.complete_body().await? else {
            return Err(BackendError::Corrupt(
                "a multipart upload has no object".into(),
            ));
        };
        let actual = if self.hashed_all {
            *self.hasher.finalize().as_bytes()
        } else {
            self.rehash(&name, size).await?
        };
        if actual != *expected {
            self.discard().await;
            objects.delete_quietly(&name).await;
            return Err(BackendError::HashMismatch {
                expected: *expected,
                actual,
            });
        }
        self.release_rows().await?;
        Ok(SharedStaged {
            hash: actual,
            size,
            object: name,
            meta: Meta::default(),
            chunks: None,
        })
    }
}

impl Drop for SharedUpload {
    fn drop(&mut self) {
        {
            let mut open = self.backend.open_uploads();
            if open.get(self.key.as_str()) == Some(&self.holder) {
                open.remove(self.key.as_str());
            }
        }
        // Release the row for other instances (this one already sees the handle gone).
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let backend = self.backend.clone();
        let key = self.key.as_str().to_owned();
        let holder = self.holder.clone();
        rt.spawn(async move {
            if let Ok(c) = backend.conn().await {
                let _ = c_exec(
                    &c,
                    "UPDATE ferry_uploads SET holder = NULL, held_at = NULL \
                     WHERE key = $1 AND holder = $2",
                    &[&key, &holder],
                )
                .await;
            }
        });
    }
}

impl Upload for SharedUpload {
    type Staged = SharedStaged;

    fn key(&self) -> &UploadKey {
        &self.key
    }

    fn offset(&self) -> u64 {
        self.offset
    }

    async fn write(&mut self, data: &[u8]) -> Result<u64> {
        if data.is_empty() {
            return Ok(self.offset);
        }
        if self.buf.len() + data.len() >= PART {
            self.buf.extend_from_slice(data);
            if let Err(e) = self.flush_parts().await {
                self.buf.truncate(self.buf.len() - data.len());
                return Err(e);
            }
        } else {
            let c = self.backend.conn().await?;
            let n = c_exec(
                &c,
                "WITH h AS (UPDATE ferry_uploads SET held_at = now() WHERE key = $1 AND holder = $2 \
                 RETURNING key) INSERT INTO ferry_upload_tail (key, n, bytes) SELECT key, $3, $4 FROM h",
                &[&self.key.as_str(), &self.holder, &self.tail_n, &data],
            )
            .await?;
            if n == 0 {
                return Err(BackendError::UploadNotFound);
            }
            self.buf.extend_from_slice(data);
            self.tail_n = self.tail_n.saturating_add(1);
        }
        self.hasher.update(data);
        self.offset += data.len() as u64;
        Ok(self.offset)
    }

    async fn sync(&mut self) -> Result<u64> {
        // Every write is durable when it returns.
        Ok(self.offset)
    }

    async fn finish(mut self, expected: &Hash) -> Result<SharedStaged> {
        self.finish_inner(expected).await
    }

    async fn finish_delta(
        mut self,
        expected: &Hash,
        base: &Hash,
        chunks: Vec<ChunkRef>,
    ) -> Result<SharedStaged> {
        let result = super::delta::finish_delta(&mut self, expected, base, chunks).await;
        match &result {
            Ok(_) => {
                if let Err(e) = self.release_rows().await {
                    if let Ok(staged) = &result {
                        self.backend
                            .inner
                            .objects
                            .delete_quietly(&staged.object)
                            .await;
                    }
                    return Err(e);
                }
            }
            Err(_) => self.discard().await,
        }
        if self.multipart.is_some() {
            // The body's object was only the sent chunks.
            self.backend
                .inner
                .objects
                .delete_quietly(&self.object)
                .await;
        }
        result
    }
}

impl SharedUpload {
    pub(crate) fn backend(&self) -> &SharedBackend {
        &self.backend
    }

    /// `len` bytes of the body from `offset`.
    pub(crate) async fn body_range(
        body: &Body,
        objects: &Objects,
        offset: u64,
        len: u64,
    ) -> Result<Bytes> {
        match body {
            Body::Memory(b) => {
                let start = usize::try_from(offset).map_err(|_| BackendError::BlobNotFound)?;
                let end = usize::try_from(offset + len).map_err(|_| BackendError::BlobNotFound)?;
                b.get(start..end).map(|s| b.slice_ref(s)).ok_or_else(|| {
                    BackendError::Corrupt("a delta body is shorter than planned".into())
                })
            }
            Body::Object(name, _) => objects.get(name, offset..offset + len).await,
        }
    }
}
