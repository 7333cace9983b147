//! `keygate explain` for layer 2: which policy sets applied and why (the platform set always; a
//! team's set when its scope covers the request), every forbid, would-deny and evaluation error
//! that a hypothetical request triggers, with ids, reasons and sets, and the resulting verdict.
//!
//! Text for people (`render`), `serde::Serialize` for `--json`. The matrix part (layer 1) and the
//! combination of both layers are the caller's.

use std::fmt::Write as _;

use serde::Serialize;

use super::{Finding, Mode, OrgInput, OrgPolicies, TeamMatch};

/// Why layer 2 decides a request the way it does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// `"allow"` or `"deny"`.
    pub decision: &'static str,
    /// The policy revision (`policy::revision`) the decision was made with.
    pub revision: String,
    /// The team sets that applied besides the platform set, and why.
    pub teams: Vec<TeamMatch>,
    /// Enforced forbids that matched.
    pub denied: Vec<Finding>,
    /// Dry-run forbids that matched (the request is not denied for them).
    pub would_deny: Vec<Finding>,
    /// Policies whose evaluation failed (enforced ones deny).
    pub errors: Vec<Finding>,
}

impl Explanation {
    /// Whether layer 2 allows the request.
    pub fn allowed(&self) -> bool {
        self.decision == "allow"
    }

    /// A multi-line, human-readable account.
    pub fn render(&self) -> String {
        let mut out = format!("organisation policies: {}\n", self.decision.to_uppercase());
        out.push_str("  sets applied: platform (every request)");
        for m in &self.teams {
            let _ = write!(out, "; team `{}` ({})", m.team, m.via);
        }
        out.push('\n');
        if self.denied.is_empty() && self.would_deny.is_empty() && self.errors.is_empty() {
            out.push_str("  no forbid policy matched\n");
        }
        for f in &self.denied {
            let _ = writeln!(out, "  denied by {}: {}", label(f), f.reason);
        }
        for f in &self.errors {
            let effect = match f.mode {
                Mode::Enforce => "denied (evaluation error)",
                Mode::DryRun => "dry-run evaluation error, not enforced",
            };
            let _ = writeln!(out, "  {effect} in {}: {}", label(f), f.reason);
        }
        for f in &self.would_deny {
            let _ = writeln!(out, "  would deny (dry-run) {}: {}", label(f), f.reason);
        }
        out
    }
}

/// A finding's id, with its team for a team's policy.
fn label(f: &Finding) -> String {
    match &f.team {
        None => f.id.clone(),
        Some(team) => format!("{} (team `{team}`)", f.id),
    }
}

/// Evaluates `input` and explains the outcome; `revision` is the policy revision in force.
pub fn explain(policies: &OrgPolicies, input: &OrgInput<'_>, revision: &str) -> Explanation {
    let d = policies.evaluate(input);
    Explanation {
        decision: if d.allowed { "allow" } else { "deny" },
        revision: revision.to_owned(),
        teams: d.teams,
        denied: d.denied,
        would_deny: d.would_deny,
        errors: d.errors,
    }
}

#[cfg(test)]
mod tests;
