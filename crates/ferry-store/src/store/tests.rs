use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Barrier};

use super::*;
use crate::Usage;

pub(super) fn open_store(dir: &Path, keep_versions: u32) -> Store {
    Store::open(
        dir,
        StoreOptions {
            keep_versions,
            ..StoreOptions::default()
        },
    )
    .unwrap()
}

pub(super) fn stage(store: &Store, data: &[u8]) -> StagedBlob {
    let mut w = store.begin_put().unwrap();
    w.write_chunk(data).unwrap();
    w.finish().unwrap()
}

pub(super) fn put(store: &Store, source: &str, data: &[u8]) -> Entry {
    store
        .commit(source, stage(store, data), "tester", 1_700_000_000)
        .unwrap()
}

fn read_all(mut file: impl Read) -> Vec<u8> {
    let mut out = Vec::new();
    file.read_to_end(&mut out).unwrap();
    out
}

pub(super) fn fetch(store: &Store, source: &str, version: Option<u64>) -> Option<(Entry, Vec<u8>)> {
    store
        .open_blob(source, version)
        .unwrap()
        .map(|(entry, file)| (entry, read_all(file)))
}

fn blob_path(store: &Store, data: &[u8]) -> PathBuf {
    blob_location(&store.blobs, blake3::hash(data).as_bytes()).1
}

fn dir_entries(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

pub(super) fn blob_files(store: &Store) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for sub in dir_entries(&store.blobs) {
        files.extend(dir_entries(&sub));
    }
    files.sort();
    files
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Checks the index against itself and against `blobs/`: reference counts equal the number
/// of version records per hash, every referenced blob file exists with the right size, every
/// blob file is referenced, and every live current record has its version record.
pub(super) fn assert_consistent(store: &Store) {
    let txn = store.db.begin_read().unwrap();
    let current = txn.open_table(CURRENT).unwrap();
    let versions = txn.open_table(VERSIONS).unwrap();
    let refs = txn.open_table(BLOB_REFS).unwrap();

    let mut counted: HashMap<Hash, u64> = HashMap::new();
    let mut sizes: HashMap<Hash, u64> = HashMap::new();
    for item in versions.iter().unwrap() {
        let (k, v) = item.unwrap();
        let (_, version) = k.value();
        let rec = decode_version(v.value(), version).unwrap();
        *counted.entry(rec.hash).or_default() += 1;
        sizes.insert(rec.hash, rec.size);
    }
    let mut stored: HashMap<Hash, u64> = HashMap::new();
    for item in refs.iter().unwrap() {
        let (k, v) = item.unwrap();
        stored.insert(*k.value(), v.value());
    }
    assert_eq!(
        counted, stored,
        "reference counts disagree with version records"
    );

    for (hash, size) in &sizes {
        let (_, path) = blob_location(&store.blobs, hash);
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            *size,
            "{}",
            path.display()
        );
    }
    let files = blob_files(store);
    assert_eq!(files.len(), stored.len(), "blob files on disk: {files:?}");

    for item in current.iter().unwrap() {
        let (k, v) = item.unwrap();
        let rec = Record::decode(v.value()).unwrap();
        if !rec.deleted {
            let vrec = versions.get((k.value(), rec.version)).unwrap().unwrap();
            assert_eq!(decode_version(vrec.value(), rec.version).unwrap(), rec);
        }
    }
}

#[test]
fn store_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
    assert_send_sync::<BlobWriter>();
    assert_send_sync::<StagedBlob>();
}

#[test]
fn put_commit_stat_open_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let store = open_store(&root, 3);
    assert_eq!(mode(&root), 0o700);
    assert_eq!(mode(&root.join("blobs")), 0o700);
    assert_eq!(mode(&root.join("tmp")), 0o700);
    assert_eq!(mode(&root.join("index.redb")), 0o600);

    let content = b"hello, ferry\n".repeat(1000);
    let mut w = store.begin_put().unwrap();
    assert!(w.is_empty());
    w.write_chunk(&content[..5000]).unwrap();
    w.write_all(&content[5000..]).unwrap(); // through io::Write
    w.flush().unwrap();
    assert_eq!(w.len(), content.len() as u64);
    let staged = w.finish().unwrap();
    assert_eq!(staged.hash(), *blake3::hash(&content).as_bytes());
    assert_eq!(staged.size(), content.len() as u64);

    let entry = store
        .commit("reports/2026/q3.csv", staged, "alice", 1_760_000_000)
        .unwrap();
    assert_eq!(
        entry,
        Entry {
            source: "reports/2026/q3.csv".into(),
            version: 1,
            size: content.len() as u64,
            hash: *blake3::hash(&content).as_bytes(),
            modified: 1_760_000_000,
            by: "alice".into(),
            meta: Meta::default(),
        }
    );
    assert_eq!(
        store.stat("reports/2026/q3.csv").unwrap(),
        Some(entry.clone())
    );
    assert_eq!(store.stat("reports/2026/q4.csv").unwrap(), None);
    assert!(
        store
            .open_blob("reports/2026/q4.csv", None)
            .unwrap()
            .is_none()
    );

    let (e, data) = fetch(&store, "reports/2026/q3.csv", None).unwrap();
    assert_eq!(e, entry);
    assert_eq!(data, content);
    assert_eq!(blake3::hash(&data).as_bytes(), &entry.hash);
    let (e, data) = fetch(&store, "reports/2026/q3.csv", Some(1)).unwrap();
    assert_eq!((e, data), (entry.clone(), content.clone()));
    assert!(
        store
            .open_blob("reports/2026/q3.csv", Some(2))
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .open_blob("reports/2026/q3.csv", Some(0))
            .unwrap()
            .is_none()
    );

    // Layout: blobs/ab/cdef… named by the hex hash, read-only; tmp/ empty.
    let hex = blake3::hash(&content).to_hex();
    let path = root.join("blobs").join(&hex[..2]).join(&hex[2..]);
    assert_eq!(fs::read(&path).unwrap(), content);
    assert_eq!(mode(&path), 0o400);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    assert!(dir_entries(&store.tmp).is_empty());
    assert_consistent(&store);

    // Survives a reopen.
    drop(store);
    let store = open_store(&root, 3);
    assert_eq!(store.stat("reports/2026/q3.csv").unwrap(), Some(entry));
    assert_eq!(
        fetch(&store, "reports/2026/q3.csv", None).unwrap().1,
        content
    );
    assert_consistent(&store);
}

#[test]
fn empty_blob_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(tmp.path(), 3);
    let entry = put(&store, "empty", b"");
    assert_eq!(entry.size, 0);
    assert_eq!(&entry.hash, blake3::hash(b"").as_bytes());
    assert_eq!(fetch(&store, "empty", None).unwrap().1, b"");
    assert_consistent(&store);
}

#[test]
fn versions_increase_and_old_ones_stay_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(tmp.path(), 3);
    for (i, data) in [b"one".as_slice(), b"two", b"three"].iter().enumerate() {
        let e = put(&store, "s", data);
        assert_eq!(e.version, i as u64 + 1);
    }
    assert_eq!(store.stat("s").unwrap().unwrap().version, 3);
    assert_eq!(fetch(&store, "s", None).unwrap().1, b"three");
    assert_eq!(fetch(&store, "s", Some(1)).unwrap().1, b"one");
    assert_eq!(fetch(&store, "s", Some(2)).unwrap().1, b"two");
    // Another source has its own counter.
    assert_eq!(put(&store, "t", b"one").version, 1);
    assert_consistent(&store);
}

#[test]
fn keep_versions_prunes_versions_and_blob_files() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(tmp.path(), 2);
    put(&store, "s", b"v1");
    put(&store, "s", b"v2");
    assert!(blob_path(&store, b"v1").exists());
    put(&store, "s", b"v3");
    // v1 is beyond keep_versions = 2: its record and its file are gone.
    assert!(store.open_blob("s", Some(1)).unwrap().is_none());
    assert!(!blob_path(&store, b"v1").exists());
    assert_eq!(fetch(&store, "s", Some(2)).unwrap().1, b"v2");
    assert_eq!(fetch(&store, "s", Some(3)).unwrap().1, b"v3");
    put(&store, "s", b"v4");
    assert!(!blob_path(&store, b"v2").exists());
    assert_eq!(blob_files(&store).len(), 2);
    assert_consistent(&store);
}

#[test]
fn pruning_keeps_a_blob_another_source_references() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(tmp.path(), 1);
    put(&store, "x", b"shared");
    put(&store, "y", b"shared");
    assert_eq!(blob_files(&store).len(), 1);
    put(&store, "x", b"x2"); // prunes x v1; "shared" is still y's
    assert!(blob_path(&store, b"shared").exists());
    assert_eq!(fetch(&store, "y", None).unwrap().1, b"shared");
    assert_consistent(&store);
    put(&store, "y", b"y2"); // now nobody references it
    assert!(!blob_path(&store, b"shared").exists());
    assert_consistent(&store);
}

#[test]
fn keep_versions_zero_means_one() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(tmp.path(), 0);
    put(&store, "s", b"a");
    put(&store, "s", b"b");
    assert!(store.open_blob("s", Some(1)).unwrap().is_none());
    assert_eq!(fetch(&store, "s", None).unwrap().1, b"b");
    assert_consistent(&store);
}

#[test]
fn identical_content_is_stored_once() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(tmp.path(), 3);
    let a = put(&store, "a", b"same bytes");
    let b = put(&store, "b", b"same bytes");
    let a2 = put(&store, "a", b"same bytes");
    assert_eq!(a.hash, b.hash);
    assert_eq!(a2.version, 2);
    assert_eq!(blob_files(&store), vec![blob_path(&store, b"same bytes")]);
    assert!(
        dir_entries(&store.tmp).is_empty(),
        "duplicate upload's temp file left"
    );
    {
        let txn = store.db.begin_read().unwrap();
        let refs = txn.open_table(BLOB_REFS).unwrap();
        assert_eq!(refs.get(&a.hash).unwrap().unwrap().value(), 3);
    }
    assert_consistent(&store);
}

#[test]
fn delete_records_tombstone_and_counter_continues() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(tmp.path(), 3);
    put(&store, "s", b"first");
    put(&store, "s", b"second");
    put(&store, "keep", b"second");
    assert_eq!(store.delete("s", "bob", 5).unwrap(), Some(3));
    assert_eq!(store.stat("s").unwrap(), None);
    assert!(store.open_blob("s", None).unwrap().is_none());
    assert!(store.open_blob("s", Some(1)).unwrap().is_none());
    assert!(store.open_blob("s", Some(2)).unwrap().is_none());
    assert!(store.open_blob("s", Some(3)).unwrap().is_none());
    assert!(!blob_path(&store, b"first").exists());
    assert!(
        blob_path(&store, b"second").exists(),
        "still referenced by \"keep\""
    );
    assert_eq!(store.list("", None, 10).unwrap().len(), 1);
    // heads() shows the tombstone, in name order, and pages like list().
    let heads = store.heads(None, 10).unwrap();
    let names: Vec<_> = heads
        .iter()
        .map(|(n, h)| (n.as_str(), h.version, h.deleted))
        .collect();
    assert_eq!(names, [("keep", 1, false), ("s", 3, true)]);
    assert_eq!(heads[1].1.key(), (3, [0; 32]));
    assert_eq!(store.heads(Some("keep"), 10).unwrap().len(), 1);
    assert_eq!(store.heads(None, 1).unwrap().len(), 1);
    assert_consistent(&store);

    // Deleting again, or deleting what never existed, is None.
    assert_eq!(store.delete("s", "bob", 6).unwrap(), None);
    assert_eq!(store.delete("never", "bob", 6).unwrap(), None);

    let e = put(&store, "s", b"third");
    assert_eq!(e.version, 4);
    assert_eq!(fetch(&store, "s", Some(4)).unwrap().1, b"third");
    assert!(store.open_blob("s", Some(3)).unwrap().is_none());

    // The counter also survives a reopen.
    drop(store);
    let store = open_store(tmp.path(), 3);
    assert_eq!(store.delete("s", "bob", 7).unwrap(), Some(5));
    assert_eq!(put(&store, "s", b"fourth").version, 6);
    assert_consistent(&store);
}

#[test]
fn abandoned_uploads_leave_tmp_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(tmp.path(), 3);

    let mut w = store.begin_put().unwrap();
    w.write_chunk(b"half an upload").unwrap();
    assert_eq!(dir_entries(&store.tmp).len(), 1);
    drop(w);
    assert!(dir_entries(&store.tmp).is_empty());

    let staged = stage(&store, b"finished, never committed");
    assert_eq!(dir_entries(&store.tmp).len(), 1);
    drop(staged);
    assert!(dir_entries(&store.tmp).is_empty());

    // A commit that fails validation drops its staged blob too.
    let staged = stage(&store, b"bad principal");
    let err = store
        .commit("s", staged, &"p".repeat(70_000), 1)
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidArgument(_)), "{err}");
    assert!(dir_entries(&store.tmp).is_empty());
    assert!(blob_files(&store).is_empty());
    assert_eq!(store.stat("s").unwrap(), None);
}

#[test]
fn reopen_removes_orphan_blobs_and_stale_tmp_files() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(tmp.path(), 3);
    put(&store, "kept", b"kept content");
    let blobs = store.blobs.clone();
    let tmp_dir = store.tmp.clone();
    drop(store);

    // A crash between rename and index commit: a complete blob file nobody references.
    let orphan = blob_location(&blobs, blake3::hash(b"orphan").as_bytes());
    fsutil::create_dir(&orphan.0).unwrap();
    fs::write(&orphan.1, b"orphan").unwrap();
    // One sharing the subfolder of the kept blob.
    let kept = blob_location(&blobs, blake3::hash(b"kept content").as_bytes());
    let mut sibling = *blake3::hash(b"kept content").as_bytes();
    sibling[31] ^= 1;
    let sibling = blob_location(&blobs, &sibling).1;
    fs::write(&sibling, b"x").unwrap();
    // Interrupted uploads.
    fs::write(tmp_dir.join("stale.part"), b"partial").unwrap();
    fs::create_dir(tmp_dir.join("stale-dir")).unwrap();
    fs::write(tmp_dir.join("stale-dir").join("f"), b"partial").unwrap();
    // Something that is not a blob: left alone.
    let stray = blobs.join("README");
    fs::write(&stray, b"not a blob").unwrap();

    let store = open_store(tmp.path(), 3);
    assert!(!orphan.1.exists());
    assert!(!sibling.exists());
    assert!(kept.1.exists());
    assert!(dir_entries(&tmp_dir).is_empty());
    assert!(stray.exists());
    assert_eq!(fetch(&store, "kept", None).unwrap().1, b"kept content");
    fs::remove_file(&stray).unwrap();
    assert_consistent(&store);
}

#[test]
fn second_open_of_a_live_store_fails_without_sweeping() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(tmp.path(), 3);
    let mut w = store.begin_put().unwrap();
    w.write_chunk(b"in flight").unwrap();
    let err = Store::open(tmp.path(), StoreOptions::default()).unwrap_err();
    assert!(matches!(err, StoreError::InUse), "{err}");
    // The first store's upload was not swept away.
    let staged = w.finish().unwrap();
    assert_eq!(store.commit("s", staged, "a", 1).unwrap().version, 1);
    assert_eq!(fetch(&store, "s", None).unwrap().1, b"in flight");
}

#[test]
fn list_filters_by_prefix_and_pages() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(tmp.path(), 3);
    for name in ["b/1", "a/2", "ab", "a/1", "a", "a/3", "a/gone", "c"] {
        put(&store, name, name.as_bytes());
    }
    store.delete("a/gone", "x", 1).unwrap();
    let names = |v: Vec<Entry>| v.into_iter().map(|e| e.source).collect::<Vec<_>>();

    assert_eq!(
        names(store.list("a/", None, 10).unwrap()),
        ["a/1", "a/2", "a/3"]
    );
    assert_eq!(
        names(store.list("a", None, 10).unwrap()),
        ["a", "a/1", "a/2", "a/3", "ab"]
    );
    assert_eq!(
        names(store.list("", None, 100).unwrap()),
        ["a", "a/1", "a/2", "a/3", "ab", "b/1", "c"]
    );
    assert!(store.list("z", None, 10).unwrap().is_empty());
    assert!(store.list("a/", None, 0).unwrap().is_empty());

    // Paging with `after` and `limit`.
    let page1 = store.list("a/", None, 2).unwrap();
    assert_eq!(names(page1.clone()), ["a/1", "a/2"]);
    let page2 = store.list("a/", Some(&page1[1].source), 2).unwrap();
    assert_eq!(names(page2.clone()), ["a/3"]); // a/gone is a tombstone
    assert!(store.list("a/", Some("a/3"), 2).unwrap().is_empty());
    // `after` need not be an existing name, nor start with the prefix.
    assert_eq!(
        names(store.list("a/", Some("a/10"), 10).unwrap()),
        ["a/2", "a/3"]
    );
    assert_eq!(names(store.list("b", Some("a"), 10).unwrap()), ["b/1"]);
    assert!(store.list("a", Some("b"), 10).unwrap().is_empty());
    assert_eq!(names(store.list("a", Some("a"), 1).unwrap()), ["a/1"]);

    // Entries are the current ones.
    put(&store, "a/1", b"newer");
    let e = &store.list("a/1", None, 1).unwrap()[0];
    assert_eq!((e.version, e.size), (2, 5));
    assert_eq!(Some(e.clone()), store.stat("a/1").unwrap());
}

#[test]
fn open_file_survives_prune_of_its_version() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(tmp.path(), 1);
    let old = vec![7u8; 300_000];
    put(&store, "s", &old);
    let (entry, mut file) = store.open_blob("s", None).unwrap().unwrap();
    assert_eq!(entry.version, 1);
    let mut head = [0u8; 10];
    file.read_exact(&mut head).unwrap();

    put(&store, "s", b"replacement"); // prunes v1 and unlinks its blob file
    assert!(!blob_path(&store, &old).exists());
    assert!(store.open_blob("s", Some(1)).unwrap().is_none());

    let mut rest = Vec::new();
    file.read_to_end(&mut rest).unwrap();
    assert_eq!(head.len() + rest.len(), old.len());
    assert!(rest.iter().all(|&b| b == 7));
    assert_consistent(&store);
}

/// A prune that lands between `open_blob`'s lookup and its file open must wait for the open
/// (without the lock, the file would be gone and `open_blob` would fail).
#[test]
fn prune_cannot_delete_between_lookup_and_open() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(open_store(tmp.path(), 1));
    let old = vec![3u8; 100_000];
    put(&store, "s", &old);

    let (tx, rx) = std::sync::mpsc::channel();
    let other = Arc::clone(&store);
    *store.before_blob_open.lock().unwrap() = Some(Box::new(move || {
        let pruner = std::thread::spawn(move || put(&other, "s", b"new"));
        // Long enough for the commit to finish, were it not held off by the lock.
        std::thread::sleep(std::time::Duration::from_millis(300));
        tx.send(pruner).unwrap();
    }));
    let (entry, file) = store.open_blob("s", None).unwrap().unwrap();
    let new = rx.recv().unwrap().join().unwrap();
    assert_eq!((entry.version, new.version), (1, 2));
    assert!(!blob_path(&store, &old).exists(), "pruned after the open");
    assert_eq!(read_all(file), old);
    assert_consistent(&store);
}

#[test]
fn concurrent_commits_to_one_source_get_distinct_versions() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 25;
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(open_store(tmp.path(), 3));
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = Arc::clone(&store);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let mut mine = Vec::new();
                for i in 0..PER_THREAD {
                    let data = format!("thread {t} commit {i}");
                    let staged = stage(&store, data.as_bytes());
                    let e = store
                        .commit("hot", staged, &format!("t{t}"), i as u64)
                        .unwrap();
                    mine.push(e.version);
                }
                mine
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        let mine = h.join().unwrap();
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "{mine:?}");
        all.extend(mine);
    }
    all.sort_unstable();
    let expected: Vec<u64> = (1..=(THREADS * PER_THREAD) as u64).collect();
    assert_eq!(all, expected);
    assert_eq!(
        store.stat("hot").unwrap().unwrap().version,
        (THREADS * PER_THREAD) as u64
    );
    assert_eq!(blob_files(&store).len(), 3);
    assert!(dir_entries(&store.tmp).is_empty());
    assert_consistent(&store);
}

/// Commits that reuse a blob race with commits that free it, while readers open blobs.
/// Every reader must get a complete file, and no referenced blob may be lost.
#[test]
fn shared_blobs_survive_concurrent_commit_prune_and_read() {
    const WRITERS: usize = 4;
    const ROUNDS: usize = 30;
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(open_store(tmp.path(), 1));
    let contents: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 10_000 + usize::from(i)]).collect();
    let contents = Arc::new(contents);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));

    let reader = {
        let (store, contents, done) = (store.clone(), contents.clone(), done.clone());
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !done.load(Ordering::Relaxed) {
                for w in 0..WRITERS {
                    if let Some((entry, file)) = store.open_blob(&format!("w{w}"), None).unwrap() {
                        let data = read_all(file);
                        assert_eq!(blake3::hash(&data).as_bytes(), &entry.hash);
                        assert!(contents.contains(&data));
                        reads += 1;
                    }
                }
            }
            reads
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (store, contents) = (store.clone(), contents.clone());
            std::thread::spawn(move || {
                for round in 0..ROUNDS {
                    let data = &contents[(w + round) % contents.len()];
                    let staged = stage(&store, data);
                    store.commit(&format!("w{w}"), staged, "w", 0).unwrap();
                    if round % 7 == 6 {
                        store.delete(&format!("w{w}"), "w", 0).unwrap();
                    }
                }
            })
        })
        .collect();
    for h in writers {
        h.join().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    for w in 0..WRITERS {
        let (entry, data) = fetch(&store, &format!("w{w}"), None).unwrap();
        assert_eq!(blake3::hash(&data).as_bytes(), &entry.hash);
    }
    assert!(dir_entries(&store.tmp).is_empty());
    assert_consistent(&store);
}

#[test]
fn corrupt_records_are_errors_not_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(tmp.path(), 3);
    put(&store, "good", b"fine");
    put(&store, "bad", b"soon broken");
    put(&store, "hist", b"h1");
    put(&store, "hist", b"h2");

    // Garbage written straight into the tables through redb.
    {
        let txn = store.db.begin_write().unwrap();
        {
            let mut current = txn.open_table(CURRENT).unwrap();
            current
                .insert("bad".as_bytes(), [0xde, 0xad, 0xbe, 0xef].as_slice())
                .unwrap();
            let mut versions = txn.open_table(VERSIONS).unwrap();
            versions
                .insert(("hist".as_bytes(), 1u64), [0u8; 3].as_slice())
                .unwrap();
            // A well-formed record under the wrong version key.
            let mut rec = Record::decode(
                versions
                    .get(("hist".as_bytes(), 2u64))
                    .unwrap()
                    .unwrap()
                    .value(),
            )
            .unwrap();
            rec.version = 9;
            versions
                .insert(("hist".as_bytes(), 2u64), rec.encode().unwrap().as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }

    let is_corrupt = |r: Result<_, StoreError>| matches!(r, Err(StoreError::Corrupt(_)));
    assert!(is_corrupt(store.stat("bad").map(|_| ())));
    assert!(is_corrupt(store.open_blob("bad", None).map(|_| ())));
    assert!(is_corrupt(store.list("", None, 10).map(|_| ())));
    assert!(is_corrupt(store.list("b", None, 10).map(|_| ())));
    assert!(is_corrupt(store.delete("bad", "x", 1).map(|_| ())));
    assert!(is_corrupt(
        store
            .commit("bad", stage(&store, b"new"), "x", 1)
            .map(|_| ())
    ));
    assert!(is_corrupt(store.open_blob("hist", Some(1)).map(|_| ())));
    assert!(is_corrupt(store.open_blob("hist", Some(2)).map(|_| ())));
    // Version 3 fits in keep_versions = 3; version 4 must prune the broken version 1, which
    // fails the whole transaction: the current version stays 3.
    assert_eq!(put(&store, "hist", b"h3").version, 3);
    assert!(is_corrupt(
        store
            .commit("hist", stage(&store, b"h4"), "x", 1)
            .map(|_| ())
    ));
    assert_eq!(store.stat("hist").unwrap().unwrap().version, 3);
    assert!(dir_entries(&store.tmp).is_empty());

    // The rest of the store keeps working.
    assert_eq!(fetch(&store, "good", None).unwrap().1, b"fine");
    assert_eq!(store.list("g", None, 10).unwrap().len(), 1);
    assert_eq!(put(&store, "other", b"ok").version, 1);

    // And after a reopen (the failed commits' placed blobs are swept as orphans).
    drop(store);
    let store = open_store(tmp.path(), 3);
    assert!(is_corrupt(store.stat("bad").map(|_| ())));
    assert!(!blob_path(&store, b"new").exists());
    assert!(!blob_path(&store, b"h4").exists());
    assert!(blob_path(&store, b"h3").exists());
}

#[test]
fn corrupt_blob_file_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(tmp.path(), 3);
    put(&store, "s", b"some content");
    let path = blob_path(&store, b"some content");
    fs::remove_file(&path).unwrap();
    let err = store.open_blob("s", None).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
    fs::write(&path, b"short").unwrap();
    let err = store.open_blob("s", None).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
    // A commit of the same content repairs a wrong-sized file instead of trusting it.
    put(&store, "t", b"some content");
    assert_eq!(fetch(&store, "s", None).unwrap().1, b"some content");
}

#[test]
fn unsupported_index_format_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(tmp.path(), 3);
    {
        let txn = store.db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(FORMAT_KEY, 99)
            .unwrap();
        txn.commit().unwrap();
    }
    drop(store);
    let err = Store::open(tmp.path(), StoreOptions::default()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
}

#[test]
fn streamed_64_mib_blob_round_trips() {
    const CHUNK: usize = 256 * 1024;
    const CHUNKS: usize = 256; // 64 MiB
    fn chunk(i: usize, buf: &mut [u8]) {
        // Deterministic, varying content: a cheap xorshift stream seeded by the chunk number.
        let mut x = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for word in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes());
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(tmp.path(), 3);
    let mut buf = vec![0u8; CHUNK];
    let mut expected = blake3::Hasher::new();
    let mut w = store.begin_put().unwrap();
    for i in 0..CHUNKS {
        chunk(i, &mut buf);
        w.write_chunk(&buf).unwrap();
        expected.update(&buf);
    }
    assert_eq!(w.len(), (CHUNK * CHUNKS) as u64);
    let staged = w.finish().unwrap();
    assert_eq!(staged.hash(), *expected.finalize().as_bytes());
    let entry = store.commit("big.bin", staged, "a", 1).unwrap();
    assert_eq!(entry.size, 64 * 1024 * 1024);

    let (e, mut file) = store.open_blob("big.bin", None).unwrap().unwrap();
    assert_eq!(e, entry);
    let mut got = vec![0u8; CHUNK];
    let mut hasher = blake3::Hasher::new();
    for i in 0..CHUNKS {
        file.read_exact(&mut got).unwrap();
        chunk(i, &mut buf);
        assert!(got == buf, "chunk {i} differs");
        hasher.update(&got);
    }
    assert_eq!(
        file.read(&mut got).unwrap(),
        0,
        "file is longer than written"
    );
    assert_eq!(hasher.finalize().as_bytes(), &entry.hash);
    assert!(dir_entries(&store.tmp).is_empty());
    // Memory does not grow with blob size: the whole test process (all tests, run in
    // parallel) peaks far below the 64 MiB that buffering the blob once would take. Measured
    // at about 8 MiB. Linux only.
    if let Some(peak_kib) = peak_rss_kib() {
        assert!(peak_kib < 32 * 1024, "peak RSS {peak_kib} KiB");
    }
}

/// The process's peak resident set size (`VmHWM`), where `/proc` has it.
fn peak_rss_kib() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn a_format_2_index_is_upgraded_with_its_usage_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(tmp.path(), 3);
    put(&store, "a", b"12345");
    put(&store, "a", b"123");
    put(&store, "b", b"1");
    let by = store.stat("a").unwrap().unwrap().by;
    // Make it what a format-2 binary wrote: no usage table.
    {
        let txn = store.db.begin_write().unwrap();
        txn.delete_table(USAGE).unwrap();
        txn.open_table(META).unwrap().insert(FORMAT_KEY, 2).unwrap();
        txn.commit().unwrap();
    }
    drop(store);
    let store = open_store(tmp.path(), 3);
    assert_eq!(
        store.usage(Some(&by)).unwrap(),
        Usage {
            bytes: 9,
            versions: 3
        }
    );
    assert_eq!(
        store.usage(None).unwrap(),
        Usage {
            bytes: 9,
            versions: 3
        }
    );
    let txn = store.db.begin_read().unwrap();
    let format = txn
        .open_table(META)
        .unwrap()
        .get(FORMAT_KEY)
        .unwrap()
        .unwrap()
        .value();
    assert_eq!(format, FORMAT_VERSION);
    drop(txn);
    // And it keeps counting from there.
    store.delete("a", &by, 0).unwrap();
    assert_eq!(
        store.usage(Some(&by)).unwrap(),
        Usage {
            bytes: 1,
            versions: 1
        }
    );
}
