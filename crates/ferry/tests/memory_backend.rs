//! A server built over the in-memory backend (`Server::builder(dir).backend(..)`): the same
//! protocol, the same client, no data on disk. This is the engine's storage seam at work:
//! nothing in the server's request path knows which backend it has.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write;

use ferry::backend::{Index, MemoryBackend, Retention};
use ferry::{Client, Server, ServerDir, WatchItem};

const MIB: usize = 1 << 20;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_over_the_memory_backend_serves_every_data_operation() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ServerDir::new(tmp.path().join("srv"));
    dir.init().unwrap();
    let memory = MemoryBackend::new(Retention {
        keep_versions: 2,
        keep_changes: 100,
    });
    let bound = Server::builder(&dir)
        .backend(memory.clone())
        .limits(|l| l.max_connections = 8)
        .build()
        .unwrap()
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = bound.local_addr().to_string();
    let mut feed = bound.changes();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(bound.run(async {
        let _ = stop_rx.await;
    }));
    let role = BTreeMap::from([("role".to_owned(), "writer".to_owned())]);
    let cred = dir.issue_client("w", role, Some(&addr), 0).unwrap();
    let watcher = Client::connect(&cred)
        .await
        .unwrap()
        .watch("m/", None)
        .await
        .unwrap();

    let mut c = Client::connect(&cred).await.unwrap();
    // Larger than a frame: the body streams through the backend's reader.
    let big = pattern(3 * MIB + 17, 1);
    c.put_bytes("m/big", big.clone()).await.unwrap();
    assert_eq!(c.get_bytes("m/big").await.unwrap(), big);
    let small = c.put_bytes("m/small", b"hi".to_vec()).await.unwrap();
    assert_eq!(c.stat("m/small").await.unwrap(), small);
    let names: Vec<_> = c
        .list("m/")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.source)
        .collect();
    assert_eq!(names, ["m/big", "m/small"]);

    // A resumable put goes through the backend's upload parts.
    let mut file = tempfile::tempfile().unwrap();
    let resumed = pattern(MIB + 5, 2);
    file.write_all(&resumed).unwrap();
    let (entry, offset) = c
        .put_resume("m/resumed", file, &mut |_| {}, &mut |_| {})
        .await
        .unwrap();
    assert_eq!((entry.size, offset), (resumed.len() as u64, 0));
    assert_eq!(c.get_bytes("m/resumed").await.unwrap(), resumed);

    c.delete("m/small").await.unwrap();
    assert!(matches!(
        c.stat("m/small").await,
        Err(ferry::Error::NotFound(_))
    ));
    c.close().await.unwrap();

    // The content is in the memory backend, and nothing of it is on disk.
    assert_eq!(
        memory.stat("m/big").await.unwrap().unwrap().hash,
        *blake3::hash(&big).as_bytes()
    );
    let on_disk = walk(dir.path());
    assert!(
        !on_disk
            .iter()
            .any(|p| p.contains("blobs") || p.contains("uploads")),
        "data reached the folder: {on_disk:?}"
    );
    // The change feed and the watch stream follow the backend's change log.
    let page = feed.next_batch(0, 10).await.unwrap();
    assert_eq!(page.changes.len(), 4);
    let mut watcher = watcher;
    let mut seen = Vec::new();
    for _ in 0..10 {
        match tokio::time::timeout(std::time::Duration::from_secs(10), watcher.next())
            .await
            .unwrap()
            .unwrap()
        {
            WatchItem::Event(e) => seen.push(e.source),
            _ => continue,
        }
        if seen.len() == 4 {
            break;
        }
    }
    assert_eq!(seen, ["m/big", "m/small", "m/resumed", "m/small"]);
    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path().display().to_string());
        }
    }
    out
}
