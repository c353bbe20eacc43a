//! The crate's error type.

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
    /// The index or the blob folder is inconsistent or holds undecodable data.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// An argument cannot be stored (for example a principal name longer than 65535 bytes).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        match e {
            redb::Error::Corrupted(msg) => StoreError::Corrupt(format!("database: {msg}")),
            redb::Error::Io(io) => StoreError::Io(io),
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
