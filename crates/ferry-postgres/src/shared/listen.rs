//! The change signal across instances: a connection of its own LISTENs on the channel every
//! commit notifies (`write::CHANNEL`, payload: the new last sequence number) and moves the
//! signal forward. The change log stays the source of truth: after every (re)connection, and
//! whenever no notification came for `catch_up`, the log's last number is read and the
//! signal moved to it, so a notification lost (a dropped connection, a restart) delays a
//! watcher by at most `catch_up`, and a watcher reads what changed with `changes_since`.
//!
//! The task runs for the backend's life: it is aborted when the backend (its last clone) is
//! dropped or closed. Every round waits (a notification, a timeout, or a back-off of up to
//! 5 s between connection attempts), so it never spins.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Config, NoTls};

use super::write::CHANNEL;

/// The running task; aborted on drop.
pub(crate) struct Listener {
    task: JoinHandle<()>,
}

impl Listener {
    pub(crate) fn start(
        mut config: Config,
        pool: Pool,
        signal: Arc<watch::Sender<u64>>,
        catch_up: Duration,
    ) -> Self {
        config.application_name("ferry-listen");
        let catch_up = catch_up.max(Duration::from_millis(10));
        Listener {
            task: tokio::spawn(run(config, pool, signal, catch_up)),
        }
    }

    pub(crate) fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(config: Config, pool: Pool, signal: Arc<watch::Sender<u64>>, catch_up: Duration) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if listen(&config, &pool, &signal, catch_up).await {
            backoff = Duration::from_millis(100);
        }
        // Disconnected: the pool may still answer, so the signal keeps up meanwhile.
        catch_up_now(&pool, &signal).await;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Reads the log's last number and moves the signal to it.
async fn catch_up_now(pool: &Pool, signal: &watch::Sender<u64>) {
    if let Ok(c) = pool.get().await
        && let Ok(last) = super::index::last_seq(&c).await
    {
        ferry_backend::advance_signal(signal, last);
    }
}

fn notified(signal: &watch::Sender<u64>, payload: &str) {
    if let Ok(seq) = payload.parse::<u64>() {
        ferry_backend::advance_signal(signal, seq);
    }
}

/// One connection's life: LISTEN, catch up, then follow notifications. Returns whether
/// the LISTEN was set up (false: the connection failed before).
async fn listen(
    config: &Config,
    pool: &Pool,
    signal: &watch::Sender<u64>,
    catch_up: Duration,
) -> bool {
    let Ok((client, mut conn)) = config.connect(NoTls).await else {
        return false;
    };
    let statement = format!("LISTEN {CHANNEL}");
    let listening = {
        let mut listen = pin!(client.batch_execute(&statement));
        poll_fn(|cx| {
            // Drive the connection (the LISTEN's answer arrives through it) while waiting.
            while let Poll::Ready(message) = conn.poll_message(cx) {
                match message {
                    Some(Ok(AsyncMessage::Notification(n))) => notified(signal, n.payload()),
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return Poll::Ready(false),
                }
            }
            listen.as_mut().poll(cx).map(|r| r.is_ok())
        })
        .await
    };
    if !listening {
        return false;
    }
    // Listening now: whatever committed before is in the log.
    catch_up_now(pool, signal).await;
    loop {
        let next = tokio::time::timeout(catch_up, poll_fn(|cx| conn.poll_message(cx))).await;
        match next {
            Err(_) => catch_up_now(pool, signal).await,
            Ok(Some(Ok(AsyncMessage::Notification(n)))) => notified(signal, n.payload()),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => break,
        }
    }
    drop(client);
    true
}
