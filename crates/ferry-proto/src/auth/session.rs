//! The `session` method (resumption), both ends, and the sessions other methods open.
//!
//! ```text
//! client → server   session_auth { id, mac: client_mac(secret, exporter, id) }
//! client ← server   auth_ok      { method: "session", proof: server_mac(secret, exporter, id), .. }
//! ```
//!
//! The secret's derivation and the MACs are in [`crate::session`]. An accepted `psk` or
//! `password` login may open a session (`open_session`); its secret is derived from that
//! connection's exporter, so it never crosses the wire.

use crate::message::{AuthOk, Digest, Message, SessionAuth, SessionGrant};
use crate::password::Rng;
use crate::psk::mac_eq;
use crate::secret::{Exporter, SessionSecret};
use crate::session::{self, SessionId};

use super::{
    AuthError, Authenticated, ClientAuth, ClientStep, Method, NewSession, Principal, RejectReason,
    ServerContext, ServerStep, principal_from, reject,
};

/// The server's answer to `session_auth`.
pub(super) fn start(exporter: Exporter, m: SessionAuth, ctx: &dyn ServerContext) -> ServerStep {
    let stored = ctx.session(&m.id);
    // An unknown session is checked against a dummy secret, so both paths cost the same.
    let secret = stored
        .as_ref()
        .map_or_else(|| SessionSecret::from_bytes([0; 32]), |s| s.secret.clone());
    let ok = mac_eq(&session::client_mac(&secret, &exporter, &m.id), &m.mac);
    match stored {
        Some(s) if ok => {
            let principal = Principal {
                method: Method::Session { id: m.id },
                ..s.principal
            };
            ServerStep::Accept {
                reply: Message::AuthOk(AuthOk {
                    method: "session".into(),
                    proof: session::server_mac(&secret, &exporter, &m.id).to_vec(),
                    principal: principal.info(),
                    session: None,
                }),
                principal,
                session: None,
            }
        }
        _ => reject(RejectReason::BadSession),
    }
}

/// The session an accepted login opens, if the client asked for one: what the server stores
/// and what it grants.
pub(super) fn open_session(
    want: bool,
    exporter: &Exporter,
    ctx: &dyn ServerContext,
    rng: &mut dyn Rng,
    now: u64,
) -> (Option<NewSession>, Option<Box<SessionGrant>>) {
    if !want {
        return (None, None);
    }
    let mut id = [0u8; 16];
    rng.fill_bytes(&mut id);
    let (idle_secs, absolute) = ctx.session_lifetimes();
    let expires = now.saturating_add(absolute);
    let grant = SessionGrant {
        id,
        idle_secs,
        expires,
    };
    let new = NewSession {
        id,
        secret: session::derive_secret(exporter, &id),
        idle_secs,
        expires,
    };
    (Some(new), Some(Box::new(grant)))
}

// ---- Client side -----------------------------------------------------------------------

/// A session the client may resume later.
#[derive(Clone, Debug)]
pub struct ClientSession {
    /// Its ID.
    pub id: SessionId,
    /// Its secret.
    pub secret: SessionSecret,
    /// Idle lifetime in seconds.
    pub idle_secs: u64,
    /// Absolute end, Unix seconds.
    pub expires: u64,
}

impl ClientSession {
    pub(crate) fn open(exporter: &Exporter, grant: &SessionGrant) -> Self {
        Self {
            secret: session::derive_secret(exporter, &grant.id),
            id: grant.id,
            idle_secs: grant.idle_secs,
            expires: grant.expires,
        }
    }
}

/// Starts resuming a session.
pub fn resume_session(
    exporter: &Exporter,
    id: SessionId,
    secret: &SessionSecret,
) -> (Message, ClientAuth) {
    (
        Message::SessionAuth(SessionAuth {
            id,
            mac: session::client_mac(secret, exporter, &id),
        }),
        ClientAuth::Session(ExpectProof {
            expected: session::server_mac(secret, exporter, &id),
            id,
        }),
    )
}

/// The client after `session_auth`: waits for the server's proof.
#[derive(Debug)]
pub struct ExpectProof {
    expected: Digest,
    id: SessionId,
}

impl ExpectProof {
    pub(super) fn handle(self, msg: Message) -> Result<ClientStep, AuthError> {
        match msg {
            Message::AuthOk(ok) if ok.method == "session" => {
                if !mac_eq(&self.expected, &ok.proof) {
                    return Err(AuthError::BadServerProof);
                }
                Ok(ClientStep::Done(Authenticated {
                    principal: principal_from(ok.principal, Method::Session { id: self.id }),
                    session: None,
                }))
            }
            _ => Err(AuthError::Unexpected),
        }
    }
}
