//! Commands that talk to a server with a credential or a login session: `put`, `get`, `ls`,
//! `stat`, `rm`.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, bail};
use ferry::Client;
use ferry::proto::names::{SourceName, validate_prefix};

use crate::cli::{CredArg, GetArgs, LsArgs, PutArgs, RmArgs, StatArgs};
use crate::exit::{self, Failure};
use crate::progress::Bar;
use crate::{credential, output};

/// Connects for a data command: with the credential file if one is given (`--cred` or
/// `FERRY_CRED`), else with the session of `ferry login`.
pub(crate) async fn connect(cred: &CredArg) -> anyhow::Result<Client> {
    if let Some(path) = &cred.cred {
        let cred = credential::load(path)?;
        // One command, one request: it leaves with the credential proof (the client checks
        // the server's proof before it reads the answer or sends any data).
        return Ok(Client::connect_pipelined(&cred).await?);
    }
    match crate::account::load_session()? {
        Some(session) => crate::account::resume_session(&session).await,
        None => Err(Failure::new(
            exit::FAILURE,
            "no credential (--cred or FERRY_CRED) and not logged in (ferry login)",
        )
        .into()),
    }
}

/// A FILE argument, or `None` for standard input or output (no argument, or "-").
fn named_file(path: Option<&Path>) -> Option<&Path> {
    path.filter(|p| p.as_os_str() != "-")
}

/// `ferry put`.
pub async fn put(a: &PutArgs) -> anyhow::Result<()> {
    SourceName::parse(&a.source)?;
    // Open the input before connecting, so a wrong path fails without touching the network.
    let (input, size): (Box<dyn Read + Send>, Option<u64>) = match named_file(a.file.as_deref()) {
        None => (Box::new(std::io::stdin()), None),
        Some(path) => {
            let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            let meta = f.metadata()?;
            if meta.is_dir() {
                bail!("{} is a folder, not a file", path.display());
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
    println!(
        "stored {} v{} ({} bytes, blake3 {})",
        output::printable(&entry.source),
        entry.version,
        entry.size,
        output::short_hash(&entry.hash)
    );
    let _ = client.close().await;
    Ok(())
}

/// `ferry get`.
pub async fn get(a: &GetArgs) -> anyhow::Result<()> {
    SourceName::parse(&a.source)?;
    let Some(path) = named_file(a.output.as_deref()) else {
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
            get_to_file(a, &target).await
        }
        _ => get_to_file(a, path).await,
    }
}

/// Streams a download into `out`; on a hash mismatch the bytes already written cannot be
/// taken back, and the error says so.
async fn get_streaming(a: &GetArgs, out: Box<dyn Write + Send>, what: &str) -> anyhow::Result<()> {
    let mut client = connect(&a.cred).await?;
    let bar = Bar::new(&format!("get {}", a.source));
    let out = BufWriter::with_capacity(ferry::pipe::CHUNK, out);
    let result = client
        .get_with_start(&a.source, out, &mut |e| bar.start(Some(e.size)), &mut |n| {
            bar.set(n)
        })
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

/// Downloads into a temporary file next to `path` and renames it over `path` only once the
/// whole content has arrived and its hash checked out. On any failure the temporary file is
/// deleted and `path` is left as it was.
async fn get_to_file(a: &GetArgs, path: &Path) -> anyhow::Result<()> {
    if path.is_dir() {
        bail!("{} is a folder; name the file to write", path.display());
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // Keep an existing file's permissions; a new file gets the usual 0666 minus umask.
    let existing_mode = fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777);
    let tmp = tempfile::Builder::new()
        .prefix(".ferry-get-")
        .suffix(".part")
        .permissions(fs::Permissions::from_mode(existing_mode.unwrap_or(0o666)))
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    if let Some(mode) = existing_mode {
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(mode))?;
    }
    let mut client = connect(&a.cred).await?;
    let bar = Bar::new(&format!("get {}", a.source));
    let (entry, tmp) = client
        .get_with_start(&a.source, tmp, &mut |e| bar.start(Some(e.size)), &mut |n| {
            bar.set(n)
        })
        .await?;
    drop(bar);
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("cannot write {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot replace {}", path.display()))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    println!(
        "saved {} v{} to {} ({} bytes, blake3 {})",
        output::printable(&entry.source),
        entry.version,
        path.display(),
        entry.size,
        output::short_hash(&entry.hash)
    );
    let _ = client.close().await;
    Ok(())
}

/// `ferry ls`.
pub async fn ls(a: &LsArgs) -> anyhow::Result<()> {
    validate_prefix(&a.prefix)?;
    let mut client = connect(&a.cred).await?;
    let entries = client.list(&a.prefix).await?;
    let _ = client.close().await;
    let mut stdout = std::io::stdout().lock();
    if a.json {
        let items: Vec<_> = entries.iter().map(output::entry_json).collect();
        writeln!(stdout, "{}", serde_json::to_string_pretty(&items)?)?;
    } else {
        write!(stdout, "{}", output::entries_table(&entries))?;
    }
    stdout.flush()?;
    Ok(())
}

/// `ferry stat`.
pub async fn stat(a: &StatArgs) -> anyhow::Result<()> {
    SourceName::parse(&a.source)?;
    let mut client = connect(&a.cred).await?;
    let entry = client.stat(&a.source).await?;
    let _ = client.close().await;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&output::entry_json(&entry))?
        );
    } else {
        println!("{}", output::entry_lines(&entry));
    }
    Ok(())
}

/// `ferry rm`.
pub async fn rm(a: &RmArgs) -> anyhow::Result<()> {
    SourceName::parse(&a.source)?;
    let mut client = connect(&a.cred).await?;
    let version = client.delete(&a.source).await?;
    let _ = client.close().await;
    println!("deleted {} (the deletion is v{version})", a.source);
    Ok(())
}
