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

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_tree(&path, &target);
        } else {
            std::fs::copy(&path, target).unwrap();
        }
    }
}

/// A copy of the shipped policies (and the example teams) in a temp dir, and a config using it.
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
    copy_tree(Path::new("policies/teams"), &policies.join("teams"));
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

#[test]
fn check_and_policy_test_report_every_team_set_and_the_total() {
    let (dir, config) = setup();
    let config = config.to_str().unwrap();
    let (code, out) = keygate(&["check", "--config", config]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("organisation policies: 18 loaded (11 in the platform set, 7 in 2 team sets)"),
        "{out}"
    );
    assert!(
        out.contains("team `checkout`: 4 policies")
            && out.contains("scope: service accounts sa-checkout, sa-checkout-*"),
        "{out}"
    );
    assert!(out.contains("== team `analytics` (3 policies"), "{out}");
    assert!(out.contains("TOTAL PASS: 3 sets"), "{out}");

    // A wrong expectation in checkout's tests fails checkout's set and the total, not analytics'.
    let policies = dir.path().join("policies");
    let cases = policies.join("teams/checkout/tests/checkout.toml");
    let text = std::fs::read_to_string(&cases).unwrap();
    std::fs::write(
        &cases,
        text.replacen("expect = \"allow\"", "expect = \"deny\"", 1),
    )
    .unwrap();
    let (code, out) = keygate(&["check", "--config", config]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("TOTAL FAIL: 3 sets") && out.contains("(failing: checkout)"),
        "{out}"
    );
    let dir_arg = policies.to_str().unwrap();
    let (code, out) = keygate(&["policy", "test", dir_arg, "--team", "analytics"]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("checkout.toml"), "{out}");
    let (code, out) = keygate(&["policy", "test", dir_arg, "--team", "checkout"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL  ") && out.contains("expected deny, got allow"),
        "{out}"
    );

    // Coverage is per team: dropping analytics' only ticket case leaves `analytics/ticket`
    // uncovered.
    std::fs::write(&cases, text).unwrap();
    let analytics = policies.join("teams/analytics/tests/analytics.toml");
    let cases = std::fs::read_to_string(&analytics).unwrap();
    let kept: Vec<&str> = cases
        .split("[[case]]")
        .filter(|c| !c.contains("\"ticket\""))
        .collect();
    std::fs::write(&analytics, kept.join("[[case]]")).unwrap();
    let (code, out) = keygate(&["policy", "test", dir_arg]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("UNCOVERED policy `analytics/ticket`"), "{out}");
    assert!(out.contains("(failing: analytics)"), "{out}");

    // A team's broken file is a load error at its line, like any policy file's.
    let rules = policies.join("teams/analytics/rules.cedar");
    let text = std::fs::read_to_string(&rules).unwrap();
    std::fs::write(
        &rules,
        text.replace(
            "context.resource.environment ==",
            "context.resource.enviroment ==",
        ),
    )
    .unwrap();
    let (code, out) = keygate(&["check", "--config", config]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("teams/analytics/rules.cedar:2"), "{out}");
    assert!(out.contains("enviroment"), "{out}");
}

#[test]
fn explain_shows_which_sets_applied_and_why() {
    let (_dir, config) = setup();
    let body = r#"{"spec":{"display_name":"web-session-dev","description":"OPS-1","owner":{"id":"sa-checkout-web"},"resource":{"id":"lkc-dev01"}}}"#;
    let (code, out) = explain(&config, "u-alice", body, false);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("sets applied: platform (every request); team `checkout` (the owner is one of its service accounts (`sa-checkout-*`))"),
        "{out}"
    );
    assert!(
        out.contains("denied by checkout/naming (team `checkout`): checkout keys are named"),
        "{out}"
    );
    assert!(
        out.contains("denied by checkout/ticket (team `checkout`)"),
        "{out}"
    );
    let (code, out) = explain(&config, "u-alice", body, true);
    assert_eq!(code, 1, "{out}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["policies"]["teams"][0]["team"], "checkout");
    assert_eq!(json["policies"]["teams"][0]["matched"], "sa-checkout-*");
    assert_eq!(json["policies"]["denied"][0]["team"], "checkout");
}

/// The value after `policy revision: ` in tool output.
fn printed_revision(out: &str) -> String {
    let revision = out
        .lines()
        .find_map(|l| l.strip_prefix("policy revision: "))
        .unwrap_or_else(|| panic!("no policy revision in {out}"))
        .to_owned();
    assert_eq!(revision.len(), 64, "{revision}");
    assert!(
        revision.bytes().all(|b| b.is_ascii_hexdigit()),
        "{revision}"
    );
    revision
}

#[tokio::test]
async fn check_explain_readyz_metrics_and_audit_show_one_revision() {
    let sim = crate::support::sim::Sim::start().await;
    let (dir, config) = setup();
    let audit = dir.path().join("audit.jsonl");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[listener]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"127.0.0.1:0\"\n[upstream]\nurl = \"{}\"\n[audit]\nfile = \"{}\"\n",
        sim.url(),
        audit.display()
    ));
    std::fs::write(&config, text).unwrap();

    let (code, out) = keygate(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let revision = printed_revision(&out);

    let good = r#"{"spec":{"display_name":"orders-ingest-prod","description":"OPS-1","owner":{"id":"sa-orders"},"resource":{"id":"lkc-prod01"}}}"#;
    let (code, out) = explain(&config, "u-bob", good, false);
    assert_eq!(code, 0, "{out}");
    assert_eq!(printed_revision(&out), revision);
    let (_, out) = explain(&config, "u-bob", good, true);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["revision"], revision.as_str());

    let gw = crate::support::start(keygate::config::Config::load(&config).unwrap()).await;
    assert_eq!(gw.revision().as_str(), revision);
    let ready = crate::support::get(&crate::support::url(gw.admin_addr(), "/readyz")).await;
    assert_eq!(ready.status, 200);
    assert!(
        String::from_utf8_lossy(&ready.body).contains(&format!("policy revision: {revision}\n")),
        "{:?}",
        ready.body
    );
    let metrics = crate::support::metrics_text(&gw).await;
    assert!(
        metrics.contains(&format!(
            "keygate_policy_revision_info{{revision=\"{revision}\"}} 1"
        )),
        "{metrics}"
    );
    let created = crate::support::governed::send(crate::support::governed::request(
        "POST",
        gw.local_addr(),
        crate::support::governed::API_KEYS,
        Some(&sim.basic("u-bob")),
        good.as_bytes().to_vec(),
    ))
    .await;
    assert_eq!(created.status, 202);
    gw.shutdown();
    gw.wait().await;
    let trail = std::fs::read_to_string(&audit).unwrap();
    let mut seen = 0;
    for line in trail.lines() {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(r) = event["data"]["policyRevision"].as_str() {
            assert_eq!(r, revision, "{line}");
            seen += 1;
        }
    }
    assert!(seen >= 2, "request_received and response_complete: {trail}");

    // The trail, anchored to the final hash its verify printed.
    let (code, out) = keygate(&["audit", "verify", audit.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let hash = out
        .split("final hash ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_hexdigit()).next())
        .unwrap()
        .to_owned();
    let (code, out) = keygate(&[
        "audit",
        "verify",
        audit.to_str().unwrap(),
        "--expect-hash",
        &hash,
    ]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = keygate(&[
        "audit",
        "verify",
        audit.to_str().unwrap(),
        "--expect-hash",
        &"ab".repeat(32),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not anchored"), "{out}");
}

fn explain_args(config: &str, body: &Path, extra: &[&str]) -> (i32, String) {
    let mut args = vec![
        "explain",
        "--config",
        config,
        "--as",
        "u-bob",
        "--body",
        body.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    keygate(&args)
}

#[test]
fn explain_with_the_dev_config_decides_offline_and_exits_0_1_or_2() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.json");
    std::fs::write(
        &good,
        r#"{"spec":{"display_name":"orders-ingest-prod","description":"OPS-1","owner":{"id":"sa-orders"},"resource":{"id":"lkc-prod01"}}}"#,
    )
    .unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"spec":{"display_name":"Bad","owner":{"id":"sa-orders"},"resource":{"id":"lkc-prod01"}}}"#,
    )
    .unwrap();
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, r#"{"spec":"#).unwrap();

    // The dev config syncs bindings and inventory from the upstream (its URL is a placeholder):
    // explain says what it needs instead of trying to connect, and that is an error, not a deny.
    let (code, out) = explain_args("dev/keygate.toml", &good, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("--bindings FILE"), "{out}");
    assert!(!out.contains("127.0.0.1:0"), "{out}");

    let files = [
        "--bindings",
        "policies/role-bindings.toml",
        "--inventory",
        "policies/inventory.toml",
    ];
    let (code, out) = explain_args("dev/keygate.toml", &good, &files);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("decision: ALLOW"), "{out}");
    let revision = printed_revision(&out);
    let (code, out) = explain_args("dev/keygate.toml", &bad, &files);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("decision: DENY"), "{out}");
    let (code, out) = explain_args("dev/keygate.toml", &broken, &files);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("invalid request"), "{out}");
    let (code, out) = explain_args("no/such/keygate.toml", &good, &files);
    assert_eq!(code, 2, "{out}");

    // A known key count reaches the policies: sa-orders at its limit of 3 is denied.
    let (code, out) = explain_args(
        "dev/keygate.toml",
        &good,
        &[files.as_slice(), &["--owner-key-count", "3"]].concat(),
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("service-account-key-limit"), "{out}");

    // The dev config checks without its credential, with the revision explain printed.
    let (code, out) = keygate(&["check", "--config", "dev/keygate.toml"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("not read"), "{out}");
    assert_eq!(printed_revision(&out), revision);
}

/// `keygate ARGS…` off the async runtime (the simulator it talks to runs on it), with `env` set
/// and `KEYGATE_UPSTREAM_CREDENTIAL` removed unless given.
async fn keygate_env(args: Vec<String>, env: Vec<(&'static str, String)>) -> (i32, String) {
    tokio::task::spawn_blocking(move || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_keygate"));
        command
            .args(&args)
            .env_remove("KEYGATE_UPSTREAM_CREDENTIAL");
        for (k, v) in env {
            command.env(k, v);
        }
        let out = command.output().unwrap();
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.code().unwrap_or(-1), text)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn the_kubernetes_config_checks_without_secrets_and_connect_tests_the_credential() {
    let sim = crate::support::sim::Sim::start().await;
    let dir = tempfile::tempdir().unwrap();
    let policies = std::fs::canonicalize("policies").unwrap();
    // The shipped file, with its organisation filled in and its absolute paths moved to where
    // this machine has the files.
    let shipped = std::fs::read_to_string("deploy/kubernetes/keygate.toml").unwrap();
    let write = |org: &str| {
        let text = shipped
            .replace("<your-confluent-organisation-id>", org)
            .replace("/etc/keygate/policies", policies.to_str().unwrap())
            .replace("/var/lib/keygate", dir.path().to_str().unwrap())
            .replace("https://api.confluent.cloud", &sim.url());
        let path = dir.path().join("keygate.toml");
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let config = write(crate::support::ORG_ID);
    let check = |extra: &[&str]| {
        let mut args = vec!["check".to_owned(), "--config".to_owned(), config.clone()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };

    // No credential in the environment: check validates that one is configured, and passes.
    let (code, out) = keygate_env(check(&[]), vec![]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("configured (environment variable `KEYGATE_UPSTREAM_CREDENTIAL`; not read"),
        "{out}"
    );
    assert!(sim.received("/").is_empty(), "check contacted the upstream");

    // --connect reads it and fetches bindings and inventory with it.
    let (code, out) = keygate_env(check(&["--connect"]), vec![]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("upstream.credential.env"), "{out}");
    let own = sim.key("sa-keygate");
    let credential = format!("{}:{}", own.key_id, own.secret);
    let with_credential = vec![("KEYGATE_UPSTREAM_CREDENTIAL", credential.clone())];
    let (code, out) = keygate_env(check(&["--connect"]), with_credential.clone()).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("accepted keygate's credential"), "{out}");
    assert!(out.contains("role bindings: "), "{out}");
    assert!(!out.contains(&own.secret), "{out}");
    let wrong = vec![(
        "KEYGATE_UPSTREAM_CREDENTIAL",
        format!("{}:nope", own.key_id),
    )];
    let (code, out) = keygate_env(check(&["--connect"]), wrong).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("status 401"), "{out}");

    // A wrong organisation: `my-org` is not even an id; a real id of another organisation has
    // no role bindings, which --connect reports, and a serving keygate is not ready and logs why.
    write("my-org");
    let (code, out) = keygate_env(check(&[]), vec![]).await;
    assert_eq!(code, 78, "{out}");
    assert!(
        out.contains("authz.org_id") && out.contains("UUID"),
        "{out}"
    );
    let other = "0b7e1c2d-3f4a-4b5c-8d6e-7f8091a2b3c4";
    write(other);
    let (code, out) = keygate_env(check(&["--connect"]), with_credential.clone()).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no role binding for organisation"), "{out}");

    let keygate = crate::support::binary::spawn_with(
        Command::new(env!("CARGO_BIN_EXE_keygate"))
            .args([
                "serve",
                "--config",
                &config,
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .env("KEYGATE_UPSTREAM_CREDENTIAL", &credential),
    );
    let line = tokio::task::spawn_blocking(move || {
        let line = keygate.wait_stderr("No role bindings");
        drop(keygate);
        line
    })
    .await
    .unwrap();
    assert!(
        line.contains("authz.org_id") && line.contains(other),
        "{line}"
    );
}

#[test]
fn explain_resolves_a_company_identity_as_the_identity_stage_does() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = std::env::current_dir().unwrap();
    let p = cwd.join("policies");
    let org = crate::support::ORG_ID;
    let iss = "https://idp.example";
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, r#"{"keys":[]}"#).unwrap();
    let external = dir.path().join("external.toml");
    std::fs::write(
        &external,
        format!(
            "[[role_bindings]]\nprincipal = \"External:deploy@orders\"\nissuer = \"{iss}\"\n\
             role_name = \"ResourceOwner\"\n\
             crn_pattern = \"crn://confluent.cloud/organization={org}/service-account=sa-orders\"\n"
        ),
    )
    .unwrap();
    let config = dir.path().join("keygate.toml");
    std::fs::write(
        &config,
        format!(
            "[upstream.credential]\nenv = \"KEYGATE_EXPLAIN_TEST_UNREAD\"\n\
             [authz]\norg_id = \"{org}\"\nmatrix = \"{p}/matrix.toml\"\n\
             bindings = \"{p}/role-bindings.toml\"\ninventory = \"{p}/inventory.toml\"\n\
             [identity]\nexternal_bindings = {external:?}\n\
             [[identity.jwt]]\nissuer = \"{iss}\"\naudiences = [\"keygate\"]\n\
             jwks_file = {jwks:?}\nbroker = true\n\
             [[identity.map]]\nexternal = \"ci@payments\"\nacting_as = \"u-bob\"\n",
            p = p.display()
        ),
    )
    .unwrap();
    let body = dir.path().join("create.json");
    std::fs::write(
        &body,
        r#"{"spec":{"display_name":"orders","owner":{"id":"sa-orders"},"resource":{"id":"lkc-prod01"}}}"#,
    )
    .unwrap();
    let explain_external = |id: &str, extra: &[&str]| {
        let mut args = vec![
            "explain",
            "--config",
            config.to_str().unwrap(),
            "--external",
            id,
            "--body",
            body.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        keygate(&args)
    };

    // Mapped: decided as the Confluent principal it acts as, and named with both.
    let (code, out) = explain_external("ci@payments", &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("as ci@payments via issuer {iss}, acting as u-bob")),
        "{out}"
    );
    assert!(out.contains("decision: ALLOW"), "{out}");
    // The matrix's explanation names both, as on the request path.
    assert!(
        out.contains(&format!(
            "): ci@payments via issuer {iss}, acting as u-bob: "
        )),
        "{out}"
    );

    // Unmapped but brokered and bound keygate-side (the issuer named explicitly this time).
    let (code, out) = explain_external("deploy@orders", &["--issuer", iss, "--json"]);
    assert_eq!(code, 0, "{out}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["principal"], "External:deploy@orders");
    assert_eq!(json["decision"], "allow");
    let why = json["matrix"]["explanation"].as_str().unwrap();
    assert!(
        why.starts_with(&format!(
            "deploy@orders via issuer {iss}, no Confluent principal, keygate-side bindings: "
        )),
        "{why}"
    );
    assert!(
        why.contains("via keygate-side binding for deploy@orders"),
        "{why}"
    );

    // Neither: refused with the identity stage's reason, which is not a decision (exit 2).
    let (code, out) = explain_external("stranger@elsewhere", &[]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("is not mapped to a Confluent principal"),
        "{out}"
    );
    let (code, out) = explain_external("ci@payments", &["--issuer", "https://other.example"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("not one of the config's JWT issuers"), "{out}");

    // A Confluent principal and a company identity at once is a usage error.
    let (code, out) = explain_external("ci@payments", &["--as", "u-bob"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("cannot be used with"), "{out}");
}
