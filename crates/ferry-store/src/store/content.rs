//! A visible content opened for reading: its own file, or the pieces of blob files its
//! manifest names (store/packs.rs), all held open so that a prune meanwhile does not matter.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::packs::Layout;
use super::*;

/// One run of a content's bytes inside one file.
#[derive(Debug)]
struct Piece {
    /// Where it starts in the content.
    start: u64,
    len: u64,
    file: Arc<File>,
    /// Where it starts in the file.
    offset: u64,
}

/// A content opened for reading, positioned at 0 (it implements [`Read`] and [`Seek`]).
#[derive(Debug)]
pub struct Content {
    size: u64,
    pieces: Vec<Piece>,
    pos: u64,
    /// Counts it among the store's open reads while it lives (the dedup worker waits for
    /// none, dedup_worker.rs).
    _reading: Reading,
}

/// One open read, counted in the store's `open_reads` while it lives.
#[derive(Debug)]
pub(crate) struct Reading(Arc<AtomicU64>);

impl Reading {
    fn new(count: &Arc<AtomicU64>) -> Reading {
        count.fetch_add(1, Ordering::Relaxed);
        Reading(count.clone())
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Content {
    /// Size of the content in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Fills `buf` with the content's bytes from `offset`; an error if that runs past the
    /// end or a file is shorter than the index says.
    pub fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > self.size)
        {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of a content",
            ));
        }
        // The piece holding `offset`: the last one starting at or before it.
        let mut i = self
            .pieces
            .partition_point(|p| p.start <= offset)
            .saturating_sub(1);
        while !buf.is_empty() {
            let p = self.pieces.get(i).ok_or_else(short)?;
            let within = offset - p.start;
            let n = (p.len - within).min(buf.len() as u64) as usize;
            let (now, rest) = buf.split_at_mut(n);
            p.file.read_exact_at(now, p.offset + within).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    short()
                } else {
                    e
                }
            })?;
            buf = rest;
            offset += n as u64;
            i += 1;
        }
        Ok(())
    }

    /// The single file holding the whole content in order, if it is one.
    pub(crate) fn single_file(&self) -> Option<&File> {
        match self.pieces.as_slice() {
            [p] if p.start == 0 && p.offset == 0 => Some(&p.file),
            _ => None,
        }
    }
}

/// A content that is one whole file.
fn whole(file: File, reading: Reading) -> Result<Content, StoreError> {
    let size = file.metadata()?.len();
    Ok(Content {
        size,
        pieces: vec![Piece {
            start: 0,
            len: size,
            file: Arc::new(file),
            offset: 0,
        }],
        pos: 0,
        _reading: reading,
    })
}

fn short() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "a blob file is shorter than its record",
    )
}

impl Read for Content {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (self.size - self.pos.min(self.size)).min(buf.len() as u64) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.read_exact_at(&mut buf[..n], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Content {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos =
            pos.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before 0"))?;
        if let Some(file) = self.single_file() {
            // Keep the file's own position in step, for readers that use it directly.
            let mut f = file;
            f.seek(SeekFrom::Start(self.pos))?;
        }
        Ok(self.pos)
    }
}

impl Store {
    /// Opens the file of the content `hash` whether or not a version references it; `None`
    /// if there is no such file. Called with the read lock held.
    pub(super) fn open_file_content(&self, hash: &Hash) -> Result<Option<Content>, StoreError> {
        let (_, path) = blob_location(&self.blobs, hash);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(Some(whole(file, Reading::new(&self.open_reads))?))
    }

    /// Opens the visible content `hash`; `None` if no kept version references it. Called
    /// with the read lock held.
    pub(super) fn open_content(&self, hash: &Hash) -> Result<Option<Content>, StoreError> {
        let Some(layout) = self.layout(hash)? else {
            return Ok(None);
        };
        match layout {
            Layout::Whole => {
                let Some(file) = self.open_visible_file(hash)? else {
                    return Ok(None);
                };
                Ok(Some(whole(file, Reading::new(&self.open_reads))?))
            }
            Layout::Extents(extents) => {
                let mut files: HashMap<Hash, Arc<File>> = HashMap::new();
                let mut pieces: Vec<Piece> = Vec::with_capacity(extents.len());
                let mut at = 0u64;
                for e in &extents {
                    let file = match files.get(&e.file) {
                        Some(f) => f.clone(),
                        None => {
                            let (_, path) = blob_location(&self.blobs, &e.file);
                            let f = Arc::new(File::open(&path).map_err(|err| {
                                if err.kind() == io::ErrorKind::NotFound {
                                    StoreError::Corrupt(format!(
                                        "blob {} used by content {} is missing",
                                        hex(&e.file),
                                        hex(hash)
                                    ))
                                } else {
                                    err.into()
                                }
                            })?);
                            files.insert(e.file, f.clone());
                            f
                        }
                    };
                    let len = u64::from(e.len);
                    // Runs that continue in the same file become one piece.
                    match pieces.last_mut() {
                        Some(last)
                            if Arc::ptr_eq(&last.file, &file)
                                && last.offset + last.len == e.offset =>
                        {
                            last.len += len;
                        }
                        _ => pieces.push(Piece {
                            start: at,
                            len,
                            file,
                            offset: e.offset,
                        }),
                    }
                    at += len;
                }
                Ok(Some(Content {
                    size: at,
                    pieces,
                    pos: 0,
                    _reading: Reading::new(&self.open_reads),
                }))
            }
        }
    }
}
