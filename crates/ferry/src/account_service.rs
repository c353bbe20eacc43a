//! Requests about one's own account, served after authentication.

use std::net::SocketAddr;

use ferry_proto::auth::Principal;
use ferry_proto::message::{
    Empty, ErrorCode, ErrorMsg, Message, OpaqueResponse, PasswordChangeProof, PasswordChangeStart,
    RegisterFinish,
};
use ferry_proto::password;
use ferry_proto::secret::Exporter;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::Error;
use crate::engine::Engine;
use crate::engine::authn::PasswordAttempt;
use crate::wire::Wire;

/// Answers `auth_failed`, like every other authentication failure; the connection then ends.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(wire: &mut Wire<S>) -> Result<bool, Error> {
    wire.send(&Message::AuthFailed(Empty {})).await?;
    Ok(true)
}

/// Waits for the client's next message in the exchange.
async fn next<S: AsyncRead + AsyncWrite + Unpin>(
    engine: &Engine,
    wire: &mut Wire<S>,
) -> Result<Message, Error> {
    tokio::time::timeout(engine.limits.transfer_timeout, wire.recv_message())
        .await
        .map_err(|_| Error::Timeout("the password change"))?
}

/// A password change, on a connection of a user who logged in with a password:
///
/// ```text
/// C→S password_change_start    {request: KE1}           fresh login, current password
/// S→C password_change_response {response: KE2, ksf}
/// C→S password_change_proof    {finalization: KE3, request: RegistrationRequest}
/// S→C register_response        {response, ksf}          only if KE3 verified
/// C→S password_change_finish   {upload}
/// S→C password_change_ok       {}
/// ```
///
/// The login runs against the record of the connection's own generation, with this
/// connection's exporter as OPAQUE's context, under the same limiter as logins (an admitted
/// attempt counts as a failure unless it verifies, also when the client hangs up). Any
/// failure answers `auth_failed` and ends the connection (returns `Ok(true)`). On success the
/// record gets a new generation, which ends every older connection and session of the user,
/// this one included (its next request is refused).
pub(crate) async fn change_password<S: AsyncRead + AsyncWrite + Unpin>(
    engine: &Engine,
    wire: &mut Wire<S>,
    p: &Principal,
    exporter: &Exporter,
    peer: SocketAddr,
    req: PasswordChangeStart,
) -> Result<bool, Error> {
    let Some(generation) = engine.password_generation(p) else {
        wire.send(&Message::Error(ErrorMsg {
            code: ErrorCode::Forbidden,
            message: "only a user who logged in with a password can change it".into(),
        }))
        .await?;
        return Ok(false);
    };
    // Like a login: a locked user, or a record that changed since this connection's login
    // (it is refused at its next request anyway), gets a dummy record and fails alike.
    let now = crate::clock::now();
    let admitted = engine.limiter.allowed(&p.name, peer.ip(), now);
    let users = engine.users.current();
    let found = users
        .users
        .get(&p.name)
        .filter(|u| u.generation == generation);
    let ksf = found.map_or(engine.new_ksf, |u| u.ksf);
    let record = found.filter(|_| admitted).and_then(|u| u.user_record());
    drop(users);
    let mut attempt =
        admitted.then(|| PasswordAttempt::new(&engine.limiter, p.name.clone(), peer.ip(), now));
    let started = password::server_login_start(
        &mut rand_core::OsRng,
        &engine.opaque,
        &p.name,
        record.as_ref(),
        &req.request,
        exporter.expose_secret(),
    );
    let Ok((response, state)) = started else {
        tracing::warn!("{peer}: password change by {} refused (bad KE1)", p.name);
        return refuse(wire).await;
    };
    wire.send(&Message::PasswordChangeResponse(OpaqueResponse {
        response,
        ksf,
    }))
    .await?;
    let PasswordChangeProof {
        finalization,
        request,
    } = match next(engine, wire).await? {
        Message::PasswordChangeProof(m) => m,
        m => {
            // `password_login_failed`: the client saw that its current password was wrong.
            tracing::warn!(
                "{peer}: password change by {} refused ({})",
                p.name,
                m.type_name()
            );
            return refuse(wire).await;
        }
    };
    // Verify even for a dummy record, so every path costs the same.
    let proved = password::server_login_finish(state, &finalization, exporter.expose_secret());
    if !(proved && record.is_some()) {
        tracing::warn!(
            "{peer}: password change by {} refused (current password not proved)",
            p.name
        );
        return refuse(wire).await;
    }
    if let Some(a) = attempt.as_mut() {
        a.succeeded();
    }
    drop(attempt);
    let Ok(response) = password::server_register_start(&engine.opaque, &p.name, &request) else {
        return refuse(wire).await;
    };
    let new_ksf = engine.new_ksf;
    wire.send(&Message::RegisterResponse(OpaqueResponse {
        response,
        ksf: new_ksf,
    }))
    .await?;
    let Message::PasswordChangeFinish(RegisterFinish { upload }) = next(engine, wire).await? else {
        return refuse(wire).await;
    };
    let Ok(new_record) = password::server_register_finish(&upload, new_ksf) else {
        return refuse(wire).await;
    };
    let dir = engine.dir.clone();
    let name = p.name.clone();
    let changed = crate::pipe::join(tokio::task::spawn_blocking(move || {
        dir.set_password(&name, generation, &new_record, crate::clock::now())
            .map(|g| g.is_some())
    }))
    .await;
    match changed {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(
                "{peer}: password change by {} refused (record changed meanwhile)",
                p.name
            );
            return refuse(wire).await;
        }
        Err(e) => return Err(e),
    }
    tracing::info!("{peer}: {} changed their password", p.name);
    wire.send(&Message::PasswordChangeOk(Empty {})).await?;
    Ok(false)
}
