//! When a datagram of a newer epoch may make a peer catch up.
//!
//! Such a datagram cannot be opened (the peer has no key for its epoch), so anyone can forge
//! one, and each catch-up connects to every member. So only the very next epoch counts (a
//! member two or more rotations behind cannot authenticate to the others anyway: they accept
//! one epoch back), catch-ups are at least [`MIN_INTERVAL_MS`] apart, and the interval
//! doubles, up to [`MAX_INTERVAL_MS`], while catch-ups find nothing newer. Claims are counted
//! per source address, for the log.

use std::collections::HashMap;
use std::net::IpAddr;

/// The shortest time between two catch-ups.
pub const MIN_INTERVAL_MS: u64 = 5_000;
/// The longest: after fruitless catch-ups, a real rotation is noticed at most this late.
pub const MAX_INTERVAL_MS: u64 = 300_000;
/// Source addresses whose claims are counted (the map is cleared when full).
pub const MAX_SOURCES: usize = 1024;

/// Why a newer-epoch datagram does not start a catch-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoCatchUp {
    /// Its epoch is not the one after ours.
    #[error("announcement of epoch {0}, more than one ahead of this peer's")]
    TooFar(u64),
    /// A catch-up ran too recently.
    #[error("announcement of newer epoch {0}; the last catch-up was too recent")]
    Throttled(u64),
}

/// The catch-up schedule of one peer. Times are the caller's clock in milliseconds.
#[derive(Debug)]
pub struct CatchUpThrottle {
    /// This peer's epoch the schedule belongs to (a new epoch starts afresh).
    epoch: u64,
    interval_ms: u64,
    /// No catch-up before this time.
    next_ms: u64,
    claims: HashMap<IpAddr, u64>,
}

impl Default for CatchUpThrottle {
    fn default() -> Self {
        Self::new()
    }
}

impl CatchUpThrottle {
    /// A schedule that allows a catch-up at once.
    pub fn new() -> Self {
        Self {
            epoch: 0,
            interval_ms: MIN_INTERVAL_MS,
            next_ms: 0,
            claims: HashMap::new(),
        }
    }

    /// A datagram from `from` claims epoch `theirs` while this peer is at `ours` (`theirs >
    /// ours`). `Ok(claims)` if a catch-up should start now (with how many such datagrams
    /// came from that address).
    pub fn claim(
        &mut self,
        now_ms: u64,
        from: IpAddr,
        ours: u64,
        theirs: u64,
    ) -> Result<u64, NoCatchUp> {
        if self.claims.len() >= MAX_SOURCES && !self.claims.contains_key(&from) {
            self.claims.clear();
        }
        let claims = self.claims.entry(from).or_insert(0);
        *claims = claims.saturating_add(1);
        let claims = *claims;
        if ours.checked_add(1) != Some(theirs) {
            return Err(NoCatchUp::TooFar(theirs));
        }
        if ours != self.epoch {
            // Caught up (or rotated) since: start afresh.
            self.epoch = ours;
            self.interval_ms = MIN_INTERVAL_MS;
            self.next_ms = 0;
        }
        if now_ms < self.next_ms {
            return Err(NoCatchUp::Throttled(theirs));
        }
        self.next_ms = now_ms.saturating_add(self.interval_ms);
        Ok(claims)
    }

    /// A catch-up ended at `now_ms`: it found a newer epoch, or not (then the interval
    /// doubles).
    pub fn finished(&mut self, now_ms: u64, found_newer: bool) {
        self.interval_ms = if found_newer {
            MIN_INTERVAL_MS
        } else {
            self.interval_ms.saturating_mul(2).min(MAX_INTERVAL_MS)
        };
        self.next_ms = now_ms.saturating_add(self.interval_ms);
    }

    /// How many newer-epoch datagrams came from `from` (since the map was last cleared).
    pub fn claims_from(&self, from: &IpAddr) -> u64 {
        self.claims.get(from).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn only_the_next_epoch_triggers_and_every_claim_is_counted() {
        let mut t = CatchUpThrottle::new();
        assert_eq!(t.claim(0, A, 3, u64::MAX), Err(NoCatchUp::TooFar(u64::MAX)));
        assert_eq!(t.claim(0, A, 3, 5), Err(NoCatchUp::TooFar(5)));
        assert_eq!(t.claim(0, A, 3, 4), Ok(3));
        assert_eq!(t.claims_from(&A), 3);
        assert_eq!(t.claims_from(&B), 0);
        assert_eq!(
            t.claim(0, A, u64::MAX, u64::MAX),
            Err(NoCatchUp::TooFar(u64::MAX)),
            "no overflow at the end"
        );
    }

    #[test]
    fn fruitless_catch_ups_back_off_and_a_found_epoch_resets() {
        let mut t = CatchUpThrottle::new();
        let mut now = 1_000_000;
        // A forger claiming the next epoch every 100 ms for an hour.
        let mut started = Vec::new();
        for _ in 0..36_000 {
            if t.claim(now, A, 1, 2).is_ok() {
                started.push(now);
                // The catch-up takes 1 s and finds nothing.
                t.finished(now + 1_000, false);
            }
            now += 100;
        }
        let gaps: Vec<u64> = started.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(
            &gaps[..6],
            [11_000, 21_000, 41_000, 81_000, 161_000, 301_000]
        );
        assert!(gaps[6..].iter().all(|&g| g == 301_000), "{gaps:?}");
        assert!(started.len() < 20, "{}", started.len());
        assert_eq!(t.claims_from(&A), 36_000);

        // A catch-up that finds the newer epoch: the next one may come after the minimum.
        assert!(t.claim(now + 400_000, B, 1, 2).is_ok());
        t.finished(now + 400_000, true);
        assert!(
            t.claim(now + 400_000 + MIN_INTERVAL_MS - 1, B, 1, 2)
                .is_err()
        );
        assert!(t.claim(now + 400_000 + MIN_INTERVAL_MS, B, 1, 2).is_ok());
        // At a new epoch of ours the schedule starts afresh.
        t.finished(now + 500_000, false);
        assert!(t.claim(now + 500_001, B, 2, 3).is_ok());
    }

    #[test]
    fn the_address_map_stays_bounded() {
        let mut t = CatchUpThrottle::new();
        for i in 0..(MAX_SOURCES as u32 * 3) {
            let _ = t.claim(0, IpAddr::V4(i.into()), 1, 9);
            assert!(t.claims.len() <= MAX_SOURCES);
        }
    }
}
