//! Limits on guessing the join password, per open window: one join exchange at a time, in
//! arrival order; a delay before each answer that grows with the window's failures; and the
//! window closed after too many failures.
//!
//! A joiner learns from `mesh_join_response` whether its guess was right, so an attempt
//! counts as a failure from the moment it is admitted, before that response is sent
//! ([`JoinAttempt`]); only a completed join takes its count back. A joiner that hangs up
//! after the response is counted like one that sends a wrong confirmation.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Mutex as TurnLock, MutexGuard};

use crate::server_dir::ServerDir;

/// Delay before answering a join after `n` failures: 250 ms doubling, at most 4 s. The
/// server also keeps it under half its handshake timeout, so that a slowed attempt still
/// gets its answer (and is counted) rather than running into the connection's deadline.
pub fn join_delay(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(250u64 << failures.saturating_sub(1).min(4))
}

/// Failed joins of one open window, named by its end (`until`, Unix seconds; 0: none open).
#[derive(Debug, Default)]
struct Count {
    until: u64,
    failures: u32,
    /// The last window the limit closed: it stays closed even if its file could not be
    /// removed and the count has moved on to another window.
    closed: Option<u64>,
}

/// The join limits of one server.
#[derive(Debug)]
pub(crate) struct JoinGate {
    /// Held for a whole join exchange: attempts wait their turn (tokio's lock is fair, so in
    /// arrival order), each bounded by its connection's handshake deadline.
    turn: TurnLock<()>,
    count: Mutex<Count>,
    max_failures: u32,
}

impl JoinGate {
    /// A gate closing a window after `max_failures` failed joins.
    pub(crate) fn new(max_failures: u32) -> Self {
        Self {
            turn: TurnLock::new(()),
            count: Mutex::new(Count::default()),
            max_failures: max_failures.max(1),
        }
    }

    /// Waits until no other join exchange is in flight.
    pub(crate) async fn turn(&self) -> MutexGuard<'_, ()> {
        self.turn.lock().await
    }

    /// Failed joins in the window that ends at `until`. A new window starts from zero, so
    /// reopening after the limit closed one is not slowed by the old count.
    pub(crate) fn failures(&self, until: u64) -> u32 {
        match self.count.lock() {
            Ok(c) if c.until == until => c.failures,
            Ok(_) => 0,
            Err(_) => self.max_failures,
        }
    }

    /// Whether the window ending at `until` may still be guessed at: fewer failures than the
    /// limit.
    pub(crate) fn admits(&self, until: u64) -> bool {
        !self.closed(until) && self.failures(until) < self.max_failures
    }

    /// Whether the limit closed the window ending at `until` (an attempt in flight is refused
    /// at its next step).
    pub(crate) fn closed(&self, until: u64) -> bool {
        self.count.lock().map_or(true, |c| c.closed == Some(until))
    }

    fn close(&self, until: u64) {
        if let Ok(mut c) = self.count.lock() {
            c.closed = Some(until);
        }
    }

    /// Counts an attempt in the window ending at `until` as a failure now; it stays one
    /// unless [`JoinAttempt::succeeded`] is called. When the count reaches the limit as the
    /// attempt ends, the window's file is removed from `dir`.
    pub(crate) fn attempt(&self, until: u64, dir: &ServerDir) -> JoinAttempt<'_> {
        let failures = self.add(until, 1);
        JoinAttempt {
            gate: self,
            until,
            failures,
            dir: dir.clone(),
            succeeded: false,
        }
    }

    /// Adds `delta` (1, or -1 to take one back; saturating) to the count of window `until`;
    /// returns the new count.
    fn add(&self, until: u64, delta: i32) -> u32 {
        match self.count.lock() {
            Ok(mut c) => {
                if c.until != until {
                    c.until = until;
                    c.failures = 0;
                }
                c.failures = c.failures.saturating_add_signed(delta);
                c.failures
            }
            Err(_) => self.max_failures,
        }
    }
}

/// One admitted join attempt: a failure unless it completes.
#[derive(Debug)]
pub(crate) struct JoinAttempt<'a> {
    gate: &'a JoinGate,
    until: u64,
    failures: u32,
    dir: ServerDir,
    succeeded: bool,
}

impl JoinAttempt<'_> {
    /// Failed joins in this window, this attempt counted.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }

    /// Whether this attempt's failure reaches the window's limit.
    pub(crate) fn reaches_limit(&self) -> bool {
        self.failures >= self.gate.max_failures
    }

    /// The join completed: take this attempt's count back.
    pub(crate) fn succeeded(mut self) {
        self.succeeded = true;
        self.gate.add(self.until, -1);
    }
}

impl Drop for JoinAttempt<'_> {
    fn drop(&mut self) {
        if self.succeeded || !self.reaches_limit() {
            return;
        }
        self.gate.close(self.until);
        if self.until == 0 {
            return;
        }
        // The limit closes the window in memory at once (`admits`); this removes its
        // password from disk too, unless another window was opened meanwhile.
        let (dir, until) = (self.dir.clone(), self.until);
        let close = move || match dir.close_mesh_if(|w| w.until == until) {
            Ok(true) => tracing::warn!("too many failed joins: the mesh is closed to joins"),
            Ok(false) => {}
            Err(e) => tracing::warn!("too many failed joins, but cannot close the mesh: {e}"),
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => drop(h.spawn_blocking(close)),
            Err(_) => close(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_delay_doubles_up_to_four_seconds() {
        let ms = |n| join_delay(n).as_millis();
        assert_eq!(
            (0..8).map(ms).collect::<Vec<_>>(),
            [0, 250, 500, 1000, 2000, 4000, 4000, 4000]
        );
        assert_eq!(ms(u32::MAX), 4000);
    }

    #[test]
    fn attempts_count_until_they_succeed_and_the_limit_closes_the_window() {
        let tmp = tempfile::tempdir().unwrap_or_else(|_| unreachable!());
        let dir = ServerDir::new(tmp.path().to_path_buf());
        let gate = JoinGate::new(3);
        // Counted as soon as admitted, before anything is sent.
        let a = gate.attempt(100, &dir);
        assert_eq!(gate.failures(100), 1);
        drop(a);
        assert_eq!(gate.failures(100), 1, "an abandoned attempt stays counted");
        gate.attempt(100, &dir).succeeded();
        assert_eq!(
            gate.failures(100),
            1,
            "a success takes back only its own count"
        );
        assert!(gate.admits(100));
        drop(gate.attempt(100, &dir));
        // The last admitted attempt, completing, keeps the window open.
        gate.attempt(100, &dir).succeeded();
        assert!(gate.admits(100) && !gate.closed(100));
        let last = gate.attempt(100, &dir);
        assert!(last.reaches_limit() && last.failures() == 3);
        drop(last);
        assert!(!gate.admits(100) && gate.closed(100));
        // Another window starts from zero.
        assert_eq!(gate.failures(200), 0);
        assert!(gate.admits(200));
    }
}
