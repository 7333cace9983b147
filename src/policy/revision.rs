//! The policy revision: the one id of the set of rules keygate decides with.
//!
//! [`revision`] is the only place it is computed. `keygate check` prints it, `keygate explain`
//! prints it, and a running keygate shows it on `/readyz`, in `keygate_policy_revision_info` and in
//! every audit event's `policyRevision`: the same 64 hex digits everywhere, so an auditor can tie
//! an event to the set that was checked. Equal revisions decide equally given the same upstream
//! data.
//!
//! It is SHA-256 over what decides, each part tagged and length-prefixed: the RBAC matrix, the
//! role bindings and the inventory when they come from files (when they come from the upstream,
//! only that fact: their content changes without any reload), the organisation policies (the
//! schema, every policy file by name and content, and the `[policy]` values — see
//! [`super::org::OrgPolicies::digest`]), the rate limits and, when configured, the keygate-side
//! bindings of external principals (folded in last, so a set without them keeps its revision).
//! File paths are not part of it: the same files give the same revision wherever they are and
//! whichever directory keygate runs in.

use std::sync::Arc;

use ring::digest;

/// A policy revision: 64 lowercase hex digits.
pub type Revision = Arc<String>;

/// Everything a revision covers. `None` for bindings or inventory means "from the upstream".
#[derive(Debug, Clone, Copy)]
pub struct RevisionInputs<'a> {
    /// The matrix file's text.
    pub matrix: &'a str,
    /// The role-bindings file's text, or `None` when synced from the upstream.
    pub bindings: Option<&'a str>,
    /// The inventory file's text, or `None` when synced from the upstream.
    pub inventory: Option<&'a str>,
    /// The organisation policies' digest, when a `[policy]` section is configured.
    pub org: Option<&'a str>,
    /// The rate limits ([`crate::ratelimit::RateLimitConfig::canonical`]).
    pub rate_limits: &'a str,
    /// The keygate-side bindings file's text (`identity.external_bindings`), when configured.
    pub external_bindings: Option<&'a str>,
}

/// The revision of a policy set (see the module doc).
pub fn revision(inputs: &RevisionInputs<'_>) -> Revision {
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut part = |tag: &str, value: Option<&str>| {
        ctx.update(tag.as_bytes());
        match value {
            Some(text) => {
                ctx.update(b"=");
                ctx.update(&(text.len() as u64).to_be_bytes());
                ctx.update(text.as_bytes());
            }
            None => ctx.update(b"-"),
        }
    };
    part("keygate-policy-revision-1", None);
    part("matrix", Some(inputs.matrix));
    part("bindings", inputs.bindings);
    part("inventory", inputs.inventory);
    part("org", inputs.org);
    part("ratelimit", Some(inputs.rate_limits));
    let base = crate::id::hex(ctx.finish().as_ref());
    Arc::new(match inputs.external_bindings {
        Some(text) => with_external_bindings(&base, text),
        None => base,
    })
}

/// The revision of the other parts extended with the keygate-side bindings of external principals,
/// so that a set without them keeps the revision it had before they existed.
fn with_external_bindings(revision: &str, text: &str) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"keygate-policy-revision-1+external-bindings");
    ctx.update(revision.as_bytes());
    ctx.update(&(text.len() as u64).to_be_bytes());
    ctx.update(text.as_bytes());
    crate::id::hex(ctx.finish().as_ref())
}

/// The revisions of each part of a policy set, as a replayable decision records them (see
/// `policy::input`): which matrix, policies, bindings and inventory decided. Each is the first 16
/// hex digits of the SHA-256 of the part (`upstream` for data synced from the upstream, whose
/// content changes without a reload; `none` for policies when none are configured).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartRevisions {
    /// The RBAC matrix file.
    pub matrix: String,
    /// The organisation policies (their digest).
    pub policies: String,
    /// The role bindings.
    pub bindings: String,
    /// The resource inventory.
    pub inventory: String,
    /// The keygate-side role bindings of external principals, when configured.
    #[serde(
        default,
        rename = "externalBindings",
        skip_serializing_if = "Option::is_none"
    )]
    pub external_bindings: Option<String>,
}

/// The short revision of one part: the first 16 hex digits of its SHA-256.
fn part_revision(text: &str) -> String {
    let digest = digest::digest(&digest::SHA256, text.as_bytes());
    crate::id::hex(&digest.as_ref()[..8])
}

/// The [`PartRevisions`] of a policy set.
pub fn part_revisions(inputs: &RevisionInputs<'_>) -> Arc<PartRevisions> {
    let or =
        |text: Option<&str>, absent: &str| text.map_or_else(|| absent.to_owned(), part_revision);
    Arc::new(PartRevisions {
        matrix: part_revision(inputs.matrix),
        policies: or(inputs.org, "none"),
        bindings: or(inputs.bindings, "upstream"),
        inventory: or(inputs.inventory, "upstream"),
        external_bindings: inputs.external_bindings.map(part_revision),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> RevisionInputs<'static> {
        RevisionInputs {
            matrix: "m",
            bindings: Some("b"),
            inventory: None,
            org: Some("o"),
            rate_limits: "",
            external_bindings: None,
        }
    }

    #[test]
    fn a_revision_is_64_hex_digits_and_depends_on_every_part() {
        let base = revision(&inputs());
        assert_eq!(base.len(), 64);
        assert!(base
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(revision(&inputs()), base);
        let changed = [
            RevisionInputs {
                matrix: "m2",
                ..inputs()
            },
            RevisionInputs {
                bindings: None,
                ..inputs()
            },
            RevisionInputs {
                bindings: Some(""),
                ..inputs()
            },
            RevisionInputs {
                inventory: Some(""),
                ..inputs()
            },
            RevisionInputs {
                org: None,
                ..inputs()
            },
            RevisionInputs {
                rate_limits: "x",
                ..inputs()
            },
            RevisionInputs {
                external_bindings: Some(""),
                ..inputs()
            },
        ];
        for other in changed {
            assert_ne!(revision(&other), base, "{other:?}");
        }
        // Parts cannot bleed into each other.
        let a = RevisionInputs {
            matrix: "ab",
            bindings: Some(""),
            ..inputs()
        };
        let b = RevisionInputs {
            matrix: "a",
            bindings: Some("b"),
            ..inputs()
        };
        assert_ne!(revision(&a), revision(&b));
    }

    #[test]
    fn keygate_side_bindings_extend_the_revision_and_have_a_part_of_their_own() {
        let without = inputs();
        let with = RevisionInputs {
            external_bindings: Some("x"),
            ..inputs()
        };
        // A set without them keeps the revision it had before they existed; with them, the
        // revision extends that one.
        assert_eq!(
            *revision(&with),
            with_external_bindings(&revision(&without), "x")
        );
        assert_eq!(part_revisions(&without).external_bindings, None);
        assert_eq!(
            part_revisions(&with).external_bindings,
            Some(part_revision("x"))
        );
        assert_eq!(
            part_revisions(&with).matrix,
            part_revisions(&without).matrix
        );
    }
}
