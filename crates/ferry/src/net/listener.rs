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

use super::conn::serve_connection;
use crate::Error;
use crate::admission::Admission;
use crate::changes::ChangeFeed;
use crate::engine::{Engine, ServerBackend};

/// A server with its socket bound.
pub struct BoundServer<B = LocalBackend> {
    pub(crate) listener: TcpListener,
    pub(crate) engine: Arc<Engine<B>>,
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) local_addr: SocketAddr,
    /// The HTTP front's socket, if [`BoundServer::bind_http`] bound one.
    pub(crate) http: Option<TcpListener>,
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
        self.http = Some(listener);
        Ok(bound)
    }

    /// The HTTP front's address, if [`BoundServer::bind_http`] bound one.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
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
        let mut conns = JoinSet::new();
        // Abandoned uploads were swept by `bind`; from now on periodically.
        let sweeper = tokio::spawn(sweep_uploads(engine.clone(), stop_rx.clone()));
        let http = self.http.map(|l| {
            tokio::spawn(crate::http_front::run(
                l,
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
                drop(tcp);
                continue;
            };
            let engine = engine.clone();
            let acceptor = acceptor.clone();
            let stop = stop_rx.clone();
            let authenticated = authenticated.clone();
            conns.spawn(async move {
                if let Err(e) =
                    serve_connection(&engine, &acceptor, tcp, peer, stop, slot, authenticated).await
                {
                    match e {
                        Error::Closed => {}
                        e => tracing::debug!("{peer}: {e}"),
                    }
                }
            });
        }
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
        // Awaited (a sweep in progress ends first), so that no task holds the engine and its
        // store once `run` returns.
        let _ = sweeper.await;
        if let Some(http) = http {
            // It lets its own connections finish within the grace period.
            let _ = http.await;
        }
        let grace = engine.limits.shutdown_grace;
        if tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} })
            .await
            .is_err()
        {
            conns.abort_all();
        }
        Ok(())
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
