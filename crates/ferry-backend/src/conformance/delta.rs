//! Delta uploads (docs/PROTOCOL.md §5.4): a content built from the chunks of a base content
//! and the chunks sent, read back whole and in ranges, refused when anything does not add up.

use ferry_proto::chunking::{ChunkRef, chunk_all, is_needed, needed};

use super::{RETENTION, T0, hash, put};
use crate::{Backend, BackendError, BlobReader, Hash, Staged, Upload, UploadKey};

/// `n` pseudo-random bytes (the BLAKE3 output stream of `label`): content with cut points.
pub fn noise(label: &[u8], n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    blake3::Hasher::new()
        .update(label)
        .finalize_xof()
        .fill(&mut out);
    out
}

/// The body a delta upload of `new` against `base` sends: the needed chunks, in order.
pub fn delta_body(base: &[u8], new: &[u8]) -> (Vec<ChunkRef>, Vec<u8>) {
    let held: std::collections::HashSet<Hash> = chunk_all(base).iter().map(|c| c.hash).collect();
    let chunks = chunk_all(new);
    let bitmap = needed(&chunks, |h| held.contains(h));
    let mut body = Vec::new();
    let mut at = 0usize;
    for (i, c) in chunks.iter().enumerate() {
        if is_needed(&bitmap, i) {
            body.extend_from_slice(&new[at..at + c.len as usize]);
        }
        at += c.len as usize;
    }
    (chunks, body)
}

async fn stage_delta<B: Backend>(
    b: &B,
    key: &[u8],
    base: &Hash,
    body: &[u8],
    chunks: Vec<ChunkRef>,
    expected: &Hash,
) -> Result<B::Staged, BackendError> {
    let key = UploadKey::derive(key);
    let mut up = b.begin_upload(&key, T0).await.unwrap();
    for piece in body.chunks(100_000) {
        up.write(piece).await.unwrap();
    }
    up.finish_delta(expected, base, chunks).await
}

/// A content put as a delta reads back byte for byte (whole, in ranges and through a
/// reader), has the chunks it was described by, and survives the pruning of its base.
pub async fn delta_uploads<B: Backend>(b: &B) {
    let base = noise(b"conformance delta base", 3 << 20);
    let v1 = put(b, "d/file", &base, "alice", T0).await;
    assert_eq!(
        b.chunks(&v1.hash).await.unwrap(),
        Some(chunk_all(&base)),
        "the chunks of a content put whole"
    );
    assert_eq!(b.chunks(&[9; 32]).await.unwrap(), None);

    // A byte flipped in the middle and 100 bytes inserted near the start.
    let mut new = base.clone();
    new[3 << 19] ^= 0x55;
    new.splice(1000..1000, [7u8; 100]);
    let (chunks, body) = delta_body(&base, &new);
    assert!(body.len() < base.len() / 2, "the edit needs few chunks");
    let staged = stage_delta(b, b"delta 1", &v1.hash, &body, chunks.clone(), &hash(&new))
        .await
        .unwrap();
    assert_eq!(
        (staged.hash(), staged.size()),
        (hash(&new), new.len() as u64)
    );
    let v2 = b.commit("d/file", staged, "alice", T0 + 1).await.unwrap();
    assert_eq!((v2.version, v2.hash), (2, hash(&new)));
    assert_eq!(b.read(&v2.hash, 0, v2.size).await.unwrap(), new);
    assert_eq!(b.chunks(&v2.hash).await.unwrap(), Some(chunks));
    // Ranges across chunk boundaries, and a reader in small steps.
    for (off, len) in [
        (0u64, 1u64),
        (990, 300),
        (65_000, 200_000),
        (v2.size - 5, 5),
    ] {
        let want = &new[off as usize..(off + len) as usize];
        assert_eq!(b.read(&v2.hash, off, len).await.unwrap(), want);
    }
    let mut r = b.reader(&v2.hash, 10, v2.size - 10).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..1000 {
        if r.remaining() == 0 {
            break;
        }
        got = r.read_into(got, 77_777).await.unwrap();
    }
    assert_eq!(got, &new[10..]);

    // Nothing needed: the same content again.
    let (same, empty) = delta_body(&new, &new);
    assert!(empty.is_empty());
    let staged = stage_delta(b, b"delta same", &v2.hash, &[], same, &hash(&new))
        .await
        .unwrap();
    let v3 = b.commit("d/file", staged, "alice", T0 + 2).await.unwrap();
    assert_eq!(v3.hash, v2.hash);

    // A third version pruned the first (RETENTION keeps 2): v2 still reads whole.
    assert_eq!(RETENTION.keep_versions, 2);
    assert!(b.stat_version("d/file", 1).await.unwrap().is_none());
    assert_eq!(b.read(&v3.hash, 0, v3.size).await.unwrap(), new);

    // Deleted: nothing of it is visible.
    b.delete("d/file", "alice", T0 + 3).await.unwrap();
    assert_eq!(b.blob_size(&v2.hash).await.unwrap(), None);
    assert_eq!(b.blob_size(&v1.hash).await.unwrap(), None);
}

/// A delta upload whose body or description is wrong is refused and leaves nothing.
pub async fn delta_refusals<B: Backend>(b: &B) {
    let base = noise(b"conformance delta refusals", 1 << 20);
    let v1 = put(b, "d/r", &base, "alice", T0).await;
    let mut new = base.clone();
    new[500_000] ^= 1;
    let (chunks, body) = delta_body(&base, &new);
    assert!(!body.is_empty());
    let expected = hash(&new);

    let mismatch = |r: Result<B::Staged, BackendError>, what: &str| match r {
        Err(BackendError::HashMismatch { .. }) => {}
        other => panic!("{what}: expected a hash mismatch, got {other:?}"),
    };
    // A byte of the body changed.
    let mut tampered = body.clone();
    tampered[body.len() / 2] ^= 1;
    mismatch(
        stage_delta(b, b"r1", &v1.hash, &tampered, chunks.clone(), &expected).await,
        "tampered body",
    );
    // One byte short, one byte too many.
    mismatch(
        stage_delta(b, b"r2", &v1.hash, &body[1..], chunks.clone(), &expected).await,
        "short body",
    );
    let mut long = body.clone();
    long.push(0);
    mismatch(
        stage_delta(b, b"r3", &v1.hash, &long, chunks.clone(), &expected).await,
        "long body",
    );
    // The right body under another whole hash.
    mismatch(
        stage_delta(b, b"r4", &v1.hash, &body, chunks.clone(), &[1; 32]).await,
        "wrong whole hash",
    );
    // A description whose lengths are wrong for the chunks it names.
    let mut wrong = chunks.clone();
    if let Some(c) = wrong.iter_mut().find(|c| c.len > 100) {
        c.len -= 1;
    }
    mismatch(
        stage_delta(b, b"r5", &v1.hash, &body, wrong, &expected).await,
        "wrong lengths",
    );
    // A base nobody references.
    match stage_delta(b, b"r6", &[3; 32], &body, chunks.clone(), &expected).await {
        Err(BackendError::BlobNotFound) => {}
        other => panic!("unknown base: expected blob_not_found, got {other:?}"),
    }
    for key in [&b"r1"[..], b"r2", b"r3", b"r4", b"r5", b"r6"] {
        assert_eq!(
            b.upload_status(&UploadKey::derive(key)).await.unwrap(),
            None,
            "a refused delta upload is discarded"
        );
    }
    assert_eq!(b.blob_size(&expected).await.unwrap(), None);
    assert_eq!(b.stat("d/r").await.unwrap().map(|e| e.version), Some(1));
}
