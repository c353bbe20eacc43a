//! [`Accounts`] for [`PgAccounts`]: the rules of `ferry_backend::accounts::rules` stated in
//! SQL, each write one transaction under READ COMMITTED. What makes each atomic across
//! instances:
//!
//! - a counter that goes up (a client's epoch, an invite's serial) is one upsert computing
//!   the next value from the locked row;
//! - a user's generation comes from a sequence, so it is never given twice;
//! - a conditional `UPDATE ... WHERE` (an unspent invite, the generation a password change
//!   proved) re-checks its condition on the newest row once a racing writer commits, so of
//!   two racers one matches;
//! - the sessions of one name are written under a transaction-scoped advisory lock on that
//!   name (counting them to evict the least recently used is then exact);
//! - a failed login locks its row (an upsert that inserts or locks it), computes the next
//!   state with [`LoginState::after_failure`] and writes it back.
//!
//! Locks are taken in one order everywhere (invite row, user row, the name's session lock),
//! so two writers of one name never wait on each other in a cycle.

use std::collections::BTreeMap;

use deadpool_postgres::{Object, Transaction};
use ferry_backend::Result;
use ferry_backend::accounts::{
    Accounts, ClientRecord, InviteEntry, LoginPolicy, LoginState, SessionEntry, UserEntry,
};
use ferry_proto::files::MAX_SESSIONS_PER_NAME;
use tokio_postgres::Row;
use tokio_postgres::types::{Json, ToSql};

use crate::rows::{self, Attrs, big};
use crate::schema::LOCK_SESSIONS;
use crate::{PgAccounts, db};

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

async fn c_opt(c: &Object, sql: &str, p: Params<'_>) -> Result<Option<Row>> {
    let st = c.prepare_cached(sql).await.map_err(db)?;
    c.query_opt(&st, p).await.map_err(db)
}

async fn c_all(c: &Object, sql: &str, p: Params<'_>) -> Result<Vec<Row>> {
    let st = c.prepare_cached(sql).await.map_err(db)?;
    c.query(&st, p).await.map_err(db)
}

async fn c_exec(c: &Object, sql: &str, p: Params<'_>) -> Result<u64> {
    let st = c.prepare_cached(sql).await.map_err(db)?;
    c.execute(&st, p).await.map_err(db)
}

async fn t_opt(t: &Transaction<'_>, sql: &str, p: Params<'_>) -> Result<Option<Row>> {
    let st = t.prepare_cached(sql).await.map_err(db)?;
    t.query_opt(&st, p).await.map_err(db)
}

async fn t_one(t: &Transaction<'_>, sql: &str, p: Params<'_>) -> Result<Row> {
    let st = t.prepare_cached(sql).await.map_err(db)?;
    t.query_one(&st, p).await.map_err(db)
}

async fn t_exec(t: &Transaction<'_>, sql: &str, p: Params<'_>) -> Result<u64> {
    let st = t.prepare_cached(sql).await.map_err(db)?;
    t.execute(&st, p).await.map_err(db)
}

/// Takes the session lock of `name` until the transaction ends.
async fn lock_sessions(t: &Transaction<'_>, name: &str) -> Result<()> {
    t_exec(
        t,
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&LOCK_SESSIONS, &name],
    )
    .await
    .map(drop)
}

/// Ends `name`'s sessions that a password login opened (a new record ends them).
async fn end_password_sessions(t: &Transaction<'_>, name: &str) -> Result<()> {
    lock_sessions(t, name).await?;
    t_exec(
        t,
        "DELETE FROM ferry_sessions WHERE name = $1 AND by_password",
        &[&name],
    )
    .await
    .map(drop)
}

/// Stores `entry` as `name`'s record with the next generation; returns it.
async fn store_user(t: &Transaction<'_>, name: &str, entry: &UserEntry) -> Result<u64> {
    let row = t_one(
        t,
        "INSERT INTO ferry_users (name, attributes, record, ksf_m_kib, ksf_t, ksf_p, created, generation) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, nextval('ferry_user_generation')) \
         ON CONFLICT (name) DO UPDATE SET attributes = EXCLUDED.attributes, \
           record = EXCLUDED.record, ksf_m_kib = EXCLUDED.ksf_m_kib, ksf_t = EXCLUDED.ksf_t, \
           ksf_p = EXCLUDED.ksf_p, created = EXCLUDED.created, generation = EXCLUDED.generation \
         RETURNING generation",
        &[
            &name,
            &Json(&entry.attributes) as &Attrs<'_>,
            &entry.record.as_bytes(),
            &i64::from(entry.ksf.m_kib),
            &i64::from(entry.ksf.t),
            &i64::from(entry.ksf.p),
            &big(entry.created, "created")?,
        ],
    )
    .await?;
    rows::u64_col(&row, "generation")
}

const SESSION_COLUMNS: &str =
    "name, attributes, origin, secret, created, last_used, idle_secs, expires";

/// Sessions removed a few at a time by every write, skipping rows another writer holds.
const LOGIN_PRUNE: &str = "DELETE FROM ferry_logins WHERE key IN (SELECT key FROM ferry_logins \
     WHERE stale_after <= $1 ORDER BY stale_after LIMIT 16 FOR UPDATE SKIP LOCKED)";

impl Accounts for PgAccounts {
    async fn client(&self, name: &str) -> Result<Option<ClientRecord>> {
        let c = self.conn().await?;
        let row = c_opt(
            &c,
            "SELECT name, epoch, attributes, issued, revoked FROM ferry_clients WHERE name = $1",
            &[&name],
        )
        .await?;
        row.map(|r| rows::client(&r).map(|(_, c)| c)).transpose()
    }

    async fn clients(&self) -> Result<Vec<(String, ClientRecord)>> {
        let c = self.conn().await?;
        let all = c_all(
            &c,
            "SELECT name, epoch, attributes, issued, revoked FROM ferry_clients ORDER BY name",
            &[],
        )
        .await?;
        all.iter().map(rows::client).collect()
    }

    async fn issue_client(
        &self,
        name: &str,
        attributes: BTreeMap<String, String>,
        now: u64,
    ) -> Result<ClientRecord> {
        let c = self.conn().await?;
        let row = c_opt(
            &c,
            "INSERT INTO ferry_clients (name, epoch, attributes, issued, revoked) \
             VALUES ($1, 1, $2, $3, false) \
             ON CONFLICT (name) DO UPDATE SET epoch = ferry_clients.epoch + 1, \
               attributes = EXCLUDED.attributes, issued = EXCLUDED.issued, revoked = false \
             RETURNING name, epoch, attributes, issued, revoked",
            &[&name, &Json(&attributes) as &Attrs<'_>, &big(now, "now")?],
        )
        .await?;
        let row = row.ok_or_else(|| crate::other("an upsert returned no row".to_owned()))?;
        rows::client(&row).map(|(_, c)| c)
    }

    async fn revoke_client(&self, name: &str) -> Result<bool> {
        let c = self.conn().await?;
        let n = c_exec(
            &c,
            "UPDATE ferry_clients SET revoked = true WHERE name = $1 AND NOT revoked",
            &[&name],
        )
        .await?;
        Ok(n == 1)
    }

    async fn user(&self, name: &str) -> Result<Option<UserEntry>> {
        let c = self.conn().await?;
        let row = c_opt(&c, "SELECT * FROM ferry_users WHERE name = $1", &[&name]).await?;
        row.map(|r| rows::user(&r).map(|(_, u)| u)).transpose()
    }

    async fn users(&self) -> Result<Vec<(String, UserEntry)>> {
        let c = self.conn().await?;
        let all = c_all(&c, "SELECT * FROM ferry_users ORDER BY name", &[]).await?;
        all.iter().map(rows::user).collect()
    }

    async fn put_user(&self, name: &str, entry: UserEntry) -> Result<u64> {
        let mut c = self.conn().await?;
        let t = c.transaction().await.map_err(db)?;
        let generation = store_user(&t, name, &entry).await?;
        t.commit().await.map_err(db)?;
        Ok(generation)
    }

    async fn replace_user(
        &self,
        name: &str,
        generation: u64,
        entry: UserEntry,
    ) -> Result<Option<u64>> {
        let Ok(proved) = i64::try_from(generation) else {
            return Ok(None); // never given
        };
        let mut c = self.conn().await?;
        let t = c.transaction().await.map_err(db)?;
        let row = t_opt(
            &t,
            "UPDATE ferry_users SET attributes = $3, record = $4, ksf_m_kib = $5, ksf_t = $6, \
               ksf_p = $7, created = $8, generation = nextval('ferry_user_generation') \
             WHERE name = $1 AND generation = $2 RETURNING generation",
            &[
                &name,
                &proved,
                &Json(&entry.attributes) as &Attrs<'_>,
                &entry.record.as_bytes(),
                &i64::from(entry.ksf.m_kib),
                &i64::from(entry.ksf.t),
                &i64::from(entry.ksf.p),
                &big(entry.created, "created")?,
            ],
        )
        .await?;
        let Some(row) = row else {
            return Ok(None); // dropping `t` rolls back
        };
        let new = rows::u64_col(&row, "generation")?;
        end_password_sessions(&t, name).await?;
        t.commit().await.map_err(db)?;
        Ok(Some(new))
    }

    async fn remove_user(&self, name: &str) -> Result<bool> {
        let mut c = self.conn().await?;
        let t = c.transaction().await.map_err(db)?;
        t_exec(&t, "DELETE FROM ferry_invites WHERE name = $1", &[&name]).await?;
        let existed = t_exec(&t, "DELETE FROM ferry_users WHERE name = $1", &[&name]).await? > 0;
        end_password_sessions(&t, name).await?;
        t.commit().await.map_err(db)?;
        Ok(existed)
    }

    async fn invite(&self, name: &str) -> Result<Option<InviteEntry>> {
        let c = self.conn().await?;
        let row = c_opt(
            &c,
            "SELECT serial, attributes, expires, spent FROM ferry_invites WHERE name = $1",
            &[&name],
        )
        .await?;
        row.map(|r| rows::invite(&r)).transpose()
    }

    async fn invites(&self) -> Result<Vec<(String, InviteEntry)>> {
        let c = self.conn().await?;
        let all = c_all(
            &c,
            "SELECT name, serial, attributes, expires, spent FROM ferry_invites ORDER BY name",
            &[],
        )
        .await?;
        all.iter()
            .map(|r| Ok((rows::text(r, "name")?, rows::invite(r)?)))
            .collect()
    }

    async fn create_invite(
        &self,
        name: &str,
        attributes: BTreeMap<String, String>,
        expires: u64,
    ) -> Result<InviteEntry> {
        let mut c = self.conn().await?;
        let t = c.transaction().await.map_err(db)?;
        let row = t_one(
            &t,
            "INSERT INTO ferry_invites (name, serial, attributes, expires, spent) \
             VALUES ($1, 1, $2, $3, false) \
             ON CONFLICT (name) DO UPDATE SET serial = ferry_invites.serial + 1, \
               attributes = EXCLUDED.attributes, expires = EXCLUDED.expires, spent = false \
             RETURNING serial, attributes, expires, spent",
            &[
                &name,
                &Json(&attributes) as &Attrs<'_>,
                &big(expires, "expires")?,
            ],
        )
        .await?;
        let invite = rows::invite(&row)?;
        if t_exec(&t, "DELETE FROM ferry_users WHERE name = $1", &[&name]).await? > 0 {
            end_password_sessions(&t, name).await?;
        }
        t.commit().await.map_err(db)?;
        Ok(invite)
    }

    async fn register_with_invite(
        &self,
        name: &str,
        serial: u64,
        entry: UserEntry,
        now: u64,
    ) -> Result<Option<u64>> {
        let (Ok(serial), Ok(now)) = (i64::try_from(serial), i64::try_from(now)) else {
            return Ok(None); // no such serial; or past every expiry stored
        };
        let mut c = self.conn().await?;
        let t = c.transaction().await.map_err(db)?;
        let spent = t_opt(
            &t,
            "UPDATE ferry_invites SET spent = true \
             WHERE name = $1 AND serial = $2 AND NOT spent AND expires > $3 RETURNING serial",
            &[&name, &serial, &now],
        )
        .await?;
        if spent.is_none() {
            return Ok(None);
        }
        let generation = store_user(&t, name, &entry).await?;
        end_password_sessions(&t, name).await?;
        t.commit().await.map_err(db)?;
        Ok(Some(generation))
    }

    async fn session(&self, id: &str) -> Result<Option<SessionEntry>> {
        let c = self.conn().await?;
        let sql = format!("SELECT {SESSION_COLUMNS} FROM ferry_sessions WHERE id = $1");
        let row = c_opt(&c, &sql, &[&id]).await?;
        row.map(|r| rows::session(&r)).transpose()
    }

    async fn sessions(&self) -> Result<Vec<(String, SessionEntry)>> {
        let c = self.conn().await?;
        let sql = format!("SELECT id, {SESSION_COLUMNS} FROM ferry_sessions ORDER BY id");
        let all = c_all(&c, &sql, &[]).await?;
        all.iter()
            .map(|r| Ok((rows::text(r, "id")?, rows::session(r)?)))
            .collect()
    }

    async fn put_session(&self, id: &str, entry: SessionEntry, now: u64) -> Result<()> {
        let now = big(now, "now")?;
        let mut c = self.conn().await?;
        let t = c.transaction().await.map_err(db)?;
        lock_sessions(&t, &entry.name).await?;
        t_exec(
            &t,
            "DELETE FROM ferry_sessions WHERE id IN (SELECT id FROM ferry_sessions \
             WHERE ends <= $1::BIGINT FOR UPDATE SKIP LOCKED)",
            &[&now],
        )
        .await?;
        t_exec(
            &t,
            "INSERT INTO ferry_sessions \
               (id, name, attributes, origin, by_password, secret, created, last_used, idle_secs, expires) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, attributes = EXCLUDED.attributes, \
               origin = EXCLUDED.origin, by_password = EXCLUDED.by_password, \
               secret = EXCLUDED.secret, created = EXCLUDED.created, \
               last_used = EXCLUDED.last_used, idle_secs = EXCLUDED.idle_secs, \
               expires = EXCLUDED.expires",
            &[
                &id,
                &entry.name,
                &Json(&entry.attributes) as &Attrs<'_>,
                &entry.origin,
                &entry.opened_by_password(),
                &entry.secret.expose_secret().as_slice(),
                &big(entry.created, "created")?,
                &big(entry.last_used, "last_used")?,
                &big(entry.idle_secs, "idle_secs")?,
                &big(entry.expires, "expires")?,
            ],
        )
        .await?;
        // Keep the name's most recently used sessions; the rest end (least recent first).
        let max = i64::try_from(MAX_SESSIONS_PER_NAME).unwrap_or(i64::MAX);
        t_exec(
            &t,
            "DELETE FROM ferry_sessions WHERE name = $1 AND id NOT IN (SELECT id FROM ferry_sessions \
             WHERE name = $1 ORDER BY last_used DESC, created DESC, id DESC LIMIT $2)",
            &[&entry.name, &max],
        )
        .await?;
        t.commit().await.map_err(db)
    }

    async fn touch_session(&self, id: &str, now: u64) -> Result<Option<SessionEntry>> {
        let Ok(now) = i64::try_from(now) else {
            return Ok(None); // past every end stored
        };
        let c = self.conn().await?;
        let sql = format!(
            "UPDATE ferry_sessions SET last_used = $2 WHERE id = $1 AND ends > $2::BIGINT \
             RETURNING {SESSION_COLUMNS}"
        );
        let row = c_opt(&c, &sql, &[&id, &now]).await?;
        row.map(|r| rows::session(&r)).transpose()
    }

    async fn remove_session(&self, id: &str) -> Result<bool> {
        let c = self.conn().await?;
        Ok(c_exec(&c, "DELETE FROM ferry_sessions WHERE id = $1", &[&id]).await? > 0)
    }

    async fn remove_sessions_of(&self, name: &str) -> Result<u64> {
        let mut c = self.conn().await?;
        let t = c.transaction().await.map_err(db)?;
        lock_sessions(&t, name).await?;
        let n = t_exec(&t, "DELETE FROM ferry_sessions WHERE name = $1", &[&name]).await?;
        t.commit().await.map_err(db)?;
        Ok(n)
    }

    async fn sweep_sessions(&self, now: u64) -> Result<u64> {
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        let c = self.conn().await?;
        c_exec(
            &c,
            "DELETE FROM ferry_sessions WHERE ends <= $1::BIGINT",
            &[&now],
        )
        .await
    }

    async fn login_state(&self, key: &str) -> Result<LoginState> {
        let c = self.conn().await?;
        let row = c_opt(
            &c,
            "SELECT failures, first, locked_until FROM ferry_logins WHERE key = $1",
            &[&key],
        )
        .await?;
        Ok(row
            .map(|r| rows::login(&r))
            .transpose()?
            .unwrap_or_default())
    }

    async fn login_failed(&self, key: &str, now: u64, policy: &LoginPolicy) -> Result<LoginState> {
        let now_i = big(now, "now")?;
        let mut c = self.conn().await?;
        let t = c.transaction().await.map_err(db)?;
        t_exec(&t, LOGIN_PRUNE, &[&now_i]).await?;
        // Inserts the key's row, or locks the existing one, and returns its state.
        let row = t_one(
            &t,
            "INSERT INTO ferry_logins (key, failures, first, locked_until, stale_after) \
             VALUES ($1, 0, 0, 0, 0) \
             ON CONFLICT (key) DO UPDATE SET failures = ferry_logins.failures \
             RETURNING failures, first, locked_until",
            &[&key],
        )
        .await?;
        let state = rows::login(&row)?.after_failure(now, policy);
        let stale_after = state
            .locked_until
            .max(state.first.saturating_add(policy.window_secs));
        t_exec(
            &t,
            "UPDATE ferry_logins SET failures = $2, first = $3, locked_until = $4, stale_after = $5 \
             WHERE key = $1",
            &[
                &key,
                &i64::from(state.failures),
                &big(state.first, "first")?,
                &big(state.locked_until, "locked_until")?,
                &i64::try_from(stale_after).unwrap_or(i64::MAX),
            ],
        )
        .await?;
        t.commit().await.map_err(db)?;
        Ok(state)
    }

    async fn login_succeeded(&self, key: &str) -> Result<()> {
        let c = self.conn().await?;
        c_exec(&c, "DELETE FROM ferry_logins WHERE key = $1", &[&key])
            .await
            .map(drop)
    }
}
