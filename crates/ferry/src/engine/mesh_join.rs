//! A device joining the mesh, accepted by this member: the opener's side of the join PAKE
//! (CPace, `ferry_proto::mesh::join`) as two steps that each consume the previous one, so a
//! step cannot be skipped or repeated.
//!
//! ```text
//! mesh_join_start   {device, name, port, share}  → Core::mesh_join     → share, confirm
//! mesh_join_finish  {confirm, signature}          → JoinConfirm::finish → the mesh's grant
//! ```
//!
//! One exchange at a time (the gate's turn, held across both steps); a delay for the
//! window's failures so far; the window re-checked after every wait (the turn, the delay,
//! the joiner's finish); the attempt counted as a failure before the first answer leaves,
//! taken back only when the device is added. A refused attempt (wrong password, a closed or
//! ended window, a bad signature, a bad name) runs CPace all the same and fails alike
//! ([`JoinFailed`]).

use std::net::SocketAddr;
use std::time::Duration;

use ferry_proto::mesh::join::{Opener, device_proof};
use ferry_proto::mesh::state::Member;
use ferry_proto::mesh::wire::{MeshGrant, MeshJoinFinish, MeshJoinResponse, MeshJoinStart};
use ferry_proto::names;
use ferry_proto::secret::Exporter;
use ferry_proto::server_id::ServerId;
use tokio::sync::MutexGuard;

use super::Core;
use crate::Error;
use crate::mesh::device;
use crate::mesh::join_gate::{JoinAttempt, join_delay};

/// A join refused: answered `auth_failed`, and the connection ends.
#[derive(Debug)]
pub(crate) struct JoinFailed;

/// After `mesh_join_response`: waiting for the joiner's confirmation and signature.
pub(crate) struct JoinConfirm<'a> {
    core: &'a Core,
    _turn: MutexGuard<'a, ()>,
    until: u64,
    attempt: JoinAttempt<'a>,
    opener: Opener,
    /// Whether the window was open (a password to run CPace with) when the joiner spoke.
    open: bool,
    start: MeshJoinStart,
    joiner: ServerId,
    exporter: Exporter,
    peer: SocketAddr,
}

impl Core {
    /// Starts a join by the device that sent `start` on the connection whose exporter is
    /// `exporter`; waits at most `max_delay` for the failure delay. Answers the joiner's
    /// share, or fails (a share that is not a point).
    pub(crate) async fn mesh_join<'a>(
        &'a self,
        exporter: &Exporter,
        peer: SocketAddr,
        start: MeshJoinStart,
        max_delay: Duration,
    ) -> Result<(MeshJoinResponse, JoinConfirm<'a>), JoinFailed> {
        let mesh = &self.mesh;
        let turn = mesh.gate.turn().await;
        let until = mesh.window_until();
        tokio::time::sleep(join_delay(mesh.gate.failures(until)).min(max_delay)).await;
        let password = mesh.password(until).filter(|_| mesh.gate.admits(until));
        let attempt = mesh.gate.attempt(until, &self.dir);
        let joiner = ServerId::from_spki(&start.device);
        let mut rng = rand_core_10::UnwrapErr(getrandom_04::SysRng);
        let responded = Opener::respond(
            password.as_ref().map(|p| p.as_bytes()),
            exporter,
            &mesh.device.id(),
            &joiner,
            &start.share,
            &mut rng,
        );
        let open = password.is_some();
        drop(password);
        let Ok((share, confirm, opener)) = responded else {
            log_failure(peer, "invalid PAKE share", &attempt);
            return Err(JoinFailed);
        };
        Ok((
            MeshJoinResponse { share, confirm },
            JoinConfirm {
                core: self,
                _turn: turn,
                until,
                attempt,
                opener,
                open,
                start,
                joiner,
                exporter: exporter.clone(),
                peer,
            },
        ))
    }
}

fn log_failure(peer: SocketAddr, why: &str, attempt: &JoinAttempt<'_>) {
    tracing::warn!(
        "{peer}: mesh join failed ({why}); {} failures in this window",
        attempt.failures()
    );
}

impl JoinConfirm<'_> {
    /// The joiner did not finish (`what` it sent instead).
    pub(crate) fn abandoned(self, what: &str) -> JoinFailed {
        log_failure(self.peer, &format!("unexpected {what}"), &self.attempt);
        JoinFailed
    }

    /// Checks the joiner's confirmation, its device signature over this connection's
    /// exporter, that the window is still the open one, and its name; then adds the device
    /// and returns the mesh's grant for it.
    pub(crate) async fn finish(
        self,
        f: MeshJoinFinish,
    ) -> Result<Result<MeshGrant, JoinFailed>, Error> {
        let mesh = &self.core.mesh;
        let confirmed = self.opener.finish(&f.confirm).is_ok();
        let signed = device::verify(
            &self.start.device,
            &device_proof("join", &self.exporter),
            &f.signature,
        );
        // Closed, ended or replaced while this joiner answered: refused.
        let still_open = mesh.password(self.until).is_some();
        let named = names::validate_display_name(&self.start.name).is_ok();
        let refused = match (self.open, confirmed, signed, still_open, named) {
            (false, ..) => Some("the mesh is not open for joins"),
            (true, false, ..) => Some("wrong password"),
            (true, true, false, ..) => Some("bad device signature"),
            (true, true, true, false, _) => Some("the join window closed meanwhile"),
            (true, true, true, true, false) => Some("invalid peer name"),
            (true, true, true, true, true) => None,
        };
        if let Some(why) = refused {
            log_failure(self.peer, why, &self.attempt);
            return Ok(Err(JoinFailed));
        }
        let member = Member {
            spki: self.start.device.clone(),
            name: self.start.name.clone(),
            addr: SocketAddr::new(self.peer.ip(), self.start.port).to_string(),
        };
        let dir = self.core.dir.clone();
        let grant = crate::pipe::join(tokio::task::spawn_blocking(move || {
            dir.update_mesh(|s| match s {
                Some(s) => {
                    let added = s.add_member(member);
                    (added, added.then(|| s.grant()))
                }
                None => (false, None),
            })
        }))
        .await?;
        let Some(grant) = grant else {
            tracing::warn!(
                "{}: join by a removed device {} refused",
                self.peer,
                self.joiner
            );
            return Ok(Err(JoinFailed));
        };
        self.attempt.succeeded();
        tracing::info!(
            "{}: {} joined the mesh as {}",
            self.peer,
            self.start.name,
            self.joiner
        );
        Ok(Ok(grant))
    }
}
