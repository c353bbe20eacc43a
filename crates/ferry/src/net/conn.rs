//! One connection: the TLS handshake (ALPN `ferry/1` required), authentication, then the
//! request loop that hands each request to its front (`data`, `watch`, `account`, the mesh's).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_proto::auth::{Method, Principal, ServerAuth, ServerStep};
use ferry_proto::message::{ErrorCode, ErrorMsg, Message};
use ferry_proto::session::SessionId;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::server::TlsStream;
use tokio_rustls::{LazyConfigAcceptor, TlsAcceptor};

use super::owed::Owed;
use crate::admission::Pending;
use crate::engine::AUDIT;
use crate::engine::authn::{AuthCtx, PasswordAttempt};
use crate::engine::{Core, Engine, ServerBackend};
use crate::metrics::Refused;
use crate::wire::{Incoming, PRE_AUTH_LIMIT, Wire};
use crate::{Error, tls};

/// A fatal TLS alert `no_application_protocol` (RFC 8446 §6, RFC 7301 §3.2) as a plaintext
/// record: what the server sends, before any handshake message of its own, to a ClientHello
/// that does not offer `ferry/1`.
const NO_APPLICATION_PROTOCOL: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x78];

/// Runs the TLS handshake: the ClientHello must arrive within the hello deadline and offer
/// ALPN `ferry/1`; the rest must finish by `deadline`. `None` if the connection is to close.
async fn accept_tls(
    engine: &Core,
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    deadline: tokio::time::Instant,
) -> Option<TlsStream<TcpStream>> {
    let hello_deadline = deadline.min(tokio::time::Instant::now() + engine.limits.hello_timeout);
    let mut hello = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp);
    let start = match tokio::time::timeout_at(hello_deadline, &mut hello).await {
        Ok(Ok(start)) => start,
        Ok(Err(e)) => {
            tracing::debug!("no TLS ClientHello: {e}");
            engine.metrics.refused(Refused::NotFerry);
            return None;
        }
        Err(_) => {
            tracing::debug!("no TLS ClientHello in time");
            engine.metrics.refused(Refused::Timeout);
            return None;
        }
    };
    let offers_ferry = start
        .client_hello()
        .alpn()
        .is_some_and(|mut offered| offered.any(|p| p == ferry_proto::ALPN));
    if !offers_ferry {
        // rustls itself refuses a client offering only other protocols, but serves one
        // offering none (RFC 7301 allows that); ferry requires `ferry/1` in both cases.
        tracing::info!("TLS refused: the client does not offer ALPN ferry/1");
        engine.metrics.refused(Refused::NotFerry);
        let mut tcp = start.io;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            tcp.write_all(&NO_APPLICATION_PROTOCOL).await?;
            tcp.shutdown().await
        })
        .await;
        return None;
    }
    let config = acceptor.config().clone();
    match tokio::time::timeout_at(deadline, start.into_stream(config)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!("TLS handshake failed: {e}");
            engine.metrics.refused(Refused::Tls);
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            engine.metrics.refused(Refused::Timeout);
            None
        }
    }
}

pub(crate) async fn serve_connection<B: ServerBackend>(
    engine: &Arc<Engine<B>>,
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    (mut stop, mut ending): (watch::Receiver<bool>, watch::Receiver<bool>),
    pending: Pending,
    authenticated: Arc<Semaphore>,
) -> Result<(), Error> {
    let _ = tcp.set_nodelay(true);
    let deadline = tokio::time::Instant::now() + engine.limits.handshake_timeout;
    let Some(tls) = accept_tls(engine, acceptor, tcp, deadline).await else {
        return Ok(());
    };
    let exporter = tls::export(tls.get_ref().1)?;
    // A password change proves the current password with a login bound to this connection.
    let change_exporter = exporter.clone();
    let mut wire = Wire::new(tls);
    wire.set_limit(PRE_AUTH_LIMIT);
    let (principal, session) =
        match tokio::time::timeout_at(deadline, authenticate(engine, &mut wire, exporter, peer))
            .await
        {
            Ok(Ok(Some(p))) => p,
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(e)) => {
                tracing::info!("authentication aborted: {e}");
                engine.metrics.refused(Refused::AuthFailed);
                return Ok(());
            }
            Err(_) => {
                tracing::info!("authentication timed out");
                engine.metrics.refused(Refused::Timeout);
                return Ok(());
            }
        };
    tracing::Span::current().record("principal", principal.name.as_str());
    // From here on the connection counts against the authenticated budget, not the other.
    drop(pending);
    let Ok(_permit) = authenticated.try_acquire_owned() else {
        engine.metrics.refused(Refused::Busy);
        tracing::warn!(
            "{} refused: already serving max_connections authenticated connections",
            principal.name
        );
        wire.send(&Message::Error(ErrorMsg {
            code: ErrorCode::Busy,
            message: "it is serving as many connections as it may; try again later".into(),
        }))
        .await?;
        let _ = wire.shutdown().await;
        return Ok(());
    };
    let per_address = engine.rules.get().limits.max_connections_per_address;
    let Some(_place) = engine
        .per_address
        .take(&crate::admission::key(peer.ip()), per_address)
    else {
        engine.metrics.refused(Refused::AddressBusy);
        tracing::warn!(
            "{} refused: its address already holds max_connections_per_address = {per_address} connections",
            principal.name
        );
        wire.send(&Message::Error(ErrorMsg {
            code: ErrorCode::Busy,
            message:
                "your address holds as many connections as this server allows; try again later"
                    .into(),
        }))
        .await?;
        let _ = wire.shutdown().await;
        return Ok(());
    };
    wire.set_limit(ferry_proto::frame::MAX_BODY_LEN);
    let mut owed = Owed::default();
    loop {
        let msg = if owed.is_empty() {
            tokio::select! {
                r = tokio::time::timeout(engine.limits.idle_timeout, wire.recv_message()) => match r {
                    Ok(r) => r?,
                    Err(_) => return Err(Error::Timeout("the next request")),
                },
                _ = stop.changed() => {
                    // Said before closing, so the client's next request reads why the
                    // connection ended rather than a bare close.
                    let _ = wire
                        .send(&Message::Error(ErrorMsg {
                            code: ErrorCode::ShuttingDown,
                            message: "the server is shutting down; try again shortly".into(),
                        }))
                        .await;
                    break;
                }
            }
        } else {
            // Small puts are being committed: read on while the client sends, and answer
            // each put as its commit ends.
            let next =
                tokio::time::timeout(engine.limits.idle_timeout, owed.answer_or_recv(&mut wire))
                    .await
                    .map_err(|_| Error::Timeout("the next request"))??;
            match next {
                Some(Incoming::Message(msg)) => msg,
                Some(Incoming::Data(_)) => {
                    return Err(Error::Protocol("unexpected data frame".into()));
                }
                None => continue,
            }
        };
        // A small put goes on while earlier ones commit; anything else is answered after
        // them.
        let small = matches!(&msg, Message::Put(req) if super::data::is_small(req));
        if !small {
            owed.settle(&mut wire).await?;
        }
        if let Message::Logout(_) = msg {
            if let Some(id) = session {
                engine.end_session(id).await?;
                tracing::info!(
                    target: AUDIT,
                    op = "logout",
                    principal = principal.name.as_str(),
                    outcome = "ok",
                    "{} logged out",
                    principal.name
                );
            }
            wire.send(&Message::LogoutOk(Default::default())).await?;
            break;
        }
        if !engine.still_valid(&principal).await? {
            tracing::info!("{} is no longer authorised; closing", principal.name);
            owed.settle(&mut wire).await?;
            wire.send(&Message::AuthFailed(Default::default())).await?;
            break;
        }
        match msg {
            Message::Put(req) if small => {
                if !owed.has_room(req.size.unwrap_or(0)) {
                    owed.settle(&mut wire).await?;
                }
                super::data::put_small(engine, &mut wire, &principal, req, &mut owed).await?;
            }
            Message::PasswordChangeStart(req) => {
                let ended = super::account::change_password(
                    engine,
                    &mut wire,
                    &principal,
                    &change_exporter,
                    peer,
                    req,
                )
                .await?;
                if ended {
                    break;
                }
            }
            msg @ (Message::MeshState(_) | Message::MeshList(_)) => {
                super::mesh::handle(engine, &mut wire, &principal, msg).await?
            }
            Message::Watch(req) => {
                let ended =
                    super::watch::serve(engine, &mut wire, &principal, req, &mut stop).await?;
                if ended {
                    break;
                }
            }
            msg => super::data::handle(engine, &mut wire, &principal, msg, &mut ending).await?,
        }
    }
    let _ = wire.shutdown().await;
    Ok(())
}

/// Runs the authentication exchange. Returns the principal and the session the connection
/// belongs to, or `None` if authentication failed (already answered).
async fn authenticate(
    engine: &Core,
    wire: &mut Wire<TlsStream<TcpStream>>,
    exporter: ferry_proto::secret::Exporter,
    peer: SocketAddr,
) -> Result<Option<(Principal, Option<SessionId>)>, Error> {
    let first = wire.recv_message().await?;
    let first = match first {
        Message::MeshJoinStart(m) => {
            super::mesh::join(engine, wire, &exporter, peer, m).await?;
            let _ = wire.shutdown().await;
            return Ok(None);
        }
        other => other,
    };
    // The password attempt a login step admitted: it counts as a failure unless the login
    // is accepted, also if the exchange ends early (the client hangs up after KE2): then it
    // is counted here, before the connection closes.
    let mut attempt: Option<PasswordAttempt> = None;
    let result = exchange(engine, wire, exporter, peer, first, &mut attempt).await;
    if let Some(a) = attempt.take()
        && let Err(e) = a.failed().await
    {
        tracing::error!("cannot count a failed login: {e}");
    }
    result
}

/// The exchange of [`authenticate`] from its first message on; an admitted password attempt
/// it has not settled is left in `attempt`.
async fn exchange(
    engine: &Core,
    wire: &mut Wire<TlsStream<TcpStream>>,
    exporter: ferry_proto::secret::Exporter,
    peer: SocketAddr,
    first: Message,
    attempt: &mut Option<PasswordAttempt>,
) -> Result<Option<(Principal, Option<SessionId>)>, Error> {
    let method = method_of(&first);
    let mut pending = Some(first);
    let mut state = ServerAuth::new(exporter);
    loop {
        let msg = match pending.take() {
            Some(m) => m,
            None => wire.recv_message().await?,
        };
        let now = crate::clock::now();
        let (ctx, admitted) = AuthCtx::fetch(engine, state.wants(&msg), peer.ip(), now).await?;
        if admitted.is_some() {
            *attempt = admitted;
        }
        let step = state.handle(msg, &ctx, &mut rand_core::OsRng, now);
        drop(ctx);
        match step {
            ServerStep::Continue { reply, next } => {
                wire.send(&reply).await?;
                state = next;
            }
            ServerStep::Accept {
                reply,
                principal,
                session,
            } => {
                let session_id = engine.accepted(&principal, session, now).await?;
                engine.metrics.authentication(principal.method.name(), true);
                if let Some(a) = attempt.take()
                    && matches!(principal.method, Method::Password { .. })
                {
                    a.succeeded().await?;
                }
                // Gathered: it leaves with the answer to a request the client sent right
                // behind its proof, or as soon as the connection waits for the client.
                wire.queue(&reply).await?;
                tracing::info!(
                    target: AUDIT,
                    op = "authenticate",
                    principal = principal.name.as_str(),
                    method = principal.method.name(),
                    outcome = "ok",
                    "authenticated {} (role {}) by {}",
                    principal.name,
                    principal.role().unwrap_or("-"),
                    principal.method.name()
                );
                return Ok(Some((principal, session_id)));
            }
            ServerStep::Register {
                reply,
                invite,
                record,
            } => {
                let name = invite.name().to_owned();
                let stored = engine.register(invite, record, now).await?;
                engine.metrics.authentication("invite", stored);
                if stored {
                    tracing::info!(
                        target: AUDIT,
                        op = "register",
                        principal = name.as_str(),
                        outcome = "ok",
                        "registered user {name}"
                    );
                    wire.send(&reply).await?;
                } else {
                    tracing::warn!(
                        target: AUDIT,
                        op = "register",
                        principal = name.as_str(),
                        outcome = "lost",
                        "registration for {name} lost to another"
                    );
                    wire.send(&Message::AuthFailed(Default::default())).await?;
                }
                let _ = wire.shutdown().await;
                return Ok(None);
            }
            ServerStep::Reject {
                reply,
                reason,
                user,
            } => {
                // An evaluated password attempt counts before the client hears the verdict;
                // one refused because of a lock was never admitted and does not extend it.
                if let Some(a) = attempt.take() {
                    a.failed().await?;
                }
                engine.metrics.authentication(method, false);
                engine.metrics.refused(Refused::AuthFailed);
                tracing::warn!(
                    target: AUDIT,
                    op = "authenticate",
                    method,
                    outcome = "failed",
                    "authentication failed ({reason:?}{})",
                    user.map(|u| format!(", user {u}")).unwrap_or_default()
                );
                wire.send(&reply).await?;
                let _ = wire.shutdown().await;
                return Ok(None);
            }
        }
    }
}

/// The method an authentication's first message opens, as the metrics name it.
fn method_of(first: &Message) -> &'static str {
    match first {
        Message::PskAuth(_) => "psk",
        Message::PasswordLoginStart(_) => "password",
        Message::RegisterStart(_) => "invite",
        Message::SessionAuth(_) => "session",
        Message::MeshAuth(_) => "mesh",
        _ => "other",
    }
}
