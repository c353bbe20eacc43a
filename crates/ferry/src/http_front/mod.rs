//! The HTTP front: the data service over plain HTTP/1.1, for clients that can only send
//! HTTP through a host or proxy that terminates TLS itself (docs/HTTP.md §12).
//!
//! Like the TLS front in `net/`, it only decodes, calls the engine and encodes: every
//! request is checked by the signing core of ferry-proto (`ferry_proto::http`) and then
//! handed to the same engine operations (put, get, stat, list, delete, watch) and the same
//! authorization. Nothing imports it but the server's runner, which starts it beside the TLS
//! listener ([`BoundServer::bind_http`](crate::BoundServer::bind_http)).
//!
//! - `listener.rs`: the accept loop (hyper, HTTP/1.1), under a connection budget.
//! - `auth.rs`: a request's signature, freshness and nonce, and the principal it proves
//!   (a credential's, or a password session's).
//! - `login.rs`: password logins (OPAQUE over two unsigned requests) opening sessions.
//! - `reply.rs`: signed responses (docs/HTTP.md §8), and the unsigned 401 / 503.
//! - `data.rs`: put, get (with `Range`), stat, list and delete; `changes.rs`: change events
//!   by long poll.

// A refusal is the response itself, built and returned once per request: boxing it would
// buy nothing.
#![allow(clippy::result_large_err)]

mod auth;
mod changes;
mod data;
mod listener;
mod login;
mod reply;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ferry_proto::http::target::{decode_path, parse_query};
use ferry_proto::http::{Reason, ReplayCache, VerifyError};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};

use crate::engine::{Engine, ServerBackend};
use crate::http_body::OutBody;

pub(crate) use listener::run;

/// Most bytes of an unauthenticated request's body read (and dropped) before its 401.
const DRAIN_REFUSED: u64 = 1 << 20;

/// Counts of the HTTP front's refusals of authentication, by cause (the peer sees one 401
/// for each but the last): for the operator's metrics and for tests that must see the
/// server refuse, not only a client fail.
#[derive(Debug, Default)]
pub struct HttpStats {
    accepted: AtomicU64,
    malformed: AtomicU64,
    outside_window: AtomicU64,
    bad_signature: AtomicU64,
    not_current: AtomicU64,
    replayed: AtomicU64,
    busy: AtomicU64,
}

/// A snapshot of [`HttpStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpRefusals {
    /// Requests whose signature, window, claims and nonce all passed.
    pub accepted: u64,
    /// A malformed `Authorization`, body-hash header, path or query.
    pub malformed: u64,
    /// A timestamp outside the window.
    pub outside_window: u64,
    /// A signature (or a signed body) that does not verify: wrong key, forged claim,
    /// altered request.
    pub bad_signature: u64,
    /// Claims revoked or re-issued.
    pub not_current: u64,
    /// A nonce already used inside the window.
    pub replayed: u64,
    /// Refused with 503 because the nonce cache was full.
    pub busy: u64,
}

impl HttpStats {
    /// The counts so far.
    pub fn refusals(&self) -> HttpRefusals {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        HttpRefusals {
            accepted: get(&self.accepted),
            malformed: get(&self.malformed),
            outside_window: get(&self.outside_window),
            bad_signature: get(&self.bad_signature),
            not_current: get(&self.not_current),
            replayed: get(&self.replayed),
            busy: get(&self.busy),
        }
    }

    fn count(&self, e: VerifyError) {
        let c = match e.reason() {
            None => &self.busy,
            Some(Reason::Malformed) => &self.malformed,
            Some(Reason::OutsideWindow) => &self.outside_window,
            Some(Reason::BadSignature) => &self.bad_signature,
            Some(Reason::NotCurrent) => &self.not_current,
            Some(Reason::Replayed) => &self.replayed,
            Some(_) => &self.malformed,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// What the HTTP front shares between its connections.
pub(crate) struct Front<B> {
    engine: Arc<Engine<B>>,
    /// One per process: every instance sharing a master key must share it (docs/HTTP.md §6).
    cache: Mutex<ReplayCache>,
    /// Password logins between their two requests.
    logins: Mutex<login::Logins>,
    /// The key sealed bodies are sealed to (docs/HTTP.md §11).
    seal: ferry_proto::http::seal::SealKeyPair,
    stats: Arc<HttpStats>,
}

impl<B: ServerBackend> Front<B> {
    /// The server's counters.
    pub(crate) fn metrics(&self) -> &crate::metrics::Metrics {
        &self.engine.metrics
    }

    pub(crate) fn new(engine: Arc<Engine<B>>, stats: Arc<HttpStats>) -> Self {
        Self {
            cache: Mutex::new(ReplayCache::new(engine.limits.http_replay)),
            logins: Mutex::default(),
            seal: ferry_proto::http::seal::server_key(&engine.master),
            engine,
            stats,
        }
    }

    /// Answers one request: authenticate, then route on the decoded path.
    pub(crate) async fn handle(
        &self,
        peer: SocketAddr,
        req: Request<Incoming>,
    ) -> Response<OutBody> {
        let (head, mut body) = req.into_parts();
        // Logins are the only unsigned requests: they open the session that signs the rest.
        match (head.uri.path(), &head.method) {
            ("/v1/login/start", &Method::POST) => return self.login_start(peer, body).await,
            ("/v1/login/finish", &Method::POST) => {
                return self.login_finish(peer, &head, body).await;
            }
            _ => {}
        }
        let authed = match auth::authenticate(self, peer, &head).await {
            Ok(a) => a,
            Err(response) => {
                // Taken (a little of it) so that a proxy in front reads the refusal.
                let deadline = self.engine.limits.transfer_timeout;
                crate::http_body::drain(&mut body, DRAIN_REFUSED, deadline).await;
                return response;
            }
        };
        let (Some(path), Some(query)) = (
            decode_path(head.uri.path()),
            parse_query(head.uri.query().unwrap_or("")),
        ) else {
            return reply::error(&authed, 400, "bad_request", "malformed path or query");
        };
        let method = head.method.clone();
        let route = |prefix: &str| path.strip_prefix(prefix).filter(|n| !n.is_empty());
        if let Some(name) = route("/v1/sources/") {
            let name = name.to_owned();
            match method {
                Method::PUT => data::put(self, peer, &authed, name, &query, body).await,
                Method::GET => data::get(self, &authed, &head, name, &query, body).await,
                Method::DELETE => data::delete(self, &authed, name, &query, body).await,
                _ => reply::error(&authed, 405, "bad_request", "method not allowed here"),
            }
        } else if let Some(name) = route("/v1/stat/") {
            let name = name.to_owned();
            match method {
                Method::GET => data::stat(self, &authed, name, &query, body).await,
                _ => reply::error(&authed, 405, "bad_request", "method not allowed here"),
            }
        } else if path == "/v1/list" {
            match method {
                Method::GET => data::list(self, &authed, &query, body).await,
                _ => reply::error(&authed, 405, "bad_request", "method not allowed here"),
            }
        } else if path == "/v1/changes" {
            match method {
                Method::GET => changes::poll(self, &authed, &query, body).await,
                _ => reply::error(&authed, 405, "bad_request", "method not allowed here"),
            }
        } else {
            reply::error(&authed, 404, "not_found", "no such endpoint")
        }
    }
}
