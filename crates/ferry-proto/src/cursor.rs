//! Listing cursors that name nothing.
//!
//! A listing is filtered to the sources the principal may list, so its `next` must never be
//! the name of a source it may not list. The server scans a bounded number of names per
//! request; when it stops on a name the principal may not see, `next` is that name sealed:
//!
//! ```text
//! cursor     = "~" ‖ base64url-nopad(nonce ‖ XChaCha20-Poly1305(cursor_key, nonce, aad, name))
//! cursor_key = HKDF-SHA256(salt = none, IKM = master, info = "ferry list cursor v1", L = 32)
//! aad        = "ferry list cursor v1" ‖ 0x00 ‖ len(principal) (u64 BE) ‖ principal ‖ prefix
//! ```
//!
//! Only the server that sealed it opens it, only for the same principal name and prefix; `~`
//! is not a character of source names, so a cursor never looks like one. Clients treat
//! `next` as opaque and send it back as `after`.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::secret::MasterKey;

/// The first character of a sealed cursor.
pub const MARK: char = '~';

const LABEL: &[u8] = b"ferry list cursor v1";
const NONCE_LEN: usize = 24;

/// The key that seals listing cursors, derived from the master key.
pub struct CursorKey(Zeroizing<[u8; 32]>);

impl core::fmt::Debug for CursorKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("CursorKey(..)")
    }
}

fn aad(principal: &str, prefix: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(LABEL.len() + 9 + principal.len() + prefix.len());
    out.extend_from_slice(LABEL);
    out.push(0);
    out.extend_from_slice(&(principal.len() as u64).to_be_bytes());
    out.extend_from_slice(principal.as_bytes());
    out.extend_from_slice(prefix.as_bytes());
    out
}

impl CursorKey {
    /// Derives the cursor key from the server's master key.
    pub fn derive(master: &MasterKey) -> Self {
        let hk = Hkdf::<Sha256>::new(None, master.expose_secret());
        let mut okm = Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF-SHA256's limit of 255 * 32.
        let _ = hk.expand(LABEL, okm.as_mut());
        Self(okm)
    }

    /// Seals `name`, where a listing of `prefix` for `principal` stopped. `nonce` must be
    /// random (24 bytes make a collision hopeless).
    pub fn seal(
        &self,
        nonce: [u8; NONCE_LEN],
        principal: &str,
        prefix: &str,
        name: &str,
    ) -> String {
        let cipher = XChaCha20Poly1305::new(&(*self.0).into());
        let aad = aad(principal, prefix);
        let mut out = nonce.to_vec();
        // Encryption fails only for plaintexts beyond 2^38 bytes; a name is at most 512.
        if let Ok(sealed) = cipher.encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: name.as_bytes(),
                aad: &aad,
            },
        ) {
            out.extend_from_slice(&sealed);
        }
        format!("{MARK}{}", data_encoding::BASE64URL_NOPAD.encode(&out))
    }

    /// Opens a cursor sealed for `principal` and `prefix`; `None` if it is not one.
    pub fn open(&self, principal: &str, prefix: &str, cursor: &str) -> Option<String> {
        let body = cursor.strip_prefix(MARK)?;
        let bytes = data_encoding::BASE64URL_NOPAD
            .decode(body.as_bytes())
            .ok()?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).ok()?;
        let cipher = XChaCha20Poly1305::new(&(*self.0).into());
        let plain = cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: sealed,
                    aad: &aad(principal, prefix),
                },
            )
            .ok()?;
        String::from_utf8(plain).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_names_nothing_and_opens_only_where_it_was_made() {
        let key = CursorKey::derive(&MasterKey::from_bytes([1; 32]));
        let c = key.seal([9; 24], "alice", "hr/", "hr/layoffs-2026.xlsx");
        assert!(c.starts_with('~'));
        assert!(!c.contains("layoffs"));
        assert_eq!(
            key.open("alice", "hr/", &c).as_deref(),
            Some("hr/layoffs-2026.xlsx")
        );
        // Another principal, prefix or server, an edited or cut cursor: nothing.
        assert_eq!(key.open("bob", "hr/", &c), None);
        assert_eq!(key.open("alice", "", &c), None);
        let other = CursorKey::derive(&MasterKey::from_bytes([2; 32]));
        assert_eq!(other.open("alice", "hr/", &c), None);
        let mut edited = c.clone().into_bytes();
        let last = edited.len() - 1;
        edited[last] = if edited[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            key.open("alice", "hr/", &String::from_utf8(edited).unwrap()),
            None
        );
        assert_eq!(key.open("alice", "hr/", &c[..20]), None);
        assert_eq!(key.open("alice", "hr/", "hr/x"), None);
        assert_eq!(key.open("alice", "hr/", "~"), None);
        assert_eq!(format!("{key:?}"), "CursorKey(..)");
    }
}
