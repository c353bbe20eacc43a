//! Finishing a delta upload (docs/PROTOCOL.md §5.4): the part holds the chunks the base
//! lacked; the content is every chunk of the list, taken from the base or the part, checked
//! chunk by chunk and as a whole, and staged as a manifest plus (if it brought any chunk)
//! the part as a new pack.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;

use ferry_proto::chunking::{ChunkRef, is_needed, needed};

use super::*;
use crate::store::Extent;
use crate::writer::Composition;

/// Where a chunk's bytes are while the content is checked.
#[derive(Clone, Copy)]
enum Loc {
    /// In a file of the base content.
    Base { file: Hash, offset: u64 },
    /// In the part, at this offset.
    Part { offset: u64 },
}

impl Store {
    /// Ends the delta upload `up` (see [`ferry_backend::Upload::finish_delta`]). On any
    /// mismatch the part is deleted and the error is [`StoreError::HashMismatch`]; if
    /// `base` is not visible it is deleted too and the error is [`StoreError::BlobNotFound`].
    pub fn finish_delta(
        &self,
        mut up: ResumableUpload,
        expected: &Hash,
        base: &Hash,
        chunks: &[ChunkRef],
    ) -> Result<StagedBlob, StoreError> {
        let file = up.file.take().ok_or_else(|| {
            StoreError::InvalidArgument("an earlier write to this upload failed".into())
        })?;
        let discard = |file: File, up: &ResumableUpload, err: StoreError| {
            drop(file);
            fsutil::remove_file_if_exists(&up.path)?;
            Err(err)
        };
        let mismatch = |actual: Hash| StoreError::HashMismatch {
            expected: *expected,
            actual,
        };
        let Some(base_extents) = self.extents(base)? else {
            return discard(file, &up, StoreError::BlobNotFound);
        };
        // The base's files, opened under the lock: readable even if it is pruned now.
        let mut files: HashMap<Hash, File> = HashMap::new();
        {
            let _reading = self.read_lock();
            for e in &base_extents {
                if files.contains_key(&e.file) {
                    continue;
                }
                let (_, path) = blob_location(&self.blobs, &e.file);
                match File::open(&path) {
                    Ok(f) => {
                        files.insert(e.file, f);
                    }
                    Err(err) if err.kind() == io::ErrorKind::NotFound => {
                        return discard(file, &up, StoreError::BlobNotFound);
                    }
                    Err(err) => return Err(err.into()),
                }
            }
        }
        let mut have: HashMap<Hash, (Loc, u32)> = HashMap::with_capacity(base_extents.len());
        for e in &base_extents {
            have.entry(e.chunk).or_insert((
                Loc::Base {
                    file: e.file,
                    offset: e.offset,
                },
                e.len,
            ));
        }
        let bitmap = needed(chunks, |h| have.contains_key(h));

        // The pack's name is the BLAKE3 of the part, which the upload hashed as it grew.
        let pack = *up.hasher.finalize().as_bytes();
        let mut whole = blake3::Hasher::new();
        let mut extents = Vec::with_capacity(chunks.len());
        let mut buf = Vec::new();
        let mut cursor = 0u64;
        let mut size = 0u64;
        for (i, c) in chunks.iter().enumerate() {
            buf.resize(c.len as usize, 0);
            let loc = if is_needed(&bitmap, i) {
                if cursor + u64::from(c.len) > up.len {
                    return discard(file, &up, mismatch([0; 32]));
                }
                file.read_exact_at(&mut buf, cursor)
                    .map_err(read::short_file)?;
                if blake3::hash(&buf).as_bytes() != &c.hash {
                    return discard(file, &up, mismatch([0; 32]));
                }
                let loc = Loc::Part { offset: cursor };
                have.insert(c.hash, (loc, c.len));
                cursor += u64::from(c.len);
                loc
            } else {
                let Some(&(loc, len)) = have.get(&c.hash) else {
                    return discard(file, &up, mismatch([0; 32]));
                };
                if len != c.len {
                    return discard(file, &up, mismatch([0; 32]));
                }
                match loc {
                    Loc::Base { file: f, offset } => {
                        let from = files.get(&f).ok_or(StoreError::BlobNotFound)?;
                        from.read_exact_at(&mut buf, offset)
                            .map_err(read::short_file)?;
                    }
                    Loc::Part { offset } => {
                        file.read_exact_at(&mut buf, offset)
                            .map_err(read::short_file)?;
                    }
                }
                loc
            };
            whole.update(&buf);
            size += u64::from(c.len);
            let (file_hash, offset) = match loc {
                Loc::Base { file, offset } => (file, offset),
                Loc::Part { offset } => (pack, offset),
            };
            extents.push(Extent {
                chunk: c.hash,
                len: c.len,
                file: file_hash,
                offset,
            });
        }
        let actual = *whole.finalize().as_bytes();
        if cursor != up.len || actual != *expected {
            return discard(file, &up, mismatch(actual));
        }
        let (guard, pack) = if up.len == 0 {
            drop(file);
            fsutil::remove_file_if_exists(&up.path)?;
            (TempGuard::none(), None)
        } else {
            let staged = up.tmp.join(&up.staged_name);
            fs::rename(&up.path, &staged)?;
            let guard = TempGuard::new(staged);
            file.set_permissions(std::fs::Permissions::from_mode(fsutil::BLOB_FILE_MODE))?;
            file.sync_all()?;
            (guard, Some(pack))
        };
        Ok(StagedBlob::composed(
            actual,
            size,
            guard,
            Composition {
                pack,
                pack_size: up.len,
                extents,
            },
        ))
    }
}
