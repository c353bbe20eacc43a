//! The TLS front of the data service: decodes put, get, stat, versions, list and delete, calls the
//! engine (one file per operation in engine/), encodes its reply and moves body bytes
//! between the connection and the engine's body sources.

use ferry_backend::BlobReader;
use ferry_proto::auth::Principal;
use ferry_proto::message::{
    self, DeleteOk, ErrorCode, ErrorMsg, Get, GetOk, ListOk, Message, Put, PutEnd, PutReady,
};
use ferry_store::Entry;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::owed::Owed;
use crate::Error;
use crate::buf::Spares;
use crate::engine::{Body, Failed, GetReply, TooMuch, Upload};
use crate::engine::{Engine, ServerBackend};
use crate::pipe;
use crate::wire::{Incoming, Wire};

fn error(code: ErrorCode, message: impl Into<String>) -> Message {
    Message::Error(ErrorMsg {
        code,
        message: message.into(),
    })
}

pub(crate) fn to_wire(e: Entry) -> message::Entry {
    message::Entry {
        source: e.source,
        version: e.version,
        size: e.size,
        hash: e.hash,
        modified: e.modified,
        by: e.by,
        mtime: e.meta.mtime,
        executable: e.meta.executable,
    }
}

/// Reads and drops what arrives until the peer stops sending or the stream fails.
async fn discard_input<S: AsyncRead + AsyncWrite + Unpin>(wire: &mut Wire<S>) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 64 * 1024];
    while matches!(wire.get_mut().read(&mut buf).await, Ok(n) if n > 0) {}
}

/// How long a put cut at the end of the grace period is read on after its `shutting_down`.
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// Resolves when the server's grace period for shutting down is over (never if the server
/// is not stopping).
async fn ended(ending: &mut watch::Receiver<bool>) {
    if ending.wait_for(|e| *e).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// What a transfer still running when the grace period ends is told.
fn shutting_down() -> Message {
    error(
        ErrorCode::ShuttingDown,
        "the server is shutting down; try again shortly",
    )
}

/// A refusal of the engine as the error message that answers it.
pub(crate) fn refusal(r: crate::engine::Refusal) -> Message {
    error(r.code, r.message)
}

/// Handles one request. An `Err` means the connection must close.
pub(crate) async fn handle<S: AsyncRead + AsyncWrite + Unpin, B: ServerBackend>(
    engine: &Engine<B>,
    wire: &mut Wire<S>,
    p: &Principal,
    msg: Message,
    ending: &mut watch::Receiver<bool>,
) -> Result<(), Error> {
    let reply = match msg {
        Message::Put(req) => return put(engine, wire, p, req, ending).await,
        Message::Get(req) => return get(engine, wire, p, req, ending).await,
        Message::Stat(req) => match engine.stat(p, req).await? {
            Ok(e) => Message::StatOk(to_wire(e)),
            Err(r) => refusal(r),
        },
        Message::Versions(req) => match engine.versions(p, req).await? {
            Ok(entries) => Message::VersionsOk(message::VersionsOk {
                entries: entries.into_iter().map(to_wire).collect(),
            }),
            Err(r) => refusal(r),
        },
        Message::Chunks(req) => match engine.chunks(p, req).await? {
            Ok(page) => Message::ChunksOk(message::ChunksOk {
                entry: to_wire(page.entry),
                from: page.from,
                chunks: page.chunks,
                more: page.more,
            }),
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

async fn put<S: AsyncRead + AsyncWrite + Unpin, B: ServerBackend>(
    engine: &Engine<B>,
    wire: &mut Wire<S>,
    p: &Principal,
    req: Put,
    ending: &mut watch::Receiver<bool>,
) -> Result<(), Error> {
    if req.streamed {
        match (req.size, req.hash.is_some()) {
            // Without a size the content sent ahead could not be told from what follows it.
            (None, _) => {
                wire.send(&error(ErrorCode::BadRequest, "a streamed put needs a size"))
                    .await?;
                return Err(Error::Protocol("a streamed put without a size".into()));
            }
            (Some(size), true) => {
                let m = error(ErrorCode::BadRequest, "a streamed put carries no hash");
                return refuse_streamed(engine, wire, size, m).await;
            }
            (Some(_), false) => {}
        }
    }
    let mut upload = match engine.put(p, &req).await? {
        Ok(u) => u,
        Err(r) => match req.size.filter(|_| req.streamed) {
            // The content is on its way already: drop it, then answer.
            Some(size) => return refuse_streamed(engine, wire, size, refusal(r)).await,
            None => return wire.send(&refusal(r)).await,
        },
    };
    let ready = Message::PutReady(PutReady {
        offset: upload.offset(),
        need: upload.need().map(<[u8]>::to_vec),
    });
    let received = match wire.send(&ready).await {
        Ok(()) => tokio::select! {
            r = receive_body(engine, wire, &mut upload) => r,
            // The grace period is over: say so (a client still sending may not read it; it
            // sees the connection end and tries again) and close; a resumable upload keeps
            // what arrived.
            () = ended(ending) => {
                let _ = wire.send(&shutting_down()).await;
                let _ = wire.shutdown().await;
                // Read on for a moment, so the connection does not close under the client's
                // data (a reset could destroy the answer before the client reads it). Raw
                // bytes: the upload's frame reader was stopped, maybe in a frame.
                let _ = tokio::time::timeout(LINGER, discard_input(wire)).await;
                Err(Error::ShuttingDown)
            }
        },
        Err(e) => Err(e),
    };
    let end = match received {
        Ok(end) => end,
        Err(e) => {
            // The transfer was cut: wait for the writer to put down what arrived (a
            // resumable upload keeps it, a plain one is discarded), so that the connection
            // ends with its upload.
            upload.abandon(engine).await;
            return Err(e);
        }
    };
    match upload.finish(engine, end).await {
        Ok(Ok(entry)) => wire.send(&Message::PutOk(to_wire(entry))).await,
        Ok(Err(r)) => wire.send(&refusal(r)).await,
        Err(Failed { answer, error }) => {
            let Some(r) = answer else {
                return Err(error);
            };
            // The client is still sending: take the rest of its upload (bounded by the
            // transfer deadline per frame) before answering, so the answer is read as the
            // reply to the put, not lost in a reset of a connection closed under its data.
            let drained = matches!(drain_upload(engine, wire).await, Ok(()));
            wire.send(&refusal(r)).await?;
            if drained {
                tracing::warn!("{error}; the put was refused and the connection goes on");
                Ok(())
            } else {
                Err(error)
            }
        }
    }
}

/// Whether `req` is a small streamed put (PROTOCOL.md §5.2): its content is gathered whole
/// and committed while the connection reads on ([`put_small`]).
pub(crate) fn is_small(req: &Put) -> bool {
    req.streamed
        && req.hash.is_none()
        && req.chunks.is_none()
        && req.offset == 0
        && req.size.is_some_and(|s| s <= crate::STREAMED_MAX)
}

/// Handles a small streamed put ([`is_small`]): its `put_ready` and, once committed, its
/// answer are owed in turn in `owed`; the connection goes on to the next request while the
/// commit runs (engine/put_small.rs). An `Err` means the connection must close.
pub(crate) async fn put_small<'a, S: AsyncRead + AsyncWrite + Unpin, B: ServerBackend>(
    engine: &'a Engine<B>,
    wire: &mut Wire<S>,
    p: &Principal,
    req: Put,
    owed: &mut Owed<'a>,
) -> Result<(), Error> {
    let put = match engine.put_small(p, &req, owed.in_flight()).await? {
        Ok(put) => put,
        Err(r) => {
            // The content is on its way already: drop it, then answer in turn.
            let size = req.size.unwrap_or(0);
            let mut dropped = 0u64;
            // Bounded: every frame comes within the transfer deadline, and at most `size`
            // bytes.
            while let Ok(buf) = upload_frame(engine, wire, None).await? {
                dropped += buf.len() as u64;
                if dropped > size {
                    return too_much(wire, owed).await;
                }
            }
            owed.now(refusal(r));
            return Ok(());
        }
    };
    owed.now(Message::PutReady(PutReady {
        offset: 0,
        need: None,
    }));
    let size = put.size();
    // At most STREAMED_MAX bytes (is_small).
    let mut body: Vec<u8> = Vec::new();
    // Bounded: every frame comes within the transfer deadline, and at most `size` bytes.
    let end = loop {
        match upload_frame(engine, wire, None).await? {
            Ok(buf) => {
                if (body.len() + buf.len()) as u64 > size {
                    return too_much(wire, owed).await;
                }
                if body.is_empty() {
                    body = buf;
                } else {
                    body.extend_from_slice(&buf);
                }
            }
            Err(end) => break end,
        }
    };
    owed.later(engine.commit_small(put, body, end), size);
    Ok(())
}

/// A streamed put sent more than its size: the answers owed, then the refusal, and the
/// connection closes (as for any upload).
async fn too_much<S: AsyncRead + AsyncWrite + Unpin>(
    wire: &mut Wire<S>,
    owed: &mut Owed<'_>,
) -> Result<(), Error> {
    owed.settle(wire).await?;
    wire.send(&error(ErrorCode::BadRequest, "more data than announced"))
        .await?;
    Err(Error::Protocol("upload exceeded its size".into()))
}

/// Receives a put's data frames into `upload` until `put_end` (`Some`) or until the writer
/// stops (`None`; its error is reported by `finish`). `Err`: the connection must close.
async fn receive_body<S: AsyncRead + AsyncWrite + Unpin, B: ServerBackend>(
    engine: &Engine<B>,
    wire: &mut Wire<S>,
    upload: &mut Upload<B>,
) -> Result<Option<PutEnd>, Error> {
    loop {
        let buf = match upload_frame(engine, wire, Some(upload.spares())).await? {
            Ok(buf) => buf,
            Err(end) => return Ok(Some(end)),
        };
        match upload.write(buf).await {
            Ok(true) => {}
            // The writer failed; its error is reported by `finish`.
            Ok(false) => return Ok(None),
            Err(TooMuch(r)) => {
                let why = r.message.clone();
                wire.send(&refusal(r)).await?;
                return Err(Error::Protocol(format!("upload refused: {why}")));
            }
        }
    }
}

/// Refuses a streamed put (PROTOCOL.md §5.2): reads and drops the content the client sent
/// right behind it, at most `size` bytes up to its `put_end`, then sends `answer`. More than
/// `size` bytes ends the connection, as for any upload.
async fn refuse_streamed<S: AsyncRead + AsyncWrite + Unpin, B: ServerBackend>(
    engine: &Engine<B>,
    wire: &mut Wire<S>,
    size: u64,
    answer: Message,
) -> Result<(), Error> {
    let mut dropped = 0u64;
    // Bounded: every frame comes within the transfer deadline, and at most `size` bytes.
    while let Ok(buf) = upload_frame(engine, wire, None).await? {
        dropped += buf.len() as u64;
        if dropped > size {
            wire.send(&error(ErrorCode::BadRequest, "more data than announced"))
                .await?;
            return Err(Error::Protocol("upload exceeded its size".into()));
        }
    }
    wire.send(&answer).await
}

/// Reads and drops the rest of an upload the server will not store, up to its `put_end`.
async fn drain_upload<S: AsyncRead + AsyncWrite + Unpin, B: ServerBackend>(
    engine: &Engine<B>,
    wire: &mut Wire<S>,
) -> Result<(), Error> {
    // Bounded: every frame comes within the transfer deadline or the drain ends.
    while upload_frame(engine, wire, None).await?.is_ok() {}
    Ok(())
}

/// The next frame of an upload, within the transfer deadline: data (`Ok`, into a buffer
/// from `spares` if given) or its `put_end` (`Err`). Any other message ends the connection.
async fn upload_frame<S: AsyncRead + AsyncWrite + Unpin, B: ServerBackend>(
    engine: &Engine<B>,
    wire: &mut Wire<S>,
    spares: Option<&Spares<Vec<u8>>>,
) -> Result<Result<Vec<u8>, PutEnd>, Error> {
    let frame = tokio::time::timeout(engine.limits.transfer_timeout, wire.recv_reusing(spares))
        .await
        .map_err(|_| Error::Timeout("upload data"))??;
    match frame {
        Incoming::Data(buf) => Ok(Ok(buf)),
        Incoming::Message(Message::PutEnd(end)) => Ok(Err(end)),
        Incoming::Message(other) => Err(Error::Protocol(format!(
            "unexpected {} during upload",
            other.type_name()
        ))),
    }
}

async fn get<S: AsyncRead + AsyncWrite + Unpin, B: ServerBackend>(
    engine: &Engine<B>,
    wire: &mut Wire<S>,
    p: &Principal,
    req: Get,
    ending: &mut watch::Receiver<bool>,
) -> Result<(), Error> {
    let started = std::time::Instant::now();
    let GetReply::<_> {
        entry,
        offset,
        body,
        slot: _slot,
    } = match engine.get(p, req).await? {
        Ok(r) => r,
        Err(r) => return wire.send(&refusal(r)).await,
    };
    tracing::debug!(
        "{} gets {} v{} from byte {offset}",
        p.name,
        entry.source,
        entry.version
    );
    let ok = Message::GetOk(GetOk {
        entry: to_wire(entry),
        offset,
    });
    let deadline = engine.limits.transfer_timeout;
    let reader = match body {
        Body::Small(mut chunk) => {
            // The answer and the data leave together: one TLS record, one write. Not
            // flushed: the answers to gets sent ahead gather into one write, and the wire
            // flushes before it waits for the client (Wire::recv).
            wire.queue(&ok).await?;
            let len = chunk.len() as u64;
            if len > 0 {
                tokio::time::timeout(deadline, wire.send_chunk(&mut chunk))
                    .await
                    .map_err(|_| Error::Timeout("the client to read"))??;
            }
            engine.metrics.sent(len);
            engine.metrics.transfer("get", started.elapsed());
            return Ok(());
        }
        Body::Large(reader) => reader,
    };
    wire.send(&ok).await?;
    let remaining = reader.remaining();
    let (mut rx, spares, done) = pipe::spawn_blob_reader(reader);
    let mut sent = 0u64;
    // A client that stops reading must not hold the connection, the blob and the task
    // forever: each chunk must leave within the transfer deadline.
    loop {
        let mut chunk = tokio::select! {
            c = rx.recv() => match c {
                Some(c) => c,
                None => break,
            },
            // The grace period is over: the client reads `shutting_down` in place of the
            // next data frame, keeps what it has, and resumes once the server is back.
            () = ended(ending) => {
                wire.send(&shutting_down()).await?;
                let _ = wire.shutdown().await;
                return Err(Error::ShuttingDown);
            }
        };
        let len = chunk.len() as u64;
        tokio::time::timeout(deadline, wire.send_chunk(&mut chunk))
            .await
            .map_err(|_| Error::Timeout("the client to read"))??;
        sent += len;
        engine.metrics.sent(len);
        spares.give(chunk.into_framed());
    }
    tokio::time::timeout(deadline, wire.flush())
        .await
        .map_err(|_| Error::Timeout("the client to read"))??;
    let read = pipe::join(done).await?;
    if sent != remaining || read != remaining {
        // The blob is shorter than its record: the client's hash check will fail too.
        return Err(Error::Internal(
            "stored blob is shorter than its record".into(),
        ));
    }
    engine.metrics.transfer("get", started.elapsed());
    Ok(())
}
