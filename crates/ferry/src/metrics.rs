//! What a running server counts, for monitoring: [`Metrics`], rendered in the
//! Prometheus/OpenMetrics text format (through the `prometheus-client` crate) and served by
//! [`serve`](crate::metrics::serve) (`ferry serve --metrics ADDR`).
//!
//! The fronts count connections and bytes, the engine counts authentications and requests
//! (by operation and outcome) once for every front. Nothing here holds a secret, a name or
//! a source: labels are fixed words (methods, operations, error codes, reasons).

use std::sync::Arc;
use std::time::Duration;

use ferry_proto::message::ErrorCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

mod serve;

pub use serve::serve;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthLabels {
    method: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    op: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: &'static str,
}

/// Why a connection was closed before it was served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Its address already holds `max_pending_per_address` unauthenticated connections.
    PerAddress,
    /// Not a ferry client: no TLS, or no ALPN `ferry/1`.
    NotFerry,
    /// The TLS handshake failed (for example the client did not accept the server's key).
    Tls,
    /// The TLS handshake or authentication did not finish in time.
    Timeout,
    /// Authentication failed.
    AuthFailed,
    /// The server already serves `max_connections` authenticated connections.
    Busy,
    /// The address already holds `max_connections_per_address` authenticated connections.
    AddressBusy,
}

impl Refused {
    fn as_str(self) -> &'static str {
        match self {
            Self::PerAddress => "per_address",
            Self::NotFerry => "not_ferry",
            Self::Tls => "tls",
            Self::Timeout => "timeout",
            Self::AuthFailed => "auth_failed",
            Self::Busy => "busy",
            Self::AddressBusy => "address_busy",
        }
    }
}

struct Inner {
    registry: Registry,
    connections_open: Gauge,
    connections: Counter,
    refused: Family<Reason, Counter>,
    auth: Family<AuthLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    bytes_in: Counter,
    bytes_out: Counter,
    transfer_seconds: Family<OpLabel, Histogram>,
    uploads: Gauge,
    kept_bytes: Gauge,
    kept_versions: Gauge,
}

/// A server's counters: cheap to clone (all clones count into the same values), safe to
/// update from any task. [`BoundServer::metrics`](crate::BoundServer::metrics) gives the
/// running server's.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics(..)")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Zeroed counters.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ferry");
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "Connections open now (TLS handshake, authentication or served)",
            connections_open.clone(),
        );
        let connections = Counter::default();
        registry.register(
            "connections",
            "Connections accepted since start",
            connections.clone(),
        );
        let refused = Family::<Reason, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections closed before they were served, by reason",
            refused.clone(),
        );
        let auth = Family::<AuthLabels, Counter>::default();
        registry.register(
            "authentications",
            "Authentications by method and outcome",
            auth.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests by operation and outcome (ok or the error code answered)",
            requests.clone(),
        );
        let bytes_in = Counter::default();
        registry.register_with_unit(
            "received",
            "Content bytes received in puts",
            Unit::Bytes,
            bytes_in.clone(),
        );
        let bytes_out = Counter::default();
        registry.register_with_unit(
            "sent",
            "Content bytes sent in gets",
            Unit::Bytes,
            bytes_out.clone(),
        );
        let transfer_seconds = Family::<OpLabel, Histogram>::new_with_constructor(|| {
            // 1 ms to about 4.6 hours.
            Histogram::new(exponential_buckets(0.001, 4.0, 12))
        });
        registry.register_with_unit(
            "transfer_duration",
            "Duration of completed puts and gets, from request to last byte",
            Unit::Seconds,
            transfer_seconds.clone(),
        );
        let uploads = Gauge::default();
        registry.register(
            "uploads_in_progress",
            "Puts receiving content now",
            uploads.clone(),
        );
        let kept_bytes = Gauge::default();
        registry.register_with_unit(
            "kept",
            "Content of every kept version, before deduplication (refreshed every 10 s)",
            Unit::Bytes,
            kept_bytes.clone(),
        );
        let kept_versions = Gauge::default();
        registry.register(
            "kept_versions",
            "Versions kept, of every source (refreshed every 10 s)",
            kept_versions.clone(),
        );
        Self(Arc::new(Inner {
            registry,
            connections_open,
            connections,
            refused,
            auth,
            requests,
            bytes_in,
            bytes_out,
            transfer_seconds,
            uploads,
            kept_bytes,
            kept_versions,
        }))
    }

    /// The counters in the OpenMetrics text format (which Prometheus reads), ending in
    /// `# EOF`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.0.registry);
        out
    }

    /// A connection was accepted; it counts as open until the guard drops.
    pub(crate) fn connection(&self) -> OpenConnection {
        self.0.connections.inc();
        self.0.connections_open.inc();
        OpenConnection(self.clone())
    }

    /// A connection was closed before it was served.
    pub(crate) fn refused(&self, why: Refused) {
        self.0
            .refused
            .get_or_create(&Reason {
                reason: why.as_str(),
            })
            .inc();
    }

    /// An authentication by `method` ended: accepted or not.
    pub(crate) fn authentication(&self, method: &'static str, accepted: bool) {
        let outcome = if accepted { "ok" } else { "failed" };
        self.0
            .auth
            .get_or_create(&AuthLabels { method, outcome })
            .inc();
    }

    /// A request `op` was answered: `outcome` is `ok`, the error code answered
    /// ([`code_name`]), `failed` (the server failed) or `cut` (the connection ended first).
    pub(crate) fn request(&self, op: &'static str, outcome: &'static str) {
        self.0
            .requests
            .get_or_create(&RequestLabels { op, outcome })
            .inc();
    }

    /// Content bytes received.
    pub(crate) fn received(&self, n: u64) {
        self.0.bytes_in.inc_by(n);
    }

    /// Content bytes sent.
    pub(crate) fn sent(&self, n: u64) {
        self.0.bytes_out.inc_by(n);
    }

    /// A put or get `op` completed after `took`.
    pub(crate) fn transfer(&self, op: &'static str, took: Duration) {
        self.0
            .transfer_seconds
            .get_or_create(&OpLabel { op })
            .observe(took.as_secs_f64());
    }

    /// What the store keeps now.
    pub(crate) fn kept(&self, usage: ferry_backend::Usage) {
        self.0
            .kept_bytes
            .set(i64::try_from(usage.bytes).unwrap_or(i64::MAX));
        self.0
            .kept_versions
            .set(i64::try_from(usage.versions).unwrap_or(i64::MAX));
    }

    /// An upload started; it counts as in progress until the guard drops.
    pub(crate) fn upload(&self) -> InProgress {
        self.0.uploads.inc();
        InProgress(self.clone())
    }
}

/// An accepted connection, counted as open while it lives.
pub(crate) struct OpenConnection(Metrics);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.0.connections_open.dec();
    }
}

/// An upload in progress, counted while it lives.
pub(crate) struct InProgress(Metrics);

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.0.uploads.dec();
    }
}

/// The wire name of an error code (`snake_case`, as in PROTOCOL.md §3).
pub(crate) fn code_name(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::Forbidden => "forbidden",
        ErrorCode::NotFound => "not_found",
        ErrorCode::BadRequest => "bad_request",
        ErrorCode::Unsupported => "unsupported",
        ErrorCode::HashMismatch => "hash_mismatch",
        ErrorCode::Busy => "busy",
        ErrorCode::NoSpace => "no_space",
        ErrorCode::TooLarge => "too_large",
        ErrorCode::QuotaExceeded => "quota_exceeded",
        ErrorCode::ShuttingDown => "shutting_down",
        ErrorCode::Internal => "internal",
        ErrorCode::Other => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_counts_what_happened() {
        let m = Metrics::new();
        let c = m.connection();
        m.authentication("psk", true);
        m.authentication("password", false);
        m.request("get", "ok");
        m.request("get", code_name(ErrorCode::NotFound));
        m.received(10);
        m.sent(7);
        m.refused(Refused::Busy);
        m.transfer("put", Duration::from_millis(3));
        let text = m.render();
        for line in [
            "ferry_connections_total 1",
            "ferry_connections_open 1",
            "ferry_authentications_total{method=\"psk\",outcome=\"ok\"} 1",
            "ferry_authentications_total{method=\"password\",outcome=\"failed\"} 1",
            "ferry_requests_total{op=\"get\",outcome=\"ok\"} 1",
            "ferry_requests_total{op=\"get\",outcome=\"not_found\"} 1",
            "ferry_received_bytes_total 10",
            "ferry_sent_bytes_total 7",
            "ferry_connections_refused_total{reason=\"busy\"} 1",
            "ferry_transfer_duration_seconds_count{op=\"put\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        drop(c);
        assert!(m.render().lines().any(|l| l == "ferry_connections_open 0"));
        assert!(text.ends_with("# EOF\n"));
    }
}
