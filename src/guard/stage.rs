//! The guard as a pipeline stage: classify every request; on governed routes, check headers, read
//! the body whole (bounded) and parse it strictly, then forward exactly the bytes received.

use std::sync::Arc;

use http::Request;

use super::{check_headers, classify, declared_content_length, parse_body, read_body, Route};
use crate::body::Body;
use crate::context::RequestContext;
use crate::error::GatewayError;
use crate::model::RouteClass;
use crate::stage::Stage;

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
    fn applies_to(&self, request: &Request<Body>) -> bool {
        !matches!(
            classify(request.method(), request.uri()),
            Ok(Route::Ungoverned)
        )
    }

    async fn apply(
        &self,
        request: &mut Request<Body>,
        ctx: Arc<RequestContext>,
    ) -> Result<(), GatewayError> {
        let route = match classify(request.method(), request.uri()) {
            Ok(Route::Ungoverned) => return Ok(()),
            Ok(Route::Governed(route)) => route,
            Err(err) => {
                // Only requests aimed at the governed endpoints are refused here.
                ctx.state().route = RouteClass::Governed;
                return Err(err.into());
            }
        };
        {
            let mut state = ctx.state();
            state.route = RouteClass::Governed;
            state.action = Some(route.action);
            state.key_id = route.key_id.clone();
        }
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
        request.extensions_mut().insert(route);
        request.extensions_mut().insert(parsed);
        Ok(())
    }
}
