//! The LAN mesh: peers that share one password to join, then a random mesh key.
//!
//! * [`pake`] — the balanced PAKE (CPace) behind an interface of ours.
//! * [`join`] — joining: CPace bound to the TLS exporter, with key confirmation.
//! * [`key`] — the mesh key schedule: announcement keys and member keys per epoch.
//! * [`announce`] — sealed UDP announcements.
//! * [`replay`] — freshness of announcements.
//! * [`catch_up`] — when a datagram of a newer epoch may start a catch-up.
//! * [`node`] — a peer's datagram rules, sans IO: datagram in, action out.
//! * [`state`] — a member's view of the mesh, its file, and merging views.
//! * [`wire`] — the mesh's messages.
//!
//! Members authenticating to each other is an authentication method like the others:
//! [`crate::auth::mesh`].

pub mod announce;
pub mod beacon;
pub mod catch_up;
pub mod join;
pub mod key;
pub mod node;
pub mod pake;
pub mod replay;
pub mod state;
pub mod wire;
