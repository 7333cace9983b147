//! Confluent Resource Names: the organisation id, role-binding CRN patterns, resource paths, and
//! whether a pattern covers a resource (docs/confluent-api.md §6).
//!
//! Patterns are parsed into `key=value` segments once, when bindings are loaded; the request path
//! only compares segments (no regex, no allocation). A pattern covers a resource when it equals the
//! resource's CRN or is an ancestor of it by whole segments; a trailing `*` on the last segment is a
//! prefix match on that segment's value. Organisation-level resources (a one-segment path) are
//! therefore covered only by organisation-level patterns.
//!
//! This module does not know which roles matter or where resources live: that is the matrix and the
//! inventory. It sits under the layer-1 decision (`rbac`).

use std::fmt;
use std::sync::Arc;

/// Every CRN keygate understands starts with this; Confluent Cloud uses no other authority.
pub const CRN_PREFIX: &str = "crn://confluent.cloud/";

/// The first segment key of every organisation-rooted CRN.
const ORGANIZATION: &str = "organization";

/// Longest CRN pattern accepted. Confluent ids are at most 255 characters and CRNs are a few
/// segments deep; the bound also keeps segment offsets within `u16`.
const MAX_CRN_LEN: usize = 2048;

/// Deepest resource path keygate builds: organization / environment / cloud-cluster / (kafka|ksql).
const MAX_PATH_DEPTH: usize = 4;

/// Why an organisation id or a CRN pattern was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrnError {
    /// The organisation id is not a UUID.
    #[error("organization id `{id}`: expected the organisation's UUID, like `0b7e1c2d-3f4a-4b5c-8d6e-7f8091a2b3c4`")]
    OrgId {
        /// The rejected id.
        id: String,
    },
    /// The pattern does not start with [`CRN_PREFIX`].
    #[error("crn `{crn}`: must start with `{CRN_PREFIX}`")]
    Prefix {
        /// The rejected pattern.
        crn: String,
    },
    /// The pattern is longer than keygate accepts.
    #[error("crn `{crn}`: longer than {MAX_CRN_LEN} characters")]
    TooLong {
        /// The first characters of the rejected pattern.
        crn: String,
    },
    /// A segment is not `key=value` with a non-empty key and value.
    #[error("crn `{crn}`: segment {index} is not `key=value`")]
    Segment {
        /// The rejected pattern.
        crn: String,
        /// 1-based segment number.
        index: usize,
    },
    /// The first segment is not `organization=<id>`.
    #[error("crn `{crn}`: must start with `organization=<org id>`")]
    NotOrganization {
        /// The rejected pattern.
        crn: String,
    },
    /// A `*` somewhere other than at the end of the last segment, or on the organisation.
    #[error(
        "crn `{crn}`: `*` is only allowed at the end of the last segment, below the organization"
    )]
    Wildcard {
        /// The rejected pattern.
        crn: String,
    },
}

// === impl OrgId ===

/// The Confluent Cloud organisation id (a UUID), from configuration.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct OrgId(Arc<str>);

impl OrgId {
    /// Accepts a UUID (`8-4-4-4-12` hex digits, either case), which is what Confluent Cloud
    /// organisation ids are: a wrong id (`my-org`, an environment id) would match no role binding
    /// and silently deny everyone, and a UUID can never smuggle a `/`, `=` or `*` into a CRN or a
    /// query string.
    pub fn parse(id: &str) -> Result<Self, CrnError> {
        let groups: Vec<&str> = id.split('-').collect();
        let ok = groups.len() == 5
            && groups
                .iter()
                .zip([8, 4, 4, 4, 12])
                .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()));
        if ok {
            Ok(OrgId(Arc::from(id)))
        } else {
            Err(CrnError::OrgId { id: truncate(id) })
        }
    }

    /// The id itself.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `crn://confluent.cloud/organization=<org>`, the organisation's own CRN.
    pub fn crn(&self) -> String {
        format!("{CRN_PREFIX}{ORGANIZATION}={}", self.0)
    }
}

impl fmt::Debug for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("OrgId").field(&&*self.0).finish()
    }
}

impl fmt::Display for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl CrnPattern ===

/// Byte offsets of one `key=value` segment inside the pattern text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    key: (u16, u16),
    value: (u16, u16),
}

/// A role binding's `crn_pattern`, parsed once into segments.
///
/// INVARIANT: at least one segment; the first is `organization=<id>` without a wildcard; `raw` is at
/// most `MAX_CRN_LEN` bytes, so every span fits in `u16`.
#[derive(Clone, PartialEq, Eq)]
pub struct CrnPattern {
    raw: Arc<str>,
    segments: Box<[Span]>,
    /// The last segment's value ended in `*` (excluded from its span): a prefix match.
    wildcard: bool,
}

impl CrnPattern {
    /// Parses `crn://confluent.cloud/organization=<org>[/key=value…][*]`.
    pub fn parse(crn: &str) -> Result<Self, CrnError> {
        if crn.len() > MAX_CRN_LEN {
            return Err(CrnError::TooLong { crn: truncate(crn) });
        }
        let Some(rest) = crn.strip_prefix(CRN_PREFIX) else {
            return Err(CrnError::Prefix { crn: truncate(crn) });
        };
        let mut segments = Vec::with_capacity(4);
        let mut wildcard = false;
        let mut start = CRN_PREFIX.len();
        let count = rest.split('/').count();
        for (i, seg) in rest.split('/').enumerate() {
            let bad_segment = || CrnError::Segment {
                crn: crn.to_owned(),
                index: i + 1,
            };
            let eq = seg.find('=').ok_or_else(bad_segment)?;
            let key = &seg[..eq];
            let mut value = &seg[eq + 1..];
            let is_last = i + 1 == count;
            if is_last && i > 0 {
                if let Some(prefix) = value.strip_suffix('*') {
                    value = prefix;
                    wildcard = true;
                }
            }
            if key.contains('*') || value.contains('*') {
                return Err(CrnError::Wildcard {
                    crn: crn.to_owned(),
                });
            }
            let key_ok = !key.is_empty()
                && key
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !key_ok || (value.is_empty() && !(wildcard && is_last)) {
                return Err(bad_segment());
            }
            if i == 0 && key != ORGANIZATION {
                return Err(CrnError::NotOrganization {
                    crn: crn.to_owned(),
                });
            }
            let key_start = start;
            let value_start = start + eq + 1;
            // INVARIANT: crn.len() <= MAX_CRN_LEN < u16::MAX, so these casts are lossless.
            segments.push(Span {
                key: (key_start as u16, (key_start + key.len()) as u16),
                value: (value_start as u16, (value_start + value.len()) as u16),
            });
            start += seg.len() + 1;
        }
        Ok(CrnPattern {
            raw: Arc::from(crn),
            segments: segments.into_boxed_slice(),
            wildcard,
        })
    }

    /// The pattern exactly as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The pattern text, shared (cheap to clone into an audit record).
    pub(crate) fn shared(&self) -> &Arc<str> {
        &self.raw
    }

    fn segment(&self, span: Span) -> (&str, &str) {
        (
            &self.raw[span.key.0 as usize..span.key.1 as usize],
            &self.raw[span.value.0 as usize..span.value.1 as usize],
        )
    }

    /// The organisation id of the first segment.
    pub fn org_id(&self) -> &str {
        self.segment(self.segments[0]).1
    }

    /// How many `key=value` segments the pattern has (1 = organisation level).
    pub fn depth(&self) -> usize {
        self.segments.len()
    }

    /// Whether this pattern equals `resource` or is an ancestor of it by whole segments.
    pub fn covers(&self, resource: &ResourcePath<'_>) -> bool {
        let n = self.segments.len();
        if n > resource.len as usize {
            return false;
        }
        for (i, span) in self.segments.iter().enumerate() {
            let (key, value) = self.segment(*span);
            let (rkey, rvalue) = resource.segments[i];
            if key != rkey {
                return false;
            }
            // An unknown value (a ksqlDB cluster whose Kafka cluster is not known) matches nothing.
            let Some(rvalue) = rvalue else {
                return false;
            };
            let matches = if i + 1 == n && self.wildcard {
                rvalue.starts_with(value)
            } else {
                rvalue == value
            };
            if !matches {
                return false;
            }
        }
        true
    }

    /// A short human description of the scope: `the organization`, or the last segment
    /// (`environment=env-prod`, `service-account=sa-1`, `topic=app-*`).
    pub fn scope(&self) -> Scope<'_> {
        Scope(self)
    }
}

impl fmt::Debug for CrnPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CrnPattern").field(&&*self.raw).finish()
    }
}

impl fmt::Display for CrnPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// Display helper returned by [`CrnPattern::scope`].
pub struct Scope<'a>(&'a CrnPattern);

impl fmt::Display for Scope<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.0;
        if p.segments.len() == 1 {
            return f.write_str("the organization");
        }
        let (key, value) = p.segment(p.segments[p.segments.len() - 1]);
        write!(f, "{key}={value}{}", if p.wildcard { "*" } else { "" })
    }
}

// === impl ResourcePath ===

/// The CRN of one resource, built per request from borrowed ids (no allocation).
///
/// A `None` value is a segment whose id keygate does not know; no pattern reaching it matches.
#[derive(Clone, Copy)]
pub struct ResourcePath<'a> {
    segments: [(&'static str, Option<&'a str>); MAX_PATH_DEPTH],
    len: u8,
    /// How many segments form the resource's own CRN; the rest are equivalent children (a Kafka
    /// cluster is `…/cloud-cluster=<lkc>` and also its `…/kafka=<lkc>` child).
    display_len: u8,
}

impl<'a> ResourcePath<'a> {
    /// `crn://confluent.cloud/organization=<org>`: Cloud, Global and Tableflow keys.
    pub fn organization(org: &'a str) -> Self {
        ResourcePath {
            segments: [
                (ORGANIZATION, Some(org)),
                ("", None),
                ("", None),
                ("", None),
            ],
            len: 1,
            display_len: 1,
        }
    }

    /// `…/environment=<env>/cloud-cluster=<lkc>` (+ its `/kafka=<lkc>` child, so a binding on
    /// either covers the cluster).
    pub fn kafka(org: &'a str, env: &'a str, lkc: &'a str) -> Self {
        Self::organization(org)
            .push("environment", Some(env))
            .push("cloud-cluster", Some(lkc))
            .push("kafka", Some(lkc))
            .with_display_len(3)
    }

    /// `…/environment=<env>/schema-registry=<lsrc>`.
    pub fn schema_registry(org: &'a str, env: &'a str, lsrc: &'a str) -> Self {
        Self::organization(org)
            .push("environment", Some(env))
            .push("schema-registry", Some(lsrc))
    }

    /// `…/environment=<env>/cloud-cluster=<lkc>/ksql=<lksqlc>`; with the Kafka cluster unknown,
    /// only environment- or organisation-level patterns can cover it.
    pub fn ksqldb(org: &'a str, env: &'a str, lkc: Option<&'a str>, lksqlc: &'a str) -> Self {
        Self::organization(org)
            .push("environment", Some(env))
            .push("cloud-cluster", lkc)
            .push("ksql", Some(lksqlc))
    }

    /// `…/environment=<env>/flink-region=<cloud>.<region>`.
    pub fn flink_region(org: &'a str, env: &'a str, region: &'a str) -> Self {
        Self::organization(org)
            .push("environment", Some(env))
            .push("flink-region", Some(region))
    }

    /// `crn://confluent.cloud/organization=<org>/service-account=<sa>`.
    pub fn service_account(org: &'a str, sa: &'a str) -> Self {
        Self::organization(org).push("service-account", Some(sa))
    }

    fn push(mut self, key: &'static str, value: Option<&'a str>) -> Self {
        // INVARIANT: the constructors above never push more than MAX_PATH_DEPTH segments.
        let i = self.len as usize;
        if i < MAX_PATH_DEPTH {
            self.segments[i] = (key, value);
            self.len += 1;
            self.display_len = self.len;
        }
        self
    }

    fn with_display_len(mut self, n: u8) -> Self {
        self.display_len = n.min(self.len);
        self
    }
}

impl fmt::Display for ResourcePath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(CRN_PREFIX)?;
        for (i, (key, value)) in self.segments[..self.display_len as usize]
            .iter()
            .enumerate()
        {
            if i > 0 {
                f.write_str("/")?;
            }
            write!(f, "{key}={}", value.unwrap_or("?"))?;
        }
        Ok(())
    }
}

impl fmt::Debug for ResourcePath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResourcePath({self})")
    }
}

/// At most 64 characters of untrusted input, for error messages.
fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORG: &str = "0b7e1c2d-3f4a-4b5c-8d6e-7f8091a2b3c4";

    fn pat(s: &str) -> CrnPattern {
        CrnPattern::parse(&s.replace("<org>", ORG)).unwrap()
    }

    fn kafka() -> ResourcePath<'static> {
        ResourcePath::kafka(ORG, "env-a", "lkc-1")
    }

    #[test]
    fn equal_pattern_covers() {
        assert!(pat(
            "crn://confluent.cloud/organization=<org>/environment=env-a/cloud-cluster=lkc-1"
        )
        .covers(&kafka()));
    }

    #[test]
    fn ancestor_by_whole_segments_covers() {
        assert!(pat("crn://confluent.cloud/organization=<org>").covers(&kafka()));
        assert!(pat("crn://confluent.cloud/organization=<org>/environment=env-a").covers(&kafka()));
    }

    #[test]
    fn kafka_child_covers_the_cluster() {
        let p = pat("crn://confluent.cloud/organization=<org>/environment=env-a/cloud-cluster=lkc-1/kafka=lkc-1");
        assert!(p.covers(&kafka()));
    }

    #[test]
    fn value_prefix_without_star_does_not_cover() {
        let p = pat("crn://confluent.cloud/organization=<org>/environment=env-ab");
        assert!(!p.covers(&kafka()));
        let r = ResourcePath::kafka(ORG, "env-ab", "lkc-1");
        assert!(!pat("crn://confluent.cloud/organization=<org>/environment=env-a").covers(&r));
    }

    #[test]
    fn trailing_star_is_a_prefix_match_on_that_segment() {
        let p = pat("crn://confluent.cloud/organization=<org>/environment=env-*");
        assert!(p.covers(&kafka()));
        assert!(p.covers(&ResourcePath::kafka(ORG, "env-ab", "lkc-1")));
        assert!(!p.covers(&ResourcePath::kafka(ORG, "dev-a", "lkc-1")));
        let star =
            pat("crn://confluent.cloud/organization=<org>/environment=env-a/cloud-cluster=*");
        assert!(star.covers(&kafka()));
        assert!(!star.covers(&ResourcePath::schema_registry(ORG, "env-a", "lsrc-1")));
    }

    #[test]
    fn descendant_pattern_does_not_cover() {
        let topic = pat(
            "crn://confluent.cloud/organization=<org>/environment=env-a/cloud-cluster=lkc-1/kafka=lkc-1/topic=orders",
        );
        assert!(!topic.covers(&kafka()));
    }

    #[test]
    fn different_key_at_same_depth_does_not_cover() {
        let sr =
            pat("crn://confluent.cloud/organization=<org>/environment=env-a/schema-registry=lkc-1");
        assert!(!sr.covers(&kafka()));
    }

    #[test]
    fn organisation_level_resources_are_covered_only_by_organisation_patterns() {
        let org = ResourcePath::organization(ORG);
        assert!(pat("crn://confluent.cloud/organization=<org>").covers(&org));
        assert!(!pat("crn://confluent.cloud/organization=<org>/environment=env-a").covers(&org));
        assert!(!pat("crn://confluent.cloud/organization=<org>/environment=*").covers(&org));
        assert!(!pat("crn://confluent.cloud/organization=<org>/service-account=sa-1").covers(&org));
    }

    #[test]
    fn other_organisation_does_not_cover() {
        let p = CrnPattern::parse("crn://confluent.cloud/organization=other-org").unwrap();
        assert!(!p.covers(&kafka()));
        assert!(!p.covers(&ResourcePath::organization(ORG)));
    }

    #[test]
    fn unknown_segment_is_covered_only_above_it() {
        let ksql = ResourcePath::ksqldb(ORG, "env-a", None, "lksqlc-1");
        assert!(pat("crn://confluent.cloud/organization=<org>/environment=env-a").covers(&ksql));
        assert!(
            !pat("crn://confluent.cloud/organization=<org>/environment=env-a/cloud-cluster=*")
                .covers(&ksql)
        );
        assert!(!pat("crn://confluent.cloud/organization=<org>/environment=env-a/cloud-cluster=lkc-1/ksql=lksqlc-1").covers(&ksql));
        let known = ResourcePath::ksqldb(ORG, "env-a", Some("lkc-1"), "lksqlc-1");
        assert!(pat("crn://confluent.cloud/organization=<org>/environment=env-a/cloud-cluster=lkc-1/ksql=lksqlc-1").covers(&known));
        assert!(pat(
            "crn://confluent.cloud/organization=<org>/environment=env-a/cloud-cluster=lkc-1"
        )
        .covers(&known));
    }

    #[test]
    fn service_account_path_is_covered_by_its_own_crn_and_the_organisation() {
        let sa = ResourcePath::service_account(ORG, "sa-1");
        assert!(pat("crn://confluent.cloud/organization=<org>/service-account=sa-1").covers(&sa));
        assert!(pat("crn://confluent.cloud/organization=<org>").covers(&sa));
        assert!(!pat("crn://confluent.cloud/organization=<org>/service-account=sa-12").covers(&sa));
        assert!(!pat("crn://confluent.cloud/organization=<org>/service-account=sa-2").covers(&sa));
    }

    #[test]
    fn malformed_patterns_are_rejected() {
        let cases = [
            ("confluent.cloud/organization=x", "must start with"),
            ("crn://example.com/organization=x", "must start with"),
            ("crn://confluent.cloud/environment=env-a", "organization="),
            (
                "crn://confluent.cloud/organization=x/environment",
                "segment 2",
            ),
            (
                "crn://confluent.cloud/organization=x//environment=e",
                "segment 2",
            ),
            (
                "crn://confluent.cloud/organization=x/environment=",
                "segment 2",
            ),
            ("crn://confluent.cloud/organization=x/=e", "segment 2"),
            ("crn://confluent.cloud/organization=x/Env=e", "segment 2"),
            (
                "crn://confluent.cloud/organization=x/environment=e/",
                "segment 3",
            ),
            (
                "crn://confluent.cloud/organization=x/environment=e*/cloud-cluster=c",
                "`*`",
            ),
            (
                "crn://confluent.cloud/organization=x/environment=e*x",
                "`*`",
            ),
            ("crn://confluent.cloud/organization=x/environment=**", "`*`"),
            ("crn://confluent.cloud/organization=*", "`*`"),
        ];
        for (crn, want) in cases {
            let err = CrnPattern::parse(crn).unwrap_err().to_string();
            assert!(err.contains(want), "{crn}: {err}");
        }
        let long = format!(
            "crn://confluent.cloud/organization={}",
            "a".repeat(MAX_CRN_LEN)
        );
        assert!(matches!(
            CrnPattern::parse(&long),
            Err(CrnError::TooLong { .. })
        ));
    }

    #[test]
    fn scope_names_the_last_segment() {
        assert_eq!(
            pat("crn://confluent.cloud/organization=<org>")
                .scope()
                .to_string(),
            "the organization"
        );
        assert_eq!(
            pat("crn://confluent.cloud/organization=<org>/environment=env-a/cloud-cluster=lkc-*")
                .scope()
                .to_string(),
            "cloud-cluster=lkc-*"
        );
    }

    #[test]
    fn kafka_path_displays_without_its_kafka_child() {
        assert_eq!(
            kafka().to_string(),
            format!(
                "crn://confluent.cloud/organization={ORG}/environment=env-a/cloud-cluster=lkc-1"
            )
        );
        assert_eq!(
            ResourcePath::ksqldb(ORG, "env-a", None, "lksqlc-1").to_string(),
            format!("crn://confluent.cloud/organization={ORG}/environment=env-a/cloud-cluster=?/ksql=lksqlc-1")
        );
    }

    #[test]
    fn org_id_rejects_crn_metacharacters() {
        assert!(OrgId::parse(ORG).is_ok());
        assert!(OrgId::parse("0B7E1C2D-3F4A-4B5C-8D6E-7F8091A2B3C4").is_ok());
        for bad in [
            "",
            "a/b",
            "a=b",
            "a*",
            "a b",
            "my-org",
            "env-prod01",
            "0b7e1c2d3f4a4b5c8d6e7f8091a2b3c4",
            "0b7e1c2d-3f4a-4b5c-8d6e-7f8091a2b3c",
            "0b7e1c2d-3f4a-4b5c-8d6e-7f8091a2b3cg",
            "0b7e1c2d-3f4a-4b5c-8d6e-7f8091a2b3c4-",
        ] {
            assert!(OrgId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
