//! Keys, signatures and the two ends' calls.
//!
//! ```text
//! psk        = HKDF-SHA256(master, "ferry psk v1" ‖ 0x00 ‖ claims)          (crate::psk)
//! k_date     = HKDF-SHA256(salt = none, ikm = psk,    info = "ferry http date v1" ‖ 0x00 ‖ DATE)
//! k_request  = HKDF-SHA256(salt = none, ikm = k_date, info = "ferry http key v1" ‖ 0x00 ‖ "request")
//! k_response = HKDF-SHA256(salt = none, ikm = k_date, info = "ferry http key v1" ‖ 0x00 ‖ "response")
//!
//! request_string  = "FERRY1-HMAC-SHA256\n" DATE "/request\n" hex(SHA-256(canonical_request))
//! request_sig     = HMAC-SHA256(k_request, request_string)
//! response_string = "FERRY1-HMAC-SHA256\n" DATE "/response\n" hex(request_sig) "\n"
//!                   hex(SHA-256(canonical_response))
//! response_sig    = HMAC-SHA256(k_response, response_string)
//! ```
//!
//! HKDF is RFC 5869 (each step a full extract-and-expand to 32 bytes), HMAC is RFC 2104.
//! `DATE` is the UTC date (`YYYYMMDD`) of the request's timestamp, so a leaked `k_date` or
//! `k_request` signs only for that day, as AWS Signature V4 scopes its keys; unlike SigV4 the
//! keys come from HKDF with labels, and the two directions have their own keys, so a request
//! signature can never pass for a response signature nor the reverse. The response uses the
//! request's date, so a request signed just before midnight is answered under the same keys.
//! The canonical texts are [`super::canonical`]'s; streamed bodies are [`super::chunks`]'.

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::canonical::{RequestParts, ResponseParts};
use super::chunks::{ChunkSigner, ChunkVerifier};
use super::header::Authorization;
use super::replay::ReplayCache;
use super::{ALGORITHM, Nonce, Reason, SignError, VerifyError};
use crate::claims::Claims;
use crate::psk;
use crate::secret::{MasterKey, Psk};

const DATE_INFO: &[u8] = b"ferry http date v1\0";
const KEY_INFO: &[u8] = b"ferry http key v1\0";

/// The latest timestamp accepted: 9999-12-31T23:59:59Z, so that every date has 8 digits.
pub const MAX_TIMESTAMP: u64 = 253_402_300_799;

/// A key derived for one day and one purpose. Zeroized on drop; prints as `SigningKey(..)`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct SigningKey([u8; 32]);

impl core::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

impl SigningKey {
    fn hkdf(ikm: &[u8], info: &[&[u8]]) -> Self {
        let mut okm = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's limit of 255 * 32.
        let _ = Hkdf::<Sha256>::new(None, ikm).expand_multi_info(info, &mut okm);
        let key = Self(okm);
        okm.zeroize();
        key
    }

    pub(crate) fn mac(&self, parts: &[&[u8]]) -> Signature {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        for p in parts {
            m.update(p);
        }
        Signature(m.finalize().into_bytes().into())
    }

    #[cfg(test)]
    pub(crate) fn test_key(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    #[cfg(test)]
    pub(crate) fn expose_for_test(&self) -> &[u8; 32] {
        &self.0
    }
}

/// `k_date`: the credential's key for one day.
pub(crate) fn date_key(psk: &Psk, date: &str) -> SigningKey {
    SigningKey::hkdf(psk.expose_secret(), &[DATE_INFO, date.as_bytes()])
}

/// The keys of one credential on one day.
#[derive(Clone, Debug)]
pub(crate) struct DayKeys {
    pub(crate) date: String,
    pub(crate) request: SigningKey,
    pub(crate) response: SigningKey,
}

impl DayKeys {
    pub(crate) fn derive(psk: &Psk, date: String) -> Self {
        let date_key = date_key(psk, &date);
        Self {
            request: SigningKey::hkdf(&date_key.0, &[KEY_INFO, b"request"]),
            response: SigningKey::hkdf(&date_key.0, &[KEY_INFO, b"response"]),
            date,
        }
    }

    /// The string to sign of a request.
    pub(crate) fn request_string(&self, canonical_request: &str) -> String {
        format!(
            "{ALGORITHM}\n{}/request\n{}",
            self.date,
            hex_sha256(canonical_request.as_bytes())
        )
    }

    /// The string to sign of a response to the request signed `request`.
    pub(crate) fn response_string(&self, request: &Signature, canonical_response: &str) -> String {
        format!(
            "{ALGORITHM}\n{}/response\n{}\n{}",
            self.date,
            request.to_hex(),
            hex_sha256(canonical_response.as_bytes())
        )
    }

    fn response_signature(
        &self,
        request: &Signature,
        parts: &ResponseParts,
    ) -> Result<Signature, SignError> {
        let canonical = parts
            .canonical()
            .ok_or(SignError::Header("response header"))?;
        Ok(self
            .response
            .mac(&[self.response_string(request, &canonical).as_bytes()]))
    }
}

pub(crate) fn hex_sha256(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(&Sha256::digest(bytes))
}

/// An HMAC-SHA256 signature. Not secret (it travels in headers); compared in constant time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signature(pub(crate) [u8; 32]);

impl Signature {
    /// 64 lowercase hex digits, as the signature travels.
    pub fn to_hex(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.0)
    }

    /// Parses 64 lowercase hex digits.
    pub fn parse(hex: &str) -> Option<Self> {
        super::canonical::parse_hex32(hex).map(Self)
    }

    pub(crate) fn ct_eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

/// The UTC date `YYYYMMDD` of a Unix time in seconds; `None` past [`MAX_TIMESTAMP`].
pub(crate) fn date(timestamp: u64) -> Option<String> {
    if timestamp > MAX_TIMESTAMP {
        return None;
    }
    // Days since 1970-01-01 to a civil date (Howard Hinnant's `civil_from_days`).
    let z = i64::try_from(timestamp / 86_400).ok()? + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    Some(format!("{year:04}{month:02}{day:02}"))
}

/// The client's end: signs requests with a credential.
#[derive(Clone, Debug)]
pub struct RequestSigner {
    claims: Claims,
    encoded: Vec<u8>,
    psk: Psk,
}

impl RequestSigner {
    /// A signer for the credential `psk` issued for `claims`.
    pub fn new(claims: Claims, psk: Psk) -> Self {
        Self {
            encoded: claims.encode(),
            claims,
            psk,
        }
    }

    /// Signs a request made at `timestamp` (Unix seconds, the client's clock) with a fresh
    /// `nonce` ([`Nonce::generate`]; never reuse one).
    pub fn sign(
        &self,
        parts: &RequestParts,
        timestamp: u64,
        nonce: Nonce,
    ) -> Result<SignedRequest, SignError> {
        let date = date(timestamp).ok_or(SignError::Timestamp)?;
        let canonical = parts.canonical(&self.encoded, timestamp, &nonce)?;
        let keys = DayKeys::derive(&self.psk, date);
        let signature = keys
            .request
            .mac(&[keys.request_string(&canonical).as_bytes()]);
        let authorization =
            Authorization::new(self.claims.clone(), timestamp, nonce, signature).to_header_value();
        Ok(SignedRequest {
            authorization,
            signature,
            keys,
        })
    }
}

/// A signed request, kept by the client until its response is checked.
#[derive(Debug)]
pub struct SignedRequest {
    authorization: String,
    signature: Signature,
    keys: DayKeys,
}

impl SignedRequest {
    /// The `Authorization` header's value.
    pub fn authorization(&self) -> &str {
        &self.authorization
    }

    /// The request's signature.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// Signs the chunks of a streamed request body ([`super::BodyHash::Streaming`]).
    pub fn body_signer(&self) -> ChunkSigner {
        ChunkSigner::new(self.keys.request.clone(), &self.keys.date, self.signature)
    }

    /// Checks the response's signature header (`x-ferry-signature`) against the response
    /// received and this request. On success returns the response's signature, which seeds
    /// [`SignedRequest::response_body_verifier`] for a streamed response body.
    pub fn verify_response(
        &self,
        parts: &ResponseParts,
        signature_header: &str,
    ) -> Result<Signature, VerifyError> {
        let refused = VerifyError::Refused(Reason::BadSignature);
        let got =
            Signature::parse(signature_header).ok_or(VerifyError::Refused(Reason::Malformed))?;
        let expected = self
            .keys
            .response_signature(&self.signature, parts)
            .map_err(|_| VerifyError::Refused(Reason::Malformed))?;
        if expected.ct_eq(&got) {
            Ok(got)
        } else {
            Err(refused)
        }
    }

    /// Checks the chunks of a streamed response body whose response signature
    /// [`SignedRequest::verify_response`] returned.
    pub fn response_body_verifier(&self, response: Signature) -> ChunkVerifier {
        ChunkVerifier::new(self.keys.response.clone(), &self.keys.date, response)
    }
}

/// The server's end: checks a request's `Authorization` header against the request received.
///
/// In order: the header parses (claims included); the timestamp is within the cache's window
/// of `now` (Unix seconds, the server's clock); the signature verifies under keys re-derived
/// from `master` and the claims, so a forged claim fails like a wrong key; `is_current` says
/// the claims are not revoked (the server's revocation list and epochs); the nonce is new,
/// and is then remembered. Only an authentic request reaches the cache, so nobody without a
/// credential can fill it or spend someone else's nonce.
///
/// Every failure is [`VerifyError::Refused`] (answer 401, one message; log the reason), but a
/// full cache is [`VerifyError::Busy`] (answer 503).
pub fn verify_request(
    master: &MasterKey,
    authorization: &str,
    parts: &RequestParts,
    now: u64,
    cache: &mut ReplayCache,
    is_current: impl FnOnce(&Claims) -> bool,
) -> Result<VerifiedRequest, VerifyError> {
    verify_request_with(
        |encoded| psk::derive_psk_from_encoded(master, encoded),
        authorization,
        parts,
        now,
        cache,
        is_current,
    )
}

/// [`verify_request`] with the key given by `psk_of` (from the claims' encoding) instead of
/// derived from the master key: a password session's key ([`super::session::session_psk`]).
pub fn verify_request_with(
    psk_of: impl FnOnce(&[u8]) -> Psk,
    authorization: &str,
    parts: &RequestParts,
    now: u64,
    cache: &mut ReplayCache,
    is_current: impl FnOnce(&Claims) -> bool,
) -> Result<VerifiedRequest, VerifyError> {
    let malformed = VerifyError::Refused(Reason::Malformed);
    let auth = Authorization::parse(authorization).map_err(|_| malformed)?;
    cache.check_window(auth.timestamp(), now)?;
    let date = date(auth.timestamp()).ok_or(malformed)?;
    let canonical = parts
        .canonical(auth.claims_encoding(), auth.timestamp(), auth.nonce())
        .map_err(|_| malformed)?;
    let psk = psk_of(auth.claims_encoding());
    let keys = DayKeys::derive(&psk, date);
    let expected = keys
        .request
        .mac(&[keys.request_string(&canonical).as_bytes()]);
    if !expected.ct_eq(auth.signature()) {
        return Err(VerifyError::Refused(Reason::BadSignature));
    }
    if !is_current(auth.claims()) {
        return Err(VerifyError::Refused(Reason::NotCurrent));
    }
    cache.remember(*auth.nonce(), auth.timestamp(), now)?;
    Ok(VerifiedRequest {
        signature: expected,
        claims: auth.into_claims(),
        keys,
    })
}

/// An authentic, fresh request: its verified claims, and the keys to answer it.
#[derive(Debug)]
pub struct VerifiedRequest {
    claims: Claims,
    signature: Signature,
    keys: DayKeys,
}

impl VerifiedRequest {
    /// The verified claims: name, epoch, role and attributes, exactly as a psk login gives.
    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    /// The request's signature.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// Checks the chunks of the streamed request body.
    pub fn body_verifier(&self) -> ChunkVerifier {
        ChunkVerifier::new(self.keys.request.clone(), &self.keys.date, self.signature)
    }

    /// Signs the response; the signature goes in the `x-ferry-signature` header as
    /// [`Signature::to_hex`]. Fails only if a signed header value breaks the rules of
    /// [`super::canonical`].
    pub fn sign_response(&self, parts: &ResponseParts) -> Result<Signature, SignError> {
        self.keys.response_signature(&self.signature, parts)
    }

    /// Signs the chunks of a streamed response body, after the response signature.
    pub fn response_body_signer(&self, response: Signature) -> ChunkSigner {
        ChunkSigner::new(self.keys.response.clone(), &self.keys.date, response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{BodyHash, ReplayConfig};

    #[test]
    fn dates() {
        assert_eq!(date(0).unwrap(), "19700101");
        assert_eq!(date(86_399).unwrap(), "19700101");
        assert_eq!(date(86_400).unwrap(), "19700102");
        assert_eq!(date(951_782_400).unwrap(), "20000229");
        assert_eq!(date(1_709_164_800).unwrap(), "20240229");
        assert_eq!(date(1_735_689_599).unwrap(), "20241231");
        assert_eq!(date(1_735_689_600).unwrap(), "20250101");
        assert_eq!(date(MAX_TIMESTAMP).unwrap(), "99991231");
        assert_eq!(date(MAX_TIMESTAMP + 1), None);
        assert_eq!(date(u64::MAX), None);
    }

    fn setup() -> (MasterKey, Claims, RequestSigner) {
        let master = MasterKey::from_bytes([9; 32]);
        let claims = Claims::new("bob", 2, [("role", "reader")]).unwrap();
        let signer = RequestSigner::new(claims.clone(), psk::derive_psk(&master, &claims));
        (master, claims, signer)
    }

    const NOW: u64 = 1_795_000_000;

    fn cache() -> ReplayCache {
        ReplayCache::new(ReplayConfig::default())
    }

    #[test]
    fn keys_differ_by_day_and_purpose() {
        let psk = Psk::from_bytes([1; 32]);
        let a = DayKeys::derive(&psk, "20261129".into());
        let b = DayKeys::derive(&psk, "20261130".into());
        let c = DayKeys::derive(&Psk::from_bytes([2; 32]), "20261129".into());
        let da = date_key(&psk, "20261129");
        let db = date_key(&psk, "20261130");
        let all = [
            &da,
            &a.request,
            &a.response,
            &db,
            &b.request,
            &b.response,
            &c.request,
        ];
        for (i, x) in all.iter().enumerate() {
            for y in &all[i + 1..] {
                assert_ne!(x.expose_for_test(), y.expose_for_test());
            }
        }
        assert_eq!(
            format!("{a:?}").matches("SigningKey(..)").count(),
            2,
            "{a:?}"
        );
    }

    #[test]
    fn every_signed_part_is_covered() {
        let (master, _, signer) = setup();
        let nonce = Nonce::from_bytes([3; 16]);
        let parts = RequestParts::new("PUT", "/v1/a", "x=1", BodyHash::of(b"body"))
            .content_type("application/octet-stream")
            .range("bytes=0-");
        let signed = signer.sign(&parts, NOW, nonce).unwrap();
        let auth = signed.authorization().to_owned();
        // The untouched request verifies (once).
        assert!(verify_request(&master, &auth, &parts, NOW, &mut cache(), |_| true).is_ok());
        let altered = [
            RequestParts::new("POST", "/v1/a", "x=1", BodyHash::of(b"body")),
            RequestParts::new("PUT", "/v1/b", "x=1", BodyHash::of(b"body")),
            RequestParts::new("PUT", "/v1/a", "x=2", BodyHash::of(b"body")),
            RequestParts::new("PUT", "/v1/a", "x=1", BodyHash::of(b"bodY")),
            RequestParts::new("PUT", "/v1/a", "x=1", BodyHash::Streaming),
        ];
        for p in altered {
            let p = p.content_type("application/octet-stream").range("bytes=0-");
            let e = verify_request(&master, &auth, &p, NOW, &mut cache(), |_| true);
            assert_eq!(
                e.unwrap_err(),
                VerifyError::Refused(Reason::BadSignature),
                "{p:?}"
            );
        }
        for p in [
            parts.clone().content_type("text/plain"),
            parts.clone().range("bytes=1-"),
            parts.clone().range(""),
        ] {
            let e = verify_request(&master, &auth, &p, NOW, &mut cache(), |_| true);
            assert_eq!(e.unwrap_err(), VerifyError::Refused(Reason::BadSignature));
        }
        // Timestamp, nonce, claims and signature in the header.
        let header = Authorization::parse(&auth).unwrap();
        let forged_role = Claims::new("bob", 2, [("role", "writer")]).unwrap();
        let other_epoch = Claims::new("bob", 3, [("role", "reader")]).unwrap();
        let mut bad_sig = header.signature().0;
        bad_sig[31] ^= 1;
        for h in [
            Authorization::new(
                header.claims().clone(),
                NOW + 1,
                *header.nonce(),
                *header.signature(),
            ),
            Authorization::new(
                header.claims().clone(),
                NOW,
                Nonce::from_bytes([4; 16]),
                *header.signature(),
            ),
            Authorization::new(forged_role, NOW, *header.nonce(), *header.signature()),
            Authorization::new(other_epoch, NOW, *header.nonce(), *header.signature()),
            Authorization::new(
                header.claims().clone(),
                NOW,
                *header.nonce(),
                Signature(bad_sig),
            ),
        ] {
            let e = verify_request(
                &master,
                &h.to_header_value(),
                &parts,
                NOW,
                &mut cache(),
                |_| true,
            );
            assert_eq!(e.unwrap_err(), VerifyError::Refused(Reason::BadSignature));
        }
        // Another server's master key.
        let e = verify_request(
            &MasterKey::from_bytes([8; 32]),
            &auth,
            &parts,
            NOW,
            &mut cache(),
            |_| true,
        );
        assert_eq!(e.unwrap_err(), VerifyError::Refused(Reason::BadSignature));
    }

    #[test]
    fn revoked_stale_and_replayed_are_refused() {
        let (master, claims, signer) = setup();
        let parts = RequestParts::new("GET", "/v1/a", "", BodyHash::of(b""));
        let signed = signer
            .sign(&parts, NOW, Nonce::from_bytes([5; 16]))
            .unwrap();
        let auth = signed.authorization();
        let mut c = cache();
        let e = verify_request(&master, auth, &parts, NOW, &mut c, |_| false);
        assert_eq!(e.unwrap_err(), VerifyError::Refused(Reason::NotCurrent));
        // A revoked request did not spend its nonce.
        let v = verify_request(&master, auth, &parts, NOW, &mut c, |c| c.epoch() == 2).unwrap();
        assert_eq!(v.claims(), &claims);
        let e = verify_request(&master, auth, &parts, NOW + 10, &mut c, |_| true);
        assert_eq!(e.unwrap_err(), VerifyError::Refused(Reason::Replayed));
        // Outside the window, either way.
        for now in [NOW + 301, NOW - 301] {
            let e = verify_request(&master, auth, &parts, now, &mut cache(), |_| true);
            assert_eq!(e.unwrap_err(), VerifyError::Refused(Reason::OutsideWindow));
        }
        for now in [NOW + 300, NOW - 300] {
            assert!(verify_request(&master, auth, &parts, now, &mut cache(), |_| true).is_ok());
        }
        // One text for every refusal.
        assert_eq!(
            VerifyError::Refused(Reason::Replayed).to_string(),
            VerifyError::Refused(Reason::BadSignature).to_string()
        );
    }

    #[test]
    fn responses_are_bound_to_their_request() {
        let (master, _, signer) = setup();
        let parts = RequestParts::new("GET", "/v1/a", "", BodyHash::of(b""));
        let one = signer
            .sign(&parts, NOW, Nonce::from_bytes([1; 16]))
            .unwrap();
        let two = signer
            .sign(&parts, NOW, Nonce::from_bytes([2; 16]))
            .unwrap();
        let mut c = cache();
        let v1 =
            verify_request(&master, one.authorization(), &parts, NOW, &mut c, |_| true).unwrap();
        let response = ResponseParts::new(206, BodyHash::of(b"data"))
            .content_range("bytes 0-3/10")
            .content_type("application/octet-stream");
        let sig = v1.sign_response(&response).unwrap().to_hex();
        assert!(one.verify_response(&response, &sig).is_ok());
        // Moved to another request, or altered in flight.
        assert_eq!(
            two.verify_response(&response, &sig),
            Err(VerifyError::Refused(Reason::BadSignature))
        );
        let base = || {
            ResponseParts::new(206, BodyHash::of(b"data")).content_type("application/octet-stream")
        };
        for altered in [
            base().content_range("bytes 0-3/11"),
            ResponseParts::new(200, BodyHash::of(b"data"))
                .content_range("bytes 0-3/10")
                .content_type("application/octet-stream"),
            ResponseParts::new(206, BodyHash::of(b"datA"))
                .content_range("bytes 0-3/10")
                .content_type("application/octet-stream"),
            base()
                .content_range("bytes 0-3/10")
                .content_type("text/html"),
        ] {
            assert_eq!(
                one.verify_response(&altered, &sig),
                Err(VerifyError::Refused(Reason::BadSignature))
            );
        }
        // A request signature is not a response signature.
        assert!(
            one.verify_response(&response, &one.signature().to_hex())
                .is_err()
        );
        for bad in ["", "00", &sig.to_uppercase(), &format!("{sig} ")] {
            assert_eq!(
                one.verify_response(&response, bad),
                Err(VerifyError::Refused(Reason::Malformed))
            );
        }
    }

    #[test]
    fn unsignable_requests_say_why() {
        let (_, _, signer) = setup();
        let n = Nonce::from_bytes([0; 16]);
        let p = RequestParts::new("GET", "/a", "", BodyHash::Streaming);
        assert_eq!(
            signer.sign(&p, MAX_TIMESTAMP + 1, n).unwrap_err(),
            SignError::Timestamp
        );
        let p = RequestParts::new("GET", "a", "", BodyHash::Streaming);
        assert!(matches!(signer.sign(&p, NOW, n), Err(SignError::Path(_))));
    }
}
