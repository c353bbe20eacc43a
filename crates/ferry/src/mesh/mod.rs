//! The LAN mesh: peers that are each a ferry server, joined with a shared password, that
//! announce changes by sealed UDP datagrams and fetch from each other over TLS.
//!
//! * [`device`] — device keys: signing and verifying device proofs.
//! * [`files`] — the mesh's files in a server folder.
//! * `join_gate` — limits on guessing the join password.
//! * [`peer`] — the connecting side: joining, and connecting to a member.
//! * [`runtime`] — `ferry mesh up`: announcer, listener and synchroniser.
//! * [`udp`] — the announcement sockets.
//! * `window` — deleting the join window's password when the window ends.

pub mod device;
pub mod files;
pub(crate) mod join_gate;
pub mod peer;
pub mod runtime;
pub mod udp;
pub(crate) mod window;
