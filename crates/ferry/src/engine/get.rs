//! `get`: a version's entry and a body source over its blob, ranged from an offset.
//!
//! When what is asked fits one frame, the blob is opened and read in one trip to the store,
//! so the front can send the reply and the data together; otherwise the body is the blob's
//! file positioned at the offset, for the front to stream (through [`crate::pipe`]).

use std::io::{Read, Seek, SeekFrom};

use ferry_proto::auth::Principal;
use ferry_proto::message::{ErrorCode, Get};
use ferry_store::Entry;

use super::{Engine, Outcome, Refusal, read_store};
use crate::Error;
use crate::buf::Chunk;
use crate::pipe::CHUNK;
use crate::policy::Op;

/// What a get answers: the entry, where the body starts, and the body.
pub(crate) struct GetReply {
    pub(crate) entry: Entry,
    /// The first byte of the body within the version.
    pub(crate) offset: u64,
    pub(crate) body: Body,
}

/// The bytes from the offset to the end of the version.
pub(crate) enum Body {
    /// All of it, read already (at most one frame's worth).
    Small(Chunk),
    /// More than a frame: the blob positioned at the offset, and how many bytes to read.
    Large { file: std::fs::File, len: u64 },
}

impl Engine {
    /// Opens `req.source` (its current version or `req.version`) from `req.offset` on.
    pub(crate) async fn get(&self, p: &Principal, req: Get) -> Outcome<GetReply> {
        let name = match self.authorize(p, Op::Get, &req.source) {
            Ok(n) => n,
            Err(r) => return Ok(Err(r)),
        };
        let store = self.store.clone();
        let Get {
            source,
            version,
            offset,
        } = req;
        // Opening the blob and, when what is asked fits one frame, reading it: one trip to a
        // blocking thread, not two.
        read_store(move || {
            let Some((entry, mut file)) = store.open_blob(name.as_str(), version)? else {
                return Ok(Err(Refusal::not_found(&source)));
            };
            if offset > entry.size {
                return Ok(Err(Refusal::new(
                    ErrorCode::BadRequest,
                    "offset beyond the end",
                )));
            }
            if offset > 0 {
                file.seek(SeekFrom::Start(offset))?;
            }
            let remaining = entry.size - offset;
            let body = if remaining <= CHUNK as u64 {
                let mut chunk = Chunk::with_capacity(remaining as usize);
                chunk.fill_from(&mut file.take(remaining))?;
                if chunk.len() as u64 != remaining {
                    // The blob is shorter than its record: say nothing that would pass.
                    return Err(Error::Internal(
                        "stored blob is shorter than its record".into(),
                    ));
                }
                Body::Small(chunk)
            } else {
                Body::Large {
                    file,
                    len: remaining,
                }
            };
            Ok(Ok(GetReply {
                entry,
                offset,
                body,
            }))
        })
        .await
    }
}
