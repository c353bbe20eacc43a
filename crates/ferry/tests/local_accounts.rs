//! The account conformance checks against a server folder's account files
//! (`ferry::LocalAccounts`), each in a fresh temp folder, plus what only files have: a change
//! made through them is what `ferry user` / `ferry client` and a running server read.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use ferry::LocalAccounts;
use ferry::ServerDir;
use ferry_backend::accounts::Accounts;
use ferry_backend::conformance;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_accounts_pass_the_account_checks() {
    let run = tokio::spawn(async {
        let mut dirs = Vec::new();
        conformance::accounts::run_all(|| {
            let dir = tempfile::tempdir().unwrap();
            let accounts = LocalAccounts::new(dir.path());
            dirs.push(dir);
            async move { accounts }
        })
        .await;
    });
    run.await.expect("the account checks passed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_files_are_the_ones_the_server_folder_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ServerDir::new(tmp.path().join("srv"));
    dir.init().unwrap();
    let accounts = LocalAccounts::new(dir.path());
    let role = BTreeMap::from([("role".to_owned(), "reader".to_owned())]);
    // Issued through the folder (what `ferry client issue` does), seen through the trait.
    dir.issue_client("alice", role.clone(), Some("h:1"), 5)
        .unwrap();
    let alice = accounts.client("alice").await.unwrap().unwrap();
    assert_eq!((alice.epoch, alice.issued, alice.revoked), (1, 5, false));
    // Re-issued through the trait, seen by the folder: the next epoch.
    let again = accounts
        .issue_client("alice", role.clone(), 9)
        .await
        .unwrap();
    assert_eq!(again.epoch, 2);
    assert_eq!(dir.registry().unwrap().clients["alice"].epoch, 2);
    assert!(accounts.revoke_client("alice").await.unwrap());
    assert!(dir.registry().unwrap().clients["alice"].revoked);
    // Invites made by the folder are spent through the trait.
    dir.invite_user("bob", role, Some("h:1"), 60, 100).unwrap();
    let invite = accounts.invite("bob").await.unwrap().unwrap();
    assert!(!invite.spent);
    // A file that does not parse is an error, not an empty registry.
    std::fs::write(dir.registry_path(), "clients = 7\n").unwrap();
    assert!(accounts.client("alice").await.is_err());
}
