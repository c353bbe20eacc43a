//! [`SharedBackend`]: a whole [`Backend`](ferry_backend::Backend) that several server
//! instances share: the index (sources, versions, heads, the change log, blob references,
//! uploads in progress) in PostgreSQL, the content in S3-compatible object storage.
//!
//! - `index.rs`: the [`Index`](ferry_backend::Index) reads;
//! - `write.rs`: commits, deletes and replica writes, each one transaction;
//! - `objects.rs`: the object store, object names, ranged readers;
//! - `upload.rs`: resumable uploads (multipart parts in the object store, state in PostgreSQL);
//! - `delta.rs`: a delta upload assembled from a base object and the chunks sent;
//! - `blobs.rs`: the [`Blobs`](ferry_backend::Blobs) reads and chunk lists;
//! - `listen.rs`: the change signal, fed by LISTEN/NOTIFY and caught up from the log;
//! - `sweep.rs`: removing objects nothing references.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use deadpool_postgres::Pool;
use ferry_backend::{BackendError, Result, Retention};
use tokio_postgres::Config;
use zeroize::Zeroizing;

use crate::{build_pool, other, pool_error, schema, with_defaults};

mod blobs;
mod delta;
mod index;
mod listen;
mod objects;
mod sweep;
mod upload;
mod write;

pub use objects::SharedReader;
pub use upload::SharedUpload;
pub use write::SharedStaged;

/// The secret access key of an object store: zeroized on drop, printed as `S3Secret(..)`.
#[derive(Clone)]
pub struct S3Secret(Zeroizing<String>);

impl S3Secret {
    /// Wraps `secret`.
    pub fn new(secret: String) -> Self {
        S3Secret(Zeroizing::new(secret))
    }
}

impl fmt::Debug for S3Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("S3Secret(..)")
    }
}

/// Where the content lives: an S3-compatible bucket, path-style requests.
#[derive(Clone)]
pub struct S3Config {
    /// The endpoint URL (`http://127.0.0.1:9000`); `None` for AWS's own.
    pub endpoint: Option<String>,
    /// The region (any name for most S3-compatible servers).
    pub region: String,
    /// The bucket (it must exist).
    pub bucket: String,
    /// Prefix of every object ferry writes (`""` or ending without `/`: `ferry` puts
    /// objects under `ferry/…`). Several servers of one deployment share it.
    pub prefix: String,
    /// The access key ID.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: S3Secret,
    /// Allows a plain `http://` endpoint (loopback tests; never over a network).
    pub allow_http: bool,
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// How a [`SharedBackend`] runs.
#[derive(Clone, Copy, Debug)]
pub struct SharedOptions {
    /// Versions and changes kept.
    pub retention: Retention,
    /// PostgreSQL connections of this instance, at most.
    pub max_connections: usize,
    /// How often the change signal reads the log's last number even without a
    /// notification (a missed one is caught up within this time).
    pub catch_up: Duration,
}

impl Default for SharedOptions {
    fn default() -> Self {
        SharedOptions {
            retention: Retention::default(),
            max_connections: 16,
            catch_up: Duration::from_secs(5),
        }
    }
}

/// The PostgreSQL + object store backend. Cheap to clone: clones share one pool, one object
/// store client and one change signal.
#[derive(Clone)]
pub struct SharedBackend {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) pool: Pool,
    pub(crate) objects: objects::Objects,
    pub(crate) keep_versions: i64,
    pub(crate) keep_changes: i64,
    /// This instance's name in upload holders (`instance:token`), random per open.
    pub(crate) instance: String,
    /// Uploads with a handle open in this instance: key → holder.
    pub(crate) open: Mutex<HashMap<String, String>>,
    pub(crate) signal: Arc<tokio::sync::watch::Sender<u64>>,
    /// Whether commits send a notification (off only in tests of the catch-up).
    pub(crate) notify: AtomicBool,
    listener: listen::Listener,
}

impl fmt::Debug for SharedBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.inner.pool.status();
        f.debug_struct("SharedBackend")
            .field("max_connections", &status.max_size)
            .field("objects", &self.inner.objects)
            .finish_non_exhaustive()
    }
}

impl SharedBackend {
    /// Connects to PostgreSQL (`pg`, applying the schema migrations not applied yet) and to
    /// the object store (`s3`, checking that the bucket answers), and starts following the
    /// change log. Fails with one clear error, naming no secret, if either cannot be reached.
    pub async fn open(mut pg: Config, s3: &S3Config, options: SharedOptions) -> Result<Self> {
        with_defaults(&mut pg);
        schema::migrate(&pg).await?;
        let pool = build_pool(pg.clone(), options.max_connections)?;
        let objects = objects::Objects::connect(s3)?;
        objects.check().await?;
        let last = {
            let c = pool.get().await.map_err(pool_error)?;
            index::last_seq(&c).await?
        };
        let (tx, _) = tokio::sync::watch::channel(last);
        let signal = Arc::new(tx);
        let listener = listen::Listener::start(pg, pool.clone(), signal.clone(), options.catch_up);
        let retention = options.retention;
        Ok(SharedBackend {
            inner: Arc::new(Inner {
                pool,
                objects,
                keep_versions: i64::from(retention.keep_versions.max(1)),
                keep_changes: i64::try_from(retention.keep_changes.max(1)).unwrap_or(i64::MAX),
                instance: objects::token(),
                open: Mutex::default(),
                signal,
                notify: AtomicBool::new(true),
                listener,
            }),
        })
    }

    /// Closes the pool and stops following the change log.
    pub fn close(&self) {
        self.inner.listener.stop();
        self.inner.pool.close();
    }

    /// For tests of the catch-up: with `false`, this instance's commits send no
    /// notification, as if every one were lost; other instances then learn of them only
    /// by reading the log's last number.
    #[doc(hidden)]
    pub fn set_notify(&self, on: bool) {
        self.inner.notify.store(on, Ordering::Relaxed);
    }

    pub(crate) async fn conn(&self) -> Result<deadpool_postgres::Object> {
        self.inner.pool.get().await.map_err(pool_error)
    }

    pub(crate) fn open_uploads(&self) -> MutexGuard<'_, HashMap<String, String>> {
        // Nothing panics while holding it: a poisoned lock still guards whole updates.
        self.inner
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A BIGINT column read as u64, for rows of this module.
pub(crate) fn col_u64(row: &tokio_postgres::Row, col: &str) -> Result<u64> {
    crate::rows::u64_col(row, col)
}

/// A 32-byte hash column.
pub(crate) fn col_hash(row: &tokio_postgres::Row, col: &str) -> Result<ferry_backend::Hash> {
    let bytes: Vec<u8> = crate::rows::get(row, col)?;
    bytes
        .try_into()
        .map_err(|_| BackendError::Corrupt(format!("column {col} is not a 32-byte hash")))
}

/// A change sequence number or a version beyond what PostgreSQL stores.
pub(crate) fn exhausted(what: &str) -> BackendError {
    other(format!("{what} is exhausted"))
}
