//! The HTTP front through nginx terminating TLS: ferry's signed requests (`ferry put/get
//! --via http`, and in-process `HttpClient::stat`) against unsigned transfers through the same
//! nginx (curl of a static file, `curl -T` to nginx's WebDAV PUT), in one run. nginx comes from
//! bench/setup.sh (its certificate is made here, one that is not a CA); its configuration for this section is written into a
//! temporary folder (the prepared one is not touched).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, ensure};

use crate::Opts;
use crate::ext::{have, sbin, wait_listening};
use crate::files::{scratch, timed};
use crate::procs::{self, Env, Guard};
use crate::report::{Goal, Report};

fn hash_file(p: &Path) -> Result<blake3::Hash> {
    let mut h = blake3::Hasher::new();
    h.update_reader(std::fs::File::open(p)?)?;
    Ok(h.finalize())
}

/// nginx in front of `ferry serve --http`, and the ferry server behind it.
struct Stage {
    dir: tempfile::TempDir,
    ferry: PathBuf,
    cred: PathBuf,
    cert: PathBuf,
    url: String,
    env: Env,
    _nginx: Guard,
    _server: Guard,
}

impl Stage {
    fn start(exe: &Path, env: &Env) -> Result<Stage> {
        let ferry = exe.with_file_name("ferry");
        ensure!(
            ferry.is_file(),
            "{} not found: build it with `cargo build --release -p ferry-cli`",
            ferry.display()
        );
        let dir = scratch("ferry-bench-http-")?;
        let d = dir.path();
        for sub in ["www", "tmp", "srv-parent"] {
            std::fs::create_dir_all(d.join(sub))?;
        }
        let srv = d.join("srv-parent/srv");
        let cred = d.join("bench.cred");
        let (tls_port, http_port, nginx_port) = (
            procs::free_port()?,
            procs::free_port()?,
            procs::free_port()?,
        );
        let url = format!("https://127.0.0.1:{nginx_port}");
        let quiet = |c: &mut Command| {
            env.apply(c);
            c.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
        };
        let mut init = Command::new(&ferry);
        quiet(&mut init);
        timed(init.arg("init").arg("--dir").arg(&srv), "ferry init")?;
        let mut issue = Command::new(&ferry);
        quiet(&mut issue);
        issue
            .args(["client", "issue", "bench", "--role", "writer", "--dir"])
            .arg(&srv)
            .args(["--server", &format!("127.0.0.1:{tls_port}")])
            .args(["--http-url", &url, "--out"])
            .arg(&cred);
        timed(&mut issue, "ferry client issue")?;
        let mut serve = Command::new(&ferry);
        quiet(&mut serve);
        serve
            .arg("serve")
            .arg("--dir")
            .arg(&srv)
            .args(["--listen", &format!("127.0.0.1:{tls_port}")])
            .args(["--http", &format!("127.0.0.1:{http_port}")]);
        let mut server = Guard::spawn(&mut serve)?;
        server.term_first = true;
        wait_listening(http_port)?;

        let user_line = if std::env::var("USER").as_deref() == Ok("root")
            || std::fs::read_to_string("/proc/self/status")
                .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:\t0\t")))
        {
            "user root;"
        } else {
            ""
        };
        let conf = format!(
            "{user_line}
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    server {{
        listen 127.0.0.1:{nginx_port} ssl;
        ssl_certificate {d}/cert.pem;
        ssl_certificate_key {d}/key.pem;
        ssl_protocols TLSv1.3;
        ssl_session_tickets off;
        client_max_body_size 0;
        location /v1/ {{
            proxy_pass http://127.0.0.1:{http_port};
            proxy_http_version 1.1;
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_buffer_size 256k;
            proxy_buffers 4 256k;
            proxy_busy_buffers_size 256k;
            client_body_buffer_size 256k;
            proxy_read_timeout 300s;
            proxy_send_timeout 300s;
        }}
        location /static/ {{
            root {d}/www;
            dav_methods PUT;
            create_full_put_path on;
        }}
    }}
}}
",
            d = d.display(),
        );
        // A certificate for 127.0.0.1 that is not a CA (webpki refuses a CA certificate as a
        // server's, which is what bench/setup.sh's `openssl req -x509` makes).
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])?;
        std::fs::write(d.join("cert.pem"), cert.cert.pem())?;
        std::fs::write(d.join("key.pem"), cert.signing_key.serialize_pem())?;
        let conf_path = d.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let mut c = Command::new(sbin("nginx"));
        env.apply(&mut c);
        c.arg("-p")
            .arg(d)
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(d.join("nginx-error.log"))
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut nginx = Guard::spawn(&mut c)?;
        nginx.term_first = true;
        wait_listening(nginx_port)?;
        Ok(Stage {
            ferry,
            cred,
            cert: d.join("cert.pem"),
            url,
            env: env.clone(),
            _nginx: nginx,
            _server: server,
            dir,
        })
    }

    /// `ferry ARGS --via http --http-ca CERT --cred CRED`, output discarded.
    fn ferry(&self, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Command {
        let mut c = Command::new(&self.ferry);
        self.env.apply(&mut c);
        for a in args {
            c.arg(a);
        }
        // Quiet (no progress, no notes): a failure still says why on stderr.
        c.args(["-q", "--via", "http", "--http-ca"])
            .arg(&self.cert)
            .arg("--cred")
            .arg(&self.cred)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        c
    }

    fn curl(&self) -> Command {
        let mut c = Command::new("curl");
        self.env.apply(&mut c);
        c.args(["-sS", "--fail", "-k", "--tlsv1.3"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }
}

/// `count` signed `stat` requests, one after another, each on its own connection (as
/// `HttpClient` makes them); requests per second.
fn signed_stats(stage: &Stage, count: usize) -> Result<f64> {
    let text = std::fs::read_to_string(&stage.cred)?;
    let cred = ferry::proto::credential::Credential::parse(&text)
        .map_err(|e| anyhow::anyhow!("credential: {e}"))?;
    let pem = std::fs::read(&stage.cert)?;
    let client = ferry::HttpClient::new(&stage.url, &cred)?.with_root_pem(&pem)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..count {
            client.stat("tiny").await.context("signed stat")?;
        }
        Ok(count as f64 / start.elapsed().as_secs_f64())
    })
}

/// `count` unsigned GETs of a small static file in one curl process, each on its own
/// connection (`Connection: close`); requests per second.
fn unsigned_gets(stage: &Stage, count: usize) -> Result<f64> {
    let mut c = stage.curl();
    c.args(["-H", "Connection: close"]);
    for _ in 0..count {
        c.arg(format!("{}/static/tiny.bin", stage.url));
    }
    Ok(count as f64 / timed(&mut c, "curl of the small file")?)
}

/// The HTTP front section.
pub fn http(o: &Opts, exe: &Path, env: &Env, rep: &mut Report) -> Result<()> {
    const SEC: &str = "HTTP front through nginx";
    if o.external.is_none() {
        rep.note(format!(
            "{SEC}: skipped (an external tool, nginx: bench/setup.sh and --external DIR)"
        ));
        return Ok(());
    }
    if !have("nginx") || !have("curl") {
        rep.note(format!(
            "{SEC}: skipped (nginx or curl missing; run bench/setup.sh)"
        ));
        return Ok(());
    }
    let stage = Stage::start(exe, env)?;
    let d = stage.dir.path().to_owned();
    // The bulk source, served as the static file too.
    let size = o.size_mib << 20;
    let src = d.join("www/static/big.bin");
    std::fs::create_dir_all(src.parent().context("static folder")?)?;
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&src)?);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..o.size_mib {
            for w in block.chunks_exact_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                w.copy_from_slice(&x.to_le_bytes());
            }
            f.write_all(&block)?;
        }
        f.flush()?;
    }
    let want = hash_file(&src)?;
    let tiny = d.join("www/static/tiny.bin");
    std::fs::write(&tiny, [7u8; 1024])?;
    timed(
        &mut stage.ferry(&[&"put", &"tiny", &tiny]),
        "ferry put tiny",
    )?;
    let small = if o.quick { 20 } else { 500 };
    let mb = |secs: f64| size as f64 / secs / 1e6;
    let (mut fp, mut cp, mut fg, mut cg, mut fs, mut cs) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for i in 0..o.reps {
        // Alternate which goes first, so a change of load falls on both.
        let order = if i % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for signed in order {
            if signed {
                let secs = timed(
                    &mut stage.ferry(&[&"put", &"big", &src]),
                    "ferry put --via http",
                )?;
                fp.push(mb(secs));
                let out = d.join("ferry-get.bin");
                let secs = timed(
                    &mut stage.ferry(&[&"get", &"big", &"-o", &out]),
                    "ferry get --via http",
                )?;
                ensure!(
                    hash_file(&out)? == want,
                    "ferry get --via http: wrong content"
                );
                std::fs::remove_file(&out)?;
                fg.push(mb(secs));
                fs.push(signed_stats(&stage, small)?);
            } else {
                let mut c = stage.curl();
                c.arg("-T")
                    .arg(&src)
                    .arg(format!("{}/static/up/big-{i}.bin", stage.url));
                cp.push(mb(timed(&mut c, "curl -T to nginx")?));
                let put = d.join(format!("www/static/up/big-{i}.bin"));
                ensure!(hash_file(&put)? == want, "curl -T: wrong content");
                std::fs::remove_file(&put)?;
                let out = d.join("curl-get.bin");
                let mut c = stage.curl();
                c.arg("-o")
                    .arg(&out)
                    .arg(format!("{}/static/big.bin", stage.url));
                cg.push(mb(timed(&mut c, "curl from nginx")?));
                ensure!(hash_file(&out)? == want, "curl: wrong content");
                std::fs::remove_file(&out)?;
                cs.push(unsigned_gets(&stage, small)?);
            }
        }
    }
    let mib = o.size_mib;
    rep.compare(
        SEC,
        &format!("signed put {mib} MiB (`ferry put --via http`), MB/s"),
        &fp,
        "unsigned `curl -T` (nginx WebDAV PUT)",
        &cp,
        "MB/s",
        Goal::AtLeast(0.8),
    );
    rep.compare(
        SEC,
        &format!("signed get {mib} MiB (`ferry get --via http`), MB/s"),
        &fg,
        "unsigned curl of the static file",
        &cg,
        "MB/s",
        Goal::AtLeast(0.8),
    );
    rep.compare(
        SEC,
        "small signed requests (stat), a connection each, per second",
        &fs,
        "unsigned GET of a 1 KiB static file",
        &cs,
        "req/s",
        Goal::AtLeast(0.7),
    );
    rep.note(format!(
        "{SEC}: nginx (TLS 1.3, a certificate made for the run) terminates TLS for both \
         sides; signed requests go on to `ferry serve --http` on loopback (store in tmpfs), \
         unsigned ones are served or written by nginx itself (static file, WebDAV PUT, in \
         tmpfs); every transferred file is hashed after its timed part; the signed small \
         requests run in the harness process ({small} `HttpClient::stat` in a row), the \
         unsigned ones in one curl process ({small} URLs, `Connection: close`)"
    ));
    Ok(())
}
