//! TLS for the browser side: a rustls `ServerConfig` from upstream's `SSL_*` settings, and a
//! look at certificates (expiry, demo marker) for the start-up log.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::ring::cipher_suite as suite;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, SupportedCipherSuite};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::config::TlsVersion;

/// The organisation name on the certificates that `scripts/gen-certs.sh` makes for demos and
/// tests; a proxy running on them says so loudly.
pub const DEMO_MARKER: &str = "consolegate DEMO - INSECURE";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no PEM private key found (set SSL_KEY, or put the key in SSL_CERTIFICATE)")]
    NoKey { path: PathBuf },
    #[error("{path}: unparseable PEM: {source}")]
    Pem {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate and key are unusable together: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A built acceptor configuration plus what the operator should hear about it.
pub struct LoadedTls {
    pub config: Arc<ServerConfig>,
    pub certificate: CertSummary,
    pub warnings: Vec<String>,
}

/// What the logs and checks need to know of a certificate.
#[derive(Debug, Clone)]
pub struct CertSummary {
    pub subject: String,
    pub not_after: chrono::DateTime<chrono::Utc>,
    pub is_demo: bool,
}

/// Builds the server configuration.
///
/// # Errors
/// Unreadable files, no certificate or key in them, or a key that does not match.
pub fn load_server_config(
    certificate: &Path,
    key: Option<&Path>,
    min_version: TlsVersion,
    ciphers: &str,
) -> Result<LoadedTls, TlsError> {
    let cert_pem = read(certificate)?;
    let chain = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<CertificateDer<'static>>, _>>()
        .map_err(|source| TlsError::Pem {
            path: certificate.into(),
            source,
        })?;
    let leaf = chain.first().ok_or_else(|| TlsError::NoCertificate {
        path: certificate.into(),
    })?;
    let summary = summarize(leaf.as_ref()).ok_or_else(|| TlsError::NoCertificate {
        path: certificate.into(),
    })?;

    let key_path = key.unwrap_or(certificate);
    let key_pem = if key.is_some() {
        read(key_path)?
    } else {
        cert_pem.clone()
    };
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|source| TlsError::Pem {
            path: key_path.into(),
            source,
        })?
        .ok_or_else(|| TlsError::NoKey {
            path: key_path.into(),
        })?;

    let (tls12_suites, mut warnings) = select_tls12_suites(ciphers);
    let mut suites = vec![
        suite::TLS13_AES_256_GCM_SHA384,
        suite::TLS13_AES_128_GCM_SHA256,
        suite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    let versions: &[&rustls::SupportedProtocolVersion] = match min_version {
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
        TlsVersion::Tls12 => {
            if tls12_suites.is_empty() {
                warnings.push(format!(
                    "SSL_CIPHERS={ciphers:?} leaves no TLS 1.2 cipher suite; only TLS 1.3 clients can connect"
                ));
            }
            suites.extend(tls12_suites);
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        }
    };
    let provider = CryptoProvider {
        cipher_suites: suites,
        ..rustls::crypto::ring::default_provider()
    };
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)?
        .with_no_client_auth()
        .with_cert_resolver(crate::tls_key::certified_key(chain, &key)?);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(LoadedTls {
        config: Arc::new(config),
        certificate: summary,
        warnings,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.into(),
        source,
    })
}

/// Subject, expiry and demo marker of a DER certificate; `None` if it does not parse.
pub fn summarize(der: &[u8]) -> Option<CertSummary> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let is_demo = cert
        .subject()
        .iter_organization()
        .any(|o| o.as_str().map(|s| s.contains(DEMO_MARKER)).unwrap_or(false));
    let not_after = chrono::DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0)?;
    Some(CertSummary {
        subject: cert.subject().to_string(),
        not_after,
        is_demo,
    })
}

/// Summaries of every certificate in a PEM file (the ticket-verification file may hold several).
pub fn summarize_pem(pem: &[u8]) -> Vec<CertSummary> {
    rustls_pemfile::certs(&mut &pem[..])
        .filter_map(Result::ok)
        .filter_map(|der| summarize(der.as_ref()))
        .collect()
}

/// Words of an OpenSSL cipher string that select every TLS 1.2 suite rustls offers.
const COMMON_WORDS: &[&str] = &[
    "HIGH",
    "ALL",
    "DEFAULT",
    "ECDHE",
    "EECDH",
    "kECDHE",
    "kEECDH",
    "AEAD",
    "TLSv1.2",
    "AES",
    "COMPLEMENTOFALL",
];

/// The TLS 1.2 suites rustls offers: OpenSSL name and the cipher-string words that select it.
fn tls12_suites() -> [(SupportedCipherSuite, &'static str, &'static [&'static str]); 6] {
    [
        (
            suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            &["aECDSA", "ECDSA", "AES256", "AESGCM", "SHA384"],
        ),
        (
            suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            &["aECDSA", "ECDSA", "AES128", "AESGCM", "SHA256"],
        ),
        (
            suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            "ECDHE-ECDSA-CHACHA20-POLY1305",
            &["aECDSA", "ECDSA", "CHACHA20", "SHA256"],
        ),
        (
            suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            "ECDHE-RSA-AES256-GCM-SHA384",
            &["aRSA", "RSA", "AES256", "AESGCM", "SHA384"],
        ),
        (
            suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            "ECDHE-RSA-AES128-GCM-SHA256",
            &["aRSA", "RSA", "AES128", "AESGCM", "SHA256"],
        ),
        (
            suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            "ECDHE-RSA-CHACHA20-POLY1305",
            &["aRSA", "RSA", "CHACHA20", "SHA256"],
        ),
    ]
}

/// Maps an OpenSSL cipher string onto the TLS 1.2 suites rustls can offer, with a warning for
/// each word that would select something rustls does not have. As in OpenSSL, the string does
/// not govern TLS 1.3 suites (all of which are strong).
fn select_tls12_suites(ciphers: &str) -> (Vec<SupportedCipherSuite>, Vec<String>) {
    let table = tls12_suites();
    let matches = |word: &str, index: usize| {
        let (_, name, words) = table[index];
        word.split('+')
            .all(|part| part == name || COMMON_WORDS.contains(&part) || words.contains(&part))
    };
    let mut chosen: Vec<usize> = Vec::new();
    let mut banned: Vec<usize> = Vec::new();
    let mut warnings = Vec::new();
    for word in ciphers.split([':', ',', ' ']).filter(|w| !w.is_empty()) {
        let hits = |w: &str| {
            (0..table.len())
                .filter(|&i| matches(w, i))
                .collect::<Vec<_>>()
        };
        if let Some(word) = word.strip_prefix('!') {
            banned.extend(hits(word));
            chosen.retain(|i| !banned.contains(i));
        } else if let Some(word) = word.strip_prefix('-') {
            let gone = hits(word);
            chosen.retain(|i| !gone.contains(i));
        } else if word.starts_with('@') || word.starts_with('+') {
            // Ordering and security-level directives: rustls orders suites itself.
        } else {
            let found = hits(word);
            if found.is_empty() {
                warnings.push(format!(
                    "SSL_CIPHERS: rustls offers no cipher suite matching {word:?}; ignored"
                ));
            }
            for i in found {
                if !chosen.contains(&i) && !banned.contains(&i) {
                    chosen.push(i);
                }
            }
        }
    }
    (chosen.into_iter().map(|i| table[i].0).collect(), warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(ciphers: &str) -> (Vec<String>, usize) {
        let (suites, warnings) = select_tls12_suites(ciphers);
        (
            suites.iter().map(|s| format!("{:?}", s.suite())).collect(),
            warnings.len(),
        )
    }

    #[test]
    fn upstream_default_selects_every_suite() {
        assert_eq!(names("HIGH:!aNULL"), (names("ALL").0, 0));
        assert_eq!(names("HIGH:!aNULL").0.len(), 6);
    }

    #[test]
    fn exclusions_and_intersections() {
        let (only_rsa_gcm, warnings) = names("ECDHE+aRSA+AESGCM:!CHACHA20");
        assert_eq!(only_rsa_gcm.len(), 2);
        assert_eq!(warnings, 0);
        assert!(names("HIGH:!aECDSA:-CHACHA20")
            .0
            .iter()
            .all(|n| n.contains("RSA") && !n.contains("CHACHA")));
        assert_eq!(names("!AESGCM:HIGH").0.len(), 2);
    }

    #[test]
    fn unsupported_words_warn() {
        let (suites, warnings) = names("AES128-SHA:RC4:ECDHE-RSA-AES128-GCM-SHA256:@STRENGTH");
        assert_eq!(suites.len(), 1);
        assert_eq!(warnings, 2);
        assert_eq!(names("DEFAULT:!RC4:!MD5:!3DES").1, 0);
    }
}
