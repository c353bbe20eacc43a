//! Online guessing: failed password logins are limited per account and per source address.
//!
//! After `max_failures` failures within `window_secs`, the account (or address) is locked for
//! `lockout_secs`, doubling with every further failure up to an hour. A locked account still
//! runs the whole protocol against a dummy record and gets the same generic failure, so the
//! lock itself reveals nothing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use serde::Deserialize;

/// Limits, from `[login]` in `ferry.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginLimits {
    /// Failures allowed within the window before a lock.
    #[serde(default = "default_max")]
    pub max_failures: u32,
    /// Seconds over which failures count.
    #[serde(default = "default_window")]
    pub window_secs: u64,
    /// First lock's length, seconds.
    #[serde(default = "default_lockout")]
    pub lockout_secs: u64,
}

fn default_max() -> u32 {
    5
}
fn default_window() -> u64 {
    900
}
fn default_lockout() -> u64 {
    60
}

impl Default for LoginLimits {
    fn default() -> Self {
        Self {
            max_failures: default_max(),
            window_secs: default_window(),
            lockout_secs: default_lockout(),
        }
    }
}

const MAX_LOCK_SECS: u64 = 3600;
const MAX_ENTRIES: usize = 100_000;

#[derive(Clone, PartialEq, Eq, Hash)]
enum Key {
    Account(String),
    Address(IpAddr),
}

#[derive(Clone, Copy)]
struct Entry {
    failures: u32,
    first: u64,
    locked_until: u64,
}

/// The limiter.
#[derive(Debug)]
pub struct Limiter {
    limits: LoginLimits,
    state: Mutex<HashMap<Key, Entry>>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} failures", self.failures)
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Account(a) => write!(f, "account {a}"),
            Key::Address(ip) => write!(f, "address {ip}"),
        }
    }
}

impl Limiter {
    /// A limiter with these limits.
    pub fn new(limits: LoginLimits) -> Self {
        Self {
            limits,
            state: Mutex::new(HashMap::new()),
        }
    }

    fn keys(user: &str, ip: IpAddr) -> [Key; 2] {
        [Key::Account(user.to_owned()), Key::Address(ip)]
    }

    /// Whether a login for `user` from `ip` may be evaluated at `now`.
    pub fn allowed(&self, user: &str, ip: IpAddr, now: u64) -> bool {
        let Ok(state) = self.state.lock() else {
            return false;
        };
        Self::unlocked(&state, user, ip, now)
    }

    fn unlocked(state: &HashMap<Key, Entry>, user: &str, ip: IpAddr, now: u64) -> bool {
        Self::keys(user, ip)
            .iter()
            .all(|k| state.get(k).is_none_or(|e| e.locked_until <= now))
    }

    /// Records a failed login.
    pub fn failure(&self, user: &str, ip: IpAddr, now: u64) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        self.count(&mut state, user, ip, now);
    }

    fn count(&self, state: &mut HashMap<Key, Entry>, user: &str, ip: IpAddr, now: u64) {
        if state.len() >= MAX_ENTRIES {
            let window = self.limits.window_secs;
            state.retain(|_, e| e.locked_until > now || now < e.first.saturating_add(window));
        }
        for key in Self::keys(user, ip) {
            let e = state.entry(key).or_insert(Entry {
                failures: 0,
                first: now,
                locked_until: 0,
            });
            if now >= e.first.saturating_add(self.limits.window_secs) && e.locked_until <= now {
                *e = Entry {
                    failures: 0,
                    first: now,
                    locked_until: 0,
                };
            }
            e.failures = e.failures.saturating_add(1);
            if e.failures >= self.limits.max_failures {
                let doublings = (e.failures - self.limits.max_failures).min(20);
                let lock = self
                    .limits
                    .lockout_secs
                    .saturating_mul(1 << doublings)
                    .min(MAX_LOCK_SECS);
                e.locked_until = now.saturating_add(lock);
            }
        }
    }

    /// Records a successful login: the account's count starts again.
    pub fn success(&self, user: &str) {
        if let Ok(mut state) = self.state.lock() {
            state.remove(&Key::Account(user.to_owned()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_failures_and_unlocks_later() {
        let l = Limiter::new(LoginLimits {
            max_failures: 3,
            window_secs: 100,
            lockout_secs: 10,
        });
        let ip: IpAddr = [127, 0, 0, 1].into();
        let other: IpAddr = [127, 0, 0, 2].into();
        for t in 0..2 {
            l.failure("a", ip, t);
            assert!(l.allowed("a", ip, t));
        }
        l.failure("a", ip, 2);
        assert!(!l.allowed("a", ip, 3));
        // Locked per account, whatever the address; and the address for other accounts.
        assert!(!l.allowed("a", other, 3));
        assert!(!l.allowed("b", ip, 3));
        assert!(l.allowed("b", other, 3));
        assert!(l.allowed("a", ip, 12));
        // Another failure while counted doubles the lock.
        l.failure("a", ip, 12);
        assert!(!l.allowed("a", ip, 31));
        assert!(l.allowed("a", ip, 32));
        l.success("a");
        assert!(l.allowed("a", other, 32));
    }
}
