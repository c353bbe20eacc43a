//! Authentication's questions answered from the engine's state: the context the sans-IO
//! exchanges of `ferry_proto::auth` ask (registry, users, invites, sessions, limiter), the
//! drop guard that counts every evaluated password guess, and what an exchange's outcome
//! writes (the session it opens or resumes, the user an invite registers, a logout). The
//! mesh's members and keys answer a member's `mesh_auth` through the same context.

use std::net::IpAddr;
use std::sync::Arc;

use ferry_proto::auth::{
    KnownUser, MeshDirectory, Method, NewSession, Principal, ServerContext, StoredSession,
};
use ferry_proto::claims::Claims;
use ferry_proto::password::UserRecord;
use ferry_proto::password::{KsfParams, OpaqueKeys};
use ferry_proto::secret::{MasterKey, MeshKey};
use ferry_proto::server_id::ServerId;
use ferry_proto::session::SessionId;

use super::{Core, blocking};
use crate::Error;
use crate::accounts::{Invites, SessionEntry, Sessions, Users, session_id_text};
use crate::mesh::files::MeshFile;
use crate::registry::Registry;

pub(crate) struct AuthCtx<'a> {
    pub(super) engine: &'a Core,
    pub(super) registry: Arc<Registry>,
    pub(super) users: Arc<Users>,
    invites: Arc<Invites>,
    sessions: Arc<Sessions>,
    /// The mesh this server is in, if any.
    mesh: Option<Directory>,
    ip: IpAddr,
    now: u64,
    /// The user whose password attempt this step admitted for evaluation, if any.
    pub(crate) admitted: std::sync::Mutex<Option<String>>,
}

/// A password attempt evaluated against a real record: it counts as a failure when dropped,
/// unless it succeeded. So a guess counts whether the client sends its finish or hangs up
/// after KE2 (from which an OPAQUE client already knows whether its guess was right), and
/// every attempt evaluated side by side counts, not only those finishing before a lock.
/// Logins and the proof of the current password in a password change both use it.
pub(crate) struct PasswordAttempt<'a> {
    limiter: &'a crate::limiter::Limiter,
    user: String,
    ip: IpAddr,
    now: u64,
    succeeded: bool,
}

impl<'a> PasswordAttempt<'a> {
    /// An attempt for `user` the limiter admitted; a failure unless [`Self::succeeded`].
    pub(crate) fn new(
        limiter: &'a crate::limiter::Limiter,
        user: String,
        ip: IpAddr,
        now: u64,
    ) -> Self {
        Self {
            limiter,
            user,
            ip,
            now,
            succeeded: false,
        }
    }

    /// The password was right: count a success when dropped.
    pub(crate) fn succeeded(&mut self) {
        self.succeeded = true;
    }
}

impl Drop for PasswordAttempt<'_> {
    fn drop(&mut self) {
        if self.succeeded {
            self.limiter.success(&self.user);
        } else {
            self.limiter.failure(&self.user, self.ip, self.now);
        }
    }
}

impl<'a> AuthCtx<'a> {
    pub(crate) fn new(engine: &'a Core, ip: IpAddr, now: u64) -> Self {
        Self {
            engine,
            registry: engine.registry.current(),
            users: engine.users.current(),
            invites: engine.invites.current(),
            sessions: engine.sessions.current(),
            mesh: Directory::current(engine),
            ip,
            now,
            admitted: std::sync::Mutex::new(None),
        }
    }

    pub(crate) fn live_session(&self, id: &SessionId) -> Option<StoredSession> {
        let entry = self.sessions.sessions.get(&session_id_text(id))?;
        if !entry.live(self.now) {
            return None;
        }
        let principal = entry.principal()?;
        // A session lives only as long as what opened it.
        if !self.valid(&principal) {
            return None;
        }
        Some(StoredSession {
            secret: entry.secret.clone(),
            principal,
        })
    }
}

/// The mesh's members and keys, as a member's `mesh_auth` is checked against them.
struct Directory {
    me: ServerId,
    /// Holds a mesh (`Directory::current` checks).
    file: Arc<MeshFile>,
}

impl Directory {
    fn current(engine: &Core) -> Option<Self> {
        let file = engine.mesh.state.current();
        file.0.as_ref()?;
        Some(Self {
            me: engine.mesh.device.id(),
            file,
        })
    }
}

impl MeshDirectory for Directory {
    fn me(&self) -> ServerId {
        self.me
    }
    fn member_spki(&self, device: &ServerId) -> Option<Vec<u8>> {
        let state = self.file.0.as_ref()?;
        state.members.get(device).map(|m| m.spki.clone())
    }
    fn key_for(&self, epoch: u64) -> Option<MeshKey> {
        self.file.0.as_ref()?.key_for(epoch).cloned()
    }
    fn epoch(&self) -> u64 {
        self.file.0.as_ref().map_or(0, |s| s.epoch)
    }
    fn verify_signature(&self, spki: &[u8], message: &[u8], signature: &[u8]) -> bool {
        crate::mesh::device::verify(spki, message, signature)
    }
}

impl ServerContext for AuthCtx<'_> {
    fn master_key(&self) -> &MasterKey {
        &self.engine.master
    }

    fn claims_current(&self, claims: &Claims) -> bool {
        self.registry.is_current(claims.name(), claims.epoch())
    }

    fn invite_current(&self, claims: &Claims) -> bool {
        self.invites
            .invites
            .get(claims.name())
            .is_some_and(|i| !i.spent && i.serial == claims.epoch())
    }

    fn opaque_keys(&self) -> Option<&OpaqueKeys> {
        Some(&self.engine.opaque)
    }

    fn user(&self, name: &str) -> Option<KnownUser> {
        let u = self.users.users.get(name)?;
        Some(KnownUser {
            record: u.user_record()?,
            attributes: u.attributes.clone(),
            generation: u.generation,
        })
    }

    fn login_allowed(&self, name: &str) -> bool {
        let allowed = self.engine.limiter.allowed(name, self.ip, self.now);
        if allowed && let Ok(mut admitted) = self.admitted.lock() {
            *admitted = Some(name.to_owned());
        }
        allowed
    }

    fn new_record_ksf(&self) -> KsfParams {
        self.engine.new_ksf
    }

    fn session(&self, id: &SessionId) -> Option<StoredSession> {
        self.live_session(id)
    }

    fn session_lifetimes(&self) -> (u64, u64) {
        (
            self.engine.session_limits.idle_secs,
            self.engine.session_limits.max_secs,
        )
    }

    fn mesh(&self) -> Option<&dyn MeshDirectory> {
        self.mesh.as_ref().map(|d| d as &dyn MeshDirectory)
    }
}

impl Core {
    /// Records an accepted authentication: stores the session it opens, or marks the resumed
    /// one used. Returns the session the connection belongs to.
    pub(crate) async fn accepted(
        &self,
        principal: &Principal,
        session: Option<NewSession>,
        now: u64,
    ) -> Result<Option<SessionId>, Error> {
        let mut session_id = None;
        if let Some(s) = session
            && let Some(origin) = SessionEntry::origin_of(&principal.method)
        {
            let entry = SessionEntry {
                name: principal.name.clone(),
                attributes: principal.attributes.clone(),
                origin,
                secret: s.secret,
                created: now,
                last_used: now,
                idle_secs: s.idle_secs,
                expires: s.expires,
            };
            let dir = self.dir.clone();
            let id = s.id;
            blocking(move || dir.add_session(&id, entry, now)).await?;
            session_id = Some(s.id);
        }
        if let Method::Session { id } = principal.method {
            let dir = self.dir.clone();
            blocking(move || dir.touch_session(&id, now)).await?;
            session_id = Some(id);
        }
        Ok(session_id)
    }

    /// Registers the user an invite names with its new record; `false` if another
    /// registration spent the invite first.
    pub(crate) async fn register(
        &self,
        invite: Claims,
        record: UserRecord,
        now: u64,
    ) -> Result<bool, Error> {
        let dir = self.dir.clone();
        blocking(move || dir.register_user(&invite, &record, now)).await
    }

    /// Ends a session (logout).
    pub(crate) async fn end_session(&self, id: SessionId) -> Result<(), Error> {
        let dir = self.dir.clone();
        blocking(move || dir.revoke_session(&session_id_text(&id)).map(|_| ())).await
    }
}
