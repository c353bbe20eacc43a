//! `list`: one page of the sources under a prefix that the principal may list.
//!
//! Entries are filtered while scanning, under a budget of names examined per request
//! ([`Limits::list_scan`](super::Limits)): a principal that may list few of many names gets
//! pages with fewer entries, never an unbounded scan. Where a page stops on a name the
//! principal may not list, `next` is a cursor sealed for this principal and prefix.

use ferry_proto::auth::Principal;
use ferry_proto::message::{ErrorCode, List};
use ferry_proto::names::{SourceName, validate_prefix};
use ferry_store::Entry;

use super::{Engine, Outcome, Refusal, ServerBackend};
use crate::policy::Op;

/// Entries per listing page; at most about 700 bytes each, so a page fits one frame.
const LIST_PAGE: usize = 1000;

/// Names a listing examines per request at most, visible or not (the default of
/// `Limits::list_scan`).
pub(crate) const LIST_SCAN_BUDGET: usize = 16 * LIST_PAGE;

/// One page of a listing.
pub(crate) struct ListPage {
    /// The visible entries, in name order.
    pub(crate) entries: Vec<Entry>,
    /// Where the next page starts (a name or a sealed cursor); `None` at the end.
    pub(crate) next: Option<String>,
}

impl<B: ServerBackend> Engine<B> {
    /// The page of `req.prefix`'s sources after `req.after` that the principal may list.
    pub(crate) async fn list(&self, p: &Principal, req: List) -> Outcome<ListPage> {
        let prefix = req.prefix.clone();
        let out = self.list_answer(p, req).await;
        self.answered("list", &p.name, &prefix, &out, |_| None);
        out
    }

    async fn list_answer(&self, p: &Principal, req: List) -> Outcome<ListPage> {
        if let Err(e) = validate_prefix(&req.prefix) {
            return Ok(Err(Refusal::new(ErrorCode::BadRequest, e.to_string())));
        }
        let key = ferry_proto::cursor::CursorKey::derive(&self.master);
        // `after` is a source name, or a cursor this server sealed for this principal and prefix.
        let mut position = match req.after.as_deref() {
            None => None,
            Some(c) if c.starts_with(ferry_proto::cursor::MARK) => {
                match key.open(&p.name, &req.prefix, c) {
                    Some(name) => Some(name),
                    None => {
                        return Ok(Err(Refusal::new(
                            ErrorCode::BadRequest,
                            "invalid listing cursor",
                        )));
                    }
                }
            }
            Some(name) => match SourceName::parse(name) {
                Ok(n) => Some(n.as_str().to_owned()),
                Err(e) => {
                    return Ok(Err(Refusal::new(
                        ErrorCode::BadRequest,
                        format!("after: {e}"),
                    )));
                }
            },
        };
        let budget = self.limits.list_scan.max(1);
        let mut entries = Vec::new();
        let mut scanned = 0;
        // Filtered while scanning: `next` is the last visible name of a full page, or where the
        // scan budget ran out, sealed if the principal may not list that name.
        let next = loop {
            let want = LIST_PAGE.min(budget - scanned);
            let chunk = self
                .backend
                .list(&req.prefix, position.as_deref(), want)
                .await?;
            let more = chunk.len() == want;
            for e in chunk {
                scanned += 1;
                let visible = self.allows(p, Op::List, &e.source);
                position = Some(e.source.clone());
                if visible {
                    entries.push(e);
                    if entries.len() == LIST_PAGE {
                        break;
                    }
                }
                if scanned == budget {
                    break;
                }
            }
            let Some(last) = position.as_deref() else {
                break None;
            };
            if entries.len() == LIST_PAGE || (more && scanned >= budget) {
                if self.allows(p, Op::List, last) {
                    break Some(last.to_owned());
                }
                let mut nonce = [0u8; 24];
                crate::tls::random_bytes(&mut nonce)?;
                break Some(key.seal(nonce, &p.name, &req.prefix, last));
            }
            if !more {
                break None;
            }
        };
        Ok(Ok(ListPage { entries, next }))
    }
}
