//! Responses of the HTTP front. Every response to an authenticated request is signed
//! (docs/HTTP.md §8): a small JSON body under its SHA-256, a data body as signed chunks
//! chained from the response's signature. A refusal of authentication (401), a full nonce
//! cache (503) and a failure before authentication cannot be signed (there is no verified
//! request to sign for): they carry no data, and a client treats them as failures only.

use bytes::Bytes;
use ferry_proto::http::canonical::BodyHash;
use ferry_proto::http::chunks::ChunkSigner;
use ferry_proto::http::{CONTENT_SHA256_HEADER, RESPONSE_SIGNATURE_HEADER, ResponseParts};
use ferry_proto::message::ErrorCode;
use ferry_store::Entry;
use hyper::Response;
use hyper::header::{CONTENT_RANGE, CONTENT_TYPE, HeaderValue};
use tokio::sync::mpsc;

use super::auth::Authed;
use crate::engine::Refusal;
use crate::http_body::OutBody;

/// The content type of every JSON body.
pub(crate) const JSON: &str = "application/json";
/// The content type of a source's data.
pub(crate) const OCTETS: &str = "application/octet-stream";

fn unsigned(status: u16, code: &str, message: &str) -> Response<OutBody> {
    let body = serde_json::json!({ "error": code, "message": message }).to_string();
    let mut r = Response::new(OutBody::full(body));
    *r.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
    r
}

/// 401, the same for every cause.
pub(crate) fn unauthenticated() -> Response<OutBody> {
    let mut r = unsigned(401, "unauthenticated", "request not authenticated");
    r.headers_mut().insert(
        hyper::header::WWW_AUTHENTICATE,
        HeaderValue::from_static(ferry_proto::http::ALGORITHM),
    );
    r
}

/// 503 with `Retry-After`: the nonce cache is full (docs/HTTP.md §6).
pub(crate) fn busy() -> Response<OutBody> {
    let mut r = unsigned(503, "busy", "server busy, retry later with a new nonce");
    r.headers_mut()
        .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// 500 before a request could be verified.
pub(crate) fn internal() -> Response<OutBody> {
    unsigned(500, "internal", "internal error")
}

/// Signs a response's head; `None` only if a signed header value breaks the canonical rules.
fn sign(
    authed: &Authed,
    status: u16,
    content_type: &str,
    content_range: Option<&str>,
    body: BodyHash,
) -> Option<Response<()>> {
    let mut parts = ResponseParts::new(status, body).content_type(content_type);
    if let Some(cr) = content_range {
        parts = parts.content_range(cr);
    }
    let signature = authed.verified.sign_response(&parts).ok()?;
    let mut b = Response::builder()
        .status(status)
        .header(CONTENT_TYPE, content_type)
        .header(CONTENT_SHA256_HEADER, body.to_header())
        .header(RESPONSE_SIGNATURE_HEADER, signature.to_hex());
    if let Some(cr) = content_range {
        b = b.header(CONTENT_RANGE, cr);
    }
    b.body(()).ok()
}

/// A signed JSON response.
pub(crate) fn json(authed: &Authed, status: u16, value: &serde_json::Value) -> Response<OutBody> {
    whole(authed, status, JSON, Bytes::from(value.to_string()))
}

/// A signed response with a whole body of type `content_type`.
pub(crate) fn whole(
    authed: &Authed,
    status: u16,
    content_type: &str,
    body: Bytes,
) -> Response<OutBody> {
    match sign(authed, status, content_type, None, BodyHash::of(&body)) {
        Some(head) => head.map(|()| OutBody::full(body)),
        None => internal(),
    }
}

/// A signed error response: `{"error": code, "message": message}`.
pub(crate) fn error(authed: &Authed, status: u16, code: &str, message: &str) -> Response<OutBody> {
    json(
        authed,
        status,
        &serde_json::json!({ "error": code, "message": message }),
    )
}

/// The HTTP status and the JSON name of an engine's error code.
pub(crate) fn status_of(code: ErrorCode) -> (u16, &'static str) {
    match code {
        ErrorCode::Forbidden => (403, "forbidden"),
        ErrorCode::NotFound => (404, "not_found"),
        ErrorCode::BadRequest => (400, "bad_request"),
        ErrorCode::Unsupported => (400, "unsupported"),
        ErrorCode::HashMismatch => (422, "hash_mismatch"),
        ErrorCode::Busy => (503, "busy"),
        ErrorCode::NoSpace => (507, "no_space"),
        ErrorCode::ShuttingDown => (503, "shutting_down"),
        ErrorCode::TooLarge => (413, "too_large"),
        ErrorCode::QuotaExceeded => (507, "quota_exceeded"),
        _ => (500, "internal"),
    }
}

/// The engine's refusal, signed.
pub(crate) fn refusal(authed: &Authed, r: Refusal) -> Response<OutBody> {
    let (status, code) = status_of(r.code);
    error(authed, status, code, &r.message)
}

/// An entry as JSON.
pub(crate) fn entry(e: &Entry) -> serde_json::Value {
    serde_json::json!({
        "source": e.source,
        "version": e.version,
        "size": e.size,
        "blake3": data_encoding::HEXLOWER.encode(&e.hash),
        "modified": e.modified,
        "by": e.by,
    })
}

/// A streamed response, the sender that feeds its body, and the signer of its chunks.
pub(crate) type Streamed = (
    Response<OutBody>,
    mpsc::Sender<Result<Bytes, std::io::Error>>,
    ChunkSigner,
);

/// A signed response whose body streams as signed chunks: the response, the sender its
/// producer feeds, and the signer of its chunks (chained from the response's signature).
pub(crate) fn stream(
    authed: &Authed,
    status: u16,
    content_type: &str,
    content_range: Option<&str>,
    extra: &[(&'static str, String)],
) -> Result<Streamed, Response<OutBody>> {
    let mut parts = ResponseParts::new(status, BodyHash::Streaming).content_type(content_type);
    if let Some(cr) = content_range {
        parts = parts.content_range(cr);
    }
    let Ok(signature) = authed.verified.sign_response(&parts) else {
        return Err(internal());
    };
    let Some(head) = sign(
        authed,
        status,
        content_type,
        content_range,
        BodyHash::Streaming,
    ) else {
        return Err(internal());
    };
    let (tx, body) = OutBody::channel();
    let mut response = head.map(|()| body);
    for (name, value) in extra {
        if let Ok(v) = HeaderValue::from_str(value) {
            response.headers_mut().insert(*name, v);
        }
    }
    Ok((
        response,
        tx,
        authed.verified.response_body_signer(signature),
    ))
}
