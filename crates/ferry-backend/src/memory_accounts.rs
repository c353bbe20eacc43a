//! [`Accounts`] for the in-memory backend: one mutex, so every method is atomic.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::accounts::{
    Accounts, ClientRecord, InviteEntry, LoginPolicy, LoginState, SessionEntry, UserEntry,
};
use crate::{BackendError, MemoryBackend, Result};

#[derive(Debug, Default)]
pub(crate) struct AccountState {
    clients: BTreeMap<String, ClientRecord>,
    users: BTreeMap<String, UserEntry>,
    last_generation: u64,
    invites: BTreeMap<String, InviteEntry>,
    sessions: HashMap<String, SessionEntry>,
    logins: HashMap<String, LoginState>,
}

fn lock(m: &Mutex<AccountState>) -> MutexGuard<'_, AccountState> {
    // Nothing panics while holding the lock, so a poisoned lock still guards whole updates.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl AccountState {
    fn next_generation(&mut self) -> Result<u64> {
        self.last_generation = self
            .last_generation
            .checked_add(1)
            .ok_or_else(|| BackendError::Corrupt("user generations are exhausted".into()))?;
        Ok(self.last_generation)
    }

    fn put_user(&mut self, name: &str, mut entry: UserEntry) -> Result<u64> {
        entry.generation = self.next_generation()?;
        let generation = entry.generation;
        self.users.insert(name.to_owned(), entry);
        Ok(generation)
    }
}

impl Accounts for MemoryBackend {
    async fn client(&self, name: &str) -> Result<Option<ClientRecord>> {
        Ok(lock(&self.accounts).clients.get(name).cloned())
    }

    async fn clients(&self) -> Result<Vec<(String, ClientRecord)>> {
        let state = lock(&self.accounts);
        Ok(state
            .clients
            .iter()
            .map(|(n, c)| (n.clone(), c.clone()))
            .collect())
    }

    async fn issue_client(
        &self,
        name: &str,
        attributes: BTreeMap<String, String>,
        now: u64,
    ) -> Result<ClientRecord> {
        let mut state = lock(&self.accounts);
        let epoch = match state.clients.get(name) {
            None => 1,
            Some(old) => old
                .epoch
                .checked_add(1)
                .ok_or_else(|| BackendError::Corrupt(format!("epoch of {name:?} is exhausted")))?,
        };
        let record = ClientRecord {
            epoch,
            attributes,
            issued: now,
            revoked: false,
        };
        state.clients.insert(name.to_owned(), record.clone());
        Ok(record)
    }

    async fn revoke_client(&self, name: &str) -> Result<bool> {
        let mut state = lock(&self.accounts);
        Ok(match state.clients.get_mut(name) {
            Some(c) if !c.revoked => {
                c.revoked = true;
                true
            }
            _ => false,
        })
    }

    async fn user(&self, name: &str) -> Result<Option<UserEntry>> {
        Ok(lock(&self.accounts).users.get(name).cloned())
    }

    async fn users(&self) -> Result<Vec<(String, UserEntry)>> {
        let state = lock(&self.accounts);
        Ok(state
            .users
            .iter()
            .map(|(n, u)| (n.clone(), u.clone()))
            .collect())
    }

    async fn put_user(&self, name: &str, entry: UserEntry) -> Result<u64> {
        lock(&self.accounts).put_user(name, entry)
    }

    async fn remove_user(&self, name: &str) -> Result<bool> {
        Ok(lock(&self.accounts).users.remove(name).is_some())
    }

    async fn invite(&self, name: &str) -> Result<Option<InviteEntry>> {
        Ok(lock(&self.accounts).invites.get(name).cloned())
    }

    async fn create_invite(
        &self,
        name: &str,
        attributes: BTreeMap<String, String>,
        expires: u64,
    ) -> Result<InviteEntry> {
        let mut state = lock(&self.accounts);
        let serial = match state.invites.get(name) {
            None => 1,
            Some(old) => old.serial.checked_add(1).ok_or_else(|| {
                BackendError::Corrupt(format!("invite serial of {name:?} is exhausted"))
            })?,
        };
        let invite = InviteEntry {
            serial,
            attributes,
            expires,
            spent: false,
        };
        state.invites.insert(name.to_owned(), invite.clone());
        Ok(invite)
    }

    async fn register_with_invite(
        &self,
        name: &str,
        serial: u64,
        entry: UserEntry,
        now: u64,
    ) -> Result<Option<u64>> {
        let mut state = lock(&self.accounts);
        match state.invites.get(name) {
            Some(i) if i.serial == serial && !i.spent && now < i.expires => {}
            _ => return Ok(None),
        }
        let generation = state.put_user(name, entry)?;
        if let Some(invite) = state.invites.get_mut(name) {
            invite.spent = true;
        }
        Ok(Some(generation))
    }

    async fn session(&self, id: &str) -> Result<Option<SessionEntry>> {
        Ok(lock(&self.accounts).sessions.get(id).cloned())
    }

    async fn put_session(&self, id: &str, entry: SessionEntry) -> Result<()> {
        lock(&self.accounts).sessions.insert(id.to_owned(), entry);
        Ok(())
    }

    async fn touch_session(&self, id: &str, now: u64) -> Result<Option<SessionEntry>> {
        let mut state = lock(&self.accounts);
        Ok(match state.sessions.get_mut(id) {
            Some(s) if s.live(now) => {
                s.last_used = now;
                Some(s.clone())
            }
            _ => None,
        })
    }

    async fn remove_session(&self, id: &str) -> Result<bool> {
        Ok(lock(&self.accounts).sessions.remove(id).is_some())
    }

    async fn remove_sessions_of(&self, name: &str) -> Result<u64> {
        let mut state = lock(&self.accounts);
        let before = state.sessions.len();
        state.sessions.retain(|_, s| s.name != name);
        Ok((before - state.sessions.len()) as u64)
    }

    async fn sweep_sessions(&self, now: u64) -> Result<u64> {
        let mut state = lock(&self.accounts);
        let before = state.sessions.len();
        state.sessions.retain(|_, s| s.live(now));
        Ok((before - state.sessions.len()) as u64)
    }

    async fn login_state(&self, key: &str) -> Result<LoginState> {
        Ok(lock(&self.accounts)
            .logins
            .get(key)
            .copied()
            .unwrap_or_default())
    }

    async fn login_failed(&self, key: &str, now: u64, policy: &LoginPolicy) -> Result<LoginState> {
        let mut state = lock(&self.accounts);
        let entry = state.logins.entry(key.to_owned()).or_default();
        *entry = entry.after_failure(now, policy);
        Ok(*entry)
    }

    async fn login_succeeded(&self, key: &str) -> Result<()> {
        lock(&self.accounts).logins.remove(key);
        Ok(())
    }
}
