//! The metrics endpoint: `GET /metrics` over plain HTTP/1.1 (hyper), for a Prometheus
//! scraper. It serves counters only (no names, sources or secrets), so it needs no
//! authentication; `ferry serve` binds it to loopback unless told otherwise.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::Metrics;
use crate::Error;

/// The content type of the OpenMetrics text format.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Scrapes served at once; more wait in the kernel's backlog.
const MAX_SCRAPES: usize = 16;

/// A scraper must send its request within this long.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

fn answer(metrics: &Metrics, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r
    };
    if req.uri().path() != "/metrics" {
        return reply(StatusCode::NOT_FOUND, "not found; try /metrics\n".into());
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
    }
    let mut r = reply(StatusCode::OK, metrics.render());
    if let Ok(v) = CONTENT_TYPE.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// Serves `metrics` at `GET /metrics` on `listener` until `stop` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    stop: impl Future<Output = ()>,
) -> Result<(), Error> {
    let mut conns = JoinSet::new();
    tokio::pin!(stop);
    loop {
        while conns.try_join_next().is_some() {}
        if conns.len() >= MAX_SCRAPES {
            tokio::select! {
                () = &mut stop => break,
                _ = conns.join_next() => continue,
            }
        }
        let (tcp, _) = tokio::select! {
            () = &mut stop => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("metrics: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let metrics = metrics.clone();
        conns.spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let r = answer(&metrics, &req);
                async move { Ok::<_, Infallible>(r) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), service);
            // A scraper that holds the connection open is cut after a minute.
            let _ = tokio::time::timeout(Duration::from_secs(60), conn).await;
        });
    }
    conns.abort_all();
    Ok(())
}
