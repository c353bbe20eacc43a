//! Joining a mesh: CPace bound to the TLS connection, confirmed both ways.
//!
//! ```text
//! joiner → opener   mesh_join_start    { share: Ya, device: joiner SPKI, name }
//! opener → joiner   mesh_join_response { share: Yb, confirm: confirm_r }
//! joiner → opener   mesh_join_finish   { confirm: confirm_i, signature }
//! opener → joiner   mesh_join_ok       { grant }        (or auth_failed, always the same)
//!
//! sid                = exporter                                            (32 bytes)
//! ad_i, ad_r         = joiner's and opener's device IDs                    (32 bytes each)
//! ISK                = CPace(password, channel "ferry mesh join v1", sid, ad_i, ad_r)
//! Kc_i ‖ Kc_r        = HKDF-SHA256(salt = none, ikm = ISK, info = "ferry mesh join confirm v1", 64)
//! confirm_r          = HMAC-SHA256(Kc_r, "r" ‖ exporter ‖ Ya ‖ Yb)
//! confirm_i          = HMAC-SHA256(Kc_i, "i" ‖ exporter ‖ Ya ‖ Yb)
//! signature          = Ed25519 by the joiner's device key over device_proof("join", exporter)
//! ```
//!
//! The confirmation follows RFC 9382 §4 (SPAKE2's key confirmation). Because the exporter is
//! CPace's session identifier, a relay between two TLS connections ends with different keys
//! on each, and confirmation fails. Each attempt tests one password guess, online; nothing
//! sent lets a passive observer test guesses (and it all travels inside TLS anyway).

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::key::mac_eq;
use super::pake::{BalancedPake, Cpace, CpaceState, PakeError};
use crate::message::Digest;
use crate::secret::Exporter;
use crate::server_id::ServerId;

const CONFIRM_INFO: &[u8] = b"ferry mesh join confirm v1";
const DEVICE_PROOF_LABEL: &[u8] = b"ferry mesh device proof v1\0";

/// The bytes a device signs to prove, on the connection with `exporter`, that it holds its
/// TLS key: for `purpose` `join` (in a join) or `auth` (in member authentication).
pub fn device_proof(purpose: &str, exporter: &Exporter) -> Vec<u8> {
    let mut m = Vec::with_capacity(DEVICE_PROOF_LABEL.len() + purpose.len() + 33);
    m.extend_from_slice(DEVICE_PROOF_LABEL);
    m.extend_from_slice(purpose.as_bytes());
    m.push(0);
    m.extend_from_slice(exporter.expose_secret());
    m
}

struct ConfirmKeys {
    initiator: Zeroizing<[u8; 32]>,
    responder: Zeroizing<[u8; 32]>,
}

fn confirm_keys(isk: &[u8]) -> ConfirmKeys {
    let hk = Hkdf::<Sha256>::new(None, isk);
    let mut okm = Zeroizing::new([0u8; 64]);
    // 64 bytes is far below HKDF-SHA256's limit.
    let _ = hk.expand(CONFIRM_INFO, okm.as_mut());
    let mut initiator = Zeroizing::new([0u8; 32]);
    let mut responder = Zeroizing::new([0u8; 32]);
    initiator.copy_from_slice(&okm[..32]);
    responder.copy_from_slice(&okm[32..]);
    ConfirmKeys {
        initiator,
        responder,
    }
}

fn confirm_mac(key: &[u8; 32], side: u8, exporter: &Exporter, ya: &[u8], yb: &[u8]) -> Digest {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return [0; 32];
    };
    mac.update(&[side]);
    mac.update(exporter.expose_secret());
    mac.update(ya);
    mac.update(yb);
    mac.finalize().into_bytes().into()
}

/// The joiner, after sending its share.
pub struct Joiner {
    state: CpaceState,
    exporter: Exporter,
    ya: Vec<u8>,
    opener: ServerId,
}

impl core::fmt::Debug for Joiner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Joiner(..)")
    }
}

/// A join failed. The same for every cause, as the peer sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("joining failed: wrong password, or the peer is not accepting joins")]
pub struct JoinFailed;

impl From<PakeError> for JoinFailed {
    fn from(_: PakeError) -> Self {
        JoinFailed
    }
}

impl Joiner {
    /// Starts a join as device `me` to the peer whose TLS identity is `opener`, on the
    /// connection with `exporter`. Returns the share to send.
    pub fn start(
        password: &[u8],
        exporter: &Exporter,
        me: &ServerId,
        opener: ServerId,
        rng: &mut impl rand_core_10::CryptoRng,
    ) -> Result<(Vec<u8>, Joiner), JoinFailed> {
        let (ya, state) = Cpace::start(password, exporter.expose_secret(), me.as_bytes(), rng)?;
        Ok((
            ya.clone(),
            Joiner {
                state,
                exporter: exporter.clone(),
                ya,
                opener,
            },
        ))
    }

    /// Checks the opener's share and confirmation; returns this side's confirmation.
    pub fn confirm(self, yb: &[u8], confirm_r: &[u8]) -> Result<Digest, JoinFailed> {
        let isk = Cpace::finish(self.state, yb, self.opener.as_bytes())?;
        let keys = confirm_keys(&isk);
        let expected = confirm_mac(&keys.responder, b'r', &self.exporter, &self.ya, yb);
        if !mac_eq(&expected, confirm_r) {
            return Err(JoinFailed);
        }
        Ok(confirm_mac(
            &keys.initiator,
            b'i',
            &self.exporter,
            &self.ya,
            yb,
        ))
    }
}

/// The opener, after answering: waits for the joiner's confirmation.
pub struct Opener {
    expected: Digest,
}

impl core::fmt::Debug for Opener {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Opener(..)")
    }
}

impl Opener {
    /// Answers a joiner's share on the connection with `exporter`, as device `me`, for the
    /// joiner claiming device `joiner`. When the mesh is not open, pass `None`: a random
    /// password is used, so the joiner sees exactly what a wrong password gives.
    pub fn respond(
        password: Option<&[u8]>,
        exporter: &Exporter,
        me: &ServerId,
        joiner: &ServerId,
        ya: &[u8],
        rng: &mut impl rand_core_10::CryptoRng,
    ) -> Result<(Vec<u8>, Digest, Opener), JoinFailed> {
        let mut random = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(random.as_mut());
        let password = password.unwrap_or(random.as_ref());
        let (yb, isk) = Cpace::respond(
            ya,
            password,
            exporter.expose_secret(),
            joiner.as_bytes(),
            me.as_bytes(),
            rng,
        )?;
        let keys = confirm_keys(&isk);
        let confirm_r = confirm_mac(&keys.responder, b'r', exporter, ya, &yb);
        let expected = confirm_mac(&keys.initiator, b'i', exporter, ya, &yb);
        Ok((yb, confirm_r, Opener { expected }))
    }

    /// Checks the joiner's confirmation.
    pub fn finish(self, confirm_i: &[u8]) -> Result<(), JoinFailed> {
        if mac_eq(&self.expected, confirm_i) {
            Ok(())
        } else {
            Err(JoinFailed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng() -> impl rand_core_10::CryptoRng {
        rand_core_10::UnwrapErr(getrandom_04::SysRng)
    }

    struct Run {
        joiner_pw: &'static [u8],
        opener_pw: Option<&'static [u8]>,
        joiner_exporter: [u8; 32],
        opener_exporter: [u8; 32],
        opener_claims_joiner: ServerId,
        joiner_pins_opener: ServerId,
    }

    fn base() -> Run {
        Run {
            joiner_pw: b"correct horse",
            opener_pw: Some(b"correct horse"),
            joiner_exporter: [1; 32],
            opener_exporter: [1; 32],
            opener_claims_joiner: ServerId::from_spki(b"joiner"),
            joiner_pins_opener: ServerId::from_spki(b"opener"),
        }
    }

    /// Returns (joiner accepted the opener, opener accepted the joiner).
    fn run(r: Run) -> (bool, bool) {
        let joiner = ServerId::from_spki(b"joiner");
        let opener = ServerId::from_spki(b"opener");
        let ej = Exporter::from_bytes(r.joiner_exporter);
        let eo = Exporter::from_bytes(r.opener_exporter);
        let (ya, j) =
            Joiner::start(r.joiner_pw, &ej, &joiner, r.joiner_pins_opener, &mut rng()).unwrap();
        let (yb, confirm_r, o) = Opener::respond(
            r.opener_pw,
            &eo,
            &opener,
            &r.opener_claims_joiner,
            &ya,
            &mut rng(),
        )
        .unwrap();
        match j.confirm(&yb, &confirm_r) {
            Ok(confirm_i) => (true, o.finish(&confirm_i).is_ok()),
            // A joiner that refuses sends nothing the opener could accept; try a guess.
            Err(_) => (false, o.finish(&[0; 32]).is_ok()),
        }
    }

    #[test]
    fn the_right_password_joins() {
        assert_eq!(run(base()), (true, true));
    }

    #[test]
    fn wrong_password_closed_mesh_relay_and_wrong_identity_fail() {
        let cases = [
            Run {
                joiner_pw: b"wrong",
                ..base()
            },
            Run {
                opener_pw: None,
                ..base()
            },
            Run {
                opener_exporter: [2; 32],
                ..base()
            },
            Run {
                opener_claims_joiner: ServerId::from_spki(b"someone else"),
                ..base()
            },
            Run {
                joiner_pins_opener: ServerId::from_spki(b"an impostor"),
                ..base()
            },
        ];
        for (i, case) in cases.into_iter().enumerate() {
            assert_eq!(run(case), (false, false), "case {i}");
        }
    }

    #[test]
    fn device_proofs_differ_by_purpose_and_connection() {
        let e1 = Exporter::from_bytes([1; 32]);
        let e2 = Exporter::from_bytes([2; 32]);
        assert_ne!(device_proof("join", &e1), device_proof("auth", &e1));
        assert_ne!(device_proof("join", &e1), device_proof("join", &e2));
    }
}
