//! [`ClientBuilder`]: one way to open a [`Client`], whatever the way in.
//!
//! ```no_run
//! # async fn demo(cred: ferry::proto::credential::Credential) -> Result<(), ferry::Error> {
//! // A credential names its server and pins its key.
//! let mut client = ferry::Client::builder().credential(&cred).connect().await?;
//!
//! // A password user names the server and its pinned ID.
//! let (id, addr) = (cred.server_id, cred.server.clone());
//! let (client, session) = ferry::Client::builder()
//!     .server(&addr, id)
//!     .password("alice", b"correct horse battery staple")
//!     .connect_opening_session()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! Every setter takes effect or makes [`ClientBuilder::connect`] fail with
//! [`Error::Config`] saying why; none is silently ignored.

use ferry_proto::auth::ClientSession;
use ferry_proto::credential::Credential;
use ferry_proto::secret::SessionSecret;
use ferry_proto::server_id::ServerId;
use ferry_proto::session::SessionId;
use zeroize::Zeroizing;

use crate::{Client, Error};

/// How the builder authenticates.
enum Login {
    Credential(Box<Credential>),
    Password {
        user: String,
        password: Zeroizing<Vec<u8>>,
    },
    Session {
        id: SessionId,
        secret: SessionSecret,
    },
}

/// Options for opening a [`Client`]: where (an address and the pinned server ID, or those of
/// a credential), how to authenticate (a credential, a password, or a session), and whether
/// the first request may leave with the credential proof. Made by [`Client::builder`].
#[must_use = "a builder does nothing until `connect`"]
pub struct ClientBuilder {
    server: Option<(String, ServerId)>,
    login: Option<Login>,
    pipelined: bool,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let login = match &self.login {
            None => "none",
            Some(Login::Credential(_)) => "credential",
            Some(Login::Password { .. }) => "password",
            Some(Login::Session { .. }) => "session",
        };
        f.debug_struct("ClientBuilder")
            .field("server", &self.server.as_ref().map(|(a, _)| a))
            .field("login", &login)
            .field("pipelined", &self.pipelined)
            .finish()
    }
}

impl Client {
    /// Starts building a connection.
    pub fn builder() -> ClientBuilder {
        ClientBuilder {
            server: None,
            login: None,
            pipelined: false,
        }
    }
}

impl ClientBuilder {
    /// Authenticates with a client credential. Unless [`ClientBuilder::server`] is also
    /// given, connects to the address the credential names and pins its server ID.
    pub fn credential(mut self, cred: &Credential) -> Self {
        self.login = Some(Login::Credential(Box::new(cred.clone())));
        self
    }

    /// Logs in as `user` with a password (OPAQUE: the password never leaves this process).
    /// Needs [`ClientBuilder::server`].
    pub fn password(mut self, user: &str, password: &[u8]) -> Self {
        self.login = Some(Login::Password {
            user: user.to_owned(),
            password: Zeroizing::new(password.to_vec()),
        });
        self
    }

    /// Resumes a session opened by an earlier password login. Needs
    /// [`ClientBuilder::server`].
    pub fn session(mut self, id: SessionId, secret: &SessionSecret) -> Self {
        self.login = Some(Login::Session {
            id,
            secret: secret.clone(),
        });
        self
    }

    /// Connects to `addr` and accepts only the server whose ID is `pin` (overriding a
    /// credential's own).
    pub fn server(mut self, addr: &str, pin: ServerId) -> Self {
        self.server = Some((addr.to_owned(), pin));
        self
    }

    /// With a credential: return as soon as the proof is on its way and let the first
    /// request leave with it (see [`Client::connect_pipelined`]). Refused at connect with
    /// any other way in.
    pub fn pipelined(mut self, yes: bool) -> Self {
        self.pipelined = yes;
        self
    }

    /// Connects and authenticates.
    pub async fn connect(self) -> Result<Client, Error> {
        Ok(self.open(false).await?.0)
    }

    /// Logs in with the password and asks the server to open a session, which
    /// [`ClientBuilder::session`] resumes later without the password. Refused at connect
    /// with any other way in.
    pub async fn connect_opening_session(self) -> Result<(Client, ClientSession), Error> {
        match self.open(true).await? {
            (client, Some(session)) => Ok((client, session)),
            (_, None) => Err(Error::Protocol("the server opened no session".into())),
        }
    }

    async fn open(self, want_session: bool) -> Result<(Client, Option<ClientSession>), Error> {
        let Some(login) = self.login else {
            return Err(Error::Config(
                "say how to authenticate: a credential, a password or a session".into(),
            ));
        };
        let is_password = matches!(login, Login::Password { .. });
        if want_session && !is_password {
            return Err(Error::Config(
                "only a password login can open a session".into(),
            ));
        }
        if self.pipelined && !matches!(login, Login::Credential(_)) {
            return Err(Error::Config(
                "only a credential connection can be pipelined".into(),
            ));
        }
        let need_server = || {
            Error::Config("a password or session login needs the server's address and ID".into())
        };
        match login {
            Login::Credential(cred) => {
                let (addr, pin) = self
                    .server
                    .unwrap_or_else(|| (cred.server.clone(), cred.server_id));
                let client = if self.pipelined {
                    Client::connect_pipelined_to(&addr, pin, &cred).await?
                } else {
                    Client::connect_to(&addr, pin, &cred).await?
                };
                Ok((client, None))
            }
            Login::Password { user, password } => {
                let (addr, pin) = self.server.ok_or_else(need_server)?;
                Client::login(&addr, pin, &user, &password, want_session).await
            }
            Login::Session { id, secret } => {
                let (addr, pin) = self.server.ok_or_else(need_server)?;
                Ok((Client::resume(&addr, pin, id, &secret).await?, None))
            }
        }
    }
}
