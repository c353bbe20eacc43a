//! Validated names: parse, don't validate.
//!
//! * A **source name** is path-like: 1 to 16 segments joined by `/`, each segment 1 to 128
//!   characters from `A-Z a-z 0-9 . _ - + = @ ,`, neither `.` nor `..`; 512 bytes at most.
//! * A **client name** is 1 to 64 characters from `A-Z a-z 0-9 . _ -`, starting with a letter
//!   or digit.
//! * An **attribute key** is 1 to 32 characters from `a-z 0-9 _ -`, starting with a letter;
//!   its **value** 1 to 128 characters with no control characters.
//! * A mesh peer's **display name** is 1 to 64 characters with no control characters and no
//!   Unicode bidirectional controls (so it prints safely in a log or a terminal).

use core::fmt;

/// A name that breaks the rules above.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {why}")]
pub struct NameError {
    what: &'static str,
    why: &'static str,
}

fn err<T>(what: &'static str, why: &'static str) -> Result<T, NameError> {
    Err(NameError { what, why })
}

/// Longest source name in bytes.
pub const MAX_SOURCE_LEN: usize = 512;

/// A validated source name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceName(String);

impl SourceName {
    /// Parses a source name.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        const WHAT: &str = "source name";
        if s.is_empty() {
            return err(WHAT, "it is empty");
        }
        if s.len() > MAX_SOURCE_LEN {
            return err(WHAT, "it is longer than 512 bytes");
        }
        let mut segments = 0;
        for seg in s.split('/') {
            segments += 1;
            if seg.is_empty() {
                return err(
                    WHAT,
                    "it has an empty segment (leading, trailing or double '/')",
                );
            }
            if seg == "." || seg == ".." {
                return err(WHAT, "a segment is '.' or '..'");
            }
            if seg.len() > 128 {
                return err(WHAT, "a segment is longer than 128 characters");
            }
            if !seg.bytes().all(is_source_byte) {
                return err(
                    WHAT,
                    "use only letters, digits and . _ - + = @ , between '/' separators",
                );
            }
        }
        if segments > 16 {
            return err(WHAT, "it has more than 16 segments");
        }
        Ok(Self(s.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_source_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b".-_+=@,".contains(&b)
}

impl fmt::Display for SourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a listing prefix: empty, or a string of source-name characters and `/`.
pub fn validate_prefix(s: &str) -> Result<(), NameError> {
    if s.len() > MAX_SOURCE_LEN {
        return err("prefix", "it is longer than 512 bytes");
    }
    if !s.bytes().all(|b| b == b'/' || is_source_byte(b)) {
        return err("prefix", "use only characters allowed in source names");
    }
    Ok(())
}

/// Checks a client (or user) name.
pub fn validate_client_name(s: &str) -> Result<(), NameError> {
    const WHAT: &str = "client name";
    if s.is_empty() || s.len() > 64 {
        return err(WHAT, "it must be 1 to 64 characters");
    }
    if !s.as_bytes()[0].is_ascii_alphanumeric() {
        return err(WHAT, "it must start with a letter or digit");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return err(WHAT, "use only letters, digits and . _ -");
    }
    Ok(())
}

/// Checks an attribute key.
pub fn validate_attr_key(s: &str) -> Result<(), NameError> {
    const WHAT: &str = "attribute name";
    if s.is_empty() || s.len() > 32 {
        return err(WHAT, "it must be 1 to 32 characters");
    }
    if !s.as_bytes()[0].is_ascii_lowercase() {
        return err(WHAT, "it must start with a lowercase letter");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return err(WHAT, "use only a-z, 0-9, _ and -");
    }
    Ok(())
}

/// Checks an attribute value.
pub fn validate_attr_value(s: &str) -> Result<(), NameError> {
    const WHAT: &str = "attribute value";
    if s.is_empty() || s.chars().count() > 128 {
        return err(WHAT, "it must be 1 to 128 characters");
    }
    if s.chars().any(char::is_control) {
        return err(WHAT, "it contains a control character");
    }
    Ok(())
}

/// Checks a mesh peer's display name (chosen by the peer, shown to people and in logs).
pub fn validate_display_name(s: &str) -> Result<(), NameError> {
    const WHAT: &str = "peer name";
    if s.is_empty() || s.chars().count() > 64 {
        return err(WHAT, "it must be 1 to 64 characters");
    }
    if s.chars().any(|c| c.is_control() || is_bidi_control(c)) {
        return err(WHAT, "it contains a control character");
    }
    Ok(())
}

/// Unicode's bidirectional formatting characters, which reorder how a line is shown.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_sources() {
        for s in ["a", "reports/2026/q3.csv", "x/y.z-1_2+3=4@5,6", "..a/b..c"] {
            assert_eq!(SourceName::parse(s).unwrap().as_str(), s);
        }
    }

    #[test]
    fn bad_sources() {
        let long_seg = "a".repeat(129);
        let many = vec!["a"; 17].join("/");
        let long = vec!["a".repeat(100); 6].join("/");
        for s in [
            "", "/a", "a/", "a//b", ".", "..", "a/../b", "a/./b", "a b", "a\\b", "a*", "é", "a\0b",
            &long_seg, &many, &long,
        ] {
            assert!(SourceName::parse(s).is_err(), "{s:?} accepted");
        }
    }

    #[test]
    fn client_names() {
        assert!(validate_client_name("alice.laptop-2").is_ok());
        for s in ["", "-a", ".a", "a b", "a/b", &"a".repeat(65)] {
            assert!(validate_client_name(s).is_err(), "{s:?} accepted");
        }
    }

    #[test]
    fn display_names() {
        for s in ["alpha", "Bob's laptop", "Zürich-büro 2", &"é".repeat(64)] {
            assert!(validate_display_name(s).is_ok(), "{s:?} refused");
        }
        for s in [
            "",
            "a\nb",
            "a\x1b[2Jb",
            "a\u{202E}b",
            "a\u{7f}",
            &"a".repeat(65),
        ] {
            assert!(validate_display_name(s).is_err(), "{s:?} accepted");
        }
    }

    #[test]
    fn attributes() {
        assert!(validate_attr_key("role").is_ok());
        assert!(validate_attr_key("team_2").is_ok());
        for k in ["", "Role", "2x", "a.b", &"a".repeat(33)] {
            assert!(validate_attr_key(k).is_err(), "{k:?} accepted");
        }
        assert!(validate_attr_value("Ops team, Zürich").is_ok());
        assert!(validate_attr_value("a\nb").is_err());
        assert!(validate_attr_value("").is_err());
    }

    #[test]
    fn prefixes() {
        assert!(validate_prefix("").is_ok());
        assert!(validate_prefix("reports/").is_ok());
        assert!(validate_prefix("a b").is_err());
    }
}
