//! Between rows and `ferry_proto::files` records: u64 as BIGINT (refused above `i64::MAX`,
//! never wrapped), attributes as JSONB, the OPAQUE record's text and the session secret as
//! BYTEA. Every column is read with `try_get`: a row that does not decode is an error, not a
//! panic.

use std::collections::BTreeMap;

use ferry_backend::accounts::{ClientRecord, InviteEntry, LoginState, SessionEntry, UserEntry};
use ferry_backend::{BackendError, Result};
use ferry_proto::password::KsfParams;
use ferry_proto::secret::SessionSecret;
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, Json};
use zeroize::Zeroizing;

/// Attributes as a JSONB parameter.
pub(crate) type Attrs<'a> = Json<&'a BTreeMap<String, String>>;

/// `v` as a BIGINT parameter.
pub(crate) fn big(v: u64, what: &str) -> Result<i64> {
    i64::try_from(v).map_err(|_| {
        BackendError::InvalidArgument(format!("{what} {v} is above what PostgreSQL stores"))
    })
}

fn get<'a, T: FromSql<'a>>(row: &'a Row, col: &str) -> Result<T> {
    row.try_get(col)
        .map_err(|e| BackendError::Corrupt(format!("column {col}: {e}")))
}

/// A TEXT column.
pub(crate) fn text(row: &Row, col: &str) -> Result<String> {
    get(row, col)
}

/// A BIGINT column as u64.
pub(crate) fn u64_col(row: &Row, col: &str) -> Result<u64> {
    let v: i64 = get(row, col)?;
    u64::try_from(v).map_err(|_| BackendError::Corrupt(format!("column {col} is negative")))
}

fn u32_col(row: &Row, col: &str) -> Result<u32> {
    let v: i64 = get(row, col)?;
    u32::try_from(v).map_err(|_| BackendError::Corrupt(format!("column {col} is out of range")))
}

fn attrs_col(row: &Row, col: &str) -> Result<BTreeMap<String, String>> {
    let Json(map) = get::<Json<BTreeMap<String, String>>>(row, col)?;
    Ok(map)
}

/// A `ferry_clients` row (name, epoch, attributes, issued, revoked).
pub(crate) fn client(row: &Row) -> Result<(String, ClientRecord)> {
    Ok((
        get(row, "name")?,
        ClientRecord {
            epoch: u64_col(row, "epoch")?,
            attributes: attrs_col(row, "attributes")?,
            issued: u64_col(row, "issued")?,
            revoked: get(row, "revoked")?,
        },
    ))
}

/// A `ferry_users` row.
pub(crate) fn user(row: &Row) -> Result<(String, UserEntry)> {
    let record: Vec<u8> = get(row, "record")?;
    let record = String::from_utf8(record)
        .map_err(|_| BackendError::Corrupt("a user's record is not text".to_owned()))?;
    Ok((
        get(row, "name")?,
        UserEntry {
            attributes: attrs_col(row, "attributes")?,
            record,
            ksf: KsfParams {
                m_kib: u32_col(row, "ksf_m_kib")?,
                t: u32_col(row, "ksf_t")?,
                p: u32_col(row, "ksf_p")?,
            },
            created: u64_col(row, "created")?,
            generation: u64_col(row, "generation")?,
        },
    ))
}

/// A `ferry_invites` row.
pub(crate) fn invite(row: &Row) -> Result<InviteEntry> {
    Ok(InviteEntry {
        serial: u64_col(row, "serial")?,
        attributes: attrs_col(row, "attributes")?,
        expires: u64_col(row, "expires")?,
        spent: get(row, "spent")?,
    })
}

/// A `ferry_sessions` row.
pub(crate) fn session(row: &Row) -> Result<SessionEntry> {
    let secret: &[u8] = get(row, "secret")?;
    let mut key = Zeroizing::new([0u8; 32]);
    if secret.len() != key.len() {
        return Err(BackendError::Corrupt(
            "a session secret is not 32 bytes".to_owned(),
        ));
    }
    key.copy_from_slice(secret);
    Ok(SessionEntry {
        name: get(row, "name")?,
        attributes: attrs_col(row, "attributes")?,
        origin: get(row, "origin")?,
        secret: SessionSecret::from_bytes(*key),
        created: u64_col(row, "created")?,
        last_used: u64_col(row, "last_used")?,
        idle_secs: u64_col(row, "idle_secs")?,
        expires: u64_col(row, "expires")?,
    })
}

/// A `ferry_logins` row.
pub(crate) fn login(row: &Row) -> Result<LoginState> {
    Ok(LoginState {
        failures: u32_col(row, "failures")?,
        first: u64_col(row, "first")?,
        locked_until: u64_col(row, "locked_until")?,
    })
}
