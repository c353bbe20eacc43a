//! The conformance suite against the in-memory backend, on a multi-thread runtime inside a
//! spawned task: this compiles only if every future of the traits is `Send`.

use ferry_backend::{MemoryBackend, conformance};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_backend_passes_the_conformance_suite() {
    let run = tokio::spawn(conformance::run_all(|| async {
        MemoryBackend::new(conformance::RETENTION)
    }));
    run.await.expect("the suite passed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_backend_passes_the_account_checks() {
    let run = tokio::spawn(conformance::accounts::run_all(|| async {
        MemoryBackend::new(conformance::RETENTION)
    }));
    run.await.expect("the account checks passed");
}
