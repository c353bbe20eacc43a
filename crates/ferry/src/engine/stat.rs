//! `stat`: one source's current version, if the principal may see it.

use ferry_proto::auth::Principal;
use ferry_proto::message::SourceRef;
use ferry_store::Entry;

use super::{Engine, Outcome, Refusal, ServerBackend, or_refuse};
use crate::policy::Op;

impl<B: ServerBackend> Engine<B> {
    /// Describes the current version of `req.source`.
    pub(crate) async fn stat(&self, p: &Principal, req: SourceRef) -> Outcome<Entry> {
        let out = self.stat_answer(p, &req).await;
        self.answered("stat", &p.name, &req.source, &out, |_| None);
        out
    }

    async fn stat_answer(&self, p: &Principal, req: &SourceRef) -> Outcome<Entry> {
        let name = or_refuse!(self.authorize(p, Op::Stat, &req.source));
        Ok(self
            .backend
            .stat(name.as_str())
            .await?
            .ok_or_else(|| Refusal::not_found(&req.source)))
    }
}
