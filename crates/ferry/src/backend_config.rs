//! The `[backend]` section of `ferry.toml`: where the account data lives, and how to find
//! the connection URL of a shared database without writing it in the file.
//!
//! ```toml
//! [backend]
//! accounts = "postgres"        # or "local" (the default: the folder's account files)
//! url_env = "FERRY_PG_URL"     # the URL is in this environment variable, or:
//! # url_file = "/etc/ferry/pg-url"   # in this file (mode 0600, like the key files)
//! ```
//!
//! The section is decoded by hand from the parsed TOML table, not by serde: serde's errors
//! quote what they refuse ("unknown variant `postgres://user:pw@…`"), and a URL written here
//! by mistake may hold a password. Every error below names the setting, never its value.

use std::path::{Path, PathBuf};

use serde::Deserializer;
use serde::de::IgnoredAny;
use zeroize::Zeroizing;

use crate::{Error, fsutil};

/// Which backend holds the account data (clients, users, invites, sessions, failed logins).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AccountsBackend {
    /// The server folder's files (`clients.toml`, `users.toml`, …): one server.
    #[default]
    Local,
    /// A PostgreSQL database shared by several servers (`ferry-postgres`).
    Postgres,
}

impl AccountsBackend {
    /// The name `ferry.toml` gives it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Postgres => "postgres",
        }
    }
}

/// Where the connection URL of a shared backend is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UrlSource {
    /// An environment variable of the server's process (its name).
    Env(String),
    /// A file readable by its owner only; a relative path is taken from the server folder.
    File(PathBuf),
}

/// The `[backend]` section.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackendConfig {
    /// Where the account data lives.
    pub accounts: AccountsBackend,
    /// Where the URL of a shared backend comes from (`None` for `local`).
    pub url: Option<UrlSource>,
}

/// The settings `[backend]` knows.
const KEYS: &str = "accounts, url_env, url_file";

fn bad(message: impl std::fmt::Display) -> Error {
    Error::Config(format!("ferry.toml: [backend] {message}"))
}

/// serde's side of the field: the section is decoded by [`BackendConfig::from_toml`].
pub(crate) fn skip<'de, D: Deserializer<'de>>(d: D) -> Result<BackendConfig, D::Error> {
    serde::Deserialize::deserialize(d).map(|IgnoredAny| BackendConfig::default())
}

impl BackendConfig {
    /// Decodes the `[backend]` section of the parsed file `doc` (absent: local). Refuses
    /// unknown settings, values of the wrong type, `url_env` or `url_file` without
    /// `accounts = "postgres"` (or both at once, or neither with it), and a `url` anywhere:
    /// the URL itself is never written in `ferry.toml`.
    pub fn from_toml(doc: &toml::Table) -> Result<Self, Error> {
        if doc.contains_key("url") {
            return Err(Error::Config(
                "ferry.toml: `url` is not a setting; a database URL is never written in \
                 ferry.toml: name an environment variable or a file in [backend] (url_env, \
                 url_file)"
                    .into(),
            ));
        }
        let Some(section) = doc.get("backend") else {
            return Ok(Self::default());
        };
        let Some(section) = section.as_table() else {
            return Err(bad("must be a section ([backend]), not a value"));
        };
        let text = |key: &str| -> Result<Option<&str>, Error> {
            match section.get(key) {
                None => Ok(None),
                Some(toml::Value::String(s)) => Ok(Some(s.as_str())),
                Some(_) => Err(bad(format_args!("{key} must be a string"))),
            }
        };
        for key in section.keys() {
            if key == "url" {
                return Err(bad(
                    "url: the database URL is never written in ferry.toml (it may hold a \
                     password, and the file is not secret); name an environment variable \
                     (url_env = \"FERRY_PG_URL\") or a file readable by its owner only \
                     (url_file = \"/path\")",
                ));
            }
            if !KEYS.split(", ").any(|k| k == key) {
                return Err(bad(format_args!(
                    "has no setting `{}` (it knows {KEYS})",
                    key.escape_debug()
                )));
            }
        }
        let accounts = match text("accounts")? {
            None | Some("local") => AccountsBackend::Local,
            Some("postgres") => AccountsBackend::Postgres,
            Some(_) => return Err(bad("accounts must be \"local\" or \"postgres\"")),
        };
        let url = match (text("url_env")?, text("url_file")?) {
            (Some(_), Some(_)) => return Err(bad("give url_env or url_file, not both")),
            (Some(name), None) => {
                let valid = !name.is_empty()
                    && !name.starts_with(|c: char| c.is_ascii_digit())
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !valid {
                    return Err(bad(
                        "url_env must name an environment variable (letters, digits and _, \
                         such as FERRY_PG_URL)",
                    ));
                }
                Some(UrlSource::Env(name.to_owned()))
            }
            (None, Some("")) => return Err(bad("url_file is empty")),
            (None, Some(path)) => Some(UrlSource::File(PathBuf::from(path))),
            (None, None) => None,
        };
        match (accounts, &url) {
            (AccountsBackend::Local, Some(_)) => Err(bad(
                "url_env and url_file apply only with accounts = \"postgres\"",
            )),
            (AccountsBackend::Postgres, None) => Err(bad(
                "accounts = \"postgres\" needs url_env (an environment variable holding the \
                 URL) or url_file (a file holding it)",
            )),
            _ => Ok(Self { accounts, url }),
        }
    }

    /// The `[backend]` section `ferry init` writes for `accounts` (with the URL in
    /// `url_env` or `url_file`), or `None` for the local default.
    pub fn section(&self) -> Option<String> {
        let url = match self.url.as_ref()? {
            UrlSource::Env(name) => format!("url_env = \"{}\"", name.escape_default()),
            UrlSource::File(path) => {
                format!(
                    "url_file = \"{}\"",
                    path.display().to_string().escape_default()
                )
            }
        };
        Some(format!(
            "\n# Where the account data (clients, users, invites, sessions, failed logins) lives:\n\
             # \"local\" (this folder's files) or \"postgres\" (shared by every instance that\n\
             # names the same database). The URL (postgres://user:password@host:port/dbname)\n\
             # is never written here: url_env names the environment variable `ferry serve` and\n\
             # the account commands read it from, url_file a file only its owner may read.\n\
             [backend]\naccounts = \"{}\"\n{url}\n",
            self.accounts.name()
        ))
    }

    /// The connection URL of a shared backend, read from where `url_env` or `url_file` say
    /// (`dir`, the server folder, resolves a relative `url_file`); `None` for `local`. Errors
    /// name the variable or file, never the URL.
    pub fn url(&self, dir: &Path) -> Result<Option<Zeroizing<String>>, Error> {
        let text = match &self.url {
            None => return Ok(None),
            Some(UrlSource::Env(name)) => match std::env::var(name) {
                Ok(v) => Zeroizing::new(v),
                Err(std::env::VarError::NotPresent) => {
                    return Err(Error::Config(format!(
                        "ferry.toml's [backend] reads the {} URL from the environment variable \
                         {name}, which is not set",
                        self.accounts.name()
                    )));
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(Error::Config(format!(
                        "the environment variable {name} (ferry.toml's [backend] url_env) is \
                         not UTF-8 text"
                    )));
                }
            },
            Some(UrlSource::File(path)) => {
                let path = dir.join(path);
                fsutil::read_secret_text(&path).map_err(|e| {
                    Error::Config(format!(
                        "{} (ferry.toml's [backend] url_file): {e}",
                        path.display()
                    ))
                })?
            }
        };
        if text.trim().is_empty() {
            return Err(Error::Config(format!(
                "the {} URL that ferry.toml's [backend] names is empty",
                self.accounts.name()
            )));
        }
        Ok(Some(Zeroizing::new(text.trim().to_owned())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const SECRET: &str = "hunter2-not-shown";

    fn parse(text: &str) -> Result<BackendConfig, String> {
        Config::parse(text)
            .map(|c| c.backend)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn absent_is_local_and_the_written_sections_parse() {
        assert_eq!(parse("").unwrap(), BackendConfig::default());
        assert_eq!(parse("[backend]").unwrap(), BackendConfig::default());
        let pg = parse("[backend]\naccounts = \"postgres\"\nurl_env = \"FERRY_PG_URL\"").unwrap();
        assert_eq!(pg.accounts, AccountsBackend::Postgres);
        assert_eq!(pg.url, Some(UrlSource::Env("FERRY_PG_URL".into())));
        let file = BackendConfig {
            accounts: AccountsBackend::Postgres,
            url: Some(UrlSource::File("/etc/ferry/pg \"url\"".into())),
        };
        for c in [pg, file] {
            let text = format!("{}{}", crate::config::DEFAULT_CONFIG, c.section().unwrap());
            assert_eq!(parse(&text).unwrap(), c);
        }
        assert_eq!(BackendConfig::default().section(), None);
    }

    #[test]
    fn malformed_sections_are_refused_without_quoting_values() {
        let url = format!("postgres://ferry:{SECRET}@db:5432/ferry");
        for (text, says) in [
            (format!("url = \"{url}\""), "never written in ferry.toml"),
            (format!("[backend]\nurl = \"{url}\""), "never written"),
            (
                format!("[backend]\npassword = \"{SECRET}\""),
                "no setting `password`",
            ),
            (
                format!("[backend]\naccounts = \"{url}\""),
                "\"local\" or \"postgres\"",
            ),
            (format!("backend = \"{url}\""), "must be a section"),
            (
                format!("[backend]\naccounts = 7\nurl_env = \"{SECRET}\""),
                "must be a string",
            ),
            (
                format!("[backend]\naccounts = \"postgres\"\nurl_env = \"{SECRET}-x\""),
                "url_env must name",
            ),
            ("[backend]\naccounts = \"postgres\"".into(), "needs url_env"),
            (
                "[backend]\nurl_env = \"X\"".into(),
                "only with accounts = \"postgres\"",
            ),
            (
                "[backend]\naccounts = \"postgres\"\nurl_env = \"X\"\nurl_file = \"/f\"".into(),
                "not both",
            ),
            (
                "[backend]\naccounts = \"postgres\"\nurl_file = \"\"".into(),
                "url_file is empty",
            ),
            (
                "[backend]\naccounts = \"postgres\"\nurl_env = \"\"".into(),
                "url_env must name",
            ),
            ("[backend]\n[backend.x]\ny = 1".into(), "no setting `x`"),
        ] {
            let e = parse(&text).unwrap_err();
            assert!(e.contains(says), "{text:?}: {e}");
            assert!(!e.contains(SECRET), "{e}");
        }
    }

    #[test]
    fn the_url_comes_from_the_variable_or_an_owner_only_file() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let name = "FERRY_TEST_BACKEND_CONFIG_URL_UNSET";
        let env = BackendConfig {
            accounts: AccountsBackend::Postgres,
            url: Some(UrlSource::Env(name.into())),
        };
        let e = env.url(tmp.path()).unwrap_err().to_string();
        assert!(e.contains(name) && e.contains("not set"), "{e}");
        let file = BackendConfig {
            accounts: AccountsBackend::Postgres,
            url: Some(UrlSource::File("pg-url".into())),
        };
        let path = tmp.path().join("pg-url");
        std::fs::write(&path, format!("postgres://u:{SECRET}@h/db\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = file.url(tmp.path()).unwrap_err().to_string();
        assert!(e.contains("chmod 600") && !e.contains(SECRET), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let url = file.url(tmp.path()).unwrap().unwrap();
        assert_eq!(url.as_str(), format!("postgres://u:{SECRET}@h/db"));
        std::fs::write(&path, " \n").unwrap();
        assert!(
            file.url(tmp.path())
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        assert_eq!(BackendConfig::default().url(tmp.path()).unwrap(), None);
    }
}
