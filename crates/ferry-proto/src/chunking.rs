//! Content-defined chunks (docs/PROTOCOL.md §5.4): how a version's content is cut into
//! chunks named by their BLAKE3 hash, so that a changed file moves only the chunks that
//! changed (a delta put or get) and the server keeps each chunk once.
//!
//! Cut points come from FastCDC (Xia et al., "The Design of Fast Content-Defined Chunking
//! for Data Deduplication Based Storage Systems", IEEE TPDS 2020): the gear hash with
//! normalized chunking (level 1) and "rolling two bytes each time", as the `fastcdc` crate's
//! `v2020` module implements it, with its default gear table and no seed. Another
//! implementation must cut at exactly the same places: the parameters below and the vectors
//! in the tests (also in PROTOCOL.md) pin them.
//!
//! Everything here is pure: bytes in, cut points and chunk lists out.

use crate::message::Digest;

/// No chunk is shorter than this, except the last one of a content.
pub const MIN_CHUNK: usize = 16 * 1024;
/// The size chunks are normalised towards.
pub const AVG_CHUNK: usize = 64 * 1024;
/// No chunk is longer than this.
pub const MAX_CHUNK: usize = 256 * 1024;

/// One chunk of a content: its BLAKE3 hash and its length in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChunkRef {
    /// BLAKE3 of the chunk's bytes.
    pub hash: Digest,
    /// Its length (1 to [`MAX_CHUNK`] bytes).
    pub len: u32,
}

/// Bytes of one encoded [`ChunkRef`] in a chunk list: the hash, then the length (u32 BE).
pub const CHUNK_REF_LEN: usize = 36;

/// The most chunks a chunk list in one message may hold (it must fit a message, with room
/// for the rest of the message): 24,576 chunks, about 1.9 GiB of content at the average size.
pub const MAX_LIST_CHUNKS: usize = 24 * 1024;

/// The masks of FastCDC 2020 for [`AVG_CHUNK`] at normalization level 1: `(mask_s, mask_l)`
/// (a stricter mask before the average size, a looser one after).
fn masks() -> (u64, u64) {
    fastcdc::v2020::select_masks(AVG_CHUNK, fastcdc::v2020::Normalization::Level1)
}

/// Where the chunk starting at `data[0]` ends: `Some(len)` once that is known, `None` if more
/// bytes are needed. With `last` set, `data` runs to the end of the content and the answer is
/// always `Some` (for non-empty `data`). A caller feeding a stream keeps at least
/// [`MAX_CHUNK`] bytes (or the rest of the content) in front of the chunker.
pub fn next_cut(data: &[u8], last: bool) -> Option<usize> {
    if data.is_empty() {
        return last.then_some(0);
    }
    if data.len() < MAX_CHUNK && !last {
        return None;
    }
    let (mask_s, mask_l) = masks();
    let (_, len) = fastcdc::v2020::cut(
        data,
        MIN_CHUNK,
        AVG_CHUNK,
        MAX_CHUNK,
        mask_s,
        mask_l,
        mask_s << 1,
        mask_l << 1,
    );
    Some(len)
}

/// Cuts a whole content in memory into chunks and hashes each one.
pub fn chunk_all(data: &[u8]) -> Vec<ChunkRef> {
    let mut out = Vec::with_capacity(data.len() / AVG_CHUNK + 1);
    let mut rest = data;
    // Every round consumes at least one byte.
    while !rest.is_empty() {
        let len = next_cut(rest, true)
            .unwrap_or(rest.len())
            .clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(len);
        out.push(ChunkRef {
            hash: *blake3::hash(chunk).as_bytes(),
            len: len as u32,
        });
        rest = tail;
    }
    out
}

/// Cuts a content that arrives piece by piece: [`Chunker::push`] the bytes, take the chunks
/// as they are known, then [`Chunker::finish`]. Holds at most [`MAX_CHUNK`] bytes plus one
/// piece.
#[derive(Debug, Default)]
pub struct Chunker {
    pending: Vec<u8>,
    chunks: Vec<ChunkRef>,
    total: u64,
}

impl Chunker {
    /// A chunker at the start of a content.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes of the content.
    pub fn push(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        if self.pending.is_empty() && data.len() >= MAX_CHUNK {
            // Cut straight from the caller's buffer; keep only the tail.
            let used = self.cut_from(data, false);
            self.pending.extend_from_slice(&data[used..]);
            return;
        }
        self.pending.extend_from_slice(data);
        if self.pending.len() >= MAX_CHUNK {
            let pending = std::mem::take(&mut self.pending);
            let used = self.cut_from(&pending, false);
            self.pending = pending;
            self.pending.drain(..used);
        }
    }

    /// Cuts every chunk whose end is known from `data`; returns how many bytes they took.
    fn cut_from(&mut self, data: &[u8], last: bool) -> usize {
        let mut used = 0;
        // Every round consumes at least one byte or stops.
        while let Some(len) = next_cut(&data[used..], last) {
            if len == 0 {
                break;
            }
            let chunk = &data[used..used + len];
            self.chunks.push(ChunkRef {
                hash: *blake3::hash(chunk).as_bytes(),
                len: len as u32,
            });
            used += len;
        }
        used
    }

    /// Bytes fed so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Ends the content and returns all its chunks, in order.
    pub fn finish(mut self) -> Vec<ChunkRef> {
        let pending = std::mem::take(&mut self.pending);
        self.cut_from(&pending, true);
        self.chunks
    }
}

/// Encodes a chunk list: each chunk's hash then its length (u32 BE), back to back.
pub fn encode_list(chunks: &[ChunkRef]) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunks.len() * CHUNK_REF_LEN);
    for c in chunks {
        out.extend_from_slice(&c.hash);
        out.extend_from_slice(&c.len.to_be_bytes());
    }
    out
}

/// Why a chunk list was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    /// The bytes are not a whole number of chunk entries.
    #[error("a chunk list is {0} bytes, not a multiple of {CHUNK_REF_LEN}")]
    Length(usize),
    /// More chunks than one list may hold.
    #[error("a chunk list holds {0} chunks, more than {MAX_LIST_CHUNKS}")]
    TooMany(usize),
    /// A chunk of length 0 or longer than [`MAX_CHUNK`].
    #[error("chunk {index} has length {len}, outside 1..={MAX_CHUNK}")]
    BadLength {
        /// Its place in the list.
        index: usize,
        /// The length it claims.
        len: u32,
    },
    /// The lengths do not add up to the content's size.
    #[error("the chunks add up to {sum} bytes, the content has {size}")]
    Sum {
        /// What the chunks add up to.
        sum: u64,
        /// The content's size.
        size: u64,
    },
}

/// Decodes a chunk list of a content of `size` bytes (as [`encode_list`] writes it),
/// checking every length and that they add up to `size`.
pub fn decode_list(bytes: &[u8], size: u64) -> Result<Vec<ChunkRef>, ListError> {
    if !bytes.len().is_multiple_of(CHUNK_REF_LEN) {
        return Err(ListError::Length(bytes.len()));
    }
    let n = bytes.len() / CHUNK_REF_LEN;
    if n > MAX_LIST_CHUNKS {
        return Err(ListError::TooMany(n));
    }
    let mut out = Vec::with_capacity(n);
    let mut sum = 0u64;
    for (index, entry) in bytes.chunks_exact(CHUNK_REF_LEN).enumerate() {
        let (hash, len) = entry.split_at(32);
        let hash: Digest = hash
            .try_into()
            .map_err(|_| ListError::Length(bytes.len()))?;
        let len = u32::from_be_bytes(len.try_into().map_err(|_| ListError::Length(bytes.len()))?);
        if len == 0 || len as usize > MAX_CHUNK {
            return Err(ListError::BadLength { index, len });
        }
        sum += u64::from(len);
        out.push(ChunkRef { hash, len });
    }
    if sum != size {
        return Err(ListError::Sum { sum, size });
    }
    Ok(out)
}

/// Which chunks of `chunks` the receiver must be sent, given that it has every chunk for
/// which `has` is true: chunk `i` is needed if `has` is false for it and no earlier chunk of
/// the list has the same hash (a repeated chunk is sent once). As a bitmap: bit `i % 8` (the
/// least significant first) of byte `i / 8` set means chunk `i` is needed.
pub fn needed(chunks: &[ChunkRef], mut has: impl FnMut(&Digest) -> bool) -> Vec<u8> {
    let mut bitmap = vec![0u8; chunks.len().div_ceil(8)];
    let mut seen = std::collections::HashSet::with_capacity(chunks.len());
    for (i, c) in chunks.iter().enumerate() {
        if seen.insert(c.hash) && !has(&c.hash) {
            bitmap[i / 8] |= 1 << (i % 8);
        }
    }
    bitmap
}

/// Whether chunk `i` is marked needed in a [`needed`] bitmap (false past its end).
pub fn is_needed(bitmap: &[u8], i: usize) -> bool {
    bitmap.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
}

/// The bytes a delta body carries for `chunks` under `bitmap`: the sum of the needed lengths.
pub fn needed_bytes(chunks: &[ChunkRef], bitmap: &[u8]) -> u64 {
    chunks
        .iter()
        .enumerate()
        .filter(|(i, _)| is_needed(bitmap, *i))
        .map(|(_, c)| u64::from(c.len))
        .sum()
}

/// Where the chunks `bitmap` marks are in the content: `(offset, length)` runs, consecutive
/// needed chunks merged into one run, in order. What a delta body is made of, or what a
/// delta get asks for.
pub fn needed_runs(chunks: &[ChunkRef], bitmap: &[u8]) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    let mut at = 0u64;
    for (i, c) in chunks.iter().enumerate() {
        let len = u64::from(c.len);
        if is_needed(bitmap, i) {
            match runs.last_mut() {
                Some((offset, l)) if *offset + *l == at => *l += len,
                _ => runs.push((at, len)),
            }
        }
        at += len;
    }
    runs
}

#[cfg(test)]
mod tests;
