//! Policy unit tests (`keygate policy test`, like `opa test`): TOML files of cases beside the
//! policies (`<dir>/tests/*.toml`), each a request and the expected verdict and policy ids, plus
//! COVERAGE: every loaded policy must be expected by at least one passing case.
//!
//! A case file:
//!
//! ```toml
//! [[case]]
//! name = "user-owned key in prod is refused"
//! principal = "u-bob"                 # kind from the prefix: u- / sa- / pool-
//! groups = []                         # optional; [policy.groups] is added as in production
//! action = "CreateApiKey"
//! owner = "u-bob"
//! resource = { id = "lkc-prod01", type = "Kafka", environment = "env-prod01", cluster = "lkc-prod01" }
//! display_name = "bob-debug-prod"
//! description = "OPS-1 debugging"
//! expect = "deny"
//! policies = ["no-user-keys-in-prod"] # denied + would-deny ids, exactly
//! ```
//!
//! Other optional keys: `bindings = [{ role, crn_pattern }]`, `key_id`, `matrix = { allowed,
//! rule }` (default allowed, rule "policy-test"), `owner_key_count`, `time`, `source_ip`,
//! `request_id`, `target_key = { id, owner, resource_id, description, display_name }`, `errors`
//! (ids expected to fail evaluation). Unknown keys are errors.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{KeyResource, OrgInput, OrgPolicies, RoleBinding, TargetKey};
use crate::policy::action::Action;
use crate::policy::principal::PrincipalKind;

/// Request time used when a case gives none (2025-01-01T00:00:00Z): tests must not depend on
/// the clock.
const DEFAULT_TEST_TIME: i64 = 1_735_689_600;
/// Layer-1 rule reported to policies when a case gives none.
const DEFAULT_TEST_RULE: &str = "policy-test";
/// Request id used when a case gives none.
const DEFAULT_TEST_REQUEST_ID: &str = "policy-test";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    #[serde(default, rename = "case")]
    cases: Vec<Case>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Expect {
    Allow,
    Deny,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseResource {
    id: String,
    #[serde(rename = "type")]
    resource_type: String,
    environment: Option<String>,
    cluster: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseBinding {
    role: String,
    crn_pattern: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseMatrix {
    allowed: bool,
    rule: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseTargetKey {
    id: String,
    owner: Option<String>,
    resource_id: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    display_name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    principal: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    bindings: Vec<CaseBinding>,
    action: String,
    key_id: Option<String>,
    owner: Option<String>,
    resource: Option<CaseResource>,
    display_name: Option<String>,
    description: Option<String>,
    matrix: Option<CaseMatrix>,
    owner_key_count: Option<u64>,
    time: Option<i64>,
    source_ip: Option<IpAddr>,
    request_id: Option<String>,
    target_key: Option<CaseTargetKey>,
    expect: Expect,
    #[serde(default)]
    policies: Vec<String>,
    #[serde(default)]
    errors: Vec<String>,
}

/// The result of one case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaseOutcome {
    /// The case file.
    pub file: PathBuf,
    /// The case's `name`.
    pub name: String,
    /// Whether verdict, policy ids and error ids were as expected.
    pub passed: bool,
    /// What differed, for a failed case.
    pub detail: Option<String>,
}

/// The result of a policy test run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestReport {
    /// Every case, in file and case order.
    pub cases: Vec<CaseOutcome>,
    /// Policy ids no passing case expects (coverage gaps), sorted.
    pub uncovered: Vec<String>,
    /// Files that could not be read or parsed, as `file:line: message`.
    pub file_errors: Vec<String>,
}

impl TestReport {
    /// True when every file parsed, every case passed and every policy is covered.
    pub fn passed(&self) -> bool {
        self.file_errors.is_empty()
            && self.uncovered.is_empty()
            && self.cases.iter().all(|c| c.passed)
    }

    /// A human-readable report, one line per case, then coverage and a summary.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for e in &self.file_errors {
            let _ = writeln!(out, "ERROR {e}");
        }
        for c in &self.cases {
            if c.passed {
                let _ = writeln!(out, "ok    {}: {}", c.file.display(), c.name);
            } else {
                let _ = writeln!(
                    out,
                    "FAIL  {}: {}: {}",
                    c.file.display(),
                    c.name,
                    c.detail.as_deref().unwrap_or("")
                );
            }
        }
        for id in &self.uncovered {
            let _ = writeln!(out, "UNCOVERED policy `{id}`: no passing case expects it");
        }
        let failed = self.cases.iter().filter(|c| !c.passed).count();
        let _ = writeln!(
            out,
            "{}: {} cases, {} failed, {} policies uncovered, {} file errors",
            if self.passed() { "PASS" } else { "FAIL" },
            self.cases.len(),
            failed,
            self.uncovered.len(),
            self.file_errors.len()
        );
        out
    }
}

/// Runs every `*.toml` case file in `dir` (sorted by name) against `policies`.
pub fn run_policy_tests(policies: &OrgPolicies, dir: &Path) -> TestReport {
    let mut report = TestReport {
        cases: Vec::new(),
        uncovered: Vec::new(),
        file_errors: Vec::new(),
    };
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "toml"))
            .collect(),
        Err(e) => {
            report.file_errors.push(format!("{}: {e}", dir.display()));
            Vec::new()
        }
    };
    files.sort();

    let mut covered: BTreeSet<String> = BTreeSet::new();
    for path in files {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                report.file_errors.push(format!("{}: {e}", path.display()));
                continue;
            }
        };
        let file: CaseFile = match toml::from_str(&text) {
            Ok(f) => f,
            Err(e) => {
                let line = e.span().map_or(1, |s| super::load::line_of(&text, s.start));
                report
                    .file_errors
                    .push(format!("{}:{line}: {}", path.display(), e.message()));
                continue;
            }
        };
        for case in &file.cases {
            let detail = run_case(policies, case);
            if detail.is_none() {
                covered.extend(case.policies.iter().cloned());
            }
            report.cases.push(CaseOutcome {
                file: path.clone(),
                name: case.name.clone(),
                passed: detail.is_none(),
                detail,
            });
        }
    }
    report.uncovered = policies
        .policy_ids()
        .into_iter()
        .filter(|id| !covered.contains(*id))
        .map(str::to_owned)
        .collect();
    report
}

fn parse_action(s: &str) -> Option<Action> {
    [
        Action::CreateApiKey,
        Action::ListApiKeys,
        Action::GetApiKey,
        Action::UpdateApiKey,
        Action::DeleteApiKey,
    ]
    .into_iter()
    .find(|a| a.as_str() == s)
}

/// Runs one case; `None` when it passed, otherwise what differed.
fn run_case(policies: &OrgPolicies, case: &Case) -> Option<String> {
    let Some(action) = parse_action(&case.action) else {
        return Some(format!(
            "unknown action `{}`: expected CreateApiKey, ListApiKeys, GetApiKey, UpdateApiKey or DeleteApiKey",
            case.action
        ));
    };
    let Some(principal_kind) = PrincipalKind::of_id(&case.principal) else {
        return Some(format!(
            "principal `{}`: expected `u-…`, `sa-…` or `pool-…`",
            case.principal
        ));
    };
    let bindings: Vec<RoleBinding<'_>> = case
        .bindings
        .iter()
        .map(|b| RoleBinding {
            role: &b.role,
            crn_pattern: &b.crn_pattern,
        })
        .collect();
    let input = OrgInput {
        principal_id: &case.principal,
        principal_kind,
        groups: &case.groups,
        bindings: &bindings,
        action,
        key_id: case.key_id.as_deref(),
        owner_id: case.owner.as_deref(),
        resource: case.resource.as_ref().map(|r| KeyResource {
            id: &r.id,
            resource_type: &r.resource_type,
            environment: r.environment.as_deref(),
            cluster: r.cluster.as_deref(),
        }),
        display_name: case.display_name.as_deref(),
        description: case.description.as_deref(),
        matrix_allowed: case.matrix.as_ref().is_none_or(|m| m.allowed),
        matrix_rule: case
            .matrix
            .as_ref()
            .map_or(DEFAULT_TEST_RULE, |m| m.rule.as_str()),
        owner_key_count: case.owner_key_count,
        time: case.time.unwrap_or(DEFAULT_TEST_TIME),
        source_ip: case.source_ip,
        request_id: case
            .request_id
            .as_deref()
            .unwrap_or(DEFAULT_TEST_REQUEST_ID),
        target_key: case.target_key.as_ref().map(|k| TargetKey {
            id: &k.id,
            owner_id: k.owner.as_deref(),
            resource_id: k.resource_id.as_deref(),
            description: &k.description,
            display_name: &k.display_name,
        }),
    };
    let d = policies.evaluate(&input);
    let got_verdict = if d.allowed {
        Expect::Allow
    } else {
        Expect::Deny
    };
    let got_ids: BTreeSet<&str> = d
        .denied
        .iter()
        .chain(&d.would_deny)
        .map(|f| f.id.as_str())
        .collect();
    let want_ids: BTreeSet<&str> = case.policies.iter().map(String::as_str).collect();
    let got_errors: BTreeSet<&str> = d.errors.iter().map(|f| f.id.as_str()).collect();
    let want_errors: BTreeSet<&str> = case.errors.iter().map(String::as_str).collect();
    let mut problems = Vec::new();
    if got_verdict != case.expect {
        problems.push(format!(
            "expected {}, got {}",
            verdict(case.expect),
            verdict(got_verdict)
        ));
    }
    if got_ids != want_ids {
        problems.push(format!("expected policies {want_ids:?}, got {got_ids:?}"));
    }
    if got_errors != want_errors {
        let messages: Vec<&str> = d.errors.iter().map(|f| f.reason.as_str()).collect();
        problems.push(format!(
            "expected evaluation errors {want_errors:?}, got {got_errors:?} {messages:?}"
        ));
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

fn verdict(e: Expect) -> &'static str {
    match e {
        Expect::Allow => "allow",
        Expect::Deny => "deny",
    }
}
