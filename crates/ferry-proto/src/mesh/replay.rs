//! Freshness of announcements: each sender's counter must grow, and its clock must be near
//! ours.

use std::collections::HashMap;

use crate::server_id::ServerId;

/// Why an authentic announcement was dropped as stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Stale {
    /// Its time is further from this peer's clock than the window.
    #[error("announcement time is outside the freshness window")]
    OutsideWindow,
    /// Its counter is not above the highest this peer accepted from the sender: a replay, a
    /// duplicate (the same datagram by broadcast and by multicast), or reordered.
    #[error("announcement counter already seen")]
    Replayed,
}

/// Remembers, per sender, the highest counter accepted.
///
/// A captured datagram replayed later fails one of the two checks: within the window its
/// counter has been seen; after it, its time is too old. Restarting the receiver forgets the
/// counters, which the window covers: senders start their counters from their clock (see
/// [`first_counter`]), so a restarted sender's datagrams stay above what receivers saw.
#[derive(Debug)]
pub struct ReplayGuard {
    window_ms: u64,
    highest: HashMap<ServerId, u64>,
}

impl ReplayGuard {
    /// A guard accepting times within `window_ms` of the receiver's clock either way.
    pub fn new(window_ms: u64) -> Self {
        Self {
            window_ms,
            highest: HashMap::new(),
        }
    }

    /// Accepts (and remembers) or refuses an announcement from `sender`, at receiver time
    /// `now_ms`.
    pub fn check(
        &mut self,
        sender: ServerId,
        counter: u64,
        time_ms: u64,
        now_ms: u64,
    ) -> Result<(), Stale> {
        if time_ms.abs_diff(now_ms) > self.window_ms {
            return Err(Stale::OutsideWindow);
        }
        match self.highest.get(&sender) {
            Some(&seen) if counter <= seen => Err(Stale::Replayed),
            _ => {
                self.highest.insert(sender, counter);
                Ok(())
            }
        }
    }

    /// Forgets a sender (a removed member), so the map stays bounded by the member list.
    pub fn forget(&mut self, sender: &ServerId) {
        self.highest.remove(sender);
    }
}

/// The first counter a sender starting at `now_ms` uses: its clock in microseconds, so that
/// after a restart it continues above every counter it sent before (at most a million
/// datagrams a second).
pub fn first_counter(now_ms: u64) -> u64 {
    now_ms.saturating_mul(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_duplicates_and_stale_times_are_refused() {
        let a = ServerId::from_spki(b"a");
        let b = ServerId::from_spki(b"b");
        let mut g = ReplayGuard::new(30_000);
        let now = 1_000_000;
        assert_eq!(g.check(a, 10, now, now), Ok(()));
        assert_eq!(g.check(a, 10, now, now), Err(Stale::Replayed));
        assert_eq!(g.check(a, 9, now, now), Err(Stale::Replayed));
        assert_eq!(g.check(b, 10, now, now), Ok(()), "counters are per sender");
        assert_eq!(g.check(a, 11, now + 30_000, now), Ok(()));
        assert_eq!(g.check(a, 12, now - 30_001, now), Err(Stale::OutsideWindow));
        assert_eq!(g.check(a, 12, now + 30_001, now), Err(Stale::OutsideWindow));
        // The refused ones did not advance the counter.
        assert_eq!(g.check(a, 12, now, now), Ok(()));
        g.forget(&a);
        assert_eq!(g.check(a, 1, now, now), Ok(()));
    }

    #[test]
    fn a_restarted_sender_counts_on_from_above() {
        let before = first_counter(1_000) + 999_999;
        assert!(first_counter(2_000) > before);
    }
}
