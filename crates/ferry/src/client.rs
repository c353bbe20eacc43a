//! The client: connects, pins the server, authenticates, then makes requests.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use ferry_backend::Meta;
use ferry_proto::auth::{self, ClientAuth, ClientSession, ClientStep, Principal};
use ferry_proto::chunking::ChunkRef;
use ferry_proto::credential::Credential;
use ferry_proto::message::{self, Entry, Get, List, Message, Put, PutEnd, PutReady, SourceRef};
use ferry_proto::names::SourceName;
use ferry_proto::psk::PskClient;
use ferry_proto::secret::{InviteKey, SessionSecret};
use ferry_proto::server_id::ServerId;
use ferry_proto::session::SessionId;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::pipe::{self, HashingWriter, WriteCmd};
use crate::wire::{Incoming, Wire};
use crate::{Error, tls};

mod delta;

pub use delta::{DeltaStats, hash_and_chunk_file};

/// What a resumable put sent ([`Client::put_resume_chunked`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PutStats {
    /// Where the server continued from, in what was sent (0: it held nothing).
    pub offset: u64,
    /// Bytes sent now.
    pub sent: u64,
    /// The server took a delta put: only chunks it lacked were sent.
    pub delta: bool,
}

/// Deadline for connecting, the TLS handshake and authentication together.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Deadline for any single answer or data frame from the server.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// The fewest characters a new password may have ([`Client::register`],
/// [`Client::change_password`]). The server cannot check it (OPAQUE never shows it the
/// password), so the client does.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// Refuses a new password shorter than [`MIN_PASSWORD_CHARS`] characters (Unicode scalar
/// values; bytes if it is not UTF-8).
pub fn check_new_password(password: &[u8]) -> Result<(), Error> {
    let chars = std::str::from_utf8(password).map_or(password.len(), |s| s.chars().count());
    if chars < MIN_PASSWORD_CHARS {
        return Err(Error::PasswordTooShort(MIN_PASSWORD_CHARS));
    }
    Ok(())
}

/// An authenticated connection to a ferry server.
///
/// A connection opened with [`Client::connect_pipelined`] has sent its proof but not yet read
/// the server's: it reads and checks it before the answer to its first request, and fails with
/// [`Error::AuthFailed`] there if it does not verify.
pub struct Client {
    pub(crate) wire: Wire<TlsStream<TcpStream>>,
    /// Who the server says we are, once its proof has been checked.
    principal: Option<Principal>,
    /// The authentication waiting for the server's proof (pipelined connections only).
    pending: Option<ClientAuth>,
    /// A request went out while the proof was still awaited.
    request_in_flight: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("principal", &self.principal)
            .field("awaiting_proof", &self.pending.is_some())
            .finish_non_exhaustive()
    }
}

/// Progress callback: total bytes moved so far.
pub type Progress<'a> = &'a mut (dyn FnMut(u64) + Send);

impl Client {
    /// Connects to the server named in the credential and authenticates with it.
    pub async fn connect(cred: &Credential) -> Result<Self, Error> {
        Self::connect_to(&cred.server, cred.server_id, cred).await
    }

    /// Connects to `addr`, pinning `pin`, and authenticates with `cred`.
    pub async fn connect_to(addr: &str, pin: ServerId, cred: &Credential) -> Result<Self, Error> {
        let tls = Self::connect_tls(addr, pin).await?;
        tokio::time::timeout(CONNECT_TIMEOUT, Self::authenticate(tls, cred))
            .await
            .map_err(|_| Error::Timeout("authentication"))?
    }

    /// Like [`Client::connect`], but returns as soon as the credential proof is on its way,
    /// without waiting for the server's: the first request leaves with the proof, which saves
    /// one round trip per connection (docs/PROTOCOL.md §4).
    ///
    /// The server's proof is read and checked before the answer to that first request, and
    /// before anything else is sent (transfer data, a second request): an authentication
    /// failure surfaces there as [`Error::AuthFailed`]. What a one-shot command sends first is
    /// a single request message; a server that fails to prove itself learns that message and
    /// nothing more.
    pub async fn connect_pipelined(cred: &Credential) -> Result<Self, Error> {
        Self::connect_pipelined_to(&cred.server, cred.server_id, cred).await
    }

    /// [`Client::connect_pipelined`] to `addr`, pinning `pin`.
    pub async fn connect_pipelined_to(
        addr: &str,
        pin: ServerId,
        cred: &Credential,
    ) -> Result<Self, Error> {
        let tls = Self::connect_tls(addr, pin).await?;
        let exporter = tls::export(tls.get_ref().1)?;
        let mut wire = Wire::new(tls);
        let (first, wait) = PskClient::new(cred.claims.clone(), cred.key.clone()).start(&exporter);
        // Gathered, not flushed: it leaves with the first request, or when we first wait.
        wire.queue(&first).await?;
        Ok(Self {
            wire,
            principal: None,
            pending: Some(wait.into()),
            request_in_flight: false,
        })
    }

    /// Reads and checks the server's proof if it has not been checked yet; returns who the
    /// server says we are.
    pub async fn verified(&mut self) -> Result<&Principal, Error> {
        if let Some(state) = self.pending.take() {
            let msg = tokio::time::timeout(CONNECT_TIMEOUT, self.wire.recv_message())
                .await
                .map_err(|_| Error::Timeout("authentication"))?;
            let msg = match msg {
                Ok(m) => m,
                // A server that closes instead of answering refused us.
                Err(Error::Closed | Error::Connection(_) | Error::Io(_)) => {
                    return Err(Error::AuthFailed);
                }
                Err(e) => return Err(e),
            };
            match state.handle(msg, &mut rand_core::OsRng) {
                Ok(ClientStep::Done(a)) => self.principal = Some(a.principal),
                Ok(_) => return Err(Error::Protocol("unexpected authentication step".into())),
                Err(_) => return Err(Error::AuthFailed),
            }
        }
        self.principal.as_ref().ok_or(Error::AuthFailed)
    }

    /// Sends one request. While the server's proof is awaited, only one request may go out
    /// ahead of it: a second one waits for the proof first.
    pub(crate) async fn send_request(&mut self, msg: &Message) -> Result<(), Error> {
        if self.principal.is_none() {
            if self.pending.is_none() || self.request_in_flight {
                // The proof failed earlier, or one request is already out: nothing more
                // leaves before the server has proved itself.
                self.verified().await?;
            } else {
                self.request_in_flight = true;
            }
        }
        self.wire.send(msg).await
    }

    /// Opens a TLS connection to `addr` that accepts only the server whose ID is `pin`.
    /// Nothing has been sent over it yet.
    pub async fn connect_tls(addr: &str, pin: ServerId) -> Result<TlsStream<TcpStream>, Error> {
        let connector = TlsConnector::from(Arc::new(tls::client_config(pin)?));
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_owned()).unwrap_or_else(|_| {
            ServerName::try_from("ferry.invalid").unwrap_or_else(|_| unreachable!())
        });
        let fut = async {
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(|source| Error::Connect {
                    addr: addr.to_owned(),
                    source,
                })?;
            let _ = tcp.set_nodelay(true);
            connector.connect(name, tcp).await.map_err(|e| {
                if tls::is_pin_mismatch(&e) {
                    Error::ServerIdMismatch(addr.to_owned())
                } else if let Some(why) = tls::not_ferry(&e) {
                    Error::NotFerry {
                        addr: addr.to_owned(),
                        why,
                    }
                } else {
                    Error::Connect {
                        addr: addr.to_owned(),
                        source: e,
                    }
                }
            })
        };
        tokio::time::timeout(CONNECT_TIMEOUT, fut)
            .await
            .map_err(|_| Error::Timeout("the connection and TLS handshake"))?
    }

    async fn authenticate(tls: TlsStream<TcpStream>, cred: &Credential) -> Result<Self, Error> {
        let (client, _) = Self::run_auth(tls, |exporter| {
            let (first, wait) =
                PskClient::new(cred.claims.clone(), cred.key.clone()).start(exporter);
            Ok((first, wait.into()))
        })
        .await?;
        client.ok_or_else(|| Error::Protocol("unexpected registration answer".into()))
    }

    /// Runs an authentication exchange whose first message `start` makes from the exporter.
    /// Returns the client (None after a registration) and the session the server opened.
    async fn run_auth(
        tls: TlsStream<TcpStream>,
        start: impl FnOnce(&ferry_proto::secret::Exporter) -> Result<(Message, ClientAuth), Error>,
    ) -> Result<(Option<Self>, Option<ClientSession>), Error> {
        let exporter = tls::export(tls.get_ref().1)?;
        let mut wire = Wire::new(tls);
        let (first, mut state) = start(&exporter)?;
        wire.send(&first).await?;
        loop {
            let msg = match wire.recv_message().await {
                Ok(m) => m,
                // A server that closes instead of answering refused us.
                Err(Error::Closed | Error::Connection(_) | Error::Io(_)) => {
                    return Err(Error::AuthFailed);
                }
                Err(e) => return Err(e),
            };
            // Only the OPAQUE steps stretch the password (Argon2id, tens of milliseconds): run
            // those off the async threads; the others are a few HMACs, cheaper than a handoff.
            let stretches = matches!(
                state,
                ClientAuth::PasswordResponse { .. } | ClientAuth::RegisterResponse { .. }
            );
            let step = if stretches {
                tokio::task::spawn_blocking(move || state.handle(msg, &mut rand_core::OsRng))
                    .await
                    .map_err(|e| Error::Internal(format!("authentication worker failed: {e}")))?
            } else {
                state.handle(msg, &mut rand_core::OsRng)
            }
            .map_err(|_| Error::AuthFailed)?;
            match step {
                ClientStep::Send(m, next) => {
                    wire.send(&m).await?;
                    state = next;
                }
                ClientStep::SendAndFail(m, _) => {
                    let _ = wire.send(&m).await;
                    // Wait for the server's verdict so it has counted the failure.
                    let _ = tokio::time::timeout(RESPONSE_TIMEOUT, wire.recv_message()).await;
                    return Err(Error::AuthFailed);
                }
                ClientStep::Done(a) => {
                    return Ok((Some(Self::from_parts(wire, a.principal)), a.session));
                }
                ClientStep::Registered => {
                    let _ = wire.shutdown().await;
                    return Ok((None, None));
                }
            }
        }
    }

    /// Logs in with a password (OPAQUE). With `want_session`, the server opens a session that
    /// [`Client::resume`] can use later without the password.
    pub async fn login(
        addr: &str,
        pin: ServerId,
        user: &str,
        password: &[u8],
        want_session: bool,
    ) -> Result<(Self, Option<ClientSession>), Error> {
        ferry_proto::names::validate_client_name(user)?;
        let tls = Self::connect_tls(addr, pin).await?;
        let fut = Self::run_auth(tls, |exporter| {
            auth::password_login(
                &mut rand_core::OsRng,
                exporter,
                user,
                password,
                want_session,
            )
            .map_err(|_| Error::Internal("cannot start a login".into()))
        });
        // Generous: the client's Argon2id may take a while on a slow machine.
        let (client, session) = tokio::time::timeout(4 * CONNECT_TIMEOUT, fut)
            .await
            .map_err(|_| Error::Timeout("the login"))??;
        let client =
            client.ok_or_else(|| Error::Protocol("unexpected registration answer".into()))?;
        Ok((client, session))
    }

    /// Resumes a session on a new connection: no password, nothing replayable sent.
    pub async fn resume(
        addr: &str,
        pin: ServerId,
        id: SessionId,
        secret: &SessionSecret,
    ) -> Result<Self, Error> {
        let tls = Self::connect_tls(addr, pin).await?;
        let fut = Self::run_auth(tls, |exporter| {
            Ok(auth::resume_session(exporter, id, secret))
        });
        let (client, _) = tokio::time::timeout(CONNECT_TIMEOUT, fut)
            .await
            .map_err(|_| Error::Timeout("authentication"))??;
        client.ok_or_else(|| Error::Protocol("unexpected registration answer".into()))
    }

    /// Redeems an invite: sets the password of the invited user. The invite is spent. A
    /// password shorter than [`MIN_PASSWORD_CHARS`] is refused before anything is sent.
    pub async fn register(invite: &Credential, password: &[u8]) -> Result<(), Error> {
        check_new_password(password)?;
        let tls = Self::connect_tls(&invite.server, invite.server_id).await?;
        let key = InviteKey::from_bytes(*invite.key.expose_secret());
        let fut = Self::run_auth(tls, |exporter| {
            auth::register(
                &mut rand_core::OsRng,
                exporter,
                &invite.claims,
                &key,
                password,
            )
            .map_err(|_| Error::Internal("cannot start a registration".into()))
        });
        match tokio::time::timeout(4 * CONNECT_TIMEOUT, fut)
            .await
            .map_err(|_| Error::Timeout("the registration"))??
        {
            (None, _) => Ok(()),
            (Some(_), _) => Err(Error::Protocol("unexpected login answer".into())),
        }
    }

    /// Changes the password of the logged-in user: proves `current` with a fresh OPAQUE login
    /// bound to this connection, then registers `new` (PROTOCOL.md §5, password change). The
    /// server then ends every connection and session of the user's old password, this one
    /// included. A wrong `current` fails with [`Error::AuthFailed`] and closes the connection
    /// (it counts as a failed login); a `new` shorter than [`MIN_PASSWORD_CHARS`] is refused
    /// before anything is sent.
    pub async fn change_password(&mut self, current: &[u8], new: &[u8]) -> Result<(), Error> {
        check_new_password(new)?;
        let exporter = tls::export(self.wire.get_ref().get_ref().1)?;
        let (request, login) =
            ferry_proto::password::client_login_start(&mut rand_core::OsRng, current)
                .map_err(|_| Error::Internal("cannot start a password change".into()))?;
        let (new_request, registration) =
            ferry_proto::password::client_register_start(&mut rand_core::OsRng, new)
                .map_err(|_| Error::Internal("cannot start a password change".into()))?;
        self.send_request(&Message::PasswordChangeStart(
            message::PasswordChangeStart { request },
        ))
        .await?;
        let r = match self.recv().await? {
            Message::PasswordChangeResponse(r) => r,
            m => return Err(Self::unexpected(&m)),
        };
        // Key stretching runs off the async threads.
        let finalization = tokio::task::spawn_blocking(move || {
            ferry_proto::password::client_login_finish(
                &mut rand_core::OsRng,
                login,
                &r.response,
                r.ksf,
                exporter.expose_secret(),
            )
        })
        .await
        .map_err(|e| Error::Internal(format!("password worker failed: {e}")))?;
        let Ok(finalization) = finalization else {
            // The current password is wrong (or the server is not the one holding the
            // record): tell the server, which counts it, and wait for its verdict.
            self.wire
                .send(&Message::PasswordLoginFailed(message::Empty {}))
                .await?;
            let _ = self.recv().await;
            return Err(Error::AuthFailed);
        };
        self.wire
            .send(&Message::PasswordChangeProof(
                message::PasswordChangeProof {
                    finalization,
                    request: new_request,
                },
            ))
            .await?;
        let r = match self.recv().await? {
            Message::RegisterResponse(r) => r,
            m => return Err(Self::unexpected(&m)),
        };
        let upload = tokio::task::spawn_blocking(move || {
            ferry_proto::password::client_register_finish(
                &mut rand_core::OsRng,
                registration,
                &r.response,
                r.ksf,
            )
        })
        .await
        .map_err(|e| Error::Internal(format!("password worker failed: {e}")))?
        .map_err(|_| Error::Protocol("the server sent an unusable registration response".into()))?;
        self.wire
            .send(&Message::PasswordChangeFinish(message::RegisterFinish {
                upload,
            }))
            .await?;
        match self.recv().await? {
            Message::PasswordChangeOk(_) => Ok(()),
            m => Err(Self::unexpected(&m)),
        }
    }

    /// Ends this connection's session on the server, then closes the connection.
    pub async fn logout(mut self) -> Result<(), Error> {
        self.send_request(&Message::Logout(Default::default()))
            .await?;
        match self.recv().await? {
            Message::LogoutOk(_) => self.close().await,
            m => Err(Self::unexpected(&m)),
        }
    }

    /// Who the server says we are: `None` only on a pipelined connection whose server proof
    /// has not been read yet (see [`Client::verified`]).
    pub fn principal(&self) -> Option<&Principal> {
        self.principal.as_ref()
    }

    /// Receives the answer to a request, after checking the server's proof if that is due.
    pub(crate) async fn recv(&mut self) -> Result<Message, Error> {
        self.verified().await?;
        let m = tokio::time::timeout(RESPONSE_TIMEOUT, self.wire.recv_message())
            .await
            .map_err(|_| Error::Timeout("the server's answer"))??;
        match m {
            Message::Error(e) => Err(Error::from_remote(e)),
            Message::AuthFailed(_) => Err(Error::AuthFailed),
            m => Ok(m),
        }
    }

    pub(crate) fn unexpected(m: &Message) -> Error {
        Error::Protocol(format!("unexpected {} from server", m.type_name()))
    }

    /// Between two frames of an upload: the server said nothing (`Ok`), or it refused the
    /// upload unasked (it is shutting down, say), which is the error.
    async fn unasked_during_upload(&mut self) -> Result<(), Error> {
        match self.wire.recv_if_ready().await? {
            None => Ok(()),
            Some(Incoming::Message(Message::Error(e))) => Err(Error::from_remote(e)),
            Some(Incoming::Message(m)) => Err(Self::unexpected(&m)),
            Some(Incoming::Data(_)) => Err(Error::Protocol(
                "data from the server during an upload".into(),
            )),
        }
    }

    /// Uploads everything `r` yields as a new version of `source`. `size`, if known, lets the
    /// server refuse a short or long upload. Memory use does not grow with the size.
    pub async fn put<R: Read + Send + 'static>(
        &mut self,
        source: &str,
        r: R,
        size: Option<u64>,
        progress: Progress<'_>,
    ) -> Result<Entry, Error> {
        let source = SourceName::parse(source)?;
        self.send_request(&Message::Put(Put {
            source: source.to_string(),
            size,
            offset: 0,
            hash: None,
            streamed: false,
            mtime: None,
            executable: false,
            chunks: None,
        }))
        .await?;
        match self.recv().await? {
            Message::PutReady(r) if r.offset == 0 => {}
            m => return Err(Self::unexpected(&m)),
        }
        let (mut rx, spares, done) = pipe::spawn_reader(r, size, true);
        let mut sent = 0u64;
        while let Some(mut chunk) = rx.recv().await {
            sent += chunk.len() as u64;
            tokio::time::timeout(RESPONSE_TIMEOUT, self.wire.send_chunk(&mut chunk))
                .await
                .map_err(|_| Error::Timeout("the server to accept data"))??;
            spares.give(chunk);
            self.unasked_during_upload().await?;
            progress(sent);
        }
        let read = pipe::join(done).await?;
        if size.is_some_and(|s| s != read.len) {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the input ended after {} bytes", read.len),
            )));
        }
        let hash = read.hash.ok_or_else(|| Error::Internal("no hash".into()))?;
        self.wire
            .send(&Message::PutEnd(PutEnd {
                size: read.len,
                hash,
            }))
            .await?;
        match self.recv().await? {
            Message::PutOk(e) if e.hash == hash && e.size == read.len => Ok(e),
            Message::PutOk(_) => Err(Error::Protocol("server stored different content".into())),
            m => Err(Self::unexpected(&m)),
        }
    }

    /// Uploads `file` as a new version of `source`, **resumably**: if an earlier upload of
    /// the same content to the same source by the same principal was interrupted (a cut
    /// connection, a killed client or server), only the bytes the server does not hold yet
    /// are sent (docs/PROTOCOL.md §5, "Resuming a put").
    ///
    /// The whole file is read once first to compute its BLAKE3 (the server keys the upload
    /// by it), then from the server's offset on to send it: a fresh upload reads the file
    /// twice. `file` must be a regular file that does not change meanwhile; if it does, the
    /// server's check of the whole content fails with [`Error::HashMismatch`] and discards
    /// the upload. See [`Client::put_resume_hashed`] to pass a hash already known.
    ///
    /// Returns the stored entry and the offset the server continued from (0: nothing was
    /// held). `on_ready` gets that offset before any data is sent; `progress` the bytes the
    /// server holds so far, counting those it held before.
    pub async fn put_resume(
        &mut self,
        source: &str,
        file: std::fs::File,
        on_ready: &mut (dyn FnMut(u64) + Send),
        progress: Progress<'_>,
    ) -> Result<(Entry, u64), Error> {
        let (file, size, hash) = hash_file(file).await?;
        self.put_resume_hashed(source, file, size, hash, on_ready, progress)
            .await
    }

    /// [`Client::put_resume`] of a file whose size and BLAKE3 are already known (from
    /// [`hash_file`], for example while the connection was being made). A wrong `hash`
    /// fails the upload with [`Error::HashMismatch`] and the server discards its bytes.
    pub async fn put_resume_hashed(
        &mut self,
        source: &str,
        file: std::fs::File,
        size: u64,
        hash: message::Digest,
        on_ready: &mut (dyn FnMut(u64) + Send),
        progress: Progress<'_>,
    ) -> Result<(Entry, u64), Error> {
        let (entry, stats) = self
            .put_resume_chunked(source, file, (size, hash), None, on_ready, progress)
            .await?;
        Ok((entry, stats.offset))
    }

    /// [`Client::put_resume_hashed`] that, given the file's chunks (from
    /// [`delta::hash_and_chunk_file`]), asks for a **delta put** (docs/PROTOCOL.md §5.4):
    /// if the server holds a version of the source the principal may read, only the chunks
    /// it lacks are sent. A server that does not take the delta gets the whole file, as
    /// with `put_resume_hashed`. A file with more chunks than one list may hold goes whole.
    /// `on_ready` gets the offset in what is sent (the delta body or the file), `progress`
    /// the bytes of it the server holds.
    pub async fn put_resume_chunked(
        &mut self,
        source: &str,
        file: std::fs::File,
        (size, hash): (u64, message::Digest),
        chunks: Option<&[ChunkRef]>,
        on_ready: &mut (dyn FnMut(u64) + Send),
        progress: Progress<'_>,
    ) -> Result<(Entry, PutStats), Error> {
        let source = SourceName::parse(source)?;
        let meta = file_meta(&file.metadata()?);
        let chunks = chunks.filter(|c| c.len() <= ferry_proto::chunking::MAX_LIST_CHUNKS);
        self.send_request(&Message::Put(Put {
            source: source.to_string(),
            size: Some(size),
            offset: 0,
            hash: Some(hash),
            streamed: false,
            mtime: meta.mtime,
            executable: meta.executable,
            chunks: chunks.map(ferry_proto::chunking::encode_list),
        }))
        .await?;
        let (offset, need) = match self.recv().await? {
            Message::PutReady(PutReady {
                offset,
                need: Some(need),
            }) if chunks.is_some() => (offset, Some(need)),
            // A server that does not resume answers 0, like one that holds nothing.
            Message::PutReady(r) if r.offset <= size && r.need.is_none() => (r.offset, None),
            Message::PutReady(r) => {
                return Err(Error::Protocol(format!(
                    "the server holds {} bytes of a {size}-byte upload",
                    r.offset
                )));
            }
            m => return Err(Self::unexpected(&m)),
        };
        on_ready(offset);
        let delta = need.is_some();
        let (reader, rest): (Box<dyn Read + Send>, u64) = match (need, chunks) {
            (Some(need), Some(chunks)) => {
                let body = ferry_proto::chunking::needed_bytes(chunks, &need);
                if offset > body {
                    return Err(Error::Protocol(format!(
                        "the server holds {offset} bytes of a {body}-byte delta"
                    )));
                }
                let runs = delta::Runs::needed(file, chunks, &need, offset);
                (Box::new(runs), body - offset)
            }
            _ => (Box::new(seek_to(file, offset).await?), size - offset),
        };
        let (mut rx, spares, done) = pipe::spawn_reader(reader, Some(rest), false);
        let mut sent = 0u64;
        while let Some(mut chunk) = rx.recv().await {
            sent += chunk.len() as u64;
            tokio::time::timeout(RESPONSE_TIMEOUT, self.wire.send_chunk(&mut chunk))
                .await
                .map_err(|_| Error::Timeout("the server to accept data"))??;
            spares.give(chunk);
            self.unasked_during_upload().await?;
            progress(offset + sent);
        }
        let read = pipe::join(done).await?;
        if read.len != rest {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the file ended after {} bytes", offset + read.len),
            )));
        }
        self.wire
            .send(&Message::PutEnd(PutEnd { size, hash }))
            .await?;
        let stats = PutStats {
            offset,
            sent: read.len,
            delta,
        };
        match self.recv().await? {
            Message::PutOk(e) if e.hash == hash && e.size == size => Ok((e, stats)),
            Message::PutOk(_) => Err(Error::Protocol("server stored different content".into())),
            m => Err(Self::unexpected(&m)),
        }
    }

    /// Downloads the current version of `source` into `w`, checking its hash. Returns the
    /// entry and the writer. On a hash mismatch the bytes written must be discarded.
    pub async fn get<W: Write + Send + 'static>(
        &mut self,
        source: &str,
        w: W,
        progress: Progress<'_>,
    ) -> Result<(Entry, W), Error> {
        self.get_with_start(source, w, &mut |_| {}, progress).await
    }

    /// Like [`Client::get`], and calls `on_start` with the entry being sent as soon as the
    /// server has answered, before any data arrives (to size a progress bar, for example).
    pub async fn get_with_start<W: Write + Send + 'static>(
        &mut self,
        source: &str,
        w: W,
        on_start: &mut (dyn FnMut(&Entry) + Send),
        progress: Progress<'_>,
    ) -> Result<(Entry, W), Error> {
        self.get_version_with_start(source, None, w, on_start, progress)
            .await
    }

    /// Like [`Client::get_with_start`], of `version` of `source` if given (one the server
    /// still keeps: [`Client::versions`]), else of its current version.
    pub async fn get_version_with_start<W: Write + Send + 'static>(
        &mut self,
        source: &str,
        version: Option<u64>,
        w: W,
        on_start: &mut (dyn FnMut(&Entry) + Send),
        progress: Progress<'_>,
    ) -> Result<(Entry, W), Error> {
        let ok = self.request_get(source, version).await?;
        on_start(&ok.entry);
        let entry = ok.entry;
        let w = self
            .receive_into(&entry, 0, HashingWriter::new(w), progress, false)
            .await?;
        Ok((entry, w))
    }

    /// Receives the `entry.size - offset` data bytes of a get into `w` (which has already
    /// hashed the first `offset` bytes) and checks the hash of the whole content. With
    /// `drain`, a writer that fails does not stop the reading: the rest of the data is read
    /// and dropped, so the connection can carry the next answer (a pipeline's).
    pub(crate) async fn receive_into<W: Write + Send + 'static>(
        &mut self,
        entry: &Entry,
        offset: u64,
        w: HashingWriter<W>,
        progress: Progress<'_>,
        drain: bool,
    ) -> Result<W, Error> {
        let size = entry.size;
        let (tx, spares, done) = pipe::spawn_writer(w, |w| {
            let (mut inner, hash, len) = w.into_parts();
            inner.flush()?;
            Ok((inner, hash, len))
        });
        let mut received = offset;
        while received < size {
            let frame =
                tokio::time::timeout(RESPONSE_TIMEOUT, self.wire.recv_reusing(Some(&spares)))
                    .await
                    .map_err(|_| Error::Timeout("download data"))??;
            let buf = match frame {
                Incoming::Data(buf) => buf,
                // The server stopped the transfer (it is shutting down): what arrived stays
                // for a resume.
                Incoming::Message(Message::Error(e)) => return Err(Error::from_remote(e)),
                Incoming::Message(_) => {
                    return Err(Error::Protocol(
                        "message in the middle of a download".into(),
                    ));
                }
            };
            received += buf.len() as u64;
            if received > size {
                return Err(Error::Protocol("more data than announced".into()));
            }
            if tx.send(WriteCmd::Data(buf)).await.is_err() && !drain {
                break;
            }
            progress(received);
        }
        let _ = tx.send(WriteCmd::Finish).await;
        drop(tx);
        let (w, hash, len) = pipe::join(done)
            .await?
            .ok_or_else(|| Error::Internal("writer stopped".into()))?;
        if len != size || hash != entry.hash {
            return Err(Error::HashMismatch);
        }
        Ok(w)
    }

    /// Downloads the current version of `source` into `file`, continuing a partial download
    /// of it if `partial` describes one (docs/PROTOCOL.md §5, "Resuming a get").
    ///
    /// `file` must be open for reading and writing. With `partial`, its first `partial.len`
    /// bytes are what an earlier, cut download of `partial.version` (whose whole content
    /// hashes to `partial.hash`) wrote; they are hashed first (streaming, bounded memory),
    /// and if the server still sends the current version as that same content, only the
    /// bytes from `partial.len` on are asked for. Otherwise (a newer version, the version no
    /// longer retained, a partial longer than the content) the file is truncated and the
    /// current version downloaded from its start: two versions are never spliced. In every
    /// case the BLAKE3 of the whole content is checked at the end; on
    /// [`Error::HashMismatch`] the file's content must be discarded.
    ///
    /// `on_start` is called once the server has answered, before any data is written, with
    /// the entry being sent and the offset the data starts at (0 when starting over); an
    /// error from it abandons the download. `progress` gets the total length written so
    /// far, counting the partial bytes.
    pub async fn get_resume(
        &mut self,
        source: &str,
        file: std::fs::File,
        partial: Option<Partial>,
        on_start: &mut (dyn FnMut(&Entry, u64) -> std::io::Result<()> + Send),
        progress: Progress<'_>,
    ) -> Result<(Entry, u64, std::fs::File), Error> {
        self.get_version_resume(source, None, file, partial, on_start, progress)
            .await
    }

    /// [`Client::get_resume`] of `version` of `source` if given (one the server still
    /// keeps), else of its current version. A partial download continues only if it is of
    /// that same version and content.
    pub async fn get_version_resume(
        &mut self,
        source: &str,
        version: Option<u64>,
        file: std::fs::File,
        partial: Option<Partial>,
        on_start: &mut (dyn FnMut(&Entry, u64) -> std::io::Result<()> + Send),
        progress: Progress<'_>,
    ) -> Result<(Entry, u64, std::fs::File), Error> {
        let source = SourceName::parse(source)?.to_string();
        let mut file = file;
        let mut resume: Option<(Partial, blake3::Hasher)> = None;
        if let Some(p) = partial.filter(|p| p.len > 0) {
            // The current version must still be the one the partial bytes belong to.
            // A stat the server refuses (gone, or not allowed) means starting over: the
            // get from the start then reports what is wrong, if anything.
            let wanted = match version {
                None => self.stat(&source).await,
                Some(v) => self.versions(&source).await.and_then(|all| {
                    all.into_iter()
                        .find(|e| e.version == v)
                        .ok_or_else(|| Error::NotFound(format!("no version {v} of '{source}'")))
                }),
            };
            let current = match wanted {
                Ok(e) => Some(e),
                Err(Error::NotFound(_) | Error::Forbidden(_)) => None,
                Err(e) => return Err(e),
            };
            if current
                .is_some_and(|c| c.version == p.version && c.hash == p.hash && p.len <= c.size)
            {
                let (f, hashed) = hash_prefix(file, p.len).await?;
                file = f;
                if let Some(h) = hashed {
                    resume = Some((p, h));
                }
            }
        }
        if let Some((p, hasher)) = resume {
            self.send_request(&Message::Get(Get {
                source: source.clone(),
                version: Some(p.version),
                offset: p.len,
                len: None,
            }))
            .await?;
            match self.recv().await {
                Ok(Message::GetOk(ok))
                    if ok.offset == p.len
                        && ok.entry.version == p.version
                        && ok.entry.hash == p.hash
                        && ok.entry.size >= p.len =>
                {
                    on_start(&ok.entry, p.len)?;
                    let entry = ok.entry;
                    let w = HashingWriter::resuming(file, hasher, p.len);
                    let file = self.receive_into(&entry, p.len, w, progress, false).await?;
                    return Ok((entry, p.len, file));
                }
                // The version was dropped between the stat and the get: start over.
                Err(Error::NotFound(_)) => {}
                // Anything else would put other bytes after the partial ones.
                Ok(m) => return Err(Self::unexpected(&m)),
                Err(e) => return Err(e),
            }
        }
        let ok = self.request_get(&source, version).await?;
        let mut file = truncate(file).await?;
        on_start(&ok.entry, 0)?;
        let entry = ok.entry;
        file = self
            .receive_into(&entry, 0, HashingWriter::new(file), progress, false)
            .await?;
        Ok((entry, 0, file))
    }

    /// Asks for `version` of `source` (the current one if `None`) from its start; returns
    /// the server's answer.
    async fn request_get(
        &mut self,
        source: &str,
        version: Option<u64>,
    ) -> Result<message::GetOk, Error> {
        let source = SourceName::parse(source)?;
        self.send_request(&Message::Get(Get {
            source: source.to_string(),
            version,
            offset: 0,
            len: None,
        }))
        .await?;
        match self.recv().await? {
            Message::GetOk(ok)
                if ok.offset == 0 && version.is_none_or(|v| v == ok.entry.version) =>
            {
                Ok(ok)
            }
            m => Err(Self::unexpected(&m)),
        }
    }

    /// The versions of `source` the server still keeps (up to its `keep_versions`), newest
    /// first. [`Error::NotFound`] if it does not exist or is deleted.
    pub async fn versions(&mut self, source: &str) -> Result<Vec<Entry>, Error> {
        let source = SourceName::parse(source)?;
        self.send_request(&Message::Versions(SourceRef {
            source: source.to_string(),
        }))
        .await?;
        match self.recv().await? {
            Message::VersionsOk(v) => Ok(v.entries),
            m => Err(Self::unexpected(&m)),
        }
    }

    /// Uploads a byte vector.
    pub async fn put_bytes(&mut self, source: &str, data: Vec<u8>) -> Result<Entry, Error> {
        let len = data.len() as u64;
        self.put(source, std::io::Cursor::new(data), Some(len), &mut |_| {})
            .await
    }

    /// Downloads into memory, checking the hash. For large sources use [`Client::get`].
    ///
    /// Unlike [`Client::get`], receives and hashes on the calling task: there is no writer
    /// that could block, so no blocking thread to hand the data to.
    pub async fn get_bytes(&mut self, source: &str) -> Result<Vec<u8>, Error> {
        let ok = self.request_get(source, None).await?;
        let size = ok.entry.size;
        let mut out = Vec::new();
        let mut hasher = blake3::Hasher::new();
        while (out.len() as u64) < size {
            let frame = tokio::time::timeout(RESPONSE_TIMEOUT, self.wire.recv())
                .await
                .map_err(|_| Error::Timeout("download data"))??;
            let buf = match frame {
                Incoming::Data(buf) => buf,
                // The server stopped the transfer (it is shutting down): what arrived stays
                // for a resume.
                Incoming::Message(Message::Error(e)) => return Err(Error::from_remote(e)),
                Incoming::Message(_) => {
                    return Err(Error::Protocol(
                        "message in the middle of a download".into(),
                    ));
                }
            };
            if out.len() as u64 + buf.len() as u64 > size {
                return Err(Error::Protocol("more data than announced".into()));
            }
            hasher.update(&buf);
            if out.is_empty() {
                out = buf;
            } else {
                out.extend_from_slice(&buf);
            }
        }
        if *hasher.finalize().as_bytes() != ok.entry.hash {
            return Err(Error::HashMismatch);
        }
        Ok(out)
    }

    /// Describes one source.
    pub async fn stat(&mut self, source: &str) -> Result<Entry, Error> {
        let source = SourceName::parse(source)?;
        self.send_request(&Message::Stat(SourceRef {
            source: source.to_string(),
        }))
        .await?;
        match self.recv().await? {
            Message::StatOk(e) => Ok(e),
            m => Err(Self::unexpected(&m)),
        }
    }

    /// Lists all sources starting with `prefix` (normalised to NFC, as names are) that the
    /// principal may list.
    pub async fn list(&mut self, prefix: &str) -> Result<Vec<Entry>, Error> {
        let prefix = ferry_proto::names::normalize_prefix(prefix)?;
        let mut out = Vec::new();
        let mut after = None;
        loop {
            self.send_request(&Message::List(List {
                prefix: prefix.clone(),
                after: after.take(),
            }))
            .await?;
            match self.recv().await? {
                Message::ListOk(page) => {
                    out.extend(page.entries);
                    match page.next {
                        Some(n) => after = Some(n),
                        None => return Ok(out),
                    }
                }
                m => return Err(Self::unexpected(&m)),
            }
        }
    }

    /// Deletes a source; returns the version the deletion took.
    pub async fn delete(&mut self, source: &str) -> Result<u64, Error> {
        let source = SourceName::parse(source)?;
        self.send_request(&Message::Delete(SourceRef {
            source: source.to_string(),
        }))
        .await?;
        match self.recv().await? {
            Message::DeleteOk(d) => Ok(d.version),
            m => Err(Self::unexpected(&m)),
        }
    }

    /// A client over a connection some other method (the mesh's) authenticated.
    pub(crate) fn from_parts(wire: Wire<TlsStream<TcpStream>>, principal: Principal) -> Self {
        Self {
            wire,
            principal: Some(principal),
            pending: None,
            request_in_flight: false,
        }
    }

    /// Sends one raw message and returns the raw answer (for tests of the protocol itself).
    pub async fn raw_request(&mut self, msg: &Message) -> Result<Message, Error> {
        self.verified().await?;
        self.wire.send(msg).await?;
        self.wire.recv_message().await
    }

    /// Closes the connection cleanly (TLS close_notify).
    pub async fn close(mut self) -> Result<(), Error> {
        self.wire.shutdown().await?;
        Ok(())
    }
}

/// What a partial download holds: the first `len` bytes of `version` of a source, whose
/// whole content hashes to `hash` (see [`Client::get_resume`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partial {
    /// The version the bytes belong to.
    pub version: u64,
    /// BLAKE3 of that version's whole content.
    pub hash: message::Digest,
    /// How many bytes of it the file holds.
    pub len: u64,
}

/// Hashes the first `len` bytes of `file` on a blocking thread, reading it in chunks, and
/// leaves the file positioned at `len`. `None` if the file holds fewer bytes.
async fn hash_prefix(
    mut file: std::fs::File,
    len: u64,
) -> Result<(std::fs::File, Option<blake3::Hasher>), Error> {
    tokio::task::spawn_blocking(move || {
        use std::io::Seek;
        file.seek(std::io::SeekFrom::Start(0))?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; pipe::CHUNK];
        let mut left = len;
        while left > 0 {
            // Bounded: at most CHUNK, which fits in usize.
            let want = usize::try_from(left.min(pipe::CHUNK as u64)).unwrap_or(pipe::CHUNK);
            let n = file.read(&mut buf[..want])?;
            if n == 0 {
                return Ok((file, None));
            }
            hasher.update(&buf[..n]);
            left -= n as u64;
        }
        // Anything past `len` is dropped: the data continues at `len`.
        file.set_len(len)?;
        file.seek(std::io::SeekFrom::Start(len))?;
        Ok((file, Some(hasher)))
    })
    .await
    .map_err(|e| Error::Internal(format!("worker thread failed: {e}")))?
}

/// What a put of a file records about it (docs/PROTOCOL.md §5.3): its modification time (if
/// it is after the Unix epoch) and whether its owner may execute it.
pub fn file_meta(m: &std::fs::Metadata) -> Meta {
    use std::os::unix::fs::PermissionsExt;
    Meta {
        mtime: m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .and_then(|d| u64::try_from(d.as_nanos()).ok()),
        executable: m.permissions().mode() & 0o100 != 0,
    }
}

/// Reads `file` to its end on a blocking thread and returns it with its size and BLAKE3
/// (what [`Client::put_resume_hashed`] announces). Fails if the file changes size meanwhile.
pub async fn hash_file(
    file: std::fs::File,
) -> Result<(std::fs::File, u64, message::Digest), Error> {
    let (file, size, hash, _) = read_whole(file, false).await?;
    Ok((file, size, hash))
}

/// Reads `file` once from its start on a blocking thread: its size, BLAKE3 and, with
/// `chunk`, its content-defined chunks (docs/PROTOCOL.md §5.4). Fails if the file changes
/// size meanwhile.
pub(crate) async fn read_whole(
    file: std::fs::File,
    chunk: bool,
) -> Result<(std::fs::File, u64, message::Digest, Vec<ChunkRef>), Error> {
    tokio::task::spawn_blocking(move || {
        use std::io::Seek;
        let mut file = file;
        let size = file.metadata()?.len();
        file.seek(std::io::SeekFrom::Start(0))?;
        let mut hasher = blake3::Hasher::new();
        let mut chunker = chunk.then(ferry_proto::chunking::Chunker::new);
        let mut buf = vec![0u8; pipe::CHUNK];
        let mut len = 0u64;
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            hasher.update(&buf[..n]);
            if let Some(c) = chunker.as_mut() {
                c.push(&buf[..n]);
            }
            len += n as u64;
        }
        if len != size {
            return Err(Error::Io(std::io::Error::other(format!(
                "the file changed while it was read ({size} bytes, then {len})"
            ))));
        }
        let chunks = chunker.map(|c| c.finish()).unwrap_or_default();
        Ok((file, size, *hasher.finalize().as_bytes(), chunks))
    })
    .await
    .map_err(|e| Error::Internal(format!("worker thread failed: {e}")))?
}

/// Positions `file` at `offset`.
async fn seek_to(mut file: std::fs::File, offset: u64) -> Result<std::fs::File, Error> {
    tokio::task::spawn_blocking(move || {
        use std::io::Seek;
        file.seek(std::io::SeekFrom::Start(offset))?;
        Ok(file)
    })
    .await
    .map_err(|e| Error::Internal(format!("worker thread failed: {e}")))?
}

/// Empties `file` and positions it at its start.
async fn truncate(mut file: std::fs::File) -> Result<std::fs::File, Error> {
    tokio::task::spawn_blocking(move || {
        use std::io::Seek;
        file.set_len(0)?;
        file.seek(std::io::SeekFrom::Start(0))?;
        Ok(file)
    })
    .await
    .map_err(|e| Error::Internal(format!("worker thread failed: {e}")))?
}

/// Formats a hash as lowercase hex.
pub fn hex(hash: &message::Digest) -> String {
    data_encoding::HEXLOWER.encode(hash)
}
