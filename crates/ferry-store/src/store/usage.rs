//! What each principal's kept versions take: a `usage` table of principal name → (bytes,
//! versions), changed in the same write transaction as every insert into and removal from
//! `VERSIONS`, so it always agrees with them (and is rebuilt from them when an older index is
//! upgraded). Quotas read it.

use redb::{ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction};

use super::{Store, VERSIONS, decode_version};
use crate::record::Record;
use crate::{StoreError, Usage};

/// Principal name (UTF-8 bytes) → (bytes, versions) of its kept versions; absent means zero.
/// The key [`ALL`] holds the totals of every principal.
pub(super) const USAGE: TableDefinition<&[u8], (u64, u64)> = TableDefinition::new("usage");

pub(super) type UsageTable<'t> = Table<'t, &'static [u8], (u64, u64)>;

/// The key of the totals: no principal's name is empty.
const ALL: &[u8] = b"";

fn corrupt(by: &str) -> StoreError {
    StoreError::Corrupt(format!("usage of {by:?} disagrees with its versions"))
}

/// `rec` was inserted into `VERSIONS`.
pub(super) fn added(usage: &mut UsageTable<'_>, rec: &Record) -> Result<(), StoreError> {
    add(usage, ALL, rec)?;
    add(usage, rec.by.as_bytes(), rec)
}

/// `rec` was removed from `VERSIONS`.
pub(super) fn removed(usage: &mut UsageTable<'_>, rec: &Record) -> Result<(), StoreError> {
    sub(usage, ALL, rec)?;
    sub(usage, rec.by.as_bytes(), rec)
}

fn add(usage: &mut UsageTable<'_>, key: &[u8], rec: &Record) -> Result<(), StoreError> {
    let (bytes, versions) = usage.get(key)?.map_or((0, 0), |g| g.value());
    let bytes = bytes
        .checked_add(rec.size)
        .ok_or_else(|| corrupt(&rec.by))?;
    let versions = versions.checked_add(1).ok_or_else(|| corrupt(&rec.by))?;
    usage.insert(key, (bytes, versions))?;
    Ok(())
}

fn sub(usage: &mut UsageTable<'_>, key: &[u8], rec: &Record) -> Result<(), StoreError> {
    let (bytes, versions) = usage.get(key)?.map_or((0, 0), |g| g.value());
    let bytes = bytes
        .checked_sub(rec.size)
        .ok_or_else(|| corrupt(&rec.by))?;
    let versions = versions.checked_sub(1).ok_or_else(|| corrupt(&rec.by))?;
    if versions == 0 {
        usage.remove(key)?;
    } else {
        usage.insert(key, (bytes, versions))?;
    }
    Ok(())
}

/// Fills an empty `usage` table from `VERSIONS` (when an index of an older format is
/// upgraded).
pub(super) fn rebuild(txn: &WriteTransaction) -> Result<u64, StoreError> {
    let versions = txn.open_table(VERSIONS)?;
    let mut usage = txn.open_table(USAGE)?;
    let mut counted = 0;
    for item in versions.iter()? {
        let (k, v) = item?;
        let rec = decode_version(v.value(), k.value().1)?;
        added(&mut usage, &rec)?;
        counted += 1;
    }
    Ok(counted)
}

impl Store {
    /// What `by`'s kept versions take (zero if it has none); with `None`, what every kept
    /// version takes.
    pub fn usage(&self, by: Option<&str>) -> Result<Usage, StoreError> {
        let txn = self.db.begin_read()?;
        let usage = txn.open_table(USAGE)?;
        Ok(usage
            .get(by.map_or(ALL, str::as_bytes))?
            .map_or(Usage::default(), |g| {
                let (bytes, versions) = g.value();
                Usage { bytes, versions }
            }))
    }
}
