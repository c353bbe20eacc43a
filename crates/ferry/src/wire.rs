//! Frames over an async byte stream (inside TLS).

use std::sync::{Arc, Mutex};

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

/// A buffer for one outgoing data frame: the header is written in place in front of the
/// data, so a chunk goes to TLS in one write, without a copy.
///
/// The buffer is zeroed once, when the chunk is made; refilling a chunk (after
/// [`Chunk::clear`]) overwrites it without zeroing or allocating again, so a transfer can
/// cycle a few chunks through [`Spares`].
pub struct Chunk {
    /// Header, then `capacity` initialised bytes.
    buf: Vec<u8>,
    /// Bytes of data held.
    len: usize,
}

impl Chunk {
    /// An empty chunk that can hold up to `capacity` bytes of data.
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.min(frame::MAX_BODY_LEN);
        Self {
            buf: vec![0; HEADER_LEN + capacity],
            len: 0,
        }
    }

    /// Bytes of data held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if no data is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Most data the chunk holds.
    pub fn capacity(&self) -> usize {
        self.buf.len() - HEADER_LEN
    }

    /// How much more data fits.
    pub fn remaining(&self) -> usize {
        self.capacity() - self.len
    }

    /// Empties the chunk for reuse (its buffer stays).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// The data.
    pub fn data(&self) -> &[u8] {
        &self.buf[HEADER_LEN..HEADER_LEN + self.len]
    }

    /// Fills the chunk from `r` until it is full or `r` ends. Returns bytes added.
    pub fn fill_from(&mut self, r: &mut impl std::io::Read) -> std::io::Result<usize> {
        let start = self.len;
        while self.len < self.capacity() {
            match r.read(&mut self.buf[HEADER_LEN + self.len..]) {
                Ok(0) => break,
                Ok(n) => self.len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.len - start)
    }
}

/// Buffers handed back after use, for the next frame of the same transfer to reuse: a
/// transfer then cycles through a few buffers instead of allocating (and zeroing) one per
/// frame. Holds at most [`Spares::MAX`]; the owner drops it when the transfer ends, so idle
/// connections keep none.
pub struct Spares<T> {
    items: Arc<Mutex<Vec<T>>>,
}

impl<T> Clone for Spares<T> {
    fn clone(&self) -> Self {
        Self {
            items: self.items.clone(),
        }
    }
}

impl<T> Default for Spares<T> {
    fn default() -> Self {
        Self {
            items: Arc::new(Mutex::new(Vec::new())),
        }
    }
}

impl<T> Spares<T> {
    /// Most buffers kept.
    pub const MAX: usize = 8;

    /// Hands a buffer back; dropped if enough are kept already.
    pub fn give(&self, item: T) {
        if let Ok(mut items) = self.items.lock()
            && items.len() < Self::MAX
        {
            items.push(item);
        }
    }

    /// A buffer handed back earlier, if any.
    pub fn take(&self) -> Option<T> {
        self.items.lock().ok()?.pop()
    }
}

/// Largest frame accepted before the peer has authenticated.
pub const PRE_AUTH_LIMIT: usize = 16 * 1024;

/// A framed, bidirectional stream.
pub struct Wire<S> {
    stream: S,
    limit: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Wire<S> {
    /// Wraps a stream; frames may be as large as the protocol allows.
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            limit: frame::MAX_BODY_LEN,
        }
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

    /// The underlying stream, mutably.
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
        match self.stream.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(Error::Closed),
            Err(e) => return Err(Error::Io(e)),
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
        self.stream.read_exact(&mut body).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::Protocol("truncated frame".into())
            } else {
                Error::Io(e)
            }
        })?;
        match kind {
            Kind::Data => Ok(Incoming::Data(body)),
            Kind::Message => Message::decode(&body)
                .map(Incoming::Message)
                .map_err(|e| Error::Protocol(e.to_string())),
        }
    }

    /// Receives a frame that must be a message.
    pub async fn recv_message(&mut self) -> Result<Message, Error> {
        match self.recv().await? {
            Incoming::Message(m) => Ok(m),
            Incoming::Data(_) => Err(Error::Protocol("unexpected data frame".into())),
        }
    }

    /// Sends one message and flushes.
    pub async fn send(&mut self, msg: &Message) -> Result<(), Error> {
        self.queue(msg).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Sends one message without flushing, so that what follows can leave with it.
    pub async fn queue(&mut self, msg: &Message) -> Result<(), Error> {
        let body = msg.encode();
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        frame::encode(Kind::Message, &body, &mut out)
            .ok_or_else(|| Error::Internal("message larger than a frame".into()))?;
        self.stream.write_all(&out).await?;
        Ok(())
    }

    /// Sends one data frame (not flushed), reusing the chunk's buffer for the header.
    pub async fn send_chunk(&mut self, chunk: &mut Chunk) -> Result<(), Error> {
        let header = frame::encode_header(Kind::Data, chunk.len())
            .ok_or_else(|| Error::Internal("chunk larger than a frame".into()))?;
        chunk.buf[..HEADER_LEN].copy_from_slice(&header);
        self.stream
            .write_all(&chunk.buf[..HEADER_LEN + chunk.len])
            .await?;
        Ok(())
    }

    /// Flushes buffered output.
    pub async fn flush(&mut self) -> Result<(), Error> {
        self.stream.flush().await?;
        Ok(())
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
        assert!(matches!(b.recv().await, Err(Error::Protocol(_))));
    }
}
