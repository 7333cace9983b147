//! The audit event: a CloudEvents 1.0 JSON envelope around an [`AuditRecord`].
//!
//! The request pipeline fills an `AuditRecord` (who, what, on what, decided how, by which rule,
//! with what result) and wraps it with [`AuditEvent::new`], which mints the event id and time.
//! `schemas/audit-event.schema.json` describes the resulting JSON; every event the tests emit is
//! validated against it.
//!
//! Envelope (CloudEvents 1.0 §3.1): `specversion` "1.0", `id` (32 hex characters from the system
//! RNG), `source` (`keygate://<instance>`), `type` (`io.keygate.apikey.<verb>` or
//! `io.keygate.http.request`), `time` (RFC 3339, UTC, microseconds), `datacontenttype`
//! "application/json", `data`. The file sink adds two extension attributes: `sequence` (the
//! CloudEvents *sequence* extension: a 20-digit zero-padded decimal string, so lexicographic order
//! is numeric order) and `keygateprevhash` (SHA-256 hex of the previous record's line); other sinks
//! send events without them (see `audit/chain.rs`).
//!
//! `data` mirrors Confluent's own audit field names where one exists (docs/confluent-api.md §9: `methodName`,
//! `requestId`, `clientAddress`, camelCase throughout) so the two trails correlate.
//!
//! What this deliberately does not hold: credentials, request or response bodies, secrets of
//! created keys. No field here takes a [`crate::redact::Secret`]; and every sink scrubs the encoded
//! event with [`crate::redact::redact_text`] anyway, in case a caller copied a secret into free text.

use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::model::Action;
use crate::model::DecidedBy;

/// CloudEvents version of every event (CloudEvents 1.0 §3.1.1 `specversion`).
pub const SPEC_VERSION: &str = "1.0";

/// Media type of `data` (CloudEvents 1.0 §3.1.1 `datacontenttype`).
pub const DATA_CONTENT_TYPE: &str = "application/json";

/// Where `/proc` exposes the host name, used when no instance id is configured.
const HOSTNAME_FILE: &str = "/proc/sys/kernel/hostname";

/// Instance id used when neither configuration nor the host name provides one.
const FALLBACK_INSTANCE_ID: &str = "keygate";

// === impl EventSource ===

/// The CloudEvents `source` of every event this instance emits: `keygate://<instance id>`.
///
/// Cheap to clone; build it once at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSource(Arc<str>);

impl EventSource {
    /// `keygate://<instance_id>`. Characters outside `A–Za–z0–9.-_` are replaced with `-` so the
    /// result is always a valid URI reference (CloudEvents 1.0 §3.1.1 `source`).
    pub fn new(instance_id: &str) -> Self {
        let id: String = instance_id
            .trim()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let id = if id.is_empty() {
            FALLBACK_INSTANCE_ID
        } else {
            &id
        };
        EventSource(Arc::from(format!("keygate://{id}")))
    }

    /// The source for this host: `keygate://<hostname>` (from `/proc`), or `keygate://keygate`
    /// where the host name cannot be read.
    pub fn from_hostname() -> Self {
        let host = std::fs::read_to_string(HOSTNAME_FILE).unwrap_or_default();
        EventSource::new(&host)
    }

    /// The URI as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Serialize for EventSource {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

// === impl EventType ===

/// The CloudEvents `type` of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EventType {
    /// `POST /iam/v2/api-keys`.
    #[serde(rename = "io.keygate.apikey.create")]
    ApiKeyCreate,
    /// `GET /iam/v2/api-keys`.
    #[serde(rename = "io.keygate.apikey.list")]
    ApiKeyList,
    /// `GET /iam/v2/api-keys/{id}`.
    #[serde(rename = "io.keygate.apikey.get")]
    ApiKeyGet,
    /// `PATCH /iam/v2/api-keys/{id}`.
    #[serde(rename = "io.keygate.apikey.update")]
    ApiKeyUpdate,
    /// `DELETE /iam/v2/api-keys/{id}`.
    #[serde(rename = "io.keygate.apikey.delete")]
    ApiKeyDelete,
    /// Any ungoverned request (audited only when configured).
    #[serde(rename = "io.keygate.http.request")]
    HttpRequest,
    /// The egress listener refused a `CONNECT` (or a cleartext request): a host on no list, a
    /// destination it may not reach, a mismatched SNI, a failed proxy authentication.
    #[serde(rename = "io.keygate.egress.refused")]
    EgressRefused,
    /// Reconcile: a key exists upstream that never passed keygate.
    #[serde(rename = "io.keygate.apikey.unmanaged")]
    ApiKeyUnmanaged,
    /// Reconcile: a key created through keygate is gone upstream without a recorded delete.
    #[serde(rename = "io.keygate.apikey.vanished")]
    ApiKeyVanished,
    /// Reconcile: a create whose outcome keygate never recorded.
    #[serde(rename = "io.keygate.apikey.unresolved")]
    ApiKeyUnresolved,
    /// Reconcile: the keys that predate keygate, accepted once as a baseline.
    #[serde(rename = "io.keygate.apikey.baseline")]
    ApiKeyBaseline,
}

impl EventType {
    /// The `type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::ApiKeyCreate => "io.keygate.apikey.create",
            EventType::ApiKeyList => "io.keygate.apikey.list",
            EventType::ApiKeyGet => "io.keygate.apikey.get",
            EventType::ApiKeyUpdate => "io.keygate.apikey.update",
            EventType::ApiKeyDelete => "io.keygate.apikey.delete",
            EventType::HttpRequest => "io.keygate.http.request",
            EventType::EgressRefused => "io.keygate.egress.refused",
            EventType::ApiKeyUnmanaged => "io.keygate.apikey.unmanaged",
            EventType::ApiKeyVanished => "io.keygate.apikey.vanished",
            EventType::ApiKeyUnresolved => "io.keygate.apikey.unresolved",
            EventType::ApiKeyBaseline => "io.keygate.apikey.baseline",
        }
    }
}

impl From<Action> for EventType {
    fn from(action: Action) -> Self {
        match action {
            Action::CreateApiKey => EventType::ApiKeyCreate,
            Action::ListApiKeys => EventType::ApiKeyList,
            Action::GetApiKey => EventType::ApiKeyGet,
            Action::UpdateApiKey => EventType::ApiKeyUpdate,
            Action::DeleteApiKey => EventType::ApiKeyDelete,
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Confluent's `methodName` for a governed action (docs/confluent-api.md §9: third-party parsers see
/// `CreateAPIKey` for key creation), for [`AuditRecord::method_name`].
pub fn method_name(action: Action) -> &'static str {
    match action {
        Action::CreateApiKey => "CreateAPIKey",
        Action::ListApiKeys => "ListAPIKeys",
        Action::GetApiKey => "GetAPIKey",
        Action::UpdateApiKey => "UpdateAPIKey",
        Action::DeleteApiKey => "DeleteAPIKey",
    }
}

// === data ===

/// The `data` of an audit event. Build it with [`AuditRecord::new`] and struct update syntax;
/// `None` fields and empty lists are left out of the JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// Which point of the request this event records.
    pub stage: Stage,
    /// The request id (`x-request-id`), also the `id` of any error body keygate returned.
    pub request_id: String,
    /// Confluent-style operation name, e.g. `CreateAPIKey` (see [`method_name`]); for ungoverned
    /// requests the lead's choice, e.g. `HttpRequest`.
    pub method_name: Cow<'static, str>,
    /// Who made the request, once identity succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<PrincipalInfo>,
    /// The downstream peer address (Confluent: `requestMetadata.clientAddress`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_address: Option<SocketAddr>,
    /// HTTP method and path (without query string) as received.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpInfo>,
    /// What the request acts on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// What keygate decided and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<DecisionInfo>,
    /// Status keygate sent downstream (in `response_complete` events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Status the upstream answered with, if the request was forwarded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<u16>,
    /// The id of a key created by this request. Never its secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_key_id: Option<String>,
    /// How the exchange ended when it did not end with keygate's answer handed to the caller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// Revision of the policy set that decided (so a decision can be replayed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_revision: Option<String>,
    /// What a governed decision was made from, secret-free, for `keygate policy replay`
    /// (`response_complete` events; the decision stage's `policy::input::DecisionInput`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision_input: Option<RawJson>,
    /// Time from request received to this event, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// For requests that came through the egress listener, and refused egress: the target and
    /// the proxy-authenticated workload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress: Option<EgressInfo>,
    /// What a reconcile run found (reconcile events only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconcile: Option<ReconcileInfo>,
}

/// A JSON value encoded once, where it is built, and embedded as it is.
#[derive(Debug, Clone)]
pub struct RawJson(pub Box<serde_json::value::RawValue>);

impl RawJson {
    /// `value`, encoded; `None` if it cannot be.
    pub fn of<T: Serialize>(value: &T) -> Option<RawJson> {
        serde_json::value::to_raw_value(value).ok().map(RawJson)
    }

    /// `json`, a JSON text, as it is; `None` if it is not JSON.
    pub fn from_json(json: String) -> Option<RawJson> {
        serde_json::value::RawValue::from_string(json)
            .ok()
            .map(RawJson)
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Serialize for RawJson {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// The egress side of an event (see [`AuditRecord::egress`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressInfo {
    /// The `CONNECT` target host (or the host of a refused cleartext request).
    pub host: String,
    /// Its port.
    pub port: u16,
    /// The workload named by `Proxy-Authorization` (its directory principal), when proxy
    /// authentication is on. Never the credential.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    /// Why egress was refused (refused events only): `not_allowed`, `cleartext`,
    /// `destination_forbidden`, `sni_missing`, `sni_mismatch`, `proxy_auth`, `bad_request`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<&'static str>,
}

impl AuditRecord {
    /// A record with only the required fields set.
    pub fn new(
        stage: Stage,
        request_id: impl Into<String>,
        method_name: impl Into<Cow<'static, str>>,
    ) -> Self {
        AuditRecord {
            stage,
            request_id: request_id.into(),
            method_name: method_name.into(),
            principal: None,
            client_address: None,
            http: None,
            target: None,
            decision: None,
            status: None,
            upstream_status: None,
            created_key_id: None,
            outcome: None,
            policy_revision: None,
            decision_input: None,
            latency_ms: None,
            egress: None,
            reconcile: None,
        }
    }
}

/// How an exchange ended when it did not end with keygate's answer handed to the caller (a
/// `response_complete` event without one did).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The upstream sent a response head but not its body within `upstream.body_timeout` (or
    /// paused longer than `upstream.body_idle_timeout`); the caller got 504.
    UpstreamBodyTimeout,
    /// The upstream's response body broke off; the caller got 502.
    UpstreamBodyError,
    /// The caller disconnected before its response was complete. A create that had been
    /// forwarded was followed to its end: `upstreamStatus` and `createdKeyId` say what the
    /// upstream did (a key whose secret nobody received).
    ClientGone,
}

/// The reconcile part of an `unmanaged`, `vanished`, `unresolved` or `baseline` event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileInfo {
    /// Why this is a finding, in words.
    pub reason: String,
    /// `metadata.created_at` of the key upstream (unmanaged, unresolved with a match), or when
    /// keygate recorded its create (vanished).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_created_at: Option<String>,
    /// Unresolved: the request id of the create whose outcome was never recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_request_id: Option<String>,
    /// Unresolved: when that create was received.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_time: Option<String>,
    /// Unresolved: how many upstream keys matched the create (0: none; the key is in
    /// `target.keyId` when there is one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidates: Option<u64>,
    /// Baseline: how many keys were accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_keys: Option<u64>,
    /// Baseline: SHA-256 (hex) of the baseline file, so a later edit of it is detected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_sha256: Option<String>,
}

/// Which point of a request an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Decided, before forwarding (a create's is committed while it is forwarded, and the
    /// response waits for it).
    RequestReceived,
    /// After the response was sent downstream.
    ResponseComplete,
    /// A finding (or the baseline) of a reconcile run, not a request.
    Reconcile,
}

/// The caller, as established by the identity stage. Never a credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PrincipalInfo {
    /// `u-…`, `sa-…`, `pool-…`.
    pub id: String,
    /// What kind of identity `id` is.
    pub kind: PrincipalKind,
    /// How the caller proved it.
    pub authentication_method: AuthMethod,
    /// The API key id for Basic authentication (the username; never the secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The company identity that acted as `id` (JWT, client certificate, OAuth exchange).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalInfo>,
}

/// The external side of a principal (see [`PrincipalInfo::external`]). No secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalInfo {
    /// The external principal.
    pub id: String,
    /// `jwt`, `mtls` or `oauth`.
    pub source: &'static str,
    /// The issuer URL or the client certificate's issuer.
    pub issuer: String,
    /// The key id of the upstream credential keygate called Confluent with, when brokered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_key_id: Option<String>,
    /// The Confluent principal it acts as; `null` when it has none (keygate-side bindings only).
    pub acting_as: Option<String>,
}

/// Kind of Confluent identity (docs/confluent-api.md §4 prefixes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    /// `u-…`
    User,
    /// `sa-…`
    ServiceAccount,
    /// `pool-…`
    IdentityPool,
    /// An external identity with no Confluent principal (keygate-side bindings only).
    External,
}

impl From<crate::model::PrincipalKind> for PrincipalKind {
    fn from(kind: crate::model::PrincipalKind) -> Self {
        use crate::model::PrincipalKind as Kind;
        match kind {
            Kind::User => PrincipalKind::User,
            Kind::ServiceAccount => PrincipalKind::ServiceAccount,
            Kind::IdentityPool => PrincipalKind::IdentityPool,
            Kind::External => PrincipalKind::External,
        }
    }
}

/// How the caller authenticated to keygate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// `Authorization: Basic` with a Cloud or Global API key.
    Basic,
    /// `Authorization: Bearer` with a JWT.
    Bearer,
    /// `Authorization: Bearer` with a Confluent session token (the Confluent CLI after
    /// `confluent login`), resolved by Confluent's `GET /api/me`.
    Session,
    /// A verified client certificate.
    Mtls,
}

/// Method and path of the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpInfo {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path only: a query string may carry tokens and is left out.
    pub path: String,
}

/// What a request acts on (Confluent: `cloudResources`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// Owner of the key being created (`spec.owner.id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The resource the key is for (`lkc-…`, `cloud`, `global`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    /// The key type the policy derived from the resource (`kafka`, `cloud`, `global`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    /// Environment of the resource (`env-…`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// The key addressed by get, update or delete (or found by reconcile).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// `spec.display_name` of a create (or of a key found by reconcile), so that a create whose
    /// outcome was never recorded can be matched to the key upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// A decision and its explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DecisionInfo {
    /// Allowed, denied, or failed (errors deny, but are recorded as errors).
    pub result: DecisionResult,
    /// The stage that decided.
    pub decided_by: DecidedBy,
    /// Matrix rows or policy ids that decided.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rule_ids: Vec<String>,
    /// Why, in words a developer understands (also in the 403 body).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explanation: Option<String>,
    /// Ids of `dry-run` policies that would have denied.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dry_run_findings: Vec<String>,
    /// Warnings of an allowed request (a cluster near its API-key quota), in words.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Outcome of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionResult {
    /// Forwarded (or would be).
    Allow,
    /// Refused by a rule.
    Deny,
    /// Refused because something failed (fail closed).
    Error,
}

// === impl AuditEvent ===

/// One CloudEvents 1.0 audit event. Build with [`AuditEvent::new`]; hand to
/// [`crate::audit::Auditor::emit`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    specversion: &'static str,
    id: String,
    source: EventSource,
    #[serde(rename = "type")]
    event_type: EventType,
    time: String,
    datacontenttype: &'static str,
    data: AuditRecord,
}

impl AuditEvent {
    /// Wraps `data`, minting a fresh id and the current time.
    pub fn new(source: &EventSource, event_type: EventType, data: AuditRecord) -> Self {
        AuditEvent {
            specversion: SPEC_VERSION,
            id: new_event_id(),
            source: source.clone(),
            event_type,
            time: rfc3339_micros(SystemTime::now()),
            datacontenttype: DATA_CONTENT_TYPE,
            data,
        }
    }

    /// The event id (32 lowercase hex characters).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The CloudEvents `type`.
    pub fn event_type(&self) -> EventType {
        self.event_type
    }

    /// The RFC 3339 time.
    pub fn time(&self) -> &str {
        &self.time
    }

    /// The record.
    pub fn data(&self) -> &AuditRecord {
        &self.data
    }
}

/// A fresh event id: 32 lower-case hex characters (see [`crate::id::unique_hex`]); CloudEvents
/// asks `source` + `id` to be unique.
fn new_event_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    crate::id::unique_hex(&COUNTER)
        .iter()
        .map(|&b| char::from(b))
        .collect()
}

/// `t` as RFC 3339 in UTC with microseconds, e.g. `2025-07-30T12:34:56.789012Z`.
/// Times before 1970 are clamped to the epoch.
pub(crate) fn rfc3339_micros(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t.max(UNIX_EPOCH)).to_string()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn time_is_rfc3339_utc_with_microseconds() {
        let t = UNIX_EPOCH + Duration::new(1_753_878_896, 789_012_345);
        assert_eq!(rfc3339_micros(t), "2025-07-30T12:34:56.789012Z");
        assert_eq!(rfc3339_micros(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn time_handles_leap_days_and_year_ends() {
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339_micros(leap), "2000-02-29T00:00:00.000000Z");
        let eoy = UNIX_EPOCH + Duration::from_secs(1_735_689_599); // 2024-12-31 23:59:59
        assert_eq!(rfc3339_micros(eoy), "2024-12-31T23:59:59.000000Z");
    }

    #[test]
    fn event_ids_are_32_hex_and_distinct() {
        let a = new_event_id();
        let b = new_event_id();
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }

    #[test]
    fn source_is_a_keygate_uri_with_safe_characters() {
        assert_eq!(
            EventSource::new("gw-1.prod").as_str(),
            "keygate://gw-1.prod"
        );
        assert_eq!(EventSource::new("a b/c\n").as_str(), "keygate://a-b-c");
        assert_eq!(EventSource::new("  ").as_str(), "keygate://keygate");
        assert!(EventSource::from_hostname()
            .as_str()
            .starts_with("keygate://"));
    }

    #[test]
    fn envelope_has_cloudevents_attributes_and_camel_case_data() {
        let source = EventSource::new("test");
        let record = AuditRecord {
            principal: Some(PrincipalInfo {
                id: "sa-123".into(),
                kind: PrincipalKind::ServiceAccount,
                authentication_method: AuthMethod::Basic,
                key_id: Some("ABCD1234567890AB".into()),
                external: None,
            }),
            ..AuditRecord::new(
                Stage::RequestReceived,
                "req-1",
                method_name(Action::CreateApiKey),
            )
        };
        let event = AuditEvent::new(&source, Action::CreateApiKey.into(), record);
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["type"], "io.keygate.apikey.create");
        assert_eq!(json["source"], "keygate://test");
        assert_eq!(json["datacontenttype"], "application/json");
        assert_eq!(json["id"], event.id());
        assert_eq!(json["data"]["methodName"], "CreateAPIKey");
        assert_eq!(json["data"]["stage"], "request_received");
        assert_eq!(json["data"]["principal"]["kind"], "service_account");
        assert_eq!(json["data"]["principal"]["authenticationMethod"], "basic");
        assert!(json["data"].get("decision").is_none());
    }
}
