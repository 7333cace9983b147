//! Client certificates on the TLS listener (`[identity.mtls]`).
//!
//! rustls verifies the chain against the configured CA file (and CRL files) during the handshake
//! (`WebPkiClientVerifier`): with `mode = "required"` a connection without a valid certificate
//! never completes its handshake; with `"optional"` it may come without one, and then its requests
//! need another credential on governed routes. The verified leaf travels with every request of the
//! connection as a [`ClientCertificate`] extension; the identity stage maps it to an external
//! principal by the configured rule (`principal = ["san_uri", "san_dns", "cn"]`: the first that the
//! certificate has), which a mapping (`[[identity.map]]`, `issuer = "mtls"`) turns into a Confluent
//! principal. The certificate's issuer and serial are in the audit record.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};
use serde::Deserialize;

use super::FieldError;
use crate::env::Secrets;
use crate::proxy::config::CredentialSource;
use crate::redact::Secret;
use crate::tls::TlsError;

/// The verified leaf certificate of the connection a request came on (a request extension).
#[derive(Debug, Clone)]
pub struct ClientCertificate(pub Arc<CertificateDer<'static>>);

/// `[identity.mtls]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMtls {
    pub ca: String,
    #[serde(default)]
    pub crl: Vec<String>,
    pub mode: Option<String>,
    pub principal: Option<Vec<String>>,
    pub broker: Option<bool>,
    pub credential: Option<super::RawCredential>,
}

/// Whether a client certificate must be presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Connections may come without one.
    Optional,
    /// The handshake fails without a valid one.
    Required,
}

/// Where the principal comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The first URI subject alternative name (SPIFFE ids: `spiffe://corp/ns/payments/sa/ci`).
    SanUri,
    /// The first DNS subject alternative name.
    SanDns,
    /// The subject's common name.
    Cn,
}

/// The validated `[identity.mtls]`.
#[derive(Debug, Clone)]
pub struct MtlsConfig {
    /// CA certificates (PEM) client certificates must chain to.
    pub ca: PathBuf,
    /// CRLs (PEM or DER).
    pub crl: Vec<PathBuf>,
    /// Optional or required.
    pub mode: Mode,
    /// The rule: fields tried in order.
    pub principal: Vec<Field>,
    /// Whether certificate callers are brokered.
    pub broker: bool,
    /// Their upstream credential (else the mapping's, else keygate's own).
    pub credential_source: Option<CredentialSource>,
    /// … read.
    pub credential: Option<Secret>,
}

impl MtlsConfig {
    /// Validates `[identity.mtls]`.
    pub fn validate(
        raw: &RawMtls,
        base: &Path,
        secrets: &Secrets<'_>,
    ) -> Result<MtlsConfig, FieldError> {
        if raw.ca.is_empty() {
            return Err(FieldError::new("identity.mtls.ca", "must not be empty"));
        }
        let mode = match raw.mode.as_deref() {
            None | Some("optional") => Mode::Optional,
            Some("required") => Mode::Required,
            Some(other) => {
                return Err(FieldError::new(
                    "identity.mtls.mode",
                    format!("`{other}`: expected `optional` or `required`"),
                ))
            }
        };
        let principal = match &raw.principal {
            None => vec![Field::SanUri, Field::SanDns, Field::Cn],
            Some(list) if list.is_empty() => {
                return Err(FieldError::new(
                    "identity.mtls.principal",
                    "must not be empty",
                ))
            }
            Some(list) => list
                .iter()
                .map(|f| match f.as_str() {
                    "san_uri" => Ok(Field::SanUri),
                    "san_dns" => Ok(Field::SanDns),
                    "cn" => Ok(Field::Cn),
                    other => Err(FieldError::new(
                        "identity.mtls.principal",
                        format!("`{other}`: expected `san_uri`, `san_dns` or `cn`"),
                    )),
                })
                .collect::<Result<_, _>>()?,
        };
        let (credential_source, credential) =
            super::jwt::credential("identity.mtls.credential", &raw.credential, base, secrets)?;
        Ok(MtlsConfig {
            ca: base.join(&raw.ca),
            crl: raw.crl.iter().map(|c| base.join(c)).collect(),
            mode,
            principal,
            broker: raw.broker.unwrap_or(false),
            credential_source,
            credential,
        })
    }

    /// The verifier for the TLS listener (also what `keygate check` runs to test the files).
    pub fn verifier(&self) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in crate::tls::load_certs(&self.ca)? {
            roots.add(cert).map_err(|e| TlsError::Pem {
                path: self.ca.display().to_string(),
                message: format!("unusable CA certificate: {e}"),
            })?;
        }
        let mut crls = Vec::new();
        for path in &self.crl {
            crls.extend(load_crls(path)?);
        }
        let builder =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crate::tls::provider())
                .with_crls(crls);
        let builder = match self.mode {
            Mode::Optional => builder.allow_unauthenticated(),
            Mode::Required => builder,
        };
        builder.build().map_err(|e| TlsError::Pem {
            path: self.ca.display().to_string(),
            message: format!("client certificate verifier: {e}"),
        })
    }
}

fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let err = |message: String| TlsError::Pem {
        path: path.display().to_string(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
    if bytes.starts_with(b"-----") {
        let crls = CertificateRevocationListDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err(format!("invalid PEM: {e}")))?;
        if crls.is_empty() {
            return Err(err("no CRL found".into()));
        }
        Ok(crls)
    } else {
        Ok(vec![CertificateRevocationListDer::from(bytes)])
    }
}

/// What keygate reads from a verified certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertIdentity {
    /// The external principal, by the rule.
    pub subject: String,
    /// The certificate's issuer (the CA's subject, RFC 4514).
    pub issuer: String,
    /// Its serial number (hex).
    pub serial: String,
}

/// Reads the principal from a verified leaf by the rule; `None` when it has none of the fields.
pub fn identity(cert: &CertificateDer<'_>, rule: &[Field]) -> Option<CertIdentity> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, parsed) = X509Certificate::from_der(cert.as_ref()).ok()?;
    let sans: Vec<GeneralName<'_>> = parsed
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|ext| ext.value.general_names.clone())
        .unwrap_or_default();
    let subject = rule.iter().find_map(|field| match field {
        Field::SanUri => sans.iter().find_map(|n| match n {
            GeneralName::URI(uri) => Some((*uri).to_owned()),
            _ => None,
        }),
        Field::SanDns => sans.iter().find_map(|n| match n {
            GeneralName::DNSName(dns) => Some((*dns).to_owned()),
            _ => None,
        }),
        Field::Cn => parsed
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned),
    })?;
    if subject.is_empty() || subject.len() > 256 || subject.chars().any(char::is_control) {
        return None;
    }
    Some(CertIdentity {
        subject,
        issuer: parsed.issuer().to_string(),
        serial: parsed.raw_serial_as_string().replace(':', ""),
    })
}
