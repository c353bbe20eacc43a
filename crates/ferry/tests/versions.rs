//! Old versions: `Client::versions` lists what the server keeps (newest first), a get of a
//! kept version returns that version's bytes, and the rules of `stat` apply: a role without
//! `stat` is refused, a pruned, missing or deleted one is not found.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestServer;
use ferry::{Client, Error};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_versions_are_listed_and_fetched() {
    let srv = TestServer::start_with_config(|t| {
        t.replace("keep_versions = 3", "keep_versions = 2").replace(
            "[roles]\n",
            "[roles]\nblind = [{ ops = [\"get\"], sources = [\"**\"] }]\n",
        )
    })
    .await;
    let mut c = Client::connect(&srv.issue("w", "writer")).await.unwrap();
    let mut stored = Vec::new();
    for i in 1..=3u8 {
        stored.push(
            c.put_bytes("doc", vec![i; 1000 + i as usize])
                .await
                .unwrap(),
        );
    }
    // keep_versions = 2: versions 3 and 2, newest first, as stored.
    let kept = c.versions("doc").await.unwrap();
    assert_eq!(kept, vec![stored[2].clone(), stored[1].clone()]);

    // An old version's bytes; the current one by default.
    let (e, old) = c
        .get_version_with_start("doc", Some(2), Vec::new(), &mut |_| {}, &mut |_| {})
        .await
        .unwrap();
    assert_eq!((e.version, old), (2, vec![2u8; 1002]));
    assert_eq!(c.get_bytes("doc").await.unwrap(), vec![3u8; 1003]);

    // Version 1 was pruned; a missing source, and one deleted, have none.
    let r = c
        .get_version_with_start("doc", Some(1), Vec::new(), &mut |_| {}, &mut |_| {})
        .await;
    assert!(matches!(r, Err(Error::NotFound(_))), "{r:?}");
    assert!(matches!(c.versions("nope").await, Err(Error::NotFound(_))));
    c.put_bytes("gone", b"x".to_vec()).await.unwrap();
    c.delete("gone").await.unwrap();
    assert!(matches!(c.versions("gone").await, Err(Error::NotFound(_))));

    // Listing versions is a stat: a role that may only get is refused, and says so.
    let mut blind = Client::connect(&srv.issue("b", "blind")).await.unwrap();
    let r = blind.versions("doc").await;
    assert!(
        matches!(&r, Err(Error::Forbidden(m)) if m.contains("may not stat")),
        "{r:?}"
    );
    srv.stop().await;
}
