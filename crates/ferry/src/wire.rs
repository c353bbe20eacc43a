//! Frames over an async byte stream (inside TLS).

use ferry_proto::frame::{self, HEADER_LEN, Kind};
use ferry_proto::message::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::Error;

/// One received frame.
#[derive(Debug)]
pub enum Incoming {
    /// A control message.
    Message(Message),
    /// A chunk of transfer data.
    Data(Vec<u8>),
}

pub use crate::buf::{Chunk, Spares};

/// Largest frame accepted before the peer has authenticated.
pub const PRE_AUTH_LIMIT: usize = 16 * 1024;

/// Most bytes of small frames gathered before they go to the stream: one TLS record's worth
/// of plaintext (RFC 8446 §5.1), so gathered frames leave as one record and one write.
pub const GATHER_LIMIT: usize = 16 * 1024;

/// A framed, bidirectional stream.
///
/// Messages are gathered in a buffer and leave together on the next flush, so that an answer
/// and the small data frame behind it (or an authentication message and the request behind
/// it) travel as one TLS record in one write: with tokio-rustls every write to the stream is
/// its own record and its own system call. Nothing gathered stays behind when the wire waits
/// for the peer: a receive that would wait sends it first (and flushes what was written
/// without a flush), so an answer may be left gathered for the next one to join.
pub struct Wire<S> {
    stream: S,
    limit: usize,
    /// Encoded frames not yet written to the stream.
    out: Vec<u8>,
    /// Bytes were written to the stream since its last flush (the TLS layer may hold some).
    unflushed: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Wire<S> {
    /// Wraps a stream; frames may be as large as the protocol allows.
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            limit: frame::MAX_BODY_LEN,
            out: Vec::new(),
            unflushed: false,
        }
    }

    /// True if frames are gathered that have not been written to the stream yet.
    pub fn has_queued(&self) -> bool {
        !self.out.is_empty()
    }

    /// Sets the largest frame body accepted, so an unauthenticated peer cannot make us
    /// allocate a megabyte per connection.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit.min(frame::MAX_BODY_LEN);
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The underlying stream, mutably. Bytes written to it directly overtake gathered frames:
    /// [`Wire::flush`] first.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Receives one frame. A clean end of stream between frames is [`Error::Closed`].
    pub async fn recv(&mut self) -> Result<Incoming, Error> {
        self.recv_reusing(None).await
    }

    /// Like [`Wire::recv`], and receives a data frame into a buffer from `spares` when it
    /// has one (no allocation, no zeroing when the buffer is already long enough).
    pub async fn recv_reusing(
        &mut self,
        spares: Option<&Spares<Vec<u8>>>,
    ) -> Result<Incoming, Error> {
        let mut header = [0u8; HEADER_LEN];
        let mut have = 0;
        if self.has_queued() || self.unflushed {
            // Take what has already arrived; if nothing has, the peer may be waiting for
            // what is gathered here: send it before waiting.
            have = match self.read_ready(&mut header).await {
                Some(Ok(0)) => return Err(Error::Closed),
                Some(Ok(n)) => n,
                Some(Err(e)) => return Err(Error::Connection(e)),
                None => {
                    self.flush().await?;
                    0
                }
            };
        }
        self.recv_rest(header, have, spares).await
    }

    /// A frame the peer has begun to send, if any byte of one has arrived: then it waits for
    /// the rest of that frame. `None` if nothing has arrived (it does not wait, nor flush).
    /// For a sender that must hear an unasked answer between its own frames, such as a
    /// server's refusal in the middle of an upload.
    pub async fn recv_if_ready(&mut self) -> Result<Option<Incoming>, Error> {
        let mut header = [0u8; HEADER_LEN];
        let have = match self.read_ready(&mut header).await {
            None => return Ok(None),
            Some(Ok(0)) => return Err(Error::Closed),
            Some(Ok(n)) => n,
            Some(Err(e)) => return Err(Error::Connection(e)),
        };
        self.recv_rest(header, have, None).await.map(Some)
    }

    /// Waits for whichever comes first: a frame from the peer, received whole as
    /// [`Wire::recv`] receives it (`Ok(Ok(frame))`), or the end of `other` (`Ok(Err(output))`,
    /// nothing read). What is gathered is sent before waiting, as [`Wire::recv`] does. For a
    /// server that sends answers as the work behind them ends while the client sends on.
    pub async fn recv_or<F: std::future::Future + Unpin>(
        &mut self,
        other: &mut F,
    ) -> Result<Result<Incoming, F::Output>, Error> {
        let mut header = [0u8; HEADER_LEN];
        if self.has_queued() || self.unflushed {
            match self.read_ready(&mut header).await {
                Some(Ok(0)) => return Err(Error::Closed),
                Some(Ok(n)) => return self.recv_rest(header, n, None).await.map(Ok),
                Some(Err(e)) => return Err(Error::Connection(e)),
                None => self.flush().await?,
            }
        }
        let first = {
            let stream = &mut self.stream;
            let header = &mut header;
            std::future::poll_fn(|cx| {
                use std::task::Poll;
                let mut rb = tokio::io::ReadBuf::new(&mut header[..]);
                match std::pin::Pin::new(&mut *stream).poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) => return Poll::Ready(Ok(Ok(rb.filled().len()))),
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
                std::pin::Pin::new(&mut *other)
                    .poll(cx)
                    .map(|out| Ok(Err(out)))
            })
            .await
        };
        match first {
            Err(e) => Err(Error::Connection(e)),
            Ok(Err(out)) => Ok(Err(out)),
            Ok(Ok(0)) => Err(Error::Closed),
            Ok(Ok(n)) => self.recv_rest(header, n, None).await.map(Ok),
        }
    }

    /// The rest of a frame whose first `have` header bytes are in `header`.
    async fn recv_rest(
        &mut self,
        mut header: [u8; HEADER_LEN],
        mut have: usize,
        spares: Option<&Spares<Vec<u8>>>,
    ) -> Result<Incoming, Error> {
        // The length field first: a zero or oversized length is refused as soon as its four
        // bytes are in, without waiting for the kind byte (PROTOCOL.md §2).
        if have < frame::LENGTH_LEN {
            self.read_header(&mut header[have..frame::LENGTH_LEN], have == 0)
                .await?;
            have = frame::LENGTH_LEN;
        }
        let mut length = [0u8; frame::LENGTH_LEN];
        length.copy_from_slice(&header[..frame::LENGTH_LEN]);
        let len = frame::decode_length(length).map_err(|e| Error::Protocol(e.to_string()))?;
        if len > self.limit {
            return Err(Error::Protocol(format!(
                "frame of {len} bytes exceeds {}",
                self.limit
            )));
        }
        if have < HEADER_LEN {
            self.read_header(&mut header[have..], false).await?;
        }
        let (kind, len) =
            frame::decode_header(header).map_err(|e| Error::Protocol(e.to_string()))?;
        if len > self.limit {
            return Err(Error::Protocol(format!(
                "frame of {len} bytes exceeds {}",
                self.limit
            )));
        }
        let spare = match kind {
            Kind::Data => spares.and_then(Spares::take),
            Kind::Message => None,
        };
        let mut body = match spare {
            Some(mut spare) => {
                // Every byte of it is overwritten below (or the frame is an error).
                spare.resize(len, 0);
                spare
            }
            None => vec![0u8; len],
        };
        self.stream
            .read_exact(&mut body)
            .await
            .map_err(|e| mid_frame(e, false))?;
        match kind {
            Kind::Data => Ok(Incoming::Data(body)),
            Kind::Message => Message::decode(&body)
                .map(Incoming::Message)
                .map_err(|e| Error::Protocol(e.to_string())),
        }
    }

    /// Reads the rest of a frame header; an end of stream is [`Error::Closed`] if `first`
    /// (nothing of the frame was read), a truncation otherwise.
    async fn read_header(&mut self, buf: &mut [u8], first: bool) -> Result<(), Error> {
        match self.stream.read_exact(buf).await {
            Ok(_) => Ok(()),
            Err(e) => Err(mid_frame(e, first)),
        }
    }

    /// Receives a frame that must be a message.
    pub async fn recv_message(&mut self) -> Result<Message, Error> {
        match self.recv().await? {
            Incoming::Message(m) => Ok(m),
            Incoming::Data(_) => Err(Error::Protocol("unexpected data frame".into())),
        }
    }

    /// Reads into `buf` only what can be read without waiting: `None` if nothing can yet.
    async fn read_ready(&mut self, buf: &mut [u8]) -> Option<std::io::Result<usize>> {
        let stream = &mut self.stream;
        std::future::poll_fn(|cx| {
            let mut rb = tokio::io::ReadBuf::new(&mut *buf);
            match std::pin::Pin::new(&mut *stream).poll_read(cx, &mut rb) {
                std::task::Poll::Ready(Ok(())) => {
                    std::task::Poll::Ready(Some(Ok(rb.filled().len())))
                }
                std::task::Poll::Ready(Err(e)) => std::task::Poll::Ready(Some(Err(e))),
                std::task::Poll::Pending => std::task::Poll::Ready(None),
            }
        })
        .await
    }

    /// Sends one message and flushes (with anything gathered before it).
    pub async fn send(&mut self, msg: &Message) -> Result<(), Error> {
        self.queue(msg).await?;
        self.flush().await
    }

    /// Gathers one message; it leaves on the next flush, with what follows it.
    pub async fn queue(&mut self, msg: &Message) -> Result<(), Error> {
        let body = msg.encode();
        frame::encode(Kind::Message, &body, &mut self.out)
            .ok_or_else(|| Error::Internal("message larger than a frame".into()))?;
        if self.out.len() > GATHER_LIMIT {
            self.write_out().await?;
        }
        Ok(())
    }

    /// Sends one data frame (not flushed), reusing the chunk's buffer for the header. A small
    /// chunk joins the frames gathered before it; a large one is written as it is.
    pub async fn send_chunk(&mut self, chunk: &mut Chunk) -> Result<(), Error> {
        let header = frame::encode_header(Kind::Data, chunk.len())
            .ok_or_else(|| Error::Internal("chunk larger than a frame".into()))?;
        chunk.buf[..HEADER_LEN].copy_from_slice(&header);
        let framed = &chunk.buf[..HEADER_LEN + chunk.len];
        if self.has_queued() && self.out.len() + framed.len() <= GATHER_LIMIT {
            self.out.extend_from_slice(framed);
            return Ok(());
        }
        self.write_out().await?;
        self.unflushed = true;
        self.stream
            .write_all(framed)
            .await
            .map_err(Error::Connection)?;
        Ok(())
    }

    /// Writes the gathered frames to the stream (without flushing the stream).
    async fn write_out(&mut self) -> Result<(), Error> {
        if self.has_queued() {
            self.unflushed = true;
            self.stream
                .write_all(&self.out)
                .await
                .map_err(Error::Connection)?;
            self.out.clear();
            // A large message (a long listing) must not pin its buffer to an idle connection.
            if self.out.capacity() > 2 * GATHER_LIMIT {
                self.out = Vec::new();
            }
        }
        Ok(())
    }

    /// Sends everything gathered and flushes the stream.
    pub async fn flush(&mut self) -> Result<(), Error> {
        self.write_out().await?;
        self.stream.flush().await.map_err(Error::Connection)?;
        self.unflushed = false;
        Ok(())
    }

    /// Sends everything gathered, then shuts the sending side down (TLS close_notify).
    pub async fn shutdown(&mut self) -> Result<(), Error> {
        self.write_out().await?;
        self.stream.shutdown().await.map_err(Error::Connection)?;
        Ok(())
    }
}

/// A read of a frame that failed: the stream ended before any of it (`first`: a clean close,
/// [`Error::Closed`]), ended inside it, or broke.
fn mid_frame(e: std::io::Error, first: bool) -> Error {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof if first => Error::Closed,
        std::io::ErrorKind::UnexpectedEof => Error::Connection(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "it ended in the middle of a frame",
        )),
        _ => Error::Connection(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_and_chunks_round_trip() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut a = Wire::new(a);
        let mut b = Wire::new(b);
        let msg = Message::Stat(ferry_proto::message::SourceRef { source: "x".into() });
        a.send(&msg).await.unwrap();
        let mut chunk = Chunk::with_capacity(10);
        chunk.fill_from(&mut &b"0123456789abc"[..]).unwrap();
        assert_eq!(chunk.data(), b"0123456789");
        a.send_chunk(&mut chunk).await.unwrap();
        a.flush().await.unwrap();
        drop(a);
        assert_eq!(b.recv_message().await.unwrap(), msg);
        match b.recv().await.unwrap() {
            Incoming::Data(d) => assert_eq!(d, b"0123456789"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(b.recv().await, Err(Error::Closed)));
    }

    #[tokio::test]
    async fn reused_chunks_and_buffers_carry_only_the_new_frame() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut a = Wire::new(a);
        let mut b = Wire::new(b);
        let mut chunk = Chunk::with_capacity(8);
        chunk.fill_from(&mut &b"abcdefgh"[..]).unwrap();
        a.send_chunk(&mut chunk).await.unwrap();
        chunk.clear();
        assert_eq!(chunk.remaining(), 8);
        chunk.fill_from(&mut &b"xyz"[..]).unwrap();
        assert_eq!(chunk.data(), b"xyz");
        a.send_chunk(&mut chunk).await.unwrap();
        a.send(&Message::Stat(ferry_proto::message::SourceRef {
            source: "x".into(),
        }))
        .await
        .unwrap();
        let spares = Spares::default();
        spares.give(vec![7u8; 100]);
        let Incoming::Data(d) = b.recv_reusing(Some(&spares)).await.unwrap() else {
            panic!("expected data")
        };
        assert_eq!(d, b"abcdefgh");
        assert!(d.capacity() >= 100, "the spare was not reused");
        spares.give(d);
        let Incoming::Data(d) = b.recv_reusing(Some(&spares)).await.unwrap() else {
            panic!("expected data")
        };
        assert_eq!(d, b"xyz");
        spares.give(d);
        // Messages never take a spare.
        assert!(matches!(
            b.recv_reusing(Some(&spares)).await.unwrap(),
            Incoming::Message(Message::Stat(_))
        ));
        assert!(spares.take().is_some());
    }

    #[tokio::test]
    async fn recv_if_ready_does_not_wait_for_nothing_and_reads_a_whole_frame() {
        let stat = |s: &str| Message::Stat(ferry_proto::message::SourceRef { source: s.into() });
        let (a, b) = tokio::io::duplex(1 << 16);
        let (mut a, mut b) = (Wire::new(a), Wire::new(b));
        assert!(
            b.recv_if_ready().await.unwrap().is_none(),
            "nothing has arrived"
        );
        // Half a frame has arrived: it waits for the rest of that frame, then returns it.
        let mut whole = Vec::new();
        frame::encode(Kind::Message, &stat("x").encode(), &mut whole).unwrap();
        let (first, rest) = whole.split_at(3);
        a.get_mut().write_all(first).await.unwrap();
        let rest = rest.to_vec();
        let late = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            a.get_mut().write_all(&rest).await.unwrap();
            a
        });
        assert!(matches!(
            b.recv_if_ready().await.unwrap(),
            Some(Incoming::Message(Message::Stat(_)))
        ));
        let a = late.await.unwrap();
        assert!(b.recv_if_ready().await.unwrap().is_none());
        drop(a);
        assert!(matches!(b.recv_if_ready().await, Err(Error::Closed)));
    }

    #[tokio::test]
    async fn recv_or_returns_whichever_comes_first_and_sends_what_is_gathered_before_waiting() {
        let stat = |s: &str| Message::Stat(ferry_proto::message::SourceRef { source: s.into() });
        let (a, b) = tokio::io::duplex(1 << 16);
        let (mut a, mut b) = (Wire::new(a), Wire::new(b));
        // Nothing arrives: the other future's end is returned, and nothing was read.
        let (tx, mut rx) = tokio::sync::oneshot::channel::<u32>();
        b.queue(&stat("gathered")).await.unwrap();
        let ends = tokio::spawn(async move {
            // What b gathered reached a before b's wait could end.
            let m = a.recv_message().await.unwrap();
            tx.send(7).unwrap();
            (a, m)
        });
        let first = tokio::time::timeout(std::time::Duration::from_secs(10), b.recv_or(&mut rx))
            .await
            .expect("the gathered frame was not sent before waiting");
        assert!(matches!(first.unwrap(), Err(Ok(7))));
        let (mut a, m) = ends.await.unwrap();
        assert_eq!(m, stat("gathered"));
        // A frame arrives first (half of it at first): it is received whole.
        let mut pending = std::future::pending::<()>();
        let mut whole = Vec::new();
        frame::encode(Kind::Message, &stat("x").encode(), &mut whole).unwrap();
        let (first, rest) = whole.split_at(2);
        a.get_mut().write_all(first).await.unwrap();
        let rest = rest.to_vec();
        let late = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            a.get_mut().write_all(&rest).await.unwrap();
            a
        });
        let Ok(Incoming::Message(m)) = b.recv_or(&mut pending).await.unwrap() else {
            panic!("expected the frame")
        };
        assert_eq!(m, stat("x"));
        drop(late.await.unwrap());
        assert!(matches!(b.recv_or(&mut pending).await, Err(Error::Closed)));
    }

    #[tokio::test]
    async fn gathered_frames_leave_together_and_before_any_wait() {
        let stat = |s: &str| Message::Stat(ferry_proto::message::SourceRef { source: s.into() });
        let (a, b) = tokio::io::duplex(1 << 16);
        let (mut a, mut b) = (Wire::new(a), Wire::new(b));
        // Queued frames stay here until a flush.
        a.queue(&stat("one")).await.unwrap();
        let mut chunk = Chunk::with_capacity(4);
        chunk.fill_from(&mut &b"data"[..]).unwrap();
        a.send_chunk(&mut chunk).await.unwrap();
        assert!(a.has_queued());
        let quiet = tokio::time::timeout(std::time::Duration::from_millis(50), b.recv()).await;
        assert!(quiet.is_err(), "a queued frame left without a flush");

        // When the peer's next frame is already there, a receive takes it and still holds
        // the queued frames back (they will leave with the answer).
        b.send(&stat("two")).await.unwrap();
        assert_eq!(a.recv_message().await.unwrap(), stat("two"));
        assert!(a.has_queued());

        // A receive that would wait sends them first, so the peer can answer.
        let waiter = tokio::spawn(async move {
            let m = a.recv_message().await.unwrap();
            (a, m)
        });
        assert_eq!(b.recv_message().await.unwrap(), stat("one"));
        assert!(matches!(b.recv().await.unwrap(), Incoming::Data(d) if d == b"data"));
        b.send(&stat("three")).await.unwrap();
        let (mut a, m) = waiter.await.unwrap();
        assert_eq!(m, stat("three"));
        assert!(!a.has_queued());

        // A large chunk is not copied into the gather buffer, and keeps its order.
        a.queue(&stat("four")).await.unwrap();
        let mut big = Chunk::with_capacity(GATHER_LIMIT + 1);
        big.fill_from(&mut std::io::Read::take(
            std::io::repeat(9),
            (GATHER_LIMIT + 1) as u64,
        ))
        .unwrap();
        a.send_chunk(&mut big).await.unwrap();
        assert!(!a.has_queued());
        a.shutdown().await.unwrap();
        assert_eq!(b.recv_message().await.unwrap(), stat("four"));
        assert!(
            matches!(b.recv().await.unwrap(), Incoming::Data(d) if d.len() == GATHER_LIMIT + 1)
        );
        assert!(matches!(b.recv().await, Err(Error::Closed)));
    }

    #[tokio::test]
    async fn oversized_and_truncated_frames_are_errors() {
        use tokio::io::AsyncWriteExt;
        let (mut a, b) = tokio::io::duplex(64);
        let mut b = Wire::new(b);
        a.write_all(&[0x7f, 0xff, 0xff, 0xff, 0x02]).await.unwrap();
        assert!(matches!(b.recv().await, Err(Error::Protocol(_))));

        let (mut a, b) = tokio::io::duplex(64);
        let mut b = Wire::new(b);
        b.set_limit(PRE_AUTH_LIMIT);
        a.write_all(&[0, 0, 0x40, 0x02, 0x02]).await.unwrap();
        assert!(matches!(b.recv().await, Err(Error::Protocol(_))));

        let (mut a, b) = tokio::io::duplex(64);
        let mut b = Wire::new(b);
        a.write_all(&[0, 0, 0, 10, 0x02, 1, 2]).await.unwrap();
        drop(a);
        assert!(
            matches!(b.recv().await, Err(Error::Connection(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof)
        );
    }

    #[tokio::test]
    async fn a_zero_or_oversized_length_is_refused_without_a_fifth_byte() {
        use tokio::io::AsyncWriteExt;
        for (length, limit) in [
            ([0u8, 0, 0, 0], frame::MAX_BODY_LEN),
            ([0, 0x10, 0, 1], frame::MAX_BODY_LEN),
            ([0, 0, 0x40, 2], PRE_AUTH_LIMIT),
        ] {
            // The writer stays open and sends nothing more: no kind byte ever comes.
            let (mut a, b) = tokio::io::duplex(64);
            let mut b = Wire::new(b);
            b.set_limit(limit);
            a.write_all(&length).await.unwrap();
            let r = tokio::time::timeout(std::time::Duration::from_secs(5), b.recv()).await;
            assert!(
                matches!(r, Ok(Err(Error::Protocol(_)))),
                "{length:?}: {r:?}"
            );
            drop(a);
        }
    }
}
