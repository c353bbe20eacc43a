//! Secret values.
//!
//! Each type zeroizes its bytes on drop, prints as `Name(..)` under `{:?}`, has no `Display`
//! and no `Serialize`, and compares in constant time. Bytes leave only through
//! `expose_secret`, which callers use at the few places that must hand them to a primitive or
//! write them to a key file.

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

macro_rules! secret_bytes {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Zeroize, ZeroizeOnDrop)]
        pub struct $name([u8; 32]);

        impl $name {
            /// Wraps 32 bytes.
            pub fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            /// The secret bytes. Use only to feed a cryptographic primitive or a key file.
            pub fn expose_secret(&self) -> &[u8; 32] {
                &self.0
            }
        }

        impl core::fmt::Debug for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(concat!(stringify!($name), "(..)"))
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.0.ct_eq(&other.0).into()
            }
        }

        impl Eq for $name {}
    };
}

secret_bytes!(
    /// The server's 256-bit master key, from which every client's psk is derived.
    MasterKey
);
secret_bytes!(
    /// A client's pre-shared key: HKDF of the master key over the client's claims.
    Psk
);
secret_bytes!(
    /// A session's secret: derived by both ends from the exporter of the connection that
    /// opened the session, never sent.
    SessionSecret
);
secret_bytes!(
    /// A one-time invite's key: HKDF of the master key over the invite's claims.
    InviteKey
);
secret_bytes!(
    /// The TLS exporter value of one connection (RFC 8446 §7.5), used as channel binding.
    ///
    /// Both ends of a connection compute the same value; nobody else can.
    Exporter
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_bytes() {
        let k = MasterKey::from_bytes([0xab; 32]);
        let p = Psk::from_bytes([0xcd; 32]);
        let e = Exporter::from_bytes([0xef; 32]);
        assert_eq!(
            format!("{k:?} {p:?} {e:?}"),
            "MasterKey(..) Psk(..) Exporter(..)"
        );
    }

    #[test]
    fn equality() {
        assert_eq!(Psk::from_bytes([1; 32]), Psk::from_bytes([1; 32]));
        assert_ne!(Psk::from_bytes([1; 32]), Psk::from_bytes([2; 32]));
    }
}
secret_bytes!(
    /// A mesh's 256-bit key at one epoch: random, handed to each member when it joins, and
    /// replaced by a new random key whenever a member is removed.
    MeshKey
);
