//! The TLS front of the mesh's messages: moves a join's messages between the connection and
//! the engine's steps (engine/mesh_join.rs), and answers `mesh_state` and `mesh_list` from a
//! member. (A member's `mesh_auth` goes through `ferry_proto::auth::ServerAuth` like every
//! other method.)

use std::net::SocketAddr;

use ferry_proto::auth::Principal;
use ferry_proto::mesh::wire::MeshJoinStart;
use ferry_proto::message::{Empty, Message};
use ferry_proto::secret::Exporter;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::Error;
use crate::engine::{Core, Engine, ServerBackend};
use crate::wire::Wire;

/// A join, with this server as the opener:
///
/// ```text
/// C→S mesh_join_start     {device, name, port, share}
/// S→C mesh_join_response  {share, confirm}
/// C→S mesh_join_finish    {confirm, signature}
/// S→C mesh_join_ok        {the mesh's grant}         or auth_failed at any step
/// ```
///
/// Always ends the connection.
pub(crate) async fn join<S: AsyncRead + AsyncWrite + Unpin>(
    engine: &Core,
    wire: &mut Wire<S>,
    exporter: &Exporter,
    peer: SocketAddr,
    start: MeshJoinStart,
) -> Result<(), Error> {
    let max_delay = engine.limits.handshake_timeout / 2;
    let granted = match engine.mesh_join(exporter, peer, start, max_delay).await {
        Err(failed) => Err(failed),
        Ok((response, confirm)) => {
            wire.send(&Message::MeshJoinResponse(response)).await?;
            match wire.recv_message().await? {
                Message::MeshJoinFinish(f) => confirm.finish(f).await?,
                m => Err(confirm.abandoned(m.type_name())),
            }
        }
    };
    match granted {
        Ok(grant) => wire.send(&Message::MeshJoinOk(Box::new(grant))).await,
        Err(_) => wire.send(&Message::AuthFailed(Empty {})).await,
    }
}

/// Answers `mesh_state` and `mesh_list` from a member.
pub(crate) async fn handle<S: AsyncRead + AsyncWrite + Unpin, B: ServerBackend>(
    engine: &Engine<B>,
    wire: &mut Wire<S>,
    p: &Principal,
    msg: Message,
) -> Result<(), Error> {
    match msg {
        Message::MeshState(_) => {
            let grant = engine.mesh_state(p)?;
            wire.send(&Message::MeshStateOk(Box::new(grant))).await
        }
        Message::MeshList(req) => {
            let page = engine.mesh_list(p, req).await?;
            wire.send(&Message::MeshListOk(page)).await
        }
        other => Err(Error::Protocol(format!(
            "unexpected {} in mesh handling",
            other.type_name()
        ))),
    }
}
