//! Bodies shared by the HTTP front and the HTTP client, with no socket of their own: a
//! whole (small) body, or buffers handed over by a task through a bounded channel, so that
//! memory does not grow with a transfer; and the reading end of a signed body ([`BodyIn`]):
//! a chain of signed chunks (docs/HTTP.md §7) or a body whose SHA-256 was signed.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use ferry_proto::http::chunks::{Chunk, ChunkVerifier};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

/// Buffers a streamed body keeps in flight between its producer and the connection.
pub(crate) const DEPTH: usize = 4;

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
pub(crate) struct BodyIn {
    body: Incoming,
    check: Check,
    /// Bytes received and not yet handed out (chunked bodies: at most one chunk and a frame).
    buf: Vec<u8>,
    start: usize,
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
            buf: Vec::new(),
            start: 0,
            deadline,
            ended: false,
        }
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

    /// The next verified data, `Ok(None)` at the body's authentic end.
    pub(crate) async fn next(&mut self) -> Result<Option<Vec<u8>>, BodyError> {
        enum Step {
            Data(Vec<u8>, usize),
            End(usize),
            More,
        }
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
                    while let Some(data) = self.frame().await? {
                        if !data.is_empty() {
                            return Err(BodyError::NotAuthentic);
                        }
                    }
                    self.ended = true;
                }
                Check::Chunks(_, false) => {
                    let step = {
                        let Check::Chunks(verifier, _) = &mut self.check else {
                            return Err(BodyError::NotAuthentic);
                        };
                        match verifier.decode(&self.buf[self.start..]) {
                            Err(_) => return Err(BodyError::NotAuthentic),
                            Ok(Some((Chunk::Data(d), used))) => Step::Data(d.to_vec(), used),
                            Ok(Some((Chunk::End, used))) => Step::End(used),
                            Ok(None) => Step::More,
                        }
                    };
                    match step {
                        Step::Data(data, used) => {
                            self.start += used;
                            return Ok(Some(data));
                        }
                        Step::End(used) => {
                            self.start += used;
                            if self.start != self.buf.len() {
                                return Err(BodyError::NotAuthentic);
                            }
                            if let Check::Chunks(_, finished) = &mut self.check {
                                *finished = true;
                            }
                        }
                        Step::More => {
                            if self.start > 0 {
                                self.buf.drain(..self.start);
                                self.start = 0;
                            }
                            match self.frame().await? {
                                Some(data) => self.buf.extend_from_slice(&data),
                                // Cut before the signed final chunk.
                                None => return Err(BodyError::NotAuthentic),
                            }
                        }
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
