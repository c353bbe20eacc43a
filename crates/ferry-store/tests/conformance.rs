//! The backend conformance suite against the local backend, each check in a fresh temp
//! folder, plus what only a store on disk has: reopening it mid-upload, files on disk.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use ferry_backend::conformance::{self, RETENTION, T0, pattern};
use ferry_backend::{Backend, Blobs, Index, Upload, UploadKey, stage_bytes};
use ferry_store::LocalBackend;

fn open(dir: &Path) -> LocalBackend {
    LocalBackend::open(dir, RETENTION).unwrap()
}

fn files_under(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                files_under(&e.path())
            } else {
                1
            }
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_backend_passes_the_conformance_suite() {
    let run = tokio::spawn(async {
        let mut dirs = Vec::new();
        conformance::run_all(|| {
            let dir = tempfile::tempdir().unwrap();
            let backend = open(dir.path());
            dirs.push(dir);
            async move { backend }
        })
        .await;
    });
    run.await.expect("the suite passed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_continues_after_the_store_is_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(1_000_000, 5);
    let key = UploadKey::derive(b"alice/big/1000000");

    let backend = open(dir.path());
    let mut up = backend.begin_upload(&key, T0).await.unwrap();
    up.write(&data[..400_000]).await.unwrap();
    assert_eq!(up.sync().await.unwrap(), 400_000);
    drop(up);
    drop(backend); // the server stops

    let backend = open(dir.path());
    assert_eq!(backend.upload_status(&key).await.unwrap(), Some(400_000));
    let mut up = backend.begin_upload(&key, T0 + 60).await.unwrap();
    assert_eq!(up.offset(), 400_000);
    up.write(&data[400_000..]).await.unwrap();
    // A handle still open when the store goes: its synced bytes are there after reopening.
    up.sync().await.unwrap();
    drop(backend);
    drop(up);

    let backend = open(dir.path());
    let up = backend.begin_upload(&key, T0 + 120).await.unwrap();
    assert_eq!(up.offset(), 1_000_000);
    let staged = up.finish(blake3::hash(&data).as_bytes()).await.unwrap();
    let e = backend
        .commit("big", staged, "alice", T0 + 121)
        .await
        .unwrap();
    assert_eq!(
        backend.read(&e.hash, 999_999, 1).await.unwrap(),
        &data[999_999..]
    );
    assert_eq!(files_under(&dir.path().join("uploads")), 0);
    assert_eq!(files_under(&dir.path().join("tmp")), 0);
}

#[tokio::test]
async fn reopening_keeps_uploads_and_the_ttl_sweeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let backend = open(dir.path());
    let key = UploadKey::derive(b"idle");
    let mut up = backend.begin_upload(&key, T0).await.unwrap();
    up.write(b"part one").await.unwrap();
    up.sync().await.unwrap();
    drop(up);
    // A staged but uncommitted upload is temporary: reopening removes it, as before.
    let staged = stage_bytes(&backend, &UploadKey::derive(b"staged"), b"s", T0)
        .await
        .unwrap();
    std::mem::forget(staged); // as if the process died before committing
    drop(backend);
    assert_eq!(files_under(&dir.path().join("tmp")), 1);

    let backend = open(dir.path());
    assert_eq!(files_under(&dir.path().join("tmp")), 0);
    assert_eq!(backend.upload_status(&key).await.unwrap(), Some(8));
    // Something that is not an upload is left alone by the sweep.
    std::fs::write(dir.path().join("uploads/README"), b"x").unwrap();
    assert_eq!(backend.sweep_uploads(T0 + 1).await.unwrap(), 1);
    assert_eq!(backend.upload_status(&key).await.unwrap(), None);
    assert!(dir.path().join("uploads/README").exists());
}

#[tokio::test]
async fn identical_content_is_one_file_and_pruned_content_leaves_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let backend = open(dir.path());
    let blobs = dir.path().join("blobs");
    for source in ["a", "b"] {
        let staged = stage_bytes(&backend, &UploadKey::derive(source.as_bytes()), b"same", T0)
            .await
            .unwrap();
        backend.commit(source, staged, "w", T0).await.unwrap();
    }
    assert_eq!(files_under(&blobs), 1);
    for (i, data) in [&b"v2"[..], b"v3"].into_iter().enumerate() {
        let staged = stage_bytes(&backend, &UploadKey::derive(data), data, T0)
            .await
            .unwrap();
        backend
            .commit("a", staged, "w", T0 + i as u64)
            .await
            .unwrap();
    }
    // "a" keeps v2 and v3; "same" stays for "b".
    assert_eq!(files_under(&blobs), 3);
    backend.delete("b", "w", T0).await.unwrap();
    assert_eq!(files_under(&blobs), 2);
    assert_eq!(backend.versions("a").await.unwrap().len(), 2);
}
