//! A server whose disk fills up: a put that does not fit is answered `no_space` (the client
//! says "no space left on the server"), nothing half-written stays, and the server goes on
//! serving reads and the puts that fit. The disk is a 24 MiB tmpfs the test mounts; where
//! mounting is not allowed (not root, no CAP_SYS_ADMIN) the test says so and skips.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use ferry::{Client, Error, Server, ServerDir};

/// A mounted tmpfs, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs here ({}); the full-disk test needs root or \
                 CAP_SYS_ADMIN",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(Self(at.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_no_space_and_the_server_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(disk) = Tmpfs::mount(&tmp.path().join("disk"), "24m") else {
        return;
    };
    let dir = ServerDir::new(disk.0.join("srv"));
    dir.init().unwrap();
    let bound = Server::open(&dir)
        .unwrap()
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = bound.local_addr().to_string();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(bound.run(async {
        let _ = stop_rx.await;
    }));
    let role = BTreeMap::from([("role".to_owned(), "writer".to_owned())]);
    let cred = dir.issue_client("w", role, Some(&addr), 0).unwrap();
    let mut c = Client::connect(&cred).await.unwrap();
    c.put_bytes("keep", b"kept".to_vec()).await.unwrap();

    // 32 MiB into a 24 MiB disk: refused as no space, on the same connection.
    let big: Vec<u8> = (0..32u32 << 20).map(|i| (i % 253) as u8).collect();
    let r = c
        .put("big", std::io::Cursor::new(big), None, &mut |_| {})
        .await;
    match &r {
        Err(Error::NoSpace(m)) => assert!(m.contains("no space"), "{m}"),
        other => panic!("expected no space, got {other:?}"),
    }
    // The connection goes on; what was stored is intact; nothing of the failed put shows.
    assert_eq!(c.get_bytes("keep").await.unwrap(), b"kept");
    assert!(matches!(c.stat("big").await, Err(Error::NotFound(_))));
    // Its bytes were given back: a put that fits is stored.
    let fits = vec![7u8; 4 << 20];
    c.put_bytes("fits", fits.clone()).await.unwrap();
    let mut other = Client::connect(&cred).await.unwrap();
    assert_eq!(other.get_bytes("fits").await.unwrap(), fits);

    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
    drop(disk);
}
