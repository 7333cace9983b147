//! The egress listener: an HTTP/1.1 forward proxy for clients that cannot be given another base
//! URL but honour `HTTPS_PROXY` (the Confluent CLI above all; docs/architecture.md §11).
//!
//! A connection starts with one request head (read without consuming a byte past it, `head.rs`):
//! - `CONNECT host:port` to an **intercepted** host (default `api.confluent.cloud:443`): keygate
//!   answers 200, then terminates TLS with a certificate for that host (`certs.rs`; ALPN `h2` and
//!   `http/1.1`). The client's SNI must be present and equal the CONNECT host, or the connection
//!   is closed. The decrypted requests are served by **the same pipeline** as the reverse-proxy
//!   listener (the same composed service), each marked with a [`crate::state::EgressRequest`],
//!   so that they are decided exactly like direct ones and their links keep the upstream's names.
//! - `CONNECT host:port` to a **tunnelled** host (default `confluent.cloud:443` and
//!   `login.confluent.io:443`, which carry passwords and refresh tokens and are never
//!   decrypted): after the destination check (`tunnel.rs`: no loopback, private, link-local or
//!   unspecified address unless allowed) keygate answers 200 and copies bytes both ways.
//! - anything else: a `CONNECT` to another host is 403; a request in absolute form
//!   (`GET http://…`) is 403 too (no cleartext egress); any other request is 400. Each refusal is
//!   a Confluent-shaped JSON error, and, when it concerns a target, an audit event of type
//!   `io.keygate.egress.refused` with the target and the client address.
//!
//! With `egress.proxy_auth`, a `CONNECT` needs `Proxy-Authorization: Basic` checked against the
//! static key directory or a file in its format (407 otherwise); the workload it names appears in
//! the audit events of that connection. The header is consumed here: never forwarded, never
//! logged.
//!
//! The connection machinery (header-read deadline from `accept` to the first decrypted request
//! head, idle timeout, connection limits, drain) is the server's own: this module is the
//! [`Handshake`] of its listener.

pub mod certs;
pub mod config;
mod head;
mod tunnel;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, StatusCode};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::audit::{
    AuditEvent, AuditRecord, Auditor, EgressInfo, EventSource, EventType, Stage as EventStage,
};
use crate::identity::directory::Directory;
use crate::server::{BoxFuture, Handshake, Handshaken};
use crate::state::EgressRequest;
use crate::telemetry::metrics::ResultLabels;
use crate::telemetry::Metrics;
use certs::InterceptCerts;
use config::{EgressConfig, Network, Target};
use head::HeadError;

/// The `Proxy-Authenticate` challenge of a 407 (RFC 9110 §11.7.1).
const PROXY_CHALLENGE: &str = r#"Basic realm="keygate egress""#;

/// The egress listener's [`Handshake`] (see the module doc).
pub struct Egress {
    intercept: Vec<Target>,
    tunnel: Vec<Target>,
    certs: InterceptCerts,
    connect_to: std::collections::HashMap<Target, String>,
    allow: Arc<[Network]>,
    connect_timeout: Duration,
    tunnel_idle_timeout: Duration,
    max_head_bytes: usize,
    proxy_auth: Option<Directory>,
    audit: Arc<Auditor>,
    source: EventSource,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Egress")
            .field("intercept", &self.intercept)
            .field("tunnel", &self.tunnel)
            .finish_non_exhaustive()
    }
}

/// A refusal: status, error code, title and detail for the caller, the reason for the audit.
struct Refusal {
    status: StatusCode,
    code: &'static str,
    detail: String,
    reason: &'static str,
}

impl Egress {
    /// The handshake for `config`, with `certs` loaded, `proxy_auth` (if any) loaded, auditing to
    /// `audit` as `source`, counting in `metrics`; request heads of at most `max_head_bytes`.
    pub fn new(
        config: &EgressConfig,
        certs: InterceptCerts,
        proxy_auth: Option<Directory>,
        audit: Arc<Auditor>,
        source: EventSource,
        metrics: Arc<Metrics>,
        max_head_bytes: usize,
    ) -> Egress {
        Egress {
            intercept: config.intercept.clone(),
            tunnel: config.tunnel.clone(),
            certs,
            connect_to: config.connect_to.clone(),
            allow: config.allow_destinations.clone().into(),
            connect_timeout: config.connect_timeout,
            tunnel_idle_timeout: config.tunnel_idle_timeout,
            max_head_bytes,
            proxy_auth,
            audit,
            source,
            metrics,
        }
    }

    fn count(&self, result: &'static str) {
        count(&self.metrics, result);
    }

    async fn handle(&self, mut stream: TcpStream, peer: SocketAddr) -> Handshaken {
        let head = match head::read_head(&mut stream, self.max_head_bytes).await {
            Ok(head) => head,
            Err(HeadError::Closed) => {
                self.count("closed");
                return Handshaken::Closed;
            }
            Err(HeadError::TooLarge) => {
                let refusal = Refusal {
                    status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    code: "header_too_large",
                    detail: "the request head is larger than keygate accepts".into(),
                    reason: "bad_request",
                };
                return self.refuse(stream, peer, None, None, refusal).await;
            }
            Err(HeadError::Malformed) => {
                let refusal = Refusal {
                    status: StatusCode::BAD_REQUEST,
                    code: "bad_request",
                    detail: "not an HTTP/1.1 proxy request".into(),
                    reason: "bad_request",
                };
                return self.refuse(stream, peer, None, None, refusal).await;
            }
        };
        if !head.method.eq_ignore_ascii_case("CONNECT") {
            // Absolute form (RFC 9112 §3.2.2) is a request for the proxy to make in clear.
            let host = absolute_target(&head.target);
            let refusal = match &host {
                Some(_) => Refusal {
                    status: StatusCode::FORBIDDEN,
                    code: "egress_refused",
                    detail: "keygate's egress proxy carries no cleartext requests: use https:// (a CONNECT tunnel)".into(),
                    reason: "cleartext",
                },
                None => Refusal {
                    status: StatusCode::BAD_REQUEST,
                    code: "bad_request",
                    detail: "this is keygate's egress proxy: it accepts `CONNECT host:port` only".into(),
                    reason: "bad_request",
                },
            };
            return self.refuse(stream, peer, host, None, refusal).await;
        }
        let Some(target) = Target::parse(&head.target) else {
            let refusal = Refusal {
                status: StatusCode::BAD_REQUEST,
                code: "bad_request",
                detail: "CONNECT needs a `host:port` target".into(),
                reason: "bad_request",
            };
            return self.refuse(stream, peer, None, None, refusal).await;
        };
        let workload = match self.authenticate(&head) {
            Ok(workload) => workload,
            Err(detail) => {
                let refusal = Refusal {
                    status: StatusCode::PROXY_AUTHENTICATION_REQUIRED,
                    code: "proxy_unauthenticated",
                    detail: detail.into(),
                    reason: "proxy_auth",
                };
                return self.refuse(stream, peer, Some(target), None, refusal).await;
            }
        };
        if self.intercept.contains(&target) {
            return self.intercept(stream, peer, target, workload).await;
        }
        if self.tunnel.contains(&target) {
            return self.tunnel(stream, peer, target, workload);
        }
        let refusal = Refusal {
            status: StatusCode::FORBIDDEN,
            code: "egress_refused",
            detail: format!(
                "keygate's egress proxy does not reach `{target}`: it is neither intercepted nor tunnelled"
            ),
            reason: "not_allowed",
        };
        self.refuse(stream, peer, Some(target), workload, refusal)
            .await
    }

    /// The workload named by `Proxy-Authorization` (`None` when proxy authentication is off), or
    /// why it was not accepted.
    fn authenticate(&self, head: &head::Head) -> Result<Option<Arc<str>>, &'static str> {
        let Some(directory) = &self.proxy_auth else {
            return Ok(None);
        };
        if head.duplicate_proxy_authorization {
            return Err("send `Proxy-Authorization` once");
        }
        let value = head
            .proxy_authorization
            .as_ref()
            .ok_or("this egress proxy requires `Proxy-Authorization: Basic` (HTTPS_PROXY=http://id:secret@host:port)")?;
        let mut headers = HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, value.clone());
        let mut scratch = String::new();
        let credential = crate::identity::parse_basic(&headers, &mut scratch)
            .map_err(|_| "malformed `Proxy-Authorization`: expected `Basic base64(id:secret)`")?;
        let principal = directory
            .verify(&credential)
            .map_err(|_| "proxy credentials not accepted")?;
        Ok(Some(Arc::from(principal.id())))
    }

    async fn intercept(
        &self,
        mut stream: TcpStream,
        peer: SocketAddr,
        target: Target,
        workload: Option<Arc<str>>,
    ) -> Handshaken {
        let Some(config) = self.certs.get(&target.host).cloned() else {
            // INVARIANT: start-up made a config for every intercepted host.
            return Handshaken::Closed;
        };
        if stream
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await
            .is_err()
        {
            return Handshaken::Closed;
        }
        let acceptor =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
        let start = match acceptor.await {
            Ok(start) => start,
            Err(err) => {
                tracing::debug!(peer = %peer, error = %err, "Egress TLS handshake failed");
                return Handshaken::Closed;
            }
        };
        let sni = start.client_hello().server_name().map(str::to_owned);
        let refused = match &sni {
            None => Some((
                "sni_missing",
                "the TLS ClientHello names no server (SNI)".to_owned(),
            )),
            Some(name) if !name.eq_ignore_ascii_case(&target.host) => Some((
                "sni_mismatch",
                format!(
                    "the TLS ClientHello names another server than the CONNECT target `{target}`"
                ),
            )),
            Some(_) => None,
        };
        if let Some((reason, detail)) = refused {
            self.count(reason);
            // The 200 is sent: no HTTP answer is possible; the connection is closed.
            tracing::info!(peer = %peer, egress.host = %target.host, egress.refused = reason, "Egress refused");
            self.audit_refusal(
                peer,
                Some(&target),
                workload,
                StatusCode::FORBIDDEN,
                reason,
                &detail,
            )
            .await;
            return Handshaken::Closed;
        }
        match start.into_stream(config).await {
            Ok(tls) => {
                self.count("intercepted");
                let mut extensions = http::Extensions::new();
                extensions.insert(EgressRequest {
                    host: Arc::from(target.host.as_str()),
                    port: target.port,
                    workload,
                });
                Handshaken::Serve {
                    stream: Box::new(tls),
                    extensions: Arc::new(extensions),
                }
            }
            Err(err) => {
                tracing::debug!(peer = %peer, error = %err, "Egress TLS handshake failed");
                Handshaken::Closed
            }
        }
    }

    fn tunnel(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        target: Target,
        workload: Option<Arc<str>>,
    ) -> Handshaken {
        let destination = self
            .connect_to
            .get(&target)
            .cloned()
            .unwrap_or_else(|| target.to_string());
        let allow = self.allow.clone();
        let connect_timeout = self.connect_timeout;
        let idle = self.tunnel_idle_timeout;
        let audit = self.audit.clone();
        let source = self.source.clone();
        let metrics = self.metrics.clone();
        Handshaken::Detached(Box::pin(async move {
            let refuser = Refuser {
                audit: &audit,
                source: &source,
            };
            let mut stream = stream;
            let upstream = match tunnel::open(&destination, &allow, connect_timeout).await {
                Ok(upstream) => upstream,
                Err(tunnel::OpenError::Forbidden { ip, kind }) => {
                    let refusal = Refusal {
                        status: StatusCode::FORBIDDEN,
                        code: "egress_refused",
                        detail: format!(
                            "`{target}` resolves to a {kind} address ({ip}), which keygate's egress proxy does not reach"
                        ),
                        reason: "destination_forbidden",
                    };
                    count(&metrics, refusal.reason);
                    refuser
                        .refuse(&mut stream, peer, Some(target), workload, refusal)
                        .await;
                    return;
                }
                Err(err) => {
                    let (status, detail) = match err {
                        tunnel::OpenError::Timeout => (
                            StatusCode::GATEWAY_TIMEOUT,
                            format!("`{target}` did not answer within {connect_timeout:?}"),
                        ),
                        tunnel::OpenError::Unreachable(why) => (
                            StatusCode::BAD_GATEWAY,
                            format!("cannot reach `{target}`: {why}"),
                        ),
                        tunnel::OpenError::Forbidden { .. } => {
                            (StatusCode::FORBIDDEN, String::new())
                        }
                    };
                    let refusal = Refusal {
                        status,
                        code: "egress_unreachable",
                        detail,
                        reason: "destination_unreachable",
                    };
                    count(&metrics, refusal.reason);
                    refuser
                        .refuse(&mut stream, peer, Some(target), workload, refusal)
                        .await;
                    return;
                }
            };
            if stream
                .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                .await
                .is_err()
            {
                return;
            }
            count(&metrics, "tunnelled");
            tracing::debug!(peer = %peer, egress.host = %target.host, "Tunnel open");
            let (up, down) = tunnel::run(stream, upstream, idle).await;
            tracing::debug!(peer = %peer, egress.host = %target.host, bytes.up = up, bytes.down = down, "Tunnel closed");
        }))
    }

    async fn refuse(
        &self,
        mut stream: TcpStream,
        peer: SocketAddr,
        target: Option<Target>,
        workload: Option<Arc<str>>,
        refusal: Refusal,
    ) -> Handshaken {
        self.count(refusal.reason);
        Refuser {
            audit: &self.audit,
            source: &self.source,
        }
        .refuse(&mut stream, peer, target, workload, refusal)
        .await;
        Handshaken::Closed
    }

    async fn audit_refusal(
        &self,
        peer: SocketAddr,
        target: Option<&Target>,
        workload: Option<Arc<str>>,
        status: StatusCode,
        reason: &'static str,
        detail: &str,
    ) {
        Refuser {
            audit: &self.audit,
            source: &self.source,
        }
        .audit(
            &crate::stages::observe::mint_request_id(),
            peer,
            target,
            workload,
            status,
            reason,
            detail,
        )
        .await;
    }
}

impl Handshake for Egress {
    fn handshake(&self, stream: TcpStream, peer: SocketAddr) -> BoxFuture<'_, Handshaken> {
        Box::pin(self.handle(stream, peer))
    }
}

/// Writes refusals and their audit events.
struct Refuser<'a> {
    audit: &'a Auditor,
    source: &'a EventSource,
}

impl Refuser<'_> {
    /// Audits the refusal (when it concerns a target), then answers it and closes.
    async fn refuse(
        &self,
        stream: &mut TcpStream,
        peer: SocketAddr,
        target: Option<Target>,
        workload: Option<Arc<str>>,
        refusal: Refusal,
    ) {
        let id = crate::stages::observe::mint_request_id();
        let id = id.to_str().unwrap_or("0").to_owned();
        tracing::info!(
            peer = %peer,
            egress.host = target.as_ref().map_or("-", |t| t.host.as_str()),
            egress.refused = refusal.reason,
            status = refusal.status.as_u16(),
            request.id = %id,
            "Egress refused"
        );
        if target.is_some() {
            self.audit(
                &http::HeaderValue::from_str(&id).unwrap_or(http::HeaderValue::from_static("0")),
                peer,
                target.as_ref(),
                workload,
                refusal.status,
                refusal.reason,
                &refusal.detail,
            )
            .await;
        }
        let body = serde_json::json!({
            "errors": [{
                "id": id,
                "status": refusal.status.as_str(),
                "code": refusal.code,
                "title": refusal.status.canonical_reason().unwrap_or("Refused"),
                "detail": crate::redact::redact_text(&refusal.detail),
            }]
        })
        .to_string();
        let mut response = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-request-id: {id}\r\nconnection: close\r\n",
            refusal.status.as_str(),
            refusal.status.canonical_reason().unwrap_or(""),
            body.len()
        );
        if refusal.status == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
            response.push_str(&format!("proxy-authenticate: {PROXY_CHALLENGE}\r\n"));
        }
        response.push_str("\r\n");
        response.push_str(&body);
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    }

    #[allow(clippy::too_many_arguments, reason = "one record's fields")]
    async fn audit(
        &self,
        id: &http::HeaderValue,
        peer: SocketAddr,
        target: Option<&Target>,
        workload: Option<Arc<str>>,
        status: StatusCode,
        reason: &'static str,
        detail: &str,
    ) {
        if !self.audit.is_enabled() {
            return;
        }
        let Some(target) = target else {
            return;
        };
        let mut record = AuditRecord::new(
            EventStage::ResponseComplete,
            id.to_str().unwrap_or("0"),
            "EgressConnect",
        );
        record.client_address = Some(peer);
        record.status = Some(status.as_u16());
        record.egress = Some(EgressInfo {
            host: target.host.clone(),
            port: target.port,
            workload: workload.as_deref().map(str::to_owned),
            refused: Some(reason),
        });
        record.decision = Some(crate::audit::DecisionInfo {
            result: crate::audit::DecisionResult::Deny,
            decided_by: crate::model::DecidedBy::Egress,
            rule_ids: Vec::new(),
            explanation: Some(crate::redact::redact_text(detail).into_owned()),
            dry_run_findings: Vec::new(),
            warnings: Vec::new(),
        });
        let event = AuditEvent::new(self.source, EventType::EgressRefused, record);
        if let Err(err) = self.audit.emit(&event).await {
            tracing::error!(error = %err, "Audit of a refused egress failed");
        }
    }
}

fn count(metrics: &Metrics, result: &'static str) {
    metrics.egress.get_or_create(&ResultLabels { result }).inc();
}

/// The `host:port` of an absolute-form request target (`http://host[:port]/…`), if it is one.
fn absolute_target(target: &str) -> Option<Target> {
    let uri: http::Uri = target.parse().ok()?;
    let scheme = uri.scheme_str()?;
    let authority = uri.authority()?;
    let port = authority
        .port_u16()
        .unwrap_or(if scheme.eq_ignore_ascii_case("https") {
            443
        } else {
            80
        });
    Target::parse(&format!("{}:{port}", authority.host()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_form_targets_name_their_host_and_port() {
        assert_eq!(
            absolute_target("http://api.confluent.cloud/iam/v2/api-keys"),
            Target::parse("api.confluent.cloud:80")
        );
        assert_eq!(
            absolute_target("https://Example.com:8443/"),
            Target::parse("example.com:8443")
        );
        assert_eq!(absolute_target("/iam/v2/api-keys"), None);
        assert_eq!(absolute_target("api.confluent.cloud:443"), None);
    }
}
