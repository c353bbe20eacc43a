//! `SharedBackend` against a real PostgreSQL and a real S3-compatible server: the whole
//! backend conformance suite (each check on a new database and a new object prefix), and
//! two or three instances on one database and bucket (reads across instances, an upload
//! resumed on the other instance, racing puts, change signals by notification and by
//! catch-up, the sweep of orphans).
//!
//! The servers come from `FERRY_TEST_PG_URL` (a role that may `CREATE DATABASE`) and
//! `FERRY_TEST_S3_ENDPOINT`, `FERRY_TEST_S3_BUCKET`, `FERRY_TEST_S3_ACCESS_KEY`,
//! `FERRY_TEST_S3_SECRET_KEY` (`.ci/run` starts both and sets them). Unset, these tests skip
//! saying so, except under `CI=true`, where that is a failure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_backend::conformance::{self, delta::delta_body, delta::noise, join_all, put};
use ferry_backend::{Backend, BackendError, Blobs, Index, Meta, Retention, Upload, UploadKey};
use ferry_postgres::{Config, PgUrl, S3Config, S3Secret, SharedBackend, SharedOptions};
use tokio_postgres::NoTls;

const T0: u64 = 1_700_000_000;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_default().trim().to_owned()
}

/// The servers, or `None` (after saying why) when the tests are to skip.
fn servers() -> Option<(Config, S3Config)> {
    let url = env("FERRY_TEST_PG_URL");
    let endpoint = env("FERRY_TEST_S3_ENDPOINT");
    if url.is_empty() || endpoint.is_empty() {
        assert!(
            env("CI") != "true",
            "CI=true but FERRY_TEST_PG_URL or FERRY_TEST_S3_ENDPOINT is unset: .ci/run starts \
             PostgreSQL and s3s-fs and sets them"
        );
        eprintln!(
            "SKIPPED: FERRY_TEST_PG_URL or FERRY_TEST_S3_ENDPOINT is unset (.ci/run sets them), \
             so the PostgreSQL + object store backend tests did not run"
        );
        return None;
    }
    let s3 = S3Config {
        endpoint: Some(endpoint),
        region: "us-east-1".to_owned(),
        bucket: env("FERRY_TEST_S3_BUCKET"),
        prefix: String::new(),
        access_key_id: env("FERRY_TEST_S3_ACCESS_KEY"),
        secret_access_key: S3Secret::new(env("FERRY_TEST_S3_SECRET_KEY")),
        allow_http: true,
    };
    Some((
        PgUrl::new(url).config().expect("FERRY_TEST_PG_URL parses"),
        s3,
    ))
}

fn random_name(tag: &str) -> String {
    let mut id = [0u8; 8];
    getrandom::fill(&mut id).unwrap();
    format!("{tag}{}", u64::from_le_bytes(id))
}

/// Databases and prefixes made for one test; the databases are dropped at its end.
#[derive(Clone)]
struct Places {
    admin: Config,
    s3: S3Config,
    names: Arc<Mutex<Vec<String>>>,
}

impl Places {
    async fn admin_client(&self) -> tokio_postgres::Client {
        let (client, connection) = self
            .admin
            .connect(NoTls)
            .await
            .expect("FERRY_TEST_PG_URL is set, but PostgreSQL cannot be reached through it");
        tokio::spawn(connection);
        client
    }

    /// A new, empty database and a new object prefix.
    async fn fresh(&self) -> (Config, S3Config) {
        let name = random_name("ferry_test_");
        self.admin_client()
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("the test role may create databases");
        self.names.lock().unwrap().push(name.clone());
        let mut config = self.admin.clone();
        config.dbname(&name);
        let mut s3 = self.s3.clone();
        s3.prefix = random_name("t");
        (config, s3)
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

/// Runs `test`, then drops its databases whether it passed or not.
async fn with_places<F, Fut>(test: F)
where
    F: FnOnce(Places) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some((admin, s3)) = servers() else { return };
    let places = Places {
        admin,
        s3,
        names: Arc::default(),
    };
    let outcome = tokio::spawn(test(places.clone())).await;
    places.drop_all().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

fn options(retention: Retention, catch_up: Duration) -> SharedOptions {
    SharedOptions {
        retention,
        max_connections: 8,
        catch_up,
    }
}

async fn open(pg: &Config, s3: &S3Config, catch_up: Duration) -> SharedBackend {
    SharedBackend::open(pg.clone(), s3, options(Retention::default(), catch_up))
        .await
        .unwrap()
}

/// Waits (at most 15 s) until `rx` reaches `seq`; returns whether it did.
async fn reaches(rx: &mut tokio::sync::watch::Receiver<u64>, seq: u64) -> bool {
    tokio::time::timeout(Duration::from_secs(15), rx.wait_for(|v| *v >= seq))
        .await
        .is_ok_and(|r| r.is_ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_backend_passes_the_conformance_suite() {
    with_places(|places| async move {
        conformance::run_all(|| {
            let places = places.clone();
            async move {
                let (pg, s3) = places.fresh().await;
                let opts = options(conformance::RETENTION, Duration::from_secs(1));
                SharedBackend::open(pg, &s3, opts).await.unwrap()
            }
        })
        .await;
    })
    .await;
}

/// A 20 MiB upload (two full parts and a tail) begun on A, continued and finished on B,
/// committed on B: A reads it byte for byte, whole and in ranges; a delta against it put
/// through A reads back through B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_through_one_instance_reads_back_through_the_other() {
    with_places(|places| async move {
        let (pg, s3) = places.fresh().await;
        let (a, b) = tokio::join!(
            open(&pg, &s3, Duration::from_secs(1)),
            open(&pg, &s3, Duration::from_secs(1))
        );
        let data = noise(b"shared big", 20 << 20);
        let hash = *blake3::hash(&data).as_bytes();
        let key = UploadKey::derive(b"alice/big");
        let mut up = a.begin_upload(&key, T0).await.unwrap();
        for piece in data[..12 << 20].chunks(1 << 20) {
            up.write(piece).await.unwrap();
        }
        // Held on A: B may not take it.
        assert!(matches!(
            b.begin_upload(&key, T0).await,
            Err(BackendError::UploadBusy)
        ));
        drop(up);
        // A's release reaches the database soon after the drop.
        let mut up = None;
        for _ in 0..200 {
            match b.begin_upload(&key, T0 + 1).await {
                Ok(u) => {
                    up = Some(u);
                    break;
                }
                Err(BackendError::UploadBusy) => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => panic!("resume on B: {e}"),
            }
        }
        let mut up = up.expect("B continues the upload A let go");
        assert_eq!(up.offset(), 12 << 20);
        for piece in data[12 << 20..].chunks(1 << 20) {
            up.write(piece).await.unwrap();
        }
        let staged = up.finish(&hash).await.unwrap();
        let e = b.commit("big", staged, "alice", T0 + 2).await.unwrap();
        assert_eq!((e.version, e.size, e.hash), (1, 20 << 20, hash));

        assert_eq!(a.stat("big").await.unwrap(), Some(e.clone()));
        assert_eq!(a.read(&hash, 0, e.size).await.unwrap(), data);
        let (off, len) = ((8 << 20) - 10, 1000u64);
        assert_eq!(
            a.read(&hash, off, len).await.unwrap(),
            &data[off as usize..(off + len) as usize]
        );

        // A delta put through A against the version B committed.
        let mut new = data.clone();
        new[15 << 20] ^= 1;
        new.splice(100..100, [1u8; 64]);
        let (chunks, body) = delta_body(&data, &new);
        let new_hash = *blake3::hash(&new).as_bytes();
        let mut up = a
            .begin_upload(&UploadKey::derive(b"delta"), T0)
            .await
            .unwrap();
        up.write(&body).await.unwrap();
        let staged = up
            .finish_delta(&new_hash, &hash, chunks.clone())
            .await
            .unwrap();
        let e2 = a.commit("big", staged, "alice", T0 + 3).await.unwrap();
        assert_eq!(e2.version, 2);
        assert_eq!(b.read(&new_hash, 0, e2.size).await.unwrap(), new);
        assert_eq!(b.chunks(&new_hash).await.unwrap(), Some(chunks));
    })
    .await;
}

/// Two instances each commit one source twelve times at once (uploads and small commits):
/// versions 1 to 24, each once, each logged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_puts_from_two_instances_get_consecutive_versions() {
    with_places(|places| async move {
        let (pg, s3) = places.fresh().await;
        let (a, b) = tokio::join!(
            open(&pg, &s3, Duration::from_secs(1)),
            open(&pg, &s3, Duration::from_secs(1))
        );
        const N: u64 = 12;
        let mut calls = Vec::new();
        for i in 0..N {
            for (tag, backend) in [(b'a', &a), (b'b', &b)] {
                let content = noise(&[tag, i as u8], 3000);
                let small = i % 2 == 0;
                calls.push(async move {
                    if small {
                        let hash = *blake3::hash(&content).as_bytes();
                        backend
                            .commit_small(
                                "raced".into(),
                                content,
                                hash,
                                Meta::default(),
                                "w".into(),
                                T0,
                            )
                            .await
                            .unwrap()
                    } else {
                        put(backend, "raced", &content, "w", T0 + i).await
                    }
                });
            }
        }
        let entries = join_all(calls).await;
        let mut versions: Vec<u64> = entries.iter().map(|e| e.version).collect();
        versions.sort_unstable();
        assert_eq!(
            versions,
            (1..=2 * N).collect::<Vec<_>>(),
            "one version each, none lost"
        );
        assert_eq!(b.last_seq().await.unwrap(), 2 * N);
        let log = a.changes_since(0, 100).await.unwrap();
        let mut logged: Vec<u64> = log.changes.iter().map(|c| c.version).collect();
        assert_eq!(
            log.changes.iter().map(|c| c.seq).collect::<Vec<_>>(),
            (1..=2 * N).collect::<Vec<_>>()
        );
        logged.sort_unstable();
        assert_eq!(logged, versions);
        // Version order is commit order: the log's versions increase with its sequence.
        assert!(log.changes.windows(2).all(|w| w[0].version < w[1].version));
        let head = a.stat("raced").await.unwrap().unwrap();
        assert_eq!(head.version, 2 * N);
        assert_eq!(a.versions("raced").await.unwrap().len(), 3);
        let latest = entries.iter().find(|e| e.version == 2 * N).unwrap();
        assert_eq!(head.hash, latest.hash);
        assert_eq!(
            b.read(&head.hash, 0, head.size).await.unwrap().len() as u64,
            head.size
        );
    })
    .await;
}

/// A subscriber on B sees A's commits in order through notifications (B's own catch-up is
/// a minute away); a commit whose notification is lost reaches an instance that reads the
/// log now and then, and one whose listening connection was cut (read on reconnection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_on_one_instance_sees_the_other_commits() {
    with_places(|places| async move {
        let (pg, s3) = places.fresh().await;
        let a = open(&pg, &s3, Duration::from_secs(60)).await;
        let b = open(&pg, &s3, Duration::from_secs(60)).await;
        let c = open(&pg, &s3, Duration::from_millis(200)).await;
        let mut rx = b.subscribe();
        assert_eq!(*rx.borrow_and_update(), 0);
        let mut seen = Vec::new();
        for i in 1..=5u64 {
            put(
                &a,
                &format!("w/{}", i % 2),
                &i.to_be_bytes(),
                "alice",
                T0 + i,
            )
            .await;
            assert!(
                reaches(&mut rx, i).await,
                "B's signal reaches {i} by notification"
            );
            let after = seen.last().map_or(0, |c: &ferry_backend::Change| c.seq);
            seen.extend(b.changes_since(after, 10).await.unwrap().changes);
        }
        assert_eq!(
            seen.iter().map(|c| c.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        assert_eq!(
            seen.iter()
                .map(|c| (c.source.as_str(), c.version))
                .collect::<Vec<_>>(),
            [("w/1", 1), ("w/0", 1), ("w/1", 2), ("w/0", 2), ("w/1", 3)]
        );

        // Notifications lost: C (catch-up every 200 ms) still learns of the commit.
        a.set_notify(false);
        let mut rx_c = c.subscribe();
        put(&a, "w/quiet", b"q", "alice", T0).await;
        assert!(
            reaches(&mut rx_c, 6).await,
            "C catches up by reading the log"
        );

        // A commits silently, then B's listening connection is cut: B reads the log when it
        // listens again (its own catch-up is a minute away, and nothing notifies).
        put(&a, "w/quiet", b"r", "alice", T0).await;
        assert!(*rx.borrow() < 7, "nothing told B of change 7 yet");
        let admin = places.admin_client().await;
        let db = pg.get_dbname().unwrap().to_owned();
        let cut = admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = 'ferry-listen' AND datname = $1",
                &[&db],
            )
            .await
            .unwrap();
        assert!(cut >= 3, "each instance listens on a connection of its own");
        assert!(
            reaches(&mut rx, 7).await,
            "B catches up when it listens again"
        );
    })
    .await;
}

/// Content staged and dropped, pruned or deleted is removed by the sweep once its grace is
/// over; visible content stays; a commit of staged content swept meanwhile fails cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_removes_what_nothing_references() {
    with_places(|places| async move {
        let (pg, s3) = places.fresh().await;
        let opts = options(
            Retention {
                keep_versions: 1,
                keep_changes: 100,
            },
            Duration::from_secs(1),
        );
        let b = SharedBackend::open(pg, &s3, opts).await.unwrap();
        let kept = put(&b, "kept", b"kept content", "w", T0).await;
        put(&b, "pruned", b"first", "w", T0).await;
        put(&b, "pruned", b"second", "w", T0).await;
        put(&b, "deleted", b"gone", "w", T0).await;
        b.delete("deleted", "w", T0).await.unwrap();
        let dropped =
            ferry_backend::stage_bytes(&b, &UploadKey::derive(b"dropped"), b"dropped", T0)
                .await
                .unwrap();
        drop(dropped);
        assert_eq!(b.object_names().await.unwrap().len(), 5);
        // A long grace removes nothing yet.
        assert_eq!(b.sweep_objects(Duration::from_secs(3600)).await.unwrap(), 0);
        // Grace over: the pruned and deleted contents and the dropped staging go.
        assert_eq!(b.sweep_objects(Duration::ZERO).await.unwrap(), 3);
        assert_eq!(b.object_names().await.unwrap().len(), 2);
        assert_eq!(
            b.read(&kept.hash, 0, kept.size).await.unwrap(),
            b"kept content"
        );
        let current = b.stat("pruned").await.unwrap().unwrap();
        assert_eq!(
            b.read(&current.hash, 0, current.size).await.unwrap(),
            b"second"
        );

        // Staged, swept before its commit: the commit fails and shows nothing.
        let staged = ferry_backend::stage_bytes(&b, &UploadKey::derive(b"late"), b"late", T0)
            .await
            .unwrap();
        assert_eq!(b.sweep_objects(Duration::ZERO).await.unwrap(), 1);
        assert!(b.commit("late", staged, "w", T0).await.is_err());
        assert!(b.head("late").await.unwrap().is_none());
        assert_eq!(b.last_seq().await.unwrap(), 5);
    })
    .await;
}

/// An object store that does not answer (a closed port) or refuses the keys fails the open
/// with one error naming no secret, in bounded time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_object_store_fails_the_open_clearly() {
    with_places(|places| async move {
        let (pg, mut s3) = places.fresh().await;
        let secret = "do-not-print-this-secret";
        s3.secret_access_key = S3Secret::new(secret.to_owned());
        let refused = SharedBackend::open(pg.clone(), &s3, SharedOptions::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(refused.contains("object store"), "{refused}");
        assert!(!refused.contains(secret), "{refused}");

        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        s3.endpoint = Some(format!("http://127.0.0.1:{port}"));
        let started = std::time::Instant::now();
        let down = SharedBackend::open(pg, &s3, SharedOptions::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(down.contains("object store"), "{down}");
        assert!(!down.contains(secret), "{down}");
        assert!(started.elapsed() < Duration::from_secs(90));
        assert!(!format!("{s3:?}").contains(secret));
    })
    .await;
}
