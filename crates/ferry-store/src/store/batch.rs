//! Group commit of small contents held whole in memory (streamed puts, docs/PROTOCOL.md
//! §5.2): many puts share one file, one fsync pass and one index transaction, where each put
//! alone would pay a file, two fsyncs and a transaction of its own.
//!
//! The distinct non-empty contents of a batch are written back to back into one **pack**
//! (a blob file named by the BLAKE3 of its bytes, as a delta's pack is), and each content
//! gets a manifest whose extents point into it (store/packs.rs), so reads, chunk lists,
//! deltas and pruning treat them like any content made of chunks: the pack stays while a
//! live content uses it and goes with the last. A batch with a single distinct content, or
//! empty contents, stores them whole, as an ordinary commit does.
//!
//! Crash safety is an ordinary commit's: the pack is fsynced and placed (its folder
//! fsynced) before the one transaction that makes every version of the batch visible; a
//! crash before that commit leaves a pack no index entry references, which the next open
//! removes.

use std::collections::HashMap;

use ferry_proto::chunking::{ChunkRef, MIN_CHUNK, chunk_all};

use super::*;

/// One content to commit with [`Store::commit_batch`].
#[derive(Debug)]
pub struct SmallPut {
    /// The source it becomes the next version of.
    pub source: String,
    /// All of it.
    pub content: Vec<u8>,
    /// The BLAKE3 it must have.
    pub expected: Hash,
    /// The version's metadata.
    pub meta: Meta,
    /// Who commits it.
    pub by: String,
    /// When (unix seconds).
    pub now: u64,
}

/// How a distinct content of a batch is stored.
enum Placement {
    /// An extent list into the batch's pack.
    Packed(Vec<Extent>),
    /// A file of its own (the only distinct content, or empty); `None` once placed.
    Whole(Option<StagedBlob>),
}

/// The chunks of `content`, whose BLAKE3 is `hash`: below the smallest chunk it is one chunk.
fn chunks_of(content: &[u8], hash: &Hash) -> Vec<ChunkRef> {
    if content.len() <= MIN_CHUNK {
        return vec![ChunkRef {
            hash: *hash,
            // At most MIN_CHUNK: fits a u32.
            len: content.len() as u32,
        }];
    }
    chunk_all(content)
}

impl Store {
    /// Commits each of `puts` as the next version of its source, in order (two puts of one
    /// source get consecutive versions), and returns each one's entry or why it failed.
    /// A put whose content does not hash to `expected` fails with
    /// [`StoreError::HashMismatch`] and stores nothing; the others are committed together:
    /// one pack file, one fsync pass, one index transaction. Blocks on disk I/O.
    ///
    /// If the shared transaction fails, each put is retried alone, so one put that cannot be
    /// committed does not fail the others.
    pub fn commit_batch(&self, puts: Vec<SmallPut>) -> Vec<Result<Entry, StoreError>> {
        let mut results: Vec<Option<Result<Entry, StoreError>>> = Vec::with_capacity(puts.len());
        let mut valid = Vec::with_capacity(puts.len());
        for (i, put) in puts.into_iter().enumerate() {
            let actual = *blake3::hash(&put.content).as_bytes();
            if let Err(e) = check_by(&put.by) {
                results.push(Some(Err(e)));
            } else if actual != put.expected {
                results.push(Some(Err(StoreError::HashMismatch {
                    expected: put.expected,
                    actual,
                })));
            } else {
                results.push(None);
                valid.push((i, put));
            }
        }
        if !valid.is_empty() {
            let outcome = self.commit_together(&valid);
            match outcome {
                Ok(entries) => {
                    for ((i, _), entry) in valid.iter().zip(entries) {
                        results[*i] = Some(Ok(entry));
                    }
                }
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        puts = valid.len(),
                        "a group commit failed; committing its puts one by one"
                    );
                    for (i, put) in valid {
                        results[i] = Some(self.commit_alone(put));
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(StoreError::InvalidArgument("not committed".into()))))
            .collect()
    }

    /// One put committed by itself, as an ordinary upload of its content would be.
    fn commit_alone(&self, put: SmallPut) -> Result<Entry, StoreError> {
        let mut writer = self.begin_put()?;
        writer.write_chunk(&put.content)?;
        let mut staged = writer.finish()?;
        if staged.hash() != put.expected {
            return Err(StoreError::HashMismatch {
                expected: put.expected,
                actual: staged.hash(),
            });
        }
        staged.set_meta(put.meta);
        self.commit(&put.source, staged, &put.by, put.now)
    }

    /// Commits every put of `valid` (hashes checked) in one transaction.
    fn commit_together(&self, valid: &[(usize, SmallPut)]) -> Result<Vec<Entry>, StoreError> {
        // The distinct contents, in order of first appearance.
        let mut order: Vec<(Hash, &[u8])> = Vec::new();
        let mut seen: HashMap<Hash, usize> = HashMap::new();
        for (_, put) in valid {
            seen.entry(put.expected).or_insert_with(|| {
                order.push((put.expected, &put.content));
                order.len() - 1
            });
        }
        let packed: Vec<usize> = (0..order.len())
            .filter(|&k| !order[k].1.is_empty())
            .collect();
        let mut placements: Vec<Placement> = Vec::with_capacity(order.len());
        let mut pack_writer = None;
        if packed.len() >= 2 {
            let mut writer = self.begin_put()?;
            let mut at = 0u64;
            for (hash, content) in &order {
                if content.is_empty() {
                    // An empty file of its own, as an ordinary commit stores it.
                    placements.push(Placement::Whole(Some(self.begin_put()?.finish()?)));
                    continue;
                }
                writer.write_chunk(content)?;
                placements.push(Placement::Packed(
                    chunks_of(content, hash)
                        .into_iter()
                        .map(|c| {
                            let offset = at;
                            at += u64::from(c.len);
                            Extent {
                                chunk: c.hash,
                                len: c.len,
                                file: [0; 32], // the pack's name, known when it is finished
                                offset,
                            }
                        })
                        .collect(),
                ));
            }
            pack_writer = Some(writer);
        } else {
            for (_, content) in &order {
                let mut writer = self.begin_put()?;
                writer.write_chunk(content)?;
                placements.push(Placement::Whole(Some(writer.finish()?)));
            }
        }
        let pack = pack_writer.map(BlobWriter::finish).transpose()?;
        let pack_hash = pack.as_ref().map(StagedBlob::hash);
        if let Some(name) = pack_hash {
            for p in &mut placements {
                if let Placement::Packed(extents) = p {
                    for e in extents.iter_mut() {
                        e.file = name;
                    }
                }
            }
        }

        let (entries, mut freed, seq) = {
            let _placing = self.read_lock();
            if let Some(pack) = pack {
                self.place_blob(pack)?;
            }
            for p in &mut placements {
                if let Placement::Whole(staged) = p
                    && let Some(staged) = staged.take()
                {
                    self.place_blob(staged)?;
                }
            }
            let txn = self.db.begin_write()?;
            let mut entries = Vec::with_capacity(valid.len());
            let mut freed = Vec::new();
            let mut seq = 0;
            for (_, put) in valid {
                let k = seen.get(&put.expected).copied().unwrap_or_default();
                let composed = match placements.get(k) {
                    Some(Placement::Packed(extents)) => Some(Composed {
                        pack: None,
                        extents: extents.clone(),
                        // Small contents: left out of the chunk index (store/dedup.rs).
                        index: false,
                    }),
                    _ => None,
                };
                let content = (put.expected, put.content.len() as u64, put.meta);
                let (entry, f, s) =
                    self.commit_in(&txn, &put.source, content, composed, &put.by, put.now)?;
                entries.push(entry);
                freed.extend(f);
                seq = s;
            }
            txn.commit()?;
            (entries, freed, seq)
        };
        // Unused if every content of the batch was stored already: then it goes.
        freed.extend(pack_hash);
        self.notify(seq);
        self.remove_unreferenced(&freed);
        tracing::debug!(puts = valid.len(), seq, "committed a group of small puts");
        Ok(entries)
    }
}
