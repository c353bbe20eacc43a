//! `put`: an upload staged while its body arrives, committed as the source's next version
//! only when its size and BLAKE3 hash match what the client announced.
//!
//! [`Engine::put`] checks the request and starts an [`Upload`]. Either way the body goes to
//! an upload part in the backend (`Blobs::begin_upload`, `ferry_backend::Upload`), written
//! from one blocking thread of its own fed through a bounded channel, so receiving the next
//! frame overlaps writing the last:
//!
//! - **plain** (a `put` without `hash`): the part has a random key and is discarded if the
//!   put does not finish, so an upload cut off leaves nothing.
//! - **resumable** (a `put` with `size` and `hash`, docs/PROTOCOL.md §5): the part's key is
//!   derived from the principal, the source, the size and the hash ([`upload_key`]). It
//!   outlives the connection and the server process; the next `put` with the same four
//!   continues it from the bytes the backend holds.
//!
//! The front feeds either with [`Upload::write`], then [`Upload::finish`] checks the end and
//! commits. Idle parts older than `[uploads] keep_secs` are removed by [`Engine::sweep_uploads`].

use std::sync::Arc;
use std::time::Instant;

use ferry_backend::Upload as _;
use ferry_backend::{BackendError, Meta, Staged as _, UploadKey};
use ferry_proto::auth::{Method, Principal};
use ferry_proto::chunking::{self, ChunkRef};
use ferry_proto::message::{Digest, ErrorCode, Put, PutEnd};
use ferry_proto::names::SourceName;
use ferry_store::Entry;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use super::authz::TransferSlot;
use super::observe::Answer;
use super::{Core, Engine, Outcome, Refusal, ServerBackend, or_refuse};
use crate::Error;
use crate::accounts::session_id_text;
use crate::buf::Spares;
use crate::metrics::{InProgress, Metrics};
use crate::pipe::{self, WriteCmd};
use crate::policy::Op;

/// An upload in progress.
pub(crate) struct Upload<B: ServerBackend> {
    name: SourceName,
    by: String,
    /// The total the client announced, if it did.
    size: Option<u64>,
    /// Bytes the server held before this body (the `put_ready` offset).
    offset: u64,
    /// Bytes of this body received so far.
    received: u64,
    /// What the client said about the file, kept with the version.
    meta: Meta,
    /// A delta put (docs/PROTOCOL.md §5.4): the body is the chunks the base lacks.
    delta: Option<Delta>,
    tx: mpsc::Sender<WriteCmd>,
    spares: Spares<Vec<u8>>,
    writer: Writer<B>,
    /// Counts the upload as in progress while it lives, and its bytes.
    counted: Counted,
}

/// The base of a delta put: a content's hash and its chunks.
type Base = (ferry_backend::Hash, Vec<ChunkRef>);

/// What a delta put sends and what it is checked against.
struct Delta {
    /// The content the chunks not sent come from (the source's current version).
    base: ferry_backend::Hash,
    /// The content's chunks, as the client listed them.
    chunks: Vec<ChunkRef>,
    /// Which of them the body carries.
    need: Vec<u8>,
    /// The content's size and hash (the body's are not the content's).
    size: u64,
    hash: Digest,
}

/// An upload as the server's metrics and limits see it.
pub(super) struct Counted {
    pub(super) metrics: Metrics,
    pub(super) started: Instant,
    _in_progress: InProgress,
    /// The principal's place among its transfers in progress.
    _slot: TransferSlot,
    /// The most content this put may store (`max_upload_bytes`; 0: no limit).
    max: u64,
}

impl Counted {
    pub(super) fn new(core: &Core, slot: TransferSlot) -> Self {
        Self {
            metrics: core.metrics.clone(),
            started: Instant::now(),
            _in_progress: core.metrics.upload(),
            _slot: slot,
            max: core.rules.get().limits.max_upload_bytes,
        }
    }
}

impl<B: ServerBackend> Engine<B> {
    /// The refusal of `versions` more versions of `bytes` bytes in all by `by`, if they
    /// would take `by`'s kept versions past `quota_bytes` or `quota_versions`. Counted
    /// before the new version prunes any old one, so a principal at its quota frees room
    /// (deletes) before it puts.
    pub(super) async fn over_quota(
        &self,
        by: &str,
        bytes: u64,
        versions: u64,
    ) -> Result<Option<Refusal>, Error> {
        let limits = self.rules.get().limits.clone();
        if limits.quota_bytes == 0 && limits.quota_versions == 0 {
            return Ok(None);
        }
        let used = self.backend.usage(Some(by)).await?;
        let over_bytes =
            limits.quota_bytes != 0 && used.bytes.saturating_add(bytes) > limits.quota_bytes;
        let over_versions = limits.quota_versions != 0
            && used.versions.saturating_add(versions) > limits.quota_versions;
        Ok((over_bytes || over_versions).then(|| {
            Refusal::new(
                ErrorCode::QuotaExceeded,
                format!(
                    "{by}'s quota is {} bytes in {} versions and it holds {} bytes in {} \
                     (quota_bytes, quota_versions): delete something first",
                    limits.quota_bytes, limits.quota_versions, used.bytes, used.versions
                ),
            )
        }))
    }
}

/// The refusal of content larger than `max_upload_bytes`.
pub(super) fn too_large(max: u64) -> Refusal {
    Refusal::new(
        ErrorCode::TooLarge,
        format!(
            "the content is larger than this server accepts in one put ({max} bytes, max_upload_bytes)"
        ),
    )
}

/// Where an upload's bytes go: a part in the backend, written by a thread that hands its
/// handle back when told to finish.
struct Writer<B: ServerBackend> {
    key: UploadKey,
    /// The hash a resumable put announced; `None` for a plain put, whose part lives under a
    /// random key for this connection only and is discarded if the put does not finish.
    announced: Option<Digest>,
    done: JoinHandle<Result<Option<Held<B::Upload>>, Error>>,
}

/// The body went past the size the client announced (`bad_request`) or the most the server
/// accepts (`too_large`): the front answers with the refusal and closes.
pub(crate) struct TooMuch(pub(crate) Refusal);

/// An upload the server failed to store: the connection closes with `error`, after sending
/// `answer` if there is one.
pub(crate) struct Failed {
    pub(crate) answer: Option<Refusal>,
    pub(crate) error: Error,
}

/// An open part handle that, when it goes away (finished or dropped), wakes the puts
/// waiting for its key ([`Engine::begin_part`]).
struct Held<U> {
    upload: Option<U>,
    released: Arc<Notify>,
}

impl<U> Held<U> {
    fn take(&mut self) -> Option<U> {
        self.upload.take()
    }
}

impl<U> Drop for Held<U> {
    fn drop(&mut self) {
        // The handle first: its key is free once it is gone.
        drop(self.upload.take());
        self.released.notify_waiters();
    }
}

/// What a principal is, for the upload key: credentials and users have separate names.
async fn principal_kind(engine: &Core, p: &Principal) -> Result<String, Error> {
    let method = match &p.method {
        Method::Session { id } => engine
            .accounts
            .session(&session_id_text(id))
            .await?
            .and_then(|s| s.origin_method()),
        m => Some(m.clone()),
    };
    Ok(match method {
        Some(Method::Psk { .. }) => "client".to_owned(),
        Some(Method::Password { .. }) => "user".to_owned(),
        Some(Method::Mesh { .. }) => "mesh".to_owned(),
        // A session of unknown origin: its uploads are its own.
        _ => match &p.method {
            Method::Session { id } => format!("session:{}", session_id_text(id)),
            _ => "other".to_owned(),
        },
    })
}

/// The key of a resumable upload (docs/PROTOCOL.md §5): the hex BLAKE3 of
/// `"ferry put upload v1" ‖ 0x00 ‖ lp(kind) ‖ lp(name) ‖ lp(source) ‖ size (u64 BE) ‖ hash`,
/// where `lp(x)` is `len(x)` as a u64 BE followed by `x`. Only the same principal putting the
/// same content (size and hash) to the same source reaches the same part.
pub(crate) fn upload_key(
    kind: &str,
    name: &str,
    source: &str,
    size: u64,
    hash: &Digest,
) -> UploadKey {
    UploadKey::derive(&key_input(
        b"ferry put upload v1\0",
        [kind, name, source],
        size,
        hash,
    ))
}

/// The key of a delta put's upload (docs/PROTOCOL.md §5.4): as [`upload_key`] with the
/// label `"ferry put delta v1"` and the base content's hash after the content's, so a put
/// against another base starts over.
pub(crate) fn delta_upload_key(
    kind: &str,
    name: &str,
    source: &str,
    size: u64,
    hash: &Digest,
    base: &Digest,
) -> UploadKey {
    let mut m = key_input(b"ferry put delta v1\0", [kind, name, source], size, hash);
    m.extend_from_slice(base);
    UploadKey::derive(&m)
}

/// `label ‖ lp(kind) ‖ lp(name) ‖ lp(source) ‖ size (u64 BE) ‖ hash`, where `lp(x)` is
/// `len(x)` as a u64 BE followed by `x`: what both upload keys hash.
fn key_input(label: &[u8], fields: [&str; 3], size: u64, hash: &Digest) -> Vec<u8> {
    let mut m = Vec::with_capacity(128 + fields.iter().map(|f| f.len()).sum::<usize>());
    m.extend_from_slice(label);
    for field in fields {
        m.extend_from_slice(&(field.len() as u64).to_be_bytes());
        m.extend_from_slice(field.as_bytes());
    }
    m.extend_from_slice(&size.to_be_bytes());
    m.extend_from_slice(hash);
    m
}

impl<B: ServerBackend> Engine<B> {
    /// Starts an upload to `req.source`: a plain one from offset 0, or, if the request
    /// carries `size` and `hash`, a resumable one from the bytes the server already holds.
    pub(crate) async fn put(&self, p: &Principal, req: &Put) -> Outcome<Upload<B>> {
        let out = self.put_start(p, req).await;
        // Counted and audited here only if it did not start; else when it ends.
        if !matches!(out, Ok(Ok(_))) {
            self.answered("put", &p.name, &req.source, &out, |_| None);
        }
        out
    }

    async fn put_start(&self, p: &Principal, req: &Put) -> Outcome<Upload<B>> {
        let name = or_refuse!(self.authorize(p, Op::Put, &req.source));
        let max = self.rules.get().limits.max_upload_bytes;
        if max != 0 && req.size.is_some_and(|s| s > max) {
            return Ok(Err(too_large(max)));
        }
        if let Some(r) = self.over_quota(&p.name, req.size.unwrap_or(0), 1).await? {
            return Ok(Err(r));
        }
        let slot = or_refuse!(self.transfer_slot(p));
        if req.offset != 0 {
            return Ok(Err(Refusal::new(
                ErrorCode::Unsupported,
                "a put's offset must be 0: the server says where a resumable upload continues",
            )));
        }
        let meta = Meta {
            mtime: req.mtime,
            executable: req.executable,
        };
        if let Some(hash) = req.hash {
            let Some(size) = req.size else {
                return Ok(Err(Refusal::new(
                    ErrorCode::BadRequest,
                    "a resumable put needs its size as well as its hash",
                )));
            };
            if let Some(list) = &req.chunks {
                let chunks = match chunking::decode_list(list, size) {
                    Ok(c) => c,
                    Err(e) => {
                        return Ok(Err(Refusal::new(
                            ErrorCode::BadRequest,
                            format!("bad chunk list: {e}"),
                        )));
                    }
                };
                if let Some(base) = self.delta_base(p, &name).await? {
                    let delta = (base, chunks);
                    return self
                        .put_resumable(p, name, (size, hash), meta, slot, Some(delta))
                        .await;
                }
            }
            return self
                .put_resumable(p, name, (size, hash), meta, slot, None)
                .await;
        } else if req.chunks.is_some() {
            return Ok(Err(Refusal::new(
                ErrorCode::BadRequest,
                "a delta put needs its size and hash",
            )));
        }
        // A plain put stages through a part too, under a random key nothing else can reach.
        let mut random = [0u8; 32];
        crate::tls::random_bytes(&mut random)?;
        let key = UploadKey::derive(&random);
        let handle = self.backend.begin_upload(&key, crate::clock::now()).await?;
        let held = Held {
            upload: Some(handle),
            released: self.uploads_released.clone(),
        };
        let (tx, spares, done) = spawn_part_writer(held, false);
        Ok(Ok(Upload {
            name,
            by: p.name.clone(),
            size: req.size,
            offset: 0,
            received: 0,
            meta,
            delta: None,
            tx,
            spares,
            writer: Writer {
                key,
                announced: None,
                done,
            },
            counted: Counted::new(self, slot),
        }))
    }

    /// The base of a delta put of `name` by `p`, with its chunks: the source's current
    /// version, if `p` may get it (docs/SECURITY.md: whether the server holds a chunk is
    /// said only of content the principal may read).
    async fn delta_base(&self, p: &Principal, name: &SourceName) -> Result<Option<Base>, Error> {
        if self.authorize(p, Op::Get, name.as_str()).is_err() {
            return Ok(None);
        }
        let Some(current) = self.backend.stat(name.as_str()).await? else {
            return Ok(None);
        };
        Ok(self
            .backend
            .chunks(&current.hash)
            .await?
            .map(|c| (current.hash, c)))
    }

    async fn put_resumable(
        &self,
        p: &Principal,
        name: SourceName,
        (size, hash): (u64, Digest),
        meta: Meta,
        slot: TransferSlot,
        delta: Option<(Base, Vec<ChunkRef>)>,
    ) -> Outcome<Upload<B>> {
        let kind = principal_kind(self, p).await?;
        let (key, body_size, delta) = match delta {
            None => (
                upload_key(&kind, &p.name, name.as_str(), size, &hash),
                size,
                None,
            ),
            Some(((base, base_chunks), chunks)) => {
                let held: std::collections::HashSet<_> =
                    base_chunks.iter().map(|c| c.hash).collect();
                let need = chunking::needed(&chunks, |h| held.contains(h));
                let body = chunking::needed_bytes(&chunks, &need);
                let key = delta_upload_key(&kind, &p.name, name.as_str(), size, &hash, &base);
                let delta = Delta {
                    base,
                    chunks,
                    need,
                    size,
                    hash,
                };
                (key, body, Some(delta))
            }
        };
        let size = body_size;
        let mut handle = or_refuse!(self.begin_part(&key).await?);
        if handle.offset() > size {
            // Cannot happen with an intact part (the key fixes the size): start it over.
            tracing::warn!(
                upload = key.as_str(),
                "upload part longer than its content; discarded"
            );
            drop(handle);
            self.backend.abort_upload(&key).await?;
            handle = or_refuse!(self.begin_part(&key).await?);
        }
        let offset = ferry_backend::Upload::offset(&handle);
        if offset > 0 {
            tracing::info!(
                "{} continues an upload of {name} at {offset} of {size} bytes",
                p.name
            );
        }
        let held = Held {
            upload: Some(handle),
            released: self.uploads_released.clone(),
        };
        let (tx, spares, done) = spawn_part_writer(held, true);
        Ok(Ok(Upload {
            name,
            by: p.name.clone(),
            size: Some(size),
            offset,
            received: 0,
            meta,
            delta,
            tx,
            spares,
            writer: Writer {
                key,
                announced: Some(hash),
                done,
            },
            counted: Counted::new(self, slot),
        }))
    }

    /// Opens the part `key`. If another connection holds it (typically one that was cut and
    /// whose end the server has not seen yet), waits up to `upload_wait` for it to be
    /// released, then refuses with `busy`.
    async fn begin_part(&self, key: &UploadKey) -> Outcome<B::Upload> {
        let deadline = tokio::time::Instant::now() + self.limits.upload_wait;
        loop {
            // Registered before trying, so a release between the try and the wait is seen.
            let released = self.uploads_released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            match self.backend.begin_upload(key, crate::clock::now()).await {
                Ok(h) => return Ok(Ok(h)),
                Err(BackendError::UploadBusy) => {
                    if tokio::time::timeout_at(deadline, released).await.is_err() {
                        return Ok(Err(Refusal::new(
                            ErrorCode::Busy,
                            "another connection is uploading this content to this source; \
                             try again when it has ended",
                        )));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Removes resumable uploads idle for longer than `upload_keep` before `now` (unix
    /// seconds) and not open; returns how many. Logged when it removed any.
    pub(crate) async fn sweep_uploads(&self, now: u64) -> Result<u64, Error> {
        let keep = self.limits.upload_keep.as_secs();
        let removed = self.backend.sweep_uploads(now.saturating_sub(keep)).await?;
        if removed > 0 {
            tracing::info!("removed {removed} abandoned upload(s) idle for more than {keep} s");
        } else {
            tracing::debug!("upload sweep: nothing idle for more than {keep} s");
        }
        Ok(removed)
    }
}

/// Feeds a part handle from a bounded channel on a blocking thread of its own (driving the
/// backend's futures with `Handle::block_on`, so a backend that writes in place, like the
/// local one, costs no thread hand-off per frame), so that the connection receives the
/// next frame while this one is written. On [`WriteCmd::Finish`] it hands the handle back.
/// If the channel closes first (the transfer was cut), a resumable upload's writer makes
/// what arrived durable and drops the handle, which keeps the part for a later put to
/// continue; a plain one's only drops it (its caller discards the part).
#[allow(clippy::type_complexity)]
fn spawn_part_writer<U: ferry_backend::Upload + 'static>(
    mut held: Held<U>,
    resumable: bool,
) -> (
    mpsc::Sender<WriteCmd>,
    Spares<Vec<u8>>,
    JoinHandle<Result<Option<Held<U>>, Error>>,
) {
    let (tx, mut rx) = mpsc::channel(pipe::DEPTH);
    let spares = Spares::default();
    let written = spares.clone();
    let rt = tokio::runtime::Handle::current();
    let handle = tokio::task::spawn_blocking(move || {
        rt.block_on(async move {
            let Some(mut upload) = held.take() else {
                return Err(Error::Internal("upload handle missing".into()));
            };
            let mut failed = None;
            while let Some(cmd) = rx.recv().await {
                match cmd {
                    WriteCmd::Data(buf) => match upload.write_owned(buf).await {
                        Ok((_, buf)) => written.give(buf),
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    },
                    WriteCmd::Finish => {
                        held.upload = Some(upload);
                        return Ok(Some(held));
                    }
                }
            }
            if let Some(e) = failed {
                // The handle is unusable now; dropping it keeps what reached the part.
                drop(upload);
                drop(held);
                return Err(e.into());
            }
            if resumable {
                if let Err(e) = upload.sync().await {
                    tracing::warn!(
                        upload = upload.key().as_str(),
                        "could not sync an interrupted upload: {e}"
                    );
                }
                tracing::debug!(
                    upload = upload.key().as_str(),
                    held = ferry_backend::Upload::offset(&upload),
                    "upload interrupted; its part is kept"
                );
            } else {
                // `Upload::abandon` discards a plain put's part once this returns.
                tracing::debug!(
                    upload = upload.key().as_str(),
                    "plain upload interrupted; its part is discarded"
                );
            }
            // The handle before `held`: the key is free when waiters wake.
            drop(upload);
            drop(held);
            Ok(None)
        })
    });
    (tx, spares, handle)
}

impl<B: ServerBackend> Upload<B> {
    /// Where the body starts (the `put_ready` offset).
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// For a delta put, the bitmap of the chunks the body carries (the `put_ready` need).
    pub(crate) fn need(&self) -> Option<&[u8]> {
        self.delta.as_ref().map(|d| d.need.as_slice())
    }

    /// Buffers the writer has written, for the front to receive the next ones into.
    pub(crate) fn spares(&self) -> &Spares<Vec<u8>> {
        &self.spares
    }

    /// Hands the next bytes of the body to the writer. `Ok(false)`: the writer has stopped
    /// (its error is reported by [`Upload::finish`]); stop feeding it.
    pub(crate) async fn write(&mut self, buf: Vec<u8>) -> Result<bool, TooMuch> {
        self.received += buf.len() as u64;
        self.counted.metrics.received(buf.len() as u64);
        let whole = self.offset.saturating_add(self.received);
        if self.size.is_some_and(|s| whole > s) {
            return Err(TooMuch(Refusal::new(
                ErrorCode::BadRequest,
                "more data than announced",
            )));
        }
        if self.counted.max != 0 && whole > self.counted.max {
            return Err(TooMuch(too_large(self.counted.max)));
        }
        Ok(self.tx.send(WriteCmd::Data(buf)).await.is_ok())
    }

    /// Gives the upload up (the connection was cut) and waits for its writer to stop: a
    /// plain upload's temporary file is deleted, a resumable one's part keeps every byte that
    /// arrived, made durable, and its key is free for the next put when this returns.
    pub(crate) async fn abandon(self, engine: &Engine<B>) {
        let Upload {
            name,
            by,
            tx,
            writer,
            ..
        } = self;
        drop(tx);
        engine.record::<()>("put", &by, name.as_str(), Answer::Cut, |_| None);
        if let Err(e) = pipe::join(writer.done).await {
            tracing::warn!("abandoned upload of {name}: {e}");
        }
        if writer.announced.is_none() {
            discard(engine, &writer.key).await;
        }
    }

    /// Ends the upload: with the client's `put_end`, stages the body and commits it if its
    /// size and hash match; without (the writer stopped), reports why.
    pub(crate) async fn finish(
        self,
        engine: &Engine<B>,
        end: Option<PutEnd>,
    ) -> Result<Result<Entry, Refusal>, Failed> {
        let by = self.by.clone();
        let source = self.name.as_str().to_owned();
        let metrics = self.counted.metrics.clone();
        let started = self.counted.started;
        let out = self.commit(engine, end).await;
        let answer = match &out {
            Ok(Ok(entry)) => {
                metrics.transfer("put", started.elapsed());
                Answer::Done(entry)
            }
            Ok(Err(r))
            | Err(Failed {
                answer: Some(r), ..
            }) => Answer::Refused(r),
            Err(Failed { error, .. }) => Answer::Failed(error),
        };
        engine.record("put", &by, &source, answer, |e| {
            Some(format!("stored v{} ({} bytes)", e.version, e.size))
        });
        out
    }

    /// [`Upload::finish`] but for counting it.
    async fn commit(
        self,
        engine: &Engine<B>,
        end: Option<PutEnd>,
    ) -> Result<Result<Entry, Refusal>, Failed> {
        let Upload {
            name,
            by,
            size,
            offset,
            received,
            meta,
            delta,
            tx,
            writer,
            ..
        } = self;
        // Only a completed upload is finished; otherwise the writer drops its file (plain)
        // or keeps its part (resumable).
        if end.is_some() {
            let _ = tx.send(WriteCmd::Finish).await;
        }
        drop(tx);
        let Writer {
            key,
            announced,
            done,
        } = writer;
        let (end, mut held) = match (end, pipe::join(done).await) {
            (Some(end), Ok(Some(held))) => (end, held),
            (_, result) => {
                if announced.is_none() {
                    discard(engine, &key).await;
                }
                return Err(writer_failed(&name, result.map(|_| ())));
            }
        };
        let Some(upload) = held.take() else {
            return Err(writer_failed(&name, Ok(())));
        };
        let whole = offset.saturating_add(received);
        let as_announced = match &delta {
            // The body is the needed chunks; the end names the whole content.
            Some(d) => size == Some(whole) && d.size == end.size && d.hash == end.hash,
            None => {
                size.is_none_or(|s| s == end.size)
                    && announced.is_none_or(|h| h == end.hash)
                    && whole == end.size
            }
        };
        if !as_announced {
            // Not the content announced (or the part was keyed by): it cannot be finished.
            // Discard it (the key is free once the handle is dropped).
            drop(upload);
            drop(held);
            discard(engine, &key).await;
            return Ok(Err(mismatch()));
        }
        // The quota again, now that the size is known (a put without `size`) and other puts
        // may have committed meanwhile. A resumable upload keeps its part for a later try.
        let over = engine
            .over_quota(&by, end.size, 1)
            .await
            .map_err(|error| Failed {
                answer: None,
                error,
            })?;
        if let Some(r) = over {
            drop(upload);
            drop(held);
            if announced.is_none() {
                discard(engine, &key).await;
            }
            return Ok(Err(r));
        }
        let staged = match delta {
            None => upload.finish(&end.hash).await,
            Some(d) => upload.finish_delta(&end.hash, &d.base, d.chunks).await,
        };
        drop(held);
        let staged = match staged {
            Ok(mut s) => {
                s.set_meta(meta);
                s
            }
            // The backend discarded the part: the next put starts over.
            Err(BackendError::HashMismatch { .. }) => {
                tracing::warn!("upload of {name} by {by} failed its hash check; discarded");
                return Ok(Err(mismatch()));
            }
            // The base version went (pruned or replaced) while the delta arrived.
            Err(BackendError::BlobNotFound) => return Ok(Err(base_gone())),
            Err(e) => return Err(writer_failed(&name, Err(e.into()))),
        };
        let now = crate::clock::now();
        let committed = match engine.backend.commit(name.as_str(), staged, &by, now).await {
            Err(BackendError::BlobNotFound) => return Ok(Err(base_gone())),
            other => other.map_err(Error::from),
        };
        let entry = committed.map_err(|error| Failed {
            // The index could not grow: the client hears why, the connection closes.
            answer: is_storage_full(&error).then(|| storage_refusal(true)),
            error,
        })?;
        Ok(Ok(entry))
    }
}

/// Removes the part `key` (a plain put's, or one that cannot finish); logged if it fails,
/// and the sweep removes it later.
async fn discard<B: ServerBackend>(engine: &Engine<B>, key: &UploadKey) {
    if let Err(e) = engine.backend.abort_upload(key).await {
        tracing::warn!(upload = key.as_str(), "could not discard an upload: {e}");
    }
}

/// A delta put whose base went before it could be committed: the client puts again.
fn base_gone() -> Refusal {
    Refusal::new(
        ErrorCode::Busy,
        "the version this delta was based on changed meanwhile; put again",
    )
}

pub(super) fn mismatch() -> Refusal {
    Refusal::new(
        ErrorCode::HashMismatch,
        "the data received does not match the announced size and hash",
    )
}

/// The writer stopped without finishing: `result` says why (`Ok` if it just stopped).
fn writer_failed(name: &SourceName, result: Result<(), Error>) -> Failed {
    let full = result.as_ref().err().is_some_and(is_storage_full);
    let why = match result {
        Err(e) => e.to_string(),
        Ok(()) => "the writer stopped early".to_owned(),
    };
    tracing::error!("upload of {name} failed: {why}");
    Failed {
        answer: Some(storage_refusal(full)),
        error: Error::Internal(why),
    }
}

/// The answer to an upload the server could not store: `no_space` when its storage is full.
pub(super) fn storage_refusal(full: bool) -> Refusal {
    if full {
        Refusal::new(
            ErrorCode::NoSpace,
            "no space left on the server; nothing was stored",
        )
    } else {
        Refusal::new(ErrorCode::Internal, "the server could not store the data")
    }
}

/// Whether an error comes from storage that is full (`ENOSPC`, or `EDQUOT`: a quota).
pub(super) fn is_storage_full(e: &Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    // Bounded by the length of the chain.
    while let Some(c) = cause {
        // std maps ENOSPC to StorageFull and EDQUOT to QuotaExceeded.
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            )
        {
            return true;
        }
        cause = c.source();
    }
    false
}
