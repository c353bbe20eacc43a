//! Invite redemption (registration), both ends: an invite's holder sets its password.
//!
//! ```text
//! client → server   register_start    { claims, mac: invite_mac(invite key, exporter, claims), OPAQUE request }
//! client ← server   register_response { OPAQUE response, ksf }
//! client → server   register_finish   { OPAQUE upload }
//! client ← server   register_ok
//! ```
//!
//! The invite key and MAC are in [`crate::psk`] (under their own label, so an invite is never a
//! credential), the OPAQUE registration in [`crate::password`]. The server verifies the MAC
//! before it looks the invite up, and stores the record and spends the invite together
//! ([`ServerStep::Register`]).

use crate::claims::Claims;
use crate::message::{Empty, Message, OpaqueResponse, RegisterFinish, RegisterStart};
use crate::password::{self, ClientRegisterState, KsfParams, Rng};
use crate::psk::{derive_invite_key_from_encoded, invite_mac, mac_eq};
use crate::secret::{Exporter, InviteKey};

use super::{
    AuthError, ClientAuth, ClientStep, RejectReason, ServerAuth, ServerContext, ServerStep, reject,
};

/// The attribute of invite claims that holds their expiry (Unix seconds).
pub const INVITE_EXPIRES: &str = "expires";

/// The server's answer to `register_start`.
pub(super) fn start(
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
    let key = derive_invite_key_from_encoded(ctx.master_key(), &m.claims);
    let mac_ok = mac_eq(&invite_mac(&key, &exporter, &m.claims), &m.mac);
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
                next: ServerAuth::RegisterFinish(ExpectUpload { invite, ksf }),
            }
        }
        Err(_) => reject(RejectReason::UnexpectedMessage),
    }
}

/// The server after its registration response: waits for the upload.
#[derive(Debug)]
pub struct ExpectUpload {
    /// The invite being redeemed.
    invite: Claims,
    /// Parameters the client was told to use.
    ksf: KsfParams,
}

impl ExpectUpload {
    /// The invite being redeemed.
    pub fn invite(&self) -> &Claims {
        &self.invite
    }

    pub(super) fn handle(self, msg: Message) -> ServerStep {
        let Message::RegisterFinish(RegisterFinish { upload }) = msg else {
            return reject(RejectReason::UnexpectedMessage);
        };
        match password::server_register_finish(&upload, self.ksf) {
            Ok(record) => ServerStep::Register {
                reply: Message::RegisterOk(Empty {}),
                invite: self.invite,
                record,
            },
            Err(_) => reject(RejectReason::UnexpectedMessage),
        }
    }
}

// ---- Client side -----------------------------------------------------------------------

/// Starts redeeming an invite (`claims` and `key` from the invite file) with a new password.
pub fn register(
    rng: &mut impl Rng,
    exporter: &Exporter,
    claims: &Claims,
    key: &InviteKey,
    password: &[u8],
) -> Result<(Message, ClientAuth), AuthError> {
    let encoded = claims.encode();
    let (request, state) =
        password::client_register_start(rng, password).map_err(|_| AuthError::Unexpected)?;
    Ok((
        Message::RegisterStart(RegisterStart {
            mac: invite_mac(key, exporter, &encoded),
            claims: encoded,
            request,
        }),
        ClientAuth::RegisterResponse(ExpectResponse {
            state: Box::new(state),
        }),
    ))
}

/// The client after `register_start`: waits for the registration response.
#[derive(Debug)]
pub struct ExpectResponse {
    state: Box<ClientRegisterState>,
}

impl ExpectResponse {
    pub(super) fn handle(self, msg: Message, rng: &mut impl Rng) -> Result<ClientStep, AuthError> {
        let Message::RegisterResponse(r) = msg else {
            return Err(AuthError::Unexpected);
        };
        let upload = password::client_register_finish(rng, *self.state, &r.response, r.ksf)
            .map_err(|_| AuthError::Unexpected)?;
        Ok(ClientStep::Send(
            Message::RegisterFinish(RegisterFinish { upload }),
            ClientAuth::RegisterDone,
        ))
    }
}

/// The client after its upload: waits for `register_ok`.
pub(super) fn done(msg: Message) -> Result<ClientStep, AuthError> {
    match msg {
        Message::RegisterOk(_) => Ok(ClientStep::Registered),
        _ => Err(AuthError::Unexpected),
    }
}
