//! ferry: move data securely between clients and servers.
//!
//! Every byte travels inside TLS 1.3 (rustls); clients pin the server's key by its
//! [`ServerId`](ferry_proto::server_id::ServerId) and then authenticate with a proof bound to
//! that TLS connection's exporter, so a proof cannot be replayed or relayed. The data service
//! above sees only a verified [`Principal`](ferry_proto::auth::Principal).
//!
//! ```no_run
//! # async fn demo() -> Result<(), ferry::Error> {
//! use ferry::{Client, Server, ServerDir};
//! use std::collections::BTreeMap;
//!
//! let dir = ServerDir::new("/tmp/ferry-server");
//! dir.init()?;
//! let role = BTreeMap::from([("role".to_owned(), "writer".to_owned())]);
//! let bound = Server::open(&dir)?.bind("127.0.0.1:0").await?;
//! let addr = bound.local_addr().to_string();
//! let cred = dir.issue_client("alice", role, Some(&addr), 0)?;
//! tokio::spawn(bound.run(std::future::pending()));
//!
//! let mut client = Client::connect(&cred).await?;
//! client.put_bytes("notes/today", b"hello".to_vec()).await?;
//! assert_eq!(client.get_bytes("notes/today").await?, b"hello");
//! # Ok(()) }
//! ```
//!
//! # What is here
//!
//! The root holds what an embedder needs: [`Client`] (and [`ClientBuilder`]), [`Server`]
//! (built by [`ServerBuilder`], over the folder's own store or any [`ServerBackend`]),
//! [`ServerDir`], [`Limits`], [`ChangeFeed`], [`Watch`], [`LocalAccounts`] and [`Error`];
//! the protocol, backend and store crates are re-exported as [`proto`], [`backend`] and
//! [`store`]. Modules: [`client`] (constants and helpers of the client), [`config`] (the
//! `ferry.toml` schema), [`accounts`] (the account files), [`mesh`] (the LAN mesh), [`identity`],
//! [`fsutil`] and [`clock`]. [`wire`], [`tls`] and [`pipe`] are the low-level pieces (frames
//! over a stream, the TLS configurations and exporter, the blocking-thread pipes) for interop
//! tests and tools that speak the protocol by hand.
#![forbid(unsafe_code)]

pub mod accounts;
mod admission;
mod backend_config;
mod buf;
mod changes;
pub mod client;
mod client_builder;
pub mod clock;
pub mod config;
mod engine;
mod error;
mod fdlimit;
pub mod fsutil;
mod http_body;
mod http_client;
mod http_front;
mod http_seal;
pub mod identity;
mod live;
mod local_accounts;
pub mod mesh;
pub mod metrics;
mod net;
pub mod pipe;
mod pipeline;
mod policy;
mod registry;
mod server;
mod server_dir;
mod tally;
pub mod tls;
mod watch;
pub mod wire;

pub use changes::ChangeFeed;
pub use client::{Client, Partial};
pub use client_builder::ClientBuilder;
pub use engine::rules::Reloader;
pub use engine::{Limits, ServerBackend};
pub use error::{Error, Result};
pub use ferry_backend as backend;
pub use ferry_proto as proto;
pub use ferry_store as store;
pub use http_client::{HttpChanges, HttpClient, HttpGet};
pub use http_front::{HttpRefusals, HttpStats};
pub use local_accounts::LocalAccounts;
pub use net::BoundServer;
pub use pipeline::{Content, Pipeline, STREAMED_MAX, WINDOW};
pub use server::{FolderStore, Server, ServerBuilder};
pub use server_dir::ServerDir;
pub use watch::{Watch, WatchItem};
