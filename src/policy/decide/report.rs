//! What a [`Response`] becomes outside the policy engine: the 403 of a denial, and the log lines
//! and counters of its findings (dry-run denials, policy evaluation errors, the quota guard's say).

use super::Response;
use crate::error::{Denial, DenialEntry, GatewayError};
use crate::policy::quota;
use crate::telemetry::metrics::{PolicyLabels, ResultLabels};
use crate::telemetry::Metrics;

impl Response {
    /// The 403 of a denial: the explanation, one `errors[]` member per denying policy.
    pub fn into_denial(self) -> GatewayError {
        let rule_ids = self.denying_rule_ids().to_vec();
        GatewayError::Denied(Box::new(Denial {
            explanation: self.explanation,
            rule_ids,
            pointer: self.pointer,
            by: self.by,
            entries: self
                .entries
                .into_iter()
                .map(|e| DenialEntry {
                    rule_id: e.rule_id,
                    detail: e.detail,
                    pointer: e.pointer,
                })
                .collect(),
        }))
    }

    /// Logs and counts dry-run findings, policy evaluation errors and the quota guard's say, for
    /// request `request_id`.
    pub fn report_findings(&self, request_id: &str, metrics: &Metrics) {
        if let Some(org) = &self.org {
            for finding in &org.would_deny {
                tracing::info!(request.id = %request_id, policy.id = %finding.id, reason = %finding.reason, "Policy would deny (dry-run)");
                let labels = PolicyLabels {
                    policy: finding.id.clone(),
                };
                metrics.would_deny.get_or_create(&labels).inc();
            }
            for finding in &org.errors {
                tracing::warn!(request.id = %request_id, policy.id = %finding.id, reason = %finding.reason, "Policy evaluation error");
                let labels = PolicyLabels {
                    policy: finding.id.clone(),
                };
                metrics.policy_errors.get_or_create(&labels).inc();
            }
        }
        let result = match &self.quota {
            None | Some(quota::Decision::Allow) => return,
            Some(quota::Decision::Warn {
                warnings,
                would_deny,
            }) => {
                for warning in warnings {
                    tracing::warn!(request.id = %request_id, reason = %warning, "API-key quota warning");
                }
                if *would_deny {
                    "would_deny"
                } else {
                    "warn"
                }
            }
            Some(quota::Decision::Deny(_)) => "deny",
            Some(quota::Decision::Unknown(_)) => "unknown",
        };
        let labels = ResultLabels { result };
        metrics.quota_decisions.get_or_create(&labels).inc();
    }
}
