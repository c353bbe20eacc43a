//! Requests about one's own account, served after authentication.

use ferry_proto::auth::{Method, Principal};
use ferry_proto::message::{
    Empty, ErrorCode, ErrorMsg, Message, OpaqueResponse, PasswordChangeStart, RegisterFinish,
};
use ferry_proto::password;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::Error;
use crate::accounts::session_id_text;
use crate::server::Shared;
use crate::wire::Wire;

/// Whether the principal is a user who logged in with a password (directly, or through a
/// session opened by a password login).
fn is_password_user(shared: &Shared, p: &Principal) -> bool {
    match &p.method {
        Method::Password => true,
        Method::Session { id } => shared
            .sessions
            .current()
            .sessions
            .get(&session_id_text(id))
            .is_some_and(|s| s.origin == "password"),
        _ => false,
    }
}

/// `password_change_start` → `register_response` → `password_change_finish` →
/// `password_change_ok`. The new record replaces the old one and ends the user's password
/// sessions, this connection's included (its next request is refused).
pub(crate) async fn change_password<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    wire: &mut Wire<S>,
    p: &Principal,
    req: PasswordChangeStart,
) -> Result<(), Error> {
    if !is_password_user(shared, p) {
        return wire
            .send(&Message::Error(ErrorMsg {
                code: ErrorCode::Forbidden,
                message: "only a user who logged in with a password can change it".into(),
            }))
            .await;
    }
    let Ok(response) = password::server_register_start(&shared.opaque, &p.name, &req.request)
    else {
        return Err(Error::Protocol("malformed password change request".into()));
    };
    let ksf = shared.new_ksf;
    wire.send(&Message::RegisterResponse(OpaqueResponse { response, ksf }))
        .await?;
    let msg = tokio::time::timeout(shared.limits.transfer_timeout, wire.recv_message())
        .await
        .map_err(|_| Error::Timeout("the new password record"))??;
    let Message::PasswordChangeFinish(RegisterFinish { upload }) = msg else {
        return Err(Error::Protocol(format!(
            "unexpected {} during a password change",
            msg.type_name()
        )));
    };
    let Ok(record) = password::server_register_finish(&upload, ksf) else {
        return Err(Error::Protocol("malformed password record".into()));
    };
    let dir = shared.dir.clone();
    let name = p.name.clone();
    let now = crate::clock::now();
    let changed = crate::pipe::join(tokio::task::spawn_blocking(move || {
        dir.set_password(&name, &record, now)
    }))
    .await?;
    if !changed {
        return wire.send(&Message::AuthFailed(Empty {})).await;
    }
    tracing::info!("{} changed their password", p.name);
    wire.send(&Message::PasswordChangeOk(Empty {})).await
}
