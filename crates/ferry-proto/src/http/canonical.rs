//! The canonical text of a request and of a response: what the signatures cover.
//!
//! ```text
//! canonical_request = METHOD "\n" PATH "\n" QUERY "\n"
//!                     "content-type:" VALUE "\n" "range:" VALUE "\n"
//!                     "claims:" hex(SHA-256(claims)) "\n"
//!                     "timestamp:" DECIMAL "\n" "nonce:" hex(nonce) "\n"
//!                     BODY_HASH
//! canonical_response = STATUS "\n" "content-range:" VALUE "\n" "content-type:" VALUE "\n"
//!                      BODY_HASH
//! ```
//!
//! * METHOD: 1 to 16 upper-case ASCII letters, as sent.
//! * PATH: the request target's path, percent-decoded, then re-encoded: every byte outside
//!   the unreserved set of RFC 3986 §2.3 (`A-Z a-z 0-9 - . _ ~`) and `/` becomes `%XX` with
//!   upper-case hex. So `%2F` and `/` are the same, as are `%7e` and `~`: the server must
//!   route on the decoded path. It must start with `/`; a `.` or `..` segment or an empty
//!   segment other than the last is refused (a proxy could rewrite them); at most
//!   [`MAX_PATH_LEN`] bytes as received.
//! * QUERY: the query without `?`, split at `&`, each parameter at its first `=` (a parameter
//!   with no `=` has the empty value), key and value percent-decoded and re-encoded as the
//!   path (here `/` too is encoded), the `key=value` pairs sorted by their bytes and joined by
//!   `&`; empty when there is no query. A raw `+` is refused (form encoding reads it as a
//!   space, RFC 3986 does not: the client must write `%20` or `%2B`), as are empty
//!   parameters and empty keys; at most [`MAX_QUERY_LEN`] bytes and [`MAX_QUERY_PARAMS`]
//!   parameters.
//! * The signed headers are a fixed list, in this order, each as `name:value` with the
//!   value's leading and trailing spaces and tabs removed, the empty value when absent (the
//!   server must treat an empty signed header as absent and refuse a repeated one). Values
//!   may hold visible ASCII, space and tab only, at most [`MAX_HEADER_LEN`] bytes. Request:
//!   `content-type`, `range`. Response: `content-range`, `content-type`. Other headers
//!   (`Host`, `Content-Length`, ...) are left to the proxies that rewrite them.
//! * `claims`: the SHA-256 of the claims' canonical encoding ([`crate::claims`]).
//! * BODY_HASH: the [`BodyHash`], as in the `x-ferry-content-sha256` header.
//!
//! No field can hold a newline, so the text splits back into its fields one way only.

use sha2::{Digest, Sha256};

use super::{Nonce, SignError};

/// Longest request path accepted, in bytes as received.
pub const MAX_PATH_LEN: usize = 2048;
/// Longest query accepted, in bytes as received.
pub const MAX_QUERY_LEN: usize = 2048;
/// Most query parameters accepted.
pub const MAX_QUERY_PARAMS: usize = 64;
/// Longest signed header value accepted.
pub const MAX_HEADER_LEN: usize = 1024;

/// The body-hash value of a body sent as signed chunks ([`super::chunks`]).
pub const STREAMING_PAYLOAD: &str = "STREAMING-FERRY1-HMAC-SHA256-CHUNKS";

/// What a signature says about a body: its SHA-256, or that it streams as signed chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyHash {
    /// The SHA-256 of the whole body.
    Sha256([u8; 32]),
    /// The body is a chain of signed chunks ([`super::chunks`]).
    Streaming,
}

impl BodyHash {
    /// The hash of a whole body.
    pub fn of(body: &[u8]) -> Self {
        Self::Sha256(Sha256::digest(body).into())
    }

    /// The value of the `x-ferry-content-sha256` header: 64 lowercase hex digits, or
    /// [`STREAMING_PAYLOAD`].
    pub fn to_header(&self) -> String {
        match self {
            Self::Sha256(h) => data_encoding::HEXLOWER.encode(h),
            Self::Streaming => STREAMING_PAYLOAD.to_owned(),
        }
    }

    /// Parses the header value, refusing anything but exactly the two forms above.
    pub fn parse(value: &str) -> Option<Self> {
        if value == STREAMING_PAYLOAD {
            return Some(Self::Streaming);
        }
        parse_hex32(value).map(Self::Sha256)
    }
}

/// 64 lowercase hex digits.
pub(crate) fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    data_encoding::HEXLOWER
        .decode(s.as_bytes())
        .ok()?
        .try_into()
        .ok()
}

/// The signed parts of a request, as the client sends them and the server receives them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestParts {
    method: String,
    path: String,
    query: String,
    content_type: String,
    range: String,
    body: BodyHash,
}

impl RequestParts {
    /// A request with no signed headers. `path` and `query` are as they appear in the request
    /// target (percent-encoded; the query without its `?`).
    pub fn new(method: &str, path: &str, query: &str, body: BodyHash) -> Self {
        Self {
            method: method.to_owned(),
            path: path.to_owned(),
            query: query.to_owned(),
            content_type: String::new(),
            range: String::new(),
            body,
        }
    }

    /// Sets the `Content-Type` header's value.
    pub fn content_type(mut self, value: &str) -> Self {
        value.clone_into(&mut self.content_type);
        self
    }

    /// Sets the `Range` header's value.
    pub fn range(mut self, value: &str) -> Self {
        value.clone_into(&mut self.range);
        self
    }

    /// The body hash the request declares.
    pub fn body(&self) -> BodyHash {
        self.body
    }

    /// The canonical request text (see the module doc).
    pub(crate) fn canonical(
        &self,
        claims_encoding: &[u8],
        timestamp: u64,
        nonce: &Nonce,
    ) -> Result<String, SignError> {
        let method = &self.method;
        if method.is_empty() || method.len() > 16 || !method.bytes().all(|b| b.is_ascii_uppercase())
        {
            return Err(SignError::Method);
        }
        let path = canonical_path(&self.path)?;
        let query = canonical_query(&self.query)?;
        let content_type = header_value(&self.content_type, "content-type")?;
        let range = header_value(&self.range, "range")?;
        let claims = data_encoding::HEXLOWER.encode(&Sha256::digest(claims_encoding));
        Ok(format!(
            "{method}\n{path}\n{query}\ncontent-type:{content_type}\nrange:{range}\n\
             claims:{claims}\ntimestamp:{timestamp}\nnonce:{}\n{}",
            nonce.to_hex(),
            self.body.to_header()
        ))
    }
}

/// The signed parts of a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseParts {
    status: u16,
    content_range: String,
    content_type: String,
    body: BodyHash,
}

impl ResponseParts {
    /// A response with no signed headers.
    pub fn new(status: u16, body: BodyHash) -> Self {
        Self {
            status,
            content_range: String::new(),
            content_type: String::new(),
            body,
        }
    }

    /// Sets the `Content-Range` header's value.
    pub fn content_range(mut self, value: &str) -> Self {
        value.clone_into(&mut self.content_range);
        self
    }

    /// Sets the `Content-Type` header's value.
    pub fn content_type(mut self, value: &str) -> Self {
        value.clone_into(&mut self.content_type);
        self
    }

    /// The canonical response text (see the module doc). `None` if a header value breaks
    /// the rules: such a response cannot be signed, nor verify.
    pub(crate) fn canonical(&self) -> Option<String> {
        let content_range = header_value(&self.content_range, "content-range").ok()?;
        let content_type = header_value(&self.content_type, "content-type").ok()?;
        Some(format!(
            "{}\ncontent-range:{content_range}\ncontent-type:{content_type}\n{}",
            self.status,
            self.body.to_header()
        ))
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes `s`; `None` on a `%` not followed by two hex digits.
pub(crate) fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hi = hex_value(*bytes.get(i + 1)?)?;
            let lo = hex_value(*bytes.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(out)
}

/// Appends `bytes` percent-encoded: unreserved bytes (and `/` if `keep_slash`) as they are,
/// every other byte as `%XX`.
pub(crate) fn percent_encode(bytes: &[u8], keep_slash: bool, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if is_unreserved(b) || (keep_slash && b == b'/') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}

/// The canonical path (see the module doc).
pub(crate) fn canonical_path(raw: &str) -> Result<String, SignError> {
    if raw.len() > MAX_PATH_LEN {
        return Err(SignError::Path("too long"));
    }
    if !raw.starts_with('/') {
        return Err(SignError::Path("must start with /"));
    }
    if raw
        .bytes()
        .any(|b| !(0x21..=0x7e).contains(&b) || b == b'?' || b == b'#')
    {
        return Err(SignError::Path("holds a byte that must be percent-encoded"));
    }
    let decoded = percent_decode(raw).ok_or(SignError::Path("bad percent escape"))?;
    // `raw` starts with `/`, so `decoded` does too.
    let segments: Vec<&[u8]> = decoded
        .get(1..)
        .unwrap_or_default()
        .split(|&b| b == b'/')
        .collect();
    let last = segments.len().saturating_sub(1);
    for (i, seg) in segments.iter().enumerate() {
        if *seg == b"." || *seg == b".." {
            return Err(SignError::Path("holds a . or .. segment"));
        }
        if seg.is_empty() && i != last {
            return Err(SignError::Path("holds an empty segment"));
        }
    }
    let mut out = String::with_capacity(decoded.len() * 3);
    percent_encode(&decoded, true, &mut out);
    Ok(out)
}

/// The canonical query (see the module doc).
pub(crate) fn canonical_query(raw: &str) -> Result<String, SignError> {
    if raw.is_empty() {
        return Ok(String::new());
    }
    if raw.len() > MAX_QUERY_LEN {
        return Err(SignError::Query("too long"));
    }
    if raw
        .bytes()
        .any(|b| !(0x21..=0x7e).contains(&b) || b == b'#')
    {
        return Err(SignError::Query(
            "holds a byte that must be percent-encoded",
        ));
    }
    if raw.contains('+') {
        return Err(SignError::Query("holds a raw +"));
    }
    let mut pairs = Vec::new();
    for param in raw.split('&') {
        if pairs.len() == MAX_QUERY_PARAMS {
            return Err(SignError::Query("too many parameters"));
        }
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        if key.is_empty() {
            return Err(SignError::Query("empty parameter or key"));
        }
        let key = percent_decode(key).ok_or(SignError::Query("bad percent escape"))?;
        let value = percent_decode(value).ok_or(SignError::Query("bad percent escape"))?;
        let mut pair = String::new();
        percent_encode(&key, false, &mut pair);
        pair.push('=');
        percent_encode(&value, false, &mut pair);
        pairs.push(pair);
    }
    pairs.sort_unstable();
    Ok(pairs.join("&"))
}

/// A signed header's value, trimmed; refused if it holds anything but visible ASCII, space
/// and tab.
fn header_value<'a>(value: &'a str, name: &'static str) -> Result<&'a str, SignError> {
    if value.len() > MAX_HEADER_LEN
        || !value
            .bytes()
            .all(|b| (0x20..=0x7e).contains(&b) || b == b'\t')
    {
        return Err(SignError::Header(name));
    }
    Ok(value.trim_matches([' ', '\t']))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(canonical_path("/").unwrap(), "/");
        assert_eq!(canonical_path("/a/b/").unwrap(), "/a/b/");
        assert_eq!(canonical_path("/a%2Fb").unwrap(), "/a/b");
        assert_eq!(canonical_path("/%7e%7E~").unwrap(), "/~~~");
        assert_eq!(
            canonical_path("/r%C3%A9sum%c3%a9").unwrap(),
            "/r%C3%A9sum%C3%A9"
        );
        assert_eq!(canonical_path("/a:b,c").unwrap(), "/a%3Ab%2Cc");
        assert_eq!(canonical_path("/%25").unwrap(), "/%25");
        assert_eq!(canonical_path("/%20").unwrap(), "/%20");
        for bad in [
            "",
            "a",
            "/a//b",
            "//",
            "/./a",
            "/a/..",
            "/a/%2E%2E/b",
            "/%2e",
            "/%",
            "/%4",
            "/%zz",
            "/a b",
            "/a?b",
            "/a#b",
            "/é",
            "/\n",
        ] {
            assert!(canonical_path(bad).is_err(), "{bad:?} accepted");
        }
        assert!(canonical_path(&format!("/{}", "a".repeat(MAX_PATH_LEN))).is_err());
        assert!(canonical_path(&format!("/{}", "a".repeat(MAX_PATH_LEN - 1))).is_ok());
    }

    #[test]
    fn queries() {
        assert_eq!(canonical_query("").unwrap(), "");
        assert_eq!(canonical_query("b=2&a=1&a=0").unwrap(), "a=0&a=1&b=2");
        assert_eq!(canonical_query("x").unwrap(), "x=");
        assert_eq!(canonical_query("x=").unwrap(), "x=");
        assert_eq!(canonical_query("p=a/b%2fc").unwrap(), "p=a%2Fb%2Fc");
        assert_eq!(canonical_query("p=a=b").unwrap(), "p=a%3Db");
        assert_eq!(canonical_query("p=%20%2B").unwrap(), "p=%20%2B");
        assert_eq!(canonical_query("%61=%7e").unwrap(), "a=~");
        for bad in [
            "a=1&&b=2", "&", "=1", "a+b=1", "a=1+2", "a=%", "a=%g0", "a=1 2", "a=#",
        ] {
            assert!(canonical_query(bad).is_err(), "{bad:?} accepted");
        }
        let many = vec!["a=1"; MAX_QUERY_PARAMS].join("&");
        assert!(canonical_query(&many).is_ok());
        assert!(canonical_query(&format!("{many}&b=2")).is_err());
    }

    #[test]
    fn body_hash_header() {
        let h = BodyHash::of(b"");
        let text = h.to_header();
        assert_eq!(
            text,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(BodyHash::parse(&text), Some(h));
        assert_eq!(
            BodyHash::parse(STREAMING_PAYLOAD),
            Some(BodyHash::Streaming)
        );
        assert_eq!(BodyHash::parse(&text.to_uppercase()), None);
        assert_eq!(BodyHash::parse(&text[1..]), None);
        assert_eq!(BodyHash::parse(&format!("{text}0")), None);
        assert_eq!(BodyHash::parse(""), None);
        assert_eq!(BodyHash::parse("streaming-ferry1-hmac-sha256-chunks"), None);
    }

    #[test]
    fn header_values_are_trimmed_and_checked() {
        let n = Nonce::from_bytes([0; 16]);
        let a = RequestParts::new("GET", "/", "", BodyHash::Streaming).range(" bytes=0-1\t");
        let b = RequestParts::new("GET", "/", "", BodyHash::Streaming).range("bytes=0-1");
        assert_eq!(a.canonical(b"c", 1, &n), b.canonical(b"c", 1, &n));
        let bad = RequestParts::new("GET", "/", "", BodyHash::Streaming).range("a\nb");
        assert_eq!(bad.canonical(b"c", 1, &n), Err(SignError::Header("range")));
        for m in ["", "get", "G-T", "ABCDEFGHIJKLMNOPQ"] {
            let r = RequestParts::new(m, "/", "", BodyHash::Streaming);
            assert_eq!(r.canonical(b"c", 1, &n), Err(SignError::Method));
        }
        let resp = ResponseParts::new(200, BodyHash::Streaming).content_type("x\r\ny");
        assert_eq!(resp.canonical(), None);
    }
}
