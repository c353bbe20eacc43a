//! `ferry serve`: run the server until Ctrl-C or SIGTERM.

use std::io::IsTerminal;

use anyhow::Context;
use ferry::Server;
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

use crate::admin::server_dir;
use crate::cli::ServeArgs;

/// Sends log lines to stderr, filtered by `FERRY_LOG` (default `info`).
pub fn init_logging(default: &str) {
    let filter = match std::env::var("FERRY_LOG") {
        Ok(spec) => EnvFilter::try_new(&spec).unwrap_or_else(|e| {
            eprintln!("ferry: ignoring FERRY_LOG={spec:?} ({e}); using {default:?}");
            EnvFilter::new(default)
        }),
        Err(_) => EnvFilter::new(default),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// `ferry serve`.
pub async fn serve(a: &ServeArgs) -> anyhow::Result<()> {
    let dir = server_dir(&a.dir)?;
    let id = dir.identity()?.server_id();
    let server = Server::open(&dir)?;
    let listen = a
        .listen
        .clone()
        .unwrap_or_else(|| server.configured_listen().to_owned());
    let shutdown = shutdown_signal()?;
    let mut bound = server.bind(&listen).await?;
    tracing::info!("listening on {}", bound.local_addr());
    if let Some(http) = &a.http {
        let addr = bound.bind_http(http).await?;
        tracing::info!("HTTP front listening on {addr}");
    }
    tracing::info!("server ID {id}");
    tracing::info!("folder {}", dir.path().display());
    bound.run(shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves at the first SIGINT or SIGTERM. The handlers are registered before this
/// returns, so call it before announcing the address: a signal sent right after the
/// "listening on" line is not lost.
pub fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        let which = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        tracing::info!("{which} received");
    })
}
