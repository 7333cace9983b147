//! Policy tests (`keygate policy test`): failures, coverage gaps, file errors.

use super::*;
use crate::policy::org::tests::*;

// --- policy tests and explain ----------------------------------------------------------------

#[test]
fn policy_test_failures_and_coverage_gaps_fail_the_run() {
    let p = shipped();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("t.toml"),
        r#"
[[case]]
name = "wrong expectation"
principal = "u-bob"
action = "CreateApiKey"
owner = "sa-orders"
resource = { id = "global", type = "Global" }
display_name = "orders-admin-prod"
owner_key_count = 0
expect = "allow"

[[case]]
name = "right expectation"
principal = "u-bob"
action = "CreateApiKey"
owner = "sa-orders"
resource = { id = "global", type = "Global" }
display_name = "orders-admin-prod"
owner_key_count = 0
expect = "deny"
policies = ["org-keys-platform-only"]
"#,
    )
    .unwrap();
    let report = run_policy_tests(&p, dir.path());
    assert!(!report.passed());
    assert_eq!(report.cases.len(), 2);
    assert!(!report.cases[0].passed);
    assert!(report.cases[1].passed);
    let detail = report.cases[0].detail.as_deref().unwrap();
    assert!(detail.contains("expected allow, got deny"), "{detail}");
    assert!(!report
        .uncovered
        .contains(&"org-keys-platform-only".to_owned()));
    assert_eq!(report.uncovered.len(), SHIPPED_IDS.len() - 1);
    let text = report.render();
    assert!(text.contains("FAIL") && text.contains("UNCOVERED policy `protected-key-delete`"));
}

#[test]
fn policy_test_file_errors_are_reported_with_lines() {
    let p = shipped();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "[[case]]\nname = \"x\"\nprincipal = \"u-a\"\nacton = \"CreateApiKey\"\n",
    )
    .unwrap();
    let report = run_policy_tests(&p, dir.path());
    assert!(!report.passed());
    assert_eq!(report.file_errors.len(), 1);
    assert!(
        report.file_errors[0].contains("bad.toml:4: "),
        "{:?}",
        report.file_errors
    );
}
