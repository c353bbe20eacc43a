//! The fast start (docs/SECURITY.md, "Entropy at process start"): the `ferry` binary is built
//! without AWS-LC's CPU-jitter entropy source, which cost about 35 ms of CPU at every process
//! start. `.cargo/config.toml` sets `AWS_LC_SYS_NO_JITTER_ENTROPY=1` for every cargo build in
//! this repository (tests, `cargo build --release`, `cargo install --path crates/ferry-cli`);
//! this test fails if the binary it tests still holds the jitter collector's code.

#[test]
fn the_binary_has_no_cpu_jitter_entropy_source() {
    let path = env!("CARGO_BIN_EXE_ferry");
    let bin = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => panic!("cannot read {path}: {e}"),
    };
    // The jitter collector's entry point (AWS-LC prefixes its symbols, so search inside).
    let found = memchr::memmem::find(&bin, b"jent_entropy_init");
    assert!(
        found.is_none(),
        "{path} contains AWS-LC's CPU-jitter entropy source: build with \
         AWS_LC_SYS_NO_JITTER_ENTROPY=1 (see .cargo/config.toml)"
    );
}
