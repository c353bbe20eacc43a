//! Silent deduplication across sources: after a content put whole is committed, a pass in
//! the background (never on the put's path) cuts it into chunks, looks each one up in the
//! chunk index (store/chunk_index.rs), and if enough of its bytes already live in other
//! files, rewrites it as a manifest over those files plus a pack of only its new chunks,
//! then deletes its whole file.
//!
//! The client of a put sent every byte and got the same answer whatever else the store
//! holds: nothing on the wire depends on this (docs/SECURITY.md).
//!
//! A commit of a whole content of [`DEDUP_MIN`] to [`DEDUP_MAX`] bytes records it in
//! `dedup_pending` (content hash → size) in its own transaction; [`Store::dedup_pass`] takes
//! entries from there, one content at a time (the local backend runs it on a thread of its
//! own when the store is quiet, `dedup_worker.rs`). Smaller contents (the group commit's
//! packs among them) are left whole: their chunk lists would cost more than they save.
//!
//! Crash safety. The pack of new chunks is written to `tmp/` and fsynced, placed in
//! `blobs/` (folder fsynced), and only then one write transaction swaps the content's
//! manifest, takes references on every file it now uses and moves the chunk index; the old
//! whole file is deleted after that committed, under the write lock, after checking again
//! that nothing needs it. A crash before the swap leaves the old layout (and at most a pack
//! nothing references, which the next open removes); after it, the new layout (and at most
//! the old file, no longer needed, which the next open removes). Every chunk the new layout
//! takes from another file is read back there and checked against its BLAKE3 before the
//! swap, and the swap checks in its transaction that each such file is still needed.

use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::FileExt;

use redb::ReadableTableMetadata;

use super::packs::{self, Extent};
use super::*;

/// Content hash → size: whole contents waiting for a dedup pass.
pub(super) const DEDUP_PENDING: TableDefinition<&[u8; 32], u64> =
    TableDefinition::new("dedup_pending");

/// Contents smaller than this stay whole.
pub const DEDUP_MIN: u64 = 1 << 20;
/// Contents larger than this stay whole (their chunk list would hold more than 262,144
/// chunks, about 20 MB in memory during the pass).
pub const DEDUP_MAX: u64 = 16 << 30;

/// In a commit's write transaction: queues a whole content for the dedup pass if its size
/// is in range.
pub(super) fn queue(txn: &WriteTransaction, hash: &Hash, size: u64) -> Result<(), StoreError> {
    if (DEDUP_MIN..=DEDUP_MAX).contains(&size) {
        txn.open_table(DEDUP_PENDING)?.insert(hash, size)?;
    }
    Ok(())
}

/// On upgrading an index: queues every kept content laid out whole (no manifest). Returns
/// how many it queued.
pub(super) fn queue_stored(txn: &WriteTransaction) -> Result<u64, StoreError> {
    let mut found: HashMap<Hash, u64> = HashMap::new();
    {
        let versions = txn.open_table(VERSIONS)?;
        let manifests = txn.open_table(packs::MANIFESTS)?;
        for item in versions.iter()? {
            let (k, v) = item?;
            let rec = decode_version(v.value(), k.value().1)?;
            if (DEDUP_MIN..=DEDUP_MAX).contains(&rec.size) && manifests.get(&rec.hash)?.is_none() {
                found.insert(rec.hash, rec.size);
            }
        }
    }
    let mut pending = txn.open_table(DEDUP_PENDING)?;
    for (hash, size) in &found {
        pending.insert(hash, *size)?;
    }
    Ok(found.len() as u64)
}

/// What [`Store::dedup_pass`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DedupReport {
    /// Pending contents looked at.
    pub examined: u64,
    /// Contents rewritten over chunks of other files.
    pub rewritten: u64,
    /// Bytes of whole files those rewrites made unneeded, less the packs they wrote.
    pub saved: u64,
}

/// The outcome for one content.
enum Outcome {
    /// Nothing to do (gone, already composed, used by others, or too little shared).
    Left,
    /// Rewritten; the bytes saved.
    Rewritten(u64),
}

/// Why a pass stopped early.
struct Cancelled;

impl Store {
    /// How many contents wait for a dedup pass.
    pub fn dedup_pending(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(DEDUP_PENDING)?.len()?)
    }

    /// Runs the dedup pass on at most `max` waiting contents (see the module docs). Blocks
    /// on disk I/O; reads each content twice and writes only its new chunks.
    pub fn dedup_pass(&self, max: usize) -> Result<DedupReport, StoreError> {
        self.dedup_pass_with(max, &|| false)
    }

    /// [`Store::dedup_pass`], stopping early (nothing changed for the content at hand)
    /// once `cancel` returns true; it is asked every mebibyte or so.
    pub(crate) fn dedup_pass_with(
        &self,
        max: usize,
        cancel: &dyn Fn() -> bool,
    ) -> Result<DedupReport, StoreError> {
        let _one_pass = self
            .dedup_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut report = DedupReport::default();
        let waiting: Vec<Hash> = {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(DEDUP_PENDING)?;
            let mut out = Vec::new();
            for item in table.iter()?.take(max) {
                out.push(*item?.0.value());
            }
            out
        };
        for hash in waiting {
            if cancel() {
                break;
            }
            report.examined += 1;
            match self.dedup_one(&hash, cancel) {
                Ok(Ok(Outcome::Left)) => {}
                Ok(Ok(Outcome::Rewritten(saved))) => {
                    report.rewritten += 1;
                    report.saved += saved;
                }
                Ok(Err(Cancelled)) => break,
                Err(e) => {
                    // Left whole (always sound); not retried, so a damaged file cannot
                    // keep the pass busy.
                    tracing::warn!(content = %hex(&hash), error = %e, "dedup pass failed; the content stays whole");
                    self.done_pending(&hash)?;
                }
            }
        }
        Ok(report)
    }

    /// Removes `hash` from the waiting contents.
    fn done_pending(&self, hash: &Hash) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(DEDUP_PENDING)?.remove(hash)?;
        txn.commit()?;
        Ok(())
    }

    /// A test hook: called at each step of a rewrite.
    fn dedup_step(&self, _what: &'static str) {
        #[cfg(test)]
        {
            let mut hook = self
                .dedup_hook
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(hook) = hook.as_mut() {
                hook(_what);
            }
        }
    }

    /// The pass for one content.
    fn dedup_one(
        &self,
        hash: &Hash,
        cancel: &dyn Fn() -> bool,
    ) -> Result<Result<Outcome, Cancelled>, StoreError> {
        // Where it stands now.
        let own_manifest = {
            let txn = self.db.begin_read()?;
            let live = txn.open_table(BLOB_REFS)?.get(hash)?.is_some();
            let used_by_others = txn.open_table(packs::PACK_REFS)?.get(hash)?.is_some();
            let manifest = txn
                .open_table(packs::MANIFESTS)?
                .get(hash)?
                .map(|g| g.value().to_vec());
            if !live {
                drop(txn);
                self.done_pending(hash)?;
                return Ok(Ok(Outcome::Left));
            }
            match manifest {
                Some(m) if !packs::in_own_file(&m, hash) => {
                    // Already made of other files' chunks: a whole file of it placed again
                    // by a later put is not needed.
                    drop(txn);
                    self.done_pending(hash)?;
                    self.remove_unreferenced(&[*hash]);
                    return Ok(Ok(Outcome::Left));
                }
                // Other contents use chunks of its file: the file stays anyway.
                _ if used_by_others => {
                    drop(txn);
                    self.done_pending(hash)?;
                    return Ok(Ok(Outcome::Left));
                }
                Some(m) => Some(packs::decode(&m)?),
                None => None,
            }
        };
        let file = {
            let _reading = self.read_lock();
            match self.open_visible_file(hash)? {
                Some(f) => f,
                None => {
                    self.done_pending(hash)?;
                    return Ok(Ok(Outcome::Left));
                }
            }
        };
        let size = file.metadata()?.len();
        if !(DEDUP_MIN..=DEDUP_MAX).contains(&size) {
            self.done_pending(hash)?;
            return Ok(Ok(Outcome::Left));
        }
        let extents = match own_manifest {
            Some(e) => e,
            None => match packs::cut_file_with(&file, hash, cancel)? {
                Some(e) => e,
                None => return Ok(Err(Cancelled)),
            },
        };
        if cancel() {
            return Ok(Err(Cancelled));
        }
        self.dedup_step("cut");

        // Chunks that already live in another file, and those files opened (under the read
        // lock: they cannot go before they are open, and stay readable after).
        let places: Vec<Option<chunk_index::Place>> = {
            let txn = self.db.begin_read()?;
            let index = txn.open_table(chunk_index::CHUNKS)?;
            let mut out = Vec::with_capacity(extents.len());
            for e in &extents {
                let place = chunk_index::lookup(&index, &e.chunk)?
                    .filter(|p| p.file != *hash && p.len == e.len);
                out.push(place);
            }
            out
        };
        let shared: u64 = places
            .iter()
            .zip(&extents)
            .filter(|(p, _)| p.is_some())
            .map(|(_, e)| u64::from(e.len))
            .sum();
        if shared < DEDUP_MIN || shared.saturating_mul(4) < size {
            // Too little in common: it stays whole, and its chunks become known to others.
            self.keep_whole(hash, &extents)?;
            return Ok(Ok(Outcome::Left));
        }
        let mut others: HashMap<Hash, File> = HashMap::new();
        {
            let _reading = self.read_lock();
            for p in places.iter().flatten() {
                if others.contains_key(&p.file) {
                    continue;
                }
                let (_, path) = blob_location(&self.blobs, &p.file);
                match File::open(&path) {
                    Ok(f) => {
                        others.insert(p.file, f);
                    }
                    // Gone since the lookup: the swap will find it unneeded and give up.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }

        // The new layout: shared chunks where they are (each checked), the rest in a pack.
        let mut writer = self.begin_put()?;
        let mut in_pack: HashMap<Hash, u64> = HashMap::new();
        let mut new_extents = Vec::with_capacity(extents.len());
        let mut buf = Vec::new();
        let mut since_check = 0u64;
        for (e, place) in extents.iter().zip(&places) {
            buf.resize(e.len as usize, 0);
            if let Some(p) = place
                && let Some(f) = others.get(&p.file)
                && f.read_exact_at(&mut buf, p.offset).is_ok()
                && blake3::hash(&buf).as_bytes() == &e.chunk
            {
                new_extents.push(Extent {
                    chunk: e.chunk,
                    len: e.len,
                    file: p.file,
                    offset: p.offset,
                });
            } else {
                let offset = match in_pack.get(&e.chunk) {
                    Some(&at) => at,
                    None => {
                        file.read_exact_at(&mut buf, e.offset)
                            .map_err(read::short_file)?;
                        if blake3::hash(&buf).as_bytes() != &e.chunk {
                            return Err(StoreError::Corrupt(format!(
                                "a chunk of blob {} does not match its manifest",
                                hex(hash)
                            )));
                        }
                        let at = writer.len();
                        writer.write_chunk(&buf)?;
                        in_pack.insert(e.chunk, at);
                        at
                    }
                };
                new_extents.push(Extent {
                    chunk: e.chunk,
                    len: e.len,
                    file: [0; 32], // the pack's name, known when it is finished
                    offset,
                });
            }
            since_check += u64::from(e.len);
            if since_check >= 1 << 20 {
                since_check = 0;
                if cancel() {
                    return Ok(Err(Cancelled)); // the writer's temp file goes with it
                }
            }
        }
        let pack_size = writer.len();
        let pack = if pack_size == 0 {
            None
        } else {
            Some(writer.finish()?)
        };
        let pack_hash = pack.as_ref().map(StagedBlob::hash);
        for e in new_extents.iter_mut().filter(|e| e.file == [0; 32]) {
            // Only extents into the pack were left unnamed (a real file is never all zero).
            e.file = pack_hash.unwrap_or_default();
        }
        self.dedup_step("pack written");

        let swapped = {
            let _placing = self.read_lock();
            if let Some(pack) = pack {
                self.place_blob(pack)?;
            }
            self.dedup_step("pack placed");
            if self.files_present(&new_extents, None)? {
                self.swap_in(hash, &new_extents, pack_hash)?
            } else {
                false
            }
        };
        if !swapped {
            self.remove_unreferenced(&pack_hash.into_iter().collect::<Vec<_>>());
            return Ok(Ok(Outcome::Left));
        }
        self.dedup_step("swapped");
        self.remove_unreferenced(&[*hash]);
        self.dedup_step("old file deleted");
        tracing::debug!(
            content = %hex(hash),
            size,
            shared,
            pack = pack_size,
            "content rewritten over chunks the store already held"
        );
        Ok(Ok(Outcome::Rewritten(size.saturating_sub(pack_size))))
    }

    /// Records the own-file manifest of a content that stays whole, and indexes its chunks.
    fn keep_whole(&self, hash: &Hash, extents: &[Extent]) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        let live = txn.open_table(BLOB_REFS)?.get(hash)?.is_some();
        let manifest = txn
            .open_table(packs::MANIFESTS)?
            .get(hash)?
            .map(|g| g.value().to_vec());
        match manifest {
            None if live => {
                txn.open_table(packs::MANIFESTS)?
                    .insert(hash, packs::encode(extents).as_slice())?;
                chunk_index::add(&txn, extents)?;
            }
            Some(m) if live && packs::in_own_file(&m, hash) => {
                // Its manifest may predate the chunk index (an upgraded store).
                chunk_index::add(&txn, extents)?;
            }
            _ => {}
        }
        txn.open_table(DEDUP_PENDING)?.remove(hash)?;
        txn.commit()?;
        Ok(())
    }

    /// The swap: one write transaction that lays `hash` out as `extents`, if it is still
    /// live, still in its own file, used by no other content, and every file the extents
    /// use besides the new `pack` is still needed. Called with the read lock held, after
    /// checking those files are present. Returns whether it swapped.
    fn swap_in(
        &self,
        hash: &Hash,
        extents: &[Extent],
        pack: Option<Hash>,
    ) -> Result<bool, StoreError> {
        let txn = self.db.begin_write()?;
        let ok = {
            let live = txn.open_table(BLOB_REFS)?.get(hash)?.is_some();
            let own = match txn.open_table(packs::MANIFESTS)?.get(hash)? {
                None => true,
                Some(g) => packs::in_own_file(g.value(), hash),
            };
            let unused = txn.open_table(packs::PACK_REFS)?.get(hash)?.is_none();
            let mut ok = live && own && unused;
            // The new pack is not counted anywhere yet; every other file must be needed now.
            let others: BTreeSet<Hash> = extents
                .iter()
                .map(|e| e.file)
                .filter(|f| Some(*f) != pack)
                .collect();
            for f in &others {
                if !ok {
                    break;
                }
                ok = packs::file_needed_in(&txn, f)?;
            }
            ok
        };
        if !ok {
            txn.open_table(DEDUP_PENDING)?.remove(hash)?;
            txn.commit()?;
            return Ok(false);
        }
        // Its own file is no longer needed: its chunks are re-pointed (to the pack, or to
        // where the index already had them).
        chunk_index::forget_file(&txn, hash)?;
        packs::add_content(&txn, hash, extents, true)?;
        txn.open_table(DEDUP_PENDING)?.remove(hash)?;
        txn.commit()?;
        Ok(true)
    }
}
