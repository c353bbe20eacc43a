//! Conformance checks of [`Accounts`]: each needs a fresh backend (no account data).
//! [`run_all`] runs them all, each on a backend from `fresh`.

use std::collections::BTreeMap;
use std::future::Future;

use ferry_proto::password::KsfParams;
use ferry_proto::secret::SessionSecret;

use crate::accounts::{
    Accounts, ClientRecord, LoginPolicy, LoginState, MAX_LOCK_SECS, SessionEntry, UserEntry,
};

use super::{T0, join_all};

/// Runs every account check, each on a fresh backend made by `fresh`.
pub async fn run_all<A, F, Fut>(mut fresh: F)
where
    A: Accounts,
    F: FnMut() -> Fut,
    Fut: Future<Output = A>,
{
    clients(&fresh().await).await;
    users_and_generations(&fresh().await).await;
    invites_spent_once(&fresh().await).await;
    sessions(&fresh().await).await;
    login_limits(&fresh().await).await;
}

fn attrs(role: &str) -> BTreeMap<String, String> {
    [("role".to_owned(), role.to_owned())].into()
}

fn user(record: &str) -> UserEntry {
    UserEntry {
        attributes: attrs("reader"),
        record: record.to_owned(),
        ksf: KsfParams {
            m_kib: 19_456,
            t: 2,
            p: 1,
        },
        created: T0,
        generation: 999, // ignored: the backend gives the generation
    }
}

fn session(name: &str, secret: u8, last_used: u64) -> SessionEntry {
    SessionEntry {
        name: name.to_owned(),
        attributes: attrs("reader"),
        origin: "password:1".to_owned(),
        secret: SessionSecret::from_bytes([secret; 32]),
        created: T0,
        last_used,
        idle_secs: 100,
        expires: T0 + 1_000,
    }
}

/// Issuing, re-issuing (a new epoch) and revoking clients.
pub async fn clients<A: Accounts>(a: &A) {
    assert_eq!(a.client("c").await.unwrap(), None);
    let first = a.issue_client("c", attrs("reader"), T0).await.unwrap();
    assert_eq!(
        first,
        ClientRecord {
            epoch: 1,
            attributes: attrs("reader"),
            issued: T0,
            revoked: false
        }
    );
    assert!(a.revoke_client("c").await.unwrap());
    assert!(!a.revoke_client("c").await.unwrap(), "already revoked");
    assert!(!a.revoke_client("nobody").await.unwrap());
    assert!(a.client("c").await.unwrap().unwrap().revoked);
    // Re-issuing takes the next epoch and lifts the revocation.
    let again = a.issue_client("c", attrs("writer"), T0 + 5).await.unwrap();
    assert_eq!(
        (again.epoch, again.revoked, again.issued),
        (2, false, T0 + 5)
    );
    assert_eq!(a.client("c").await.unwrap(), Some(again.clone()));
    a.issue_client("b", attrs("reader"), T0).await.unwrap();
    let all = a.clients().await.unwrap();
    assert_eq!(
        all.iter()
            .map(|(n, c)| (n.as_str(), c.epoch))
            .collect::<Vec<_>>(),
        [("b", 1), ("c", 2)]
    );
}

/// A user's generation is new at every change and never reused, even after a removal.
pub async fn users_and_generations<A: Accounts>(a: &A) {
    assert!(a.user("u").await.unwrap().is_none());
    let g1 = a.put_user("u", user("rec1")).await.unwrap();
    let g2 = a.put_user("v", user("rec2")).await.unwrap();
    let g3 = a.put_user("u", user("rec3")).await.unwrap();
    assert!(g1 < g2 && g2 < g3, "{g1} {g2} {g3}");
    let u = a.user("u").await.unwrap().unwrap();
    assert_eq!((u.record.as_str(), u.generation), ("rec3", g3));
    assert!(a.remove_user("u").await.unwrap());
    assert!(!a.remove_user("u").await.unwrap());
    let g4 = a.put_user("u", user("rec4")).await.unwrap();
    assert!(g4 > g3, "a removed user's generation is not given again");
    let names: Vec<_> = a
        .users()
        .await
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["u", "v"]);
}

/// Invites: serials count up; registering spends the invite and stores the user in one
/// step; a spent, expired, replaced or unknown invite registers nothing.
pub async fn invites_spent_once<A: Accounts>(a: &A) {
    assert!(a.invite("n").await.unwrap().is_none());
    let first = a
        .create_invite("n", attrs("reader"), T0 + 100)
        .await
        .unwrap();
    assert_eq!((first.serial, first.spent), (1, false));
    let second = a
        .create_invite("n", attrs("writer"), T0 + 100)
        .await
        .unwrap();
    assert_eq!(second.serial, 2);
    // The replaced serial no longer registers.
    assert_eq!(
        a.register_with_invite("n", 1, user("r"), T0).await.unwrap(),
        None
    );
    assert!(a.user("n").await.unwrap().is_none());
    // Expired (at the expiry second itself) registers nothing.
    assert_eq!(
        a.register_with_invite("n", 2, user("r"), T0 + 100)
            .await
            .unwrap(),
        None
    );
    let g = a
        .register_with_invite("n", 2, user("r"), T0 + 99)
        .await
        .unwrap();
    let g = g.expect("a valid invite registers");
    assert_eq!(a.user("n").await.unwrap().unwrap().generation, g);
    assert!(a.invite("n").await.unwrap().unwrap().spent);
    // Spent: a second registration with it does nothing, and the record stays.
    assert_eq!(
        a.register_with_invite("n", 2, user("other"), T0)
            .await
            .unwrap(),
        None
    );
    assert_eq!(a.user("n").await.unwrap().unwrap().record, "r");
    assert_eq!(
        a.register_with_invite("ghost", 1, user("r"), T0)
            .await
            .unwrap(),
        None
    );
    assert!(a.user("ghost").await.unwrap().is_none());

    // Registrations racing with one invite: exactly one account.
    let invite = a
        .create_invite("race", attrs("reader"), T0 + 100)
        .await
        .unwrap();
    let records: Vec<String> = (0..6).map(|i| format!("r{i}")).collect();
    let tries = records
        .iter()
        .map(|r| a.register_with_invite("race", invite.serial, user(r), T0))
        .collect();
    let won: Vec<_> = join_all(tries)
        .await
        .into_iter()
        .filter_map(|r| r.unwrap())
        .collect();
    assert_eq!(won.len(), 1, "{won:?}");
    assert_eq!(a.user("race").await.unwrap().unwrap().generation, won[0]);
}

/// Sessions: stored, touched while live, swept when not, removed by owner.
pub async fn sessions<A: Accounts>(a: &A) {
    assert!(a.session("s1").await.unwrap().is_none());
    a.put_session("s1", session("alice", 1, T0)).await.unwrap();
    a.put_session("s2", session("alice", 2, T0)).await.unwrap();
    a.put_session("s3", session("bob", 3, T0)).await.unwrap();
    let got = a.session("s1").await.unwrap().unwrap();
    assert_eq!(got.secret.expose_secret(), &[1; 32]);
    // Touch while live moves last_used; idle past 100 s or past expiry is not live.
    let touched = a.touch_session("s1", T0 + 90).await.unwrap().unwrap();
    assert_eq!(touched.last_used, T0 + 90);
    assert!(a.touch_session("s1", T0 + 190).await.unwrap().is_none());
    assert!(a.touch_session("nope", T0).await.unwrap().is_none());
    // Sweep at T0 + 150: s2 and s3 (idle since T0) go, s1 (used at T0 + 90) stays.
    assert_eq!(a.sweep_sessions(T0 + 150).await.unwrap(), 2);
    assert!(a.session("s1").await.unwrap().is_some());
    assert!(a.session("s3").await.unwrap().is_none());
    a.put_session("s4", session("alice", 4, T0 + 150))
        .await
        .unwrap();
    a.put_session("s5", session("bob", 5, T0 + 150))
        .await
        .unwrap();
    assert_eq!(a.remove_sessions_of("alice").await.unwrap(), 2);
    assert!(a.session("s5").await.unwrap().is_some());
    assert!(a.remove_session("s5").await.unwrap());
    assert!(!a.remove_session("s5").await.unwrap());
}

/// Failed logins lock a key after `max_failures`, doubling up to an hour; success clears.
pub async fn login_limits<A: Accounts>(a: &A) {
    let p = LoginPolicy {
        max_failures: 3,
        window_secs: 900,
        lockout_secs: 60,
    };
    assert_eq!(
        a.login_state("user:x").await.unwrap(),
        LoginState::default()
    );
    for i in 1..=2 {
        let s = a.login_failed("user:x", T0, &p).await.unwrap();
        assert_eq!((s.failures, s.unlocked(T0)), (i, true));
    }
    let s = a.login_failed("user:x", T0 + 1, &p).await.unwrap();
    assert_eq!((s.failures, s.locked_until), (3, T0 + 61));
    assert!(!a.login_state("user:x").await.unwrap().unlocked(T0 + 60));
    assert!(a.login_state("user:x").await.unwrap().unlocked(T0 + 61));
    let s = a.login_failed("user:x", T0 + 2, &p).await.unwrap();
    assert_eq!(s.locked_until, T0 + 2 + 120, "the lock doubles");
    for _ in 0..10 {
        a.login_failed("user:x", T0 + 3, &p).await.unwrap();
    }
    let s = a.login_state("user:x").await.unwrap();
    assert_eq!(s.locked_until, T0 + 3 + MAX_LOCK_SECS);
    // Other keys are separate.
    assert_eq!(a.login_state("addr:10.0.0.1").await.unwrap().failures, 0);
    a.login_succeeded("user:x").await.unwrap();
    assert_eq!(
        a.login_state("user:x").await.unwrap(),
        LoginState::default()
    );
    // A window that ran out while unlocked starts again.
    a.login_failed("user:y", T0, &p).await.unwrap();
    a.login_failed("user:y", T0, &p).await.unwrap();
    let s = a.login_failed("user:y", T0 + 900, &p).await.unwrap();
    assert_eq!((s.failures, s.first, s.locked_until), (1, T0 + 900, 0));
}
