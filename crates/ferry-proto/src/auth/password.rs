//! The `password` method (an OPAQUE login, RFC 9807), both ends.
//!
//! ```text
//! client → server   password_login_start    { user, KE1, session }
//! client ← server   password_login_response { KE2, ksf }
//! client → server   password_login_finish   { KE3 }      (or password_login_failed)
//! client ← server   auth_ok { method: "password", .. }
//! ```
//!
//! The OPAQUE calls are in [`crate::password`]; both ends give the TLS exporter as OPAQUE's
//! context, so a login cannot be relayed. A login over HTTP ([`http_password_login`],
//! [`ServerAuth::http_login`](super::ServerAuth::http_login)) has no channel to bind to: it
//! gives a fixed context, and the session it opens is derived from the AKE's session key
//! instead of the exporter ([`crate::http::session`]), so only the two ends know its secret. An unknown user, or one that may not try now, is
//! answered from a dummy record and fails like a wrong password. The password change, which a
//! logged-in user runs as requests after authentication, uses the same OPAQUE calls from the
//! `ferry` crate's engine (it needs the account store and the limiter's drop guard).

use std::collections::BTreeMap;

use crate::message::{
    AuthOk, Empty, Message, OpaqueResponse, PasswordLoginFinish, PasswordLoginStart,
};
use crate::names;
use crate::password::{self, ClientLoginState, Rng, ServerLoginState};
use crate::secret::Exporter;

use super::session::{ClientSession, open_session};
use super::{
    AuthError, Authenticated, ClientAuth, ClientStep, Method, Principal, RejectReason, ServerAuth,
    ServerContext, ServerStep, principal_from, reject, reject_user,
};

/// The server's answer to `password_login_start`.
pub(super) fn start(
    exporter: Exporter,
    http: bool,
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
            next: ServerAuth::PasswordFinish(ExpectFinish {
                exporter,
                http,
                user: m.user,
                attributes,
                state,
                session: m.session,
            }),
        },
        Err(_) => reject_user(RejectReason::PasswordFailed, Some(m.user)),
    }
}

/// The server after its OPAQUE response: waits for the client's finalization.
#[derive(Debug)]
pub struct ExpectFinish {
    exporter: Exporter,
    /// A login over HTTP: the session is derived from the AKE's key, not the exporter.
    http: bool,
    /// The user who is logging in.
    user: String,
    /// The user's attributes and record generation, if the user exists and may log in now.
    attributes: Option<(BTreeMap<String, String>, u64)>,
    state: ServerLoginState,
    /// Whether to open a session.
    session: bool,
}

impl ExpectFinish {
    /// The user who is logging in.
    pub fn user(&self) -> &str {
        &self.user
    }

    pub(super) fn handle(
        self,
        msg: Message,
        ctx: &dyn ServerContext,
        rng: &mut dyn Rng,
        now: u64,
    ) -> ServerStep {
        let Self {
            exporter,
            http,
            user,
            attributes,
            state,
            session,
        } = self;
        let finalization = match msg {
            Message::PasswordLoginFinish(PasswordLoginFinish { finalization }) => finalization,
            Message::PasswordLoginFailed(_) => {
                return reject_user(RejectReason::PasswordFailed, Some(user));
            }
            _ => return reject(RejectReason::UnexpectedMessage),
        };
        // Verify even for a dummy record, so every path costs the same.
        let key = password::server_login_finish_key(state, &finalization, exporter.expose_secret());
        match (attributes, key) {
            (Some((attributes, generation)), Some(key)) => {
                let principal = Principal {
                    name: user,
                    attributes,
                    method: Method::Password { generation },
                };
                let binding = if http {
                    crate::http::session::binding(&key)
                } else {
                    exporter
                };
                let (session, grant) = open_session(session, &binding, ctx, rng, now);
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

/// Starts a password login for `user`.
pub fn password_login(
    rng: &mut impl Rng,
    exporter: &Exporter,
    user: &str,
    password: &[u8],
    want_session: bool,
) -> Result<(Message, ClientAuth), AuthError> {
    login_start(rng, exporter, false, user, password, want_session)
}

/// Starts a password login for `user` over HTTP (docs/HTTP.md §13): OPAQUE's context is
/// [`crate::http::session::login_context`], and the session it asks for is derived from the
/// AKE's session key.
pub fn http_password_login(
    rng: &mut impl Rng,
    user: &str,
    password: &[u8],
) -> Result<(Message, ClientAuth), AuthError> {
    let context = crate::http::session::login_context();
    login_start(rng, &context, true, user, password, true)
}

fn login_start(
    rng: &mut impl Rng,
    exporter: &Exporter,
    http: bool,
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
        ClientAuth::PasswordResponse(ExpectResponse {
            exporter: exporter.clone(),
            http,
            state: Box::new(state),
        }),
    ))
}

/// The client after `password_login_start`: waits for the OPAQUE response.
#[derive(Debug)]
pub struct ExpectResponse {
    exporter: Exporter,
    http: bool,
    state: Box<ClientLoginState>,
}

impl ExpectResponse {
    pub(super) fn handle(self, msg: Message, rng: &mut impl Rng) -> Result<ClientStep, AuthError> {
        let Message::PasswordLoginResponse(r) = msg else {
            return Err(AuthError::Unexpected);
        };
        let Self {
            exporter,
            http,
            state,
        } = self;
        match password::client_login_finish_key(
            rng,
            *state,
            &r.response,
            r.ksf,
            exporter.expose_secret(),
        ) {
            Ok((finalization, key)) => Ok(ClientStep::Send(
                Message::PasswordLoginFinish(PasswordLoginFinish { finalization }),
                ClientAuth::PasswordDone(ExpectOk {
                    exporter: if http {
                        crate::http::session::binding(&key)
                    } else {
                        exporter
                    },
                }),
            )),
            Err(_) => Ok(ClientStep::SendAndFail(
                Message::PasswordLoginFailed(Empty {}),
                AuthError::Rejected,
            )),
        }
    }
}

/// The client after its finalization: waits for `auth_ok`.
#[derive(Debug)]
pub struct ExpectOk {
    exporter: Exporter,
}

impl ExpectOk {
    pub(super) fn handle(self, msg: Message) -> Result<ClientStep, AuthError> {
        match msg {
            Message::AuthOk(ok) if ok.method == "password" => Ok(ClientStep::Done(Authenticated {
                session: ok.session.map(|g| ClientSession::open(&self.exporter, &g)),
                principal: principal_from(ok.principal, Method::Password { generation: 0 }),
            })),
            _ => Err(AuthError::Unexpected),
        }
    }
}
