//! The TLS front: everything that touches a socket on the server side. It decodes frames,
//! calls the engine and encodes what it returns; the engine imports nothing from here.
//!
//! - `listener.rs`: [`BoundServer`] and its accept loop, under the connection budgets; it
//!   also starts the HTTP front's loop (`http_front/`) when `bind_http` bound a socket.
//! - `conn.rs`: one connection: TLS handshake, authentication, request loop.
//! - `data.rs`: put, get, stat, list, delete; `owed.rs`: the answers to small puts still
//!   being committed, kept in request order; `watch.rs`: watch streams; `account.rs`: the
//!   password change; `mesh.rs`: a device's join, and a member's mesh state and listing.

mod account;
pub(crate) mod conn;
pub(crate) mod data;
mod listener;
mod mesh;
mod owed;
mod watch;

pub use listener::BoundServer;
