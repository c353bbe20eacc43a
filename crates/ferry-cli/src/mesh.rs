//! `ferry mesh ...`: create, open, close, join, list, remove and run a LAN mesh peer.

use anyhow::{Context, bail};
use ferry::ServerDir;
use ferry::mesh::device::DeviceKey;
use ferry::proto::mesh::state::{Member, MeshState};
use ferry::proto::secret::MeshKey;
use ferry::proto::server_id::ServerId;

use crate::account::read_password;
use crate::admin::server_dir;
use crate::cli::{
    DirArg, MeshCommand, MeshCreateArgs, MeshJoinArgs, MeshOpenArgs, MeshRemoveArgs, MeshUpArgs,
};
use crate::exit::{self, AUTH_FAILED, Failure, NOT_FOUND};

/// Runs one `ferry mesh` command.
pub fn run(cmd: MeshCommand) -> anyhow::Result<()> {
    match cmd {
        MeshCommand::Create(a) => create(&a),
        MeshCommand::Open(a) => open(&a),
        MeshCommand::Close(a) => close(&a),
        MeshCommand::Join(a) => crate::block_on(join(&a)),
        MeshCommand::Members(a) => members(&a),
        MeshCommand::Remove(a) => remove(&a),
        MeshCommand::Up(a) => crate::block_on(up(&a)),
    }
}

/// Initialises `dir` as a server folder if it holds none yet.
fn ensure_server(dir: &ServerDir) -> anyhow::Result<()> {
    if !dir.path().join("identity.key").exists() {
        dir.init()?;
        crate::output::note!("created a ferry server in {}", dir.path().display());
    }
    Ok(())
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "peer".to_owned())
}

fn random_key() -> anyhow::Result<MeshKey> {
    let mut k = zeroize::Zeroizing::new([0u8; 32]);
    ferry::tls::random_bytes(k.as_mut())?;
    Ok(MeshKey::from_bytes(*k))
}

fn listen_port(dir: &ServerDir) -> u16 {
    dir.config()
        .ok()
        .and_then(|c| c.listen.rsplit_once(':').and_then(|(_, p)| p.parse().ok()))
        .unwrap_or(0)
}

fn create(a: &MeshCreateArgs) -> anyhow::Result<()> {
    let dir = server_dir(&a.dir)?;
    ensure_server(&dir)?;
    if dir.mesh_state()?.is_some() {
        bail!("{} is already in a mesh", dir.path().display());
    }
    let name = a.name.clone().unwrap_or_else(host_name);
    ferry::proto::names::validate_display_name(&name).context("--name")?;
    let device = DeviceKey::from_identity(&dir.identity()?)?;
    let me = Member {
        spki: device.spki().to_vec(),
        name,
        addr: String::new(),
    };
    let state = MeshState::create(&a.mesh_name, me, random_key()?);
    let created = dir.update_mesh(|s| match s {
        Some(_) => (false, false),
        None => {
            *s = Some(state);
            (true, true)
        }
    })?;
    if !created {
        bail!("{} is already in a mesh", dir.path().display());
    }
    println!("{}", device.id());
    crate::output::note!("created mesh '{}' in {}", a.mesh_name, dir.path().display());
    crate::output::note!(
        "next: ferry mesh up --dir {0}   (and, to let peers join: ferry mesh open --dir {0})",
        dir.path().display()
    );
    Ok(())
}

fn open(a: &MeshOpenArgs) -> anyhow::Result<()> {
    let dir = server_dir(&a.dir)?;
    if dir.mesh_state()?.is_none() {
        bail!(
            "{} is in no mesh: run ferry mesh create first",
            dir.path().display()
        );
    }
    let pw = read_password(&a.password, "join password: ", true)?;
    if pw.is_empty() {
        bail!(exit::bad_input("the join password is empty"));
    }
    let until = ferry::clock::now().saturating_add(a.duration);
    dir.open_mesh(pw, until)?;
    crate::output::note!(
        "accepting joins for {}s (the peer's running server answers them)",
        a.duration
    );
    Ok(())
}

fn close(a: &DirArg) -> anyhow::Result<()> {
    let dir = server_dir(a)?;
    if dir.close_mesh()? {
        crate::output::note!("closed to joins: the join password is removed");
    } else {
        crate::output::note!("{} was not open to joins", dir.path().display());
    }
    Ok(())
}

async fn join(a: &MeshJoinArgs) -> anyhow::Result<()> {
    let dir = server_dir(&a.dir)?;
    let (peer_addr, peer_id) = match (&a.peer, &a.peer_id) {
        (Some(addr), Some(id)) => (addr.clone(), ServerId::parse(id).context("--peer-id")?),
        _ => discover(a).await?,
    };
    ensure_server(&dir)?;
    if dir.mesh_state()?.is_some() {
        bail!("{} is already in a mesh", dir.path().display());
    }
    let device = DeviceKey::from_identity(&dir.identity()?)?;
    let name = a.name.clone().unwrap_or_else(host_name);
    ferry::proto::names::validate_display_name(&name).context("--name")?;
    let pw = read_password(&a.password, "join password: ", false)?;
    let grant = match ferry::mesh::peer::join(
        &peer_addr,
        peer_id,
        &device,
        &name,
        listen_port(&dir),
        pw.as_bytes(),
    )
    .await
    {
        Ok(g) => g,
        Err(ferry::Error::AuthFailed) => {
            return Err(Failure::new(
                AUTH_FAILED,
                "joining failed: wrong password, or the peer is not accepting joins",
            )
            .into());
        }
        Err(e) => return Err(e.into()),
    };
    drop(pw);
    let mut state = MeshState::from_grant(grant).context("the peer sent an invalid mesh")?;
    if !state.is_member(&device.id()) {
        bail!("the peer's mesh does not list this peer as a member");
    }
    if let Some(m) = state.members.get_mut(&peer_id) {
        m.addr = peer_addr.clone();
    }
    let mesh_name = state.name.clone();
    dir.update_mesh(|s| {
        *s = Some(state);
        (true, ())
    })?;
    println!("{}", device.id());
    crate::output::note!("joined mesh '{mesh_name}' in {}", dir.path().display());
    Ok(())
}

/// `--discover`: the one open peer heard on the LAN.
async fn discover(a: &MeshJoinArgs) -> anyhow::Result<(String, ServerId)> {
    let wait = std::time::Duration::from_secs(a.discover_for.max(1));
    crate::output::note!(
        "listening for an open peer on UDP port {} (at most {}s)...",
        a.announce_port,
        wait.as_secs()
    );
    let found = ferry::mesh::peer::discover(a.announce_port, wait).await?;
    match found.as_slice() {
        [] => Err(Failure::new(
            NOT_FOUND,
            format!(
                "no open peer heard on UDP port {} within {}s: on a member, run \
                 `ferry mesh open` while `ferry mesh up` runs, or join with --peer and --peer-id",
                a.announce_port,
                wait.as_secs()
            ),
        )
        .into()),
        [f] => {
            crate::output::note!(
                "found {} (mesh '{}') at {}, device ID {}",
                printable(&f.name),
                printable(&f.mesh),
                f.addr,
                f.device
            );
            Ok((f.addr.to_string(), f.device))
        }
        several => {
            for f in several {
                crate::output::note!(
                    "  --peer {} --peer-id {}   ({}, mesh '{}')",
                    f.addr,
                    f.device,
                    printable(&f.name),
                    printable(&f.mesh)
                );
            }
            bail!(exit::bad_input(
                "several peers are open to joins; choose one with --peer and --peer-id"
            ))
        }
    }
}

fn members(a: &DirArg) -> anyhow::Result<()> {
    let dir = server_dir(a)?;
    let Some(state) = dir.mesh_state()? else {
        bail!("{} is in no mesh", dir.path().display());
    };
    let me = dir.identity()?.server_id();
    let now = ferry::clock::now();
    println!("mesh '{}', epoch {}", state.name, state.epoch);
    for (id, name, addr, seen) in ferry::mesh::files::members_with_seen(&state, &dir.mesh_seen()) {
        let seen = match seen {
            _ if id == me => "this peer".to_owned(),
            Some(t) => format!("{}s ago", now.saturating_sub(t)),
            None => "never".to_owned(),
        };
        let addr = if addr.is_empty() {
            "-".to_owned()
        } else {
            printable(&addr)
        };
        println!("{id}  {:<16}  {addr:<22}  {seen}", printable(&name));
    }
    Ok(())
}

fn remove(a: &MeshRemoveArgs) -> anyhow::Result<()> {
    let dir = server_dir(&a.dir)?;
    let device = ServerId::parse(&a.device).context("DEVICE")?;
    if device == dir.identity()?.server_id() {
        bail!("this is this peer's own device ID; remove it from another member");
    }
    let key = random_key()?;
    let epoch = dir.update_mesh(|s| match s {
        Some(s) if s.members.contains_key(&device) => {
            s.remove(&device, key);
            (true, Some(s.epoch))
        }
        _ => (false, None),
    })?;
    match epoch {
        Some(e) => {
            crate::output::note!("removed {device}; the mesh key is rotated (epoch {e})");
            Ok(())
        }
        None => Err(Failure::new(NOT_FOUND, format!("{device} is not a member")).into()),
    }
}

/// A name or address another peer chose, safe to print: control characters (which could
/// move the cursor or rewrite earlier lines of a terminal) are shown escaped.
fn printable(s: &str) -> String {
    crate::output::printable(s).into_owned()
}

async fn up(a: &MeshUpArgs) -> anyhow::Result<()> {
    let dir = server_dir(&a.dir)?;
    if dir.mesh_state()?.is_none() {
        bail!(
            "{} is in no mesh: run `ferry mesh create` or `ferry mesh join` first",
            dir.path().display()
        );
    }
    let server = ferry::Server::open(&dir)?;
    let listen = a
        .listen
        .clone()
        .unwrap_or_else(|| server.configured_listen().to_owned());
    let mut opts = ferry::mesh::runtime::MeshOptions::new(a.announce_port);
    if !a.announce_to.is_empty() {
        opts.targets = a.announce_to.clone();
    }
    opts.digest_every = std::time::Duration::from_secs(a.digest_every.max(1));
    let shutdown = crate::serve::shutdown_signal()?;
    let bound = server.bind(&listen).await?;
    let (stop_metrics, stopped) = tokio::sync::watch::channel(false);
    crate::serve::start_metrics(&a.report, bound.metrics(), stopped).await?;
    let reloads = crate::serve::reload_on_sighup(bound.reloader())?;
    tracing::info!("listening on {}", bound.local_addr());
    tracing::info!("folder {}", dir.path().display());
    ferry::mesh::runtime::run(dir, bound, opts, shutdown).await?;
    let _ = stop_metrics.send(true);
    reloads.abort();
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn printable_escapes_control_characters() {
        assert_eq!(super::printable("kitchen"), "kitchen");
        assert_eq!(super::printable("a\x1b[2Jb\n"), "a\\u{1b}[2Jb\\n");
        assert_eq!(super::printable("café"), "café");
    }
}
