//! Contents made of chunks (docs/PROTOCOL.md §5.4): where each chunk of a content lives, and
//! which blob files must stay because a content uses chunks inside them.
//!
//! A blob file (`blobs/ab/cdef…`, named by the BLAKE3 of its bytes) is either a whole
//! content or a **pack**: the chunks a delta upload brought that the store did not have.
//! A content's **manifest** lists its chunks in order with where each one lives (a blob
//! file and an offset in it). A content put whole has a file of its own and gets a manifest
//! the first time its chunks are asked for (every extent then points into its own file); a
//! content put as a delta has only a manifest, pointing into the packs of earlier contents
//! and its own.
//!
//! Tables:
//! - `manifests`: content hash → its extents, each `chunk [u8; 32]` ‖ `len u32` ‖
//!   `file [u8; 32]` ‖ `offset u64` (big-endian), back to back.
//! - `pack_refs`: file hash → how many live contents other than the file's own content have
//!   an extent in it (absent means zero).
//!
//! A blob file is kept while `pack_refs` counts it, or while `blob_refs` counts it as a
//! content that is still laid out in its own file (no manifest, or one over that file: a
//! content the dedup pass rewrote over other files no longer needs its own, store/dedup.rs).
//! When a content's last version goes, its manifest goes and the files it used lose a
//! reference, in the same transaction; files left with none are deleted after it committed,
//! as whole contents always were.

use std::collections::BTreeSet;

use ferry_proto::chunking::{ChunkRef, Chunker};

use super::*;

/// Content hash → extents (see the module docs).
pub(super) const MANIFESTS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("manifests");
/// File hash → number of other live contents with an extent in it.
pub(super) const PACK_REFS: TableDefinition<&[u8; 32], u64> = TableDefinition::new("pack_refs");

/// Bytes of one encoded extent.
const EXTENT_LEN: usize = 32 + 4 + 32 + 8;

/// One chunk of a content and where its bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Extent {
    pub(crate) chunk: Hash,
    pub(crate) len: u32,
    /// The blob file holding it.
    pub(crate) file: Hash,
    pub(crate) offset: u64,
}

impl Extent {
    pub(crate) fn chunk_ref(&self) -> ChunkRef {
        ChunkRef {
            hash: self.chunk,
            len: self.len,
        }
    }
}

pub(super) fn encode(extents: &[Extent]) -> Vec<u8> {
    let mut out = Vec::with_capacity(extents.len() * EXTENT_LEN);
    for e in extents {
        out.extend_from_slice(&e.chunk);
        out.extend_from_slice(&e.len.to_be_bytes());
        out.extend_from_slice(&e.file);
        out.extend_from_slice(&e.offset.to_be_bytes());
    }
    out
}

pub(super) fn decode(bytes: &[u8]) -> Result<Vec<Extent>, StoreError> {
    let corrupt = || StoreError::Corrupt(format!("a manifest of {} bytes is damaged", bytes.len()));
    if !bytes.len().is_multiple_of(EXTENT_LEN) {
        return Err(corrupt());
    }
    bytes
        .chunks_exact(EXTENT_LEN)
        .map(|e| {
            let chunk: Hash = e[..32].try_into().map_err(|_| corrupt())?;
            let len = u32::from_be_bytes(e[32..36].try_into().map_err(|_| corrupt())?);
            let file: Hash = e[36..68].try_into().map_err(|_| corrupt())?;
            let offset = u64::from_be_bytes(e[68..76].try_into().map_err(|_| corrupt())?);
            Ok(Extent {
                chunk,
                len,
                file,
                offset,
            })
        })
        .collect()
}

/// The files a manifest of `content` uses besides the content's own file.
fn other_files(content: &Hash, extents: &[Extent]) -> BTreeSet<Hash> {
    extents
        .iter()
        .map(|e| e.file)
        .filter(|f| f != content)
        .collect()
}

/// How a visible content is laid out.
pub(crate) enum Layout {
    /// In its own file, whole.
    Whole,
    /// In extents of blob files.
    Extents(Vec<Extent>),
}

impl Store {
    /// The layout of `hash` if a kept version references it, from one read transaction.
    pub(super) fn layout(&self, hash: &Hash) -> Result<Option<Layout>, StoreError> {
        let txn = self.db.begin_read()?;
        if txn.open_table(BLOB_REFS)?.get(hash)?.is_none() {
            return Ok(None);
        }
        let manifests = txn.open_table(MANIFESTS)?;
        let Some(guard) = manifests.get(hash)? else {
            return Ok(Some(Layout::Whole));
        };
        let extents = decode(guard.value())?;
        if extents.iter().all(|e| e.file == *hash) {
            // Its own file's chunks: read the file straight through.
            return Ok(Some(Layout::Whole));
        }
        Ok(Some(Layout::Extents(extents)))
    }

    /// The extents of the visible content `hash`, computing (and keeping) them for a
    /// content put whole; `None` if no kept version references it.
    pub(crate) fn extents(&self, hash: &Hash) -> Result<Option<Vec<Extent>>, StoreError> {
        {
            let txn = self.db.begin_read()?;
            if txn.open_table(BLOB_REFS)?.get(hash)?.is_none() {
                return Ok(None);
            }
            if let Some(guard) = txn.open_table(MANIFESTS)?.get(hash)? {
                return Ok(Some(decode(guard.value())?));
            }
        }
        // Put whole: cut its file (held open, so a prune meanwhile does not matter).
        let file = {
            let _reading = self.read_lock();
            match self.open_visible_file(hash)? {
                Some(file) => file,
                None => return Ok(None),
            }
        };
        let extents = cut_file(&file, hash)?;
        let mut txn = self.db.begin_write()?;
        // A lost manifest is computed again: no need to wait for the disk.
        txn.set_durability(redb::Durability::None)
            .map_err(|e| StoreError::Database(e.to_string()))?;
        enum Found {
            Stored,
            Other(Vec<Extent>),
            Nothing,
        }
        let found = {
            let refs = txn.open_table(BLOB_REFS)?;
            let mut manifests = txn.open_table(MANIFESTS)?;
            let live = refs.get(hash)?.is_some();
            let existing = manifests
                .get(hash)?
                .map(|g| decode(g.value()))
                .transpose()?;
            match existing {
                // Recorded meanwhile (by the dedup pass, perhaps over other files): that one.
                Some(other) => Found::Other(other),
                None if live => {
                    manifests.insert(hash, encode(&extents).as_slice())?;
                    Found::Stored
                }
                None => Found::Nothing,
            }
        };
        match found {
            Found::Stored => {
                // Its file is needed while the content is live and laid out in it.
                chunk_index::add(&txn, &extents)?;
                txn.commit()?;
                Ok(Some(extents))
            }
            Found::Other(other) => {
                txn.abort()?;
                Ok(Some(other))
            }
            Found::Nothing => {
                txn.abort()?;
                Ok(Some(extents))
            }
        }
    }

    /// The chunks of the visible content `hash` (see [`Store::extents`]).
    pub fn chunks(&self, hash: &Hash) -> Result<Option<Vec<ChunkRef>>, StoreError> {
        Ok(self
            .extents(hash)?
            .map(|e| e.iter().map(Extent::chunk_ref).collect()))
    }

    /// The file of `hash` if a kept version references it. Called with the read lock held.
    pub(super) fn open_visible_file(&self, hash: &Hash) -> Result<Option<File>, StoreError> {
        let txn = self.db.begin_read()?;
        if txn.open_table(BLOB_REFS)?.get(hash)?.is_none() {
            return Ok(None);
        }
        let (_, path) = blob_location(&self.blobs, hash);
        match File::open(&path) {
            Ok(file) => Ok(Some(file)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::Corrupt(format!(
                "referenced blob {} is missing",
                hex(hash)
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Checks, with the read lock held, that every file `extents` use besides `skip` is
    /// present: a commit may then reference them (a file is deleted only under the write
    /// lock, after checking that nothing references it).
    pub(super) fn files_present(
        &self,
        extents: &[Extent],
        skip: Option<&Hash>,
    ) -> Result<bool, StoreError> {
        let files: BTreeSet<Hash> = extents.iter().map(|e| e.file).collect();
        for f in files.iter().filter(|f| Some(*f) != skip) {
            let (_, path) = blob_location(&self.blobs, f);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_file() => {}
                Ok(_) => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }
}

/// Cuts the whole content in `file` (named `hash`) into extents in it.
fn cut_file(file: &File, hash: &Hash) -> Result<Vec<Extent>, StoreError> {
    Ok(cut_file_with(file, hash, &|| false)?.unwrap_or_default())
}

/// [`cut_file`], stopping (`None`) once `cancel` returns true; it is asked after every
/// mebibyte read.
pub(super) fn cut_file_with(
    file: &File,
    hash: &Hash,
    cancel: &dyn Fn() -> bool,
) -> Result<Option<Vec<Extent>>, StoreError> {
    use std::io::Read;
    let mut chunker = Chunker::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut reader = file;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        chunker.push(&buf[..n]);
        if cancel() {
            return Ok(None);
        }
    }
    let mut offset = 0u64;
    Ok(Some(
        chunker
            .finish()
            .into_iter()
            .map(|c| {
                let e = Extent {
                    chunk: c.hash,
                    len: c.len,
                    file: *hash,
                    offset,
                };
                offset += u64::from(c.len);
                e
            })
            .collect(),
    ))
}

/// In a write transaction, after contents lost their last version (`freed`, from
/// `release_ref`): drops their manifests and the references those held on files, adding
/// to `freed` the files left with none. Contents referenced again meanwhile are skipped.
pub(super) fn release_contents(
    txn: &WriteTransaction,
    freed: &mut Vec<Hash>,
) -> Result<(), StoreError> {
    if freed.is_empty() {
        return Ok(());
    }
    let refs = txn.open_table(BLOB_REFS)?;
    let mut manifests = txn.open_table(MANIFESTS)?;
    let mut packs = txn.open_table(PACK_REFS)?;
    release_manifests(&refs, &mut manifests, &mut packs, freed)?;
    // The chunk index points only into needed files; contents gone need no dedup pass.
    let candidates: BTreeSet<Hash> = freed.iter().copied().collect();
    let mut pending = txn.open_table(dedup::DEDUP_PENDING)?;
    let mut index = chunk_index::Tables {
        chunks: txn.open_table(chunk_index::CHUNKS)?,
        files: txn.open_table(chunk_index::FILE_CHUNKS)?,
    };
    for file in &candidates {
        if !needed(&refs, &packs, &manifests, file)? {
            index.forget_file(file)?;
        }
        if refs.get(file)?.is_none() {
            pending.remove(file)?;
        }
    }
    Ok(())
}

/// The manifest half of [`release_contents`].
fn release_manifests(
    refs: &Table<'_, &'static [u8; 32], u64>,
    manifests: &mut Table<'_, &'static [u8; 32], &'static [u8]>,
    packs: &mut Table<'_, &'static [u8; 32], u64>,
    freed: &mut Vec<Hash>,
) -> Result<(), StoreError> {
    let contents = freed.clone();
    for content in &contents {
        if refs.get(content)?.is_some() {
            continue;
        }
        let Some(extents) = manifests
            .remove(content)?
            .map(|g| decode(g.value()))
            .transpose()?
        else {
            continue;
        };
        for file in other_files(content, &extents) {
            let count = packs.get(&file)?.map(|g| g.value());
            match count {
                None | Some(0) => {
                    return Err(StoreError::Corrupt(format!(
                        "blob {} is used by a manifest but has no pack reference",
                        hex(&file)
                    )));
                }
                Some(1) => {
                    packs.remove(&file)?;
                    freed.push(file);
                }
                Some(n) => {
                    packs.insert(&file, n - 1)?;
                }
            }
        }
    }
    Ok(())
}

/// In a write transaction, a content made of `extents` that has just become live: records
/// its manifest and its references on the files it uses, and (if `index`) the chunks the
/// index does not know yet (store/chunk_index.rs).
pub(super) fn add_content(
    txn: &WriteTransaction,
    content: &Hash,
    extents: &[Extent],
    index: bool,
) -> Result<(), StoreError> {
    {
        let mut manifests = txn.open_table(MANIFESTS)?;
        let mut packs = txn.open_table(PACK_REFS)?;
        manifests.insert(content, encode(extents).as_slice())?;
        for file in other_files(content, extents) {
            let count = packs.get(&file)?.map_or(0, |g| g.value());
            packs.insert(&file, count + 1)?;
        }
    }
    if index {
        chunk_index::add(txn, extents)?;
    }
    Ok(())
}

/// Whether the encoded manifest of `content` lays it out in its own file (all of it, in
/// practice: a manifest is over its own file or over others). An empty content's manifest
/// has no extent; its (empty) file is its layout.
pub(super) fn in_own_file(manifest: &[u8], content: &Hash) -> bool {
    manifest.is_empty()
        || manifest
            .chunks_exact(EXTENT_LEN)
            .any(|e| e.get(36..68) == Some(content.as_slice()))
}

/// Whether a blob file is still needed: a live content has an extent in it, or a version
/// references it as a content that is still laid out in it.
fn needed(
    refs: &impl ReadableTable<&'static [u8; 32], u64>,
    packs: &impl ReadableTable<&'static [u8; 32], u64>,
    manifests: &impl ReadableTable<&'static [u8; 32], &'static [u8]>,
    hash: &Hash,
) -> Result<bool, StoreError> {
    if packs.get(hash)?.is_some() {
        return Ok(true);
    }
    if refs.get(hash)?.is_none() {
        return Ok(false);
    }
    Ok(match manifests.get(hash)? {
        None => true,
        Some(g) => in_own_file(g.value(), hash),
    })
}

/// [`needed`] as a read transaction sees it.
pub(super) fn file_needed(txn: &redb::ReadTransaction, hash: &Hash) -> Result<bool, StoreError> {
    needed(
        &txn.open_table(BLOB_REFS)?,
        &txn.open_table(PACK_REFS)?,
        &txn.open_table(MANIFESTS)?,
        hash,
    )
}

/// [`needed`] inside a write transaction.
pub(super) fn file_needed_in(txn: &WriteTransaction, hash: &Hash) -> Result<bool, StoreError> {
    needed(
        &txn.open_table(BLOB_REFS)?,
        &txn.open_table(PACK_REFS)?,
        &txn.open_table(MANIFESTS)?,
        hash,
    )
}
