//! The fixed binary layout of index records, and its defensive decoder.
//!
//! `kind u8` (0 = live, 1 = tombstone) ‖ `version u64 BE` ‖ `size u64 BE` ‖ `hash [u8; 32]` ‖
//! `modified u64 BE` ‖ `by_len u16 BE` ‖ `by` (`by_len` bytes of UTF-8), then, only if the
//! version has metadata (index format 4), `flags u8` (bit 0: a modification time follows;
//! bit 1: executable; no other bit, and never 0) ‖ `mtime u64 BE` (if bit 0). Nothing else may
//! follow. A record without metadata is byte for byte what formats 1 to 3 wrote.

use crate::{Hash, Meta, StoreError};

const KIND_LIVE: u8 = 0;
const KIND_TOMBSTONE: u8 = 1;
const HAS_MTIME: u8 = 1;
const EXECUTABLE: u8 = 2;

/// Bytes before the variable-length principal name.
pub(crate) const FIXED_LEN: usize = 1 + 8 + 8 + 32 + 8 + 2;

/// One decoded index record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    /// `true` for a tombstone (a deleted source, kept so the version counter continues).
    pub(crate) deleted: bool,
    pub(crate) version: u64,
    pub(crate) size: u64,
    pub(crate) hash: Hash,
    pub(crate) modified: u64,
    pub(crate) by: String,
    pub(crate) meta: Meta,
}

/// Checks that a principal name fits the record's 16-bit length prefix.
pub(crate) fn check_by(by: &str) -> Result<u16, StoreError> {
    u16::try_from(by.len()).map_err(|_| {
        StoreError::InvalidArgument(format!(
            "principal name is {} bytes, at most {} are allowed",
            by.len(),
            u16::MAX
        ))
    })
}

impl Record {
    /// Encodes the record.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, StoreError> {
        let by_len = check_by(&self.by)?;
        let mut out = Vec::with_capacity(FIXED_LEN + self.by.len());
        out.push(if self.deleted {
            KIND_TOMBSTONE
        } else {
            KIND_LIVE
        });
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&self.hash);
        out.extend_from_slice(&self.modified.to_be_bytes());
        out.extend_from_slice(&by_len.to_be_bytes());
        out.extend_from_slice(self.by.as_bytes());
        let mut flags = 0;
        if self.meta.mtime.is_some() {
            flags |= HAS_MTIME;
        }
        if self.meta.executable {
            flags |= EXECUTABLE;
        }
        if flags != 0 {
            out.push(flags);
        }
        if let Some(mtime) = self.meta.mtime {
            out.extend_from_slice(&mtime.to_be_bytes());
        }
        Ok(out)
    }

    /// Decodes a record; any deviation from the layout is [`StoreError::Corrupt`].
    pub(crate) fn decode(bytes: &[u8]) -> Result<Record, StoreError> {
        let mut r = Reader { rest: bytes };
        let kind = r.array::<1>()?[0];
        let deleted = match kind {
            KIND_LIVE => false,
            KIND_TOMBSTONE => true,
            other => return Err(corrupt(format!("unknown record kind {other}"))),
        };
        let version = u64::from_be_bytes(*r.array::<8>()?);
        let size = u64::from_be_bytes(*r.array::<8>()?);
        let hash = *r.array::<32>()?;
        let modified = u64::from_be_bytes(*r.array::<8>()?);
        let by_len = usize::from(u16::from_be_bytes(*r.array::<2>()?));
        let by_bytes = r.take(by_len)?;
        let mut meta = Meta::default();
        if !r.rest.is_empty() {
            let flags = r.array::<1>()?[0];
            if flags == 0 || flags & !(HAS_MTIME | EXECUTABLE) != 0 {
                return Err(corrupt(format!("unknown metadata flags {flags:#04x}")));
            }
            if flags & HAS_MTIME != 0 {
                meta.mtime = Some(u64::from_be_bytes(*r.array::<8>()?));
            }
            meta.executable = flags & EXECUTABLE != 0;
        }
        if !r.rest.is_empty() {
            return Err(corrupt(format!(
                "{} trailing bytes after record",
                r.rest.len()
            )));
        }
        let by = std::str::from_utf8(by_bytes)
            .map_err(|e| corrupt(format!("principal name is not UTF-8: {e}")))?
            .to_owned();
        if version == 0 {
            return Err(corrupt("version 0 in record".into()));
        }
        Ok(Record {
            deleted,
            version,
            size,
            hash,
            modified,
            by,
            meta,
        })
    }
}

fn corrupt(msg: String) -> StoreError {
    StoreError::Corrupt(format!("index record: {msg}"))
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn array<const N: usize>(&mut self) -> Result<&'a [u8; N], StoreError> {
        let (head, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or_else(|| corrupt("record is truncated".into()))?;
        self.rest = rest;
        Ok(head)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        let (head, rest) = self
            .rest
            .split_at_checked(n)
            .ok_or_else(|| corrupt("record is truncated".into()))?;
        self.rest = rest;
        Ok(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record {
            deleted: false,
            version: 7,
            size: 1234,
            hash: *blake3::hash(b"x").as_bytes(),
            modified: 1_700_000_000,
            by: "alice@example".into(),
            meta: Meta::default(),
        }
    }

    #[test]
    fn metadata_round_trips_after_the_old_layout() {
        for meta in [
            Meta {
                mtime: Some(1_699_999_999_000_000_001),
                executable: true,
            },
            Meta {
                mtime: Some(0),
                executable: false,
            },
            Meta {
                mtime: None,
                executable: true,
            },
        ] {
            let rec = Record { meta, ..sample() };
            let bytes = rec.encode().unwrap();
            // The old layout, then the flags and the time.
            assert_eq!(&bytes[..59 + 13], &sample().encode().unwrap()[..]);
            assert_eq!(Record::decode(&bytes).unwrap(), rec);
            for n in 59 + 13 + 1..bytes.len() {
                assert!(
                    matches!(Record::decode(&bytes[..n]), Err(StoreError::Corrupt(_))),
                    "prefix of {n} bytes"
                );
            }
        }
        let old = sample().encode().unwrap();
        for flags in [0u8, 4, 0x80, 0xff] {
            let mut bad = old.clone();
            bad.push(flags);
            assert!(
                matches!(Record::decode(&bad), Err(StoreError::Corrupt(_))),
                "flags {flags:#x}"
            );
        }
        let mut trailing = Record {
            meta: Meta {
                mtime: None,
                executable: true,
            },
            ..sample()
        }
        .encode()
        .unwrap();
        trailing.push(0);
        assert!(matches!(
            Record::decode(&trailing),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn round_trip() {
        let rec = sample();
        let bytes = rec.encode().unwrap();
        assert_eq!(bytes.len(), FIXED_LEN + rec.by.len());
        assert_eq!(Record::decode(&bytes).unwrap(), rec);
        let tomb = Record {
            deleted: true,
            size: 0,
            hash: [0; 32],
            by: String::new(),
            ..rec
        };
        assert_eq!(Record::decode(&tomb.encode().unwrap()).unwrap(), tomb);
    }

    #[test]
    fn layout_is_fixed_big_endian() {
        let bytes = sample().encode().unwrap();
        assert_eq!(bytes[0], 0);
        assert_eq!(&bytes[1..9], &7u64.to_be_bytes());
        assert_eq!(&bytes[9..17], &1234u64.to_be_bytes());
        assert_eq!(&bytes[17..49], blake3::hash(b"x").as_bytes());
        assert_eq!(&bytes[49..57], &1_700_000_000u64.to_be_bytes());
        assert_eq!(&bytes[57..59], &13u16.to_be_bytes());
        assert_eq!(&bytes[59..], b"alice@example");
    }

    #[test]
    fn every_truncation_is_corrupt() {
        let bytes = sample().encode().unwrap();
        for n in 0..bytes.len() {
            assert!(
                matches!(Record::decode(&bytes[..n]), Err(StoreError::Corrupt(_))),
                "prefix of {n} bytes"
            );
        }
    }

    #[test]
    fn garbage_is_corrupt_not_panic() {
        let bytes = sample().encode().unwrap();
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(matches!(
            Record::decode(&extra),
            Err(StoreError::Corrupt(_))
        ));
        let mut kind = bytes.clone();
        kind[0] = 9;
        assert!(matches!(Record::decode(&kind), Err(StoreError::Corrupt(_))));
        let mut utf = bytes.clone();
        utf[59] = 0xff;
        assert!(matches!(Record::decode(&utf), Err(StoreError::Corrupt(_))));
        let mut long = bytes.clone();
        long[57] = 0xff; // by_len far beyond the data
        assert!(matches!(Record::decode(&long), Err(StoreError::Corrupt(_))));
        let mut zero = bytes;
        zero[1..9].copy_from_slice(&0u64.to_be_bytes());
        assert!(matches!(Record::decode(&zero), Err(StoreError::Corrupt(_))));
        // Deterministic pseudo-random garbage of many lengths: never a panic.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..300 {
            let junk: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = Record::decode(&junk);
        }
    }

    #[test]
    fn overlong_principal_is_rejected() {
        let rec = Record {
            by: "a".repeat(70_000),
            ..sample()
        };
        assert!(matches!(rec.encode(), Err(StoreError::InvalidArgument(_))));
    }
}
