//! The object store: the client, object names, whole puts, ranged reads.
//!
//! Objects are named `<prefix>/b/<hex hash>-<token>` (content put whole: small commits,
//! assembled deltas, uploads that fit one part) and `<prefix>/u/<token>` (an upload sent in
//! multipart parts, completed before its hash is checked). The token is random, so an
//! object name is never written twice: removing an object no row references can never
//! remove another writer's bytes. The index maps each hash to its object (`ferry_blobs`).

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_backend::{BackendError, BlobReader, Hash, Result};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStoreExt, PutPayload, RetryConfig};

use super::S3Config;
use crate::other;

/// Bytes of one multipart part (every part but the last), and of one read window.
pub(crate) const PART: usize = 8 << 20;

/// The object store client and the prefix of ferry's objects.
#[derive(Clone)]
pub(crate) struct Objects {
    pub(crate) store: Arc<AmazonS3>,
    prefix: String,
    bucket: String,
}

impl fmt::Debug for Objects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Objects")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// 16 random bytes as hex.
pub(crate) fn token() -> String {
    let mut id = [0u8; 16];
    // The system's randomness is always there on the platforms ferry runs on; a failure
    // would leave zeros, which only makes names collide with a probability we then accept
    // being refused for (object names are UNIQUE in the index).
    let _ = getrandom::fill(&mut id);
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// An object store failure as a [`BackendError`]: its message names the operation and
/// object, never a credential (the client signs requests; keys are not in its errors).
pub(crate) fn s3(what: &str, e: object_store::Error) -> BackendError {
    other(format!("object store: {what}: {e}"))
}

impl Objects {
    /// The client for `config`: path-style requests, bounded retries and timeouts.
    pub(crate) fn connect(config: &S3Config) -> Result<Self> {
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_access_key_id(&config.access_key_id)
            .with_secret_access_key(config.secret_access_key.0.as_str())
            .with_virtual_hosted_style_request(false)
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(30),
                ..RetryConfig::default()
            })
            // One set of client options: `allow_http` is among them.
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(config.allow_http)
                    .with_connect_timeout(Duration::from_secs(10))
                    .with_timeout(Duration::from_secs(120)),
            );
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        let store = builder
            .build()
            .map_err(|e| other(format!("object store configuration: {e}")))?;
        Ok(Objects {
            store: Arc::new(store),
            prefix: config.prefix.trim_matches('/').to_owned(),
            bucket: config.bucket.clone(),
        })
    }

    /// Checks that the bucket answers: a missing object is fine, anything else fails.
    pub(crate) async fn check(&self) -> Result<()> {
        match self.store.head(&self.path("check")).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(s3("the bucket does not answer", e)),
        }
    }

    /// The full path of an object name.
    pub(crate) fn path(&self, name: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(name)
        } else {
            Path::from(format!("{}/{name}", self.prefix))
        }
    }

    /// The prefix all of ferry's objects are under (for listing).
    pub(crate) fn root(&self) -> Option<Path> {
        (!self.prefix.is_empty()).then(|| Path::from(self.prefix.as_str()))
    }

    /// The name under the prefix of a full path, if it is one of ours.
    pub(crate) fn name_of(&self, path: &Path) -> Option<String> {
        let full = path.as_ref();
        if self.prefix.is_empty() {
            return Some(full.to_owned());
        }
        full.strip_prefix(&self.prefix)?
            .strip_prefix('/')
            .map(str::to_owned)
    }

    /// A new name for content `hash` put whole.
    pub(crate) fn whole_name(hash: &Hash) -> String {
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        format!("b/{hex}-{}", token())
    }

    /// A new name for an upload sent in parts.
    pub(crate) fn upload_name() -> String {
        format!("u/{}", token())
    }

    /// Writes `data` as the object `name` in one request.
    pub(crate) async fn put(&self, name: &str, data: Bytes) -> Result<()> {
        self.store
            .put(&self.path(name), PutPayload::from_bytes(data))
            .await
            .map(drop)
            .map_err(|e| s3("put", e))
    }

    /// Bytes `range` of the object `name`; a missing object is `BlobNotFound`, a short one
    /// `Corrupt`.
    pub(crate) async fn get(&self, name: &str, range: Range<u64>) -> Result<Bytes> {
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let want = range.end - range.start;
        match self.store.get_range(&self.path(name), range).await {
            Ok(b) if b.len() as u64 == want => Ok(b),
            Ok(b) => Err(BackendError::Corrupt(format!(
                "object {name} gave {} bytes where {want} were asked for",
                b.len()
            ))),
            Err(object_store::Error::NotFound { .. }) => Err(BackendError::BlobNotFound),
            Err(e) => Err(s3("ranged read", e)),
        }
    }

    /// Removes `name`; a missing object is fine.
    pub(crate) async fn delete(&self, name: &str) -> Result<()> {
        match self.store.delete(&self.path(name)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(s3("delete", e)),
        }
    }

    /// Removes `name` if it can; what it leaves, the sweep removes later.
    pub(crate) async fn delete_quietly(&self, name: &str) {
        let _ = self.delete(name).await;
    }
}

/// A range of one object, read in windows of up to [`PART`] bytes. Once open it reads the
/// object it was opened on: a version pruned meanwhile stays readable until the sweep's
/// grace (docs/SCALING.md) removes the object, after which the read fails with
/// `BlobNotFound`, never with other bytes.
#[derive(Debug)]
pub struct SharedReader {
    objects: Objects,
    name: String,
    /// Next byte to fetch.
    fetch_at: u64,
    end: u64,
    /// Fetched bytes not handed out yet.
    window: Bytes,
}

impl SharedReader {
    pub(crate) fn new(objects: Objects, name: String, start: u64, end: u64) -> Self {
        SharedReader {
            objects,
            name,
            fetch_at: start,
            end,
            window: Bytes::new(),
        }
    }

    /// The next at most `max` bytes (empty when done).
    pub(crate) async fn next(&mut self, max: usize) -> Result<Bytes> {
        if self.window.is_empty() && self.fetch_at < self.end && max > 0 {
            let n = (self.end - self.fetch_at).min(max.clamp(PART / 8, PART) as u64);
            self.window = self
                .objects
                .get(&self.name, self.fetch_at..self.fetch_at + n)
                .await?;
            self.fetch_at += n;
        }
        let n = max.min(self.window.len());
        Ok(self.window.split_to(n))
    }
}

impl BlobReader for SharedReader {
    fn remaining(&self) -> u64 {
        self.end - self.fetch_at + self.window.len() as u64
    }

    async fn read_into(&mut self, mut buf: Vec<u8>, max: usize) -> Result<Vec<u8>> {
        let piece = self.next(max).await?;
        buf.extend_from_slice(&piece);
        Ok(buf)
    }
}
