//! TLS towards VNC servers: the rustls client configuration [`crate::vencrypt`] runs once a
//! server has agreed to VeNCrypt X509VNC (contract section 4).
//!
//! Upstream does not verify the VNC server's certificate, and neither does this by default
//! (see [`danger`]). With `SSL_TARGET_CA` the certificate must chain to that CA and, unless
//! `SSL_TARGET_VERIFY_NAME=False`, name the host the ticket points at.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

#[derive(Debug, thiserror::Error)]
pub enum TargetTlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: unparseable PEM: {source}")]
    Pem {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: PathBuf },
    #[error("{path}: certificate {index} is not a usable CA certificate: {source}")]
    BadCa {
        path: PathBuf,
        index: usize,
        source: rustls::Error,
    },
    #[error("cannot build the TLS client configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// How a VNC server's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// Not at all, as upstream: an attacker on the path to the host can read the console.
    Off,
    /// It must chain to the CA in this file; any name is accepted.
    Chain { ca: PathBuf },
    /// It must chain to the CA in this file and name the ticket's host.
    ChainAndName { ca: PathBuf },
}

impl fmt::Display for Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verification::Off => f.write_str("off"),
            Verification::Chain { ca } => write!(f, "chain to {} (any name)", ca.display()),
            Verification::ChainAndName { ca } => {
                write!(f, "chain to {} and name the host", ca.display())
            }
        }
    }
}

/// The client side of TLS sessions to VNC servers, built once and shared by sessions.
#[derive(Clone)]
pub struct TargetTls {
    connector: TlsConnector,
    verification: Verification,
}

impl fmt::Debug for TargetTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TargetTls")
            .field("verification", &self.verification)
            .finish_non_exhaustive()
    }
}

impl TargetTls {
    /// Builds the configuration: no verification without `ca`, else the CA file's
    /// certificates are the only roots.
    ///
    /// # Errors
    /// The CA file cannot be read, holds no certificate, or holds one rustls cannot use.
    pub fn load(ca: Option<&Path>, verify_name: bool) -> Result<TargetTls, TargetTlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
        let (config, verification) = match ca {
            None => (
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(danger::NoVerification::new(
                        &provider,
                    )))
                    .with_no_client_auth(),
                Verification::Off,
            ),
            Some(path) => {
                let roots = Arc::new(load_roots(path)?);
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| rustls::Error::General(e.to_string()))?;
                if verify_name {
                    (
                        builder.with_webpki_verifier(webpki).with_no_client_auth(),
                        Verification::ChainAndName { ca: path.into() },
                    )
                } else {
                    (
                        builder
                            .dangerous()
                            .with_custom_certificate_verifier(Arc::new(danger::AnyName::new(
                                webpki,
                            )))
                            .with_no_client_auth(),
                        Verification::Chain { ca: path.into() },
                    )
                }
            }
        };
        Ok(TargetTls {
            connector: TlsConnector::from(Arc::new(config)),
            verification,
        })
    }

    pub fn connector(&self) -> &TlsConnector {
        &self.connector
    }

    pub fn verification(&self) -> &Verification {
        &self.verification
    }
}

/// The name a target's certificate is checked against: its IP address or DNS name.
///
/// # Errors
/// `host` is neither (a ticket's host is validated before, so this is a safety net).
pub fn server_name(
    host: &str,
) -> Result<ServerName<'static>, rustls::pki_types::InvalidDnsNameError> {
    ServerName::try_from(host.to_owned())
}

fn load_roots(path: &Path) -> Result<RootCertStore, TargetTlsError> {
    let pem = std::fs::read(path).map_err(|source| TargetTlsError::Read {
        path: path.into(),
        source,
    })?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<CertificateDer<'static>>, _>>()
        .map_err(|source| TargetTlsError::Pem {
            path: path.into(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TargetTlsError::NoCertificate { path: path.into() });
    }
    let mut roots = RootCertStore::empty();
    for (index, cert) in certs.into_iter().enumerate() {
        roots.add(cert).map_err(|source| TargetTlsError::BadCa {
            path: path.into(),
            index: index + 1,
            source,
        })?;
    }
    Ok(roots)
}

/// Certificate verifiers weaker than rustls's default, kept apart as rustls keeps its own:
/// each use is a decision about what an attacker on the path to a host may do.
pub mod danger {
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::client::WebPkiServerVerifier;
    use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{CertificateError, DigitallySignedStruct, Error, SignatureScheme};

    /// Accepts any certificate, as upstream does with VNC servers: the session is encrypted
    /// but not authenticated. The handshake signature is still checked, so the server must
    /// hold the key of the certificate it shows.
    #[derive(Debug)]
    pub struct NoVerification {
        algorithms: WebPkiSupportedAlgorithms,
    }

    impl NoVerification {
        pub fn new(provider: &CryptoProvider) -> NoVerification {
            NoVerification {
                algorithms: provider.signature_verification_algorithms,
            }
        }
    }

    impl ServerCertVerifier for NoVerification {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.algorithms.supported_schemes()
        }
    }

    /// Full chain verification, but any name: for deployments whose tickets carry an
    /// address the host certificates do not list (a display network, say). Any host the CA
    /// certified can then pose as any other.
    #[derive(Debug)]
    pub struct AnyName {
        inner: Arc<WebPkiServerVerifier>,
    }

    impl AnyName {
        pub fn new(inner: Arc<WebPkiServerVerifier>) -> AnyName {
            AnyName { inner }
        }
    }

    impl ServerCertVerifier for AnyName {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp_response: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            // webpki checks the chain (and revocation) before the name, so a name error
            // means the chain is good.
            match self.inner.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ) {
                Err(Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) => Ok(ServerCertVerified::assertion()),
                other => other,
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.inner.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.inner.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.inner.supported_verify_schemes()
        }
    }
}
