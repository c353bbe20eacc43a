//! [`DynAccounts`]: the [`Accounts`] trait in a form that can sit behind `dyn`, so a server
//! holds `Arc<dyn DynAccounts>` and any backend's account data plugs in without a type
//! parameter on everything that authenticates (each call boxes its future: one allocation
//! per account lookup, next to a TLS handshake or a file read).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use super::{
    Accounts, ClientRecord, InviteEntry, LoginPolicy, LoginState, SessionEntry, UserEntry,
};
use crate::Result;

/// A boxed future that can be sent between threads.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// [`Accounts`], object-safe: every [`Accounts`] is one (a blanket implementation).
pub trait DynAccounts: Send + Sync + 'static {
    /// [`Accounts::client`].
    fn client<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<ClientRecord>>>;
    /// [`Accounts::clients`].
    fn clients<'a>(&'a self) -> BoxFuture<'a, Result<Vec<(String, ClientRecord)>>>;
    /// [`Accounts::issue_client`].
    fn issue_client<'a>(
        &'a self,
        name: &'a str,
        attributes: BTreeMap<String, String>,
        now: u64,
    ) -> BoxFuture<'a, Result<ClientRecord>>;
    /// [`Accounts::revoke_client`].
    fn revoke_client<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool>>;
    /// [`Accounts::user`].
    fn user<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<UserEntry>>>;
    /// [`Accounts::users`].
    fn users<'a>(&'a self) -> BoxFuture<'a, Result<Vec<(String, UserEntry)>>>;
    /// [`Accounts::put_user`].
    fn put_user<'a>(&'a self, name: &'a str, entry: UserEntry) -> BoxFuture<'a, Result<u64>>;
    /// [`Accounts::replace_user`].
    fn replace_user<'a>(
        &'a self,
        name: &'a str,
        generation: u64,
        entry: UserEntry,
    ) -> BoxFuture<'a, Result<Option<u64>>>;
    /// [`Accounts::remove_user`].
    fn remove_user<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool>>;
    /// [`Accounts::invite`].
    fn invite<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<InviteEntry>>>;
    /// [`Accounts::invites`].
    fn invites<'a>(&'a self) -> BoxFuture<'a, Result<Vec<(String, InviteEntry)>>>;
    /// [`Accounts::create_invite`].
    fn create_invite<'a>(
        &'a self,
        name: &'a str,
        attributes: BTreeMap<String, String>,
        expires: u64,
    ) -> BoxFuture<'a, Result<InviteEntry>>;
    /// [`Accounts::register_with_invite`].
    fn register_with_invite<'a>(
        &'a self,
        name: &'a str,
        serial: u64,
        entry: UserEntry,
        now: u64,
    ) -> BoxFuture<'a, Result<Option<u64>>>;
    /// [`Accounts::session`].
    fn session<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<SessionEntry>>>;
    /// [`Accounts::sessions`].
    fn sessions<'a>(&'a self) -> BoxFuture<'a, Result<Vec<(String, SessionEntry)>>>;
    /// [`Accounts::put_session`].
    fn put_session<'a>(
        &'a self,
        id: &'a str,
        entry: SessionEntry,
        now: u64,
    ) -> BoxFuture<'a, Result<()>>;
    /// [`Accounts::touch_session`].
    fn touch_session<'a>(
        &'a self,
        id: &'a str,
        now: u64,
    ) -> BoxFuture<'a, Result<Option<SessionEntry>>>;
    /// [`Accounts::remove_session`].
    fn remove_session<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool>>;
    /// [`Accounts::remove_sessions_of`].
    fn remove_sessions_of<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<u64>>;
    /// [`Accounts::sweep_sessions`].
    fn sweep_sessions<'a>(&'a self, now: u64) -> BoxFuture<'a, Result<u64>>;
    /// [`Accounts::login_state`].
    fn login_state<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<LoginState>>;
    /// [`Accounts::login_failed`].
    fn login_failed<'a>(
        &'a self,
        key: &'a str,
        now: u64,
        policy: &'a LoginPolicy,
    ) -> BoxFuture<'a, Result<LoginState>>;
    /// [`Accounts::login_succeeded`].
    fn login_succeeded<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<()>>;
}

impl<A: Accounts + 'static> DynAccounts for A {
    fn client<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<ClientRecord>>> {
        Box::pin(Accounts::client(self, name))
    }

    fn clients<'a>(&'a self) -> BoxFuture<'a, Result<Vec<(String, ClientRecord)>>> {
        Box::pin(Accounts::clients(self))
    }

    fn issue_client<'a>(
        &'a self,
        name: &'a str,
        attributes: BTreeMap<String, String>,
        now: u64,
    ) -> BoxFuture<'a, Result<ClientRecord>> {
        Box::pin(Accounts::issue_client(self, name, attributes, now))
    }

    fn revoke_client<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(Accounts::revoke_client(self, name))
    }

    fn user<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<UserEntry>>> {
        Box::pin(Accounts::user(self, name))
    }

    fn users<'a>(&'a self) -> BoxFuture<'a, Result<Vec<(String, UserEntry)>>> {
        Box::pin(Accounts::users(self))
    }

    fn put_user<'a>(&'a self, name: &'a str, entry: UserEntry) -> BoxFuture<'a, Result<u64>> {
        Box::pin(Accounts::put_user(self, name, entry))
    }

    fn replace_user<'a>(
        &'a self,
        name: &'a str,
        generation: u64,
        entry: UserEntry,
    ) -> BoxFuture<'a, Result<Option<u64>>> {
        Box::pin(Accounts::replace_user(self, name, generation, entry))
    }

    fn remove_user<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(Accounts::remove_user(self, name))
    }

    fn invite<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<InviteEntry>>> {
        Box::pin(Accounts::invite(self, name))
    }

    fn invites<'a>(&'a self) -> BoxFuture<'a, Result<Vec<(String, InviteEntry)>>> {
        Box::pin(Accounts::invites(self))
    }

    fn create_invite<'a>(
        &'a self,
        name: &'a str,
        attributes: BTreeMap<String, String>,
        expires: u64,
    ) -> BoxFuture<'a, Result<InviteEntry>> {
        Box::pin(Accounts::create_invite(self, name, attributes, expires))
    }

    fn register_with_invite<'a>(
        &'a self,
        name: &'a str,
        serial: u64,
        entry: UserEntry,
        now: u64,
    ) -> BoxFuture<'a, Result<Option<u64>>> {
        Box::pin(Accounts::register_with_invite(
            self, name, serial, entry, now,
        ))
    }

    fn session<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<SessionEntry>>> {
        Box::pin(Accounts::session(self, id))
    }

    fn sessions<'a>(&'a self) -> BoxFuture<'a, Result<Vec<(String, SessionEntry)>>> {
        Box::pin(Accounts::sessions(self))
    }

    fn put_session<'a>(
        &'a self,
        id: &'a str,
        entry: SessionEntry,
        now: u64,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(Accounts::put_session(self, id, entry, now))
    }

    fn touch_session<'a>(
        &'a self,
        id: &'a str,
        now: u64,
    ) -> BoxFuture<'a, Result<Option<SessionEntry>>> {
        Box::pin(Accounts::touch_session(self, id, now))
    }

    fn remove_session<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(Accounts::remove_session(self, id))
    }

    fn remove_sessions_of<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<u64>> {
        Box::pin(Accounts::remove_sessions_of(self, name))
    }

    fn sweep_sessions<'a>(&'a self, now: u64) -> BoxFuture<'a, Result<u64>> {
        Box::pin(Accounts::sweep_sessions(self, now))
    }

    fn login_state<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<LoginState>> {
        Box::pin(Accounts::login_state(self, key))
    }

    fn login_failed<'a>(
        &'a self,
        key: &'a str,
        now: u64,
        policy: &'a LoginPolicy,
    ) -> BoxFuture<'a, Result<LoginState>> {
        Box::pin(Accounts::login_failed(self, key, now, policy))
    }

    fn login_succeeded<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(Accounts::login_succeeded(self, key))
    }
}
