//! The balanced PAKE a join runs, behind an interface of ours.
//!
//! ferry uses CPace (draft-irtf-cfrg-cpace) over ristretto255 with SHA-512, from the
//! `pakery-cpace` crate, pinned to one exact version because it is young and has one author.
//! Everything else in ferry sees only [`BalancedPake`], so replacing the crate (or the PAKE,
//! with SPAKE2 of RFC 9382) touches this file alone.

use pakery_cpace::{CpaceInitiator, CpaceMode, CpaceResponder, InitiatorState};
use pakery_crypto::CpaceRistretto255;
use zeroize::Zeroizing;

/// The PAKE's intermediate session key.
pub type Isk = Zeroizing<Vec<u8>>;

/// A PAKE message did not verify (not a valid group element, or the identity).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid PAKE message")]
pub struct PakeError;

/// A balanced PAKE: both sides hold the same password.
pub trait BalancedPake {
    /// The initiator's state between its message and the responder's.
    type State;

    /// The initiator's message, for session identifier `sid` and associated data `ad_i`.
    fn start(
        password: &[u8],
        sid: &[u8],
        ad_i: &[u8],
        rng: &mut impl rand_core_10::CryptoRng,
    ) -> Result<(Vec<u8>, Self::State), PakeError>;

    /// The responder's message and key, from the initiator's message.
    fn respond(
        share: &[u8],
        password: &[u8],
        sid: &[u8],
        ad_i: &[u8],
        ad_r: &[u8],
        rng: &mut impl rand_core_10::CryptoRng,
    ) -> Result<(Vec<u8>, Isk), PakeError>;

    /// The initiator's key, from the responder's message.
    fn finish(state: Self::State, share: &[u8], ad_r: &[u8]) -> Result<Isk, PakeError>;
}

/// CPace's channel identifier for ferry mesh joins.
const CHANNEL: &[u8] = b"ferry mesh join v1";

/// CPace-ristretto255-SHA512, initiator–responder mode.
#[derive(Debug)]
pub struct Cpace;

/// The CPace initiator's state (zeroized on drop by the crate).
pub struct CpaceState(InitiatorState<CpaceRistretto255>);

impl core::fmt::Debug for CpaceState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("CpaceState(..)")
    }
}

impl BalancedPake for Cpace {
    type State = CpaceState;

    fn start(
        password: &[u8],
        sid: &[u8],
        ad_i: &[u8],
        rng: &mut impl rand_core_10::CryptoRng,
    ) -> Result<(Vec<u8>, CpaceState), PakeError> {
        let (share, state) =
            CpaceInitiator::<CpaceRistretto255>::start(password, CHANNEL, sid, ad_i, rng)
                .map_err(|_| PakeError)?;
        Ok((share, CpaceState(state)))
    }

    fn respond(
        share: &[u8],
        password: &[u8],
        sid: &[u8],
        ad_i: &[u8],
        ad_r: &[u8],
        rng: &mut impl rand_core_10::CryptoRng,
    ) -> Result<(Vec<u8>, Isk), PakeError> {
        let (reply, out) = CpaceResponder::<CpaceRistretto255>::respond(
            share,
            password,
            CHANNEL,
            sid,
            ad_i,
            ad_r,
            CpaceMode::InitiatorResponder,
            rng,
        )
        .map_err(|_| PakeError)?;
        Ok((reply, Zeroizing::new(out.isk.as_bytes().to_vec())))
    }

    fn finish(state: CpaceState, share: &[u8], ad_r: &[u8]) -> Result<Isk, PakeError> {
        let out = state
            .0
            .finish(share, ad_r, CpaceMode::InitiatorResponder)
            .map_err(|_| PakeError)?;
        Ok(Zeroizing::new(out.isk.as_bytes().to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng() -> impl rand_core_10::CryptoRng {
        rand_core_10::UnwrapErr(getrandom_04::SysRng)
    }

    #[test]
    fn same_password_same_key_different_password_different_key() {
        let (a, st) = Cpace::start(b"pw", b"sid", b"A", &mut rng()).unwrap();
        let (b, kb) = Cpace::respond(&a, b"pw", b"sid", b"A", b"B", &mut rng()).unwrap();
        let ka = Cpace::finish(st, &b, b"B").unwrap();
        assert_eq!(ka, kb);

        let (a, st) = Cpace::start(b"pw", b"sid", b"A", &mut rng()).unwrap();
        let (b, kb) = Cpace::respond(&a, b"px", b"sid", b"A", b"B", &mut rng()).unwrap();
        assert_ne!(Cpace::finish(st, &b, b"B").unwrap(), kb);
    }

    #[test]
    fn session_id_and_associated_data_are_bound() {
        for (sid_r, ad_i_r, ad_r_i) in [
            (&b"other"[..], &b"A"[..], &b"B"[..]),
            (b"sid", b"X", b"B"),
            (b"sid", b"A", b"X"),
        ] {
            let (a, st) = Cpace::start(b"pw", b"sid", b"A", &mut rng()).unwrap();
            let (b, kb) = Cpace::respond(&a, b"pw", sid_r, ad_i_r, b"B", &mut rng()).unwrap();
            assert_ne!(Cpace::finish(st, &b, ad_r_i).unwrap(), kb);
        }
    }

    #[test]
    fn invalid_shares_are_refused() {
        let zero = [0u8; 32];
        assert!(Cpace::respond(&zero, b"pw", b"s", b"A", b"B", &mut rng()).is_err());
        assert!(Cpace::respond(&[1, 2, 3], b"pw", b"s", b"A", b"B", &mut rng()).is_err());
        let (_, st) = Cpace::start(b"pw", b"sid", b"A", &mut rng()).unwrap();
        assert!(Cpace::finish(st, &[0xff; 32], b"B").is_err());
    }
}
