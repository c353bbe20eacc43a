//! The schema: the migrations of `migrations/`, embedded at build time and applied by
//! refinery on open, under a session-level advisory lock so that two instances opening at
//! once apply them once (refinery itself takes no lock).

use tokio_postgres::{Config, NoTls};

use crate::{db, other};
use ferry_backend::Result;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Advisory-lock namespaces (the first key of PostgreSQL's two-key form): "fer" + a byte.
pub(crate) const LOCK_MIGRATE: i32 = 0x6665_7201;
/// Serialises the session writes of one name (its second key is `hashtext(name)`).
pub(crate) const LOCK_SESSIONS: i32 = 0x6665_7202;

/// The table refinery records applied migrations in.
const HISTORY: &str = "ferry_schema_history";

/// Applies the migrations not applied yet, on a connection of its own (closed at the end,
/// which also releases the lock whatever happened).
pub(crate) async fn migrate(config: &Config) -> Result<()> {
    let (mut client, connection) = config.connect(NoTls).await.map_err(db)?;
    let driver = tokio::spawn(connection);
    let outcome = async {
        // An instance stuck holding the lock makes this one fail after a minute, not hang.
        client
            .batch_execute("SET lock_timeout = '60s'")
            .await
            .map_err(db)?;
        client
            .execute("SELECT pg_advisory_lock($1, 0)", &[&LOCK_MIGRATE])
            .await
            .map_err(db)?;
        embedded::migrations::runner()
            .set_migration_table_name(HISTORY)
            .run_async(&mut client)
            .await
            .map_err(|e| {
                other(format!(
                    "PostgreSQL schema migration failed: {e}{}",
                    cause(&e)
                ))
            })?;
        client
            .execute("SELECT pg_advisory_unlock($1, 0)", &[&LOCK_MIGRATE])
            .await
            .map_err(db)?;
        Ok(())
    }
    .await;
    drop(client);
    // The connection ends once its client is gone; its own error does not hide `outcome`.
    let _ = driver.await;
    outcome
}

/// The server's message behind a migration error (refinery's own says only "db error"),
/// without its detail, as [`db`] gives it.
fn cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(pg) = s.downcast_ref::<tokio_postgres::Error>()
            && let Some(d) = pg.as_db_error()
        {
            return format!(": {} (SQLSTATE {})", d.message(), d.code().code());
        }
        source = s.source();
    }
    String::new()
}
