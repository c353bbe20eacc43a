//! An in-memory backend: everything in one mutex-guarded state, nothing on disk.
//!
//! For tests and for embedding ferry where nothing must outlive the process. It keeps the
//! same rules as the local backend (version numbering, pruning, reference counting, the
//! change log, the replica rule, one handle per upload) and passes the same conformance
//! suite. "Durable" means "held until the backend is dropped". A content put as a delta
//! (`Upload::finish_delta`) is assembled and held whole: this backend does not share chunks
//! between versions, and computes a content's chunks each time they are asked for.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::traits::{Backend, BlobReader, Blobs, Index, Retention, Staged, Upload};
use crate::{
    BackendError, Change, Changes, Entry, Hash, Head, Result, UploadKey, check_by, check_source,
    replica_wins,
};
use crate::{ChunkRef, Meta};

/// The in-memory backend. Cheap to clone: clones share one state.
#[derive(Clone, Debug, Default)]
pub struct MemoryBackend {
    state: Arc<Mutex<State>>,
    /// The account data (memory_accounts.rs).
    pub(crate) accounts: Arc<Mutex<crate::memory_accounts::AccountState>>,
}

#[derive(Debug, Default)]
struct State {
    keep_versions: usize,
    keep_changes: u64,
    /// Source → current record (a tombstone has `deleted` set).
    current: BTreeMap<String, Rec>,
    /// Source → kept live versions.
    versions: BTreeMap<String, BTreeMap<u64, Entry>>,
    /// Visible blobs with the number of kept versions referencing them (never 0).
    blobs: HashMap<Hash, Blob>,
    changes: BTreeMap<u64, Change>,
    last_seq: u64,
    uploads: HashMap<UploadKey, Part>,
    /// Moved to `last_seq` by every logged change ([`Index::subscribe`]).
    signal: tokio::sync::watch::Sender<u64>,
}

#[derive(Clone, Debug)]
struct Rec {
    deleted: bool,
    entry: Entry,
}

#[derive(Debug)]
struct Blob {
    data: Arc<[u8]>,
    refs: u64,
}

#[derive(Debug)]
struct Part {
    data: Vec<u8>,
    touched: u64,
    open: bool,
}

impl MemoryBackend {
    /// An empty backend keeping the given history.
    pub fn new(retention: Retention) -> MemoryBackend {
        let state = State {
            keep_versions: usize::try_from(retention.keep_versions.max(1)).unwrap_or(usize::MAX),
            keep_changes: retention.keep_changes.max(1),
            ..State::default()
        };
        MemoryBackend {
            state: Arc::new(Mutex::new(state)),
            accounts: Arc::default(),
        }
    }

    /// Number of distinct blobs held (for tests of deduplication).
    pub fn blob_count(&self) -> usize {
        lock(&self.state).blobs.len()
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // Nothing panics while holding the lock, so a poisoned lock still guards whole updates.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Rec {
    fn head(&self) -> Head {
        Head {
            version: self.entry.version,
            hash: self.entry.hash,
            deleted: self.deleted,
        }
    }
}

impl State {
    fn add_ref(&mut self, hash: Hash, data: &Arc<[u8]>) {
        self.blobs
            .entry(hash)
            .and_modify(|b| b.refs += 1)
            .or_insert_with(|| Blob {
                data: data.clone(),
                refs: 1,
            });
    }

    fn release_ref(&mut self, hash: &Hash) {
        if let Some(blob) = self.blobs.get_mut(hash) {
            blob.refs -= 1;
            if blob.refs == 0 {
                self.blobs.remove(hash);
            }
        }
    }

    /// Drops the oldest versions of `source` beyond `keep`.
    fn prune(&mut self, source: &str, keep: usize) {
        let Some(kept) = self.versions.get_mut(source) else {
            return;
        };
        let mut gone = Vec::new();
        while kept.len() > keep {
            if let Some((_, entry)) = kept.pop_first() {
                gone.push(entry.hash);
            }
        }
        if kept.is_empty() {
            self.versions.remove(source);
        }
        for hash in gone {
            self.release_ref(&hash);
        }
    }

    fn log(&mut self, rec: &Rec) -> Result<u64> {
        let seq = self
            .last_seq
            .checked_add(1)
            .ok_or_else(|| BackendError::Corrupt("change sequence is exhausted".into()))?;
        self.last_seq = seq;
        // Readers woken now wait for the state lock, held until this change is whole.
        crate::advance_signal(&self.signal, seq);
        let e = &rec.entry;
        self.changes.insert(
            seq,
            Change {
                seq,
                source: e.source.clone(),
                version: e.version,
                deleted: rec.deleted,
                size: e.size,
                hash: e.hash,
                modified: e.modified,
                by: e.by.clone(),
            },
        );
        let cutoff = seq.saturating_sub(self.keep_changes);
        while self
            .changes
            .first_key_value()
            .is_some_and(|(k, _)| *k <= cutoff)
        {
            self.changes.pop_first();
        }
        Ok(seq)
    }

    fn next_version(&self, source: &str) -> Result<u64> {
        match self.current.get(source) {
            None => Ok(1),
            Some(rec) => rec.entry.version.checked_add(1).ok_or_else(|| {
                BackendError::Corrupt(format!("version counter of {source:?} is exhausted"))
            }),
        }
    }

    fn tombstone(&mut self, source: &str, version: u64, by: &str, modified: u64) -> Result<()> {
        let rec = Rec {
            deleted: true,
            entry: Entry {
                source: source.to_owned(),
                version,
                size: 0,
                hash: [0; 32],
                modified,
                by: by.to_owned(),
                meta: Meta::default(),
            },
        };
        self.log(&rec)?;
        self.prune(source, 0);
        self.current.insert(source.to_owned(), rec);
        Ok(())
    }
}

impl Index for MemoryBackend {
    async fn stat(&self, source: &str) -> Result<Option<Entry>> {
        let state = lock(&self.state);
        Ok(state
            .current
            .get(source)
            .filter(|r| !r.deleted)
            .map(|r| r.entry.clone()))
    }

    async fn stat_version(&self, source: &str, version: u64) -> Result<Option<Entry>> {
        let state = lock(&self.state);
        Ok(state
            .versions
            .get(source)
            .and_then(|kept| kept.get(&version))
            .cloned())
    }

    async fn versions(&self, source: &str) -> Result<Vec<Entry>> {
        let state = lock(&self.state);
        Ok(state
            .versions
            .get(source)
            .map(|kept| kept.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn head(&self, source: &str) -> Result<Option<Head>> {
        Ok(lock(&self.state).current.get(source).map(Rec::head))
    }

    async fn heads(&self, after: Option<&str>, limit: usize) -> Result<Vec<(String, Head)>> {
        let state = lock(&self.state);
        Ok(state
            .current
            .iter()
            .filter(|(name, _)| after.is_none_or(|a| name.as_str() > a))
            .take(limit)
            .map(|(name, rec)| (name.clone(), rec.head()))
            .collect())
    }

    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<Entry>> {
        let state = lock(&self.state);
        Ok(state
            .current
            .range(prefix.to_owned()..)
            .take_while(|(name, _)| name.starts_with(prefix))
            .filter(|(name, rec)| !rec.deleted && after.is_none_or(|a| name.as_str() > a))
            .take(limit)
            .map(|(_, rec)| rec.entry.clone())
            .collect())
    }

    async fn changes_since(&self, after: u64, limit: usize) -> Result<Changes> {
        let state = lock(&self.state);
        let last = state.last_seq;
        let oldest = state
            .changes
            .first_key_value()
            .map_or(last.saturating_add(1), |(k, _)| *k);
        let gap = after > last || after.saturating_add(1) < oldest;
        let from = if gap { oldest } else { after.saturating_add(1) };
        Ok(Changes {
            changes: state
                .changes
                .range(from..)
                .take(limit)
                .map(|(_, c)| c.clone())
                .collect(),
            gap,
            oldest,
            last,
        })
    }

    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        lock(&self.state).signal.subscribe()
    }

    async fn last_seq(&self) -> Result<u64> {
        Ok(lock(&self.state).last_seq)
    }

    async fn usage(&self, by: Option<&str>) -> Result<crate::Usage> {
        // Counted on demand: this backend is for tests and small embedded uses.
        let state = lock(&self.state);
        let mut usage = crate::Usage::default();
        for e in state.versions.values().flat_map(|kept| kept.values()) {
            if by.is_none_or(|by| e.by == by) {
                usage.bytes = usage.bytes.saturating_add(e.size);
                usage.versions += 1;
            }
        }
        Ok(usage)
    }
}

/// A finished in-memory upload.
#[derive(Debug)]
pub struct MemoryStaged {
    hash: Hash,
    data: Arc<[u8]>,
    meta: Meta,
}

impl Staged for MemoryStaged {
    fn hash(&self) -> Hash {
        self.hash
    }

    fn size(&self) -> u64 {
        self.data.len() as u64
    }

    fn meta(&self) -> Meta {
        self.meta
    }

    fn set_meta(&mut self, meta: Meta) {
        self.meta = meta;
    }
}

/// An open in-memory upload.
#[derive(Debug)]
pub struct MemoryUpload {
    state: Arc<Mutex<State>>,
    key: UploadKey,
    offset: u64,
    hasher: blake3::Hasher,
}

impl Drop for MemoryUpload {
    fn drop(&mut self) {
        if let Some(part) = lock(&self.state).uploads.get_mut(&self.key) {
            part.open = false;
        }
    }
}

impl Upload for MemoryUpload {
    type Staged = MemoryStaged;

    fn key(&self) -> &UploadKey {
        &self.key
    }

    fn offset(&self) -> u64 {
        self.offset
    }

    async fn write(&mut self, data: &[u8]) -> Result<u64> {
        let mut state = lock(&self.state);
        let part = state
            .uploads
            .get_mut(&self.key)
            .ok_or(BackendError::UploadNotFound)?;
        part.data.extend_from_slice(data);
        self.hasher.update(data);
        self.offset += data.len() as u64;
        Ok(self.offset)
    }

    async fn sync(&mut self) -> Result<u64> {
        Ok(self.offset)
    }

    async fn finish_delta(
        self,
        expected: &Hash,
        base: &Hash,
        chunks: Vec<ChunkRef>,
    ) -> Result<MemoryStaged> {
        let (part, base_data) = {
            let mut state = lock(&self.state);
            let part = state
                .uploads
                .remove(&self.key)
                .ok_or(BackendError::UploadNotFound)?;
            let base_data = state.blobs.get(base).map(|b| b.data.clone());
            (part, base_data.ok_or(BackendError::BlobNotFound)?)
        };
        let data = assemble(&base_data, &part.data, &chunks).ok_or_else(|| {
            BackendError::HashMismatch {
                expected: *expected,
                actual: [0; 32],
            }
        })?;
        let actual = *blake3::hash(&data).as_bytes();
        if actual != *expected {
            return Err(BackendError::HashMismatch {
                expected: *expected,
                actual,
            });
        }
        Ok(MemoryStaged {
            hash: actual,
            data: data.into(),
            meta: Meta::default(),
        })
    }

    async fn finish(self, expected: &Hash) -> Result<MemoryStaged> {
        let part = lock(&self.state)
            .uploads
            .remove(&self.key)
            .ok_or(BackendError::UploadNotFound)?;
        let actual = *self.hasher.finalize().as_bytes();
        if actual != *expected {
            return Err(BackendError::HashMismatch {
                expected: *expected,
                actual,
            });
        }
        Ok(MemoryStaged {
            hash: actual,
            data: part.data.into(),
            meta: Meta::default(),
        })
    }
}

/// The content `chunks` describe, from the chunks of `base` and the needed ones in `body`
/// (docs/PROTOCOL.md §5.4); `None` if a chunk's hash is wrong or the body does not add up.
fn assemble(base: &[u8], body: &[u8], chunks: &[ChunkRef]) -> Option<Vec<u8>> {
    let mut have: HashMap<Hash, (usize, usize)> = HashMap::new();
    let mut at = 0;
    for c in ferry_proto::chunking::chunk_all(base) {
        have.entry(c.hash).or_insert((at, c.len as usize));
        at += c.len as usize;
    }
    let bitmap = ferry_proto::chunking::needed(chunks, |h| have.contains_key(h));
    let mut out = Vec::new();
    let mut cursor = 0usize;
    for (i, c) in chunks.iter().enumerate() {
        let len = c.len as usize;
        if ferry_proto::chunking::is_needed(&bitmap, i) {
            let bytes = body.get(cursor..cursor.checked_add(len)?)?;
            if blake3::hash(bytes).as_bytes() != &c.hash {
                return None;
            }
            have.insert(c.hash, (base.len() + cursor, len));
            cursor += len;
        }
        let &(from, held) = have.get(&c.hash)?;
        if held != len {
            return None;
        }
        let bytes = if from >= base.len() {
            body.get(from - base.len()..from - base.len() + len)?
        } else {
            base.get(from..from + len)?
        };
        out.extend_from_slice(bytes);
    }
    (cursor == body.len()).then_some(out)
}

/// A range of an in-memory blob (holding the blob, so a prune meanwhile does not matter).
#[derive(Debug)]
pub struct MemoryReader {
    data: Arc<[u8]>,
    pos: usize,
    end: usize,
}

impl BlobReader for MemoryReader {
    fn remaining(&self) -> u64 {
        (self.end - self.pos) as u64
    }

    async fn read_into(&mut self, mut buf: Vec<u8>, max: usize) -> Result<Vec<u8>> {
        let n = max.min(self.end - self.pos);
        buf.extend_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(buf)
    }
}

impl Blobs for MemoryBackend {
    type Staged = MemoryStaged;
    type Upload = MemoryUpload;
    type Reader = MemoryReader;

    async fn begin_upload(&self, key: &UploadKey, now: u64) -> Result<MemoryUpload> {
        let mut state = lock(&self.state);
        let part = state.uploads.entry(key.clone()).or_insert_with(|| Part {
            data: Vec::new(),
            touched: now,
            open: false,
        });
        if part.open {
            return Err(BackendError::UploadBusy);
        }
        part.open = true;
        part.touched = now;
        let mut hasher = blake3::Hasher::new();
        hasher.update(&part.data);
        let offset = part.data.len() as u64;
        drop(state);
        Ok(MemoryUpload {
            state: self.state.clone(),
            key: key.clone(),
            offset,
            hasher,
        })
    }

    async fn upload_status(&self, key: &UploadKey) -> Result<Option<u64>> {
        Ok(lock(&self.state)
            .uploads
            .get(key)
            .map(|p| p.data.len() as u64))
    }

    async fn abort_upload(&self, key: &UploadKey) -> Result<bool> {
        let mut state = lock(&self.state);
        match state.uploads.get(key) {
            None => Ok(false),
            Some(part) if part.open => Err(BackendError::UploadBusy),
            Some(_) => Ok(state.uploads.remove(key).is_some()),
        }
    }

    async fn sweep_uploads(&self, older_than: u64) -> Result<u64> {
        let mut state = lock(&self.state);
        let before = state.uploads.len();
        state
            .uploads
            .retain(|_, part| part.open || part.touched >= older_than);
        Ok((before - state.uploads.len()) as u64)
    }

    async fn blob_size(&self, hash: &Hash) -> Result<Option<u64>> {
        Ok(lock(&self.state)
            .blobs
            .get(hash)
            .map(|b| b.data.len() as u64))
    }

    async fn chunks(&self, hash: &Hash) -> Result<Option<Vec<ChunkRef>>> {
        let data = lock(&self.state).blobs.get(hash).map(|b| b.data.clone());
        Ok(data.map(|d| ferry_proto::chunking::chunk_all(&d)))
    }

    async fn read(&self, hash: &Hash, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut r = self.reader(hash, offset, len).await?;
        let n = usize::try_from(len)
            .map_err(|_| BackendError::InvalidArgument("range too long".into()))?;
        r.read_into(Vec::with_capacity(n), n).await
    }

    async fn reader(&self, hash: &Hash, offset: u64, len: u64) -> Result<MemoryReader> {
        let data = lock(&self.state)
            .blobs
            .get(hash)
            .map(|b| b.data.clone())
            .ok_or(BackendError::BlobNotFound)?;
        let size = data.len() as u64;
        let out_of_bounds = BackendError::RangeOutOfBounds { offset, len, size };
        let end = offset.checked_add(len).filter(|end| *end <= size);
        let (Some(end), Ok(start)) = (end, usize::try_from(offset)) else {
            return Err(out_of_bounds);
        };
        let end = usize::try_from(end).map_err(|_| out_of_bounds)?;
        Ok(MemoryReader {
            data,
            pos: start,
            end,
        })
    }
}

impl Backend for MemoryBackend {
    async fn commit(
        &self,
        source: &str,
        staged: MemoryStaged,
        by: &str,
        now: u64,
    ) -> Result<Entry> {
        check_source(source)?;
        check_by(by)?;
        let mut state = lock(&self.state);
        let version = state.next_version(source)?;
        let entry = Entry {
            source: source.to_owned(),
            version,
            size: staged.size(),
            hash: staged.hash,
            modified: now,
            by: by.to_owned(),
            meta: staged.meta,
        };
        let rec = Rec {
            deleted: false,
            entry: entry.clone(),
        };
        state.log(&rec)?;
        state.add_ref(staged.hash, &staged.data);
        state
            .versions
            .entry(source.to_owned())
            .or_default()
            .insert(version, entry.clone());
        state.current.insert(source.to_owned(), rec);
        let keep = state.keep_versions;
        state.prune(source, keep);
        Ok(entry)
    }

    async fn commit_small(
        &self,
        source: String,
        content: Vec<u8>,
        expected: Hash,
        meta: Meta,
        by: String,
        now: u64,
    ) -> Result<Entry> {
        let actual = *blake3::hash(&content).as_bytes();
        if actual != expected {
            return Err(BackendError::HashMismatch { expected, actual });
        }
        let staged = MemoryStaged {
            hash: actual,
            data: content.into(),
            meta,
        };
        self.commit(&source, staged, &by, now).await
    }

    async fn delete(&self, source: &str, by: &str, now: u64) -> Result<Option<u64>> {
        check_by(by)?;
        let mut state = lock(&self.state);
        match state.current.get(source) {
            Some(rec) if !rec.deleted => {}
            _ => return Ok(None),
        }
        let version = state.next_version(source)?;
        state.tombstone(source, version, by, now)?;
        Ok(Some(version))
    }

    async fn commit_replica(
        &self,
        source: &str,
        staged: MemoryStaged,
        by: &str,
        modified: u64,
        version: u64,
    ) -> Result<Option<Entry>> {
        check_source(source)?;
        check_by(by)?;
        if version == 0 {
            return Err(BackendError::InvalidArgument(
                "replica version must be at least 1".into(),
            ));
        }
        let mut state = lock(&self.state);
        let head = state.current.get(source).map(Rec::head);
        if !replica_wins(version, &staged.hash, head.as_ref()) {
            return Ok(None);
        }
        let entry = Entry {
            source: source.to_owned(),
            version,
            size: staged.size(),
            hash: staged.hash,
            modified,
            by: by.to_owned(),
            meta: staged.meta,
        };
        let rec = Rec {
            deleted: false,
            entry: entry.clone(),
        };
        state.log(&rec)?;
        // Reference the new blob before releasing the one it may replace.
        state.add_ref(staged.hash, &staged.data);
        let replaced = state
            .versions
            .entry(source.to_owned())
            .or_default()
            .insert(version, entry.clone());
        if let Some(old) = replaced {
            state.release_ref(&old.hash);
        }
        state.current.insert(source.to_owned(), rec);
        let keep = state.keep_versions;
        state.prune(source, keep);
        Ok(Some(entry))
    }

    async fn delete_replica(
        &self,
        source: &str,
        version: u64,
        by: &str,
        modified: u64,
    ) -> Result<bool> {
        check_source(source)?;
        check_by(by)?;
        if version == 0 {
            return Err(BackendError::InvalidArgument(
                "replica version must be at least 1".into(),
            ));
        }
        let mut state = lock(&self.state);
        let head = state.current.get(source).map(Rec::head);
        if !replica_wins(version, &[0; 32], head.as_ref()) {
            return Ok(false);
        }
        state.tombstone(source, version, by, modified)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::{conformance, stage_bytes};

    #[tokio::test]
    async fn identical_content_is_held_once() {
        let b = MemoryBackend::new(conformance::RETENTION);
        for (i, source) in ["a", "b", "c"].into_iter().enumerate() {
            let key = UploadKey::derive(source.as_bytes());
            let staged = stage_bytes(&b, &key, b"same", i as u64).await.unwrap();
            b.commit(source, staged, "w", 0).await.unwrap();
        }
        assert_eq!(b.blob_count(), 1);
        let key = UploadKey::derive(b"d");
        let staged = stage_bytes(&b, &key, b"other", 0).await.unwrap();
        b.commit("a", staged, "w", 0).await.unwrap();
        assert_eq!(b.blob_count(), 2);
        for source in ["a", "b", "c"] {
            b.delete(source, "w", 0).await.unwrap();
        }
        assert_eq!(b.blob_count(), 0);
    }
}
