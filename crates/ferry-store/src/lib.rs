//! `ferry-store`: the embedded default store of ferry.
//!
//! A [`Store`] keeps *sources* (path-like names such as `reports/2026/q3.csv`), each holding
//! a short history of versioned blobs. The index lives in an embedded [redb] database; blob
//! contents live in a content-addressed folder, named by their BLAKE3 hash.
//!
//! The store is synchronous: an async server calls it through
//! `tokio::task::spawn_blocking`. It is `Send + Sync` and meant to be shared in an `Arc`.
//! [`LocalBackend`] puts it behind the `ferry-backend` traits (doing the `spawn_blocking`
//! itself), the embedded default backend; it passes the backend conformance suite
//! (`tests/conformance.rs`).
//!
//! Reads by hash ([`Store::read_blob`], a ranged read, and [`Store::blob_size`]) see only
//! blobs that a kept version references.
//!
//! # Layout on disk
//!
//! Under the directory given to [`Store::open`]:
//!
//! - `index.redb`: the redb database (the index).
//! - `blobs/ab/cdef…`: blob files named by the lowercase hex BLAKE3 of their bytes, the
//!   first two hex characters being a subfolder. Files are read-only (mode `0o400`).
//!   Identical content is stored once. A file is a content put whole, or a **pack**: the
//!   chunks a delta upload brought ([`Store::finish_delta`], docs/PROTOCOL.md §5.4). A
//!   content put as a delta has no file of its own: its manifest names the chunks of other
//!   files it is made of, so versions that differ by small edits share their chunks on disk.
//!   A content put whole that shares much with what is stored, under any source, is later
//!   rewritten the same way by a background pass ([`Store::dedup_pass`]; `store/dedup.rs`),
//!   and its own file deleted.
//! - `tmp/`: uploads in progress through [`Store::begin_put`], and finished uploads waiting
//!   for [`Store::commit`] ([`StagedBlob`]); emptied by [`Store::open`].
//! - `uploads/<key>.part`: resumable uploads ([`Store::begin_upload`]), one file per
//!   [`UploadKey`](ferry_backend::UploadKey) (1-128 characters of `[A-Za-z0-9_-]`), mode
//!   `0o600`, holding the bytes received so far: its length is the offset the upload
//!   continues from, its modification time the upload's last activity (the `now` given when
//!   it was last begun). Kept by [`Store::open`]; [`Store::sweep_uploads`] deletes those idle
//!   since before a cut-off. A finished one is hash-checked, then renamed into `tmp/`.
//!
//! Folders are created with mode `0o700`. Source names never appear in a file path: paths
//! are derived from hashes only.
//!
//! # Durability
//!
//! An upload is written to `tmp/`, hashed while it streams, and fsynced by
//! [`BlobWriter::finish`]. [`Store::commit`] moves it into `blobs/` (fsyncing the folder)
//! and only then records it in the index in one redb write transaction. Blob files no
//! version or live content needs any more are deleted only after that transaction committed
//! (a delta's manifest and the references it takes on files are in the same transaction,
//! after checking those files are still there). A crash
//! at any point leaves at worst an unreferenced blob or temp file, which the next
//! [`Store::open`] removes. A resumable upload's bytes are durable once
//! [`ResumableUpload::sync`] returned; finishing it hashes the whole content and refuses a
//! mismatch, so bytes damaged by a crash can fail an upload but never become visible.
//!
//! # Changes and replicas
//!
//! Every commit and delete is numbered store-wide and logged ([`Store::changes_since`],
//! [`Store::last_seq`]); [`Store::subscribe`] follows the last number as it moves, which
//! is how a server wakes the connections that watch for changes. The LAN mesh stores
//! versions that other peers numbered with [`Store::commit_replica`] and
//! [`Store::delete_replica`], which apply only if they win under [`replica_wins`].
//!
//! # Index tables and record encoding
//!
//! - `current`: `&[u8]` (source name, UTF-8 checked by the store) → record (live entry or
//!   tombstone). Keys are bytes rather than `&str` so that a damaged key is an error, not a
//!   panic inside redb.
//! - `versions`: `(&[u8], u64)` (source, version) → record (live versions only).
//! - `blob_refs`: `&[u8; 32]` (hash) → `u64` number of version records referencing it
//!   (absent means zero).
//! - `changes`: `u64` (store-wide sequence number, from 1, never reused) → `source_len u16` ‖
//!   `source` ‖ record (as below) of the version the change made current: the change log
//!   that [`Store::changes_since`] reads. Appended in the transaction of every commit and
//!   delete (replicas' too), pruned there to the newest [`StoreOptions::keep_changes`].
//! - `manifests`, `pack_refs`: the chunks of contents and the files they keep (see
//!   `store/packs.rs`): a file is kept while a version references it as a content or a live
//!   content has a chunk in it.
//! - `chunks`, `file_chunks`: the chunk index (chunk → file, offset, length; file → the
//!   chunks pointing into it), `store/chunk_index.rs`; `dedup_pending`: whole contents
//!   waiting for the dedup pass.
//! - `meta`: `&str` → `u64`; `"format"` = 6, `"last_seq"` = the last sequence number given
//!   out. A format-1 index (before the change log) is upgraded when opened.
//!
//! All integers are big-endian. A record is `kind u8` (0 = live, 1 = tombstone) ‖ `version u64` ‖ `size u64` ‖
//! `hash [u8; 32]` ‖ `modified u64` (unix seconds) ‖ `by_len u16` ‖ `by` (UTF-8, `by_len`
//! bytes), with nothing after. A tombstone has size 0 and an all-zero hash.
//!
//! # Example
//!
//! ```
//! use std::io::Read;
//! use ferry_store::{Store, StoreOptions};
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::open(dir.path(), StoreOptions::default())?;
//!
//! let mut upload = store.begin_put()?;
//! upload.write_chunk(b"hello, ")?;
//! upload.write_chunk(b"world")?;
//! let staged = upload.finish()?; // fsynced, not yet visible
//! assert!(store.stat("greeting")?.is_none());
//!
//! let entry = store.commit("greeting", staged, "alice", 1_700_000_000)?;
//! assert_eq!((entry.version, entry.size), (1, 12));
//! assert_eq!(entry.hash, *blake3::hash(b"hello, world").as_bytes());
//!
//! let (_, mut file) = store.open_blob("greeting", None)?.expect("just stored");
//! let mut content = String::new();
//! file.read_to_string(&mut content)?;
//! assert_eq!(content, "hello, world");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod backend;
mod dedup_worker;
mod error;
mod fsutil;
mod group;
mod record;
mod store;
mod writer;

pub use backend::{LocalBackend, LocalReader, LocalUpload};
pub use error::StoreError;
pub use ferry_backend::{Change, Changes, Entry, Hash, Head, Meta, Usage, replica_wins};
pub use store::{
    Content, DEDUP_MAX, DEDUP_MIN, DedupReport, ResumableUpload, SmallPut, Store, StoreOptions,
};
pub use writer::{BlobWriter, StagedBlob};
