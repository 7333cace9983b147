//! Policy unit tests (`keygate policy test`, like `opa test`): TOML files of cases beside the
//! policies (`<dir>/tests/*.toml`, and `<team dir>/tests/*.toml` for each team set), each a
//! request and the expected verdict and policy ids, plus COVERAGE: every policy of the set must be
//! expected by at least one passing case.
//!
//! Each set's cases run against that set alone — the platform set without the teams, a team's
//! set without the platform's — so a team's tests do not break when the platform's rules change,
//! and the other way round. A team's case outside the team's scope is allowed (the set does not
//! apply), which is how a team tests that its rules leave other teams alone. In a team's files,
//! policy ids are written as in its `@id`s (`naming`) or in full (`checkout/naming`).
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
//! `request_id`, `target_key = { id, owner, resource_id, description, display_name }`,
//! `quota = { limit, clusters = [{ id, kind, keys }] }` (`context.quota`), `errors` (ids expected
//! to fail evaluation). Unknown keys are errors.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{KeyResource, OrgInput, OrgPolicies, RoleBinding, TargetKey};
use crate::model::Action;
use crate::model::PrincipalKind;

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
struct CaseQuota {
    limit: Option<u64>,
    #[serde(default)]
    clusters: Vec<CaseQuotaCluster>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseQuotaCluster {
    id: String,
    /// Confluent's spelling; anything else is an unknown kind.
    kind: String,
    keys: u64,
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
    quota: Option<CaseQuota>,
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

/// One set's tests in a [`SuiteReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetReport {
    /// `platform`, or the team's name.
    pub set: String,
    /// The directory of the set's case files.
    pub tests_dir: PathBuf,
    /// How many policies the set has.
    pub policies: usize,
    /// The set's cases and coverage.
    pub report: TestReport,
}

/// The tests of the platform set and of every team set, per set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SuiteReport {
    /// The platform set first, then the teams by name.
    pub sets: Vec<SetReport>,
}

impl SuiteReport {
    /// True when every set's tests passed with full coverage.
    pub fn passed(&self) -> bool {
        self.sets.iter().all(|s| s.report.passed())
    }

    /// Each set's report under a heading, a summary line per set, and the total.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.sets.len() == 1 {
            if let Some(only) = self.sets.first() {
                return only.report.render();
            }
        }
        for set in &self.sets {
            let _ = writeln!(
                out,
                "== {} ({} policies, {})",
                set.heading(),
                set.policies,
                set.tests_dir.display()
            );
            out.push_str(&set.report.render());
        }
        let cases: usize = self.sets.iter().map(|s| s.report.cases.len()).sum();
        let failed: usize = self
            .sets
            .iter()
            .map(|s| s.report.cases.iter().filter(|c| !c.passed).count())
            .sum();
        let uncovered: usize = self.sets.iter().map(|s| s.report.uncovered.len()).sum();
        let files: usize = self.sets.iter().map(|s| s.report.file_errors.len()).sum();
        let failing: Vec<&str> = self
            .sets
            .iter()
            .filter(|s| !s.report.passed())
            .map(|s| s.set.as_str())
            .collect();
        let _ = writeln!(
            out,
            "TOTAL {}: {} sets, {cases} cases, {failed} failed, {uncovered} policies uncovered, {files} file errors{}",
            if self.passed() { "PASS" } else { "FAIL" },
            self.sets.len(),
            if failing.is_empty() {
                String::new()
            } else {
                format!(" (failing: {})", failing.join(", "))
            }
        );
        out
    }
}

impl SetReport {
    fn heading(&self) -> String {
        if self.set == super::PLATFORM_SET {
            "platform set".to_owned()
        } else {
            format!("team `{}`", self.set)
        }
    }
}

/// Runs the platform set's tests (`platform_tests`) and every team set's (`tests/` in the team's
/// directory), each against its own set.
pub fn run_all_policy_tests(policies: &OrgPolicies, platform_tests: &Path) -> SuiteReport {
    let mut sets = vec![SetReport {
        set: super::PLATFORM_SET.to_owned(),
        tests_dir: platform_tests.to_path_buf(),
        policies: policies.set_policy_ids(None).len(),
        report: run_set_tests(policies, None, platform_tests),
    }];
    for team in policies.teams() {
        let dir = team.dir.join(super::DEFAULT_TESTS_DIR);
        sets.push(SetReport {
            set: team.name.to_owned(),
            policies: team.policies,
            report: run_set_tests(policies, Some(team.name), &dir),
            tests_dir: dir,
        });
    }
    SuiteReport { sets }
}

/// Runs every `*.toml` case file in `dir` (sorted by name) against the platform set of
/// `policies`.
pub fn run_policy_tests(policies: &OrgPolicies, dir: &Path) -> TestReport {
    run_set_tests(policies, None, dir)
}

/// Runs every `*.toml` case file in `dir` (sorted by name) against one set: the platform's
/// (`None`) or a team's.
pub fn run_set_tests(policies: &OrgPolicies, team: Option<&str>, dir: &Path) -> TestReport {
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
                let line = e
                    .span()
                    .map_or(1, |s| super::position::line_of(&text, s.start));
                report
                    .file_errors
                    .push(format!("{}:{line}: {}", path.display(), e.message()));
                continue;
            }
        };
        for case in &file.cases {
            let detail = run_case(policies, team, case);
            if detail.is_none() {
                covered.extend(case.policies.iter().map(|id| qualified(team, id)));
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
        .set_policy_ids(team)
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

/// A policy id as reported: a team's are `<team>/<id>`, wherever the case wrote it short.
fn qualified(team: Option<&str>, id: &str) -> String {
    match team {
        Some(team) if !id.contains('/') => format!("{team}/{id}"),
        _ => id.to_owned(),
    }
}

/// Runs one case; `None` when it passed, otherwise what differed.
fn run_case(policies: &OrgPolicies, team: Option<&str>, case: &Case) -> Option<String> {
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
    let quota_clusters: Vec<crate::policy::quota::ClusterLoad> = case
        .quota
        .iter()
        .flat_map(|q| &q.clusters)
        .map(|c| crate::policy::quota::ClusterLoad {
            id: c.id.clone(),
            kind: match crate::policy::inventory::ClusterKind::parse(&c.kind) {
                crate::policy::inventory::ClusterKind::Other => None,
                kind => Some(kind),
            },
            keys: c.keys,
        })
        .collect();
    let input = OrgInput {
        principal_id: &case.principal,
        principal_kind,
        groups: &case.groups,
        external: None,
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
        quota: case.quota.as_ref().map(|q| super::QuotaInput {
            limit: q.limit,
            clusters: &quota_clusters,
        }),
    };
    let Some(d) = policies.evaluate_set(team, &input) else {
        return Some(format!("no team `{}` is loaded", team.unwrap_or_default()));
    };
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
    let want: Vec<String> = case.policies.iter().map(|id| qualified(team, id)).collect();
    let want_ids: BTreeSet<&str> = want.iter().map(String::as_str).collect();
    let got_errors: BTreeSet<&str> = d.errors.iter().map(|f| f.id.as_str()).collect();
    let want_err: Vec<String> = case.errors.iter().map(|id| qualified(team, id)).collect();
    let want_errors: BTreeSet<&str> = want_err.iter().map(String::as_str).collect();
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

#[cfg(test)]
mod tests;
