//! `chunks`: the content-defined chunks of a version (docs/PROTOCOL.md §5.4), a page at a
//! time, for a client that holds an older copy and fetches only the chunks it lacks.

use ferry_proto::auth::Principal;
use ferry_proto::chunking::{MAX_LIST_CHUNKS, encode_list};
use ferry_proto::message::Chunks;
use ferry_store::Entry;

use super::{Engine, Outcome, Refusal, ServerBackend, or_refuse};
use crate::policy::Op;

/// One page of a version's chunks.
pub(crate) struct ChunksPage {
    pub(crate) entry: Entry,
    pub(crate) from: u64,
    /// Encoded chunk list.
    pub(crate) chunks: Vec<u8>,
    pub(crate) more: bool,
}

impl<B: ServerBackend> Engine<B> {
    /// The chunks of `req.source` (its current version or `req.version`) from the index
    /// `req.from` on, at most [`MAX_LIST_CHUNKS`]. Needs the right to get the source.
    pub(crate) async fn chunks(&self, p: &Principal, req: Chunks) -> Outcome<ChunksPage> {
        let source = req.source.clone();
        let out = self.chunks_answer(p, req).await;
        self.answered("chunks", &p.name, &source, &out, |page| {
            Some(format!("v{} from chunk {}", page.entry.version, page.from))
        });
        out
    }

    async fn chunks_answer(&self, p: &Principal, req: Chunks) -> Outcome<ChunksPage> {
        let name = or_refuse!(self.authorize(p, Op::Get, &req.source));
        let entry = match req.version {
            None => self.backend.stat(name.as_str()).await?,
            Some(v) => self.backend.stat_version(name.as_str(), v).await?,
        };
        let Some(entry) = entry else {
            return Ok(Err(Refusal::not_found(&req.source)));
        };
        // Pruned since the lookup: as if it were gone.
        let Some(all) = self.backend.chunks(&entry.hash).await? else {
            return Ok(Err(Refusal::not_found(&req.source)));
        };
        let from = usize::try_from(req.from)
            .unwrap_or(usize::MAX)
            .min(all.len());
        let end = from.saturating_add(MAX_LIST_CHUNKS).min(all.len());
        Ok(Ok(ChunksPage {
            entry,
            from: from as u64,
            chunks: encode_list(&all[from..end]),
            more: end < all.len(),
        }))
    }
}
