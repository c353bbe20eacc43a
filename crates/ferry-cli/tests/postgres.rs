//! Two real `ferry serve` processes, each on a server folder of its own holding the same
//! identity, master key and OPAQUE keys, sharing their account data in one PostgreSQL
//! database (`[backend] accounts = "postgres"`, written by `ferry init --backend postgres`).
//! The account commands run on one folder and both servers see the result; every check
//! reads the refusing server's own log line, not only the client's error.
//!
//! The database server comes from `FERRY_TEST_PG_URL` (a role that may `CREATE DATABASE`;
//! `.ci/run` starts PostgreSQL and sets it); each test makes a database of its own and drops
//! it. Unset, these tests skip saying so, except under `CI=true`, where that is a failure.
//! `serve_and_the_account_commands_fail_clearly_without_the_database` needs no database.

// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use common::{Env, Out, SHORT, Served};
use ferry::Client;
use ferry::proto::credential::Credential;
use tokio_postgres::NoTls;

const PW: &str = "correct horse battery staple";
/// What the servers' logs say for a refused authentication, and for a lost registration.
const REFUSED: &str = "authentication failed (";
const LOST: &str = "lost to another";
const SPENT: &str = "authentication failed (InviteNotCurrent";

/// The database server's configuration, or `None` (after saying why) when the test is to skip.
fn admin() -> Option<tokio_postgres::Config> {
    let url = std::env::var("FERRY_TEST_PG_URL").unwrap_or_default();
    if url.trim().is_empty() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but FERRY_TEST_PG_URL is unset: .ci/run starts PostgreSQL and sets it"
        );
        eprintln!(
            "SKIPPED: FERRY_TEST_PG_URL is unset (a postgres:// URL whose role may create \
             databases; .ci/run sets one), so the tests of two servers sharing PostgreSQL did \
             not run"
        );
        return None;
    }
    Some(tokio_postgres::Config::from_str(url.trim()).expect("FERRY_TEST_PG_URL parses"))
}

async fn connect(config: &tokio_postgres::Config) -> tokio_postgres::Client {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .expect("FERRY_TEST_PG_URL is set, but PostgreSQL cannot be reached through it");
    tokio::spawn(connection);
    client
}

/// A single-quoted value of the key=value connection form.
fn quoted(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Runs `test` with the URL (key=value form) of a new database of its own, then drops the
/// database whether the test passed or not.
async fn with_database<F, Fut>(test: F)
where
    F: FnOnce(String, tokio_postgres::Config) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(admin) = admin() else { return };
    let mut id = [0u8; 8];
    getrandom::fill(&mut id).unwrap();
    let name = format!("ferry_cli_test_{}", u64::from_le_bytes(id));
    connect(&admin)
        .await
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("the test role may create databases");
    let mut parts = vec![format!("dbname={name}")];
    if let Some(host) = admin.get_hosts().first() {
        parts.push(match host {
            tokio_postgres::config::Host::Tcp(h) => format!("host={}", quoted(h)),
            tokio_postgres::config::Host::Unix(p) => {
                format!("host={}", quoted(&p.to_string_lossy()))
            }
        });
    }
    if let Some(port) = admin.get_ports().first() {
        parts.push(format!("port={port}"));
    }
    if let Some(user) = admin.get_user() {
        parts.push(format!("user={}", quoted(user)));
    }
    if let Some(pw) = admin.get_password() {
        parts.push(format!("password={}", quoted(&String::from_utf8_lossy(pw))));
    }
    let mut db = admin.clone();
    db.dbname(&name);
    let outcome = tokio::spawn(test(parts.join(" "), db)).await;
    connect(&admin)
        .await
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .unwrap();
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// One server folder and its `ferry serve`, with the database URL in its environment.
struct Instance {
    env: Env,
    served: Served,
    url: String,
}

impl Instance {
    /// Runs `ferry ARGS` on this instance's folder with the URL in `FERRY_PG_URL`.
    fn run(&self, args: &[&str]) -> Out {
        ferry(&self.env, &self.url, args)
    }

    /// Waits (at most 10 s) until the server's log holds `n` lines containing `needle`.
    fn logged(&self, needle: &str, n: usize) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let count = self
                .served
                .log()
                .iter()
                .filter(|l| l.contains(needle))
                .count();
            if count >= n {
                return count == n;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn count(&self, needle: &str) -> usize {
        self.served
            .log()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }
}

fn ferry(env: &Env, url: &str, args: &[&str]) -> Out {
    let mut cmd = env.command(args);
    cmd.env("FERRY_PG_URL", url);
    common::run(cmd, None, SHORT)
}

/// Two instances of one server: `ferry init --backend postgres` on A's folder, its key files
/// and ferry.toml copied to B's (as docs/SCALING.md says), both serving.
fn pair(url: &str) -> (Instance, Instance) {
    let a = Env::new();
    ferry(&a, url, &["init", "--backend", "postgres"]).ok();
    let conf = a.server_dir().join("ferry.toml");
    let text = std::fs::read_to_string(&conf).unwrap();
    assert!(text.contains("accounts = \"postgres\""), "{text}");
    assert!(text.contains("url_env = \"FERRY_PG_URL\""), "{text}");
    // Small Argon2id parameters so that registrations are fast; two failures lock.
    let fast = text
        .replace("m_kib = 65536\nt = 3", "m_kib = 1024\nt = 1")
        .replace("max_failures = 5", "max_failures = 2");
    std::fs::write(&conf, fast).unwrap();
    let b = Env::new();
    std::fs::create_dir(b.server_dir()).unwrap();
    std::fs::set_permissions(b.server_dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
    for file in [
        "master.key",
        "identity.key",
        "identity.crt",
        "opaque.key",
        "ferry.toml",
    ] {
        // std::fs::copy keeps the mode (0600 for the keys).
        std::fs::copy(a.server_dir().join(file), b.server_dir().join(file)).unwrap();
    }
    let start = |env: Env| {
        let served = Served::start_with(&env, &[("FERRY_PG_URL", url)]);
        assert!(
            served
                .wait_for_log("account data: postgres", SHORT)
                .is_some(),
            "{:?}",
            served.log()
        );
        Instance {
            env,
            served,
            url: url.to_owned(),
        }
    };
    (start(a), start(b))
}

/// Nothing was written to either folder's account files.
fn no_account_files(instances: &[&Instance]) {
    for i in instances {
        for file in [
            "clients.toml",
            "users.toml",
            "invites.toml",
            "sessions.toml",
        ] {
            let path = i.env.server_dir().join(file);
            assert!(!path.exists(), "{} was written", path.display());
        }
    }
}

/// Reads a credential or invite file.
fn credential(path: &PathBuf) -> Credential {
    Credential::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `ferry user invite NAME` on `on`'s folder, for the server at `on`; the invite.
fn invite(on: &Instance, name: &str) -> Credential {
    let path = on.env.join(&format!("{name}.invite"));
    on.run(&[
        "user",
        "invite",
        name,
        "--role",
        "writer",
        "--server",
        &on.served.addr,
        "--out",
        path.to_str().unwrap(),
    ])
    .ok();
    credential(&path)
}

/// `invite` with the address of `to`: the same invite, handed to the other instance.
fn towards(invite: &Credential, to: &Instance) -> Credential {
    let mut c = invite.clone();
    c.server = to.served.addr.clone();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_issued_on_one_folder_works_on_both_until_revoked_there() {
    with_database(|url, _| async move {
        let (a, b) = pair(&url);
        let path = a.env.join("w.cred");
        a.run(&common::issue_args("w", "writer", &a.served.addr, &path))
            .ok();
        let cred = credential(&path);
        // Issued through A's folder, into the database: both servers take it.
        for i in [&a, &b] {
            let mut c = Client::connect_to(&i.served.addr, cred.server_id, &cred)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}; log {:?}", i.served.addr, i.served.log()));
            c.put_bytes("x", b"one".to_vec()).await.unwrap();
            assert!(i.logged("authenticated w (role writer) by psk", 1));
        }
        let mut open_on_b = Client::connect_to(&b.served.addr, cred.server_id, &cred)
            .await
            .unwrap();
        assert_eq!(open_on_b.get_bytes("x").await.unwrap(), b"one");

        // Revoked through A's folder: B refuses the open connection's next request and
        // every new connection, from what the database says.
        let out = a.run(&["client", "revoke", "w"]).ok();
        assert!(out.text().contains("revoked w"), "{}", out.text());
        assert!(open_on_b.get_bytes("x").await.is_err());
        assert!(
            b.logged("w is no longer authorised; closing", 1),
            "{:?}",
            b.served.log()
        );
        let refused_before = b.count(REFUSED);
        let err = Client::connect_to(&b.served.addr, cred.server_id, &cred)
            .await
            .unwrap_err();
        assert!(matches!(err, ferry::Error::AuthFailed), "{err}");
        assert!(
            b.logged("authentication failed (NotCurrent", 1),
            "B's own refusal: {:?}",
            b.served.log()
        );
        assert_eq!(b.count(REFUSED), refused_before + 1);

        // B's folder lists what A's wrote: the commands read the database too.
        let listed = b.run(&["--json", "client", "list"]).ok();
        let v: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
        assert_eq!(v[0]["name"], "w");
        assert_eq!(v[0]["status"], "revoked");
        no_account_files(&[&a, &b]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_opened_on_one_resumes_on_the_other() {
    with_database(|url, _| async move {
        let (a, b) = pair(&url);
        let inv = invite(&a, "alice");
        Client::register(&inv, PW.as_bytes()).await.unwrap();
        let pin = inv.server_id;
        let (mut on_a, session) = Client::login(&a.served.addr, pin, "alice", PW.as_bytes(), true)
            .await
            .unwrap();
        on_a.put_bytes("a/x", b"1".to_vec()).await.unwrap();
        let session = session.expect("a session");
        // Opened on A, resumed on B: B found it in the database.
        let mut on_b = Client::resume(&b.served.addr, pin, session.id, &session.secret)
            .await
            .unwrap_or_else(|e| panic!("resume on B: {e}; log {:?}", b.served.log()));
        on_b.put_bytes("a/y", b"2".to_vec()).await.unwrap();
        assert!(b.logged("authenticated alice (role writer) by session", 1));

        // Revoked through B's folder: A refuses to resume it.
        let id = ferry::accounts::session_id_text(&session.id);
        let listed = b.run(&["--json", "session", "list"]).ok();
        assert!(listed.text().contains(&id), "{}", listed.text());
        b.run(&["session", "revoke", &id]).ok();
        let err = Client::resume(&a.served.addr, pin, session.id, &session.secret)
            .await
            .unwrap_err();
        assert!(matches!(err, ferry::Error::AuthFailed), "{err}");
        assert!(
            a.logged("authentication failed (BadSession", 1),
            "A's own refusal: {:?}",
            a.served.log()
        );
        no_account_files(&[&a, &b]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_guesses_spread_over_both_lock_the_account_on_both() {
    with_database(|url, db| async move {
        let (a, b) = pair(&url);
        let inv = invite(&a, "carol");
        Client::register(&towards(&inv, &b), PW.as_bytes())
            .await
            .unwrap();
        let pin = inv.server_id;
        // One wrong password on each: two failures, the limit ferry.toml sets.
        for i in [&a, &b] {
            let r = Client::login(&i.served.addr, pin, "carol", b"wrong password", false).await;
            assert!(matches!(r, Err(ferry::Error::AuthFailed)));
            assert!(i.logged("authentication failed (PasswordFailed, user carol)", 1));
        }
        let row = connect(&db)
            .await
            .query_one(
                "SELECT failures, locked_until FROM ferry_logins WHERE key = 'account:carol'",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>("failures"), 2);
        assert!(row.get::<_, i64>("locked_until") > 0, "locked");
        // Locked on both: each server refuses the right password.
        for i in [&a, &b] {
            let r = Client::login(&i.served.addr, pin, "carol", PW.as_bytes(), false).await;
            assert!(matches!(r, Err(ferry::Error::AuthFailed)), "{:?}", r.err());
            assert!(
                i.logged("authentication failed (PasswordFailed, user carol)", 2),
                "{}'s own refusal: {:?}",
                i.served.addr,
                i.served.log()
            );
            assert_eq!(i.count("authenticated carol"), 0);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_registrations_racing_with_one_invite_make_one_account() {
    with_database(|url, db| async move {
        let (a, b) = pair(&url);
        for round in 0..3 {
            let name = format!("race{round}");
            let inv = invite(&a, &name);
            let spent_before = [a.count(SPENT), b.count(SPENT)];
            let inv_b = towards(&inv, &b);
            let (on_a, on_b) = tokio::join!(
                Client::register(&inv, b"password of the A side"),
                Client::register(&inv_b, b"password of the B side"),
            );
            let (winner, loser, won_pw, spent_before) = match (&on_a, &on_b) {
                (Ok(()), Err(_)) => (&a, &b, "password of the A side", spent_before[1]),
                (Err(_), Ok(())) => (&b, &a, "password of the B side", spent_before[0]),
                _ => panic!("round {round}: one must win: {on_a:?} {on_b:?}"),
            };
            assert!(matches!(
                on_a.as_ref().err().or(on_b.as_ref().err()),
                Some(ferry::Error::AuthFailed)
            ));
            // The loser's server refused it: the invite was spent when it looked, or its
            // registration lost the race in the database.
            let deadline = Instant::now() + Duration::from_secs(10);
            let refused = |i: &Instance| {
                i.count(&format!("registration for {name} {LOST}")) == 1
                    || i.count(SPENT) == spent_before + 1
            };
            while !refused(loser) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            assert!(refused(loser), "round {round}: {:?}", loser.served.log());
            assert!(winner.logged(&format!("registered user {name}"), 1));
            assert_eq!(loser.count(&format!("registered user {name}")), 0);
            let users: i64 = connect(&db)
                .await
                .query_one("SELECT count(*) FROM ferry_users WHERE name = $1", &[&name])
                .await
                .unwrap()
                .get(0);
            assert_eq!(users, 1);
            // The winner's password is the account's, on both servers.
            for i in [&a, &b] {
                Client::login(
                    &i.served.addr,
                    inv.server_id,
                    &name,
                    won_pw.as_bytes(),
                    false,
                )
                .await
                .unwrap();
            }
        }
        no_account_files(&[&a, &b]);
    })
    .await;
}

/// No database needed: the URL's variable unset, or a database that does not answer, is a
/// clear error and a non-zero exit (never a hang), and the URL's password is never shown.
#[test]
fn serve_and_the_account_commands_fail_clearly_without_the_database() {
    let env = Env::new();
    let secret = "Sup3r-secret-pw";
    let url = format!("postgres://ferry:{secret}@127.0.0.1:1/ferry?connect_timeout=5");
    let out = ferry(&env, &url, &["init", "--backend", "postgres"]).ok();
    assert!(out.stderr.contains("FERRY_PG_URL"), "{}", out.stderr);
    let dir = env.server_dir();
    assert!(dir.join("opaque.key").exists(), "made at init, for copies");
    assert!(!dir.join("clients.toml").exists());
    let conf = std::fs::read_to_string(dir.join("ferry.toml")).unwrap();
    assert!(!conf.contains(secret));

    for args in [
        &["serve", "--listen", "127.0.0.1:0"][..],
        &[
            "client", "issue", "w", "--role", "writer", "--server", "h:1", "--out", "-",
        ],
        &["user", "list"],
        &["session", "revoke", "00"],
    ] {
        let started = Instant::now();
        let out = ferry(&env, &url, args);
        assert_ne!(out.code, 0, "{args:?}");
        assert!(
            out.stderr.contains("PostgreSQL"),
            "{args:?}: {}",
            out.stderr
        );
        assert!(!out.stderr.contains(secret), "{args:?}: {}", out.stderr);
        assert!(started.elapsed() < Duration::from_secs(30), "{args:?}");
        // And the variable unset: said so.
        let mut cmd = env.command(args);
        cmd.env_remove("FERRY_PG_URL");
        let out = common::run(cmd, None, SHORT);
        assert_ne!(out.code, 0);
        assert!(
            out.stderr.contains("FERRY_PG_URL, which is not set"),
            "{args:?}: {}",
            out.stderr
        );
    }
    assert!(!dir.join("clients.toml").exists());
    assert!(!dir.join("sessions.toml").exists());

    // --url-env / --url-file only with --backend postgres, and a name that is one.
    let other = Env::new();
    let out = other.run(&["init", "--url-env", "X"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let out = other.run(&["init", "--backend", "postgres", "--url-env", "not a name"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(!other.server_dir().join("master.key").exists());
}
