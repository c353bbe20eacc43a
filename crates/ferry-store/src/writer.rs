//! Streaming uploads into `tmp/`.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::fsutil::{self, BLOB_FILE_MODE, TMP_FILE_MODE};
use crate::{Hash, Meta, StoreError};

/// Size of the write buffer in front of the temp file. Writes at least this large bypass it.
const WRITE_BUFFER: usize = 128 * 1024;

/// Deletes its temp file when dropped, unless disarmed.
#[derive(Debug)]
pub(crate) struct TempGuard {
    path: Option<PathBuf>,
}

impl TempGuard {
    /// Guards the file at `path`.
    pub(crate) fn new(path: PathBuf) -> TempGuard {
        TempGuard { path: Some(path) }
    }

    /// Guards nothing (a staged content without a file).
    pub(crate) fn none() -> TempGuard {
        TempGuard { path: None }
    }

    pub(crate) fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The file was moved away: do not delete anything on drop.
    pub(crate) fn disarm(&mut self) {
        self.path = None;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(path) = self.path.take()
            && let Err(e) = fsutil::remove_file_if_exists(&path)
        {
            tracing::warn!(path = %path.display(), error = %e, "could not remove temp file");
        }
    }
}

/// An upload in progress: a temp file in `tmp/` that hashes what is written to it.
///
/// Get one from [`Store::begin_put`](crate::Store::begin_put), write the content with
/// [`write_chunk`](Self::write_chunk) (or through [`std::io::Write`]), then call
/// [`finish`](Self::finish). Dropping it instead deletes the temp file.
#[derive(Debug)]
pub struct BlobWriter {
    file: BufWriter<File>,
    hasher: blake3::Hasher,
    len: u64,
    /// A write failed part way: the file and the hash may disagree, so `finish` refuses.
    failed: bool,
    guard: TempGuard,
}

impl BlobWriter {
    /// Creates the temp file at `path` (which must not exist), mode `0o600`.
    pub(crate) fn create(path: PathBuf) -> io::Result<BlobWriter> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(TMP_FILE_MODE)
            .open(&path)?;
        Ok(BlobWriter {
            file: BufWriter::with_capacity(WRITE_BUFFER, file),
            hasher: blake3::Hasher::new(),
            len: 0,
            failed: false,
            guard: TempGuard { path: Some(path) },
        })
    }

    /// Appends `data` to the upload and feeds it to the hash.
    ///
    /// After an error the writer is unusable: [`finish`](Self::finish) fails.
    pub fn write_chunk(&mut self, data: &[u8]) -> Result<(), StoreError> {
        if self.failed {
            return Err(failed_earlier().into());
        }
        if let Err(e) = self.file.write_all(data) {
            self.failed = true;
            return Err(e.into());
        }
        self.hasher.update(data);
        self.len += data.len() as u64;
        Ok(())
    }

    /// Number of bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Flushes and fsyncs the temp file, makes it read-only, and returns it with its hash
    /// and size, ready for [`Store::commit`](crate::Store::commit).
    pub fn finish(self) -> Result<StagedBlob, StoreError> {
        let BlobWriter {
            file,
            hasher,
            len,
            failed,
            guard,
        } = self;
        if failed {
            // `guard` drops here and deletes the temp file.
            return Err(failed_earlier().into());
        }
        let file = file.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.set_permissions(Permissions::from_mode(BLOB_FILE_MODE))?;
        file.sync_all()?;
        drop(file);
        Ok(StagedBlob::new(*hasher.finalize().as_bytes(), len, guard))
    }
}

fn failed_earlier() -> io::Error {
    io::Error::other("an earlier write to this upload failed")
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_chunk(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        Ok(self.write_chunk(buf)?)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.failed {
            return Err(failed_earlier());
        }
        self.file.flush().inspect_err(|_| self.failed = true)
    }
}

/// A finished, fsynced upload waiting for [`Store::commit`](crate::Store::commit).
///
/// Dropping it without committing deletes its temp file.
#[derive(Debug)]
pub struct StagedBlob {
    hash: Hash,
    size: u64,
    guard: TempGuard,
    meta: Meta,
    /// For a content put as a delta: where its chunks are (the staged file, if any, is
    /// the pack of the chunks it brought).
    composition: Option<Composition>,
}

/// A content made of chunks of blob files (store/packs.rs).
#[derive(Debug)]
pub(crate) struct Composition {
    /// The hash of the staged file (the pack), if the delta brought any chunk.
    pub(crate) pack: Option<Hash>,
    /// The staged file's size (the chunks the delta brought).
    pub(crate) pack_size: u64,
    pub(crate) extents: Vec<crate::store::Extent>,
}

impl StagedBlob {
    /// A staged file at the guard's path, with its verified hash and size.
    pub(crate) fn new(hash: Hash, size: u64, guard: TempGuard) -> StagedBlob {
        StagedBlob {
            hash,
            size,
            guard,
            meta: Meta::default(),
            composition: None,
        }
    }

    /// A content made of `composition`'s extents; the guard's file (if any) is its pack.
    pub(crate) fn composed(
        hash: Hash,
        size: u64,
        guard: TempGuard,
        composition: Composition,
    ) -> StagedBlob {
        StagedBlob {
            composition: Some(composition),
            ..StagedBlob::new(hash, size, guard)
        }
    }

    pub(crate) fn composition(&self) -> Option<&Composition> {
        self.composition.as_ref()
    }

    /// The size of the staged file.
    pub(crate) fn file_size(&self) -> u64 {
        match &self.composition {
            None => self.size,
            Some(c) => c.pack_size,
        }
    }

    /// The name of the staged file once placed: the content's hash, or its pack's.
    pub(crate) fn file_hash(&self) -> Option<Hash> {
        match &self.composition {
            None => Some(self.hash),
            Some(c) => c.pack,
        }
    }

    /// The metadata the version committed from this will carry.
    pub fn meta(&self) -> Meta {
        self.meta
    }

    /// Sets the metadata the version committed from this will carry.
    pub fn set_meta(&mut self, meta: Meta) {
        self.meta = meta;
    }

    /// BLAKE3 hash of the content.
    pub fn hash(&self) -> Hash {
        self.hash
    }

    /// Size of the content in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub(crate) fn guard_mut(&mut self) -> &mut TempGuard {
        &mut self.guard
    }
}
