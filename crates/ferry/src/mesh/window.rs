//! The end of a join window: a running peer deletes `mesh-open.toml` (and with it the join
//! password) once the window's time is up, rather than leaving it on disk until the next
//! start sweeps it.

use std::time::Duration;

use tokio::sync::watch;

use super::files::{OPEN_FILE, OpenFile};
use crate::clock;
use crate::live::LiveFile;
use crate::server_dir::ServerDir;

/// How often a running peer checks whether the window has ended.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Deletes the join window of `dir` when it ends, until `stop` changes.
pub(crate) async fn expire_loop(dir: ServerDir, mut stop: watch::Receiver<bool>) {
    let open = match LiveFile::<OpenFile>::open(dir.file(OPEN_FILE)) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!("not watching the join window: {e}");
            return;
        }
    };
    let mut tick = tokio::time::interval(CHECK_EVERY);
    // Bounded by `stop`; one `stat` a tick, a removal only once a window has ended.
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        let now = clock::now();
        let ended = open.current().0.as_ref().is_some_and(|w| w.until <= now);
        if !ended {
            continue;
        }
        let d = dir.clone();
        let swept = crate::pipe::join(tokio::task::spawn_blocking(move || {
            d.sweep_mesh_window(now)
        }))
        .await;
        match swept {
            Ok(true) => tracing::info!("the join window ended: its password is removed"),
            Ok(false) => {}
            Err(e) => tracing::warn!("cannot remove the ended join window: {e}"),
        }
    }
}
