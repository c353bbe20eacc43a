//! Streamed bodies: a chain of signed chunks, so that neither end holds a whole body to
//! check it, and a body cut short, reordered, spliced from another request or altered fails.
//!
//! A body whose hash is [`super::BodyHash::Streaming`] travels as chunks:
//!
//! ```text
//! chunk     = length: u32 big-endian ‖ signature: 32 bytes ‖ data: length bytes
//! chunk_sig = HMAC-SHA256(key, "FERRY1-HMAC-SHA256\n" DATE "/chunk\n"
//!                              hex(previous_sig) "\n" hex(BLAKE3(data)))
//! ```
//!
//! `previous_sig` is the signature of the chunk before; for the first chunk it is the
//! request's signature (request bodies, `key` = `k_request`) or the response's signature
//! (response bodies, `key` = `k_response`), as AWS Signature V4 chains its streaming chunks
//! from the seed signature. Data chunks hold 1 to [`MAX_CHUNK_LEN`] bytes; the body ends
//! with one chunk of length 0 (signed like the others), after which nothing may follow.
//!
//! The chain makes each signature cover, through its predecessor, every chunk before it and
//! the request (or response) it belongs to: a chunk moved, dropped, repeated or taken from
//! another body breaks the chain at that point, and a body cut anywhere lacks its signed
//! final chunk ([`ChunkVerifier::is_finished`] is false at the end of input). A verifier
//! hands out a chunk's data only after its signature verified.

use super::signing::{Signature, SigningKey};
use super::{ALGORITHM, Reason, VerifyError};

/// Most data bytes in one chunk.
pub const MAX_CHUNK_LEN: usize = 1 << 20;
/// Bytes before a chunk's data: its length and its signature.
pub const CHUNK_HEADER_LEN: usize = 4 + 32;

fn chunk_signature(key: &SigningKey, date: &str, previous: &Signature, data: &[u8]) -> Signature {
    // The text is fed to the MAC in pieces: no allocation per chunk.
    let mut previous_hex = [0u8; 64];
    data_encoding::HEXLOWER.encode_mut(&previous.0, &mut previous_hex);
    let digest = blake3::hash(data);
    let mut digest_hex = [0u8; 64];
    data_encoding::HEXLOWER.encode_mut(digest.as_bytes(), &mut digest_hex);
    key.mac(&[
        ALGORITHM.as_bytes(),
        b"\n",
        date.as_bytes(),
        b"/chunk\n",
        &previous_hex,
        b"\n",
        &digest_hex,
    ])
}

/// The data length a chunk header announces; an error above [`MAX_CHUNK_LEN`].
pub fn chunk_len(header: &[u8; CHUNK_HEADER_LEN]) -> Result<usize, VerifyError> {
    let mut len_bytes = [0u8; 4];
    len_bytes.copy_from_slice(&header[..4]);
    let len = usize::try_from(u32::from_be_bytes(len_bytes)).unwrap_or(usize::MAX);
    if len > MAX_CHUNK_LEN {
        return Err(VerifyError::Refused(Reason::Malformed));
    }
    Ok(len)
}

/// Signs a streamed body's chunks in order ([`super::SignedRequest::body_signer`],
/// [`super::VerifiedRequest::response_body_signer`]).
#[derive(Debug)]
pub struct ChunkSigner {
    key: SigningKey,
    date: String,
    previous: Signature,
}

impl ChunkSigner {
    pub(crate) fn new(key: SigningKey, date: &str, seed: Signature) -> Self {
        Self {
            key,
            date: date.to_owned(),
            previous: seed,
        }
    }

    /// Appends `data` to `out` as signed chunks of at most [`MAX_CHUNK_LEN`] bytes; empty
    /// `data` appends nothing.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) {
        for piece in data.chunks(MAX_CHUNK_LEN) {
            self.one(piece, out);
        }
    }

    /// Appends the final, empty chunk that ends the body.
    pub fn finish(mut self, out: &mut Vec<u8>) {
        self.one(&[], out);
    }

    /// Signs `data` (1 to [`MAX_CHUNK_LEN`] bytes; empty for the final chunk) as the next
    /// chunk and returns its header, for a caller that sends the header and the data without
    /// copying them together. `None` (and nothing signed) if `data` is too long.
    pub fn header(&mut self, data: &[u8]) -> Option<[u8; CHUNK_HEADER_LEN]> {
        if data.len() > MAX_CHUNK_LEN {
            return None;
        }
        let sig = chunk_signature(&self.key, &self.date, &self.previous, data);
        // At most MAX_CHUNK_LEN bytes, which fits a u32.
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let mut header = [0u8; CHUNK_HEADER_LEN];
        header[..4].copy_from_slice(&len.to_be_bytes());
        header[4..].copy_from_slice(&sig.0);
        self.previous = sig;
        Some(header)
    }

    fn one(&mut self, data: &[u8], out: &mut Vec<u8>) {
        // `push` hands at most MAX_CHUNK_LEN bytes at a time.
        if let Some(header) = self.header(data) {
            out.extend_from_slice(&header);
            out.extend_from_slice(data);
        }
    }
}

/// One verified piece of a streamed body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunk<'a> {
    /// Data whose signature verified, in order.
    Data(&'a [u8]),
    /// The signed end of the body.
    End,
}

/// Checks a streamed body's chunks in order ([`super::VerifiedRequest::body_verifier`],
/// [`super::SignedRequest::response_body_verifier`]). After any error it refuses everything.
#[derive(Debug)]
pub struct ChunkVerifier {
    key: SigningKey,
    date: String,
    previous: Signature,
    finished: bool,
    failed: bool,
}

impl ChunkVerifier {
    pub(crate) fn new(key: SigningKey, date: &str, seed: Signature) -> Self {
        Self {
            key,
            date: date.to_owned(),
            previous: seed,
            finished: false,
            failed: false,
        }
    }

    /// Verifies the chunk at the start of `input`: `Ok(Some((chunk, used)))` when a whole
    /// chunk is there and verifies (`used` bytes of `input` are consumed), `Ok(None)` when
    /// more bytes are needed. A length above [`MAX_CHUNK_LEN`], a bad signature, or any
    /// byte after the final chunk is an error, and so is everything after an error.
    pub fn decode<'a>(
        &mut self,
        input: &'a [u8],
    ) -> Result<Option<(Chunk<'a>, usize)>, VerifyError> {
        let refused = Err(VerifyError::Refused(Reason::BadSignature));
        if self.failed || (self.finished && !input.is_empty()) {
            self.failed = true;
            return refused;
        }
        let Some(header) = input.get(..CHUNK_HEADER_LEN) else {
            return Ok(None);
        };
        let mut head = [0u8; CHUNK_HEADER_LEN];
        head.copy_from_slice(header);
        let len = match chunk_len(&head) {
            Ok(len) => len,
            Err(e) => {
                self.failed = true;
                return Err(e);
            }
        };
        let Some(data) = input.get(CHUNK_HEADER_LEN..CHUNK_HEADER_LEN + len) else {
            return Ok(None);
        };
        let end = self.check(&head, data)?;
        let used = CHUNK_HEADER_LEN + len;
        if end {
            return Ok(Some((Chunk::End, used)));
        }
        Ok(Some((Chunk::Data(data), used)))
    }

    /// Verifies one chunk received in two parts, its header and its data (which must be as
    /// long as the header says, see [`chunk_len`]): `Ok(true)` for the signed final chunk,
    /// `Ok(false)` for data, which may then be handed on. The same rules as
    /// [`ChunkVerifier::decode`]: nothing after the final chunk, nothing after an error.
    pub fn check(
        &mut self,
        header: &[u8; CHUNK_HEADER_LEN],
        data: &[u8],
    ) -> Result<bool, VerifyError> {
        let refused = Err(VerifyError::Refused(Reason::BadSignature));
        if self.failed || self.finished {
            self.failed = true;
            return refused;
        }
        if chunk_len(header).ok() != Some(data.len()) {
            self.failed = true;
            return Err(VerifyError::Refused(Reason::Malformed));
        }
        let mut got = [0u8; 32];
        got.copy_from_slice(&header[4..]);
        let expected = chunk_signature(&self.key, &self.date, &self.previous, data);
        if !expected.ct_eq(&Signature(got)) {
            self.failed = true;
            return refused;
        }
        self.previous = expected;
        if data.is_empty() {
            self.finished = true;
            return Ok(true);
        }
        Ok(false)
    }

    /// Whether the signed final chunk arrived. At the end of input, false means the body was
    /// cut short and must be discarded.
    pub fn is_finished(&self) -> bool {
        self.finished && !self.failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (ChunkSigner, ChunkVerifier) {
        let key = || SigningKey::test_key([7; 32]);
        let seed = Signature([1; 32]);
        (
            ChunkSigner::new(key(), "20261129", seed),
            ChunkVerifier::new(key(), "20261129", seed),
        )
    }

    /// Decodes a whole body; the data, or the first error, or `None` if cut short.
    fn read_all(v: &mut ChunkVerifier, mut input: &[u8]) -> Result<Option<Vec<u8>>, VerifyError> {
        let mut out = Vec::new();
        while let Some((chunk, used)) = v.decode(input)? {
            if let Chunk::Data(d) = chunk {
                out.extend_from_slice(d);
            }
            input = &input[used..];
            if input.is_empty() {
                break;
            }
        }
        Ok(v.is_finished().then_some(out))
    }

    fn body(parts: &[&[u8]]) -> (Vec<u8>, Vec<usize>) {
        let (mut s, _) = pair();
        let mut out = Vec::new();
        let mut starts = Vec::new();
        for p in parts {
            starts.push(out.len());
            s.push(p, &mut out);
        }
        starts.push(out.len());
        s.finish(&mut out);
        (out, starts)
    }

    #[test]
    fn round_trip_byte_by_byte_and_whole() {
        let (b, _) = body(&[b"hello ", b"", b"world"]);
        assert_eq!(b.len(), 3 * CHUNK_HEADER_LEN + 11);
        let (_, mut v) = pair();
        assert_eq!(read_all(&mut v, &b), Ok(Some(b"hello world".to_vec())));
        // Fed one byte more at a time, as a socket might.
        let (_, mut v) = pair();
        let mut buf = Vec::new();
        let mut got = Vec::new();
        for &byte in &b {
            buf.push(byte);
            if let Some((chunk, used)) = v.decode(&buf).unwrap() {
                if let Chunk::Data(d) = chunk {
                    got.extend_from_slice(d);
                }
                buf.drain(..used);
            }
        }
        assert!(buf.is_empty() && v.is_finished());
        assert_eq!(got, b"hello world");
    }

    #[test]
    fn large_data_splits_into_bounded_chunks() {
        let data = vec![5u8; MAX_CHUNK_LEN + 1];
        let (b, _) = body(&[&data]);
        assert_eq!(b.len(), 3 * CHUNK_HEADER_LEN + data.len());
        let (_, mut v) = pair();
        assert_eq!(read_all(&mut v, &b), Ok(Some(data)));
    }

    #[test]
    fn truncation_reorder_splice_and_tamper_fail() {
        let (b, starts) = body(&[b"one", b"two", b"three"]);
        // Cut anywhere: never finished (an error or "need more").
        for cut in 0..b.len() {
            let (_, mut v) = pair();
            let r = read_all(&mut v, &b[..cut]);
            assert!(matches!(r, Ok(None) | Err(_)), "cut at {cut}: {r:?}");
        }
        // Cut exactly between chunks, before the final one: decodes, but not finished.
        let (_, mut v) = pair();
        assert_eq!(read_all(&mut v, &b[..starts[3]]), Ok(None));
        // Two chunks swapped.
        let mut swapped = b[..starts[0]].to_vec();
        swapped.extend_from_slice(&b[starts[1]..starts[2]]);
        swapped.extend_from_slice(&b[starts[0]..starts[1]]);
        swapped.extend_from_slice(&b[starts[2]..]);
        let (_, mut v) = pair();
        assert!(read_all(&mut v, &swapped).is_err());
        // A chunk dropped, or repeated.
        let mut dropped = b[..starts[1]].to_vec();
        dropped.extend_from_slice(&b[starts[2]..]);
        let mut repeated = b[..starts[2]].to_vec();
        repeated.extend_from_slice(&b[starts[1]..]);
        for bad in [dropped, repeated] {
            let (_, mut v) = pair();
            assert!(read_all(&mut v, &bad).is_err());
        }
        // Any byte flipped.
        for i in 0..b.len() {
            let mut t = b.clone();
            t[i] ^= 0x20;
            let (_, mut v) = pair();
            assert!(!matches!(read_all(&mut v, &t), Ok(Some(_))), "flip at {i}");
        }
        // Bytes after the end.
        let mut extra = b.clone();
        extra.push(0);
        let (_, mut v) = pair();
        assert!(read_all(&mut v, &extra).is_err());
        assert!(!v.is_finished());
        // Another seed (another request), or another key.
        let mut v = ChunkVerifier::new(
            SigningKey::test_key([7; 32]),
            "20261129",
            Signature([2; 32]),
        );
        assert!(read_all(&mut v, &b).is_err());
        let mut v = ChunkVerifier::new(
            SigningKey::test_key([8; 32]),
            "20261129",
            Signature([1; 32]),
        );
        assert!(read_all(&mut v, &b).is_err());
    }

    #[test]
    fn oversized_length_is_refused_at_once() {
        let (_, mut v) = pair();
        let mut b = u32::try_from(MAX_CHUNK_LEN + 1)
            .unwrap()
            .to_be_bytes()
            .to_vec();
        b.extend_from_slice(&[0; 32]);
        assert_eq!(v.decode(&b), Err(VerifyError::Refused(Reason::Malformed)));
        // And it stays refused.
        assert!(v.decode(&[]).is_err());
    }
}
