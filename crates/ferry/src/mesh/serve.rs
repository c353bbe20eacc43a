//! The accepting side of the mesh's messages: joins, mesh state and the mesh listing. (A
//! member's `mesh_auth` goes through `ferry_proto::auth::ServerAuth` like every other method.)

use std::net::SocketAddr;
use std::time::Duration;

use ferry_proto::auth::Principal;
use ferry_proto::mesh::join::Opener;
use ferry_proto::mesh::state::Member;
use ferry_proto::mesh::wire::{MeshJoinResponse, MeshJoinStart};
use ferry_proto::message::{Empty, Message};
use ferry_proto::names;
use ferry_proto::secret::Exporter;
use ferry_proto::server_id::ServerId;
use tokio::io::{AsyncRead, AsyncWrite};

use super::device;
use super::join_gate::join_delay;
use crate::Error;
use crate::engine::mesh::MeshShared;
use crate::server_dir::ServerDir;
use crate::wire::Wire;

/// Runs a join as the opener. Always ends the connection.
///
/// One exchange at a time ([`JoinGate::turn`]); the delay for the window's failures so far;
/// the window re-checked after every wait (the turn, the delay, the joiner's finish); the
/// attempt counted before `mesh_join_response` leaves. A refused attempt (wrong password, a
/// closed or ended window, a bad signature) runs CPace all the same and gets the same
/// `auth_failed`.
pub(crate) async fn join<S: AsyncRead + AsyncWrite + Unpin>(
    mesh: &MeshShared,
    dir: &ServerDir,
    wire: &mut Wire<S>,
    exporter: &Exporter,
    peer: SocketAddr,
    start: MeshJoinStart,
    max_delay: Duration,
) -> Result<(), Error> {
    let _turn = mesh.gate.turn().await;
    let until = mesh.window_until();
    tokio::time::sleep(join_delay(mesh.gate.failures(until)).min(max_delay)).await;
    let password = mesh.password(until).filter(|_| mesh.gate.admits(until));
    let attempt = mesh.gate.attempt(until, dir);
    let joiner = ServerId::from_spki(&start.device);
    let me = mesh.device.id();
    let mut rng = rand_core_10::UnwrapErr(getrandom_04::SysRng);
    let responded = Opener::respond(
        password.as_ref().map(|p| p.as_bytes()),
        exporter,
        &me,
        &joiner,
        &start.share,
        &mut rng,
    );
    let open = password.is_some();
    drop(password);
    let outcome = match responded {
        Err(_) => Err("invalid PAKE share"),
        Ok((share, confirm, opener)) => {
            wire.send(&Message::MeshJoinResponse(MeshJoinResponse {
                share,
                confirm,
            }))
            .await?;
            match wire.recv_message().await? {
                Message::MeshJoinFinish(f) => {
                    let confirmed = opener.finish(&f.confirm).is_ok();
                    let signed = device::verify(
                        &start.device,
                        &ferry_proto::mesh::join::device_proof("join", exporter),
                        &f.signature,
                    );
                    // Closed, ended or replaced while this joiner answered: refused.
                    let still_open = mesh.password(until).is_some();
                    let named = names::validate_display_name(&start.name).is_ok();
                    match (open, confirmed, signed, still_open, named) {
                        (false, ..) => Err("the mesh is not open for joins"),
                        (true, false, ..) => Err("wrong password"),
                        (true, true, false, ..) => Err("bad device signature"),
                        (true, true, true, false, _) => Err("the join window closed meanwhile"),
                        (true, true, true, true, false) => Err("invalid peer name"),
                        (true, true, true, true, true) => Ok(()),
                    }
                }
                _ => Err("unexpected message"),
            }
        }
    };
    if let Err(why) = outcome {
        tracing::warn!(
            "{peer}: mesh join failed ({why}); {} failures in this window",
            attempt.failures()
        );
        drop(attempt);
        wire.send(&Message::AuthFailed(Empty {})).await?;
        return Ok(());
    }
    let member = Member {
        spki: start.device.clone(),
        name: start.name.clone(),
        addr: SocketAddr::new(peer.ip(), start.port).to_string(),
    };
    let dir2 = dir.clone();
    let grant = crate::pipe::join(tokio::task::spawn_blocking(move || {
        dir2.update_mesh(|s| match s {
            Some(s) => {
                if s.add_member(member) {
                    (true, Some(s.grant()))
                } else {
                    (false, None)
                }
            }
            None => (false, None),
        })
    }))
    .await?;
    match grant {
        Some(g) => {
            attempt.succeeded();
            tracing::info!("{peer}: {} joined the mesh as {joiner}", start.name);
            wire.send(&Message::MeshJoinOk(Box::new(g))).await?;
        }
        None => {
            tracing::warn!("{peer}: join by a removed device {joiner} refused");
            wire.send(&Message::AuthFailed(Empty {})).await?;
        }
    }
    Ok(())
}

/// Answers `mesh_state` and `mesh_list` from a member.
pub(crate) async fn handle<S: AsyncRead + AsyncWrite + Unpin, B: crate::engine::ServerBackend>(
    engine: &crate::engine::Engine<B>,
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
