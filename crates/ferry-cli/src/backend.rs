//! The account data a server folder's `ferry.toml` names (`[backend] accounts`): the
//! folder's own files, or a PostgreSQL database several instances share. `ferry serve` and
//! every account command (`client`, `user`, `session`) open it here, so they read and write
//! the same place.

use std::sync::Arc;

use anyhow::Context;
use ferry::ServerDir;
use ferry::backend::accounts::DynAccounts;
use ferry::config::{AccountsBackend, Config};
use ferry_postgres::{PgAccounts, PgUrl};

/// Connections an account command keeps to PostgreSQL (it makes a few queries, one at a
/// time).
pub const COMMAND_CONNECTIONS: usize = 2;
/// Connections `ferry serve` keeps to PostgreSQL: authentications and the check before every
/// request each take one for the length of a query; more wait (at most 10 s) for a free one.
pub const SERVE_CONNECTIONS: usize = 16;

/// The accounts `config` (the folder `dir`'s `ferry.toml`) names, opened with at most
/// `connections` connections to a database. PostgreSQL is connected to (10 s at most) and its
/// schema brought up to date; an error says why without the URL, which may hold a password.
pub async fn open(
    dir: &ServerDir,
    config: &Config,
    connections: usize,
) -> anyhow::Result<Arc<dyn DynAccounts>> {
    match config.backend.accounts {
        AccountsBackend::Local => Ok(Arc::new(ferry::LocalAccounts::new(dir.path()))),
        AccountsBackend::Postgres => {
            let mut text = config
                .backend
                .url(dir.path())?
                .context("ferry.toml's [backend] names no URL")?;
            let url = PgUrl::new(std::mem::take(&mut *text));
            let accounts = PgAccounts::open(&url, connections).await.with_context(|| {
                format!(
                    "cannot open the account data in PostgreSQL (ferry.toml's [backend], {})",
                    dir.path().join("ferry.toml").display()
                )
            })?;
            Ok(Arc::new(accounts))
        }
    }
}

/// [`open`] for an account command on `dir`.
pub async fn for_command(dir: &ServerDir) -> anyhow::Result<Arc<dyn DynAccounts>> {
    open(dir, &dir.config()?, COMMAND_CONNECTIONS).await
}
