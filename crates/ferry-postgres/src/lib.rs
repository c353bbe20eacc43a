//! ferry's account data in PostgreSQL: [`PgAccounts`] implements the [`Accounts`] side of the
//! backend seam (client registry and revocations, users and their OPAQUE records, invites,
//! sessions, login-failure counters and lockouts) so that several server instances share it.
//!
//! Opening runs the schema migrations of `migrations/` (embedded at build time), one opener
//! at a time. Every method that two instances could race on is one transaction whose row
//! locks (or a per-name advisory lock) make it atomic: a generation comes from a sequence, an
//! invite is spent by a conditional `UPDATE` in the transaction that stores the user, a
//! failed login is counted on a locked row.
//!
//! ```no_run
//! # async fn demo() -> ferry_backend::Result<()> {
//! use ferry_backend::Accounts;
//! use ferry_postgres::{PgAccounts, PgUrl};
//!
//! let url = PgUrl::new(std::env::var("FERRY_PG_URL").unwrap_or_default());
//! let accounts = PgAccounts::open(&url, 8).await?;
//! let invite = accounts.create_invite("alice", Default::default(), 2_000_000_000).await?;
//! assert_eq!(invite.serial, 1);
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use ferry_backend::{BackendError, Result};
use tokio_postgres::NoTls;
use zeroize::Zeroizing;

pub use ferry_backend::Accounts;
pub use tokio_postgres::Config;

mod accounts;
mod rows;
mod schema;

/// How long opening a connection, or waiting for a free one, may take.
const WAIT: Duration = Duration::from_secs(10);

/// How long a statement may wait for a row or advisory lock (another instance's
/// transaction) before it fails, unless the configuration's `options` set `lock_timeout`.
pub const LOCK_TIMEOUT: &str = "30s";

/// A PostgreSQL connection URL (`postgres://user:password@host:port/dbname`, or the
/// key=value form). It may hold a password: it zeroizes on drop and its `Debug` prints
/// `PgUrl(..)`; it has no `Display`.
#[derive(Clone)]
pub struct PgUrl(Zeroizing<String>);

impl PgUrl {
    /// Wraps `url`.
    pub fn new(url: String) -> Self {
        PgUrl(Zeroizing::new(url))
    }

    /// The parsed configuration. The error names no part of the URL.
    pub fn config(&self) -> Result<Config> {
        Config::from_str(self.0.trim()).map_err(|_| {
            BackendError::InvalidArgument(
                "the PostgreSQL URL does not parse (its text is not shown: it may hold a password)"
                    .to_owned(),
            )
        })
    }
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PgUrl(..)")
    }
}

/// The [`Accounts`] of ferry in one PostgreSQL database, over a small pool of connections.
/// Cloning shares the pool.
#[derive(Clone)]
pub struct PgAccounts {
    pool: Pool,
}

impl fmt::Debug for PgAccounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The pool's manager holds the configuration (a password): show only its status.
        let status = self.pool.status();
        f.debug_struct("PgAccounts")
            .field("max_connections", &status.max_size)
            .field("connections", &status.size)
            .finish_non_exhaustive()
    }
}

impl PgAccounts {
    /// Connects to `url` with at most `max_connections` connections (at least 1), applies
    /// the schema migrations that are not applied yet, and returns the accounts.
    pub async fn open(url: &PgUrl, max_connections: usize) -> Result<Self> {
        Self::open_config(url.config()?, max_connections).await
    }

    /// [`open`](Self::open) with a parsed configuration. A connect timeout of 10 s applies
    /// when the configuration sets none, and a lock wait of [`LOCK_TIMEOUT`] unless its
    /// `options` set another (`-c lock_timeout=…`).
    pub async fn open_config(mut config: Config, max_connections: usize) -> Result<Self> {
        with_defaults(&mut config);
        schema::migrate(&config).await?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_connections.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(WAIT))
            .create_timeout(Some(WAIT))
            .build()
            .map_err(|e| other(format!("cannot build the PostgreSQL pool: {e}")))?;
        Ok(PgAccounts { pool })
    }

    /// Closes the pool: its idle connections end, later calls fail.
    pub fn close(&self) {
        self.pool.close();
    }

    async fn conn(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_error)
    }
}

/// The connect timeout and lock wait that apply unless `config` sets its own.
fn with_defaults(config: &mut Config) {
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(WAIT);
    }
    // Ours first: a later `-c` of the same setting wins.
    let options = format!(
        "-c lock_timeout={LOCK_TIMEOUT} {}",
        config.get_options().unwrap_or_default()
    );
    config.options(options.trim_end());
}

fn other(message: String) -> BackendError {
    BackendError::Other(message.into())
}

/// A database error as a [`BackendError`]. A server error keeps its message and SQLSTATE but
/// not its detail, which can quote a whole row (a record, a session secret).
fn db(e: tokio_postgres::Error) -> BackendError {
    match e.as_db_error() {
        Some(d) => other(format!(
            "PostgreSQL: {} (SQLSTATE {})",
            d.message(),
            d.code().code()
        )),
        None => BackendError::Other(Box::new(e)),
    }
}

fn pool_error(e: PoolError) -> BackendError {
    match e {
        PoolError::Backend(e) => db(e),
        PoolError::Timeout(t) => other(format!("PostgreSQL: no connection in time ({t:?})")),
        PoolError::Closed => other("PostgreSQL: the pool is closed".to_owned()),
        e => other(format!("PostgreSQL pool: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_and_the_configuration_overrides_them() {
        let mut plain = Config::new();
        with_defaults(&mut plain);
        assert_eq!(plain.get_options(), Some("-c lock_timeout=30s"));
        assert_eq!(plain.get_connect_timeout(), Some(&WAIT));
        let mut own = Config::new();
        own.options("-c lock_timeout=1s")
            .connect_timeout(Duration::from_secs(3));
        with_defaults(&mut own);
        assert_eq!(
            own.get_options(),
            Some("-c lock_timeout=30s -c lock_timeout=1s")
        );
        assert_eq!(own.get_connect_timeout(), Some(&Duration::from_secs(3)));
    }

    #[test]
    fn debug_shows_no_url() {
        let url = PgUrl::new("postgres://u:hunter2@h/db".to_owned());
        assert_eq!(format!("{url:?}"), "PgUrl(..)");
    }
}
