//! Freshness: the timestamp window and the bounded cache of nonces seen inside it.
//!
//! A request is fresh if its timestamp is within `window` seconds of the server's clock
//! (either way, for clock skew) and its nonce has not been accepted before. A nonce needs
//! remembering only while a request carrying it could still pass the window check: until
//! `timestamp + window`. Past that, the window refuses the replay on its own, and the entry
//! is dropped.
//!
//! The cache holds at most `capacity` nonces. When it is full of unexpired nonces a new
//! request is answered [`VerifyError::Busy`] (HTTP 503, retry later with a new nonce):
//! evicting an unexpired nonce instead would let its request be replayed, so a full cache
//! sheds load rather than safety. Only requests whose signature verified reach the cache
//! ([`super::verify_request`]), so filling it takes a valid credential; with the defaults
//! it fills at about `capacity / window` = 870 requests a second sustained (each entry
//! costs well under 100 bytes: about 20 MiB when full).
//!
//! The cache lives in one process: servers that share a master key behind a load balancer
//! must share one cache (or pin each client to one instance), or a request replayed to
//! another instance passes.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};

use super::{Nonce, Reason, VerifyError};

/// The freshness window and the cache's bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplayConfig {
    /// How far a request's timestamp may be from the server's clock, either way, in seconds.
    pub window_secs: u64,
    /// Most nonces remembered at once.
    pub capacity: usize,
}

impl Default for ReplayConfig {
    /// A window of 300 seconds (5 minutes, as AWS Signature V4 allows) and room for 2^18
    /// nonces.
    fn default() -> Self {
        Self {
            window_secs: 300,
            capacity: 1 << 18,
        }
    }
}

/// The nonces accepted inside the window, each until it expires.
#[derive(Debug)]
pub struct ReplayCache {
    config: ReplayConfig,
    seen: HashSet<Nonce>,
    /// The same nonces by expiry time, earliest first.
    expiries: BinaryHeap<Reverse<(u64, Nonce)>>,
}

impl ReplayCache {
    /// An empty cache.
    pub fn new(config: ReplayConfig) -> Self {
        Self {
            config,
            seen: HashSet::new(),
            expiries: BinaryHeap::new(),
        }
    }

    /// Its configuration.
    pub fn config(&self) -> ReplayConfig {
        self.config
    }

    /// How many nonces it holds (some may have expired since the last call at `now`).
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether it holds no nonce.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Refuses a timestamp further than the window from `now`.
    pub(crate) fn check_window(&self, timestamp: u64, now: u64) -> Result<(), VerifyError> {
        if timestamp.abs_diff(now) > self.config.window_secs {
            return Err(VerifyError::Refused(Reason::OutsideWindow));
        }
        Ok(())
    }

    /// Accepts and remembers `nonce`, or refuses it: outside the window, already seen, or
    /// [`VerifyError::Busy`] when the cache is full of unexpired nonces.
    pub(crate) fn remember(
        &mut self,
        nonce: Nonce,
        timestamp: u64,
        now: u64,
    ) -> Result<(), VerifyError> {
        self.check_window(timestamp, now)?;
        self.expire(now);
        if self.seen.contains(&nonce) {
            return Err(VerifyError::Refused(Reason::Replayed));
        }
        if self.seen.len() >= self.config.capacity {
            return Err(VerifyError::Busy);
        }
        self.seen.insert(nonce);
        let expires = timestamp.saturating_add(self.config.window_secs);
        self.expiries.push(Reverse((expires, nonce)));
        Ok(())
    }

    /// Drops every nonce whose request would now fail the window check. Each nonce is
    /// dropped once, so the work over the cache's life is bounded by what it accepted.
    fn expire(&mut self, now: u64) {
        while let Some(Reverse((expires, nonce))) = self.expiries.peek().copied() {
            if expires >= now {
                break;
            }
            self.expiries.pop();
            self.seen.remove(&nonce);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(i: u8) -> Nonce {
        Nonce::from_bytes([i; 16])
    }

    const NOW: u64 = 1_000_000;

    #[test]
    fn a_nonce_is_refused_until_its_timestamp_leaves_the_window() {
        let mut c = ReplayCache::new(ReplayConfig {
            window_secs: 300,
            capacity: 10,
        });
        // A request timestamped 100 s in the future: it stays acceptable until NOW + 400.
        let ts = NOW + 100;
        assert_eq!(c.remember(n(1), ts, NOW), Ok(()));
        for now in [NOW, NOW + 200, ts + 300] {
            assert_eq!(
                c.remember(n(1), ts, now),
                Err(VerifyError::Refused(Reason::Replayed)),
                "{now}"
            );
        }
        assert_eq!(
            c.remember(n(1), ts, ts + 301),
            Err(VerifyError::Refused(Reason::OutsideWindow))
        );
        // Another nonce at ts + 301 expires the first one.
        assert_eq!(c.remember(n(2), ts + 301, ts + 301), Ok(()));
        assert_eq!(c.len(), 1);
        assert!(!c.is_empty());
    }

    #[test]
    fn window_is_inclusive_and_two_sided() {
        let c = ReplayCache::new(ReplayConfig::default());
        assert_eq!(c.check_window(NOW - 300, NOW), Ok(()));
        assert_eq!(c.check_window(NOW + 300, NOW), Ok(()));
        for ts in [NOW - 301, NOW + 301, 0, u64::MAX] {
            assert_eq!(
                c.check_window(ts, NOW),
                Err(VerifyError::Refused(Reason::OutsideWindow))
            );
        }
    }

    /// A full cache refuses new nonces with `Busy` and keeps refusing the replay of every
    /// nonce it holds, until they expire; then it has room again.
    #[test]
    fn full_means_busy_not_eviction() {
        let mut c = ReplayCache::new(ReplayConfig {
            window_secs: 60,
            capacity: 3,
        });
        for i in 0..3 {
            assert_eq!(c.remember(n(i), NOW + u64::from(i), NOW), Ok(()));
        }
        assert_eq!(c.remember(n(9), NOW, NOW), Err(VerifyError::Busy));
        assert_eq!(c.remember(n(9), NOW, NOW + 30), Err(VerifyError::Busy));
        for i in 0..3 {
            assert_eq!(
                c.remember(n(i), NOW, NOW + 60),
                Err(VerifyError::Refused(Reason::Replayed)),
                "nonce {i} was evicted"
            );
        }
        assert_eq!(c.len(), 3);
        // n(0) expires after NOW + 60; the others are still held.
        assert_eq!(c.remember(n(9), NOW + 61, NOW + 61), Ok(()));
        assert_eq!(
            c.remember(n(10), NOW + 61, NOW + 61),
            Err(VerifyError::Busy)
        );
        assert_eq!(c.remember(n(10), NOW + 63, NOW + 63), Ok(()));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn zero_capacity_is_always_busy() {
        let mut c = ReplayCache::new(ReplayConfig {
            window_secs: 60,
            capacity: 0,
        });
        assert_eq!(c.remember(n(1), NOW, NOW), Err(VerifyError::Busy));
    }
}
