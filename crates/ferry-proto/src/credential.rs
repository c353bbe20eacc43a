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
//!
//! [attributes]
//! role = "writer"
//! ```
//!
//! Unknown keys are refused, so a typo is not silently ignored.

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
    attributes: BTreeMap<String, String>,
}

impl Credential {
    /// Parses a credential file's text.
    pub fn parse(text: &str) -> Result<Self, CredentialError> {
        if text.len() > MAX_FILE_LEN {
            return Err(CredentialError::TooLarge);
        }
        let raw: Raw = toml::from_str(text).map_err(|e| {
            // toml's messages quote the offending line, which could hold the key: keep only
            // the first line of the message, which names the problem, and redact what it
            // quotes from the file (an unknown field's name, a string value).
            CredentialError::Syntax(redact_quoted(e.message().lines().next().unwrap_or("")))
        })?;
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
        Ok(Self {
            server: server.to_owned(),
            server_id,
            claims,
            key: Psk::from_bytes(*key),
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
        out.push_str("\"\n\n[attributes]\n");
        for (k, v) in self.claims.attributes() {
            // Keys are validated as [a-z][a-z0-9_-]*, which TOML accepts bare.
            out.push_str(&format!("{k} = {}\n", q(v)));
        }
        out
    }
}

/// Replaces each span of `message` quoted in backticks or double quotes with `…`, unless it
/// is one of the file's field names or a single character (such as an expected `=`): serde
/// and toml quote text from the file that way, and that text could be the key.
fn redact_quoted(message: &str) -> String {
    const FIELDS: [&str; 6] = ["server", "server_id", "name", "epoch", "key", "attributes"];
    // serde writes an unknown field's name unescaped, so it may itself hold backticks: cut
    // everything up to the list of expected fields, which ends the message.
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let tail = rest.rfind("`, expected").map_or("`", |i| &rest[i..]);
        return format!("unknown field `…{tail}");
    }
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c != '`' && c != '"' {
            continue;
        }
        // Double-quoted spans are Rust-escaped strings: a backslash escapes the next char.
        let mut quoted = String::new();
        let mut closed = false;
        let mut escaped = false;
        for q in chars.by_ref() {
            if q == c && !escaped {
                closed = true;
                break;
            }
            escaped = c == '"' && q == '\\' && !escaped;
            quoted.push(q);
        }
        if FIELDS.contains(&quoted.as_str()) || quoted.chars().count() <= 1 {
            out.push_str(&quoted);
        } else {
            out.push('…');
        }
        if closed {
            out.push(c);
        }
    }
    out
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
    fn redaction_keeps_field_names_and_punctuation() {
        assert_eq!(
            redact_quoted("unknown field `abab`, expected one of `server`, `key`"),
            "unknown field `…`, expected one of `server`, `key`"
        );
        assert_eq!(
            redact_quoted(r#"invalid type: string "a\"b`c", expected u64"#),
            r#"invalid type: string "…", expected u64"#
        );
        assert_eq!(
            redact_quoted("invalid basic string, expected `\"`"),
            "invalid basic string, expected `\"`"
        );
        assert_eq!(redact_quoted("unclosed `abc"), "unclosed `…");
        assert_eq!(
            redact_quoted("unknown field `a`b`, expected`c`, expected one of `server`, `key`"),
            "unknown field `…`, expected one of `server`, `key`"
        );
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
