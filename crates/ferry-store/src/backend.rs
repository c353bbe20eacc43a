//! The local backend: [`Store`] behind the `ferry-backend` traits.
//!
//! The store is synchronous, so this backend needs a tokio runtime. Calls that fsync or scan
//! (commits, deletes, listings, sweeps, finishing an upload) run on tokio's blocking pool
//! (`tokio::task::spawn_blocking`); short ones (an index lookup, one read of a blob, one
//! write to an upload part, which reaches the page cache) run in place with
//! `block_in_place` on a multi-thread runtime ([`in_place`]). The futures own what they
//! send to the pool, so they are `Send` and may be dropped at any point: a call already
//! handed to the pool then completes there (a commit still commits).

use std::sync::Arc;

use ferry_backend::{
    Backend, BackendError, BlobReader, Blobs, Changes, ChunkRef, Entry, Hash, Head, Index, Meta,
    Retention, Staged, Upload, UploadKey, check_by, check_source,
};

use crate::group::Group;
use crate::{Content, ResumableUpload, SmallPut, StagedBlob, Store, StoreError, StoreOptions};

/// [`Store`] as a [`Backend`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct LocalBackend {
    store: Arc<Store>,
    /// Small puts waiting to be committed together ([`Backend::commit_small`]).
    group: Arc<Group>,
}

impl LocalBackend {
    /// Opens (creating if needed) the store in `dir` (see [`Store::open`]). Blocks: call it
    /// before serving, or from `spawn_blocking`.
    pub fn open(dir: &std::path::Path, retention: Retention) -> Result<LocalBackend, StoreError> {
        let opts = StoreOptions {
            keep_versions: retention.keep_versions,
            keep_changes: retention.keep_changes,
        };
        Ok(LocalBackend::new(Arc::new(Store::open(dir, opts)?)))
    }

    /// Wraps an open store (shared with other users of it, such as today's server), and
    /// starts its dedup worker (a thread that rewrites contents put whole over chunks the
    /// store already holds, when the store is quiet; store/dedup.rs) unless one runs.
    pub fn new(store: Arc<Store>) -> LocalBackend {
        crate::dedup_worker::start(&store);
        LocalBackend {
            store,
            group: Arc::default(),
        }
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    async fn run<T, F>(&self, f: F) -> Result<T, BackendError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.store.clone();
        blocking(move || f(&store)).await
    }

    /// A short read (an index lookup, one read of a blob file): see [`in_place`].
    async fn read_now<T, F>(&self, f: F) -> Result<T, BackendError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.store.clone();
        in_place(move || f(&store)).await
    }
}

/// Runs a short blocking read. On a multi-thread runtime it runs in place:
/// `block_in_place` hands this worker's other tasks to another thread, and the request does
/// not wait for a blocking thread to wake up and for its answer to come back. On any other
/// runtime it goes to the blocking pool. Writes (which fsync) always go to the pool.
async fn in_place<T, F>(f: F) -> Result<T, BackendError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    use tokio::runtime::{Handle, RuntimeFlavor};
    if Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
        tokio::task::block_in_place(f).map_err(BackendError::from)
    } else {
        blocking(f).await
    }
}

async fn blocking<T, F>(f: F) -> Result<T, BackendError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(BackendError::from),
        Err(join) => Err(BackendError::Other(Box::new(join))),
    }
}

impl From<StoreError> for BackendError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Io(io) => BackendError::Io(io),
            StoreError::Corrupt(msg) => BackendError::Corrupt(msg),
            StoreError::InvalidArgument(msg) => BackendError::InvalidArgument(msg),
            StoreError::BlobNotFound => BackendError::BlobNotFound,
            StoreError::RangeOutOfBounds { offset, len, size } => {
                BackendError::RangeOutOfBounds { offset, len, size }
            }
            StoreError::UploadNotFound => BackendError::UploadNotFound,
            StoreError::UploadBusy => BackendError::UploadBusy,
            StoreError::HashMismatch { expected, actual } => {
                BackendError::HashMismatch { expected, actual }
            }
            other @ (StoreError::Database(_) | StoreError::InUse) => {
                BackendError::Other(Box::new(other))
            }
        }
    }
}

impl Index for LocalBackend {
    async fn stat(&self, source: &str) -> Result<Option<Entry>, BackendError> {
        let source = source.to_owned();
        self.read_now(move |s| s.stat(&source)).await
    }

    async fn stat_version(
        &self,
        source: &str,
        version: u64,
    ) -> Result<Option<Entry>, BackendError> {
        let source = source.to_owned();
        self.read_now(move |s| s.stat_version(&source, version))
            .await
    }

    async fn versions(&self, source: &str) -> Result<Vec<Entry>, BackendError> {
        let source = source.to_owned();
        self.run(move |s| s.versions(&source)).await
    }

    async fn head(&self, source: &str) -> Result<Option<Head>, BackendError> {
        let source = source.to_owned();
        self.read_now(move |s| s.entry_version(&source)).await
    }

    async fn heads(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Head)>, BackendError> {
        let after = after.map(str::to_owned);
        self.run(move |s| s.heads(after.as_deref(), limit)).await
    }

    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Entry>, BackendError> {
        let (prefix, after) = (prefix.to_owned(), after.map(str::to_owned));
        self.run(move |s| s.list(&prefix, after.as_deref(), limit))
            .await
    }

    async fn changes_since(&self, after: u64, limit: usize) -> Result<Changes, BackendError> {
        self.run(move |s| s.changes_since(after, limit)).await
    }

    async fn last_seq(&self) -> Result<u64, BackendError> {
        self.read_now(Store::last_seq).await
    }

    async fn usage(&self, by: Option<&str>) -> Result<ferry_backend::Usage, BackendError> {
        let by = by.map(str::to_owned);
        self.read_now(move |s| s.usage(by.as_deref())).await
    }

    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.store.subscribe()
    }
}

impl Staged for StagedBlob {
    fn hash(&self) -> Hash {
        StagedBlob::hash(self)
    }

    fn size(&self) -> u64 {
        StagedBlob::size(self)
    }

    fn meta(&self) -> ferry_backend::Meta {
        StagedBlob::meta(self)
    }

    fn set_meta(&mut self, meta: ferry_backend::Meta) {
        StagedBlob::set_meta(self, meta);
    }
}

/// An open local upload: a [`ResumableUpload`], written in place and finished on the
/// blocking pool.
#[derive(Debug)]
pub struct LocalUpload {
    /// `None` while a call runs on the pool, and after a failed one (the handle is then
    /// unusable; begin the upload again).
    inner: Option<ResumableUpload>,
    key: UploadKey,
    offset: u64,
    /// For [`Upload::finish_delta`], which reads the base content.
    store: Arc<Store>,
}

impl LocalUpload {
    fn take(&mut self) -> Result<ResumableUpload, BackendError> {
        self.inner.take().ok_or_else(|| {
            BackendError::InvalidArgument(
                "an earlier call on this upload failed; begin it again".into(),
            )
        })
    }
}

impl Upload for LocalUpload {
    type Staged = StagedBlob;

    fn key(&self) -> &UploadKey {
        &self.key
    }

    fn offset(&self) -> u64 {
        self.offset
    }

    async fn write(&mut self, data: &[u8]) -> Result<u64, BackendError> {
        Ok(self.write_owned(data.to_vec()).await?.0)
    }

    async fn write_owned(&mut self, data: Vec<u8>) -> Result<(u64, Vec<u8>), BackendError> {
        let mut inner = self.take()?;
        // A write reaches the page cache (no fsync): short enough to run in place.
        let (inner, offset, data) = in_place(move || {
            let offset = inner.write(&data)?;
            Ok((inner, offset, data))
        })
        .await?;
        self.inner = Some(inner);
        self.offset = offset;
        Ok((offset, data))
    }

    async fn sync(&mut self) -> Result<u64, BackendError> {
        let mut inner = self.take()?;
        let (inner, offset) = blocking(move || {
            let offset = inner.sync()?;
            Ok((inner, offset))
        })
        .await?;
        self.inner = Some(inner);
        Ok(offset)
    }

    async fn finish(mut self, expected: &Hash) -> Result<StagedBlob, BackendError> {
        let inner = self.take()?;
        let expected = *expected;
        blocking(move || inner.finish(&expected)).await
    }

    async fn finish_delta(
        mut self,
        expected: &Hash,
        base: &Hash,
        chunks: Vec<ChunkRef>,
    ) -> Result<StagedBlob, BackendError> {
        let inner = self.take()?;
        let (expected, base) = (*expected, *base);
        let store = self.store.clone();
        blocking(move || store.finish_delta(inner, &expected, &base, &chunks)).await
    }
}

/// A range of a local blob: its files, held open (so a prune meanwhile does not matter).
#[derive(Debug)]
pub struct LocalReader {
    /// `None` while a read runs, and after a failed one.
    content: Option<Content>,
    remaining: u64,
}

impl BlobReader for LocalReader {
    fn remaining(&self) -> u64 {
        self.remaining
    }

    async fn read_into(&mut self, mut buf: Vec<u8>, max: usize) -> Result<Vec<u8>, BackendError> {
        use std::io::Read;
        let want = self.remaining.min(max as u64);
        if want == 0 {
            return Ok(buf);
        }
        let content = self.content.take().ok_or_else(|| {
            BackendError::InvalidArgument("an earlier read of this range failed".into())
        })?;
        let (content, buf) = in_place(move || {
            let mut content = content;
            let before = buf.len();
            if let Some(file) = content.single_file() {
                // One file: `read_to_end` reads into the spare capacity without zeroing it.
                file.take(want).read_to_end(&mut buf)?;
                if ((buf.len() - before) as u64) < want {
                    return Err(StoreError::Corrupt(
                        "a blob file is shorter than its record".into(),
                    ));
                }
            } else {
                buf.resize(before + want as usize, 0);
                content
                    .read_exact(&mut buf[before..])
                    .map_err(|e| match e.kind() {
                        std::io::ErrorKind::UnexpectedEof => StoreError::Corrupt(e.to_string()),
                        _ => e.into(),
                    })?;
            }
            Ok((content, buf))
        })
        .await?;
        self.content = Some(content);
        self.remaining -= want;
        Ok(buf)
    }
}

impl Blobs for LocalBackend {
    type Staged = StagedBlob;
    type Upload = LocalUpload;
    type Reader = LocalReader;

    async fn begin_upload(&self, key: &UploadKey, now: u64) -> Result<LocalUpload, BackendError> {
        let k = key.clone();
        let inner = self.run(move |s| s.begin_upload(&k, now)).await?;
        Ok(LocalUpload {
            offset: inner.len(),
            inner: Some(inner),
            key: key.clone(),
            store: self.store.clone(),
        })
    }

    async fn upload_status(&self, key: &UploadKey) -> Result<Option<u64>, BackendError> {
        let key = key.clone();
        self.run(move |s| s.upload_status(&key)).await
    }

    async fn abort_upload(&self, key: &UploadKey) -> Result<bool, BackendError> {
        let key = key.clone();
        self.run(move |s| s.abort_upload(&key)).await
    }

    async fn sweep_uploads(&self, older_than: u64) -> Result<u64, BackendError> {
        self.run(move |s| s.sweep_uploads(older_than)).await
    }

    async fn blob_size(&self, hash: &Hash) -> Result<Option<u64>, BackendError> {
        let hash = *hash;
        self.read_now(move |s| s.blob_size(&hash)).await
    }

    async fn chunks(&self, hash: &Hash) -> Result<Option<Vec<ChunkRef>>, BackendError> {
        let hash = *hash;
        // Computing them reads the whole content the first time: on the pool.
        self.run(move |s| s.chunks(&hash)).await
    }

    async fn read(&self, hash: &Hash, offset: u64, len: u64) -> Result<Vec<u8>, BackendError> {
        let hash = *hash;
        self.read_now(move |s| s.read_blob(&hash, offset, len))
            .await
    }

    async fn reader(
        &self,
        hash: &Hash,
        offset: u64,
        len: u64,
    ) -> Result<LocalReader, BackendError> {
        let hash = *hash;
        let content = self
            .read_now(move |s| s.open_blob_range(&hash, offset, len))
            .await?;
        Ok(LocalReader {
            content: Some(content),
            remaining: len,
        })
    }
}

impl Backend for LocalBackend {
    async fn commit(
        &self,
        source: &str,
        staged: StagedBlob,
        by: &str,
        now: u64,
    ) -> Result<Entry, BackendError> {
        check_source(source)?;
        check_by(by)?;
        let (source, by) = (source.to_owned(), by.to_owned());
        self.run(move |s| s.commit(&source, staged, &by, now)).await
    }

    /// Queued at once (not when first polled), so that puts made back to back share a
    /// batch (group.rs, store/batch.rs).
    fn commit_small(
        &self,
        source: String,
        content: Vec<u8>,
        expected: Hash,
        meta: Meta,
        by: String,
        now: u64,
    ) -> impl std::future::Future<Output = Result<Entry, BackendError>> + Send {
        let queued = check_source(&source)
            .and_then(|()| check_by(&by))
            .map(|()| {
                let put = SmallPut {
                    source,
                    content,
                    expected,
                    meta,
                    by,
                    now,
                };
                self.group.queue(&self.store, put)
            });
        async move {
            match queued?.await {
                Ok(result) => result.map_err(BackendError::from),
                Err(_) => Err(BackendError::Other(
                    "the group commit stopped before this put was committed".into(),
                )),
            }
        }
    }

    async fn delete(&self, source: &str, by: &str, now: u64) -> Result<Option<u64>, BackendError> {
        check_by(by)?;
        let (source, by) = (source.to_owned(), by.to_owned());
        self.run(move |s| s.delete(&source, &by, now)).await
    }

    async fn commit_replica(
        &self,
        source: &str,
        staged: StagedBlob,
        by: &str,
        modified: u64,
        version: u64,
    ) -> Result<Option<Entry>, BackendError> {
        check_source(source)?;
        let (source, by) = (source.to_owned(), by.to_owned());
        self.run(move |s| s.commit_replica(&source, staged, &by, modified, version))
            .await
    }

    async fn delete_replica(
        &self,
        source: &str,
        version: u64,
        by: &str,
        modified: u64,
    ) -> Result<bool, BackendError> {
        check_source(source)?;
        let (source, by) = (source.to_owned(), by.to_owned());
        self.run(move |s| s.delete_replica(&source, version, &by, modified))
            .await
    }
}
