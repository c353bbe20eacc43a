//! The password method's OPAQUE (RFC 9807) calls, bound to the connection; the login's
//! exchange, both ends, is [`crate::auth::password`], the invite's [`crate::auth::register`](mod@crate::auth::register).
//!
//! Cipher suite: OPRF over ristretto255, 3DH key exchange over ristretto255 with SHA-512
//! (the ristretto255 configuration of RFC 9807), Argon2id (RFC 9106) as the key-stretching
//! function. The Argon2id parameters are stored with each record and sent by the server with
//! its response, so they can be raised for new records while old records keep logging in. The
//! TLS exporter is OPAQUE's `context` input on both sides, so a login cannot be relayed to
//! another connection.
//!
//! Everything here is sans-IO: randomness comes in as an argument.

use argon2::{Algorithm, Argon2, Params, Version};
use opaque_ke::rand::{CryptoRng, RngCore};
use opaque_ke::{
    ClientLogin, ClientLoginFinishParameters, ClientRegistration,
    ClientRegistrationFinishParameters, CredentialFinalization, CredentialRequest,
    CredentialResponse, Identifiers, RegistrationRequest, RegistrationResponse, RegistrationUpload,
    ServerLogin, ServerLoginParameters, ServerRegistration, ServerSetup,
};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// ferry's OPAQUE cipher suite.
pub struct Suite;

impl opaque_ke::CipherSuite for Suite {
    type OprfCs = opaque_ke::Ristretto255;
    type KeyExchange = opaque_ke::TripleDh<opaque_ke::Ristretto255, sha2::Sha512>;
    type Ksf = Argon2<'static>;
}

/// A source of cryptographic randomness, passed in by the caller.
pub trait Rng: RngCore + CryptoRng {}
impl<T: RngCore + CryptoRng> Rng for T {}

/// Argon2id parameters of one record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KsfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Iterations.
    pub t: u32,
    /// Parallelism (lanes).
    pub p: u32,
}

impl KsfParams {
    /// RFC 9106 §4's second recommended option with one lane: 64 MiB, 3 passes.
    pub const DEFAULT: Self = Self {
        m_kib: 64 * 1024,
        t: 3,
        p: 1,
    };

    /// Most memory a client agrees to spend: a malicious server must not exhaust it.
    pub const MAX_M_KIB: u32 = 1024 * 1024;
    /// Most passes a client agrees to run.
    pub const MAX_T: u32 = 16;
    /// Most lanes.
    pub const MAX_P: u32 = 8;

    /// The Argon2id instance, if the parameters are within bounds.
    pub fn argon2(&self) -> Option<Argon2<'static>> {
        if self.m_kib > Self::MAX_M_KIB || self.t > Self::MAX_T || self.p > Self::MAX_P {
            return None;
        }
        let params = Params::new(self.m_kib, self.t, self.p, None).ok()?;
        Some(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

/// The server's OPAQUE keys (its long-term key pair and OPRF seed).
pub struct OpaqueKeys(ServerSetup<Suite>);

impl core::fmt::Debug for OpaqueKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("OpaqueKeys(..)")
    }
}

impl OpaqueKeys {
    /// Fresh keys.
    pub fn generate(rng: &mut impl Rng) -> Self {
        Self(ServerSetup::new(rng))
    }

    /// The serialised keys, for the server's key file (mode 0600).
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.0.serialize().to_vec())
    }

    /// Reads serialised keys.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        ServerSetup::deserialize(bytes).ok().map(Self)
    }
}

/// A user's stored record: what the server keeps instead of a password.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Serialised OPAQUE registration record (RFC 9807 §5.1.3 `RegistrationRecord`).
    pub record: Vec<u8>,
    /// The Argon2id parameters the client used for it.
    pub ksf: KsfParams,
}

impl core::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("UserRecord")
            .field("ksf", &self.ksf)
            .finish_non_exhaustive()
    }
}

/// Why an OPAQUE step failed. Deliberately without detail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("password authentication failed")]
pub struct PasswordError;

fn login_params(exporter: &[u8]) -> ServerLoginParameters<'_, 'static> {
    ServerLoginParameters {
        context: Some(exporter),
        identifiers: Identifiers::default(),
    }
}

// ---- Server side -----------------------------------------------------------------------

/// The server's state between the login response and the client's finalization.
pub struct ServerLoginState(ServerLogin<Suite>);

impl core::fmt::Debug for ServerLoginState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("ServerLoginState(..)")
    }
}

/// Answers a login request. With no record (unknown user, or a locked account) the answer is
/// computed from a dummy record, indistinguishable to the client, and the login then fails.
pub fn server_login_start(
    rng: &mut impl Rng,
    keys: &OpaqueKeys,
    user: &str,
    record: Option<&UserRecord>,
    request: &[u8],
    exporter: &[u8],
) -> Result<(Vec<u8>, ServerLoginState), PasswordError> {
    let request = CredentialRequest::<Suite>::deserialize(request).map_err(|_| PasswordError)?;
    let file = match record {
        Some(r) => {
            Some(ServerRegistration::<Suite>::deserialize(&r.record).map_err(|_| PasswordError)?)
        }
        None => None,
    };
    let start = ServerLogin::start(
        rng,
        &keys.0,
        file,
        request,
        user.as_bytes(),
        login_params(exporter),
    )
    .map_err(|_| PasswordError)?;
    Ok((
        start.message.serialize().to_vec(),
        ServerLoginState(start.state),
    ))
}

/// Checks the client's finalization: true only if the client knew the password and saw the
/// same TLS connection.
pub fn server_login_finish(state: ServerLoginState, finalization: &[u8], exporter: &[u8]) -> bool {
    server_login_finish_key(state, finalization, exporter).is_some()
}

/// [`server_login_finish`], returning on success the session key of OPAQUE's AKE (RFC 9807
/// §6.4, 64 bytes): a secret only the two ends of this login can compute.
pub fn server_login_finish_key(
    state: ServerLoginState,
    finalization: &[u8],
    exporter: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    let msg = CredentialFinalization::<Suite>::deserialize(finalization).ok()?;
    let done = state.0.finish(msg, login_params(exporter)).ok()?;
    Some(Zeroizing::new(done.session_key.to_vec()))
}

/// Answers a registration request for `user`.
pub fn server_register_start(
    keys: &OpaqueKeys,
    user: &str,
    request: &[u8],
) -> Result<Vec<u8>, PasswordError> {
    let request = RegistrationRequest::<Suite>::deserialize(request).map_err(|_| PasswordError)?;
    let start = ServerRegistration::<Suite>::start(&keys.0, request, user.as_bytes())
        .map_err(|_| PasswordError)?;
    Ok(start.message.serialize().to_vec())
}

/// Turns the client's upload into the record to store.
pub fn server_register_finish(upload: &[u8], ksf: KsfParams) -> Result<UserRecord, PasswordError> {
    let upload = RegistrationUpload::<Suite>::deserialize(upload).map_err(|_| PasswordError)?;
    Ok(UserRecord {
        record: ServerRegistration::finish(upload).serialize().to_vec(),
        ksf,
    })
}

// ---- Client side -----------------------------------------------------------------------

/// The client's state during a login.
pub struct ClientLoginState {
    state: ClientLogin<Suite>,
    password: Zeroizing<Vec<u8>>,
}

impl core::fmt::Debug for ClientLoginState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("ClientLoginState(..)")
    }
}

/// Starts a login: the request to send.
pub fn client_login_start(
    rng: &mut impl Rng,
    password: &[u8],
) -> Result<(Vec<u8>, ClientLoginState), PasswordError> {
    let start = ClientLogin::<Suite>::start(rng, password).map_err(|_| PasswordError)?;
    Ok((
        start.message.serialize().to_vec(),
        ClientLoginState {
            state: start.state,
            password: Zeroizing::new(password.to_vec()),
        },
    ))
}

/// Finishes a login from the server's response: the finalization to send, if the password
/// was right and the server is the one holding the record.
pub fn client_login_finish(
    rng: &mut impl Rng,
    state: ClientLoginState,
    response: &[u8],
    ksf: KsfParams,
    exporter: &[u8],
) -> Result<Vec<u8>, PasswordError> {
    client_login_finish_key(rng, state, response, ksf, exporter).map(|(message, _)| message)
}

/// [`client_login_finish`], also returning the session key of OPAQUE's AKE (the one
/// [`server_login_finish_key`] returns on the server).
pub fn client_login_finish_key(
    rng: &mut impl Rng,
    state: ClientLoginState,
    response: &[u8],
    ksf: KsfParams,
    exporter: &[u8],
) -> Result<(Vec<u8>, Zeroizing<Vec<u8>>), PasswordError> {
    let argon2 = ksf.argon2().ok_or(PasswordError)?;
    let response = CredentialResponse::<Suite>::deserialize(response).map_err(|_| PasswordError)?;
    let params =
        ClientLoginFinishParameters::new(Some(exporter), Identifiers::default(), Some(&argon2));
    let done = state
        .state
        .finish(rng, &state.password, response, params)
        .map_err(|_| PasswordError)?;
    Ok((
        done.message.serialize().to_vec(),
        Zeroizing::new(done.session_key.to_vec()),
    ))
}

/// The client's state during a registration.
pub struct ClientRegisterState {
    state: ClientRegistration<Suite>,
    password: Zeroizing<Vec<u8>>,
}

impl core::fmt::Debug for ClientRegisterState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("ClientRegisterState(..)")
    }
}

/// Starts a registration: the request to send.
pub fn client_register_start(
    rng: &mut impl Rng,
    password: &[u8],
) -> Result<(Vec<u8>, ClientRegisterState), PasswordError> {
    let start = ClientRegistration::<Suite>::start(rng, password).map_err(|_| PasswordError)?;
    Ok((
        start.message.serialize().to_vec(),
        ClientRegisterState {
            state: start.state,
            password: Zeroizing::new(password.to_vec()),
        },
    ))
}

/// Finishes a registration: the upload to send.
pub fn client_register_finish(
    rng: &mut impl Rng,
    state: ClientRegisterState,
    response: &[u8],
    ksf: KsfParams,
) -> Result<Vec<u8>, PasswordError> {
    let argon2 = ksf.argon2().ok_or(PasswordError)?;
    let response =
        RegistrationResponse::<Suite>::deserialize(response).map_err(|_| PasswordError)?;
    let params = ClientRegistrationFinishParameters::new(Identifiers::default(), Some(&argon2));
    let done = state
        .state
        .finish(rng, &state.password, response, params)
        .map_err(|_| PasswordError)?;
    Ok(done.message.serialize().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    /// Small parameters: these tests exercise the protocol, not the stretching.
    const FAST: KsfParams = KsfParams {
        m_kib: 256,
        t: 1,
        p: 1,
    };

    fn register(keys: &OpaqueKeys, user: &str, pw: &[u8], ksf: KsfParams) -> UserRecord {
        let (req, st) = client_register_start(&mut OsRng, pw).unwrap();
        let resp = server_register_start(keys, user, &req).unwrap();
        let upload = client_register_finish(&mut OsRng, st, &resp, ksf).unwrap();
        server_register_finish(&upload, ksf).unwrap()
    }

    fn login(
        keys: &OpaqueKeys,
        user: &str,
        record: Option<&UserRecord>,
        pw: &[u8],
        client_exporter: &[u8],
        server_exporter: &[u8],
    ) -> (bool, bool) {
        let (req, cst) = client_login_start(&mut OsRng, pw).unwrap();
        let (resp, sst) =
            server_login_start(&mut OsRng, keys, user, record, &req, server_exporter).unwrap();
        let ksf = record.map_or(FAST, |r| r.ksf);
        match client_login_finish(&mut OsRng, cst, &resp, ksf, client_exporter) {
            Ok(fin) => (true, server_login_finish(sst, &fin, server_exporter)),
            Err(_) => (false, false),
        }
    }

    #[test]
    fn register_and_login() {
        let keys = OpaqueKeys::generate(&mut OsRng);
        let rec = register(&keys, "alice", b"correct horse", FAST);
        assert_eq!(
            login(&keys, "alice", Some(&rec), b"correct horse", b"e1", b"e1"),
            (true, true)
        );
    }

    #[test]
    fn wrong_password_unknown_user_and_relay_fail() {
        let keys = OpaqueKeys::generate(&mut OsRng);
        let rec = register(&keys, "alice", b"correct horse", FAST);
        // Wrong password: the client finds out; nothing is sent that the server accepts.
        assert_eq!(
            login(&keys, "alice", Some(&rec), b"wrong", b"e", b"e"),
            (false, false)
        );
        // Unknown user: the server answers from a dummy record; the client fails alike.
        assert_eq!(
            login(&keys, "bob", None, b"anything", b"e", b"e"),
            (false, false)
        );
        // Relay: the two ends see different exporters.
        assert_eq!(
            login(&keys, "alice", Some(&rec), b"correct horse", b"e1", b"e2"),
            (false, false)
        );
        // A record under another user's name does not open.
        assert_eq!(
            login(&keys, "mallory", Some(&rec), b"correct horse", b"e", b"e"),
            (false, false)
        );
    }

    #[test]
    fn old_parameters_still_log_in() {
        let keys = OpaqueKeys::generate(&mut OsRng);
        let old = register(&keys, "a", b"pw", FAST);
        let newer = register(
            &keys,
            "b",
            b"pw",
            KsfParams {
                m_kib: 1024,
                t: 2,
                p: 1,
            },
        );
        assert_eq!(
            login(&keys, "a", Some(&old), b"pw", b"e", b"e"),
            (true, true)
        );
        assert_eq!(
            login(&keys, "b", Some(&newer), b"pw", b"e", b"e"),
            (true, true)
        );
        // Wrong parameters give a different key: the stored ones matter.
        let wrong = UserRecord {
            ksf: KsfParams { m_kib: 512, ..FAST },
            ..old
        };
        assert_eq!(
            login(&keys, "a", Some(&wrong), b"pw", b"e", b"e"),
            (false, false)
        );
    }

    #[test]
    fn keys_round_trip_and_bounds() {
        let keys = OpaqueKeys::generate(&mut OsRng);
        let again = OpaqueKeys::from_bytes(&keys.to_bytes()).unwrap();
        let rec = register(&keys, "a", b"pw", FAST);
        assert_eq!(
            login(&again, "a", Some(&rec), b"pw", b"e", b"e"),
            (true, true)
        );
        assert!(OpaqueKeys::from_bytes(&[1, 2, 3]).is_none());
        assert!(
            KsfParams {
                m_kib: KsfParams::MAX_M_KIB + 1,
                t: 1,
                p: 1
            }
            .argon2()
            .is_none()
        );
        assert!(
            KsfParams {
                m_kib: 1,
                t: 1,
                p: 1
            }
            .argon2()
            .is_none()
        );
        assert!(KsfParams::DEFAULT.argon2().is_some());
        assert_eq!(format!("{keys:?}"), "OpaqueKeys(..)");
    }

    #[test]
    fn garbage_messages_are_errors() {
        let keys = OpaqueKeys::generate(&mut OsRng);
        assert!(server_login_start(&mut OsRng, &keys, "a", None, &[0; 10], b"e").is_err());
        assert!(server_register_start(&keys, "a", &[0xff; 32]).is_err());
        assert!(server_register_finish(&[1; 5], FAST).is_err());
    }
}
