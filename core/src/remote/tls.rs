//! TLS for `https://` plugins (rustls with the ring provider), configured
//! the way go-connections' `tlsconfig.Options` configures dockerd's client.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_plugin_api::{DriverError, DriverResult};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Where the system's trusted roots are read from when no CA file is given.
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// TLS settings of a plugin (`TLSConfig` of a `.json` spec file).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsConfig {
    /// Accept any server certificate (what dockerd does for `.spec` files,
    /// and for `.json` files whose `TLSConfig` names no CA file).
    pub insecure_skip_verify: bool,
    /// PEM file of the CAs to trust instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// PEM file of a client certificate (used with `key_file`).
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key.
    pub key_file: Option<PathBuf>,
}

impl TlsConfig {
    /// Settings that accept any server certificate.
    pub fn insecure() -> Self {
        TlsConfig { insecure_skip_verify: true, ..Default::default() }
    }

    /// Settings that trust the CAs in `ca_file`.
    pub fn with_ca(ca_file: impl Into<PathBuf>) -> Self {
        TlsConfig { ca_file: Some(ca_file.into()), ..Default::default() }
    }

    /// These settings plus a client certificate.
    pub fn with_client_cert(mut self, cert_file: impl Into<PathBuf>, key_file: impl Into<PathBuf>) -> Self {
        self.cert_file = Some(cert_file.into());
        self.key_file = Some(key_file.into());
        self
    }
}

/// The rustls client configuration for `tls` (`None`: verify against the
/// system roots). Reads the PEM files named; errors name them.
pub(crate) fn client_config(tls: Option<&TlsConfig>) -> DriverResult<Arc<ClientConfig>> {
    let default = TlsConfig::default();
    let tls = tls.unwrap_or(&default);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| DriverError::internal(format!("tls setup: {e}")))?;
    let builder = if tls.insecure_skip_verify {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
    } else {
        let mut roots = RootCertStore::empty();
        match &tls.ca_file {
            Some(ca) => {
                let certs = read_certs(ca)?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(DriverError::invalid_argument(format!(
                        "tls CA file {}: holds no usable certificate",
                        ca.display()
                    )));
                }
            }
            // No system bundle: every certificate is refused, with an error
            // naming the issuer, at connection time.
            None => {
                if let Ok(certs) = read_certs(Path::new(SYSTEM_ROOTS)) {
                    roots.add_parsable_certificates(certs);
                }
            }
        }
        builder.with_root_certificates(roots)
    };
    let config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let certs = read_certs(cert)?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| DriverError::invalid_argument(format!("tls key file {}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| DriverError::invalid_argument(format!("tls client certificate: {e}")))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(DriverError::invalid_argument(
                "tls: a client certificate needs both CertFile and KeyFile",
            ))
        }
    };
    Ok(Arc::new(config))
}

/// The name the server's certificate must carry: a DNS name or an IP.
pub(crate) fn server_name(host: &str) -> DriverResult<ServerName<'static>> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|e| DriverError::invalid_argument(format!("tls: {host:?} is not a valid server name: {e}")))
}

fn read_certs(path: &Path) -> DriverResult<Vec<CertificateDer<'static>>> {
    let bad = |e: &dyn std::fmt::Display| {
        DriverError::invalid_argument(format!("tls certificate file {}: {e}", path.display()))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(&e))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(&e))?;
    if certs.is_empty() {
        return Err(bad(&"holds no PEM certificate"));
    }
    Ok(certs)
}

/// Accepts any certificate but still checks the handshake signatures
/// (Go's `InsecureSkipVerify`).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_build_and_bad_files_are_named() {
        assert!(client_config(None).is_ok());
        assert!(client_config(Some(&TlsConfig::insecure())).is_ok());
        let e = client_config(Some(&TlsConfig::with_ca("/nonexistent/ca.pem"))).unwrap_err();
        assert!(e.message.contains("/nonexistent/ca.pem"), "{}", e.message);
        let half = TlsConfig { cert_file: Some("/x.pem".into()), ..TlsConfig::insecure() };
        assert!(client_config(Some(&half)).unwrap_err().message.contains("both"));
        assert!(server_name("127.0.0.1").is_ok());
        assert!(server_name("[::1]").is_ok());
        assert!(server_name("plugins.example").is_ok());
    }
}
