//! The `Authorization` header of a signed request: its one format and a strict parser.
//!
//! ```text
//! FERRY1-HMAC-SHA256 Claims=<claims>, Timestamp=<seconds>, Nonce=<nonce>, Signature=<sig>
//! ```
//!
//! * `claims`: the claims' canonical encoding ([`crate::claims`]) in base64url without
//!   padding (RFC 4648 §5), canonical (no stray trailing bits);
//! * `seconds`: the Unix time in decimal, no sign, no leading zero, at most
//!   [`super::signing::MAX_TIMESTAMP`];
//! * `nonce`: 32 lowercase hex digits; `sig`: 64 lowercase hex digits.
//!
//! Exactly this order, exactly one space after the algorithm and `", "` between fields, no
//! other field, no surrounding space, at most [`MAX_AUTHORIZATION_LEN`] bytes. Anything else
//! is refused: one spelling per request means nothing about a request can change without
//! its header changing too, and the parser has no choices to get wrong. Parsing never
//! panics; a fuzz target (`fuzz/fuzz_targets/http_auth.rs`) holds it to that.

use super::signing::{MAX_TIMESTAMP, Signature};
use super::{ALGORITHM, Nonce};
use crate::claims::{self, Claims};

/// Longest `Authorization` value accepted: room for the longest claims encoding
/// ([`claims::MAX_ENCODED_LEN`]). Typical credentials need under 200 bytes; proxies often
/// cap a header line at 8 KiB.
pub const MAX_AUTHORIZATION_LEN: usize = 12 * 1024;

/// Why an `Authorization` value was refused, for the log only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// Too long, another algorithm, or fields missing, extra, misspelt or out of order.
    #[error("malformed authorization header")]
    Shape,
    /// The claims are not base64url, or not a canonical claims encoding.
    #[error("malformed claims in authorization header")]
    Claims,
    /// The timestamp is not a canonical decimal within range.
    #[error("malformed timestamp in authorization header")]
    Timestamp,
    /// The nonce or the signature is not lowercase hex of the right length.
    #[error("malformed nonce or signature in authorization header")]
    Hex,
}

/// A parsed `Authorization` header: claims (decoded and validated, not yet verified),
/// timestamp, nonce and signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorization {
    claims: Claims,
    encoded: Vec<u8>,
    timestamp: u64,
    nonce: Nonce,
    signature: Signature,
}

impl Authorization {
    pub(crate) fn new(claims: Claims, timestamp: u64, nonce: Nonce, signature: Signature) -> Self {
        Self {
            encoded: claims.encode(),
            claims,
            timestamp,
            nonce,
            signature,
        }
    }

    /// The header's value.
    pub fn to_header_value(&self) -> String {
        format!(
            "{ALGORITHM} Claims={}, Timestamp={}, Nonce={}, Signature={}",
            data_encoding::BASE64URL_NOPAD.encode(&self.encoded),
            self.timestamp,
            self.nonce.to_hex(),
            self.signature.to_hex()
        )
    }

    /// Parses a header value (see the module doc).
    pub fn parse(value: &str) -> Result<Self, HeaderError> {
        if value.len() > MAX_AUTHORIZATION_LEN {
            return Err(HeaderError::Shape);
        }
        let rest = value
            .strip_prefix(ALGORITHM)
            .and_then(|r| r.strip_prefix(' '))
            .ok_or(HeaderError::Shape)?;
        let mut fields = rest.split(", ");
        let mut field = |name: &str| {
            fields
                .next()
                .and_then(|f| f.strip_prefix(name))
                .and_then(|f| f.strip_prefix('='))
                .ok_or(HeaderError::Shape)
        };
        let claims_b64 = field("Claims")?;
        let timestamp = field("Timestamp")?;
        let nonce = field("Nonce")?;
        let signature = field("Signature")?;
        if fields.next().is_some() {
            return Err(HeaderError::Shape);
        }

        if claims_b64.len() > (claims::MAX_ENCODED_LEN * 4).div_ceil(3)
            || !claims_b64
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(HeaderError::Claims);
        }
        let encoded = data_encoding::BASE64URL_NOPAD
            .decode(claims_b64.as_bytes())
            .map_err(|_| HeaderError::Claims)?;
        let claims = Claims::decode(&encoded).map_err(|_| HeaderError::Claims)?;

        let timestamp = parse_timestamp(timestamp).ok_or(HeaderError::Timestamp)?;

        if nonce.len() != 32
            || !nonce
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(HeaderError::Hex);
        }
        let nonce: [u8; 16] = data_encoding::HEXLOWER
            .decode(nonce.as_bytes())
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or(HeaderError::Hex)?;
        let signature = Signature::parse(signature).ok_or(HeaderError::Hex)?;
        Ok(Self {
            claims,
            encoded,
            timestamp,
            nonce: Nonce::from_bytes(nonce),
            signature,
        })
    }

    /// The claims the request makes (authentic only once its signature verified).
    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    pub(crate) fn into_claims(self) -> Claims {
        self.claims
    }

    /// The claims' canonical encoding, as carried.
    pub fn claims_encoding(&self) -> &[u8] {
        &self.encoded
    }

    /// The client's timestamp, Unix seconds.
    pub fn timestamp(&self) -> u64 {
        self.timestamp
    }

    /// The request's nonce.
    pub fn nonce(&self) -> &Nonce {
        &self.nonce
    }

    /// The request's signature.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }
}

fn parse_timestamp(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 12 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if s.len() > 1 && s.starts_with('0') {
        return None;
    }
    s.parse().ok().filter(|t| *t <= MAX_TIMESTAMP)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Authorization {
        let claims = Claims::new("alice", 1, [("role", "writer")]).unwrap();
        Authorization::new(
            claims,
            1_795_000_000,
            Nonce::from_bytes([0xab; 16]),
            Signature([0xcd; 32]),
        )
    }

    #[test]
    fn round_trip() {
        let a = sample();
        let text = a.to_header_value();
        assert!(
            text.starts_with("FERRY1-HMAC-SHA256 Claims=hG9mZXJye"),
            "{text}"
        );
        assert!(text.ends_with(&format!(", Signature={}", "cd".repeat(32))));
        assert_eq!(Authorization::parse(&text), Ok(a));
    }

    #[test]
    fn malformed_is_refused() {
        let good = sample().to_header_value();
        let nonce = "ab".repeat(16);
        let sig = "cd".repeat(32);
        let claims_b64 = good
            .split("Claims=")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .unwrap()
            .to_owned();
        let with = |c: &str, t: &str, n: &str, s: &str| {
            format!("FERRY1-HMAC-SHA256 Claims={c}, Timestamp={t}, Nonce={n}, Signature={s}")
        };
        assert_eq!(with(&claims_b64, "1795000000", &nonce, &sig), good);
        let cases: Vec<(String, HeaderError)> = vec![
            (String::new(), HeaderError::Shape),
            ("FERRY1-HMAC-SHA256".into(), HeaderError::Shape),
            (good.replacen("FERRY1", "FERRY2", 1), HeaderError::Shape),
            (good.to_lowercase(), HeaderError::Shape),
            (good.replacen(' ', "  ", 1), HeaderError::Shape),
            (format!(" {good}"), HeaderError::Shape),
            (format!("{good} "), HeaderError::Hex),
            (format!("{good}, X=1"), HeaderError::Shape),
            (good.replacen(", ", ",", 1), HeaderError::Shape),
            (good.replacen("Nonce", "nonce", 1), HeaderError::Shape),
            (
                format!(
                    "FERRY1-HMAC-SHA256 Timestamp=1, Claims={claims_b64}, Nonce={nonce}, Signature={sig}"
                ),
                HeaderError::Shape,
            ),
            (
                with(&claims_b64, "1795000000", &nonce, ""),
                HeaderError::Hex,
            ),
            (with("", "1795000000", &nonce, &sig), HeaderError::Claims),
            (
                with(&format!("{claims_b64}="), "1795000000", &nonce, &sig),
                HeaderError::Claims,
            ),
            (
                with(&claims_b64[1..], "1795000000", &nonce, &sig),
                HeaderError::Claims,
            ),
            (
                with("hG9tZXJye", "1795000000", &nonce, &sig),
                HeaderError::Claims,
            ),
            (with(&claims_b64, "", &nonce, &sig), HeaderError::Timestamp),
            (
                with(&claims_b64, "01795000000", &nonce, &sig),
                HeaderError::Timestamp,
            ),
            (
                with(&claims_b64, "+1795000000", &nonce, &sig),
                HeaderError::Timestamp,
            ),
            (
                with(&claims_b64, "-1", &nonce, &sig),
                HeaderError::Timestamp,
            ),
            (
                with(&claims_b64, "253402300800", &nonce, &sig),
                HeaderError::Timestamp,
            ),
            (
                with(&claims_b64, "99999999999999999999", &nonce, &sig),
                HeaderError::Timestamp,
            ),
            (
                with(&claims_b64, "1795000000", &nonce[1..], &sig),
                HeaderError::Hex,
            ),
            (
                with(&claims_b64, "1795000000", &nonce.to_uppercase(), &sig),
                HeaderError::Hex,
            ),
            (
                with(&claims_b64, "1795000000", &format!("{nonce}00"), &sig),
                HeaderError::Hex,
            ),
            (
                with(&claims_b64, "1795000000", &nonce, &sig[2..]),
                HeaderError::Hex,
            ),
            (
                with(&claims_b64, "1795000000", &nonce, &sig.to_uppercase()),
                HeaderError::Hex,
            ),
            (
                format!("{}{good}", " ".repeat(MAX_AUTHORIZATION_LEN)),
                HeaderError::Shape,
            ),
        ];
        for (text, want) in &cases {
            assert_eq!(Authorization::parse(text), Err(*want), "{text:?}");
        }
        // A stray trailing bit in the base64 (the last character's low bits must be zero).
        let last = claims_b64.chars().last().unwrap();
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let pos = alphabet.find(last).unwrap();
        let bumped = alphabet.as_bytes()[pos ^ 1] as char;
        let mut stray = claims_b64.clone();
        stray.pop();
        stray.push(bumped);
        let text = with(&stray, "1795000000", &nonce, &sig);
        assert!(Authorization::parse(&text).is_err(), "{text}");
        // Timestamps 0 and the maximum parse.
        assert!(Authorization::parse(&with(&claims_b64, "0", &nonce, &sig)).is_ok());
        assert!(Authorization::parse(&with(&claims_b64, "253402300799", &nonce, &sig)).is_ok());
    }

    #[test]
    fn every_prefix_is_refused() {
        let good = sample().to_header_value();
        for cut in 0..good.len() {
            assert!(Authorization::parse(&good[..cut]).is_err(), "{cut}");
        }
    }
}
