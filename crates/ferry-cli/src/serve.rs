//! `ferry serve`: run the server until Ctrl-C or SIGTERM.

use std::io::IsTerminal;

use anyhow::Context;
use ferry::Server;
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

use crate::admin::server_dir;
use crate::cli::{LogFormat, ReportArgs, ServeArgs};

/// Sends log lines to stderr, filtered by `FERRY_LOG` (default `default`), as text or JSON.
pub fn init_logging(default: &str, format: LogFormat) {
    let filter = match std::env::var("FERRY_LOG") {
        Ok(spec) => EnvFilter::try_new(&spec).unwrap_or_else(|e| {
            eprintln!("ferry: ignoring FERRY_LOG={spec:?} ({e}); using {default:?}");
            EnvFilter::new(default)
        }),
        Err(_) => EnvFilter::new(default),
    };
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).try_init(),
        // One object per line: the event's fields, its target and the connection's span
        // (`span`: id, peer, principal) as objects, never colours.
        LogFormat::Json => fmt
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

/// Serves the running server's metrics on `--metrics ADDR` until `stop`, if asked.
pub async fn start_metrics(
    report: &ReportArgs,
    metrics: ferry::metrics::Metrics,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let Some(addr) = &report.metrics else {
        return Ok(());
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot serve metrics on {addr}"))?;
    let local = listener.local_addr()?;
    if !local.ip().is_loopback() && !report.metrics_public {
        anyhow::bail!(
            "--metrics {addr} is reachable from other hosts: use a loopback address \
             (127.0.0.1:PORT), or add --metrics-public"
        );
    }
    tracing::info!("metrics on http://{local}/metrics");
    tokio::spawn(async move {
        let mut stop = stop;
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = ferry::metrics::serve(listener, metrics, stopped).await {
            tracing::warn!("metrics endpoint stopped: {e}");
        }
    });
    Ok(())
}

/// `ferry serve`.
pub async fn serve(a: &ServeArgs) -> anyhow::Result<()> {
    let dir = server_dir(&a.dir)?;
    let id = dir.identity()?.server_id();
    let config = dir.config()?;
    // The account data where ferry.toml's [backend] says: the folder's files, or a database
    // the account commands and every other instance use too.
    let accounts = crate::backend::open(&dir, &config, crate::backend::SERVE_CONNECTIONS).await?;
    let server = Server::builder(&dir).dyn_accounts(accounts).build()?;
    let listen = a
        .listen
        .clone()
        .unwrap_or_else(|| server.configured_listen().to_owned());
    let shutdown = shutdown_signal()?;
    let mut bound = server.bind(&listen).await?;
    let (stop_metrics, stopped) = tokio::sync::watch::channel(false);
    start_metrics(&a.report, bound.metrics(), stopped).await?;
    let reloads = reload_on_sighup(bound.reloader())?;
    tracing::info!("listening on {}", bound.local_addr());
    if let Some(http) = &a.http {
        let addr = if a.http_tls {
            bound.bind_https(http).await?
        } else {
            bound.bind_http(http).await?
        };
        let scheme = if a.http_tls { "HTTPS" } else { "HTTP" };
        tracing::info!("{scheme} front listening on {addr}");
    }
    tracing::info!("server ID {id}");
    tracing::info!("folder {}", dir.path().display());
    tracing::info!("account data: {}", config.backend.accounts.name());
    bound.run(shutdown).await?;
    let _ = stop_metrics.send(true);
    reloads.abort();
    tracing::info!("stopped");
    Ok(())
}

/// Re-reads ferry.toml at every SIGHUP, keeping the rules in force if it does not load. The
/// handler is registered before this returns, so a SIGHUP right after the "listening on"
/// line reloads rather than kills the server.
pub fn reload_on_sighup(reloader: ferry::Reloader) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    Ok(tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let r = reloader.clone();
            match tokio::task::spawn_blocking(move || r.reload()).await {
                Ok(Ok(later)) if later.is_empty() => {
                    tracing::info!("SIGHUP: ferry.toml reloaded")
                }
                Ok(Ok(later)) => tracing::warn!(
                    "SIGHUP: ferry.toml reloaded; changes to {} take effect at the next start",
                    later.join(", ")
                ),
                Ok(Err(e)) => {
                    tracing::error!("SIGHUP: ferry.toml refused, the rules in force stay: {e}")
                }
                Err(e) => tracing::error!("SIGHUP: reload failed: {e}"),
            }
        }
    }))
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
