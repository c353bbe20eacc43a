//! `ferry mesh create|open|join|members|remove` through the real binary, with a real server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Env, Served};

#[test]
fn create_open_join_list_and_remove() {
    let env = Env::new();
    // create initialises the (empty) default folder and prints the device ID.
    let a_id = env
        .run(&["mesh", "create", "--name", "alpha", "--mesh-name", "home"])
        .ok()
        .text()
        .trim()
        .to_owned();
    assert_eq!(a_id.len(), 64, "{a_id}");
    let mode = std::fs::metadata(env.server_dir().join("mesh.toml"))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .unwrap();
    assert_eq!(mode, 0o600);
    let again = env.run(&["mesh", "create"]);
    assert_eq!(again.code, 1, "{}", again.stderr);
    assert!(
        again.stderr.contains("already in a mesh"),
        "{}",
        again.stderr
    );

    let served = Served::start(&env);
    let b_dir = env.join("b");
    let b = b_dir.to_str().unwrap();
    let join = |pw: &str| {
        env.run_stdin(
            &[
                "mesh",
                "join",
                "--dir",
                b,
                "--peer",
                &served.addr,
                "--peer-id",
                &a_id,
                "--name",
                "bravo",
                "--password-stdin",
            ],
            format!("{pw}\n").into_bytes(),
        )
    };
    // Not open yet: the generic failure, exit code 3.
    let closed = join("secret words");
    assert_eq!(closed.code, 3, "{}", closed.stderr);
    assert!(
        closed.stderr.contains("joining failed"),
        "{}",
        closed.stderr
    );

    env.run_stdin(
        &["mesh", "open", "--for", "5m", "--password-stdin"],
        b"secret words\n".to_vec(),
    )
    .ok();
    let wrong = join("other words");
    assert_eq!(wrong.code, 3, "{}", wrong.stderr);
    let last = |s: &str| s.lines().last().unwrap_or("").to_owned();
    assert_eq!(
        last(&wrong.stderr),
        last(&closed.stderr),
        "all failures look alike"
    );
    let b_id = join("secret words").ok().text().trim().to_owned();
    assert_eq!(b_id.len(), 64);
    assert_ne!(b_id, a_id);
    let b_mesh = std::fs::read_to_string(b_dir.join("mesh.toml")).unwrap();
    assert!(
        !b_mesh.contains("secret words"),
        "the joiner stores no password"
    );

    let members = env.run(&["mesh", "members"]).ok().text();
    assert!(members.contains("mesh 'home', epoch 1"), "{members}");
    assert!(
        members.contains(&a_id) && members.contains("alpha"),
        "{members}"
    );
    assert!(
        members.contains(&b_id) && members.contains("bravo"),
        "{members}"
    );
    let on_b = env.run(&["mesh", "members", "--dir", b]).ok().text();
    assert!(on_b.contains(&a_id) && on_b.contains(&b_id), "{on_b}");

    env.run(&["mesh", "remove", &b_id]).ok();
    let members = env.run(&["mesh", "members"]).ok().text();
    assert!(
        members.contains("epoch 2") && !members.contains(&b_id),
        "{members}"
    );
    let gone = env.run(&["mesh", "remove", &b_id]);
    assert_eq!(gone.code, 5, "{}", gone.stderr);
    let bad = env.run(&["mesh", "remove", "not-an-id"]);
    assert_ne!(bad.code, 0);
    drop(served);
}

#[test]
fn the_join_password_leaves_the_disk_on_close_at_the_end_of_the_window_and_at_start() {
    use common::mesh::{Peer, eventually};
    use std::time::Duration;
    let open_for = |p: &Peer, d: &str| {
        p.run_stdin(
            &["mesh", "open", "--for", d, "--password-stdin"],
            &format!("{}\n", common::mesh::PASSWORD),
        )
        .ok();
    };
    let mut a = Peer::local();
    a.create("alpha");
    let file = a.env.server_dir().join("mesh-open.toml");
    let help = a.run(&["mesh", "close", "--help"]).ok().text();
    assert!(help.contains("Stop accepting joins"), "{help}");

    // `ferry mesh close`.
    open_for(&a, "10m");
    assert!(file.exists());
    let closed = a.run(&["mesh", "close"]).ok();
    assert!(!file.exists());
    assert!(
        closed.stderr.contains("closed to joins"),
        "{}",
        closed.stderr
    );
    let again = a.run(&["mesh", "close"]).ok();
    assert!(again.stderr.contains("was not open"), "{}", again.stderr);

    // A window that ended while nothing ran is swept when a server starts.
    open_for(&a, "1s");
    std::thread::sleep(Duration::from_millis(2100));
    assert!(file.exists(), "nothing ran, yet the window's file is gone");
    let served = Served::start(&a.env);
    assert!(
        !file.exists(),
        "a start left an ended window's password on disk"
    );
    drop(served);

    // A running peer deletes it when the window ends.
    let unused = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = unused.local_addr().unwrap().to_string();
    a.start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--announce-port",
            "0",
            "--announce-to",
            &to,
        ],
        None,
    );
    open_for(&a, "3s");
    assert!(file.exists());
    assert!(
        eventually(Duration::from_secs(15), || !file.exists()),
        "the window ended but its password stayed on disk; log: {:#?}",
        a.log()
    );
    assert!(a.running());
}
