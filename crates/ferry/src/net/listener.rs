//! The TLS listener: [`BoundServer::run`] accepts connections under the connection budgets
//! and hands each to `net::conn`; it also sweeps abandoned uploads while it runs.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_store::{LocalBackend, Store};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use super::conn::serve_connection;
use crate::Error;
use crate::admission::Admission;
use crate::changes::ChangeFeed;
use crate::engine::{Engine, ServerBackend};
use crate::metrics::Refused;

/// How long transfers still running after the grace period have to say `shutting_down` and
/// close before they are cut.
const ENDING: Duration = Duration::from_secs(2);

/// A server with its socket bound.
pub struct BoundServer<B = LocalBackend> {
    pub(crate) listener: TcpListener,
    pub(crate) engine: Arc<Engine<B>>,
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) local_addr: SocketAddr,
    /// The HTTP front's socket, if [`BoundServer::bind_http`] bound one, and its TLS
    /// configuration if it serves HTTPS ([`BoundServer::bind_https`]).
    pub(crate) http: Option<(TcpListener, Option<TlsAcceptor>)>,
    pub(crate) http_stats: Arc<crate::http_front::HttpStats>,
}

impl BoundServer {
    /// The server's store, for code embedded in the same process; see [`Server::store`](crate::Server::store).
    pub fn store(&self) -> Arc<Store> {
        self.engine.backend.store().clone()
    }
}

impl<B: ServerBackend> BoundServer<B> {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Also serves the HTTP front (docs/HTTP.md §12) on `addr`, plain HTTP for use behind a
    /// proxy that terminates TLS, from [`BoundServer::run`] on and stopped with it. Returns
    /// the address bound.
    pub async fn bind_http(&mut self, addr: &str) -> Result<SocketAddr, Error> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Config(format!("cannot listen for HTTP on {addr}: {e}")))?;
        let bound = listener.local_addr()?;
        self.http = Some((listener, None));
        Ok(bound)
    }

    /// Like [`BoundServer::bind_http`], but serves HTTPS with the server's own identity (the
    /// TLS front's configuration: TLS 1.3 only, ALPN `http/1.1`), so clients pin its server
    /// ID as over the TLS front ([`HttpClient::with_server_id`](crate::HttpClient::with_server_id)).
    pub async fn bind_https(&mut self, addr: &str) -> Result<SocketAddr, Error> {
        let mut config = self.engine.dir.identity()?.server_config()?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let bound = self.bind_http(addr).await?;
        if let Some((_, tls)) = &mut self.http {
            *tls = Some(TlsAcceptor::from(Arc::new(config)));
        }
        Ok(bound)
    }

    /// The HTTP front's address, if [`BoundServer::bind_http`] bound one.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// The HTTP front's counts of accepted and refused requests (a live handle).
    pub fn http_stats(&self) -> Arc<crate::http_front::HttpStats> {
        self.http_stats.clone()
    }

    /// The server's storage backend (a clone sharing its state), for code embedded in the
    /// same process: what it writes wakes watch streams and every [`ChangeFeed`] like the
    /// server's own writes.
    pub fn backend(&self) -> B {
        self.engine.backend.clone()
    }

    /// A handle that re-reads `ferry.toml` while the server runs (roles, `[login]`,
    /// `[sessions]`, `[password]`), for a SIGHUP handler; see [`Reloader::reload`](crate::Reloader::reload).
    pub fn reloader(&self) -> crate::Reloader {
        crate::Reloader {
            dir: self.engine.dir.clone(),
            rules: self.engine.rules.clone(),
        }
    }

    /// The server's counters (connections, authentications, requests, bytes), live: see
    /// [`metrics::serve`](crate::metrics::serve) to expose them to Prometheus.
    pub fn metrics(&self) -> crate::metrics::Metrics {
        self.engine.metrics.clone()
    }

    /// A new follower of the store's change log, for code embedded in the same process (see
    /// [`ChangeFeed`]). Take it before [`BoundServer::run`], which consumes the server.
    pub fn changes(&self) -> ChangeFeed<B> {
        self.engine.feed.clone()
    }

    /// Serves until `shutdown` resolves, then lets open connections finish their current
    /// request for the grace period.
    ///
    /// Connections not yet authenticated and authenticated ones have budgets of their own
    /// (`max_pending`, `max_connections`), and one source address holds at most
    /// `max_pending_per_address` of the first: idle sockets cannot keep others out. At start
    /// the open-file soft limit is raised to the hard limit, and the budgets are fitted
    /// under it (see the log).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let engine = self.engine;
        let acceptor = self.acceptor;
        let (max_connections, max_pending) = crate::fdlimit::fit(
            crate::fdlimit::raise(),
            engine.limits.max_connections,
            engine.limits.max_pending,
        );
        let authenticated = Arc::new(Semaphore::new(max_connections));
        let pending = Arc::new(Semaphore::new(max_pending));
        let admission = Admission::new(engine.limits.max_pending_per_address);
        let (stop_tx, stop_rx) = watch::channel(false);
        // Turns true when the grace period is over: transfers still running are told the
        // server is shutting down and end.
        let (ending_tx, ending_rx) = watch::channel(false);
        let mut conns = JoinSet::new();
        let mut next_id: u64 = 0;
        // Abandoned uploads were swept by `bind`; from now on periodically.
        let sweeper = tokio::spawn(sweep_uploads(engine.clone(), stop_rx.clone()));
        let gauges = tokio::spawn(refresh_gauges(engine.clone(), stop_rx.clone()));
        let http = self.http.map(|(l, tls)| {
            tokio::spawn(crate::http_front::run(
                l,
                tls,
                engine.clone(),
                self.http_stats.clone(),
                stop_rx.clone(),
            ))
        });
        tokio::pin!(shutdown);
        loop {
            while conns.try_join_next().is_some() {}
            // Waiting for a slot leaves new connections in the kernel's backlog; a slot frees
            // within the hello deadline at most, whatever the peer holding it does.
            let slot = tokio::select! {
                () = &mut shutdown => break,
                p = pending.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let (tcp, peer) = tokio::select! {
                () = &mut shutdown => break,
                r = self.listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // Typically out of file descriptors: back off instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Some(slot) = admission.admit(peer.ip(), slot) else {
                tracing::debug!("{peer}: too many unauthenticated connections from its address");
                engine.metrics.refused(Refused::PerAddress);
                drop(tcp);
                continue;
            };
            next_id += 1;
            // Every line of the connection carries its ID and peer, and its principal once
            // authenticated (recorded by `serve_connection`).
            let span = tracing::info_span!(
                "conn",
                id = next_id,
                %peer,
                principal = tracing::field::Empty
            );
            let engine = engine.clone();
            let acceptor = acceptor.clone();
            let stop = stop_rx.clone();
            let ending = ending_rx.clone();
            let authenticated = authenticated.clone();
            conns.spawn(
                async move {
                    let _open = engine.metrics.connection();
                    if let Err(e) = serve_connection(
                        &engine,
                        &acceptor,
                        tcp,
                        peer,
                        (stop, ending),
                        slot,
                        authenticated,
                    )
                    .await
                    {
                        match e {
                            Error::Closed => {}
                            e => tracing::debug!("connection ended: {e}"),
                        }
                    }
                }
                .instrument(span),
            );
        }
        // New connections are refused from now on, rather than accepted by the kernel into
        // the backlog and reset later: a retrying client sees at once that the server is
        // down. Closed before the log line, so a reader of the log (a test, an operator's
        // script) never reaches a listener that still accepts.
        drop(self.listener);
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
        // Awaited (a sweep in progress ends first), so that no task holds the engine and its
        // store once `run` returns.
        let _ = sweeper.await;
        let _ = gauges.await;
        if let Some(http) = http {
            // It lets its own connections finish within the grace period.
            let _ = http.await;
        }
        let grace = engine.limits.shutdown_grace;
        if tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} })
            .await
            .is_err()
        {
            // Transfers still running: each says `shutting_down` between two frames and
            // closes; what does not end by then is cut.
            tracing::info!(
                "{} connection(s) still busy after the grace period",
                conns.len()
            );
            let _ = ending_tx.send(true);
            if tokio::time::timeout(ENDING, async { while conns.join_next().await.is_some() {} })
                .await
                .is_err()
            {
                conns.abort_all();
            }
        }
        Ok(())
    }
}

/// How often the store's gauges (`ferry_kept_bytes`, `ferry_kept_versions`) are refreshed.
const GAUGES_EVERY: Duration = Duration::from_secs(10);

/// Reads what the store keeps into the metrics, now and every [`GAUGES_EVERY`], until
/// `stop` turns true.
async fn refresh_gauges<B: ServerBackend>(engine: Arc<Engine<B>>, mut stop: watch::Receiver<bool>) {
    loop {
        match ferry_backend::Index::usage(&engine.backend, None).await {
            Ok(u) => engine.metrics.kept(u),
            Err(e) => tracing::debug!("cannot read the store's usage: {e}"),
        }
        tokio::select! {
            () = tokio::time::sleep(GAUGES_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Removes abandoned resumable uploads every `upload_sweep`, until `stop` turns true.
async fn sweep_uploads<B: ServerBackend>(engine: Arc<Engine<B>>, mut stop: watch::Receiver<bool>) {
    let every = engine.limits.upload_sweep.max(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if let Err(e) = engine.sweep_uploads(crate::clock::now()).await {
            tracing::warn!("upload sweep failed: {e}");
        }
    }
}
