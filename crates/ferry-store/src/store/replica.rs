//! Replica commits: storing a version another store numbered, under a deterministic rule.
//!
//! The LAN mesh copies versions between peers that may change the same source concurrently.
//! Every peer must end up with the same current version whatever order the copies arrive in,
//! so a replicated version `(v, hash)` replaces the current `(v', hash')` if and only if
//! `(v, hash) > (v', hash')`, comparing version numbers first and then the hashes' bytes; a
//! tombstone counts as `hash = [0; 32]`. Nothing replaces an equal pair, so applying the same
//! copy twice changes nothing.

use super::*;
#[cfg(test)]
use ferry_backend::Change;
use ferry_backend::{Head, replica_wins};

impl From<&Record> for Head {
    fn from(rec: &Record) -> Self {
        Head {
            version: rec.version,
            hash: rec.hash,
            deleted: rec.deleted,
        }
    }
}

impl Store {
    /// The heads of every source, tombstones included, sorted by name: at most `limit`,
    /// starting strictly after `after` if given (paging as in [`Store::list`]).
    pub fn heads(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Head)>, StoreError> {
        Ok(self
            .scan("", after, limit, true)?
            .into_iter()
            .map(|(name, rec)| {
                let head = Head::from(&rec);
                (name, head)
            })
            .collect())
    }

    /// The current head of `source`, tombstones included; `None` if the store never had it.
    pub fn entry_version(&self, source: &str) -> Result<Option<Head>, StoreError> {
        let txn = self.db.begin_read()?;
        let current = txn.open_table(CURRENT)?;
        let rec = match current.get(source.as_bytes())? {
            Some(guard) => Record::decode(guard.value())?,
            None => return Ok(None),
        };
        Ok(Some(Head::from(&rec)))
    }

    /// Stores `staged` as `version` of `source`, made by `by` at `modified`, if it wins over
    /// the current head under [`replica_wins`]; logs the change and returns the new entry.
    /// Returns `None` and discards the staged blob if it does not win (an identical copy
    /// included).
    ///
    /// A version above the current one becomes a new version (older ones are kept and
    /// pruned as by [`Store::commit`]). The same version with a greater hash replaces that
    /// version's record and blob reference (the record of a concurrent change that lost).
    /// Later local commits continue from `version + 1`. `version` must be at least 1.
    pub fn commit_replica(
        &self,
        source: &str,
        staged: StagedBlob,
        by: &str,
        modified: u64,
        version: u64,
    ) -> Result<Option<Entry>, StoreError> {
        check_by(by)?;
        if version == 0 {
            return Err(StoreError::InvalidArgument(
                "replica version must be at least 1".into(),
            ));
        }
        let hash = staged.hash();
        let size = staged.size();
        let rec = Record {
            deleted: false,
            version,
            size,
            hash,
            modified,
            by: by.to_owned(),
            meta: staged.meta(),
        };
        let (applied, freed) = {
            let _placing = self.read_lock();
            let composed = self.composition_to_commit(&staged)?;
            self.place_blob(staged)?;
            self.replica_index(source, rec, composed)?
        };
        self.remove_unreferenced(&freed);
        let Some((entry, seq)) = applied else {
            tracing::debug!(source, version, "replica lost to the current version");
            return Ok(None);
        };
        self.notify(seq);
        tracing::debug!(source, version, size, seq, "committed replica");
        Ok(Some(entry))
    }

    /// Records a tombstone at `version` of `source`, made by `by` at `modified`, if it wins
    /// over the current head (that is, if `version` is above the current version, or the
    /// source is unknown here); drops the source's versions and logs the change. Returns
    /// whether it did. `version` must be at least 1.
    pub fn delete_replica(
        &self,
        source: &str,
        version: u64,
        by: &str,
        modified: u64,
    ) -> Result<bool, StoreError> {
        check_by(by)?;
        if version == 0 {
            return Err(StoreError::InvalidArgument(
                "replica version must be at least 1".into(),
            ));
        }
        let tombstone = Record {
            deleted: true,
            version,
            size: 0,
            hash: [0; 32],
            modified,
            by: by.to_owned(),
            meta: Meta::default(),
        };
        let txn = self.db.begin_write()?;
        let freed = {
            let mut current = txn.open_table(CURRENT)?;
            let mut versions = txn.open_table(VERSIONS)?;
            let mut refs = txn.open_table(BLOB_REFS)?;
            let mut usage = txn.open_table(USAGE)?;
            let head = match current.get(source.as_bytes())? {
                Some(guard) => Some(Head::from(&Record::decode(guard.value())?)),
                None => None,
            };
            if replica_wins(version, &tombstone.hash, head.as_ref()) {
                current.insert(source.as_bytes(), tombstone.encode()?.as_slice())?;
                let mut freed = Vec::new();
                let mut tables = (&mut versions, &mut refs, &mut usage);
                prune_versions(&mut tables, source, 0, &mut freed)?;
                Some(freed)
            } else {
                None
            }
        };
        let Some(mut freed) = freed else {
            txn.abort()?;
            return Ok(false);
        };
        packs::release_contents(&txn, &mut freed)?;
        let seq = changes::append(&txn, source, &tombstone, self.keep_changes)?;
        txn.commit()?;
        self.notify(seq);
        self.remove_unreferenced(&freed);
        tracing::debug!(source, version, seq, "deleted by replica");
        Ok(true)
    }

    /// The index half of [`Store::commit_replica`], with the blob already placed. Returns the
    /// entry and change number if it applied, and the blobs that may have become
    /// unreferenced (the staged one if it lost).
    #[allow(clippy::type_complexity)]
    fn replica_index(
        &self,
        source: &str,
        rec: Record,
        composed: Option<Composed>,
    ) -> Result<(Option<(Entry, u64)>, Vec<Hash>), StoreError> {
        let txn = self.db.begin_write()?;
        let mut was_live = false;
        let freed = {
            let mut current = txn.open_table(CURRENT)?;
            let mut versions = txn.open_table(VERSIONS)?;
            let mut refs = txn.open_table(BLOB_REFS)?;
            let mut usage = txn.open_table(USAGE)?;
            let prev = match current.get(source.as_bytes())? {
                Some(guard) => Some(Record::decode(guard.value())?),
                None => None,
            };
            let head = prev.as_ref().map(Head::from);
            if !replica_wins(rec.version, &rec.hash, head.as_ref()) {
                None
            } else {
                let bytes = rec.encode()?;
                let mut freed = Vec::new();
                // Reference the new blob before releasing the one it replaces.
                was_live = refs.get(&rec.hash)?.is_some();
                add_ref(&mut refs, &rec.hash)?;
                if composed.is_none() {
                    dedup::queue(&txn, &rec.hash, rec.size)?;
                }
                if let Some(prev) = prev.as_ref().filter(|p| !p.deleted)
                    && prev.version == rec.version
                {
                    // Same version, greater hash: the losing record goes.
                    if let Some(guard) = versions.remove((source.as_bytes(), rec.version))? {
                        let old = decode_version(guard.value(), rec.version)?;
                        release_ref(&mut refs, &old.hash, &mut freed)?;
                        usage::removed(&mut usage, &old)?;
                    }
                }
                versions.insert((source.as_bytes(), rec.version), bytes.as_slice())?;
                usage::added(&mut usage, &rec)?;
                current.insert(source.as_bytes(), bytes.as_slice())?;
                let mut tables = (&mut versions, &mut refs, &mut usage);
                prune_versions(&mut tables, source, self.keep_versions, &mut freed)?;
                Some(freed)
            }
        };
        let placed = match &composed {
            None => Some(rec.hash),
            Some(c) => c.pack,
        };
        let Some(mut freed) = freed else {
            txn.abort()?;
            // The staged file was placed for nothing; it goes unless something uses it.
            return Ok((None, placed.into_iter().collect()));
        };
        if let Some(c) = composed {
            if was_live {
                freed.extend(c.pack);
            } else {
                packs::add_content(&txn, &rec.hash, &c.extents, c.index)?;
            }
        }
        packs::release_contents(&txn, &mut freed)?;
        let seq = changes::append(&txn, source, &rec, self.keep_changes)?;
        txn.commit()?;
        Ok((Some((rec.into_entry(source.to_owned()), seq)), freed))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::super::tests::{assert_consistent, blob_files, fetch, open_store, put, stage};
    use super::*;

    const T: u64 = 1_700_000_000;

    fn head(version: u64, data: &[u8]) -> Head {
        Head {
            version,
            hash: *blake3::hash(data).as_bytes(),
            deleted: false,
        }
    }

    fn tomb(version: u64) -> Head {
        Head {
            version,
            hash: [0; 32],
            deleted: true,
        }
    }

    /// Two contents, the first with the smaller hash.
    fn small_and_big() -> (&'static [u8], &'static [u8]) {
        if blake3::hash(b"x").as_bytes() < blake3::hash(b"y").as_bytes() {
            (b"x", b"y")
        } else {
            (b"y", b"x")
        }
    }

    fn replica(store: &Store, source: &str, data: &[u8], version: u64) -> Option<Entry> {
        store
            .commit_replica(source, stage(store, data), "peer", T, version)
            .unwrap()
    }

    fn last_change(store: &Store) -> Change {
        let seq = store.last_seq().unwrap();
        let page = store.changes_since(seq - 1, 1).unwrap();
        page.changes.into_iter().next().unwrap()
    }

    #[test]
    fn the_rule_compares_version_then_hash_with_tombstones_as_zeros() {
        let lo = [1u8; 32];
        let hi = [2u8; 32];
        let at = |version, hash| Head {
            version,
            hash,
            deleted: false,
        };
        assert!(replica_wins(1, &lo, None));
        assert!(
            replica_wins(1, &[0; 32], None),
            "a tombstone for an unknown source"
        );
        assert!(
            replica_wins(3, &lo, Some(&at(2, hi))),
            "higher version wins"
        );
        assert!(
            !replica_wins(1, &hi, Some(&at(2, lo))),
            "lower version loses"
        );
        assert!(
            replica_wins(2, &hi, Some(&at(2, lo))),
            "same version, greater hash"
        );
        assert!(
            !replica_wins(2, &lo, Some(&at(2, hi))),
            "same version, smaller hash"
        );
        assert!(
            !replica_wins(2, &lo, Some(&at(2, lo))),
            "identical: no change"
        );
        assert!(
            replica_wins(2, &lo, Some(&tomb(2))),
            "live beats a tombstone at its version"
        );
        assert!(
            !replica_wins(2, &[0; 32], Some(&at(2, lo))),
            "tombstone loses at a version"
        );
        assert!(
            !replica_wins(2, &[0; 32], Some(&tomb(2))),
            "tombstone twice: no change"
        );
        assert!(
            replica_wins(3, &[0; 32], Some(&at(2, hi))),
            "later tombstone wins"
        );
        // A tombstone's stored hash never matters, only that it is one.
        let odd = Head {
            version: 2,
            hash: hi,
            deleted: true,
        };
        assert!(replica_wins(2, &lo, Some(&odd)));
    }

    #[test]
    fn entry_version_sees_live_heads_and_tombstones() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open_store(tmp.path(), 3);
        assert_eq!(store.entry_version("s").unwrap(), None);
        put(&store, "s", b"one");
        assert_eq!(store.entry_version("s").unwrap(), Some(head(1, b"one")));
        store.delete("s", "w", T).unwrap();
        assert_eq!(store.entry_version("s").unwrap(), Some(tomb(2)));
    }

    #[test]
    fn a_newer_replica_becomes_current_and_is_logged() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open_store(tmp.path(), 3);
        let e = replica(&store, "s", b"from afar", 5).unwrap();
        assert_eq!((e.version, e.by.as_str(), e.modified), (5, "peer", T));
        assert_eq!(fetch(&store, "s", None).unwrap().1, b"from afar");
        let c = last_change(&store);
        assert_eq!((c.source.as_str(), c.version, c.deleted), ("s", 5, false));
        assert_eq!(c.hash, e.hash);

        let e = replica(&store, "s", b"newer", 9).unwrap();
        assert_eq!(e.version, 9);
        // The older version stays readable, as after a local commit.
        assert_eq!(fetch(&store, "s", Some(5)).unwrap().1, b"from afar");
        assert_eq!(store.last_seq().unwrap(), 2);
        assert_consistent(&store);
    }

    #[test]
    fn a_losing_replica_changes_nothing_and_leaves_no_blob() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open_store(tmp.path(), 3);
        replica(&store, "s", b"current", 4).unwrap();
        let files = blob_files(&store);
        assert!(replica(&store, "s", b"older", 3).is_none());
        // Same version: whichever hash is smaller loses.
        let (small, big) = small_and_big();
        replica(&store, "t", big, 2).unwrap();
        let files_t = blob_files(&store);
        assert!(replica(&store, "t", small, 2).is_none());
        assert_eq!(blob_files(&store), files_t);
        // An identical copy is a no-op, and its blob (shared) stays.
        assert!(replica(&store, "t", big, 2).is_none());
        assert_eq!(blob_files(&store), files_t);
        assert!(files_t.len() > files.len());
        assert_eq!(store.last_seq().unwrap(), 2, "nothing logged for losers");
        assert_eq!(fetch(&store, "s", None).unwrap().1, b"current");
        assert_eq!(
            store.stat("t").unwrap().unwrap().hash,
            *blake3::hash(big).as_bytes()
        );
        assert!(
            fs::read_dir(&store.tmp).unwrap().next().is_none(),
            "tmp/ is empty"
        );
        assert_consistent(&store);
    }

    #[test]
    fn same_version_greater_hash_replaces_the_record_and_fixes_refcounts() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open_store(tmp.path(), 3);
        let (small, big) = small_and_big();
        put(&store, "s", b"v1");
        let local = put(&store, "s", small);
        assert_eq!(local.version, 2);
        // Another source shares the losing blob: it must survive the replacement.
        put(&store, "other", small);
        let e = replica(&store, "s", big, 2).unwrap();
        assert_eq!(e.version, 2);
        assert_eq!(fetch(&store, "s", Some(2)).unwrap().1, big);
        assert_eq!(fetch(&store, "s", Some(1)).unwrap().1, b"v1");
        assert_eq!(fetch(&store, "other", None).unwrap().1, small);
        assert_consistent(&store);
        // Once `other` is gone too, nothing references `small` and its file goes.
        store.delete("other", "w", T).unwrap();
        assert_consistent(&store);
        let small_path = blob_location(&store.blobs, blake3::hash(small).as_bytes()).1;
        assert!(!small_path.exists());
    }

    #[test]
    fn a_replica_revives_a_tombstone_at_its_version_or_later() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open_store(tmp.path(), 3);
        put(&store, "s", b"one");
        assert_eq!(store.delete("s", "w", T).unwrap(), Some(2));
        assert!(replica(&store, "s", b"old", 1).is_none());
        let e = replica(&store, "s", b"concurrent", 2).unwrap();
        assert_eq!(e.version, 2);
        assert_eq!(
            store.entry_version("s").unwrap(),
            Some(head(2, b"concurrent"))
        );
        assert_consistent(&store);
    }

    #[test]
    fn delete_replica_follows_the_rule() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open_store(tmp.path(), 3);
        put(&store, "s", b"one");
        put(&store, "s", b"two");
        let seq = store.last_seq().unwrap();
        assert!(!store.delete_replica("s", 1, "peer", T).unwrap(), "older");
        assert!(
            !store.delete_replica("s", 2, "peer", T).unwrap(),
            "same version"
        );
        assert_eq!(store.last_seq().unwrap(), seq);
        assert!(store.delete_replica("s", 7, "peer", T).unwrap());
        assert_eq!(store.entry_version("s").unwrap(), Some(tomb(7)));
        assert!(store.stat("s").unwrap().is_none());
        assert!(
            blob_files(&store).is_empty(),
            "the versions' blobs are freed"
        );
        let c = last_change(&store);
        assert_eq!((c.version, c.deleted, c.by.as_str()), (7, true, "peer"));
        assert!(!store.delete_replica("s", 7, "peer", T).unwrap(), "twice");
        // A tombstone for a source never seen here is kept, so older copies lose to it.
        assert!(store.delete_replica("new", 3, "peer", T).unwrap());
        assert!(replica(&store, "new", b"stale", 2).is_none());
        assert_consistent(&store);
    }

    #[test]
    fn local_commits_continue_after_replicated_versions() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open_store(tmp.path(), 3);
        replica(&store, "s", b"far", 10).unwrap();
        assert_eq!(put(&store, "s", b"near").version, 11);
        assert!(store.delete_replica("s", 20, "peer", T).unwrap());
        assert_eq!(put(&store, "s", b"again").version, 21);
        assert_eq!(store.delete("s", "w", T).unwrap(), Some(22));
        assert_consistent(&store);
    }

    #[test]
    fn version_zero_and_overlong_names_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open_store(tmp.path(), 3);
        let err = store
            .commit_replica("s", stage(&store, b"x"), "peer", T, 0)
            .unwrap_err();
        assert!(matches!(err, StoreError::InvalidArgument(_)), "{err}");
        assert!(matches!(
            store.delete_replica("s", 0, "peer", T),
            Err(StoreError::InvalidArgument(_))
        ));
        assert!(matches!(
            store.delete_replica("s", 1, &"p".repeat(70_000), T),
            Err(StoreError::InvalidArgument(_))
        ));
        assert_eq!(store.last_seq().unwrap(), 0);
    }
}
