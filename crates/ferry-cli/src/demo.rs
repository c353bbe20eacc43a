//! `ferry demo`: the whole flow in a temporary folder, in-process, checking every step.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, anyhow, bail};
use ferry::proto::credential::Credential;
use ferry::{Client, Server, ServerDir, fsutil};

use crate::admin::quote;
use crate::{credential, output};

/// Size of the demo file.
const DATA_LEN: u64 = 4 << 20;
const SOURCE: &str = "demo/data.bin";

fn step(command: &str) {
    println!("\n$ {command}");
}

fn result(text: impl std::fmt::Display) {
    println!("  {text}");
}

/// Issues `name` with `role` and writes its credential file, as `ferry client issue` does.
fn issue(
    dir: &ServerDir,
    name: &str,
    role: &str,
    addr: &str,
    base: &Path,
) -> anyhow::Result<Credential> {
    let out = &base.join(format!("{name}.cred"));
    let rel = |p: &Path| quote(p.strip_prefix(base).unwrap_or(p));
    step(&format!(
        "ferry client issue {name} --role {role} --server {addr} --out {} --dir {}",
        rel(out),
        rel(dir.path())
    ));
    let attrs = BTreeMap::from([("role".to_owned(), role.to_owned())]);
    let cred = dir.issue_client(name, attrs, Some(addr), output::now())?;
    fsutil::write_secret(out, cred.to_toml().as_bytes())?;
    result(format!(
        "wrote {} (mode 0600): {name}, role {role}, epoch {}",
        rel(out),
        cred.claims.epoch()
    ));
    credential::load(out)
}

/// Checks that `r` failed the way `expected` says, and narrates it.
fn refused<T>(
    r: Result<T, ferry::Error>,
    expected: fn(&ferry::Error) -> bool,
    what: &str,
) -> anyhow::Result<()> {
    match r {
        Err(e) if expected(&e) => {
            result(format!("refused as expected: {e}"));
            Ok(())
        }
        Err(e) => bail!("{what}: expected a different refusal, got: {e}"),
        Ok(_) => bail!("{what}: the server accepted it, but it must refuse"),
    }
}

/// Runs the demo.
pub async fn run() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir().context("cannot create a temporary folder")?;
    let base = tmp.path();
    println!(
        "ferry demo: the whole flow in {} (paths below are relative to it)",
        base.display()
    );
    let rel = |p: &Path| quote(p.strip_prefix(base).unwrap_or(p));

    let dir = ServerDir::new(base.join("server"));
    step(&format!("ferry init --dir {}", rel(dir.path())));
    let id = dir.init()?;
    result(format!("server ID {id}"));

    step(&format!(
        "ferry serve --dir {} --listen 127.0.0.1:0 &",
        rel(dir.path())
    ));
    let bound = Server::open(&dir)?.bind("127.0.0.1:0").await?;
    let addr = bound.local_addr().to_string();
    result(format!("listening on {addr}"));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(bound.run(async move {
        let _ = stop_rx.await;
    }));

    let alice_path = base.join("alice.cred");
    let bob_path = base.join("bob.cred");
    let alice = issue(&dir, "alice", "writer", &addr, base)?;
    let bob = issue(&dir, "bob", "reader", &addr, base)?;

    // A few MiB of random-looking data: BLAKE3's extendable output of a fixed seed.
    let data_path = base.join("data.bin");
    let mut data = Vec::with_capacity(DATA_LEN as usize);
    blake3::Hasher::new()
        .update(b"ferry demo")
        .finalize_xof()
        .take(DATA_LEN)
        .read_to_end(&mut data)?;
    fsutil::write_atomic(&data_path, &data, 0o644)?;

    step(&format!(
        "ferry put {SOURCE} {} --cred {}",
        rel(&data_path),
        rel(&alice_path)
    ));
    let mut writer = Client::connect(&alice).await?;
    let file = File::open(&data_path)?;
    let stored = writer
        .put(SOURCE, file, Some(DATA_LEN), &mut |_| {})
        .await?;
    result(format!(
        "stored {} v{} ({} bytes, blake3 {})",
        stored.source,
        stored.version,
        stored.size,
        output::short_hash(&stored.hash)
    ));
    if stored.size != DATA_LEN || stored.hash != *blake3::hash(&data).as_bytes() {
        bail!("put: the server stored different content");
    }

    let copy_path = base.join("copy.bin");
    step(&format!(
        "ferry get {SOURCE} -o {} --cred {}",
        rel(&copy_path),
        rel(&bob_path)
    ));
    let mut reader = Client::connect(&bob).await?;
    let (entry, copy) = reader.get(SOURCE, Vec::new(), &mut |_| {}).await?;
    if copy != data {
        bail!("get: the copy differs from the original");
    }
    fsutil::write_atomic(&copy_path, &copy, 0o644)?;
    result(format!(
        "saved {} v{} ({} bytes); identical to the original, byte for byte",
        entry.source, entry.version, entry.size
    ));

    step(&format!(
        "ferry put {SOURCE} {} --cred {}   # bob is a reader",
        rel(&data_path),
        rel(&bob_path)
    ));
    let r = reader
        .put(SOURCE, File::open(&data_path)?, Some(DATA_LEN), &mut |_| {})
        .await;
    refused(
        r,
        |e| matches!(e, ferry::Error::Forbidden(_)),
        "a reader's put",
    )?;
    let after = writer.stat(SOURCE).await?;
    if after.version != stored.version || after.hash != stored.hash {
        bail!("a refused put changed the stored source");
    }
    result(format!("{SOURCE} is still v{}", after.version));

    let forged_path = base.join("forged.cred");
    step(&format!(
        "sed 's/role = \"reader\"/role = \"writer\"/' {} > {f} && chmod 600 {f}",
        rel(&bob_path),
        f = rel(&forged_path)
    ));
    let text = fsutil::read_secret_text(&bob_path)?;
    if !text.contains("role = \"reader\"") {
        bail!("bob's credential has no role = \"reader\" line");
    }
    let forged = text.replace("role = \"reader\"", "role = \"writer\"");
    fsutil::write_secret(&forged_path, forged.as_bytes())?;
    step(&format!(
        "ferry put {SOURCE} {} --cred {}   # bob claims to be a writer",
        rel(&data_path),
        rel(&forged_path)
    ));
    let forged = credential::load(&forged_path)?;
    refused(
        Client::connect(&forged).await,
        |e| matches!(e, ferry::Error::AuthFailed),
        "a credential with an edited role",
    )?;

    let other = ServerDir::new(base.join("other-server"));
    step(&format!("ferry init --dir {}", rel(other.path())));
    let other_id = other.init()?;
    result(format!("server ID {other_id}"));
    let impostor_path = base.join("pinned-elsewhere.cred");
    step(&format!(
        "ferry ls --cred {}   # alice's credential with the other server's server_id",
        rel(&impostor_path)
    ));
    let mut impostor = alice.clone();
    impostor.server_id = other_id;
    fsutil::write_secret(&impostor_path, impostor.to_toml().as_bytes())?;
    refused(
        Client::connect(&credential::load(&impostor_path)?).await,
        |e| matches!(e, ferry::Error::ServerIdMismatch(_)),
        "a credential pinning another server",
    )?;

    step(&format!(
        "ferry client revoke bob --dir {}",
        rel(dir.path())
    ));
    if !dir.revoke_client("bob")? {
        bail!("revoke: bob is not in the registry");
    }
    result("revoked bob");
    step(&format!("ferry ls --cred {}", rel(&bob_path)));
    refused(
        Client::connect(&bob).await,
        |e| matches!(e, ferry::Error::AuthFailed),
        "a revoked credential",
    )?;
    // A connection opened before the revocation is refused at its next request.
    result("and bob's connection opened before the revocation, at its next request:");
    refused(
        reader.stat(SOURCE).await,
        |e| matches!(e, ferry::Error::AuthFailed),
        "a revoked client's open connection",
    )?;

    let _ = writer.close().await;
    let _ = stop_tx.send(());
    server
        .await
        .map_err(|e| anyhow!("server task failed: {e}"))??;
    println!("\nferry demo: success — every step behaved as expected");
    Ok(())
}
