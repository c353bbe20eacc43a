//! contrib/systemd/ferry.service: systemd accepts it (`systemd-analyze verify`), it has the
//! hardening docs/OPERATIONS.md promises, and the ferry command lines in it parse.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::Env;

fn unit() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/systemd/ferry.service");
    std::fs::read_to_string(path).unwrap()
}

/// The values of `key=` in the unit, in order.
fn values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

#[test]
fn the_unit_is_hardened_as_documented() {
    let u = unit();
    for (key, want) in [
        ("User", "ferry"),
        ("StateDirectory", "ferry"),
        ("StateDirectoryMode", "0700"),
        ("UMask", "0077"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("KillSignal", "SIGTERM"),
    ] {
        assert_eq!(values(&u, key), [want], "{key}");
    }
}

#[test]
fn the_units_ferry_command_lines_parse() {
    let u = unit();
    let start = values(&u, "ExecStart")[0];
    let args: Vec<&str> = start.split_whitespace().skip(1).collect();
    assert_eq!(args[..3], ["serve", "--dir", "/var/lib/ferry"]);
    // The same options on a folder that does not exist: refused for the folder (1), not
    // for the command line (2).
    let env = Env::new();
    let missing = env.join("none");
    let mut run = args.clone();
    run[2] = missing.to_str().unwrap();
    let out = env.run(&run);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("none"), "{}", out.stderr);
    let pre = values(&u, "ExecStartPre")[0];
    assert!(pre.contains("ferry init --dir /var/lib/ferry"), "{pre}");
}

#[test]
fn systemd_accepts_the_unit() {
    let Ok(status) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("SKIP: systemd-analyze is not installed (.ci/run installs systemd)");
        return;
    };
    assert!(status.status.success());
    // Verified with this build's binary where the unit names the installed one.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ferry.service");
    std::fs::write(&path, unit().replace("/usr/local/bin/ferry", common::BIN)).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
