//! Failed-login state: the rule that locks a key (an account or an address) after repeated
//! failures, and [`LoginTable`], a bounded in-memory table of it for backends that keep the
//! state in memory (the in-memory backend; a server folder, which never persisted it).

use std::collections::HashMap;

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

/// Keys a [`LoginTable`] holds at most. When full, keys neither locked nor inside their
/// window are dropped first; if every key is live, the failure is still counted (the table
/// grows past the bound rather than forget a lock an attacker earned).
pub const MAX_LOGIN_KEYS: usize = 100_000;

/// Failed-login state by key, in memory, bounded by [`MAX_LOGIN_KEYS`].
#[derive(Debug, Default)]
pub struct LoginTable {
    keys: HashMap<String, LoginState>,
}

impl LoginTable {
    /// The state of `key`.
    pub fn state(&self, key: &str) -> LoginState {
        self.keys.get(key).copied().unwrap_or_default()
    }

    /// Counts one failure of `key` at `now`; returns the new state.
    pub fn failed(&mut self, key: &str, now: u64, policy: &LoginPolicy) -> LoginState {
        if self.keys.len() >= MAX_LOGIN_KEYS && !self.keys.contains_key(key) {
            let window = policy.window_secs;
            self.keys
                .retain(|_, s| !s.unlocked(now) || now < s.first.saturating_add(window));
        }
        let entry = self.keys.entry(key.to_owned()).or_default();
        *entry = entry.after_failure(now, policy);
        *entry
    }

    /// Forgets `key`'s failures.
    pub fn succeeded(&mut self, key: &str) {
        self.keys.remove(key);
    }

    /// How many keys the table holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the table holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: LoginPolicy = LoginPolicy {
        max_failures: 3,
        window_secs: 10,
        lockout_secs: 60,
    };

    #[test]
    fn a_full_table_drops_spent_keys_and_keeps_locks() {
        let mut t = LoginTable::default();
        for _ in 0..3 {
            t.failed("locked", 0, &P);
        }
        for i in 0..MAX_LOGIN_KEYS - 1 {
            t.failed(&format!("k{i}"), 0, &P);
        }
        assert_eq!(t.len(), MAX_LOGIN_KEYS);
        // At 20 the windows of the one-failure keys ran out; the lock (until 60) did not.
        t.failed("new", 20, &P);
        assert_eq!(t.len(), 2);
        assert!(!t.state("locked").unlocked(20));
        assert_eq!(t.state("new").failures, 1);
    }
}
