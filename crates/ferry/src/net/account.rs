//! The TLS front of requests about one's own account: moves the password change's messages
//! between the connection and the engine's steps (engine/account.rs).

use std::net::SocketAddr;

use ferry_proto::auth::Principal;
use ferry_proto::message::{Empty, Message, PasswordChangeStart};
use ferry_proto::secret::Exporter;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::Error;
use crate::engine::Core;
use crate::wire::Wire;

/// Answers `auth_failed`, like every other authentication failure; the connection then ends.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(wire: &mut Wire<S>) -> Result<bool, Error> {
    wire.send(&Message::AuthFailed(Empty {})).await?;
    Ok(true)
}

/// Waits for the client's next message in the exchange.
async fn next<S: AsyncRead + AsyncWrite + Unpin>(
    engine: &Core,
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
/// Any failure answers `auth_failed` and ends the connection (returns `Ok(true)`); a
/// principal that did not log in with a password is refused as a request (`Ok(false)`).
pub(crate) async fn change_password<S: AsyncRead + AsyncWrite + Unpin>(
    engine: &Core,
    wire: &mut Wire<S>,
    p: &Principal,
    exporter: &Exporter,
    peer: SocketAddr,
    req: PasswordChangeStart,
) -> Result<bool, Error> {
    let (response, proof) = match engine.password_change(p, exporter, peer, req).await? {
        Err(r) => {
            wire.send(&crate::net::data::refusal(r)).await?;
            return Ok(false);
        }
        Ok(Err(_)) => return refuse(wire).await,
        Ok(Ok(step)) => step,
    };
    wire.send(&Message::PasswordChangeResponse(response))
        .await?;
    let finish = match next(engine, wire).await {
        Ok(Message::PasswordChangeProof(m)) => proof.prove(m).await?,
        Ok(m) => Err(proof.abandoned(m.type_name()).await),
        Err(e) => {
            proof.abandoned("nothing: the connection ended").await;
            return Err(e);
        }
    };
    let Ok((response, finish)) = finish else {
        return refuse(wire).await;
    };
    wire.send(&Message::RegisterResponse(response)).await?;
    let Message::PasswordChangeFinish(m) = next(engine, wire).await? else {
        return refuse(wire).await;
    };
    if finish.finish(m).await?.is_err() {
        return refuse(wire).await;
    }
    wire.send(&Message::PasswordChangeOk(Empty {})).await?;
    Ok(false)
}
