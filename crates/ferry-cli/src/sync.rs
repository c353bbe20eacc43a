//! `ferry sync DIR PREFIX/` and `ferry sync PREFIX/ DIR`: make the destination match the
//! source, moving only files whose content differs (sizes first, then BLAKE3), with
//! `--delete` (remove what the source does not have) and `--dry-run` (say, change nothing).
//! The moves themselves are those of `put -r` and `get -r` (folders.rs).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::cli::SyncArgs;
use crate::exit;
use crate::folders::{
    DELTA_MIN, LocalFile, TEMP_PREFIX, Tally, Wanted, connection_lost, download, download_deltas,
    upload, walk,
};
use crate::hash_cache::{HashCache, rel};
use crate::paths::{Claimed, folder_prefix, local_for};
use crate::progress::Bar;
use crate::transfer::connect;

/// Whether an argument is unmistakably a local path: a source prefix never starts with `/`,
/// `.` or `..` segments, nor `~`.
fn looks_local(arg: &str) -> bool {
    arg == "."
        || arg == ".."
        || arg.starts_with('/')
        || arg.starts_with("./")
        || arg.starts_with("../")
        || arg.starts_with('~')
}

/// Which way: `true` for DIR → PREFIX/ (upload).
fn direction(a: &SyncArgs) -> anyhow::Result<bool> {
    let (from_local, to_local) = (looks_local(&a.from), looks_local(&a.to));
    match (from_local, to_local) {
        (true, false) => return Ok(true),
        (false, true) => return Ok(false),
        (true, true) => {
            return Err(
                exit::bad_input("both arguments are local paths; one must be a PREFIX/").into(),
            );
        }
        (false, false) => {}
    }
    match (Path::new(&a.from).is_dir(), Path::new(&a.to).is_dir()) {
        (true, false) => Ok(true),
        (false, true) => Ok(false),
        (true, true) => Err(exit::bad_input(format!(
            "both {} and {} are local folders; write the local one as ./NAME",
            a.from, a.to
        ))
        .into()),
        (false, false) => Err(exit::bad_input(format!(
            "neither {} nor {} is a local folder; write the local one as ./NAME",
            a.from, a.to
        ))
        .into()),
    }
}

/// `ferry sync`. If the server is busy or goes away, or the connection breaks, it runs
/// again (see --retries): what already matches is not moved again.
pub async fn sync(a: &SyncArgs) -> anyhow::Result<()> {
    let up_way = direction(a)?;
    crate::retry::retrying(a.retries, || async move {
        if up_way {
            up(a, Path::new(&a.from), &a.to).await
        } else {
            down(a, &a.from, Path::new(&a.to)).await
        }
    })
    .await
}

/// DIR → PREFIX/.
async fn up(a: &SyncArgs, dir: &Path, typed: &str) -> anyhow::Result<()> {
    let prefix = folder_prefix(typed)?;
    let mut tally = Tally::default();
    let files = walk(dir, &prefix, &mut tally);
    if a.delete && !tally.failed.is_empty() {
        return Err(exit::bad_input(
            "not syncing with --delete: some local files could not be read or named (above), \
             and their copies would be deleted",
        )
        .into());
    }
    let mut client = connect(&a.cred).await?;
    let listed: HashMap<String, ferry::proto::message::Entry> = client
        .list(&prefix)
        .await?
        .into_iter()
        .map(|e| (e.source.clone(), e))
        .collect();
    let mut changed: Vec<LocalFile> = Vec::new();
    let mut local_names = HashSet::new();
    let mut cache = HashCache::open(dir, !a.checksum);
    for f in files {
        local_names.insert(f.name.to_string());
        let same = match listed.get(f.name.as_str()) {
            Some(e) if e.size == f.size => {
                cache
                    .matches(&f.path, &rel(dir, &f.path), e.size, &e.hash)
                    .await
            }
            _ => false,
        };
        if same {
            tally.unchanged += 1;
        } else {
            cache.forget(&rel(dir, &f.path));
            changed.push(f);
        }
    }
    cache.save();
    let mut gone: Vec<&String> = if a.delete {
        listed
            .keys()
            .filter(|n| !local_names.contains(*n))
            .collect()
    } else {
        Vec::new()
    };
    gone.sort();
    if a.dry_run {
        let moves: Vec<_> = changed.iter().map(|f| (f.name.as_str(), f.size)).collect();
        let gone: Vec<String> = gone.iter().map(|n| n.to_string()).collect();
        crate::folders::dry_run("put", &moves, &gone, tally.unchanged)?;
        let _ = client.close().await;
        return tally.finish_dry_run();
    }
    let bar = Bar::new("sync");
    bar.start(Some(changed.iter().map(|f| f.size).sum()));
    let mut settled = vec![false; changed.len()];
    // A file the server has a version of goes as a delta: only its changed chunks move.
    let on_server: HashSet<String> = listed.keys().cloned().collect();
    let lost = upload(
        &mut client,
        &changed,
        &mut settled,
        &mut tally,
        &bar,
        &on_server,
    )
    .await;
    drop(bar);
    if let Err(e) = lost {
        return Err(tally.lost(e));
    }
    for n in gone {
        match client.delete(n).await {
            Ok(_) => tally.deleted += 1,
            Err(e) if !connection_lost(&e) => tally.fail(n, e),
            Err(e) => return Err(tally.lost(e)),
        }
    }
    let _ = client.close().await;
    tally.finish("sync: put")
}

/// PREFIX/ → DIR.
async fn down(a: &SyncArgs, typed: &str, dir: &Path) -> anyhow::Result<()> {
    let prefix = folder_prefix(typed)?;
    if !a.dry_run {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut client = connect(&a.cred).await?;
    let entries = client.list(&prefix).await?;
    let mut tally = Tally::default();
    let mut claimed = Claimed::default();
    let mut keep: HashSet<PathBuf> = HashSet::new();
    let mut wanted = Vec::new();
    let mut cache = HashCache::open(dir, !a.checksum);
    for entry in entries {
        let path = match local_for(dir, &prefix, &entry.source) {
            Ok(p) => p,
            Err(why) => {
                tally.fail(&entry.source, format!("not written: {why}"));
                continue;
            }
        };
        if let Err(why) = claimed.claim(dir, &path) {
            tally.fail(&entry.source, format!("not written: {why}"));
            continue;
        }
        keep.insert(path.clone());
        if cache
            .matches(&path, &rel(dir, &path), entry.size, &entry.hash)
            .await
        {
            tally.unchanged += 1;
        } else {
            wanted.push(Wanted { entry, path });
        }
    }
    cache.save();
    let gone = if a.delete && dir.is_dir() {
        extra_files(dir, &keep, &mut tally)
    } else {
        Vec::new()
    };
    if a.dry_run {
        let moves: Vec<_> = wanted
            .iter()
            .map(|w| (w.entry.source.as_str(), w.entry.size))
            .collect();
        let gone: Vec<String> = gone.iter().map(|p| p.display().to_string()).collect();
        crate::folders::dry_run("get", &moves, &gone, tally.unchanged)?;
        let _ = client.close().await;
        return tally.finish_dry_run();
    }
    let bar = Bar::new("sync");
    bar.start(Some(wanted.iter().map(|w| w.entry.size).sum()));
    // A larger file with an older copy in place comes as a delta: only its changed chunks.
    let (deltas, wanted): (Vec<Wanted>, Vec<Wanted>) = wanted.into_iter().partition(|w| {
        w.entry.size >= DELTA_MIN && fs::symlink_metadata(&w.path).is_ok_and(|m| m.is_file())
    });
    let mut settled = vec![false; wanted.len()];
    let mut lost = download(&mut client, dir, &wanted, &mut settled, &mut tally, &bar).await;
    if lost.is_ok() {
        lost = download_deltas(&mut client, &deltas, &mut tally, &bar).await;
    }
    drop(bar);
    if let Err(e) = lost {
        return Err(tally.lost(e));
    }
    let _ = client.close().await;
    for p in gone {
        match fs::remove_file(&p) {
            Ok(()) => tally.deleted += 1,
            Err(e) => tally.fail(&p.display().to_string(), format!("cannot delete: {e}")),
        }
    }
    tally.finish("sync: got")
}

/// The regular files under `dir` that are not in `keep` (symbolic links are neither followed
/// nor deleted; temporary files of downloads are left to the next download).
fn extra_files(dir: &Path, keep: &HashSet<PathBuf>, tally: &mut Tally) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    // Bounded: links are not followed, so every folder is visited once.
    while let Some(d) = stack.pop() {
        let entries = match fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) => {
                tally.fail(&d.display().to_string(), format!("cannot read folder: {e}"));
                continue;
            }
        };
        for e in entries.flatten() {
            let Ok(kind) = e.file_type() else { continue };
            let path = e.path();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file()
                && !keep.contains(&path)
                && !e
                    .file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(TEMP_PREFIX))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}
