//! Small streamed puts (docs/PROTOCOL.md §5.2): the content, at most
//! [`STREAMED_MAX`](crate::STREAMED_MAX) bytes, is gathered whole in memory and committed
//! with [`Backend::commit_small`](ferry_backend::Backend::commit_small), so that the puts a
//! client streams back to back are committed together (one file, one fsync pass, one index
//! transaction for a whole batch) instead of each paying an upload part, a writer thread and
//! a commit of its own.
//!
//! The front answers `put_ready` at once and reads the next request while the commit runs;
//! the answers still leave in the order of the requests (net/owed.rs). The checks are a
//! put's: authorization, `max_upload_bytes`, the quota (counting what this connection's
//! earlier puts still have in flight), a place among the principal's transfers (held until
//! the commit ends), the size and the BLAKE3 of the content.

use std::future::Future;

use ferry_backend::{BackendError, Meta};
use ferry_proto::auth::Principal;
use ferry_proto::message::{Put, PutEnd};
use ferry_proto::names::SourceName;
use ferry_store::Entry;

use super::observe::Answer;
use super::put::{Counted, is_storage_full, mismatch, storage_refusal, too_large};
use super::{Engine, Outcome, Refusal, ServerBackend, or_refuse};
use crate::Error;
use crate::policy::Op;

/// What a connection's small puts not answered yet will store, counted against the quota
/// of the next one.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct InFlight {
    pub(crate) bytes: u64,
    pub(crate) versions: u64,
}

/// A small put whose content is arriving.
pub(crate) struct SmallPut {
    name: SourceName,
    by: String,
    size: u64,
    meta: Meta,
    counted: Counted,
}

impl SmallPut {
    /// The size the client announced: the body must be exactly this long.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }
}

impl<B: ServerBackend> Engine<B> {
    /// Starts a small streamed put of `req.size` bytes (the caller checked it is one).
    pub(crate) async fn put_small(
        &self,
        p: &Principal,
        req: &Put,
        in_flight: InFlight,
    ) -> Outcome<SmallPut> {
        let out = self.put_small_start(p, req, in_flight).await;
        if !matches!(out, Ok(Ok(_))) {
            self.answered("put", &p.name, &req.source, &out, |_| None);
        }
        out
    }

    async fn put_small_start(
        &self,
        p: &Principal,
        req: &Put,
        in_flight: InFlight,
    ) -> Outcome<SmallPut> {
        let name = or_refuse!(self.authorize(p, Op::Put, &req.source));
        let size = req.size.unwrap_or(0);
        let max = self.rules.get().limits.max_upload_bytes;
        if max != 0 && size > max {
            return Ok(Err(too_large(max)));
        }
        let quota = self
            .over_quota(
                &p.name,
                size.saturating_add(in_flight.bytes),
                in_flight.versions.saturating_add(1),
            )
            .await?;
        if let Some(r) = quota {
            return Ok(Err(r));
        }
        let slot = or_refuse!(self.transfer_slot(p));
        Ok(Ok(SmallPut {
            name,
            by: p.name.clone(),
            size,
            meta: Meta {
                mtime: req.mtime,
                executable: req.executable,
            },
            counted: Counted::new(self, slot),
        }))
    }

    /// Commits `put` with its whole `body` and the client's `end`. The commit is queued when
    /// this is called (see [`ferry_backend::Backend::commit_small`]); the future gives the
    /// answer: the entry, or a refusal (a size or hash that does not match, full storage, a
    /// failed commit). Counted and audited like any put.
    pub(crate) fn commit_small(
        &self,
        put: SmallPut,
        body: Vec<u8>,
        end: PutEnd,
    ) -> impl Future<Output = Result<Entry, Refusal>> + Send + '_ {
        let SmallPut {
            name,
            by,
            size,
            meta,
            counted,
        } = put;
        counted.metrics.received(body.len() as u64);
        let queued = (body.len() as u64 == size && end.size == size).then(|| {
            self.backend.commit_small(
                name.as_str().to_owned(),
                body,
                end.hash,
                meta,
                by.clone(),
                crate::clock::now(),
            )
        });
        async move {
            let out = match queued {
                None => Err(mismatch()),
                Some(commit) => match commit.await {
                    Ok(entry) => Ok(entry),
                    Err(BackendError::HashMismatch { .. }) => Err(mismatch()),
                    Err(e) => {
                        let e = Error::from(e);
                        tracing::error!("upload of {name} failed: {e}");
                        Err(storage_refusal(is_storage_full(&e)))
                    }
                },
            };
            let answer = match &out {
                Ok(entry) => {
                    counted.metrics.transfer("put", counted.started.elapsed());
                    Answer::Done(entry)
                }
                Err(r) => Answer::Refused(r),
            };
            self.record("put", &by, name.as_str(), answer, |e| {
                Some(format!("stored v{} ({} bytes)", e.version, e.size))
            });
            drop(counted);
            out
        }
    }
}
