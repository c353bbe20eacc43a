//! Account operations a principal does on itself: the password change, as three steps that
//! each consume the previous one (`start` → `prove` → `finish`), so a step cannot be skipped
//! or repeated.
//!
//! ```text
//! password_change_start    {KE1}                       → Engine::password_change → KE2, ksf
//! password_change_proof    {KE3, RegistrationRequest}  → ChangeProof::prove      → response, ksf
//! password_change_finish   {upload}                    → ChangeFinish::finish    → done
//! ```
//!
//! The login runs against the record of the connection's own generation, with the
//! connection's exporter as OPAQUE's context, under the same limiter as logins (an admitted
//! attempt counts as a failure unless it verifies, also when the client hangs up: the
//! [`PasswordAttempt`] travels inside the steps). Every failure is [`ChangeFailed`], which the
//! front answers like every other authentication failure. On success the record gets a new
//! generation, which ends every older connection and session of the user.

use std::net::SocketAddr;

use ferry_proto::auth::Principal;
use ferry_proto::message::{
    ErrorCode, OpaqueResponse, PasswordChangeProof, PasswordChangeStart, RegisterFinish,
};
use ferry_proto::password::{self, KsfParams, ServerLoginState, UserRecord};
use ferry_proto::secret::Exporter;

use std::collections::BTreeMap;

use super::authn::{PasswordAttempt, user_entry};
use super::{Core, Refusal};
use crate::Error;

/// A password change refused: answered `auth_failed`, and the connection ends.
#[derive(Debug)]
pub(crate) struct ChangeFailed;

/// After `password_change_start`: waiting for the proof of the current password.
pub(crate) struct ChangeProof<'a> {
    engine: &'a Core,
    name: String,
    peer: SocketAddr,
    generation: u64,
    attributes: BTreeMap<String, String>,
    record: Option<UserRecord>,
    attempt: Option<PasswordAttempt>,
    state: ServerLoginState,
    exporter: Exporter,
}

/// After the proof: waiting for the new record.
pub(crate) struct ChangeFinish<'a> {
    engine: &'a Core,
    name: String,
    peer: SocketAddr,
    generation: u64,
    attributes: BTreeMap<String, String>,
    ksf: KsfParams,
}

/// The first step's outcome: refused as a request (not a password login; the connection goes
/// on), failed (the connection ends), or the answer and the next step.
pub(crate) type ChangeStart<'a> =
    Result<Result<(OpaqueResponse, ChangeProof<'a>), ChangeFailed>, Refusal>;

impl Core {
    /// Starts a password change by `p` (a user who logged in with a password, directly or
    /// through a session) on the connection whose exporter is `exporter`.
    pub(crate) async fn password_change<'a>(
        &'a self,
        p: &Principal,
        exporter: &Exporter,
        peer: SocketAddr,
        req: PasswordChangeStart,
    ) -> Result<ChangeStart<'a>, Error> {
        let Some(generation) = self.password_generation(p).await? else {
            return Ok(Err(Refusal::new(
                ErrorCode::Forbidden,
                "only a user who logged in with a password can change it",
            )));
        };
        // Like a login: a locked user, or a record that changed since this connection's login
        // (it is refused at its next request anyway), gets a dummy record and fails alike.
        let now = crate::clock::now();
        let attempt = self.admit_password(&p.name, peer.ip(), now).await?;
        let found = self
            .accounts
            .user(&p.name)
            .await?
            .filter(|u| u.generation == generation);
        let ksf = found.as_ref().map_or(self.rules.get().new_ksf, |u| u.ksf);
        let record = found
            .as_ref()
            .filter(|_| attempt.is_some())
            .and_then(|u| u.user_record());
        let attributes = found.map(|u| u.attributes).unwrap_or_default();
        let started = password::server_login_start(
            &mut rand_core::OsRng,
            &self.opaque,
            &p.name,
            record.as_ref(),
            &req.request,
            exporter.expose_secret(),
        );
        let Ok((response, state)) = started else {
            tracing::warn!("{peer}: password change by {} refused (bad KE1)", p.name);
            return Ok(Ok(Err(ChangeFailed)));
        };
        Ok(Ok(Ok((
            OpaqueResponse { response, ksf },
            ChangeProof {
                engine: self,
                name: p.name.clone(),
                peer,
                generation,
                attributes,
                record,
                attempt,
                state,
                exporter: exporter.clone(),
            },
        ))))
    }
}

impl<'a> ChangeProof<'a> {
    /// The client did not send its proof (`what` it sent instead, or nothing): it saw that
    /// its current password was wrong. The guess counts now.
    pub(crate) async fn abandoned(self, what: &str) -> ChangeFailed {
        tracing::warn!(
            "{}: password change by {} refused ({what})",
            self.peer,
            self.name
        );
        if let Some(a) = self.attempt
            && let Err(e) = a.failed().await
        {
            tracing::error!("{}: cannot count a failed login: {e}", self.peer);
        }
        ChangeFailed
    }

    /// Checks the proof of the current password; answers the registration of the new one.
    pub(crate) async fn prove(
        self,
        proof: PasswordChangeProof,
    ) -> Result<Result<(OpaqueResponse, ChangeFinish<'a>), ChangeFailed>, Error> {
        let ChangeProof {
            engine,
            name,
            peer,
            generation,
            attributes,
            record,
            attempt,
            state,
            exporter,
        } = self;
        // Verify even for a dummy record, so every path costs the same.
        let proved =
            password::server_login_finish(state, &proof.finalization, exporter.expose_secret());
        if !(proved && record.is_some()) {
            tracing::warn!(
                "{peer}: password change by {name} refused (current password not proved)"
            );
            if let Some(a) = attempt {
                a.failed().await?;
            }
            return Ok(Err(ChangeFailed));
        }
        if let Some(a) = attempt {
            a.succeeded().await?;
        }
        let Ok(response) = password::server_register_start(&engine.opaque, &name, &proof.request)
        else {
            return Ok(Err(ChangeFailed));
        };
        let ksf = engine.rules.get().new_ksf;
        Ok(Ok((
            OpaqueResponse { response, ksf },
            ChangeFinish {
                engine,
                name,
                peer,
                generation,
                attributes,
                ksf,
            },
        )))
    }
}

impl ChangeFinish<'_> {
    /// Stores the new record, if the user's record is still the one the login proved.
    pub(crate) async fn finish(self, m: RegisterFinish) -> Result<Result<(), ChangeFailed>, Error> {
        let Ok(new_record) = password::server_register_finish(&m.upload, self.ksf) else {
            return Ok(Err(ChangeFailed));
        };
        let entry = user_entry(self.attributes, &new_record, crate::clock::now());
        let changed = self
            .engine
            .accounts
            .replace_user(&self.name, self.generation, entry)
            .await?;
        if changed.is_none() {
            tracing::warn!(
                "{}: password change by {} refused (record changed meanwhile)",
                self.peer,
                self.name
            );
            return Ok(Err(ChangeFailed));
        }
        tracing::info!(
            target: super::AUDIT,
            op = "passwd",
            principal = self.name.as_str(),
            outcome = "ok",
            "{}: {} changed their password",
            self.peer,
            self.name
        );
        Ok(Ok(()))
    }
}
