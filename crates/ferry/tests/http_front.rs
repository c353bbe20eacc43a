//! The HTTP front over real loopback sockets: every operation through the signed client, and
//! every attack the signing must stop, each observed as the *server's* refusal (its 401 and
//! its counters), not only as a client failing its own check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod http_common;

use std::time::Duration;

use ferry::Error;
use ferry::proto::http::target::encode;
use http_common::{HashSink, HttpServer, PatternReader, Signed, raw, signer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn now() -> u64 {
    ferry::clock::now()
}

#[tokio::test]
async fn every_operation_over_http() {
    let s = HttpServer::start().await;
    let alice = s.client(&s.issue("alice", "writer"));
    let e = alice
        .put("docs/a b.txt", &b"hello, ferry\n"[..], Some(13))
        .await
        .unwrap();
    assert_eq!(
        (e.source.as_str(), e.version, e.size),
        ("docs/a b.txt", 1, 13)
    );
    assert_eq!(e.hash, *blake3::hash(b"hello, ferry\n").as_bytes());
    let st = alice.stat("docs/a b.txt").await.unwrap();
    assert_eq!(st, e);
    let mut out = Vec::new();
    let got = alice
        .get_to("docs/a b.txt", None, 0, &mut out)
        .await
        .unwrap();
    assert_eq!(out, b"hello, ferry\n");
    assert_eq!((got.first, got.len, got.size), (0, 13, 13));
    // A range from the middle: 206 with a signed Content-Range.
    let mut out = Vec::new();
    let got = alice
        .get_to("docs/a b.txt", Some(1), 7, &mut out)
        .await
        .unwrap();
    assert_eq!(out, b"ferry\n");
    assert_eq!((got.first, got.size), (7, 13));
    let (entries, next) = alice.list("docs/", None).await.unwrap();
    assert_eq!(entries, vec![e.clone()]);
    assert_eq!(next, None);
    // Change events by long poll: a put seen from seq 0.
    let ch = alice
        .changes("docs/", Some(0), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(ch.events.len(), 1);
    assert_eq!(ch.events[0].source, "docs/a b.txt");
    // A poll waiting for the next change is answered by it.
    let seq = ch.seq;
    let bob = s.client(&s.issue("bob", "writer"));
    let waiter = tokio::spawn(async move {
        alice
            .changes("docs/", Some(seq), Duration::from_secs(30))
            .await
            .map(|c| (alice, c))
    });
    // The poll is registered before the put or after it: either way it sees the change.
    bob.put("docs/c", &b"x"[..], None).await.unwrap();
    let (alice, ch) = tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(ch.events.len(), 1);
    assert_eq!(ch.events[0].source, "docs/c");
    assert_eq!(ch.events[0].by, "bob");
    let v = alice.delete("docs/c").await.unwrap();
    assert_eq!(v, 2);
    assert!(matches!(
        alice.stat("docs/c").await,
        Err(Error::NotFound(_))
    ));
    // A whole range past the end is 416, refused by the server (signed, so believed).
    let mut out = Vec::new();
    let r = alice.get_to("docs/a b.txt", None, 13, &mut out).await;
    assert!(matches!(r, Err(Error::Remote { .. })), "{r:?}");
    s.stop().await;
}

#[tokio::test]
async fn a_role_without_the_right_gets_403_naming_role_and_operation() {
    let s = HttpServer::start().await;
    let reader = s.client(&s.issue("rita", "reader"));
    let r = reader.put("a", &b"data"[..], None).await;
    let Err(Error::Forbidden(message)) = r else {
        panic!("expected 403, got {r:?}");
    };
    assert!(
        message.contains("reader") && message.contains("put"),
        "{message}"
    );
    assert!(matches!(reader.delete("a").await, Err(Error::Forbidden(_))));
    // The 403 is the server's signed answer to an authenticated request.
    let before = s.stats.refusals();
    let raw_put = Signed::new(
        &signer(&s.issue("rita2", "reader")),
        "PUT",
        "/v1/sources/a",
        None,
        b"x",
        now(),
    );
    let got = raw(s.http, &raw_put.bytes()).await;
    assert_eq!(got.status, 403);
    assert!(got.header("x-ferry-signature").is_some());
    assert_eq!(s.stats.refusals().accepted, before.accepted + 1);
    s.stop().await;
}

#[tokio::test]
async fn a_request_replayed_verbatim_is_refused_by_the_server() {
    let s = HttpServer::start().await;
    let cred = s.issue("alice", "writer");
    s.client(&cred).put("a", &b"data"[..], None).await.unwrap();
    let req = Signed::new(&signer(&cred), "GET", "/v1/stat/a", None, b"", now()).bytes();
    let first = raw(s.http, &req).await;
    assert_eq!(
        first.status,
        200,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    let before = s.stats.refusals();
    let again = raw(s.http, &req).await;
    assert_eq!(again.status, 401);
    assert_eq!(
        again.body,
        br#"{"error":"unauthenticated","message":"request not authenticated"}"#
    );
    let after = s.stats.refusals();
    assert_eq!(after.replayed, before.replayed + 1);
    assert_eq!(after.accepted, before.accepted);
    // The server's metrics count the HTTP front's authentications and requests too.
    let m = s.metrics.render();
    for line in [
        "ferry_authentications_total{method=\"http\",outcome=\"failed\"} 1",
        "ferry_requests_total{op=\"put\",outcome=\"ok\"} 1",
        "ferry_requests_total{op=\"stat\",outcome=\"ok\"} 1",
    ] {
        assert!(m.lines().any(|l| l == line), "no {line:?} in\n{m}");
    }
    assert!(
        m.lines()
            .any(|l| l.starts_with("ferry_authentications_total{method=\"http\",outcome=\"ok\"}")),
        "{m}"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_request_outside_the_window_is_refused() {
    let s = HttpServer::start().await;
    let cred = s.issue("alice", "writer");
    for ts in [now() - 1000, now() + 1000] {
        let before = s.stats.refusals();
        let req = Signed::new(&signer(&cred), "GET", "/v1/list", None, b"", ts);
        let got = raw(s.http, &req.bytes()).await;
        assert_eq!(got.status, 401);
        assert_eq!(s.stats.refusals().outside_window, before.outside_window + 1);
    }
    // Inside the window it passes.
    let req = Signed::new(&signer(&cred), "GET", "/v1/list", None, b"", now() - 100);
    assert_eq!(raw(s.http, &req.bytes()).await.status, 200);
    s.stop().await;
}

/// Replaces `Name=value` in an Authorization header.
fn with_field(authorization: &str, name: &str, value: &str) -> String {
    authorization
        .split(", ")
        .map(|part| {
            let (head, field) = match part.split_once(' ') {
                Some((h, f)) if f.contains('=') && h.starts_with("FERRY1") => (format!("{h} "), f),
                _ => (String::new(), part),
            };
            let (n, _) = field.split_once('=').unwrap();
            if n == name {
                format!("{head}{n}={value}")
            } else {
                format!("{head}{field}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::test]
async fn a_request_with_any_signed_part_altered_is_refused() {
    let s = HttpServer::start().await;
    let cred = s.issue("alice", "writer");
    let other = s.issue("mallory", "writer");
    let client = s.client(&cred);
    client.put("a", &b"data"[..], None).await.unwrap();
    client.put("b", &b"other"[..], None).await.unwrap();
    let sig = signer(&cred);
    let get = Signed::new(&sig, "GET", "/v1/sources/a", Some("bytes=1-"), b"", now());
    let list = Signed::new(&sig, "GET", "/v1/list?prefix=a", None, b"", now());
    let put = Signed::new(&sig, "PUT", "/v1/sources/new", None, b"hello", now());
    let other_claims = Signed::new(&signer(&other), "GET", "/v1/list", None, b"", now())
        .authorization
        .split("Claims=")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_owned();
    let field = |a: &str, name: &str| -> String {
        a.split(&format!("{name}="))
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .to_owned()
    };
    let mut cases: Vec<(&str, Signed)> = Vec::new();
    let mut m = get.clone();
    m.method = "DELETE".into();
    cases.push(("method", m));
    let mut m = get.clone();
    m.target = "/v1/sources/b".into();
    cases.push(("path", m));
    let mut m = list.clone();
    m.target = "/v1/list?prefix=b".into();
    cases.push(("query", m));
    let mut m = list.clone();
    m.target = "/v1/list?prefix=a&after=a".into();
    cases.push(("query added", m));
    let mut m = get.clone();
    m.range = Some("bytes=2-".into());
    cases.push(("range", m));
    let mut m = put.clone();
    m.body = b"hellp".to_vec();
    cases.push(("body", m));
    let mut m = get.clone();
    m.authorization = with_field(&get.authorization, "Claims", &other_claims);
    cases.push(("claims", m));
    let mut m = get.clone();
    let ts: u64 = field(&get.authorization, "Timestamp").parse().unwrap();
    m.authorization = with_field(&get.authorization, "Timestamp", &(ts + 1).to_string());
    cases.push(("timestamp", m));
    let mut m = get.clone();
    let mut nonce = field(&get.authorization, "Nonce");
    let flipped = if nonce.starts_with('0') { "1" } else { "0" };
    nonce.replace_range(0..1, flipped);
    m.authorization = with_field(&get.authorization, "Nonce", &nonce);
    cases.push(("nonce", m));
    for (what, req) in cases {
        let before = s.stats.refusals();
        let got = raw(s.http, &req.bytes()).await;
        assert_eq!(
            got.status,
            401,
            "{what} altered: {}",
            String::from_utf8_lossy(&got.body)
        );
        let after = s.stats.refusals();
        assert_eq!(
            after.bad_signature,
            before.bad_signature + 1,
            "{what} altered: {before:?} {after:?}"
        );
        // A body is checked after its head: the head of the body case verified.
        let heads = u64::from(what == "body");
        assert_eq!(after.accepted, before.accepted + heads, "{what} altered");
    }
    // The altered body was not stored; the unaltered requests still pass.
    assert!(matches!(client.stat("new").await, Err(Error::NotFound(_))));
    assert_eq!(raw(s.http, &get.bytes()).await.status, 206);
    // The altered body's head verified, so its nonce is spent: the original is a replay now.
    let before = s.stats.refusals();
    assert_eq!(raw(s.http, &put.bytes()).await.status, 401);
    assert_eq!(s.stats.refusals().replayed, before.replayed + 1);
    let fresh = Signed::new(&sig, "PUT", "/v1/sources/new", None, b"hello", now());
    assert_eq!(raw(s.http, &fresh.bytes()).await.status, 201);
    s.stop().await;
}

#[tokio::test]
async fn a_forged_role_or_a_revoked_credential_is_refused() {
    let s = HttpServer::start().await;
    let reader = s.issue("rita", "reader");
    // The reader's key, with claims naming another role.
    let forged_claims =
        ferry::proto::claims::Claims::new("rita", reader.claims.epoch(), [("role", "admin")])
            .unwrap();
    let forged = ferry::proto::http::RequestSigner::new(forged_claims, reader.key.clone());
    let before = s.stats.refusals();
    let req = Signed::new(&forged, "PUT", "/v1/sources/x", None, b"data", now());
    assert_eq!(raw(s.http, &req.bytes()).await.status, 401);
    assert_eq!(s.stats.refusals().bad_signature, before.bad_signature + 1);
    // Revoked: the engine's still-valid check refuses it.
    let alice = s.issue("alice", "writer");
    let client = s.client(&alice);
    client.put("x", &b"1"[..], None).await.unwrap();
    assert!(s.server_dir.revoke_client("alice").unwrap());
    let before = s.stats.refusals();
    // The running server reads the changed account file at the next request.
    let r = client.stat("x").await;
    assert!(
        matches!(r, Err(Error::AuthFailed)),
        "a revoked credential still works: {r:?}"
    );
    assert_eq!(s.stats.refusals().not_current, before.not_current + 1);
    s.stop().await;
}

/// A TCP proxy that replaces `from` by `to` (same length) in what the server sends, once
/// per connection, or flips the byte at offset `flip` of the server's stream.
async fn tampering_proxy(
    upstream: std::net::SocketAddr,
    from: &'static [u8],
    to: &'static [u8],
    flip: Option<u64>,
) -> std::net::SocketAddr {
    assert_eq!(from.len(), to.len());
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((c, _)) = l.accept().await {
            let u = TcpStream::connect(upstream).await.unwrap();
            let (mut cr, mut cw) = c.into_split();
            let (mut ur, mut uw) = u.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut cr, &mut uw).await;
                let _ = uw.shutdown().await;
            });
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut seen = 0u64;
                let mut replaced = false;
                loop {
                    let n = match ur.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let piece = &mut buf[..n];
                    if !replaced
                        && !from.is_empty()
                        && let Some(i) = piece.windows(from.len()).position(|w| w == from)
                    {
                        piece[i..i + to.len()].copy_from_slice(to);
                        replaced = true;
                    }
                    if let Some(at) = flip
                        && at >= seen
                        && at < seen + n as u64
                    {
                        piece[(at - seen) as usize] ^= 0x01;
                    }
                    seen += n as u64;
                    if cw.write_all(piece).await.is_err() {
                        break;
                    }
                }
                let _ = cw.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_response_altered_in_flight_is_detected_by_the_client() {
    let s = HttpServer::start().await;
    let cred = s.issue("alice", "writer");
    let direct = s.client(&cred);
    direct.put("a", &b"data"[..], None).await.unwrap();
    direct
        .put("big", PatternReader::new("big", 3 << 20), None)
        .await
        .unwrap();
    let check = |r: Result<_, Error>, what: &str| {
        let e = r
            .err()
            .unwrap_or_else(|| panic!("{what}: the altered response was believed"));
        assert!(e.to_string().contains("altered"), "{what}: {e}");
    };
    // The body of a JSON answer.
    let p = tampering_proxy(s.http, br#""by":"alice""#, br#""by":"mallo""#, None).await;
    let c = ferry::HttpClient::new(&format!("http://{p}"), &cred).unwrap();
    check(c.stat("a").await.map(|_| ()), "JSON body");
    // The status.
    let p = tampering_proxy(s.http, b"HTTP/1.1 200 OK", b"HTTP/1.1 202 OK", None).await;
    let c = ferry::HttpClient::new(&format!("http://{p}"), &cred).unwrap();
    check(c.stat("a").await.map(|_| ()), "status");
    // A byte of a streamed data body, deep inside it: nothing past the bad chunk is written.
    let p = tampering_proxy(s.http, b"", b"", Some(2_000_000)).await;
    let c = ferry::HttpClient::new(&format!("http://{p}"), &cred).unwrap();
    let mut sink = HashSink::new(None);
    check(
        c.get_to("big", None, 0, &mut sink).await.map(|_| ()),
        "data body",
    );
    assert!(
        sink.len < 2_000_000,
        "data past the altered chunk was handed out"
    );
    // Direct, the same get verifies.
    let mut sink = HashSink::new(None);
    direct.get_to("big", None, 0, &mut sink).await.unwrap();
    assert_eq!(
        *sink.hasher.finalize().as_bytes(),
        PatternReader::hash("big", 3 << 20)
    );
    s.stop().await;
}

#[tokio::test]
async fn an_interrupted_get_resumes_with_range() {
    const LEN: u64 = 5 << 20;
    let s = HttpServer::start().await;
    let c = s.client(&s.issue("alice", "writer"));
    let e = c
        .put("f", PatternReader::new("f", LEN), None)
        .await
        .unwrap();
    let mut sink = HashSink::new(Some(1_234_567));
    let r = c.get_to("f", Some(e.version), 0, &mut sink).await;
    assert!(r.is_err());
    assert_eq!(sink.len, 1_234_567);
    sink.fail_after = None;
    let got = c
        .get_to("f", Some(e.version), sink.len, &mut sink)
        .await
        .unwrap();
    assert_eq!((got.first, got.size), (1_234_567, LEN));
    assert_eq!(sink.len, LEN);
    assert_eq!(
        *sink.hasher.finalize().as_bytes(),
        PatternReader::hash("f", LEN)
    );
    // The Range header is signed: the server saw it (a 206 with its Content-Range).
    let req = Signed::new(
        &signer(&s.issue("bob", "reader")),
        "GET",
        &format!("/v1/sources/{}", encode("f", true)),
        Some("bytes=5242870-"),
        b"",
        now(),
    );
    let got = http_common::raw(s.http, &req.bytes()).await;
    assert_eq!(got.status, 206);
    assert_eq!(
        got.header("content-range"),
        Some("bytes 5242870-5242879/5242880")
    );
    s.stop().await;
}

#[tokio::test]
async fn a_refused_put_is_answered_after_its_body_so_a_proxy_reads_the_answer() {
    let s = HttpServer::start().await;
    let rita = s.issue("rita", "reader");
    // 16 MiB a reader may not put: the server takes the body before its 403, so the
    // answer is not lost in a reset of a connection closed under unread data.
    let body = vec![7u8; 16 << 20];
    let req = Signed::new(&signer(&rita), "PUT", "/v1/sources/x", None, &body, now()).bytes();
    let stream = TcpStream::connect(s.http).await.unwrap();
    let (mut r, mut w) = stream.into_split();
    // The whole request first, the answer after, as a proxy that streams the body does.
    let sent = tokio::time::timeout(Duration::from_secs(20), w.write_all(&req)).await;
    assert!(
        matches!(sent, Ok(Ok(()))),
        "the server stopped taking the body: {sent:?}"
    );
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), r.read_to_end(&mut got)).await;
    assert!(matches!(read, Ok(Ok(_))), "{read:?}");
    let head = String::from_utf8_lossy(&got[..got.len().min(12)]).into_owned();
    assert_eq!(head, "HTTP/1.1 403", "{}", String::from_utf8_lossy(&got));
    s.stop().await;
}

#[tokio::test]
async fn a_full_nonce_cache_answers_503_and_forgets_no_nonce() {
    let s = HttpServer::start_with(|l| {
        l.http_replay = ferry::proto::http::ReplayConfig {
            window_secs: 300,
            capacity: 2,
        }
    })
    .await;
    let cred = s.issue("alice", "writer");
    let sig = signer(&cred);
    let first = Signed::new(&sig, "GET", "/v1/list", None, b"", now());
    assert_eq!(raw(s.http, &first.bytes()).await.status, 200);
    let second = Signed::new(&sig, "GET", "/v1/list", None, b"", now());
    assert_eq!(raw(s.http, &second.bytes()).await.status, 200);
    // Full of unexpired nonces: a new request is busy, retry later with a new nonce.
    let before = s.stats.refusals();
    let third = Signed::new(&sig, "GET", "/v1/list", None, b"", now());
    let got = raw(s.http, &third.bytes()).await;
    assert_eq!(got.status, 503);
    assert_eq!(got.header("retry-after"), Some("1"));
    assert_eq!(s.stats.refusals().busy, before.busy + 1);
    // No nonce was evicted to make room: the first request is still a replay.
    let again = raw(s.http, &first.bytes()).await;
    assert_eq!(again.status, 401);
    assert_eq!(s.stats.refusals().replayed, before.replayed + 1);
    // The client library reports busy.
    let r = s.client(&cred).list("", None).await;
    assert!(matches!(r, Err(ferry::Error::Busy(_))), "{r:?}");
    s.stop().await;
}
