//! Moving transfer bytes between blocking files and the async connection.
//!
//! Disk reads and writes, and hashing, run on a blocking thread; the async task only moves
//! chunks between that thread and TLS. A bounded channel of [`DEPTH`] chunks sits between
//! them, so memory stays at a few chunks whatever the size of the transfer, and hashing runs
//! on another core than decryption.

use std::io::{Read, Write};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::Error;
use crate::buf::{Chunk, Spares};

/// Bytes of data per frame.
pub const CHUNK: usize = 256 * 1024;
/// Chunks in flight between the blocking thread and the connection.
pub const DEPTH: usize = 4;

/// What a reader thread produced: total bytes read and, if asked, their BLAKE3 hash.
pub struct ReadDone {
    /// Bytes read.
    pub len: u64,
    /// BLAKE3 of the bytes, when hashing was asked for.
    pub hash: Option<[u8; 32]>,
}

/// Reads `r` to its end (or `limit` bytes) on a blocking thread, in chunks. Chunks given
/// back to the returned [`Spares`] once sent are refilled instead of new ones.
#[allow(clippy::type_complexity)]
pub fn spawn_reader<R: Read + Send + 'static>(
    mut r: R,
    limit: Option<u64>,
    hash: bool,
) -> (
    mpsc::Receiver<Chunk>,
    Spares<Chunk>,
    JoinHandle<Result<ReadDone, Error>>,
) {
    let (tx, rx) = mpsc::channel(DEPTH);
    let spares: Spares<Chunk> = Spares::default();
    let reuse = spares.clone();
    let handle = tokio::task::spawn_blocking(move || {
        let mut hasher = hash.then(blake3::Hasher::new);
        let mut len = 0u64;
        loop {
            let want = match limit {
                Some(l) => (l - len).min(CHUNK as u64) as usize,
                None => CHUNK,
            };
            if want == 0 {
                break;
            }
            let mut chunk = match reuse.take() {
                Some(mut c) if c.capacity() >= want => {
                    c.clear();
                    c
                }
                _ => Chunk::with_capacity(want),
            };
            let n = chunk.fill_from(&mut (&mut r).take(want as u64))?;
            if n == 0 {
                break;
            }
            len += n as u64;
            if let Some(h) = hasher.as_mut() {
                h.update(chunk.data());
            }
            if tx.blocking_send(chunk).is_err() {
                // The connection side gave up; it reports why.
                break;
            }
        }
        Ok(ReadDone {
            len,
            hash: hasher.map(|h| *h.finalize().as_bytes()),
        })
    });
    (rx, spares, handle)
}

/// Reads a blob range to its end in frame-sized chunks, on a blocking thread of its own
/// (driving the reader with `Handle::block_on`, so a backend that reads in place, like the
/// local one, costs no thread hand-off per chunk), keeping up to [`DEPTH`] chunks ahead of
/// the connection. Buffers given back to the returned [`Spares`]
/// (with [`Chunk::into_framed`]) are refilled instead of new ones. The task ends with the
/// number of bytes read; it stops early if the receiver is dropped.
#[allow(clippy::type_complexity)]
pub(crate) fn spawn_blob_reader<R: ferry_backend::BlobReader>(
    mut r: R,
) -> (
    mpsc::Receiver<Chunk>,
    Spares<Vec<u8>>,
    JoinHandle<Result<u64, Error>>,
) {
    let (tx, rx) = mpsc::channel(DEPTH);
    let spares: Spares<Vec<u8>> = Spares::default();
    let reuse = spares.clone();
    let rt = tokio::runtime::Handle::current();
    let handle = tokio::task::spawn_blocking(move || {
        rt.block_on(async move {
            let mut len = 0u64;
            while r.remaining() > 0 {
                let buf = reuse.take().unwrap_or_else(|| Chunk::framed_buffer(CHUNK));
                let buf = r.read_into(buf, CHUNK).await?;
                let chunk = Chunk::from_framed(buf)
                    .ok_or_else(|| Error::Internal("a blob read overfilled a frame".into()))?;
                if chunk.is_empty() {
                    return Err(Error::Internal("a blob read ended early".into()));
                }
                len += chunk.len() as u64;
                if tx.send(chunk).await.is_err() {
                    // The connection side gave up; it reports why.
                    break;
                }
            }
            Ok(len)
        })
    });
    (rx, spares, handle)
}

/// What a writer thread is told.
pub enum WriteCmd {
    /// Write these bytes.
    Data(Vec<u8>),
    /// All data has been sent; finish up.
    Finish,
}

/// Writes every chunk to `w` and runs `finish` at the end, on a blocking thread. If the
/// channel closes without [`WriteCmd::Finish`] (the transfer was cut), `finish` is not
/// called and the thread returns `None`, dropping the writer. Written buffers go back to the
/// returned [`Spares`], for [`Wire::recv_reusing`](crate::wire::Wire::recv_reusing).
#[allow(clippy::type_complexity)]
pub fn spawn_writer<W, T, F>(
    mut w: W,
    finish: F,
) -> (
    mpsc::Sender<WriteCmd>,
    Spares<Vec<u8>>,
    JoinHandle<Result<Option<T>, Error>>,
)
where
    W: Write + Send + 'static,
    T: Send + 'static,
    F: FnOnce(W) -> Result<T, Error> + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel(DEPTH);
    let spares = Spares::default();
    let written = spares.clone();
    let handle = tokio::task::spawn_blocking(move || {
        while let Some(cmd) = rx.blocking_recv() {
            match cmd {
                WriteCmd::Data(buf) => {
                    w.write_all(&buf)?;
                    written.give(buf);
                }
                WriteCmd::Finish => return finish(w).map(Some),
            }
        }
        Ok(None)
    });
    (tx, spares, handle)
}

/// A writer that hashes what passes through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: blake3::Hasher,
    len: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: blake3::Hasher::new(),
            len: 0,
        }
    }

    /// Wraps `inner`, continuing a hash that already covers the first `len` bytes (a
    /// resumed download).
    pub fn resuming(inner: W, hasher: blake3::Hasher, len: u64) -> Self {
        Self { inner, hasher, len }
    }

    /// The inner writer, the hash and the length.
    pub fn into_parts(self) -> (W, [u8; 32], u64) {
        (self.inner, *self.hasher.finalize().as_bytes(), self.len)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Waits for a blocking task, turning a panic or cancellation into an error.
pub async fn join<T>(h: JoinHandle<Result<T, Error>>) -> Result<T, Error> {
    h.await
        .map_err(|e| Error::Internal(format!("worker thread failed: {e}")))?
}
