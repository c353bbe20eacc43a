//! The server's TLS identity: a self-signed Ed25519 certificate (RFC 8410) and its key.
//!
//! Stored as PEM: `identity.key` (PKCS#8, mode 0600) and `identity.crt`.

use std::path::Path;

use ferry_proto::server_id::ServerId;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::{Error, fsutil};

/// A server's certificate and private key.
pub struct Identity {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    id: ServerId,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A fresh Ed25519 key and a self-signed certificate for it.
    pub fn generate() -> Result<Self, Error> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .map_err(|e| Error::Internal(format!("key generation: {e}")))?;
        let mut params = rcgen::CertificateParams::new(vec!["ferry.invalid".to_owned()])
            .map_err(|e| Error::Internal(format!("certificate: {e}")))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ferry server");
        let cert = params
            .self_signed(&key)
            .map_err(|e| Error::Internal(format!("certificate: {e}")))?;
        // Computed from the certificate exactly as a client's verifier computes it.
        let id = crate::tls::server_id_of(cert.der())
            .map_err(|e| Error::Internal(format!("certificate: {e}")))?;
        Ok(Self {
            cert: cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
            id,
        })
    }

    /// Loads `identity.crt` and `identity.key` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, Error> {
        let cert_path = dir.join("identity.crt");
        let key_path = dir.join("identity.key");
        let cert_pem = fsutil::read_small(&cert_path)
            .map_err(|e| Error::Config(format!("{}: {e}", cert_path.display())))?;
        let key_pem = fsutil::read_secret(&key_path)
            .map_err(|e| Error::Config(format!("{}: {e}", key_path.display())))?;
        let cert = CertificateDer::from_pem_slice(&cert_pem).map_err(|_| {
            Error::Config(format!("{}: not a PEM certificate", cert_path.display()))
        })?;
        let key = PrivatePkcs8KeyDer::from_pem_slice(&key_pem)
            .map_err(|_| Error::Config(format!("{}: not a PEM PKCS#8 key", key_path.display())))?;
        let id = crate::tls::server_id_of(&cert).map_err(|_| {
            Error::Config(format!("{}: unreadable certificate", cert_path.display()))
        })?;
        Ok(Self { cert, key, id })
    }

    /// Writes `identity.crt` and `identity.key` (mode 0600) into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), Error> {
        let cert_pem = pem_encode("CERTIFICATE", self.cert.as_ref());
        let key_pem =
            zeroize::Zeroizing::new(pem_encode("PRIVATE KEY", self.key.secret_pkcs8_der()));
        fsutil::write_atomic(&dir.join("identity.crt"), cert_pem.as_bytes(), 0o644)?;
        fsutil::write_secret(&dir.join("identity.key"), key_pem.as_bytes())?;
        Ok(())
    }

    /// The server ID clients pin.
    pub fn server_id(&self) -> ServerId {
        self.id
    }

    /// The certificate.
    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The DER SubjectPublicKeyInfo of the key (its SHA-256 is the server ID).
    pub fn spki(&self) -> Result<Vec<u8>, Error> {
        let ee = webpki::EndEntityCert::try_from(&self.cert)
            .map_err(|_| Error::Config("unreadable identity certificate".into()))?;
        Ok(ee.subject_public_key_info().as_ref().to_vec())
    }

    /// The private key, for signing device proofs.
    pub(crate) fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }

    /// The TLS server configuration for this identity.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, Error> {
        crate::tls::server_config(
            self.cert.clone(),
            PrivateKeyDer::Pkcs8(self.key.clone_key()),
        )
    }
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = data_encoding::BASE64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        // Base64 output is ASCII.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_save_load() {
        let dir = tempfile::tempdir().unwrap();
        let id = Identity::generate().unwrap();
        id.save(dir.path()).unwrap();
        let loaded = Identity::load(dir.path()).unwrap();
        assert_eq!(loaded.server_id(), id.server_id());
        // The ID computed from the key at generation equals the one parsed from the cert.
        assert_eq!(crate::tls::server_id_of(id.cert()).unwrap(), id.server_id());
        assert!(loaded.server_config().is_ok());
        assert!(!format!("{id:?}").contains("PRIVATE"));
    }
}
