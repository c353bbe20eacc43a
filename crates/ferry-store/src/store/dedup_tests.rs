//! Deduplication across sources (store/dedup.rs): contents put whole under different
//! sources end up sharing their chunks on disk, read back byte for byte, survive deletes and
//! prunes of each other, and a kill anywhere in the pass loses nothing.
//!
//! Contents are generated and read back in pieces: a test beside these measures the peak
//! memory of the whole test process.

use std::io::{BufRead, Read, Write};
use std::path::Path;

use redb::ReadableTableMetadata;

use super::tests::{open_store, put};
use super::*;

const MIB: u64 = 1 << 20;

/// Stages `size` bytes of the BLAKE3 XOF of `label`, with the byte at each offset of
/// `edits` flipped, without holding them in memory. Returns it and its hash.
fn stage_noise(store: &Store, label: &str, size: u64, edits: &[u64]) -> StagedBlob {
    let mut xof = blake3::Hasher::new()
        .update(label.as_bytes())
        .finalize_xof();
    let mut w = store.begin_put().unwrap();
    let mut buf = vec![0u8; MIB as usize];
    let mut at = 0u64;
    while at < size {
        let n = (size - at).min(MIB) as usize;
        xof.fill(&mut buf[..n]);
        for &e in edits {
            if (at..at + n as u64).contains(&e) {
                buf[(e - at) as usize] ^= 0xa5;
            }
        }
        w.write_chunk(&buf[..n]).unwrap();
        at += n as u64;
    }
    w.finish().unwrap()
}

fn put_noise(store: &Store, source: &str, label: &str, size: u64, edits: &[u64]) -> Entry {
    let staged = stage_noise(store, label, size, edits);
    store
        .commit(source, staged, "tester", 1_700_000_000)
        .unwrap()
}

/// The BLAKE3 of what a version reads back as.
fn read_hash(store: &Store, source: &str, version: Option<u64>) -> Hash {
    let (_, mut content) = store.open_blob(source, version).unwrap().unwrap();
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = content.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    *h.finalize().as_bytes()
}

/// Bytes of every file under `dir`, recursively.
fn folder_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for item in fs::read_dir(dir).unwrap() {
        let item = item.unwrap();
        let meta = item.metadata().unwrap();
        total += if meta.is_dir() {
            folder_bytes(&item.path())
        } else {
            meta.len()
        };
    }
    total
}

/// Every blob file is needed, every chunk index entry points into a needed file, and the
/// chunk index is empty when nothing is stored.
fn assert_index_consistent(store: &Store) {
    let txn = store.db.begin_read().unwrap();
    for sub in fs::read_dir(&store.blobs).unwrap() {
        let sub = sub.unwrap();
        for f in fs::read_dir(sub.path()).unwrap() {
            let f = f.unwrap();
            let hash = parse_blob_name(
                sub.file_name().to_str().unwrap(),
                f.file_name().to_str().unwrap(),
            )
            .unwrap();
            assert!(
                packs::file_needed(&txn, &hash).unwrap(),
                "orphan {}",
                hex(&hash)
            );
        }
    }
    let chunks = txn.open_table(chunk_index::CHUNKS).unwrap();
    for item in chunks.iter().unwrap() {
        let (k, _) = item.unwrap();
        let place = chunk_index::lookup(&chunks, k.value()).unwrap().unwrap();
        assert!(
            packs::file_needed(&txn, &place.file).unwrap(),
            "a chunk points into unneeded file {}",
            hex(&place.file)
        );
        let (_, path) = blob_location(&store.blobs, &place.file);
        assert!(path.exists(), "a chunk points into a missing file");
    }
    if txn.open_table(BLOB_REFS).unwrap().len().unwrap() == 0 {
        assert_eq!(chunks.len().unwrap(), 0, "chunk index left behind");
        let files = txn.open_table(chunk_index::FILE_CHUNKS).unwrap();
        assert_eq!(files.len().unwrap(), 0, "file chunk lists left behind");
    }
}

#[test]
fn two_sources_holding_64_mib_that_differ_by_small_edits_take_little_more_than_one_copy() {
    let dir = tempfile::tempdir().unwrap();
    let size = 64 * MIB;
    let edits = [1_000, 20 * MIB + 7, 50 * MIB + 333];
    let (a, b) = {
        let store = open_store(dir.path(), 3);
        let a = put_noise(&store, "a/file", "dedup 64", size, &[]);
        // The put itself does nothing more than before: the content waits, whole.
        assert_eq!(store.dedup_pending().unwrap(), 1);
        assert_eq!(
            store.dedup_pass(10).unwrap(),
            DedupReport {
                examined: 1,
                rewritten: 0,
                saved: 0
            },
            "the first copy stays whole"
        );
        let b = put_noise(&store, "b/file", "dedup 64", size, &edits);
        assert_ne!(a.hash, b.hash);
        let before = folder_bytes(dir.path());
        assert!(before >= 2 * size, "two whole copies: {before}");
        let report = store.dedup_pass(10).unwrap();
        assert_eq!((report.examined, report.rewritten), (1, 1), "{report:?}");
        assert!(report.saved >= size - 2 * MIB, "{report:?}");
        assert_eq!(store.dedup_pending().unwrap(), 0);
        assert_eq!(read_hash(&store, "a/file", None), a.hash);
        assert_eq!(read_hash(&store, "b/file", None), b.hash);
        assert_index_consistent(&store);
        (a, b)
    };
    // Each edit changes one or two chunks of at most 256 KiB; the index adds a little.
    let (blobs, _) = super::delta_tests::blob_usage(dir.path());
    assert!(
        blobs <= size + 3 * 512 * 1024,
        "{blobs} bytes of blob files for two copies of {size}"
    );
    let total = folder_bytes(dir.path());
    eprintln!(
        "two copies of {size} bytes: {blobs} bytes of blob files, {total} in the store folder"
    );
    assert!(
        total <= size + 8 * MIB,
        "the store folder takes {total} bytes for two copies of {size}"
    );
    // Across a reopen (which sweeps what it finds unneeded): both intact, nothing freed.
    let store = open_store(dir.path(), 3);
    assert_eq!(read_hash(&store, "a/file", None), a.hash);
    assert_eq!(read_hash(&store, "b/file", None), b.hash);
    assert_eq!(super::delta_tests::blob_usage(dir.path()).0, blobs);
    assert_index_consistent(&store);
    // The rewritten content is a base for deltas like any other: its chunk list is its own.
    let chunks = store.chunks(&b.hash).unwrap().unwrap();
    assert_eq!(
        chunks.iter().map(|c| u64::from(c.len)).sum::<u64>(),
        size,
        "chunk list of the rewritten content"
    );
}

/// Two sources sharing chunks after a pass, and a store to check them in.
fn shared_pair(dir: &Path, keep: u32) -> (Store, Entry, Entry) {
    let store = open_store(dir, keep);
    let a = put_noise(&store, "a", "dedup pair", 8 * MIB, &[]);
    store.dedup_pass(10).unwrap();
    let b = put_noise(&store, "b", "dedup pair", 8 * MIB, &[3 * MIB]);
    // Its chunks asked for before the pass (as a delta against it would): the index then
    // points into its own file, which the rewrite makes unneeded.
    assert!(store.chunks(&b.hash).unwrap().unwrap().len() > 8);
    let report = store.dedup_pass(10).unwrap();
    assert_eq!(report.rewritten, 1, "{report:?}");
    assert_index_consistent(&store);
    (store, a, b)
}

#[test]
fn deleting_or_pruning_one_source_keeps_the_other_and_frees_what_nothing_uses() {
    // The first copy deleted: its file stays for the second, which reads back whole.
    let dir = tempfile::tempdir().unwrap();
    let (store, _, b) = shared_pair(dir.path(), 3);
    let (shared, _) = super::delta_tests::blob_usage(dir.path());
    store.delete("a", "tester", 1).unwrap();
    assert_eq!(read_hash(&store, "b", None), b.hash);
    assert_eq!(super::delta_tests::blob_usage(dir.path()).0, shared);
    assert_index_consistent(&store);
    drop(store);
    let store = open_store(dir.path(), 3);
    assert_eq!(read_hash(&store, "b", None), b.hash);
    store.delete("b", "tester", 1).unwrap();
    assert_eq!(super::delta_tests::blob_usage(dir.path()), (0, 0));
    assert_index_consistent(&store);

    // The second copy deleted: its pack goes, the first is exactly one whole file again.
    let dir = tempfile::tempdir().unwrap();
    let (store, a, _) = shared_pair(dir.path(), 3);
    store.delete("b", "tester", 1).unwrap();
    assert_eq!(read_hash(&store, "a", None), a.hash);
    assert_eq!(
        super::delta_tests::blob_usage(dir.path()),
        (8 * MIB, 1),
        "the pack of the deleted copy is freed"
    );
    assert_index_consistent(&store);
    store.delete("a", "tester", 1).unwrap();
    assert_eq!(super::delta_tests::blob_usage(dir.path()), (0, 0));
    assert_index_consistent(&store);

    // Pruned by newer versions (keep 1): each source's old content goes when nothing uses
    // it, the other's stays readable.
    let dir = tempfile::tempdir().unwrap();
    let (store, _, b) = shared_pair(dir.path(), 1);
    put(&store, "a", b"replaced");
    assert_eq!(read_hash(&store, "b", None), b.hash);
    assert_index_consistent(&store);
    put(&store, "b", b"replaced");
    assert_eq!(
        super::delta_tests::blob_usage(dir.path()),
        (8, 1),
        "only the small content both sources now hold is left"
    );
    assert_index_consistent(&store);
    store.delete("a", "tester", 1).unwrap();
    store.delete("b", "tester", 1).unwrap();
    assert_eq!(super::delta_tests::blob_usage(dir.path()), (0, 0));
    assert_index_consistent(&store);
}

#[test]
fn a_content_put_again_whole_is_stored_once_and_nothing_is_rewritten_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (store, a, b) = shared_pair(dir.path(), 3);
    let (shared, files) = super::delta_tests::blob_usage(dir.path());
    // The same content as the rewritten one, put whole under a third source: stored once,
    // and the whole file that put placed again is removed by the pass.
    let c = put_noise(&store, "c", "dedup pair", 8 * MIB, &[3 * MIB]);
    assert_eq!(c.hash, b.hash);
    store.dedup_pass(10).unwrap();
    assert_eq!(super::delta_tests::blob_usage(dir.path()), (shared, files));
    // Nothing is rewritten twice, and a content whose file others use stays whole.
    let again = put_noise(&store, "d", "dedup pair", 8 * MIB, &[]);
    assert_eq!(again.hash, a.hash);
    assert_eq!(store.dedup_pass(10).unwrap().rewritten, 0);
    for (s, e) in [("a", &a), ("b", &b), ("c", &c), ("d", &again)] {
        assert_eq!(read_hash(&store, s, None), e.hash, "{s}");
    }
    assert_index_consistent(&store);
}

#[test]
fn contents_with_too_little_in_common_or_too_small_stay_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), 3);
    put_noise(&store, "x", "unrelated 1", 4 * MIB, &[]);
    put_noise(&store, "y", "unrelated 2", 4 * MIB, &[]);
    put(&store, "small", &[7u8; 1000]);
    assert_eq!(
        store.dedup_pending().unwrap(),
        2,
        "small contents are not queued"
    );
    let report = store.dedup_pass(10).unwrap();
    assert_eq!((report.examined, report.rewritten), (2, 0));
    assert_eq!(
        super::delta_tests::blob_usage(dir.path()),
        (8 * MIB + 1000, 3)
    );
    assert_index_consistent(&store);
}

/// The worker of the kill test, in a process of its own (the test binary run again with
/// `FERRY_DEDUP_WORKER_DIR` set): puts pairs of contents that share most chunks and runs
/// the pass, printing each step of a rewrite and waiting for a line on stdin before going
/// on, so that the test kills it exactly there.
fn dedup_worker(dir: &str) {
    let store = open_store(Path::new(dir), 2);
    *store.dedup_hook.lock().unwrap() = Some(Box::new(|what| {
        println!("step {what}");
        std::io::stdout().flush().unwrap();
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).unwrap();
    }));
    // What a killed worker left waiting is done first.
    store.dedup_pass(100).unwrap();
    let pid = std::process::id();
    for round in 0..1_000u64 {
        let label = format!("kill {pid} {round}");
        put_noise(&store, "a", &label, 3 * MIB, &[]);
        store.dedup_pass(100).unwrap();
        put_noise(&store, "b", &label, 3 * MIB, &[MIB + round]);
        store.dedup_pass(100).unwrap();
        if round % 3 == 2 {
            store.delete("a", "tester", 1).unwrap();
        }
    }
}

#[test]
fn a_kill_anywhere_in_the_dedup_pass_never_loses_a_byte() {
    use std::process::{Command, Stdio};
    if let Ok(dir) = std::env::var("FERRY_DEDUP_WORKER_DIR") {
        return dedup_worker(&dir);
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    for round in 0..12usize {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "store::dedup_tests::a_kill_anywhere_in_the_dedup_pass_never_loses_a_byte",
                "--nocapture",
            ])
            .env("FERRY_DEDUP_WORKER_DIR", dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let mut lines =
            std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
        // Killed at a different step each round, while it waits at that step: every step
        // of a rewrite (cut, pack written, pack placed, swapped, old file deleted) is hit.
        let wanted = 2 + round;
        let mut steps = Vec::new();
        for line in lines.by_ref().map_while(Result::ok) {
            if let Some(what) = line.strip_prefix("step ") {
                steps.push(what.to_owned());
                if steps.len() == wanted {
                    break;
                }
                writeln!(stdin, "go").unwrap();
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        drop((lines, stdin));
        assert_eq!(
            steps.len(),
            wanted,
            "round {round}: the worker stopped early"
        );
        eprintln!("round {round}: killed at {:?}", steps.last());
        let store = open_store(dir.path(), 2);
        for source in ["a", "b"] {
            for v in store.versions(source).unwrap() {
                assert_eq!(
                    read_hash(&store, source, Some(v.version)),
                    v.hash,
                    "round {round}: {source} version {} after a kill at {:?}",
                    v.version,
                    steps.last()
                );
            }
        }
        assert_index_consistent(&store);
        // What was left waiting completes, and reads back the same.
        store.dedup_pass(100).unwrap();
        for source in ["a", "b"] {
            for v in store.versions(source).unwrap() {
                assert_eq!(read_hash(&store, source, Some(v.version)), v.hash);
            }
        }
        assert_index_consistent(&store);
    }
}

#[test]
fn a_cancelled_pass_leaves_everything_as_it_was() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), 3);
    let a = put_noise(&store, "a", "cancel", 4 * MIB, &[]);
    store.dedup_pass(10).unwrap();
    let b = put_noise(&store, "b", "cancel", 4 * MIB, &[MIB]);
    let before = super::delta_tests::blob_usage(dir.path());
    // Asked once before the content, after each mebibyte the cut reads, once after the cut,
    // then every mebibyte of the new layout: stopped in the cut, then in the layout.
    for stop_at in [3, 8] {
        let calls = AtomicU64::new(0);
        let report = store
            .dedup_pass_with(10, &|| calls.fetch_add(1, Ordering::SeqCst) + 1 >= stop_at)
            .unwrap();
        assert_eq!(report.rewritten, 0, "stopped at call {stop_at}");
        assert_eq!(store.dedup_pending().unwrap(), 1);
        assert_eq!(super::delta_tests::blob_usage(dir.path()), before);
        assert_eq!(
            fs::read_dir(&store.tmp).unwrap().count(),
            0,
            "temp file left"
        );
    }
    assert_eq!(store.dedup_pass(10).unwrap().rewritten, 1);
    assert_eq!(read_hash(&store, "a", None), a.hash);
    assert_eq!(read_hash(&store, "b", None), b.hash);
    assert_index_consistent(&store);
}
