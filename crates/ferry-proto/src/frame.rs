//! Length-prefixed frames.
//!
//! ```text
//! frame   = length:u32be kind:u8 body
//! length  = 1 + len(body), 1 ..= MAX_FRAME_LEN (checked as soon as its 4 bytes are in)
//! kind    = 0x01 message (one CBOR message, see `message`) | 0x02 data (raw bytes of a transfer)
//! ```
//!
//! Data frames carry transfer bytes as they are, so a chunk is never copied through a CBOR
//! decoder.

/// Largest value of the length field: the kind byte plus at most 1 MiB - 1 of body.
pub const MAX_FRAME_LEN: u32 = 1 << 20;
/// Largest body of one frame.
pub const MAX_BODY_LEN: usize = MAX_FRAME_LEN as usize - 1;
/// Size of the frame header: length and kind.
pub const HEADER_LEN: usize = 5;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// One CBOR-encoded [`crate::message::Message`].
    Message,
    /// Raw bytes of a transfer.
    Data,
}

impl Kind {
    fn to_byte(self) -> u8 {
        match self {
            Self::Message => 0x01,
            Self::Data => 0x02,
        }
    }
}

/// A frame header that breaks the rules above. Always a peer fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length field is zero.
    #[error("empty frame")]
    Empty,
    /// The length field exceeds [`MAX_FRAME_LEN`].
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(u32),
    /// The kind byte is not one this version knows.
    #[error("unknown frame kind {0:#04x}")]
    UnknownKind(u8),
}

/// Size of the length field, the first part of a header.
pub const LENGTH_LEN: usize = 4;

/// Checks a frame's length field on its own and returns the body length it announces. A
/// receiver calls it as soon as the four length bytes are in, so a zero or oversized length
/// is refused without waiting for the kind byte.
pub fn decode_length(length: [u8; LENGTH_LEN]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(length);
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge(len));
    }
    // len >= 1 and <= 2^20, so this neither underflows nor truncates.
    Ok((len - 1) as usize)
}

/// Parses a frame header into its kind and body length.
pub fn decode_header(header: [u8; HEADER_LEN]) -> Result<(Kind, usize), FrameError> {
    let body_len = decode_length([header[0], header[1], header[2], header[3]])?;
    let kind = match header[4] {
        0x01 => Kind::Message,
        0x02 => Kind::Data,
        other => return Err(FrameError::UnknownKind(other)),
    };
    Ok((kind, body_len))
}

/// Encodes the header of a frame with `body_len` bytes of body.
///
/// Returns `None` if the body is larger than [`MAX_BODY_LEN`].
pub fn encode_header(kind: Kind, body_len: usize) -> Option<[u8; HEADER_LEN]> {
    if body_len > MAX_BODY_LEN {
        return None;
    }
    let len = u32::try_from(body_len + 1).ok()?.to_be_bytes();
    Some([len[0], len[1], len[2], len[3], kind.to_byte()])
}

/// One frame borrowed from a buffer: its kind, its body and how many bytes it took.
pub type Decoded<'a> = (Kind, &'a [u8], usize);

/// Splits one whole frame off the front of `buf`.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole frame.
pub fn decode(buf: &[u8]) -> Result<Option<Decoded<'_>>, FrameError> {
    if let Some(length) = buf.get(..LENGTH_LEN) {
        let mut l = [0u8; LENGTH_LEN];
        l.copy_from_slice(length);
        decode_length(l)?;
    }
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let mut h = [0u8; HEADER_LEN];
    h.copy_from_slice(header);
    let (kind, body_len) = decode_header(h)?;
    let end = HEADER_LEN + body_len;
    match buf.get(HEADER_LEN..end) {
        Some(body) => Ok(Some((kind, body, end))),
        None => Ok(None),
    }
}

/// Appends a whole frame to `out`. Returns `None` if `body` is too large for one frame.
pub fn encode(kind: Kind, body: &[u8], out: &mut Vec<u8>) -> Option<()> {
    out.extend_from_slice(&encode_header(kind, body.len())?);
    out.extend_from_slice(body);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut out = Vec::new();
        encode(Kind::Message, b"hello", &mut out).unwrap();
        encode(Kind::Data, b"", &mut out).unwrap();
        let (k, body, used) = decode(&out).unwrap().unwrap();
        assert_eq!((k, body, used), (Kind::Message, &b"hello"[..], 10));
        let (k, body, used) = decode(&out[used..]).unwrap().unwrap();
        assert_eq!((k, body, used), (Kind::Data, &b""[..], 5));
    }

    #[test]
    fn truncated_needs_more() {
        let mut out = Vec::new();
        encode(Kind::Data, &[9; 100], &mut out).unwrap();
        for cut in 0..out.len() {
            assert_eq!(decode(&out[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn a_bad_length_is_refused_before_the_kind_byte() {
        assert_eq!(decode(&[0, 0, 0, 0]), Err(FrameError::Empty));
        assert_eq!(
            decode(&[0, 0x10, 0, 1]),
            Err(FrameError::TooLarge(MAX_FRAME_LEN + 1))
        );
        assert_eq!(decode(&[0, 0, 0]), Ok(None));
        assert_eq!(decode(&[0, 0, 0, 1]), Ok(None));
        assert_eq!(decode_length([0, 0, 0, 0]), Err(FrameError::Empty));
        assert_eq!(decode_length([0, 0x10, 0, 0]), Ok(MAX_BODY_LEN));
    }

    #[test]
    fn malformed_headers() {
        assert_eq!(decode(&[0, 0, 0, 0, 1]), Err(FrameError::Empty));
        assert_eq!(
            decode(&[0, 0x10, 0, 1, 1]),
            Err(FrameError::TooLarge(MAX_FRAME_LEN + 1))
        );
        assert_eq!(
            decode(&[0xff, 0xff, 0xff, 0xff, 1]),
            Err(FrameError::TooLarge(u32::MAX))
        );
        assert_eq!(decode(&[0, 0, 0, 1, 7]), Err(FrameError::UnknownKind(7)));
    }

    #[test]
    fn largest_body_fits_and_one_more_does_not() {
        assert!(encode_header(Kind::Data, MAX_BODY_LEN).is_some());
        assert!(encode_header(Kind::Data, MAX_BODY_LEN + 1).is_none());
        let h = encode_header(Kind::Data, MAX_BODY_LEN).unwrap();
        assert_eq!(decode_header(h), Ok((Kind::Data, MAX_BODY_LEN)));
    }
}
