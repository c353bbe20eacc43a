//! One signed exchange with the HTTP front: connect (plain TCP, or TLS to a proxy that
//! terminates it), sign the request (docs/HTTP.md §3-4), send it with its body (whole, or as
//! signed chunks streamed from a reader), and check the response's signature (§8) before
//! anything of it is believed.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_proto::http::canonical::BodyHash;
use ferry_proto::http::chunks::MAX_CHUNK_LEN;
use ferry_proto::http::seal::{RequestSealer, ResponseOpener, SEALED_CONTENT_TYPE, SealPublicKey};
use ferry_proto::http::{
    CONTENT_SHA256_HEADER, Nonce, RESPONSE_SIGNATURE_HEADER, RequestParts, RequestSigner,
    ResponseParts, SignedRequest,
};
use hyper::body::Incoming;
use hyper::header::{CONTENT_RANGE, CONTENT_TYPE};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;

use crate::Error;
use crate::buf::Spares;
use crate::http_body::{BodyError, BodyIn, OutBody};

/// A byte stream hyper can run HTTP/1.1 over.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Where requests go: `http://HOST:PORT` or `https://HOST:PORT`.
#[derive(Clone, Debug)]
pub(crate) struct Base {
    pub(crate) https: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl Base {
    /// Parses a base URL: a scheme, a host and an optional port, nothing after but `/`.
    pub(crate) fn parse(url: &str) -> Result<Self, Error> {
        let bad = || Error::Config(format!("not an http:// or https:// base URL: {url}"));
        let (https, rest) = if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else {
            return Err(bad());
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
            return Err(bad());
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h.to_owned(), p.parse().map_err(|_| bad())?)
            }
            _ => (authority.to_owned(), if https { 443 } else { 80 }),
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(bad());
        }
        Ok(Self { https, host, port })
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// What a request sends as its body.
pub(crate) enum ReqBody {
    /// Nothing.
    Empty,
    /// A reader's bytes, as signed chunks.
    Stream(Box<dyn AsyncRead + Unpin + Send>),
    /// A reader's bytes sealed to the key (docs/HTTP.md §11), as signed chunks; the opener
    /// of the answer goes to the sender once the body is sealed.
    Sealed(
        Box<dyn AsyncRead + Unpin + Send>,
        SealPublicKey,
        tokio::sync::oneshot::Sender<ResponseOpener>,
    ),
    /// A whole body of this content type, under its SHA-256.
    Whole(Vec<u8>, &'static str),
}

/// A response whose head verified, with the request it answers.
pub(crate) struct Answer {
    pub(crate) status: u16,
    /// Its headers (only `Content-Range` and `Content-Type` among them are signed).
    pub(crate) headers: hyper::HeaderMap,
    /// The verified body's reader.
    pub(crate) body: BodyIn,
}

/// How long a response may take to start, and each later piece of its body.
pub(crate) const DEADLINE: Duration = Duration::from_secs(60);

pub(crate) struct Transport {
    pub(crate) base: Base,
    pub(crate) signer: RequestSigner,
    pub(crate) tls: Option<tokio_rustls::TlsConnector>,
}

fn altered(what: &str) -> Error {
    Error::Protocol(format!(
        "the HTTP response's {what} does not verify: it was altered in transit or is not from this server"
    ))
}

/// Connects to `base`, through TLS with `tls` if given.
async fn connect(
    base: &Base,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> Result<Box<dyn Io>, Error> {
    let addr = base.authority();
    let tcp = TcpStream::connect((base.host.as_str(), base.port))
        .await
        .map_err(|source| Error::Connect {
            addr: addr.clone(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    match tls {
        None => Ok(Box::new(tcp)),
        Some(connector) => {
            let name = rustls::pki_types::ServerName::try_from(base.host.clone())
                .map_err(|e| Error::Config(format!("bad host name {}: {e}", base.host)))?;
            let tls = connector.connect(name, tcp).await.map_err(|e| {
                if crate::tls::is_pin_mismatch(&e) {
                    Error::ServerIdMismatch(addr.clone())
                } else {
                    Error::Connection(e)
                }
            })?;
            Ok(Box::new(tls))
        }
    }
}

/// Sends one unsigned `POST` (a login step, docs/HTTP.md §13) with `body` and an optional
/// extra header; returns the status, headers and body (at most `limit` bytes).
pub(crate) async fn post_unsigned(
    base: &Base,
    tls: Option<&tokio_rustls::TlsConnector>,
    path: &str,
    header: Option<(&str, String)>,
    body: Vec<u8>,
    limit: usize,
) -> Result<(u16, hyper::HeaderMap, Vec<u8>), Error> {
    use http_body_util::BodyExt;
    let mut req = Request::builder()
        .method("POST")
        .uri(path)
        .header(hyper::header::HOST, base.authority())
        .header(CONTENT_TYPE, "application/octet-stream");
    if let Some((name, value)) = header {
        req = req.header(name, value);
    }
    let req = req
        .body(OutBody::full(body))
        .map_err(|e| Error::Config(format!("bad request: {e}")))?;
    let io = connect(base, tls).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(http_error)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let read = async {
        let response = sender.send_request(req).await.map_err(http_error)?;
        let (head, mut incoming) = response.into_parts();
        let mut out = Vec::new();
        while let Some(frame) = incoming.frame().await {
            if let Ok(data) = frame.map_err(http_error)?.into_data() {
                if out.len() + data.len() > limit {
                    return Err(Error::Protocol("HTTP login answer too long".into()));
                }
                out.extend_from_slice(&data);
            }
        }
        Ok((head.status.as_u16(), head.headers, out))
    };
    tokio::time::timeout(DEADLINE, read)
        .await
        .map_err(|_| Error::Timeout("the HTTP response"))?
}

impl Transport {
    async fn connect(&self) -> Result<Box<dyn Io>, Error> {
        connect(&self.base, self.tls.as_ref()).await
    }

    /// Signs and sends one request; returns the verified response head and its body reader.
    pub(crate) async fn exchange(
        &self,
        method: &str,
        path: &str,
        query: &str,
        range: Option<&str>,
        body: ReqBody,
    ) -> Result<Answer, Error> {
        let hash = match &body {
            ReqBody::Empty => BodyHash::of(b""),
            ReqBody::Stream(_) | ReqBody::Sealed(..) => BodyHash::Streaming,
            ReqBody::Whole(b, _) => BodyHash::of(b),
        };
        let content_type = match &body {
            ReqBody::Empty => "",
            ReqBody::Stream(_) => "application/octet-stream",
            ReqBody::Sealed(..) => SEALED_CONTENT_TYPE,
            ReqBody::Whole(_, t) => *t,
        };
        let parts = RequestParts::new(method, path, query, hash)
            .content_type(content_type)
            .range(range.unwrap_or(""));
        let nonce = Nonce::generate(&mut rand_core::OsRng);
        let signed = self
            .signer
            .sign(&parts, crate::clock::now(), nonce)
            .map_err(|e| Error::Config(e.to_string()))?;
        let target = if query.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{query}")
        };
        let mut req = Request::builder()
            .method(method)
            .uri(target)
            .header(hyper::header::HOST, self.base.authority())
            .header(hyper::header::AUTHORIZATION, signed.authorization())
            .header(CONTENT_SHA256_HEADER, hash.to_header());
        if !content_type.is_empty() {
            req = req.header(CONTENT_TYPE, content_type);
        }
        if let Some(r) = range {
            req = req.header(hyper::header::RANGE, r);
        }
        let out = match body {
            ReqBody::Empty => OutBody::full(Bytes::new()),
            ReqBody::Whole(b, _) => OutBody::full(b),
            ReqBody::Stream(reader) => {
                let (tx, out) = OutBody::channel();
                tokio::spawn(send_chunks(reader, signed.body_signer(), tx, None));
                out
            }
            ReqBody::Sealed(reader, key, opener) => {
                let mut head = Vec::new();
                let sealer = RequestSealer::new(&key, &mut crate::http_seal::rng(), &mut head)
                    .map_err(|e| Error::Config(format!("cannot seal: {e}")))?;
                let (tx, out) = OutBody::channel();
                let seal = Some((sealer, head, opener));
                tokio::spawn(send_chunks(reader, signed.body_signer(), tx, seal));
                out
            }
        };
        let req = req
            .body(out)
            .map_err(|e| Error::Config(format!("bad request: {e}")))?;
        let io = self.connect().await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(http_error)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let response = tokio::time::timeout(DEADLINE, sender.send_request(req))
            .await
            .map_err(|_| Error::Timeout("the HTTP response"))?
            .map_err(http_error)?;
        verify(&signed, response)
    }
}

fn http_error(e: hyper::Error) -> Error {
    Error::Connection(std::io::Error::other(e))
}

/// Checks a response's head against the request; a 401 or 503 cannot be signed (there was
/// no verified request to answer) and becomes its error without further ado.
fn verify(signed: &SignedRequest, response: Response<Incoming>) -> Result<Answer, Error> {
    let status = response.status().as_u16();
    let header = |name: &str| -> Result<Option<String>, Error> {
        match response.headers().get(name) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .map(|s| Some(s.trim_matches([' ', '\t']).to_owned()))
                .map_err(|_| altered("head")),
        }
    };
    let Some(signature) = header(RESPONSE_SIGNATURE_HEADER)? else {
        return Err(match status {
            401 => Error::AuthFailed,
            503 => Error::Busy("the HTTP front asks to retry later".into()),
            s => Error::Protocol(format!(
                "unsigned HTTP response {s}: not from a ferry HTTP front, or altered in transit"
            )),
        });
    };
    let hash = header(CONTENT_SHA256_HEADER)?
        .and_then(|h| BodyHash::parse(&h))
        .ok_or_else(|| altered("body hash"))?;
    let mut parts = ResponseParts::new(status, hash);
    if let Some(ct) = header(CONTENT_TYPE.as_str())? {
        parts = parts.content_type(&ct);
    }
    if let Some(cr) = header(CONTENT_RANGE.as_str())? {
        parts = parts.content_range(&cr);
    }
    let seed = signed
        .verify_response(&parts, &signature)
        .map_err(|_| altered("signature"))?;
    let (head, incoming) = response.into_parts();
    let body = match hash {
        BodyHash::Sha256(h) => BodyIn::hashed(incoming, h, DEADLINE),
        BodyHash::Streaming => {
            BodyIn::chunked(incoming, signed.response_body_verifier(seed), DEADLINE)
        }
    };
    Ok(Answer {
        status,
        headers: head.headers,
        body,
    })
}

/// Reads `reader` to its end and sends it as signed chunks, then the signed end. A read
/// error aborts the body (the server then stores nothing).
async fn send_chunks(
    mut reader: Box<dyn AsyncRead + Unpin + Send>,
    mut signer: ferry_proto::http::chunks::ChunkSigner,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    mut seal: Option<SealOut>,
) {
    use ferry_proto::http::chunks::CHUNK_HEADER_LEN;
    const PIECE: usize = MAX_CHUNK_LEN;
    let cannot_seal = || std::io::Error::other("cannot seal");
    // Unsealed, each chunk is read into a buffer after room for its header, which is
    // written in place once the data is signed: no copy, and the buffers cycle through
    // `spares` once the connection has sent them.
    let spares = Spares::<Vec<u8>>::default();
    if let Some((_, head, _)) = &mut seal {
        // The sealed body's header (key ID, suite, `enc`) goes first.
        let mut out = Vec::new();
        signer.push(&std::mem::take(head), &mut out);
        if tx.send(Ok(Bytes::from(out))).await.is_err() {
            return;
        }
    }
    loop {
        let mut buf = spares
            .take()
            .unwrap_or_else(|| Vec::with_capacity(CHUNK_HEADER_LEN + PIECE));
        buf.resize(CHUNK_HEADER_LEN + PIECE, 0);
        // Fill the piece (a reader may return less than asked long before its end).
        let mut n = 0;
        while n < PIECE {
            match reader.read(&mut buf[CHUNK_HEADER_LEN + n..]).await {
                Ok(0) => break,
                Ok(got) => n += got,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
        if n == 0 {
            let mut out = Vec::with_capacity(2 * CHUNK_HEADER_LEN + 64);
            if let Some((sealer, _, opener)) = seal.take() {
                let mut sealed = Vec::new();
                let Ok(o) = sealer.finish(&[], &mut sealed) else {
                    let _ = tx.send(Err(cannot_seal())).await;
                    return;
                };
                signer.push(&sealed, &mut out);
                let _ = opener.send(o);
            }
            signer.finish(&mut out);
            let _ = tx.send(Ok(Bytes::from(out))).await;
            return;
        }
        let data = &buf[CHUNK_HEADER_LEN..CHUNK_HEADER_LEN + n];
        let out = match &mut seal {
            None => match signer.header(data) {
                Some(header) => {
                    buf[..CHUNK_HEADER_LEN].copy_from_slice(&header);
                    crate::http_body::lend(buf, 0..CHUNK_HEADER_LEN + n, usize::MAX, &spares)
                }
                // Not reached: a piece is at most MAX_CHUNK_LEN bytes.
                None => {
                    let _ = tx.send(Err(std::io::Error::other("chunk too long"))).await;
                    return;
                }
            },
            Some((sealer, _, _)) => {
                let mut sealed = Vec::with_capacity(n + 64);
                if sealer.push(data, &mut sealed).is_err() {
                    let _ = tx.send(Err(cannot_seal())).await;
                    return;
                }
                let mut out = Vec::with_capacity(sealed.len() + 2 * CHUNK_HEADER_LEN);
                signer.push(&sealed, &mut out);
                spares.give(buf);
                Bytes::from(out)
            }
        };
        if tx.send(Ok(out)).await.is_err() {
            return;
        }
    }
}

/// A request body's sealing: the sealer, the header still to send, where the answer's
/// opener goes.
type SealOut = (
    RequestSealer,
    Vec<u8>,
    tokio::sync::oneshot::Sender<ResponseOpener>,
);

/// A body error as the client's error.
pub(crate) fn body_error(e: BodyError) -> Error {
    match e {
        BodyError::NotAuthentic => altered("body"),
        BodyError::TooLong => Error::Protocol("HTTP response body too long".into()),
        BodyError::Timeout => Error::Timeout("the HTTP response body"),
        BodyError::Connection(e) => http_error(e),
    }
}

/// A TLS connector trusting `roots` (DER certificates), for a proxy's own certificate.
pub(crate) fn tls_connector(roots: &[Vec<u8>]) -> Result<tokio_rustls::TlsConnector, Error> {
    let mut store = rustls::RootCertStore::empty();
    for der in roots {
        store
            .add(rustls::pki_types::CertificateDer::from(der.clone()))
            .map_err(|e| Error::Config(format!("bad root certificate: {e}")))?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(Error::Tls)?
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}
