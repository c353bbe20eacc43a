//! The crate's error type.

use crate::Hash;

/// Errors returned by the store.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file system operation failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The embedded database reported an error (redb's error, as text).
    #[error("database error: {0}")]
    Database(String),
    /// The store is open already, in another process (or through another `Store` in this
    /// one): its index is locked.
    #[error("the store is already open in another process")]
    InUse,
    /// The index or the blob folder is inconsistent or holds undecodable data.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// An argument cannot be stored (for example a principal name longer than 65535 bytes).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// No committed version references a blob with this hash.
    #[error("blob not found")]
    BlobNotFound,
    /// A ranged read reaches past the end of the blob.
    #[error("range {offset}+{len} is outside a blob of {size} bytes")]
    RangeOutOfBounds {
        /// First byte asked for.
        offset: u64,
        /// Number of bytes asked for.
        len: u64,
        /// Size of the blob.
        size: u64,
    },
    /// No resumable upload under this key.
    #[error("no upload in progress under this key")]
    UploadNotFound,
    /// The resumable upload is open through another handle.
    #[error("the upload is open elsewhere")]
    UploadBusy,
    /// A finished upload's content does not hash to the expected value (it was discarded).
    #[error("content hash does not match the expected hash")]
    HashMismatch {
        /// The hash the caller announced.
        expected: Hash,
        /// The hash of what was uploaded.
        actual: Hash,
    },
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        match e {
            redb::Error::Corrupted(msg) => StoreError::Corrupt(format!("database: {msg}")),
            redb::Error::Io(io) => StoreError::Io(io),
            redb::Error::DatabaseAlreadyOpen => StoreError::InUse,
            other => StoreError::Database(other.to_string()),
        }
    }
}

macro_rules! via_redb_error {
    ($($t:ty),* $(,)?) => {
        $(
            impl From<$t> for StoreError {
                fn from(e: $t) -> Self {
                    StoreError::from(redb::Error::from(e))
                }
            }
        )*
    };
}

via_redb_error!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
);

impl From<StoreError> for std::io::Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Io(io) => io,
            other => std::io::Error::other(other),
        }
    }
}
