//! Password users over HTTP only (docs/HTTP.md §13): an OPAQUE login in two requests opens a
//! session whose secret signs every later request. A capturing relay plays the proxy that
//! terminates TLS: what it saw of the login can neither log in again nor sign a request,
//! each refusal observed as the server's 401 (and its counters).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod http_common;

use ferry::proto::auth::ClientSession;
use ferry::proto::message::Message;
use ferry::{Error, HttpClient};
use http_common::{HttpServer, Signed, capturing_relay, raw};

const PW: &[u8] = b"correct horse battery";

/// The body of a captured HTTP/1.1 message with a `content-length`.
fn body_of(message: &[u8]) -> Vec<u8> {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head")
        + 4;
    let head = std::str::from_utf8(&message[..end])
        .unwrap()
        .to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .expect("a content-length")
        .trim()
        .parse()
        .unwrap();
    message[end..end + len].to_vec()
}

/// A captured request, replayed verbatim but for `connection: close` (so `raw` reads to
/// the end), optionally with its login header replaced.
fn replayable(request: &[u8], login: Option<&str>) -> Vec<u8> {
    let end = request.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = std::str::from_utf8(&request[..end]).unwrap();
    let mut lines: Vec<String> = head
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("x-ferry-login:") || login.is_none())
        .map(str::to_owned)
        .collect();
    lines.insert(1, "connection: close".into());
    if let Some(l) = login {
        lines.insert(1, format!("x-ferry-login: {l}"));
    }
    let mut out = lines.join("\r\n").into_bytes();
    out.extend_from_slice(&request[end..]);
    out
}

async fn sessions(s: &HttpServer) -> usize {
    s.server_dir.sessions().unwrap().sessions.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_user_logs_in_and_transfers_over_http_and_the_proxy_view_is_useless() {
    let s = HttpServer::start().await;
    s.enrol("carol", "writer", PW).await;
    let (relay, seen) = capturing_relay(s.http).await;
    let url = format!("http://{relay}");

    // Login and transfers, all over HTTP through the "proxy".
    let (carol, session) = HttpClient::login(&url, &[], "carol", PW).await.unwrap();
    let e = carol
        .put("notes/a.txt", &b"written over HTTP"[..], None)
        .await
        .unwrap();
    let mut out = Vec::new();
    carol
        .get_to("notes/a.txt", None, 0, &mut out)
        .await
        .unwrap();
    assert_eq!(out, b"written over HTTP");
    assert_eq!(carol.stat("notes/a.txt").await.unwrap(), e);
    assert_eq!(e.by, "carol");
    // The stored session signs later, without the password.
    let again = HttpClient::with_session(&s.url(), "carol", &session).unwrap();
    assert_eq!(again.stat("notes/a.txt").await.unwrap(), e);
    assert_eq!(sessions(&s).await, 1);

    // What the proxy saw of the login: two exchanges.
    let captured: Vec<(Vec<u8>, Vec<u8>)> = seen.lock().unwrap().clone();
    let logins: Vec<&(Vec<u8>, Vec<u8>)> = captured
        .iter()
        .filter(|(req, _)| req.starts_with(b"POST /v1/login/"))
        .collect();
    assert_eq!(logins.len(), 2, "login start and finish");
    let (start_req, start_resp) = logins[0];
    let (finish_req, finish_resp) = logins[1];
    assert!(start_req.starts_with(b"POST /v1/login/start "));
    assert!(finish_req.starts_with(b"POST /v1/login/finish "));
    // The proxy can read the messages: KE1, KE2, KE3 and the grant (the session's ID).
    assert!(matches!(
        Message::decode(&body_of(start_req)),
        Ok(Message::PasswordLoginStart(_))
    ));
    assert!(matches!(
        Message::decode(&body_of(start_resp)),
        Ok(Message::PasswordLoginResponse(_))
    ));
    let Ok(Message::AuthOk(ok)) = Message::decode(&body_of(finish_resp)) else {
        panic!("the finish answers auth_ok");
    };
    let grant = ok.session.expect("a session granted");
    assert_eq!(grant.id, session.id);
    // The password crossed nowhere.
    assert!(!captured.iter().any(|(req, resp)| {
        req.windows(PW.len()).any(|w| w == PW) || resp.windows(PW.len()).any(|w| w == PW)
    }));

    // 1. The finish replayed verbatim: its login is spent. The server's 401.
    let r = raw(s.http, &replayable(finish_req, None)).await;
    assert_eq!(r.status, 401);
    // 2. The start replayed gets a fresh answer (anyone may start a login), but the captured
    //    finish does not complete that new login: 401 again, and no session opened.
    let r = raw(s.http, &replayable(start_req, None)).await;
    assert_eq!(r.status, 200);
    let fresh = r.header("x-ferry-login").unwrap().to_owned();
    let r = raw(s.http, &replayable(finish_req, Some(&fresh))).await;
    assert_eq!(r.status, 401);
    assert_eq!(sessions(&s).await, 1, "a replay opened a session");

    // 3. Signing with what the proxy knows: the session's ID and anything computable from
    //    the login's bytes and the fixed login context. The server refuses each (401,
    //    counted as a bad signature).
    let context = ferry::proto::http::session::login_context();
    let guesses = [
        ferry::proto::session::derive_secret(&context, &grant.id),
        ferry::proto::session::derive_secret(
            &ferry::proto::http::session::binding(&body_of(finish_req)),
            &grant.id,
        ),
        ferry::proto::secret::SessionSecret::from_bytes(
            *blake3::hash(&[start_resp.as_slice(), finish_resp].concat()).as_bytes(),
        ),
    ];
    for secret in guesses {
        let forged = ClientSession {
            id: grant.id,
            secret,
            idle_secs: grant.idle_secs,
            expires: grant.expires,
        };
        let before = s.stats.refusals();
        let mallory = HttpClient::with_session(&s.url(), "carol", &forged).unwrap();
        let r = mallory.stat("notes/a.txt").await;
        assert!(matches!(r, Err(Error::AuthFailed)), "{r:?}");
        let after = s.stats.refusals();
        assert_eq!(after.bad_signature, before.bad_signature + 1);
        assert_eq!(after.accepted, before.accepted);
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_acts_with_its_stored_role_whatever_its_claims_say() {
    let s = HttpServer::start().await;
    s.enrol("rita", "reader", PW).await;
    let (rita, session) = HttpClient::login(&s.url(), &[], "rita", PW).await.unwrap();
    assert!(matches!(
        rita.put("a", &b"x"[..], None).await,
        Err(Error::Forbidden(_))
    ));
    // Claims claiming a role, signed with the session's own key: the role is ignored.
    let claims = ferry::proto::claims::Claims::new(
        "rita",
        1,
        [
            ("role", "writer".to_owned()),
            ("session", data_encoding::HEXLOWER.encode(&session.id)),
        ],
    )
    .unwrap();
    let psk = ferry::proto::http::session::session_psk(&session.secret, &claims.encode());
    let signer = ferry::proto::http::RequestSigner::new(claims, psk);
    let put = Signed::new(
        &signer,
        "PUT",
        "/v1/sources/a",
        None,
        b"x",
        ferry::clock::now(),
    );
    let r = raw(s.http, &put.bytes()).await;
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    // Another user's name with this session's key: refused.
    s.enrol("carol", "writer", PW).await;
    let mallory = HttpClient::with_session(&s.url(), "carol", &session).unwrap();
    assert!(matches!(mallory.stat("a").await, Err(Error::AuthFailed)));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_over_http_and_tls_count_together_and_lock_both() {
    let s = HttpServer::start_with_config(|t| {
        t.replace("max_failures = 5", "max_failures = 3")
            .replace("lockout_secs = 60", "lockout_secs = 30")
    })
    .await;
    s.enrol("carol", "writer", PW).await;
    let pin = s.server_dir.identity().unwrap().server_id();
    let tls = s.addr.to_string();
    // Two wrong guesses over HTTP, one over TLS: three failures of one account.
    for _ in 0..2 {
        let r = HttpClient::login(&s.url(), &[], "carol", b"a wrong guess").await;
        assert!(matches!(r, Err(Error::AuthFailed)), "{:?}", r.map(|_| ()));
    }
    let r = ferry::Client::login(&tls, pin, "carol", b"a wrong guess", false).await;
    assert!(matches!(r, Err(Error::AuthFailed)), "{:?}", r.map(|_| ()));
    // Locked: the right password fails over HTTP and over TLS, with the same error.
    let r = HttpClient::login(&s.url(), &[], "carol", PW).await;
    assert!(matches!(r, Err(Error::AuthFailed)), "{:?}", r.map(|_| ()));
    let r = ferry::Client::login(&tls, pin, "carol", PW, false).await;
    assert!(matches!(r, Err(Error::AuthFailed)), "{:?}", r.map(|_| ()));
    assert_eq!(sessions(&s).await, 0);
    s.stop().await;
}
