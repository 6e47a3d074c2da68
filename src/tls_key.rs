//! The browser-side TLS server's signing key. RSA keys sign through OpenSSL: every full wss://
//! handshake makes one RSA signature, and ring's RSA-2048 signing measured 570 µs here against
//! OpenSSL's 246 µs, most of a handshake's CPU. Other keys (ECDSA, Ed25519) stay with ring,
//! whose signing is cheap for them.

use std::fmt;
use std::sync::Arc;

use openssl::hash::MessageDigest;
use openssl::pkey::{Id, PKey, Private};
use openssl::rsa::Padding;
use openssl::sign::RsaPssSaltlen;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, SubjectPublicKeyInfoDer};
use rustls::server::ResolvesServerCert;
use rustls::sign::{CertifiedKey, Signer, SigningKey, SingleCertAndKey};
use rustls::{SignatureAlgorithm, SignatureScheme};

/// Preferred first, as rustls's own RSA keys choose: PSS before PKCS#1 v1.5 (TLS 1.3 allows
/// only PSS), stronger digests first.
const RSA_SCHEMES: [SignatureScheme; 6] = [
    SignatureScheme::RSA_PSS_SHA512,
    SignatureScheme::RSA_PSS_SHA384,
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PKCS1_SHA512,
    SignatureScheme::RSA_PKCS1_SHA384,
    SignatureScheme::RSA_PKCS1_SHA256,
];

/// The certificate chain and its key, ready for `ServerConfig::with_cert_resolver`.
///
/// # Errors
/// The key is not one rustls or OpenSSL can use, or it does not match the leaf certificate.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: &PrivateKeyDer<'_>,
) -> Result<Arc<dyn ResolvesServerCert>, rustls::Error> {
    let signing: Arc<dyn SigningKey> = match PKey::private_key_from_der(key.secret_der()) {
        Ok(rsa) if rsa.id() == Id::RSA => Arc::new(OpensslRsaKey(Arc::new(rsa))),
        // Not RSA, or a form only rustls reads: ring signs.
        _ => rustls::crypto::ring::sign::any_supported_type(key)?,
    };
    let certified = CertifiedKey::new(chain, signing);
    // rustls compares the key's public half with the certificate's, as `with_single_cert`.
    match certified.keys_match() {
        Err(rustls::Error::InconsistentKeys(_)) => Err(rustls::Error::General(
            "the private key does not match the certificate".into(),
        )),
        Err(e) => Err(e),
        Ok(()) => Ok(Arc::new(SingleCertAndKey::from(certified))),
    }
}

struct OpensslRsaKey(Arc<PKey<Private>>);

impl fmt::Debug for OpensslRsaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OpensslRsaKey({} bits)", self.0.bits())
    }
}

impl SigningKey for OpensslRsaKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let scheme = RSA_SCHEMES.into_iter().find(|s| offered.contains(s))?;
        Some(Box::new(OpensslRsaSigner {
            key: self.0.clone(),
            scheme,
        }))
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        self.0
            .public_key_to_der()
            .ok()
            .map(SubjectPublicKeyInfoDer::from)
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::RSA
    }
}

struct OpensslRsaSigner {
    key: Arc<PKey<Private>>,
    scheme: SignatureScheme,
}

impl fmt::Debug for OpensslRsaSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OpensslRsaSigner({:?})", self.scheme)
    }
}

impl Signer for OpensslRsaSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        use SignatureScheme::*;
        let (digest, pss) = match self.scheme {
            RSA_PSS_SHA512 => (MessageDigest::sha512(), true),
            RSA_PSS_SHA384 => (MessageDigest::sha384(), true),
            RSA_PSS_SHA256 => (MessageDigest::sha256(), true),
            RSA_PKCS1_SHA512 => (MessageDigest::sha512(), false),
            RSA_PKCS1_SHA384 => (MessageDigest::sha384(), false),
            _ => (MessageDigest::sha256(), false),
        };
        let sign = || {
            let mut signer = openssl::sign::Signer::new(digest, &self.key)?;
            if pss {
                // RFC 8446 4.2.3: the salt is as long as the digest.
                signer.set_rsa_padding(Padding::PKCS1_PSS)?;
                signer.set_rsa_mgf1_md(digest)?;
                signer.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)?;
            } else {
                signer.set_rsa_padding(Padding::PKCS1)?;
            }
            signer.sign_oneshot_to_vec(message)
        };
        sign().map_err(|e| rustls::Error::General(format!("RSA signature failed: {e}")))
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::sign::Verifier;

    fn pem_chain(path: &str) -> Vec<CertificateDer<'static>> {
        let pem = std::fs::read(path).unwrap();
        rustls_pemfile::certs(&mut pem.as_slice())
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn pem_key(path: &str) -> PrivateKeyDer<'static> {
        let pem = std::fs::read(path).unwrap();
        rustls_pemfile::private_key(&mut pem.as_slice())
            .unwrap()
            .unwrap()
    }

    fn rsa_signer(offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let key = PKey::private_key_from_der(pem_key("tests/fixtures/pki/proxy.key").secret_der())
            .unwrap();
        OpensslRsaKey(Arc::new(key)).choose_scheme(offered)
    }

    #[test]
    fn signatures_verify_against_the_certificate_for_each_scheme() {
        let cert =
            openssl::x509::X509::from_pem(&std::fs::read("tests/fixtures/pki/proxy.pem").unwrap())
                .unwrap();
        let public = cert.public_key().unwrap();
        for scheme in RSA_SCHEMES {
            let signer = rsa_signer(&[scheme]).unwrap();
            assert_eq!(signer.scheme(), scheme);
            let signature = signer.sign(b"transcript hash").unwrap();
            let pss = matches!(
                scheme,
                SignatureScheme::RSA_PSS_SHA256
                    | SignatureScheme::RSA_PSS_SHA384
                    | SignatureScheme::RSA_PSS_SHA512
            );
            let digest = match scheme {
                SignatureScheme::RSA_PSS_SHA512 | SignatureScheme::RSA_PKCS1_SHA512 => {
                    MessageDigest::sha512()
                }
                SignatureScheme::RSA_PSS_SHA384 | SignatureScheme::RSA_PKCS1_SHA384 => {
                    MessageDigest::sha384()
                }
                _ => MessageDigest::sha256(),
            };
            let mut verifier = Verifier::new(digest, &public).unwrap();
            if pss {
                verifier.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
                verifier.set_rsa_mgf1_md(digest).unwrap();
                verifier
                    .set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)
                    .unwrap();
            }
            verifier.update(b"transcript hash").unwrap();
            assert!(verifier.verify(&signature).unwrap(), "{scheme:?}");
        }
    }

    #[test]
    fn the_strongest_offered_scheme_wins_and_non_rsa_offers_get_none() {
        let offered = [
            SignatureScheme::ECDSA_NISTP256_SHA256,
            SignatureScheme::RSA_PKCS1_SHA256,
            SignatureScheme::RSA_PSS_SHA256,
        ];
        assert_eq!(
            rsa_signer(&offered).unwrap().scheme(),
            SignatureScheme::RSA_PSS_SHA256
        );
        assert!(rsa_signer(&[SignatureScheme::ED25519]).is_none());
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() {
        let chain = pem_chain("tests/fixtures/pki/proxy.pem");
        let other = pem_key("tests/fixtures/pki/proxy-rotated.key");
        let error = certified_key(chain.clone(), &other).err().unwrap();
        assert!(error.to_string().contains("does not match"), "{error}");
        assert!(certified_key(chain, &pem_key("tests/fixtures/pki/proxy.key")).is_ok());
    }

    #[test]
    fn an_ecdsa_key_is_signed_by_ring_and_still_checked() {
        use openssl::asn1::Asn1Time;
        use openssl::ec::{EcGroup, EcKey};
        use openssl::nid::Nid;
        use openssl::x509::X509Builder;
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let make = || PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let (key, other) = (make(), make());
        let mut builder = X509Builder::new().unwrap();
        builder.set_version(2).unwrap();
        builder.set_pubkey(&key).unwrap();
        builder
            .set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        builder
            .set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        builder.sign(&key, MessageDigest::sha256()).unwrap();
        let chain = vec![CertificateDer::from(builder.build().to_der().unwrap())];
        let der = |k: &PKey<Private>| {
            PrivateKeyDer::from(rustls::pki_types::PrivatePkcs8KeyDer::from(
                k.private_key_to_pkcs8().unwrap(),
            ))
        };
        let resolver = certified_key(chain.clone(), &der(&key)).unwrap();
        assert!(format!("{resolver:?}").contains("Ecdsa"), "{resolver:?}");
        assert!(certified_key(chain, &der(&other)).is_err());
    }
}
