//! Authorization in one place: whether a principal may do an operation, and whether a
//! principal authenticated earlier may still act.
//!
//! Every handler asks here and nowhere else: the roles of `ferry.toml` (through
//! [`Policy`](crate::policy::Policy)), the mesh rule (members read everything and write
//! nothing; each peer's own clients write), who may sync the mesh's state, who may change a
//! password, and the still-valid check run before every request (revoked, re-issued, removed,
//! password changed, session ended, mesh member removed).

use ferry_proto::auth::{Method, Principal};
use ferry_proto::message::ErrorCode;
use ferry_proto::names::SourceName;

use ferry_proto::files::session_id_text;

use super::{Core, Refusal};
use crate::Error;
use crate::policy::Op;

impl Core {
    /// Whether the principal may do `op` on `source`. Mesh members read everything and write
    /// nothing (each peer's own clients write); everyone else as `ferry.toml`'s roles say.
    pub(crate) fn allows(&self, p: &Principal, op: Op, source: &str) -> bool {
        match p.method {
            Method::Mesh { .. } => matches!(op, Op::Get | Op::Stat | Op::List),
            _ => self
                .rules
                .get()
                .policy
                .allows(p.role(), &p.name, op, source),
        }
    }

    /// Checks the name and the principal's right to do `op` on it.
    pub(crate) fn authorize(
        &self,
        p: &Principal,
        op: Op,
        source: &str,
    ) -> Result<SourceName, Refusal> {
        let name = SourceName::parse(source)
            .map_err(|e| Refusal::new(ErrorCode::BadRequest, e.to_string()))?;
        if !self.allows(p, op, name.as_str()) {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                format!(
                    "role '{}' may not {} '{}'",
                    p.role().unwrap_or("-"),
                    op.as_str(),
                    name
                ),
            ));
        }
        Ok(name)
    }

    /// Whether the principal may read the mesh's state and its listing of heads: members only.
    pub(crate) fn may_sync_mesh(&self, p: &Principal) -> bool {
        matches!(p.method, Method::Mesh { .. })
    }

    /// The generation of the user's record that the principal's password login proved
    /// (directly, or through a session a password login opened): who may change a password,
    /// and against which record. `None` for any other principal.
    pub(crate) async fn password_generation(&self, p: &Principal) -> Result<Option<u64>, Error> {
        let method = match &p.method {
            Method::Session { id } => {
                let entry = self.accounts.session(&session_id_text(id)).await?;
                match entry.and_then(|e| e.origin_method()) {
                    Some(m) => m,
                    None => return Ok(None),
                }
            }
            m => m.clone(),
        };
        Ok(match method {
            Method::Password { generation } => Some(generation),
            _ => None,
        })
    }

    /// Whether a principal authenticated earlier may still act (not revoked, not re-issued,
    /// user not removed, its record not changed since the login, session not ended, mesh
    /// member not removed).
    ///
    /// Runs before every request, so it reads only the record the principal depends on: a
    /// credential its client, a password login its user.
    pub(crate) async fn still_valid(&self, p: &Principal) -> Result<bool, Error> {
        match &p.method {
            Method::Session { id } => {
                Ok(self.live_session(id, crate::clock::now()).await?.is_some())
            }
            Method::Mesh { device, epoch } => Ok(self.mesh.still_valid(device, *epoch)),
            _ => self.origin_valid(p).await,
        }
    }
}

/// A place among the principal's transfers in progress, held while a put or a get moves its
/// content.
pub(crate) type TransferSlot = crate::tally::Held<String>;

impl Core {
    /// A transfer place for `p`, or `busy` if it already has `max_transfers_per_principal`
    /// in progress. Clients and users count apart (they have separate names).
    pub(crate) fn transfer_slot(&self, p: &Principal) -> Result<TransferSlot, Refusal> {
        let kind = match p.method {
            Method::Psk { .. } => "client",
            Method::Mesh { .. } => "mesh",
            _ => "user",
        };
        let max = self.rules.get().limits.max_transfers_per_principal;
        self.transfers
            .take(&format!("{kind}:{}", p.name), max)
            .ok_or_else(|| {
                Refusal::new(
                    ErrorCode::Busy,
                    format!(
                        "{} already has {max} transfers in progress, the most this server \
                         allows at once (max_transfers_per_principal); try again when one ends",
                        p.name
                    ),
                )
            })
    }
}
