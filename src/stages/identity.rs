//! The identity stage: on governed routes, establish the verified principal (401/503 otherwise).
//! Ungoverned requests pass untouched, whatever credential they carry. Its trace span records
//! whether the identity cache answered (`keygate.identity.cache`: `hit`, `miss` or `failure`).

use std::sync::Arc;

use http::Request;

use super::Stage;
use crate::body::Body;
use crate::error::GatewayError;
use crate::identity::{Authenticator, Lookup};
use crate::state::RequestState;
use crate::telemetry::metrics::ResultLabels;
use crate::telemetry::Metrics;

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
}

impl Stage for AuthenticateStage {
    fn name(&self) -> &'static str {
        "identity"
    }

    fn applies_to(&self, _request: &Request<Body>, state: &RequestState) -> bool {
        state.is_governed()
    }

    async fn apply(
        &self,
        request: &mut Request<Body>,
        state: &mut RequestState,
    ) -> Result<(), GatewayError> {
        let outcome = self.authenticator.authenticate(request.headers()).await;
        let result = match &outcome {
            Ok((_, Lookup::Hit)) => "hit",
            Ok((_, Lookup::Miss)) => "miss",
            Err(_) => "failure",
        };
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
        let (principal, _) = outcome?;
        state.principal = Some(principal);
        Ok(())
    }
}
