//! The client's hash cache, parsed without IO: what `ferry sync` (and `get -r`) remember
//! about the BLAKE3 of local files, so that an unchanged large file is not read again to learn
//! that it is unchanged.
//!
//! A text file, one header line then one line per file:
//!
//! ```text
//! ferry-hash-cache 1
//! <hash: 64 hex> <size> <mtime ns> <ctime ns> <inode> <device> <hashed at ns> <relative path>
//! ```
//!
//! Numbers are decimal (times may be negative); the path is the rest of the line (it may hold
//! spaces, never a control character). A cached hash is believed only if the file's size,
//! modification time, change time, inode and device are all exactly as recorded, **and** the
//! file had not been touched for [`RACY_NS`] before its hashing began: a write that lands in
//! the same timestamp tick as the recorded one (coarse file-system clocks) would otherwise go
//! unseen. The change time cannot be set by a user, so a file rewritten and given back its old
//! modification time (`touch -d`) is hashed again.

use std::collections::BTreeMap;

use crate::files::FileError;

/// First line of the file.
pub const HEADER: &str = "ferry-hash-cache 1";

/// How long a file must have been left alone before its hashing began for the hash to be
/// believed later (git's "racily clean" rule, with room for 2-second file-system clocks).
pub const RACY_NS: i64 = 2_000_000_000;

/// Largest cache file parsed (about a million files); a bigger one is ignored and rebuilt.
pub const MAX_LEN: usize = 256 << 20;

/// What identifies one state of a file's content without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Status change time, nanoseconds since the Unix epoch.
    pub ctime_ns: i64,
    /// Inode number.
    pub ino: u64,
    /// Device number.
    pub dev: u64,
}

/// One remembered hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cached {
    /// The file's stamp when it was hashed (the same before and after reading).
    pub stamp: Stamp,
    /// When the hashing began, nanoseconds since the Unix epoch.
    pub hashed_at_ns: i64,
    /// BLAKE3 of the content.
    pub hash: [u8; 32],
}

impl Cached {
    /// The hash, if it may be believed for a file whose stamp is now `now`.
    pub fn trusted(&self, now: &Stamp) -> Option<[u8; 32]> {
        let touched = self.stamp.mtime_ns.max(self.stamp.ctime_ns);
        (self.stamp == *now && touched.saturating_add(RACY_NS) <= self.hashed_at_ns)
            .then_some(self.hash)
    }
}

/// Whether a relative path can be written on one line of the file.
pub fn storable(path: &str) -> bool {
    !path.is_empty() && !path.chars().any(char::is_control)
}

/// Parses a cache file: relative path → what is remembered. Errors never quote the file.
pub fn decode(bytes: &[u8]) -> Result<BTreeMap<String, Cached>, FileError> {
    if bytes.len() > MAX_LEN {
        return Err(FileError::new("hash cache: too large"));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| FileError::new("hash cache: not UTF-8"))?;
    let mut lines = text.split('\n');
    if lines.next() != Some(HEADER) {
        return Err(FileError::new("hash cache: unknown header"));
    }
    let mut out = BTreeMap::new();
    for (i, line) in lines.enumerate() {
        if line.is_empty() {
            continue;
        }
        let bad = || FileError::new(&format!("hash cache: line {} is malformed", i + 2));
        let mut f = line.splitn(8, ' ');
        let mut field = || f.next().ok_or_else(bad);
        let hex = field()?;
        let size = field()?.parse().map_err(|_| bad())?;
        let mtime_ns = field()?.parse().map_err(|_| bad())?;
        let ctime_ns = field()?.parse().map_err(|_| bad())?;
        let ino = field()?.parse().map_err(|_| bad())?;
        let dev = field()?.parse().map_err(|_| bad())?;
        let hashed_at_ns = field()?.parse().map_err(|_| bad())?;
        let path = field()?;
        let mut hash = [0u8; 32];
        if hex.len() != 64 || !storable(path) {
            return Err(bad());
        }
        for (b, pair) in hash.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
            let s = std::str::from_utf8(pair).map_err(|_| bad())?;
            *b = u8::from_str_radix(s, 16).map_err(|_| bad())?;
        }
        let stamp = Stamp {
            size,
            mtime_ns,
            ctime_ns,
            ino,
            dev,
        };
        out.insert(
            path.to_owned(),
            Cached {
                stamp,
                hashed_at_ns,
                hash,
            },
        );
    }
    Ok(out)
}

/// Writes a cache file; paths that [`storable`] refuses are left out.
pub fn encode(entries: &BTreeMap<String, Cached>) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(32 + entries.len() * 160);
    s.push_str(HEADER);
    s.push('\n');
    for (path, c) in entries.iter().filter(|(p, _)| storable(p)) {
        for b in c.hash {
            let _ = write!(s, "{b:02x}");
        }
        let t = &c.stamp;
        let _ = writeln!(
            s,
            " {} {} {} {} {} {} {path}",
            t.size, t.mtime_ns, t.ctime_ns, t.ino, t.dev, c.hashed_at_ns
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp() -> Stamp {
        Stamp {
            size: 4096,
            mtime_ns: 1_700_000_000_123_456_789,
            ctime_ns: 1_700_000_000_223_456_789,
            ino: 42,
            dev: 2049,
        }
    }

    fn cached() -> Cached {
        Cached {
            stamp: stamp(),
            hashed_at_ns: 1_700_000_100_000_000_000,
            hash: [7; 32],
        }
    }

    #[test]
    fn round_trip_with_spaces_and_utf8() {
        let mut m = BTreeMap::new();
        m.insert("Q3 report.pdf".to_owned(), cached());
        m.insert("日本/ファイル".to_owned(), cached());
        m.insert(
            "old".to_owned(),
            Cached {
                stamp: Stamp {
                    mtime_ns: -5,
                    ctime_ns: -7,
                    ..stamp()
                },
                ..cached()
            },
        );
        let text = encode(&m);
        assert!(text.starts_with("ferry-hash-cache 1\n"));
        assert_eq!(decode(text.as_bytes()).unwrap(), m);
    }

    #[test]
    fn trusted_only_when_every_field_matches_and_not_racy() {
        let c = cached();
        assert_eq!(c.trusted(&stamp()), Some(c.hash));
        for changed in [
            Stamp {
                size: 4097,
                ..stamp()
            },
            Stamp {
                mtime_ns: stamp().mtime_ns + 1,
                ..stamp()
            },
            Stamp {
                ctime_ns: stamp().ctime_ns + 1,
                ..stamp()
            },
            Stamp { ino: 43, ..stamp() },
            Stamp {
                dev: 2050,
                ..stamp()
            },
        ] {
            assert_eq!(c.trusted(&changed), None, "{changed:?}");
        }
        // Hashed less than RACY_NS after the last change: not believed.
        let racy = Cached {
            hashed_at_ns: stamp().ctime_ns + RACY_NS - 1,
            ..c
        };
        assert_eq!(racy.trusted(&stamp()), None);
        let settled = Cached {
            hashed_at_ns: stamp().ctime_ns + RACY_NS,
            ..c
        };
        assert_eq!(settled.trusted(&stamp()), Some(c.hash));
    }

    #[test]
    fn control_characters_are_not_written() {
        let mut m = BTreeMap::new();
        m.insert("a\nb".to_owned(), cached());
        m.insert(String::new(), cached());
        assert_eq!(encode(&m), "ferry-hash-cache 1\n");
    }

    #[test]
    fn malformed_input_is_an_error_that_quotes_nothing() {
        let good = encode(&BTreeMap::from([("f".to_owned(), cached())]));
        let line = good.lines().nth(1).unwrap().to_owned();
        let cases: Vec<String> = vec![
            String::new(),
            "ferry-hash-cache 2\n".into(),
            format!("ferry-hash-cache 1\n{}", &line[1..]),
            format!("ferry-hash-cache 1\n{}", line.replacen(' ', "  ", 1)),
            format!("ferry-hash-cache 1\n{}", line.replace(" 4096 ", " -1 ")),
            format!("ferry-hash-cache 1\n{}", line.replace(" 42 ", " 4x ")),
            format!("ferry-hash-cache 1\n{}", &line[..line.len() - 2]),
            format!("ferry-hash-cache 1\nzz{}", &line[2..]),
            format!("ferry-hash-cache 1\n{}\u{7}", line),
        ];
        for (i, c) in cases.iter().enumerate() {
            let e = decode(c.as_bytes()).expect_err(&format!("case {i} parsed"));
            assert!(!e.to_string().contains("4096"), "case {i}: {e}");
        }
        assert!(decode(&[0xff, 0xfe]).is_err());
        // Deterministic pseudo-random garbage after a good header: never a panic.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..400 {
            let mut junk = b"ferry-hash-cache 1\n".to_vec();
            junk.extend((0..len).map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b"0123456789abcdef -\n/x"[(x % 21) as usize]
            }));
            let _ = decode(&junk);
        }
    }
}
