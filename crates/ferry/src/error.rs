//! The library's one error type.

use std::io;

use ferry_proto::message::ErrorCode;

/// Everything that can go wrong in ferry's library.
///
/// No variant ever carries key material. [`Error::AuthFailed`] is the only authentication
/// failure, whatever its cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The TCP connection could not be made.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// Address dialled.
        addr: String,
        /// Cause.
        source: io::Error,
    },
    /// The server's key is not the one the credential pins.
    #[error(
        "the server at {0} is not the server this credential was issued for (server ID mismatch); nothing was sent"
    )]
    ServerIdMismatch(String),
    /// What answers at the address is not a ferry server (a wrong port, or another protocol).
    #[error("{addr} is not a ferry server: {why} (check the address and port)")]
    NotFerry {
        /// Address dialled.
        addr: String,
        /// What it did instead.
        why: &'static str,
    },
    /// Authentication failed. Deliberately without detail.
    #[error("authentication failed")]
    AuthFailed,
    /// The principal's role does not allow the operation.
    #[error("permission denied: {0}")]
    Forbidden(String),
    /// No such source or version.
    #[error("not found: {0}")]
    NotFound(String),
    /// The server refused a request.
    #[error("server refused the request ({code:?}): {message}")]
    Remote {
        /// Machine-readable cause.
        code: ErrorCode,
        /// The server's text.
        message: String,
    },
    /// The server cannot take the request now (it serves as many connections as it may, or
    /// another connection holds the same upload): try again later.
    #[error("the server is busy: {0}")]
    Busy(String),
    /// The server is shutting down (the connection has ended): try again shortly.
    #[error("the server is shutting down; try again shortly")]
    ShuttingDown,
    /// The server's storage is full; nothing of the request was stored.
    #[error("{0}")]
    NoSpace(String),
    /// The content is larger than the server accepts in one put; nothing was stored.
    #[error("{0}")]
    TooLarge(String),
    /// The put would take the principal past its quota; nothing was stored.
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    /// Bytes received do not match the content hash.
    #[error("content hash mismatch: the data was corrupted in transit or storage")]
    HashMismatch,
    /// The peer broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The connection broke: reset, cut, or ended in the middle of a frame (a server that
    /// stopped, a network that failed). Never a local file or standard output: those are
    /// [`Error::Io`].
    #[error("the connection broke: {0}")]
    Connection(io::Error),
    /// The connection closed before the exchange finished.
    #[error("connection closed before the exchange finished")]
    Closed,
    /// The peer did not answer in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// TLS failed.
    #[error("TLS: {0}")]
    Tls(rustls::Error),
    /// A configuration or key file is wrong.
    #[error("{0}")]
    Config(String),
    /// A credential file is wrong.
    #[error("credential: {0}")]
    Credential(#[from] ferry_proto::credential::CredentialError),
    /// A name is invalid.
    #[error(transparent)]
    Name(#[from] ferry_proto::names::NameError),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] ferry_store::StoreError),
    /// The storage backend failed.
    #[error("storage: {0}")]
    Backend(#[from] ferry_backend::BackendError),
    /// Local IO failed (a file, standard input or output).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// A bug or an exhausted resource.
    #[error("internal error: {0}")]
    Internal(String),

    /// A new password is shorter than [`crate::client::MIN_PASSWORD_CHARS`] characters. Only
    /// the client can check this: the server never sees the password.
    #[error("the new password is too short: use at least {0} characters")]
    PasswordTooShort(usize),
}

impl Error {
    pub(crate) fn from_remote(e: ferry_proto::message::ErrorMsg) -> Self {
        match e.code {
            ErrorCode::Forbidden => Self::Forbidden(e.message),
            ErrorCode::NotFound => Self::NotFound(e.message),
            ErrorCode::HashMismatch => Self::HashMismatch,
            ErrorCode::Busy => Self::Busy(e.message),
            ErrorCode::NoSpace => Self::NoSpace(e.message),
            ErrorCode::TooLarge => Self::TooLarge(e.message),
            ErrorCode::QuotaExceeded => Self::QuotaExceeded(e.message),
            ErrorCode::ShuttingDown => Self::ShuttingDown,
            code => Self::Remote {
                code,
                message: e.message,
            },
        }
    }
}

/// Shorthand.
pub type Result<T, E = Error> = std::result::Result<T, E>;
