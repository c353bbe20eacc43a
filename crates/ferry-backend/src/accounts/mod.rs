//! The account side of the seam: the client registry, users, invites, sessions and the
//! login-failure state, as today's server files hold them (`clients.toml`, `users.toml`,
//! `invites.toml`, `sessions.toml`, and the limiter's memory).
//!
//! The operations are the ones two server instances could race on, each one atomic in the
//! backend (one transaction in PostgreSQL later): a generation is never given twice, an
//! invite is spent once (spending it and storing the user's record are one step), a
//! failed login is counted without a lost update.

use std::collections::BTreeMap;
use std::future::Future;

pub use ferry_proto::files::{ClientRecord, InviteEntry, SessionEntry, UserEntry};

use crate::Result;

mod dynamic;
mod logins;
pub mod rules;

pub use dynamic::{BoxFuture, DynAccounts};
pub use logins::{LoginPolicy, LoginState, LoginTable, MAX_LOCK_SECS, MAX_LOGIN_KEYS};

/// The account data. Every method is one atomic step.
pub trait Accounts: Send + Sync {
    /// The client `name`; `None` if never issued.
    fn client(&self, name: &str) -> impl Future<Output = Result<Option<ClientRecord>>> + Send;
    /// Every client, by name.
    fn clients(&self) -> impl Future<Output = Result<Vec<(String, ClientRecord)>>> + Send;
    /// Issues (or re-issues) `name`: the epoch becomes one above any it had (1 if new), the
    /// revocation is lifted. Returns the new record.
    fn issue_client(
        &self,
        name: &str,
        attributes: BTreeMap<String, String>,
        now: u64,
    ) -> impl Future<Output = Result<ClientRecord>> + Send;
    /// Revokes `name`. Returns whether it existed and was not revoked yet.
    fn revoke_client(&self, name: &str) -> impl Future<Output = Result<bool>> + Send;

    /// The user `name`.
    fn user(&self, name: &str) -> impl Future<Output = Result<Option<UserEntry>>> + Send;
    /// Every user, by name.
    fn users(&self) -> impl Future<Output = Result<Vec<(String, UserEntry)>>> + Send;
    /// Stores `entry` for `name` with a generation never given before (its `generation`
    /// field is ignored) and returns that generation.
    fn put_user(&self, name: &str, entry: UserEntry) -> impl Future<Output = Result<u64>> + Send;
    /// Replaces `name`'s record with `entry` if it is still of `generation` (the record a
    /// password change proved), with a generation never given before, and ends the sessions
    /// the old password opened. Returns the new generation, or `None` (and changes nothing)
    /// if there is no such user or its record changed meanwhile.
    fn replace_user(
        &self,
        name: &str,
        generation: u64,
        entry: UserEntry,
    ) -> impl Future<Output = Result<Option<u64>>> + Send;
    /// Removes `name`, its invite and the sessions its password opened. Returns whether the
    /// user existed. Its generation is never given again.
    fn remove_user(&self, name: &str) -> impl Future<Output = Result<bool>> + Send;

    /// The latest invite for `name`.
    fn invite(&self, name: &str) -> impl Future<Output = Result<Option<InviteEntry>>> + Send;
    /// Every name's latest invite (spent and expired ones included), by name.
    fn invites(&self) -> impl Future<Output = Result<Vec<(String, InviteEntry)>>> + Send;
    /// Creates an invite for `name`, replacing any earlier one; its serial is one above the
    /// earlier one's (1 if none). An existing user of that name loses its record and the
    /// sessions its password opened (the invite's attributes apply from its registration).
    /// Returns the invite.
    fn create_invite(
        &self,
        name: &str,
        attributes: BTreeMap<String, String>,
        expires: u64,
    ) -> impl Future<Output = Result<InviteEntry>> + Send;
    /// Spends the invite `(name, serial)` and stores `entry` as the user's record, in one
    /// step, if that invite exists, is unspent and has not expired at `now`. Returns the
    /// user's new generation, or `None` (and changes nothing) otherwise: of two racing
    /// registrations with one invite, one gets `Some`. Sessions an earlier password of the
    /// user opened end.
    fn register_with_invite(
        &self,
        name: &str,
        serial: u64,
        entry: UserEntry,
        now: u64,
    ) -> impl Future<Output = Result<Option<u64>>> + Send;

    /// The session `id`.
    fn session(&self, id: &str) -> impl Future<Output = Result<Option<SessionEntry>>> + Send;
    /// Every session stored, by ID (ones no longer live but not swept yet included).
    fn sessions(&self) -> impl Future<Output = Result<Vec<(String, SessionEntry)>>> + Send;
    /// Stores a session under `id` (replacing one with that ID). Sessions not live at `now`
    /// go; a name holds at most [`MAX_SESSIONS_PER_NAME`](ferry_proto::files::MAX_SESSIONS_PER_NAME)
    /// sessions, its least recently used ending first.
    fn put_session(
        &self,
        id: &str,
        entry: SessionEntry,
        now: u64,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Marks `id` used at `now` if it is live then; returns the updated entry, or `None`
    /// (missing or no longer live).
    fn touch_session(
        &self,
        id: &str,
        now: u64,
    ) -> impl Future<Output = Result<Option<SessionEntry>>> + Send;
    /// Removes the session `id`. Returns whether it existed.
    fn remove_session(&self, id: &str) -> impl Future<Output = Result<bool>> + Send;
    /// Removes every session owned by `name`. Returns how many.
    fn remove_sessions_of(&self, name: &str) -> impl Future<Output = Result<u64>> + Send;
    /// Removes every session not live at `now`. Returns how many.
    fn sweep_sessions(&self, now: u64) -> impl Future<Output = Result<u64>> + Send;

    /// The failed-login state of `key` (an account or an address, as the caller names them).
    fn login_state(&self, key: &str) -> impl Future<Output = Result<LoginState>> + Send;
    /// Counts one failure of `key` at `now` ([`LoginState::after_failure`]) atomically and
    /// returns the new state.
    fn login_failed(
        &self,
        key: &str,
        now: u64,
        policy: &LoginPolicy,
    ) -> impl Future<Output = Result<LoginState>> + Send;
    /// Forgets the failures of `key` (a successful login).
    fn login_succeeded(&self, key: &str) -> impl Future<Output = Result<()>> + Send;
}
