//! Bodies shared by the HTTP front and the HTTP client, with no socket of their own: a
//! whole (small) body, or buffers handed over by a task through a bounded channel, so that
//! memory does not grow with a transfer; and the reading end of a signed body ([`BodyIn`]):
//! a chain of signed chunks (docs/HTTP.md §7) or a body whose SHA-256 was signed.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use ferry_proto::http::chunks::{CHUNK_HEADER_LEN, ChunkVerifier, chunk_len};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::buf::Spares;

/// Buffers a streamed body keeps in flight between its producer and the connection (a
/// signed chunk may take two: its header and its data).
pub(crate) const DEPTH: usize = 8;

/// `buf[range]` as [`Bytes`] without a copy; `buf`, cut to its first `keep` bytes, goes back
/// to `spares` once the connection has sent it (and dropped the last reference), so a stream
/// cycles a few buffers instead of allocating one per chunk.
pub(crate) fn lend(
    buf: Vec<u8>,
    range: std::ops::Range<usize>,
    keep: usize,
    spares: &Spares<Vec<u8>>,
) -> Bytes {
    struct Lent {
        buf: Vec<u8>,
        keep: usize,
        spares: Spares<Vec<u8>>,
    }
    impl AsRef<[u8]> for Lent {
        fn as_ref(&self) -> &[u8] {
            &self.buf
        }
    }
    impl Drop for Lent {
        fn drop(&mut self) {
            let mut buf = std::mem::take(&mut self.buf);
            buf.truncate(self.keep);
            self.spares.give(buf);
        }
    }
    let len = buf.len();
    let range = range.start.min(len)..range.end.min(len);
    Bytes::from_owner(Lent {
        buf,
        keep,
        spares: spares.clone(),
    })
    .slice(range)
}

/// An outgoing body.
#[derive(Debug)]
pub(crate) enum OutBody {
    /// All of it (or nothing, once sent).
    Full(Option<Bytes>),
    /// Buffers from a producer task; an `Err` aborts the body (and the connection).
    Stream(mpsc::Receiver<Result<Bytes, std::io::Error>>),
}

impl OutBody {
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        Self::Full(Some(bytes.into()))
    }

    /// A streamed body and the sender its producer feeds.
    pub(crate) fn channel() -> (mpsc::Sender<Result<Bytes, std::io::Error>>, Self) {
        let (tx, rx) = mpsc::channel(DEPTH);
        (tx, Self::Stream(rx))
    }
}

impl Body for OutBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            Self::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Self::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Self::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Self::Full(None) => SizeHint::with_exact(0),
            Self::Stream(_) => SizeHint::default(),
        }
    }
}

/// Why a signed body could not be read.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// Not as signed: a chunk failed, the body was cut before its signed end, something
    /// followed it, or the whole body's hash differs.
    NotAuthentic,
    /// Longer than the reader allows.
    TooLong,
    /// Nothing arrived within the deadline.
    Timeout,
    /// The connection failed.
    Connection(hyper::Error),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotAuthentic => f.write_str("body not as signed"),
            Self::TooLong => f.write_str("body too long"),
            Self::Timeout => f.write_str("body stalled"),
            Self::Connection(e) => write!(f, "connection failed: {e}"),
        }
    }
}

enum Check {
    /// Signed chunks; `true` once the signed final chunk arrived.
    Chunks(ChunkVerifier, bool),
    /// The SHA-256 the signature covers, and the running hash.
    Hashed([u8; 32], Sha256),
}

/// The reading end of a signed body: hands out data only as the signature allows. Chunked
/// data is handed out once its chunk verified; a hashed body's data is handed out as it
/// arrives and the hash is checked at its end, so the caller must not act on it (commit an
/// upload, believe a reply) before [`BodyIn::next`] returned `Ok(None)`.
///
/// A chunk's data is copied once, from the connection's frames into the buffer handed out
/// (taken from [`BodyIn::recycle`]'s spares when there are some); its header is gathered
/// apart. At most one chunk is held.
pub(crate) struct BodyIn {
    body: Incoming,
    check: Check,
    /// What is left of the last frame received.
    frame: Bytes,
    /// The current chunk's header, `have` bytes of it so far.
    header: [u8; CHUNK_HEADER_LEN],
    have: usize,
    /// The current chunk's data so far (its length is in the header).
    data: Vec<u8>,
    spares: Spares<Vec<u8>>,
    deadline: Duration,
    ended: bool,
}

impl BodyIn {
    /// A body sent as signed chunks.
    pub(crate) fn chunked(body: Incoming, verifier: ChunkVerifier, deadline: Duration) -> Self {
        Self::new(body, Check::Chunks(verifier, false), deadline)
    }

    /// A body whose SHA-256 is `hash`.
    pub(crate) fn hashed(body: Incoming, hash: [u8; 32], deadline: Duration) -> Self {
        Self::new(body, Check::Hashed(hash, Sha256::new()), deadline)
    }

    fn new(body: Incoming, check: Check, deadline: Duration) -> Self {
        Self {
            body,
            check,
            frame: Bytes::new(),
            header: [0; CHUNK_HEADER_LEN],
            have: 0,
            data: Vec::new(),
            spares: Spares::default(),
            deadline,
            ended: false,
        }
    }

    /// Takes the buffers of chunks from `spares` (where their consumer gives them back).
    pub(crate) fn with_spares(mut self, spares: Spares<Vec<u8>>) -> Self {
        self.spares = spares;
        self
    }

    /// Gives back a buffer [`BodyIn::next`] handed out, for a later chunk.
    pub(crate) fn recycle(&self, buf: Vec<u8>) {
        self.spares.give(buf);
    }

    async fn frame(&mut self) -> Result<Option<Bytes>, BodyError> {
        loop {
            match tokio::time::timeout(self.deadline, self.body.frame()).await {
                Err(_) => return Err(BodyError::Timeout),
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => return Err(BodyError::Connection(e)),
                // Trailers carry nothing ferry reads.
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }

    /// Makes sure some bytes of a frame are at hand; a body cut before its signed final
    /// chunk is not authentic.
    async fn fill(&mut self) -> Result<(), BodyError> {
        while self.frame.is_empty() {
            match self.frame().await? {
                Some(data) => self.frame = data,
                None => return Err(BodyError::NotAuthentic),
            }
        }
        Ok(())
    }

    /// The next verified data, `Ok(None)` at the body's authentic end.
    pub(crate) async fn next(&mut self) -> Result<Option<Vec<u8>>, BodyError> {
        loop {
            if self.ended {
                return Ok(None);
            }
            match &self.check {
                Check::Hashed(..) => {
                    let data = self.frame().await?;
                    let Check::Hashed(expected, hasher) = &mut self.check else {
                        return Err(BodyError::NotAuthentic);
                    };
                    let Some(data) = data else {
                        self.ended = true;
                        let got: [u8; 32] = std::mem::take(hasher).finalize().into();
                        return if got == *expected {
                            Ok(None)
                        } else {
                            Err(BodyError::NotAuthentic)
                        };
                    };
                    hasher.update(&data);
                    if !data.is_empty() {
                        return Ok(Some(data.to_vec()));
                    }
                }
                Check::Chunks(_, true) => {
                    // After the signed end, only the end of the body may come.
                    if !self.frame.is_empty() {
                        return Err(BodyError::NotAuthentic);
                    }
                    while let Some(data) = self.frame().await? {
                        if !data.is_empty() {
                            return Err(BodyError::NotAuthentic);
                        }
                    }
                    self.ended = true;
                }
                Check::Chunks(_, false) => {
                    // The header, possibly spread over frames.
                    while self.have < CHUNK_HEADER_LEN {
                        self.fill().await?;
                        let take = (CHUNK_HEADER_LEN - self.have).min(self.frame.len());
                        self.header[self.have..self.have + take]
                            .copy_from_slice(&self.frame[..take]);
                        self.frame.advance(take);
                        self.have += take;
                    }
                    let len = chunk_len(&self.header).map_err(|_| BodyError::NotAuthentic)?;
                    if self.data.capacity() == 0 {
                        self.data = self.spares.take().unwrap_or_default();
                        self.data.clear();
                    }
                    self.data.reserve(len);
                    // The data: copied once, from the frames into the buffer handed out.
                    while self.data.len() < len {
                        self.fill().await?;
                        let take = (len - self.data.len()).min(self.frame.len());
                        self.data.extend_from_slice(&self.frame[..take]);
                        self.frame.advance(take);
                    }
                    self.have = 0;
                    let Check::Chunks(verifier, finished) = &mut self.check else {
                        return Err(BodyError::NotAuthentic);
                    };
                    match verifier.check(&self.header, &self.data) {
                        Err(_) => return Err(BodyError::NotAuthentic),
                        Ok(true) => *finished = true,
                        Ok(false) => return Ok(Some(std::mem::take(&mut self.data))),
                    }
                }
            }
        }
    }

    /// Reads and drops the rest of the body (see [`drain`]).
    pub(crate) async fn drain(mut self, cap: u64) {
        drain(&mut self.body, cap, self.deadline).await;
    }

    /// The whole body, at most `limit` bytes, once it verified.
    pub(crate) async fn read_all(mut self, limit: usize) -> Result<Vec<u8>, BodyError> {
        let mut out = Vec::new();
        while let Some(data) = self.next().await? {
            if out.len() + data.len() > limit {
                return Err(BodyError::TooLong);
            }
            out.extend_from_slice(&data);
        }
        Ok(out)
    }
}

/// Reads and drops what is left of `body`, at most `cap` bytes and each piece within
/// `deadline`: a server that answers before it read a request's body (a refusal) takes the
/// rest first, so that a proxy in front reads the answer rather than a connection reset.
/// Past `cap`, or when the sender stalls, it gives up and the connection closes.
pub(crate) async fn drain(body: &mut Incoming, cap: u64, deadline: Duration) {
    let mut left = cap;
    while let Ok(Some(Ok(frame))) = tokio::time::timeout(deadline, body.frame()).await {
        let len = frame.data_ref().map_or(0, |d| d.len() as u64);
        if len > left {
            return;
        }
        left -= len;
    }
}
