//! [`LocalAccounts`]: the account data of a server folder (`clients.toml`, `users.toml`,
//! `invites.toml`, `sessions.toml`) behind the [`Accounts`] trait.
//!
//! Every change takes `clients.lock` (the lock `ferry client` and `ferry user` take), reads
//! the file, changes it and writes it whole and atomically (mode 0600), so a step is atomic
//! against other processes on the same folder too. Failed-login counters live in memory, as
//! the server's limiter always kept them: a restart forgets them, and two processes on one
//! folder count apart (a shared backend, #17, shares them). Calls run on tokio's blocking
//! pool.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use ferry_backend::accounts::{
    Accounts, ClientRecord, InviteEntry, LoginPolicy, LoginState, SessionEntry, UserEntry,
};
use ferry_backend::{BackendError, Result};

use crate::Error;
use crate::accounts::{FileIo, Invites, Sessions, Users};
use crate::live::Loadable;
use crate::registry::{Registry, RegistryLock};

const CLIENTS: &str = "clients.toml";
const USERS: &str = "users.toml";
const INVITES: &str = "invites.toml";
const SESSIONS: &str = "sessions.toml";

/// The account files of a server folder as an [`Accounts`] backend. Cheap to clone: clones
/// share the login counters.
#[derive(Clone, Debug)]
pub struct LocalAccounts {
    dir: PathBuf,
    logins: Arc<Mutex<HashMap<String, LoginState>>>,
}

impl LocalAccounts {
    /// The account files in the server folder `dir` (missing files read as empty).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            logins: Arc::default(),
        }
    }

    /// Runs `f` on the blocking pool with the folder's path.
    async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Path) -> Result<T, Error> + Send + 'static,
    {
        let dir = self.dir.clone();
        match tokio::task::spawn_blocking(move || f(&dir)).await {
            Ok(r) => r.map_err(to_backend),
            Err(join) => Err(BackendError::Other(Box::new(join))),
        }
    }

    /// Runs `f` under `clients.lock` on the blocking pool.
    async fn locked<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Path) -> Result<T, Error> + Send + 'static,
    {
        self.run(move |dir| {
            let _lock = RegistryLock::acquire(dir)?;
            f(dir)
        })
        .await
    }

    fn logins(&self) -> std::sync::MutexGuard<'_, HashMap<String, LoginState>> {
        // Every update is one statement: a poisoned lock still guards whole values.
        self.logins.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn to_backend(e: Error) -> BackendError {
    match e {
        Error::Io(io) => BackendError::Io(io),
        Error::Backend(b) => b,
        // A file that does not parse: its message names the file, never its contents.
        Error::Config(m) | Error::Internal(m) => BackendError::Corrupt(m),
        other => BackendError::Other(Box::new(other)),
    }
}

fn load<T: Loadable>(dir: &Path, name: &str) -> Result<T, Error> {
    T::load(&dir.join(name))
}

fn save<T: FileIo>(dir: &Path, name: &str, value: &T) -> Result<(), Error> {
    value.save(&dir.join(name))
}

fn next(n: u64, what: &str) -> Result<u64, Error> {
    n.checked_add(1)
        .ok_or_else(|| Error::Backend(BackendError::Corrupt(format!("{what} is exhausted"))))
}

/// Issues (or re-issues, with the next epoch) `name` in the folder `dir`, under its lock.
pub(crate) fn issue_client(
    dir: &Path,
    name: &str,
    attributes: BTreeMap<String, String>,
    now: u64,
) -> Result<ClientRecord, Error> {
    let _lock = RegistryLock::acquire(dir)?;
    let mut reg: Registry = load(dir, CLIENTS)?;
    let epoch = match reg.clients.get(name) {
        None => 1,
        Some(old) => next(old.epoch, "the client's epoch")?,
    };
    let record = ClientRecord {
        epoch,
        attributes,
        issued: now,
        revoked: false,
    };
    reg.clients.insert(name.to_owned(), record.clone());
    save(dir, CLIENTS, &reg)?;
    Ok(record)
}

/// Gives `entry` a new generation and stores it as `name`'s record.
fn put_user(users: &mut Users, name: &str, mut entry: UserEntry) -> u64 {
    entry.generation = users.next_generation();
    let generation = entry.generation;
    users.users.insert(name.to_owned(), entry);
    generation
}

impl Accounts for LocalAccounts {
    async fn client(&self, name: &str) -> Result<Option<ClientRecord>> {
        let name = name.to_owned();
        self.run(move |d| Ok(load::<Registry>(d, CLIENTS)?.clients.remove(&name)))
            .await
    }

    async fn clients(&self) -> Result<Vec<(String, ClientRecord)>> {
        self.run(|d| Ok(load::<Registry>(d, CLIENTS)?.clients.into_iter().collect()))
            .await
    }

    async fn issue_client(
        &self,
        name: &str,
        attributes: BTreeMap<String, String>,
        now: u64,
    ) -> Result<ClientRecord> {
        let name = name.to_owned();
        self.run(move |d| issue_client(d, &name, attributes, now))
            .await
    }

    async fn revoke_client(&self, name: &str) -> Result<bool> {
        let name = name.to_owned();
        self.locked(move |d| {
            let mut reg: Registry = load(d, CLIENTS)?;
            match reg.clients.get_mut(&name) {
                Some(c) if !c.revoked => c.revoked = true,
                _ => return Ok(false),
            }
            save(d, CLIENTS, &reg)?;
            Ok(true)
        })
        .await
    }

    async fn user(&self, name: &str) -> Result<Option<UserEntry>> {
        let name = name.to_owned();
        self.run(move |d| Ok(load::<Users>(d, USERS)?.users.remove(&name)))
            .await
    }

    async fn users(&self) -> Result<Vec<(String, UserEntry)>> {
        self.run(|d| Ok(load::<Users>(d, USERS)?.users.into_iter().collect()))
            .await
    }

    async fn put_user(&self, name: &str, entry: UserEntry) -> Result<u64> {
        let name = name.to_owned();
        self.locked(move |d| {
            let mut users: Users = load(d, USERS)?;
            let generation = put_user(&mut users, &name, entry);
            save(d, USERS, &users)?;
            Ok(generation)
        })
        .await
    }

    async fn remove_user(&self, name: &str) -> Result<bool> {
        let name = name.to_owned();
        self.locked(move |d| {
            let mut users: Users = load(d, USERS)?;
            if users.users.remove(&name).is_none() {
                return Ok(false);
            }
            // `last_generation` stays: the removed record's generation is never given again.
            save(d, USERS, &users)?;
            Ok(true)
        })
        .await
    }

    async fn invite(&self, name: &str) -> Result<Option<InviteEntry>> {
        let name = name.to_owned();
        self.run(move |d| Ok(load::<Invites>(d, INVITES)?.invites.remove(&name)))
            .await
    }

    async fn create_invite(
        &self,
        name: &str,
        attributes: BTreeMap<String, String>,
        expires: u64,
    ) -> Result<InviteEntry> {
        let name = name.to_owned();
        self.locked(move |d| {
            let mut invites: Invites = load(d, INVITES)?;
            let serial = match invites.invites.get(&name) {
                None => 1,
                Some(old) => next(old.serial, "the invite serial")?,
            };
            let invite = InviteEntry {
                serial,
                attributes,
                expires,
                spent: false,
            };
            invites.invites.insert(name, invite.clone());
            save(d, INVITES, &invites)?;
            Ok(invite)
        })
        .await
    }

    async fn register_with_invite(
        &self,
        name: &str,
        serial: u64,
        entry: UserEntry,
        now: u64,
    ) -> Result<Option<u64>> {
        let name = name.to_owned();
        self.locked(move |d| {
            let mut invites: Invites = load(d, INVITES)?;
            match invites.invites.get_mut(&name) {
                Some(i) if i.serial == serial && !i.spent && now < i.expires => i.spent = true,
                _ => return Ok(None),
            }
            let mut users: Users = load(d, USERS)?;
            let generation = put_user(&mut users, &name, entry);
            // Users first: a crash between the two leaves an unspent invite for an existing
            // user, which a second registration overwrites; never a spent invite and no user.
            save(d, USERS, &users)?;
            save(d, INVITES, &invites)?;
            Ok(Some(generation))
        })
        .await
    }

    async fn session(&self, id: &str) -> Result<Option<SessionEntry>> {
        let id = id.to_owned();
        self.run(move |d| Ok(load::<Sessions>(d, SESSIONS)?.sessions.remove(&id)))
            .await
    }

    async fn put_session(&self, id: &str, entry: SessionEntry) -> Result<()> {
        let id = id.to_owned();
        self.locked(move |d| {
            let mut sessions: Sessions = load(d, SESSIONS)?;
            sessions.sessions.insert(id, entry);
            save(d, SESSIONS, &sessions)
        })
        .await
    }

    async fn touch_session(&self, id: &str, now: u64) -> Result<Option<SessionEntry>> {
        let id = id.to_owned();
        self.locked(move |d| {
            let mut sessions: Sessions = load(d, SESSIONS)?;
            let touched = match sessions.sessions.get_mut(&id) {
                Some(s) if s.live(now) => {
                    s.last_used = now;
                    s.clone()
                }
                _ => return Ok(None),
            };
            save(d, SESSIONS, &sessions)?;
            Ok(Some(touched))
        })
        .await
    }

    async fn remove_session(&self, id: &str) -> Result<bool> {
        let id = id.to_owned();
        self.locked(move |d| {
            let mut sessions: Sessions = load(d, SESSIONS)?;
            if sessions.sessions.remove(&id).is_none() {
                return Ok(false);
            }
            save(d, SESSIONS, &sessions)?;
            Ok(true)
        })
        .await
    }

    async fn remove_sessions_of(&self, name: &str) -> Result<u64> {
        let name = name.to_owned();
        self.locked(move |d| {
            let mut sessions: Sessions = load(d, SESSIONS)?;
            let before = sessions.sessions.len();
            sessions.sessions.retain(|_, s| s.name != name);
            let removed = before - sessions.sessions.len();
            if removed > 0 {
                save(d, SESSIONS, &sessions)?;
            }
            Ok(removed as u64)
        })
        .await
    }

    async fn sweep_sessions(&self, now: u64) -> Result<u64> {
        self.locked(move |d| {
            let mut sessions: Sessions = load(d, SESSIONS)?;
            let before = sessions.sessions.len();
            sessions.sessions.retain(|_, s| s.live(now));
            let removed = before - sessions.sessions.len();
            if removed > 0 {
                save(d, SESSIONS, &sessions)?;
            }
            Ok(removed as u64)
        })
        .await
    }

    async fn login_state(&self, key: &str) -> Result<LoginState> {
        Ok(self.logins().get(key).copied().unwrap_or_default())
    }

    async fn login_failed(&self, key: &str, now: u64, policy: &LoginPolicy) -> Result<LoginState> {
        let mut logins = self.logins();
        let entry = logins.entry(key.to_owned()).or_default();
        *entry = entry.after_failure(now, policy);
        Ok(*entry)
    }

    async fn login_succeeded(&self, key: &str) -> Result<()> {
        self.logins().remove(key);
        Ok(())
    }
}
