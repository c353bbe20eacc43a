//! The credential (`psk`) method, both ends: one message each way.
//!
//! ```text
//! client → server   psk_auth { claims, mac: client_mac(psk, exporter, claims), session }
//! client ← server   auth_ok  { method: "psk", proof: server_mac(psk, exporter, claims), .. }
//! ```
//!
//! The key derivation and the MACs are in [`crate::psk`]. The server derives the key from the
//! claims it received and verifies before it looks the client up, so unknown, revoked and
//! current clients all take the same path.

use crate::claims::Claims;
use crate::message::{self, AuthOk, Message, PskAuth};
use crate::password::Rng;
use crate::psk::{client_mac, derive_psk_from_encoded, mac_eq, server_mac};
use crate::secret::{Exporter, Psk};

use super::session::{ClientSession, open_session};
use super::{
    AuthError, Authenticated, ClientAuth, ClientStep, Principal, RejectReason, ServerContext,
    ServerStep, reject,
};

/// The server's answer to `psk_auth`.
pub(super) fn start(
    exporter: Exporter,
    m: PskAuth,
    ctx: &dyn ServerContext,
    rng: &mut dyn Rng,
    now: u64,
) -> ServerStep {
    let Ok(claims) = Claims::decode(&m.claims) else {
        return reject(RejectReason::MalformedClaims);
    };
    // Derive and verify before looking the client up, so unknown, revoked and
    // current clients all take the same path.
    let key = derive_psk_from_encoded(ctx.master_key(), &m.claims);
    let expected = client_mac(&key, &exporter, &m.claims);
    let mac_ok = mac_eq(&expected, &m.mac);
    let current = ctx.claims_current(&claims);
    if !mac_ok {
        return reject(RejectReason::BadProof);
    }
    if !current {
        return reject(RejectReason::NotCurrent);
    }
    let principal = Principal::from_claims(&claims);
    let (session, grant) = open_session(m.session, &exporter, ctx, rng, now);
    ServerStep::Accept {
        reply: Message::AuthOk(AuthOk {
            method: "psk".into(),
            proof: server_mac(&key, &exporter, &m.claims).to_vec(),
            principal: principal.info(),
            session: grant,
        }),
        principal,
        session,
    }
}

/// The client side of the psk method, before it has spoken.
#[derive(Debug)]
pub struct PskClient {
    claims: Claims,
    psk: Psk,
    session: bool,
}

impl PskClient {
    /// A client holding `claims` and the `psk` issued for them.
    pub fn new(claims: Claims, psk: Psk) -> Self {
        Self {
            claims,
            psk,
            session: false,
        }
    }

    /// Asks the server to open a session that later connections can resume.
    pub fn with_session(mut self) -> Self {
        self.session = true;
        self
    }

    /// The first message, for the connection whose exporter is given.
    pub fn start(self, exporter: &Exporter) -> (Message, PskClientWait) {
        let encoded = self.claims.encode();
        let msg = Message::PskAuth(PskAuth {
            mac: client_mac(&self.psk, exporter, &encoded),
            claims: encoded.clone(),
            session: self.session,
        });
        let expected = server_mac(&self.psk, exporter, &encoded);
        (
            msg,
            PskClientWait {
                expected,
                claims: self.claims,
                exporter: exporter.clone(),
            },
        )
    }
}

/// The client side after sending its proof: waits for the server's.
pub struct PskClientWait {
    expected: message::Digest,
    claims: Claims,
    exporter: Exporter,
}

impl core::fmt::Debug for PskClientWait {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PskClientWait").finish_non_exhaustive()
    }
}

impl PskClientWait {
    /// Checks the server's answer. Only a correct server proof yields the principal.
    pub fn finish(self, msg: Message) -> Result<Principal, AuthError> {
        self.finish_with_session(msg).map(|a| a.principal)
    }

    /// Like [`Self::finish`], also returning the session the server opened, if any.
    pub fn finish_with_session(self, msg: Message) -> Result<Authenticated, AuthError> {
        match msg {
            Message::AuthOk(ok) if ok.method == "psk" => {
                if !mac_eq(&self.expected, &ok.proof) {
                    return Err(AuthError::BadServerProof);
                }
                Ok(Authenticated {
                    principal: Principal::from_claims(&self.claims),
                    session: ok.session.map(|g| ClientSession::open(&self.exporter, &g)),
                })
            }
            Message::AuthFailed(_) => Err(AuthError::Rejected),
            _ => Err(AuthError::Unexpected),
        }
    }
}

impl From<PskClientWait> for ClientAuth {
    fn from(w: PskClientWait) -> Self {
        ClientAuth::Psk(w)
    }
}

pub(crate) fn client_step(w: PskClientWait, msg: Message) -> Result<ClientStep, AuthError> {
    w.finish_with_session(msg).map(ClientStep::Done)
}
