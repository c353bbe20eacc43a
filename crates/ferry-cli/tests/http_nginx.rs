//! The HTTP front behind a real nginx that terminates TLS (its own configuration in a temp
//! folder, a self-signed certificate made here, `proxy_request_buffering off` and
//! `proxy_buffering off` so bodies stream), in front of `ferry serve --http`: a 64 MiB put and
//! get byte-identical through `ferry put/get --via http`, roles enforced, a get interrupted and
//! resumed with `Range`. Skips, saying why, only if nginx cannot be found (`.ci/run` installs
//! it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Env, Served, hash_file, write_pattern};

const LEN: u64 = 64 << 20;

fn nginx() -> Option<PathBuf> {
    for p in ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(p).is_file() {
            return Some(p.into());
        }
    }
    let out = Command::new("sh")
        .args(["-c", "command -v nginx"])
        .output()
        .ok()?;
    let p = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!p.is_empty()).then(|| p.into())
}

/// A free loopback port (bound, then released for nginx to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Nginx {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Nginx {
    fn start(bin: &Path, dir: &Path, upstream: &str) -> Self {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
        let port = free_port();
        let d = dir.display();
        let conf = format!(
            "daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
  access_log {d}/access.log;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  client_max_body_size 0;
  server {{
    listen 127.0.0.1:{port} ssl;
    server_name localhost;
    ssl_certificate {d}/cert.pem;
    ssl_certificate_key {d}/key.pem;
    ssl_protocols TLSv1.3;
    location / {{
      proxy_pass http://{upstream};
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_request_buffering off;
      proxy_buffering off;
      proxy_buffer_size 256k;
      proxy_buffers 4 256k;
      proxy_busy_buffers_size 256k;
      client_body_buffer_size 256k;
      proxy_read_timeout 120s;
      proxy_send_timeout 120s;
    }}
  }}
}}
"
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = Command::new(bin)
            .args([
                "-p",
                &d.to_string(),
                "-c",
                &format!("{d}/nginx.conf"),
                "-e",
                &format!("{d}/error.log"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut n = Self {
            child,
            dir: dir.to_owned(),
            port,
        };
        // Ready once it accepts; bounded.
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = n.child.try_wait() {
                panic!("nginx exited ({status}): {}", n.error_log());
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not start: {}",
                n.error_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        n
    }

    fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn through_nginx_terminating_tls() {
    let Some(bin) = nginx() else {
        println!(
            "SKIPPED through_nginx_terminating_tls: nginx not found (.ci/run installs it with apt-get)"
        );
        return;
    };
    let env = Env::new();
    env.init();
    let server =
        Served::spawn(env.command(&["serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"]));
    let line = server
        .wait_for_log("HTTP front listening on ", Duration::from_secs(30))
        .expect("the HTTP front starts");
    let upstream = line
        .split("HTTP front listening on ")
        .nth(1)
        .unwrap()
        .trim()
        .to_owned();
    let ngx_dir = env.join("nginx");
    std::fs::create_dir(&ngx_dir).unwrap();
    let nginx = Nginx::start(&bin, &ngx_dir, &upstream);
    let url = nginx.url();
    let ca = ngx_dir.join("cert.pem");
    // Credentials that record the HTTP URL.
    let issue = |name: &str, role: &str| -> PathBuf {
        let path = env.join(&format!("{name}.cred"));
        env.run(&[
            "client",
            "issue",
            name,
            "--role",
            role,
            "--server",
            &server.addr,
            "--http-url",
            &url,
            "--out",
            path.to_str().unwrap(),
        ])
        .ok();
        path
    };
    let writer = issue("alice", "writer");
    let reader = issue("bob", "reader");
    assert!(
        std::fs::read_to_string(&writer)
            .unwrap()
            .contains(&format!("http_url = \"{url}\""))
    );
    let via = |cred: &Path, args: &[&str]| {
        let mut v = args.to_vec();
        v.extend([
            "--via",
            "http",
            "--http-ca",
            ca.to_str().unwrap(),
            "--cred",
            cred.to_str().unwrap(),
        ]);
        common::run(env.command(&v), None, Duration::from_secs(300))
    };
    // 64 MiB up and down, byte-identical.
    let src = env.join("big.bin");
    let want = write_pattern(&src, "nginx", LEN);
    let out = via(&writer, &["put", "big", src.to_str().unwrap()]);
    assert_eq!(out.code, 0, "put: {}", out.stderr);
    let dst = env.join("big.out");
    let out = via(&reader, &["get", "big", "-o", dst.to_str().unwrap()]);
    assert_eq!(out.code, 0, "get: {}", out.stderr);
    assert_eq!(hash_file(&dst), want);
    // Both went through nginx.
    let access = nginx.access_log();
    assert!(
        access.contains("\"PUT /v1/sources/big?size=67108864 HTTP/1.1\" 201"),
        "{access}"
    );
    assert!(access.contains("\"GET /v1/sources/big"), "{access}");
    // Roles enforced through the proxy: the reader may not put (403 naming role and operation).
    let out = via(&reader, &["put", "nope", src.to_str().unwrap()]);
    assert_ne!(out.code, 0);
    let text = out.stderr.clone();
    assert!(
        text.contains("permission denied") && text.contains("reader") && text.contains("put"),
        "{text}"
    );
    let out = via(&writer, &["stat", "big"]);
    assert_eq!(out.code, 0, "stat: {}", out.stderr);
    assert!(
        out.text().contains(&want.to_hex().to_string()),
        "{}",
        out.text()
    );
    // A get interrupted and resumed with Range, through the proxy (the library client).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cred =
            ferry::proto::credential::Credential::parse(&std::fs::read_to_string(&reader).unwrap())
                .unwrap();
        let pem = std::fs::read(&ca).unwrap();
        let client = ferry::HttpClient::new(&url, &cred)
            .unwrap()
            .with_root_pem(&pem)
            .unwrap();
        let entry = client.stat("big").await.unwrap();
        let mut part = Cut {
            data: Vec::new(),
            limit: 10 << 20,
        };
        assert!(
            client
                .get_to("big", Some(entry.version), 0, &mut part)
                .await
                .is_err()
        );
        assert_eq!(part.data.len(), 10 << 20);
        let mut rest = Hashing(blake3::Hasher::new(), 0);
        let got = client
            .get_to("big", Some(entry.version), 10 << 20, &mut rest)
            .await
            .unwrap();
        assert_eq!(
            (got.first, got.size, rest.1),
            (10 << 20, LEN, LEN - (10 << 20))
        );
        // The interrupted part and the resumed rest are the file's two pieces.
        assert_eq!(blake3::hash(&part.data), range_hash(&src, 0, 10 << 20));
        assert_eq!(rest.0.finalize(), range_hash(&src, 10 << 20, LEN));
    });
    assert!(
        nginx
            .access_log()
            .contains("\"GET /v1/sources/big?version=1 HTTP/1.1\" 206")
    );
    // ls and rm through the proxy too.
    let out = via(&reader, &["ls", "--json"]);
    assert_eq!(out.code, 0, "ls: {}", out.stderr);
    assert!(out.text().contains("\"big\""), "{}", out.text());
    // watch --via http: long polls through the proxy, from seq 0.
    let mut cmd = env.command(&[
        "watch",
        "--json",
        "--since",
        "0",
        "--via",
        "http",
        "--http-ca",
        ca.to_str().unwrap(),
        "--cred",
        reader.to_str().unwrap(),
    ]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut watcher = Killed(cmd.spawn().unwrap());
    let stdout = watcher.0.stdout.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = lines
        .recv_timeout(Duration::from_secs(60))
        .expect("a watch event");
    assert!(
        first.contains("\"op\":\"put\"") && first.contains("\"source\":\"big\""),
        "{first}"
    );
    let out = via(&writer, &["rm", "big"]);
    assert_eq!(out.code, 0, "rm: {}", out.stderr);
    assert!(out.text().contains("deleted big"), "{}", out.text());
    let next = lines
        .recv_timeout(Duration::from_secs(60))
        .expect("the deletion's event");
    assert!(
        next.contains("\"op\":\"rm\"") && next.contains("\"source\":\"big\""),
        "{next}"
    );
    drop(watcher);
    let out = via(&reader, &["stat", "big"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("not found"), "{}", out.stderr);
}

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// BLAKE3 of bytes `from..to` of `path`.
fn range_hash(path: &Path, from: u64, to: u64) -> blake3::Hash {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).unwrap();
    f.seek(SeekFrom::Start(from)).unwrap();
    let mut h = blake3::Hasher::new();
    h.update_reader(f.take(to - from)).unwrap();
    h.finalize()
}

/// Keeps what it is given and fails once it holds `limit` bytes.
struct Cut {
    data: Vec<u8>,
    limit: usize,
}

impl tokio::io::AsyncWrite for Cut {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let room = self.limit - self.data.len();
        if room == 0 {
            return std::task::Poll::Ready(Err(std::io::Error::other("cut by the test")));
        }
        let n = room.min(buf.len());
        self.data.extend_from_slice(&buf[..n]);
        std::task::Poll::Ready(Ok(n))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// Hashes and counts what it is given.
struct Hashing(blake3::Hasher, u64);

impl tokio::io::AsyncWrite for Hashing {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.0.update(buf);
        self.1 += buf.len() as u64;
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// A TCP relay to `upstream` that records every byte it passes, both ways: what the proxy
/// (nginx) sent on and received.
fn capture_relay(upstream: String) -> (String, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
    use std::io::{Read, Write};
    use std::sync::{Arc, Mutex};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(down) = conn else { break };
            let Ok(up) = TcpStream::connect(&upstream) else {
                break;
            };
            for (mut from, mut to) in [
                (down.try_clone().unwrap(), up.try_clone().unwrap()),
                (up, down),
            ] {
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 1 << 16];
                    while let Ok(n @ 1..) = from.read(&mut buf) {
                        log.lock().unwrap().extend_from_slice(&buf[..n]);
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
    (addr, seen)
}

#[test]
fn sealed_bodies_through_nginx_are_ciphertext_to_it() {
    let Some(bin) = nginx() else {
        println!(
            "SKIPPED sealed_bodies_through_nginx_are_ciphertext_to_it: nginx not found (.ci/run installs it with apt-get)"
        );
        return;
    };
    const MARKER: &[u8] = b"PLAINTEXT-MARKER-7f3a";
    let env = Env::new();
    env.init();
    let server =
        Served::spawn(env.command(&["serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"]));
    let line = server
        .wait_for_log("HTTP front listening on ", Duration::from_secs(30))
        .expect("the HTTP front starts");
    let front = line
        .split("HTTP front listening on ")
        .nth(1)
        .unwrap()
        .trim()
        .to_owned();
    // nginx -> capture relay -> ferry: the relay sees what nginx sees.
    let (upstream, seen) = capture_relay(front);
    let ngx_dir = env.join("nginx");
    std::fs::create_dir(&ngx_dir).unwrap();
    let nginx = Nginx::start(&bin, &ngx_dir, &upstream);
    let url = nginx.url();
    let ca = ngx_dir.join("cert.pem");
    let cred = env.join("alice.cred");
    env.run(&[
        "client",
        "issue",
        "alice",
        "--role",
        "writer",
        "--server",
        &server.addr,
        "--http-url",
        &url,
        "--out",
        cred.to_str().unwrap(),
    ])
    .ok();
    assert!(
        std::fs::read_to_string(&cred)
            .unwrap()
            .contains("http_seal = \"1:")
    );
    let via = |args: &[&str]| {
        let mut v = args.to_vec();
        v.extend([
            "--via",
            "http",
            "--http-ca",
            ca.to_str().unwrap(),
            "--cred",
            cred.to_str().unwrap(),
        ]);
        common::run(env.command(&v), None, Duration::from_secs(300))
    };
    // 8 MiB of plaintext made of the marker.
    let src = env.join("secret.bin");
    let data = MARKER.repeat((8 << 20) / MARKER.len());
    std::fs::write(&src, &data).unwrap();
    let out = via(&["put", "secret", src.to_str().unwrap(), "--seal"]);
    assert_eq!(out.code, 0, "put: {}", out.stderr);
    let dst = env.join("secret.out");
    let out = via(&["get", "secret", "-o", dst.to_str().unwrap(), "--seal"]);
    assert_eq!(out.code, 0, "get: {}", out.stderr);
    assert!(
        std::fs::read(&dst).unwrap() == data,
        "the sealed round trip differs"
    );
    {
        let seen = seen.lock().unwrap();
        assert!(seen.len() > 2 * data.len(), "the relay saw the bodies");
        assert!(
            !seen.windows(MARKER.len()).any(|w| w == MARKER),
            "the proxy saw plaintext of a sealed body"
        );
    }
    assert!(nginx.access_log().contains("\"PUT /v1/sources/secret"));
    // The capture does see plaintext when nothing is sealed.
    let small = env.join("small.bin");
    std::fs::write(&small, MARKER.repeat(10)).unwrap();
    let out = via(&["put", "plain", small.to_str().unwrap()]);
    assert_eq!(out.code, 0, "put: {}", out.stderr);
    let seen = seen.lock().unwrap();
    assert!(seen.windows(MARKER.len()).any(|w| w == MARKER));
}
