//! Mesh membership over real loopback TLS: joining with the password (CPace bound to the
//! connection), member authentication, and removal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use ferry::mesh::device::DeviceKey;
use ferry::mesh::peer;
use ferry::proto::mesh::state::{Member, MeshState};
use ferry::proto::secret::MeshKey;
use ferry::{Error, ServerDir};
use zeroize::Zeroizing;

const PASSWORD: &str = "correct horse battery staple";

fn device(dir: &ServerDir) -> DeviceKey {
    DeviceKey::from_identity(&dir.identity().unwrap()).unwrap()
}

/// A: a running server that created a mesh and is open for joins.
async fn opener() -> TestServer {
    opener_with(|t| t).await
}

/// [`opener`] with ferry.toml edited by `edit`.
async fn opener_with(edit: impl FnOnce(String) -> String) -> TestServer {
    let a = TestServer::start_with_config(edit).await;
    let d = device(&a.server_dir);
    let me = Member {
        spki: d.spki().to_vec(),
        name: "a".into(),
        addr: a.addr.to_string(),
    };
    a.server_dir
        .update_mesh(|s| {
            *s = Some(MeshState::create("home", me, MeshKey::from_bytes([7; 32])));
            (true, ())
        })
        .unwrap();
    a.server_dir
        .open_mesh(Zeroizing::new(PASSWORD.into()), ferry::clock::now() + 600)
        .unwrap();
    a
}

/// A fresh server folder (not running) for a joiner.
fn joiner_dir(tmp: &tempfile::TempDir, name: &str) -> ServerDir {
    let d = ServerDir::new(tmp.path().join(name));
    d.init().unwrap();
    d
}

async fn join(a: &TestServer, b: &ServerDir, pw: &str) -> Result<MeshState, Error> {
    let a_id = a.server_dir.identity().unwrap().server_id();
    let g = peer::join(
        &a.addr.to_string(),
        a_id,
        &device(b),
        "b",
        4433,
        pw.as_bytes(),
    )
    .await?;
    let s = MeshState::from_grant(g).unwrap();
    b.update_mesh(|x| {
        *x = Some(s.clone());
        (true, ())
    })
    .unwrap();
    Ok(s)
}

/// A server whose open window closes after `n` failed joins.
async fn opener_limited(n: u32) -> TestServer {
    opener_with(|t| {
        t.replace(
            "max_join_failures = 10",
            &format!("max_join_failures = {n}"),
        )
    })
    .await
}

type JoinWire = ferry::wire::Wire<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// A join driven by hand (past the client library's own checks): connects to `a` and sends
/// `mesh_join_start` with `pw` and `name`. Returns the connection, its exporter, the joiner's
/// device and its CPace state.
async fn raw_join_start(
    a: &TestServer,
    b: &ServerDir,
    pw: &str,
    name: &str,
) -> (
    JoinWire,
    ferry::proto::secret::Exporter,
    DeviceKey,
    ferry::proto::mesh::join::Joiner,
) {
    use ferry::proto::mesh::join::Joiner;
    use ferry::proto::mesh::wire::MeshJoinStart;
    use ferry::proto::message::Message;
    let a_id = a.server_dir.identity().unwrap().server_id();
    let tls = ferry::Client::connect_tls(&a.addr.to_string(), a_id)
        .await
        .unwrap();
    let exporter = ferry::tls::export(tls.get_ref().1).unwrap();
    let mut wire = ferry::wire::Wire::new(tls);
    let me = device(b);
    let mut rng = rand_core_10::UnwrapErr(getrandom_04::SysRng);
    let (share, joiner) =
        Joiner::start(pw.as_bytes(), &exporter, &me.id(), a_id, &mut rng).unwrap();
    wire.send(&Message::MeshJoinStart(MeshJoinStart {
        share,
        device: me.spki().to_vec(),
        name: name.into(),
        port: 1,
    }))
    .await
    .unwrap();
    (wire, exporter, me, joiner)
}

/// Starts a join with `pw` and hangs up as soon as the opener's `mesh_join_response` arrives
/// (from it the joiner already knows whether its guess was right). `true` if it arrived.
async fn guess_and_hang_up(a: &TestServer, b: &ServerDir, pw: &str) -> bool {
    use ferry::proto::message::Message;
    let (mut wire, ..) = raw_join_start(a, b, pw, "guesser").await;
    let answer = tokio::time::timeout(Duration::from_secs(10), wire.recv_message()).await;
    matches!(answer, Ok(Ok(Message::MeshJoinResponse(_))))
    // Dropped here: the connection closes without a `mesh_join_finish`.
}

/// [`raw_join_start`] with the right password, up to the opener's `mesh_join_response`;
/// returns the joiner's confirmation instead of its CPace state.
async fn raw_join_until_response(
    a: &TestServer,
    b: &ServerDir,
    name: &str,
) -> (
    JoinWire,
    ferry::proto::secret::Exporter,
    DeviceKey,
    [u8; 32],
) {
    use ferry::proto::message::Message;
    let (mut wire, exporter, me, joiner) = raw_join_start(a, b, PASSWORD, name).await;
    let Message::MeshJoinResponse(r) = wire.recv_message().await.unwrap() else {
        panic!("no response");
    };
    let confirm = joiner.confirm(&r.share, &r.confirm).unwrap();
    (wire, exporter, me, confirm)
}

/// Sends the joiner's finish; returns the opener's answer.
async fn raw_join_finish(
    mut wire: JoinWire,
    exporter: &ferry::proto::secret::Exporter,
    me: &DeviceKey,
    confirm: [u8; 32],
) -> Option<ferry::proto::message::Message> {
    use ferry::proto::mesh::wire::MeshJoinFinish;
    use ferry::proto::message::Message;
    wire.send(&Message::MeshJoinFinish(MeshJoinFinish {
        confirm,
        signature: me.prove("join", exporter).unwrap(),
    }))
    .await
    .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), wire.recv_message()).await;
    answer.ok().and_then(Result::ok)
}

#[tokio::test]
async fn a_join_in_flight_when_the_window_closes_is_refused_at_its_finish() {
    let a = opener().await;
    let tmp = tempfile::tempdir().unwrap();
    let b = joiner_dir(&tmp, "b");
    let (wire, exporter, me, confirm) = raw_join_until_response(&a, &b, "b").await;
    // The window closes while this joiner is between the response and its finish.
    assert!(a.server_dir.close_mesh().unwrap());
    let answer = raw_join_finish(wire, &exporter, &me, confirm).await;
    assert!(
        matches!(answer, Some(ferry::proto::message::Message::AuthFailed(_))),
        "{answer:?}"
    );
    assert_eq!(a.server_dir.mesh_state().unwrap().unwrap().members.len(), 1);
}

#[tokio::test]
async fn a_joiner_naming_itself_with_control_characters_is_refused_by_the_opener() {
    let a = opener().await;
    let tmp = tempfile::tempdir().unwrap();
    let b = joiner_dir(&tmp, "b");
    // The client library refuses such a name before it connects...
    let a_id = a.server_dir.identity().unwrap().server_id();
    let local = peer::join(
        &a.addr.to_string(),
        a_id,
        &device(&b),
        "evil\x1b[2J",
        1,
        PASSWORD.as_bytes(),
    )
    .await;
    assert!(matches!(local, Err(Error::Config(_))), "{local:?}");
    // ... and the opener refuses it from a joiner that knows the password, like any failed join.
    let (wire, exporter, me, confirm) =
        raw_join_until_response(&a, &b, "evil\x1b[2J\u{202E}").await;
    let answer = raw_join_finish(wire, &exporter, &me, confirm).await;
    assert!(
        matches!(answer, Some(ferry::proto::message::Message::AuthFailed(_))),
        "{answer:?}"
    );
    assert_eq!(a.server_dir.mesh_state().unwrap().unwrap().members.len(), 1);
    // A name of any script, with spaces and punctuation, is fine.
    let (wire, exporter, me, confirm) = raw_join_until_response(&a, &b, "Zoë's laptop").await;
    let answer = raw_join_finish(wire, &exporter, &me, confirm).await;
    assert!(
        matches!(answer, Some(ferry::proto::message::Message::MeshJoinOk(_))),
        "{answer:?}"
    );
}

/// Waits (at most 10 s) until the open window's file is gone from `a`'s folder.
async fn window_removed(a: &TestServer) -> bool {
    let file = a.server_dir.path().join("mesh-open.toml");
    for _ in 0..100 {
        if !file.exists() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn joiners_that_hang_up_after_the_response_are_counted_and_close_the_window() {
    let a = opener_limited(3).await;
    let tmp = tempfile::tempdir().unwrap();
    let b = joiner_dir(&tmp, "b");
    for i in 0..3 {
        assert!(guess_and_hang_up(&a, &b, "a guess").await, "guess {i}");
    }
    // Counted on the server: the third closed the window and removed its password.
    assert!(
        window_removed(&a).await,
        "three hang-ups did not close the window"
    );
    assert!(matches!(
        join(&a, &b, PASSWORD).await,
        Err(Error::AuthFailed)
    ));
    assert_eq!(a.server_dir.mesh_state().unwrap().unwrap().members.len(), 1);
    assert_eq!(common::panics(), 0);
}

#[tokio::test]
async fn after_the_failure_limit_the_right_password_is_refused_until_reopened() {
    let a = opener_limited(3).await;
    let tmp = tempfile::tempdir().unwrap();
    let b = joiner_dir(&tmp, "b");
    for i in 0..3 {
        let r = join(&a, &b, &format!("wrong {i}")).await;
        assert!(matches!(r, Err(Error::AuthFailed)), "{r:?}");
    }
    // Refused like a wrong password, and the password is gone from disk.
    let r = join(&a, &b, PASSWORD).await;
    assert!(matches!(r, Err(Error::AuthFailed)), "{r:?}");
    assert!(window_removed(&a).await);
    assert_eq!(a.server_dir.mesh_state().unwrap().unwrap().members.len(), 1);
    // A new window accepts the right password again.
    a.server_dir
        .open_mesh(Zeroizing::new(PASSWORD.into()), ferry::clock::now() + 300)
        .unwrap();
    join(&a, &b, PASSWORD).await.unwrap();
    assert_eq!(a.server_dir.mesh_state().unwrap().unwrap().members.len(), 2);
}

#[tokio::test]
async fn parallel_joins_are_answered_one_after_another_each_after_its_delay() {
    let a = opener().await;
    let tmp = tempfile::tempdir().unwrap();
    let b = joiner_dir(&tmp, "b");
    let start = Instant::now();
    let attempt = |i: u32| {
        let (a, b) = (&a, &b);
        async move {
            let r = join(a, b, &format!("wrong {i}")).await;
            (matches!(r, Err(Error::AuthFailed)), start.elapsed())
        }
    };
    let (r0, r1, r2, r3) = tokio::join!(attempt(0), attempt(1), attempt(2), attempt(3));
    let mut done = [r0, r1, r2, r3];
    assert!(done.iter().all(|(refused, _)| *refused), "{done:?}");
    done.sort_by_key(|(_, t)| *t);
    // One at a time, each after the delay of the failures before it (0, 250 ms, 500 ms,
    // 1 s): consecutive answers at least half that apart. Answered all at once, they were not.
    for (k, pair) in done.windows(2).enumerate() {
        let gap = pair[1].1 - pair[0].1;
        let delay = Duration::from_millis(250 << k);
        assert!(
            gap >= delay / 2,
            "answer {} came {gap:?} after the one before: {done:?}",
            k + 1
        );
    }
}

#[tokio::test]
async fn join_hands_over_the_mesh_and_members_authenticate() {
    let a = opener().await;
    let tmp = tempfile::tempdir().unwrap();
    let b = joiner_dir(&tmp, "b");
    let state = join(&a, &b, PASSWORD).await.unwrap();
    let b_id = device(&b).id();
    let a_id = a.server_dir.identity().unwrap().server_id();
    assert_eq!(state.epoch, 1);
    assert_eq!(state.key, MeshKey::from_bytes([7; 32]));
    assert!(state.is_member(&a_id) && state.is_member(&b_id));
    // The opener recorded the joiner with its address; the joiner stored no password.
    let on_a = a.server_dir.mesh_state().unwrap().unwrap();
    assert_eq!(on_a.members[&b_id].addr, "127.0.0.1:4433");
    let b_files: Vec<u8> = std::fs::read(b.path().join("mesh.toml")).unwrap();
    assert!(!String::from_utf8_lossy(&b_files).contains(PASSWORD));

    // A client of A writes; B, as a member, reads it; B may not write.
    let cred = a.issue("w", "writer");
    let mut w = ferry::Client::connect(&cred).await.unwrap();
    w.put_bytes("docs/a.txt", b"hello mesh".to_vec())
        .await
        .unwrap();
    let mut m = peer::connect_member(&a.addr.to_string(), a_id, &device(&b), &state, 1)
        .await
        .unwrap();
    assert_eq!(m.get_bytes("docs/a.txt").await.unwrap(), b"hello mesh");
    let listed = m.mesh_list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].source, "docs/a.txt");
    assert!(matches!(
        m.put_bytes("docs/b.txt", b"x".to_vec()).await,
        Err(Error::Forbidden(_))
    ));
    let g = m.mesh_state().await.unwrap();
    assert_eq!(g.members.len(), 2);
}

#[tokio::test]
async fn wrong_password_closed_mesh_and_relay_fail_alike_and_failures_slow_down() {
    let a = opener().await;
    let tmp = tempfile::tempdir().unwrap();
    let b = joiner_dir(&tmp, "b");
    assert!(matches!(
        join(&a, &b, "wrong").await,
        Err(Error::AuthFailed)
    ));

    // Relayed through a man in the middle who terminates TLS on both sides: the exporters
    // differ, so even the right password fails.
    let a_id = a.server_dir.identity().unwrap().server_id();
    let mitm = common::start_mitm(a.addr.to_string(), a_id).await;
    let relayed = peer::join(
        &mitm.addr,
        mitm.identity_id,
        &device(&b),
        "b",
        0,
        PASSWORD.as_bytes(),
    )
    .await;
    assert!(matches!(relayed, Err(Error::AuthFailed)), "{relayed:?}");
    assert!(mitm.relayed.load(std::sync::atomic::Ordering::SeqCst) > 0);
    // The opener's decision, read off the relayed wire: it refused the join and never sent
    // the mesh key.
    mitm.assert_server_refused(&["mesh_join_ok"]).await;

    // Two failures so far: the next answer waits at least join_delay(2) = 500 ms, and a
    // further one join_delay(3) = 1 s.
    let t = Instant::now();
    assert!(matches!(
        join(&a, &b, "wrong again").await,
        Err(Error::AuthFailed)
    ));
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    let t = Instant::now();
    assert!(matches!(
        join(&a, &b, "and again").await,
        Err(Error::AuthFailed)
    ));
    assert!(
        t.elapsed() >= Duration::from_millis(1000),
        "{:?}",
        t.elapsed()
    );

    // Closed: the right password now fails exactly like a wrong one.
    a.server_dir.close_mesh().unwrap();
    assert!(matches!(
        join(&a, &b, PASSWORD).await,
        Err(Error::AuthFailed)
    ));
    // Nothing was added by any of these.
    assert_eq!(a.server_dir.mesh_state().unwrap().unwrap().members.len(), 1);

    // A new window starts from zero failures: the right password joins without the delay
    // the old window's four failures (2 s) would impose.
    a.server_dir
        .open_mesh(Zeroizing::new(PASSWORD.into()), ferry::clock::now() + 300)
        .unwrap();
    let t = Instant::now();
    join(&a, &b, PASSWORD).await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[tokio::test]
async fn a_removed_member_can_no_longer_fetch_and_a_stale_epoch_is_refused() {
    let a = opener().await;
    let tmp = tempfile::tempdir().unwrap();
    let b = joiner_dir(&tmp, "b");
    let c = joiner_dir(&tmp, "c");
    let b_state = join(&a, &b, PASSWORD).await.unwrap();
    let c_state = join(&a, &c, PASSWORD).await.unwrap();
    let a_id = a.server_dir.identity().unwrap().server_id();
    let addr = a.addr.to_string();
    peer::connect_member(&addr, a_id, &device(&b), &b_state, 1)
        .await
        .unwrap();

    // Remove b: the key rotates to epoch 2.
    let b_id = device(&b).id();
    a.server_dir
        .update_mesh(|s| {
            let s = s.as_mut().unwrap();
            assert!(s.remove(&b_id, MeshKey::from_bytes([8; 32])));
            (true, ())
        })
        .unwrap();
    let r = peer::connect_member(&addr, a_id, &device(&b), &b_state, 1).await;
    assert!(matches!(r, Err(Error::AuthFailed)), "{r:?}");
    // Even holding the new key, b's device is refused by its ID.
    let mut stolen = b_state.clone();
    stolen.rotate(MeshKey::from_bytes([8; 32]));
    let r = peer::connect_member(&addr, a_id, &device(&b), &stolen, 2).await;
    assert!(matches!(r, Err(Error::AuthFailed)), "{r:?}");
    // A member that missed the rotation may still fetch the new mesh state with the
    // previous key, and then authenticates at the new epoch.
    let mut m = peer::connect_member(&addr, a_id, &device(&c), &c_state, 1)
        .await
        .unwrap();
    let g = m.mesh_state().await.unwrap();
    assert_eq!(g.epoch, 2);
    let mut caught_up = c_state.clone();
    let merged = caught_up.merge(g);
    assert!(merged.rekeyed && !merged.rotate);
    peer::connect_member(&addr, a_id, &device(&c), &caught_up, 2)
        .await
        .unwrap();
    // A member claiming another device's ID without its key is refused (wrong signature).
    let r = peer::connect_member(&addr, a_id, &device(&b), &caught_up, 2).await;
    assert!(matches!(r, Err(Error::AuthFailed)), "{r:?}");
    // Two epochs behind (a rotated twice more): refused.
    a.server_dir
        .update_mesh(|s| {
            let s = s.as_mut().unwrap();
            s.rotate(MeshKey::from_bytes([9; 32]));
            s.rotate(MeshKey::from_bytes([10; 32]));
            (true, ())
        })
        .unwrap();
    let r = peer::connect_member(&addr, a_id, &device(&c), &caught_up, 2).await;
    assert!(matches!(r, Err(Error::AuthFailed)), "{r:?}");
    assert_eq!(common::panics(), 0);
}
