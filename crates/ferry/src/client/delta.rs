//! Delta transfers (docs/PROTOCOL.md §5.4): a put that sends only the chunks the server's
//! current version lacks, and a get that fetches only the chunks an older local copy lacks.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;

use ferry_proto::chunking::{self, ChunkRef};
use ferry_proto::message::{self, Chunks, Entry, Get, Message};
use ferry_proto::names::SourceName;

use super::{Client, RESPONSE_TIMEOUT};
use crate::Error;
use crate::wire::Incoming;

/// Reads the bytes of a file's runs (offset, length) back to back.
pub(super) struct Runs {
    file: std::fs::File,
    runs: VecDeque<(u64, u64)>,
}

impl Runs {
    /// The runs of `file` that hold the chunks `need` marks, skipping the first `skip`
    /// bytes of them (what the server already holds).
    pub(super) fn needed(file: std::fs::File, chunks: &[ChunkRef], need: &[u8], skip: u64) -> Runs {
        let mut runs: VecDeque<(u64, u64)> = chunking::needed_runs(chunks, need).into();
        let mut skip = skip;
        // Bounded by the number of runs.
        while skip > 0 {
            let Some(front) = runs.front_mut() else { break };
            if front.1 <= skip {
                skip -= front.1;
                runs.pop_front();
            } else {
                front.0 += skip;
                front.1 -= skip;
                skip = 0;
            }
        }
        Runs { file, runs }
    }
}

impl Read for Runs {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // Bounded by the number of runs: each round reads or drops one.
        loop {
            let Some(front) = self.runs.front_mut() else {
                return Ok(0);
            };
            if front.1 == 0 {
                self.runs.pop_front();
                continue;
            }
            let n = buf
                .len()
                .min(usize::try_from(front.1).unwrap_or(usize::MAX));
            let got = self.file.read_at(&mut buf[..n], front.0)?;
            if got == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the file is shorter than when it was chunked",
                ));
            }
            front.0 += got as u64;
            front.1 -= got as u64;
            return Ok(got);
        }
    }
}

/// Reads `file` once from its start (wherever its position was): its size, BLAKE3 and
/// chunks (§5.4). Runs on a blocking thread; fails if the file changes size meanwhile.
pub async fn hash_and_chunk_file(
    file: std::fs::File,
) -> Result<(std::fs::File, u64, message::Digest, Vec<ChunkRef>), Error> {
    super::read_whole(file, true).await
}

/// What a delta get moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeltaStats {
    /// Bytes that came over the connection (chunks the local copy lacked).
    pub fetched: u64,
    /// Bytes taken from the local copy.
    pub reused: u64,
}

/// Where a run of the new content comes from.
enum Step {
    /// From the old local copy, at this offset.
    Local { offset: u64, len: u64 },
    /// From the server, at this offset of the version.
    Remote { offset: u64, len: u64 },
}

impl Client {
    /// The chunks of `version` of `source` (or its current version), every page, with the
    /// entry they describe. Fails if the version changes between pages.
    pub async fn chunks(
        &mut self,
        source: &str,
        version: Option<u64>,
    ) -> Result<(Entry, Vec<ChunkRef>), Error> {
        let source = SourceName::parse(source)?;
        let mut version = version;
        let mut entry: Option<Entry> = None;
        let mut all = Vec::new();
        let mut total = 0u64;
        // Bounded: every page holds at least one chunk or is the last.
        loop {
            self.send_request(&Message::Chunks(Chunks {
                source: source.to_string(),
                version,
                from: all.len() as u64,
            }))
            .await?;
            let page = match self.recv().await? {
                Message::ChunksOk(p) => p,
                m => return Err(Self::unexpected(&m)),
            };
            if page.from != all.len() as u64
                || entry
                    .as_ref()
                    .is_some_and(|e| e.version != page.entry.version || e.hash != page.entry.hash)
            {
                return Err(Error::Protocol(
                    "the chunk pages do not fit together".into(),
                ));
            }
            let sum_of_page = page
                .chunks
                .chunks_exact(chunking::CHUNK_REF_LEN)
                .map(|c| u64::from(u32::from_be_bytes([c[32], c[33], c[34], c[35]])))
                .sum();
            let list = chunking::decode_list(&page.chunks, sum_of_page)
                .map_err(|e| Error::Protocol(format!("bad chunk list: {e}")))?;
            // Pages that add up past the version's size are refused before they are kept,
            // so a server cannot make this grow without bound.
            total += sum_of_page;
            if total > page.entry.size {
                return Err(Error::Protocol(format!(
                    "the chunks add up to more than the version's {} bytes",
                    page.entry.size
                )));
            }
            let empty = list.is_empty();
            all.extend(list);
            version = Some(page.entry.version);
            entry = Some(page.entry);
            if !page.more || empty {
                break;
            }
        }
        let entry = entry.ok_or_else(|| Error::Internal("no chunk page".into()))?;
        if total != entry.size {
            return Err(Error::Protocol(format!(
                "the chunks add up to {total} bytes, the version has {}",
                entry.size
            )));
        }
        Ok((entry, all))
    }

    /// Downloads `version` of `source` (or its current version) into `out`, taking every
    /// chunk `old` (an earlier copy: a previous version, a file being synced) also has from
    /// `old` and fetching only the others, as ranged gets. Checks the BLAKE3 of the whole
    /// content; on [`Error::HashMismatch`] `out` must be discarded.
    pub async fn get_delta(
        &mut self,
        source: &str,
        version: Option<u64>,
        old: &std::fs::File,
        out: &mut std::fs::File,
    ) -> Result<(Entry, DeltaStats), Error> {
        let (entry, chunks) = self.chunks(source, version).await?;
        let old_chunks = {
            let copy = old.try_clone()?;
            hash_and_chunk_file(copy).await?.3
        };
        let mut held: HashMap<message::Digest, (u64, u32)> = HashMap::new();
        let mut at = 0u64;
        for c in old_chunks {
            held.entry(c.hash).or_insert((at, c.len));
            at += u64::from(c.len);
        }
        let mut steps: Vec<Step> = Vec::new();
        let mut at = 0u64;
        for c in &chunks {
            let len = u64::from(c.len);
            match held.get(&c.hash) {
                Some(&(offset, l)) if l == c.len => match steps.last_mut() {
                    Some(Step::Local { offset: o, len: n }) if *o + *n == offset => *n += len,
                    _ => steps.push(Step::Local { offset, len }),
                },
                _ => match steps.last_mut() {
                    Some(Step::Remote { offset: o, len: n }) if *o + *n == at => *n += len,
                    _ => steps.push(Step::Remote { offset: at, len }),
                },
            }
            at += len;
        }
        let mut hasher = blake3::Hasher::new();
        let mut stats = DeltaStats::default();
        let mut buf = vec![0u8; 1 << 20];
        for step in steps {
            match step {
                Step::Local { offset, len } => {
                    let mut done = 0u64;
                    while done < len {
                        let n = (len - done).min(buf.len() as u64) as usize;
                        old.read_exact_at(&mut buf[..n], offset + done)?;
                        hasher.update(&buf[..n]);
                        out.write_all(&buf[..n])?;
                        done += n as u64;
                    }
                    stats.reused += len;
                }
                Step::Remote { offset, len } => {
                    self.fetch_range(&entry, offset, len, &mut hasher, out)
                        .await?;
                    stats.fetched += len;
                }
            }
        }
        out.flush()?;
        if *hasher.finalize().as_bytes() != entry.hash {
            return Err(Error::HashMismatch);
        }
        Ok((entry, stats))
    }

    /// `len` bytes (at most a few MiB: they are held in memory) of version `version` of
    /// `source`, from `offset` (a ranged get, docs/PROTOCOL.md §5.4). Fails with
    /// [`Error::NotFound`] if that version is no longer kept.
    pub async fn get_range(
        &mut self,
        entry: &Entry,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, Error> {
        let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0).min(1 << 24));
        let mut hasher = blake3::Hasher::new();
        self.fetch_range(entry, offset, len, &mut hasher, &mut out)
            .await?;
        Ok(out)
    }

    /// `len` bytes of `entry`'s version from `offset`, appended to `out` and hashed.
    async fn fetch_range(
        &mut self,
        entry: &Entry,
        offset: u64,
        len: u64,
        hasher: &mut blake3::Hasher,
        out: &mut (dyn Write + Send),
    ) -> Result<(), Error> {
        self.send_request(&Message::Get(Get {
            source: entry.source.clone(),
            version: Some(entry.version),
            offset,
            len: Some(len),
        }))
        .await?;
        match self.recv().await? {
            Message::GetOk(ok)
                if ok.offset == offset
                    && ok.entry.version == entry.version
                    && ok.entry.hash == entry.hash => {}
            Message::GetOk(_) => {
                return Err(Error::Protocol("the server sent another range".into()));
            }
            m => return Err(Self::unexpected(&m)),
        }
        let mut received = 0u64;
        while received < len {
            let frame = tokio::time::timeout(RESPONSE_TIMEOUT, self.wire.recv_reusing(None))
                .await
                .map_err(|_| Error::Timeout("download data"))??;
            let data = match frame {
                Incoming::Data(buf) => buf,
                Incoming::Message(Message::Error(e)) => return Err(Error::from_remote(e)),
                Incoming::Message(_) => {
                    return Err(Error::Protocol(
                        "message in the middle of a download".into(),
                    ));
                }
            };
            received += data.len() as u64;
            if received > len {
                return Err(Error::Protocol("more data than asked".into()));
            }
            hasher.update(&data);
            out.write_all(&data)?;
        }
        Ok(())
    }
}
