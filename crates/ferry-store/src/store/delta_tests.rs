//! Contents made of chunks in the local store: shared between versions on disk, freed by
//! pruning, and never lost to a kill in the middle of a prune.

use std::io::Read;
use std::path::Path;

use ferry_backend::UploadKey;
use ferry_backend::conformance::delta::{delta_body, noise};

use super::tests::{open_store, put};
use super::*;

/// Stages `new` as a delta against the visible content `base` (held by the store).
fn stage_delta(store: &Store, key: &str, base: &[u8], new: &[u8]) -> StagedBlob {
    let (chunks, body) = delta_body(base, new);
    let mut up = store
        .begin_upload(&UploadKey::derive(key.as_bytes()), 1)
        .unwrap();
    up.write(&body).unwrap();
    store
        .finish_delta(
            up,
            blake3::hash(new).as_bytes(),
            blake3::hash(base).as_bytes(),
            &chunks,
        )
        .unwrap()
}

/// Bytes and number of the files under `blobs/`.
pub(super) fn blob_usage(dir: &Path) -> (u64, usize) {
    let (mut bytes, mut files) = (0, 0);
    for sub in fs::read_dir(dir.join(BLOBS_DIR)).unwrap() {
        for f in fs::read_dir(sub.unwrap().path()).unwrap() {
            bytes += f.unwrap().metadata().unwrap().len();
            files += 1;
        }
    }
    (bytes, files)
}

pub(super) fn read_version(store: &Store, source: &str, version: u64) -> Vec<u8> {
    let (_, mut content) = store.open_blob(source, Some(version)).unwrap().unwrap();
    let mut out = Vec::new();
    content.read_to_end(&mut out).unwrap();
    out
}

/// A small edit: `n` bytes flipped at a place that depends on `round`.
fn edit(data: &mut [u8], round: usize) {
    let at = (round * 7_919_993) % data.len();
    data[at] ^= 0xa5;
}

#[test]
fn ten_delta_versions_take_little_more_than_one_and_deleting_frees_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), 10);
    // Small enough to keep this test process's memory low (a test beside it measures it);
    // the server-level test does the same with 64 MiB.
    let size = 3 << 20;
    let mut data = noise(b"store delta ten", size);
    put(&store, "big", &data);
    let mut kept = vec![*blake3::hash(&data).as_bytes()];
    for round in 1..10 {
        let base = data.clone();
        edit(&mut data, round);
        let staged = stage_delta(&store, &format!("k{round}"), &base, &data);
        store
            .commit("big", staged, "tester", 1_700_000_000)
            .unwrap();
        kept.push(*blake3::hash(&data).as_bytes());
    }
    let (bytes, _) = blob_usage(dir.path());
    // Each edit brings at most two chunks of at most 256 KiB.
    assert!(
        bytes <= size as u64 + 9 * 512 * 1024,
        "ten versions take {bytes} bytes for {size} of content"
    );
    for (i, want) in kept.iter().enumerate() {
        let got = read_version(&store, "big", i as u64 + 1);
        assert_eq!(blake3::hash(&got).as_bytes(), want, "version {}", i + 1);
    }
    // The whole first version's file is still needed by the later ones after it is pruned.
    drop(store);
    let store = open_store(dir.path(), 2);
    let staged = stage_delta(&store, "k-last", &data, &data);
    store
        .commit("big", staged, "tester", 1_700_000_000)
        .unwrap();
    assert!(store.versions("big").unwrap().len() == 2);
    assert!(read_version(&store, "big", 11) == data);
    store.delete("big", "tester", 1_700_000_001).unwrap();
    assert_eq!(
        blob_usage(dir.path()),
        (0, 0),
        "deleting the source frees every file"
    );
}

#[test]
fn pruned_bases_keep_the_files_later_versions_use_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = noise(b"store delta prune", 2 << 20);
    {
        let store = open_store(dir.path(), 2);
        put(&store, "s", &data);
        for round in 1..6 {
            let base = data.clone();
            edit(&mut data, round);
            data.splice(round * 1000..round * 1000, [round as u8; 100]);
            let staged = stage_delta(&store, &format!("p{round}"), &base, &data);
            store.commit("s", staged, "tester", 1_700_000_000).unwrap();
        }
    }
    // Reopening sweeps orphans: nothing a kept version uses may go.
    let store = open_store(dir.path(), 2);
    assert!(read_version(&store, "s", 6) == data);
    assert_eq!(store.versions("s").unwrap().len(), 2);
    let (bytes, _) = blob_usage(dir.path());
    assert!(bytes <= (2 << 20) + 12 * 256 * 1024, "{bytes}");
}

#[test]
fn a_commit_whose_base_file_went_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), 1);
    let base = noise(b"store delta gone", 1 << 20);
    put(&store, "g", &base);
    let mut new = base.clone();
    edit(&mut new, 3);
    let staged = stage_delta(&store, "g1", &base, &new);
    // The base is replaced (keep_versions 1) before the delta commits: its file goes.
    put(&store, "g", b"something else");
    match store.commit("g", staged, "tester", 1_700_000_000) {
        Err(StoreError::BlobNotFound) => {}
        other => panic!("expected blob_not_found, got {other:?}"),
    }
    assert_eq!(store.stat("g").unwrap().unwrap().size, 14);
}

/// The worker of the kill test, in a process of its own (the test binary run again with
/// `FERRY_PRUNE_WORKER_DIR` set): commits deltas and deletes in a loop until killed.
fn prune_worker(dir: &str) {
    let store = open_store(Path::new(dir), 2);
    let mut data = noise(b"store delta kill", 2 << 20);
    put(&store, "w", &data);
    println!("ready");
    for round in 1..100_000 {
        let base = data.clone();
        edit(&mut data, round);
        let staged = stage_delta(&store, &format!("w{round}"), &base, &data);
        store.commit("w", staged, "tester", 1_700_000_000).unwrap();
        println!("committed {round}");
        if round % 7 == 0 {
            store.delete("w", "tester", 1_700_000_000).unwrap();
            data = noise(format!("store delta kill {round}").as_bytes(), 2 << 20);
            put(&store, "w", &data);
        }
    }
}

#[test]
fn kill_during_pruning_keeps_every_needed_chunk() {
    use std::process::{Command, Stdio};
    if let Ok(dir) = std::env::var("FERRY_PRUNE_WORKER_DIR") {
        return prune_worker(&dir);
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut last_seq = 0;
    for round in 0..6u64 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "store::delta_tests::kill_during_pruning_keeps_every_needed_chunk",
                "--nocapture",
            ])
            .env("FERRY_PRUNE_WORKER_DIR", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Killed after a different number of its commits each round (so at different points
        // of its loop: committing, pruning, deleting), however slow the machine is.
        let wanted = 3 + 4 * round as usize;
        let mut lines =
            std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
        let committed = lines
            .by_ref()
            .map_while(Result::ok)
            .filter(|l| l.starts_with("committed "))
            .take(wanted)
            .count();
        // SIGKILL while its output is still open: it must not die of a closed pipe instead.
        child.kill().unwrap();
        child.wait().unwrap();
        drop(lines);
        assert_eq!(committed, wanted, "round {round}: the worker stopped early");
        let store = open_store(dir.path(), 2);
        let seq = store.last_seq().unwrap();
        assert!(
            seq > last_seq + 2,
            "round {round}: the worker made no progress"
        );
        last_seq = seq;
        for v in store.versions("w").unwrap() {
            let got = read_version(&store, "w", v.version);
            assert_eq!(
                blake3::hash(&got).as_bytes(),
                &v.hash,
                "round {round}: version {} reads back wrong",
                v.version
            );
        }
        // Every file left is needed: the reopen swept the rest.
        let txn = store.db.begin_read().unwrap();
        for sub in fs::read_dir(dir.path().join(BLOBS_DIR)).unwrap() {
            let sub = sub.unwrap();
            for f in fs::read_dir(sub.path()).unwrap() {
                let f = f.unwrap();
                let name = f.file_name();
                let hash =
                    parse_blob_name(sub.file_name().to_str().unwrap(), name.to_str().unwrap())
                        .unwrap();
                assert!(
                    packs::file_needed(&txn, &hash).unwrap(),
                    "round {round}: orphan left"
                );
            }
        }
    }
}
