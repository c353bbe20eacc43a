//! The open-file limit: raised at start, and the connection budgets fitted under it.
//!
//! Every connection is a socket, and an authenticated one may also hold a blob file open, so
//! a server under the common soft limit of 1024 descriptors runs out long before its default
//! budgets. At start the server raises its soft limit to the hard limit (no privilege is
//! needed for that) and, if even that is too low, serves fewer connections than `ferry.toml`
//! asks for, saying so in the log.
//!
//! It uses rustix (the Bytecode Alliance's safe wrapper over the system calls, already in our
//! dependency tree through tempfile), so no `unsafe` is needed in our crates.

/// Descriptors kept for everything but connections: the listener, the store, logs, mesh.
const RESERVE: u64 = 64;

/// Descriptors an authenticated connection may hold: its socket and a blob file.
const PER_AUTHENTICATED: u64 = 2;

/// Raises the soft open-file limit to the hard limit. Returns the limit in force afterwards
/// (`None` if unlimited or unknown) and logs what it did.
pub(crate) fn raise() -> Option<u64> {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let before = getrlimit(Resource::Nofile);
        let soft = before.current?;
        // Some systems report an unlimited hard limit but refuse it as a soft limit: try it,
        // then a large finite value.
        let targets = match before.maximum {
            Some(hard) if hard <= soft => {
                tracing::info!("open-file limit {soft} (already the hard limit)");
                return Some(soft);
            }
            Some(hard) => vec![hard],
            None => vec![1 << 20, 10_240],
        };
        for target in targets {
            let new = Rlimit {
                current: Some(target),
                maximum: before.maximum,
            };
            if setrlimit(Resource::Nofile, new).is_ok() {
                tracing::info!("open-file limit raised from {soft} to {target}");
                return Some(target);
            }
        }
        tracing::warn!("could not raise the open-file limit above {soft}");
        Some(soft)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Budgets that fit under an open-file limit of `nofile`: `(max_connections, max_pending)`,
/// reduced from those asked for if they would not fit.
pub(crate) fn fit(
    nofile: Option<u64>,
    max_connections: usize,
    max_pending: usize,
) -> (usize, usize) {
    let Some(n) = nofile else {
        return (max_connections, max_pending);
    };
    let need = (max_connections as u64)
        .saturating_mul(PER_AUTHENTICATED)
        .saturating_add(max_pending as u64)
        .saturating_add(RESERVE);
    if need <= n {
        return (max_connections, max_pending);
    }
    let room = n.saturating_sub(RESERVE).max(4);
    let pending = (max_pending as u64).min(room / 4).max(1);
    let conns = ((room - pending.min(room)) / PER_AUTHENTICATED).max(1);
    let fitted = (
        usize::try_from(conns)
            .unwrap_or(max_connections)
            .min(max_connections),
        usize::try_from(pending)
            .unwrap_or(max_pending)
            .min(max_pending),
    );
    tracing::warn!(
        "the open-file limit is {n}: serving at most max_connections = {}, max_pending = {} \
         (ferry.toml asks for {max_connections} and {max_pending}; raise the hard limit, e.g. \
         LimitNOFILE= in a systemd unit, to serve more)",
        fitted.0,
        fitted.1
    );
    fitted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_fit_under_the_limit() {
        assert_eq!(fit(None, 16384, 1024), (16384, 1024));
        assert_eq!(fit(Some(1 << 20), 16384, 1024), (16384, 1024));
        let (c, p) = fit(Some(1024), 16384, 1024);
        assert!(c * 2 + p + 64 <= 1024, "{c} {p}");
        assert!(c >= 300 && p >= 200, "{c} {p}");
        // Never zero, even under an absurd limit.
        assert_eq!(fit(Some(3), 10, 10), (1, 1));
    }

    #[test]
    fn raising_keeps_at_least_the_soft_limit() {
        #[cfg(unix)]
        {
            let before = rustix::process::getrlimit(rustix::process::Resource::Nofile);
            let after = raise();
            if let (Some(b), Some(a)) = (before.current, after) {
                assert!(a >= b);
            }
        }
    }
}
