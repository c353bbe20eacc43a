//! The HTTP front's accept loop: HTTP/1.1 (hyper) on its own socket, plain for use behind a
//! proxy that terminates TLS, or HTTPS with the server's own identity (`--http-tls`: the
//! TLS front's configuration, TLS 1.3 only, with ALPN `http/1.1`; the TLS handshake must end
//! within the handshake deadline). Each connection holds a slot of a budget of `max_connections`;
//! a request's head must arrive within the handshake deadline; at shutdown, connections
//! finish the request in flight (HTTP/1.1 graceful close) within the grace period.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::{Front, HttpStats};
use crate::engine::{Engine, ServerBackend};

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Serves one connection until it ends, or finishes its request in flight once `stop`
/// turns true.
async fn serve<B: ServerBackend, I: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: I,
    front: Arc<Front<B>>,
    peer: std::net::SocketAddr,
    header_deadline: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let service = service_fn(move |req| {
        let front = front.clone();
        async move { Ok::<_, Infallible>(front.handle(peer, req).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_deadline)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!("{peer}: HTTP connection: {e}");
            }
        }
        () = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Serves HTTP on `listener` until `stop` turns true; HTTPS if `tls` is given.
pub(crate) async fn run<B: ServerBackend>(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    engine: Arc<Engine<B>>,
    stats: Arc<HttpStats>,
    mut stop: watch::Receiver<bool>,
) {
    let limits = engine.limits.clone();
    let front = Arc::new(Front::new(engine, stats));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut conns = JoinSet::new();
    let mut next_id: u64 = 0;
    loop {
        while conns.try_join_next().is_some() {}
        let permit = tokio::select! {
            () = stopped(&mut stop) => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            () = stopped(&mut stop) => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("HTTP accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let front = front.clone();
        let stop = stop.clone();
        let tls = tls.clone();
        let header_deadline = limits.handshake_timeout;
        next_id += 1;
        // Every line of the connection carries its ID and peer, and the principal of its
        // last authenticated request.
        let span = tracing::info_span!(
            "http_conn",
            id = next_id,
            %peer,
            principal = tracing::field::Empty
        );
        let open = front.metrics().connection();
        conns.spawn(
            async move {
                let _permit = permit;
                let _open = open;
                let _ = tcp.set_nodelay(true);
                match tls {
                    None => serve(tcp, front, peer, header_deadline, stop).await,
                    Some(tls) => {
                        match tokio::time::timeout(header_deadline, tls.accept(tcp)).await {
                            Ok(Ok(io)) => serve(io, front, peer, header_deadline, stop).await,
                            Ok(Err(e)) => tracing::debug!("{peer}: HTTPS handshake: {e}"),
                            Err(_) => tracing::debug!("{peer}: HTTPS handshake too slow"),
                        }
                    }
                }
            }
            .instrument(span),
        );
    }
    if tokio::time::timeout(limits.shutdown_grace, async {
        while conns.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        conns.abort_all();
    }
}
