//! The writes of [`Backend`]: each one transaction (READ COMMITTED) that two instances can
//! race on safely. Locks are taken in one order everywhere, so writers never wait on each
//! other in a cycle:
//!
//! 1. the source's advisory lock (`LOCK_SOURCES`, `hashtext(source)`): two writes of one
//!    source take turns, so versions are consecutive and none is lost;
//! 2. the rows of `ferry_blobs` whose reference counts change, in hash order;
//! 3. the change log's counter row (`ferry_log`), last: sequence numbers are given in commit
//!    order, with no gap, and the row is held only for the end of the transaction.
//!
//! The notification (`pg_notify`) is sent by the same transaction, so it is delivered only
//! once the change is committed and readable.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use deadpool_postgres::Transaction;
use ferry_backend::{
    Backend, BackendError, Entry, Hash, Head, Meta, Result, Staged, check_by, check_source,
    replica_wins,
};

use super::SharedBackend;
use crate::rows::{big, get};
use crate::schema::LOCK_SOURCES;
use crate::sql::{t_all, t_exec, t_one, t_opt};
use crate::{db, other};

/// The channel commits notify on; the payload is the new last sequence number.
pub(crate) const CHANNEL: &str = "ferry_changes";

/// Content staged for a commit: its object is written, a `ferry_staged` row keeps the sweep
/// from it, no version references it yet. Dropping it leaves the object to the sweep.
pub struct SharedStaged {
    pub(crate) hash: Hash,
    pub(crate) size: u64,
    pub(crate) object: String,
    pub(crate) meta: Meta,
    /// The encoded chunk list, when known at staging (a delta, a small content).
    pub(crate) chunks: Option<Vec<u8>>,
}

impl std::fmt::Debug for SharedStaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedStaged")
            .field("size", &self.size)
            .field("object", &self.object)
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

impl Staged for SharedStaged {
    fn hash(&self) -> Hash {
        self.hash
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn meta(&self) -> Meta {
        self.meta
    }
    fn set_meta(&mut self, meta: Meta) {
        self.meta = meta;
    }
}

/// What a write records as the source's new head.
struct Rec<'a> {
    source: &'a str,
    version: u64,
    deleted: bool,
    size: u64,
    hash: Hash,
    modified: u64,
    by: &'a str,
    meta: Meta,
}

impl Rec<'_> {
    fn entry(&self) -> Entry {
        Entry {
            source: self.source.to_owned(),
            version: self.version,
            size: self.size,
            hash: self.hash,
            modified: self.modified,
            by: self.by.to_owned(),
            meta: self.meta,
        }
    }
}

fn no_version_zero(version: u64) -> Result<()> {
    if version == 0 {
        return Err(BackendError::InvalidArgument(
            "replica version must be at least 1".into(),
        ));
    }
    Ok(())
}

async fn lock_source(t: &Transaction<'_>, source: &str) -> Result<()> {
    t_exec(
        t,
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&LOCK_SOURCES, &source],
    )
    .await
    .map(drop)
}

async fn read_head(t: &Transaction<'_>, source: &str) -> Result<Option<Head>> {
    let row = t_opt(
        t,
        "SELECT version, hash, deleted FROM ferry_heads WHERE source = $1",
        &[&source],
    )
    .await?;
    row.map(|r| {
        Ok(Head {
            version: super::col_u64(&r, "version")?,
            hash: super::col_hash(&r, "hash")?,
            deleted: get(&r, "deleted")?,
        })
    })
    .transpose()
}

fn next_version(head: Option<&Head>) -> Result<u64> {
    match head {
        None => Ok(1),
        Some(h) => h
            .version
            .checked_add(1)
            .filter(|v| i64::try_from(*v).is_ok())
            .ok_or_else(|| super::exhausted("the version counter")),
    }
}

fn mtime(meta: &Meta) -> Result<Option<i64>> {
    meta.mtime.map(|m| big(m, "mtime")).transpose()
}

/// Writes the head row of `rec` (insert or replace).
async fn write_head(t: &Transaction<'_>, rec: &Rec<'_>) -> Result<()> {
    t_exec(
        t,
        "INSERT INTO ferry_heads (source, version, deleted, size, hash, modified, by_name, mtime, executable) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (source) DO UPDATE SET \
         version = EXCLUDED.version, deleted = EXCLUDED.deleted, size = EXCLUDED.size, \
         hash = EXCLUDED.hash, modified = EXCLUDED.modified, by_name = EXCLUDED.by_name, \
         mtime = EXCLUDED.mtime, executable = EXCLUDED.executable",
        &[
            &rec.source,
            &big(rec.version, "version")?,
            &rec.deleted,
            &big(rec.size, "size")?,
            &rec.hash.as_slice(),
            &big(rec.modified, "modified")?,
            &rec.by,
            &mtime(&rec.meta)?,
            &rec.meta.executable,
        ],
    )
    .await
    .map(drop)
}

/// Adds `rec` as a kept version (replacing a version of the same number); returns the
/// hash of the version it replaced, if any.
async fn add_version(t: &Transaction<'_>, rec: &Rec<'_>) -> Result<Option<Hash>> {
    let version = big(rec.version, "version")?;
    let replaced = t_opt(
        t,
        "DELETE FROM ferry_versions WHERE source = $1 AND version = $2 RETURNING hash",
        &[&rec.source, &version],
    )
    .await?
    .map(|r| super::col_hash(&r, "hash"))
    .transpose()?;
    t_exec(
        t,
        "INSERT INTO ferry_versions (source, version, size, hash, modified, by_name, mtime, executable) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &rec.source,
            &version,
            &big(rec.size, "size")?,
            &rec.hash.as_slice(),
            &big(rec.modified, "modified")?,
            &rec.by,
            &mtime(&rec.meta)?,
            &rec.meta.executable,
        ],
    )
    .await?;
    Ok(replaced)
}

/// Drops the versions of `source` beyond the newest `keep`; returns their hashes.
async fn prune(t: &Transaction<'_>, source: &str, keep: i64) -> Result<Vec<Hash>> {
    let rows = t_all(
        t,
        "DELETE FROM ferry_versions WHERE source = $1 AND version NOT IN \
         (SELECT version FROM ferry_versions WHERE source = $1 ORDER BY version DESC LIMIT $2) \
         RETURNING hash",
        &[&source, &keep],
    )
    .await?;
    rows.iter().map(|r| super::col_hash(r, "hash")).collect()
}

/// Applies reference count changes in hash order. `added` is the staged content whose
/// reference is among them. Objects no row references any more (a freed blob's, or the
/// staged object when the content was already held) are recorded for the sweep.
async fn apply_refs(
    t: &Transaction<'_>,
    refs: BTreeMap<Hash, i64>,
    added: Option<&SharedStaged>,
) -> Result<()> {
    for (hash, delta) in refs {
        let staged = added.filter(|s| s.hash == hash);
        if let Some(s) = staged {
            let row = t_one(
                t,
                "INSERT INTO ferry_blobs (hash, size, object, refs, chunks) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (hash) DO UPDATE SET refs = ferry_blobs.refs + EXCLUDED.refs, \
                 chunks = coalesce(ferry_blobs.chunks, EXCLUDED.chunks) RETURNING object",
                &[
                    &hash.as_slice(),
                    &big(s.size, "size")?,
                    &s.object,
                    &delta,
                    &s.chunks,
                ],
            )
            .await?;
            let object: String = get(&row, "object")?;
            if object != s.object {
                dead(t, &s.object).await?;
            }
            continue;
        }
        if delta == 0 {
            continue;
        }
        let freed = t_opt(
            t,
            "DELETE FROM ferry_blobs WHERE hash = $1 AND refs + $2 <= 0 RETURNING object",
            &[&hash.as_slice(), &delta],
        )
        .await?;
        match freed {
            Some(row) => dead(t, &get::<String>(&row, "object")?).await?,
            None => {
                t_exec(
                    t,
                    "UPDATE ferry_blobs SET refs = refs + $2 WHERE hash = $1",
                    &[&hash.as_slice(), &delta],
                )
                .await?;
            }
        }
    }
    Ok(())
}

async fn dead(t: &Transaction<'_>, object: &str) -> Result<()> {
    t_exec(
        t,
        "INSERT INTO ferry_dead_objects (object) VALUES ($1) ON CONFLICT DO NOTHING",
        &[&object],
    )
    .await
    .map(drop)
}

/// Claims the staged content's row: a commit of content the sweep removed fails here.
async fn claim_staged(t: &Transaction<'_>, staged: &SharedStaged) -> Result<()> {
    let n = t_exec(
        t,
        "DELETE FROM ferry_staged WHERE object = $1",
        &[&staged.object],
    )
    .await?;
    if n == 0 {
        return Err(other(
            "the staged content was swept before its commit (older than the sweep's grace); \
             upload it again"
                .to_owned(),
        ));
    }
    Ok(())
}

impl SharedBackend {
    /// Logs `rec` as the next change (locking the counter row), prunes the log, notifies.
    async fn log(&self, t: &Transaction<'_>, rec: &Rec<'_>) -> Result<u64> {
        let row = t_one(
            t,
            "UPDATE ferry_log SET last_seq = last_seq + 1 RETURNING last_seq",
            &[],
        )
        .await?;
        let seq = super::col_u64(&row, "last_seq")?;
        let seq_i = big(seq, "sequence number").map_err(|_| super::exhausted("the change log"))?;
        t_exec(
            t,
            "INSERT INTO ferry_changes (seq, source, version, deleted, size, hash, modified, by_name) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &seq_i,
                &rec.source,
                &big(rec.version, "version")?,
                &rec.deleted,
                &big(rec.size, "size")?,
                &rec.hash.as_slice(),
                &big(rec.modified, "modified")?,
                &rec.by,
            ],
        )
        .await?;
        t_exec(
            t,
            "DELETE FROM ferry_changes WHERE seq <= $1::bigint - $2::bigint",
            &[&seq_i, &self.inner.keep_changes],
        )
        .await?;
        if self.inner.notify.load(Ordering::Relaxed) {
            t_exec(t, "SELECT pg_notify($1, $2)", &[&CHANNEL, &seq.to_string()]).await?;
        }
        Ok(seq)
    }

    /// Records `rec` (live content from `staged`, or a tombstone when `staged` is `None`)
    /// as the new head of its source, in the locked transaction `t`, and commits.
    async fn record(
        &self,
        t: Transaction<'_>,
        rec: &Rec<'_>,
        staged: Option<&SharedStaged>,
    ) -> Result<()> {
        let mut refs: BTreeMap<Hash, i64> = BTreeMap::new();
        if let Some(s) = staged {
            claim_staged(&t, s).await?;
            *refs.entry(s.hash).or_default() += 1;
            if let Some(old) = add_version(&t, rec).await? {
                *refs.entry(old).or_default() -= 1;
            }
        }
        let keep = if staged.is_some() {
            self.inner.keep_versions
        } else {
            0
        };
        for gone in prune(&t, rec.source, keep).await? {
            *refs.entry(gone).or_default() -= 1;
        }
        apply_refs(&t, refs, staged).await?;
        write_head(&t, rec).await?;
        let seq = self.log(&t, rec).await?;
        t.commit().await.map_err(db)?;
        ferry_backend::advance_signal(&self.inner.signal, seq);
        Ok(())
    }

    /// Removes the object of staged content that will not be committed.
    pub(crate) async fn discard(&self, staged: &SharedStaged) {
        if let Ok(c) = self.conn().await {
            let _ = c
                .execute(
                    "DELETE FROM ferry_staged WHERE object = $1",
                    &[&staged.object],
                )
                .await;
        }
        self.inner.objects.delete_quietly(&staged.object).await;
    }

    /// Stages `content` whole (small commits): its object and its `ferry_staged` row.
    pub(crate) async fn stage_whole(
        &self,
        hash: Hash,
        content: Vec<u8>,
        chunks: Option<Vec<u8>>,
    ) -> Result<SharedStaged> {
        let object = super::objects::Objects::whole_name(&hash);
        self.note_staged(&object).await?;
        let size = content.len() as u64;
        self.inner
            .objects
            .put(&object, bytes::Bytes::from(content))
            .await?;
        Ok(SharedStaged {
            hash,
            size,
            object,
            meta: Meta::default(),
            chunks,
        })
    }

    /// Records `object` as staged (before it is written: the sweep leaves it alone).
    pub(crate) async fn note_staged(&self, object: &str) -> Result<()> {
        let c = self.conn().await?;
        crate::sql::c_exec(
            &c,
            "INSERT INTO ferry_staged (object) VALUES ($1)",
            &[&object],
        )
        .await
        .map(drop)
    }

    async fn commit_inner(
        &self,
        source: &str,
        staged: &SharedStaged,
        by: &str,
        now: u64,
    ) -> Result<Entry> {
        check_source(source)?;
        check_by(by)?;
        let mut c = self.conn().await?;
        let t = c.transaction().await.map_err(db)?;
        lock_source(&t, source).await?;
        let head = read_head(&t, source).await?;
        let rec = Rec {
            source,
            version: next_version(head.as_ref())?,
            deleted: false,
            size: staged.size,
            hash: staged.hash,
            modified: now,
            by,
            meta: staged.meta,
        };
        self.record(t, &rec, Some(staged)).await?;
        Ok(rec.entry())
    }

    async fn replica_inner(
        &self,
        source: &str,
        staged: &SharedStaged,
        by: &str,
        modified: u64,
        version: u64,
    ) -> Result<Option<Entry>> {
        check_source(source)?;
        check_by(by)?;
        no_version_zero(version)?;
        let mut c = self.conn().await?;
        let t = c.transaction().await.map_err(db)?;
        lock_source(&t, source).await?;
        let head = read_head(&t, source).await?;
        if !replica_wins(version, &staged.hash, head.as_ref()) {
            return Ok(None);
        }
        let rec = Rec {
            source,
            version,
            deleted: false,
            size: staged.size,
            hash: staged.hash,
            modified,
            by,
            meta: staged.meta,
        };
        self.record(t, &rec, Some(staged)).await?;
        Ok(Some(rec.entry()))
    }
}

impl Backend for SharedBackend {
    async fn commit(
        &self,
        source: &str,
        staged: SharedStaged,
        by: &str,
        now: u64,
    ) -> Result<Entry> {
        let result = self.commit_inner(source, &staged, by, now).await;
        if result.is_err() {
            self.discard(&staged).await;
        }
        result
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
        check_source(&source)?;
        check_by(&by)?;
        let chunks =
            ferry_proto::chunking::encode_list(&ferry_proto::chunking::chunk_all(&content));
        let mut staged = self.stage_whole(actual, content, Some(chunks)).await?;
        staged.meta = meta;
        self.commit(&source, staged, &by, now).await
    }

    async fn delete(&self, source: &str, by: &str, now: u64) -> Result<Option<u64>> {
        check_by(by)?;
        let mut c = self.conn().await?;
        let t = c.transaction().await.map_err(db)?;
        lock_source(&t, source).await?;
        let head = read_head(&t, source).await?;
        if head.is_none_or(|h| h.deleted) {
            return Ok(None);
        }
        let rec = Rec {
            source,
            version: next_version(head.as_ref())?,
            deleted: true,
            size: 0,
            hash: [0; 32],
            modified: now,
            by,
            meta: Meta::default(),
        };
        self.record(t, &rec, None).await?;
        Ok(Some(rec.version))
    }

    async fn commit_replica(
        &self,
        source: &str,
        staged: SharedStaged,
        by: &str,
        modified: u64,
        version: u64,
    ) -> Result<Option<Entry>> {
        let result = self
            .replica_inner(source, &staged, by, modified, version)
            .await;
        if !matches!(result, Ok(Some(_))) {
            self.discard(&staged).await;
        }
        result
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
        no_version_zero(version)?;
        let mut c = self.conn().await?;
        let t = c.transaction().await.map_err(db)?;
        lock_source(&t, source).await?;
        let head = read_head(&t, source).await?;
        if !replica_wins(version, &[0; 32], head.as_ref()) {
            return Ok(false);
        }
        let rec = Rec {
            source,
            version,
            deleted: true,
            size: 0,
            hash: [0; 32],
            modified,
            by,
            meta: Meta::default(),
        };
        self.record(t, &rec, None).await?;
        Ok(true)
    }
}
