//! The rules of every account write, once, as plain functions on the records
//! (`ferry_proto::files`): the in-memory backend applies them under its mutex, a server
//! folder under `clients.lock` between reading and writing its files. A backend that cannot
//! hold the records in memory (PostgreSQL) states the same rules in SQL and passes the same
//! conformance checks.
//!
//! A function changes only the records it is given; the caller stores those it changed, in
//! the order users, invites, sessions (so a crash between two writes leaves a user to
//! register again, never a spent invite without its user, nor an old password's record).

use std::collections::BTreeMap;

use ferry_proto::files::{
    ClientRecord, InviteEntry, Invites, Registry, SessionEntry, Sessions, UserEntry, Users,
};

use crate::{BackendError, Result};

fn next(n: u64, what: &str) -> Result<u64> {
    n.checked_add(1)
        .ok_or_else(|| BackendError::Corrupt(format!("{what} is exhausted")))
}

/// Issues (or re-issues) `name`: the next epoch (1 if new), not revoked.
pub fn issue_client(
    registry: &mut Registry,
    name: &str,
    attributes: BTreeMap<String, String>,
    now: u64,
) -> Result<ClientRecord> {
    let epoch = match registry.clients.get(name) {
        None => 1,
        Some(old) => next(old.epoch, "the client's epoch")?,
    };
    let record = ClientRecord {
        epoch,
        attributes,
        issued: now,
        revoked: false,
    };
    registry.clients.insert(name.to_owned(), record.clone());
    Ok(record)
}

/// Revokes `name`; whether it existed and was not revoked yet.
pub fn revoke_client(registry: &mut Registry, name: &str) -> bool {
    match registry.clients.get_mut(name) {
        Some(c) if !c.revoked => {
            c.revoked = true;
            true
        }
        _ => false,
    }
}

/// Stores `entry` as `name`'s record with a generation never given before; returns it.
pub fn put_user(users: &mut Users, name: &str, mut entry: UserEntry) -> u64 {
    entry.generation = users.next_generation();
    let generation = entry.generation;
    users.users.insert(name.to_owned(), entry);
    generation
}

/// Ends `name`'s sessions that a password login opened (a new record ends the old
/// password's sessions); returns how many.
pub fn end_password_sessions(sessions: &mut Sessions, name: &str) -> usize {
    let before = sessions.sessions.len();
    sessions
        .sessions
        .retain(|_, s| s.name != name || !s.opened_by_password());
    before - sessions.sessions.len()
}

/// Replaces `name`'s record if it is still of `generation` (a password change proved that
/// one): a new generation, and the old password's sessions end. `None` if there is no such
/// user or its record changed meanwhile.
pub fn replace_user(
    users: &mut Users,
    sessions: &mut Sessions,
    name: &str,
    generation: u64,
    entry: UserEntry,
) -> Option<u64> {
    if users
        .users
        .get(name)
        .is_none_or(|u| u.generation != generation)
    {
        return None;
    }
    let generation = put_user(users, name, entry);
    end_password_sessions(sessions, name);
    Some(generation)
}

/// Removes `name`, its invite and its password sessions; whether the user existed. Its
/// generation is never given again.
pub fn remove_user(
    users: &mut Users,
    invites: &mut Invites,
    sessions: &mut Sessions,
    name: &str,
) -> bool {
    let existed = users.users.remove(name).is_some();
    invites.invites.remove(name);
    end_password_sessions(sessions, name);
    existed
}

/// Creates an invite for `name` with the next serial (1 if none). An existing user of that
/// name loses its record and its password sessions: the old password no longer logs in, and
/// the invite's attributes apply from its registration.
pub fn create_invite(
    invites: &mut Invites,
    users: &mut Users,
    sessions: &mut Sessions,
    name: &str,
    attributes: BTreeMap<String, String>,
    expires: u64,
) -> Result<InviteEntry> {
    let serial = match invites.invites.get(name) {
        None => 1,
        Some(old) => next(old.serial, "the invite serial")?,
    };
    let invite = InviteEntry {
        serial,
        attributes,
        expires,
        spent: false,
    };
    invites.invites.insert(name.to_owned(), invite.clone());
    if users.users.remove(name).is_some() {
        end_password_sessions(sessions, name);
    }
    Ok(invite)
}

/// Spends the invite `(name, serial)` and stores `entry` as the user's record, if the invite
/// exists, is unspent and has not expired at `now`; the user's earlier password sessions
/// end. Returns the new generation, or `None` (nothing changed).
pub fn register_with_invite(
    invites: &mut Invites,
    users: &mut Users,
    sessions: &mut Sessions,
    name: &str,
    serial: u64,
    entry: UserEntry,
    now: u64,
) -> Option<u64> {
    match invites.invites.get_mut(name) {
        Some(i) if i.serial == serial && !i.spent && now < i.expires => i.spent = true,
        _ => return None,
    }
    let generation = put_user(users, name, entry);
    end_password_sessions(sessions, name);
    Some(generation)
}

/// Stores a session; sessions not live at `now` go, and a name holds at most
/// [`MAX_SESSIONS_PER_NAME`](ferry_proto::files::MAX_SESSIONS_PER_NAME) (its least recently
/// used goes first).
pub fn put_session(sessions: &mut Sessions, id: &str, entry: SessionEntry, now: u64) {
    sessions.prune(now);
    sessions.insert(id.to_owned(), entry);
}

/// Marks `id` used at `now` if it is live then; the updated entry.
pub fn touch_session(sessions: &mut Sessions, id: &str, now: u64) -> Option<SessionEntry> {
    let s = sessions.sessions.get_mut(id).filter(|s| s.live(now))?;
    s.last_used = now;
    Some(s.clone())
}

/// Removes every session of `name`; how many.
pub fn remove_sessions_of(sessions: &mut Sessions, name: &str) -> u64 {
    let before = sessions.sessions.len();
    sessions.sessions.retain(|_, s| s.name != name);
    (before - sessions.sessions.len()) as u64
}

/// Removes every session not live at `now`; how many.
pub fn sweep_sessions(sessions: &mut Sessions, now: u64) -> u64 {
    let before = sessions.sessions.len();
    sessions.prune(now);
    (before - sessions.sessions.len()) as u64
}
