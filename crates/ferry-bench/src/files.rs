//! Many small files, and one-shot commands, against what people use instead: `scp -r`,
//! `rsync -a` and `tar | ssh` over the private sshd of bench/setup.sh, and `ssh host true`.
//! ferry runs as its real binary (`ferry serve`, `ferry put -r`, `get -r`, `sync`, `stat`),
//! built next to this harness. Trees live in memory (tmpfs), on both sides, for every tool;
//! every copy is compared file by file with the source after the timed part.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::Opts;
use crate::ext::{have, read_ports, ssh_opts, start_sshd, wait_listening};
use crate::procs::{self, Env, Guard};
use crate::report::{Goal, Report};

/// The longest any one timed command may take.
const LIMIT: Duration = Duration::from_secs(600);

/// Size of every file of the tree.
const FILE_SIZE: usize = 4096;

/// Files per folder of the tree.
const PER_FOLDER: usize = 100;

/// A scratch folder in memory when the machine has one.
pub(crate) fn scratch(prefix: &str) -> Result<tempfile::TempDir> {
    let base = if Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    };
    Ok(tempfile::Builder::new().prefix(prefix).tempdir_in(base)?)
}

/// Runs `c` to its end (at most [`LIMIT`]) and returns the seconds it took.
pub(crate) fn timed(c: &mut Command, what: &str) -> Result<f64> {
    let start = Instant::now();
    let mut g = Guard::spawn(c)?;
    // Bounded by LIMIT.
    loop {
        if let Some(status) = g.try_wait()? {
            ensure!(status.success(), "{what} failed ({status})");
            return Ok(start.elapsed().as_secs_f64());
        }
        if start.elapsed() > LIMIT {
            bail!("{what} took over {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Writes `n` files of [`FILE_SIZE`] pseudo-random bytes (each different) into folders of
/// [`PER_FOLDER`].
fn make_tree(root: &Path, n: usize) -> Result<()> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..n {
        let dir = root.join(format!("d{:03}", i / PER_FOLDER));
        if i % PER_FOLDER == 0 {
            std::fs::create_dir_all(&dir)?;
        }
        let data: Vec<u8> = (0..FILE_SIZE / 8)
            .flat_map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()
            })
            .collect();
        std::fs::write(dir.join(format!("f{:03}.bin", i % PER_FOLDER)), data)?;
    }
    Ok(())
}

/// Every regular file under `root`: relative path → BLAKE3.
fn digest(root: &Path) -> Result<BTreeMap<PathBuf, blake3::Hash>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    // Bounded by the tree's size.
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let e = e?;
            let t = e.file_type()?;
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                let rel = e.path().strip_prefix(root)?.to_path_buf();
                out.insert(rel, blake3::hash(&std::fs::read(e.path())?));
            }
        }
    }
    Ok(out)
}

/// A `ferry serve` process on a fresh server folder, and a writer credential for it.
pub(crate) struct Ferry {
    /// The port it listens on.
    pub(crate) port: u16,
    bin: PathBuf,
    cred: PathBuf,
    env: Env,
    _server: Guard,
    _dir: tempfile::TempDir,
}

impl Ferry {
    pub(crate) fn start(exe: &Path, env: &Env) -> Result<Ferry> {
        let bin = exe.with_file_name("ferry");
        ensure!(
            bin.is_file(),
            "{} not found: build it with `cargo build --release -p ferry-cli`",
            bin.display()
        );
        let dir = scratch("ferry-bench-files-srv-")?;
        let srv = dir.path().join("srv");
        let cred = dir.path().join("bench.cred");
        let port = procs::free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let quiet = |c: &mut Command| {
            env.apply(c);
            c.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
        };
        let mut init = Command::new(&bin);
        quiet(&mut init);
        timed(init.arg("init").arg("--dir").arg(&srv), "ferry init")?;
        let mut issue = Command::new(&bin);
        quiet(&mut issue);
        issue
            .args(["client", "issue", "bench", "--role", "writer", "--dir"])
            .arg(&srv)
            .args(["--server", &addr, "--out"])
            .arg(&cred);
        timed(&mut issue, "ferry client issue")?;
        let mut serve = Command::new(&bin);
        quiet(&mut serve);
        serve
            .arg("serve")
            .arg("--dir")
            .arg(&srv)
            .args(["--listen", &addr]);
        let mut server = Guard::spawn(&mut serve)?;
        server.term_first = true;
        wait_listening(port)?;
        Ok(Ferry {
            port,
            bin,
            cred,
            env: env.clone(),
            _server: server,
            _dir: dir,
        })
    }

    /// `ferry ARGS --cred CRED --server ADDR`, output discarded: through another address
    /// (a proxy in front of the server).
    pub(crate) fn cmd_via(&self, addr: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Command {
        let mut c = self.cmd(args);
        c.args(["--server", addr]);
        c
    }

    /// `ferry ARGS --cred CRED`, output discarded.
    fn cmd(&self, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Command {
        let mut c = Command::new(&self.bin);
        self.env.apply(&mut c);
        for a in args {
            c.arg(a);
        }
        c.arg("--cred")
            .arg(&self.cred)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }
}

/// The private sshd of bench/setup.sh, and how to reach it.
pub(crate) struct Ssh {
    dir: PathBuf,
    port: u16,
    user: String,
    env: Env,
    _sshd: Guard,
}

impl Ssh {
    pub(crate) fn start(dir: &Path, env: &Env) -> Result<Ssh> {
        let vars = read_ports(dir)?;
        let port: u16 = vars
            .get("SSH_PORT")
            .context("ports.env: SSH_PORT")?
            .parse()?;
        let user = vars.get("USER").cloned().unwrap_or_else(|| "root".into());
        let sshd = start_sshd(dir, port, env)?;
        Ok(Ssh {
            dir: dir.to_owned(),
            port,
            user,
            env: env.clone(),
            _sshd: sshd,
        })
    }

    fn remote(&self, p: &Path) -> String {
        format!("{}@127.0.0.1:{}", self.user, p.display())
    }

    /// The `ssh` command line (for `rsync -e` and shell pipelines).
    fn ssh_line(&self) -> String {
        let mut parts = vec!["ssh".to_owned(), "-q".to_owned()];
        parts.extend(ssh_opts(&self.dir, "-p", self.port));
        parts.join(" ")
    }

    fn program(&self, p: &str) -> Command {
        let mut c = Command::new(p);
        self.env.apply(&mut c);
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    fn scp(&self, from: &str, to: &str) -> Command {
        let mut c = self.program("scp");
        c.arg("-q")
            .arg("-r")
            .args(ssh_opts(&self.dir, "-P", self.port))
            .args([from, to]);
        c
    }

    /// `rsync -a FILE user@127.0.0.1:DEST` over ssh to `port` (a proxy in front of sshd).
    pub(crate) fn rsync_via(&self, port: u16, from: &Path, to: &Path) -> Command {
        let mut ssh = vec!["ssh".to_owned(), "-q".to_owned()];
        ssh.extend(ssh_opts(&self.dir, "-p", port));
        let mut c = self.program("rsync");
        c.args(["-a", "-e", &ssh.join(" ")])
            .arg(from)
            .arg(self.remote(to));
        c
    }

    fn rsync(&self, from: &str, to: &str) -> Command {
        let mut c = self.program("rsync");
        c.args(["-a", "-e", &self.ssh_line(), from, to]);
        c
    }

    fn shell(&self, script: &str) -> Command {
        let mut c = self.program("sh");
        c.arg("-c").arg(script);
        c
    }
}

/// Per-repetition figures of every tool.
#[derive(Default)]
struct Figures(BTreeMap<&'static str, Vec<f64>>);

impl Figures {
    fn push(&mut self, k: &'static str, v: f64) {
        self.0.entry(k).or_default().push(v);
    }

    fn get(&self, k: &str) -> &[f64] {
        self.0.get(k).map_or(&[], Vec::as_slice)
    }
}

/// The many-small-files section: N files of 4 KiB up and down with every tool, then a sync
/// with nothing changed.
pub fn files(o: &Opts, exe: &Path, env: &Env, rep: &mut Report) -> Result<()> {
    const SEC: &str = "many small files";
    let Some(ext) = &o.external else {
        rep.note(format!(
            "{SEC}: skipped (scp, rsync and tar over ssh need bench/setup.sh and --external DIR)"
        ));
        return Ok(());
    };
    for tool in ["sshd", "scp", "rsync", "tar", "ssh"] {
        if !have(tool) {
            rep.note(format!(
                "{SEC}: skipped ({tool} not installed; run bench/setup.sh)"
            ));
            return Ok(());
        }
    }
    let n = if o.quick { 200 } else { 10_000 };
    let work = scratch("ferry-bench-files-")?;
    let src = work.path().join("src");
    make_tree(&src, n)?;
    // A sync "with nothing changed" is measured on a settled tree: a file changed less than
    // RACY_NS before it was hashed is not believed from the hash cache and is hashed again
    // (docs/BENCHMARKS.md), which is not what a sync of files written earlier pays.
    let written = Instant::now();
    let settled = Duration::from_nanos(ferry::proto::hash_cache::RACY_NS.unsigned_abs());
    let want = digest(&src)?;
    let ferry = Ferry::start(exe, env)?;
    let ssh = Ssh::start(ext, env)?;
    let q = |p: &Path| format!("'{}'", p.display());
    let mut f = Figures::default();
    for i in 0..o.reps {
        let prefix = format!("files{i}/");
        let at = |name: &str| work.path().join(format!("{name}{i}"));
        let check = |dir: &Path, what: &str| -> Result<()> {
            ensure!(
                digest(dir)? == want,
                "{what}: the copy in {} differs from the source",
                dir.display()
            );
            Ok(())
        };
        let per_sec = |secs: f64| n as f64 / secs;

        // ferry: one connection per command, many requests in flight.
        let up = timed(
            &mut ferry.cmd(&[&"put", &"-r", &src, &prefix]),
            "ferry put -r",
        )?;
        let out = at("ferry-out");
        let down = timed(
            &mut ferry.cmd(&[&"get", &"-r", &prefix, &out]),
            "ferry get -r",
        )?;
        check(&out, "ferry get -r")?;
        std::thread::sleep(settled.saturating_sub(written.elapsed()));
        let same = timed(
            &mut ferry.cmd(&[&"sync", &src, &prefix]),
            "ferry sync (nothing changed)",
        )?;
        f.push("ferry up", per_sec(up));
        f.push("ferry down", per_sec(down));
        f.push("ferry sync", same);

        // scp -r: a copy of the folder, both ways.
        let dest = at("scp-dest");
        let up = timed(
            &mut ssh.scp(&src.to_string_lossy(), &ssh.remote(&dest)),
            "scp -r up",
        )?;
        check(&dest, "scp -r up")?;
        let out = at("scp-out");
        let down = timed(
            &mut ssh.scp(&ssh.remote(&dest), &out.to_string_lossy()),
            "scp -r down",
        )?;
        check(&out, "scp -r down")?;
        f.push("scp up", per_sec(up));
        f.push("scp down", per_sec(down));

        // rsync -a over the same ssh; run again with nothing changed.
        let dest = at("rsync-dest");
        let (from, to) = (format!("{}/", src.display()), ssh.remote(&dest));
        let up = timed(&mut ssh.rsync(&from, &format!("{to}/")), "rsync -a up")?;
        check(&dest, "rsync -a up")?;
        let same = timed(
            &mut ssh.rsync(&from, &format!("{to}/")),
            "rsync -a (nothing changed)",
        )?;
        let out = at("rsync-out");
        let down = timed(
            &mut ssh.rsync(&format!("{to}/"), &format!("{}/", out.display())),
            "rsync -a down",
        )?;
        check(&out, "rsync -a down")?;
        f.push("rsync up", per_sec(up));
        f.push("rsync down", per_sec(down));
        f.push("rsync sync", same);

        // tar | ssh | tar.
        let dest = at("tar-dest");
        let remote = format!("{}@127.0.0.1", ssh.user);
        let line = ssh.ssh_line();
        let up = timed(
            &mut ssh.shell(&format!(
                "tar -C {} -cf - . | {line} {remote} \"mkdir -p {} && tar -C {} -xf -\"",
                q(&src),
                q(&dest),
                q(&dest)
            )),
            "tar | ssh up",
        )?;
        check(&dest, "tar | ssh up")?;
        let out = at("tar-out");
        let down = timed(
            &mut ssh.shell(&format!(
                "mkdir -p {o} && {line} {remote} \"tar -C {} -cf - .\" | tar -C {o} -xf -",
                q(&dest),
                o = q(&out)
            )),
            "tar | ssh down",
        )?;
        check(&out, "tar | ssh down")?;
        f.push("tar up", per_sec(up));
        f.push("tar down", per_sec(down));

        for name in [
            "ferry-out",
            "scp-dest",
            "scp-out",
            "rsync-dest",
            "rsync-out",
        ] {
            let _ = std::fs::remove_dir_all(at(name));
        }
        let _ = std::fs::remove_dir_all(at("tar-dest"));
        let _ = std::fs::remove_dir_all(at("tar-out"));
    }
    let what = |way: &str| format!("{n} files of 4 KiB {way}, files/s");
    for (way, fk) in [("up", "ferry up"), ("down", "ferry down")] {
        for (tool, base, goal) in [
            ("scp", "scp -r", Goal::AtLeast(3.0)),
            ("rsync", "rsync -a", Goal::AtLeast(1.5)),
            ("tar", "tar piped", Goal::None),
        ] {
            let key: &'static str = match (tool, way) {
                ("scp", "up") => "scp up",
                ("scp", _) => "scp down",
                ("rsync", "up") => "rsync up",
                ("rsync", _) => "rsync down",
                ("tar", "up") => "tar up",
                _ => "tar down",
            };
            rep.compare(
                SEC,
                &what(way),
                f.get(fk),
                &format!("{base} over ssh"),
                f.get(key),
                "files/s",
                goal,
            );
        }
    }
    rep.compare(
        SEC,
        &format!("sync of {n} files, nothing changed, seconds"),
        f.get("ferry sync"),
        "rsync -a over ssh",
        f.get("rsync sync"),
        "s",
        Goal::AtMost(1.0),
    );
    rep.note(format!(
        "{SEC}: {n} files of 4 KiB in folders of {PER_FOLDER}; source, server store and \
         destinations in tmpfs for every tool; ssh with AES-256-GCM and an Ed25519 key to a \
         private sshd on 127.0.0.1; every copy is compared with the source file by file after \
         its timed part; ferry's figures include its connection and authentication, the \
         tools' include ssh's"
    ));
    Ok(())
}

/// The whole-process CPU time (user + system) per command of `count` runs of `line` in a
/// shell loop, from the shell's `times`, and the wall time per command.
fn loop_cpu(line: &str, count: usize, env: &Env) -> Result<(f64, f64)> {
    let mut c = Command::new("bash");
    env.apply(&mut c);
    c.arg("-c")
        .arg(format!(
            "for i in $(seq {count}); do {line} >/dev/null || exit 1; done; times"
        ))
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    let start = Instant::now();
    let out = c.output()?;
    let wall = start.elapsed().as_secs_f64() / count as f64;
    ensure!(out.status.success(), "`{line}` failed in the loop");
    let text = String::from_utf8_lossy(&out.stdout);
    // `times`: the shell's user and system times, then its children's.
    let children = text.lines().nth(1).context("no output from `times`")?;
    let secs: f64 = children
        .split_whitespace()
        .map(parse_times)
        .sum::<Result<f64>>()?;
    Ok((secs / count as f64, wall))
}

/// Parses bash's `times` format, `1m2.345s`.
fn parse_times(s: &str) -> Result<f64> {
    let (m, rest) = s.split_once('m').context("bad `times` output")?;
    let secs = rest.strip_suffix('s').context("bad `times` output")?;
    Ok(m.parse::<f64>()? * 60.0 + secs.parse::<f64>()?)
}

/// The one-shot command section: `ferry stat` against `ssh host true` to the same machine.
pub fn command(o: &Opts, exe: &Path, env: &Env, rep: &mut Report) -> Result<()> {
    const SEC: &str = "one-shot command";
    let Some(ext) = &o.external else {
        rep.note(format!(
            "{SEC}: skipped (`ssh host true` needs bench/setup.sh and --external DIR)"
        ));
        return Ok(());
    };
    if !have("sshd") || !have("ssh") || !have("bash") {
        rep.note(format!(
            "{SEC}: skipped (sshd, ssh or bash missing; run bench/setup.sh)"
        ));
        return Ok(());
    }
    let count = if o.quick { 5 } else { 100 };
    let ferry = Ferry::start(exe, env)?;
    let probe = scratch("ferry-bench-probe-")?;
    let file = probe.path().join("probe.bin");
    std::fs::write(&file, b"probe")?;
    timed(&mut ferry.cmd(&[&"put", &"probe", &file]), "ferry put")?;
    let ssh = Ssh::start(ext, env)?;
    let ferry_line = format!(
        "'{}' stat probe --cred '{}'",
        ferry.bin.display(),
        ferry.cred.display()
    );
    let ssh_line = format!("{} {}@127.0.0.1 true", ssh.ssh_line(), ssh.user);
    let (mut fc, mut fw, mut sc, mut sw) = (vec![], vec![], vec![], vec![]);
    for i in 0..o.reps {
        // Alternate which goes first, so a change of load falls on both.
        let order = if i % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for is_ferry in order {
            if is_ferry {
                let (c, w) = loop_cpu(&ferry_line, count, env)?;
                fc.push(c * 1e3);
                fw.push(w * 1e3);
            } else {
                let (c, w) = loop_cpu(&ssh_line, count, env)?;
                sc.push(c * 1e3);
                sw.push(w * 1e3);
            }
        }
    }
    rep.compare(
        SEC,
        "`ferry stat`: client CPU (user + system) per command, ms",
        &fc,
        "`ssh host true`",
        &sc,
        "ms",
        Goal::AtMost(1.0),
    );
    rep.compare(
        SEC,
        "`ferry stat`: wall time per command, ms",
        &fw,
        "`ssh host true`",
        &sw,
        "ms",
        Goal::AtMost(1.0),
    );
    rep.note(format!(
        "{SEC}: {count} runs of each command per repetition in a bash loop; CPU is the \
         children's user + system time from bash's `times` (the client process only: the \
         servers' share is not counted on either side); the ferry binary is the release build \
         next to the harness"
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_times;

    #[test]
    fn times_format() {
        assert!((parse_times("0m0.250s").unwrap() - 0.25).abs() < 1e-9);
        assert!((parse_times("2m1.5s").unwrap() - 121.5).abs() < 1e-9);
        assert!(parse_times("0.25").is_err());
        assert!(parse_times("xm0s").is_err());
    }
}
