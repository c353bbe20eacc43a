//! A delta upload's content (docs/PROTOCOL.md §5.4), assembled into a new whole object: the
//! chunks the base lacks come from the upload's body, the others are ranges of the base's
//! object (or of the body, for a chunk repeated later). The plan is checked before anything
//! is read (every chunk found, lengths agree, the body used exactly); then runs of adjacent
//! ranges are read (up to one part at a time), every chunk's hash is checked, the whole is
//! hashed, and the object is written through the object store's buffered writer (one put,
//! or multipart parts for a large content). No chunk is shared between objects: a content
//! put as a delta is stored whole, like any other.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use ferry_backend::{BackendError, ChunkRef, Hash, Meta, Result};
use ferry_proto::chunking::{encode_list, is_needed, needed};
use object_store::ObjectStore;
use object_store::buffered::BufWriter;
use tokio::io::AsyncWriteExt;

use super::objects::{Objects, PART, s3};
use super::upload::{Body, SharedUpload};
use super::write::SharedStaged;

#[derive(Clone, Copy, PartialEq, Eq)]
enum From {
    Base,
    Body,
}

/// A run of adjacent ranges of one source: its start, length and chunks.
struct Run {
    from: From,
    start: u64,
    len: u64,
    chunks: Vec<(u32, Hash)>,
}

pub(crate) async fn finish_delta(
    up: &mut SharedUpload,
    expected: &Hash,
    base: &Hash,
    chunks: Vec<ChunkRef>,
) -> Result<SharedStaged> {
    let backend = up.backend().clone();
    let objects = backend.inner.objects.clone();
    let base_blob = backend
        .blob(base)
        .await?
        .ok_or(BackendError::BlobNotFound)?;
    let base_chunks = backend.chunks_of(base, &base_blob).await?;
    let body = up.complete_body().await?;
    let body_len = match &body {
        Body::Memory(b) => b.len() as u64,
        Body::Object(_, n) => *n,
    };
    let mismatch = || BackendError::HashMismatch {
        expected: *expected,
        actual: [0; 32],
    };

    // The plan: where each chunk's bytes are.
    let mut have: HashMap<Hash, (From, u64, u32)> = HashMap::new();
    let mut at = 0u64;
    for c in &base_chunks {
        have.entry(c.hash).or_insert((From::Base, at, c.len));
        at += u64::from(c.len);
    }
    let bitmap = needed(&chunks, |h| have.contains_key(h));
    let mut plan = Vec::with_capacity(chunks.len());
    let mut cursor = 0u64;
    for (i, c) in chunks.iter().enumerate() {
        if is_needed(&bitmap, i) {
            if cursor + u64::from(c.len) > body_len {
                return Err(mismatch());
            }
            have.insert(c.hash, (From::Body, cursor, c.len));
            cursor += u64::from(c.len);
        }
        let &(from, off, len) = have.get(&c.hash).ok_or_else(mismatch)?;
        if len != c.len {
            return Err(mismatch());
        }
        plan.push((from, off, len, c.hash));
    }
    if cursor != body_len {
        return Err(mismatch());
    }
    let size: u64 = plan.iter().map(|p| u64::from(p.2)).sum();

    let object = Objects::whole_name(expected);
    backend.note_staged(&object).await?;
    let store: Arc<dyn ObjectStore> = objects.store.clone();
    let mut writer = BufWriter::with_capacity(store, objects.path(&object), PART);
    let mut hasher = blake3::Hasher::new();
    let written: Result<()> = async {
        let mut run: Option<Run> = None;
        for (from, off, len, hash) in plan {
            if let Some(r) = &mut run
                && r.from == from
                && r.start + r.len == off
                && r.len + u64::from(len) <= PART as u64
            {
                r.len += u64::from(len);
                r.chunks.push((len, hash));
                continue;
            }
            if let Some(r) = run.take() {
                copy(
                    &r,
                    &body,
                    &objects,
                    &base_blob.object,
                    &mut hasher,
                    &mut writer,
                    expected,
                )
                .await?;
            }
            run = Some(Run {
                from,
                start: off,
                len: u64::from(len),
                chunks: vec![(len, hash)],
            });
        }
        if let Some(r) = run.take() {
            copy(
                &r,
                &body,
                &objects,
                &base_blob.object,
                &mut hasher,
                &mut writer,
                expected,
            )
            .await?;
        }
        let actual = *hasher.finalize().as_bytes();
        if actual != *expected {
            return Err(BackendError::HashMismatch {
                expected: *expected,
                actual,
            });
        }
        Ok(())
    }
    .await;
    let done = match written {
        Ok(()) => writer.shutdown().await.map_err(BackendError::Io),
        Err(e) => {
            let _ = writer.abort().await;
            Err(e)
        }
    };
    let staged = SharedStaged {
        hash: *expected,
        size,
        object,
        meta: Meta::default(),
        chunks: Some(encode_list(&chunks)),
    };
    if let Err(e) = done {
        backend.discard(&staged).await;
        return Err(e);
    }
    Ok(staged)
}

/// Reads one run, checks each of its chunks and writes it.
async fn copy(
    run: &Run,
    body: &Body,
    objects: &Objects,
    base_object: &str,
    hasher: &mut blake3::Hasher,
    writer: &mut BufWriter,
    expected: &Hash,
) -> Result<()> {
    let bytes: Bytes = match run.from {
        From::Base => {
            objects
                .get(base_object, run.start..run.start + run.len)
                .await?
        }
        From::Body => SharedUpload::body_range(body, objects, run.start, run.len).await?,
    };
    let mut at = 0usize;
    for &(len, hash) in &run.chunks {
        let piece = bytes
            .get(at..at + len as usize)
            .ok_or_else(|| BackendError::Corrupt("a read gave fewer bytes than asked".into()))?;
        if blake3::hash(piece).as_bytes() != &hash {
            return Err(BackendError::HashMismatch {
                expected: *expected,
                actual: [0; 32],
            });
        }
        at += len as usize;
    }
    hasher.update(&bytes);
    writer
        .put(bytes)
        .await
        .map_err(|e| s3("write an assembled content", e))
}
