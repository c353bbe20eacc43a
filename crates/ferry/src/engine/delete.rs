//! `delete`: records a deletion of a source as its next version.

use ferry_proto::auth::Principal;
use ferry_proto::message::SourceRef;

use super::{Engine, Outcome, Refusal, ServerBackend, or_refuse};
use crate::policy::Op;

impl<B: ServerBackend> Engine<B> {
    /// Deletes `req.source`; the reply is the version that records the deletion.
    pub(crate) async fn delete(&self, p: &Principal, req: SourceRef) -> Outcome<u64> {
        let out = self.delete_answer(p, &req).await;
        self.answered("delete", &p.name, &req.source, &out, |v| {
            Some(format!("recorded as v{v}"))
        });
        out
    }

    async fn delete_answer(&self, p: &Principal, req: &SourceRef) -> Outcome<u64> {
        let name = or_refuse!(self.authorize(p, Op::Delete, &req.source));
        Ok(self
            .backend
            .delete(name.as_str(), &p.name, crate::clock::now())
            .await?
            .ok_or_else(|| Refusal::not_found(&req.source)))
    }
}
