//! A quick run of the harness: it must run end to end, verify the bytes it moved and print
//! its table. It asserts nothing about speed.

use std::process::Command;

#[test]
fn quick_run_produces_a_verified_table() {
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("report.md");
    let out = Command::new(env!("CARGO_BIN_EXE_ferry-bench"))
        .args([
            "--quick",
            "--size-mib",
            "4",
            "--reps",
            "3",
            "--scale",
            "20",
            "--markdown",
        ])
        .arg(&md)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ferry-bench failed:\n{stderr}");
    let report = std::fs::read_to_string(&md).unwrap();
    assert_eq!(report.trim(), stdout.trim());
    for needle in [
        "| section | measurement | ferry | baseline |",
        "get 4 MiB → sink",
        "bare rustls",
        "connections/s at concurrency 16",
        "1 KiB get end to end",
        "idle authenticated connections held",
        "password logins (OPAQUE) per second of server CPU",
        "machine: ",
    ] {
        assert!(report.contains(needle), "missing {needle:?} in\n{report}");
    }
    // A wrong transfer is an error, never a row; the external tools are not needed.
    assert!(!stderr.contains("expected"), "{stderr}");
}
