//! `PgAccounts` against a real PostgreSQL: the account conformance checks, each on a new
//! database of its own, and races between two instances (two pools on one database).
//!
//! The server comes from `FERRY_TEST_PG_URL` (a role that may `CREATE DATABASE`; `.ci/run`
//! starts PostgreSQL and sets it). Unset, these tests skip saying so, except under `CI=true`,
//! where that is a failure: CI must not skip them silently. Set but unreachable is always a
//! failure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use ferry_backend::accounts::{Accounts, LoginPolicy, SessionEntry, UserEntry};
use ferry_backend::conformance;
use ferry_postgres::{Config, PgAccounts, PgUrl};
use ferry_proto::files::MAX_SESSIONS_PER_NAME;
use ferry_proto::password::KsfParams;
use ferry_proto::secret::SessionSecret;
use tokio_postgres::NoTls;

const T0: u64 = 1_700_000_000;

/// The server's configuration, or `None` (after saying why) when the test is to skip.
fn server() -> Option<Config> {
    let url = std::env::var("FERRY_TEST_PG_URL").unwrap_or_default();
    if url.trim().is_empty() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but FERRY_TEST_PG_URL is unset: .ci/run starts PostgreSQL and sets it"
        );
        eprintln!(
            "SKIPPED: FERRY_TEST_PG_URL is unset (a postgres:// URL whose role may create \
             databases; .ci/run sets one), so the PostgreSQL account tests did not run"
        );
        return None;
    }
    Some(PgUrl::new(url).config().expect("FERRY_TEST_PG_URL parses"))
}

/// Databases made for one test, dropped by [`Databases::drop_all`].
#[derive(Clone)]
struct Databases {
    admin: Config,
    names: Arc<Mutex<Vec<String>>>,
}

impl Databases {
    fn new(admin: Config) -> Self {
        Databases {
            admin,
            names: Arc::default(),
        }
    }

    async fn admin_client(&self) -> tokio_postgres::Client {
        let (client, connection) = self
            .admin
            .connect(NoTls)
            .await
            .expect("FERRY_TEST_PG_URL is set, but PostgreSQL cannot be reached through it");
        tokio::spawn(connection);
        client
    }

    /// A new, empty database; its configuration.
    async fn fresh(&self) -> Config {
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).unwrap();
        let name = format!("ferry_test_{}", u64::from_le_bytes(id));
        self.admin_client()
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("the test role may create databases");
        self.names.lock().unwrap().push(name.clone());
        let mut config = self.admin.clone();
        config.dbname(&name);
        config
    }

    async fn drop_all(&self) {
        let client = self.admin_client().await;
        let names = std::mem::take(&mut *self.names.lock().unwrap());
        for name in names {
            client
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await
                .unwrap();
        }
    }
}

/// Runs `test` with `dbs`, then drops its databases whether it passed or not.
async fn with_databases<F, Fut>(admin: Config, test: F)
where
    F: FnOnce(Databases) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dbs = Databases::new(admin);
    let outcome = tokio::spawn(test(dbs.clone())).await;
    dbs.drop_all().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_accounts_pass_the_account_checks() {
    let Some(admin) = server() else { return };
    with_databases(admin, |dbs| async move {
        conformance::accounts::run_all(|| {
            let dbs = dbs.clone();
            async move { PgAccounts::open_config(dbs.fresh().await, 4).await.unwrap() }
        })
        .await;
    })
    .await;
}

fn user(record: &str) -> UserEntry {
    UserEntry {
        attributes: BTreeMap::new(),
        record: record.to_owned(),
        ksf: KsfParams {
            m_kib: 8,
            t: 1,
            p: 1,
        },
        created: T0,
        generation: 0,
    }
}

/// Two instances (two pools) on one database, opened at once (their migrations race too).
async fn two_instances(dbs: &Databases) -> (PgAccounts, PgAccounts) {
    let config = dbs.fresh().await;
    let (a, b) = tokio::join!(
        PgAccounts::open_config(config.clone(), 8),
        PgAccounts::open_config(config, 8)
    );
    (a.unwrap(), b.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_racing_one_invite_register_one_account() {
    let Some(admin) = server() else { return };
    with_databases(admin, |dbs| async move {
        let (a, b) = two_instances(&dbs).await;
        for round in 0..5 {
            let name = format!("race{round}");
            let invite = a
                .create_invite(&name, BTreeMap::new(), T0 + 100)
                .await
                .unwrap();
            let tries = (0..16).map(|i| {
                let (db, name) = (if i % 2 == 0 { a.clone() } else { b.clone() }, name.clone());
                tokio::spawn(async move {
                    db.register_with_invite(&name, invite.serial, user(&format!("r{i}")), T0)
                        .await
                        .unwrap()
                })
            });
            let mut won = Vec::new();
            for t in tries.collect::<Vec<_>>() {
                won.extend(t.await.unwrap());
            }
            assert_eq!(won.len(), 1, "round {round}: {won:?}");
            let stored = b.user(&name).await.unwrap().unwrap();
            assert_eq!(stored.generation, won[0]);
            assert!(a.invite(&name).await.unwrap().unwrap().spent);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_count_every_failed_login() {
    let Some(admin) = server() else { return };
    with_databases(admin, |dbs| async move {
        let (a, b) = two_instances(&dbs).await;
        let policy = LoginPolicy {
            max_failures: 1_000,
            window_secs: 900,
            lockout_secs: 60,
        };
        const N: u32 = 60;
        let tries: Vec<_> = (0..N)
            .map(|i| {
                let db = if i % 2 == 0 { a.clone() } else { b.clone() };
                tokio::spawn(async move { db.login_failed("user:x", T0, &policy).await.unwrap() })
            })
            .collect();
        let mut counts = Vec::new();
        for t in tries {
            counts.push(t.await.unwrap().failures);
        }
        // Every failure counted once: the states returned are 1..=N, each once.
        counts.sort_unstable();
        assert_eq!(counts, (1..=N).collect::<Vec<_>>());
        assert_eq!(a.login_state("user:x").await.unwrap().failures, N);
        assert_eq!(b.login_state("user:x").await.unwrap().failures, N);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_keep_a_name_within_its_session_bound() {
    let Some(admin) = server() else { return };
    with_databases(admin, |dbs| async move {
        let (a, b) = two_instances(&dbs).await;
        let total = 3 * MAX_SESSIONS_PER_NAME;
        let puts: Vec<_> = (0..total)
            .map(|i| {
                let db = if i % 2 == 0 { a.clone() } else { b.clone() };
                tokio::spawn(async move {
                    let entry = SessionEntry {
                        name: "alice".to_owned(),
                        attributes: BTreeMap::new(),
                        origin: "psk:1".to_owned(),
                        secret: SessionSecret::from_bytes([7; 32]),
                        created: T0,
                        last_used: T0,
                        idle_secs: 1_000,
                        expires: T0 + 10_000,
                    };
                    db.put_session(&format!("s{i:03}"), entry, T0)
                        .await
                        .unwrap();
                })
            })
            .collect();
        for p in puts {
            p.await.unwrap();
        }
        let mut live = 0;
        for i in 0..total {
            live += usize::from(a.session(&format!("s{i:03}")).await.unwrap().is_some());
        }
        assert_eq!(live, MAX_SESSIONS_PER_NAME);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_applies_no_migration_twice_and_keeps_the_data() {
    let Some(admin) = server() else { return };
    with_databases(admin, |dbs| async move {
        let config = dbs.fresh().await;
        let a = PgAccounts::open_config(config.clone(), 2).await.unwrap();
        a.issue_client("c", BTreeMap::new(), T0).await.unwrap();
        if let Some(password) = config.get_password().filter(|p| !p.is_empty()) {
            let shown = format!("{a:?}");
            assert!(
                !shown
                    .as_bytes()
                    .windows(password.len())
                    .any(|w| w == password)
            );
        }
        a.close();
        let b = PgAccounts::open_config(config, 2).await.unwrap();
        assert_eq!(b.client("c").await.unwrap().unwrap().epoch, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_blocked_by_another_instance_fails_after_the_lock_timeout() {
    let Some(admin) = server() else { return };
    with_databases(admin, |dbs| async move {
        let mut config = dbs.fresh().await;
        let a = PgAccounts::open_config(config.clone(), 2).await.unwrap();
        a.issue_client("c", BTreeMap::new(), T0).await.unwrap();
        let (probe, connection) = config.connect(NoTls).await.unwrap();
        tokio::spawn(connection);
        // Another "instance" holds the client's row in an open transaction.
        probe
            .batch_execute("BEGIN; SELECT * FROM ferry_clients WHERE name = 'c' FOR UPDATE")
            .await
            .unwrap();
        config.options("-c lock_timeout=300ms");
        let b = PgAccounts::open_config(config, 2).await.unwrap();
        let started = std::time::Instant::now();
        let err = b.revoke_client("c").await.unwrap_err().to_string();
        assert!(err.contains("SQLSTATE 55P03"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        probe.batch_execute("ROLLBACK").await.unwrap();
        assert!(
            b.revoke_client("c").await.unwrap(),
            "works once the lock is gone"
        );
    })
    .await;
}

/// Runs without a server: the password of a URL appears in no `Debug` and no error.
#[tokio::test]
async fn the_url_password_is_never_shown() {
    let secret = "Sup3rSecretPw";
    // Port 1 on loopback: nothing listens, the connection is refused.
    let url = PgUrl::new(format!(
        "postgres://ferry:{secret}@127.0.0.1:1/ferry?connect_timeout=5"
    ));
    assert_eq!(format!("{url:?}"), "PgUrl(..)");
    let err = PgAccounts::open(&url, 1).await.unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(secret), "{shown}");
    let bad = PgUrl::new(format!("postgres://ferry:{secret}@127.0.0.1:notaport/x"));
    let err = PgAccounts::open(&bad, 1).await.unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(secret), "{shown}");
    assert!(shown.contains("does not parse"), "{shown}");
}
