//! Loading everything a config names, as `serve` would, without binding a port, contacting
//! anything or reading a secret: TLS certificate and key, the upstream CA file, the static key
//! directory, the audit file's directory (and the chain of an existing file), the matrix, file-sourced
//! role bindings and inventory, and the organisation policies. `keygate check` reports what this
//! finds; `keygate serve` runs it first and refuses to start (exit 78, one line) when it finds
//! anything, so the two always agree.
//!
//! keygate's own credential is only checked to be configured (the config does that); reading it
//! is `check --connect`'s business.

use crate::config::{Config, IdentitySource};
use crate::policy::runtime::{read_file, AuthzError, AuthzRuntime, FileData};
use crate::tls::{self, TlsError};

/// One thing that would stop `serve` from starting: the config field at fault and what is wrong
/// (naming the file it points to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The dotted config field (`listener.tls.cert`, `authz.matrix`, `policy`, …).
    pub field: &'static str,
    /// What is wrong, naming the file; `file:line:column: message` for policy files.
    pub message: String,
}

impl Problem {
    fn new(field: &'static str, message: impl std::fmt::Display) -> Problem {
        Problem {
            field,
            message: message.to_string(),
        }
    }

    /// The problem as one line naming the config file and the field, like a config error.
    pub fn line(&self, config: &Config) -> String {
        let file = config
            .source_path
            .as_deref()
            .map_or_else(|| "<config>".to_owned(), |p| p.display().to_string());
        format!("{file}: `{}`: {}", self.field, self.message)
    }
}

/// What the files hold, when everything loaded.
#[derive(Debug)]
pub struct Loaded {
    /// The policy set's files and its revision.
    pub authz: FileData,
    /// The runtime the files were loaded with (no upstream access).
    pub runtime: AuthzRuntime,
}

/// Loads and checks everything (see the module doc). Every problem is reported, not only the
/// first.
pub fn preflight(config: &Config) -> Result<Loaded, Vec<Problem>> {
    tls::install_provider();
    let mut problems = Vec::new();
    if let Some(files) = &config.listener.tls {
        let certs = tls::load_certs(&files.cert)
            .map_err(|e| problems.push(Problem::new("listener.tls.cert", e)))
            .ok();
        let key = tls::load_key(&files.key)
            .map_err(|e| problems.push(Problem::new("listener.tls.key", e)))
            .ok();
        if certs.is_some() && key.is_some() {
            if let Err(e) = tls::server_config(&files.cert, &files.key) {
                let field = match e {
                    TlsError::Pem { .. } => "listener.tls.cert",
                    TlsError::Rustls(_) => "listener.tls",
                };
                problems.push(Problem::new(
                    field,
                    format!(
                        "`{}` and `{}` do not make a usable TLS server: {e}",
                        files.cert.display(),
                        files.key.display()
                    ),
                ));
            }
        }
    }
    if let Err(e) = tls::client_config(config.upstream.ca_file.as_deref()) {
        problems.push(Problem::new("upstream.ca_file", e));
    }
    if let IdentitySource::Directory(path) = &config.identity.source {
        if let Err(e) = crate::identity::directory::Directory::load(path) {
            problems.push(Problem::new("identity.directory", e));
        }
    }
    for issuer in &config.identity.jwt {
        // A JWKS file is read and parsed as at start-up (a URL is fetched only by `serve`).
        if let crate::identity::jwt::JwksSource::File(path) = &issuer.jwks {
            match crate::identity::jwt::Jwks::check_file(path) {
                Ok(0) => problems.push(Problem::new(
                    "identity.jwt.jwks_file",
                    format!(
                        "`{}` (issuer `{}`) holds no usable signing key",
                        path.display(),
                        issuer.issuer
                    ),
                )),
                Ok(_) => {}
                Err(e) => problems.push(Problem::new(
                    "identity.jwt.jwks_file",
                    format!("issuer `{}`: {e}", issuer.issuer),
                )),
            }
        }
    }
    if let Some(mtls) = &config.identity.mtls {
        // The client CA and CRL files make the verifier, as at start-up.
        if let Err(e) = mtls.verifier() {
            problems.push(Problem::new("identity.mtls", e));
        }
    }
    if let Some(egress) = &config.egress {
        // The CA and key are read and a leaf minted per intercepted host, as at start-up.
        if let Err(e) = crate::egress::certs::InterceptCerts::load(&egress.certs, &egress.intercept)
        {
            problems.push(Problem::new("egress", e));
        }
        if let Some(crate::egress::config::ProxyAuthSource::File(path)) = &egress.proxy_auth {
            if let Err(e) = crate::identity::directory::Directory::load(path) {
                problems.push(Problem::new("egress.proxy_auth", e));
            }
        }
    }
    if let Some(file) = &config.audit.file {
        if let Err(e) = crate::audit::file::preflight(&file.path) {
            problems.push(Problem::new("audit.file", e));
        }
    }
    let runtime = AuthzRuntime::new(config.authz.clone(), config.policy.clone(), None)
        .with_rate_limits(config.ratelimit.canonical());
    let authz = match runtime.load_files(&read_file, config.ratelimit.canonical()) {
        Ok(authz) => Some(authz),
        Err(AuthzError::Files(found)) => {
            problems.extend(found.into_iter().map(|p| Problem {
                field: p.field,
                message: p.message,
            }));
            None
        }
        Err(other) => {
            problems.push(Problem::new("authz", other));
            None
        }
    };
    match authz {
        Some(authz) if problems.is_empty() => Ok(Loaded { authz, runtime }),
        _ => Err(problems),
    }
}
