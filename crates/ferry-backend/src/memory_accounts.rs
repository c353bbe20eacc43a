//! [`Accounts`] for the in-memory backend: the [`rules`] applied under one mutex, so every
//! method is atomic.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use ferry_proto::files::{Invites, Registry, Sessions, Users};

use crate::accounts::{
    Accounts, ClientRecord, InviteEntry, LoginPolicy, LoginState, LoginTable, SessionEntry,
    UserEntry, rules,
};
use crate::{MemoryBackend, Result};

#[derive(Debug, Default)]
pub(crate) struct AccountState {
    clients: Registry,
    users: Users,
    invites: Invites,
    sessions: Sessions,
    logins: LoginTable,
}

fn lock(m: &Mutex<AccountState>) -> MutexGuard<'_, AccountState> {
    // Nothing panics while holding the lock, so a poisoned lock still guards whole updates.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryBackend {
    fn state(&self) -> MutexGuard<'_, AccountState> {
        lock(&self.accounts)
    }
}

impl Accounts for MemoryBackend {
    async fn client(&self, name: &str) -> Result<Option<ClientRecord>> {
        Ok(self.state().clients.clients.get(name).cloned())
    }

    async fn clients(&self) -> Result<Vec<(String, ClientRecord)>> {
        Ok(self.state().clients.clients.clone().into_iter().collect())
    }

    async fn issue_client(
        &self,
        name: &str,
        attributes: BTreeMap<String, String>,
        now: u64,
    ) -> Result<ClientRecord> {
        rules::issue_client(&mut self.state().clients, name, attributes, now)
    }

    async fn revoke_client(&self, name: &str) -> Result<bool> {
        Ok(rules::revoke_client(&mut self.state().clients, name))
    }

    async fn user(&self, name: &str) -> Result<Option<UserEntry>> {
        Ok(self.state().users.users.get(name).cloned())
    }

    async fn users(&self) -> Result<Vec<(String, UserEntry)>> {
        Ok(self.state().users.users.clone().into_iter().collect())
    }

    async fn put_user(&self, name: &str, entry: UserEntry) -> Result<u64> {
        Ok(rules::put_user(&mut self.state().users, name, entry))
    }

    async fn replace_user(
        &self,
        name: &str,
        generation: u64,
        entry: UserEntry,
    ) -> Result<Option<u64>> {
        let s = &mut *self.state();
        Ok(rules::replace_user(
            &mut s.users,
            &mut s.sessions,
            name,
            generation,
            entry,
        ))
    }

    async fn remove_user(&self, name: &str) -> Result<bool> {
        let s = &mut *self.state();
        Ok(rules::remove_user(
            &mut s.users,
            &mut s.invites,
            &mut s.sessions,
            name,
        ))
    }

    async fn invite(&self, name: &str) -> Result<Option<InviteEntry>> {
        Ok(self.state().invites.invites.get(name).cloned())
    }

    async fn invites(&self) -> Result<Vec<(String, InviteEntry)>> {
        Ok(self.state().invites.invites.clone().into_iter().collect())
    }

    async fn create_invite(
        &self,
        name: &str,
        attributes: BTreeMap<String, String>,
        expires: u64,
    ) -> Result<InviteEntry> {
        let s = &mut *self.state();
        rules::create_invite(
            &mut s.invites,
            &mut s.users,
            &mut s.sessions,
            name,
            attributes,
            expires,
        )
    }

    async fn register_with_invite(
        &self,
        name: &str,
        serial: u64,
        entry: UserEntry,
        now: u64,
    ) -> Result<Option<u64>> {
        let s = &mut *self.state();
        Ok(rules::register_with_invite(
            &mut s.invites,
            &mut s.users,
            &mut s.sessions,
            name,
            serial,
            entry,
            now,
        ))
    }

    async fn session(&self, id: &str) -> Result<Option<SessionEntry>> {
        Ok(self.state().sessions.sessions.get(id).cloned())
    }

    async fn sessions(&self) -> Result<Vec<(String, SessionEntry)>> {
        Ok(self.state().sessions.sessions.clone().into_iter().collect())
    }

    async fn put_session(&self, id: &str, entry: SessionEntry, now: u64) -> Result<()> {
        rules::put_session(&mut self.state().sessions, id, entry, now);
        Ok(())
    }

    async fn touch_session(&self, id: &str, now: u64) -> Result<Option<SessionEntry>> {
        Ok(rules::touch_session(&mut self.state().sessions, id, now))
    }

    async fn remove_session(&self, id: &str) -> Result<bool> {
        Ok(self.state().sessions.sessions.remove(id).is_some())
    }

    async fn remove_sessions_of(&self, name: &str) -> Result<u64> {
        Ok(rules::remove_sessions_of(&mut self.state().sessions, name))
    }

    async fn sweep_sessions(&self, now: u64) -> Result<u64> {
        Ok(rules::sweep_sessions(&mut self.state().sessions, now))
    }

    async fn login_state(&self, key: &str) -> Result<LoginState> {
        Ok(self.state().logins.state(key))
    }

    async fn login_failed(&self, key: &str, now: u64, policy: &LoginPolicy) -> Result<LoginState> {
        Ok(self.state().logins.failed(key, now, policy))
    }

    async fn login_succeeded(&self, key: &str) -> Result<()> {
        self.state().logins.succeeded(key);
        Ok(())
    }
}
