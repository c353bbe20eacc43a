//! Password logins over HTTP (docs/HTTP.md §13): the OPAQUE exchange of the TLS front,
//! carried by two unsigned requests, run by the same state machine
//! ([`ServerAuth::http_login`]) against the same account data, limiter and session store
//! ([`AuthCtx`], [`PasswordAttempt`], [`Core::accepted`](crate::engine::Core)).
//!
//! ```text
//! POST /v1/login/start    body: password_login_start (CBOR)   → 200, x-ferry-login: ID, body: password_login_response
//! POST /v1/login/finish   x-ferry-login: ID, body: password_login_finish → 200, body: auth_ok (with the session's grant)
//! ```
//!
//! Between the two, the server keeps the login's state under a random ID for at most
//! [`LOGIN_TTL`], at most [`MAX_PENDING`] at once (more: 503). A login whose finish never
//! comes counts as a failed attempt when its state is dropped (expired, or taken by a
//! finish that fails), exactly like a TLS client that hangs up after KE2. Every failure is
//! the one generic 401.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ferry_proto::auth::{Method, ServerAuth, ServerStep};
use ferry_proto::message::Message;
use http_body_util::BodyExt;
use hyper::Response;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::http::request::Parts;

use super::{Front, reply};
use crate::engine::authn::{AuthCtx, PasswordAttempt};
use crate::engine::{AUDIT, ServerBackend};
use crate::http_body::OutBody;

/// How long a login's state waits for its finish.
pub(crate) const LOGIN_TTL: Duration = Duration::from_secs(60);
/// Most logins waiting for their finish at once.
pub(crate) const MAX_PENDING: usize = 1024;
/// The header naming a login between its two requests.
pub(crate) const LOGIN_HEADER: &str = "x-ferry-login";
/// Most bytes of a login request's body.
const MAX_BODY: usize = 16 * 1024;

/// A login between its start and its finish.
struct Pending {
    state: ServerAuth,
    /// Counts as a failure when dropped unsettled.
    attempt: Option<PasswordAttempt>,
    until: Instant,
}

/// The logins waiting for their finish.
#[derive(Default)]
pub(crate) struct Logins(HashMap<[u8; 16], Pending>);

impl Logins {
    /// Keeps `p` under a new ID; `None` if full of unexpired logins.
    fn insert(&mut self, p: Pending) -> Option<[u8; 16]> {
        let now = Instant::now();
        // Dropping an expired login counts its attempt as failed.
        self.0.retain(|_, p| p.until > now);
        if self.0.len() >= MAX_PENDING {
            return None;
        }
        let mut id = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
        self.0.insert(id, p);
        Some(id)
    }

    fn take(&mut self, id: &[u8; 16]) -> Option<Pending> {
        self.0.remove(id).filter(|p| p.until > Instant::now())
    }
}

/// Reads a small unauthenticated body, within the handshake deadline.
async fn small(body: &mut Incoming, deadline: Duration) -> Option<Vec<u8>> {
    let read = async {
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.ok()?.into_data() {
                if out.len() + data.len() > MAX_BODY {
                    return None;
                }
                out.extend_from_slice(&data);
            }
        }
        Some(out)
    };
    tokio::time::timeout(deadline, read).await.ok().flatten()
}

fn answer(msg: &Message, login: Option<&[u8; 16]>) -> Response<OutBody> {
    let mut r = Response::new(OutBody::full(msg.encode()));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(reply::OCTETS));
    if let Some(id) = login
        && let Ok(v) = HeaderValue::from_str(&data_encoding::HEXLOWER.encode(id))
    {
        r.headers_mut().insert(LOGIN_HEADER, v);
    }
    r
}

impl<B: ServerBackend> Front<B> {
    fn login_refused(&self, peer: SocketAddr, why: &str) -> Response<OutBody> {
        self.engine.metrics.authentication("password", false);
        tracing::warn!(
            target: AUDIT,
            op = "authenticate",
            method = "password",
            outcome = "failed",
            "{peer}: HTTP password login failed ({why})"
        );
        reply::unauthenticated()
    }

    /// `POST /v1/login/start`.
    pub(crate) async fn login_start(
        &self,
        peer: SocketAddr,
        mut body: Incoming,
    ) -> Response<OutBody> {
        let Some(bytes) = small(&mut body, self.engine.limits.handshake_timeout).await else {
            return self.login_refused(peer, "unreadable body");
        };
        let Ok(msg @ Message::PasswordLoginStart(_)) = Message::decode(&bytes) else {
            return self.login_refused(peer, "not a login start");
        };
        let state = ServerAuth::http_login();
        let now = crate::clock::now();
        let fetched = AuthCtx::fetch(&self.engine, state.wants(&msg), peer.ip(), now).await;
        let Ok((ctx, attempt)) = fetched else {
            return reply::internal();
        };
        let step = state.handle(msg, &ctx, &mut rand_core::OsRng, now);
        drop(ctx);
        match step {
            ServerStep::Continue { reply, next } => {
                let pending = Pending {
                    state: next,
                    attempt,
                    until: Instant::now() + LOGIN_TTL,
                };
                let id = self
                    .logins
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(pending);
                match id {
                    Some(id) => answer(&reply, Some(&id)),
                    // The pending login (and its attempt, counted failed) is dropped.
                    None => reply::busy(),
                }
            }
            _ => {
                if let Some(a) = attempt
                    && let Err(e) = a.failed().await
                {
                    tracing::error!("cannot count a failed login: {e}");
                }
                self.login_refused(peer, "bad login start")
            }
        }
    }

    /// `POST /v1/login/finish`.
    pub(crate) async fn login_finish(
        &self,
        peer: SocketAddr,
        head: &Parts,
        mut body: Incoming,
    ) -> Response<OutBody> {
        let id: Option<[u8; 16]> = head
            .headers
            .get(LOGIN_HEADER)
            .and_then(|v| data_encoding::HEXLOWER.decode(v.as_bytes()).ok())
            .and_then(|v| v.try_into().ok());
        let bytes = small(&mut body, self.engine.limits.handshake_timeout).await;
        let pending = id.and_then(|id| {
            self.logins
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(&id)
        });
        let Some(Pending {
            state, mut attempt, ..
        }) = pending
        else {
            return self.login_refused(peer, "no such login waiting");
        };
        let Some(msg) = bytes.and_then(|b| Message::decode(&b).ok()) else {
            return self.settle_failed(peer, attempt, "unreadable finish").await;
        };
        let now = crate::clock::now();
        let fetched = AuthCtx::fetch(&self.engine, state.wants(&msg), peer.ip(), now).await;
        let Ok((ctx, _)) = fetched else {
            return reply::internal();
        };
        let step = state.handle(msg, &ctx, &mut rand_core::OsRng, now);
        drop(ctx);
        match step {
            ServerStep::Accept {
                reply: ok,
                principal,
                session,
            } if matches!(principal.method, Method::Password { .. }) && session.is_some() => {
                if let Err(e) = self.engine.accepted(&principal, session, now).await {
                    tracing::error!("{peer}: cannot store {}'s session: {e}", principal.name);
                    return reply::internal();
                }
                if let Some(a) = attempt.take()
                    && let Err(e) = a.succeeded().await
                {
                    tracing::error!("cannot record a login: {e}");
                }
                self.engine.metrics.authentication("password", true);
                tracing::info!(
                    target: AUDIT,
                    op = "authenticate",
                    principal = principal.name.as_str(),
                    method = "password",
                    outcome = "ok",
                    "{peer}: HTTP login of {} (role {}) opened a session",
                    principal.name,
                    principal.role().unwrap_or("-"),
                );
                answer(&ok, None)
            }
            _ => {
                self.settle_failed(peer, attempt, "wrong password or not finished")
                    .await
            }
        }
    }

    async fn settle_failed(
        &self,
        peer: SocketAddr,
        attempt: Option<PasswordAttempt>,
        why: &str,
    ) -> Response<OutBody> {
        if let Some(a) = attempt
            && let Err(e) = a.failed().await
        {
            tracing::error!("cannot count a failed login: {e}");
        }
        self.login_refused(peer, why)
    }
}
