//! Small contents committed whole ([`Backend::commit_small`]): alone, many at once (which a
//! backend may group), beside ordinary commits, and refused when the hash is wrong.

use ferry_proto::chunking::chunk_all;

use super::delta::noise;
use super::{RETENTION, T0, hash, join_all, put};
use crate::{Backend, BackendError, Meta};

/// One small commit reads back with its metadata and chunks; many at once (distinct
/// sources, one source many times, the same content under two names, empty content) all
/// land, each version once, and read back byte for byte.
pub async fn small_commits<B: Backend>(b: &B) {
    let meta = Meta {
        mtime: Some(1_699_999_999_000_000_001),
        executable: true,
    };
    let one = noise(b"small one", 5000);
    let e = b
        .commit_small(
            "s/one".into(),
            one.clone(),
            hash(&one),
            meta,
            "alice".into(),
            T0,
        )
        .await
        .unwrap();
    assert_eq!((e.version, e.size, e.hash), (1, 5000, hash(&one)));
    assert_eq!(e.meta, meta);
    assert_eq!(b.read(&e.hash, 0, e.size).await.unwrap(), one);
    assert_eq!(b.stat("s/one").await.unwrap().unwrap().meta, meta);

    // Contents: empty, one byte, several chunks (past the 16 KiB minimum), and one
    // already stored as "s/one".
    let contents: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"x".to_vec(),
        noise(b"small multi-chunk", 300_000),
        one.clone(),
        noise(b"small a", 4096),
        noise(b"small b", 4096),
    ];
    let mut calls = Vec::new();
    for (i, c) in contents.iter().enumerate() {
        calls.push((format!("s/many/{i}"), c.clone()));
        // The same content under a second name.
        calls.push((format!("s/twice/{i}"), c.clone()));
    }
    for round in 0..3u8 {
        calls.push(("s/hot".to_owned(), noise(&[b'h', round], 2000)));
    }
    let entries = join_all(
        calls
            .iter()
            .map(|(s, c)| {
                b.commit_small(
                    s.clone(),
                    c.clone(),
                    hash(c),
                    Meta::default(),
                    "bob".into(),
                    T0,
                )
            })
            .collect(),
    )
    .await;
    for ((source, content), entry) in calls.iter().zip(&entries) {
        let entry = entry.as_ref().unwrap();
        assert_eq!(&entry.source, source);
        assert_eq!(
            (entry.size, entry.hash),
            (content.len() as u64, hash(content))
        );
        if source == "s/hot" {
            continue; // its older versions may be pruned already
        }
        assert_eq!(
            b.read(&entry.hash, 0, entry.size).await.unwrap(),
            *content,
            "{source}"
        );
        assert_eq!(
            b.chunks(&entry.hash).await.unwrap(),
            Some(chunk_all(content)),
            "the chunks of {source}"
        );
    }
    let mut hot: Vec<u64> = calls
        .iter()
        .zip(&entries)
        .filter(|((s, _), _)| s == "s/hot")
        .map(|(_, e)| e.as_ref().unwrap().version)
        .collect();
    hot.sort_unstable();
    assert_eq!(hot, vec![1, 2, 3], "one version each, none lost");
    let current = b.stat("s/hot").await.unwrap().unwrap();
    assert_eq!(current.version, 3);
    let ((_, latest), _) = calls
        .iter()
        .zip(&entries)
        .find(|((s, _), e)| s == "s/hot" && e.as_ref().unwrap().version == 3)
        .unwrap();
    assert_eq!(
        b.read(&current.hash, 0, current.size).await.unwrap(),
        *latest
    );
    assert_eq!(
        b.versions("s/hot").await.unwrap().len(),
        RETENTION.keep_versions as usize
    );
    // 1 + every call, each logged once.
    assert_eq!(b.last_seq().await.unwrap(), 1 + calls.len() as u64);
    // Pruned and deleted small contents leave the others readable.
    for (source, _) in &calls {
        b.delete(source, "bob", T0 + 1).await.unwrap();
    }
    assert_eq!(b.read(&e.hash, 0, e.size).await.unwrap(), one);
}

/// A small commit whose content does not hash as announced stores nothing.
pub async fn small_commit_refusals<B: Backend>(b: &B) {
    let content = noise(b"small refused", 3000);
    let mut wrong = hash(&content);
    wrong[0] ^= 1;
    let results = join_all(vec![
        b.commit_small(
            "r/bad".into(),
            content.clone(),
            wrong,
            Meta::default(),
            "eve".into(),
            T0,
        ),
        b.commit_small(
            "r/good".into(),
            content.clone(),
            hash(&content),
            Meta::default(),
            "eve".into(),
            T0,
        ),
    ])
    .await;
    assert!(
        matches!(results[0], Err(BackendError::HashMismatch { .. })),
        "{:?}",
        results[0]
    );
    assert_eq!(results[1].as_ref().unwrap().version, 1);
    assert!(b.stat("r/bad").await.unwrap().is_none());
    assert!(b.head("r/bad").await.unwrap().is_none());
    assert_eq!(b.last_seq().await.unwrap(), 1);
    // An ordinary commit and small ones of one source take turns.
    let first = put(b, "r/good", b"ordinary", "eve", T0).await;
    assert_eq!(first.version, 2);
    let next = b
        .commit_small(
            "r/good".into(),
            b"small".to_vec(),
            hash(b"small"),
            Meta::default(),
            "eve".into(),
            T0,
        )
        .await
        .unwrap();
    assert_eq!(next.version, 3);
}
