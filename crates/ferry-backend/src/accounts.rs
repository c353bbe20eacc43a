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

/// The limiter's rule for failed logins (today's `[login]` in `ferry.toml`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginPolicy {
    /// Failures allowed within the window before a lock.
    pub max_failures: u32,
    /// Seconds over which failures count.
    pub window_secs: u64,
    /// First lock's length, seconds; it doubles with every further failure, up to an hour.
    pub lockout_secs: u64,
}

/// Longest lock, seconds.
pub const MAX_LOCK_SECS: u64 = 3600;

/// Failed logins of one key (an account or an address).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoginState {
    /// Failures in the current window.
    pub failures: u32,
    /// Start of the current window (unix seconds).
    pub first: u64,
    /// Locked until then (unix seconds; 0 or past: not locked).
    pub locked_until: u64,
}

impl LoginState {
    /// Whether a login may be evaluated at `now`.
    pub fn unlocked(&self, now: u64) -> bool {
        self.locked_until <= now
    }

    /// The state after one more failure at `now` under `policy` (the rule of today's
    /// limiter: a window that restarts once over and unlocked, a lock from `max_failures`
    /// on, doubling per failure, capped at [`MAX_LOCK_SECS`]).
    pub fn after_failure(self, now: u64, policy: &LoginPolicy) -> LoginState {
        let mut s = self;
        if s.failures == 0 || (now >= s.first.saturating_add(policy.window_secs) && s.unlocked(now))
        {
            s = LoginState {
                failures: 0,
                first: now,
                locked_until: 0,
            };
        }
        s.failures = s.failures.saturating_add(1);
        if s.failures >= policy.max_failures {
            let doublings = (s.failures - policy.max_failures).min(20);
            let lock = policy
                .lockout_secs
                .saturating_mul(1 << doublings)
                .min(MAX_LOCK_SECS);
            s.locked_until = now.saturating_add(lock);
        }
        s
    }
}

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
    /// Removes `name`. Returns whether it existed. Its generation is never given again.
    fn remove_user(&self, name: &str) -> impl Future<Output = Result<bool>> + Send;

    /// The latest invite for `name`.
    fn invite(&self, name: &str) -> impl Future<Output = Result<Option<InviteEntry>>> + Send;
    /// Creates an invite for `name`, replacing any earlier one; its serial is one above the
    /// earlier one's (1 if none). Returns it.
    fn create_invite(
        &self,
        name: &str,
        attributes: BTreeMap<String, String>,
        expires: u64,
    ) -> impl Future<Output = Result<InviteEntry>> + Send;
    /// Spends the invite `(name, serial)` and stores `entry` as the user's record, in one
    /// step, if that invite exists, is unspent and has not expired at `now`. Returns the
    /// user's new generation, or `None` (and changes nothing) otherwise: of two racing
    /// registrations with one invite, one gets `Some`.
    fn register_with_invite(
        &self,
        name: &str,
        serial: u64,
        entry: UserEntry,
        now: u64,
    ) -> impl Future<Output = Result<Option<u64>>> + Send;

    /// The session `id`.
    fn session(&self, id: &str) -> impl Future<Output = Result<Option<SessionEntry>>> + Send;
    /// Stores a session under `id` (replacing one with that ID).
    fn put_session(&self, id: &str, entry: SessionEntry)
    -> impl Future<Output = Result<()>> + Send;
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
