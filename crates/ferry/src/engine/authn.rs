//! Authentication's questions answered from the account data: the context the sans-IO
//! exchanges of `ferry_proto::auth` ask (clients, users, invites, sessions, failed logins),
//! fetched from the [`Accounts`](ferry_backend::Accounts) backend before each step
//! ([`AuthCtx::fetch`] of what [`ServerAuth::wants`](ferry_proto::auth::ServerAuth::wants)),
//! the [`PasswordAttempt`] that counts every evaluated password guess, and what an
//! exchange's outcome writes (the session it opens or resumes, the user an invite
//! registers, a logout). The mesh's members and keys answer a member's `mesh_auth` through
//! the same context.

use std::net::IpAddr;
use std::sync::Arc;

use ferry_backend::accounts::{
    ClientRecord, DynAccounts, InviteEntry, LoginPolicy, SessionEntry, UserEntry,
};
use ferry_proto::auth::{
    KnownUser, MeshDirectory, Method, NewSession, Principal, ServerContext, StoredSession, Wanted,
};
use ferry_proto::claims::Claims;
use ferry_proto::files::session_id_text;
use ferry_proto::password::{KsfParams, OpaqueKeys, UserRecord};
use ferry_proto::secret::{MasterKey, MeshKey};
use ferry_proto::server_id::ServerId;
use ferry_proto::session::SessionId;

use super::Core;
use crate::Error;
use crate::mesh::files::MeshFile;

/// What one authentication step may ask, fetched before it runs.
pub(crate) struct AuthCtx<'a> {
    engine: &'a Core,
    client: Option<(String, ClientRecord)>,
    /// The user, and whether a login attempt for it may be evaluated now.
    user: Option<(String, Option<UserEntry>, bool)>,
    invite: Option<(String, InviteEntry)>,
    session: Option<(SessionId, StoredSession)>,
    /// The mesh this server is in, if any.
    mesh: Option<Directory>,
}

/// The failed-login key of an account.
fn account_key(user: &str) -> String {
    format!("account:{user}")
}

/// The failed-login key of a source address.
fn address_key(ip: IpAddr) -> String {
    format!("address:{ip}")
}

/// A password attempt evaluated against a real record: it counts as a failure unless it
/// [succeeded](Self::succeeded), also when the exchange ends without a verdict (the client
/// hangs up after KE2, from which an OPAQUE client already knows whether its guess was
/// right: then the count happens as it is dropped). So every attempt evaluated side by side
/// counts, not only those finishing before a lock. Logins and the proof of the current
/// password in a password change both use it.
pub(crate) struct PasswordAttempt {
    accounts: Arc<dyn DynAccounts>,
    policy: LoginPolicy,
    user: String,
    ip: IpAddr,
    now: u64,
    settled: bool,
}

impl PasswordAttempt {
    fn new(core: &Core, user: String, ip: IpAddr, now: u64) -> Self {
        Self {
            accounts: core.accounts.clone(),
            policy: core.rules.get().login,
            user,
            ip,
            now,
            settled: false,
        }
    }

    /// The password was right: the account's count starts again.
    pub(crate) async fn succeeded(mut self) -> Result<(), Error> {
        self.settled = true;
        Ok(self
            .accounts
            .login_succeeded(&account_key(&self.user))
            .await?)
    }

    /// The password was wrong: counts a failure of the account and of the address.
    pub(crate) async fn failed(mut self) -> Result<(), Error> {
        self.settled = true;
        count_failure(&*self.accounts, &self.policy, &self.user, self.ip, self.now).await
    }
}

async fn count_failure(
    accounts: &dyn DynAccounts,
    policy: &LoginPolicy,
    user: &str,
    ip: IpAddr,
    now: u64,
) -> Result<(), Error> {
    accounts
        .login_failed(&account_key(user), now, policy)
        .await?;
    accounts.login_failed(&address_key(ip), now, policy).await?;
    Ok(())
}

impl Drop for PasswordAttempt {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (accounts, policy, user) = (self.accounts.clone(), self.policy, self.user.clone());
        let (ip, now) = (self.ip, self.now);
        runtime.spawn(async move {
            if let Err(e) = count_failure(&*accounts, &policy, &user, ip, now).await {
                tracing::error!("counting a failed login of {user}: {e}");
            }
        });
    }
}

impl Core {
    /// Whether a password attempt for `user` from `ip` may be evaluated at `now`: neither
    /// the account nor the address is locked. If so, the attempt that counts it.
    pub(crate) async fn admit_password(
        &self,
        user: &str,
        ip: IpAddr,
        now: u64,
    ) -> Result<Option<PasswordAttempt>, Error> {
        let account = self.accounts.login_state(&account_key(user)).await?;
        let address = self.accounts.login_state(&address_key(ip)).await?;
        Ok((account.unlocked(now) && address.unlocked(now))
            .then(|| PasswordAttempt::new(self, user.to_owned(), ip, now)))
    }

    /// The session `id` if it is live at `now` and what opened it may still act.
    pub(crate) async fn live_session(
        &self,
        id: &SessionId,
        now: u64,
    ) -> Result<Option<StoredSession>, Error> {
        let Some(entry) = self.accounts.session(&session_id_text(id)).await? else {
            return Ok(None);
        };
        if !entry.live(now) {
            return Ok(None);
        }
        let Some(principal) = entry.principal() else {
            return Ok(None);
        };
        // A session lives only as long as what opened it.
        if !self.origin_valid(&principal).await? {
            return Ok(None);
        }
        Ok(Some(StoredSession {
            secret: entry.secret.clone(),
            principal,
        }))
    }

    /// Whether a credential or password login may (still) act: its client current, its
    /// user's record still of the generation it proved.
    pub(crate) async fn origin_valid(&self, p: &Principal) -> Result<bool, Error> {
        Ok(match &p.method {
            Method::Psk { epoch } => self
                .accounts
                .client(&p.name)
                .await?
                .is_some_and(|c| !c.revoked && c.epoch == *epoch),
            Method::Password { generation } => self
                .accounts
                .user(&p.name)
                .await?
                .is_some_and(|u| u.generation == *generation),
            _ => false,
        })
    }
}

impl<'a> AuthCtx<'a> {
    /// Fetches what a step that `wants` this may ask, for a peer at `ip`, at `now`. The
    /// password attempt a user's step admits is returned beside it.
    pub(crate) async fn fetch(
        engine: &'a Core,
        wanted: Wanted,
        ip: IpAddr,
        now: u64,
    ) -> Result<(Self, Option<PasswordAttempt>), Error> {
        let mut ctx = Self {
            engine,
            client: None,
            user: None,
            invite: None,
            session: None,
            mesh: Directory::current(engine),
        };
        let mut attempt = None;
        match wanted {
            Wanted::Client(name) => {
                ctx.client = engine.accounts.client(&name).await?.map(|c| (name, c));
            }
            Wanted::User(name) => {
                attempt = engine.admit_password(&name, ip, now).await?;
                let entry = engine.accounts.user(&name).await?;
                ctx.user = Some((name, entry, attempt.is_some()));
            }
            Wanted::Invite(name) => {
                ctx.invite = engine.accounts.invite(&name).await?.map(|i| (name, i));
            }
            Wanted::Session(id) => {
                ctx.session = engine.live_session(&id, now).await?.map(|s| (id, s));
            }
            _ => {}
        }
        Ok((ctx, attempt))
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
        self.client.as_ref().is_some_and(|(name, c)| {
            name == claims.name() && !c.revoked && c.epoch == claims.epoch()
        })
    }

    fn invite_current(&self, claims: &Claims) -> bool {
        self.invite.as_ref().is_some_and(|(name, i)| {
            name == claims.name() && !i.spent && i.serial == claims.epoch()
        })
    }

    fn opaque_keys(&self) -> Option<&OpaqueKeys> {
        Some(&self.engine.opaque)
    }

    fn user(&self, name: &str) -> Option<KnownUser> {
        let (fetched, entry, _) = self.user.as_ref()?;
        let u = entry.as_ref().filter(|_| fetched == name)?;
        Some(KnownUser {
            record: u.user_record()?,
            attributes: u.attributes.clone(),
            generation: u.generation,
        })
    }

    fn login_allowed(&self, name: &str) -> bool {
        self.user
            .as_ref()
            .is_some_and(|(fetched, _, admitted)| *admitted && fetched == name)
    }

    fn new_record_ksf(&self) -> KsfParams {
        self.engine.rules.get().new_ksf
    }

    fn session(&self, id: &SessionId) -> Option<StoredSession> {
        let (fetched, s) = self.session.as_ref()?;
        (fetched == id).then(|| s.clone())
    }

    fn session_lifetimes(&self) -> (u64, u64) {
        let rules = self.engine.rules.get();
        (rules.sessions.idle_secs, rules.sessions.max_secs)
    }

    fn mesh(&self) -> Option<&dyn MeshDirectory> {
        self.mesh.as_ref().map(|d| d as &dyn MeshDirectory)
    }
}

/// A user's stored entry for a new OPAQUE `record` made at `now`.
pub(crate) fn user_entry(
    attributes: std::collections::BTreeMap<String, String>,
    record: &UserRecord,
    now: u64,
) -> UserEntry {
    UserEntry {
        attributes,
        record: data_encoding::BASE64.encode(&record.record),
        ksf: record.ksf,
        created: now,
        // The backend gives the generation.
        generation: 0,
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
            self.accounts
                .put_session(&session_id_text(&s.id), entry, now)
                .await?;
            session_id = Some(s.id);
        }
        if let Method::Session { id } = principal.method {
            self.accounts
                .touch_session(&session_id_text(&id), now)
                .await?;
            session_id = Some(id);
        }
        Ok(session_id)
    }

    /// Registers the user an invite names with its new record; `false` if another
    /// registration spent the invite first (or it was replaced meanwhile).
    pub(crate) async fn register(
        &self,
        invite: Claims,
        record: UserRecord,
        now: u64,
    ) -> Result<bool, Error> {
        // The serial is checked again as the invite is spent, so these attributes are the
        // ones of the invite the registration spends.
        let Some(entry) = self.accounts.invite(invite.name()).await? else {
            return Ok(false);
        };
        let user = user_entry(entry.attributes, &record, now);
        let registered = self
            .accounts
            .register_with_invite(invite.name(), invite.epoch(), user, now)
            .await?;
        Ok(registered.is_some())
    }

    /// Ends a session (logout).
    pub(crate) async fn end_session(&self, id: SessionId) -> Result<(), Error> {
        self.accounts.remove_session(&session_id_text(&id)).await?;
        Ok(())
    }
}
