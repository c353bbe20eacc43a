//! Folder transfers, `ferry put -r DIR PREFIX/` and `ferry get -r PREFIX/ DIR`, and the
//! destinations ending in `/` that keep a file's name (`ferry put q3.csv reports/`,
//! `ferry get reports/q3.csv ./`).
//!
//! A folder moves over one connection with requests sent ahead (PROTOCOL.md §5.2): small
//! files as streamed puts and gets, up to [`ferry::WINDOW`] in flight; larger files to upload
//! go one at a time as resumable puts. One failed file does not stop the others: each failure
//! is one line on stderr, the end is a summary line, and the exit code is
//! [`exit::SOME_FAILED`] if anything failed. `get -r` skips files that are already there with
//! the same size and BLAKE3, so a run that was interrupted finishes without moving again what
//! it completed.

use std::collections::{HashSet, VecDeque};
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use ferry::proto::message::Entry;
use ferry::proto::names::SourceName;
use ferry::{Client, Content, Pipeline, STREAMED_MAX, WINDOW};
use tempfile::NamedTempFile;

use crate::cli::{GetArgs, PutArgs};
use crate::exit::{self, Failure};
use crate::hash_cache::{HashCache, rel};
use crate::output::{self, note, printable};
use crate::paths::{Claimed, folder_prefix, local_for, source_for};
use crate::progress::Bar;
use crate::transfer::connect;

/// Temporary files of downloads in progress start with this (and are removed by the next
/// `get -r` that writes into their folder).
pub(crate) const TEMP_PREFIX: &str = ".ferry-get-";

/// How many batches of finished downloads may wait for their writes and renames at once.
const FINISHING: usize = 4;

/// What a folder transfer did, for its summary.
#[derive(Default)]
pub(crate) struct Tally {
    pub files: u64,
    pub bytes: u64,
    pub unchanged: u64,
    pub deleted: u64,
    pub failed: Vec<String>,
    /// Files moved as deltas (only their changed chunks, docs/PROTOCOL.md §5.4) ...
    pub delta_files: u64,
    /// ... and the bytes of content that actually travelled for them.
    pub delta_sent: u64,
}

impl Tally {
    /// One file failed: say why now, name it in the summary.
    pub fn fail(&mut self, what: &str, why: impl std::fmt::Display) {
        let what = printable(what).into_owned();
        eprintln!(
            "ferry: {what}: {}",
            exit::one_line(&printable(&why.to_string()))
        );
        self.failed.push(what);
    }

    /// After a lost connection: every file not settled failed, for `why`.
    pub fn fail_unsettled<'a>(
        &mut self,
        names: impl Iterator<Item = &'a str>,
        settled: &[bool],
        why: &ferry::Error,
    ) {
        let lost: Vec<&str> = names
            .zip(settled)
            .filter(|(_, done)| !**done)
            .map(|(n, _)| n)
            .collect();
        if let Some(first) = lost.first() {
            eprintln!(
                "ferry: {} and {} more not moved: {}",
                printable(first),
                lost.len() - 1,
                exit::one_line(&why.to_string())
            );
        }
        self.failed
            .extend(lost.into_iter().map(|n| printable(n).into_owned()));
    }

    fn moved(&mut self, bytes: u64) {
        self.files += 1;
        self.bytes += bytes;
    }

    /// A file of `bytes` moved as a delta, of which `sent` travelled.
    fn moved_delta(&mut self, bytes: u64, sent: u64) {
        self.moved(bytes);
        self.delta_files += 1;
        self.delta_sent += sent;
    }

    /// The connection was lost: says what had moved by then (the same command run again
    /// moves the rest) and returns the error.
    pub fn lost(self, e: ferry::Error) -> anyhow::Error {
        note!(
            "{} files ({} bytes) had moved when the connection was lost",
            self.files,
            self.bytes
        );
        anyhow::Error::new(e).context("the connection was lost")
    }

    /// The end of a dry run (whose summary is printed already): an error (exit code
    /// [`exit::SOME_FAILED`]) if anything failed.
    pub fn finish_dry_run(self) -> anyhow::Result<()> {
        if self.failed.is_empty() {
            return Ok(());
        }
        Err(Failure::new(
            exit::SOME_FAILED,
            format!("{} file(s) cannot be synced (above)", self.failed.len()),
        )
        .into())
    }

    /// Prints the summary (a line, or with `--json` one object: `op` is `put`, `get`,
    /// `sync put` or `sync get`); an error (exit code [`exit::SOME_FAILED`]) if anything
    /// failed.
    pub fn finish(self, verb: &str) -> anyhow::Result<()> {
        let mut unchanged = if self.unchanged > 0 {
            format!(", {} unchanged", self.unchanged)
        } else {
            String::new()
        };
        if self.deleted > 0 {
            unchanged.push_str(&format!(", {} deleted", self.deleted));
        }
        if self.delta_files > 0 {
            unchanged.push_str(&format!(
                ", {} by changed chunks only ({} bytes sent)",
                self.delta_files, self.delta_sent
            ));
        }
        output::result(
            || {
                format!(
                    "{verb} {} files, {} bytes{unchanged}, {} failed",
                    self.files,
                    self.bytes,
                    self.failed.len()
                )
            },
            || {
                serde_json::json!({
                    "op": verb.replace("sync: ", "sync ").replace("got", "get"),
                    "files": self.files,
                    "bytes": self.bytes,
                    "unchanged": self.unchanged,
                    "deleted": self.deleted,
                    "delta_files": self.delta_files,
                    "delta_sent": self.delta_sent,
                    "failed": self.failed,
                })
            },
        )?;
        if self.failed.is_empty() {
            return Ok(());
        }
        let mut names = self.failed.iter().take(5).cloned().collect::<Vec<_>>();
        if self.failed.len() > 5 {
            names.push(format!("and {} more", self.failed.len() - 5));
        }
        Err(Failure::new(
            exit::SOME_FAILED,
            format!(
                "{} file{} failed: {}",
                self.failed.len(),
                if self.failed.len() == 1 { "" } else { "s" },
                names.join(", ")
            ),
        )
        .into())
    }
}

/// Prints what a dry run of `sync` would do (`verb`: put or get): one line per file to move
/// (name, size) and per file to delete, then a total; with `--json`, one object per file and
/// one for the total.
pub(crate) fn dry_run(
    verb: &str,
    moves: &[(&str, u64)],
    gone: &[String],
    unchanged: u64,
) -> anyhow::Result<()> {
    let bytes: u64 = moves.iter().map(|(_, n)| n).sum();
    if output::json() {
        for (name, size) in moves {
            output::json_line(&serde_json::json!({"would": verb, "source": name, "size": size}))?;
        }
        for g in gone {
            output::json_line(&serde_json::json!({"would": "delete", "path": g}))?;
        }
        return output::json_line(&serde_json::json!({
            "op": "dry-run",
            "would": verb,
            "files": moves.len(),
            "bytes": bytes,
            "delete": gone.len(),
            "unchanged": unchanged,
        }));
    }
    for (name, size) in moves {
        println!("would {verb} {} ({size} bytes)", printable(name));
    }
    for g in gone {
        println!("would delete {}", printable(g));
    }
    println!(
        "dry run: would {verb} {} files, {bytes} bytes, delete {}; {unchanged} unchanged",
        moves.len(),
        gone.len(),
    );
    Ok(())
}

/// Whether an error means the connection is gone (rather than one request refused).
pub(crate) fn connection_lost(e: &ferry::Error) -> bool {
    !matches!(
        e,
        ferry::Error::Forbidden(_)
            | ferry::Error::NotFound(_)
            | ferry::Error::HashMismatch
            | ferry::Error::NoSpace(_)
            | ferry::Error::Remote { .. }
            | ferry::Error::Io(_)
            | ferry::Error::Name(_)
    )
}

/// `ferry put FILE PREFIX/`: the arguments of `ferry put PREFIX/NAME FILE`, where NAME is
/// FILE's own name; `None` if the destination does not end in `/`.
pub fn put_destination(a: &PutArgs) -> anyhow::Result<Option<PutArgs>> {
    let Some(dest) = a.file.as_deref().and_then(Path::to_str) else {
        return Ok(None);
    };
    if !dest.ends_with('/') {
        return Ok(None);
    }
    let local = PathBuf::from(&a.source);
    let Some(base) = local.file_name().and_then(|n| n.to_str()) else {
        return Err(exit::bad_input(format!(
            "{} has no file name to keep (or it is not UTF-8)",
            local.display()
        ))
        .into());
    };
    let prefix = if dest == "/" {
        String::new()
    } else {
        folder_prefix(dest)?
    };
    let name = SourceName::parse(&format!("{prefix}{base}"))?;
    Ok(Some(PutArgs {
        source: name.to_string(),
        file: Some(local),
        ..a.clone()
    }))
}

/// The file `ferry get` writes: `-o FILE`, or the DEST argument, where a DEST ending in `/`
/// or naming a folder gets the source's last segment as file name.
pub fn get_output(a: &GetArgs) -> Option<PathBuf> {
    let Some(dest) = &a.dest else {
        return a.output.clone();
    };
    let slash = dest.as_os_str().to_str().is_some_and(|d| d.ends_with('/'));
    if (slash || dest.is_dir()) && dest.as_os_str() != "-" {
        let base = a.source.rsplit('/').next().unwrap_or(&a.source);
        return Some(dest.join(ferry::proto::names::nfc(base)));
    }
    Some(dest.clone())
}

/// A regular file to upload.
pub(crate) struct LocalFile {
    pub path: PathBuf,
    pub name: SourceName,
    pub size: u64,
}

/// The regular files under `dir`, with their source names under `prefix`, sorted by name.
/// Symbolic links, special files and empty folders are skipped with a note; folders and files
/// that cannot be read or named are failures.
pub(crate) fn walk(dir: &Path, prefix: &str, tally: &mut Tally) -> Vec<LocalFile> {
    let mut files = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut stack = vec![(dir.to_path_buf(), PathBuf::new())];
    // Bounded: symbolic links are not followed, so every folder is visited once.
    while let Some((abs, rel)) = stack.pop() {
        let entries = match fs::read_dir(&abs) {
            Ok(e) => e,
            Err(e) => {
                tally.fail(
                    &abs.display().to_string(),
                    format!("cannot read folder: {e}"),
                );
                continue;
            }
        };
        let mut empty = true;
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    tally.fail(
                        &abs.display().to_string(),
                        format!("cannot read folder: {e}"),
                    );
                    break;
                }
            };
            empty = false;
            let path = entry.path();
            let rel = rel.join(entry.file_name());
            let shown = path.display().to_string();
            let kind = match entry.file_type() {
                Ok(k) => k,
                Err(e) => {
                    tally.fail(&shown, e);
                    continue;
                }
            };
            if kind.is_symlink() {
                note!(
                    "skipping {}: a symbolic link (ferry stores the files themselves)",
                    printable(&shown)
                );
            } else if kind.is_dir() {
                // A source name has at most 16 segments: deeper folders cannot be stored.
                if rel.components().count() >= 16 {
                    tally.fail(&shown, "too deep (a source name has at most 16 segments)");
                } else {
                    stack.push((path, rel));
                }
            } else if kind.is_file() {
                let name = match source_for(prefix, &rel) {
                    Ok(n) => n,
                    Err(why) => {
                        tally.fail(&shown, why);
                        continue;
                    }
                };
                if !seen.insert(name.to_string()) {
                    tally.fail(
                        &shown,
                        format!(
                            "another file has the same name {} once normalised to NFC",
                            name.as_str()
                        ),
                    );
                    continue;
                }
                match entry.metadata() {
                    Ok(m) => files.push(LocalFile {
                        path,
                        name,
                        size: m.len(),
                    }),
                    Err(e) => tally.fail(&shown, e),
                }
            } else {
                note!(
                    "skipping {}: not a regular file (a device, FIFO or socket)",
                    printable(&shown)
                );
            }
        }
        if empty && !rel.as_os_str().is_empty() {
            note!(
                "skipping {}: an empty folder (a server stores files, not folders)",
                printable(&abs.display().to_string())
            );
        }
    }
    files.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
    files
}

/// `ferry put -r DIR [PREFIX/]`: the files under DIR become `PREFIX/<path under DIR>`.
pub async fn put_tree(a: &PutArgs) -> anyhow::Result<()> {
    let dir = PathBuf::from(&a.source);
    let typed = match a.file.as_deref() {
        None => "",
        Some(p) => p
            .to_str()
            .ok_or_else(|| exit::bad_input("the prefix is not UTF-8"))?,
    };
    let prefix = if typed == "/" {
        String::new()
    } else {
        folder_prefix(typed)?
    };
    if !fs::metadata(&dir).is_ok_and(|m| m.is_dir()) {
        return Err(exit::bad_input(format!("{} is not a folder", dir.display())).into());
    }
    let mut tally = Tally::default();
    let files = walk(&dir, &prefix, &mut tally);
    let total: u64 = files.iter().map(|f| f.size).sum();
    let mut client = connect(&a.cred).await?;
    let bar = Bar::new("put -r");
    bar.start(Some(total));
    let mut settled = vec![false; files.len()];
    // `put -r` does not list the destination first: every file goes whole.
    let lost = upload(
        &mut client,
        &files,
        &mut settled,
        &mut tally,
        &bar,
        &HashSet::new(),
    )
    .await;
    drop(bar);
    if let Err(e) = lost {
        tally.fail_unsettled(files.iter().map(|f| f.name.as_str()), &settled, &e);
        let _ = tally.finish("put");
        return Err(anyhow::Error::new(e).context("the connection was lost"));
    }
    let _ = client.close().await;
    tally.finish("put")
}

/// Uploads `files` in order, marking each one `settled` once it is stored or has failed.
/// `Err` when the connection is lost.
pub(crate) async fn upload(
    client: &mut Client,
    files: &[LocalFile],
    settled: &mut [bool],
    tally: &mut Tally,
    bar: &Bar,
    on_server: &HashSet<String>,
) -> Result<(), ferry::Error> {
    let mut i = 0;
    // Bounded: every turn takes at least one file.
    while i < files.len() {
        {
            let mut p = client.pipeline().await?;
            let mut ahead: VecDeque<usize> = VecDeque::new();
            while let Some(f) = files.get(i).filter(|f| f.size <= STREAMED_MAX) {
                let k = i;
                i += 1;
                let (content, meta) = match read_small(&f.path) {
                    Ok(c) if c.0.len() as u64 <= STREAMED_MAX => c,
                    Ok(_) => {
                        tally.fail(&f.path.display().to_string(), "it grew while being read");
                        settled[k] = true;
                        continue;
                    }
                    Err(e) => {
                        tally.fail(&f.path.display().to_string(), format!("cannot read: {e}"));
                        settled[k] = true;
                        continue;
                    }
                };
                if ahead.len() >= WINDOW {
                    settle_put(&mut p, &mut ahead, files, settled, tally, bar).await?;
                }
                match p.send_put_with(f.name.as_str(), &content, meta).await {
                    Ok(()) => ahead.push_back(k),
                    Err(e) if p.is_usable() => {
                        tally.fail(f.name.as_str(), e);
                        settled[k] = true;
                    }
                    Err(e) => return Err(e),
                }
            }
            while !ahead.is_empty() {
                settle_put(&mut p, &mut ahead, files, settled, tally, bar).await?;
            }
        }
        if let Some(f) = files.get(i) {
            let delta = on_server.contains(f.name.as_str());
            settled[i] = put_large(client, f, tally, bar, delta).await?;
            i += 1;
        }
    }
    Ok(())
}

/// A small file's content and metadata, from one open. Read in place, not on the blocking
/// pool: a read of at most [`STREAMED_MAX`] bytes of a local file takes microseconds, less
/// than a hand-off to another thread and back, which a folder of many small files pays per
/// file. Reads at most one byte past `STREAMED_MAX`, so a file that grew is seen, not held.
fn read_small(path: &Path) -> std::io::Result<(Vec<u8>, ferry::backend::Meta)> {
    use std::io::Read;
    let file = fs::File::open(path)?;
    let m = file.metadata()?;
    let mut content = Vec::with_capacity(m.len().min(STREAMED_MAX) as usize);
    file.take(STREAMED_MAX + 1).read_to_end(&mut content)?;
    Ok((content, ferry::client::file_meta(&m)))
}

/// Reads the answer to the oldest streamed put. `Err` only when the connection is lost.
async fn settle_put(
    p: &mut Pipeline<'_>,
    ahead: &mut VecDeque<usize>,
    files: &[LocalFile],
    settled: &mut [bool],
    tally: &mut Tally,
    bar: &Bar,
) -> Result<(), ferry::Error> {
    let Some(k) = ahead.pop_front() else {
        return Ok(());
    };
    match p.recv_put().await {
        Ok(e) => {
            tally.moved(e.size);
            bar.set(tally.bytes);
            bar.label(&format!("put -r: {} files", tally.files));
        }
        Err(e) if p.is_usable() => tally.fail(files[k].name.as_str(), e),
        Err(e) => return Err(e),
    }
    settled[k] = true;
    Ok(())
}

/// Uploads one larger file as a resumable put; `Ok(true)` once it is stored or has failed.
/// `Err` only when the connection is lost. With `delta` (the server has a version of it),
/// the file is cut into chunks too and only those the server lacks are sent.
async fn put_large(
    client: &mut Client,
    f: &LocalFile,
    tally: &mut Tally,
    bar: &Bar,
    delta: bool,
) -> Result<bool, ferry::Error> {
    let file = match fs::File::open(&f.path) {
        Ok(file) => file,
        Err(e) => {
            tally.fail(&f.path.display().to_string(), format!("cannot read: {e}"));
            return Ok(true);
        }
    };
    let base = tally.bytes;
    let read = if delta {
        ferry::client::hash_and_chunk_file(file)
            .await
            .map(|(file, size, hash, chunks)| (file, size, hash, Some(chunks)))
    } else {
        ferry::client::hash_file(file)
            .await
            .map(|(file, size, hash)| (file, size, hash, None))
    };
    let (file, size, hash, chunks) = match read {
        Ok(r) => r,
        Err(e) => {
            tally.fail(&f.path.display().to_string(), format!("cannot read: {e}"));
            return Ok(true);
        }
    };
    let r = client
        .put_resume_chunked(
            f.name.as_str(),
            file,
            (size, hash),
            chunks.as_deref(),
            &mut |_| {},
            &mut |n| bar.set(base + n),
        )
        .await;
    match r {
        Ok((e, stats)) if stats.delta => tally.moved_delta(e.size, stats.sent),
        Ok((e, _)) => tally.moved(e.size),
        Err(e) if !connection_lost(&e) => tally.fail(f.name.as_str(), e),
        Err(e) => return Err(e),
    }
    bar.set(tally.bytes);
    Ok(true)
}

/// A download to make: the listed entry and where it goes.
pub(crate) struct Wanted {
    pub entry: Entry,
    pub path: PathBuf,
}

/// `ferry get -r PREFIX/ DIR`: every source under PREFIX/ that the principal may list becomes
/// `DIR/<name after PREFIX/>`. If the server is busy or goes away, or the connection breaks,
/// it runs again (see --retries): what is complete is not moved again.
pub async fn get_tree(a: &GetArgs) -> anyhow::Result<()> {
    crate::retry::retrying(a.retries, || get_tree_once(a)).await
}

async fn get_tree_once(a: &GetArgs) -> anyhow::Result<()> {
    let prefix = folder_prefix(&a.source)?;
    let Some(dir) = a.dest.clone().or_else(|| a.output.clone()) else {
        return Err(exit::bad_input("get -r needs the folder to write into (DIR)").into());
    };
    if a.version.is_some() {
        return Err(exit::bad_input("--version names one source; it does not go with -r").into());
    }
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut client = connect(&a.cred).await?;
    let entries = client.list(&prefix).await?;
    let mut tally = Tally::default();
    let mut claimed = Claimed::default();
    let mut wanted = Vec::new();
    let mut cache = HashCache::open(&dir, true);
    for entry in entries {
        let path = match local_for(&dir, &prefix, &entry.source) {
            Ok(p) => p,
            Err(why) => {
                tally.fail(&entry.source, format!("not written: {why}"));
                continue;
            }
        };
        if let Err(why) = claimed.claim(&dir, &path) {
            tally.fail(&entry.source, format!("not written: {why}"));
            continue;
        }
        if cache
            .matches(&path, &rel(&dir, &path), entry.size, &entry.hash)
            .await
        {
            tally.unchanged += 1;
            continue;
        }
        wanted.push(Wanted { entry, path });
    }
    cache.save();
    let total: u64 = wanted.iter().map(|w| w.entry.size).sum();
    let bar = Bar::new("get -r");
    bar.start(Some(total));
    let mut settled = vec![false; wanted.len()];
    let lost = download(&mut client, &dir, &wanted, &mut settled, &mut tally, &bar).await;
    drop(bar);
    if let Err(e) = lost {
        return Err(tally.lost(e));
    }
    let _ = client.close().await;
    tally.finish("got")
}

/// Creates the folders between `dir` and `path` one by one, refusing to pass through a
/// symbolic link or a file (which could lead outside `dir`). The first time a folder is met
/// in a run, temporary files an interrupted run left in it are removed.
fn prepare_parent(dir: &Path, path: &Path, cleaned: &mut HashSet<PathBuf>) -> Result<(), String> {
    let parent = path.parent().ok_or("no parent folder")?;
    let mut between: Vec<&Path> = parent
        .ancestors()
        .take_while(|p| p.starts_with(dir) && *p != dir)
        .collect();
    between.reverse();
    for p in between {
        match fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(format!(
                    "{} is in the way: not a folder (a file or a symbolic link)",
                    p.display()
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match fs::create_dir(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if !fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()) {
                        return Err(format!("{} is in the way: not a folder", p.display()));
                    }
                }
                Err(e) => return Err(format!("cannot create {}: {e}", p.display())),
            },
            Err(e) => return Err(format!("cannot use {}: {e}", p.display())),
        }
    }
    if cleaned.insert(parent.to_path_buf())
        && let Ok(entries) = fs::read_dir(parent)
    {
        for e in entries.flatten() {
            let stale = e
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(TEMP_PREFIX))
                && e.file_type().is_ok_and(|t| t.is_file());
            if stale {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

/// A new temporary file next to `path` (its name never follows a link: created exclusively).
fn temp_beside(path: &Path) -> std::io::Result<NamedTempFile> {
    let parent = path.parent().unwrap_or(Path::new("."));
    tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .permissions(fs::Permissions::from_mode(0o666))
        .tempfile_in(parent)
}

/// Downloads `wanted` over one pipeline, marking each one `settled` once it is in place or
/// has failed. `Err` when the connection is lost.
pub(crate) async fn download(
    client: &mut Client,
    dir: &Path,
    wanted: &[Wanted],
    settled: &mut [bool],
    tally: &mut Tally,
    bar: &Bar,
) -> Result<(), ferry::Error> {
    let mut finishing = Finishing {
        tasks: tokio::task::JoinSet::new(),
        arrived: Vec::new(),
    };
    let r = fetch(client, dir, wanted, settled, tally, bar, &mut finishing).await;
    // Whatever happened, the downloads that arrived are put in place.
    finishing.start();
    while let Some(done) = finishing.tasks.join_next().await {
        finished(done, settled, tally);
    }
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    r
}

/// What a finishing task reports: which download (index, source), its size, and whether it
/// is in place.
type Finished = (usize, String, u64, Result<(), String>);

/// Downloads that arrived in memory or in a temp file: which (index, source), its entry,
/// where it goes, and its content.
type Arrived = (usize, String, Entry, PathBuf, Content<NamedTempFile>);

/// Downloads that arrived and the tasks putting them in place, a batch per task: one hand-off
/// to a blocking thread and back for many small files, not one each.
struct Finishing {
    tasks: tokio::task::JoinSet<Vec<Finished>>,
    arrived: Vec<Arrived>,
}

/// Most downloads in one batch, and most content bytes held in memory by one: with
/// [`FINISHING`] batches waiting, at most about 20 MiB of downloads wait in memory.
const BATCH: usize = 16;
const BATCH_BYTES: u64 = 4 << 20;

impl Finishing {
    /// Bytes of content held in memory by the downloads not handed to a task yet.
    fn held(&self) -> u64 {
        self.arrived
            .iter()
            .filter(|a| matches!(a.4, Content::Bytes(_)))
            .map(|a| a.2.size)
            .sum()
    }

    /// Writes what arrived so far and renames it into place, on a blocking thread. A large
    /// file is fsynced first; small ones are not, one by one (that would cost more than
    /// moving them): after a crash, `get -r` run again checks every file's size and BLAKE3
    /// and fetches what is wrong.
    fn start(&mut self) {
        if self.arrived.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.arrived);
        self.tasks.spawn_blocking(move || {
            batch
                .into_iter()
                .map(|(k, name, entry, path, content)| {
                    let size = entry.size;
                    let done = match content {
                        Content::Bytes(bytes) => temp_beside(&path).and_then(|mut tmp| {
                            tmp.write_all(&bytes)?;
                            Ok(tmp)
                        }),
                        Content::Written(tmp) => tmp.as_file().sync_data().map(|()| tmp),
                    }
                    .and_then(|tmp| crate::file_meta::apply(tmp.as_file(), &entry).map(|()| tmp))
                    .and_then(|tmp| tmp.persist(&path).map(drop).map_err(|e| e.error))
                    .map_err(|e| e.to_string());
                    (k, name, size, done)
                })
                .collect()
        });
    }
}

/// The loop of [`download`]: requests ahead, answers in order; each download that arrived
/// goes to `finishing` (fsync, rename).
async fn fetch(
    client: &mut Client,
    dir: &Path,
    wanted: &[Wanted],
    settled: &mut [bool],
    tally: &mut Tally,
    bar: &Bar,
    finishing: &mut Finishing,
) -> Result<(), ferry::Error> {
    let mut p = client.pipeline().await?;
    let mut cleaned = HashSet::new();
    let mut ahead: VecDeque<usize> = VecDeque::new();
    let mut next = 0;
    let mut received = 0u64;
    // Bounded: every turn sends or receives at least one of `wanted`.
    while next < wanted.len() || !ahead.is_empty() {
        // Refilled half a window at a time, so that the requests leave together.
        if ahead.len() <= WINDOW / 2 {
            while next < wanted.len() && ahead.len() < WINDOW {
                let k = next;
                next += 1;
                let w = &wanted[k];
                match prepare_parent(dir, &w.path, &mut cleaned) {
                    Ok(()) => {
                        p.send_get(&w.entry.source).await?;
                        ahead.push_back(k);
                    }
                    Err(why) => {
                        tally.fail(&w.entry.source, format!("not written: {why}"));
                        settled[k] = true;
                    }
                }
            }
            p.flush().await?;
        }
        let Some(k) = ahead.pop_front() else {
            continue;
        };
        if ahead.is_empty() {
            // Nothing more is on its way before the next requests: put what arrived in place.
            finishing.start();
        }
        let path = wanted[k].path.clone();
        let base = received;
        let got = p
            .recv_get_with(|_| temp_beside(&path), &mut |n| bar.set(base + n))
            .await;
        match got {
            Ok((entry, content)) => {
                received += entry.size;
                bar.set(received);
                let name = wanted[k].entry.source.clone();
                finishing.arrived.push((k, name, entry, path, content));
                if finishing.arrived.len() >= BATCH || finishing.held() >= BATCH_BYTES {
                    finishing.start();
                }
                while finishing.tasks.len() > FINISHING {
                    if let Some(done) = finishing.tasks.join_next().await {
                        finished(done, settled, tally);
                    }
                }
                bar.label(&format!("get -r: {} files", tally.files));
            }
            Err(e) if p.is_usable() => {
                tally.fail(&wanted[k].entry.source, e);
                settled[k] = true;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Files at least this large are fetched as deltas when an older copy is in place: below it,
/// the chunk list and the round trips cost more than the file.
pub(crate) const DELTA_MIN: u64 = 1 << 20;

/// Downloads `wanted`, each over an older copy at its path, fetching only the chunks the
/// copy lacks (docs/PROTOCOL.md §5.4); each new file replaces its copy once whole and
/// checked. `Err` when the connection is lost.
pub(crate) async fn download_deltas(
    client: &mut Client,
    wanted: &[Wanted],
    tally: &mut Tally,
    bar: &Bar,
) -> Result<(), ferry::Error> {
    for w in wanted {
        let old = match fs::File::open(&w.path) {
            Ok(f) => f,
            Err(e) => {
                tally.fail(&w.entry.source, format!("cannot read the old copy: {e}"));
                continue;
            }
        };
        let mut tmp = match temp_beside(&w.path) {
            Ok(t) => t,
            Err(e) => {
                tally.fail(&w.entry.source, format!("not written: {e}"));
                continue;
            }
        };
        let got = client
            .get_delta(
                &w.entry.source,
                Some(w.entry.version),
                &old,
                tmp.as_file_mut(),
            )
            .await;
        match got {
            Ok((entry, stats)) => {
                let placed = tmp
                    .as_file()
                    .sync_data()
                    .and_then(|()| crate::file_meta::apply(tmp.as_file(), &entry))
                    .and_then(|()| tmp.persist(&w.path).map(drop).map_err(|e| e.error));
                match placed {
                    Ok(()) => tally.moved_delta(entry.size, stats.fetched),
                    Err(e) => tally.fail(&w.entry.source, format!("cannot write: {e}")),
                }
                bar.set(tally.bytes);
            }
            Err(e) if !connection_lost(&e) => tally.fail(&w.entry.source, e),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Counts a download whose fsync and rename are done.
fn finished(
    r: Result<Vec<Finished>, tokio::task::JoinError>,
    settled: &mut [bool],
    tally: &mut Tally,
) {
    let batch = match r {
        Ok(batch) => batch,
        Err(e) => return tally.fail("a batch of downloads", e),
    };
    for one in batch {
        match one {
            (k, _, size, Ok(())) => {
                tally.moved(size);
                settled[k] = true;
            }
            (k, name, _, Err(why)) => {
                tally.fail(&name, format!("cannot write: {why}"));
                settled[k] = true;
            }
        }
    }
}
