//! The HTTP front's request target and `Range` header, decoded: what the server routes on.
//!
//! The signature covers the canonical path and query ([`super::canonical`]), in which `%2F`
//! and `/` are the same byte; so the server routes on the *decoded* path, exactly as here,
//! and a proxy that re-encodes a path cannot make a signed request mean another thing.
//!
//! * [`decode_path`]: the percent-decoded path, which must be UTF-8.
//! * [`parse_query`]: the query's parameters, decoded, each key at most once.
//! * [`ByteRange::parse`]: `Range: bytes=FIRST-` or `bytes=FIRST-LAST` (RFC 9110 §14.1.2),
//!   one range only; suffix ranges and lists are refused (the front answers 416).

use std::collections::BTreeMap;

use super::canonical::{MAX_PATH_LEN, MAX_QUERY_LEN, MAX_QUERY_PARAMS, percent_decode};

/// The path of a request target, percent-decoded; `None` if it is longer than
/// [`MAX_PATH_LEN`], does not start with `/`, holds a bad escape, or is not UTF-8.
pub fn decode_path(raw: &str) -> Option<String> {
    if raw.len() > MAX_PATH_LEN || !raw.starts_with('/') {
        return None;
    }
    String::from_utf8(percent_decode(raw)?).ok()
}

/// The query's parameters (without the `?`), percent-decoded; `None` on a bad escape, a raw
/// `+`, an empty key, a key given twice, non-UTF-8 text, or more than [`MAX_QUERY_LEN`] bytes
/// or [`MAX_QUERY_PARAMS`] parameters. A parameter without `=` has the empty value.
pub fn parse_query(raw: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    if raw.is_empty() {
        return Some(out);
    }
    if raw.len() > MAX_QUERY_LEN || raw.contains('+') {
        return None;
    }
    for (i, param) in raw.split('&').enumerate() {
        if i == MAX_QUERY_PARAMS {
            return None;
        }
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        let key = String::from_utf8(percent_decode(key)?).ok()?;
        let value = String::from_utf8(percent_decode(value)?).ok()?;
        if key.is_empty() || out.insert(key, value).is_some() {
            return None;
        }
    }
    Some(out)
}

/// Percent-encodes `text` for a path (`keep_slash`) or a query value: every byte outside
/// RFC 3986's unreserved set (and `/` for a path) becomes `%XX`.
pub fn encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    super::canonical::percent_encode(text.as_bytes(), keep_slash, &mut out);
    out
}

/// One byte range of a `Range` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    /// The first byte wanted.
    pub first: u64,
    /// The last byte wanted (inclusive); `None`: to the end.
    pub last: Option<u64>,
}

impl ByteRange {
    /// Parses `bytes=FIRST-` or `bytes=FIRST-LAST` (decimal, at most 19 digits each,
    /// `FIRST <= LAST`); anything else is `None`.
    pub fn parse(value: &str) -> Option<Self> {
        let spec = value.trim().strip_prefix("bytes=")?;
        let (first, last) = spec.split_once('-')?;
        let number = |s: &str| -> Option<u64> {
            if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        };
        let first = number(first)?;
        let last = if last.is_empty() {
            None
        } else {
            Some(number(last)?)
        };
        if last.is_some_and(|l| l < first) {
            return None;
        }
        Some(Self { first, last })
    }

    /// The header value this range is parsed from.
    pub fn to_header(&self) -> String {
        match self.last {
            Some(l) => format!("bytes={}-{l}", self.first),
            None => format!("bytes={}-", self.first),
        }
    }

    /// The bytes `(first, length)` of a body of `size` bytes this range selects, or `None`
    /// if it starts past the end (answered 416). A range starting exactly at the end of a
    /// non-empty body is unsatisfiable too; the empty range of an empty body is allowed so
    /// that resuming a finished empty download works.
    pub fn resolve(&self, size: u64) -> Option<(u64, u64)> {
        if self.first > size || (self.first == size && size != 0) {
            return None;
        }
        let end = self.last.map_or(size, |l| l.saturating_add(1).min(size));
        Some((self.first, end - self.first))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            decode_path("/v1/sources/a%20b/c").unwrap(),
            "/v1/sources/a b/c"
        );
        assert_eq!(decode_path("/a%2Fb").unwrap(), "/a/b");
        assert_eq!(decode_path("a"), None);
        assert_eq!(decode_path("/%zz"), None);
        assert_eq!(decode_path("/%ff"), None);
        assert_eq!(decode_path(&format!("/{}", "a".repeat(MAX_PATH_LEN))), None);
    }

    #[test]
    fn queries() {
        let q = parse_query("prefix=a%2Fb&after=&x").unwrap();
        assert_eq!(q["prefix"], "a/b");
        assert_eq!(q["after"], "");
        assert_eq!(q["x"], "");
        assert!(parse_query("").unwrap().is_empty());
        for bad in ["a=1&a=2", "=1", "a=1&&b", "a+b=1", "a=%g0"] {
            assert_eq!(parse_query(bad), None, "{bad}");
        }
        let many = vec!["k=v"; MAX_QUERY_PARAMS + 1].join("&");
        assert_eq!(parse_query(&many), None);
    }

    #[test]
    fn encoding_round_trips() {
        let name = "reports/Q3 final+draft%.csv";
        assert_eq!(
            decode_path(&format!("/{}", encode(name, true))).unwrap(),
            format!("/{name}")
        );
        let q = format!("prefix={}", encode(name, false));
        assert_eq!(parse_query(&q).unwrap()["prefix"], name);
    }

    #[test]
    fn ranges() {
        let r = ByteRange::parse("bytes=10-").unwrap();
        assert_eq!(
            r,
            ByteRange {
                first: 10,
                last: None
            }
        );
        assert_eq!(r.resolve(100), Some((10, 90)));
        assert_eq!(r.resolve(10), None);
        assert_eq!(r.resolve(9), None);
        let r = ByteRange::parse("bytes=10-19").unwrap();
        assert_eq!(r.resolve(100), Some((10, 10)));
        assert_eq!(r.resolve(15), Some((10, 5)));
        assert_eq!(r.to_header(), "bytes=10-19");
        assert_eq!(
            ByteRange::parse("bytes=0-").unwrap().resolve(0),
            Some((0, 0))
        );
        for bad in [
            "bytes=-5",
            "bytes=5-4",
            "bytes=1-2,4-5",
            "items=0-",
            "bytes=a-",
            "bytes= 1-",
            "bytes=99999999999999999999-",
            "bytes=+1-",
        ] {
            assert_eq!(ByteRange::parse(bad), None, "{bad}");
        }
    }
}
