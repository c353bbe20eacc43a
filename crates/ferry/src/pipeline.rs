//! Pipelined requests on one connection (docs/PROTOCOL.md §5.2): gets, or streamed puts of
//! small contents, sent ahead of their answers; the answers read back in order. This is how a
//! folder of many small files moves without a round trip per file.

use std::collections::VecDeque;
use std::io::Write;

use ferry_backend::Meta;
use ferry_proto::message::{Digest, Entry, Get, Message, Put, PutEnd};
use ferry_proto::names::SourceName;

use crate::buf::Chunk;
use crate::client::{Progress, RESPONSE_TIMEOUT};
use crate::pipe::{self, HashingWriter};
use crate::wire::Incoming;
use crate::{Client, Error};

/// How many requests the reference client keeps outstanding (PROTOCOL.md §5.2, rule 4).
pub const WINDOW: usize = 32;

/// The largest content sent as a streamed put; larger ones go as resumable puts.
pub const STREAMED_MAX: u64 = 1 << 20;

/// A downloaded content, from [`Pipeline::recv_get_with`].
#[derive(Debug)]
pub enum Content<W> {
    /// A small content, received in memory.
    Bytes(Vec<u8>),
    /// A larger one, written to the writer made for it.
    Written(W),
}

/// A request sent ahead, whose answer is still to be read.
enum Ahead {
    Get {
        source: String,
    },
    Put {
        source: String,
        size: u64,
        hash: Digest,
    },
}

/// Requests in flight on one [`Client`]'s connection: send with [`Pipeline::send_get`] or
/// [`Pipeline::send_put`], read each answer, in the order sent, with [`Pipeline::recv_get`]
/// or [`Pipeline::recv_put`]. Gets and puts are not mixed while answers are outstanding.
///
/// An error from a `recv_*` concerns that one request as long as [`Pipeline::is_usable`]
/// stays true (a refusal, a hash mismatch, a local writer that failed): the next answers can
/// still be read. Once it is false the connection is lost, and the requests still
/// outstanding were not carried out.
pub struct Pipeline<'a> {
    client: &'a mut Client,
    ahead: VecDeque<Ahead>,
    usable: bool,
}

impl std::fmt::Debug for Pipeline<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("outstanding", &self.ahead.len())
            .field("usable", &self.usable)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Starts pipelining on this connection (after checking the server's proof, if that is
    /// still due: nothing goes ahead of it).
    pub async fn pipeline(&mut self) -> Result<Pipeline<'_>, Error> {
        self.verified().await?;
        Ok(Pipeline {
            client: self,
            ahead: VecDeque::new(),
            usable: true,
        })
    }
}

impl Pipeline<'_> {
    /// How many answers are still to be read.
    pub fn outstanding(&self) -> usize {
        self.ahead.len()
    }

    /// Whether the connection still carries the answers (see [`Pipeline`]).
    pub fn is_usable(&self) -> bool {
        self.usable
    }

    /// Marks the connection lost if `e` means it is.
    fn settle(&mut self, e: Error) -> Error {
        if matches!(
            e,
            Error::Connection(_)
                | Error::Closed
                | Error::Timeout(_)
                | Error::Protocol(_)
                | Error::Tls(_)
                | Error::AuthFailed
                | Error::ShuttingDown
                | Error::Busy(_)
                | Error::Internal(_)
        ) {
            self.usable = false;
        }
        e
    }

    fn check(&self, get: bool) -> Result<(), Error> {
        if !self.usable {
            return Err(Error::Closed);
        }
        match self.ahead.front() {
            Some(Ahead::Get { .. }) if !get => Err(Error::Internal(
                "a put sent ahead while a get is outstanding".into(),
            )),
            Some(Ahead::Put { .. }) if get => Err(Error::Internal(
                "a get sent ahead while a put is outstanding".into(),
            )),
            _ => Ok(()),
        }
    }

    /// Sends out what is gathered (requests also leave on their own as soon as an answer is
    /// awaited).
    pub async fn flush(&mut self) -> Result<(), Error> {
        let r = tokio::time::timeout(RESPONSE_TIMEOUT, self.client.wire.flush())
            .await
            .map_err(|_| Error::Timeout("the server to accept requests"))
            .and_then(|r| r);
        r.map_err(|e| self.settle(e))
    }

    /// Sends `get {source}` (its current version) ahead.
    pub async fn send_get(&mut self, source: &str) -> Result<(), Error> {
        self.check(true)?;
        let name = SourceName::parse(source)?;
        let msg = Message::Get(Get {
            source: name.to_string(),
            version: None,
            offset: 0,
            len: None,
        });
        if let Err(e) = self.client.wire.queue(&msg).await {
            return Err(self.settle(e));
        }
        self.ahead.push_back(Ahead::Get {
            source: name.to_string(),
        });
        Ok(())
    }

    /// Reads the answer to the oldest get and its content into `w`, checking its BLAKE3.
    /// [`Error::HashMismatch`]: the bytes written to `w` must be discarded.
    pub async fn recv_get<W: Write + Send + 'static>(
        &mut self,
        w: W,
        progress: Progress<'_>,
    ) -> Result<(Entry, W), Error> {
        let Some(Ahead::Get { source }) = self.ahead.pop_front() else {
            return Err(Error::Internal("no get outstanding".into()));
        };
        let ok = match self.client.recv().await {
            Ok(Message::GetOk(ok)) if ok.offset == 0 && ok.entry.source == source => ok,
            Ok(m) => return Err(self.settle(Client::unexpected(&m))),
            Err(e) => return Err(self.settle(e)),
        };
        match self
            .client
            .receive_into(&ok.entry, 0, HashingWriter::new(w), progress, true)
            .await
        {
            Ok(w) => Ok((ok.entry, w)),
            Err(e) => Err(self.settle(e)),
        }
    }

    /// Reads the answer to the oldest get: a content of at most [`STREAMED_MAX`] bytes is
    /// received here, in memory ([`Content::Bytes`], no thread hand-off: many small files
    /// go fastest this way); a larger one goes into the writer `open` makes for its entry
    /// ([`Content::Written`]). Its BLAKE3 is checked either way. If `open` fails, the
    /// content is read and dropped (the connection stays usable) and the error returned.
    pub async fn recv_get_with<W: Write + Send + 'static>(
        &mut self,
        open: impl FnOnce(&Entry) -> std::io::Result<W>,
        progress: Progress<'_>,
    ) -> Result<(Entry, Content<W>), Error> {
        let Some(Ahead::Get { source }) = self.ahead.pop_front() else {
            return Err(Error::Internal("no get outstanding".into()));
        };
        let ok = match self.client.recv().await {
            Ok(Message::GetOk(ok)) if ok.offset == 0 && ok.entry.source == source => ok,
            Ok(m) => return Err(self.settle(Client::unexpected(&m))),
            Err(e) => return Err(self.settle(e)),
        };
        let entry = ok.entry;
        if entry.size <= STREAMED_MAX {
            return match self.receive_inline(&entry, true, progress).await {
                Ok(bytes) => Ok((entry, Content::Bytes(bytes))),
                Err(e) => Err(self.settle(e)),
            };
        }
        let w = match open(&entry) {
            Ok(w) => w,
            Err(e) => {
                return match self.receive_inline(&entry, false, progress).await {
                    Ok(_) => Err(Error::Io(e)),
                    Err(e) => Err(self.settle(e)),
                };
            }
        };
        match self
            .client
            .receive_into(&entry, 0, HashingWriter::new(w), progress, true)
            .await
        {
            Ok(w) => Ok((entry, Content::Written(w))),
            Err(e) => Err(self.settle(e)),
        }
    }

    /// Receives a get's data frames on this task, hashing them, keeping them if `keep`.
    async fn receive_inline(
        &mut self,
        entry: &Entry,
        keep: bool,
        progress: Progress<'_>,
    ) -> Result<Vec<u8>, Error> {
        let mut kept = Vec::new();
        let mut hasher = blake3::Hasher::new();
        let mut received = 0u64;
        // Bounded: every frame adds at least one byte, and at most `entry.size` are taken.
        while received < entry.size {
            let frame = tokio::time::timeout(RESPONSE_TIMEOUT, self.client.wire.recv())
                .await
                .map_err(|_| Error::Timeout("download data"))??;
            let Incoming::Data(buf) = frame else {
                return Err(Error::Protocol(
                    "message in the middle of a download".into(),
                ));
            };
            received += buf.len() as u64;
            if received > entry.size {
                return Err(Error::Protocol("more data than announced".into()));
            }
            hasher.update(&buf);
            if keep {
                if kept.is_empty() {
                    kept = buf;
                } else {
                    kept.extend_from_slice(&buf);
                }
            }
            progress(received);
        }
        if *hasher.finalize().as_bytes() != entry.hash {
            return Err(Error::HashMismatch);
        }
        Ok(kept)
    }

    /// Sends `content` as a streamed put to `source` (at most [`STREAMED_MAX`] bytes): the
    /// request, the content and its `put_end`, without waiting for `put_ready`.
    pub async fn send_put(&mut self, source: &str, content: &[u8]) -> Result<(), Error> {
        self.send_put_with(source, content, Meta::default()).await
    }

    /// [`Pipeline::send_put`] with the file's metadata ([`crate::client::file_meta`]), kept
    /// with the version.
    pub async fn send_put_with(
        &mut self,
        source: &str,
        content: &[u8],
        meta: Meta,
    ) -> Result<(), Error> {
        self.check(false)?;
        let name = SourceName::parse(source)?;
        let size = content.len() as u64;
        if size > STREAMED_MAX {
            return Err(Error::Internal(
                "content too large for a streamed put".into(),
            ));
        }
        let hash = *blake3::hash(content).as_bytes();
        let sent = tokio::time::timeout(RESPONSE_TIMEOUT, async {
            let wire = &mut self.client.wire;
            wire.queue(&Message::Put(Put {
                source: name.to_string(),
                size: Some(size),
                offset: 0,
                hash: None,
                streamed: true,
                mtime: meta.mtime,
                executable: meta.executable,
                chunks: None,
            }))
            .await?;
            for piece in content.chunks(pipe::CHUNK) {
                let mut buf = Chunk::framed_buffer(piece.len());
                buf.extend_from_slice(piece);
                let mut chunk = Chunk::from_framed(buf)
                    .ok_or_else(|| Error::Internal("chunk larger than a frame".into()))?;
                wire.send_chunk(&mut chunk).await?;
            }
            wire.queue(&Message::PutEnd(PutEnd { size, hash })).await
        })
        .await
        .map_err(|_| Error::Timeout("the server to accept data"))
        .and_then(|r| r);
        if let Err(e) = sent {
            return Err(self.settle(e));
        }
        self.ahead.push_back(Ahead::Put {
            source: name.to_string(),
            size,
            hash,
        });
        Ok(())
    }

    /// Reads the answer to the oldest streamed put: the stored entry, or why it was refused.
    pub async fn recv_put(&mut self) -> Result<Entry, Error> {
        let Some(Ahead::Put { source, size, hash }) = self.ahead.pop_front() else {
            return Err(Error::Internal("no put outstanding".into()));
        };
        match self.client.recv().await {
            Ok(Message::PutReady(r)) if r.offset == 0 => {}
            Ok(m) => return Err(self.settle(Client::unexpected(&m))),
            // Refused before its content: the server dropped the content.
            Err(e) => return Err(self.settle(e)),
        }
        match self.client.recv().await {
            Ok(Message::PutOk(e)) if e.hash == hash && e.size == size && e.source == source => {
                Ok(e)
            }
            Ok(m) => Err(self.settle(Client::unexpected(&m))),
            Err(e) => Err(self.settle(e)),
        }
    }
}
