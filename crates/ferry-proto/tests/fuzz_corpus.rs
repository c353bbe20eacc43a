//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) and past crashes
//! (`fuzz/regressions/<target>/`) through the same entry points the fuzz targets call, so
//! that every `cargo test` checks them without a fuzzer.

use std::fs;
use std::path::{Path, PathBuf};

use ferry_proto::fuzzing;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// Every file directly under `dir`, sorted; `None` if `dir` does not exist.
fn inputs(dir: &Path) -> Option<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("cannot read {}: {e}", dir.display()),
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| match e {
            Ok(e) => e.path(),
            Err(e) => panic!("cannot list {}: {e}", dir.display()),
        })
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Some(files)
}

fn replay(target: &str, check: fn(&[u8])) {
    let corpus = fuzz_dir().join("corpus").join(target);
    let corpus_files = inputs(&corpus)
        .unwrap_or_else(|| panic!("corpus directory {} is missing", corpus.display()));
    assert!(
        !corpus_files.is_empty(),
        "corpus directory {} is empty",
        corpus.display()
    );
    let regressions = fuzz_dir().join("regressions").join(target);
    let regression_files = inputs(&regressions).unwrap_or_default();
    for path in corpus_files.iter().chain(&regression_files) {
        let data = fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        if let Err(panic) = std::panic::catch_unwind(|| check(&data)) {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            panic!("{target}: input {} fails: {why}", path.display());
        }
    }
    println!(
        "{target}: replayed {} corpus and {} regression inputs",
        corpus_files.len(),
        regression_files.len()
    );
}

#[test]
fn frame() {
    replay("frame", fuzzing::frame);
}

#[test]
fn message() {
    replay("message", fuzzing::message);
}

#[test]
fn list_cursor() {
    replay("list_cursor", fuzzing::list_cursor);
}

#[test]
fn claims() {
    replay("claims", fuzzing::claims);
}

#[test]
fn credential() {
    replay("credential", fuzzing::credential);
}

#[test]
fn server_id() {
    replay("server_id", fuzzing::server_id);
}

#[test]
fn auth_server() {
    replay("auth_server", fuzzing::auth_server);
}

#[test]
fn state_files() {
    replay("state_files", fuzzing::state_files);
}

#[test]
fn announcement() {
    replay("announcement", fuzzing::announcement);
}

#[test]
fn http_auth() {
    replay("http_auth", fuzzing::http_auth);
}

#[test]
fn http_target() {
    replay("http_target", fuzzing::http_target);
}

#[test]
fn http_seal() {
    replay("http_seal", fuzzing::http_seal);
}

#[test]
fn chunk_list() {
    replay("chunk_list", fuzzing::chunk_list);
}

#[test]
fn hash_cache() {
    replay("hash_cache", fuzzing::hash_cache);
}

#[test]
fn source_name() {
    replay("source_name", fuzzing::source_name);
}
