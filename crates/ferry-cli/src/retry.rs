//! Trying again when a failure passes: the server is busy or shutting down, or the
//! connection broke. Only commands that resume (a put of a regular file, a get to a file)
//! retry, so a retry sends only what the server does not hold yet, and never stores a
//! version twice.

use std::future::Future;
use std::time::Duration;

/// Retries after the first attempt, unless `--retries` says otherwise.
pub const RETRIES: u32 = 4;
/// The first pause; it doubles after each failure, up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_secs(1);
const MAX_PAUSE: Duration = Duration::from_secs(8);

/// Whether `err` may pass if tried again: `server_away` says an earlier attempt saw the
/// server go away (shutting down, or a broken connection), so that a refused connection
/// now is the server restarting, not a wrong address.
fn passes(err: &anyhow::Error, server_away: bool) -> bool {
    went_away(err)
        || err.chain().any(|c| match c.downcast_ref::<ferry::Error>() {
            Some(ferry::Error::Busy(_)) => true,
            Some(ferry::Error::Connect { .. } | ferry::Error::Timeout(_)) => server_away,
            _ => false,
        })
}

/// Whether `err` says the server went away (rather than being busy).
fn went_away(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        matches!(
            c.downcast_ref::<ferry::Error>(),
            Some(ferry::Error::ShuttingDown | ferry::Error::Connection(_) | ferry::Error::Closed)
        )
    })
}

/// Runs `op` until it succeeds, fails in a way that does not pass, or has been tried again
/// `retries` times, pausing 1, 2, 4, 8, 8, ... s before each retry and saying so on
/// standard error.
pub async fn retrying<T, F, Fut>(retries: u32, mut op: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let mut pause = FIRST_PAUSE;
    let mut server_away = false;
    let mut retry = 1;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if retry <= retries && passes(&e, server_away) => {
                server_away |= went_away(&e);
                crate::output::note!(
                    "{}; trying again in {} s ({retry} of {retries} retries)",
                    cause(&e),
                    pause.as_secs(),
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
                retry += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// What went wrong, without the advice of the layers above (which a retry makes moot).
fn cause(err: &anyhow::Error) -> String {
    err.chain()
        .find_map(|c| c.downcast_ref::<ferry::Error>())
        .map_or_else(|| crate::exit::message(err), |e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(e: ferry::Error) -> anyhow::Error {
        anyhow::Error::new(e).context("put")
    }

    #[test]
    fn what_passes_and_what_does_not() {
        assert!(passes(&err(ferry::Error::Busy("full".into())), false));
        assert!(passes(&err(ferry::Error::ShuttingDown), false));
        let broken = || ferry::Error::Connection(std::io::Error::other("reset"));
        assert!(passes(&err(broken()), false));
        assert!(went_away(&err(broken())));
        assert!(!went_away(&err(ferry::Error::Busy("full".into()))));
        let refused = || ferry::Error::Connect {
            addr: "h:1".into(),
            source: std::io::Error::other("refused"),
        };
        // A refused connection is a wrong address, unless the server was seen going away.
        assert!(!passes(&err(refused()), false));
        assert!(passes(&err(refused()), true));
        for e in [
            ferry::Error::AuthFailed,
            ferry::Error::Forbidden("no".into()),
            ferry::Error::NotFound("x".into()),
            ferry::Error::HashMismatch,
            ferry::Error::NoSpace("full".into()),
        ] {
            assert!(!passes(&err(e), true));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_are_bounded_and_stop_at_success() {
        let mut calls = 0;
        let r: anyhow::Result<()> = retrying(RETRIES, || {
            calls += 1;
            async { Err(err(ferry::Error::Busy("full".into()))) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, RETRIES + 1);
        let mut calls = 0;
        let r = retrying(RETRIES, || {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Err(err(ferry::Error::ShuttingDown))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(r.unwrap(), 3);
        // --retries 0: one attempt.
        let mut calls = 0;
        let r: anyhow::Result<()> = retrying(0, || {
            calls += 1;
            async { Err(err(ferry::Error::ShuttingDown)) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 1);
    }
}
