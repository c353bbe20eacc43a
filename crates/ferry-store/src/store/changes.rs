//! The change log: every commit and every delete, numbered store-wide.
//!
//! Table `changes`: `u64` sequence number → `source_len u16 BE` ‖ `source` (UTF-8) ‖ the index
//! record of the version the change made current (tombstone for a delete). Sequence numbers
//! start at 1, grow by one per change and are never reused: the last one given out is kept in
//! `meta["last_seq"]`, so pruning the log cannot make a number come back. The log is appended
//! in the same write transaction as the change itself and pruned to the newest
//! `keep_changes` entries there too, so the retained numbers are always contiguous.

use super::*;
use ferry_backend::{Change, Changes};

/// Sequence number → encoded change.
pub(super) const CHANGES: TableDefinition<u64, &[u8]> = TableDefinition::new("changes");
/// `meta` key of the last sequence number given out (absent: none yet).
const LAST_SEQ_KEY: &str = "last_seq";

impl Store {
    /// The last change sequence number given out; 0 if nothing changed yet.
    pub fn last_seq(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        Ok(meta.get(LAST_SEQ_KEY)?.map_or(0, |guard| guard.value()))
    }

    /// Up to `limit` changes with a sequence number above `after`, oldest first, read in one
    /// consistent snapshot. Says whether changes after `after` were already pruned (a gap).
    pub fn changes_since(&self, after: u64, limit: usize) -> Result<Changes, StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let last = meta.get(LAST_SEQ_KEY)?.map_or(0, |guard| guard.value());
        let log = txn.open_table(CHANGES)?;
        let oldest = match log.first()? {
            Some((k, _)) => k.value(),
            None => last.saturating_add(1),
        };
        let gap = after > last || after.saturating_add(1) < oldest;
        let from = if gap { oldest } else { after.saturating_add(1) };
        let mut changes = Vec::new();
        if limit > 0 {
            for item in log.range(from..)? {
                let (k, v) = item?;
                changes.push(decode(k.value(), v.value())?);
                if changes.len() >= limit {
                    break;
                }
            }
        }
        Ok(Changes {
            changes,
            gap,
            oldest,
            last,
        })
    }

    /// Follows the change log: a receiver of the last sequence number, moved forward after
    /// every committed transaction that logged a change (commits, deletes, replica commits
    /// and deletes), once the change is visible to readers. It never moves back; two changes
    /// made at once may be seen as one.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Moves the change signal forward after a committed change.
    pub(super) fn notify(&self, seq: u64) {
        ferry_backend::advance_signal(&self.changed, seq);
        self.dedup_signal.wake();
    }
}

/// Logs a change to `source` whose new current record is `rec`, inside `txn`, and prunes the
/// log to the newest `keep` entries. Returns the change's sequence number.
pub(super) fn append(
    txn: &WriteTransaction,
    source: &str,
    rec: &Record,
    keep: u64,
) -> Result<u64, StoreError> {
    let mut meta = txn.open_table(META)?;
    let last = meta.get(LAST_SEQ_KEY)?.map_or(0, |guard| guard.value());
    let seq = last
        .checked_add(1)
        .ok_or_else(|| StoreError::Corrupt("change sequence is exhausted".into()))?;
    meta.insert(LAST_SEQ_KEY, seq)?;
    let mut log = txn.open_table(CHANGES)?;
    log.insert(seq, encode(source, rec)?.as_slice())?;
    // Normally exactly one entry falls out; more after `keep_changes` was lowered.
    let cutoff = seq.saturating_sub(keep);
    loop {
        let first = log.first()?.map(|(k, _)| k.value());
        match first {
            Some(k) if k <= cutoff => {
                log.remove(k)?;
            }
            _ => break,
        }
    }
    Ok(seq)
}

fn encode(source: &str, rec: &Record) -> Result<Vec<u8>, StoreError> {
    let len = u16::try_from(source.len()).map_err(|_| {
        StoreError::InvalidArgument(format!(
            "source name is {} bytes, at most {} are allowed",
            source.len(),
            u16::MAX
        ))
    })?;
    let rec = rec.encode()?;
    let mut out = Vec::with_capacity(2 + source.len() + rec.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(source.as_bytes());
    out.extend_from_slice(&rec);
    Ok(out)
}

fn decode(seq: u64, bytes: &[u8]) -> Result<Change, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("change {seq}: {what}"));
    let (len, rest) = bytes
        .split_first_chunk::<2>()
        .ok_or_else(|| corrupt("truncated"))?;
    let (name, rec) = rest
        .split_at_checked(usize::from(u16::from_be_bytes(*len)))
        .ok_or_else(|| corrupt("truncated"))?;
    let source = source_name(name)?;
    let rec = Record::decode(rec)?;
    Ok(Change {
        seq,
        source,
        version: rec.version,
        deleted: rec.deleted,
        size: rec.size,
        hash: rec.hash,
        modified: rec.modified,
        by: rec.by,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use redb::ReadableTableMetadata;

    use super::*;

    fn open(dir: &Path, keep_changes: u64) -> Store {
        Store::open(
            dir,
            StoreOptions {
                keep_changes,
                ..StoreOptions::default()
            },
        )
        .unwrap()
    }

    fn put(store: &Store, source: &str, data: &[u8], by: &str) -> Entry {
        let mut w = store.begin_put().unwrap();
        w.write_chunk(data).unwrap();
        store.commit(source, w.finish().unwrap(), by, 7).unwrap()
    }

    #[test]
    fn commits_and_deletes_are_logged_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path(), 100);
        assert_eq!(store.last_seq().unwrap(), 0);
        let empty = store.changes_since(0, 10).unwrap();
        assert_eq!(
            empty,
            Changes {
                changes: vec![],
                gap: false,
                oldest: 1,
                last: 0
            }
        );
        put(&store, "a", b"one", "alice");
        put(&store, "a", b"two", "bob");
        assert_eq!(store.delete("a", "carol", 9).unwrap(), Some(3));
        // A delete of nothing logs nothing.
        assert_eq!(store.delete("a", "carol", 9).unwrap(), None);
        put(&store, "b", b"", "alice");
        assert_eq!(store.last_seq().unwrap(), 4);

        let all = store.changes_since(0, 100).unwrap();
        assert!(!all.gap);
        assert_eq!((all.oldest, all.last), (1, 4));
        let seen: Vec<_> = all
            .changes
            .iter()
            .map(|c| {
                (
                    c.seq,
                    c.source.as_str(),
                    c.version,
                    c.deleted,
                    c.by.as_str(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (1, "a", 1, false, "alice"),
                (2, "a", 2, false, "bob"),
                (3, "a", 3, true, "carol"),
                (4, "b", 1, false, "alice"),
            ]
        );
        let second = &all.changes[1];
        assert_eq!(second.hash, *blake3::hash(b"two").as_bytes());
        assert_eq!((second.size, second.modified), (3, 7));
        let tomb = &all.changes[2];
        assert_eq!((tomb.size, tomb.hash, tomb.modified), (0, [0; 32], 9));

        // Paging: after and limit.
        let page = store.changes_since(1, 2).unwrap();
        assert_eq!(
            page.changes.iter().map(|c| c.seq).collect::<Vec<_>>(),
            [2, 3]
        );
        assert!(store.changes_since(4, 10).unwrap().changes.is_empty());
        assert!(store.changes_since(0, 0).unwrap().changes.is_empty());
    }

    #[test]
    fn the_log_is_pruned_and_a_pruned_cursor_is_a_gap() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path(), 3);
        for i in 0..5u8 {
            put(&store, "s", &[i], "w");
        }
        let from_start = store.changes_since(0, 100).unwrap();
        assert!(from_start.gap, "changes 1 and 2 are gone");
        assert_eq!((from_start.oldest, from_start.last), (3, 5));
        assert_eq!(
            from_start.changes.iter().map(|c| c.seq).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        // Exactly at the edge: everything after 2 is still there.
        assert!(!store.changes_since(2, 100).unwrap().gap);
        assert!(store.changes_since(1, 100).unwrap().gap);
        // A cursor from beyond this store's history is a gap too, answered from the oldest.
        let ahead = store.changes_since(9, 100).unwrap();
        assert!(ahead.gap);
        assert_eq!(ahead.changes, from_start.changes);
        let txn = store.db.begin_read().unwrap();
        assert_eq!(txn.open_table(CHANGES).unwrap().len().unwrap(), 3);
    }

    #[test]
    fn numbers_survive_reopen_and_a_lower_keep_prunes_at_the_next_change() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path(), 10);
        for i in 0..6u8 {
            put(&store, "s", &[i], "w");
        }
        drop(store);
        let store = open(tmp.path(), 2);
        assert_eq!(store.last_seq().unwrap(), 6);
        put(&store, "t", b"x", "w");
        let all = store.changes_since(0, 100).unwrap();
        assert_eq!(
            all.changes.iter().map(|c| c.seq).collect::<Vec<_>>(),
            [6, 7]
        );
        assert!(all.gap);
    }

    #[test]
    fn keep_zero_means_one_and_numbers_are_never_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path(), 0);
        put(&store, "s", b"1", "w");
        store.delete("s", "w", 1).unwrap();
        put(&store, "s", b"2", "w");
        let all = store.changes_since(0, 100).unwrap();
        assert_eq!(all.changes.len(), 1);
        assert_eq!(all.changes[0].seq, 3);
        assert_eq!(all.changes[0].version, 3);
        assert_eq!(all.oldest, 3);
    }

    #[test]
    fn the_signal_moves_after_every_change_once_it_is_visible() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path(), 100);
        put(&store, "a", b"1", "w");
        // A subscriber starts at the last change made before it subscribed.
        let mut rx = store.subscribe();
        assert_eq!(*rx.borrow_and_update(), 1);
        store.delete("a", "w", 1).unwrap();
        assert!(rx.has_changed().unwrap());
        let seen = *rx.borrow_and_update();
        // The change is already readable when the signal moves.
        assert_eq!((seen, store.last_seq().unwrap()), (2, 2));
        // A delete of a deleted source logs nothing and does not move it.
        store.delete("a", "w", 1).unwrap();
        assert!(!rx.has_changed().unwrap());
        drop(store);
        // Reopened, the signal starts at the logged last change.
        let store = open(tmp.path(), 100);
        assert_eq!(*store.subscribe().borrow(), 2);
    }

    #[test]
    fn a_format_1_index_is_upgraded_and_keeps_its_data() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path(), 100);
        put(&store, "old", b"data", "w");
        // Make it look like an index written before the change log existed.
        {
            let txn = store.db.begin_write().unwrap();
            txn.delete_table(CHANGES).unwrap();
            let mut meta = txn.open_table(META).unwrap();
            meta.remove(LAST_SEQ_KEY).unwrap();
            meta.insert(FORMAT_KEY, 1).unwrap();
            drop(meta);
            txn.commit().unwrap();
        }
        drop(store);
        let store = open(tmp.path(), 100);
        assert_eq!(store.stat("old").unwrap().unwrap().version, 1);
        assert_eq!(store.last_seq().unwrap(), 0);
        put(&store, "old", b"new", "w");
        let all = store.changes_since(0, 10).unwrap();
        assert_eq!(all.changes.len(), 1);
        assert_eq!((all.changes[0].seq, all.changes[0].version), (1, 2));
        let txn = store.db.begin_read().unwrap();
        let format = txn.open_table(META).unwrap().get(FORMAT_KEY).unwrap();
        assert_eq!(format.unwrap().value(), FORMAT_VERSION);
    }

    #[test]
    fn damaged_log_entries_are_errors_not_panics() {
        let rec = Record {
            deleted: false,
            version: 1,
            size: 1,
            hash: [1; 32],
            modified: 2,
            by: "w".into(),
            meta: Meta::default(),
        };
        let good = encode("src", &rec).unwrap();
        assert_eq!(decode(5, &good).unwrap().source, "src");
        for n in 0..good.len() {
            assert!(
                matches!(decode(5, &good[..n]), Err(StoreError::Corrupt(_))),
                "{n}"
            );
        }
        let mut bad_utf8 = good.clone();
        bad_utf8[2] = 0xff;
        assert!(matches!(decode(5, &bad_utf8), Err(StoreError::Corrupt(_))));
        assert!(matches!(
            encode(&"x".repeat(70_000), &rec),
            Err(StoreError::InvalidArgument(_))
        ));
    }
}
