//! Conformance checks of [`Accounts`]: each needs a fresh backend (no account data).
//! [`run_all`] runs them all, each on a backend from `fresh`.

use std::collections::BTreeMap;
use std::future::Future;

use ferry_proto::files::MAX_SESSIONS_PER_NAME;
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
    sessions_bounded(&fresh().await).await;
    records_replaced(&fresh().await).await;
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
    opened_by(name, secret, last_used, "password:1")
}

fn opened_by(name: &str, secret: u8, last_used: u64, origin: &str) -> SessionEntry {
    SessionEntry {
        name: name.to_owned(),
        attributes: attrs("reader"),
        origin: origin.to_owned(),
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

    // The listing: every name's latest invite, by name, spent ones included.
    let listed: Vec<_> = a
        .invites()
        .await
        .unwrap()
        .into_iter()
        .map(|(n, i)| (n, i.serial, i.spent))
        .collect();
    assert_eq!(
        listed,
        [("n".to_owned(), 2, true), ("race".to_owned(), 1, true)]
    );
}

/// Sessions: stored, touched while live, swept when not, removed by owner.
pub async fn sessions<A: Accounts>(a: &A) {
    assert!(a.session("s1").await.unwrap().is_none());
    a.put_session("s1", session("alice", 1, T0), T0)
        .await
        .unwrap();
    a.put_session("s2", session("alice", 2, T0), T0)
        .await
        .unwrap();
    a.put_session("s3", session("bob", 3, T0), T0)
        .await
        .unwrap();
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
    a.put_session("s4", session("alice", 4, T0 + 150), T0 + 150)
        .await
        .unwrap();
    a.put_session("s5", session("bob", 5, T0 + 150), T0 + 150)
        .await
        .unwrap();
    // The listing: every session stored, by ID.
    let listed: Vec<_> = a
        .sessions()
        .await
        .unwrap()
        .into_iter()
        .map(|(id, s)| (id, s.name))
        .collect();
    let names = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    };
    assert_eq!(
        listed,
        names(&[("s1", "alice"), ("s4", "alice"), ("s5", "bob")])
    );
    assert_eq!(a.remove_sessions_of("alice").await.unwrap(), 2);
    assert!(a.session("s5").await.unwrap().is_some());
    assert!(a.remove_session("s5").await.unwrap());
    assert!(!a.remove_session("s5").await.unwrap());
}

/// A name holds at most [`MAX_SESSIONS_PER_NAME`] sessions (its least recently used goes
/// first), and storing one drops those no longer live.
pub async fn sessions_bounded<A: Accounts>(a: &A) {
    let max = MAX_SESSIONS_PER_NAME as u64;
    a.put_session("old", session("bob", 0, T0), T0)
        .await
        .unwrap();
    a.put_session("other", session("carol", 0, T0 + 120), T0 + 120)
        .await
        .unwrap();
    for i in 0..max + 3 {
        let s = session("alice", 1, T0 + 120 + i);
        a.put_session(&format!("a{i}"), s, T0 + 120 + i)
            .await
            .unwrap();
    }
    for i in 0..3 {
        assert!(a.session(&format!("a{i}")).await.unwrap().is_none(), "a{i}");
    }
    for i in 3..max + 3 {
        assert!(a.session(&format!("a{i}")).await.unwrap().is_some(), "a{i}");
    }
    // bob's session idled out (100 s) before the later puts; carol's did not.
    assert!(a.session("old").await.unwrap().is_none());
    assert!(a.session("other").await.unwrap().is_some());
}

/// A new record (a password change, an invite's registration, a re-invitation, a removal)
/// ends the sessions the old password opened and keeps those a credential opened; a
/// password change applies only to the record it proved.
pub async fn records_replaced<A: Accounts>(a: &A) {
    let g1 = a.put_user("u", user("rec1")).await.unwrap();
    let by_psk = |i| opened_by("u", i, T0, "psk:1");
    a.put_session("p1", session("u", 1, T0), T0).await.unwrap();
    a.put_session("k1", by_psk(2), T0).await.unwrap();
    a.put_session("x1", session("x", 3, T0), T0).await.unwrap();
    // A change that proved an older record does nothing.
    assert_eq!(
        a.replace_user("u", g1 + 100, user("stale")).await.unwrap(),
        None
    );
    assert_eq!(a.replace_user("nobody", g1, user("r")).await.unwrap(), None);
    assert!(a.session("p1").await.unwrap().is_some());
    let g2 = a.replace_user("u", g1, user("rec2")).await.unwrap();
    let g2 = g2.expect("the proved record is replaced");
    assert!(g2 > g1);
    let u = a.user("u").await.unwrap().unwrap();
    assert_eq!((u.record.as_str(), u.generation), ("rec2", g2));
    assert!(a.session("p1").await.unwrap().is_none(), "password session");
    assert!(
        a.session("k1").await.unwrap().is_some(),
        "credential session"
    );
    assert!(a.session("x1").await.unwrap().is_some(), "another user's");
    // Replaced twice with the same proof: the second finds a newer record.
    assert_eq!(a.replace_user("u", g1, user("again")).await.unwrap(), None);

    // Re-inviting removes the record and its password sessions.
    a.put_session("p2", session("u", 4, T0), T0).await.unwrap();
    let invite = a
        .create_invite("u", attrs("writer"), T0 + 100)
        .await
        .unwrap();
    assert!(a.user("u").await.unwrap().is_none());
    assert!(a.session("p2").await.unwrap().is_none());
    // The registration ends password sessions opened meanwhile (say, by a server that
    // had not seen the re-invitation yet).
    a.put_session("p3", session("u", 5, T0), T0).await.unwrap();
    let g3 = a
        .register_with_invite("u", invite.serial, user("rec3"), T0)
        .await
        .unwrap()
        .expect("registered");
    assert!(g3 > g2);
    assert!(a.session("p3").await.unwrap().is_none());
    // Removing the user removes its invite and password sessions too.
    a.put_session("p4", session("u", 6, T0), T0).await.unwrap();
    assert!(a.remove_user("u").await.unwrap());
    assert!(a.invite("u").await.unwrap().is_none());
    assert!(a.session("p4").await.unwrap().is_none());
    assert!(a.session("k1").await.unwrap().is_some());
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
