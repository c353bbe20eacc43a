//! Group commits of small contents: one pack per batch, read back like any content,
//! freed with the last content that uses it, kept across a reopen.

use ferry_backend::conformance::delta::noise;
use ferry_proto::chunking::chunk_all;

use super::delta_tests::{blob_usage, read_version};
use super::tests::{open_store, put};
use super::*;

fn small(source: &str, content: &[u8]) -> SmallPut {
    SmallPut {
        source: source.to_owned(),
        content: content.to_vec(),
        expected: *blake3::hash(content).as_bytes(),
        meta: Meta::default(),
        by: "tester".to_owned(),
        now: 1_700_000_000,
    }
}

#[test]
fn a_batch_shares_one_pack_reads_back_and_frees_it_with_its_last_content() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), 3);
    let contents: Vec<Vec<u8>> = (0..20u8)
        .map(|i| noise(&[b'c', i], 1000 + 3000 * usize::from(i)))
        .chain([noise(b"several chunks", 200_000), Vec::new()])
        .collect();
    let mut puts: Vec<SmallPut> = contents
        .iter()
        .enumerate()
        .map(|(i, c)| small(&format!("f/{i}"), c))
        .collect();
    // The same content twice, under another name.
    puts.push(small("f/again", &contents[3]));
    let results = store.commit_batch(puts);
    assert_eq!(results.len(), contents.len() + 1);
    for (i, r) in results.iter().enumerate() {
        let e = r.as_ref().unwrap();
        assert_eq!(e.version, 1);
        let expected = contents.get(i).unwrap_or(&contents[3]);
        assert_eq!(
            &read_version(&store, &e.source, 1),
            expected,
            "{}",
            e.source
        );
        assert_eq!(store.chunks(&e.hash).unwrap(), Some(chunk_all(expected)));
    }
    // One pack with every non-empty content once, and the empty content's own file.
    let total: u64 = contents.iter().map(|c| c.len() as u64).sum();
    assert_eq!(blob_usage(dir.path()), (total, 2));

    // Kept across a reopen (the orphan sweep knows packs).
    drop(store);
    let store = open_store(dir.path(), 3);
    assert_eq!(read_version(&store, "f/7", 1), contents[7]);
    assert_eq!(blob_usage(dir.path()), (total, 2));

    // The pack stays while any content in it is live, and goes with the last.
    for i in 0..contents.len() {
        store.delete(&format!("f/{i}"), "tester", 2).unwrap();
    }
    assert_eq!(read_version(&store, "f/again", 1), contents[3]);
    assert_eq!(blob_usage(dir.path()).1, 1, "the pack, for f/again");
    store.delete("f/again", "tester", 2).unwrap();
    assert_eq!(blob_usage(dir.path()), (0, 0));
}

#[test]
fn a_put_with_a_wrong_hash_fails_alone_and_versions_follow_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), 2);
    let mut bad = small("s/bad", b"bad content");
    bad.expected[0] ^= 1;
    let results = store.commit_batch(vec![
        small("s/hot", b"one"),
        bad,
        small("s/hot", b"two"),
        small("s/hot", b"three"),
    ]);
    assert!(matches!(results[1], Err(StoreError::HashMismatch { .. })));
    let versions: Vec<u64> = [0, 2, 3]
        .iter()
        .map(|&i| results[i].as_ref().unwrap().version)
        .collect();
    assert_eq!(versions, vec![1, 2, 3]);
    assert!(store.stat("s/bad").unwrap().is_none());
    assert_eq!(read_version(&store, "s/hot", 3), b"three");
    // keep_versions = 2 pruned "one"; its bytes stay in the pack while "two" and "three"
    // use it, then go with them.
    assert_eq!(store.versions("s/hot").unwrap().len(), 2);
    store.delete("s/hot", "tester", 2).unwrap();
    assert_eq!(blob_usage(dir.path()), (0, 0));
}

#[test]
fn contents_already_stored_need_no_pack() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), 3);
    let (a, b) = (noise(b"stored a", 5000), noise(b"stored b", 7000));
    put(&store, "old/a", &a);
    put(&store, "old/b", &b);
    let before = blob_usage(dir.path());
    let results = store.commit_batch(vec![small("new/a", &a), small("new/b", &b)]);
    assert!(results.iter().all(Result::is_ok));
    // The pack the batch wrote went at once: nothing uses it.
    assert_eq!(blob_usage(dir.path()), before);
    assert_eq!(read_version(&store, "new/b", 1), b);
    // A single distinct content is stored whole, as an ordinary commit does.
    let c = noise(b"alone", 3000);
    store.commit_batch(vec![small("alone", &c)]);
    assert_eq!(blob_usage(dir.path()).1, before.1 + 1);
    assert_eq!(read_version(&store, "alone", 1), c);
}
