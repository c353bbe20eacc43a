//! Commands that talk to a server with a credential or a login session: `put`, `get`, `ls`,
//! `stat`, `rm`.

use std::fs::{self, File};
use std::io::{BufWriter, IsTerminal, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use ferry::Client;
use ferry::proto::names::{SourceName, normalize_prefix};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cli::{CredArg, GetArgs, LsArgs, PutArgs, RmArgs, StatArgs};
use crate::exit::{self, Failure};
use crate::output::{detail, note};
use crate::progress::Bar;
use crate::{credential, output};

/// Connects for a data command: with the credential file if one is given (`--cred`,
/// `FERRY_CRED` or a `--profile`), else with the session of `ferry login`; at the address
/// `--server` (or the profile) gives, else the one stored with the credential or session.
pub(crate) async fn connect(cred: &CredArg) -> anyhow::Result<Client> {
    let target = crate::profiles::target(cred)?;
    let started = Instant::now();
    if let Some(path) = &target.cred {
        let mut cred = credential::load(path)?;
        if let Some(server) = target.server {
            cred.server = server;
        }
        detail!(
            "connecting to {} as client {} (role {}, credential {}), pinning server ID {}",
            cred.server,
            output::printable(cred.claims.name()),
            output::printable(cred.claims.role()),
            path.display(),
            cred.server_id
        );
        // One command, one request: it leaves with the credential proof (the client checks
        // the server's proof before it reads the answer or sends any data).
        let client = Client::connect_pipelined(&cred).await?;
        detail!(
            "TLS 1.3 connection up in {} ms; server ID matches",
            started.elapsed().as_millis()
        );
        return Ok(client);
    }
    match crate::account::load_session()? {
        Some(mut session) => {
            if let Some(server) = target.server {
                session.server = server;
            }
            detail!(
                "connecting to {} as user {} (login session), pinning server ID {}",
                session.server,
                output::printable(&session.user),
                session.server_id
            );
            let client = crate::account::resume_session(&session).await?;
            detail!(
                "session resumed in {} ms; server ID matches",
                started.elapsed().as_millis()
            );
            Ok(client)
        }
        None => Err(Failure::new(
            exit::USAGE,
            "no credential (--cred, FERRY_CRED or --profile) and not logged in (ferry login)",
        )
        .into()),
    }
}

/// Whether `put` refuses to store what it read: nothing, from a terminal, without
/// `--allow-empty` (someone pressed Ctrl-D by mistake, or did not know put was reading).
/// From a pipe or a file an empty input is deliberate and stored.
pub(crate) fn refuse_empty(terminal: bool, read_nothing: bool, allow_empty: bool) -> bool {
    terminal && read_nothing && !allow_empty
}

/// Standard input for `put`: on a terminal, says so and reads the first chunk before
/// anything is sent, refusing an empty read (see [`refuse_empty`]).
fn stdin_input(allow_empty: bool) -> anyhow::Result<Box<dyn Read + Send>> {
    Ok(match terminal_start(allow_empty)? {
        None => Box::new(std::io::stdin()),
        Some(first) => Box::new(std::io::Cursor::new(first).chain(std::io::stdin())),
    })
}

/// If standard input is a terminal: says that `put` reads it, reads what is typed up to the
/// first end of line or Ctrl-D and returns it, refusing an empty read (see
/// [`refuse_empty`]); the rest follows on standard input. `None` if it is not a terminal.
/// For both `put` and `put --via http`.
pub(crate) fn terminal_start(allow_empty: bool) -> anyhow::Result<Option<Vec<u8>>> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Ok(None);
    }
    note!("reading standard input; Ctrl-D to end");
    let mut first = vec![0u8; 64 * 1024];
    let n = loop {
        match stdin.lock().read(&mut first) {
            Ok(n) => break n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(anyhow::Error::new(e).context("cannot read standard input")),
        }
    };
    if refuse_empty(true, n == 0, allow_empty) {
        bail!(exit::bad_input(
            "nothing was typed before Ctrl-D, so nothing was stored (--allow-empty stores an \
             empty source)"
        ));
    }
    first.truncate(n);
    Ok(Some(first))
}

/// A FILE argument, or `None` for standard input or output (no argument, or "-").
fn named_file(path: Option<&Path>) -> Option<&Path> {
    path.filter(|p| p.as_os_str() != "-")
}

/// `ferry put`.
pub async fn put(a: &PutArgs) -> anyhow::Result<()> {
    if a.recursive {
        return crate::folders::put_tree(a).await;
    }
    let kept;
    let a = match crate::folders::put_destination(a)? {
        Some(named) => {
            kept = named;
            &kept
        }
        None => a,
    };
    SourceName::parse(&a.source)?;
    // Open the input before connecting, so a wrong path fails without touching the network.
    let (input, size): (Box<dyn Read + Send>, Option<u64>) = match named_file(a.file.as_deref()) {
        None => (stdin_input(a.allow_empty)?, None),
        Some(path) => {
            // A file named on the command line that cannot be opened is bad input.
            let f = File::open(path)
                .map_err(|e| exit::bad_input(format!("cannot open {}: {e}", path.display())))?;
            let meta = f.metadata()?;
            if meta.is_dir() {
                bail!(exit::bad_input(format!(
                    "{} is a folder, not a file",
                    path.display()
                )));
            }
            if meta.is_file() && !a.no_resume {
                return put_resumable(a, f).await;
            }
            // Pipes and devices have no size known in advance.
            let size = meta.is_file().then_some(meta.len());
            (Box::new(f), size)
        }
    };
    let mut client = connect(&a.cred).await?;
    let bar = Bar::new(&format!("put {}", a.source));
    bar.start(size);
    let entry = client
        .put(&a.source, input, size, &mut |n| bar.set(n))
        .await?;
    drop(bar);
    stored(&entry)?;
    let _ = client.close().await;
    Ok(())
}

/// `ferry put SOURCE FILE` of a regular file: hashed (while the connection is made), then
/// sent from where an interrupted upload of the same content stopped. If the server has a
/// version of the source (a larger file put again after an edit), the file is also cut into
/// chunks and only the chunks the server lacks are sent (docs/PROTOCOL.md §5.4).
async fn put_resumable(a: &PutArgs, file: File) -> anyhow::Result<()> {
    // Whether the server has a version to take a delta against decides whether the one read
    // of the file also cuts it into chunks; a file too small for a delta is hashed meanwhile.
    let small = file.metadata()?.len() < crate::folders::DELTA_MIN;
    let stat_source = async {
        let mut c = connect(&a.cred).await?;
        let there = match c.stat(&a.source).await {
            Ok(_) => true,
            Err(ferry::Error::NotFound(_) | ferry::Error::Forbidden(_)) => false,
            // Busy, going away, cut: the put's retries decide, as for its own request.
            Err(e) => return Err(anyhow::Error::new(e)),
        };
        anyhow::Ok((c, there))
    };
    let (file, size, hash, chunks, client) = if small {
        let (hashed, connected) = tokio::join!(ferry::client::hash_file(file), stat_source);
        let (file, size, hash) = hashed?;
        (file, size, hash, None, connected.map(|(c, _)| c))
    } else {
        match stat_source.await {
            Ok((c, true)) => {
                let (file, size, hash, chunks) = ferry::client::hash_and_chunk_file(file).await?;
                (file, size, hash, Some(chunks), Ok(c))
            }
            Ok((c, false)) => {
                let (file, size, hash) = ferry::client::hash_file(file).await?;
                (file, size, hash, None, Ok(c))
            }
            Err(e) => {
                let (file, size, hash) = ferry::client::hash_file(file).await?;
                (file, size, hash, None, Err(e))
            }
        }
    };
    // The server busy or going away: try again, from what it holds by then.
    let mut first = Some(client);
    crate::retry::retrying(a.retries, || {
        let client = first.take();
        let file = file.try_clone();
        let chunks = chunks.as_deref();
        async move {
            let client = match client {
                Some(c) => c?,
                None => connect(&a.cred).await?,
            };
            put_hashed(a, client, file?, (size, hash), chunks).await
        }
    })
    .await
}

/// Sends `file` (of `size` bytes hashing to `hash`) from where the server's part ends; with
/// `chunks`, only the chunks the server lacks if it takes the delta.
async fn put_hashed(
    a: &PutArgs,
    mut client: Client,
    file: File,
    (size, hash): (u64, [u8; 32]),
    chunks: Option<&[ferry::proto::chunking::ChunkRef]>,
) -> anyhow::Result<()> {
    let bar = Bar::new(&format!("put {}", a.source));
    bar.start(Some(size));
    let (entry, stats) = client
        .put_resume_chunked(
            &a.source,
            file,
            (size, hash),
            chunks,
            &mut |offset| {
                if offset > 0 {
                    note!("resuming at {offset} bytes");
                }
                bar.set(offset);
            },
            &mut |n| bar.set(n),
        )
        .await?;
    drop(bar);
    if stats.delta {
        note!(
            "sent {} of {} bytes: only the chunks the server did not have",
            stats.sent,
            size
        );
    }
    stored(&entry)?;
    let _ = client.close().await;
    Ok(())
}

/// `put`'s result: `stored ...`, or the entry as JSON.
pub(crate) fn stored(entry: &ferry::proto::message::Entry) -> anyhow::Result<()> {
    output::result(
        || {
            format!(
                "stored {} v{} ({} bytes, blake3 {})",
                output::printable(&entry.source),
                entry.version,
                entry.size,
                output::short_hash(&entry.hash)
            )
        },
        || output::entry_json(entry),
    )
}

/// `get -o FILE`'s result: `saved ...`, or the entry and the path as JSON.
pub(crate) fn saved(entry: &ferry::proto::message::Entry, path: &Path) -> anyhow::Result<()> {
    output::result(
        || {
            format!(
                "saved {} v{} to {} ({} bytes, blake3 {})",
                output::printable(&entry.source),
                entry.version,
                path.display(),
                entry.size,
                output::short_hash(&entry.hash)
            )
        },
        || {
            let mut v = output::entry_json(entry);
            v["path"] = json!(path.to_string_lossy());
            v
        },
    )
}

/// `rm`'s result.
pub(crate) fn deleted(name: &str, version: u64) -> anyhow::Result<()> {
    output::result(
        || {
            format!(
                "deleted {} (the deletion is v{version})",
                output::printable(name)
            )
        },
        || json!({"source": name, "version": version, "deleted": true}),
    )
}

/// `get` with `--json` needs a file to write: standard output carries the data.
pub(crate) fn json_needs_file(output: Option<&Path>) -> anyhow::Result<()> {
    if output::json() && named_file(output).is_none() {
        bail!(exit::bad_input(
            "--json needs -o FILE or a DEST: standard output carries the data"
        ));
    }
    Ok(())
}

/// `ferry get`.
pub async fn get(a: &GetArgs) -> anyhow::Result<()> {
    if a.recursive {
        return crate::folders::get_tree(a).await;
    }
    SourceName::parse(&a.source)?;
    let output = crate::folders::get_output(a);
    json_needs_file(output.as_deref())?;
    let Some(path) = named_file(output.as_deref()) else {
        return get_streaming(a, Box::new(std::io::stdout()), "standard output").await;
    };
    match fs::metadata(path) {
        // A device, FIFO or socket (such as /dev/null) cannot be replaced by renaming a
        // temporary file over it: stream into it, as into standard output.
        Ok(m) if !m.is_file() && !m.is_dir() => {
            let f = fs::OpenOptions::new()
                .write(true)
                .open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            get_streaming(a, Box::new(f), &path.display().to_string()).await
        }
        // Write through a symbolic link to its target, keeping the link.
        Ok(_) if path.is_symlink() => {
            let target = fs::canonicalize(path)
                .with_context(|| format!("cannot resolve {}", path.display()))?;
            crate::retry::retrying(a.retries, || get_to_file(a, &target)).await
        }
        // The server busy or going away: try again, resuming the partial download.
        _ => crate::retry::retrying(a.retries, || get_to_file(a, path)).await,
    }
}

/// Streams a download into `out`; on a hash mismatch the bytes already written cannot be
/// taken back, and the error says so.
async fn get_streaming(a: &GetArgs, out: Box<dyn Write + Send>, what: &str) -> anyhow::Result<()> {
    let mut client = connect(&a.cred).await?;
    let bar = Bar::new(&format!("get {}", a.source));
    let out = BufWriter::with_capacity(ferry::pipe::CHUNK, out);
    let result = client
        .get_version_with_start(
            &a.source,
            a.version,
            out,
            &mut |e| bar.start(Some(e.size)),
            &mut |n| bar.set(n),
        )
        .await;
    drop(bar);
    match result {
        Ok(_) => {}
        Err(e @ ferry::Error::HashMismatch) => {
            return Err(
                anyhow::Error::new(e).context(format!("discard what was written to {what}"))
            );
        }
        Err(e) => return Err(e.into()),
    }
    let _ = client.close().await;
    Ok(())
}

/// How long a partial download stays usable; older ones are deleted when `ferry get -o`
/// next runs for the same file.
const PARTIAL_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// The sidecar of a partial download (docs/PROTOCOL.md §7): what the partial bytes are.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartialMeta {
    format: u32,
    source: String,
    version: u64,
    size: u64,
    hash: String,
}

/// `.NAME.ferry-partial` and `.NAME.ferry-partial.toml` next to `path`.
fn partial_paths(path: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let name = path
        .file_name()
        .with_context(|| format!("{} does not name a file", path.display()))?;
    let mut part = std::ffi::OsString::from(".");
    part.push(name);
    part.push(".ferry-partial");
    let mut meta = part.clone();
    meta.push(".toml");
    Ok((path.with_file_name(part), path.with_file_name(meta)))
}

/// Reads a sidecar strictly; anything unreadable or malformed is `None`.
fn read_meta(meta: &Path) -> Option<(PartialMeta, [u8; 32])> {
    let text = fs::read_to_string(meta).ok()?;
    let m: PartialMeta = toml::from_str(&text).ok()?;
    if m.format != 1 || m.hash.len() != 64 {
        return None;
    }
    let bytes = data_encoding::HEXLOWER.decode(m.hash.as_bytes()).ok()?;
    let hash: [u8; 32] = bytes.try_into().ok()?;
    Some((m, hash))
}

/// Writes a sidecar atomically (a temporary file, fsynced, renamed over it).
fn write_meta(meta: &Path, m: &PartialMeta) -> std::io::Result<()> {
    let dir = match meta.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let text = toml::to_string(m).map_err(std::io::Error::other)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".ferry-meta-")
        .tempfile_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(meta).map_err(|e| e.error)?;
    Ok(())
}

fn remove_partial(part: &Path, meta: &Path) {
    let _ = fs::remove_file(part);
    let _ = fs::remove_file(meta);
}

/// What an existing partial download of `path` can resume, deleting it (with a message) if
/// it cannot be used.
fn usable_partial(source: &str, part: &Path, meta: &Path) -> Option<ferry::Partial> {
    let part_meta = fs::symlink_metadata(part).ok();
    let meta_exists = fs::symlink_metadata(meta).is_ok();
    if part_meta.is_none() && !meta_exists {
        return None;
    }
    let discard = |why: &str| {
        note!("discarding the partial download {} ({why})", part.display());
        remove_partial(part, meta);
        None
    };
    let Some(pm) = part_meta.filter(|m| m.is_file()) else {
        return discard("no partial data");
    };
    if pm.len() == 0 && !meta_exists {
        // Cut before the server answered: nothing to keep, nothing to say.
        remove_partial(part, meta);
        return None;
    }
    let Some((m, hash)) = read_meta(meta) else {
        return discard("its description is missing or unreadable");
    };
    if m.source != source {
        return discard(&format!(
            "it is of another source, {}",
            output::printable(&m.source)
        ));
    }
    let age = pm
        .modified()
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or_default();
    if age > PARTIAL_MAX_AGE {
        return discard("older than 7 days");
    }
    if pm.len() > m.size {
        return discard("longer than the content");
    }
    Some(ferry::Partial {
        version: m.version,
        hash,
        len: pm.len(),
    })
}

/// Downloads into a partial file next to `path` and renames it over `path` only once the
/// whole content has arrived and its hash checked out. If the download is interrupted the
/// partial file and its sidecar stay, and the next run resumes from them; `path` is left as
/// it was.
async fn get_to_file(a: &GetArgs, path: &Path) -> anyhow::Result<()> {
    if path.is_dir() {
        bail!(exit::bad_input(format!(
            "{} is a folder; name the file to write",
            path.display()
        )));
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let (part, meta) = partial_paths(path)?;
    // Keep an existing file's permissions; a new file gets the usual 0666 minus umask.
    let existing_mode = fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777);
    if a.no_resume {
        remove_partial(&part, &meta);
    }
    // The partial records the name in NFC, whichever form was typed.
    let name = SourceName::parse(&a.source)?;
    let partial = usable_partial(name.as_str(), &part, &meta);
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(existing_mode.unwrap_or(0o666))
        .open(&part)
        .with_context(|| format!("cannot create {}", part.display()))?;
    if let Some(mode) = existing_mode {
        file.set_permissions(fs::Permissions::from_mode(mode))?;
    }
    let had_partial = partial.as_ref().map(|p| p.len);
    // Until the server has answered, nothing is written: a failure then leaves no litter.
    let mut started = false;
    let mut client = match connect(&a.cred).await {
        Ok(c) => c,
        Err(e) => {
            if had_partial.is_none() {
                remove_partial(&part, &meta);
            }
            return Err(e);
        }
    };
    let bar = Bar::new(&format!("get {}", a.source));
    let source = name.to_string();
    let meta_path = meta.clone();
    let result = client
        .get_version_resume(
            &a.source,
            a.version,
            file,
            partial,
            &mut |e, offset| {
                started = true;
                if offset > 0 {
                    note!("resuming at {offset} bytes");
                } else {
                    if had_partial.is_some() {
                        note!("the source changed since the partial download; starting over");
                    }
                    write_meta(
                        &meta_path,
                        &PartialMeta {
                            format: 1,
                            source: source.clone(),
                            version: e.version,
                            size: e.size,
                            hash: data_encoding::HEXLOWER.encode(&e.hash),
                        },
                    )?;
                }
                bar.start(Some(e.size));
                bar.set(offset);
                Ok(())
            },
            &mut |n| bar.set(n),
        )
        .await;
    drop(bar);
    let (entry, _offset, file) = match result {
        Ok(r) => r,
        Err(e @ ferry::Error::HashMismatch) => {
            remove_partial(&part, &meta);
            return Err(anyhow::Error::new(e).context(format!(
                "the downloaded content of {} failed its BLAKE3 check; the partial download \
                 was deleted and {} left as it was; run the command again to start over",
                a.source,
                path.display()
            )));
        }
        Err(e) if !started && had_partial.is_none() => {
            remove_partial(&part, &meta);
            return Err(e.into());
        }
        Err(e) if !started => return Err(e.into()),
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "download interrupted; {} kept, run the same command again to resume",
                part.display()
            )));
        }
    };
    crate::file_meta::apply(&file, &entry)
        .with_context(|| format!("cannot set the time or mode of {}", part.display()))?;
    file.sync_all()
        .with_context(|| format!("cannot write {}", part.display()))?;
    drop(file);
    fs::rename(&part, path).with_context(|| format!("cannot replace {}", path.display()))?;
    let _ = fs::remove_file(&meta);
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    saved(&entry, path)?;
    let _ = client.close().await;
    Ok(())
}

/// `ferry ls`.
pub async fn ls(a: &LsArgs) -> anyhow::Result<()> {
    if a.versions {
        SourceName::parse(&a.prefix)?;
    } else {
        normalize_prefix(&a.prefix)?;
    }
    let mut client = connect(&a.cred).await?;
    let entries = if a.versions {
        client.versions(&a.prefix).await?
    } else {
        client.list(&a.prefix).await?
    };
    let _ = client.close().await;
    output::print_entries(&entries)
}

/// `ferry stat`.
pub async fn stat(a: &StatArgs) -> anyhow::Result<()> {
    SourceName::parse(&a.source)?;
    let mut client = connect(&a.cred).await?;
    let entry = client.stat(&a.source).await?;
    let _ = client.close().await;
    output::print_entry(&entry)
}

/// `ferry rm`.
pub async fn rm(a: &RmArgs) -> anyhow::Result<()> {
    let name = SourceName::parse(&a.source)?;
    let mut client = connect(&a.cred).await?;
    let version = client.delete(name.as_str()).await?;
    let _ = client.close().await;
    deleted(name.as_str(), version)
}

#[cfg(test)]
mod tests {
    use super::refuse_empty;

    #[test]
    fn only_an_empty_read_from_a_terminal_without_allow_empty_is_refused() {
        assert!(refuse_empty(true, true, false));
        assert!(!refuse_empty(true, true, true), "--allow-empty");
        assert!(!refuse_empty(true, false, false), "something was typed");
        assert!(
            !refuse_empty(false, true, false),
            "a pipe or file: empty is deliberate"
        );
        assert!(!refuse_empty(false, false, false));
    }
}
