//! Password sessions over HTTP (docs/HTTP.md §13): what an OPAQUE login over two HTTP
//! requests binds to in place of the TLS exporter, and how the session it opens keys the
//! request signatures of §1–3.
//!
//! ```text
//! context   = SHA-256("ferry http login v1")                OPAQUE's context on both ends
//! binding   = HKDF-SHA256(session_key, "ferry http login binding v1")
//!             session_key: the 64-byte key of OPAQUE's AKE (RFC 9807 §6.4)
//! secret    = HKDF-SHA256(binding, "ferry session v1" ‖ 0x00 ‖ id)   crate::session::derive_secret
//! claims    = name: the user, epoch 1, role: "session", session: hex(id)
//! psk       = HKDF-SHA256(secret, "ferry http session v1" ‖ 0x00 ‖ claims)
//! ```
//!
//! `psk` then takes the place of a credential's key in §1: the same date and direction keys,
//! the same canonical request, header and signatures. The session secret comes out of the
//! AKE, which only the client (who knows the password) and the server (which holds the
//! record and its OPAQUE keys) can compute: an intermediary that saw every byte of the
//! login cannot derive it. The server takes the principal (name, role, attributes) from the
//! stored session, never from the claims, so editing a claim only changes the key.

use hkdf::Hkdf;
use sha2::{Digest, Sha256};

use crate::claims::Claims;
use crate::secret::{Exporter, Psk, SessionSecret};
use crate::session::SessionId;

/// The attribute of claims that names a session: its ID in lowercase hex.
pub const SESSION_ATTRIBUTE: &str = "session";

const BINDING_INFO: &[u8] = b"ferry http login binding v1";
const PSK_INFO: &[u8] = b"ferry http session v1\0";

/// OPAQUE's context for a login over HTTP: a fixed value both ends agree on, since there is
/// no end-to-end channel whose exporter could serve.
pub fn login_context() -> Exporter {
    Exporter::from_bytes(Sha256::digest(b"ferry http login v1").into())
}

fn hkdf(ikm: &[u8], info: &[&[u8]]) -> [u8; 32] {
    let mut okm = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's limit of 255 * 32.
    let _ = Hkdf::<Sha256>::new(None, ikm).expand_multi_info(info, &mut okm);
    okm
}

/// What a session opened by an HTTP login is derived from, in place of the exporter: the
/// AKE's session key, through HKDF.
pub fn binding(session_key: &[u8]) -> Exporter {
    let mut okm = zeroize::Zeroizing::new(hkdf(session_key, &[BINDING_INFO]));
    Exporter::from_bytes(std::mem::take(&mut *okm))
}

/// The claims a session's requests carry: the user's name and the session's ID. Their role
/// is the placeholder `session`: the server acts with the role stored with the session.
pub fn session_claims(user: &str, id: &SessionId) -> Result<Claims, crate::claims::ClaimsError> {
    Claims::new(
        user,
        1,
        [
            ("role", "session".to_owned()),
            (SESSION_ATTRIBUTE, data_encoding::HEXLOWER.encode(id)),
        ],
    )
}

/// A `session` attribute that is not 32 lowercase hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed session attribute")]
pub struct MalformedSession;

/// The session that claims name, if they name one (a `session` attribute of 32 hex digits);
/// `Err` if the attribute is there but malformed.
pub fn session_of(claims: &Claims) -> Result<Option<SessionId>, MalformedSession> {
    let Some(hex) = claims.attributes().get(SESSION_ATTRIBUTE) else {
        return Ok(None);
    };
    data_encoding::HEXLOWER
        .decode(hex.as_bytes())
        .ok()
        .and_then(|b| b.try_into().ok())
        .map(Some)
        .ok_or(MalformedSession)
}

/// The key that signs a session's requests, for these encoded claims.
pub fn session_psk(secret: &SessionSecret, encoded_claims: &[u8]) -> Psk {
    let mut okm =
        zeroize::Zeroizing::new(hkdf(secret.expose_secret(), &[PSK_INFO, encoded_claims]));
    Psk::from_bytes(std::mem::take(&mut *okm))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_name_the_session_and_keys_differ() {
        let id = [7u8; 16];
        let c = session_claims("carol", &id).unwrap();
        assert_eq!(session_of(&c), Ok(Some(id)));
        let plain = Claims::new("carol", 1, [("role", "writer")]).unwrap();
        assert_eq!(session_of(&plain), Ok(None));
        let bad = Claims::new("carol", 1, [("role", "w"), ("session", "zz")]).unwrap();
        assert_eq!(session_of(&bad), Err(MalformedSession));
        let s = SessionSecret::from_bytes([1; 32]);
        let other = session_claims("dave", &id).unwrap();
        assert_ne!(
            session_psk(&s, &c.encode()),
            session_psk(&s, &other.encode())
        );
        assert_ne!(binding(&[1; 64]), binding(&[2; 64]));
        assert_ne!(binding(&[1; 64]), login_context());
    }
}
