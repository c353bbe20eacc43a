//! `versions`: the versions of one source the server keeps (up to `keep_versions`), newest
//! first, if the principal may see the source.

use ferry_proto::auth::Principal;
use ferry_proto::message::SourceRef;
use ferry_store::Entry;

use super::{Engine, Outcome, Refusal, ServerBackend, or_refuse};
use crate::policy::Op;

impl<B: ServerBackend> Engine<B> {
    /// The kept versions of `req.source`, newest first. A source that does not exist, or is
    /// deleted, is `not_found`.
    pub(crate) async fn versions(&self, p: &Principal, req: SourceRef) -> Outcome<Vec<Entry>> {
        let out = self.versions_answer(p, &req).await;
        self.answered("versions", &p.name, &req.source, &out, |_| None);
        out
    }

    async fn versions_answer(&self, p: &Principal, req: &SourceRef) -> Outcome<Vec<Entry>> {
        let name = or_refuse!(self.authorize(p, Op::Stat, &req.source));
        let mut entries = self.backend.versions(name.as_str()).await?;
        if entries.is_empty() {
            return Ok(Err(Refusal::not_found(&req.source)));
        }
        entries.sort_by_key(|e| std::cmp::Reverse(e.version));
        Ok(Ok(entries))
    }
}
