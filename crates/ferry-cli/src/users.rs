//! Commands on the server folder for password accounts: `user invite|list|remove|reset` and
//! `session list|revoke`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use ferry::backend::accounts::DynAccounts;
use ferry::{ServerDir, fsutil};
use serde_json::json;

use crate::admin::{check_writable, quote, server_dir};
use crate::cli::{
    ClientListArgs, InviteArgs, InviteOut, ResetArgs, SessionCommand, SessionRevokeArgs,
    UserCommand, UserNameArgs,
};
use crate::exit::{self, Failure, NOT_FOUND};
use crate::output::{self, note};

/// `ferry user ...`: users and invites in the accounts backend `ferry.toml` names.
pub async fn user(cmd: &UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Invite(a) => invite(a).await,
        UserCommand::List(a) => list(a).await,
        UserCommand::Remove(a) => remove(a).await,
        UserCommand::Reset(a) => reset(a).await,
    }
}

/// `ferry session ...`: sessions in the accounts backend `ferry.toml` names.
pub async fn session(cmd: &SessionCommand) -> anyhow::Result<()> {
    match cmd {
        SessionCommand::List(a) => session_list(a).await,
        SessionCommand::Revoke(a) => session_revoke(a).await,
    }
}

async fn invite(a: &InviteArgs) -> anyhow::Result<()> {
    ferry::proto::names::validate_client_name(&a.name)?;
    let mut attrs = BTreeMap::from([("role".to_owned(), a.role.clone())]);
    for (k, v) in &a.attrs {
        if k == ferry::proto::auth::INVITE_EXPIRES {
            bail!(exit::bad_input(format!(
                "--attr {k}=... is reserved for the invite's expiry; use --expires"
            )));
        }
        if attrs.insert(k.clone(), v.clone()).is_some() {
            bail!(exit::bad_input(format!("--attr {k}=... is given twice")));
        }
    }
    let dir = server_dir(&a.out.dir)?;
    let accounts = crate::backend::for_command(&dir).await?;
    let existing = accounts.user(&a.name).await?.is_some();
    write_invite(&dir, &*accounts, &a.name, attrs, &a.out).await?;
    if existing {
        note!(
            "note: {} had a password: it is removed, and its sessions and password connections ended now (also on a running server); the user logs in again once this invite is registered",
            a.name
        );
    }
    Ok(())
}

/// Creates an invite in `accounts` and writes it where `out` says; tells on stderr what
/// was written.
async fn write_invite(
    dir: &ServerDir,
    accounts: &dyn DynAccounts,
    name: &str,
    attrs: BTreeMap<String, String>,
    out: &InviteOut,
) -> anyhow::Result<()> {
    let role = attrs.get("role").cloned().unwrap_or_default();
    let path = match &out.out {
        Some(p) if p.as_os_str() == "-" => None,
        Some(p) => Some(p.clone()),
        None => Some(PathBuf::from(format!("{name}.invite"))),
    };
    crate::admin::need_address(dir, out.server.as_deref(), "invite")?;
    if let Some(p) = &path {
        check_writable(p)?;
    }
    let role_known = dir.config()?.roles.contains_key(&role);
    let invite = dir
        .invite_user_in(
            accounts,
            name,
            attrs,
            out.server.as_deref(),
            out.expires,
            output::now(),
        )
        .await?;
    let until = crate::account::invite_expiry(&invite).map_or_else(|| "?".into(), output::time);
    let text = invite.to_toml();
    match &path {
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(text.as_bytes())?;
            stdout.flush()?;
            note!(
                "invite for {name} (role {role}, server {}), valid until {until}",
                invite.server
            );
        }
        Some(p) => {
            fsutil::write_secret(p, text.as_bytes()).with_context(|| {
                format!(
                    "created an invite for {name} but could not write {}; run the command again",
                    p.display()
                )
            })?;
            note!(
                "wrote {} (mode 0600): invite for {name} (role {role}, server {}), valid until {until}",
                p.display(),
                invite.server
            );
            note!(
                "give it to {name}, who runs: ferry register --invite {}",
                quote(p)
            );
        }
    }
    if !role_known {
        note!(
            "warning: ferry.toml defines no role '{role}'; the server will refuse {name} every operation until it does"
        );
    }
    Ok(())
}

async fn list(a: &ClientListArgs) -> anyhow::Result<()> {
    let dir = server_dir(&a.dir)?;
    let accounts = crate::backend::for_command(&dir).await?;
    let users = accounts.users().await?;
    let invites = accounts.invites().await?;
    let now = output::now();
    let invite_status = |spent: bool, expires: u64| {
        if spent {
            "spent"
        } else if now >= expires {
            "expired"
        } else {
            "pending"
        }
    };
    let split = |attrs: &BTreeMap<String, String>| {
        let mut others = attrs.clone();
        let role = others.remove("role").unwrap_or_default();
        (role, others)
    };
    if output::json() {
        let users: Vec<_> = users
            .iter()
            .map(|(name, u)| {
                let (role, others) = split(&u.attributes);
                json!({
                    "name": name,
                    "role": role,
                    "attributes": others,
                    "password_set": u.created,
                    "argon2id": {"m_kib": u.ksf.m_kib, "t": u.ksf.t, "p": u.ksf.p},
                })
            })
            .collect();
        let invites: Vec<_> = invites
            .iter()
            .map(|(name, i)| {
                let (role, others) = split(&i.attributes);
                json!({
                    "name": name,
                    "role": role,
                    "attributes": others,
                    "expires": i.expires,
                    "spent": i.spent,
                    "status": invite_status(i.spent, i.expires),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"users": users, "invites": invites}))?
        );
        return Ok(());
    }
    let attr_text = |others: &BTreeMap<String, String>| {
        if others.is_empty() {
            "-".to_owned()
        } else {
            others
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        }
    };
    if users.is_empty() {
        note!("no users yet; invite one with: ferry user invite NAME --role ROLE");
    } else {
        let mut rows = vec![
            [
                "USER",
                "ROLE",
                "ATTRIBUTES",
                "PASSWORD SET",
                "ARGON2ID m/t/p",
            ]
            .map(str::to_owned)
            .to_vec(),
        ];
        for (name, u) in &users {
            let (role, others) = split(&u.attributes);
            rows.push(vec![
                name.clone(),
                role,
                attr_text(&others),
                output::time(u.created),
                format!("{}KiB/{}/{}", u.ksf.m_kib, u.ksf.t, u.ksf.p),
            ]);
        }
        print!("{}", output::table(&rows, &[]));
    }
    if !invites.is_empty() {
        if !users.is_empty() {
            println!();
        }
        let mut rows = vec![
            ["INVITE", "ROLE", "ATTRIBUTES", "EXPIRES", "STATUS"]
                .map(str::to_owned)
                .to_vec(),
        ];
        for (name, i) in &invites {
            let (role, others) = split(&i.attributes);
            rows.push(vec![
                name.clone(),
                role,
                attr_text(&others),
                output::time(i.expires),
                invite_status(i.spent, i.expires).to_owned(),
            ]);
        }
        print!("{}", output::table(&rows, &[]));
    }
    Ok(())
}

async fn remove(a: &UserNameArgs) -> anyhow::Result<()> {
    let dir = server_dir(&a.dir)?;
    let accounts = crate::backend::for_command(&dir).await?;
    let had_invite = accounts.invite(&a.name).await?.is_some();
    if !accounts.remove_user(&a.name).await? {
        let mut msg = format!("no user named '{}'", a.name);
        if had_invite {
            msg.push_str(" (its invite was withdrawn)");
        }
        return Err(Failure::new(NOT_FOUND, msg).into());
    }
    output::result(
        || format!("removed {}", a.name),
        || json!({"name": a.name, "removed": true}),
    )?;
    note!(
        "its password no longer works and its sessions ended, also on a running server; invite it again with: ferry user invite {} --role ROLE",
        a.name
    );
    Ok(())
}

async fn reset(a: &ResetArgs) -> anyhow::Result<()> {
    let dir = server_dir(&a.out.dir)?;
    let accounts = crate::backend::for_command(&dir).await?;
    let Some(user) = accounts.user(&a.name).await? else {
        return Err(Failure::new(NOT_FOUND, format!("no user named '{}'", a.name)).into());
    };
    // Check the destination first: removing the user and then failing to write the invite
    // would leave nobody able to set the password.
    if let Some(p) = a.out.out.as_ref().filter(|p| p.as_os_str() != "-") {
        check_writable(p)?;
    } else if a.out.out.is_none() {
        check_writable(&PathBuf::from(format!("{}.invite", a.name)))?;
    }
    accounts.remove_user(&a.name).await?;
    note!("removed {}'s password and ended its sessions", a.name);
    write_invite(&dir, &*accounts, &a.name, user.attributes, &a.out).await
}

async fn session_list(a: &ClientListArgs) -> anyhow::Result<()> {
    let dir = server_dir(&a.dir)?;
    let sessions = crate::backend::for_command(&dir).await?.sessions().await?;
    let now = output::now();
    // The effective end: the absolute one or the idle one, whichever comes first.
    let ends =
        |s: &ferry::accounts::SessionEntry| s.expires.min(s.last_used.saturating_add(s.idle_secs));
    let live = sessions.iter().filter(|(_, s)| s.live(now));
    if output::json() {
        let items: Vec<_> = live
            .map(|(id, s)| {
                json!({
                    "id": id,
                    "user": s.name,
                    "origin": s.origin,
                    "created": s.created,
                    "last_used": s.last_used,
                    "expires": ends(s),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(());
    }
    let mut rows = vec![
        ["ID", "USER", "ORIGIN", "CREATED", "LAST USED", "EXPIRES"]
            .map(str::to_owned)
            .to_vec(),
    ];
    for (id, s) in live {
        rows.push(vec![
            id.clone(),
            s.name.clone(),
            s.origin.clone(),
            output::time(s.created),
            output::time(s.last_used),
            output::time(ends(s)),
        ]);
    }
    if rows.len() == 1 {
        note!("no live sessions");
        return Ok(());
    }
    print!("{}", output::table(&rows, &[]));
    Ok(())
}

async fn session_revoke(a: &SessionRevokeArgs) -> anyhow::Result<()> {
    let dir = server_dir(&a.dir)?;
    let accounts = crate::backend::for_command(&dir).await?;
    if !accounts.remove_session(&a.id.to_ascii_lowercase()).await? {
        return Err(Failure::new(NOT_FOUND, format!("no session '{}'", a.id)).into());
    }
    output::result(
        || format!("revoked session {}", a.id),
        || json!({"session": a.id, "revoked": true}),
    )?;
    note!("it no longer works, also on a running server");
    Ok(())
}
