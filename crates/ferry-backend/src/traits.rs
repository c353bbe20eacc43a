//! The three traits of the seam: [`Index`] (records), [`Blobs`] (content and uploads) and
//! [`Backend`] (the writes that touch both).
//!
//! Every method returns `impl Future<Output = …> + Send`: a multi-thread tokio server can
//! hold the future across `.await` points inside a spawned task. Implementors may write
//! `async fn` in their `impl` blocks; the compiler then checks that the future is `Send`.
//! Callers use the traits through generics (`E: Backend`); the traits are not object safe
//! (return-position `impl Trait`), which is the price of no boxing and no `async-trait`.

use std::future::Future;

use crate::{Changes, ChunkRef, Entry, Hash, Head, Meta, Result, UploadKey, Usage};

/// The record side: sources, their versions and heads, and the change log. Read-only; the
/// writes are in [`Backend`] because they also place or free blobs.
pub trait Index: Send + Sync {
    /// The current entry of `source`; `None` if it is missing or deleted.
    fn stat(&self, source: &str) -> impl Future<Output = Result<Option<Entry>>> + Send;

    /// A kept version of `source`; `None` if there is no such live version (never existed,
    /// pruned, or the source was deleted).
    fn stat_version(
        &self,
        source: &str,
        version: u64,
    ) -> impl Future<Output = Result<Option<Entry>>> + Send;

    /// The kept versions of `source`, oldest first (empty if missing or deleted).
    fn versions(&self, source: &str) -> impl Future<Output = Result<Vec<Entry>>> + Send;

    /// The current head of `source`, tombstones included; `None` if it never existed.
    fn head(&self, source: &str) -> impl Future<Output = Result<Option<Head>>> + Send;

    /// The heads of every source, tombstones included, sorted by name (byte order): at most
    /// `limit`, starting strictly after `after` if given.
    fn heads(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(String, Head)>>> + Send;

    /// Current entries whose name starts with `prefix`, sorted by name (byte order): at most
    /// `limit`, starting strictly after `after` if given. Deleted sources are skipped.
    fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Entry>>> + Send;

    /// Up to `limit` changes with a sequence number above `after`, oldest first, from one
    /// consistent snapshot; says whether changes after `after` were pruned (a gap).
    fn changes_since(
        &self,
        after: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Changes>> + Send;

    /// The last change sequence number given out; 0 if nothing changed yet.
    fn last_seq(&self) -> impl Future<Output = Result<u64>> + Send;

    /// What the kept versions committed by `by` take (their number and total size), for
    /// quotas; with `None`, what all kept versions take (before deduplication), for
    /// monitoring. Exact after every commit, delete and prune.
    fn usage(&self, by: Option<&str>) -> impl Future<Output = Result<Usage>> + Send;

    /// Follows the change log: a receiver of the last sequence number, moved forward after
    /// every change this backend makes visible (by any handle on it; for a backend shared by
    /// several servers, also the changes the others make). It never moves back and may skip
    /// numbers: read the log with [`Index::changes_since`] to learn what changed. The value
    /// starts at the last sequence number known when the backend was opened, or later.
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64>;
}

/// Moves a change signal forward to `seq` (never back: hooks of two concurrent commits may
/// run out of order). For backend implementations.
pub fn advance_signal(tx: &tokio::sync::watch::Sender<u64>, seq: u64) {
    tx.send_if_modified(|latest| {
        let newer = seq > *latest;
        if newer {
            *latest = seq;
        }
        newer
    });
}

/// A range of one blob, read piece by piece ([`Blobs::reader`]): a large body streams
/// through a few reused buffers instead of being held whole.
pub trait BlobReader: Send + 'static {
    /// Bytes of the range not read yet.
    fn remaining(&self) -> u64;

    /// Appends the next at most `max` bytes of the range to `buf` and returns it. Appends
    /// nothing only when the range is done (or `max` is 0). A blob found shorter than its
    /// size is [`BackendError::Corrupt`](crate::BackendError::Corrupt), never a short range.
    fn read_into(
        &mut self,
        buf: Vec<u8>,
        max: usize,
    ) -> impl Future<Output = Result<Vec<u8>>> + Send;
}

/// A finished upload: durable, its hash verified, but not visible until a
/// [`Backend::commit`]. Dropping it discards it (or leaves an orphan a sweep removes).
pub trait Staged: Send + std::fmt::Debug + 'static {
    /// BLAKE3 of the content.
    fn hash(&self) -> Hash;
    /// Size of the content in bytes.
    fn size(&self) -> u64;
    /// The metadata the version committed from this will carry (none until set).
    fn meta(&self) -> Meta;
    /// Sets the metadata the version committed from this will carry.
    fn set_meta(&mut self, meta: Meta);
}

/// An open handle on a resumable upload. One handle per upload at a time. Dropping it keeps
/// everything written so far; [`Blobs::begin_upload`] with the same key continues it.
pub trait Upload: Send {
    /// What [`Upload::finish`] returns.
    type Staged: Staged;

    /// The upload's key.
    fn key(&self) -> &UploadKey;

    /// Bytes held so far: the offset the next [`Upload::write`] appends at.
    fn offset(&self) -> u64;

    /// Appends `data` at [`Upload::offset`] and returns the new offset. The bytes are
    /// durable after the next [`Upload::sync`] (or `finish`); a crash before that may lose
    /// them, and the offset reported when the upload is begun again says what survived.
    fn write(&mut self, data: &[u8]) -> impl Future<Output = Result<u64>> + Send;

    /// [`Upload::write`] of an owned buffer, handed back afterwards for reuse: a backend
    /// that writes on another thread (the local one) takes it there without a copy. Returns
    /// the new offset and the buffer.
    fn write_owned(
        &mut self,
        data: Vec<u8>,
    ) -> impl Future<Output = Result<(u64, Vec<u8>)>> + Send {
        async move {
            let offset = self.write(&data).await?;
            Ok((offset, data))
        }
    }

    /// Makes everything written so far durable and returns the offset.
    fn sync(&mut self) -> impl Future<Output = Result<u64>> + Send;

    /// Ends the upload: checks that the whole content hashes to `expected` and stages it
    /// durably. On a mismatch the upload is discarded, nothing becomes visible, and the
    /// error is [`BackendError::HashMismatch`](crate::BackendError::HashMismatch).
    fn finish(self, expected: &Hash) -> impl Future<Output = Result<Self::Staged>> + Send;

    /// Ends a **delta** upload (docs/PROTOCOL.md §5.4): the bytes written are the chunks of
    /// `chunks` that [`ferry_proto::chunking::needed`] marks as needed against the chunks of
    /// the visible content `base`, in order; the others are taken from `base` (or from an
    /// earlier chunk of this content). Checks every chunk's hash, that nothing is left over,
    /// and that the whole content hashes to `expected`, then stages it durably, sharing what
    /// it took from `base` where the backend can.
    ///
    /// On any mismatch the upload is discarded and the error is
    /// [`BackendError::HashMismatch`](crate::BackendError::HashMismatch); if `base` is not
    /// visible (pruned meanwhile) it is discarded too and the error is
    /// [`BackendError::BlobNotFound`](crate::BackendError::BlobNotFound).
    fn finish_delta(
        self,
        expected: &Hash,
        base: &Hash,
        chunks: Vec<ChunkRef>,
    ) -> impl Future<Output = Result<Self::Staged>> + Send;
}

/// The content side: blobs named by the BLAKE3 of their content, read in ranges, and
/// uploads staged in parts under a key that survives a restart.
///
/// A blob is the content of a version, named by the BLAKE3 of that content. Every content is
/// also a list of content-defined chunks ([`Blobs::chunks`], docs/PROTOCOL.md §5.4): a delta
/// upload sends only the chunks a base content lacks ([`Upload::finish_delta`]), and a
/// backend may store a content as references to chunks it already holds.
pub trait Blobs: Send + Sync {
    /// A durable, verified, not yet visible upload.
    type Staged: Staged;
    /// An open upload handle.
    type Upload: Upload<Staged = Self::Staged>;
    /// A range of a blob being read.
    type Reader: BlobReader;

    /// Opens the upload `key`, creating it empty if it does not exist, or continuing it
    /// from the bytes already held ([`Upload::offset`]). `now` (unix seconds) is recorded
    /// as the upload's last activity for [`Blobs::sweep_uploads`].
    /// [`BackendError::UploadBusy`](crate::BackendError::UploadBusy) if a handle is open.
    fn begin_upload(
        &self,
        key: &UploadKey,
        now: u64,
    ) -> impl Future<Output = Result<Self::Upload>> + Send;

    /// Bytes held by the upload `key`; `None` if there is no such upload.
    fn upload_status(&self, key: &UploadKey) -> impl Future<Output = Result<Option<u64>>> + Send;

    /// Discards the upload `key`. Returns whether there was one.
    /// [`BackendError::UploadBusy`](crate::BackendError::UploadBusy) if a handle is open.
    fn abort_upload(&self, key: &UploadKey) -> impl Future<Output = Result<bool>> + Send;

    /// Discards every upload whose last activity is before `older_than` (unix seconds) and
    /// that no handle has open. Returns how many it discarded.
    fn sweep_uploads(&self, older_than: u64) -> impl Future<Output = Result<u64>> + Send;

    /// Size of the visible blob `hash`; `None` if no committed version references it.
    fn blob_size(&self, hash: &Hash) -> impl Future<Output = Result<Option<u64>>> + Send;

    /// The content-defined chunks of the visible blob `hash`, in order; `None` if no
    /// committed version references it. A backend may compute them on the first call and
    /// keep them.
    fn chunks(&self, hash: &Hash) -> impl Future<Output = Result<Option<Vec<ChunkRef>>>> + Send;

    /// `len` bytes of blob `hash` from `offset`. `offset + len` may equal the size (an
    /// empty read at the end); past it is
    /// [`BackendError::RangeOutOfBounds`](crate::BackendError::RangeOutOfBounds). A blob
    /// that is not visible is [`BackendError::BlobNotFound`](crate::BackendError::BlobNotFound)
    /// (also when a version was pruned between a lookup and this read).
    fn read(
        &self,
        hash: &Hash,
        offset: u64,
        len: u64,
    ) -> impl Future<Output = Result<Vec<u8>>> + Send;

    /// The same range as [`Blobs::read`], with the same errors (reported here, at open), as a
    /// reader. Once open, the range stays readable even if the version is pruned meanwhile
    /// (the local backend holds the file open; a remote one pins what it needs or fails the
    /// read with an error, never with other bytes).
    fn reader(
        &self,
        hash: &Hash,
        offset: u64,
        len: u64,
    ) -> impl Future<Output = Result<Self::Reader>> + Send;
}

/// A whole backend: the writes that make staged content visible or free it.
///
/// Versions beyond the backend's `keep_versions` are pruned by the commit that adds one, and
/// blobs that no kept version references any more are removed by the time the write returns
/// (a crash may leave them; the backend's next open or sweep removes them). Every write that
/// changes a head is logged in the change log in the same transaction.
pub trait Backend: Index + Blobs {
    /// Makes `staged` the new current version of `source` (version = previous + 1, from 1,
    /// never reused even after a delete), made by `by` at `now`.
    fn commit(
        &self,
        source: &str,
        staged: Self::Staged,
        by: &str,
        now: u64,
    ) -> impl Future<Output = Result<Entry>> + Send;

    /// Makes `content`, held whole in memory, the new current version of `source` with
    /// `meta`, as [`Backend::commit`] of an upload of it would, after checking that it
    /// hashes to `expected` ([`BackendError::HashMismatch`](crate::BackendError::HashMismatch)
    /// if not, and nothing is stored).
    ///
    /// For small contents (a streamed put, docs/PROTOCOL.md §5.2): a backend may commit
    /// calls made close together as one, so that many small puts share one durable write.
    /// The local backend queues the content when this is **called**, before the future is
    /// first polled, so that calls made back to back are grouped; dropping the future does
    /// not cancel a call already queued.
    ///
    /// `source` and `by` are owned, so that the future borrows nothing but the backend.
    fn commit_small(
        &self,
        source: String,
        content: Vec<u8>,
        expected: Hash,
        meta: Meta,
        by: String,
        now: u64,
    ) -> impl Future<Output = Result<Entry>> + Send;

    /// Deletes `source`: a tombstone takes the next version, every version is dropped.
    /// Returns the tombstone's version, or `None` if it was missing or already deleted.
    fn delete(
        &self,
        source: &str,
        by: &str,
        now: u64,
    ) -> impl Future<Output = Result<Option<u64>>> + Send;

    /// Stores `staged` as `version` of `source` if it wins under
    /// [`replica_wins`](crate::replica_wins); returns the entry, or `None` (and discards
    /// the staged content) if it does not. `version` must be at least 1.
    fn commit_replica(
        &self,
        source: &str,
        staged: Self::Staged,
        by: &str,
        modified: u64,
        version: u64,
    ) -> impl Future<Output = Result<Option<Entry>>> + Send;

    /// Records a tombstone at `version` of `source` if it wins under
    /// [`replica_wins`](crate::replica_wins). Returns whether it did.
    fn delete_replica(
        &self,
        source: &str,
        version: u64,
        by: &str,
        modified: u64,
    ) -> impl Future<Output = Result<bool>> + Send;
}

/// How much history a backend keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Versions kept per source, the current one included (`0` counts as 1).
    pub keep_versions: u32,
    /// Latest changes kept in the change log (`0` counts as 1).
    pub keep_changes: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            keep_versions: 3,
            keep_changes: 100_000,
        }
    }
}
