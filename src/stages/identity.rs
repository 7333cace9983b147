//! The identity stage: on governed routes, establish the verified principal (401/503 otherwise).
//! Ungoverned requests pass untouched, whatever credential they carry — except a brokered
//! caller's (its credential is swapped for keygate's, on the brokered routes only) and the
//! Terraform OAuth token exchange (its subject token is verified). Its trace span records whether
//! the identity cache answered (`keygate.identity.cache`: `hit`, `miss` or `failure`).
//!
//! Brokering (`identity::broker`): when the principal is an external identity with a brokered
//! credential, the route must be on the broker's allowlist (else 403), and the caller's
//! `Authorization` is replaced by the upstream credential here, before the decision stage's own
//! lookups and the forwarder, which send the request's `Authorization` as it then is.

use std::sync::Arc;

use http::header::AUTHORIZATION;
use http::Request;
use http_body_util::{BodyExt, Limited};

use super::Stage;
use crate::body::Body;
use crate::error::{Denial, GatewayError};
use crate::identity::{mtls::ClientCertificate, oauth, Authenticator, IdentityError, Lookup};
use crate::model::{DecidedBy, Principal};
use crate::state::RequestState;
use crate::telemetry::metrics::ResultLabels;
use crate::telemetry::Metrics;

/// The rule id of a brokered caller's refusal on a route that is not brokered.
pub const NOT_BROKERED: &str = "broker.route_not_brokered";

/// See the module doc.
#[derive(Debug)]
pub struct AuthenticateStage {
    authenticator: Arc<Authenticator>,
    metrics: Arc<Metrics>,
}

impl AuthenticateStage {
    /// The stage over a shared authenticator.
    pub fn new(authenticator: Arc<Authenticator>, metrics: Arc<Metrics>) -> Self {
        AuthenticateStage {
            authenticator,
            metrics,
        }
    }

    fn count(&self, result: &'static str) {
        self.metrics
            .identity
            .get_or_create(&ResultLabels { result })
            .inc();
        crate::telemetry::trace::annotate(|| {
            [opentelemetry::KeyValue::new(
                "keygate.identity.cache",
                result,
            )]
        });
    }

    /// A brokered principal: the route must be brokered, and the caller's `Authorization` is
    /// replaced by the upstream credential.
    fn broker(
        &self,
        request: &mut Request<Body>,
        principal: &Principal,
    ) -> Result<(), GatewayError> {
        let Some(key_id) = principal
            .external()
            .and_then(|e| e.broker_key_id.as_deref())
        else {
            return Ok(());
        };
        if !self
            .authenticator
            .brokered_route(request.method(), request.uri().path())
        {
            return Err(GatewayError::Denied(Box::new(Denial {
                explanation: format!(
                    "{} is brokered: keygate calls Confluent on its behalf only on the routes in `identity.broker.routes`, and `{} {}` is not one of them",
                    principal.describe(),
                    request.method(),
                    crate::redact::redact_path(request.uri().path()),
                ),
                rule_ids: vec![NOT_BROKERED.to_owned()],
                pointer: None,
                by: DecidedBy::Identity,
                entries: Vec::new(),
            })));
        }
        let credential = self
            .authenticator
            .broker_credential(key_id)
            .ok_or(GatewayError::Internal("brokered credential missing"))?;
        request
            .headers_mut()
            .insert(AUTHORIZATION, credential.header().clone());
        Ok(())
    }

    /// The Terraform OAuth exchange: the form is read whole, its subject token verified, and the
    /// body put back as it was.
    async fn exchange(
        &self,
        request: &mut Request<Body>,
        state: &mut RequestState,
    ) -> Result<(), GatewayError> {
        let body = std::mem::take(request.body_mut());
        let bytes = Limited::new(body, oauth::MAX_FORM_BYTES)
            .collect()
            .await
            .map_err(|_| {
                IdentityError::Exchange(format!(
                    "the exchange form is unreadable or larger than {} bytes",
                    oauth::MAX_FORM_BYTES
                ))
            })?
            .to_bytes();
        let form =
            oauth::parse_request(&bytes).map_err(|m| IdentityError::Exchange(m.to_owned()))?;
        let outcome = self.authenticator.verify_exchange(&form).await;
        self.count(if outcome.is_ok() { "miss" } else { "failure" });
        state.principal = Some(outcome?);
        state.oauth_exchange = true;
        *request.body_mut() = Body::full(bytes);
        Ok(())
    }
}

impl Stage for AuthenticateStage {
    fn name(&self) -> &'static str {
        "identity"
    }

    fn applies_to(&self, request: &Request<Body>, state: &RequestState) -> bool {
        state.is_governed() || self.authenticator.wants_ungoverned(request)
    }

    async fn apply(
        &self,
        request: &mut Request<Body>,
        state: &mut RequestState,
    ) -> Result<(), GatewayError> {
        let cert = request.extensions().get::<ClientCertificate>().cloned();
        if !state.is_governed() {
            if self.authenticator.is_token_exchange(request) {
                return self.exchange(request, state).await;
            }
            let outcome = self
                .authenticator
                .authenticate_brokered(request.headers(), cert.as_ref())
                .await;
            let principal = match outcome {
                Ok(None) => return Ok(()),
                Ok(Some((principal, lookup))) => {
                    self.count(if lookup == Lookup::Hit { "hit" } else { "miss" });
                    principal
                }
                Err(err) => {
                    self.count("failure");
                    return Err(err.into());
                }
            };
            self.broker(request, &principal)?;
            state.principal = Some(principal);
            return Ok(());
        }
        let outcome = self
            .authenticator
            .authenticate_with(request.headers(), cert.as_ref())
            .await;
        self.count(match &outcome {
            Ok((_, Lookup::Hit)) => "hit",
            Ok((_, Lookup::Miss)) => "miss",
            Err(_) => "failure",
        });
        let (principal, _) = outcome?;
        let brokered = self.broker(request, &principal);
        state.principal = Some(principal);
        brokered
    }
}
