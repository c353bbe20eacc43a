//! `ferry-backend`: the storage seam of ferry.
//!
//! The engine reaches storage only through three traits: [`Index`] (sources, versions,
//! heads with tombstones, the change log), [`Blobs`] (content named by its BLAKE3 hash,
//! read in ranges; uploads staged in parts under an [`UploadKey`] that survives a restart,
//! verified and staged by [`Upload::finish`]) and [`Backend`] (the writes that make staged
//! content visible or free it, under the version, pruning and replica rules).
//!
//! Backends: [`MemoryBackend`] here; the local one (redb index + blob folder) in
//! `ferry-store`; PostgreSQL + S3-compatible storage later. Every backend runs the same
//! [`conformance`] suite from its tests.
//!
//! The traits are async (`impl Future + Send` returns): the later backends' clients are
//! async, and a synchronous backend (the local one) runs its blocking calls on tokio's
//! blocking pool (or in place, for short ones) itself. docs/ARCHITECTURE.md ("Backends") says why.
//!
//! # Example
//!
//! ```
//! use ferry_backend::{Backend, Blobs, Index, MemoryBackend, Retention, Upload, UploadKey};
//!
//! # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
//! let backend = MemoryBackend::new(Retention::default());
//! let key = UploadKey::derive(b"alice greeting 12");
//!
//! let mut upload = backend.begin_upload(&key, 1_700_000_000).await?;
//! upload.write(b"hello, ").await?;
//! drop(upload); // cut off: the part stays
//!
//! let mut upload = backend.begin_upload(&key, 1_700_000_060).await?;
//! assert_eq!(upload.offset(), 7); // continue from what is held
//! upload.write(b"world").await?;
//! let staged = upload.finish(blake3::hash(b"hello, world").as_bytes()).await?;
//! assert!(backend.stat("greeting").await?.is_none()); // durable, not yet visible
//!
//! let entry = backend.commit("greeting", staged, "alice", 1_700_000_061).await?;
//! assert_eq!((entry.version, entry.size), (1, 12));
//! assert_eq!(backend.read(&entry.hash, 7, 5).await?, b"world");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

pub mod accounts;
pub mod conformance;
mod error;
mod memory;
mod memory_accounts;
mod traits;
mod types;

pub use accounts::Accounts;
pub use error::{BackendError, Result};
pub use ferry_proto::chunking::ChunkRef;
pub use memory::{MemoryBackend, MemoryReader, MemoryStaged, MemoryUpload};
pub use traits::{Backend, BlobReader, Blobs, Index, Retention, Staged, Upload, advance_signal};
pub use types::{
    Change, Changes, Entry, Head, Meta, UploadKey, Usage, check_by, check_source, replica_wins,
};

/// A BLAKE3 hash of a blob's content.
pub type Hash = [u8; 32];

/// Uploads `data` in one go under `key` (which must hold no parts) and stages it: begin, write, finish with the BLAKE3
/// of `data`. For small contents and tests; large ones stream through [`Upload::write`].
pub async fn stage_bytes<B: Blobs>(
    blobs: &B,
    key: &UploadKey,
    data: &[u8],
    now: u64,
) -> Result<B::Staged> {
    let mut upload = blobs.begin_upload(key, now).await?;
    if upload.offset() != 0 {
        return Err(BackendError::InvalidArgument(
            "stage_bytes needs a fresh upload key; this one holds parts".into(),
        ));
    }
    upload.write(data).await?;
    upload.finish(blake3::hash(data).as_bytes()).await
}
