//! `ferry put/get/ls/stat/rm --via http`: the same commands through a server's HTTP front
//! (docs/HTTP.md §12), every request signed with the credential and every answer's
//! signature checked. The base URL comes from `--http-url` or the credential's `http_url`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use ferry::HttpClient;
use ferry::proto::names::{SourceName, normalize_prefix};
use ferry::store::Entry;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt};

use crate::cli::{
    CredArg, GetArgs, LoginArgs, LsArgs, PutArgs, RmArgs, StatArgs, ViaArg, WatchArgs,
};
use crate::http_sink::Sink;
use crate::{account, credential, exit, output};

/// How long one change poll waits for news.
const POLL: Duration = Duration::from_secs(25);

/// Pages of a listing read at most.
const MAX_PAGES: usize = 100_000;

/// The PEM certificates of `--http-ca`, as DER.
fn roots(via: &ViaArg) -> anyhow::Result<Vec<Vec<u8>>> {
    let Some(ca) = &via.http_ca else {
        return Ok(Vec::new());
    };
    let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
    HttpClient::pem_roots(&pem).with_context(|| format!("{}", ca.display()))
}

/// `ferry login --via http`: an OPAQUE login through the HTTP front (docs/HTTP.md §13); the
/// session is stored as `ferry login` stores one, with the base URL as its server.
pub async fn login(a: &LoginArgs) -> anyhow::Result<()> {
    let url = a.via.http_url.clone().ok_or_else(|| {
        anyhow!(exit::bad_input(
            "ferry login --via http needs the server's HTTP URL (--http-url)".to_owned()
        ))
    })?;
    let profile = account::load_profile()?;
    let user = match (&a.user, &profile) {
        (Some(u), _) => u.clone(),
        (None, Some(p)) => p.user.clone(),
        (None, None) => bail!(exit::bad_input("no user name; pass --user NAME")),
    };
    ferry::proto::names::validate_client_name(&user)?;
    let pw = account::read_password(&a.password, &format!("password for {user}: "), false)?;
    let (_, session) = HttpClient::login(&url, &roots(&a.via)?, &user, pw.as_bytes()).await?;
    drop(pw);
    account::store_session(&url, "", &user, &session)?;
    println!(
        "logged in as {user} over HTTP; session valid until {}",
        output::time(session.expires)
    );
    Ok(())
}

/// A client signing as the session `ferry login --via http` stored.
fn session_client(via: &ViaArg) -> anyhow::Result<HttpClient> {
    let no_session = || {
        anyhow!(exit::bad_input(
            "--via http needs a credential file (--cred or FERRY_CRED) or a session from \
             ferry login --via http"
                .to_owned()
        ))
    };
    if via.seal {
        bail!(exit::bad_input(
            "--seal needs a credential issued with --http-url (it pins the sealing key)".to_owned()
        ));
    }
    let s = account::load_session()?.ok_or_else(no_session)?;
    if !s.server.starts_with("http://") && !s.server.starts_with("https://") {
        return Err(no_session());
    }
    let (Some(id), Some(secret)) = (s.session_id(), s.session_secret()) else {
        bail!("session.toml: bad id or secret; run ferry login --via http");
    };
    let session = ferry::proto::auth::ClientSession {
        id,
        secret,
        idle_secs: 0,
        expires: s.expires,
    };
    let url = via.http_url.clone().unwrap_or(s.server.clone());
    let client = HttpClient::with_session(&url, &s.user, &session)?;
    let roots = roots(via)?;
    if roots.is_empty() {
        Ok(client)
    } else {
        Ok(client.with_root_certificates(&roots)?)
    }
}

fn client(cred: &CredArg, via: &ViaArg) -> anyhow::Result<HttpClient> {
    let target = crate::profiles::target(cred)?;
    let Some(path) = target.cred.as_ref() else {
        return session_client(via);
    };
    let cred = credential::load(path)?;
    let url = via
        .http_url
        .clone()
        .or(cred.http_url.clone())
        .ok_or_else(|| {
            anyhow!(exit::bad_input(
                "--via http needs the server's HTTP URL: pass --http-url, or issue the credential \
             with --http-url"
                    .to_owned()
            ))
        })?;
    let mut client = HttpClient::new(&url, &cred)?;
    if via.seal {
        let key = cred.http_seal.ok_or_else(|| {
            anyhow!(exit::bad_input(
                "--seal needs the server's sealing key, which a credential issued with \
                 --http-url pins; re-issue this one"
                    .to_owned()
            ))
        })?;
        client = client.with_seal(key);
    }
    // `ferry serve --http-tls`: the server's own identity, pinned as over the TLS front.
    if url.starts_with("https://") && via.http_ca.is_none() {
        client = client.with_server_id(cred.server_id)?;
    }
    if let Some(ca) = &via.http_ca {
        let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
        client = client.with_root_pem(&pem)?;
    }
    Ok(client)
}

fn wire(e: &Entry) -> ferry::proto::message::Entry {
    ferry::proto::message::Entry {
        source: e.source.clone(),
        version: e.version,
        size: e.size,
        hash: e.hash,
        modified: e.modified,
        by: e.by.clone(),
        mtime: e.meta.mtime,
        executable: e.meta.executable,
    }
}

fn named(path: Option<&Path>) -> Option<&Path> {
    path.filter(|p| p.as_os_str() != "-")
}

/// `ferry put --via http`.
pub async fn put(a: &PutArgs) -> anyhow::Result<()> {
    let to_folder = a
        .file
        .as_ref()
        .is_some_and(|f| f.to_string_lossy().ends_with('/'));
    if a.recursive || to_folder {
        bail!(exit::bad_input(
            "put -r and '/' destinations are not available with --via http yet; use the TLS \
             listener (without --via http)"
        ));
    }
    SourceName::parse(&a.source)?;
    let c = client(&a.cred, &a.via)?;
    let entry = match named(a.file.as_deref()) {
        None => match crate::transfer::terminal_start(a.allow_empty)? {
            None => c.put(&a.source, tokio::io::stdin(), None).await?,
            Some(first) => {
                let typed = std::io::Cursor::new(first).chain(tokio::io::stdin());
                c.put(&a.source, typed, None).await?
            }
        },
        Some(path) => {
            let f = tokio::fs::File::open(path)
                .await
                .map_err(|e| exit::bad_input(format!("cannot open {}: {e}", path.display())))?;
            let meta = f.metadata().await?;
            if meta.is_dir() {
                bail!(exit::bad_input(format!(
                    "{} is a folder, not a file",
                    path.display()
                )));
            }
            let size = meta.is_file().then_some(meta.len());
            c.put(&a.source, f, size).await?
        }
    };
    crate::transfer::stored(&wire(&entry))
}

/// `ferry get --via http`: to standard output, or to FILE through a partial file next to
/// it that a broken transfer resumes from (a signed `Range` request, the version pinned),
/// checked against the signed BLAKE3 of `stat` before it replaces FILE.
pub async fn get(a: &GetArgs) -> anyhow::Result<()> {
    // A positional DEST is the output file too (a folder DEST needs the TLS listener).
    let output = a.output.as_deref().or(a.dest.as_deref());
    let to_folder = output.is_some_and(|f| f.to_string_lossy().ends_with('/'));
    if a.recursive || to_folder {
        bail!(exit::bad_input(
            "get -r and '/' destinations are not available with --via http yet; use the TLS \
             listener (without --via http)"
        ));
    }
    SourceName::parse(&a.source)?;
    crate::transfer::json_needs_file(output)?;
    let c = client(&a.cred, &a.via)?;
    let Some(path) = named(output) else {
        let mut out = tokio::io::stdout();
        c.get_to(&a.source, a.version, 0, &mut out).await?;
        out.flush().await?;
        return Ok(());
    };
    let entry = c.stat(&a.source).await?;
    let version = a.version.unwrap_or(entry.version);
    let want = if version == entry.version {
        Some(entry.hash)
    } else {
        None
    };
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{} is not a file name", path.display()))?
        .to_string_lossy()
        .into_owned();
    let partial = path.with_file_name(format!(".{name}.ferry-http-partial"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&partial)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    // Written and hashed on a thread of its own as the verified data arrives.
    let mut sink = Sink::new(file);
    let mut tries = 0;
    // Bounded by --retries: each try resumes where the verified data ends.
    loop {
        let offset = sink.accepted();
        match c.get_to(&a.source, Some(version), offset, &mut sink).await {
            Ok(_) => break,
            Err(e)
                if tries < a.retries
                    && matches!(
                        e,
                        ferry::Error::Connection(_)
                            | ferry::Error::Timeout(_)
                            | ferry::Error::Busy(_)
                    ) =>
            {
                tries += 1;
                crate::output::note!("{e}; resuming at {} bytes", sink.accepted());
            }
            Err(e) => return Err(e.into()),
        }
    }
    let (file, hash, len) = sink
        .finish()
        .await
        .with_context(|| format!("cannot write {}", partial.display()))?;
    file.sync_all()?;
    drop(file);
    if let Some(want) = want
        && hash != want
    {
        let _ = std::fs::remove_file(&partial);
        bail!("the downloaded content does not match its signed BLAKE3; run again");
    }
    std::fs::rename(&partial, path)
        .with_context(|| format!("cannot move the download to {}", path.display()))?;
    let mut saved = wire(&entry);
    if version != entry.version {
        // An older version: its size and hash are what arrived (checked by the signatures).
        saved.version = version;
        saved.size = len;
        saved.hash = hash;
    }
    crate::transfer::saved(&saved, path)
}

/// `ferry ls --via http`.
pub async fn ls(a: &LsArgs) -> anyhow::Result<()> {
    if a.versions {
        bail!(exit::bad_input(
            "--versions does not work --via http yet".to_owned()
        ));
    }
    normalize_prefix(&a.prefix)?;
    let c = client(&a.cred, &a.via)?;
    let mut entries = Vec::new();
    let mut after = None;
    for _ in 0..MAX_PAGES {
        let (page, next) = c.list(&a.prefix, after.as_deref()).await?;
        entries.extend(page.iter().map(wire));
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    output::print_entries(&entries)
}

/// `ferry stat --via http`.
pub async fn stat(a: &StatArgs) -> anyhow::Result<()> {
    SourceName::parse(&a.source)?;
    let entry = wire(&client(&a.cred, &a.via)?.stat(&a.source).await?);
    output::print_entry(&entry)
}

/// `ferry rm --via http`.
pub async fn rm(a: &RmArgs) -> anyhow::Result<()> {
    let name = SourceName::parse(&a.source)?;
    let version = client(&a.cred, &a.via)?.delete(name.as_str()).await?;
    crate::transfer::deleted(name.as_str(), version)
}

/// `ferry watch --via http`: long polls of the HTTP front's change events, each answer signed,
/// until Ctrl-C; a cut poll is asked again (after a pause) from the last position seen.
pub async fn watch(a: &WatchArgs) -> anyhow::Result<()> {
    normalize_prefix(&a.prefix)?;
    let c = client(&a.cred, &a.via)?;
    tokio::select! {
        r = follow(&c, a) => r,
        // Ctrl-C is how a watch normally ends.
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

async fn follow(c: &HttpClient, a: &WatchArgs) -> anyhow::Result<()> {
    let mut after = a.since;
    let mut pause = Duration::from_millis(200);
    // Each turn is one poll, bounded by its wait; the watch ends with Ctrl-C or a refusal.
    loop {
        let page = match c.changes(&a.prefix, after, POLL).await {
            Ok(p) => p,
            Err(
                e @ (ferry::Error::Connection(_)
                | ferry::Error::Connect { .. }
                | ferry::Error::Timeout(_)
                | ferry::Error::Busy(_)),
            ) => {
                eprintln!("ferry: {e}; polling again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        pause = Duration::from_millis(200);
        if let Some(oldest) = page.gap {
            eprintln!(
                "ferry: warning: the server no longer keeps the changes before seq {oldest}; \
                 some were missed"
            );
        }
        for e in page.events {
            let event = ferry::proto::message::WatchEvent {
                seq: e.seq,
                source: e.source,
                version: e.version,
                deleted: e.deleted,
                size: e.size,
                hash: e.hash,
                modified: e.modified,
                by: e.by,
            };
            crate::watch::print(&event)?;
        }
        after = Some(page.seq);
    }
}
