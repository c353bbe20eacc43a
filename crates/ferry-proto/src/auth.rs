//! The authentication layer that every method plugs into.
//!
//! After the TLS handshake, the client speaks first with a method's opening message. The
//! server's [`ServerAuth`] is a state machine: each [`ServerAuth::handle`] consumes the state
//! and returns the next step: another message to send and the next state (multi-message
//! methods), or a final accept, registration or reject. The client's [`ClientAuth`] mirrors
//! it. Every method ends in one [`Principal`], so the data service never knows how a peer
//! authenticated.
//!
//! Methods: `psk` (credentials, [`crate::psk`]), `password` (OPAQUE, [`crate::password`]),
//! `session` (resumption, [`crate::session`]), and invite redemption (registration).
//!
//! Every rejection sends the same `auth_failed` message, whatever the cause; the cause is
//! returned beside it as a [`RejectReason`] for the server's log and rate limiter only.

use std::collections::BTreeMap;

use crate::claims::Claims;
use crate::message::{
    AuthOk, Empty, Message, OpaqueResponse, PasswordLoginFinish, PasswordLoginStart, PrincipalInfo,
    RegisterFinish, RegisterStart, SessionAuth, SessionGrant,
};
use crate::password::{self, KsfParams, OpaqueKeys, Rng, ServerLoginState, UserRecord};
use crate::secret::{Exporter, MasterKey, SessionSecret};
use crate::session::{self, SessionId};
use crate::{names, psk};

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

/// The server's authentication state.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServerAuth {
    /// Waiting for the client's first message.
    Start {
        /// This connection's exporter.
        exporter: Exporter,
    },
    /// Sent the OPAQUE response; waiting for the client's finalization.
    PasswordFinish {
        /// This connection's exporter.
        exporter: Exporter,
        /// The user who is logging in.
        user: String,
        /// The user's attributes and record generation, if the user exists and may log in now.
        attributes: Option<(BTreeMap<String, String>, u64)>,
        /// OPAQUE state.
        state: ServerLoginState,
        /// Whether to open a session.
        session: bool,
    },
    /// Sent the registration response; waiting for the upload.
    RegisterFinish {
        /// The invite being redeemed.
        invite: Claims,
        /// Parameters the client was told to use.
        ksf: KsfParams,
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

fn reject(reason: RejectReason) -> ServerStep {
    reject_user(reason, None)
}

fn reject_user(reason: RejectReason, user: Option<String>) -> ServerStep {
    ServerStep::Reject {
        reply: Message::AuthFailed(Empty {}),
        reason,
        user,
    }
}

/// The attribute of invite claims that holds their expiry (Unix seconds).
pub const INVITE_EXPIRES: &str = "expires";

fn open_session(
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

impl ServerAuth {
    /// A fresh state for the connection with this exporter.
    pub fn new(exporter: Exporter) -> Self {
        Self::Start { exporter }
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
                let (session, grant) = open_session(m.session, &exporter, ctx, rng, now);
                ServerStep::Accept {
                    reply: Message::AuthOk(AuthOk {
                        method: "psk".into(),
                        proof: psk::server_mac(&key, &exporter, &m.claims).to_vec(),
                        principal: principal.info(),
                        session: grant,
                    }),
                    principal,
                    session,
                }
            }
            (Self::Start { exporter }, Message::PasswordLoginStart(m)) => {
                password_start(exporter, m, ctx, rng)
            }
            (Self::Start { exporter }, Message::RegisterStart(m)) => {
                register_start(exporter, m, ctx, now)
            }
            (Self::Start { exporter }, Message::SessionAuth(m)) => session_auth(exporter, m, ctx),
            (
                Self::PasswordFinish {
                    exporter,
                    user,
                    attributes,
                    state,
                    session,
                },
                Message::PasswordLoginFinish(PasswordLoginFinish { finalization }),
            ) => {
                // Verify even for a dummy record, so every path costs the same.
                let ok =
                    password::server_login_finish(state, &finalization, exporter.expose_secret());
                match attributes {
                    Some((attributes, generation)) if ok => {
                        let principal = Principal {
                            name: user,
                            attributes,
                            method: Method::Password { generation },
                        };
                        let (session, grant) = open_session(session, &exporter, ctx, rng, now);
                        ServerStep::Accept {
                            reply: Message::AuthOk(AuthOk {
                                method: "password".into(),
                                // OPAQUE already authenticated the server to the client.
                                proof: Vec::new(),
                                principal: principal.info(),
                                session: grant,
                            }),
                            principal,
                            session,
                        }
                    }
                    _ => reject_user(RejectReason::PasswordFailed, Some(user)),
                }
            }
            (Self::PasswordFinish { user, .. }, Message::PasswordLoginFailed(_)) => {
                reject_user(RejectReason::PasswordFailed, Some(user))
            }
            (
                Self::RegisterFinish { invite, ksf },
                Message::RegisterFinish(RegisterFinish { upload }),
            ) => match password::server_register_finish(&upload, ksf) {
                Ok(record) => ServerStep::Register {
                    reply: Message::RegisterOk(Empty {}),
                    invite,
                    record,
                },
                Err(_) => reject(RejectReason::UnexpectedMessage),
            },
            _ => reject(RejectReason::UnexpectedMessage),
        }
    }
}

fn password_start(
    exporter: Exporter,
    m: PasswordLoginStart,
    ctx: &dyn ServerContext,
    rng: &mut dyn Rng,
) -> ServerStep {
    let Some(keys) = ctx.opaque_keys() else {
        return reject(RejectReason::NoPasswords);
    };
    if names::validate_client_name(&m.user).is_err() {
        return reject_user(RejectReason::PasswordFailed, None);
    }
    // An unknown user, or one that may not try now, gets a dummy record: the answer looks
    // the same and the login fails like a wrong password. A locked user's answer still
    // carries its own record's Argon2id parameters, so they do not tell that it is locked.
    let admitted = ctx.login_allowed(&m.user);
    let found = ctx.user(&m.user);
    let ksf = found
        .as_ref()
        .map_or_else(|| ctx.new_record_ksf(), |u| u.record.ksf);
    let (record, attributes) = match found {
        Some(u) if admitted => (Some(u.record), Some((u.attributes, u.generation))),
        _ => (None, None),
    };
    let mut rng = RngRef(rng);
    match password::server_login_start(
        &mut rng,
        keys,
        &m.user,
        record.as_ref(),
        &m.request,
        exporter.expose_secret(),
    ) {
        Ok((response, state)) => ServerStep::Continue {
            reply: Message::PasswordLoginResponse(OpaqueResponse { response, ksf }),
            next: ServerAuth::PasswordFinish {
                exporter,
                user: m.user,
                attributes,
                state,
                session: m.session,
            },
        },
        Err(_) => reject_user(RejectReason::PasswordFailed, Some(m.user)),
    }
}

fn register_start(
    exporter: Exporter,
    m: RegisterStart,
    ctx: &dyn ServerContext,
    now: u64,
) -> ServerStep {
    let Some(keys) = ctx.opaque_keys() else {
        return reject(RejectReason::NoPasswords);
    };
    let Ok(invite) = Claims::decode(&m.claims) else {
        return reject(RejectReason::MalformedClaims);
    };
    let key = psk::derive_invite_key_from_encoded(ctx.master_key(), &m.claims);
    let mac_ok = psk::mac_eq(&psk::invite_mac(&key, &exporter, &m.claims), &m.mac);
    let current = ctx.invite_current(&invite)
        && invite
            .attributes()
            .get(INVITE_EXPIRES)
            .and_then(|e| e.parse::<u64>().ok())
            .is_some_and(|expires| now < expires);
    if !mac_ok {
        return reject(RejectReason::BadProof);
    }
    if !current {
        return reject(RejectReason::InviteNotCurrent);
    }
    match password::server_register_start(keys, invite.name(), &m.request) {
        Ok(response) => {
            let ksf = ctx.new_record_ksf();
            ServerStep::Continue {
                reply: Message::RegisterResponse(OpaqueResponse { response, ksf }),
                next: ServerAuth::RegisterFinish { invite, ksf },
            }
        }
        Err(_) => reject(RejectReason::UnexpectedMessage),
    }
}

fn session_auth(exporter: Exporter, m: SessionAuth, ctx: &dyn ServerContext) -> ServerStep {
    let stored = ctx.session(&m.id);
    // An unknown session is checked against a dummy secret, so both paths cost the same.
    let secret = stored
        .as_ref()
        .map_or_else(|| SessionSecret::from_bytes([0; 32]), |s| s.secret.clone());
    let ok = psk::mac_eq(&session::client_mac(&secret, &exporter, &m.id), &m.mac);
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

/// Adapts `&mut dyn Rng` to the `impl Rng` that OPAQUE takes.
struct RngRef<'a>(&'a mut dyn Rng);

impl opaque_ke::rand::RngCore for RngRef<'_> {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), opaque_ke::rand::Error> {
        self.0.try_fill_bytes(dest)
    }
}

impl opaque_ke::rand::CryptoRng for RngRef<'_> {}

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
    PasswordResponse {
        /// This connection's exporter.
        exporter: Exporter,
        /// OPAQUE state.
        state: Box<password::ClientLoginState>,
    },
    /// Sent the finalization; waiting for `auth_ok`.
    PasswordDone {
        /// This connection's exporter.
        exporter: Exporter,
    },
    /// Waiting for the registration response.
    RegisterResponse {
        /// OPAQUE state.
        state: Box<password::ClientRegisterState>,
    },
    /// Sent the upload; waiting for `register_ok`.
    RegisterDone,
    /// Waiting for the server's session proof.
    Session {
        /// Expected server proof.
        expected: crate::message::Digest,
        /// The session's ID.
        id: SessionId,
    },
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

/// Starts a password login for `user`.
pub fn password_login(
    rng: &mut impl Rng,
    exporter: &Exporter,
    user: &str,
    password: &[u8],
    want_session: bool,
) -> Result<(Message, ClientAuth), AuthError> {
    let (request, state) =
        password::client_login_start(rng, password).map_err(|_| AuthError::Unexpected)?;
    Ok((
        Message::PasswordLoginStart(PasswordLoginStart {
            user: user.to_owned(),
            request,
            session: want_session,
        }),
        ClientAuth::PasswordResponse {
            exporter: exporter.clone(),
            state: Box::new(state),
        },
    ))
}

/// Starts redeeming an invite (`claims` and `key` from the invite file) with a new password.
pub fn register(
    rng: &mut impl Rng,
    exporter: &Exporter,
    claims: &Claims,
    key: &crate::secret::InviteKey,
    password: &[u8],
) -> Result<(Message, ClientAuth), AuthError> {
    let encoded = claims.encode();
    let (request, state) =
        password::client_register_start(rng, password).map_err(|_| AuthError::Unexpected)?;
    Ok((
        Message::RegisterStart(RegisterStart {
            mac: psk::invite_mac(key, exporter, &encoded),
            claims: encoded,
            request,
        }),
        ClientAuth::RegisterResponse {
            state: Box::new(state),
        },
    ))
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
        ClientAuth::Session {
            expected: session::server_mac(secret, exporter, &id),
            id,
        },
    )
}

fn principal_from(info: PrincipalInfo, method: Method) -> Principal {
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
        match (self, msg) {
            (Self::Psk(w), msg) => psk::client_step(w, msg),
            (Self::PasswordResponse { exporter, state }, Message::PasswordLoginResponse(r)) => {
                match password::client_login_finish(
                    rng,
                    *state,
                    &r.response,
                    r.ksf,
                    exporter.expose_secret(),
                ) {
                    Ok(finalization) => Ok(ClientStep::Send(
                        Message::PasswordLoginFinish(PasswordLoginFinish { finalization }),
                        Self::PasswordDone { exporter },
                    )),
                    Err(_) => Ok(ClientStep::SendAndFail(
                        Message::PasswordLoginFailed(Empty {}),
                        AuthError::Rejected,
                    )),
                }
            }
            (Self::PasswordDone { exporter }, Message::AuthOk(ok)) if ok.method == "password" => {
                Ok(ClientStep::Done(Authenticated {
                    session: ok.session.map(|g| ClientSession::open(&exporter, &g)),
                    principal: principal_from(ok.principal, Method::Password { generation: 0 }),
                }))
            }
            (Self::RegisterResponse { state }, Message::RegisterResponse(r)) => {
                let upload = password::client_register_finish(rng, *state, &r.response, r.ksf)
                    .map_err(|_| AuthError::Unexpected)?;
                Ok(ClientStep::Send(
                    Message::RegisterFinish(RegisterFinish { upload }),
                    Self::RegisterDone,
                ))
            }
            (Self::RegisterDone, Message::RegisterOk(_)) => Ok(ClientStep::Registered),
            (Self::Session { expected, id }, Message::AuthOk(ok)) if ok.method == "session" => {
                if !psk::mac_eq(&expected, &ok.proof) {
                    return Err(AuthError::BadServerProof);
                }
                Ok(ClientStep::Done(Authenticated {
                    principal: principal_from(ok.principal, Method::Session { id }),
                    session: None,
                }))
            }
            _ => Err(AuthError::Unexpected),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::PskAuth;
    use crate::psk::{PskClient, derive_psk};
    use crate::secret::Psk;
    use rand_core::OsRng;

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
        let step = ServerAuth::new(server_exporter).handle(hello, ctx, &mut OsRng, 0);
        let reply = match &step {
            ServerStep::Accept { reply, .. } | ServerStep::Reject { reply, .. } => reply.clone(),
            _ => panic!("psk is one message"),
        };
        let done = wait.finish(reply);
        (step, done)
    }

    fn reason(step: &ServerStep) -> Option<RejectReason> {
        match step {
            ServerStep::Reject { reply, reason, .. } => {
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
            session: false,
        });
        assert_eq!(
            reason(&ServerAuth::new(e.clone()).handle(bad, &ctx, &mut OsRng, 0)),
            Some(RejectReason::MalformedClaims)
        );
        let get = Message::Stat(crate::message::SourceRef { source: "x".into() });
        assert_eq!(
            reason(&ServerAuth::new(e).handle(get, &ctx, &mut OsRng, 0)),
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
            session: None,
        });
        assert_eq!(wait.finish(fake).unwrap_err(), AuthError::BadServerProof);
    }

    // ---- password, invite and session methods, both ends driven in memory ----

    use crate::password::{KsfParams, OpaqueKeys, UserRecord};
    use crate::psk::derive_invite_key;
    use std::cell::RefCell;
    use std::collections::HashMap;

    const FAST: KsfParams = KsfParams {
        m_kib: 256,
        t: 1,
        p: 1,
    };

    struct Full {
        master: MasterKey,
        keys: OpaqueKeys,
        users: RefCell<HashMap<String, UserRecord>>,
        spent: RefCell<Vec<u64>>,
        sessions: RefCell<HashMap<SessionId, StoredSession>>,
        locked: bool,
    }

    impl ServerContext for Full {
        fn master_key(&self) -> &MasterKey {
            &self.master
        }
        fn claims_current(&self, _: &Claims) -> bool {
            true
        }
        fn invite_current(&self, c: &Claims) -> bool {
            c.name() == "carol" && !self.spent.borrow().contains(&c.epoch())
        }
        fn opaque_keys(&self) -> Option<&OpaqueKeys> {
            Some(&self.keys)
        }
        fn user(&self, name: &str) -> Option<KnownUser> {
            let r = self.users.borrow().get(name).cloned()?;
            Some(KnownUser {
                record: r,
                attributes: [("role".to_owned(), "writer".to_owned())].into(),
                generation: 7,
            })
        }
        fn login_allowed(&self, _: &str) -> bool {
            !self.locked
        }
        fn new_record_ksf(&self) -> KsfParams {
            FAST
        }
        fn session(&self, id: &SessionId) -> Option<StoredSession> {
            self.sessions.borrow().get(id).cloned()
        }
    }

    fn full() -> Full {
        Full {
            master: MasterKey::from_bytes([3; 32]),
            keys: OpaqueKeys::generate(&mut OsRng),
            users: RefCell::default(),
            spent: RefCell::default(),
            sessions: RefCell::default(),
            locked: false,
        }
    }

    /// Runs a whole exchange: client messages through the server until either side ends.
    /// Applies Register and session effects to the context like a real server would.
    fn drive(
        ctx: &Full,
        first: Message,
        mut client: ClientAuth,
        server_exporter: &Exporter,
        now: u64,
    ) -> (Result<ClientStep, AuthError>, Option<RejectReason>) {
        let mut server = ServerAuth::new(server_exporter.clone());
        let mut msg = first;
        loop {
            let reply = match server.handle(msg, ctx, &mut OsRng, now) {
                ServerStep::Continue { reply, next } => {
                    server = next;
                    reply
                }
                ServerStep::Accept {
                    reply,
                    principal,
                    session,
                } => {
                    if let Some(s) = session {
                        ctx.sessions.borrow_mut().insert(
                            s.id,
                            StoredSession {
                                secret: s.secret,
                                principal,
                            },
                        );
                    }
                    return (client.handle(reply, &mut OsRng), None);
                }
                ServerStep::Register {
                    reply,
                    invite,
                    record,
                } => {
                    ctx.spent.borrow_mut().push(invite.epoch());
                    ctx.users
                        .borrow_mut()
                        .insert(invite.name().to_owned(), record);
                    return (client.handle(reply, &mut OsRng), None);
                }
                ServerStep::Reject { reply, reason, .. } => {
                    return (client.handle(reply, &mut OsRng), Some(reason));
                }
            };
            match client.handle(reply, &mut OsRng) {
                Ok(ClientStep::Send(m, next)) => {
                    client = next;
                    msg = m;
                }
                Ok(ClientStep::SendAndFail(m, e)) => {
                    // The server hears of the failure.
                    let step = server.handle(m, ctx, &mut OsRng, now);
                    let ServerStep::Reject { reason, .. } = step else {
                        panic!("server accepted a failed login")
                    };
                    return (Err(e), Some(reason));
                }
                other => return (other, None),
            }
        }
    }

    fn invite(serial: u64, expires: u64) -> Claims {
        Claims::new(
            "carol",
            serial,
            [
                ("role", "writer".to_owned()),
                (INVITE_EXPIRES, expires.to_string()),
            ],
        )
        .unwrap()
    }

    fn enrol(ctx: &Full, pw: &[u8]) {
        let e = Exporter::from_bytes([1; 32]);
        let inv = invite(1, 100);
        let key = derive_invite_key(&ctx.master, &inv);
        let (m, c) = register(&mut OsRng, &e, &inv, &key, pw).unwrap();
        let (r, reason) = drive(ctx, m, c, &e, 50);
        assert!(matches!(r, Ok(ClientStep::Registered)), "{r:?} {reason:?}");
    }

    fn login(
        ctx: &Full,
        user: &str,
        pw: &[u8],
        ce: &Exporter,
        se: &Exporter,
        session: bool,
    ) -> (Result<ClientStep, AuthError>, Option<RejectReason>) {
        let (m, c) = password_login(&mut OsRng, ce, user, pw, session).unwrap();
        drive(ctx, m, c, se, 60)
    }

    #[test]
    fn invite_register_login_and_resume() {
        let ctx = full();
        enrol(&ctx, b"hunter2 but longer");
        let e = Exporter::from_bytes([2; 32]);
        let (r, _) = login(&ctx, "carol", b"hunter2 but longer", &e, &e, true);
        let Ok(ClientStep::Done(a)) = r else {
            panic!("{r:?}")
        };
        assert_eq!(a.principal.role(), Some("writer"));
        assert_eq!(a.principal.method, Method::Password { generation: 0 });
        let s = a.session.expect("session granted");
        // The server's principal, kept with the session, carries the record's generation.
        assert_eq!(
            ctx.session(&s.id).map(|st| st.principal.method),
            Some(Method::Password { generation: 7 })
        );

        // Resume on a new connection.
        let e2 = Exporter::from_bytes([3; 32]);
        let (m, c) = resume_session(&e2, s.id, &s.secret);
        let (r, _) = drive(&ctx, m.clone(), c, &e2, 70);
        let Ok(ClientStep::Done(a)) = r else {
            panic!("{r:?}")
        };
        assert_eq!(a.principal.method, Method::Session { id: s.id });
        assert_eq!(a.principal.name, "carol");

        // The same resumption message replayed on another connection fails.
        let e3 = Exporter::from_bytes([4; 32]);
        let (_, c3) = resume_session(&e3, s.id, &s.secret);
        assert_eq!(
            drive(&ctx, m, c3, &e3, 70).1,
            Some(RejectReason::BadSession)
        );
        // An unknown or removed session fails.
        ctx.sessions.borrow_mut().clear();
        let (m, c) = resume_session(&e3, s.id, &s.secret);
        assert_eq!(drive(&ctx, m, c, &e3, 70).1, Some(RejectReason::BadSession));
    }

    #[test]
    fn invites_are_one_time_unexpired_and_unforgeable() {
        let ctx = full();
        enrol(&ctx, b"pw1");
        let e = Exporter::from_bytes([1; 32]);
        // Spent.
        let inv = invite(1, 100);
        let key = derive_invite_key(&ctx.master, &inv);
        let (m, c) = register(&mut OsRng, &e, &inv, &key, b"pw2").unwrap();
        assert_eq!(
            drive(&ctx, m, c, &e, 50).1,
            Some(RejectReason::InviteNotCurrent)
        );
        // Expired.
        let inv = invite(2, 40);
        let key = derive_invite_key(&ctx.master, &inv);
        let (m, c) = register(&mut OsRng, &e, &inv, &key, b"pw2").unwrap();
        assert_eq!(
            drive(&ctx, m, c, &e, 50).1,
            Some(RejectReason::InviteNotCurrent)
        );
        // Edited role: the key no longer matches.
        let forged = Claims::new(
            "carol",
            3,
            [
                ("role", "admin".to_owned()),
                (INVITE_EXPIRES, "100".to_owned()),
            ],
        )
        .unwrap();
        let key = derive_invite_key(&ctx.master, &invite(3, 100));
        let (m, c) = register(&mut OsRng, &e, &forged, &key, b"pw2").unwrap();
        assert_eq!(drive(&ctx, m, c, &e, 50).1, Some(RejectReason::BadProof));
        // A credential key is not an invite key.
        let psk_as_invite = crate::secret::InviteKey::from_bytes(
            *psk::derive_psk(&ctx.master, &invite(4, 100)).expose_secret(),
        );
        let (m, c) = register(&mut OsRng, &e, &invite(4, 100), &psk_as_invite, b"pw2").unwrap();
        assert_eq!(drive(&ctx, m, c, &e, 50).1, Some(RejectReason::BadProof));
    }

    #[test]
    fn wrong_password_unknown_user_locked_and_relay_fail_alike() {
        let ctx = full();
        enrol(&ctx, b"right");
        let e = Exporter::from_bytes([2; 32]);
        for (user, pw) in [("carol", &b"wrong"[..]), ("nobody", &b"right"[..])] {
            let (r, reason) = login(&ctx, user, pw, &e, &e, false);
            assert_eq!(
                (r.unwrap_err(), reason),
                (AuthError::Rejected, Some(RejectReason::PasswordFailed))
            );
        }
        // Relay: the client and the server see different exporters.
        let (r, reason) = login(
            &ctx,
            "carol",
            b"right",
            &e,
            &Exporter::from_bytes([9; 32]),
            false,
        );
        assert_eq!(
            (r.unwrap_err(), reason),
            (AuthError::Rejected, Some(RejectReason::PasswordFailed))
        );
        // Locked: even the right password fails, the same way.
        let locked = Full {
            locked: true,
            ..ctx
        };
        let (r, reason) = login(&locked, "carol", b"right", &e, &e, false);
        assert_eq!(
            (r.unwrap_err(), reason),
            (AuthError::Rejected, Some(RejectReason::PasswordFailed))
        );
    }

    /// The Argon2id parameters in the server's first login answer.
    fn answered_ksf(ctx: &Full, user: &str) -> KsfParams {
        let e = Exporter::from_bytes([4; 32]);
        let (start, _) = password_login(&mut OsRng, &e, user, b"guess", false).unwrap();
        match ServerAuth::new(e).handle(start, ctx, &mut OsRng, 0) {
            ServerStep::Continue {
                reply: Message::PasswordLoginResponse(r),
                ..
            } => r.ksf,
            _ => panic!("no login answer"),
        }
    }

    #[test]
    fn a_locked_user_gets_its_own_argon2_parameters() {
        let ctx = full();
        enrol(&ctx, b"right");
        let own = KsfParams {
            m_kib: FAST.m_kib * 2,
            ..FAST
        };
        if let Some(r) = ctx.users.borrow_mut().get_mut("carol") {
            r.ksf = own;
        }
        assert_eq!(answered_ksf(&ctx, "carol"), own);
        let locked = Full {
            locked: true,
            ..ctx
        };
        assert_eq!(answered_ksf(&locked, "carol"), own, "the lock shows");
        // An unknown name gets the parameters for new records (see SECURITY.md, known limits).
        assert_eq!(answered_ksf(&locked, "nobody"), FAST);
    }

    #[test]
    fn psk_can_open_a_session() {
        let ctx = full();
        let c = claims("dave", 1, "reader");
        let key = psk::derive_psk(&ctx.master, &c);
        let e = Exporter::from_bytes([5; 32]);
        let (m, w) = PskClient::new(c, key).with_session().start(&e);
        let (r, _) = drive(&ctx, m, w.into(), &e, 0);
        let Ok(ClientStep::Done(a)) = r else {
            panic!("{r:?}")
        };
        let s = a.session.expect("session");
        let stored = ctx.session(&s.id).unwrap();
        assert_eq!(stored.secret, s.secret);
        assert_eq!(stored.principal.method, Method::Psk { epoch: 1 });
    }
}
