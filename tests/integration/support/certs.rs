//! Certificates generated per test with rcgen: a CA and leaves it signs, written as PEM files.

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

/// A test CA and a server certificate for `localhost`/`127.0.0.1` signed by it.
pub struct TestPki {
    pub dir: tempfile::TempDir,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestPki {
    pub fn new() -> TestPki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "keygate test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);

        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        TestPki {
            dir: tempfile::tempdir().unwrap(),
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn ca_file(&self) -> PathBuf {
        self.write("ca.pem", &self.ca_pem)
    }
    pub fn cert_file(&self) -> PathBuf {
        self.write("cert.pem", &self.cert_pem)
    }
    pub fn key_file(&self) -> PathBuf {
        self.write("key.pem", &self.key_pem)
    }

    /// A rustls server config for a test server (ALPN h2 + http/1.1).
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        keygate::tls::server_config(&self.cert_file(), &self.key_file()).unwrap()
    }

    /// A rustls client config trusting only this CA, with `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        for cert in keygate::tls::load_certs(&self.ca_file()).unwrap() {
            roots.add(cert).unwrap();
        }
        let mut config = rustls::ClientConfig::builder_with_provider(keygate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }
}
