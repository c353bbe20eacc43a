//! Counts of things in progress per key (transfers per principal, connections per address),
//! each held by a guard that gives its place back when dropped. The limit is passed at each
//! [`Tally::take`], so a reloaded configuration applies to the next one.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// Per-key counts.
#[derive(Debug)]
pub(crate) struct Tally<K: Hash + Eq> {
    counts: Mutex<HashMap<K, usize>>,
}

impl<K: Hash + Eq> Default for Tally<K> {
    fn default() -> Self {
        Self {
            counts: Mutex::new(HashMap::new()),
        }
    }
}

/// One place of a [`Tally`], given back when dropped.
#[derive(Debug)]
pub(crate) struct Held<K: Hash + Eq + Clone> {
    tally: Arc<Tally<K>>,
    key: K,
}

impl<K: Hash + Eq + Clone> Drop for Held<K> {
    fn drop(&mut self) {
        let mut counts = match self.tally.counts.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(n) = counts.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

impl<K: Hash + Eq + Clone> Tally<K> {
    /// A place for `key` if it holds fewer than `max` (0: no limit); `None` if it is full.
    pub(crate) fn take(self: &Arc<Self>, key: &K, max: usize) -> Option<Held<K>> {
        let mut counts = match self.counts.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        let n = counts.entry(key.clone()).or_insert(0);
        if max != 0 && *n >= max {
            return None;
        }
        *n += 1;
        Some(Held {
            tally: self.clone(),
            key: key.clone(),
        })
    }

    /// How many places `key` holds.
    #[cfg(test)]
    pub(crate) fn count(&self, key: &K) -> usize {
        self.counts
            .lock()
            .map(|c| c.get(key).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_bounded_per_key_and_given_back() {
        let t = Arc::new(Tally::<String>::default());
        let a = "a".to_owned();
        let one = t.take(&a, 2).unwrap();
        let two = t.take(&a, 2).unwrap();
        assert!(t.take(&a, 2).is_none(), "a third place past the limit");
        assert!(t.take(&"b".to_owned(), 2).is_some(), "another key is apart");
        drop(one);
        let three = t.take(&a, 2).unwrap();
        // A raised limit (a reload) applies at once.
        let four = t.take(&a, 3).unwrap();
        assert_eq!(t.count(&a), 3);
        drop((two, three, four));
        assert_eq!(t.count(&a), 0);
        // 0: no limit.
        let many: Vec<_> = (0..100).map(|_| t.take(&a, 0).unwrap()).collect();
        assert_eq!(many.len(), 100);
    }
}
