//! Admission before authentication: how many connections may be waiting for their TLS
//! handshake and authentication, in all and per source address.
//!
//! An unauthenticated connection costs a socket, a task and a TLS state, and proves nothing.
//! So it holds a slot of its own budget (`max_pending`), separate from the budget of
//! authenticated connections (`max_connections`), and no source address may hold more than
//! `max_pending_per_address` of those slots: idle sockets from one address cannot keep an
//! honest client out. IPv6 addresses count per /64, the smallest block a host is usually given.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedSemaphorePermit;

/// Per-address counts of connections not yet authenticated.
#[derive(Debug)]
pub(crate) struct Admission {
    per_address: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// A connection's place among the unauthenticated ones; given back when dropped.
#[derive(Debug)]
pub(crate) struct Pending {
    admission: Arc<Admission>,
    key: IpAddr,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.admission.counts.lock()
            && let Some(n) = counts.get_mut(&self.key)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// The key an address counts under: IPv4 (also IPv4-mapped IPv6) as is, IPv6 by its /64.
pub(crate) fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

impl Admission {
    /// At most `per_address` unauthenticated connections from one address (at least one).
    pub(crate) fn new(per_address: usize) -> Arc<Self> {
        Arc::new(Self {
            per_address: per_address.max(1),
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// Admits a connection from `ip` holding `slot` of the global budget, or `None` if its
    /// address already holds as many unauthenticated connections as it may.
    pub(crate) fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        slot: OwnedSemaphorePermit,
    ) -> Option<Pending> {
        let key = key(ip);
        let mut counts = self.counts.lock().ok()?;
        let n = counts.entry(key).or_insert(0);
        if *n >= self.per_address {
            return None;
        }
        *n += 1;
        Some(Pending {
            admission: self.clone(),
            key,
            _slot: slot,
        })
    }

    #[cfg(test)]
    fn held(&self, ip: IpAddr) -> usize {
        self.counts
            .lock()
            .map(|c| c.get(&key(ip)).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::Semaphore;

    #[test]
    fn per_address_cap_and_release() {
        let slots = Arc::new(Semaphore::new(10));
        let a = Admission::new(2);
        let one: IpAddr = [10, 0, 0, 1].into();
        let two: IpAddr = [10, 0, 0, 2].into();
        let take = || slots.clone().try_acquire_owned().unwrap();
        let p1 = a.admit(one, take()).unwrap();
        let _p2 = a.admit(one, take()).unwrap();
        assert!(a.admit(one, take()).is_none());
        // A refusal gives its global slot back at once.
        assert_eq!(slots.available_permits(), 8);
        let _q = a.admit(two, take()).unwrap();
        drop(p1);
        assert_eq!(a.held(one), 1);
        assert!(a.admit(one, take()).is_some());
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let slots = Arc::new(Semaphore::new(10));
        let a = Admission::new(1);
        let take = || slots.clone().try_acquire_owned().unwrap();
        let x: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let y: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let z: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _px = a.admit(x, take()).unwrap();
        assert!(a.admit(y, take()).is_none());
        assert!(a.admit(z, take()).is_some());
        let v4: IpAddr = [192, 0, 2, 1].into();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let _p4 = a.admit(v4, take()).unwrap();
        assert!(a.admit(mapped, take()).is_none());
    }
}
