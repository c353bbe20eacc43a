use super::*;
use crate::message::{AuthOk, PskAuth};
use crate::psk;
use crate::psk::{PskClient, derive_psk};
use crate::secret::Psk;
use rand_core::OsRng;

struct Ctx {
    master: MasterKey,
    current_epoch: u64,
}

impl ServerContext for Ctx {
    fn master_key(&self) -> &MasterKey {
        &self.master
    }
    fn claims_current(&self, c: &Claims) -> bool {
        c.name() == "alice" && c.epoch() == self.current_epoch
    }
}

fn ctx() -> Ctx {
    Ctx {
        master: MasterKey::from_bytes([9; 32]),
        current_epoch: 1,
    }
}

fn claims(name: &str, epoch: u64, role: &str) -> Claims {
    Claims::new(name, epoch, [("role", role)]).unwrap()
}

fn run(
    client: PskClient,
    server_exporter: Exporter,
    client_exporter: Exporter,
    ctx: &Ctx,
) -> (ServerStep, Result<Principal, AuthError>) {
    let (hello, wait) = client.start(&client_exporter);
    let step = ServerAuth::new(server_exporter).handle(hello, ctx, &mut OsRng, 0);
    let reply = match &step {
        ServerStep::Accept { reply, .. } | ServerStep::Reject { reply, .. } => reply.clone(),
        _ => panic!("psk is one message"),
    };
    let done = wait.finish(reply);
    (step, done)
}

fn reason(step: &ServerStep) -> Option<RejectReason> {
    match step {
        ServerStep::Reject { reply, reason, .. } => {
            assert_eq!(reply, &Message::AuthFailed(Empty {}));
            Some(*reason)
        }
        _ => None,
    }
}

#[test]
fn accepts_a_valid_credential() {
    let ctx = ctx();
    let c = claims("alice", 1, "writer");
    let key = derive_psk(&ctx.master, &c);
    let e = Exporter::from_bytes([4; 32]);
    let (step, done) = run(PskClient::new(c, key), e.clone(), e, &ctx);
    assert_eq!(reason(&step), None);
    let p = done.unwrap();
    assert_eq!(p.role(), Some("writer"));
    assert_eq!(p.method, Method::Psk { epoch: 1 });
}

#[test]
fn wrong_key_edited_role_and_foreign_exporter_fail_alike() {
    let ctx = ctx();
    let reader = claims("alice", 1, "reader");
    let reader_key = derive_psk(&ctx.master, &reader);
    let e = Exporter::from_bytes([4; 32]);
    // Wrong key.
    let (s, d) = run(
        PskClient::new(reader.clone(), Psk::from_bytes([0; 32])),
        e.clone(),
        e.clone(),
        &ctx,
    );
    assert_eq!(
        (reason(&s), d),
        (Some(RejectReason::BadProof), Err(AuthError::Rejected))
    );
    // A reader's key presented with a writer's claims.
    let forged = claims("alice", 1, "writer");
    let (s, _) = run(
        PskClient::new(forged, reader_key.clone()),
        e.clone(),
        e.clone(),
        &ctx,
    );
    assert_eq!(reason(&s), Some(RejectReason::BadProof));
    // The proof was made for another connection.
    let (s, _) = run(
        PskClient::new(reader, reader_key),
        Exporter::from_bytes([5; 32]),
        e,
        &ctx,
    );
    assert_eq!(reason(&s), Some(RejectReason::BadProof));
}

#[test]
fn stale_epoch_and_unknown_client_fail() {
    let mut ctx = ctx();
    ctx.current_epoch = 2;
    let e = Exporter::from_bytes([4; 32]);
    for c in [claims("alice", 1, "writer"), claims("mallory", 2, "writer")] {
        let key = derive_psk(&ctx.master, &c);
        let (s, d) = run(PskClient::new(c, key), e.clone(), e.clone(), &ctx);
        assert_eq!(
            (reason(&s), d),
            (Some(RejectReason::NotCurrent), Err(AuthError::Rejected))
        );
    }
}

#[test]
fn malformed_and_unexpected_first_messages() {
    let ctx = ctx();
    let e = Exporter::from_bytes([4; 32]);
    let bad = Message::PskAuth(PskAuth {
        claims: vec![0xff],
        mac: [0; 32],
        session: false,
    });
    assert_eq!(
        reason(&ServerAuth::new(e.clone()).handle(bad, &ctx, &mut OsRng, 0)),
        Some(RejectReason::MalformedClaims)
    );
    let get = Message::Stat(crate::message::SourceRef { source: "x".into() });
    assert_eq!(
        reason(&ServerAuth::new(e).handle(get, &ctx, &mut OsRng, 0)),
        Some(RejectReason::UnexpectedMessage)
    );
}

#[test]
fn client_refuses_a_server_without_the_key() {
    let ctx = ctx();
    let c = claims("alice", 1, "writer");
    let key = derive_psk(&ctx.master, &c);
    let e = Exporter::from_bytes([4; 32]);
    let (_, wait) = PskClient::new(c.clone(), key).start(&e);
    let fake = Message::AuthOk(AuthOk {
        method: "psk".into(),
        proof: vec![0; 32],
        principal: Principal::from_claims(&c).info(),
        session: None,
    });
    assert_eq!(wait.finish(fake).unwrap_err(), AuthError::BadServerProof);
}

// ---- password, invite and session methods, both ends driven in memory ----

use crate::password::{KsfParams, OpaqueKeys, UserRecord};
use crate::psk::derive_invite_key;
use std::cell::RefCell;
use std::collections::HashMap;

const FAST: KsfParams = KsfParams {
    m_kib: 256,
    t: 1,
    p: 1,
};

struct Full {
    master: MasterKey,
    keys: OpaqueKeys,
    users: RefCell<HashMap<String, UserRecord>>,
    spent: RefCell<Vec<u64>>,
    sessions: RefCell<HashMap<SessionId, StoredSession>>,
    locked: bool,
}

impl ServerContext for Full {
    fn master_key(&self) -> &MasterKey {
        &self.master
    }
    fn claims_current(&self, _: &Claims) -> bool {
        true
    }
    fn invite_current(&self, c: &Claims) -> bool {
        c.name() == "carol" && !self.spent.borrow().contains(&c.epoch())
    }
    fn opaque_keys(&self) -> Option<&OpaqueKeys> {
        Some(&self.keys)
    }
    fn user(&self, name: &str) -> Option<KnownUser> {
        let r = self.users.borrow().get(name).cloned()?;
        Some(KnownUser {
            record: r,
            attributes: [("role".to_owned(), "writer".to_owned())].into(),
            generation: 7,
        })
    }
    fn login_allowed(&self, _: &str) -> bool {
        !self.locked
    }
    fn new_record_ksf(&self) -> KsfParams {
        FAST
    }
    fn session(&self, id: &SessionId) -> Option<StoredSession> {
        self.sessions.borrow().get(id).cloned()
    }
}

fn full() -> Full {
    Full {
        master: MasterKey::from_bytes([3; 32]),
        keys: OpaqueKeys::generate(&mut OsRng),
        users: RefCell::default(),
        spent: RefCell::default(),
        sessions: RefCell::default(),
        locked: false,
    }
}

/// Runs a whole exchange: client messages through the server until either side ends.
/// Applies Register and session effects to the context like a real server would.
fn drive(
    ctx: &Full,
    first: Message,
    mut client: ClientAuth,
    server_exporter: &Exporter,
    now: u64,
) -> (Result<ClientStep, AuthError>, Option<RejectReason>) {
    let mut server = ServerAuth::new(server_exporter.clone());
    let mut msg = first;
    loop {
        let reply = match server.handle(msg, ctx, &mut OsRng, now) {
            ServerStep::Continue { reply, next } => {
                server = next;
                reply
            }
            ServerStep::Accept {
                reply,
                principal,
                session,
            } => {
                if let Some(s) = session {
                    ctx.sessions.borrow_mut().insert(
                        s.id,
                        StoredSession {
                            secret: s.secret,
                            principal,
                        },
                    );
                }
                return (client.handle(reply, &mut OsRng), None);
            }
            ServerStep::Register {
                reply,
                invite,
                record,
            } => {
                ctx.spent.borrow_mut().push(invite.epoch());
                ctx.users
                    .borrow_mut()
                    .insert(invite.name().to_owned(), record);
                return (client.handle(reply, &mut OsRng), None);
            }
            ServerStep::Reject { reply, reason, .. } => {
                return (client.handle(reply, &mut OsRng), Some(reason));
            }
        };
        match client.handle(reply, &mut OsRng) {
            Ok(ClientStep::Send(m, next)) => {
                client = next;
                msg = m;
            }
            Ok(ClientStep::SendAndFail(m, e)) => {
                // The server hears of the failure.
                let step = server.handle(m, ctx, &mut OsRng, now);
                let ServerStep::Reject { reason, .. } = step else {
                    panic!("server accepted a failed login")
                };
                return (Err(e), Some(reason));
            }
            other => return (other, None),
        }
    }
}

fn invite(serial: u64, expires: u64) -> Claims {
    Claims::new(
        "carol",
        serial,
        [
            ("role", "writer".to_owned()),
            (INVITE_EXPIRES, expires.to_string()),
        ],
    )
    .unwrap()
}

fn enrol(ctx: &Full, pw: &[u8]) {
    let e = Exporter::from_bytes([1; 32]);
    let inv = invite(1, 100);
    let key = derive_invite_key(&ctx.master, &inv);
    let (m, c) = register(&mut OsRng, &e, &inv, &key, pw).unwrap();
    let (r, reason) = drive(ctx, m, c, &e, 50);
    assert!(matches!(r, Ok(ClientStep::Registered)), "{r:?} {reason:?}");
}

fn login(
    ctx: &Full,
    user: &str,
    pw: &[u8],
    ce: &Exporter,
    se: &Exporter,
    session: bool,
) -> (Result<ClientStep, AuthError>, Option<RejectReason>) {
    let (m, c) = password_login(&mut OsRng, ce, user, pw, session).unwrap();
    drive(ctx, m, c, se, 60)
}

#[test]
fn invite_register_login_and_resume() {
    let ctx = full();
    enrol(&ctx, b"hunter2 but longer");
    let e = Exporter::from_bytes([2; 32]);
    let (r, _) = login(&ctx, "carol", b"hunter2 but longer", &e, &e, true);
    let Ok(ClientStep::Done(a)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(a.principal.role(), Some("writer"));
    assert_eq!(a.principal.method, Method::Password { generation: 0 });
    let s = a.session.expect("session granted");
    // The server's principal, kept with the session, carries the record's generation.
    assert_eq!(
        ctx.session(&s.id).map(|st| st.principal.method),
        Some(Method::Password { generation: 7 })
    );

    // Resume on a new connection.
    let e2 = Exporter::from_bytes([3; 32]);
    let (m, c) = resume_session(&e2, s.id, &s.secret);
    let (r, _) = drive(&ctx, m.clone(), c, &e2, 70);
    let Ok(ClientStep::Done(a)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(a.principal.method, Method::Session { id: s.id });
    assert_eq!(a.principal.name, "carol");

    // The same resumption message replayed on another connection fails.
    let e3 = Exporter::from_bytes([4; 32]);
    let (_, c3) = resume_session(&e3, s.id, &s.secret);
    assert_eq!(
        drive(&ctx, m, c3, &e3, 70).1,
        Some(RejectReason::BadSession)
    );
    // An unknown or removed session fails.
    ctx.sessions.borrow_mut().clear();
    let (m, c) = resume_session(&e3, s.id, &s.secret);
    assert_eq!(drive(&ctx, m, c, &e3, 70).1, Some(RejectReason::BadSession));
}

#[test]
fn invites_are_one_time_unexpired_and_unforgeable() {
    let ctx = full();
    enrol(&ctx, b"pw1");
    let e = Exporter::from_bytes([1; 32]);
    // Spent.
    let inv = invite(1, 100);
    let key = derive_invite_key(&ctx.master, &inv);
    let (m, c) = register(&mut OsRng, &e, &inv, &key, b"pw2").unwrap();
    assert_eq!(
        drive(&ctx, m, c, &e, 50).1,
        Some(RejectReason::InviteNotCurrent)
    );
    // Expired.
    let inv = invite(2, 40);
    let key = derive_invite_key(&ctx.master, &inv);
    let (m, c) = register(&mut OsRng, &e, &inv, &key, b"pw2").unwrap();
    assert_eq!(
        drive(&ctx, m, c, &e, 50).1,
        Some(RejectReason::InviteNotCurrent)
    );
    // Edited role: the key no longer matches.
    let forged = Claims::new(
        "carol",
        3,
        [
            ("role", "admin".to_owned()),
            (INVITE_EXPIRES, "100".to_owned()),
        ],
    )
    .unwrap();
    let key = derive_invite_key(&ctx.master, &invite(3, 100));
    let (m, c) = register(&mut OsRng, &e, &forged, &key, b"pw2").unwrap();
    assert_eq!(drive(&ctx, m, c, &e, 50).1, Some(RejectReason::BadProof));
    // A credential key is not an invite key.
    let psk_as_invite = crate::secret::InviteKey::from_bytes(
        *psk::derive_psk(&ctx.master, &invite(4, 100)).expose_secret(),
    );
    let (m, c) = register(&mut OsRng, &e, &invite(4, 100), &psk_as_invite, b"pw2").unwrap();
    assert_eq!(drive(&ctx, m, c, &e, 50).1, Some(RejectReason::BadProof));
}

#[test]
fn wrong_password_unknown_user_locked_and_relay_fail_alike() {
    let ctx = full();
    enrol(&ctx, b"right");
    let e = Exporter::from_bytes([2; 32]);
    for (user, pw) in [("carol", &b"wrong"[..]), ("nobody", &b"right"[..])] {
        let (r, reason) = login(&ctx, user, pw, &e, &e, false);
        assert_eq!(
            (r.unwrap_err(), reason),
            (AuthError::Rejected, Some(RejectReason::PasswordFailed))
        );
    }
    // Relay: the client and the server see different exporters.
    let (r, reason) = login(
        &ctx,
        "carol",
        b"right",
        &e,
        &Exporter::from_bytes([9; 32]),
        false,
    );
    assert_eq!(
        (r.unwrap_err(), reason),
        (AuthError::Rejected, Some(RejectReason::PasswordFailed))
    );
    // Locked: even the right password fails, the same way.
    let locked = Full {
        locked: true,
        ..ctx
    };
    let (r, reason) = login(&locked, "carol", b"right", &e, &e, false);
    assert_eq!(
        (r.unwrap_err(), reason),
        (AuthError::Rejected, Some(RejectReason::PasswordFailed))
    );
}

/// The Argon2id parameters in the server's first login answer.
fn answered_ksf(ctx: &Full, user: &str) -> KsfParams {
    let e = Exporter::from_bytes([4; 32]);
    let (start, _) = password_login(&mut OsRng, &e, user, b"guess", false).unwrap();
    match ServerAuth::new(e).handle(start, ctx, &mut OsRng, 0) {
        ServerStep::Continue {
            reply: Message::PasswordLoginResponse(r),
            ..
        } => r.ksf,
        _ => panic!("no login answer"),
    }
}

#[test]
fn a_locked_user_gets_its_own_argon2_parameters() {
    let ctx = full();
    enrol(&ctx, b"right");
    let own = KsfParams {
        m_kib: FAST.m_kib * 2,
        ..FAST
    };
    if let Some(r) = ctx.users.borrow_mut().get_mut("carol") {
        r.ksf = own;
    }
    assert_eq!(answered_ksf(&ctx, "carol"), own);
    let locked = Full {
        locked: true,
        ..ctx
    };
    assert_eq!(answered_ksf(&locked, "carol"), own, "the lock shows");
    // An unknown name gets the parameters for new records (see SECURITY.md, known limits).
    assert_eq!(answered_ksf(&locked, "nobody"), FAST);
}

#[test]
fn psk_can_open_a_session() {
    let ctx = full();
    let c = claims("dave", 1, "reader");
    let key = psk::derive_psk(&ctx.master, &c);
    let e = Exporter::from_bytes([5; 32]);
    let (m, w) = PskClient::new(c, key).with_session().start(&e);
    let (r, _) = drive(&ctx, m, w.into(), &e, 0);
    let Ok(ClientStep::Done(a)) = r else {
        panic!("{r:?}")
    };
    let s = a.session.expect("session");
    let stored = ctx.session(&s.id).unwrap();
    assert_eq!(stored.secret, s.secret);
    assert_eq!(stored.principal.method, Method::Psk { epoch: 1 });
}

#[test]
fn each_opening_message_wants_the_record_it_names() {
    let exporter = || Exporter::from_bytes([3; 32]);
    let start = ServerAuth::new(exporter());
    let c = claims("alice", 1, "r");
    let key = derive_psk(&ctx().master, &c);
    let (hello, _) = PskClient::new(c, key).start(&exporter());
    assert_eq!(start.wants(&hello), Wanted::Client("alice".into()));
    let (login, _) = password_login(&mut OsRng, &exporter(), "bob", b"pw", false).unwrap();
    assert_eq!(start.wants(&login), Wanted::User("bob".into()));
    let key = psk::derive_invite_key(&ctx().master, &invite(1, 100));
    let (reg, _) = register(
        &mut OsRng,
        &exporter(),
        &invite(1, 100),
        &key,
        b"a long password",
    )
    .unwrap();
    assert_eq!(
        start.wants(&reg),
        Wanted::Invite(invite(1, 100).name().into())
    );
    let (resume, _) = resume_session(&exporter(), [7; 16], &SessionSecret::from_bytes([1; 32]));
    assert_eq!(start.wants(&resume), Wanted::Session([7; 16]));
    // Claims that do not decode look nothing up; a later step looks nothing up.
    let bad = Message::PskAuth(PskAuth {
        claims: vec![1, 2],
        mac: [0; 32],
        session: false,
    });
    assert_eq!(start.wants(&bad), Wanted::Nothing);
    assert_eq!(start.wants(&Message::AuthFailed(Empty {})), Wanted::Nothing);
}
