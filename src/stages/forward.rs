//! The end of the chain: forwards every request that reaches it (`proxy::forward` does the
//! exchange), records the upstream's answer in the request's state, settles the key counts, and
//! runs a governed create's exchange on a task of its own so it ends the same way whether or not
//! the caller stays.

use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderValue, HOST};
use http::{Request, Response, StatusCode};

use super::Chain;
use crate::body::Body;
use crate::error::GatewayError;
use crate::model::Action;
use crate::policy::quota::Outcome;
use crate::proxy::forward::{ask_for_identity_encoding, forward, needs_rewrite, read_create};
use crate::proxy::links::Links;
use crate::proxy::{ProxyError, Upstream};
use crate::state::{InFlight, Landed, RequestState};
use crate::telemetry::metrics::KindLabels;
use crate::telemetry::{trace, Metrics};

/// The end of the chain: forwards every request that reaches it.
#[derive(Debug, Clone)]
pub struct Forward {
    upstream: Arc<Upstream>,
    metrics: Arc<Metrics>,
    /// Rewrites the upstream's links in responses to keygate's origin (`None`: off).
    links: Option<Arc<Links>>,
    /// How long a governed create's response body may take (`upstream.body_timeout`).
    body_timeout: Duration,
    /// Where a verified OAuth exchange's access token is bound (`identity::oauth`).
    oauth: Option<Arc<crate::identity::oauth::Bindings>>,
}

impl Forward {
    /// Binds the access tokens of verified OAuth exchanges in `bindings`.
    pub fn with_oauth(mut self, bindings: Option<Arc<crate::identity::oauth::Bindings>>) -> Self {
        self.oauth = bindings;
        self
    }

    /// A verified exchange's answer: read whole (bounded), its access token bound to the
    /// verified identity, passed on byte for byte.
    async fn bind_exchange(
        &self,
        state: &RequestState,
        response: Response<Body>,
    ) -> Result<Response<Body>, ProxyError> {
        use http_body_util::{BodyExt, Limited};
        let (Some(bindings), Some(principal), true) = (
            &self.oauth,
            &state.principal,
            response.status() == StatusCode::OK,
        ) else {
            return Ok(response);
        };
        let (parts, body) = response.into_parts();
        let bytes = tokio::time::timeout(
            self.body_timeout,
            Limited::new(body, crate::identity::oauth::MAX_RESPONSE_BYTES).collect(),
        )
        .await
        .map_err(|_| ProxyError::BodyTimeout(self.body_timeout))?
        .map_err(|e| ProxyError::Protocol(format!("reading the token exchange's answer: {e}")))?
        .to_bytes();
        match crate::identity::oauth::parse_response(&bytes) {
            Some((token, lifetime)) => bindings.bind(&token, principal.clone(), lifetime),
            None => tracing::warn!(
                request.id = %state.id_str(),
                "The token exchange's answer has no access token; nothing bound"
            ),
        }
        Ok(Response::from_parts(parts, Body::full(bytes)))
    }

    /// The forwarder over a shared upstream client.
    pub fn new(
        upstream: Arc<Upstream>,
        metrics: Arc<Metrics>,
        links: Option<Arc<Links>>,
        body_timeout: Duration,
    ) -> Self {
        Forward {
            upstream,
            metrics,
            links,
            body_timeout,
            oauth: None,
        }
    }

    /// A governed create's exchange, on a task of its own: the upstream's answer, read whole
    /// (bounded in size and by `upstream.body_timeout`) for the new key's id, and the key counts
    /// settled with it. The create ends the same way whether or not the caller stays: the request
    /// state keeps the receiving end ([`RequestState::in_flight`]), and whoever holds the state
    /// (the chain, or the pipeline's drop guard when the caller left) lands it.
    fn spawn_create(
        &self,
        request: Request<Body>,
        id: HeaderValue,
        hold: Option<crate::policy::quota::Hold>,
    ) -> InFlight {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let upstream = self.upstream.clone();
        let timeout = self.body_timeout;
        let exchange = async move {
            let landed = match forward(&upstream, request, &id).await {
                Ok(response) => {
                    let status = response.status();
                    let (result, created_key_id) = read_create(response, timeout).await;
                    Landed {
                        status: Some(status),
                        result,
                        created_key_id,
                    }
                }
                Err(err) => Landed {
                    status: None,
                    result: Err(err),
                    created_key_id: None,
                },
            };
            if let Some(hold) = hold {
                hold.settle(outcome_of(landed.status, landed.result.as_ref().err()));
            }
            // Nobody waiting: the receiver was dropped with a state that no longer matters.
            let _ = tx.send(landed);
        };
        tokio::spawn(trace::in_span(exchange, tracing::Span::current()));
        InFlight(rx)
    }
}

/// Waits for the forwarded create's exchange kept in `state` (`Forward::spawn_create`) and
/// records the upstream's status and the key it created there. The exchange stays in `state`
/// while this waits: dropped, the wait can be taken up again by the next holder of the state.
pub async fn land(state: &mut RequestState) -> Result<Response<Body>, ProxyError> {
    let Some(in_flight) = state.in_flight.as_mut() else {
        return Err(ProxyError::Protocol(
            "no upstream exchange in flight".into(),
        ));
    };
    let landed = (&mut in_flight.0).await;
    state.in_flight = None;
    let landed = landed.map_err(|_| {
        ProxyError::Protocol("the upstream exchange ended without an answer".into())
    })?;
    state.upstream_status = landed.status;
    state.created_key_id = landed.created_key_id;
    landed.result
}

impl Chain for Forward {
    async fn run(
        &self,
        request: &mut Request<Body>,
        state: &mut RequestState,
    ) -> Result<Response<Body>, GatewayError> {
        let mut request = std::mem::take(request);
        // INVARIANT: a governed request is forwarded only with the decision stage's permit.
        if state.governed.is_some() && state.permit.is_none() {
            return Err(GatewayError::Internal(
                "governed request reached the forwarder without a decision",
            ));
        }
        let id = state.id.clone();
        // A request through the egress listener keeps the upstream's names (the caller asked for
        // the upstream's host), so its links are not rewritten to keygate's origin.
        let via_egress = state.egress.is_some();
        let links = self
            .links
            .as_ref()
            .filter(|_| !via_egress)
            .and_then(|links| {
                let target = links.target(
                    request.headers().get(HOST),
                    request.uri().authority().map(|a| a.as_str()),
                )?;
                ask_for_identity_encoding(request.headers_mut());
                Some((links.clone(), request.method().clone(), target))
            });
        let create = state
            .governed
            .as_ref()
            .is_some_and(|r| r.action == Action::CreateApiKey);
        let sent = if create {
            let hold = state.quota_hold.take();
            let in_flight = self.spawn_create(request, id, hold);
            state.in_flight = Some(in_flight);
            land(state).await
        } else {
            let mut sent = forward(&self.upstream, request, &id).await;
            if let Ok(response) = &sent {
                state.upstream_status = Some(response.status());
            }
            if state.oauth_exchange {
                if let Ok(response) = sent {
                    sent = Box::pin(self.bind_exchange(state, response)).await;
                }
            }
            if let Some(hold) = state.quota_hold.take() {
                hold.settle(outcome_of(
                    sent.as_ref().ok().map(Response::status),
                    sent.as_ref().err(),
                ));
            }
            sent
        };
        match sent {
            Ok(response) => {
                if response.status() == StatusCode::TOO_MANY_REQUESTS {
                    self.metrics.upstream_ratelimited.inc();
                }
                match links {
                    // Boxed: only responses that carry links pay for reading a body here.
                    Some((links, method, target)) if needs_rewrite(&response) => {
                        Box::pin(links.rewrite(
                            &method,
                            target,
                            response,
                            &self.metrics.link_rewrite_skipped,
                        ))
                        .await
                        .map_err(GatewayError::from)
                    }
                    _ => Ok(response),
                }
            }
            Err(err) => {
                self.metrics
                    .upstream_errors
                    .get_or_create(&KindLabels { kind: err.kind() })
                    .inc();
                Err(err.into())
            }
        }
    }
}

/// How a forwarded create or delete ended, for the key counts: not connected, nothing happened
/// upstream; anything later (a timeout, a lost connection, a body that did not arrive) it may
/// have (counted, to fail closed).
fn outcome_of(status: Option<StatusCode>, err: Option<&ProxyError>) -> Outcome {
    match (status, err) {
        (_, Some(ProxyError::Connect(_) | ProxyError::Tls(_) | ProxyError::ConnectTimeout(_))) => {
            Outcome::Refused
        }
        (Some(status), None) if status.is_success() => Outcome::Succeeded,
        (Some(_), None) => Outcome::Refused,
        _ => Outcome::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_forwarding_future_stays_small() {
        // Every request's future embeds the forwarder's, and is copied into its box per request.
        // As async fns taking the request by value, forward → Upstream::send → Pool::send kept
        // the request and the exchange several times over: 6.8 KB for `forward` alone.
        let config = crate::config::Config::from_toml(
            "[listener]\naddress = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n\
             [authz]\norg_id = \"9bb441c4-edef-46ac-8a41-c49e44a3fd9a\"\n\
             bindings = \"b.toml\"\ninventory = \"i.toml\"\n",
        )
        .unwrap();
        let upstream = Arc::new(Upstream::new(&config.upstream).unwrap());
        let id = HeaderValue::from_static("id");
        let forwarding = forward(&upstream, Request::new(Body::Empty), &id);
        assert!(
            std::mem::size_of_val(&forwarding) < 1024,
            "forward: {} bytes",
            std::mem::size_of_val(&forwarding)
        );
        let forwarder = Forward::new(
            upstream.clone(),
            Arc::new(Metrics::new()),
            None,
            std::time::Duration::from_secs(10),
        );
        let mut request = Request::new(Body::Empty);
        let mut state = RequestState::for_test(http::Method::GET);
        let running = forwarder.run(&mut request, &mut state);
        assert!(
            std::mem::size_of_val(&running) < 2048,
            "Forward::run: {} bytes",
            std::mem::size_of_val(&running)
        );
        // Nothing listens on port 1: the exchange fails as a connect error, not a hang.
        drop(running);
        let err = forwarding.await.unwrap_err();
        assert_eq!(err.kind(), "connect");
    }
}
