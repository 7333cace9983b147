//! Certificates for intercepted hosts: one rustls server config per host, with ALPN `h2` and
//! `http/1.1`.
//!
//! With the operator's CA (`egress.ca_cert` + `egress.ca_key`), a leaf is minted at start-up for
//! each intercepted host, with a key of its own (ECDSA P-256): the CA's key signs and is then
//! dropped, it never serves a handshake. The leaf names the host as its only subject alternative
//! name, is for server authentication only, and is valid from a day ago (clock skew) for
//! [`LEAF_VALIDITY`]. With a ready leaf (`egress.cert` + `egress.key`), its chain must cover every
//! intercepted host, which is checked at start-up with rustls' own verifier: keygate refuses to
//! start rather than serve a certificate clients would reject.
//!
//! [`generate_ca`] makes the throwaway CA of `keygate dev`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::config::{CertSource, Target};
use crate::tls::{self, TlsError};

/// How long a minted leaf is valid: a year (keygate mints new ones at every start).
pub const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Minted certificates start this long before "now", for clients whose clock is behind.
const BACKDATE: Duration = Duration::from_secs(24 * 3600);

/// The server configs for the intercepted hosts, by host name (lower case).
#[derive(Debug, Clone)]
pub struct InterceptCerts {
    by_host: HashMap<String, Arc<ServerConfig>>,
}

impl InterceptCerts {
    /// Loads or mints the certificates for `hosts` as `source` says.
    pub fn load(source: &CertSource, hosts: &[Target]) -> Result<InterceptCerts, TlsError> {
        let mut by_host = HashMap::new();
        match source {
            CertSource::Ca { cert, key } => {
                let ca_pem = read(cert)?;
                let ca_key = KeyPair::from_pem(&read(key)?).map_err(|e| pem_error(key, &e))?;
                let issuer =
                    Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(|e| pem_error(cert, &e))?;
                let ca_der = tls::load_certs(cert)?;
                for target in hosts {
                    let (leaf, leaf_key) =
                        mint_leaf(&target.host, &issuer).map_err(|e| pem_error(cert, &e))?;
                    let mut chain = vec![leaf];
                    chain.extend(ca_der.iter().cloned());
                    by_host.insert(target.host.clone(), server_config(chain, leaf_key)?);
                }
            }
            CertSource::Leaf { cert, key } => {
                let chain = tls::load_certs(cert)?;
                let leaf = chain.first().ok_or_else(|| TlsError::Pem {
                    path: cert.display().to_string(),
                    message: "no certificate found".into(),
                })?;
                let end_entity =
                    webpki::EndEntityCert::try_from(leaf).map_err(|e| TlsError::Pem {
                        path: cert.display().to_string(),
                        message: format!("unreadable certificate: {e}"),
                    })?;
                for target in hosts {
                    let name =
                        ServerName::try_from(target.host.as_str()).map_err(|_| TlsError::Pem {
                            path: cert.display().to_string(),
                            message: format!("`{}` is not a DNS name", target.host),
                        })?;
                    end_entity
                        .verify_is_valid_for_subject_name(&name)
                        .map_err(|_| TlsError::Pem {
                            path: cert.display().to_string(),
                            message: format!(
                                "the certificate does not cover the intercepted host `{}`",
                                target.host
                            ),
                        })?;
                }
                let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Pem {
                    path: key.display().to_string(),
                    message: format!("no usable private key: {e}"),
                })?;
                let config = server_config(chain, key_der)?;
                for target in hosts {
                    by_host.insert(target.host.clone(), config.clone());
                }
            }
        }
        Ok(InterceptCerts { by_host })
    }

    /// The server config for `host` (lower case), if it is intercepted.
    pub fn get(&self, host: &str) -> Option<&Arc<ServerConfig>> {
        self.by_host.get(host)
    }
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|e| TlsError::Pem {
        path: path.display().to_string(),
        message: format!("cannot read: {e}"),
    })
}

fn pem_error(path: &Path, err: &rcgen::Error) -> TlsError {
    TlsError::Pem {
        path: path.display().to_string(),
        message: format!("unusable: {err}"),
    }
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A leaf for `host` signed by `issuer`, with a fresh key: (certificate, key).
pub fn mint_leaf(
    host: &str,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![host.to_owned()])?;
    params.distinguished_name.push(DnType::CommonName, host);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let now = SystemTime::now();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + LEAF_VALIDITY).into();
    let cert = params.signed_by(&key, issuer)?;
    let key_der = PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|_| rcgen::Error::CouldNotParseKeyPair)?;
    Ok((cert.der().clone(), key_der))
}

/// A new self-signed CA named `name`, valid for ten years: (certificate PEM, key PEM). For
/// `keygate dev`; a production CA belongs to the company's PKI.
pub fn generate_ca(name: &str) -> Result<(String, String), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = SystemTime::now();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + 10 * LEAF_VALIDITY).into();
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_files(dir: &Path) -> CertSource {
        let (cert, key) = generate_ca("keygate test CA").unwrap();
        std::fs::write(dir.join("ca.pem"), cert).unwrap();
        std::fs::write(dir.join("ca.key"), key).unwrap();
        CertSource::Ca {
            cert: dir.join("ca.pem"),
            key: dir.join("ca.key"),
        }
    }

    #[test]
    fn a_leaf_is_minted_per_intercepted_host_and_chains_to_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let source = ca_files(dir.path());
        let hosts = [
            Target::parse("api.confluent.cloud:443").unwrap(),
            Target::parse("other.example:443").unwrap(),
        ];
        let certs = InterceptCerts::load(&source, &hosts).unwrap();
        assert!(certs.get("api.confluent.cloud").is_some());
        assert!(certs.get("other.example").is_some());
        assert!(certs.get("confluent.cloud").is_none());
        // The leaf verifies for its host against the CA, with rustls' client-side verifier.
        let ca = tls::load_certs(&dir.path().join("ca.pem")).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca[0].clone()).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            tls::provider(),
        )
        .build()
        .unwrap();
        let issuer = {
            let CertSource::Ca { cert, key } = &source else {
                unreachable!()
            };
            let key = KeyPair::from_pem(&std::fs::read_to_string(key).unwrap()).unwrap();
            Issuer::from_ca_cert_pem(&std::fs::read_to_string(cert).unwrap(), key).unwrap()
        };
        let (leaf, _) = mint_leaf("api.confluent.cloud", &issuer).unwrap();
        use rustls::client::danger::ServerCertVerifier;
        verifier
            .verify_server_cert(
                &leaf,
                &[],
                &ServerName::try_from("api.confluent.cloud").unwrap(),
                &[],
                rustls_pki_types::UnixTime::now(),
            )
            .unwrap();
        assert!(verifier
            .verify_server_cert(
                &leaf,
                &[],
                &ServerName::try_from("confluent.cloud").unwrap(),
                &[],
                rustls_pki_types::UnixTime::now(),
            )
            .is_err());
    }

    #[test]
    fn a_ready_leaf_must_cover_every_intercepted_host() {
        let dir = tempfile::tempdir().unwrap();
        let CertSource::Ca { cert, key } = ca_files(dir.path()) else {
            unreachable!()
        };
        let ca_key = KeyPair::from_pem(&std::fs::read_to_string(&key).unwrap()).unwrap();
        let issuer =
            Issuer::from_ca_cert_pem(&std::fs::read_to_string(&cert).unwrap(), ca_key).unwrap();
        let (leaf, leaf_key) = mint_leaf("api.confluent.cloud", &issuer).unwrap();
        std::fs::write(dir.path().join("leaf.pem"), pem_of("CERTIFICATE", &leaf)).unwrap();
        std::fs::write(
            dir.path().join("leaf.key"),
            pem_of("PRIVATE KEY", leaf_key.secret_der()),
        )
        .unwrap();
        let source = CertSource::Leaf {
            cert: dir.path().join("leaf.pem"),
            key: dir.path().join("leaf.key"),
        };
        let covered = [Target::parse("api.confluent.cloud:443").unwrap()];
        assert!(InterceptCerts::load(&source, &covered)
            .unwrap()
            .get("api.confluent.cloud")
            .is_some());
        let err = InterceptCerts::load(
            &source,
            &[
                covered[0].clone(),
                Target::parse("other.example:443").unwrap(),
            ],
        )
        .unwrap_err();
        assert!(err.to_string().contains("other.example"), "{err}");
    }

    fn pem_of(label: &str, der: &[u8]) -> String {
        use base64::Engine;
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            base64::engine::general_purpose::STANDARD.encode(der)
        )
    }
}
