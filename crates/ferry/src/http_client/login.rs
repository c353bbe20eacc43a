//! A password user's login over HTTP (docs/HTTP.md §13): the OPAQUE exchange of the TLS
//! front in two unsigned requests, then a client whose requests are signed with a key
//! derived from the session the login opened.

use ferry_proto::auth::{self, ClientAuth, ClientSession, ClientStep};
use ferry_proto::http::RequestSigner;
use ferry_proto::http::session::{session_claims, session_psk};
use ferry_proto::message::Message;

use super::HttpClient;
use super::transport::{Base, Transport, post_unsigned, tls_connector};
use crate::Error;

/// The header naming a login between its two requests.
const LOGIN_HEADER: &str = "x-ferry-login";
/// Most bytes of a login answer.
const ANSWER_LIMIT: usize = 64 * 1024;

/// One login step: `msg` posted to `path`; the server's message, and its login ID header.
async fn step(
    base: &Base,
    tls: Option<&tokio_rustls::TlsConnector>,
    path: &str,
    login: Option<String>,
    msg: &Message,
) -> Result<(Message, Option<String>), Error> {
    let header = login.map(|l| (LOGIN_HEADER, l));
    let (status, headers, body) =
        post_unsigned(base, tls, path, header, msg.encode(), ANSWER_LIMIT).await?;
    match status {
        200 => {}
        401 => return Err(Error::AuthFailed),
        503 => return Err(Error::Busy("the HTTP front asks to retry later".into())),
        s => return Err(Error::Protocol(format!("HTTP login answered {s}"))),
    }
    let msg = Message::decode(&body)
        .map_err(|_| Error::Protocol("HTTP login answer is not a message".into()))?;
    let login = headers
        .get(LOGIN_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((msg, login))
}

impl HttpClient {
    /// Logs `user` in with `password` at the HTTP front at `base_url` (OPAQUE: the password
    /// never leaves this process), trusting `roots` (DER certificates) for an `https://`
    /// URL. Returns a client signing as the session the login opened, and that session,
    /// which [`HttpClient::with_session`] can use later without the password.
    pub async fn login(
        base_url: &str,
        roots: &[Vec<u8>],
        user: &str,
        password: &[u8],
    ) -> Result<(Self, ClientSession), Error> {
        ferry_proto::names::validate_client_name(user)?;
        let base = Base::parse(base_url)?;
        if base.https && roots.is_empty() {
            // As for signed requests: never a plain connection to an https:// URL.
            return Err(Error::Config(
                "an https:// base URL needs the proxy's certificate (--http-ca)".into(),
            ));
        }
        let tls = if roots.is_empty() {
            None
        } else {
            Some(tls_connector(roots)?)
        };
        let (first, state) = auth::http_password_login(&mut rand_core::OsRng, user, password)
            .map_err(|_| Error::Internal("cannot start a login".into()))?;
        let (answer, login) = step(&base, tls.as_ref(), "/v1/login/start", None, &first).await?;
        let login = login.ok_or_else(|| Error::Protocol("HTTP login without its ID".into()))?;
        // Argon2id: off the async threads.
        let next = tokio::task::spawn_blocking(move || state.handle(answer, &mut rand_core::OsRng))
            .await
            .map_err(|e| Error::Internal(format!("authentication worker failed: {e}")))?
            .map_err(|_| Error::AuthFailed)?;
        let (finish, state): (Message, Option<ClientAuth>) = match next {
            ClientStep::Send(m, state) => (m, Some(state)),
            // The server learns of the failure at once (and counts it).
            ClientStep::SendAndFail(m, _) => (m, None),
            _ => return Err(Error::Protocol("unexpected HTTP login answer".into())),
        };
        let sent = step(
            &base,
            tls.as_ref(),
            "/v1/login/finish",
            Some(login),
            &finish,
        )
        .await;
        let Some(state) = state else {
            return Err(Error::AuthFailed);
        };
        let (answer, _) = sent?;
        let Ok(ClientStep::Done(done)) = state.handle(answer, &mut rand_core::OsRng) else {
            return Err(Error::AuthFailed);
        };
        let session = done
            .session
            .ok_or_else(|| Error::Protocol("the server opened no session".into()))?;
        let mut client = Self::with_session(base_url, user, &session)?;
        client.transport.tls = tls;
        Ok((client, session))
    }

    /// A client signing as `user`'s password session `session` (opened by
    /// [`HttpClient::login`]).
    pub fn with_session(
        base_url: &str,
        user: &str,
        session: &ClientSession,
    ) -> Result<Self, Error> {
        let base = Base::parse(base_url)?;
        let claims = session_claims(user, &session.id)
            .map_err(|e| Error::Config(format!("bad session claims: {e}")))?;
        let psk = session_psk(&session.secret, &claims.encode());
        Ok(Self {
            transport: Transport {
                base,
                signer: RequestSigner::new(claims, psk),
                tls: None,
            },
            seal: None,
        })
    }
}
