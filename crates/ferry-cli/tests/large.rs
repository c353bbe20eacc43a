//! A 256 MiB transfer through the real binaries, in bounded server memory.
// Helpers outside #[test] functions unwrap too: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Setup, hash_file, write_pattern};

const LEN: u64 = 256 << 20;

/// Peak resident memory of a process, in KiB.
fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap_or_else(|| panic!("no VmHWM in {status}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn put_and_get_256_mib_in_bounded_server_memory() {
    let s = Setup::new();
    let src = s.env.join("big.bin");
    write_pattern(&src, "ferry large transfer", LEN);
    let want = hash_file(&src);
    let timeout = Duration::from_secs(600);

    let mut put = s.env.command(&["put", "big", src.to_str().unwrap()]);
    put.args(["--cred", s.writer.to_str().unwrap()]);
    let out = common::run(put, None, timeout).ok();
    assert!(
        out.text()
            .starts_with(&format!("stored big v1 ({LEN} bytes")),
        "{}",
        out.text()
    );

    let dst = s.env.join("copy.bin");
    let mut get = s.env.command(&["get", "big", "-o", dst.to_str().unwrap()]);
    get.args(["--cred", s.reader.to_str().unwrap()]);
    common::run(get, None, timeout).ok();
    assert_eq!(std::fs::metadata(&dst).unwrap().len(), LEN);
    assert_eq!(hash_file(&dst), want, "the copy differs from the original");

    let stat = s.with(&s.reader, &["stat", "big", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_slice(&stat.stdout).unwrap();
    assert_eq!(v["hash"], want.to_hex().as_str());

    let peak = vm_hwm_kib(s.server.pid());
    eprintln!("server VmHWM after 2 x 256 MiB: {peak} KiB");
    assert!(
        peak < 64 * 1024,
        "server peak memory {peak} KiB is not under 64 MiB"
    );
}
