//! `ferry demo` is also a check: it must pass.

mod common;

#[test]
fn demo_succeeds() {
    let env = common::Env::new();
    let out = env.run(&["demo"]);
    assert_eq!(
        out.code,
        0,
        "stdout:\n{}\nstderr:\n{}",
        out.text(),
        out.stderr
    );
    let text = out.text();
    for want in [
        "ferry init",
        "ferry serve",
        "identical",
        "permission denied",
        "authentication failed",
        "server ID mismatch",
        "ferry client revoke",
        "success",
    ] {
        assert!(text.contains(want), "{want} missing from:\n{text}");
    }
}
