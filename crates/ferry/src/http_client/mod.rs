//! A client of the HTTP front (docs/HTTP.md §12): every request signed with the credential
//! (§3), every response's signature checked against the request before anything of it is
//! believed (§8), data bodies streamed both ways as signed chunks (§7), so memory does not
//! grow with a transfer.
//!
//! ```no_run
//! # async fn demo(cred: &ferry::proto::credential::Credential) -> Result<(), ferry::Error> {
//! let client = ferry::HttpClient::new("http://127.0.0.1:8080", cred)?;
//! let entry = client.put("notes.txt", &b"hello"[..], None).await?;
//! let mut out = Vec::new();
//! client.get_to("notes.txt", Some(entry.version), 0, &mut out).await?;
//! # Ok(()) }
//! ```

mod login;
mod transport;

use std::time::Duration;

use ferry_backend::Change;
use ferry_proto::credential::Credential;
use ferry_proto::http::RequestSigner;
use ferry_proto::http::seal::{
    RequestSealer, ResponseOpener, SEALED_CONTENT_TYPE, SealError, SealPublicKey,
};
use ferry_proto::http::target::{ByteRange, encode};
use ferry_proto::message::ErrorCode;
use ferry_store::Entry;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::Error;
use crate::http_seal::Unsealing;
use transport::{Answer, Base, ReqBody, Transport, body_error, tls_connector};

/// Most bytes of a JSON answer.
const JSON_LIMIT: usize = 16 * 1024 * 1024;

/// A client of a ferry server's HTTP front, signing as one credential.
pub struct HttpClient {
    transport: Transport,
    /// The server's key to seal bodies to (docs/HTTP.md §11), if sealing.
    seal: Option<SealPublicKey>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("base", &self.transport.base)
            .finish_non_exhaustive()
    }
}

/// What a get delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpGet {
    /// The first byte delivered within the version.
    pub first: u64,
    /// Bytes delivered (each in a chunk whose signature verified, the last one too).
    pub len: u64,
    /// The version's whole size (from the signed `Content-Range`, or the body's length).
    pub size: u64,
}

/// One long poll's answer ([`HttpClient::changes`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpChanges {
    /// Where the next poll continues (`after`).
    pub seq: u64,
    /// Older changes were gone: the oldest the log still had.
    pub gap: Option<u64>,
    /// The visible changes, in order.
    pub events: Vec<Change>,
}

fn field<'a>(v: &'a Value, key: &str) -> Result<&'a Value, Error> {
    v.get(key)
        .ok_or_else(|| Error::Protocol(format!("HTTP answer without '{key}'")))
}

fn num(v: &Value, key: &str) -> Result<u64, Error> {
    field(v, key)?
        .as_u64()
        .ok_or_else(|| Error::Protocol(format!("HTTP answer: '{key}' is not a number")))
}

fn text(v: &Value, key: &str) -> Result<String, Error> {
    field(v, key)?
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::Protocol(format!("HTTP answer: '{key}' is not text")))
}

fn hash(v: &Value, key: &str) -> Result<[u8; 32], Error> {
    data_encoding::HEXLOWER
        .decode(text(v, key)?.as_bytes())
        .ok()
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| Error::Protocol(format!("HTTP answer: '{key}' is not a hash")))
}

fn entry(v: &Value) -> Result<Entry, Error> {
    Ok(Entry {
        source: text(v, "source")?,
        version: num(v, "version")?,
        size: num(v, "size")?,
        hash: hash(v, "blake3")?,
        modified: num(v, "modified")?,
        by: text(v, "by")?,
        // The HTTP front does not carry a version's metadata (docs/HTTP.md §12).
        meta: ferry_backend::Meta::default(),
    })
}

/// Whether an answer's (signed) content type says its body is sealed.
fn is_sealed(answer: &Answer) -> bool {
    answer
        .headers
        .get(hyper::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == SEALED_CONTENT_TYPE.as_bytes())
}

fn not_sealed() -> Error {
    Error::Protocol("the server did not seal its answer to a sealed request".into())
}

fn unopened() -> Error {
    Error::Protocol(
        "the sealed HTTP answer does not open: it was altered in transit or is not from this server"
            .into(),
    )
}

fn source_path(source: &str) -> String {
    format!("/v1/sources/{}", encode(source, true))
}

fn query(params: &[(&str, Option<String>)]) -> String {
    params
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v, false))))
        .collect::<Vec<_>>()
        .join("&")
}

impl HttpClient {
    /// A client of the HTTP front at `base_url` (`http://HOST:PORT`, or `https://HOST:PORT`
    /// for a proxy that terminates TLS: see [`HttpClient::with_root_certificate`]), signing
    /// with `credential`.
    pub fn new(base_url: &str, credential: &Credential) -> Result<Self, Error> {
        let base = Base::parse(base_url)?;
        let signer = RequestSigner::new(credential.claims.clone(), credential.key.clone());
        Ok(Self {
            transport: Transport {
                base,
                signer,
                tls: None,
            },
            seal: None,
        })
    }

    /// Seals the bodies of puts and gets to the server's HPKE key `key` (docs/HTTP.md §11;
    /// [`ServerDir::http_seal_key`](crate::ServerDir::http_seal_key)), so a proxy that
    /// terminates TLS sees only ciphertext; the answers come back sealed too, and a get or
    /// put whose answer is not sealed fails.
    pub fn with_seal(mut self, key: SealPublicKey) -> Self {
        self.seal = Some(key);
        self
    }

    /// The plaintext of a sealed answer, whole, at most `JSON_LIMIT` bytes.
    async fn unseal_whole(answer: Answer, opener: &mut ResponseOpener) -> Result<Vec<u8>, Error> {
        if !is_sealed(&answer) {
            return Err(not_sealed());
        }
        let bytes = answer.body.read_all(JSON_LIMIT).await.map_err(body_error)?;
        let mut unsealing = Unsealing::default();
        let plain = unsealing
            .feed(&bytes, |i| opener.decode(i))
            .and_then(|p| unsealing.end().map(|()| p))
            .map_err(|_| unopened())?;
        Ok(plain)
    }

    /// Checks that `url` is a base URL [`HttpClient::new`] accepts.
    pub fn check_url(url: &str) -> Result<(), Error> {
        Base::parse(url).map(|_| ())
    }

    /// For an `https://` base URL served by the server itself (`ferry serve --http-tls`):
    /// accepts only the server whose key has ID `pin`, as the TLS front's clients do (TLS 1.3
    /// only).
    pub fn with_server_id(mut self, pin: ferry_proto::server_id::ServerId) -> Result<Self, Error> {
        let mut config = crate::tls::client_config(pin)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        self.transport.tls = Some(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
            config,
        )));
        Ok(self)
    }

    /// Trusts the PEM certificates in `pem` for an `https://` base URL (see
    /// [`HttpClient::with_root_certificates`]).
    pub fn with_root_pem(self, pem: &[u8]) -> Result<Self, Error> {
        self.with_root_certificates(&Self::pem_roots(pem)?)
    }

    /// The certificates in `pem`, as DER; at least one.
    pub fn pem_roots(pem: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let roots = CertificateDer::pem_slice_iter(pem)
            .map(|c| c.map(|c| c.to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Config(format!("bad PEM certificate: {e}")))?;
        if roots.is_empty() {
            return Err(Error::Config("no PEM certificate found".into()));
        }
        Ok(roots)
    }

    /// Trusts `roots` (DER certificates) for an `https://` base URL: the certificate of
    /// the proxy that terminates TLS, or its issuer. TLS to the proxy only protects the
    /// hop; the signatures protect requests and responses end to end.
    pub fn with_root_certificates(mut self, roots: &[Vec<u8>]) -> Result<Self, Error> {
        self.transport.tls = Some(tls_connector(roots)?);
        Ok(self)
    }

    async fn exchange(
        &self,
        method: &str,
        path: &str,
        query: &str,
        range: Option<&str>,
        body: ReqBody,
    ) -> Result<Answer, Error> {
        if self.transport.base.https && self.transport.tls.is_none() {
            return Err(Error::Config(
                "an https:// base URL needs the proxy's certificate (with_root_certificates)"
                    .into(),
            ));
        }
        self.transport
            .exchange(method, path, query, range, body)
            .await
    }

    /// The verified JSON body of an answer; an error status becomes its error.
    async fn json(answer: Answer) -> Result<Value, Error> {
        let status = answer.status;
        let bytes = answer.body.read_all(JSON_LIMIT).await.map_err(body_error)?;
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Protocol(format!("HTTP answer is not JSON: {e}")))?;
        if (200..300).contains(&status) {
            return Ok(v);
        }
        Err(refusal(status, &v))
    }

    /// Uploads `reader`'s bytes as the next version of `source`, streamed as signed
    /// chunks. With `size`, the server refuses a different total.
    pub async fn put(
        &self,
        source: &str,
        reader: impl AsyncRead + Unpin + Send + 'static,
        size: Option<u64>,
    ) -> Result<Entry, Error> {
        let q = query(&[("size", size.map(|s| s.to_string()))]);
        let (body, opener) = match self.seal {
            None => (ReqBody::Stream(Box::new(reader)), None),
            Some(key) => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                (ReqBody::Sealed(Box::new(reader), key, tx), Some(rx))
            }
        };
        let answer = self
            .exchange("PUT", &source_path(source), &q, None, body)
            .await?;
        match opener {
            Some(rx) if (200..300).contains(&answer.status) => {
                let mut opener = rx
                    .await
                    .map_err(|_| Error::Protocol("the sealed body was not sent whole".into()))?;
                let plain = Self::unseal_whole(answer, &mut opener).await?;
                let v: Value = serde_json::from_slice(&plain)
                    .map_err(|e| Error::Protocol(format!("HTTP answer is not JSON: {e}")))?;
                entry(&v)
            }
            _ => entry(&Self::json(answer).await?),
        }
    }

    /// Downloads `source` (its current version, or `version`) from byte `offset` on into
    /// `out`. Only data whose chunk signature verified is written; if the transfer breaks,
    /// what was written is a verified prefix, and a later call with `offset` advanced by
    /// it resumes (a `Range` request). Pin `version` to resume the same content.
    pub async fn get_to<W: AsyncWrite + Unpin>(
        &self,
        source: &str,
        version: Option<u64>,
        offset: u64,
        out: &mut W,
    ) -> Result<HttpGet, Error> {
        let q = query(&[("version", version.map(|v| v.to_string()))]);
        let range = (offset > 0).then(|| {
            ByteRange {
                first: offset,
                last: None,
            }
            .to_header()
        });
        // Sealed: an empty sealed body, the context the answer is sealed under.
        let (body, mut opener) = match self.seal {
            None => (ReqBody::Empty, None),
            Some(key) => {
                let cannot = |e: SealError| Error::Config(format!("cannot seal: {e}"));
                let mut bytes = Vec::new();
                let sealer = RequestSealer::new(&key, &mut crate::http_seal::rng(), &mut bytes)
                    .map_err(cannot)?;
                let opener = sealer.finish(&[], &mut bytes).map_err(cannot)?;
                (ReqBody::Whole(bytes, SEALED_CONTENT_TYPE), Some(opener))
            }
        };
        let mut answer = self
            .exchange("GET", &source_path(source), &q, range.as_deref(), body)
            .await?;
        if !matches!(answer.status, 200 | 206) {
            return Self::json(answer).await.map(|_| HttpGet {
                first: 0,
                len: 0,
                size: 0,
            });
        }
        // Content-Range is signed: `bytes FIRST-LAST/SIZE`.
        let (first, size) = match answer.headers.get(hyper::header::CONTENT_RANGE) {
            None => (0, None),
            Some(v) => parse_content_range(v.to_str().unwrap_or(""))
                .ok_or_else(|| Error::Protocol("bad Content-Range".into()))?,
        };
        if first != offset && !(first == 0 && answer.status == 200) {
            return Err(Error::Protocol(format!(
                "asked for bytes from {offset}, got them from {first}"
            )));
        }
        if opener.is_some() && !is_sealed(&answer) {
            return Err(not_sealed());
        }
        let mut unsealing = Unsealing::default();
        let mut len = 0u64;
        while let Some(data) = answer.body.next().await.map_err(body_error)? {
            let data = match &mut opener {
                None => data,
                Some(o) => unsealing
                    .feed(&data, |i| o.decode(i))
                    .map_err(|_| unopened())?,
            };
            out.write_all(&data).await?;
            len += data.len() as u64;
            answer.body.recycle(data);
        }
        if opener.is_some() {
            unsealing.end().map_err(|_| unopened())?;
        }
        out.flush().await?;
        Ok(HttpGet {
            first,
            len,
            size: size.unwrap_or(first + len),
        })
    }

    /// The current version of `source`.
    pub async fn stat(&self, source: &str) -> Result<Entry, Error> {
        let path = format!("/v1/stat/{}", encode(source, true));
        let answer = self
            .exchange("GET", &path, "", None, ReqBody::Empty)
            .await?;
        entry(&Self::json(answer).await?)
    }

    /// Deletes `source`; returns the version that records the deletion.
    pub async fn delete(&self, source: &str) -> Result<u64, Error> {
        let answer = self
            .exchange("DELETE", &source_path(source), "", None, ReqBody::Empty)
            .await?;
        num(&Self::json(answer).await?, "version")
    }

    /// One page of the sources under `prefix` after `after`, and where the next starts.
    pub async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
    ) -> Result<(Vec<Entry>, Option<String>), Error> {
        let q = query(&[
            ("prefix", (!prefix.is_empty()).then(|| prefix.to_owned())),
            ("after", after.map(str::to_owned)),
        ]);
        let answer = self
            .exchange("GET", "/v1/list", &q, None, ReqBody::Empty)
            .await?;
        let v = Self::json(answer).await?;
        let entries = field(&v, "entries")?
            .as_array()
            .ok_or_else(|| Error::Protocol("HTTP answer: 'entries' is not a list".into()))?
            .iter()
            .map(entry)
            .collect::<Result<_, _>>()?;
        let next = field(&v, "next")?.as_str().map(str::to_owned);
        Ok((entries, next))
    }

    /// Waits up to `wait` for changes under `prefix` after `after` (`None`: from now).
    pub async fn changes(
        &self,
        prefix: &str,
        after: Option<u64>,
        wait: Duration,
    ) -> Result<HttpChanges, Error> {
        let q = query(&[
            ("prefix", (!prefix.is_empty()).then(|| prefix.to_owned())),
            ("after", after.map(|a| a.to_string())),
            ("wait", Some(wait.as_secs().to_string())),
        ]);
        let answer = self
            .exchange("GET", "/v1/changes", &q, None, ReqBody::Empty)
            .await?;
        let v = Self::json(answer).await?;
        let events = field(&v, "events")?
            .as_array()
            .ok_or_else(|| Error::Protocol("HTTP answer: 'events' is not a list".into()))?
            .iter()
            .map(|e| {
                Ok(Change {
                    seq: num(e, "seq")?,
                    source: text(e, "source")?,
                    version: num(e, "version")?,
                    deleted: field(e, "deleted")?.as_bool().unwrap_or(false),
                    size: num(e, "size")?,
                    hash: hash(e, "blake3")?,
                    modified: num(e, "modified")?,
                    by: text(e, "by")?,
                })
            })
            .collect::<Result<_, Error>>()?;
        Ok(HttpChanges {
            seq: num(&v, "seq")?,
            gap: v
                .get("gap")
                .and_then(|g| g.get("oldest"))
                .and_then(Value::as_u64),
            events,
        })
    }
}

/// `bytes FIRST-LAST/SIZE` as `(FIRST, Some(SIZE))`.
fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.strip_prefix("bytes ")?;
    let (range, size) = rest.split_once('/')?;
    let (first, _) = range.split_once('-')?;
    Some((first.parse().ok()?, Some(size.parse().ok()?)))
}

/// A signed error answer as the client's error.
fn refusal(status: u16, v: &Value) -> Error {
    let message = v
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    match status {
        403 => Error::Forbidden(message),
        404 => Error::NotFound(message),
        422 => Error::HashMismatch,
        503 => Error::Busy(message),
        507 => Error::NoSpace(message),
        400 | 405 | 413 | 416 => Error::Remote {
            code: ErrorCode::BadRequest,
            message,
        },
        _ => Error::Remote {
            code: ErrorCode::Internal,
            message,
        },
    }
}
