//! Transfer buffers shared by the engine, the pipes to blocking threads and the framing
//! layer: [`Chunk`] (data with room for a frame header in front, so a chunk goes out without
//! a copy) and [`Spares`] (buffers handed back for the next frame of the same transfer).

use std::sync::{Arc, Mutex};

use ferry_proto::frame::{self, HEADER_LEN};

/// A buffer for one outgoing data frame: the header is written in place in front of the
/// data, so a chunk goes to TLS in one write, without a copy.
///
/// The buffer is zeroed once, when the chunk is made; refilling a chunk (after
/// [`Chunk::clear`]) overwrites it without zeroing or allocating again, so a transfer can
/// cycle a few chunks through [`Spares`].
pub struct Chunk {
    /// Header, then `capacity` initialised bytes.
    pub(crate) buf: Vec<u8>,
    /// Bytes of data held.
    pub(crate) len: usize,
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

    /// An empty buffer with room for a frame header in front and `capacity` bytes of data
    /// after it: what a reader appends data to before [`Chunk::from_framed`].
    pub fn framed_buffer(capacity: usize) -> Vec<u8> {
        let capacity = capacity.min(frame::MAX_BODY_LEN);
        let mut buf = Vec::with_capacity(HEADER_LEN + capacity);
        buf.resize(HEADER_LEN, 0);
        buf
    }

    /// The chunk of a buffer that holds header room and then the data (see
    /// [`Chunk::framed_buffer`]); `None` if it is shorter than the header room or holds more
    /// than a frame. The chunk is full: its capacity is its data.
    pub fn from_framed(buf: Vec<u8>) -> Option<Self> {
        let len = buf.len().checked_sub(HEADER_LEN)?;
        (len <= frame::MAX_BODY_LEN).then_some(Self { buf, len })
    }

    /// The buffer back, emptied to its header room, for [`Chunk::from_framed`] again.
    pub fn into_framed(self) -> Vec<u8> {
        let mut buf = self.buf;
        buf.truncate(HEADER_LEN);
        buf
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
