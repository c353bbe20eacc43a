//! The index tables a change writes, opened once per write transaction.
//!
//! Opening a redb table looks its root up in the table tree and closing it writes the root
//! back; a commit that changes seven tables paid that seven times per version, more than
//! the inserts themselves for a small put. A group commit (store/batch.rs) now opens them
//! once for the whole batch.

use super::changes::CHANGES;
use super::packs::{MANIFESTS, PACK_REFS};
use super::usage::{USAGE, UsageTable};
use super::*;

/// Every table a commit, a delete or a replica's change writes, open in one write
/// transaction. Drop it before committing that transaction.
pub(super) struct Tables<'t> {
    pub(super) current: Table<'t, &'static [u8], &'static [u8]>,
    pub(super) versions: VersionsTable<'t>,
    pub(super) refs: RefsTable<'t>,
    pub(super) usage: UsageTable<'t>,
    pub(super) manifests: Table<'t, &'static [u8; 32], &'static [u8]>,
    pub(super) packs: Table<'t, &'static [u8; 32], u64>,
    pub(super) meta: Table<'t, &'static str, u64>,
    pub(super) changes: Table<'t, u64, &'static [u8]>,
}

impl<'t> Tables<'t> {
    pub(super) fn open(txn: &'t WriteTransaction) -> Result<Self, StoreError> {
        Ok(Tables {
            current: txn.open_table(CURRENT)?,
            versions: txn.open_table(VERSIONS)?,
            refs: txn.open_table(BLOB_REFS)?,
            usage: txn.open_table(USAGE)?,
            manifests: txn.open_table(MANIFESTS)?,
            packs: txn.open_table(PACK_REFS)?,
            meta: txn.open_table(META)?,
            changes: txn.open_table(CHANGES)?,
        })
    }
}
