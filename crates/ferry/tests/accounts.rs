//! User accounts over real loopback TLS: invites, OPAQUE registration and login, sessions,
//! online-guessing limits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{TestServer, panics};
use ferry::proto::message::Message;
use ferry::wire::Wire;
use ferry::{Client, Error};

const PW: &[u8] = b"correct horse battery staple";

async fn enrol(srv: &TestServer, name: &str, role: &str) {
    let mut invite = srv.invite(name, role, 3600);
    invite.server = srv.addr.to_string();
    Client::register(&invite, PW).await.unwrap();
}

fn pin(srv: &TestServer) -> ferry::proto::server_id::ServerId {
    srv.server_dir.identity().unwrap().server_id()
}

async fn login(
    srv: &TestServer,
    user: &str,
    pw: &[u8],
) -> Result<(Client, Option<ferry::proto::auth::ClientSession>), Error> {
    Client::login(&srv.addr.to_string(), pin(srv), user, pw, true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_register_login_put_get_and_resume() {
    let srv = TestServer::start().await;
    let invite = srv.invite("carol", "writer", 3600);
    Client::register(&invite, PW).await.unwrap();
    // The invite is spent: a second registration fails.
    assert!(matches!(
        Client::register(&invite, b"another password").await,
        Err(Error::AuthFailed)
    ));

    let (mut c, session) = login(&srv, "carol", PW).await.unwrap();
    assert_eq!(c.principal().unwrap().role(), Some("writer"));
    c.put_bytes("notes/a", b"hello".to_vec()).await.unwrap();
    c.close().await.unwrap();

    let s = session.expect("a session");
    let mut r = Client::resume(&srv.addr.to_string(), pin(&srv), s.id, &s.secret)
        .await
        .unwrap();
    assert_eq!(r.principal().unwrap().name, "carol");
    assert_eq!(r.get_bytes("notes/a").await.unwrap(), b"hello");
    srv.stop().await;
    assert_eq!(panics(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_invite_fails() {
    let srv = TestServer::start().await;
    let invite = srv.invite("dan", "reader", 0);
    assert!(matches!(
        Client::register(&invite, PW).await,
        Err(Error::AuthFailed)
    ));
    assert!(srv.server_dir.users().unwrap().users.is_empty());
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unknown_user_fail_alike() {
    let srv = TestServer::start().await;
    enrol(&srv, "carol", "writer").await;
    let wrong = login(&srv, "carol", b"wrong")
        .await
        .expect_err("wrong password accepted");
    let unknown = login(&srv, "nobody", PW)
        .await
        .expect_err("unknown user accepted");
    assert_eq!(wrong.to_string(), unknown.to_string());
    assert!(matches!(wrong, Error::AuthFailed));
    assert!(matches!(unknown, Error::AuthFailed));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_cannot_complete_a_login_or_a_resumption() {
    let srv = TestServer::start().await;
    enrol(&srv, "carol", "writer").await;
    let (_, session) = login(&srv, "carol", PW).await.unwrap();
    let s = session.unwrap();
    let mitm = common::start_mitm(srv.addr.to_string(), pin(&srv)).await;
    // A client tricked into pinning the relay: OPAQUE's context is the client↔relay exporter.
    let r = Client::login(&mitm.addr, mitm.identity_id, "carol", PW, true).await;
    assert!(matches!(r, Err(Error::AuthFailed)), "{r:?}");
    assert!(mitm.relayed.load(std::sync::atomic::Ordering::SeqCst) > 0);
    // The server's decision, read off the relayed wire: refused, no session granted.
    mitm.assert_server_refused(&["auth_ok"]).await;
    // A resumption through another relay: the server checks the proof against its own
    // exporter and refuses it (a relayed client would also fail on the server's proof, so the
    // client's error alone would prove nothing).
    let mitm = common::start_mitm(srv.addr.to_string(), pin(&srv)).await;
    let r = Client::resume(&mitm.addr, mitm.identity_id, s.id, &s.secret).await;
    assert!(matches!(r, Err(Error::AuthFailed)), "{r:?}");
    mitm.assert_server_refused(&["auth_ok"]).await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_proof_from_one_connection_is_refused_on_another() {
    let srv = TestServer::start().await;
    enrol(&srv, "carol", "writer").await;
    let (_, session) = login(&srv, "carol", PW).await.unwrap();
    let s = session.unwrap();
    let addr = srv.addr.to_string();
    let tls1 = Client::connect_tls(&addr, pin(&srv)).await.unwrap();
    let e1 = ferry::tls::export(tls1.get_ref().1).unwrap();
    let (captured, _) = ferry::proto::auth::resume_session(&e1, s.id, &s.secret);
    let tls2 = Client::connect_tls(&addr, pin(&srv)).await.unwrap();
    let mut wire = Wire::new(tls2);
    wire.send(&captured).await.unwrap();
    assert!(matches!(
        wire.recv_message().await.unwrap(),
        Message::AuthFailed(_)
    ));
    let mut wire1 = Wire::new(tls1);
    wire1.send(&captured).await.unwrap();
    assert!(matches!(
        wire1.recv_message().await.unwrap(),
        Message::AuthOk(_)
    ));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logged_out_revoked_expired_and_removed_sessions_are_refused() {
    let srv =
        TestServer::start_with_config(|t| t.replace("idle_secs = 604800", "idle_secs = 2")).await;
    enrol(&srv, "carol", "writer").await;
    let addr = srv.addr.to_string();
    let resume = |s: &ferry::proto::auth::ClientSession| {
        let (id, secret, addr, pin) = (s.id, s.secret.clone(), addr.clone(), pin(&srv));
        async move { Client::resume(&addr, pin, id, &secret).await }
    };

    // Logout.
    let (c, s) = login(&srv, "carol", PW).await.unwrap();
    let s = s.unwrap();
    c.logout().await.unwrap();
    assert!(matches!(resume(&s).await, Err(Error::AuthFailed)));

    // Admin revocation, also of a connection that is open.
    let (_, s) = login(&srv, "carol", PW).await.unwrap();
    let s = s.unwrap();
    let mut open = resume(&s).await.unwrap();
    assert!(
        srv.server_dir
            .revoke_session(&ferry::accounts::session_id_text(&s.id))
            .unwrap()
    );
    assert!(matches!(resume(&s).await, Err(Error::AuthFailed)));
    assert!(matches!(open.stat("x").await, Err(Error::AuthFailed)));

    // Idle expiry (2 s here).
    let (_, s) = login(&srv, "carol", PW).await.unwrap();
    let s = s.unwrap();
    assert!(resume(&s).await.is_ok());
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert!(matches!(resume(&s).await, Err(Error::AuthFailed)));

    // Removing the user ends its sessions.
    let (_, s) = login(&srv, "carol", PW).await.unwrap();
    let s = s.unwrap();
    assert!(srv.server_dir.remove_user("carol").unwrap());
    assert!(matches!(resume(&s).await, Err(Error::AuthFailed)));
    assert!(matches!(
        login(&srv, "carol", PW).await,
        Err(Error::AuthFailed)
    ));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_lock_the_account_until_the_window_passes() {
    let srv = TestServer::start_with_config(|t| {
        t.replace("max_failures = 5", "max_failures = 3")
            .replace("lockout_secs = 60", "lockout_secs = 2")
    })
    .await;
    enrol(&srv, "carol", "writer").await;
    for _ in 0..3 {
        assert!(matches!(
            login(&srv, "carol", b"guess").await,
            Err(Error::AuthFailed)
        ));
    }
    // Locked: even the right password fails, with the same error.
    let locked = login(&srv, "carol", PW)
        .await
        .expect_err("a locked account let a login in");
    assert!(matches!(locked, Error::AuthFailed));
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert!(login(&srv, "carol", PW).await.is_ok());
    srv.stop().await;
}

/// Starts a login with `guess` and stops at the server's first answer (KE2): enough for an
/// OPAQUE client to learn whether its guess was right, without ever telling the server.
async fn half_login(srv: &TestServer, user: &str, guess: &[u8]) {
    let tls = Client::connect_tls(&srv.addr.to_string(), pin(srv))
        .await
        .unwrap();
    let exporter = ferry::tls::export(tls.get_ref().1).unwrap();
    let (start, _state) =
        ferry::proto::auth::password_login(&mut rand_core::OsRng, &exporter, user, guess, false)
            .unwrap();
    let mut wire = Wire::new(tls);
    wire.send(&start).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), wire.recv_message())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(answer, Message::PasswordLoginResponse(_)),
        "{answer:?}"
    );
    // Hang up, and wait until the server has closed its side too (it has then ended the
    // attempt).
    let _ = wire.shutdown().await;
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        while wire.recv().await.is_ok() {}
    })
    .await;
    assert!(end.is_ok(), "the server kept the connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guesses_that_stop_at_the_first_answer_still_lock_the_account() {
    let srv = TestServer::start_with_config(|t| {
        t.replace("max_failures = 5", "max_failures = 3")
            .replace("lockout_secs = 60", "lockout_secs = 30")
    })
    .await;
    enrol(&srv, "carol", "writer").await;
    // Three guesses started side by side, none finished.
    tokio::join!(
        half_login(&srv, "carol", b"guess 1"),
        half_login(&srv, "carol", b"guess 2"),
        half_login(&srv, "carol", b"guess 3"),
    );
    let locked = login(&srv, "carol", PW)
        .await
        .expect_err("unfinished guesses were not counted");
    assert!(matches!(locked, Error::AuthFailed));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raised_argon2_parameters_keep_old_records_working() {
    let srv = TestServer::start().await;
    enrol(&srv, "old", "writer").await;
    let srv = srv
        .restart(|t| t.replace("m_kib = 1024\nt = 1", "m_kib = 2048\nt = 2"))
        .await;
    enrol(&srv, "new", "writer").await;
    let users = srv.server_dir.users().unwrap();
    assert_eq!(
        (users.users["old"].ksf.m_kib, users.users["old"].ksf.t),
        (1024, 1)
    );
    assert_eq!(
        (users.users["new"].ksf.m_kib, users.users["new"].ksf.t),
        (2048, 2)
    );
    assert!(login(&srv, "old", PW).await.is_ok());
    assert!(login(&srv, "new", PW).await.is_ok());
    srv.stop().await;
}

/// Every file below `dir`, byte by byte.
fn all_bytes(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_directory_holds_neither_the_password_nor_an_unsalted_hash() {
    use sha2::Digest;
    let srv = TestServer::start().await;
    enrol(&srv, "carol", "writer").await;
    let (mut c, _) = login(&srv, "carol", PW).await.unwrap();
    c.put_bytes("x", b"data".to_vec()).await.unwrap();
    c.close().await.unwrap();
    let digests: Vec<Vec<u8>> = vec![
        sha2::Sha256::digest(PW).to_vec(),
        sha2::Sha512::digest(PW).to_vec(),
        sha2::Sha224::digest(PW).to_vec(),
        sha2::Sha384::digest(PW).to_vec(),
        blake3::hash(PW).as_bytes().to_vec(),
    ];
    let mut needles: Vec<Vec<u8>> = vec![PW.to_vec(), PW.to_ascii_uppercase()];
    for d in &digests {
        needles.push(d.clone());
        needles.push(data_encoding::HEXLOWER.encode(d).into_bytes());
        needles.push(data_encoding::HEXUPPER.encode(d).into_bytes());
        needles.push(data_encoding::BASE64.encode(d).into_bytes());
    }
    needles.push(data_encoding::BASE64.encode(PW).into_bytes());
    needles.push(data_encoding::HEXLOWER.encode(PW).into_bytes());
    let files = all_bytes(srv.server_dir.path());
    assert!(
        files.iter().any(|(p, _)| p.ends_with("users.toml")),
        "no users file to search"
    );
    for (path, bytes) in &files {
        for n in &needles {
            assert!(
                !bytes.windows(n.len()).any(|w| w == n.as_slice()),
                "{} contains the password or a hash of it",
                path.display()
            );
        }
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_ends_sessions_and_only_the_new_password_works() {
    let srv = TestServer::start().await;
    enrol(&srv, "carol", "writer").await;
    let (_, other) = login(&srv, "carol", PW).await.unwrap();
    let other = other.unwrap();
    let (_, mine) = login(&srv, "carol", PW).await.unwrap();
    let mine = mine.unwrap();
    let mut c = Client::resume(&srv.addr.to_string(), pin(&srv), mine.id, &mine.secret)
        .await
        .unwrap();
    c.change_password(PW, b"a new passphrase").await.unwrap();
    // Every password session ended, this one included.
    assert!(matches!(c.stat("x").await, Err(Error::AuthFailed)));
    for s in [&other, &mine] {
        let r = Client::resume(&srv.addr.to_string(), pin(&srv), s.id, &s.secret).await;
        assert!(matches!(r, Err(Error::AuthFailed)));
    }
    assert!(matches!(
        login(&srv, "carol", PW).await,
        Err(Error::AuthFailed)
    ));
    assert!(login(&srv, "carol", b"a new passphrase").await.is_ok());

    // A credential holder has no password to change.
    let mut psk = Client::connect(&srv.issue("svc", "writer")).await.unwrap();
    assert!(matches!(
        psk.change_password(PW, b"a long new password").await,
        Err(Error::Forbidden(_))
    ));
    srv.stop().await;
}

const NEW: &[u8] = b"the victim's new passphrase";

/// A request's answer is `AuthFailed` only when the server sent `auth_failed` (a connection
/// that merely closed is `Closed` or `Io`): the server refused it.
fn refused_by_server<T: std::fmt::Debug>(r: Result<T, Error>, what: &str) {
    assert!(matches!(r, Err(Error::AuthFailed)), "{what}: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_cuts_off_a_stolen_login_which_cannot_change_it_back() {
    let srv = TestServer::start().await;
    enrol(&srv, "carol", "writer").await;
    // The attacker logs in with the stolen password: two connections and a session.
    let (mut attacker, stolen_session) = login(&srv, "carol", PW).await.unwrap();
    let (mut attacker2, _) = login(&srv, "carol", PW).await.unwrap();
    let stolen_session = stolen_session.unwrap();
    attacker.put_bytes("notes/a", b"x".to_vec()).await.unwrap();
    attacker2.stat("notes/a").await.unwrap();

    // The victim changes the password, proving the current one.
    let (mut victim, _) = login(&srv, "carol", PW).await.unwrap();
    victim.change_password(PW, NEW).await.unwrap();

    // The attacker's next request on its old connection: the server answers auth_failed.
    refused_by_server(attacker.stat("notes/a").await, "old connection");
    // Nor can it change the password on another old connection (refused before the change
    // is even read), or by logging in again, or through its session.
    refused_by_server(
        attacker2
            .change_password(PW, b"the attacker's password")
            .await,
        "change on an old connection",
    );
    refused_by_server(login(&srv, "carol", PW).await, "old password");
    refused_by_server(
        Client::resume(
            &srv.addr.to_string(),
            pin(&srv),
            stolen_session.id,
            &stolen_session.secret,
        )
        .await,
        "session of the old password",
    );
    // The victim's new password works; the attacker's never became one.
    let (mut c, _) = login(&srv, "carol", NEW).await.unwrap();
    assert_eq!(c.get_bytes("notes/a").await.unwrap(), b"x");
    refused_by_server(
        login(&srv, "carol", b"the attacker's password").await,
        "attacker's password",
    );
    srv.stop().await;
    assert_eq!(panics(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_opened_by_the_old_password_is_refused_even_if_its_entry_survives() {
    let srv = TestServer::start().await;
    enrol(&srv, "carol", "writer").await;
    let (_, s) = login(&srv, "carol", PW).await.unwrap();
    let s = s.unwrap();
    let sessions_before = std::fs::read(srv.server_dir.path().join("sessions.toml")).unwrap();
    let (mut victim, _) = login(&srv, "carol", PW).await.unwrap();
    victim.change_password(PW, NEW).await.unwrap();
    // Put the old session's entry back, as a crash between the two file writes, or an old
    // backup, could: its generation alone makes the server refuse it.
    std::fs::write(
        srv.server_dir.path().join("sessions.toml"),
        &sessions_before,
    )
    .unwrap();
    refused_by_server(
        Client::resume(&srv.addr.to_string(), pin(&srv), s.id, &s.secret).await,
        "old session",
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_stream_of_the_old_password_ends() {
    let srv = TestServer::start_with(|l| l.watch_ping = Duration::from_millis(200)).await;
    enrol(&srv, "carol", "writer").await;
    let (c, _) = login(&srv, "carol", PW).await.unwrap();
    let mut w = c.watch("", None).await.unwrap();
    let (mut victim, _) = login(&srv, "carol", PW).await.unwrap();
    victim.change_password(PW, NEW).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("the watch stream of the old password did not end");
    refused_by_server(r, "watch of the old password");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_invite_and_reset_end_the_old_roles_connections() {
    let srv = TestServer::start().await;
    enrol(&srv, "carol", "writer").await;
    // Re-invitation (as a reader): the writer's connections end at their next request, and
    // the old password no longer logs in with the old role.
    let (mut writer, _) = login(&srv, "carol", PW).await.unwrap();
    writer.put_bytes("a", b"1".to_vec()).await.unwrap();
    let mut invite = srv.invite("carol", "reader", 3600);
    invite.server = srv.addr.to_string();
    refused_by_server(writer.put_bytes("a", b"2".to_vec()).await, "re-invited");
    refused_by_server(
        login(&srv, "carol", PW).await,
        "old password after re-invite",
    );
    Client::register(&invite, NEW).await.unwrap();
    let (mut reader, _) = login(&srv, "carol", NEW).await.unwrap();
    assert_eq!(reader.principal().unwrap().role(), Some("reader"));
    // Reset (remove, then a new invite), with a connection logged in before it that stays
    // silent until the user has registered again: a new record never takes an old generation.
    assert!(srv.server_dir.remove_user("carol").unwrap());
    let mut invite = srv.invite("carol", "reader", 3600);
    invite.server = srv.addr.to_string();
    Client::register(&invite, PW).await.unwrap();
    refused_by_server(reader.stat("a").await, "reset");
    let (mut reader, _) = login(&srv, "carol", PW).await.unwrap();
    assert_eq!(reader.principal().unwrap().role(), Some("reader"));
    assert_eq!(reader.get_bytes("a").await.unwrap(), b"1");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_without_the_current_password_is_refused_and_counted() {
    let srv = TestServer::start_with_config(|t| {
        t.replace("max_failures = 5", "max_failures = 3")
            .replace("lockout_secs = 60", "lockout_secs = 30")
    })
    .await;
    enrol(&srv, "carol", "writer").await;
    for _ in 0..2 {
        let (mut c, _) = login(&srv, "carol", PW).await.unwrap();
        refused_by_server(
            c.change_password(b"not the password", NEW).await,
            "wrong current password",
        );
        // The server ended the connection, and nothing changed.
        assert!(c.stat("x").await.is_err());
    }
    // A guesser who judges its guess from KE2 and hangs up counts too.
    let (mut c, _) = login(&srv, "carol", PW).await.unwrap();
    let (request, _) =
        ferry::proto::password::client_login_start(&mut rand_core::OsRng, b"a guess").unwrap();
    let answer = c
        .raw_request(&Message::PasswordChangeStart(
            ferry::proto::message::PasswordChangeStart { request },
        ))
        .await
        .unwrap();
    assert!(
        matches!(answer, Message::PasswordChangeResponse(_)),
        "{answer:?}"
    );
    drop(c);
    // The server counts it when it reads the hang-up; give it that moment (a login that won
    // the race would succeed and clear the count, and the test would fail, not pass).
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The three proofs counted as failed logins: the account is locked, the right password
    // fails like a wrong one, and the new one was never set.
    refused_by_server(login(&srv, "carol", PW).await, "locked");
    refused_by_server(login(&srv, "carol", NEW).await, "never set");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_passwords_shorter_than_8_characters_are_refused_by_the_client() {
    let srv = TestServer::start().await;
    let mut invite = srv.invite("carol", "writer", 3600);
    invite.server = srv.addr.to_string();
    for short in [&b"1234567"[..], "ñññññññ".as_bytes()] {
        assert!(matches!(
            Client::register(&invite, short).await,
            Err(Error::PasswordTooShort(8))
        ));
    }
    // Nothing was sent: the invite is still good.
    Client::register(&invite, b"12345678").await.unwrap();
    let (mut c, _) = login(&srv, "carol", b"12345678").await.unwrap();
    assert!(matches!(
        c.change_password(b"12345678", b"short").await,
        Err(Error::PasswordTooShort(8))
    ));
    c.change_password(b"12345678", PW).await.unwrap();
    srv.stop().await;
}
