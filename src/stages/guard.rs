//! The guard as a pipeline stage: classify every request; on governed routes, check headers, read
//! the body whole (bounded) and parse it strictly, then forward exactly the bytes received.

use http::Request;

use super::Stage;
use crate::body::Body;
use crate::error::GatewayError;
use crate::guard::{
    check_headers, classify, declared_content_length, parse_body, read_body, Route,
};
use crate::model::RouteClass;
use crate::state::RequestState;

/// See the module doc.
#[derive(Debug, Clone)]
pub struct GuardStage {
    max_body_bytes: usize,
}

impl GuardStage {
    /// A guard reading governed bodies up to `max_body_bytes`.
    pub fn new(max_body_bytes: usize) -> Self {
        GuardStage { max_body_bytes }
    }
}

impl Stage for GuardStage {
    fn name(&self) -> &'static str {
        "guard"
    }

    /// Ungoverned requests (the bulk) pass without a guard span; classifying is a few dozen
    /// nanoseconds and allocation-free, so a governed one is simply classified again below.
    fn applies_to(&self, request: &Request<Body>, _state: &RequestState) -> bool {
        !matches!(
            classify(request.method(), request.uri()),
            Ok(Route::Ungoverned)
        )
    }

    async fn apply(
        &self,
        request: &mut Request<Body>,
        state: &mut RequestState,
    ) -> Result<(), GatewayError> {
        let route = match classify(request.method(), request.uri()) {
            Ok(Route::Ungoverned) => return Ok(()),
            Ok(Route::Governed(route)) => route,
            Err(err) => {
                // Only requests aimed at the governed endpoints are refused here.
                state.route = RouteClass::Governed;
                return Err(err.into());
            }
        };
        state.route = RouteClass::Governed;
        state.action = Some(route.action);
        state.key_id = route.key_id.clone();
        check_headers(request.method(), request.headers())?;
        let bytes = read_body(
            std::mem::take(request.body_mut()),
            declared_content_length(request.headers()),
            self.max_body_bytes,
        )
        .await?;
        let parsed = parse_body(route.action, &bytes)?;
        // Decide on the parsed body, forward the very bytes that were parsed.
        *request.body_mut() = Body::full(bytes);
        state.governed = Some(route);
        state.body = Some(parsed);
        Ok(())
    }
}
