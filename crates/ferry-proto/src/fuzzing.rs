//! Entry points shared by the fuzz targets in `fuzz/` and the corpus replay test
//! (`tests/fuzz_corpus.rs`). Not part of the API.
//!
//! Each function feeds arbitrary bytes to one decoder of outside input and panics, with a
//! message naming the broken invariant, if the decoder's answer is inconsistent: a panic is
//! what the fuzzer reports as a crash.

use crate::claims::Claims;
use crate::credential::Credential;
use crate::frame::{self, HEADER_LEN};
use crate::message::Message;
use crate::server_id::ServerId;

/// Splits frames off `data` with [`frame::decode`] until it needs more bytes.
///
/// Checks that every decoded frame re-encodes to exactly the bytes it came from, that
/// [`frame::decode_header`] agrees with [`frame::decode`] on frames, errors and "need more",
/// and that one byte fewer than a whole frame is "need more". After an error it skips one
/// byte and goes on, so that the rest of the input is exercised too.
pub fn frame(data: &[u8]) {
    let mut rest = data;
    while !rest.is_empty() {
        let header: Option<[u8; HEADER_LEN]> =
            rest.get(..HEADER_LEN).and_then(|h| h.try_into().ok());
        match frame::decode(rest) {
            Ok(Some((kind, body, used))) => {
                assert_eq!(
                    used,
                    HEADER_LEN + body.len(),
                    "frame: used bytes != header + body"
                );
                assert!(used <= rest.len(), "frame: used more bytes than given");
                let Some(header) = header else {
                    panic!("frame: decoded a frame from fewer than {HEADER_LEN} bytes");
                };
                assert_eq!(
                    frame::decode_header(header),
                    Ok((kind, body.len())),
                    "frame: decode_header disagrees with decode"
                );
                let mut out = Vec::new();
                assert!(
                    frame::encode(kind, body, &mut out).is_some(),
                    "frame: a decoded body of {} bytes does not encode",
                    body.len()
                );
                assert_eq!(
                    out,
                    rest[..used],
                    "frame: re-encoding differs from the decoded bytes"
                );
                assert_eq!(
                    frame::decode(&rest[..used - 1]),
                    Ok(None),
                    "frame: a frame cut by one byte is not 'need more'"
                );
                rest = &rest[used..];
            }
            Ok(None) => {
                if let Some(header) = header {
                    match frame::decode_header(header) {
                        Ok((_, body_len)) => assert!(
                            rest.len() < HEADER_LEN + body_len,
                            "frame: 'need more' although the whole frame is there"
                        ),
                        Err(e) => panic!("frame: 'need more' but decode_header says {e}"),
                    }
                }
                return;
            }
            Err(e) => {
                let Some(header) = header else {
                    panic!("frame: error {e} from fewer than {HEADER_LEN} bytes");
                };
                assert_eq!(
                    frame::decode_header(header),
                    Err(e),
                    "frame: decode_header disagrees with decode on an error"
                );
                rest = &rest[1..];
            }
        }
    }
}

/// Decodes a [`Message`]; if that succeeds, its encoding decodes to the same message and
/// encodes to the same bytes again.
pub fn message(data: &[u8]) {
    let Ok(msg) = Message::decode(data) else {
        return;
    };
    let _ = msg.type_name();
    let bytes = msg.encode();
    match Message::decode(&bytes) {
        Ok(again) => {
            assert_eq!(again, msg, "message: decode(encode(m)) != m");
            assert_eq!(
                again.encode(),
                bytes,
                "message: encoding is not stable across a round trip"
            );
        }
        Err(e) => panic!("message: the encoding of a decoded {msg:?} does not decode: {e}"),
    }
}

/// Decodes [`Claims`]; if that succeeds, they encode to exactly the input (the decoder
/// accepts only canonical bytes) and satisfy the rules `Claims::new` enforces.
pub fn claims(data: &[u8]) {
    let Ok(claims) = Claims::decode(data) else {
        return;
    };
    assert_eq!(
        claims.encode(),
        data,
        "claims: accepted bytes that are not the canonical encoding"
    );
    assert_eq!(
        Claims::new(claims.name(), claims.epoch(), claims.attributes().clone()).as_ref(),
        Ok(&claims),
        "claims: decoded claims that Claims::new refuses or changes"
    );
}

/// Parses a [`Credential`] if `data` is UTF-8; if that succeeds, its `to_toml` parses to the
/// same credential. Whatever happens, the error's text holds no run of 64 hex digits (the
/// shape of a key).
pub fn credential(data: &[u8]) {
    let Ok(text) = core::str::from_utf8(data) else {
        return;
    };
    match Credential::parse(text) {
        Ok(cred) => {
            let toml = cred.to_toml();
            match Credential::parse(&toml) {
                Ok(again) => assert_eq!(again, cred, "credential: parse(to_toml(c)) != c"),
                Err(e) => panic!("credential: to_toml of a parsed credential does not parse: {e}"),
            }
        }
        Err(e) => {
            let shown = e.to_string();
            assert!(
                !has_hex_run(&shown, 64),
                "credential: error text holds 64 hex digits: {shown:?}"
            );
        }
    }
}

/// Parses a [`ServerId`] if `data` is UTF-8; if that succeeds, its readable form (and that
/// form in lower case) parses to the same ID.
pub fn server_id(data: &[u8]) {
    let Ok(text) = core::str::from_utf8(data) else {
        return;
    };
    let Ok(id) = ServerId::parse(text) else {
        return;
    };
    let shown = id.to_string();
    assert_eq!(
        ServerId::parse(&shown).as_ref(),
        Ok(&id),
        "server_id: parse(display(id)) != id"
    );
    assert_eq!(
        ServerId::parse(&shown.to_lowercase()).as_ref(),
        Ok(&id),
        "server_id: the lower-case display does not parse to the same ID"
    );
}

/// Whether `s` contains at least `n` ASCII hex digits in a row.
fn has_hex_run(s: &str, n: usize) -> bool {
    let mut run = 0;
    for b in s.bytes() {
        if b.is_ascii_hexdigit() {
            run += 1;
            if run >= n {
                return true;
            }
        } else {
            run = 0;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_run() {
        assert!(has_hex_run(&"aB3".repeat(22), 64));
        assert!(!has_hex_run(
            &format!("{}-{}", "a".repeat(63), "a".repeat(63)),
            64
        ));
        assert!(!has_hex_run("", 64));
    }
}
