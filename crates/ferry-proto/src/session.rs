//! Sessions: resume without the password, with fresh TLS keys on every connection. The
//! secret's derivation and MACs; the exchange, both ends, is [`crate::auth::session`].
//!
//! ```text
//! secret     = HKDF-SHA256(salt = none, IKM = exporter₀, info = "ferry session v1" ‖ 0x00 ‖ id)
//! client_mac = HMAC-SHA256(secret, "ferry session client v1" ‖ 0x00 ‖ exporter ‖ id)
//! server_mac = HMAC-SHA256(secret, "ferry session server v1" ‖ 0x00 ‖ exporter ‖ id)
//! ```
//!
//! `exporter₀` is the exporter of the connection on which the session was opened, `id` the
//! 16 random bytes the server chose; `exporter` that of the connection being resumed. The
//! secret never crosses the wire; each resumption proves it over its own connection, so
//! nothing a resumption sends can be replayed on another connection.

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::message::Digest;
use crate::secret::{Exporter, SessionSecret};

/// A session ID.
pub type SessionId = [u8; 16];

const DERIVE_INFO: &[u8] = b"ferry session v1\0";
const CLIENT_LABEL: &[u8] = b"ferry session client v1\0";
const SERVER_LABEL: &[u8] = b"ferry session server v1\0";

/// The session secret both ends derive when the session opens.
pub fn derive_secret(exporter: &Exporter, id: &SessionId) -> SessionSecret {
    let hk = Hkdf::<Sha256>::new(None, exporter.expose_secret());
    let mut okm = zeroize::Zeroizing::new([0u8; 32]);
    let _ = hk.expand_multi_info(&[DERIVE_INFO, id], okm.as_mut());
    SessionSecret::from_bytes(*okm)
}

fn mac(secret: &SessionSecret, label: &[u8], exporter: &Exporter, id: &SessionId) -> Digest {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret.expose_secret())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    m.update(label);
    m.update(exporter.expose_secret());
    m.update(id);
    m.finalize().into_bytes().into()
}

/// The client's proof for resuming session `id` on the connection with `exporter`.
pub fn client_mac(secret: &SessionSecret, exporter: &Exporter, id: &SessionId) -> Digest {
    mac(secret, CLIENT_LABEL, exporter, id)
}

/// The server's answering proof.
pub fn server_mac(secret: &SessionSecret, exporter: &Exporter, id: &SessionId) -> Digest {
    mac(secret, SERVER_LABEL, exporter, id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_macs_are_bound() {
        let e0 = Exporter::from_bytes([1; 32]);
        let e1 = Exporter::from_bytes([2; 32]);
        let s = derive_secret(&e0, &[7; 16]);
        assert_eq!(s, derive_secret(&e0, &[7; 16]));
        assert_ne!(s, derive_secret(&e0, &[8; 16]));
        assert_ne!(s, derive_secret(&e1, &[7; 16]));
        assert_ne!(client_mac(&s, &e1, &[7; 16]), client_mac(&s, &e0, &[7; 16]));
        assert_ne!(client_mac(&s, &e1, &[7; 16]), server_mac(&s, &e1, &[7; 16]));
    }
}
