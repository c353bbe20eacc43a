//! Where `ferry get --via http` writes a file: an [`AsyncWrite`] that hands each write to a
//! blocking thread, which writes it to the file and BLAKE3-hashes it. The download then needs
//! no second pass over the file to check its hash, and writing and hashing overlap with
//! receiving and verifying the next chunk. A bounded channel keeps memory to a few buffers.

use std::io::Write;
use std::pin::Pin;
use std::sync::mpsc as std_mpsc;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use tokio::sync::mpsc;

/// Buffers in flight to the writer thread.
const DEPTH: usize = 4;

type Reserve = Pin<
    Box<dyn Future<Output = Result<mpsc::OwnedPermit<Vec<u8>>, mpsc::error::SendError<()>>> + Send>,
>;

/// The writing end; [`Sink::finish`] waits for the thread and returns the file's length and
/// BLAKE3.
pub struct Sink {
    tx: mpsc::Sender<Vec<u8>>,
    reserve: Option<Reserve>,
    /// Buffers the thread has written, to copy the next writes into.
    spent: std_mpsc::Receiver<Vec<u8>>,
    /// Bytes accepted so far (all of them reach the file unless the thread fails).
    accepted: u64,
    thread: tokio::task::JoinHandle<std::io::Result<(std::fs::File, [u8; 32], u64)>>,
}

impl Sink {
    /// Writes to `file` from its current position, hashing what is written.
    pub fn new(mut file: std::fs::File) -> Self {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(DEPTH);
        let (give, spent) = std_mpsc::sync_channel(DEPTH + 1);
        let thread = tokio::task::spawn_blocking(move || {
            let mut hasher = blake3::Hasher::new();
            let mut len = 0u64;
            while let Some(buf) = rx.blocking_recv() {
                file.write_all(&buf)?;
                hasher.update(&buf);
                len += buf.len() as u64;
                // Dropped when the writing end is gone or has enough.
                let _ = give.try_send(buf);
            }
            Ok((file, *hasher.finalize().as_bytes(), len))
        });
        Self {
            tx,
            reserve: None,
            spent,
            accepted: 0,
            thread,
        }
    }

    /// Bytes accepted so far: where a resumed download continues.
    pub fn accepted(&self) -> u64 {
        self.accepted
    }

    /// Waits until everything accepted is written; the file, its BLAKE3 and its length.
    pub async fn finish(self) -> std::io::Result<(std::fs::File, [u8; 32], u64)> {
        let Self { tx, thread, .. } = self;
        drop(tx);
        thread
            .await
            .map_err(|e| std::io::Error::other(format!("writer thread failed: {e}")))?
    }
}

impl AsyncWrite for Sink {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let reserve = this
            .reserve
            .get_or_insert_with(|| Box::pin(this.tx.clone().reserve_owned()));
        let permit = match reserve.as_mut().poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(r) => {
                this.reserve = None;
                r.map_err(|_| std::io::Error::other("the file's writer thread stopped"))?
            }
        };
        let mut buf = this.spent.try_recv().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(data);
        permit.send(buf);
        this.accepted += data.len() as u64;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // What was accepted is queued for the thread; `finish` waits for it.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
