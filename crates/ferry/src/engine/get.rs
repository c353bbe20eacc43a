//! `get`: a version's entry and a body over its blob, ranged from an offset.
//!
//! When what is asked fits one frame, it is read at once, so the front can send the reply
//! and the data together; otherwise the body is a reader of the blob's range, for the front
//! to stream.

use ferry_backend::{BackendError, BlobReader};
use ferry_proto::auth::Principal;
use ferry_proto::message::{ErrorCode, Get};
use ferry_store::Entry;

use super::authz::TransferSlot;
use super::{Engine, Outcome, Refusal, ServerBackend, or_refuse};
use crate::Error;
use crate::buf::Chunk;
use crate::pipe::CHUNK;
use crate::policy::Op;

/// Lookups of a source's current version tried when its blob is pruned between the lookup
/// and the open (a new version committed in between): each retry sees a newer version.
const LOOKUPS: usize = 3;

/// The refusal's message when the offset is past the version's end (the HTTP front answers
/// it 416).
pub(crate) const BEYOND_END: &str = "offset beyond the end";

/// What a get answers: the entry, where the body starts, and the body.
pub(crate) struct GetReply<R> {
    pub(crate) entry: Entry,
    /// The first byte of the body within the version.
    pub(crate) offset: u64,
    pub(crate) body: Body<R>,
    /// The principal's place among its transfers in progress: hold it while the body moves.
    pub(crate) slot: TransferSlot,
}

/// The bytes from the offset to the end of the version.
pub(crate) enum Body<R> {
    /// All of it, read already (at most one frame's worth).
    Small(Chunk),
    /// More than a frame: a reader of the range.
    Large(R),
}

impl<B: ServerBackend> Engine<B> {
    /// Opens `req.source` (its current version or `req.version`) from `req.offset` on.
    pub(crate) async fn get(&self, p: &Principal, req: Get) -> Outcome<GetReply<B::Reader>> {
        let source = req.source.clone();
        let out = self.get_answer(p, req).await;
        self.answered("get", &p.name, &source, &out, |r| {
            Some(format!(
                "v{} ({} bytes from {})",
                r.entry.version, r.entry.size, r.offset
            ))
        });
        out
    }

    async fn get_answer(&self, p: &Principal, req: Get) -> Outcome<GetReply<B::Reader>> {
        let name = or_refuse!(self.authorize(p, Op::Get, &req.source));
        let slot = or_refuse!(self.transfer_slot(p));
        let Get {
            source,
            version,
            offset,
            len,
        } = req;
        for _ in 0..LOOKUPS {
            let entry = match version {
                None => self.backend.stat(name.as_str()).await?,
                Some(v) => self.backend.stat_version(name.as_str(), v).await?,
            };
            let Some(entry) = entry else {
                return Ok(Err(Refusal::not_found(&source)));
            };
            if offset > entry.size {
                return Ok(Err(Refusal::new(ErrorCode::BadRequest, BEYOND_END)));
            }
            let remaining = match len {
                None => entry.size - offset,
                Some(len) if len <= entry.size - offset => len,
                Some(_) => return Ok(Err(Refusal::new(ErrorCode::BadRequest, BEYOND_END))),
            };
            let mut reader = match self.backend.reader(&entry.hash, offset, remaining).await {
                Ok(r) => r,
                // Pruned since the lookup: look again (a pinned version is then gone).
                Err(BackendError::BlobNotFound) => continue,
                Err(e) => return Err(e.into()),
            };
            let body = if remaining <= CHUNK as u64 {
                let len = remaining as usize;
                let buf = reader.read_into(Chunk::framed_buffer(len), len).await?;
                let chunk = Chunk::from_framed(buf)
                    .filter(|c| c.len() == len)
                    .ok_or_else(|| {
                        Error::Internal("a blob read returned the wrong length".into())
                    })?;
                Body::Small(chunk)
            } else {
                Body::Large(reader)
            };
            return Ok(Ok(GetReply {
                entry,
                offset,
                body,
                slot,
            }));
        }
        Ok(Err(Refusal::not_found(&source)))
    }
}
