//! The cryptographic core of ferry's HTTP front, free of IO: signed, fresh requests and
//! signed responses for clients that can only speak HTTP through a host that terminates TLS
//! itself. docs/HTTP.md specifies every byte and works one request through by hand.
//!
//! A client signs each request with a key derived (HKDF, RFC 5869) from its credential key
//! and the request's date, the way AWS Signature V4 scopes its keys; the server re-derives
//! the credential key from the claims the request carries, exactly as the native psk method
//! does ([`crate::psk`]), so a forged role fails like a wrong key. Each request carries a
//! timestamp checked against a window and a random nonce checked against a bounded
//! [`ReplayCache`]; each response is signed over the request's signature, so it cannot be
//! moved to another request. Streamed bodies are signed chunk by chunk in a chain
//! ([`chunks`]).
//!
//! | file | job |
//! |---|---|
//! | [`canonical`] | the canonical request and response text: path, query, headers, body hash |
//! | [`signing`] | key derivation, request and response signatures, the two ends' calls |
//! | [`header`] | the `Authorization` header: format and strict parser |
//! | [`replay`] | the freshness window and the nonce cache |
//! | [`chunks`] | the chained signatures of a streamed body and their framing |
//! | [`seal`] | sealed bodies: HPKE (RFC 9180) in the manner of Oblivious HTTP, chunked |
//! | [`target`] | the decoded path, query and `Range` header the server routes on |
//!
//! Both ends of one request, in memory:
//!
//! ```
//! use ferry_proto::{claims::Claims, psk, secret::MasterKey};
//! use ferry_proto::http::{BodyHash, Nonce, ReplayCache, RequestParts, ResponseParts};
//! use ferry_proto::http::{RequestSigner, verify_request};
//!
//! let master = MasterKey::from_bytes([7; 32]);
//! let claims = Claims::new("alice", 1, [("role", "writer")]).unwrap();
//! let signer = RequestSigner::new(claims.clone(), psk::derive_psk(&master, &claims));
//! let now = 1_795_000_000; // Unix seconds, read by the caller
//! let body = b"hello";
//! let request = RequestParts::new("PUT", "/v1/sources/a.txt", "", BodyHash::of(body));
//! let nonce = Nonce::generate(&mut rand_core::OsRng);
//! let signed = signer.sign(&request, now, nonce).unwrap();
//! let authorization = signed.authorization(); // the Authorization header's value
//!
//! // The server, from the header and the request it received:
//! let mut cache = ReplayCache::new(Default::default());
//! let verified =
//!     verify_request(&master, &authorization, &request, now, &mut cache, |_| true).unwrap();
//! assert_eq!(verified.claims().role(), "writer");
//! let response = ResponseParts::new(200, BodyHash::of(b""));
//! // The x-ferry-signature header's value:
//! let response_signature = verified.sign_response(&response).unwrap().to_hex();
//!
//! // The client checks the response against its own request.
//! signed.verify_response(&response, &response_signature).unwrap();
//! // The same request again is a replay.
//! assert!(verify_request(&master, &authorization, &request, now, &mut cache, |_| true).is_err());
//! ```

pub mod canonical;
pub mod chunks;
pub mod header;
pub mod replay;
pub mod seal;
pub mod session;
pub mod signing;
pub mod target;
#[cfg(test)]
mod worked_example;

pub use canonical::{BodyHash, RequestParts, ResponseParts};
pub use header::Authorization;
pub use replay::{ReplayCache, ReplayConfig};
pub use signing::{
    RequestSigner, Signature, SignedRequest, VerifiedRequest, verify_request, verify_request_with,
};

/// The algorithm name that opens the `Authorization` header and every string to sign.
pub const ALGORITHM: &str = "FERRY1-HMAC-SHA256";

/// The header that carries the body's hash ([`BodyHash`]), on requests and responses.
pub const CONTENT_SHA256_HEADER: &str = "x-ferry-content-sha256";

/// The response header that carries the response's signature.
pub const RESPONSE_SIGNATURE_HEADER: &str = "x-ferry-signature";

/// A request's nonce: 128 random bits, drawn by the client from the operating system's RNG.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nonce([u8; 16]);

impl Nonce {
    /// Draws a fresh nonce. Pass `rand_core::OsRng` (the operating system's RNG); this crate
    /// reads no global RNG itself.
    pub fn generate(rng: &mut impl rand_core::CryptoRngCore) -> Self {
        let mut bytes = [0u8; 16];
        rng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// Wraps 16 bytes (tests and worked examples; real requests use [`Nonce::generate`]).
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The 16 bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The nonce as 32 lowercase hex digits, as it travels and is signed.
    pub fn to_hex(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.0)
    }
}

/// Why the server refused a request, for its log only: the peer must see one answer for
/// every cause (HTTP 401 with one generic message).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// The `Authorization` header, the body-hash header, a path or a query is malformed.
    Malformed,
    /// The timestamp is outside the freshness window.
    OutsideWindow,
    /// The signature does not verify (wrong key, forged claim, altered request).
    BadSignature,
    /// The claims are no longer current (revoked, or an older epoch).
    NotCurrent,
    /// The nonce was already used inside the window.
    Replayed,
}

/// Why a request, response or chunk was not accepted.
///
/// Its `Display` names no cause: the peer-facing text of every refusal is the same. The cause
/// of a [`VerifyError::Refused`] is kept for the log ([`VerifyError::reason`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Not authentic or not fresh: the server answers 401, a client drops the response.
    #[error("request not authenticated")]
    Refused(Reason),
    /// The replay cache is full of unexpired nonces, so this request cannot be checked for
    /// replay now: the server answers 503 with `Retry-After` and the client retries later
    /// with a new nonce. Never a reason to accept.
    #[error("server busy, retry later")]
    Busy,
}

impl VerifyError {
    /// The cause, for the log; `None` for [`VerifyError::Busy`].
    pub fn reason(&self) -> Option<Reason> {
        match self {
            Self::Refused(r) => Some(*r),
            Self::Busy => None,
        }
    }
}

/// Why a client could not build a signed request: its own input breaks the canonical
/// rules (a programming error or bad user input, never a peer's fault).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The path is not a canonical-able absolute path (see [`canonical`]).
    #[error("request path cannot be signed: {0}")]
    Path(&'static str),
    /// The query is malformed (see [`canonical`]).
    #[error("request query cannot be signed: {0}")]
    Query(&'static str),
    /// The method is not an HTTP token of upper-case letters.
    #[error("request method cannot be signed")]
    Method,
    /// A signed header's value holds a byte other than visible ASCII, space or tab.
    #[error("header {0} cannot be signed")]
    Header(&'static str),
    /// The timestamp is past the year 9999.
    #[error("timestamp out of range")]
    Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::Claims;
    use crate::psk;
    use crate::secret::MasterKey;

    /// Every type holding a key prints without its bytes, in hex or as a byte array.
    #[test]
    fn debug_shows_no_key_bytes() {
        let master = MasterKey::from_bytes([0x5a; 32]);
        let claims = Claims::new("alice", 1, [("role", "writer")]).unwrap();
        let psk = psk::derive_psk(&master, &claims);
        let keys = signing::DayKeys::derive(&psk, "20261118".into());
        let secrets: Vec<[u8; 32]> = vec![
            *master.expose_secret(),
            *psk.expose_secret(),
            *signing::date_key(&psk, "20261118").expose_for_test(),
            *keys.request.expose_for_test(),
            *keys.response.expose_for_test(),
        ];
        let signer = RequestSigner::new(claims, psk);
        let parts = RequestParts::new("GET", "/a", "", BodyHash::Streaming);
        let signed = signer
            .sign(&parts, 1_795_000_000, Nonce::from_bytes([1; 16]))
            .unwrap();
        let mut cache = ReplayCache::new(ReplayConfig::default());
        let verified = verify_request(
            &master,
            signed.authorization(),
            &parts,
            1_795_000_000,
            &mut cache,
            |_| true,
        )
        .unwrap();
        let seal_key = seal::SealKeyPair::derive(1, &[0x5a; 32]);
        let shown = format!(
            "{signer:?} {signed:?} {verified:?} {:?} {:?} {seal_key:?} {:?}",
            signed.body_signer(),
            verified.body_verifier(),
            seal::RequestOpener::new(&seal_key),
        );
        assert!(shown.contains("SigningKey(..)") && shown.contains("Psk(..)"));
        for s in &secrets {
            let hex = data_encoding::HEXLOWER.encode(s);
            assert!(!shown.contains(&hex), "hex key bytes in {shown}");
            assert!(!shown.contains(&format!("{s:?}")), "key bytes in {shown}");
        }
    }
}
