//! Sealed bodies (docs/HTTP.md §11): with `HttpClient::with_seal`, what a proxy in the middle
//! receives of a put and a get is only ciphertext, and the transfers are byte-identical. A
//! capturing relay plays the proxy that terminates TLS. (Through a real nginx:
//! ferry-cli's tests/http_nginx.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod http_common;

use std::io::Cursor;

use ferry::{Error, HttpClient};
use http_common::{HttpServer, capturing_relay};

const MARKER: &[u8] = b"PLAINTEXT-MARKER-7f3a";

fn saw(seen: &http_common::Seen, needle: &[u8]) -> bool {
    seen.lock().unwrap().iter().any(|(req, resp)| {
        req.windows(needle.len()).any(|w| w == needle)
            || resp.windows(needle.len()).any(|w| w == needle)
    })
}

fn seen_bytes(seen: &http_common::Seen) -> usize {
    seen.lock()
        .unwrap()
        .iter()
        .map(|(a, b)| a.len() + b.len())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_sees_only_ciphertext_of_sealed_puts_and_gets() {
    let s = HttpServer::start().await;
    let cred = s.issue("alice", "writer");
    let key = s.server_dir.http_seal_key().unwrap();
    let (relay, seen) = capturing_relay(s.http).await;
    let url = format!("http://{relay}");
    // 3 MiB of plaintext made of the marker: several sealed and signed chunks.
    let data = MARKER.repeat((3 << 20) / MARKER.len());
    let len = data.len() as u64;

    let sealed = HttpClient::new(&url, &cred).unwrap().with_seal(key);
    let e = sealed
        .put("secret/f", Cursor::new(data.clone()), Some(len))
        .await
        .unwrap();
    assert_eq!(e.size, len);
    assert_eq!(e.hash, *blake3::hash(&data).as_bytes());
    let mut out = Vec::new();
    let got = sealed.get_to("secret/f", None, 0, &mut out).await.unwrap();
    assert_eq!(out, data);
    assert_eq!(got.len, len);
    // A range of the plaintext, sealed too (a resumed get).
    let mut out = Vec::new();
    sealed
        .get_to("secret/f", Some(e.version), 1000, &mut out)
        .await
        .unwrap();
    assert_eq!(out, data[1000..]);
    assert!(
        seen_bytes(&seen) > 3 * data.len(),
        "the relay saw the bodies"
    );
    assert!(
        !saw(&seen, MARKER),
        "the proxy saw plaintext of a sealed body"
    );

    // The same relay sees plaintext when nothing is sealed: the capture does see bodies.
    let plain = HttpClient::new(&url, &cred).unwrap();
    plain
        .put("plain/f", Cursor::new(MARKER.repeat(10)), None)
        .await
        .unwrap();
    assert!(saw(&seen, MARKER));

    // Sealed to another key: the server cannot open it, stores nothing.
    let other = tempfile::tempdir().unwrap();
    let other = ferry::ServerDir::new(other.path().join("srv"));
    other.init().unwrap();
    let wrong = HttpClient::new(&s.url(), &cred)
        .unwrap()
        .with_seal(other.http_seal_key().unwrap());
    let r = wrong.put("secret/g", Cursor::new(data.clone()), None).await;
    assert!(r.is_err(), "{r:?}");
    assert!(matches!(
        sealed.stat("secret/g").await,
        Err(Error::NotFound(_))
    ));
    s.stop().await;
}
