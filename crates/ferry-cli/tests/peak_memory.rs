//! Peak memory of a 1 GiB put and a 1 GiB get through the real binaries: under 64 MiB
//! resident on the client (each run) and on the server (both transfers).
//!
//! Peak resident memory is the kernel's VmHWM (/proc/PID/status). The server's is read once
//! both transfers are done, while it still runs. A client's is sampled while it runs: VmHWM
//! only grows, so the last sample is its peak up to a few milliseconds before it exits (what
//! follows then is an fsync, a rename and a line of output).
// Helpers outside #[test] functions unwrap too: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{Out, Setup, hash_file, write_pattern};

/// The content: 1 GiB.
const LEN: u64 = 1 << 30;
/// The bound on peak resident memory, per process, in KiB.
const LIMIT_KIB: u64 = 64 * 1024;
/// Bound on one transfer of LEN bytes.
const RUN: Duration = Duration::from_secs(600);

/// Peak resident memory of a running process, in KiB; `None` once it has exited.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs `cmd` to completion (at most `timeout`), sampling its VmHWM every 5 ms; returns what
/// it printed and the last VmHWM seen, in KiB.
fn run_sampled(mut cmd: Command, timeout: Duration) -> (Out, u64) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let collect = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = collect(Box::new(child.stdout.take().unwrap()));
    let err = collect(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + timeout;
    let mut peak = 0;
    let status = loop {
        // Sample before checking for exit: a zombie has no VmHWM, a live process does.
        if let Some(kib) = vm_hwm_kib(child.id()) {
            peak = peak.max(kib);
        }
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(5));
    };
    let out = Out {
        code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap(),
        stderr: String::from_utf8_lossy(&err.join().unwrap()).into_owned(),
    };
    assert!(peak > 0, "no VmHWM sample of {cmd:?}");
    (out, peak)
}

#[test]
fn a_1_gib_put_and_get_stay_under_64_mib_resident_on_client_and_server() {
    let s = Setup::new();
    let src = s.env.join("big.bin");
    let want = write_pattern(&src, "ferry peak memory", LEN);

    let t = Instant::now();
    let mut put = s.env.command(&["put", "big", src.to_str().unwrap()]);
    put.args(["--cred", s.writer.to_str().unwrap()]);
    let (out, put_peak) = run_sampled(put, RUN);
    let put_time = t.elapsed();
    // The input is not needed any more: free the disk before the copy is written.
    std::fs::remove_file(&src).unwrap();
    let out = out.ok();
    assert!(
        out.text()
            .starts_with(&format!("stored big v1 ({LEN} bytes")),
        "{}",
        out.text()
    );

    let dst = s.env.join("copy.bin");
    let t = Instant::now();
    let mut get = s.env.command(&["get", "big", "-o", dst.to_str().unwrap()]);
    get.args(["--cred", s.reader.to_str().unwrap()]);
    let (out, get_peak) = run_sampled(get, RUN);
    let get_time = t.elapsed();
    out.ok();
    let got = hash_file(&dst);
    let got_len = std::fs::metadata(&dst).unwrap().len();
    std::fs::remove_file(&dst).unwrap();
    assert_eq!(got_len, LEN);
    assert_eq!(got, want, "the copy differs from the original");

    let server_peak = vm_hwm_kib(s.server.pid()).expect("the server is running");
    eprintln!(
        "1 GiB: put {put_time:?} (client peak {put_peak} KiB), get {get_time:?} (client peak \
         {get_peak} KiB), server peak {server_peak} KiB"
    );
    for (who, peak) in [
        ("put client", put_peak),
        ("get client", get_peak),
        ("server", server_peak),
    ] {
        assert!(
            peak < LIMIT_KIB,
            "{who} peak resident memory {peak} KiB is not under 64 MiB"
        );
    }
}
