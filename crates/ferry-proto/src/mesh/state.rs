//! A member's view of its mesh: name, key and epoch, members, removed devices; the file it is
//! kept in (`mesh.toml`, mode 0600: it holds the key); and how two views merge.
//!
//! Merging is what makes the member list converge without a coordinator: members are the
//! union of both lists minus the union of removed devices (a removed device never comes back);
//! the higher epoch's key wins, and at equal epochs the key with the larger
//! [`super::key::key_id`]. If the result removes a device that the winning key was not
//! made without, the merging member must rotate again ([`Merged::rotate`]), since that device
//! may hold the key.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use super::key::key_id;
use super::wire::{MemberInfo, MeshGrant};
use crate::files::{FileError, parse_toml};
use crate::message::Digest;
use crate::secret::MeshKey;
use crate::server_id::ServerId;

/// One member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// DER SubjectPublicKeyInfo of its TLS key.
    pub spki: Vec<u8>,
    /// Display name.
    pub name: String,
    /// Last known TLS address, `ip:port`, or empty.
    pub addr: String,
}

impl Member {
    /// Its device ID.
    pub fn device(&self) -> ServerId {
        ServerId::from_spki(&self.spki)
    }
}

/// A member's view of the mesh.
#[derive(Clone, Debug)]
pub struct MeshState {
    /// The mesh's name.
    pub name: String,
    /// The current epoch.
    pub epoch: u64,
    /// The current key.
    pub key: MeshKey,
    /// The key of `epoch - 1`, if known (lets a member that missed a rotation catch up).
    pub previous: Option<MeshKey>,
    /// Current members, by device ID.
    pub members: BTreeMap<ServerId, Member>,
    /// Removed devices.
    pub removed: BTreeSet<ServerId>,
    /// The removed devices the current key was made (or adopted) without.
    pub key_excludes: BTreeSet<ServerId>,
}

/// A grant that is not a valid mesh state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid mesh state: {0}")]
pub struct InvalidState(&'static str);

/// What a merge changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Merged {
    /// Anything changed (save the file).
    pub changed: bool,
    /// The key changed (announce under the new epoch).
    pub rekeyed: bool,
    /// The merged view removes a device the current key was not made without: rotate.
    pub rotate: bool,
}

fn member_from_info(m: MemberInfo) -> Member {
    Member {
        spki: m.spki,
        name: m.name,
        addr: m.addr,
    }
}

impl MeshState {
    /// A new mesh whose only member is `me`, at epoch 1.
    pub fn create(name: &str, me: Member, key: MeshKey) -> Self {
        Self {
            name: name.to_owned(),
            epoch: 1,
            key,
            previous: None,
            members: BTreeMap::from([(me.device(), me)]),
            removed: BTreeSet::new(),
            key_excludes: BTreeSet::new(),
        }
    }

    /// The state a joiner starts from.
    pub fn from_grant(g: MeshGrant) -> Result<Self, InvalidState> {
        if g.members.is_empty() {
            return Err(InvalidState("no members"));
        }
        let removed: BTreeSet<ServerId> = g
            .removed
            .iter()
            .map(|b| ServerId::from_bytes(b.into_array()))
            .collect();
        let members = g
            .members
            .into_iter()
            .map(member_from_info)
            .map(|m| (m.device(), m))
            .filter(|(d, _)| !removed.contains(d))
            .collect();
        Ok(Self {
            name: g.name,
            epoch: g.epoch,
            key: g.key,
            previous: None,
            members,
            key_excludes: removed.clone(),
            removed,
        })
    }

    /// The state as sent to a joiner or a member catching up.
    pub fn grant(&self) -> MeshGrant {
        MeshGrant {
            name: self.name.clone(),
            epoch: self.epoch,
            key: self.key.clone(),
            members: self
                .members
                .values()
                .map(|m| MemberInfo {
                    spki: m.spki.clone(),
                    name: m.name.clone(),
                    addr: m.addr.clone(),
                })
                .collect(),
            removed: self
                .removed
                .iter()
                .map(|d| serde_bytes::ByteArray::new(*d.as_bytes()))
                .collect(),
        }
    }

    /// Whether `device` is a current member.
    pub fn is_member(&self, device: &ServerId) -> bool {
        self.members.contains_key(device)
    }

    /// The key of `epoch`, if it is the current or the previous one.
    pub fn key_for(&self, epoch: u64) -> Option<&MeshKey> {
        if epoch == self.epoch {
            Some(&self.key)
        } else if epoch.checked_add(1) == Some(self.epoch) {
            self.previous.as_ref()
        } else {
            None
        }
    }

    /// Adds (or updates the address of) a member; refuses a removed device.
    pub fn add_member(&mut self, m: Member) -> bool {
        let d = m.device();
        if self.removed.contains(&d) {
            return false;
        }
        self.members.insert(d, m);
        true
    }

    /// Moves to a new epoch with `new_key`.
    pub fn rotate(&mut self, new_key: MeshKey) {
        self.previous = Some(core::mem::replace(&mut self.key, new_key));
        self.epoch = self.epoch.saturating_add(1);
        self.key_excludes = self.removed.clone();
    }

    /// Removes `device` and rotates to `new_key`. `false` if it was not a member.
    pub fn remove(&mut self, device: &ServerId, new_key: MeshKey) -> bool {
        if self.members.remove(device).is_none() {
            return false;
        }
        self.removed.insert(*device);
        self.rotate(new_key);
        true
    }

    /// Merges another member's view into this one (see the module docs).
    pub fn merge(&mut self, g: MeshGrant) -> Merged {
        let mut out = Merged::default();
        let theirs_removed: BTreeSet<ServerId> = g
            .removed
            .iter()
            .map(|b| ServerId::from_bytes(b.into_array()))
            .collect();
        for d in &theirs_removed {
            out.changed |= self.removed.insert(*d);
            out.changed |= self.members.remove(d).is_some();
        }
        let take_theirs =
            g.epoch > self.epoch || (g.epoch == self.epoch && key_id(&g.key) > key_id(&self.key));
        if take_theirs {
            let old = core::mem::replace(&mut self.key, g.key.clone());
            self.previous = (g.epoch == self.epoch.saturating_add(1)).then_some(old);
            self.epoch = g.epoch;
            self.key_excludes = theirs_removed;
            out.changed = true;
            out.rekeyed = true;
        }
        for m in g.members.into_iter().map(member_from_info) {
            let d = m.device();
            if self.removed.contains(&d) {
                continue;
            }
            match self.members.get_mut(&d) {
                None => {
                    self.members.insert(d, m);
                    out.changed = true;
                }
                Some(mine) if mine.addr.is_empty() && !m.addr.is_empty() => {
                    mine.addr = m.addr;
                    out.changed = true;
                }
                Some(_) => {}
            }
        }
        out.rotate = self.removed != self.key_excludes;
        out
    }

    /// A digest of the member list and key epoch: members compare it to learn they differ.
    pub fn members_digest(&self) -> Digest {
        let mut h = Sha256::new();
        h.update(b"ferry mesh members v1\0");
        h.update(self.epoch.to_be_bytes());
        h.update(key_id(&self.key));
        for d in self.members.keys() {
            h.update(b"m");
            h.update(d.as_bytes());
        }
        for d in &self.removed {
            h.update(b"r");
            h.update(d.as_bytes());
        }
        h.finalize().into()
    }

    /// Parses `mesh.toml`.
    pub fn parse(text: &str) -> Result<Self, FileError> {
        let f: StateFile = parse_toml(text)?;
        f.into_state()
    }

    /// Encodes `mesh.toml`.
    pub fn to_toml(&self) -> Result<Zeroizing<String>, FileError> {
        let b64 = |k: &MeshKey| data_encoding::BASE64.encode(k.expose_secret());
        let f = StateFile {
            name: self.name.clone(),
            epoch: self.epoch,
            key: Zeroizing::new(b64(&self.key)),
            previous_key: self.previous.as_ref().map(|k| Zeroizing::new(b64(k))),
            members: self
                .members
                .values()
                .map(|m| MemberEntry {
                    device: m.device().to_string(),
                    name: m.name.clone(),
                    addr: m.addr.clone(),
                    spki: data_encoding::BASE64.encode(&m.spki),
                })
                .collect(),
            removed: self.removed.iter().map(ToString::to_string).collect(),
            key_excludes: self.key_excludes.iter().map(ToString::to_string).collect(),
        };
        let body = Zeroizing::new(
            toml::to_string(&f).map_err(|_| FileError::new("cannot encode mesh state"))?,
        );
        Ok(Zeroizing::new(format!(
            "# ferry mesh state. Holds the mesh key: keep it private (mode 0600).\n{}",
            *body
        )))
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberEntry {
    device: String,
    name: String,
    #[serde(default)]
    addr: String,
    spki: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    name: String,
    epoch: u64,
    key: Zeroizing<String>,
    #[serde(default)]
    previous_key: Option<Zeroizing<String>>,
    #[serde(default)]
    removed: Vec<String>,
    #[serde(default)]
    key_excludes: Vec<String>,
    #[serde(default, rename = "member")]
    members: Vec<MemberEntry>,
}

fn parse_key(s: &str) -> Result<MeshKey, FileError> {
    let bytes = Zeroizing::new(
        data_encoding::BASE64
            .decode(s.as_bytes())
            .map_err(|_| FileError::new("mesh key is not base64"))?,
    );
    let arr: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| FileError::new("mesh key is not 32 bytes"))?;
    Ok(MeshKey::from_bytes(arr))
}

fn parse_ids(v: &[String]) -> Result<BTreeSet<ServerId>, FileError> {
    v.iter()
        .map(|s| ServerId::parse(s).map_err(|_| FileError::new("invalid device ID")))
        .collect()
}

impl StateFile {
    fn into_state(self) -> Result<MeshState, FileError> {
        let mut members = BTreeMap::new();
        for m in self.members {
            let spki = data_encoding::BASE64
                .decode(m.spki.as_bytes())
                .map_err(|_| FileError::new("member spki is not base64"))?;
            let device = ServerId::from_spki(&spki);
            if ServerId::parse(&m.device).ok() != Some(device) {
                return Err(FileError::new("member device ID does not match its key"));
            }
            members.insert(
                device,
                Member {
                    spki,
                    name: m.name,
                    addr: m.addr,
                },
            );
        }
        if self.epoch == 0 {
            return Err(FileError::new("epoch must be at least 1"));
        }
        Ok(MeshState {
            name: self.name,
            epoch: self.epoch,
            key: parse_key(&self.key)?,
            previous: self
                .previous_key
                .as_deref()
                .map(|k| parse_key(k))
                .transpose()?,
            members,
            removed: parse_ids(&self.removed)?,
            key_excludes: parse_ids(&self.key_excludes)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(n: &str) -> Member {
        Member {
            spki: n.as_bytes().to_vec(),
            name: n.into(),
            addr: String::new(),
        }
    }

    #[test]
    fn file_round_trip_and_malformed_files() {
        let mut s = MeshState::create("home", member("a"), MeshKey::from_bytes([1; 32]));
        s.add_member(member("b"));
        s.remove(&member("b").device(), MeshKey::from_bytes([2; 32]));
        let text = s.to_toml().unwrap();
        let back = MeshState::parse(&text).unwrap();
        assert_eq!(back.epoch, 2);
        assert_eq!(back.key, s.key);
        assert_eq!(back.previous, s.previous);
        assert_eq!(back.members, s.members);
        assert_eq!(back.removed, s.removed);
        assert_eq!(back.members_digest(), s.members_digest());
        for bad in [
            "",
            "name = 1",
            "name = \"x\"\nepoch = 0\nkey = \"AAAA\"",
            "name = \"x\"\nepoch = 1\nkey = \"not base64!\"",
            "name = \"x\"\nepoch = 1\nkey = \"AAAA\"",
            "name = \"x\"\nepoch = 1\nkey = \"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\"\nsurprise = 1",
        ] {
            assert!(MeshState::parse(bad).is_err(), "{bad}");
        }
        // A member whose device ID does not match its key.
        let edited = text.replace(
            &member("a").device().to_string(),
            &member("z").device().to_string(),
        );
        assert!(MeshState::parse(&edited).is_err());
    }

    #[test]
    fn member_lists_merge_to_the_union_minus_removed() {
        let k = MeshKey::from_bytes([1; 32]);
        let mut a = MeshState::create("m", member("a"), k.clone());
        let mut c = a.clone();
        a.add_member(member("b"));
        c.add_member(member("c"));
        let m = a.merge(c.grant());
        assert!(m.changed && !m.rekeyed && !m.rotate);
        c.merge(a.grant());
        assert_eq!(a.members_digest(), c.members_digest());
        assert_eq!(a.members.len(), 3);
    }

    #[test]
    fn a_removal_wins_and_concurrent_removals_converge() {
        let k = MeshKey::from_bytes([1; 32]);
        let mut a = MeshState::create("m", member("a"), k);
        for n in ["b", "c", "d", "e"] {
            a.add_member(member(n));
        }
        let mut b = a.clone();
        let mut c = a.clone();
        // a removes d while c removes e, each with its own new key at epoch 2.
        a.remove(&member("d").device(), MeshKey::from_bytes([2; 32]));
        c.remove(&member("e").device(), MeshKey::from_bytes([3; 32]));
        // b learns a's removal first: rekeys to epoch 2, nothing more to do.
        let m = b.merge(a.grant());
        assert!(m.rekeyed && !m.rotate);
        assert!(!b.is_member(&member("d").device()));
        // Then c's: one of the two epoch-2 keys wins, and the merged view removed a device
        // the winning key was made with, so b must rotate.
        let m = b.merge(c.grant());
        assert!(m.rotate);
        b.rotate(MeshKey::from_bytes([4; 32]));
        assert_eq!(b.epoch, 3);
        // Everyone converges on b's epoch-3 view, without d or e.
        for x in [&mut a, &mut c] {
            let m = x.merge(b.grant());
            assert!(m.rekeyed && !m.rotate);
            assert_eq!(x.members_digest(), b.members_digest());
        }
        // A stale view that still lists d does not bring it back.
        let mut old = MeshState::create("m", member("a"), MeshKey::from_bytes([1; 32]));
        old.add_member(member("d"));
        assert!(!b.merge(old.grant()).rekeyed);
        assert!(!b.is_member(&member("d").device()));
        assert!(!b.add_member(member("d")));
    }

    #[test]
    fn keys_for_current_and_previous_epoch_only() {
        let mut s = MeshState::create("m", member("a"), MeshKey::from_bytes([1; 32]));
        s.rotate(MeshKey::from_bytes([2; 32]));
        s.rotate(MeshKey::from_bytes([3; 32]));
        assert_eq!(s.key_for(3), Some(&MeshKey::from_bytes([3; 32])));
        assert_eq!(s.key_for(2), Some(&MeshKey::from_bytes([2; 32])));
        assert_eq!(s.key_for(1), None);
        assert_eq!(s.key_for(4), None);
    }
}
