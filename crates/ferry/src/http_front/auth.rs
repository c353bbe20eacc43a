//! Authentication of one HTTP request (docs/HTTP.md §5): the `Authorization` header parsed,
//! the claims' principal checked as still current by the engine (the same check the TLS
//! front runs before every request), then the window, the signature under keys re-derived
//! from the claims, and the nonce (`ferry_proto::http::verify_request`). Claims that name a
//! password session (§13) are keyed by the stored session's secret instead, and the
//! principal is the stored session's, whatever else the claims say. Every refusal is
//! one 401 to the peer; the cause goes to the log and to [`HttpStats`](super::HttpStats).

use std::net::SocketAddr;

use ferry_proto::auth::{Method, Principal};
use ferry_proto::http::canonical::BodyHash;
use ferry_proto::http::seal::SEALED_CONTENT_TYPE;
use ferry_proto::http::session::{session_of, session_psk};
use ferry_proto::http::{
    Authorization, CONTENT_SHA256_HEADER, Reason, RequestParts, VerifiedRequest, VerifyError,
    verify_request, verify_request_with,
};
use hyper::Response;
use hyper::http::request::Parts;

use super::{Front, reply};
use crate::engine::ServerBackend;
use crate::http_body::OutBody;

/// A request that passed every check: who sent it, and the keys to answer it.
pub(crate) struct Authed {
    pub(crate) principal: Principal,
    pub(crate) verified: VerifiedRequest,
    /// How the request's body is signed.
    pub(crate) body: BodyHash,
    /// Its body is sealed (`Content-Type: application/ferry-sealed`, a signed header), and
    /// so must its answer's be.
    pub(crate) sealed: bool,
}

/// The value of a header that may appear at most once; `Err` if repeated or not visible
/// ASCII. An empty value counts as absent (docs/HTTP.md §2).
fn single<'a>(head: &'a Parts, name: &str) -> Result<Option<&'a str>, ()> {
    let mut values = head.headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(());
    }
    match first {
        None => Ok(None),
        Some(v) => {
            let v = v.to_str().map_err(|_| ())?.trim_matches([' ', '\t']);
            Ok((!v.is_empty()).then_some(v))
        }
    }
}

/// Checks the request's signature and freshness; `Err` is the response that refuses it.
pub(crate) async fn authenticate<B: ServerBackend>(
    front: &Front<B>,
    peer: SocketAddr,
    head: &Parts,
) -> Result<Authed, Response<OutBody>> {
    let refuse = |e: VerifyError, name: &str| {
        front.stats.count(e);
        front.engine.metrics.authentication("http", false);
        match e {
            VerifyError::Busy => {
                tracing::warn!("{peer}: HTTP request from {name} refused: the nonce cache is full");
                reply::busy()
            }
            e => {
                tracing::info!(
                    target: crate::engine::AUDIT,
                    op = "authenticate",
                    method = "http",
                    outcome = "failed",
                    "{peer}: HTTP request refused ({:?}{})",
                    e.reason().unwrap_or(Reason::Malformed),
                    if name.is_empty() {
                        String::new()
                    } else {
                        format!(", claims of {name}")
                    }
                );
                reply::unauthenticated()
            }
        }
    };
    let malformed = VerifyError::Refused(Reason::Malformed);
    let headers = (
        single(head, "authorization"),
        single(head, CONTENT_SHA256_HEADER),
        single(head, "content-type"),
        single(head, "range"),
    );
    let (Ok(Some(authorization)), Ok(Some(body)), Ok(content_type), Ok(range)) = headers else {
        return Err(refuse(malformed, ""));
    };
    let Some(body) = BodyHash::parse(body) else {
        return Err(refuse(malformed, ""));
    };
    let Ok(auth) = Authorization::parse(authorization) else {
        return Err(refuse(malformed, ""));
    };
    let claims = auth.claims();
    let now = crate::clock::now();
    let Ok(session) = session_of(claims) else {
        return Err(refuse(malformed, claims.name()));
    };
    let (principal, secret, current) = match session {
        None => {
            let principal = Principal {
                name: claims.name().to_owned(),
                attributes: claims.attributes().clone(),
                method: Method::Psk {
                    epoch: claims.epoch(),
                },
            };
            // Revoked, re-issued or removed: the engine's own check, as before every TLS
            // request.
            match front.engine.still_valid(&principal).await {
                Ok(c) => (principal, None, c),
                Err(e) => {
                    tracing::error!("{peer}: cannot check {}'s credential: {e}", principal.name);
                    return Err(reply::internal());
                }
            }
        }
        // A live session whose origin (the user's record) is still current.
        Some(id) => match front.engine.live_session(&id, now).await {
            Ok(Some(stored)) if stored.principal.name == claims.name() => {
                let principal = Principal {
                    method: Method::Session { id },
                    ..stored.principal
                };
                (principal, Some(stored.secret), true)
            }
            Ok(_) => {
                let not_current = VerifyError::Refused(Reason::NotCurrent);
                return Err(refuse(not_current, claims.name()));
            }
            Err(e) => {
                tracing::error!("{peer}: cannot check a session of {}: {e}", claims.name());
                return Err(reply::internal());
            }
        },
    };
    let parts = RequestParts::new(
        head.method.as_str(),
        head.uri.path(),
        head.uri.query().unwrap_or(""),
        body,
    )
    .content_type(content_type.unwrap_or(""))
    .range(range.unwrap_or(""));
    let verified = {
        let mut cache = front
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &secret {
            Some(secret) => verify_request_with(
                |claims| session_psk(secret, claims),
                authorization,
                &parts,
                now,
                &mut cache,
                |_| current,
            ),
            None => verify_request(
                &front.engine.master,
                authorization,
                &parts,
                now,
                &mut cache,
                |_| current,
            ),
        }
    };
    match verified {
        Ok(verified) => {
            front
                .stats
                .accepted
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            front.engine.metrics.authentication("http", true);
            tracing::Span::current().record("principal", principal.name.as_str());
            Ok(Authed {
                principal,
                verified,
                body,
                sealed: content_type == Some(SEALED_CONTENT_TYPE),
            })
        }
        Err(e) => Err(refuse(e, &principal.name)),
    }
}

impl super::HttpStats {
    /// Counts a signed body that failed its signature (the request's 401 is sent after it).
    pub(crate) fn body_refused(&self) {
        self.count(VerifyError::Refused(Reason::BadSignature));
    }
}
