//! The data service: one function per request.

use std::io::{Read, Seek, SeekFrom};

use ferry_proto::auth::Principal;
use ferry_proto::message::{
    self, DeleteOk, ErrorCode, ErrorMsg, Get, GetOk, ListOk, Message, Put, PutReady,
};
use ferry_proto::names::SourceName;
use ferry_store::Entry;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::Error;
use crate::engine::Engine;
use crate::pipe::{self, WriteCmd};
use crate::policy::Op;
use crate::wire::{Chunk, Incoming, Wire};

/// What a get found, read on the blocking thread.
enum Blob {
    /// The offset asked for lies beyond the end.
    OffsetBeyondEnd,
    /// All that is asked, read already: it fits one frame.
    Small(Chunk),
    /// More than a frame: streamed by a reader thread.
    Large(std::fs::File),
}

fn error(code: ErrorCode, message: impl Into<String>) -> Message {
    Message::Error(ErrorMsg {
        code,
        message: message.into(),
    })
}

fn to_wire(e: Entry) -> message::Entry {
    message::Entry {
        source: e.source,
        version: e.version,
        size: e.size,
        hash: e.hash,
        modified: e.modified,
        by: e.by,
    }
}

fn now() -> u64 {
    crate::clock::now()
}

/// Checks the name and the principal's right; returns the refusal to send otherwise.
fn authorize(engine: &Engine, p: &Principal, op: Op, source: &str) -> Result<SourceName, Message> {
    engine.authorize(p, op, source).map_err(refusal)
}

/// A refusal of the engine as the error message that answers it.
pub(crate) fn refusal(r: crate::engine::Refusal) -> Message {
    error(r.code, r.message)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    pipe::join(tokio::task::spawn_blocking(f)).await
}

/// Runs a short store read (an index lookup, opening or reading at most one frame of a
/// blob). On a multi-thread runtime it runs in place: `block_in_place` hands this worker's
/// other tasks to another thread, and the request does not wait for a blocking thread to
/// wake up and for its answer to come back. On any other runtime it goes to a blocking
/// thread like [`blocking`]. Writes (which fsync) always go to a blocking thread.
async fn read_store<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    if Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
        tokio::task::block_in_place(f)
    } else {
        blocking(f).await
    }
}

/// Handles one request. An `Err` means the connection must close.
pub(crate) async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
    engine: &Engine,
    wire: &mut Wire<S>,
    p: &Principal,
    msg: Message,
) -> Result<(), Error> {
    let reply = match msg {
        Message::Put(req) => return put(engine, wire, p, req).await,
        Message::Get(req) => return get(engine, wire, p, req).await,
        Message::Stat(req) => match engine.stat(p, req).await? {
            Ok(e) => Message::StatOk(to_wire(e)),
            Err(r) => refusal(r),
        },
        Message::Delete(req) => match engine.delete(p, req).await? {
            Ok(version) => Message::DeleteOk(DeleteOk { version }),
            Err(r) => refusal(r),
        },
        Message::List(req) => match engine.list(p, req).await? {
            Ok(page) => Message::ListOk(ListOk {
                entries: page.entries.into_iter().map(to_wire).collect(),
                next: page.next,
            }),
            Err(r) => refusal(r),
        },
        other => {
            let m = error(
                ErrorCode::BadRequest,
                format!("unexpected message {}", other.type_name()),
            );
            wire.send(&m).await?;
            return Err(Error::Protocol(format!(
                "unexpected {} from client",
                other.type_name()
            )));
        }
    };
    wire.send(&reply).await
}

async fn put<S: AsyncRead + AsyncWrite + Unpin>(
    engine: &Engine,
    wire: &mut Wire<S>,
    p: &Principal,
    req: Put,
) -> Result<(), Error> {
    let name = match authorize(engine, p, Op::Put, &req.source) {
        Ok(n) => n,
        Err(m) => return wire.send(&m).await,
    };
    if req.offset != 0 {
        return wire
            .send(&error(
                ErrorCode::Unsupported,
                "resuming an upload is not supported",
            ))
            .await;
    }
    let writer = {
        let store = engine.store.clone();
        blocking(move || Ok(store.begin_put()?)).await?
    };
    let (tx, spares, done) = pipe::spawn_writer(writer, |w| Ok(w.finish()?));
    wire.send(&Message::PutReady(PutReady { offset: 0 }))
        .await?;
    let mut received = 0u64;
    let end = loop {
        let frame = tokio::time::timeout(
            engine.limits.transfer_timeout,
            wire.recv_reusing(Some(&spares)),
        )
        .await
        .map_err(|_| Error::Timeout("upload data"))??;
        match frame {
            Incoming::Data(buf) => {
                received += buf.len() as u64;
                if req.size.is_some_and(|s| received > s) {
                    wire.send(&error(ErrorCode::BadRequest, "more data than announced"))
                        .await?;
                    return Err(Error::Protocol("upload exceeded its size".into()));
                }
                if tx.send(WriteCmd::Data(buf)).await.is_err() {
                    // The writer failed; its error is reported below.
                    break None;
                }
            }
            Incoming::Message(Message::PutEnd(end)) => break Some(end),
            Incoming::Message(other) => {
                return Err(Error::Protocol(format!(
                    "unexpected {} during upload",
                    other.type_name()
                )));
            }
        }
    };
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
            wire.send(&error(
                ErrorCode::Internal,
                "the server could not store the data",
            ))
            .await?;
            return Err(Error::Internal(why));
        }
    };
    let size_ok = staged.size() == end.size && req.size.is_none_or(|s| s == end.size);
    if !size_ok || staged.hash() != end.hash {
        // Dropping `staged` deletes the temporary file; nothing becomes visible.
        return wire
            .send(&error(
                ErrorCode::HashMismatch,
                "the data received does not match the announced size and hash",
            ))
            .await;
    }
    let store = engine.store.clone();
    let by = p.name.clone();
    let entry = blocking(move || Ok(store.commit(name.as_str(), staged, &by, now())?)).await?;
    tracing::info!(
        "{} stored {} v{} ({} bytes)",
        p.name,
        entry.source,
        entry.version,
        entry.size
    );
    wire.send(&Message::PutOk(to_wire(entry))).await
}

async fn get<S: AsyncRead + AsyncWrite + Unpin>(
    engine: &Engine,
    wire: &mut Wire<S>,
    p: &Principal,
    req: Get,
) -> Result<(), Error> {
    let name = match authorize(engine, p, Op::Get, &req.source) {
        Ok(n) => n,
        Err(m) => return wire.send(&m).await,
    };
    let store = engine.store.clone();
    let version = req.version;
    let offset = req.offset;
    // Opening the blob and, when what is asked fits one frame, reading it: one trip to a
    // blocking thread, not two.
    let found = read_store(move || {
        let Some((entry, mut file)) = store.open_blob(name.as_str(), version)? else {
            return Ok(None);
        };
        if offset > entry.size {
            return Ok(Some((entry, Blob::OffsetBeyondEnd)));
        }
        if offset > 0 {
            file.seek(SeekFrom::Start(offset))?;
        }
        let remaining = entry.size - offset;
        if remaining <= pipe::CHUNK as u64 {
            let mut chunk = Chunk::with_capacity(remaining as usize);
            chunk.fill_from(&mut file.take(remaining))?;
            return Ok(Some((entry, Blob::Small(chunk))));
        }
        Ok(Some((entry, Blob::Large(file))))
    })
    .await?;
    let Some((entry, blob)) = found else {
        return wire
            .send(&error(
                ErrorCode::NotFound,
                format!("no source '{}'", req.source),
            ))
            .await;
    };
    let remaining = entry.size - req.offset.min(entry.size);
    let ok = Message::GetOk(GetOk {
        entry: to_wire(entry),
        offset: req.offset,
    });
    let deadline = engine.limits.transfer_timeout;
    let file = match blob {
        Blob::OffsetBeyondEnd => {
            return wire
                .send(&error(ErrorCode::BadRequest, "offset beyond the end"))
                .await;
        }
        Blob::Small(mut chunk) => {
            if chunk.len() as u64 != remaining {
                // The blob is shorter than its record: say nothing that would pass.
                return Err(Error::Internal(
                    "stored blob is shorter than its record".into(),
                ));
            }
            // The answer and the data leave together: one TLS record, one write.
            wire.queue(&ok).await?;
            if !chunk.is_empty() {
                tokio::time::timeout(deadline, wire.send_chunk(&mut chunk))
                    .await
                    .map_err(|_| Error::Timeout("the client to read"))??;
            }
            return tokio::time::timeout(deadline, wire.flush())
                .await
                .map_err(|_| Error::Timeout("the client to read"))?;
        }
        Blob::Large(file) => file,
    };
    wire.send(&ok).await?;
    let (mut rx, spares, done) = pipe::spawn_reader(file, Some(remaining), false);
    let mut sent = 0u64;
    // A client that stops reading must not hold the connection, the file and the thread
    // forever: each chunk must leave within the transfer deadline.
    while let Some(mut chunk) = rx.recv().await {
        sent += chunk.len() as u64;
        tokio::time::timeout(deadline, wire.send_chunk(&mut chunk))
            .await
            .map_err(|_| Error::Timeout("the client to read"))??;
        spares.give(chunk);
    }
    tokio::time::timeout(deadline, wire.flush())
        .await
        .map_err(|_| Error::Timeout("the client to read"))??;
    let read = pipe::join(done).await?;
    if sent != remaining || read.len != remaining {
        // The blob is shorter than its record: the client's hash check will fail too.
        return Err(Error::Internal(
            "stored blob is shorter than its record".into(),
        ));
    }
    Ok(())
}
