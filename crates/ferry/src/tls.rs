//! TLS 1.3 configuration: one provider, pinned server keys, the exporter.
//!
//! * Only TLS 1.3 (RFC 8446), with the aws-lc-rs provider.
//! * Key exchange: X25519MLKEM768 (hybrid post-quantum) preferred, X25519 (RFC 7748) as
//!   fallback; nothing else is offered or accepted.
//! * The server authenticates with a self-signed Ed25519 certificate (RFC 8410); the client
//!   accepts exactly the key whose [`ServerId`] it pins, and still checks the handshake
//!   signature with it (RFC 8446 §4.4.3), so only the holder of the private key can pass.
//! * ALPN `ferry/1`. No session tickets: every connection is a full handshake with fresh
//!   ephemeral keys.

use std::sync::Arc;

use ferry_proto::secret::Exporter;
use ferry_proto::server_id::ServerId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, aws_lc_rs};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::Error;

/// The crypto provider ferry uses everywhere.
pub fn provider() -> Arc<CryptoProvider> {
    let mut p = aws_lc_rs::default_provider();
    p.kx_groups = vec![
        aws_lc_rs::kx_group::X25519MLKEM768,
        aws_lc_rs::kx_group::X25519,
    ];
    Arc::new(p)
}

/// Fills `buf` from the provider's secure random generator (aws-lc-rs).
pub fn random_bytes(buf: &mut [u8]) -> Result<(), Error> {
    aws_lc_rs::default_provider()
        .secure_random
        .fill(buf)
        .map_err(|_| Error::Internal("the system random generator failed".into()))
}

/// The server ID of a DER certificate: SHA-256 of its SubjectPublicKeyInfo.
pub fn server_id_of(cert: &CertificateDer<'_>) -> Result<ServerId, rustls::Error> {
    let ee = webpki::EndEntityCert::try_from(cert)
        .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
    Ok(ServerId::from_spki(ee.subject_public_key_info().as_ref()))
}

/// Server TLS configuration for one identity.
pub fn server_config(
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
) -> Result<rustls::ServerConfig, Error> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(Error::Tls)?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(Error::Tls)?;
    cfg.alpn_protocols = vec![ferry_proto::ALPN.to_vec()];
    cfg.send_tls13_tickets = 0;
    Ok(cfg)
}

/// Client TLS configuration that accepts only the server whose key has ID `pin`.
pub fn client_config(pin: ServerId) -> Result<rustls::ClientConfig, Error> {
    let provider = provider();
    let verifier = PinnedServer {
        pin,
        algorithms: provider.signature_verification_algorithms,
    };
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(Error::Tls)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![ferry_proto::ALPN.to_vec()];
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(cfg)
}

/// Whether a TLS connection failed because the server's key is not the pinned one.
pub fn is_pin_mismatch(e: &std::io::Error) -> bool {
    let Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other))) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return false;
    };
    other.0.downcast_ref::<PinMismatch>().is_some()
}

/// Why a TLS handshake error means the peer is no ferry server, if it does: it answered with
/// something that is not TLS (an HTTP server, say), or it is a TLS server that does not
/// speak ALPN `ferry/1`.
pub fn not_ferry(e: &std::io::Error) -> Option<&'static str> {
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())?;
    match tls {
        rustls::Error::InvalidMessage(_) => Some("it does not answer in TLS"),
        rustls::Error::AlertReceived(rustls::AlertDescription::NoApplicationProtocol)
        | rustls::Error::NoApplicationProtocol => Some("it does not speak the ferry/1 protocol"),
        _ => None,
    }
}

/// Accepts exactly one server key, and checks that the server signed the handshake with it.
#[derive(Debug)]
struct PinnedServer {
    pin: ServerId,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let id = server_id_of(end_entity)?;
        if id.ct_eq(&self.pin) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(PinMismatch))),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[derive(Debug)]
struct PinMismatch;

impl std::fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("server key does not match the pinned server ID")
    }
}

impl std::error::Error for PinMismatch {}

/// This connection's channel-binding value: the RFC 8446 §7.5 exporter with label
/// `EXPORTER-ferry-auth-v1`, no context, 32 bytes. Equal on both ends of one connection.
pub fn export<C>(conn: &rustls::ConnectionCommon<C>) -> Result<Exporter, Error> {
    let mut out = zeroize::Zeroizing::new([0u8; 32]);
    conn.export_keying_material(out.as_mut(), ferry_proto::EXPORTER_LABEL, None)
        .map_err(Error::Tls)?;
    Ok(Exporter::from_bytes(*out))
}
