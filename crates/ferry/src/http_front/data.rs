//! put, get (with `Range`), stat, list and delete over HTTP: decode the request, call the
//! same engine operation the TLS front calls (`net/data.rs`), encode its reply, and move body
//! bytes between the connection and the engine's body sink or source, a bounded number of
//! buffers at a time.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use ferry_backend::BlobReader;
use ferry_proto::http::canonical::BodyHash;
use ferry_proto::http::chunks::{CHUNK_HEADER_LEN, ChunkSigner};
use ferry_proto::http::target::ByteRange;
use ferry_proto::message::{Get, List, Put, PutEnd, SourceRef};
use hyper::Response;
use hyper::body::Incoming;
use hyper::http::request::Parts;
use tokio::sync::mpsc;

use super::auth::Authed;
use super::{Front, reply};
use crate::engine::{BEYOND_END, Body, Failed, GetReply, ServerBackend, TooMuch};
use crate::http_body::{BodyError, BodyIn, OutBody};
use crate::http_seal::{Unsealing, rng};
use crate::{Error, pipe};
use ferry_proto::http::seal::{RequestOpener, ResponseSealer, SEALED_CONTENT_TYPE};

/// Most bytes of the body of a request other than a put (all of them are empty today).
const SMALL_BODY: usize = 64 * 1024;

/// Most bytes of a refused put's body read (and dropped) before the refusal is answered.
pub(super) const DRAIN_PUT: u64 = 256 << 20;

/// The reading end of the request's body, as its signature says.
pub(super) fn body_in(authed: &Authed, body: Incoming, deadline: Duration) -> BodyIn {
    match authed.body {
        BodyHash::Sha256(h) => BodyIn::hashed(body, h, deadline),
        BodyHash::Streaming => BodyIn::chunked(body, authed.verified.body_verifier(), deadline),
    }
}

/// The response to a body that could not be read.
fn body_failed<B>(front: &Front<B>, authed: &Authed, e: BodyError) -> Response<OutBody> {
    tracing::info!("HTTP request body from {}: {e}", authed.principal.name);
    match e {
        BodyError::NotAuthentic => {
            front.stats.body_refused();
            reply::unauthenticated()
        }
        BodyError::TooLong => reply::error(authed, 413, "bad_request", "body too long"),
        e => reply::error(authed, 400, "bad_request", &e.to_string()),
    }
}

/// Reads and checks the (small) body of a request other than a put.
async fn small_body<B: ServerBackend>(
    front: &Front<B>,
    authed: &Authed,
    body: Incoming,
) -> Result<Vec<u8>, Response<OutBody>> {
    body_in(authed, body, front.engine.limits.transfer_timeout)
        .read_all(SMALL_BODY)
        .await
        .map_err(|e| body_failed(front, authed, e))
}

/// The preamble of every request but a put: reads and checks its (small) body, refuses query
/// parameters other than `allowed`; the body's bytes.
pub(super) async fn small_request<B: ServerBackend>(
    front: &Front<B>,
    authed: &Authed,
    body: Incoming,
    query: &BTreeMap<String, String>,
    allowed: &[&str],
) -> Result<Vec<u8>, Response<OutBody>> {
    let bytes = small_body(front, authed, body).await?;
    only(authed, query, allowed)?;
    Ok(bytes)
}

/// Refuses query parameters other than `allowed`.
pub(super) fn only(
    authed: &Authed,
    query: &BTreeMap<String, String>,
    allowed: &[&str],
) -> Result<(), Response<OutBody>> {
    match query.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(reply::error(
            authed,
            400,
            "bad_request",
            &format!("unknown query parameter '{k}'"),
        )),
        None => Ok(()),
    }
}

/// A decimal query parameter.
pub(super) fn number(
    authed: &Authed,
    query: &BTreeMap<String, String>,
    key: &str,
) -> Result<Option<u64>, Response<OutBody>> {
    match query.get(key) {
        None => Ok(None),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if v.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(n)),
            _ => Err(reply::error(
                authed,
                400,
                "bad_request",
                &format!("{key} must be a decimal number"),
            )),
        },
    }
}

/// The response to a server failure inside an operation.
fn failed(authed: &Authed, what: &str, e: &Error) -> Response<OutBody> {
    tracing::error!("HTTP {what} for {}: {e}", authed.principal.name);
    reply::error(authed, 500, "internal", "internal error")
}

/// `PUT /v1/sources/{name}?size=N&blake3=HEX`: the body, streamed into the engine's upload.
pub(super) async fn put<B: ServerBackend>(
    front: &Front<B>,
    peer: SocketAddr,
    authed: &Authed,
    source: String,
    query: &BTreeMap<String, String>,
    mut body: Incoming,
) -> Response<OutBody> {
    let deadline = front.engine.limits.transfer_timeout;
    match start_put(front, authed, source, query).await {
        Ok((upload, announced, source)) => {
            receive(front, peer, authed, upload, announced, source, body).await
        }
        Err(refusal) => {
            crate::http_body::drain(&mut body, DRAIN_PUT, deadline).await;
            refusal
        }
    }
}

/// Checks a put's query and starts its upload.
async fn start_put<B: ServerBackend>(
    front: &Front<B>,
    authed: &Authed,
    source: String,
    query: &BTreeMap<String, String>,
) -> Result<(crate::engine::Upload<B>, Option<[u8; 32]>, String), Response<OutBody>> {
    only(authed, query, &["size", "blake3"])?;
    let size = number(authed, query, "size")?;
    let announced = match query.get("blake3") {
        None => None,
        Some(h) => match data_encoding::HEXLOWER_PERMISSIVE
            .decode(h.as_bytes())
            .ok()
            .and_then(|v| <[u8; 32]>::try_from(v).ok())
        {
            Some(h) => Some(h),
            None => {
                return Err(reply::error(
                    authed,
                    400,
                    "bad_request",
                    "blake3 must be 64 hex digits",
                ));
            }
        },
    };
    let req = Put {
        source,
        size,
        offset: 0,
        hash: None,
        streamed: false,
        mtime: None,
        executable: false,
        chunks: None,
    };
    match front.engine.put(&authed.principal, &req).await {
        Ok(Ok(u)) => Ok((u, announced, req.source)),
        Ok(Err(r)) => Err(reply::refusal(authed, r)),
        Err(e) => Err(failed(authed, "put", &e)),
    }
}

/// Receives a put's body into its upload and finishes it.
async fn receive<B: ServerBackend>(
    front: &Front<B>,
    peer: SocketAddr,
    authed: &Authed,
    mut upload: crate::engine::Upload<B>,
    announced: Option<[u8; 32]>,
    source: String,
    body: Incoming,
) -> Response<OutBody> {
    let engine = &front.engine;
    // Chunks are received into the buffers the upload's writer has written.
    let mut reader =
        body_in(authed, body, engine.limits.transfer_timeout).with_spares(upload.spares().clone());
    let mut hasher = blake3::Hasher::new();
    let mut received = 0u64;
    // A sealed body is opened chunk by chunk as it arrives (docs/HTTP.md §11).
    let mut opener = authed.sealed.then(|| RequestOpener::new(&front.seal));
    let mut unsealing = Unsealing::default();
    let complete = loop {
        match reader.next().await {
            Ok(Some(data)) => {
                let data = match &mut opener {
                    None => data,
                    Some(o) => match unsealing.feed(&data, |i| o.decode(i)) {
                        Ok(plain) => plain,
                        Err(_) => {
                            upload.abandon(engine).await;
                            reader.drain(DRAIN_PUT).await;
                            return unopened(authed);
                        }
                    },
                };
                if data.is_empty() {
                    continue;
                }
                hasher.update(&data);
                received += data.len() as u64;
                match upload.write(data).await {
                    Ok(true) => {}
                    // The writer stopped; `finish` says why.
                    Ok(false) => break Ok(false),
                    Err(TooMuch(r)) => {
                        upload.abandon(engine).await;
                        reader.drain(DRAIN_PUT).await;
                        return reply::refusal(authed, r);
                    }
                }
            }
            Ok(None) if opener.is_some() && unsealing.end().is_err() => {
                upload.abandon(engine).await;
                return unopened(authed);
            }
            Ok(None) => break Ok(true),
            Err(e) => break Err(e),
        }
    };
    let complete = match complete {
        Ok(true) => true,
        Ok(false) => {
            // The store failed (full, say): take the rest before answering why.
            reader.drain(DRAIN_PUT).await;
            false
        }
        Err(e) => {
            // Nothing of a body that failed its signature (or was cut) is committed.
            upload.abandon(engine).await;
            tracing::info!("{peer}: HTTP put of {source} abandoned");
            if matches!(e, BodyError::NotAuthentic) {
                reader.drain(DRAIN_PUT).await;
            }
            return body_failed(front, authed, e);
        }
    };
    let end = complete.then(|| PutEnd {
        size: received,
        hash: announced.unwrap_or(*hasher.finalize().as_bytes()),
    });
    match upload.finish(engine, end).await {
        Ok(Ok(entry)) => match &opener {
            Some(o) => sealed_json(authed, o, 201, &reply::entry(&entry)),
            None => reply::json(authed, 201, &reply::entry(&entry)),
        },
        Ok(Err(r)) => reply::refusal(authed, r),
        Err(Failed { answer, error }) => {
            tracing::warn!("{peer}: HTTP put of {source}: {error}");
            match answer {
                Some(r) => reply::refusal(authed, r),
                None => reply::error(authed, 500, "internal", "internal error"),
            }
        }
    }
}

/// `GET /v1/sources/{name}?version=N` with an optional `Range: bytes=FIRST-[LAST]`.
pub(super) async fn get<B: ServerBackend>(
    front: &Front<B>,
    authed: &Authed,
    head: &Parts,
    source: String,
    query: &BTreeMap<String, String>,
    body: Incoming,
) -> Response<OutBody> {
    let request = match small_request(front, authed, body, query, &["version"]).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    // A sealed get sends an empty sealed body: the context its answer is sealed under.
    let mut sealing = None;
    if authed.sealed {
        let mut opener = RequestOpener::new(&front.seal);
        let mut unsealing = Unsealing::default();
        let mut prefix = Vec::new();
        let opened = unsealing
            .feed(&request, |i| opener.decode(i))
            .and_then(|_| unsealing.end())
            .and_then(|()| opener.response_sealer(&mut rng(), &mut prefix));
        match opened {
            Ok(sealer) => sealing = Some((sealer, prefix)),
            Err(_) => return unopened(authed),
        }
    }
    let version = match number(authed, query, "version") {
        Ok(v) => v,
        Err(r) => return r,
    };
    // A single `Range` header was checked (and signed) by `auth`.
    let range = match head.headers.get(hyper::header::RANGE) {
        None => None,
        Some(v) => match v.to_str().ok().and_then(ByteRange::parse) {
            Some(r) => Some(r),
            None => {
                return reply::error(
                    authed,
                    416,
                    "bad_range",
                    "only one range, bytes=FIRST- or bytes=FIRST-LAST",
                );
            }
        },
    };
    let engine = &front.engine;
    let req = Get {
        source,
        version,
        offset: range.map_or(0, |r| r.first),
        len: None,
    };
    let GetReply::<_> {
        entry,
        offset: _,
        body,
        slot,
    } = match engine.get(&authed.principal, req).await {
        Ok(Ok(r)) => r,
        Ok(Err(r)) if range.is_some() && r.message == BEYOND_END => {
            return reply::error(authed, 416, "bad_range", "range starts past the end");
        }
        Ok(Err(r)) => return reply::refusal(authed, r),
        Err(e) => return failed(authed, "get", &e),
    };
    let size = entry.size;
    let (first, len) = match range {
        None => (0, size),
        Some(r) => match r.resolve(size) {
            Some(x) => x,
            None => return reply::error(authed, 416, "bad_range", "range starts past the end"),
        },
    };
    let partial = range.is_some() && len > 0;
    let content_range = partial.then(|| format!("bytes {first}-{}/{size}", first + len - 1));
    let extra = [
        ("x-ferry-version", entry.version.to_string()),
        ("x-ferry-size", size.to_string()),
        (
            "x-ferry-blake3",
            data_encoding::HEXLOWER.encode(&entry.hash),
        ),
    ];
    let status = if partial { 206 } else { 200 };
    let content_type = if sealing.is_some() {
        SEALED_CONTENT_TYPE
    } else {
        reply::OCTETS
    };
    let (response, tx, signer) = match reply::stream(
        authed,
        status,
        content_type,
        content_range.as_deref(),
        &extra,
    ) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let deadline = engine.limits.transfer_timeout;
    let (seal, prefix) = match sealing {
        Some((sealer, prefix)) => (Some(sealer), prefix),
        None => (None, Vec::new()),
    };
    let out = Out { signer, seal };
    // The principal's transfer place goes with the body until it is sent.
    tokio::spawn(async move {
        send_body(body, len, out, prefix, tx, deadline).await;
        drop(slot);
    });
    response
}

type Sender = mpsc::Sender<Result<Bytes, std::io::Error>>;

/// Hands `out` to the connection within `deadline`; false if it is gone or stalled.
async fn push(tx: &Sender, out: Vec<u8>, deadline: Duration) -> bool {
    push_bytes(tx, Bytes::from(out), deadline).await
}

/// [`push`] for bytes already shared.
async fn push_bytes(tx: &Sender, out: Bytes, deadline: Duration) -> bool {
    matches!(
        tokio::time::timeout(deadline, tx.send(Ok(out))).await,
        Ok(Ok(()))
    )
}

/// Streams the first `len` bytes of a get's body as signed chunks, then the signed end. A
/// blob shorter than its record ends the body with an error, without its signed end.
async fn send_body<R: BlobReader>(
    body: Body<R>,
    len: u64,
    mut signer: Out,
    prefix: Vec<u8>,
    tx: Sender,
    deadline: Duration,
) {
    let mut left = len;
    if !prefix.is_empty() {
        let mut out = Vec::with_capacity(prefix.len() + CHUNK_HEADER_LEN);
        signer.signer.push(&prefix, &mut out);
        if !push(&tx, out, deadline).await {
            return;
        }
    }
    match body {
        Body::Small(chunk) => {
            let data = chunk.data();
            let take = data.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let mut out = Vec::with_capacity(take + 2 * CHUNK_HEADER_LEN);
            signer.push(&data[..take], &mut out);
            left -= take as u64;
            if left == 0 {
                signer.finish(&mut out);
            }
            if !push(&tx, out, deadline).await || left == 0 {
                return;
            }
        }
        Body::Large(reader) => {
            let (mut rx, spares, _done) = pipe::spawn_blob_reader(reader);
            while left > 0 {
                let Some(chunk) = rx.recv().await else {
                    break;
                };
                let take = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                left -= take as u64;
                if !signer.send(chunk, take, &spares, &tx, deadline).await {
                    // The client went away or stopped reading; dropping `rx` stops the reader.
                    return;
                }
            }
            if left == 0 {
                let mut out = Vec::with_capacity(CHUNK_HEADER_LEN);
                signer.finish(&mut out);
                push(&tx, out, deadline).await;
                return;
            }
        }
    }
    tracing::error!("a stored blob is shorter than its record; the HTTP get is cut");
    let _ = tx
        .send(Err(std::io::Error::other(
            "stored blob shorter than its record",
        )))
        .await;
}

/// Where a get's data goes: sealed first if the request was (docs/HTTP.md §11), then signed
/// as chunks (§7).
struct Out {
    signer: ChunkSigner,
    seal: Option<ResponseSealer>,
}

impl Out {
    /// Sends the first `take` bytes of `chunk` as one signed chunk; unsealed, without a copy
    /// (its header, then its data lent from the chunk's buffer, which goes back to `spares`
    /// once sent). False if the connection is gone or stalled.
    async fn send(
        &mut self,
        chunk: crate::buf::Chunk,
        take: usize,
        spares: &crate::buf::Spares<Vec<u8>>,
        tx: &Sender,
        deadline: Duration,
    ) -> bool {
        use ferry_proto::frame::HEADER_LEN;
        let data = &chunk.data()[..take];
        if self.seal.is_none()
            && let Some(header) = self.signer.header(data)
        {
            let body = crate::http_body::lend(
                chunk.buf,
                HEADER_LEN..HEADER_LEN + take,
                HEADER_LEN,
                spares,
            );
            return push_bytes(tx, Bytes::copy_from_slice(&header), deadline).await
                && push_bytes(tx, body, deadline).await;
        }
        let mut out = Vec::with_capacity(take + CHUNK_HEADER_LEN + 64);
        self.push(data, &mut out);
        spares.give(chunk.into_framed());
        push(tx, out, deadline).await
    }

    fn push(&mut self, data: &[u8], out: &mut Vec<u8>) {
        match &mut self.seal {
            None => self.signer.push(data, out),
            Some(sealer) => {
                let mut sealed = Vec::with_capacity(data.len() + 64);
                // Fails only after 2^64 chunks.
                if sealer.push(data, &mut sealed).is_ok() {
                    self.signer.push(&sealed, out);
                }
            }
        }
    }

    fn finish(mut self, out: &mut Vec<u8>) {
        if let Some(sealer) = self.seal.take() {
            let mut sealed = Vec::with_capacity(64);
            if sealer.finish(&[], &mut sealed).is_ok() {
                self.signer.push(&sealed, out);
            }
        }
        self.signer.finish(out);
    }
}

/// A sealed body that does not open: 400 (the signature held, so the sender sealed it
/// wrong, or to another key).
fn unopened(authed: &Authed) -> Response<OutBody> {
    reply::error(authed, 400, "bad_request", "sealed body does not open")
}

/// A JSON answer sealed under the request's context, signed whole.
fn sealed_json(
    authed: &Authed,
    opener: &RequestOpener<'_>,
    status: u16,
    value: &serde_json::Value,
) -> Response<OutBody> {
    let mut body = Vec::new();
    let sealed = opener
        .response_sealer(&mut rng(), &mut body)
        .and_then(|s| s.finish(value.to_string().as_bytes(), &mut body));
    match sealed {
        Ok(()) => reply::whole(authed, status, SEALED_CONTENT_TYPE, Bytes::from(body)),
        Err(_) => reply::error(authed, 500, "internal", "internal error"),
    }
}

/// `GET /v1/stat/{name}`.
pub(super) async fn stat<B: ServerBackend>(
    front: &Front<B>,
    authed: &Authed,
    source: String,
    query: &BTreeMap<String, String>,
    body: Incoming,
) -> Response<OutBody> {
    if let Err(r) = small_request(front, authed, body, query, &[]).await {
        return r;
    }
    match front
        .engine
        .stat(&authed.principal, SourceRef { source })
        .await
    {
        Ok(Ok(e)) => reply::json(authed, 200, &reply::entry(&e)),
        Ok(Err(r)) => reply::refusal(authed, r),
        Err(e) => failed(authed, "stat", &e),
    }
}

/// `DELETE /v1/sources/{name}`.
pub(super) async fn delete<B: ServerBackend>(
    front: &Front<B>,
    authed: &Authed,
    source: String,
    query: &BTreeMap<String, String>,
    body: Incoming,
) -> Response<OutBody> {
    if let Err(r) = small_request(front, authed, body, query, &[]).await {
        return r;
    }
    let req = SourceRef {
        source: source.clone(),
    };
    match front.engine.delete(&authed.principal, req).await {
        Ok(Ok(version)) => reply::json(
            authed,
            200,
            &serde_json::json!({ "source": source, "version": version }),
        ),
        Ok(Err(r)) => reply::refusal(authed, r),
        Err(e) => failed(authed, "delete", &e),
    }
}

/// `GET /v1/list?prefix=P&after=A`: one page.
pub(super) async fn list<B: ServerBackend>(
    front: &Front<B>,
    authed: &Authed,
    query: &BTreeMap<String, String>,
    body: Incoming,
) -> Response<OutBody> {
    if let Err(r) = small_request(front, authed, body, query, &["prefix", "after"]).await {
        return r;
    }
    let req = List {
        prefix: query.get("prefix").cloned().unwrap_or_default(),
        after: query.get("after").cloned(),
    };
    match front.engine.list(&authed.principal, req).await {
        Ok(Ok(page)) => {
            let entries: Vec<_> = page.entries.iter().map(reply::entry).collect();
            reply::json(
                authed,
                200,
                &serde_json::json!({ "entries": entries, "next": page.next }),
            )
        }
        Ok(Err(r)) => reply::refusal(authed, r),
        Err(e) => failed(authed, "list", &e),
    }
}
