//! [`LocalAccounts`]: the account data of a server folder (`clients.toml`, `users.toml`,
//! `invites.toml`, `sessions.toml`) behind the [`Accounts`] trait.
//!
//! Reads come from the files as last seen (one `stat` per read; a changed file is re-read,
//! `live.rs`), so the check before every request costs what it always did. Every change
//! takes `clients.lock` (the lock `ferry client` and `ferry user` take), reads the files it
//! needs, applies the shared [`rules`] and writes back those that changed, whole and
//! atomically (mode 0600), users before invites before sessions: a step is atomic against
//! other processes on the same folder too. The functions that do so are the ones the
//! folder's own commands ([`ServerDir`](crate::ServerDir)) call. Failed-login counters live
//! in memory, as the server's limiter always kept them: a restart forgets them, and two
//! processes on one folder count apart (a shared backend, #17, shares them).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ferry_backend::accounts::{
    Accounts, ClientRecord, InviteEntry, LoginPolicy, LoginState, LoginTable, SessionEntry,
    UserEntry, rules,
};
use ferry_backend::{BackendError, Result};

use crate::Error;
use crate::accounts::{FileIo, Invites, Sessions, Users};
use crate::live::{LiveFile, Loadable};
use crate::registry::{Registry, RegistryLock};

const CLIENTS: &str = "clients.toml";
const USERS: &str = "users.toml";
const INVITES: &str = "invites.toml";
const SESSIONS: &str = "sessions.toml";

/// The account files of a server folder as an [`Accounts`] backend. Cheap to clone: clones
/// share the cached files and the login counters.
#[derive(Clone, Debug)]
pub struct LocalAccounts {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    clients: LiveFile<Registry>,
    users: LiveFile<Users>,
    invites: LiveFile<Invites>,
    sessions: LiveFile<Sessions>,
    logins: Mutex<LoginTable>,
}

impl LocalAccounts {
    /// The account files in the server folder `dir` (missing files read as empty; reading
    /// one that does not parse is an error until it is fixed).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        Self {
            inner: Arc::new(Inner {
                clients: LiveFile::lazy(dir.join(CLIENTS)),
                users: LiveFile::lazy(dir.join(USERS)),
                invites: LiveFile::lazy(dir.join(INVITES)),
                sessions: LiveFile::lazy(dir.join(SESSIONS)),
                logins: Mutex::default(),
                dir,
            }),
        }
    }

    /// Runs the change `f` on the blocking pool with the folder's path.
    async fn change<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Path) -> Result<T, Error> + Send + 'static,
    {
        let dir = self.inner.dir.clone();
        match tokio::task::spawn_blocking(move || f(&dir)).await {
            Ok(r) => r.map_err(to_backend),
            Err(join) => Err(BackendError::Other(Box::new(join))),
        }
    }

    fn logins(&self) -> MutexGuard<'_, LoginTable> {
        // Every update is one statement: a poisoned lock still guards whole values.
        self.inner
            .logins
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
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

/// One file read for a change, written back only if the change changed it.
struct Edit<T> {
    path: PathBuf,
    before: T,
    value: T,
}

impl<T: Loadable + FileIo + Clone + PartialEq> Edit<T> {
    fn load(dir: &Path, name: &str) -> Result<Self, Error> {
        let path = dir.join(name);
        let value = T::load(&path)?;
        Ok(Self {
            before: value.clone(),
            value,
            path,
        })
    }

    fn save(self) -> Result<(), Error> {
        if self.value != self.before {
            self.value.save(&self.path)?;
        }
        Ok(())
    }
}

/// Runs `f` on the client registry under the folder's lock and saves it if it changed.
fn edit_clients<T>(
    dir: &Path,
    f: impl FnOnce(&mut Registry) -> Result<T, Error>,
) -> Result<T, Error> {
    let _lock = RegistryLock::acquire(dir)?;
    let mut clients = Edit::load(dir, CLIENTS)?;
    let out = f(&mut clients.value)?;
    clients.save()?;
    Ok(out)
}

/// Runs `f` on the sessions under the folder's lock and saves them if they changed.
fn edit_sessions<T>(dir: &Path, f: impl FnOnce(&mut Sessions) -> T) -> Result<T, Error> {
    let _lock = RegistryLock::acquire(dir)?;
    let mut sessions = Edit::load(dir, SESSIONS)?;
    let out = f(&mut sessions.value);
    sessions.save()?;
    Ok(out)
}

/// Runs `f` on users, invites and sessions under the folder's lock and saves those that
/// changed, in that order.
fn edit_people<T>(
    dir: &Path,
    f: impl FnOnce(&mut Users, &mut Invites, &mut Sessions) -> Result<T, Error>,
) -> Result<T, Error> {
    let _lock = RegistryLock::acquire(dir)?;
    let mut users = Edit::<Users>::load(dir, USERS)?;
    let mut invites = Edit::<Invites>::load(dir, INVITES)?;
    let mut sessions = Edit::<Sessions>::load(dir, SESSIONS)?;
    let out = f(&mut users.value, &mut invites.value, &mut sessions.value)?;
    users.save()?;
    invites.save()?;
    sessions.save()?;
    Ok(out)
}

/// [`rules::issue_client`] on the folder `dir`.
pub(crate) fn issue_client(
    dir: &Path,
    name: &str,
    attributes: BTreeMap<String, String>,
    now: u64,
) -> Result<ClientRecord, Error> {
    edit_clients(dir, |reg| {
        Ok(rules::issue_client(reg, name, attributes, now)?)
    })
}

/// [`rules::revoke_client`] on the folder `dir`.
pub(crate) fn revoke_client(dir: &Path, name: &str) -> Result<bool, Error> {
    edit_clients(dir, |reg| Ok(rules::revoke_client(reg, name)))
}

/// [`rules::create_invite`] on the folder `dir`.
pub(crate) fn create_invite(
    dir: &Path,
    name: &str,
    attributes: BTreeMap<String, String>,
    expires: u64,
) -> Result<InviteEntry, Error> {
    edit_people(dir, |users, invites, sessions| {
        Ok(rules::create_invite(
            invites, users, sessions, name, attributes, expires,
        )?)
    })
}

/// [`rules::remove_user`] on the folder `dir`.
pub(crate) fn remove_user(dir: &Path, name: &str) -> Result<bool, Error> {
    edit_people(dir, |users, invites, sessions| {
        Ok(rules::remove_user(users, invites, sessions, name))
    })
}

/// Removes the session `id` from the folder `dir`.
pub(crate) fn remove_session(dir: &Path, id: &str) -> Result<bool, Error> {
    edit_sessions(dir, |s| s.sessions.remove(id).is_some())
}

impl Accounts for LocalAccounts {
    async fn client(&self, name: &str) -> Result<Option<ClientRecord>> {
        Ok(self
            .inner
            .clients
            .try_current()
            .map_err(to_backend)?
            .clients
            .get(name)
            .cloned())
    }

    async fn clients(&self) -> Result<Vec<(String, ClientRecord)>> {
        let clients = self.inner.clients.try_current().map_err(to_backend)?;
        Ok(clients.clients.clone().into_iter().collect())
    }

    async fn issue_client(
        &self,
        name: &str,
        attributes: BTreeMap<String, String>,
        now: u64,
    ) -> Result<ClientRecord> {
        let name = name.to_owned();
        self.change(move |d| issue_client(d, &name, attributes, now))
            .await
    }

    async fn revoke_client(&self, name: &str) -> Result<bool> {
        let name = name.to_owned();
        self.change(move |d| revoke_client(d, &name)).await
    }

    async fn user(&self, name: &str) -> Result<Option<UserEntry>> {
        Ok(self
            .inner
            .users
            .try_current()
            .map_err(to_backend)?
            .users
            .get(name)
            .cloned())
    }

    async fn users(&self) -> Result<Vec<(String, UserEntry)>> {
        let users = self.inner.users.try_current().map_err(to_backend)?;
        Ok(users.users.clone().into_iter().collect())
    }

    async fn put_user(&self, name: &str, entry: UserEntry) -> Result<u64> {
        let name = name.to_owned();
        self.change(move |d| edit_people(d, |u, _, _| Ok(rules::put_user(u, &name, entry))))
            .await
    }

    async fn replace_user(
        &self,
        name: &str,
        generation: u64,
        entry: UserEntry,
    ) -> Result<Option<u64>> {
        let name = name.to_owned();
        self.change(move |d| {
            edit_people(d, |u, _, s| {
                Ok(rules::replace_user(u, s, &name, generation, entry))
            })
        })
        .await
    }

    async fn remove_user(&self, name: &str) -> Result<bool> {
        let name = name.to_owned();
        self.change(move |d| remove_user(d, &name)).await
    }

    async fn invite(&self, name: &str) -> Result<Option<InviteEntry>> {
        Ok(self
            .inner
            .invites
            .try_current()
            .map_err(to_backend)?
            .invites
            .get(name)
            .cloned())
    }

    async fn invites(&self) -> Result<Vec<(String, InviteEntry)>> {
        let invites = self.inner.invites.try_current().map_err(to_backend)?;
        Ok(invites.invites.clone().into_iter().collect())
    }

    async fn create_invite(
        &self,
        name: &str,
        attributes: BTreeMap<String, String>,
        expires: u64,
    ) -> Result<InviteEntry> {
        let name = name.to_owned();
        self.change(move |d| create_invite(d, &name, attributes, expires))
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
        self.change(move |d| {
            edit_people(d, |u, i, s| {
                Ok(rules::register_with_invite(
                    i, u, s, &name, serial, entry, now,
                ))
            })
        })
        .await
    }

    async fn session(&self, id: &str) -> Result<Option<SessionEntry>> {
        Ok(self
            .inner
            .sessions
            .try_current()
            .map_err(to_backend)?
            .sessions
            .get(id)
            .cloned())
    }

    async fn sessions(&self) -> Result<Vec<(String, SessionEntry)>> {
        let sessions = self.inner.sessions.try_current().map_err(to_backend)?;
        Ok(sessions.sessions.clone().into_iter().collect())
    }

    async fn put_session(&self, id: &str, entry: SessionEntry, now: u64) -> Result<()> {
        let id = id.to_owned();
        self.change(move |d| edit_sessions(d, |s| rules::put_session(s, &id, entry, now)))
            .await
    }

    async fn touch_session(&self, id: &str, now: u64) -> Result<Option<SessionEntry>> {
        let id = id.to_owned();
        self.change(move |d| edit_sessions(d, |s| rules::touch_session(s, &id, now)))
            .await
    }

    async fn remove_session(&self, id: &str) -> Result<bool> {
        let id = id.to_owned();
        self.change(move |d| remove_session(d, &id)).await
    }

    async fn remove_sessions_of(&self, name: &str) -> Result<u64> {
        let name = name.to_owned();
        self.change(move |d| edit_sessions(d, |s| rules::remove_sessions_of(s, &name)))
            .await
    }

    async fn sweep_sessions(&self, now: u64) -> Result<u64> {
        self.change(move |d| edit_sessions(d, |s| rules::sweep_sessions(s, now)))
            .await
    }

    async fn login_state(&self, key: &str) -> Result<LoginState> {
        Ok(self.logins().state(key))
    }

    async fn login_failed(&self, key: &str, now: u64, policy: &LoginPolicy) -> Result<LoginState> {
        Ok(self.logins().failed(key, now, policy))
    }

    async fn login_succeeded(&self, key: &str) -> Result<()> {
        self.logins().succeeded(key);
        Ok(())
    }
}
