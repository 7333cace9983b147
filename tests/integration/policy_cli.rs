//! `keygate check` and `keygate policy test`: output and exit codes of the real binary.

use std::path::Path;
use std::process::Command;

fn keygate(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(args)
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// A copy of the shipped policies in a temp dir, and a config using it.
fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(policies.join("tests")).unwrap();
    for entry in std::fs::read_dir("policies").unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, policies.join(path.file_name().unwrap())).unwrap();
        }
    }
    for entry in std::fs::read_dir("policies/tests").unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(
            &path,
            policies.join("tests").join(path.file_name().unwrap()),
        )
        .unwrap();
    }
    let example = std::fs::read_to_string("policies/policy.example.toml")
        .unwrap()
        .replace(
            "dir = \"policies\"",
            &format!("dir = \"{}\"", policies.display()),
        );
    let config = dir.path().join("keygate.toml");
    std::fs::write(
        &config,
        format!(
            "[authz]\norg_id = \"{}\"\nmatrix = \"{p}/matrix.toml\"\nbindings = \"{p}/role-bindings.toml\"\ninventory = \"{p}/inventory.toml\"\n{example}",
            crate::support::ORG_ID,
            p = policies.display()
        ),
    )
    .unwrap();
    (dir, config)
}

#[test]
fn check_passes_on_the_shipped_set_and_fails_with_file_and_line_on_a_typo() {
    let (dir, config) = setup();
    let (code, out) = keygate(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("all checks passed"), "{out}");

    // A typo'd attribute is a strict-validation error at its file and line.
    let file = dir.path().join("policies/naming.cedar");
    let text = std::fs::read_to_string(&file).unwrap();
    let typo = text.replacen("context.display_name", "context.display_nmae", 1);
    assert_ne!(text, typo, "the shipped policy reads context.display_name");
    std::fs::write(&file, &typo).unwrap();
    let line = typo
        .lines()
        .position(|l| l.contains("display_nmae"))
        .unwrap()
        + 1;
    let (code, out) = keygate(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("naming.cedar:{line}:")),
        "expected naming.cedar:{line}: in {out}"
    );
}

#[test]
fn a_permit_is_a_load_error() {
    let (dir, config) = setup();
    std::fs::write(
        dir.path().join("policies/extra.cedar"),
        "@id(\"sneaky\")\n@reason(\"x\")\npermit (principal, action, resource);\n",
    )
    .unwrap();
    let (code, out) = keygate(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("extra.cedar:"), "{out}");
}

#[test]
fn bad_config_is_exit_78() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("k.toml");
    std::fs::write(&config, "[authz]\n").unwrap();
    let (code, out) = keygate(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("authz.org_id"), "{out}");
}

#[test]
fn policy_test_passes_and_fails_on_a_wrong_expectation_or_coverage_gap() {
    let (code, out) = keygate(&["policy", "test", "policies"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("PASS"), "{out}");

    let (dir, _) = setup();
    let policies = dir.path().join("policies");
    // Removing the only tests of a policy leaves it uncovered: the run fails.
    std::fs::remove_file(policies.join("tests/protected.toml")).unwrap();
    let (code, out) = keygate(&["policy", "test", policies.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("protected-key-delete"), "{out}");
    assert!(Path::new(&policies).exists());
}

fn explain(config: &Path, who: &str, body: &str, json: bool) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body.json");
    std::fs::write(&file, body).unwrap();
    let mut args = vec![
        "explain",
        "--config",
        config.to_str().unwrap(),
        "--as",
        who,
        "--body",
        file.to_str().unwrap(),
    ];
    if json {
        args.push("--json");
    }
    keygate(&args)
}

#[test]
fn explain_prints_the_matrix_rule_every_finding_and_the_decision() {
    let (_dir, config) = setup();
    let bad = r#"{"spec":{"display_name":"Bad","owner":{"id":"sa-orders"},"resource":{"id":"lkc-prod01"}}}"#;
    let (code, out) = explain(&config, "u-bob", bad, false);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("matrix: ALLOW (matrix.sa.resource_owner)"),
        "{out}"
    );
    assert!(out.contains("denied by display-name-convention"), "{out}");
    assert!(out.contains("denied by prod-ticket-reference"), "{out}");
    assert!(out.contains("decision: DENY"), "{out}");

    let good = r#"{"spec":{"display_name":"orders-ingest-prod","description":"OPS-1","owner":{"id":"sa-orders"},"resource":{"id":"lkc-prod01"}}}"#;
    let (code, out) = explain(&config, "u-bob", good, true);
    assert_eq!(code, 0, "{out}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["decision"], "allow");
    assert_eq!(json["matrix"]["rule"], "matrix.sa.resource_owner");

    let (code, out) = explain(&config, "u-dave", good, false);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("matrix: DENY (matrix.deny.sa_no_role)"),
        "{out}"
    );
    assert!(out.contains("not evaluated"), "{out}");
}
