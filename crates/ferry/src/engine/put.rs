//! `put`: an upload staged on disk while its body arrives, committed as the source's next
//! version only when its size and BLAKE3 hash match what the client announced.
//!
//! [`Engine::put`] checks the request and starts an [`Upload`]: a writer thread that hashes
//! and writes the body to a temporary file (through [`crate::pipe`]). The front feeds it the
//! body's buffers with [`Upload::write`], then [`Upload::finish`] stages (fsync, rename) and
//! commits. An upload dropped unfinished leaves nothing visible.

use ferry_proto::auth::Principal;
use ferry_proto::message::{ErrorCode, Put, PutEnd};
use ferry_proto::names::SourceName;
use ferry_store::{Entry, StagedBlob};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Engine, Outcome, Refusal, blocking};
use crate::Error;
use crate::buf::Spares;
use crate::pipe::{self, WriteCmd};
use crate::policy::Op;

/// An upload in progress.
pub(crate) struct Upload {
    name: SourceName,
    by: String,
    /// The total the client announced, if it did.
    size: Option<u64>,
    received: u64,
    tx: mpsc::Sender<WriteCmd>,
    spares: Spares<Vec<u8>>,
    done: JoinHandle<Result<Option<StagedBlob>, Error>>,
}

/// The body went past the size the client announced: the front answers it and closes.
pub(crate) struct TooMuch;

/// An upload the server failed to store: the connection closes with `error`, after sending
/// `answer` if there is one.
pub(crate) struct Failed {
    pub(crate) answer: Option<Refusal>,
    pub(crate) error: Error,
}

impl Engine {
    /// Starts an upload to `req.source`, from offset 0 (the only one this version accepts).
    pub(crate) async fn put(&self, p: &Principal, req: &Put) -> Outcome<Upload> {
        let name = match self.authorize(p, Op::Put, &req.source) {
            Ok(n) => n,
            Err(r) => return Ok(Err(r)),
        };
        if req.offset != 0 {
            return Ok(Err(Refusal::new(
                ErrorCode::Unsupported,
                "resuming an upload is not supported",
            )));
        }
        let writer = {
            let store = self.store.clone();
            blocking(move || Ok(store.begin_put()?)).await?
        };
        let (tx, spares, done) = pipe::spawn_writer(writer, |w| Ok(w.finish()?));
        Ok(Ok(Upload {
            name,
            by: p.name.clone(),
            size: req.size,
            received: 0,
            tx,
            spares,
            done,
        }))
    }
}

impl Upload {
    /// Where the body starts (the `put_ready` offset).
    pub(crate) fn offset(&self) -> u64 {
        0
    }

    /// Buffers the writer has written, for the front to receive the next ones into.
    pub(crate) fn spares(&self) -> &Spares<Vec<u8>> {
        &self.spares
    }

    /// Hands the next bytes of the body to the writer. `Ok(false)`: the writer has stopped
    /// (its error is reported by [`Upload::finish`]); stop feeding it.
    pub(crate) async fn write(&mut self, buf: Vec<u8>) -> Result<bool, TooMuch> {
        self.received += buf.len() as u64;
        if self.size.is_some_and(|s| self.received > s) {
            return Err(TooMuch);
        }
        Ok(self.tx.send(WriteCmd::Data(buf)).await.is_ok())
    }

    /// Ends the upload: with the client's `put_end`, stages the body and commits it if its
    /// size and hash match; without (the writer stopped), reports why.
    pub(crate) async fn finish(
        self,
        engine: &Engine,
        end: Option<PutEnd>,
    ) -> Result<Result<Entry, Refusal>, Failed> {
        let Upload {
            name,
            by,
            size,
            tx,
            done,
            ..
        } = self;
        // Only a completed upload is finished; otherwise the writer drops its temporary file.
        if end.is_some() {
            let _ = tx.send(WriteCmd::Finish).await;
        }
        drop(tx);
        let (end, staged) = match (end, pipe::join(done).await) {
            (Some(end), Ok(Some(staged))) => (end, staged),
            (_, result) => {
                let why = match result {
                    Err(e) => e.to_string(),
                    Ok(_) => "the writer stopped early".to_owned(),
                };
                tracing::error!("upload of {name} failed: {why}");
                return Err(Failed {
                    answer: Some(Refusal::new(
                        ErrorCode::Internal,
                        "the server could not store the data",
                    )),
                    error: Error::Internal(why),
                });
            }
        };
        let size_ok = staged.size() == end.size && size.is_none_or(|s| s == end.size);
        if !size_ok || staged.hash() != end.hash {
            // Dropping `staged` deletes the temporary file; nothing becomes visible.
            return Ok(Err(Refusal::new(
                ErrorCode::HashMismatch,
                "the data received does not match the announced size and hash",
            )));
        }
        let store = engine.store.clone();
        let who = by.clone();
        let now = crate::clock::now();
        let committed = blocking(move || Ok(store.commit(name.as_str(), staged, &who, now)?)).await;
        let entry = committed.map_err(|error| Failed {
            answer: None,
            error,
        })?;
        tracing::info!(
            "{by} stored {} v{} ({} bytes)",
            entry.source,
            entry.version,
            entry.size
        );
        Ok(Ok(entry))
    }
}
