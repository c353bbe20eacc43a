//! The one error type every backend returns.

use crate::Hash;

/// Errors returned by a backend. Callers match on the variants; backend-specific failures
/// (a database or network error) travel in [`BackendError::Io`] or [`BackendError::Other`].
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// No blob with this hash is stored (never was, or nothing references it any more).
    #[error("blob not found")]
    BlobNotFound,
    /// A ranged read reaches past the end of the blob: `offset + len` exceeds `size`.
    #[error("range {offset}+{len} is outside a blob of {size} bytes")]
    RangeOutOfBounds {
        /// First byte asked for.
        offset: u64,
        /// Number of bytes asked for.
        len: u64,
        /// Size of the blob.
        size: u64,
    },
    /// No upload in progress under this key (never begun, finished, aborted or swept).
    #[error("no upload in progress under this key")]
    UploadNotFound,
    /// Another handle has this upload open (one writer per upload at a time).
    #[error("the upload is open elsewhere")]
    UploadBusy,
    /// The content of a finished upload does not hash to the value the caller expected;
    /// the upload was discarded and nothing became visible.
    #[error("content hash does not match the expected hash")]
    HashMismatch {
        /// The hash the caller announced.
        expected: Hash,
        /// The hash of what was uploaded.
        actual: Hash,
    },
    /// An argument cannot be stored (an empty or overlong name, version 0, …).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The stored data is inconsistent or undecodable.
    #[error("corrupt backend: {0}")]
    Corrupt(String),
    /// A file system operation failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// Any other failure of the backend (its database, its network client, a task that
    /// panicked), kept as the source error.
    #[error("backend error: {0}")]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

/// Result with [`BackendError`].
pub type Result<T, E = BackendError> = std::result::Result<T, E>;
