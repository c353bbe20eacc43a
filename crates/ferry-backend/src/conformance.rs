//! The conformance suite every backend runs from its tests (object_store's `integration.rs`
//! is the model): public `async fn`s that panic on the first rule a backend breaks.
//!
//! Each check needs a **fresh** backend (nothing stored, no uploads) configured with
//! [`RETENTION`]. [`run_all`] runs every check, each on a new backend from a factory:
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
//! use ferry_backend::{MemoryBackend, conformance};
//! conformance::run_all(|| async { MemoryBackend::new(conformance::RETENTION) }).await;
//! # });
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`accounts::run_all`] does the same for the [`Accounts`](crate::Accounts) trait.
//!
//! A backend that needs its own checks (reopening a store mid-upload, counting files) adds
//! them beside its call to the suite.

// A test suite reports a broken rule by panicking, like `assert!`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;

pub mod accounts;
pub mod delta;
pub mod small;

use crate::{
    Backend, BackendError, BlobReader, Blobs, Entry, Hash, Meta, Retention, Staged, Upload,
    UploadKey, Usage, stage_bytes,
};

/// The retention every backend under test must be configured with.
pub const RETENTION: Retention = Retention {
    keep_versions: 2,
    keep_changes: 4,
};

/// A fixed clock for the checks (unix seconds).
pub const T0: u64 = 1_700_000_000;

/// Runs every check, each on a fresh backend made by `fresh`.
pub async fn run_all<B, F, Fut>(mut fresh: F)
where
    B: Backend,
    F: FnMut() -> Fut,
    Fut: Future<Output = B>,
{
    index_basics(&fresh().await).await;
    metadata_kept(&fresh().await).await;
    listing_and_paging(&fresh().await).await;
    versions_kept_and_pruned(&fresh().await).await;
    usage_follows_versions(&fresh().await).await;
    change_log(&fresh().await).await;
    ranged_reads(&fresh().await).await;
    readers(&fresh().await).await;
    change_signal(&fresh().await).await;
    uploads_resume(&fresh().await).await;
    upload_hash_mismatch(&fresh().await).await;
    same_content_stored_once(&fresh().await).await;
    abandoned_uploads_swept(&fresh().await).await;
    replicas(&fresh().await).await;
    concurrent_commits(&fresh().await).await;
    delta::delta_uploads(&fresh().await).await;
    delta::delta_refusals(&fresh().await).await;
    small::small_commits(&fresh().await).await;
    small::small_commit_refusals(&fresh().await).await;
}

/// Polls every future until all are done (a runtime-agnostic `join_all`), so that a backend
/// doing real work elsewhere (a thread pool, a database) runs them at once.
pub async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (fut, out) in futures.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *out = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

fn hash(data: &[u8]) -> Hash {
    *blake3::hash(data).as_bytes()
}

/// Content that differs at every offset, so a wrong range shows.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ ((i >> 8) as u8))
        .collect()
}

/// Stages `data` under a key unique to `(source, data, now)` and commits it.
pub async fn put<B: Backend>(b: &B, source: &str, data: &[u8], by: &str, now: u64) -> Entry {
    let key =
        UploadKey::derive(&[source.as_bytes(), b"\0", &hash(data), &now.to_be_bytes()].concat());
    let staged = stage_bytes(b, &key, data, now).await.unwrap();
    b.commit(source, staged, by, now).await.unwrap()
}

async fn read_all<B: Blobs>(b: &B, entry: &Entry) -> Vec<u8> {
    b.read(&entry.hash, 0, entry.size).await.unwrap()
}

/// A version's metadata is kept with it, returned by every read of the index, and belongs to
/// that version only (the next one without metadata has none); a replica keeps its own.
pub async fn metadata_kept<B: Backend>(b: &B) {
    let meta = Meta {
        mtime: Some(1_699_999_999_123_456_789),
        executable: true,
    };
    let key = UploadKey::derive(b"metadata 1");
    let mut staged = stage_bytes(b, &key, b"#!/bin/sh\n", T0).await.unwrap();
    assert_eq!(staged.meta(), Meta::default());
    staged.set_meta(meta);
    let e = b.commit("run.sh", staged, "alice", T0).await.unwrap();
    assert_eq!(e.meta, meta);
    assert_eq!(b.stat("run.sh").await.unwrap().unwrap().meta, meta);
    assert_eq!(
        b.stat_version("run.sh", 1).await.unwrap().unwrap().meta,
        meta
    );
    assert_eq!(b.list("run", None, 10).await.unwrap()[0].meta, meta);
    let plain = put(b, "run.sh", b"#!/bin/sh\nexit 0\n", "alice", T0 + 1).await;
    assert_eq!(plain.meta, Meta::default());
    let kept = b.versions("run.sh").await.unwrap();
    assert_eq!(
        kept.iter().map(|e| e.meta).collect::<Vec<_>>(),
        [meta, Meta::default()]
    );
    let only_time = Meta {
        mtime: Some(0),
        executable: false,
    };
    let mut staged = stage_bytes(b, &UploadKey::derive(b"metadata 2"), b"copy", T0)
        .await
        .unwrap();
    staged.set_meta(only_time);
    let r = b
        .commit_replica("mirrored", staged, "peer", T0, 4)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.meta, only_time);
    assert_eq!(b.stat("mirrored").await.unwrap().unwrap().meta, only_time);
}

/// Commit, stat, read back, delete and tombstones.
pub async fn index_basics<B: Backend>(b: &B) {
    assert_eq!(b.last_seq().await.unwrap(), 0);
    assert!(b.stat("greeting").await.unwrap().is_none());
    assert!(b.head("greeting").await.unwrap().is_none());
    assert!(b.heads(None, 10).await.unwrap().is_empty());

    let e = put(b, "greeting", b"hello", "alice", T0).await;
    assert_eq!(
        e,
        Entry {
            source: "greeting".into(),
            version: 1,
            size: 5,
            hash: hash(b"hello"),
            modified: T0,
            by: "alice".into(),
            meta: Meta::default(),
        }
    );
    assert_eq!(b.stat("greeting").await.unwrap(), Some(e.clone()));
    assert_eq!(
        b.stat_version("greeting", 1).await.unwrap(),
        Some(e.clone())
    );
    assert_eq!(b.blob_size(&e.hash).await.unwrap(), Some(5));
    assert_eq!(read_all(b, &e).await, b"hello");

    let e2 = put(b, "greeting", b"hello again", "bob", T0 + 1).await;
    assert_eq!((e2.version, e2.by.as_str()), (2, "bob"));
    assert_eq!(b.stat("greeting").await.unwrap(), Some(e2.clone()));

    // An empty blob is a blob.
    let empty = put(b, "empty", b"", "alice", T0).await;
    assert_eq!((empty.size, empty.hash), (0, hash(b"")));
    assert_eq!(read_all(b, &empty).await, b"");

    // Delete: a tombstone takes the next version; a second delete does nothing.
    assert_eq!(
        b.delete("greeting", "carol", T0 + 2).await.unwrap(),
        Some(3)
    );
    assert_eq!(b.delete("greeting", "carol", T0 + 3).await.unwrap(), None);
    assert_eq!(b.delete("never", "carol", T0 + 3).await.unwrap(), None);
    assert!(b.stat("greeting").await.unwrap().is_none());
    assert!(b.stat_version("greeting", 2).await.unwrap().is_none());
    assert!(b.versions("greeting").await.unwrap().is_empty());
    let tomb = b.head("greeting").await.unwrap().unwrap();
    assert_eq!((tomb.version, tomb.deleted, tomb.hash), (3, true, [0; 32]));
    // The deleted content is gone (nothing else references it).
    assert_eq!(b.blob_size(&e2.hash).await.unwrap(), None);
    assert!(matches!(
        b.read(&e2.hash, 0, 1).await,
        Err(BackendError::BlobNotFound)
    ));

    // The version counter continues after a delete.
    let e4 = put(b, "greeting", b"back", "alice", T0 + 4).await;
    assert_eq!(e4.version, 4);
    let head = b.head("greeting").await.unwrap().unwrap();
    assert_eq!((head.version, head.deleted, head.hash), (4, false, e4.hash));

    // Bad arguments are refused and change nothing.
    let seq = b.last_seq().await.unwrap();
    let key = UploadKey::derive(b"bad args");
    let staged = stage_bytes(b, &key, b"x", T0).await.unwrap();
    assert!(matches!(
        b.commit("", staged, "alice", T0).await,
        Err(BackendError::InvalidArgument(_))
    ));
    let staged = stage_bytes(b, &UploadKey::derive(b"bad by"), b"x", T0)
        .await
        .unwrap();
    assert!(matches!(
        b.commit("s", staged, &"a".repeat(70_000), T0).await,
        Err(BackendError::InvalidArgument(_))
    ));
    assert_eq!(b.last_seq().await.unwrap(), seq);
    assert!(b.stat("s").await.unwrap().is_none());
}

/// `list` by prefix, paging with `after` and `limit`, tombstones skipped; `heads` with them.
pub async fn listing_and_paging<B: Backend>(b: &B) {
    for name in ["a", "a/1", "a/2", "a/3", "ab", "b/1", "é/1"] {
        put(b, name, name.as_bytes(), "w", T0).await;
    }
    b.delete("a/2", "w", T0).await.unwrap();
    let names = |v: Vec<Entry>| v.into_iter().map(|e| e.source).collect::<Vec<_>>();

    assert_eq!(
        names(b.list("", None, 100).await.unwrap()),
        ["a", "a/1", "a/3", "ab", "b/1", "é/1"]
    );
    assert_eq!(
        names(b.list("a/", None, 100).await.unwrap()),
        ["a/1", "a/3"]
    );
    assert_eq!(
        names(b.list("a", None, 100).await.unwrap()),
        ["a", "a/1", "a/3", "ab"]
    );
    assert!(b.list("c", None, 100).await.unwrap().is_empty());
    assert!(b.list("", None, 0).await.unwrap().is_empty());
    assert_eq!(names(b.list("é", None, 10).await.unwrap()), ["é/1"]);

    // Paging: each page starts strictly after the last name of the one before.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = b.list("", after.as_deref(), 2).await.unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some(last.source.clone());
        seen.extend(names(page));
    }
    assert_eq!(seen, ["a", "a/1", "a/3", "ab", "b/1", "é/1"]);
    // `after` before the prefix, inside it, or a deleted name.
    assert_eq!(
        names(b.list("a/", Some("0"), 10).await.unwrap()),
        ["a/1", "a/3"]
    );
    assert_eq!(names(b.list("a/", Some("a/1"), 10).await.unwrap()), ["a/3"]);
    assert_eq!(names(b.list("a/", Some("a/2"), 10).await.unwrap()), ["a/3"]);
    assert!(b.list("a/", Some("a/3"), 10).await.unwrap().is_empty());

    // Heads include the tombstone, in name order, and page the same way.
    let heads = b.heads(None, 100).await.unwrap();
    let head_names: Vec<_> = heads.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(head_names, ["a", "a/1", "a/2", "a/3", "ab", "b/1", "é/1"]);
    let (_, a2) = &heads[2];
    assert!(a2.deleted && a2.version == 2);
    let page = b.heads(Some("a/1"), 2).await.unwrap();
    assert_eq!(
        page.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["a/2", "a/3"]
    );
}

/// Versions beyond [`RETENTION`] are pruned, and so is content nothing else references.
pub async fn versions_kept_and_pruned<B: Backend>(b: &B) {
    let v1 = put(b, "doc", b"one", "w", T0).await;
    let v2 = put(b, "doc", b"two", "w", T0 + 1).await;
    // Another source shares v2's content: pruning "doc" must not free it.
    let other = put(b, "copy", b"two", "w", T0).await;
    assert_eq!(other.hash, v2.hash);
    let v3 = put(b, "doc", b"three", "w", T0 + 2).await;
    assert_eq!(
        b.versions("doc").await.unwrap(),
        vec![v2.clone(), v3.clone()]
    );
    assert!(b.stat_version("doc", 1).await.unwrap().is_none());
    assert_eq!(b.stat_version("doc", 2).await.unwrap(), Some(v2.clone()));
    // v1's content is unreferenced now, so it is gone.
    assert_eq!(b.blob_size(&v1.hash).await.unwrap(), None);
    assert!(matches!(
        b.read(&v1.hash, 0, 0).await,
        Err(BackendError::BlobNotFound)
    ));
    let v4 = put(b, "doc", b"four", "w", T0 + 3).await;
    assert_eq!(b.versions("doc").await.unwrap(), vec![v3, v4]);
    // v2 is pruned but "copy" still holds that content.
    assert_eq!(read_all(b, &other).await, b"two");
    b.delete("copy", "w", T0).await.unwrap();
    assert_eq!(b.blob_size(&v2.hash).await.unwrap(), None);

    // Committing content a kept version already has keeps one copy, referenced twice.
    let again = put(b, "doc", b"four", "w", T0 + 4).await;
    assert_eq!(again.version, 5);
    assert_eq!(b.versions("doc").await.unwrap().len(), 2);
    let v6 = put(b, "doc", b"six", "w", T0 + 5).await;
    // Version 4 went, version 5 (same content) is kept: the content stays.
    assert_eq!(read_all(b, &again).await, b"four");
    assert_eq!(b.versions("doc").await.unwrap(), vec![again, v6]);
}

/// Each principal's usage counts its kept versions: commits add, pruning (by anyone's
/// commit), deletes and losing replicas take away; tombstones count nothing.
pub async fn usage_follows_versions<B: Backend>(b: &B) {
    let usage = |by: &'static str| async move { b.usage(Some(by)).await.unwrap() };
    let is = |bytes, versions| Usage { bytes, versions };
    assert_eq!(usage("a").await, Usage::default());
    put(b, "x", b"one", "a", T0).await;
    put(b, "y", b"fiver", "a", T0).await;
    put(b, "z", b"four", "b", T0).await;
    assert_eq!(usage("a").await, is(8, 2));
    assert_eq!(usage("b").await, is(4, 1));
    assert_eq!(b.usage(None).await.unwrap(), is(12, 3));
    // Shared content counts for each version that has it.
    put(b, "x", b"four", "a", T0 + 1).await;
    assert_eq!(usage("a").await, is(12, 3));
    // keep_versions = 2: the third version of x prunes the first.
    put(b, "x", b"sixsix", "a", T0 + 2).await;
    assert_eq!(usage("a").await, is(15, 3));
    // Another principal's commit prunes a's version.
    put(b, "x", b"sevense", "b", T0 + 3).await;
    assert_eq!(usage("a").await, is(11, 2));
    assert_eq!(usage("b").await, is(11, 2));
    // A delete drops every kept version; its tombstone counts for nobody.
    b.delete("x", "a", T0 + 4).await.unwrap();
    assert_eq!(usage("a").await, is(5, 1));
    assert_eq!(usage("b").await, is(4, 1));
    // Replicated versions count for the principal they name, until a tombstone wins.
    let staged = stage_bytes(b, &UploadKey::derive(b"usage-r"), b"rr", T0)
        .await
        .unwrap();
    assert!(
        b.commit_replica("r", staged, "c", T0, 3)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(usage("c").await, is(2, 1));
    assert!(b.delete_replica("r", 4, "c", T0).await.unwrap());
    assert_eq!(usage("c").await, Usage::default());
    b.delete("y", "a", T0).await.unwrap();
    b.delete("z", "b", T0).await.unwrap();
    assert_eq!(usage("a").await, Usage::default());
    assert_eq!(usage("b").await, Usage::default());
    assert_eq!(b.usage(None).await.unwrap(), Usage::default());
}

/// The change log: every commit and delete in order, paging, pruning reported as a gap.
pub async fn change_log<B: Backend>(b: &B) {
    let c = b.changes_since(0, 10).await.unwrap();
    assert_eq!((c.changes.len(), c.gap, c.oldest, c.last), (0, false, 1, 0));

    put(b, "a", b"1", "alice", T0).await;
    put(b, "a", b"2", "bob", T0 + 1).await;
    b.delete("a", "carol", T0 + 2).await.unwrap();
    b.delete("a", "carol", T0 + 3).await.unwrap(); // logs nothing
    put(b, "b", b"", "alice", T0 + 4).await;
    assert_eq!(b.last_seq().await.unwrap(), 4);

    let all = b.changes_since(0, 100).await.unwrap();
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
                c.modified,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (1, "a", 1, false, "alice", T0),
            (2, "a", 2, false, "bob", T0 + 1),
            (3, "a", 3, true, "carol", T0 + 2),
            (4, "b", 1, false, "alice", T0 + 4),
        ]
    );
    assert_eq!((all.changes[1].size, all.changes[1].hash), (1, hash(b"2")));
    assert_eq!((all.changes[2].size, all.changes[2].hash), (0, [0; 32]));

    let page = b.changes_since(1, 2).await.unwrap();
    assert_eq!(
        page.changes.iter().map(|c| c.seq).collect::<Vec<_>>(),
        [2, 3]
    );
    assert!(b.changes_since(4, 10).await.unwrap().changes.is_empty());
    assert!(b.changes_since(0, 0).await.unwrap().changes.is_empty());

    // Two more: the log keeps the newest four (3..=6), so a cursor before 2 is a gap.
    put(b, "c", b"5", "w", T0).await;
    put(b, "c", b"6", "w", T0).await;
    let from_start = b.changes_since(0, 100).await.unwrap();
    assert!(from_start.gap, "changes 1 and 2 were pruned");
    assert_eq!((from_start.oldest, from_start.last), (3, 6));
    assert_eq!(
        from_start.changes.iter().map(|c| c.seq).collect::<Vec<_>>(),
        [3, 4, 5, 6]
    );
    assert!(!b.changes_since(2, 100).await.unwrap().gap);
    assert!(b.changes_since(1, 100).await.unwrap().gap);
    // A cursor from beyond this backend's history is a gap, answered from the oldest.
    let ahead = b.changes_since(99, 100).await.unwrap();
    assert!(ahead.gap);
    assert_eq!(ahead.changes, from_start.changes);
}

/// Ranged reads: first byte, middle, last byte, empty at the end, past the end refused.
pub async fn ranged_reads<B: Backend>(b: &B) {
    let data = pattern(100_003, 7);
    let e = put(b, "big", &data, "w", T0).await;
    let size = e.size;
    assert_eq!(size, data.len() as u64);
    let h = &e.hash;
    assert_eq!(b.read(h, 0, 1).await.unwrap(), &data[..1]);
    assert_eq!(
        b.read(h, 50_000, 4097).await.unwrap(),
        &data[50_000..54_097]
    );
    assert_eq!(
        b.read(h, size - 1, 1).await.unwrap(),
        &data[data.len() - 1..]
    );
    assert_eq!(b.read(h, 0, size).await.unwrap(), data);
    assert!(b.read(h, size, 0).await.unwrap().is_empty());
    assert!(b.read(h, 17, 0).await.unwrap().is_empty());
    // Reassembling from parts gives the whole.
    let mut joined = Vec::new();
    let mut at = 0;
    while at < size {
        let n = (size - at).min(30_000);
        joined.extend(b.read(h, at, n).await.unwrap());
        at += n;
    }
    assert_eq!(joined, data);

    for (offset, len) in [
        (0, size + 1),
        (size - 1, 2),
        (size, 1),
        (size + 1, 0),
        (u64::MAX, 2),
    ] {
        match b.read(h, offset, len).await {
            Err(BackendError::RangeOutOfBounds {
                offset: o,
                len: l,
                size: s,
            }) => assert_eq!((o, l, s), (offset, len, size)),
            other => panic!("read({offset}, {len}) of {size} bytes: {other:?}"),
        }
    }
    assert!(matches!(
        b.read(&hash(b"not stored"), 0, 0).await,
        Err(BackendError::BlobNotFound)
    ));
    assert_eq!(b.blob_size(&hash(b"not stored")).await.unwrap(), None);
}

/// Readers: a range read piece by piece equals [`Blobs::read`] of it; the same errors at
/// open; an open reader outlives the pruning of its version.
pub async fn readers<B: Backend>(b: &B) {
    let data = pattern(300_001, 9);
    let e = put(b, "big", &data, "w", T0).await;
    let (h, size) = (&e.hash, e.size);
    for (offset, len, piece) in [(0, size, 65_536), (12_345, 100_000, 7_000), (size, 0, 10)] {
        let mut r = b.reader(h, offset, len).await.unwrap();
        assert_eq!(r.remaining(), len);
        let mut joined = Vec::new();
        for _ in 0..1_000 {
            let before = joined.len();
            joined = r.read_into(joined, piece).await.unwrap();
            let got = joined.len() - before;
            assert!(got <= piece, "read_into appended {got} > {piece}");
            if got == 0 {
                break;
            }
        }
        assert_eq!(r.remaining(), 0);
        let (start, end) = (offset as usize, (offset + len) as usize);
        assert_eq!(joined, &data[start..end], "range {offset}+{len}");
        // What the buffer held before stays in front.
        let kept = r.read_into(b"head".to_vec(), piece).await.unwrap();
        assert_eq!(kept, b"head");
    }
    assert!(matches!(
        b.reader(h, size - 1, 2).await,
        Err(BackendError::RangeOutOfBounds { .. })
    ));
    assert!(matches!(
        b.reader(&hash(b"not stored"), 0, 0).await,
        Err(BackendError::BlobNotFound)
    ));
    // Open, then the version is pruned (keep_versions is 2): the range still reads whole.
    let mut r = b.reader(h, 1, size - 1).await.unwrap();
    put(b, "big", b"second", "w", T0).await;
    put(b, "big", b"third", "w", T0).await;
    assert_eq!(
        b.blob_size(h).await.unwrap(),
        None,
        "the first version is pruned"
    );
    let all = r
        .read_into(Vec::new(), usize::try_from(size).unwrap())
        .await
        .unwrap();
    assert_eq!(all, &data[1..]);
}

/// The change signal starts at the last change and moves after every logged change, once
/// the change is readable; a write that logs nothing does not move it.
pub async fn change_signal<B: Backend>(b: &B) {
    put(b, "a", b"1", "w", T0).await;
    let mut rx = b.subscribe();
    assert_eq!(*rx.borrow_and_update(), 1);
    put(b, "a", b"2", "w", T0).await;
    assert!(rx.has_changed().unwrap());
    let seen = *rx.borrow_and_update();
    assert_eq!(seen, 2);
    assert_eq!(b.changes_since(1, 10).await.unwrap().changes.len(), 1);
    assert!(b.delete("gone", "w", T0).await.unwrap().is_none());
    assert!(
        !rx.has_changed().unwrap(),
        "a delete of nothing logs nothing"
    );
    b.delete("a", "w", T0).await.unwrap();
    assert_eq!(*rx.borrow_and_update(), 3);
    // Another subscriber, later, starts where the log is.
    assert_eq!(*b.subscribe().borrow(), 3);
}

/// An upload continues from the offset it reports after its handle was dropped; one handle
/// at a time; finished content is durable but not visible until committed.
pub async fn uploads_resume<B: Backend>(b: &B) {
    let data = pattern(300_000, 3);
    let key = UploadKey::derive(b"alice/doc/300000");
    assert_eq!(b.upload_status(&key).await.unwrap(), None);

    let mut up = b.begin_upload(&key, T0).await.unwrap();
    assert_eq!((up.offset(), up.key()), (0, &key));
    assert_eq!(up.write(&data[..1000]).await.unwrap(), 1000);
    assert_eq!(up.write(&data[1000..100_000]).await.unwrap(), 100_000);
    assert_eq!(up.sync().await.unwrap(), 100_000);
    // One handle at a time.
    assert!(matches!(
        b.begin_upload(&key, T0).await,
        Err(BackendError::UploadBusy)
    ));
    assert!(matches!(
        b.abort_upload(&key).await,
        Err(BackendError::UploadBusy)
    ));
    drop(up);
    assert_eq!(b.upload_status(&key).await.unwrap(), Some(100_000));

    // Continue from the reported offset, twice.
    let mut up = b.begin_upload(&key, T0 + 10).await.unwrap();
    assert_eq!(up.offset(), 100_000);
    up.write(&data[100_000..250_000]).await.unwrap();
    up.sync().await.unwrap();
    drop(up);
    let mut up = b.begin_upload(&key, T0 + 20).await.unwrap();
    assert_eq!(up.offset(), 250_000);
    up.write(&data[250_000..]).await.unwrap();
    let staged = up.finish(&hash(&data)).await.unwrap();
    assert_eq!((staged.hash(), staged.size()), (hash(&data), 300_000));

    // Staged: not an upload any more, not visible yet.
    assert_eq!(b.upload_status(&key).await.unwrap(), None);
    assert_eq!(b.blob_size(&hash(&data)).await.unwrap(), None);
    assert!(b.stat("doc").await.unwrap().is_none());
    assert_eq!(b.last_seq().await.unwrap(), 0);

    let e = b.commit("doc", staged, "alice", T0 + 30).await.unwrap();
    assert_eq!((e.size, e.hash), (300_000, hash(&data)));
    assert_eq!(read_all(b, &e).await, data);

    // A dropped staged upload never becomes visible.
    let staged = stage_bytes(b, &UploadKey::derive(b"dropped"), b"dropped", T0)
        .await
        .unwrap();
    drop(staged);
    assert_eq!(b.blob_size(&hash(b"dropped")).await.unwrap(), None);

    // Abort discards the parts; the same key then starts from zero.
    let other = UploadKey::derive(b"aborted");
    let mut up = b.begin_upload(&other, T0).await.unwrap();
    up.write(b"partial").await.unwrap();
    drop(up);
    assert!(b.abort_upload(&other).await.unwrap());
    assert!(!b.abort_upload(&other).await.unwrap());
    assert_eq!(b.upload_status(&other).await.unwrap(), None);
    let up = b.begin_upload(&other, T0).await.unwrap();
    assert_eq!(up.offset(), 0);
    drop(up);
    // A fresh key is refused by stage_bytes once it holds parts.
    let mut up = b.begin_upload(&other, T0).await.unwrap();
    up.write(b"x").await.unwrap();
    drop(up);
    assert!(matches!(
        stage_bytes(b, &other, b"y", T0).await,
        Err(BackendError::InvalidArgument(_))
    ));
}

/// A finish whose content does not hash to the expected value is refused; nothing shows.
pub async fn upload_hash_mismatch<B: Backend>(b: &B) {
    let key = UploadKey::derive(b"mismatch");
    let mut up = b.begin_upload(&key, T0).await.unwrap();
    up.write(b"what was sent").await.unwrap();
    drop(up);
    let mut up = b.begin_upload(&key, T0).await.unwrap();
    up.write(b", continued").await.unwrap();
    let claimed = hash(b"what was announced");
    match up.finish(&claimed).await {
        Err(BackendError::HashMismatch { expected, actual }) => {
            assert_eq!(expected, claimed);
            assert_eq!(actual, hash(b"what was sent, continued"));
        }
        other => panic!("finish with a wrong hash: {other:?}"),
    }
    assert_eq!(b.upload_status(&key).await.unwrap(), None);
    assert_eq!(b.blob_size(&claimed).await.unwrap(), None);
    assert_eq!(
        b.blob_size(&hash(b"what was sent, continued"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(b.last_seq().await.unwrap(), 0);
    assert!(b.heads(None, 10).await.unwrap().is_empty());
}

/// Two uploads of the same content under different keys and sources share one blob, which
/// lives until the last version referencing it goes.
pub async fn same_content_stored_once<B: Backend>(b: &B) {
    let data = pattern(10_000, 9);
    let s1 = stage_bytes(b, &UploadKey::derive(b"k1"), &data, T0)
        .await
        .unwrap();
    let s2 = stage_bytes(b, &UploadKey::derive(b"k2"), &data, T0)
        .await
        .unwrap();
    let e1 = b.commit("one", s1, "alice", T0).await.unwrap();
    let e2 = b.commit("two", s2, "bob", T0).await.unwrap();
    assert_eq!(e1.hash, e2.hash);
    assert_eq!(b.blob_size(&e1.hash).await.unwrap(), Some(10_000));
    b.delete("one", "w", T0).await.unwrap();
    assert_eq!(read_all(b, &e2).await, data);
    b.delete("two", "w", T0).await.unwrap();
    assert_eq!(b.blob_size(&e1.hash).await.unwrap(), None);
}

/// Uploads idle since before the cut-off are swept; newer ones and open ones stay.
pub async fn abandoned_uploads_swept<B: Backend>(b: &B) {
    let (old, new, open) = (
        UploadKey::derive(b"old"),
        UploadKey::derive(b"new"),
        UploadKey::derive(b"open"),
    );
    let mut up = b.begin_upload(&old, T0).await.unwrap();
    up.write(b"abandoned").await.unwrap();
    drop(up);
    let mut up = b.begin_upload(&new, T0 + 100).await.unwrap();
    up.write(b"recent").await.unwrap();
    drop(up);
    let mut held = b.begin_upload(&open, T0).await.unwrap();
    held.write(b"in use").await.unwrap();

    assert_eq!(
        b.sweep_uploads(T0).await.unwrap(),
        0,
        "nothing is older than T0"
    );
    assert_eq!(b.sweep_uploads(T0 + 50).await.unwrap(), 1);
    assert_eq!(b.upload_status(&old).await.unwrap(), None);
    assert_eq!(b.upload_status(&new).await.unwrap(), Some(6));
    assert_eq!(b.upload_status(&open).await.unwrap(), Some(6));

    // Resuming counts as activity: `new` begun again at T0 + 200 survives a later cut-off.
    drop(b.begin_upload(&new, T0 + 200).await.unwrap());
    assert_eq!(b.sweep_uploads(T0 + 150).await.unwrap(), 0);
    // The open handle is never swept; it still finishes.
    assert_eq!(b.sweep_uploads(T0 + 1_000).await.unwrap(), 1);
    assert_eq!(b.upload_status(&new).await.unwrap(), None);
    held.write(b"!").await.unwrap();
    let staged = held.finish(&hash(b"in use!")).await.unwrap();
    let e = b.commit("kept", staged, "w", T0).await.unwrap();
    assert_eq!(read_all(b, &e).await, b"in use!");
    // A swept key starts again from zero.
    assert_eq!(b.begin_upload(&old, T0 + 2_000).await.unwrap().offset(), 0);
}

/// Replica commits and deletes apply only if they win; the loser's content is freed.
pub async fn replicas<B: Backend>(b: &B) {
    let stage = |data: &'static [u8], tag: &'static [u8]| async move {
        stage_bytes(b, &UploadKey::derive(tag), data, T0)
            .await
            .unwrap()
    };
    // Unknown source: any version wins; later local commits continue from it.
    let e = b
        .commit_replica("r", stage(b"five", b"r5").await, "peer", T0, 5)
        .await
        .unwrap();
    assert_eq!(e.unwrap().version, 5);
    assert_eq!(put(b, "r", b"local", "me", T0).await.version, 6);
    // A lower version loses, and so does the same pair again.
    assert!(
        b.commit_replica("r", stage(b"old", b"r4").await, "peer", T0, 4)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(b.blob_size(&hash(b"old")).await.unwrap(), None);
    let again = b
        .commit_replica("r", stage(b"local", b"r6").await, "peer", T0, 6)
        .await
        .unwrap();
    assert!(again.is_none(), "an identical copy changes nothing");
    assert_eq!(b.last_seq().await.unwrap(), 2);

    // Same version, greater hash: replaces that version's record and frees the loser.
    let (lo, hi): (&'static [u8], &'static [u8]) = {
        let (x, y): (&'static [u8], &'static [u8]) = (b"alpha", b"beta");
        if hash(x) < hash(y) { (x, y) } else { (y, x) }
    };
    b.commit_replica("s", stage(lo, b"s-lo").await, "p1", T0, 1)
        .await
        .unwrap()
        .unwrap();
    let won = b
        .commit_replica("s", stage(hi, b"s-hi").await, "p2", T0, 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.stat("s").await.unwrap(), Some(won.clone()));
    assert_eq!(b.versions("s").await.unwrap(), vec![won]);
    assert_eq!(b.blob_size(&hash(lo)).await.unwrap(), None);
    assert!(
        b.commit_replica("s", stage(lo, b"s-lo2").await, "p1", T0, 1)
            .await
            .unwrap()
            .is_none()
    );

    // Replica deletes: a tombstone at a version not above the head loses.
    assert!(matches!(
        b.delete_replica("s", 0, "p", T0).await,
        Err(BackendError::InvalidArgument(_))
    ));
    assert!(!b.delete_replica("s", 1, "p", T0).await.unwrap());
    assert!(b.delete_replica("s", 2, "p", T0).await.unwrap());
    let head = b.head("s").await.unwrap().unwrap();
    assert_eq!((head.version, head.deleted), (2, true));
    assert_eq!(b.blob_size(&hash(hi)).await.unwrap(), None);
    // Live content of the tombstone's version beats it (a tombstone counts as hash zero).
    let back = b
        .commit_replica("s", stage(b"revived", b"s2").await, "p", T0, 2)
        .await
        .unwrap();
    assert_eq!(back.unwrap().version, 2);
    // A replica delete of an unknown source wins and leaves a tombstone.
    assert!(b.delete_replica("ghost", 3, "p", T0).await.unwrap());
    assert_eq!(
        b.head("ghost")
            .await
            .unwrap()
            .map(|h| (h.version, h.deleted)),
        Some((3, true))
    );
    assert!(matches!(
        b.commit_replica("s", stage(b"zero", b"s0").await, "p", T0, 0)
            .await,
        Err(BackendError::InvalidArgument(_))
    ));
    let log = b.changes_since(0, 100).await.unwrap();
    assert!(log.changes.iter().all(|c| c.source != "r" || c.seq <= 2));
}

/// Commits racing on one source get distinct, consecutive versions and each is logged once.
pub async fn concurrent_commits<B: Backend>(b: &B) {
    const N: u64 = 8;
    let staged = join_all(
        (0..N)
            .map(|i| {
                let key = UploadKey::derive(&i.to_be_bytes());
                async move { stage_bytes(b, &key, &i.to_be_bytes(), T0).await.unwrap() }
            })
            .collect(),
    )
    .await;
    let entries = join_all(
        staged
            .into_iter()
            .map(|s| b.commit("raced", s, "w", T0))
            .collect(),
    )
    .await;
    let mut versions: Vec<u64> = entries.into_iter().map(|e| e.unwrap().version).collect();
    versions.sort_unstable();
    assert_eq!(versions, (1..=N).collect::<Vec<_>>());
    assert_eq!(b.last_seq().await.unwrap(), N);
    assert_eq!(b.stat("raced").await.unwrap().unwrap().version, N);
    assert_eq!(b.versions("raced").await.unwrap().len(), 2);
}
