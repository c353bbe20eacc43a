//! The authentication layer that every method plugs into.
//!
//! After the TLS handshake, the client speaks first with a method's opening message. The
//! server's [`ServerAuth`] is a state machine: each [`ServerAuth::handle`] consumes the state
//! and returns the next step: another message to send and the next state (multi-message
//! methods), or a final accept or reject. The client's [`ClientAuth`] mirrors it. Every method
//! ends in one [`Principal`], so the data service never knows how a peer authenticated.
//!
//! Every rejection sends the same `auth_failed` message, whatever the cause; the cause is
//! returned beside it as a [`RejectReason`] for the server's log only.

use std::collections::BTreeMap;

use crate::claims::Claims;
use crate::message::{AuthOk, Empty, Message, PrincipalInfo};
use crate::psk;
use crate::secret::{Exporter, MasterKey};

/// How a principal was authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Method {
    /// A credential derived from the master key, issued at this epoch.
    Psk {
        /// The credential's epoch.
        epoch: u64,
    },
}

/// A verified peer: name, attributes and method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// Client or user name.
    pub name: String,
    /// Verified attributes, `role` among them.
    pub attributes: BTreeMap<String, String>,
    /// How the peer proved it.
    pub method: Method,
}

impl Principal {
    pub(crate) fn from_claims(claims: &Claims) -> Self {
        Self {
            name: claims.name().to_owned(),
            attributes: claims.attributes().clone(),
            method: Method::Psk {
                epoch: claims.epoch(),
            },
        }
    }

    /// The `role` attribute.
    pub fn role(&self) -> Option<&str> {
        self.attributes.get("role").map(String::as_str)
    }

    /// The name and attributes as sent to the client.
    pub fn info(&self) -> PrincipalInfo {
        PrincipalInfo {
            name: self.name.clone(),
            attributes: self.attributes.clone(),
        }
    }
}

/// What the server needs to know to check credentials.
pub trait ServerContext {
    /// The master key credentials are derived from.
    fn master_key(&self) -> &MasterKey;
    /// Whether these claims belong to a client that exists, is not revoked and whose current
    /// epoch is `claims.epoch()`.
    fn claims_current(&self, claims: &Claims) -> bool;
}

/// Why the server rejected an attempt. For the server's log; never sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// The first message was not an authentication message.
    UnexpectedMessage,
    /// The claims did not decode.
    MalformedClaims,
    /// The proof did not verify (wrong key, edited claims, or another connection's proof).
    BadProof,
    /// The client is unknown, revoked or its credential was re-issued.
    NotCurrent,
}

/// The server's authentication state.
#[derive(Debug)]
pub enum ServerAuth {
    /// Waiting for the client's first message.
    Start {
        /// This connection's exporter.
        exporter: Exporter,
    },
}

/// The server's next step.
#[derive(Debug)]
pub enum ServerStep {
    /// Send `reply` and wait for the next message in state `next`.
    Continue {
        /// Message to send.
        reply: Message,
        /// State to continue in.
        next: ServerAuth,
    },
    /// Send `reply`; the peer is `principal`.
    Accept {
        /// Message to send.
        reply: Message,
        /// The verified peer.
        principal: Principal,
    },
    /// Send `reply` (always `auth_failed`) and close.
    Reject {
        /// Message to send.
        reply: Message,
        /// Why, for the log.
        reason: RejectReason,
    },
}

fn reject(reason: RejectReason) -> ServerStep {
    ServerStep::Reject {
        reply: Message::AuthFailed(Empty {}),
        reason,
    }
}

impl ServerAuth {
    /// A fresh state for the connection with this exporter.
    pub fn new(exporter: Exporter) -> Self {
        Self::Start { exporter }
    }

    /// Handles one message from the client.
    pub fn handle(self, msg: Message, ctx: &dyn ServerContext) -> ServerStep {
        match (self, msg) {
            (Self::Start { exporter }, Message::PskAuth(m)) => {
                let Ok(claims) = Claims::decode(&m.claims) else {
                    return reject(RejectReason::MalformedClaims);
                };
                // Derive and verify before looking the client up, so unknown, revoked and
                // current clients all take the same path.
                let key = psk::derive_psk_from_encoded(ctx.master_key(), &m.claims);
                let expected = psk::client_mac(&key, &exporter, &m.claims);
                let mac_ok = psk::mac_eq(&expected, &m.mac);
                let current = ctx.claims_current(&claims);
                if !mac_ok {
                    return reject(RejectReason::BadProof);
                }
                if !current {
                    return reject(RejectReason::NotCurrent);
                }
                let principal = Principal::from_claims(&claims);
                ServerStep::Accept {
                    reply: Message::AuthOk(AuthOk {
                        method: "psk".into(),
                        proof: psk::server_mac(&key, &exporter, &m.claims).to_vec(),
                        principal: principal.info(),
                    }),
                    principal,
                }
            }
            (Self::Start { .. }, _) => reject(RejectReason::UnexpectedMessage),
        }
    }
}

/// Why the client gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The server refused the proof.
    #[error("authentication failed")]
    Rejected,
    /// The server's proof did not verify: it does not hold this credential's key, or the
    /// connection is relayed.
    #[error("authentication failed: the server could not prove it knows the credential")]
    BadServerProof,
    /// The server sent something that is not an answer to authentication.
    #[error("authentication failed: unexpected answer from the server")]
    Unexpected,
}

/// The client's authentication state after it has spoken.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientAuth {
    /// Waiting for the server's psk proof.
    Psk(psk::PskClientWait),
}

/// The client's next step.
#[derive(Debug)]
pub enum ClientStep {
    /// Send this message and continue in the given state.
    Send(Message, ClientAuth),
    /// Authenticated: the server proved itself too.
    Done(Principal),
}

impl ClientAuth {
    /// Handles one message from the server.
    pub fn handle(self, msg: Message) -> Result<ClientStep, AuthError> {
        match self {
            Self::Psk(w) => psk::client_step(w, msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::PskAuth;
    use crate::psk::{PskClient, derive_psk};
    use crate::secret::Psk;

    struct Ctx {
        master: MasterKey,
        current_epoch: u64,
    }

    impl ServerContext for Ctx {
        fn master_key(&self) -> &MasterKey {
            &self.master
        }
        fn claims_current(&self, c: &Claims) -> bool {
            c.name() == "alice" && c.epoch() == self.current_epoch
        }
    }

    fn ctx() -> Ctx {
        Ctx {
            master: MasterKey::from_bytes([9; 32]),
            current_epoch: 1,
        }
    }

    fn claims(name: &str, epoch: u64, role: &str) -> Claims {
        Claims::new(name, epoch, [("role", role)]).unwrap()
    }

    fn run(
        client: PskClient,
        server_exporter: Exporter,
        client_exporter: Exporter,
        ctx: &Ctx,
    ) -> (ServerStep, Result<Principal, AuthError>) {
        let (hello, wait) = client.start(&client_exporter);
        let step = ServerAuth::new(server_exporter).handle(hello, ctx);
        let reply = match &step {
            ServerStep::Accept { reply, .. } | ServerStep::Reject { reply, .. } => reply.clone(),
            ServerStep::Continue { .. } => panic!("psk is one message"),
        };
        let done = wait.finish(reply);
        (step, done)
    }

    fn reason(step: &ServerStep) -> Option<RejectReason> {
        match step {
            ServerStep::Reject { reply, reason } => {
                assert_eq!(reply, &Message::AuthFailed(Empty {}));
                Some(*reason)
            }
            _ => None,
        }
    }

    #[test]
    fn accepts_a_valid_credential() {
        let ctx = ctx();
        let c = claims("alice", 1, "writer");
        let key = derive_psk(&ctx.master, &c);
        let e = Exporter::from_bytes([4; 32]);
        let (step, done) = run(PskClient::new(c, key), e.clone(), e, &ctx);
        assert_eq!(reason(&step), None);
        let p = done.unwrap();
        assert_eq!(p.role(), Some("writer"));
        assert_eq!(p.method, Method::Psk { epoch: 1 });
    }

    #[test]
    fn wrong_key_edited_role_and_foreign_exporter_fail_alike() {
        let ctx = ctx();
        let reader = claims("alice", 1, "reader");
        let reader_key = derive_psk(&ctx.master, &reader);
        let e = Exporter::from_bytes([4; 32]);
        // Wrong key.
        let (s, d) = run(
            PskClient::new(reader.clone(), Psk::from_bytes([0; 32])),
            e.clone(),
            e.clone(),
            &ctx,
        );
        assert_eq!(
            (reason(&s), d),
            (Some(RejectReason::BadProof), Err(AuthError::Rejected))
        );
        // A reader's key presented with a writer's claims.
        let forged = claims("alice", 1, "writer");
        let (s, _) = run(
            PskClient::new(forged, reader_key.clone()),
            e.clone(),
            e.clone(),
            &ctx,
        );
        assert_eq!(reason(&s), Some(RejectReason::BadProof));
        // The proof was made for another connection.
        let (s, _) = run(
            PskClient::new(reader, reader_key),
            Exporter::from_bytes([5; 32]),
            e,
            &ctx,
        );
        assert_eq!(reason(&s), Some(RejectReason::BadProof));
    }

    #[test]
    fn stale_epoch_and_unknown_client_fail() {
        let mut ctx = ctx();
        ctx.current_epoch = 2;
        let e = Exporter::from_bytes([4; 32]);
        for c in [claims("alice", 1, "writer"), claims("mallory", 2, "writer")] {
            let key = derive_psk(&ctx.master, &c);
            let (s, d) = run(PskClient::new(c, key), e.clone(), e.clone(), &ctx);
            assert_eq!(
                (reason(&s), d),
                (Some(RejectReason::NotCurrent), Err(AuthError::Rejected))
            );
        }
    }

    #[test]
    fn malformed_and_unexpected_first_messages() {
        let ctx = ctx();
        let e = Exporter::from_bytes([4; 32]);
        let bad = Message::PskAuth(PskAuth {
            claims: vec![0xff],
            mac: [0; 32],
        });
        assert_eq!(
            reason(&ServerAuth::new(e.clone()).handle(bad, &ctx)),
            Some(RejectReason::MalformedClaims)
        );
        let get = Message::Stat(crate::message::SourceRef { source: "x".into() });
        assert_eq!(
            reason(&ServerAuth::new(e).handle(get, &ctx)),
            Some(RejectReason::UnexpectedMessage)
        );
    }

    #[test]
    fn client_refuses_a_server_without_the_key() {
        let ctx = ctx();
        let c = claims("alice", 1, "writer");
        let key = derive_psk(&ctx.master, &c);
        let e = Exporter::from_bytes([4; 32]);
        let (_, wait) = PskClient::new(c.clone(), key).start(&e);
        let fake = Message::AuthOk(AuthOk {
            method: "psk".into(),
            proof: vec![0; 32],
            principal: Principal::from_claims(&c).info(),
        });
        assert_eq!(wait.finish(fake).unwrap_err(), AuthError::BadServerProof);
    }
}
