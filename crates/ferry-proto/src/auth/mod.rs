//! The authentication layer that every method plugs into.
//!
//! After the TLS handshake, the client speaks first with a method's opening message. The
//! server's [`ServerAuth`] is a state machine: each [`ServerAuth::handle`] consumes the state
//! and returns the next step: another message to send and the next state (multi-message
//! methods), or a final accept, registration or reject. The client's [`ClientAuth`] mirrors
//! it. Every method ends in one [`Principal`], so the data service never knows how a peer
//! authenticated.
//!
//! This file only dispatches: the opening message picks the method, and each later message
//! goes to the state the method left (as rustls's `server/hs.rs` hands a `ClientHello` to the
//! state of the version it picked). Each method owns both of its ends in its own file:
//!
//! | method | file | opening message | crypto |
//! |---|---|---|---|
//! | `psk` (credentials) | [`psk`] | `psk_auth` | [`crate::psk`] |
//! | `password` (OPAQUE login) | [`password`] | `password_login_start` | [`crate::password`] |
//! | invite redemption (registration) | [`register`](mod@register) | `register_start` | [`crate::psk`], [`crate::password`] |
//! | `session` (resumption) | [`session`] | `session_auth` | [`crate::session`] |
//! | `mesh` (mesh members) | [`mesh`] | `mesh_auth` | [`crate::mesh::key`] |
//!
//! Every rejection sends the same `auth_failed` message, whatever the cause; the cause is
//! returned beside it as a [`RejectReason`] for the server's log and rate limiter only.

use std::collections::BTreeMap;

use crate::claims::Claims;
use crate::message::{Empty, Message, PrincipalInfo};
use crate::password::{KsfParams, OpaqueKeys, Rng, UserRecord};
use crate::secret::{Exporter, MasterKey, SessionSecret};
use crate::session::SessionId;

pub mod mesh;
pub mod password;
pub mod psk;
pub mod register;
pub mod session;
#[cfg(test)]
mod tests;

pub use mesh::{MeshDirectory, member_auth};
pub use password::{http_password_login, password_login};
pub use register::{INVITE_EXPIRES, register};
pub use session::{ClientSession, resume_session};

/// How a principal was authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Method {
    /// A credential derived from the master key, issued at this epoch.
    Psk {
        /// The credential's epoch.
        epoch: u64,
    },
    /// A password login (OPAQUE) against the user's record of this generation. Every change of
    /// the record (a password change, a reset, a new registration, a re-invitation) gives it
    /// a new generation, and a principal of an older one may no longer act. Known to the
    /// server only: a client's own principal says 0.
    Password {
        /// The generation of the user's record the login proved.
        generation: u64,
    },
    /// A resumed session.
    Session {
        /// The session's ID.
        id: SessionId,
    },
    /// A mesh member: the member key of `epoch` and the device's TLS key.
    Mesh {
        /// The member's device ID.
        device: crate::server_id::ServerId,
        /// The epoch of the key it proved.
        epoch: u64,
    },
}

impl Method {
    /// The method's name on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Psk { .. } => "psk",
            Self::Password { .. } => "password",
            Self::Session { .. } => "session",
            Self::Mesh { .. } => "mesh",
        }
    }
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

/// A stored session, as the server's context returns it.
#[derive(Clone, Debug)]
pub struct StoredSession {
    /// The session's secret.
    pub secret: SessionSecret,
    /// Whom it belongs to (name and attributes; `method` is how the session was opened).
    pub principal: Principal,
}

/// A user as the server's context returns it.
#[derive(Clone, Debug)]
pub struct KnownUser {
    /// The OPAQUE record.
    pub record: UserRecord,
    /// Attributes, `role` among them.
    pub attributes: BTreeMap<String, String>,
    /// The record's generation (see [`Method::Password`]).
    pub generation: u64,
}

/// What the server needs to know to check authentication attempts. Every lookup defaults to
/// "nothing exists", so a context only implements the methods it serves.
pub trait ServerContext {
    /// The master key credentials are derived from.
    fn master_key(&self) -> &MasterKey;
    /// Whether these claims belong to a client that exists, is not revoked and whose current
    /// epoch is `claims.epoch()`.
    fn claims_current(&self, claims: &Claims) -> bool;
    /// Whether these invite claims name an invite that exists, is unspent and has this serial
    /// (its epoch). Expiry is checked by the caller against `now`.
    fn invite_current(&self, _claims: &Claims) -> bool {
        false
    }
    /// The server's OPAQUE keys; `None` disables passwords.
    fn opaque_keys(&self) -> Option<&OpaqueKeys> {
        None
    }
    /// A user's record, attributes and generation.
    fn user(&self, _name: &str) -> Option<KnownUser> {
        None
    }
    /// Whether a login attempt for `name` may be evaluated now (rate limiting). A refused
    /// attempt still runs the whole protocol against a dummy record and fails like a wrong
    /// password. The server counts an admitted attempt as a failure unless it succeeds, also
    /// when the client never finishes: an OPAQUE client judges its guess from KE2 alone.
    fn login_allowed(&self, _name: &str) -> bool {
        true
    }
    /// Argon2id parameters for new records.
    fn new_record_ksf(&self) -> KsfParams {
        KsfParams::DEFAULT
    }
    /// A live (unexpired, unrevoked) session.
    fn session(&self, _id: &SessionId) -> Option<StoredSession> {
        None
    }
    /// Seconds of inactivity that end a session, and seconds after which it ends anyway.
    fn session_lifetimes(&self) -> (u64, u64) {
        (3600, 30 * 86400)
    }
    /// The mesh this server is a member of (its members and keys); `None` (no mesh) refuses
    /// every `mesh_auth`.
    fn mesh(&self) -> Option<&dyn MeshDirectory> {
        None
    }
}

/// Why the server rejected an attempt. For the server's log and rate limiter; never sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// The first message was not an authentication message, or came out of order.
    UnexpectedMessage,
    /// The claims did not decode.
    MalformedClaims,
    /// The proof did not verify (wrong key, edited claims, or another connection's proof).
    BadProof,
    /// The client is unknown, revoked or its credential was re-issued.
    NotCurrent,
    /// The invite is unknown, spent or expired.
    InviteNotCurrent,
    /// A password login failed (wrong password, unknown user, locked account, relay).
    PasswordFailed,
    /// The password method is not available on this server.
    NoPasswords,
    /// The session is unknown, expired or revoked, or its proof did not verify.
    BadSession,
    /// This server is in no mesh, so it has no members.
    NoMesh,
    /// The device is not a current member (unknown or removed), or no key of its epoch is
    /// kept.
    NotMember,
}

/// A session the server should store, opened by an accepted authentication.
#[derive(Debug)]
pub struct NewSession {
    /// Its ID.
    pub id: SessionId,
    /// Its secret.
    pub secret: SessionSecret,
    /// Idle lifetime in seconds.
    pub idle_secs: u64,
    /// Absolute end, Unix seconds.
    pub expires: u64,
}

/// The server's authentication state: waiting for the opening message, or in the state a
/// multi-message method left.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServerAuth {
    /// Waiting for the client's first message.
    Start {
        /// This connection's exporter.
        exporter: Exporter,
    },
    /// A password login over HTTP, waiting for its first message (docs/HTTP.md §13): no
    /// channel to bind to, so only `password_login_start` is served.
    HttpLogin,
    /// Sent the OPAQUE response; waiting for the client's finalization.
    PasswordFinish(password::ExpectFinish),
    /// Sent the registration response; waiting for the upload.
    RegisterFinish(register::ExpectUpload),
}

/// The account record a message makes the server's context look up, so a server whose
/// account data is behind I/O (a database, files) fetches it before [`ServerAuth::handle`]
/// runs ([`ServerAuth::wants`]). Only a method's opening message looks anything up.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Wanted {
    /// Nothing ([`ServerContext`]'s keys, limits and mesh directory at most).
    Nothing,
    /// The client of this name ([`ServerContext::claims_current`]).
    Client(String),
    /// The user of this name and whether a login may be evaluated
    /// ([`ServerContext::user`], [`ServerContext::login_allowed`]).
    User(String),
    /// The invite for this name ([`ServerContext::invite_current`]).
    Invite(String),
    /// The session of this ID, and whatever opened it ([`ServerContext::session`]).
    Session(SessionId),
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
    /// Send `reply`; the peer is `principal`. Store `session` first if there is one.
    Accept {
        /// Message to send.
        reply: Message,
        /// The verified peer.
        principal: Principal,
        /// A session to store.
        session: Option<NewSession>,
    },
    /// Store `record` for the invite's user, spend the invite (both atomically, refusing if
    /// the invite was spent meanwhile), then send `reply`.
    Register {
        /// Message to send once stored.
        reply: Message,
        /// The invite redeemed (name, serial, role, expiry).
        invite: Claims,
        /// The new record.
        record: UserRecord,
    },
    /// Send `reply` (always `auth_failed`) and close.
    Reject {
        /// Message to send.
        reply: Message,
        /// Why, for the log.
        reason: RejectReason,
        /// The user a failed password login was for, for rate limiting.
        user: Option<String>,
    },
}

pub(crate) fn reject(reason: RejectReason) -> ServerStep {
    reject_user(reason, None)
}

pub(crate) fn reject_user(reason: RejectReason, user: Option<String>) -> ServerStep {
    ServerStep::Reject {
        reply: Message::AuthFailed(Empty {}),
        reason,
        user,
    }
}

impl ServerAuth {
    /// A fresh state for the connection with this exporter.
    pub fn new(exporter: Exporter) -> Self {
        Self::Start { exporter }
    }

    /// A fresh state for a password login over HTTP: OPAQUE's context is
    /// [`crate::http::session::login_context`], and the session opened is derived from the
    /// AKE's key ([`crate::http::session::binding`]).
    pub fn http_login() -> Self {
        Self::HttpLogin
    }

    /// What handling `msg` in this state will ask the context about. Claims that do not
    /// decode want nothing (the method rejects them without a lookup).
    pub fn wants(&self, msg: &Message) -> Wanted {
        let claims_name = |claims: &[u8]| Claims::decode(claims).map(|c| c.name().to_owned());
        match (self, msg) {
            (Self::Start { .. }, Message::PskAuth(m)) => {
                claims_name(&m.claims).map_or(Wanted::Nothing, Wanted::Client)
            }
            (Self::Start { .. } | Self::HttpLogin, Message::PasswordLoginStart(m)) => {
                Wanted::User(m.user.clone())
            }
            (Self::Start { .. }, Message::RegisterStart(m)) => {
                claims_name(&m.claims).map_or(Wanted::Nothing, Wanted::Invite)
            }
            (Self::Start { .. }, Message::SessionAuth(m)) => Wanted::Session(m.id),
            _ => Wanted::Nothing,
        }
    }

    /// Handles one message from the client, at Unix time `now`.
    pub fn handle(
        self,
        msg: Message,
        ctx: &dyn ServerContext,
        rng: &mut dyn Rng,
        now: u64,
    ) -> ServerStep {
        match (self, msg) {
            (Self::Start { exporter }, Message::PskAuth(m)) => {
                psk::start(exporter, m, ctx, rng, now)
            }
            (Self::Start { exporter }, Message::PasswordLoginStart(m)) => {
                password::start(exporter, false, m, ctx, rng)
            }
            (Self::HttpLogin, Message::PasswordLoginStart(m)) => {
                password::start(crate::http::session::login_context(), true, m, ctx, rng)
            }
            (Self::Start { exporter }, Message::RegisterStart(m)) => {
                register::start(exporter, m, ctx, now)
            }
            (Self::Start { exporter }, Message::SessionAuth(m)) => session::start(exporter, m, ctx),
            (Self::Start { exporter }, Message::MeshAuth(m)) => mesh::start(exporter, m, ctx),
            (Self::PasswordFinish(s), msg) => s.handle(msg, ctx, rng, now),
            (Self::RegisterFinish(s), msg) => s.handle(msg),
            _ => reject(RejectReason::UnexpectedMessage),
        }
    }
}

// ---- Client side -----------------------------------------------------------------------

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

/// A successful authentication, as the client sees it.
#[derive(Debug)]
pub struct Authenticated {
    /// Who the server says we are.
    pub principal: Principal,
    /// A session the server opened, if asked for.
    pub session: Option<ClientSession>,
}

/// The client's authentication state after it has spoken.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientAuth {
    /// Waiting for the server's psk proof.
    Psk(psk::PskClientWait),
    /// Waiting for the OPAQUE response.
    PasswordResponse(password::ExpectResponse),
    /// Sent the finalization; waiting for `auth_ok`.
    PasswordDone(password::ExpectOk),
    /// Waiting for the registration response.
    RegisterResponse(register::ExpectResponse),
    /// Sent the upload; waiting for `register_ok`.
    RegisterDone,
    /// Waiting for the server's session proof.
    Session(session::ExpectProof),
    /// Waiting for the accepting member's proof.
    Mesh(mesh::ExpectProof),
}

/// The client's next step.
#[derive(Debug)]
pub enum ClientStep {
    /// Send this message and continue in the given state.
    Send(Message, ClientAuth),
    /// Send this message, then fail with the error (the server must learn of the failure).
    SendAndFail(Message, AuthError),
    /// Authenticated: the server proved itself too.
    Done(Authenticated),
    /// Registered: the password is set and the invite spent.
    Registered,
}

pub(crate) fn principal_from(info: PrincipalInfo, method: Method) -> Principal {
    Principal {
        name: info.name,
        attributes: info.attributes,
        method,
    }
}

impl ClientAuth {
    /// Handles one message from the server.
    pub fn handle(self, msg: Message, rng: &mut impl Rng) -> Result<ClientStep, AuthError> {
        if matches!(msg, Message::AuthFailed(_)) {
            return Err(AuthError::Rejected);
        }
        match self {
            Self::Psk(w) => psk::client_step(w, msg),
            Self::PasswordResponse(s) => s.handle(msg, rng),
            Self::PasswordDone(s) => s.handle(msg),
            Self::RegisterResponse(s) => s.handle(msg, rng),
            Self::RegisterDone => register::done(msg),
            Self::Session(s) => s.handle(msg),
            Self::Mesh(s) => s.handle(msg),
        }
    }
}
