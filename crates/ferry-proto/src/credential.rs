//! The credential file a client keeps.
//!
//! TOML (v1.0) that a person can read:
//!
//! ```toml
//! # ferry credential: keep secret (mode 0600)
//! server = "127.0.0.1:7443"
//! server_id = "ABCD-EFGH-…"
//! name = "alice"
//! epoch = 1
//! key = "64 lowercase hex digits"
//! http_url = "https://files.example.com"   # optional: the HTTP front, for `--via http`
//! http_seal = "1:64 lowercase hex digits"   # with http_url: the key `--seal` seals to
//!
//! [attributes]
//! role = "writer"
//! ```
//!
//! Unknown keys are refused, so a typo is not silently ignored.

use crate::http::seal::SealPublicKey;
use std::collections::BTreeMap;

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::claims::{Claims, ClaimsError};
use crate::secret::Psk;
use crate::server_id::{ServerId, ServerIdError};

/// Largest credential file accepted.
pub const MAX_FILE_LEN: usize = 64 * 1024;

/// A credential: where to connect, whom to expect, what to claim and the key for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    /// Server address, `HOST:PORT`.
    pub server: String,
    /// The server ID to pin.
    pub server_id: ServerId,
    /// The claims the key was derived over.
    pub claims: Claims,
    /// The key.
    pub key: Psk,
    /// The base URL of the server's HTTP front (`http://HOST:PORT` or `https://HOST:PORT`),
    /// if the credential was issued with one (`http_url` in the file; absent in older files).
    pub http_url: Option<String>,
    /// The server's HPKE key for sealed HTTP bodies (docs/HTTP.md §11), pinned when the
    /// credential was issued with an HTTP URL (`http_seal` in the file, `ID:HEX`).
    pub http_seal: Option<SealPublicKey>,
}

/// Why a credential file was refused. Never contains key material.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// Not valid TOML or not the expected shape.
    #[error("not a ferry credential file: {0}")]
    Syntax(String),
    /// The key is not 64 hex digits.
    #[error("the key must be 64 hexadecimal digits")]
    Key,
    /// The server ID is malformed.
    #[error(transparent)]
    ServerId(#[from] ServerIdError),
    /// A claim breaks its rules.
    #[error(transparent)]
    Claims(#[from] ClaimsError),
    /// The server address is empty or contains whitespace.
    #[error("server must be HOST:PORT")]
    Server,
    /// The file is larger than [`MAX_FILE_LEN`].
    #[error("file too large")]
    TooLarge,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    server: String,
    server_id: String,
    name: String,
    epoch: u64,
    key: Zeroizing<String>,
    #[serde(default)]
    http_url: Option<String>,
    #[serde(default)]
    http_seal: Option<String>,
    attributes: BTreeMap<String, String>,
}

impl Credential {
    /// Parses a credential file's text.
    pub fn parse(text: &str) -> Result<Self, CredentialError> {
        if text.len() > MAX_FILE_LEN {
            return Err(CredentialError::TooLarge);
        }
        let raw: Raw = toml::from_str(text)
            .map_err(|e| CredentialError::Syntax(crate::files::describe_toml_error(text, &e)))?;
        let server = raw.server.trim();
        if server.is_empty() || server.contains(char::is_whitespace) || !server.contains(':') {
            return Err(CredentialError::Server);
        }
        let server_id = ServerId::parse(&raw.server_id)?;
        let claims = Claims::new(&raw.name, raw.epoch, raw.attributes)?;
        let mut key = Zeroizing::new([0u8; 32]);
        let hex = raw.key.trim().as_bytes();
        if hex.len() != 64 {
            return Err(CredentialError::Key);
        }
        data_encoding::HEXLOWER_PERMISSIVE
            .decode_mut(hex, key.as_mut())
            .map_err(|_| CredentialError::Key)?;
        let http_url = match raw.http_url {
            Some(u) if u.is_empty() || u.contains(char::is_whitespace) || u.len() > 2048 => {
                return Err(CredentialError::Syntax(
                    "http_url must be a URL without spaces".into(),
                ));
            }
            u => u,
        };
        let http_seal = match raw.http_seal {
            None => None,
            Some(k) => Some(SealPublicKey::parse(&k).ok_or_else(|| {
                CredentialError::Syntax("http_seal must be ID:64 hex digits".into())
            })?),
        };
        Ok(Self {
            server: server.to_owned(),
            server_id,
            claims,
            key: Psk::from_bytes(*key),
            http_url,
            http_seal,
        })
    }

    /// The file's text. It holds the key: write it only to a file of mode 0600.
    pub fn to_toml(&self) -> Zeroizing<String> {
        let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
        let mut out = Zeroizing::new(String::new());
        out.push_str("# ferry credential: keep this file secret (mode 0600).\n");
        out.push_str("# Editing any line below makes authentication fail.\n");
        out.push_str(&format!("server = {}\n", q(&self.server)));
        out.push_str(&format!("server_id = \"{}\"\n", self.server_id));
        out.push_str(&format!("name = {}\n", q(self.claims.name())));
        out.push_str(&format!("epoch = {}\n", self.claims.epoch()));
        out.push_str("key = \"");
        out.push_str(&data_encoding::HEXLOWER.encode(self.key.expose_secret()));
        out.push_str("\"\n");
        if let Some(url) = &self.http_url {
            out.push_str(&format!("http_url = {}\n", q(url)));
        }
        if let Some(key) = &self.http_seal {
            out.push_str(&format!("http_seal = {}\n", q(&key.to_text())));
        }
        out.push_str("\n[attributes]\n");
        for (k, v) in self.claims.attributes() {
            // Keys are validated as [a-z][a-z0-9_-]*, which TOML accepts bare.
            out.push_str(&format!("{k} = {}\n", q(v)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Credential {
        Credential {
            server: "127.0.0.1:7443".into(),
            server_id: ServerId::from_spki(b"k"),
            claims: Claims::new("alice", 2, [("role", "writer"), ("team", "a \"b\"")]).unwrap(),
            key: Psk::from_bytes([0xab; 32]),
            http_url: None,
            http_seal: Some(SealPublicKey::from_bytes(1, [7; 32])),
        }
    }

    #[test]
    fn round_trip() {
        let c = sample();
        let text = c.to_toml();
        assert!(text.contains("role = \"writer\""));
        assert_eq!(Credential::parse(&text).unwrap(), c);
    }

    #[test]
    fn debug_and_errors_hide_the_key() {
        let c = sample();
        let hex = "ab".repeat(32);
        assert!(!format!("{c:?}").contains(&hex));
        assert!(!format!("{c:?}").to_lowercase().contains("abab"));
        let broken = c.to_toml().replace("epoch = 2", "epoch = \"two\"");
        let e = Credential::parse(&broken).unwrap_err();
        assert!(!e.to_string().contains(&hex), "{e}");
        let broken = c.to_toml().replace("key = \"", "key = ");
        let e = Credential::parse(&broken).unwrap_err();
        assert!(!e.to_string().contains("abab"), "{e}");
        // The key's text in the wrong place: as a string value, as a field name.
        for broken in [
            c.to_toml()
                .replace("epoch = 2", &format!("epoch = \"{hex}\"")),
            c.to_toml()
                .replace("[attributes]", &format!("{hex} = 1\n[attributes]")),
        ] {
            let e = Credential::parse(&broken).unwrap_err();
            assert!(!e.to_string().contains("abab"), "{e}");
        }
    }

    #[test]
    fn syntax_errors_say_where_but_quote_nothing() {
        let good = sample().to_toml();
        let e = Credential::parse(&good.replace("key = ", "# key = ")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "not a ferry credential file: missing field `key`"
        );
        let e = Credential::parse(&good.replace("epoch = 2", "epoch = \"two\"")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "not a ferry credential file: unexpected or malformed entry at line 6"
        );
        let e = Credential::parse(&format!("{}\nsecret_stuff = 1\n", *good)).unwrap_err();
        assert!(!e.to_string().contains("secret_stuff"), "{e}");
    }

    #[test]
    fn malformed() {
        let good = sample().to_toml();
        let cases = [
            good.replace("name = \"alice\"", "name = \"a b\""),
            good.replace("key = \"abab", "key = \"zzab"),
            good.replace("key = \"abab", "key = \"ab"),
            good.replace("server_id = \"", "server_id = \"X"),
            good.replace("server = \"127.0.0.1:7443\"", "server = \"\""),
            good.replace("role = \"writer\"\n", ""),
            good.replace("[attributes]", "extra = 1\n[attributes]"),
            good.replace("epoch = 2", "epoch = 0"),
            good.replace("epoch = 2", "epoch = -1"),
            "".into(),
            "\u{0}".into(),
            "x".repeat(MAX_FILE_LEN + 1),
        ];
        for case in cases {
            assert!(Credential::parse(&case).is_err(), "{case}");
        }
    }
}
