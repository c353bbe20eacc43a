//! Commands that work on the server folder: `init` and `client issue|revoke|list` (users and
//! sessions: see `users`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use ferry::config::{AccountsBackend, BackendConfig, UrlSource};
use ferry::{ServerDir, fsutil};
use serde_json::json;

use crate::cli::{
    BackendArg, ClientCommand, ClientListArgs, DirArg, InitArgs, IssueArgs, RevokeArgs,
};
use crate::exit::{self, Failure, NOT_FOUND};
use crate::output::{self, note};

/// The server folder: `--dir`, else `$FERRY_DIR` (both via clap), else the data folder.
pub fn server_dir(arg: &DirArg) -> anyhow::Result<ServerDir> {
    if let Some(dir) = &arg.dir {
        return Ok(ServerDir::new(dir));
    }
    let data = dirs::data_dir().ok_or_else(|| {
        anyhow!("cannot find a per-user data folder; pass --dir DIR or set FERRY_DIR")
    })?;
    Ok(ServerDir::new(data.join("ferry")))
}

/// The `[backend]` section `ferry init` is asked to write.
fn init_backend(a: &InitArgs) -> anyhow::Result<BackendConfig> {
    let url = match (a.backend, &a.url_env, &a.url_file) {
        (BackendArg::Local, None, None) => None,
        (BackendArg::Local, _, _) => bail!(exit::bad_input(
            "--url-env and --url-file go with --backend postgres"
        )),
        (BackendArg::Postgres, Some(name), None) => Some(UrlSource::Env(name.clone())),
        (BackendArg::Postgres, None, Some(file)) => Some(UrlSource::File(
            std::path::absolute(file).with_context(|| format!("{}", file.display()))?,
        )),
        (BackendArg::Postgres, None, None) => Some(UrlSource::Env("FERRY_PG_URL".to_owned())),
        (BackendArg::Postgres, Some(_), Some(_)) => {
            bail!(exit::bad_input(
                "--url-env and --url-file do not go together"
            ))
        }
    };
    let backend = BackendConfig {
        accounts: match a.backend {
            BackendArg::Local => AccountsBackend::Local,
            BackendArg::Postgres => AccountsBackend::Postgres,
        },
        url,
    };
    // What is written must read back the same (a variable name that is not one is refused).
    let text = ferry::config::DEFAULT_CONFIG.to_owned() + &backend.section().unwrap_or_default();
    match ferry::config::Config::parse(&text) {
        Ok(c) if c.backend == backend => Ok(backend),
        Ok(_) => bail!(exit::bad_input(
            "--url-file: the path cannot be written in ferry.toml"
        )),
        Err(e) => bail!(exit::bad_input(e.to_string())),
    }
}

/// `ferry init`.
pub fn init(a: &InitArgs) -> anyhow::Result<()> {
    let backend = init_backend(a)?;
    let dir = server_dir(&a.dir)?;
    let id = dir.init_with(&backend)?;
    if output::json() {
        output::json_line(
            &json!({"server_id": id.to_string(), "dir": dir.path().to_string_lossy()}),
        )?;
    } else {
        println!("{id}");
    }
    let d = quote(dir.path());
    note!("created a ferry server in {}", dir.path().display());
    note!(
        "  configuration: {}",
        dir.path().join("ferry.toml").display()
    );
    note!("next:");
    note!("  ferry serve --dir {d}");
    note!("  ferry client issue NAME --role writer --server HOST:7443 --dir {d}");
    note!("  (or set address = \"HOST:7443\" in ferry.toml, the address clients reach it at)");
    if backend.accounts != AccountsBackend::Local {
        let from = match &backend.url {
            Some(UrlSource::File(p)) => format!("the file {} (mode 0600)", p.display()),
            Some(UrlSource::Env(name)) => format!("the environment variable {name}"),
            None => "nowhere".to_owned(),
        };
        note!(
            "the account data lives in {} (ferry.toml's [backend]); serve and the account \
             commands read its URL from {from}",
            backend.accounts.name()
        );
        note!(
            "every instance needs this folder's master.key, identity.key, identity.crt, \
             opaque.key and ferry.toml: copy them (keeping mode 0600), see docs/SCALING.md"
        );
    }
    Ok(())
}

/// `ferry client ...`: the client records in the accounts backend `ferry.toml` names.
pub async fn client(cmd: &ClientCommand) -> anyhow::Result<()> {
    match cmd {
        ClientCommand::Issue(a) => issue(a).await,
        ClientCommand::Revoke(a) => revoke(a).await,
        ClientCommand::List(a) => list(a).await,
    }
}

/// Fails (exit code 2) unless a server address to write was given or is configured: a
/// credential or invite with a guessed address leads its holder nowhere.
pub fn need_address(dir: &ServerDir, given: Option<&str>, what: &str) -> anyhow::Result<()> {
    if given.is_some() || dir.config()?.address.is_some() {
        return Ok(());
    }
    bail!(exit::bad_input(format!(
        "no server address to write into the {what}: pass --server HOST:PORT (the address \
         clients reach this server at), or set address = \"HOST:PORT\" in {}",
        dir.path().join("ferry.toml").display()
    )))
}

async fn issue(a: &IssueArgs) -> anyhow::Result<()> {
    let dir = server_dir(&a.dir)?;
    ferry::proto::names::validate_client_name(&a.name)?;
    let mut attrs = BTreeMap::from([("role".to_owned(), a.role.clone())]);
    for (k, v) in &a.attrs {
        if attrs.insert(k.clone(), v.clone()).is_some() {
            bail!(exit::bad_input(format!("--attr {k}=... is given twice")));
        }
    }
    let out = match &a.out {
        Some(p) if p.as_os_str() == "-" => None,
        Some(p) => Some(p.clone()),
        None => Some(PathBuf::from(format!("{}.cred", a.name))),
    };
    if out.is_none() && output::json() {
        bail!(exit::bad_input(
            "--json and --out - do not go together: standard output carries the credential"
        ));
    }
    // Check the destination before issuing: issuing invalidates the previous credential,
    // so failing to write the new one afterwards would leave the client with none.
    if let Some(path) = &out {
        check_writable(path)?;
    }
    need_address(&dir, a.server.as_deref(), "credential")?;
    let roles = dir.config()?.roles;
    let role_known = roles.contains_key(&a.role);
    if !role_known && !a.force {
        let known: Vec<&str> = roles.keys().map(String::as_str).collect();
        bail!(exit::bad_input(format!(
            "ferry.toml defines no role '{}' (it has: {}); the server would refuse this \
             client every operation. Add the role first, or use --force",
            a.role,
            known.join(", ")
        )));
    }
    if let Some(url) = &a.http_url {
        ferry::HttpClient::check_url(url).map_err(|e| exit::bad_input(e.to_string()))?;
    }
    let accounts = crate::backend::for_command(&dir).await?;
    let previous = accounts.client(&a.name).await?;
    let mut cred = dir
        .issue_client_in(
            &*accounts,
            &a.name,
            attrs,
            a.server.as_deref(),
            output::now(),
        )
        .await?;
    cred.http_url = a.http_url.clone();
    // The HTTP front's sealing key is pinned with its URL (`--via http --seal`).
    if a.http_url.is_some() {
        cred.http_seal = Some(dir.http_seal_key()?);
    }
    let epoch = cred.claims.epoch();
    let text = cred.to_toml();
    match &out {
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(text.as_bytes())?;
            stdout.flush()?;
            note!(
                "issued a credential for {} (role {}, epoch {epoch}, server {})",
                a.name,
                a.role,
                cred.server
            );
        }
        Some(path) => {
            fsutil::write_secret(path, text.as_bytes()).with_context(|| {
                format!(
                    "issued {} epoch {epoch} but could not write {}; run the command again",
                    a.name,
                    path.display()
                )
            })?;
            if output::json() {
                output::json_line(&json!({
                    "name": a.name,
                    "role": a.role,
                    "epoch": epoch,
                    "server": cred.server,
                    "path": path.to_string_lossy(),
                }))?;
            }
            note!(
                "wrote {} (mode 0600): credential for {} (role {}, epoch {epoch}, server {})",
                path.display(),
                a.name,
                a.role,
                cred.server
            );
            note!(
                "give it to the client, e.g.: ferry ls --cred {}",
                quote(path)
            );
        }
    }
    if epoch > 1 {
        note!(
            "note: this re-issue invalidated {}'s previous credential (epoch {})",
            a.name,
            epoch - 1
        );
    }
    if !role_known {
        eprintln!(
            "warning: ferry.toml defines no role '{}'; the server will refuse this client every operation until it does",
            a.role
        );
    }
    if previous.is_some_and(|p| p.revoked) {
        note!(
            "note: {} was revoked; this credential reinstates it",
            a.name
        );
    }
    Ok(())
}

/// Fails unless `path` can plausibly be written: its folder exists and it is not a folder.
pub fn check_writable(path: &Path) -> anyhow::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        bail!(exit::bad_input(format!(
            "cannot write {}: no folder {}",
            path.display(),
            parent.display()
        )));
    }
    if path.is_dir() {
        bail!(exit::bad_input(format!(
            "cannot write {}: it is a folder",
            path.display()
        )));
    }
    Ok(())
}

async fn revoke(a: &RevokeArgs) -> anyhow::Result<()> {
    let dir = server_dir(&a.dir)?;
    let accounts = crate::backend::for_command(&dir).await?;
    // Revoking again changes nothing, but the client exists.
    let known = accounts.revoke_client(&a.name).await? || accounts.client(&a.name).await?.is_some();
    if !known {
        return Err(Failure::new(NOT_FOUND, format!("no client named '{}'", a.name)).into());
    }
    output::result(
        || format!("revoked {}", a.name),
        || json!({"name": a.name, "revoked": true}),
    )?;
    note!(
        "its credential no longer works, also on a running server; re-issue with: ferry client issue {} --role ROLE",
        a.name
    );
    Ok(())
}

async fn list(a: &ClientListArgs) -> anyhow::Result<()> {
    let dir = server_dir(&a.dir)?;
    let clients = crate::backend::for_command(&dir).await?.clients().await?;
    let status = |revoked: bool| if revoked { "revoked" } else { "active" };
    if output::json() {
        let items: Vec<_> = clients
            .iter()
            .map(|(name, c)| {
                let mut others = c.attributes.clone();
                let role = others.remove("role").unwrap_or_default();
                json!({
                    "name": name,
                    "role": role,
                    "attributes": others,
                    "epoch": c.epoch,
                    "issued": c.issued,
                    "status": status(c.revoked),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(());
    }
    if clients.is_empty() {
        note!("no clients issued yet; issue one with: ferry client issue NAME --role ROLE");
        return Ok(());
    }
    let mut rows = vec![
        ["NAME", "ROLE", "ATTRIBUTES", "EPOCH", "ISSUED", "STATUS"]
            .map(str::to_owned)
            .to_vec(),
    ];
    for (name, c) in &clients {
        let others: Vec<String> = c
            .attributes
            .iter()
            .filter(|(k, _)| k.as_str() != "role")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        rows.push(vec![
            name.clone(),
            c.attributes.get("role").cloned().unwrap_or_default(),
            if others.is_empty() {
                "-".to_owned()
            } else {
                others.join(",")
            },
            c.epoch.to_string(),
            output::time(c.issued),
            status(c.revoked).to_owned(),
        ]);
    }
    print!("{}", output::table(&rows, &[3]));
    Ok(())
}

/// A path as a shell word, quoted if needed.
pub fn quote(path: &Path) -> String {
    let s = path.display().to_string();
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=@,:".contains(&b))
    {
        s
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}
