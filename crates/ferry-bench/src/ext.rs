//! The external baselines: `openssl s_server`/`s_client`, `scp` to a private sshd, and
//! `curl` from a private nginx, prepared by bench/setup.sh. Each writes into a file in memory
//! (tmpfs); the timed part ends when the last byte is there, and the file is hashed after.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::Opts;
use crate::procs::{self, Env, Guard};
use crate::report::{Goal, Report};

const LIMIT: Duration = Duration::from_secs(120);

/// Runs a client `tool` to its end (at most [`LIMIT`]), sampling its memory and that of
/// `server` every 50 ms; returns the seconds it took and the client's peak RSS in KiB.
fn run_sampled(c: &mut Command, mut server: Option<&mut Guard>, tool: &str) -> Result<(f64, u64)> {
    let start = Instant::now();
    let mut g = Guard::spawn(c)?;
    let mut last = Instant::now();
    // Bounded by LIMIT.
    let status = loop {
        if let Some(s) = g.try_wait()? {
            break s;
        }
        if start.elapsed() > LIMIT {
            bail!("{tool} took over {LIMIT:?}");
        }
        if last.elapsed() > Duration::from_millis(50) {
            g.sample();
            if let Some(s) = server.as_deref_mut() {
                s.sample();
            }
            last = Instant::now();
        }
        std::thread::sleep(Duration::from_micros(500));
    };
    let secs = start.elapsed().as_secs_f64();
    if !status.success() {
        bail!("{tool} failed ({status})");
    }
    Ok((secs, g.peak_kib))
}

/// Pairs (ferry MB/s, tool MB/s) per repetition, and the tool's peak RSS.
#[derive(Default)]
struct Tool {
    ferry: Vec<f64>,
    tool: Vec<f64>,
    client_kib: u64,
    server_kib: u64,
}

/// The external baselines of one bulk section.
pub struct External {
    dir: Option<PathBuf>,
    vars: BTreeMap<String, String>,
    src: PathBuf,
    out: tempfile::TempDir,
    size: u64,
    hash: String,
    env: Env,
    tools: BTreeMap<&'static str, Tool>,
    sshd: Option<Guard>,
    nginx: Option<Guard>,
    skipped: Vec<String>,
}

/// The `KEY=value` lines of bench/setup.sh's `ports.env` in `dir`.
pub fn read_ports(dir: &Path) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(dir.join("ports.env"))
        .with_context(|| format!("{}: run bench/setup.sh first", dir.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

/// Starts the private sshd prepared by bench/setup.sh in `dir`, listening on `port`.
pub fn start_sshd(dir: &Path, port: u16, env: &Env) -> Result<Guard> {
    let mut c = Command::new(sbin("sshd"));
    env.apply(&mut c);
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .arg("-D")
        .arg("-f")
        .arg(dir.join("sshd_config"));
    let g = Guard::spawn(&mut c)?;
    wait_listening(port)?;
    Ok(g)
}

/// Options for ssh, scp (`port_flag` `-P`) and ssh (`-p`) against that sshd: AES-256-GCM,
/// the prepared key, no prompts, a private known_hosts.
pub fn ssh_opts(dir: &Path, port_flag: &str, port: u16) -> Vec<String> {
    vec![
        port_flag.into(),
        port.to_string(),
        "-c".into(),
        "aes256-gcm@openssh.com".into(),
        "-i".into(),
        dir.join("id_ed25519").to_string_lossy().into_owned(),
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        "StrictHostKeyChecking=no".into(),
        "-o".into(),
        format!("UserKnownHostsFile={}", dir.join("known_hosts").display()),
    ]
}

/// Whether `cmd` is installed (on PATH or in /usr/sbin).
pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd} || test -x /usr/sbin/{cmd}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `cmd` from /usr/sbin if it is there (not always on a user's PATH), else as named.
pub fn sbin(cmd: &str) -> String {
    let p = format!("/usr/sbin/{cmd}");
    if Path::new(&p).exists() {
        p
    } else {
        cmd.to_owned()
    }
}

/// Whether a socket listens on 127.0.0.1:`port` (from /proc/net/tcp, without connecting).
fn listening(port: u16) -> bool {
    let want = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp").is_ok_and(|t| {
        t.lines().skip(1).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1] == want && f[3] == "0A"
        })
    })
}

pub fn wait_listening(port: u16) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if listening(port) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("nothing listens on 127.0.0.1:{port}")
}

fn hash_file(p: &Path) -> Result<(u64, String)> {
    let mut h = blake3::Hasher::new();
    let mut f = std::fs::File::open(p)?;
    let n = std::io::copy(&mut f, &mut h)?;
    Ok((n, h.finalize().to_hex().to_string()))
}

impl External {
    /// Prepares the baselines that are available; notes the others as skipped.
    pub fn new(
        o: &Opts,
        src: &Path,
        size: u64,
        hash: &str,
        env: &Env,
        rep: &mut Report,
    ) -> Result<Self> {
        let out = tempfile::Builder::new()
            .prefix("ferry-bench-ext-out-")
            .tempdir_in(if Path::new("/dev/shm").is_dir() {
                "/dev/shm"
            } else {
                "/tmp"
            })?;
        let mut vars = BTreeMap::new();
        let dir = o.external.clone();
        let mut skipped = Vec::new();
        match &dir {
            None => skipped.push("OpenSSL, scp and curl baselines skipped: run bench/setup.sh and pass --external DIR".to_owned()),
            Some(d) => {
                vars = read_ports(d)?;
            }
        }
        for s in &skipped {
            rep.note(s.clone());
        }
        Ok(Self {
            dir,
            vars,
            src: src.to_owned(),
            out,
            size,
            hash: hash.to_owned(),
            env: env.clone(),
            tools: BTreeMap::new(),
            sshd: None,
            nginx: None,
            skipped,
        })
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        self.env.apply(&mut c);
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    fn port(&self, key: &str) -> Result<u16> {
        Ok(self
            .vars
            .get(key)
            .context("ports.env incomplete")?
            .parse()?)
    }

    /// Checks the output file (after an HTTP header, if `http`), removes it, returns MB/s.
    fn verify(&self, out: &Path, secs: f64, what: &str, http: bool) -> Result<f64> {
        let (n, h) = if http {
            let data = std::fs::read(out)?;
            let body = data
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(&data[..], |p| &data[p + 4..]);
            (body.len() as u64, blake3::hash(body).to_hex().to_string())
        } else {
            hash_file(out)?
        };
        let _ = std::fs::remove_file(out);
        if n != self.size || h != self.hash {
            bail!(
                "{what}: received {n} bytes with BLAKE3 {h}, expected {} with {}",
                self.size,
                self.hash
            );
        }
        Ok(self.size as f64 / secs / 1e6)
    }

    /// Waits until `out` holds the whole source, sampling memory; returns seconds.
    fn wait_file(
        &self,
        out: &Path,
        want: u64,
        start: Instant,
        procs: &mut [&mut Guard],
    ) -> Result<f64> {
        let mut last_sample = Instant::now();
        loop {
            let len = std::fs::metadata(out).map_or(0, |m| m.len());
            if len >= want {
                let secs = start.elapsed().as_secs_f64();
                for p in procs.iter_mut() {
                    p.sample();
                }
                return Ok(secs);
            }
            if start.elapsed() > LIMIT {
                bail!(
                    "{} received only {len} bytes within {LIMIT:?}",
                    out.display()
                );
            }
            if last_sample.elapsed() > Duration::from_millis(50) {
                for p in procs.iter_mut() {
                    p.sample();
                }
                last_sample = Instant::now();
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }

    fn openssl(&mut self, upload: bool) -> Result<(f64, u64, u64)> {
        let dir = self.dir.clone().context("no dir")?;
        let port = procs::free_port()?;
        let out = self
            .out
            .path()
            .join(if upload { "openssl-put" } else { "openssl-get" });
        let file = std::fs::File::create(&out)?;
        let src = std::fs::File::open(&self.src)?;
        let mut server = self.cmd("openssl");
        server
            .args([
                "s_server",
                "-quiet",
                "-tls1_3",
                "-ciphersuites",
                "TLS_AES_256_GCM_SHA384",
            ])
            .args(["-groups", "X25519", "-no_ticket", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(dir.join("cert.pem"))
            .arg("-key")
            .arg(dir.join("key.pem"));
        let mut client = self.cmd("openssl");
        client
            .args([
                "s_client",
                "-quiet",
                "-tls1_3",
                "-ciphersuites",
                "TLS_AES_256_GCM_SHA384",
            ])
            .args(["-groups", "X25519", "-connect"])
            .arg(format!("127.0.0.1:{port}"));
        // Upload: s_client sends its standard input (the source) and s_server writes what
        // it receives; its idle stdin is a pipe held open, so it does not close early.
        // Download: s_server -WWW serves the file (s_server sends only the first 16 KiB of
        // a file on its stdin) after a 45-byte HTTP/1.0 header, which is stripped before
        // hashing.
        let header = b"HTTP/1.0 200 ok\r\nContent-type: text/plain\r\n\r\n".len() as u64;
        let want = if upload {
            server.stdin(Stdio::piped()).stdout(file);
            client.stdin(src);
            self.size
        } else {
            let name = self
                .src
                .file_name()
                .context("source name")?
                .to_string_lossy()
                .into_owned();
            let req = self.out.path().join("request");
            std::fs::write(&req, format!("GET /{name} HTTP/1.0\r\n\r\n"))?;
            server
                .arg("-WWW")
                .current_dir(self.src.parent().context("source folder")?);
            client.stdin(std::fs::File::open(&req)?).stdout(file);
            self.size + header
        };
        let mut s = Guard::spawn(&mut server)?;
        wait_listening(port)?;
        let start = Instant::now();
        let mut c = Guard::spawn(&mut client)?;
        let secs = self.wait_file(&out, want, start, &mut [&mut s, &mut c])?;
        let (ck, sk) = (c.peak_kib, s.peak_kib);
        drop(c);
        drop(s);
        Ok((self.verify(&out, secs, "openssl", !upload)?, ck, sk))
    }

    fn scp(&mut self, upload: bool) -> Result<(f64, u64, u64)> {
        let dir = self.dir.clone().context("no dir")?;
        let port = self.port("SSH_PORT")?;
        if self.sshd.is_none() {
            self.sshd = Some(start_sshd(&dir, port, &self.env)?);
        }
        let user = self
            .vars
            .get("USER")
            .cloned()
            .unwrap_or_else(|| "root".into());
        let out = self
            .out
            .path()
            .join(if upload { "scp-put" } else { "scp-get" });
        let remote = |p: &Path| format!("{user}@127.0.0.1:{}", p.display());
        let mut c = self.cmd("scp");
        c.arg("-q").args(ssh_opts(&dir, "-P", port));
        if upload {
            c.arg(&self.src).arg(remote(&out));
        } else {
            c.arg(remote(&self.src)).arg(&out);
        }
        let (secs, client_kib) = run_sampled(&mut c, self.sshd.as_mut(), "scp")?;
        let sk = self.sshd.as_ref().map_or(0, |s| s.peak_kib);
        Ok((self.verify(&out, secs, "scp", false)?, client_kib, sk))
    }

    fn curl(&mut self) -> Result<(f64, u64, u64)> {
        let dir = self.dir.clone().context("no dir")?;
        let port = self.port("HTTPS_PORT")?;
        if self.nginx.is_none() {
            let link = dir.join("www").join("data.bin");
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&self.src, &link)?;
            let mut c = self.cmd(&sbin("nginx"));
            c.arg("-p")
                .arg(&dir)
                .arg("-c")
                .arg(dir.join("nginx.conf"))
                .arg("-e")
                .arg(dir.join("nginx-error.log"))
                .args(["-g", "daemon off;"]);
            let mut g = Guard::spawn(&mut c)?;
            g.term_first = true;
            wait_listening(port)?;
            self.nginx = Some(g);
        }
        let out = self.out.path().join("curl-get");
        let mut c = self.cmd("curl");
        c.args(["-sS", "--fail", "-k", "--tlsv1.3", "--tls-max", "1.3"])
            .args([
                "--tls13-ciphers",
                "TLS_AES_256_GCM_SHA384",
                "--curves",
                "X25519",
                "-o",
            ])
            .arg(&out)
            .arg(format!("https://127.0.0.1:{port}/data.bin"));
        let (secs, client_kib) = run_sampled(&mut c, self.nginx.as_mut(), "curl")?;
        let sk = self.nginx.as_ref().map_or(0, |s| s.peak_kib);
        Ok((self.verify(&out, secs, "curl", false)?, client_kib, sk))
    }

    /// Runs every available tool once; `ferry_get`/`ferry_put` hold ferry's figures so far
    /// (the last is this repetition's, paired with the tool's).
    pub fn rep(&mut self, _i: usize, ferry_get: &mut [f64], ferry_put: &mut [f64]) -> Result<()> {
        if self.dir.is_none() {
            return Ok(());
        }
        let fg = ferry_get.last().copied().unwrap_or(f64::NAN);
        let fp = ferry_put.last().copied().unwrap_or(f64::NAN);
        type Run = fn(&mut External) -> Result<(f64, u64, u64)>;
        let runs: [(&'static str, &str, &str, f64, Run); 5] = [
            ("openssl get", "openssl", "openssl", fg, |e| {
                e.openssl(false)
            }),
            ("openssl put", "openssl", "openssl", fp, |e| e.openssl(true)),
            ("scp get", "scp", "sshd", fg, |e| e.scp(false)),
            ("scp put", "scp", "sshd", fp, |e| e.scp(true)),
            ("curl get", "curl", "nginx", fg, |e| e.curl()),
        ];
        for (name, client, server, ferry, run) in runs {
            if !have(client) || !have(server) {
                let msg = format!(
                    "{name}: skipped ({client} or {server} not installed; run bench/setup.sh)"
                );
                if !self.skipped.contains(&msg) {
                    self.skipped.push(msg);
                }
                continue;
            }
            let (mbps, ck, sk) = run(self).with_context(|| name.to_owned())?;
            let t = self.tools.entry(name).or_default();
            t.ferry.push(ferry);
            t.tool.push(mbps);
            t.client_kib = t.client_kib.max(ck);
            t.server_kib = t.server_kib.max(sk);
        }
        Ok(())
    }

    /// Adds the comparisons to the report.
    pub fn finish(&mut self, sec: &str, rep: &mut Report) {
        for s in &self.skipped {
            rep.note(s.clone());
        }
        let label = self.env.label();
        for (name, t) in &self.tools {
            let (base, goal, what) = match *name {
                "openssl get" => ("openssl s_server → s_client", Goal::None, "get"),
                "openssl put" => ("openssl s_client → s_server", Goal::None, "put (memory)"),
                "scp get" => ("scp -c aes256-gcm from sshd", Goal::AtLeast(2.0), "get"),
                "scp put" => (
                    "scp -c aes256-gcm to sshd",
                    Goal::AtLeast(2.0),
                    "put (memory)",
                ),
                _ => (
                    "curl from nginx (HTTPS, TLS 1.3)",
                    Goal::AtLeast(1.2),
                    "get",
                ),
            };
            rep.compare(
                sec,
                &format!("{what}, MB/s"),
                &t.ferry,
                base,
                &t.tool,
                "MB/s",
                goal,
            );
            // 0: the process ended before the first sample (tiny runs).
            rep.memory(
                &format!("{name}, {label}"),
                (t.client_kib > 0).then_some(t.client_kib),
                (t.server_kib > 0).then_some(t.server_kib),
            );
        }
        if !self.tools.is_empty() {
            rep.note(
                "external tools: AES-256-GCM, X25519 (OpenSSL 3.0 here has no ML-KEM hybrid); they \
                 write into a tmpfs file, hashed after the timed part; their peak RSS is the \
                 largest VmHWM in each process tree, sampled every 50 ms"
                    .to_owned(),
            );
        }
    }
}
