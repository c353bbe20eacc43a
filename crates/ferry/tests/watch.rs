//! Change events over real loopback TLS: order and fields, role filtering, resuming after a
//! cut, gaps, keep-alives, revocation, and the in-process feed the mesh uses.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{TestServer, panics};
use ferry::proto::credential::Credential;
use ferry::proto::message::{Message, WatchEvent, WatchPing};
use ferry::{Client, Error, Watch, WatchItem};

/// Bound on waiting for any one event.
const WAIT: Duration = Duration::from_secs(10);

async fn next(w: &mut Watch) -> WatchItem {
    tokio::time::timeout(WAIT, w.next())
        .await
        .expect("an event within the time bound")
        .unwrap()
}

async fn next_event(w: &mut Watch) -> WatchEvent {
    match next(w).await {
        WatchItem::Event(e) => e,
        other => panic!("expected an event, got {other:?}"),
    }
}

async fn connect(srv: &TestServer, cred: &Credential) -> Client {
    Client::connect_to(&srv.addr.to_string(), cred.server_id, cred)
        .await
        .unwrap()
}

async fn put(srv: &TestServer, cred: &Credential, source: &str, data: &[u8]) -> u64 {
    let mut c = connect(srv, cred).await;
    let e = c.put_bytes(source, data.to_vec()).await.unwrap();
    c.close().await.unwrap();
    e.version
}

/// Events until (and including) the one for `source`, by source name.
async fn events_until(w: &mut Watch, source: &str) -> Vec<WatchEvent> {
    let mut out = Vec::new();
    loop {
        let e = next_event(w).await;
        let done = e.source == source;
        out.push(e);
        if done {
            return out;
        }
    }
}

fn fast_pings(l: &mut ferry::Limits) {
    l.watch_ping = Duration::from_millis(100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_sees_puts_and_a_delete_by_another_client_in_order() {
    let srv = TestServer::start().await;
    let alice = srv.issue("alice", "writer");
    let bob = srv.issue("bob", "reader");
    put(&srv, &alice, "before/watch", b"not seen").await;

    let mut w = connect(&srv, &bob).await.watch("", None).await.unwrap();
    assert_eq!(w.server_seq(), 1);
    assert_eq!(w.cursor(), 1, "from now on");

    put(&srv, &alice, "docs/a.txt", b"one").await;
    put(&srv, &alice, "docs/a.txt", b"second").await;
    let mut c = connect(&srv, &alice).await;
    assert_eq!(c.delete("docs/a.txt").await.unwrap(), 3);
    c.close().await.unwrap();

    let first = next_event(&mut w).await;
    assert_eq!(
        first,
        WatchEvent {
            seq: 2,
            source: "docs/a.txt".into(),
            version: 1,
            deleted: false,
            size: 3,
            hash: *blake3::hash(b"one").as_bytes(),
            modified: first.modified,
            by: "alice".into(),
        }
    );
    let now = ferry::clock::now();
    assert!(first.modified <= now && first.modified + 60 > now);
    let second = next_event(&mut w).await;
    assert_eq!((second.seq, second.version, second.size), (3, 2, 6));
    assert_eq!(second.hash, *blake3::hash(b"second").as_bytes());
    let gone = next_event(&mut w).await;
    assert_eq!(
        (gone.seq, gone.version, gone.deleted, gone.size, gone.hash),
        (4, 3, true, 0, [0; 32])
    );
    assert_eq!(gone.by, "alice");
    assert_eq!(w.cursor(), 4);
    w.close().await.unwrap();
    srv.stop().await;
    assert_eq!(panics(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_filtered_by_role_and_prefix_and_the_cursor_still_advances() {
    let srv = TestServer::start_full(
        |cfg| {
            cfg.replace(
                "[roles]\n",
                "[roles]\npartial = [{ ops = [\"get\", \"list\", \"stat\"], sources = [\"y/**\", \"z\"] }]\n",
            )
        },
        fast_pings,
    )
    .await;
    let alice = srv.issue("alice", "writer");
    let pat = srv.issue("pat", "partial");
    let mut all = connect(&srv, &pat).await.watch("", Some(0)).await.unwrap();
    let mut only_y = connect(&srv, &pat)
        .await
        .watch("y/", Some(0))
        .await
        .unwrap();

    for source in ["x/secret", "y/1", "x/more", "z", "y/2", "x/last"] {
        put(&srv, &alice, source, source.as_bytes()).await;
    }
    let seen: Vec<_> = events_until(&mut all, "y/2")
        .await
        .into_iter()
        .map(|e| (e.seq, e.source))
        .collect();
    assert_eq!(
        seen,
        [
            (2, "y/1".to_owned()),
            (4, "z".to_owned()),
            (5, "y/2".to_owned())
        ]
    );
    let seen: Vec<_> = events_until(&mut only_y, "y/2")
        .await
        .into_iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seen, [2, 5]);

    // x/last (6) is filtered, yet the stream's position moves past it: a keep-alive says
    // so, and a resume from there does not look at it again.
    let mut raw = common::raw_session(srv.addr, &pat).await;
    raw.send(&Message::Watch(ferry::proto::message::Watch {
        prefix: String::new(),
        after: Some(5),
    }))
    .await
    .unwrap();
    let ok = tokio::time::timeout(WAIT, raw.recv_message())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(ok, Message::WatchOk(ref o) if o.seq == 6 && o.ping_ms == 100),
        "{ok:?}"
    );
    let ping = tokio::time::timeout(WAIT, raw.recv_message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ping, Message::WatchPing(WatchPing { seq: 6 }));
    drop(raw);
    put(&srv, &alice, "y/3", b"3").await;
    let e = next_event(&mut all).await;
    assert_eq!((e.seq, e.source.as_str()), (7, "y/3"));
    assert_eq!(all.cursor(), 7);
    srv.stop().await;
    assert_eq!(panics(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_resumes_after_a_restart_without_missing_or_repeating() {
    let srv = TestServer::start().await;
    let alice = srv.issue("alice", "writer");
    let bob = srv.issue("bob", "reader");
    let mut w = connect(&srv, &bob).await.watch("", None).await.unwrap();
    put(&srv, &alice, "a", b"1").await;
    put(&srv, &alice, "b", b"2").await;
    assert_eq!(next_event(&mut w).await.seq, 1);
    assert_eq!(next_event(&mut w).await.seq, 2);
    let cursor = w.cursor();

    // The server goes away: the stream ends (not hangs).
    let srv = srv.restart(|c| c).await;
    let end = tokio::time::timeout(WAIT, w.next())
        .await
        .expect("the cut is noticed");
    assert!(matches!(end, Err(Error::Closed | Error::Io(_))), "{end:?}");
    drop(w);

    // Changes while the watcher is away.
    put(&srv, &alice, "c", b"3").await;
    let mut c = connect(&srv, &alice).await;
    c.delete("a").await.unwrap();
    c.close().await.unwrap();

    let mut w = connect(&srv, &bob)
        .await
        .watch("", Some(cursor))
        .await
        .unwrap();
    assert_eq!(w.server_seq(), 4);
    put(&srv, &alice, "sentinel", b"end").await;
    let got: Vec<_> = events_until(&mut w, "sentinel")
        .await
        .into_iter()
        .map(|e| (e.seq, e.source, e.deleted))
        .collect();
    assert_eq!(
        got,
        [
            (3, "c".to_owned(), false),
            (4, "a".to_owned(), true),
            (5, "sentinel".to_owned(), false)
        ],
        "exactly the missed changes, once, then the new one"
    );
    srv.stop().await;
    assert_eq!(panics(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pruned_resume_point_is_reported_as_a_gap() {
    let srv =
        TestServer::start_with_config(|c| c.replace("keep_changes = 100000", "keep_changes = 2"))
            .await;
    let alice = srv.issue("alice", "writer");
    for i in 0..5u8 {
        put(&srv, &alice, "s", &[i]).await;
    }
    // Changes 2 and 3 are gone; the log holds 4 and 5.
    let mut w = connect(&srv, &alice)
        .await
        .watch("", Some(1))
        .await
        .unwrap();
    assert_eq!(next(&mut w).await, WatchItem::Gap { oldest: 4, seq: 3 });
    assert_eq!(next_event(&mut w).await.seq, 4);
    assert_eq!(next_event(&mut w).await.seq, 5);
    // A position from another history (beyond this server's log) is a gap too.
    let mut w = connect(&srv, &alice)
        .await
        .watch("", Some(99))
        .await
        .unwrap();
    assert_eq!(next(&mut w).await, WatchItem::Gap { oldest: 4, seq: 3 });
    assert_eq!(next_event(&mut w).await.seq, 4);
    // Right at the edge there is no gap.
    let mut w = connect(&srv, &alice)
        .await
        .watch("", Some(3))
        .await
        .unwrap();
    assert_eq!(next_event(&mut w).await.seq, 4);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alives_flow_and_revocation_closes_the_stream() {
    let srv = TestServer::start_with(fast_pings).await;
    let alice = srv.issue("alice", "writer");
    let bob = srv.issue("bob", "reader");
    let mut w = connect(&srv, &bob).await.watch("", None).await.unwrap();
    // Several keep-alive periods of silence do not end the stream.
    tokio::time::sleep(Duration::from_millis(500)).await;
    put(&srv, &alice, "a", b"1").await;
    assert_eq!(next_event(&mut w).await.seq, 1);

    srv.server_dir.revoke_client("bob").unwrap();
    let end = tokio::time::timeout(WAIT, w.next())
        .await
        .expect("closed within the bound");
    assert!(matches!(end, Err(Error::AuthFailed)), "{end:?}");
    srv.stop().await;
    assert_eq!(panics(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_prefix_is_refused_and_the_connection_stays_usable() {
    let srv = TestServer::start().await;
    let alice = srv.issue("alice", "writer");
    let mut c = connect(&srv, &alice).await;
    let reply = c
        .raw_request(&Message::Watch(ferry::proto::message::Watch {
            prefix: "a\u{7}b".into(),
            after: None,
        }))
        .await
        .unwrap();
    assert!(
        matches!(&reply, Message::Error(e) if e.code == ferry::proto::message::ErrorCode::BadRequest),
        "{reply:?}"
    );
    // A prefix not in NFC is refused too: names are compared in NFC (PROTOCOL.md §5.1).
    let reply = c
        .raw_request(&Message::Watch(ferry::proto::message::Watch {
            prefix: "e\u{301}".into(),
            after: None,
        }))
        .await
        .unwrap();
    assert!(
        matches!(&reply, Message::Error(e) if e.code == ferry::proto::message::ErrorCode::BadRequest && e.message.contains("NFC")),
        "{reply:?}"
    );
    c.put_bytes("still/works", b"yes".to_vec()).await.unwrap();
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_commits_through_the_servers_store_wake_feeds_and_watchers() {
    common::install_panic_counter();
    let tmp = tempfile::tempdir().unwrap();
    let dir = ferry::ServerDir::new(tmp.path().join("srv"));
    dir.init().unwrap();
    let bound = ferry::Server::open(&dir)
        .unwrap()
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    // What an embedder (the mesh) takes before running the server.
    let store = bound.store();
    let mut feed = bound.changes();
    assert_eq!(feed.last_seq(), 0);
    let role = std::collections::BTreeMap::from([("role".to_owned(), "reader".to_owned())]);
    let addr = bound.local_addr().to_string();
    let bob = dir.issue_client("bob", role, Some(&addr), 0).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(bound.run(async {
        let _ = stopped.await;
    }));
    let mut w = Client::connect(&bob)
        .await
        .unwrap()
        .watch("", None)
        .await
        .unwrap();

    // A follower waits until something changes.
    let mut waiting = feed.clone();
    let pending = tokio::spawn(async move { waiting.next_batch(0, 10).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !pending.is_finished(),
        "next_batch returned with nothing new"
    );

    let s = store.clone();
    let entry = tokio::task::spawn_blocking(move || {
        let mut up = s.begin_put().unwrap();
        up.write_chunk(b"from a peer").unwrap();
        s.commit_replica("mesh/a", up.finish().unwrap(), "peer", 1_700_000_000, 7)
    })
    .await
    .unwrap()
    .unwrap()
    .expect("a replica of an unknown source applies");
    assert_eq!(entry.version, 7);

    let page = tokio::time::timeout(WAIT, pending)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(page.changes.len(), 1);
    assert_eq!((page.changes[0].seq, page.changes[0].version), (1, 7));
    let e = next_event(&mut w).await;
    assert_eq!(
        (
            e.seq,
            e.source.as_str(),
            e.version,
            e.by.as_str(),
            e.modified
        ),
        (1, "mesh/a", 7, "peer", 1_700_000_000)
    );

    let s = store.clone();
    let applied = tokio::task::spawn_blocking(move || s.delete_replica("mesh/a", 9, "peer", 5))
        .await
        .unwrap()
        .unwrap();
    assert!(applied);
    let page = tokio::time::timeout(WAIT, feed.next_batch(1, 10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(page.changes[0].version, 9);
    assert!(page.changes[0].deleted);
    let e = next_event(&mut w).await;
    assert_eq!((e.seq, e.version, e.deleted), (2, 9, true));
    assert_eq!(feed.last_seq(), 2);

    let _ = stop.send(());
    tokio::time::timeout(WAIT, server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(panics(), 0);
}
