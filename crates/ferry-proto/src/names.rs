//! Validated names: parse, don't validate.
//!
//! * A **source name** is UTF-8 text compared in Unicode Normalization Form C (NFC): 1 to 16
//!   segments joined by `/`, each 1 to 255 bytes, neither `.` nor `..`, 512 bytes at most in
//!   all (lengths in bytes of the NFC form). It may hold any character except control
//!   characters (C0, DEL, C1), Unicode bidirectional controls, U+2028 and U+2029, U+FEFF,
//!   noncharacters and `\`, and may not start with `~`. [`SourceName::parse`] normalises, so
//!   names that differ only by normalisation are one source. docs/PROTOCOL.md §5.1 gives the
//!   rules in order, with vectors (a test reads them from there).
//! * A **client name** is 1 to 64 characters from `A-Z a-z 0-9 . _ -`, starting with a letter
//!   or digit.
//! * An **attribute key** is 1 to 32 characters from `a-z 0-9 _ -`, starting with a letter;
//!   its **value** 1 to 128 characters with no control characters.
//! * A mesh peer's **display name** is 1 to 64 characters with no control characters and no
//!   Unicode bidirectional controls (so it prints safely in a log or a terminal).

use core::fmt;

use unicode_normalization::{UnicodeNormalization, is_nfc};

/// A name that breaks the rules above.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {problem}")]
pub struct NameError {
    what: &'static str,
    problem: Problem,
}

impl NameError {
    /// Which rule the name broke.
    pub fn problem(&self) -> &Problem {
        &self.problem
    }
}

/// Which rule a name broke. Positions count from 1: characters (Unicode scalar values) of the
/// name as given, segments of its NFC form.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// The name is empty.
    Empty,
    /// Longer than `max` bytes (in NFC, for source names and prefixes).
    TooLong {
        /// The limit.
        max: usize,
    },
    /// A character that names may not hold (or not there).
    Char {
        /// Its position among the characters of the name as given, from 1.
        position: usize,
        /// The character.
        ch: char,
        /// Why it is refused.
        class: CharClass,
    },
    /// A segment is empty (a leading, trailing or doubled `/`).
    EmptySegment {
        /// Which segment, from 1.
        segment: usize,
    },
    /// A segment is `.` or `..`.
    DotSegment {
        /// Which segment, from 1.
        segment: usize,
        /// `"."` or `".."`.
        dots: &'static str,
    },
    /// A segment is longer than `max` bytes in NFC.
    SegmentTooLong {
        /// Which segment, from 1.
        segment: usize,
        /// The limit.
        max: usize,
    },
    /// More than `max` segments.
    TooManySegments {
        /// The limit.
        max: usize,
    },
    /// A prefix (or a name that must already be canonical) is not in NFC.
    NotNfc,
    /// A rule of another kind of name.
    Rule(&'static str),
}

/// Why a character is refused in a source name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CharClass {
    /// U+0000 to U+001F, U+007F, U+0080 to U+009F: they move the cursor, ring, clear or
    /// recolour a terminal.
    Control,
    /// U+061C, U+200E, U+200F, U+202A to U+202E, U+2066 to U+2069: they change the order in
    /// which text is shown, so a name could display as another.
    Bidi,
    /// U+2028, U+2029: they end a line in many viewers, so a name could forge a log line.
    LineSeparator,
    /// U+FEFF: invisible, and stripped by some tools at the start of text.
    ByteOrderMark,
    /// U+FDD0 to U+FDEF and the last two code points of every plane: not for interchange.
    Noncharacter,
    /// `\`: a folder separator on Windows, so a file written under the name could land
    /// elsewhere (`a\..\b`).
    Backslash,
    /// `~` as the first character: `list`'s `after` tells a cursor from a name by it (§5).
    LeadingTilde,
}

impl fmt::Display for CharClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CharClass::Control => "a control character",
            CharClass::Bidi => "a bidirectional control",
            CharClass::LineSeparator => "a line or paragraph separator",
            CharClass::ByteOrderMark => "a byte order mark",
            CharClass::Noncharacter => "a noncharacter",
            CharClass::Backslash => "a backslash (a folder separator on Windows)",
            CharClass::LeadingTilde => "a '~' at the start (it marks a listing cursor)",
        })
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Empty => f.write_str("it is empty"),
            Problem::TooLong { max } => write!(f, "it is longer than {max} bytes"),
            Problem::Char {
                position,
                ch,
                class,
            } => write!(
                f,
                "character {position} is U+{:04X}, {class}",
                u32::from(*ch)
            ),
            Problem::EmptySegment { segment } => write!(
                f,
                "segment {segment} is empty (a leading, trailing or doubled '/')"
            ),
            Problem::DotSegment { segment, dots } => write!(f, "segment {segment} is '{dots}'"),
            Problem::SegmentTooLong { segment, max } => {
                write!(f, "segment {segment} is longer than {max} bytes")
            }
            Problem::TooManySegments { max } => write!(f, "it has more than {max} segments"),
            Problem::NotNfc => f.write_str("it is not in Unicode NFC"),
            Problem::Rule(why) => f.write_str(why),
        }
    }
}

fn err<T>(what: &'static str, why: &'static str) -> Result<T, NameError> {
    fail(what, Problem::Rule(why))
}

fn fail<T>(what: &'static str, problem: Problem) -> Result<T, NameError> {
    Err(NameError { what, problem })
}

/// Longest source name (and listing prefix) in bytes, in NFC.
pub const MAX_SOURCE_LEN: usize = 512;
/// Longest segment of a source name in bytes, in NFC (most file systems' limit on a file name).
pub const MAX_SEGMENT_LEN: usize = 255;
/// Most segments in a source name.
pub const MAX_SEGMENTS: usize = 16;

/// Why `c` may not appear in a source name or prefix, if it may not.
pub fn refused_char(c: char) -> Option<CharClass> {
    let n = u32::from(c);
    Some(match c {
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' => CharClass::Control,
        c if is_bidi_control(c) => CharClass::Bidi,
        '\u{2028}' | '\u{2029}' => CharClass::LineSeparator,
        '\u{feff}' => CharClass::ByteOrderMark,
        '\u{fdd0}'..='\u{fdef}' => CharClass::Noncharacter,
        _ if n & 0xfffe == 0xfffe => CharClass::Noncharacter,
        '\\' => CharClass::Backslash,
        _ => return None,
    })
}

/// The first refused character of `s` (with `~` refused at the start if `tilde`).
fn check_chars(what: &'static str, s: &str, tilde: bool) -> Result<(), NameError> {
    for (i, ch) in s.chars().enumerate() {
        let class = match refused_char(ch) {
            Some(class) => class,
            None if tilde && i == 0 && ch == crate::cursor::MARK => CharClass::LeadingTilde,
            None => continue,
        };
        return fail(
            what,
            Problem::Char {
                position: i + 1,
                ch,
                class,
            },
        );
    }
    Ok(())
}

/// `s` in NFC, refused once it passes `max` bytes (so the work is bounded by the limit).
fn nfc_within(what: &'static str, s: &str, max: usize) -> Result<String, NameError> {
    let mut out = String::with_capacity(s.len().min(max));
    for c in s.nfc() {
        if out.len() + c.len_utf8() > max {
            return fail(what, Problem::TooLong { max });
        }
        out.push(c);
    }
    Ok(out)
}

/// `s` in Unicode NFC, without any check: for text compared with source names (the patterns
/// of roles, for example).
pub fn nfc(s: &str) -> String {
    s.nfc().collect()
}

/// A validated source name, in NFC.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceName(String);

impl SourceName {
    /// Parses a source name and normalises it to NFC. The rules are checked in the order of
    /// PROTOCOL.md §5.1, and the error is the first one broken.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        const WHAT: &str = "source name";
        if s.is_empty() {
            return fail(WHAT, Problem::Empty);
        }
        check_chars(WHAT, s, true)?;
        let name = nfc_within(WHAT, s, MAX_SOURCE_LEN)?;
        for (i, seg) in name.split('/').enumerate() {
            let segment = i + 1;
            if segment > MAX_SEGMENTS {
                return fail(WHAT, Problem::TooManySegments { max: MAX_SEGMENTS });
            }
            if seg.is_empty() {
                return fail(WHAT, Problem::EmptySegment { segment });
            }
            if seg == "." || seg == ".." {
                let dots = if seg == "." { "." } else { ".." };
                return fail(WHAT, Problem::DotSegment { segment, dots });
            }
            if seg.len() > MAX_SEGMENT_LEN {
                return fail(
                    WHAT,
                    Problem::SegmentTooLong {
                        segment,
                        max: MAX_SEGMENT_LEN,
                    },
                );
            }
        }
        Ok(Self(name))
    }

    /// Parses a name that must already be in its canonical form (NFC): for names a peer
    /// reports as stored, which a server holds only in NFC.
    pub fn parse_canonical(s: &str) -> Result<Self, NameError> {
        let name = Self::parse(s)?;
        if name.0 != s {
            return fail("source name", Problem::NotNfc);
        }
        Ok(name)
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a listing prefix as sent on the wire: at most 512 bytes, no character a source name
/// may not hold (a leading `~` is allowed: a prefix is no cursor), and in NFC (a server
/// compares it byte for byte with names in NFC). Clients send [`normalize_prefix`]'s result.
pub fn validate_prefix(s: &str) -> Result<(), NameError> {
    const WHAT: &str = "prefix";
    if s.len() > MAX_SOURCE_LEN {
        return fail(
            WHAT,
            Problem::TooLong {
                max: MAX_SOURCE_LEN,
            },
        );
    }
    check_chars(WHAT, s, false)?;
    if !is_nfc(s) {
        return fail(WHAT, Problem::NotNfc);
    }
    Ok(())
}

/// A listing prefix as a person typed it, in NFC and checked as [`validate_prefix`] does.
pub fn normalize_prefix(s: &str) -> Result<String, NameError> {
    const WHAT: &str = "prefix";
    check_chars(WHAT, s, false)?;
    let out = nfc_within(WHAT, s, MAX_SOURCE_LEN)?;
    validate_prefix(&out)?;
    Ok(out)
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

    /// Every name of the old ASCII rules (letters, digits and `. _ - + = @ ,` in segments of
    /// 1 to 128, up to 16 segments, 512 bytes) is still valid and maps to itself.
    #[test]
    fn old_names_stay_valid() {
        let alphabet = "ABCXYZabcxyz0189._-+=@,";
        let long = vec!["a".repeat(31); 16].join("/");
        let seg128 = "Z".repeat(128);
        for s in [
            "a",
            "reports/2026/q3.csv",
            "x/y.z-1_2+3=4@5,6",
            "..a/b..c",
            alphabet,
            &long,
            &seg128,
        ] {
            assert_eq!(SourceName::parse(s).unwrap().as_str(), s);
        }
        // Every old character, alone and after a letter.
        for c in alphabet.chars() {
            for s in [format!("{c}x"), format!("x{c}")] {
                assert_eq!(SourceName::parse(&s).unwrap().as_str(), s);
            }
        }
    }

    #[test]
    fn bad_sources() {
        let long_seg = "a".repeat(256);
        let many = vec!["a"; 17].join("/");
        let long = vec!["a".repeat(100); 6].join("/");
        for s in [
            "", "/a", "a/", "a//b", ".", "..", "a/../b", "a/./b", "a\\b", "a\0b", "~a", &long_seg,
            &many, &long,
        ] {
            assert!(SourceName::parse(s).is_err(), "{s:?} accepted");
        }
    }

    /// Normalisation: forms that differ only by it are one name; the canonical parse refuses
    /// any other form.
    #[test]
    fn normalisation() {
        let composed = SourceName::parse("\u{e9}t\u{e9}.txt").unwrap();
        let decomposed = SourceName::parse("e\u{301}te\u{301}.txt").unwrap();
        assert_eq!(composed, decomposed);
        assert_eq!(decomposed.as_str(), "\u{e9}t\u{e9}.txt");
        assert!(SourceName::parse_canonical("\u{e9}t\u{e9}.txt").is_ok());
        assert_eq!(
            SourceName::parse_canonical("e\u{301}te\u{301}.txt")
                .unwrap_err()
                .problem(),
            &Problem::NotNfc
        );
    }

    /// A valid name prints safely: no character a terminal or log reader acts on.
    #[test]
    fn valid_names_print_safely() {
        for n in 0..=0x10ffffu32 {
            let Some(c) = char::from_u32(n) else {
                continue;
            };
            let s = format!("x{c}");
            if let Ok(name) = SourceName::parse(&s) {
                assert!(
                    !name.as_str().chars().any(|c| c.is_control()
                        || is_bidi_control(c)
                        || matches!(c, '\u{2028}' | '\u{2029}')),
                    "{s:?} accepted"
                );
            }
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
        assert!(validate_prefix("Q3 report").is_ok());
        assert!(validate_prefix("~").is_ok());
        assert!(validate_prefix("a\u{1b}").is_err());
        assert!(validate_prefix("a\\").is_err());
        assert_eq!(
            validate_prefix("e\u{301}").unwrap_err().problem(),
            &Problem::NotNfc
        );
        assert_eq!(normalize_prefix("e\u{301}/").unwrap(), "\u{e9}/");
        assert!(normalize_prefix(&"a".repeat(513)).is_err());
        assert!(validate_prefix(&"a".repeat(513)).is_err());
    }
}
