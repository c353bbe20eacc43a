//! The chunk index: where the bytes of each known chunk live, so that a content put whole
//! under any source can later be rewritten over chunks the store already holds
//! (store/dedup.rs).
//!
//! Tables:
//! - `chunks`: chunk hash → `file [u8; 32]` ‖ `offset u64` ‖ `len u32` (big-endian): one
//!   place the chunk's bytes are, inside a blob file that is needed.
//! - `file_chunks`: file hash → the chunk hashes (32 bytes each, back to back) whose
//!   `chunks` entry points into that file, so that the entries can be dropped when it goes.
//!
//! Entries are added for the chunks of a whole content once they are known (its manifest
//! is recorded: the first delta against it or the dedup pass) and for the chunks a pack
//! brings (delta uploads, replicas, the dedup pass). The group commit's packs of small
//! contents are left out. Invariant, kept in the write transaction that changes it: an
//! entry points only into a file that is needed (`packs::file_needed`). Every transaction
//! that may leave a file unneeded (a prune, a delete, a replica that loses, a dedup swap)
//! calls [`forget_file`] on it before committing.

use std::collections::BTreeMap;

use super::*;

/// Chunk hash → where its bytes are.
pub(super) const CHUNKS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("chunks");
/// File hash → the chunks whose `chunks` entry points into it.
pub(super) const FILE_CHUNKS: TableDefinition<&[u8; 32], &[u8]> =
    TableDefinition::new("file_chunks");

/// Bytes of one `chunks` value.
const PLACE_LEN: usize = 32 + 8 + 4;

/// Where a chunk's bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Place {
    pub(super) file: Hash,
    pub(super) offset: u64,
    pub(super) len: u32,
}

fn encode_place(p: &Place) -> [u8; PLACE_LEN] {
    let mut out = [0u8; PLACE_LEN];
    out[..32].copy_from_slice(&p.file);
    out[32..40].copy_from_slice(&p.offset.to_be_bytes());
    out[40..].copy_from_slice(&p.len.to_be_bytes());
    out
}

fn decode_place(bytes: &[u8]) -> Result<Place, StoreError> {
    let corrupt = || StoreError::Corrupt(format!("a chunk index entry of {} bytes", bytes.len()));
    if bytes.len() != PLACE_LEN {
        return Err(corrupt());
    }
    Ok(Place {
        file: bytes[..32].try_into().map_err(|_| corrupt())?,
        offset: u64::from_be_bytes(bytes[32..40].try_into().map_err(|_| corrupt())?),
        len: u32::from_be_bytes(bytes[40..].try_into().map_err(|_| corrupt())?),
    })
}

/// Where the chunk `chunk` is, if the index knows it.
pub(super) fn lookup(
    table: &impl ReadableTable<&'static [u8; 32], &'static [u8]>,
    chunk: &Hash,
) -> Result<Option<Place>, StoreError> {
    table
        .get(chunk)?
        .map(|g| decode_place(g.value()))
        .transpose()
}

/// In a write transaction in which every file `extents` use is needed: records where each
/// chunk the index does not know yet is.
pub(super) fn add(txn: &WriteTransaction, extents: &[Extent]) -> Result<(), StoreError> {
    let mut chunks = txn.open_table(CHUNKS)?;
    let mut by_file: BTreeMap<Hash, Vec<u8>> = BTreeMap::new();
    for e in extents {
        if chunks.get(&e.chunk)?.is_some() {
            continue;
        }
        let place = Place {
            file: e.file,
            offset: e.offset,
            len: e.len,
        };
        chunks.insert(&e.chunk, encode_place(&place).as_slice())?;
        by_file
            .entry(e.file)
            .or_default()
            .extend_from_slice(&e.chunk);
    }
    let mut files = txn.open_table(FILE_CHUNKS)?;
    for (file, added) in by_file {
        let mut all = files
            .get(&file)?
            .map(|g| g.value().to_vec())
            .unwrap_or_default();
        all.extend_from_slice(&added);
        files.insert(&file, all.as_slice())?;
    }
    Ok(())
}

/// The chunk index's tables, open in a write transaction.
pub(super) struct Tables<'t> {
    pub(super) chunks: Table<'t, &'static [u8; 32], &'static [u8]>,
    pub(super) files: Table<'t, &'static [u8; 32], &'static [u8]>,
}

impl Tables<'_> {
    /// After this transaction `file` is no longer needed: drops the entries that point
    /// into it.
    pub(super) fn forget_file(&mut self, file: &Hash) -> Result<(), StoreError> {
        let Some(list) = self.files.remove(file)?.map(|g| g.value().to_vec()) else {
            return Ok(());
        };
        for chunk in list.chunks_exact(32) {
            let chunk: Hash = chunk
                .try_into()
                .map_err(|_| StoreError::Corrupt("a file's chunk list is damaged".into()))?;
            let points_here = match self.chunks.get(&chunk)? {
                Some(g) => decode_place(g.value())?.file == *file,
                None => false,
            };
            if points_here {
                self.chunks.remove(&chunk)?;
            }
        }
        Ok(())
    }
}

/// [`Tables::forget_file`] in a write transaction.
pub(super) fn forget_file(txn: &WriteTransaction, file: &Hash) -> Result<(), StoreError> {
    Tables {
        chunks: txn.open_table(CHUNKS)?,
        files: txn.open_table(FILE_CHUNKS)?,
    }
    .forget_file(file)
}
