//! The formats of the files ferry keeps, parsed without IO.
//!
//! Server side: `clients.toml`, `users.toml`, `invites.toml`, `sessions.toml`. Client side: `profile.toml`
//! (where `ferry login` goes) and `session.toml` (a stored login session). All are TOML;
//! unknown keys are refused. Parse errors never quote the file, which may hold secrets (session
//! secrets, OPAQUE records): they name a missing field or a line number, nothing else.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::auth::{Method, Principal};
use crate::password::{KsfParams, UserRecord};
use crate::secret::SessionSecret;
use crate::session::SessionId;

/// Largest file parsed.
pub const MAX_FILE_LEN: usize = 1 << 20;

/// Most live sessions one name (client or user) holds at once.
pub const MAX_SESSIONS_PER_NAME: usize = 32;

/// A file that does not parse. Never holds text from the file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FileError(String);

impl FileError {
    pub(crate) fn new(what: &str) -> Self {
        Self(what.to_owned())
    }
}

/// Describes a TOML error without quoting the input: a missing field's name (if it looks like
/// one of ours) or the line of the problem.
pub(crate) fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let first = e.message().lines().next().unwrap_or("");
    if let Some(field) = first
        .strip_prefix("missing field `")
        .and_then(|r| r.strip_suffix('`'))
        .filter(|f| {
            !f.is_empty() && f.len() <= 32 && f.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        })
    {
        return format!("missing field `{field}`");
    }
    match e.span() {
        Some(span) => {
            let line = 1 + text
                .as_bytes()
                .get(..span.start)
                .map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count());
            format!("unexpected or malformed entry at line {line}")
        }
        None => "unexpected or malformed entry".to_owned(),
    }
}

/// Parses TOML into `T`, with errors that quote nothing.
pub fn parse_toml<T: DeserializeOwned>(text: &str) -> Result<T, FileError> {
    if text.len() > MAX_FILE_LEN {
        return Err(FileError("file too large".into()));
    }
    toml::from_str(text).map_err(|e| FileError(describe_toml_error(text, &e)))
}

fn to_toml<T: Serialize>(header: &str, value: &T) -> Result<Zeroizing<String>, FileError> {
    let body =
        Zeroizing::new(toml::to_string(value).map_err(|_| FileError("cannot encode".into()))?);
    let text = Zeroizing::new(format!("{header}\n{}", *body));
    // Never write what the reader would refuse.
    if text.len() > MAX_FILE_LEN {
        return Err(FileError("file too large".into()));
    }
    Ok(text)
}

/// One issued client (a table of `clients.toml`). Holds no secrets: the client's key is
/// derived from the master key and its claims.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientRecord {
    /// Current epoch; credentials of older epochs no longer work.
    pub epoch: u64,
    /// Attributes of the current credential.
    pub attributes: BTreeMap<String, String>,
    /// When the current credential was issued (Unix seconds).
    pub issued: u64,
    /// Revoked clients cannot authenticate.
    #[serde(default)]
    pub revoked: bool,
}

/// All issued clients: `clients.toml`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    /// By name.
    #[serde(default)]
    pub clients: BTreeMap<String, ClientRecord>,
}

impl Registry {
    /// Parses the file.
    pub fn parse(text: &str) -> Result<Self, FileError> {
        parse_toml(text)
    }

    /// The file's text.
    pub fn to_toml(&self) -> Result<Zeroizing<String>, FileError> {
        to_toml(
            "# Issued ferry clients. Holds no keys. Managed by `ferry client`.",
            self,
        )
    }

    /// Whether `name` exists, is not revoked and is at `epoch`.
    pub fn is_current(&self, name: &str, epoch: u64) -> bool {
        self.clients
            .get(name)
            .is_some_and(|c| !c.revoked && c.epoch == epoch)
    }
}

/// One user.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    /// Attributes, `role` among them.
    pub attributes: BTreeMap<String, String>,
    /// The OPAQUE registration record, base64.
    pub record: String,
    /// Argon2id parameters of the record.
    pub ksf: KsfParams,
    /// When the password was set (Unix seconds).
    pub created: u64,
    /// The record's generation: a new one (from [`Users::last_generation`]) at every change
    /// of the record or the user's role (registration, password change, re-invitation), so
    /// that logins and sessions of an older one end. Absent in files written before it
    /// existed: 0.
    #[serde(default)]
    pub generation: u64,
}

impl core::fmt::Debug for UserEntry {
    // The record allows an offline dictionary attack on the password: never print it.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("UserEntry")
            .field("attributes", &self.attributes)
            .field("ksf", &self.ksf)
            .field("created", &self.created)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl UserEntry {
    /// The record in the form the protocol takes.
    pub fn user_record(&self) -> Option<UserRecord> {
        let record = data_encoding::BASE64.decode(self.record.as_bytes()).ok()?;
        Some(UserRecord {
            record,
            ksf: self.ksf,
        })
    }
}

/// All users.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Users {
    /// The last generation given to any record, removed users' included, so a generation is
    /// never given twice. Absent in files written before it existed: 0.
    #[serde(default)]
    pub last_generation: u64,
    /// By name.
    #[serde(default)]
    pub users: BTreeMap<String, UserEntry>,
}

impl Users {
    /// Takes a generation never given before (greater than every one in the file).
    pub fn next_generation(&mut self) -> u64 {
        let highest = self
            .users
            .values()
            .map(|u| u.generation)
            .fold(self.last_generation, u64::max);
        self.last_generation = highest.saturating_add(1);
        self.last_generation
    }

    /// Parses the file.
    pub fn parse(text: &str) -> Result<Self, FileError> {
        parse_toml(text)
    }

    /// The file's text (written with mode 0600).
    pub fn to_toml(&self) -> Result<Zeroizing<String>, FileError> {
        to_toml(
            "# ferry users: OPAQUE records only, never passwords. Managed by `ferry user`.",
            self,
        )
    }
}

/// One invite.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InviteEntry {
    /// Serial: the invite claims' epoch; a new invite for the same name takes the next one.
    pub serial: u64,
    /// Attributes the user will get.
    pub attributes: BTreeMap<String, String>,
    /// Unix seconds after which the invite is void.
    pub expires: u64,
    /// Whether it was redeemed.
    #[serde(default)]
    pub spent: bool,
}

/// All invites (the latest per name).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Invites {
    /// By user name.
    #[serde(default)]
    pub invites: BTreeMap<String, InviteEntry>,
}

impl Invites {
    /// Parses the file.
    pub fn parse(text: &str) -> Result<Self, FileError> {
        parse_toml(text)
    }

    /// The file's text (written with mode 0600).
    pub fn to_toml(&self) -> Result<Zeroizing<String>, FileError> {
        to_toml("# ferry invites. Managed by `ferry user invite`.", self)
    }
}

/// One session.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionEntry {
    /// Owner's name.
    pub name: String,
    /// Owner's attributes.
    pub attributes: BTreeMap<String, String>,
    /// How it was opened: `password:GENERATION` (a password login against the user's record
    /// of that generation; plain `password`, from files written before generations, is
    /// generation 0), or `psk:EPOCH`.
    pub origin: String,
    /// The secret: 64 hexadecimal digits in the file, a zeroizing [`SessionSecret`] in
    /// memory (every snapshot of the file holds its own copy, wiped when dropped).
    #[serde(with = "secret_hex")]
    pub secret: SessionSecret,
    /// When it was opened.
    pub created: u64,
    /// When it was last used.
    pub last_used: u64,
    /// Idle lifetime, seconds.
    pub idle_secs: u64,
    /// Absolute end.
    pub expires: u64,
}

impl std::fmt::Debug for SessionEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionEntry")
            .field("name", &self.name)
            .field("origin", &self.origin)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

impl SessionEntry {
    /// Whether it is still live at `now`.
    pub fn live(&self, now: u64) -> bool {
        now < self.expires && now < self.last_used.saturating_add(self.idle_secs)
    }

    /// The method that opened it.
    pub fn origin_method(&self) -> Option<Method> {
        match self.origin.as_str() {
            "password" => Some(Method::Password { generation: 0 }),
            o => {
                if let Some(g) = o.strip_prefix("password:") {
                    return g
                        .parse()
                        .ok()
                        .map(|generation| Method::Password { generation });
                }
                o.strip_prefix("psk:")
                    .and_then(|e| e.parse().ok())
                    .map(|epoch| Method::Psk { epoch })
            }
        }
    }

    /// Whether a password login opened it.
    pub fn opened_by_password(&self) -> bool {
        matches!(self.origin_method(), Some(Method::Password { .. }))
    }

    /// The `origin` text for a session opened by `method`; `None` for a method that does not
    /// open sessions.
    pub fn origin_of(method: &Method) -> Option<String> {
        match method {
            Method::Psk { epoch } => Some(format!("psk:{epoch}")),
            Method::Password { generation } => Some(format!("password:{generation}")),
            _ => None,
        }
    }

    /// The principal it opened as.
    pub fn principal(&self) -> Option<Principal> {
        Some(Principal {
            name: self.name.clone(),
            attributes: self.attributes.clone(),
            method: self.origin_method()?,
        })
    }
}

/// A session secret in `sessions.toml`: 64 hexadecimal digits, as before it had a type of its
/// own. Both directions go through zeroizing buffers; an error names nothing from the file.
mod secret_hex {
    use serde::{Deserialize, Deserializer, Serializer};
    use zeroize::Zeroizing;

    use crate::secret::SessionSecret;

    pub(super) fn serialize<S: Serializer>(s: &SessionSecret, ser: S) -> Result<S::Ok, S::Error> {
        let hex = Zeroizing::new(data_encoding::HEXLOWER.encode(s.expose_secret()));
        ser.serialize_str(&hex)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<SessionSecret, D::Error> {
        let hex = Zeroizing::new(String::deserialize(de)?);
        let mut key = Zeroizing::new([0u8; 32]);
        if hex.len() != 64
            || data_encoding::HEXLOWER_PERMISSIVE
                .decode_mut(hex.as_bytes(), key.as_mut())
                .is_err()
        {
            return Err(serde::de::Error::custom(
                "a session secret must be 64 hexadecimal digits",
            ));
        }
        Ok(SessionSecret::from_bytes(*key))
    }
}

/// Session IDs as they appear in files and on the command line.
pub fn session_id_text(id: &SessionId) -> String {
    data_encoding::HEXLOWER.encode(id)
}

/// All sessions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sessions {
    /// By hex session ID.
    #[serde(default)]
    pub sessions: BTreeMap<String, SessionEntry>,
}

impl Sessions {
    /// Parses the file.
    pub fn parse(text: &str) -> Result<Self, FileError> {
        parse_toml(text)
    }

    /// The file's text (written with mode 0600).
    pub fn to_toml(&self) -> Result<Zeroizing<String>, FileError> {
        to_toml(
            "# ferry sessions (secrets: keep private). Managed by the server and `ferry session`.",
            self,
        )
    }

    /// Drops sessions that ended before `now`.
    pub fn prune(&mut self, now: u64) {
        self.sessions.retain(|_, s| s.live(now));
    }

    /// Adds a session. A name holds at most [`MAX_SESSIONS_PER_NAME`]: beyond that its
    /// least recently used session ends, so one principal asking for a session on every
    /// connection cannot grow the file until no session works.
    pub fn insert(&mut self, id: String, entry: SessionEntry) {
        let name = entry.name.clone();
        self.sessions.insert(id, entry);
        loop {
            let own = self.sessions.iter().filter(|(_, s)| s.name == name);
            if own.clone().count() <= MAX_SESSIONS_PER_NAME {
                return;
            }
            let Some(oldest) = own
                .min_by_key(|(_, s)| (s.last_used, s.created))
                .map(|(k, _)| k.clone())
            else {
                return;
            };
            self.sessions.remove(&oldest);
        }
    }
}

/// `profile.toml`: where `ferry login` goes by default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Server address.
    pub server: String,
    /// The server's ID.
    pub server_id: String,
    /// User name.
    pub user: String,
}

impl Profile {
    /// Parses the file.
    pub fn parse(text: &str) -> Result<Self, FileError> {
        parse_toml(text)
    }

    /// The file's text.
    pub fn to_toml(&self) -> Result<Zeroizing<String>, FileError> {
        to_toml(
            "# ferry profile: where `ferry login` goes. Written by `ferry register` and `ferry login`.",
            self,
        )
    }
}

/// `session.toml`: a stored login session (holds its secret: mode 0600).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionFile {
    /// Server address.
    pub server: String,
    /// The server's ID.
    pub server_id: String,
    /// User name.
    pub user: String,
    /// Session ID, hex.
    pub id: String,
    /// Session secret, hex.
    pub secret: String,
    /// Absolute end, Unix seconds.
    pub expires: u64,
}

impl Drop for SessionFile {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.secret);
    }
}

impl core::fmt::Debug for SessionFile {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SessionFile")
            .field("server", &self.server)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl SessionFile {
    /// Parses the file.
    pub fn parse(text: &str) -> Result<Self, FileError> {
        parse_toml(text)
    }

    /// The file's text (it holds the secret: write it with mode 0600).
    pub fn to_toml(&self) -> Result<Zeroizing<String>, FileError> {
        to_toml(
            "# ferry login session: keep secret (mode 0600). Written by `ferry login`.",
            self,
        )
    }

    /// The session ID.
    pub fn session_id(&self) -> Option<SessionId> {
        let mut id = [0u8; 16];
        (self.id.len() == 32).then_some(())?;
        data_encoding::HEXLOWER_PERMISSIVE
            .decode_mut(self.id.as_bytes(), &mut id)
            .ok()?;
        Some(id)
    }

    /// The session secret.
    pub fn session_secret(&self) -> Option<SessionSecret> {
        let mut key = Zeroizing::new([0u8; 32]);
        (self.secret.len() == 64).then_some(())?;
        data_encoding::HEXLOWER_PERMISSIVE
            .decode_mut(self.secret.as_bytes(), key.as_mut())
            .ok()?;
        Some(SessionSecret::from_bytes(*key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_quote_nothing_from_the_file() {
        let secret = "ab".repeat(32);
        for text in [
            format!("[sessions.x]\nname = \"a\"\nsecret = 5\nsecret2 = \"{secret}\""),
            format!("{secret} = 1"),
            format!("server = \"{secret}\"\nserver_id = 1"),
            "[[[".to_owned(),
        ] {
            for e in [
                Sessions::parse(&text).err(),
                SessionFile::parse(&text).err(),
                Users::parse(&text).err(),
                Profile::parse(&text).err(),
            ]
            .into_iter()
            .flatten()
            {
                assert!(!e.to_string().contains("abab"), "{e}");
            }
        }
        let e = Profile::parse("server = \"a\"\nuser = \"b\"").unwrap_err();
        assert_eq!(e.to_string(), "missing field `server_id`");
    }

    #[test]
    fn debug_shows_no_record_or_secret() {
        let users = Users::parse(
            "[users.a]\nrecord = \"UkVDT1JEUkVDT1JE\"\ncreated = 1\n[users.a.attributes]\nrole = \"r\"\n[users.a.ksf]\nm_kib = 8\nt = 1\np = 1\n",
        )
        .unwrap();
        assert!(!format!("{users:?}").contains("UkVDT1JE"));
        let sessions = Sessions::parse(&format!(
            "[sessions.x]\nname = \"a\"\norigin = \"password\"\nsecret = \"{}\"\ncreated = 1\nlast_used = 1\nidle_secs = 1\nexpires = 1\n[sessions.x.attributes]\n",
            "cd".repeat(32)
        ))
        .unwrap();
        assert!(!format!("{sessions:?}").contains("cdcd"));
    }

    #[test]
    fn records_and_sessions_without_a_generation_are_generation_0() {
        // users.toml and sessions.toml as written before generations existed.
        let mut users = Users::parse(
            "[users.a]\nrecord = \"UkVDT1JE\"\ncreated = 1\n[users.a.attributes]\nrole = \"r\"\n[users.a.ksf]\nm_kib = 8\nt = 1\np = 1\n",
        )
        .unwrap();
        assert_eq!((users.last_generation, users.users["a"].generation), (0, 0));
        let mut s = session("a", 1);
        assert_eq!(s.origin_method(), Some(Method::Password { generation: 0 }));
        s.origin = "password:7".into();
        assert_eq!(s.origin_method(), Some(Method::Password { generation: 7 }));
        assert!(s.opened_by_password());
        s.origin = "password:x".into();
        assert_eq!(s.origin_method(), None);
        s.origin = "psk:3".into();
        assert!(!s.opened_by_password());
        // Generations are never given twice, removed users' included.
        assert_eq!(users.next_generation(), 1);
        users.users.get_mut("a").unwrap().generation = 5;
        assert_eq!(users.next_generation(), 6);
        users.users.clear();
        assert_eq!(users.next_generation(), 7);
        let text = users.to_toml().unwrap();
        assert_eq!(Users::parse(&text).unwrap().last_generation, 7);
    }

    #[test]
    fn session_secrets_keep_their_file_format() {
        // A file written before secrets had their own type reads, and writes back the same.
        let text = format!(
            "[sessions.x]\nname = \"a\"\norigin = \"password\"\nsecret = \"{}\"\ncreated = 1\nlast_used = 1\nidle_secs = 1\nexpires = 1\n\n[sessions.x.attributes]\n",
            "cd".repeat(32)
        );
        let sessions = Sessions::parse(&text).unwrap();
        let s = &sessions.sessions["x"];
        assert_eq!(s.secret, SessionSecret::from_bytes([0xcd; 32]));
        assert_eq!(format!("{:?}", s.secret), "SessionSecret(..)");
        let written = sessions.to_toml().unwrap();
        assert!(written.contains(&format!("secret = \"{}\"", "cd".repeat(32))));
        assert_eq!(Sessions::parse(&written).unwrap(), sessions);
        // A malformed secret is refused without quoting it.
        let bad = text.replace(&"cd".repeat(32), &"zz".repeat(32));
        let e = Sessions::parse(&bad).unwrap_err().to_string();
        assert!(!e.contains("zz"), "{e}");
    }

    #[test]
    fn round_trips() {
        let s = SessionFile {
            server: "h:1".into(),
            server_id: "X".into(),
            user: "u".into(),
            id: "00".repeat(16),
            secret: "11".repeat(32),
            expires: 9,
        };
        assert_eq!(SessionFile::parse(&s.to_toml().unwrap()).unwrap(), s);
        assert_eq!(s.session_id(), Some([0; 16]));
        assert!(s.session_secret().is_some());
        assert!(!format!("{s:?}").contains("1111"));
        let mut bad = s.clone();
        bad.secret = "zz".repeat(32);
        assert!(bad.session_secret().is_none());
    }

    fn session(name: &str, last_used: u64) -> SessionEntry {
        SessionEntry {
            name: name.into(),
            attributes: [("role".to_owned(), "r".to_owned())].into(),
            origin: "password".into(),
            secret: SessionSecret::from_bytes([0x11; 32]),
            created: 1,
            last_used,
            idle_secs: 1 << 40,
            expires: 1 << 40,
        }
    }

    #[test]
    fn one_name_holds_a_bounded_number_of_sessions() {
        let mut all = Sessions::default();
        all.insert("other".into(), session("b", 0));
        for i in 0..MAX_SESSIONS_PER_NAME as u64 + 10 {
            all.insert(format!("{i:032x}"), session("a", i));
        }
        let own: Vec<u64> = all
            .sessions
            .values()
            .filter(|s| s.name == "a")
            .map(|s| s.last_used)
            .collect();
        assert_eq!(own.len(), MAX_SESSIONS_PER_NAME);
        // The least recently used went first; another name's session stayed.
        assert_eq!(own.iter().min(), Some(&10));
        assert!(all.sessions.contains_key("other"));
    }

    #[test]
    fn a_file_the_reader_would_refuse_is_not_written() {
        let mut all = Sessions::default();
        for i in 0..5000 {
            all.sessions
                .insert(format!("{i:032x}"), session(&format!("n{i}"), 1));
        }
        assert!(all.to_toml().is_err());
    }
}
