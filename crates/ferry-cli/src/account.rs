//! The user's side of password accounts: `register`, `login`, `logout`, `passwd`, and the
//! files that remember them.
//!
//! ```text
//! CONFIG/profile.toml  server, server_id, user: where `ferry login` goes by default
//! CONFIG/session.toml  server, server_id, user, id, secret (hex), expires (mode 0600)
//! ```
//!
//! CONFIG is `$FERRY_CONFIG`, else the per-user configuration folder's `ferry`.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use ferry::proto::auth::ClientSession;
use ferry::proto::credential::Credential;
use ferry::proto::server_id::ServerId;
use ferry::{Client, fsutil};
use zeroize::Zeroizing;

use crate::cli::{LoginArgs, PasswordStdin, RegisterArgs};
use crate::exit::{self, AUTH_FAILED, FAILURE, Failure};
use crate::output;

/// What a session-based connection says when the server refuses the session.
pub const SESSION_ENDED: &str =
    "authentication failed (the session may have ended: run ferry login)";

/// The folder holding profile.toml and session.toml.
pub fn config_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("FERRY_CONFIG").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let base = dirs::config_dir()
        .ok_or_else(|| anyhow!("cannot find a per-user configuration folder; set FERRY_CONFIG"))?;
    Ok(base.join("ferry"))
}

pub use ferry::proto::files::{Profile, SessionFile as StoredSession};

fn profile_path() -> anyhow::Result<PathBuf> {
    Ok(config_dir()?.join("profile.toml"))
}

/// The profile, if there is one.
pub fn load_profile() -> anyhow::Result<Option<Profile>> {
    let path = profile_path()?;
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(anyhow!("cannot read {}: {e}", path.display())),
    };
    let p = Profile::parse(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok(Some(p))
}

/// Writes the profile.
pub fn save_profile(profile: &Profile) -> anyhow::Result<PathBuf> {
    let path = profile_path()?;
    let text = profile.to_toml().map_err(|e| anyhow!("{e}"))?;
    write_config(&path, text.as_bytes(), 0o644)?;
    Ok(path)
}

fn session_path() -> anyhow::Result<PathBuf> {
    Ok(config_dir()?.join("session.toml"))
}

/// The stored session, if any.
pub fn load_session() -> anyhow::Result<Option<StoredSession>> {
    let path = session_path()?;
    let text = match fsutil::read_secret_text(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error().is_some() => {
            return Err(anyhow!("cannot read {}: {e}", path.display()));
        }
        Err(e) => return Err(anyhow!("session file {}: {e}", path.display())),
    };
    let s = StoredSession::parse(&text)
        .map_err(|e| anyhow!("{}: {e}; run ferry login", path.display()))?;
    Ok(Some(s))
}

/// Writes session.toml (mode 0600).
fn save_session(session: &StoredSession) -> anyhow::Result<PathBuf> {
    let path = session_path()?;
    let text = session.to_toml().map_err(|e| anyhow!("{e}"))?;
    write_config(&path, text.as_bytes(), 0o600)?;
    Ok(path)
}

/// Deletes session.toml; true if there was one.
pub fn remove_session() -> anyhow::Result<bool> {
    let path = session_path()?;
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(anyhow!("cannot delete {}: {e}", path.display())),
    }
}

/// Connects and resumes a stored session. A refusal says the session may have ended.
pub async fn resume_session(s: &StoredSession) -> anyhow::Result<Client> {
    let pin = ServerId::parse(&s.server_id)
        .map_err(|e| anyhow!("session.toml: server_id: {e}; run ferry login"))?;
    let id = s
        .session_id()
        .ok_or_else(|| anyhow!("session.toml: bad id; run ferry login"))?;
    let secret = s
        .session_secret()
        .ok_or_else(|| anyhow!("session.toml: bad secret; run ferry login"))?;
    match Client::resume(&s.server, pin, id, &secret).await {
        Ok(c) => Ok(c),
        Err(ferry::Error::AuthFailed) => Err(Failure::new(AUTH_FAILED, SESSION_ENDED).into()),
        Err(e) => Err(e.into()),
    }
}

/// Writes a file in the config folder, creating the folder (mode 0700) if needed.
fn write_config(path: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        fsutil::create_private_dir(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    fsutil::write_atomic(path, data, mode)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Reads a password: one line of standard input with `--password-stdin`, else a prompt on
/// the terminal without echo (twice with `confirm`).
pub fn read_password(
    how: &PasswordStdin,
    prompt: &str,
    confirm: bool,
) -> anyhow::Result<Zeroizing<String>> {
    let pw = if how.password_stdin {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        let pw = line
            .strip_suffix('\n')
            .map_or(line.as_str(), |l| l.strip_suffix('\r').unwrap_or(l));
        Zeroizing::new(pw.to_owned())
    } else {
        let ask = |prompt: &str| {
            rpassword::prompt_password(prompt)
                .map(Zeroizing::new)
                .context(
                    "cannot read the password from the terminal (for scripts: --password-stdin)",
                )
        };
        let first = ask(prompt)?;
        if confirm && !first.is_empty() && *ask("again: ")? != *first {
            bail!(exit::bad_input("the passwords differ; nothing changed"));
        }
        first
    };
    if pw.is_empty() {
        bail!(exit::bad_input("the password is empty; nothing changed"));
    }
    Ok(pw)
}

/// `ferry register`.
pub async fn register(a: &RegisterArgs) -> anyhow::Result<()> {
    let invite = load_invite(&a.invite)?;
    let name = invite.claims.name().to_owned();
    if let Some(expires) = invite_expiry(&invite)
        && expires <= output::now()
    {
        return Err(Failure::new(
            AUTH_FAILED,
            format!(
                "this invite expired at {}; ask for a new one",
                output::time(expires)
            ),
        )
        .into());
    }
    if !a.password.password_stdin {
        output::note!(
            "registering {name} (role {}) at {}",
            invite.claims.role(),
            invite.server
        );
    }
    let pw = read_password(&a.password, &format!("new password for {name}: "), true)?;
    new_password_long_enough(&pw)?;
    Client::register(&invite, pw.as_bytes()).await?;
    let profile = Profile {
        server: invite.server.clone(),
        server_id: invite.server_id.to_string(),
        user: name.clone(),
    };
    let saved = save_profile(&profile);
    println!(
        "registered {name} (role {}) at {}; the invite is spent",
        invite.claims.role(),
        invite.server
    );
    match saved {
        Ok(path) => output::note!(
            "remembered the server in {}; log in with: ferry login",
            path.display()
        ),
        Err(e) => eprintln!(
            "warning: {}; log in with: ferry login --server {} --server-id {} --user {name}",
            crate::exit::message(&e),
            invite.server,
            invite.server_id
        ),
    }
    Ok(())
}

fn load_invite(path: &Path) -> anyhow::Result<Credential> {
    let text = fsutil::read_secret_text(path).map_err(|e| {
        if e.raw_os_error().is_some() {
            anyhow!("cannot read invite file {}: {e}", path.display())
        } else {
            anyhow!("invite file {}: {e}", path.display())
        }
    })?;
    let invite =
        Credential::parse(&text).with_context(|| format!("invite file {}", path.display()))?;
    if invite_expiry(&invite).is_none() {
        bail!(
            "{} is not an invite (no expiry); a credential file is used with --cred",
            path.display()
        );
    }
    Ok(invite)
}

/// When an invite ends, from its claims.
pub fn invite_expiry(invite: &Credential) -> Option<u64> {
    invite
        .claims
        .attributes()
        .get(ferry::proto::auth::INVITE_EXPIRES)
        .and_then(|e| e.parse().ok())
}

/// `ferry login`.
pub async fn login(a: &LoginArgs) -> anyhow::Result<()> {
    if a.via.via == crate::cli::Via::Http {
        return crate::http::login(a).await;
    }
    let profile = load_profile()?;
    let (server, server_id) = match (&a.server, &a.server_id, &profile) {
        (Some(s), Some(id), _) => (s.clone(), id.clone()),
        (None, None, Some(p)) => (p.server.clone(), p.server_id.clone()),
        (None, None, None) => bail!(exit::bad_input(
            "no server known; pass --server HOST:PORT --server-id ID (or run ferry register first)"
        )),
        // clap makes each of --server and --server-id require the other.
        _ => bail!(exit::bad_input("give --server and --server-id together")),
    };
    let pin = ServerId::parse(&server_id)
        .map_err(|e| exit::bad_input(format!("server ID {server_id}: {e}")))?;
    let user = match (&a.user, &profile) {
        (Some(u), _) => u.clone(),
        (None, Some(p)) => p.user.clone(),
        (None, None) => bail!(exit::bad_input("no user name; pass --user NAME")),
    };
    ferry::proto::names::validate_client_name(&user)?;
    let pw = read_password(&a.password, &format!("password for {user}: "), false)?;
    let (client, session) = Client::login(&server, pin, &user, pw.as_bytes(), true).await?;
    drop(pw);
    let role = client
        .principal()
        .and_then(|p| p.role())
        .unwrap_or("-")
        .to_owned();
    let _ = client.close().await;
    let session = session.ok_or_else(|| anyhow!("the server did not open a session"))?;
    store_session(&server, &server_id, &user, &session)?;
    if a.server.is_some() || a.user.is_some() {
        let p = Profile {
            server: server.clone(),
            server_id: server_id.clone(),
            user: user.clone(),
        };
        if let Err(e) = save_profile(&p) {
            eprintln!("warning: {}", crate::exit::message(&e));
        }
    }
    output::result(
        || {
            format!(
                "logged in as {user} (role {}); session valid until {}",
                output::printable(&role),
                output::time(session.expires)
            )
        },
        || {
            serde_json::json!({
                "user": user,
                "role": role,
                "server": server,
                "expires": session.expires,
            })
        },
    )
}

pub(crate) fn store_session(
    server: &str,
    server_id: &str,
    user: &str,
    session: &ClientSession,
) -> anyhow::Result<()> {
    let stored = StoredSession {
        server: server.to_owned(),
        server_id: server_id.to_owned(),
        user: user.to_owned(),
        id: ferry::accounts::session_id_text(&session.id),
        // The one place the secret leaves memory: a 0600 file only its owner can read.
        secret: data_encoding::HEXLOWER.encode(session.secret.expose_secret()),
        expires: session.expires,
    };
    save_session(&stored)?;
    Ok(())
}

/// The stored session, or a one-line failure saying how to get one.
fn require_session() -> anyhow::Result<StoredSession> {
    load_session()?.ok_or_else(|| Failure::new(FAILURE, "not logged in (ferry login)").into())
}

/// `ferry logout`.
pub async fn logout() -> anyhow::Result<()> {
    let Some(s) = load_session()? else {
        output::note!("not logged in; nothing to do");
        return Ok(());
    };
    let result = match resume_session(&s).await {
        Ok(client) => client.logout().await.map_err(anyhow::Error::from),
        Err(e) => Err(e),
    };
    remove_session()?;
    match result {
        Ok(()) => {
            println!("logged out {} from {}", s.user, s.server);
            Ok(())
        }
        Err(e) if crate::exit::code(&e) == AUTH_FAILED => {
            println!(
                "the session had already ended on the server; removed it here ({} at {})",
                s.user, s.server
            );
            Ok(())
        }
        Err(e) => Err(Failure::new(
            FAILURE,
            format!(
                "removed the local session, but could not end it on the server ({}); it stays valid there until it expires or an administrator revokes it",
                crate::exit::message(&e)
            ),
        )
        .into()),
    }
}

/// Refuses a new password the library would refuse, before any connection, saying why.
fn new_password_long_enough(pw: &str) -> anyhow::Result<()> {
    ferry::client::check_new_password(pw.as_bytes()).map_err(|_| {
        exit::bad_input(format!(
            "the password is shorter than {} characters; nothing changed",
            ferry::client::MIN_PASSWORD_CHARS
        ))
        .into()
    })
}

/// `ferry passwd`: asks for the current password (the server checks it with a fresh login on
/// this connection), then the new one. With `--password-stdin`, the first line of standard
/// input is the current password and the second the new one.
pub async fn passwd(a: &PasswordStdin) -> anyhow::Result<()> {
    let s = require_session()?;
    let current = read_password(a, &format!("current password for {}: ", s.user), false)?;
    let pw = read_password(a, &format!("new password for {}: ", s.user), true)?;
    new_password_long_enough(&pw)?;
    let mut client = resume_session(&s).await?;
    match client
        .change_password(current.as_bytes(), pw.as_bytes())
        .await
    {
        Ok(()) => {}
        Err(ferry::Error::AuthFailed) => {
            return Err(Failure::new(
                AUTH_FAILED,
                "authentication failed: the current password is wrong, or the session ended; nothing changed",
            )
            .into());
        }
        Err(e) => return Err(e.into()),
    }
    drop((current, pw));
    let _ = client.close().await;
    remove_session()?;
    println!("changed the password of {}", s.user);
    output::note!("this ended your sessions, this one too; log in again with: ferry login");
    Ok(())
}
