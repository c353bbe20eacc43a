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
