//! ferry's protocol core, free of IO.
//!
//! Nothing in this crate opens a socket, reads a clock or draws randomness: bytes and an
//! explicit `now` go in, bytes and events come out. The async `ferry` crate only moves bytes
//! between these functions and a TLS stream, so every state machine here can be driven from
//! both ends in memory by a test.
//!
//! * [`frame`] — the length-prefixed frames every ferry connection carries inside TLS 1.3.
//! * [`message`] — the CBOR control messages carried in message frames.
//! * [`chunking`] — content-defined chunks for delta transfers (FastCDC, BLAKE3).
//! * [`names`] — validated source names, client names and attributes.
//! * [`claims`] — a client's claims and their canonical encoding.
//! * [`secret`] — key types that zeroize on drop and never print their bytes.
//! * [`psk`], [`password`], [`session`] — the authentication methods' cryptography.
//! * [`auth`] — authentication: the state machine every method plugs into, one file per
//!   method holding both of its ends.
//! * [`server_id`] — the fingerprint clients pin.
//! * [`credential`] — the credential file a client keeps.
//! * [`mesh`] — the LAN mesh: join PAKE, member keys, sealed announcements.
//! * [`http`] — the HTTP front's signed requests and responses, freshness and streamed bodies.
//!
//! A whole psk authentication, both ends driven in memory:
//!
//! ```
//! use ferry_proto::{auth, claims::Claims, psk, secret::{Exporter, MasterKey}};
//!
//! struct Registry(MasterKey);
//! impl auth::ServerContext for Registry {
//!     fn master_key(&self) -> &MasterKey { &self.0 }
//!     fn claims_current(&self, _claims: &Claims) -> bool { true }
//! }
//!
//! let master = MasterKey::from_bytes([7; 32]);
//! let claims = Claims::new("alice", 1, [("role", "writer")]).unwrap();
//! let key = psk::derive_psk(&master, &claims);
//! // Both ends of one TLS connection export the same value (RFC 8446 §7.5).
//! let exporter = Exporter::from_bytes([1; 32]);
//!
//! let (hello, client) = psk::PskClient::new(claims, key).start(&exporter);
//! let server = auth::ServerAuth::new(exporter.clone());
//! let mut rng = rand_core::OsRng;
//! let step = server.handle(hello, &Registry(master), &mut rng, 0);
//! let auth::ServerStep::Accept { reply, principal, .. } = step else {
//!     panic!("rejected");
//! };
//! assert_eq!(principal.role(), Some("writer"));
//! let confirmed = client.finish(reply).unwrap();
//! assert_eq!(confirmed.name, "alice");
//! ```
#![forbid(unsafe_code)]

pub mod auth;
pub mod chunking;
pub mod claims;
pub mod credential;
pub mod cursor;
pub mod files;
pub mod frame;
#[doc(hidden)]
pub mod fuzzing;
pub mod hash_cache;
pub mod http;
pub mod mesh;
pub mod message;
pub mod names;
pub mod password;
pub mod psk;
pub mod secret;
pub mod server_id;
pub mod session;

/// The ALPN protocol name of this protocol version.
pub const ALPN: &[u8] = b"ferry/1";

/// The TLS exporter label ferry uses for channel binding (RFC 8446 §7.5).
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-ferry-auth-v1";
