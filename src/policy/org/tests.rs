use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::load::statement_starts;
use super::*;

const SHIPPED_IDS: [&str; 10] = [
    "display-name-convention",
    "display-name-convention-on-update",
    "no-user-keys-in-prod",
    "org-keys-platform-only",
    "prod-ticket-reference",
    "protected-key-delete",
    "protected-key-delete-unknown",
    "protected-key-untag",
    "service-account-key-count-unknown",
    "service-account-key-limit",
];

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The config of `keygate dev`: `policies/policy.example.toml`, resolved against the repository.
fn shipped_config() -> OrgPolicyConfig {
    let text = std::fs::read_to_string(manifest_dir().join("policies/policy.example.toml"))
        .expect("policy.example.toml");
    OrgPolicyConfig::from_toml_str(&text, &manifest_dir()).expect("example config")
}

fn shipped() -> OrgPolicies {
    OrgPolicies::load(&shipped_config())
        .unwrap_or_else(|errors| panic!("shipped policies must load:\n{}", render_errors(&errors)))
}

fn render_errors(errors: &[LoadError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

const NO_GROUPS: &[String] = &[];

/// A create request by u-erin for sa-orders on lkc-dev01 that every shipped policy allows.
fn create() -> OrgInput<'static> {
    OrgInput {
        principal_id: "u-erin",
        principal_kind: PrincipalKind::User,
        groups: NO_GROUPS,
        bindings: &[],
        action: Action::CreateApiKey,
        key_id: None,
        owner_id: Some("sa-orders"),
        resource: Some(KeyResource {
            id: "lkc-dev01",
            resource_type: "Kafka",
            environment: Some("env-dev01"),
            cluster: Some("lkc-dev01"),
        }),
        display_name: Some("orders-ingest-dev"),
        description: Some("ingest"),
        matrix_allowed: true,
        matrix_rule: "test",
        owner_key_count: Some(0),
        time: 1_735_689_600,
        source_ip: Some("10.1.2.3".parse().unwrap()),
        request_id: "req-1",
        target_key: None,
        quota: None,
    }
}

fn prod(mut input: OrgInput<'static>) -> OrgInput<'static> {
    input.resource = Some(KeyResource {
        id: "lkc-prod01",
        resource_type: "Kafka",
        environment: Some("env-prod01"),
        cluster: Some("lkc-prod01"),
    });
    input
}

fn on_key(action: Action, description: &'static str) -> OrgInput<'static> {
    OrgInput {
        action,
        key_id: Some("KEY0000000000001"),
        owner_id: None,
        resource: None,
        display_name: None,
        description: None,
        owner_key_count: None,
        target_key: Some(TargetKey {
            id: "KEY0000000000001",
            owner_id: Some("sa-orders"),
            resource_id: Some("lkc-dev01"),
            description,
            display_name: "orders-ingest-dev",
        }),
        ..create()
    }
}

fn ids(findings: &[Finding]) -> Vec<&str> {
    findings.iter().map(|f| f.id.as_str()).collect()
}

/// Asserts that only `id` denies `deny` and nothing denies `allow`.
fn assert_policy(p: &OrgPolicies, id: &str, allow: &OrgInput<'_>, deny: &OrgInput<'_>) {
    let a = p.evaluate(allow);
    assert!(a.allowed, "{id}: expected allow, got {a:?}");
    assert!(a.denied.is_empty() && a.errors.is_empty(), "{a:?}");
    let d = p.evaluate(deny);
    assert!(!d.allowed, "{id}: expected deny, got {d:?}");
    assert_eq!(ids(&d.denied), [id], "{d:?}");
    // The reason, with every placeholder filled in.
    let reason = &d.denied[0].reason;
    assert!(
        !reason.is_empty() && !reason.contains(['{', '}']),
        "{reason}"
    );
    assert!(p.reason(id).is_some());
    assert!(d.errors.is_empty(), "{d:?}");
}

/// A scratch policy directory with the shipped schema and the given files.
fn scratch(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        manifest_dir().join("policies/keygate.cedarschema"),
        dir.path().join("keygate.cedarschema"),
    )
    .unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn scratch_config(dir: &Path) -> OrgPolicyConfig {
    OrgPolicyConfig {
        patterns: vec![("naming".into(), "^[a-z-]+$".into())],
        params: vec![(
            "platform_group".into(),
            ParamValue::String("platform".into()),
        )],
        ..OrgPolicyConfig::new(dir)
    }
}

/// Loads a scratch set expected to fail and returns its rendered errors.
fn load_errors(files: &[(&str, &str)]) -> (tempfile::TempDir, Vec<String>) {
    let dir = scratch(files);
    let errors = match OrgPolicies::load(&scratch_config(dir.path())) {
        Ok(_) => panic!("expected load errors"),
        Err(errors) => errors
            .iter()
            .map(|e| {
                e.to_string()
                    .replace(&dir.path().display().to_string(), "DIR")
            })
            .collect(),
    };
    (dir, errors)
}

/// Whether `error` is at `location` (`file:line`), with or without a column after it.
fn is_at(error: &str, location: &str) -> bool {
    error.strip_prefix(location).is_some_and(|rest| {
        rest.starts_with(": ")
            || rest.strip_prefix(':').is_some_and(|r| {
                let digits = r.bytes().take_while(u8::is_ascii_digit).count();
                digits > 0 && r[digits..].starts_with(": ")
            })
    })
}

fn assert_one_error_at(files: &[(&str, &str)], location: &str, needle: &str) {
    let (_dir, errors) = load_errors(files);
    assert!(
        errors
            .iter()
            .any(|e| is_at(e, location) && e.contains(needle)),
        "expected an error at {location} containing {needle:?}, got {errors:#?}"
    );
}

const OK_POLICY: &str = r#"
@id("ok")
@reason("fine")
forbid (principal, action == Action::"CreateApiKey", resource)
when { !context.display_name_matches.naming };
"#;

// --- the shipped set -------------------------------------------------------------------------

#[test]
fn every_shipped_file_loads() {
    let p = shipped();
    assert_eq!(p.set_policy_ids(None), SHIPPED_IDS);
    assert_eq!(p.digest().len(), 64);
    // Every .cedar file contributes, and the example config's override is in force.
    let files: Vec<_> = std::fs::read_dir(manifest_dir().join("policies"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
        .collect();
    assert_eq!(files.len(), 5);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            SHIPPED_IDS
                .iter()
                .any(|id| text.contains(&format!("@id(\"{id}\")"))),
            "{f:?}"
        );
    }
    assert_eq!(
        p.mode("service-account-key-count-unknown"),
        Some(Mode::DryRun)
    );
    assert_eq!(p.mode("prod-ticket-reference"), Some(Mode::Enforce));
}

#[test]
fn shipped_policy_tests_pass_with_full_coverage() {
    let cfg = shipped_config();
    let p = shipped();
    let report = run_policy_tests(&p, &cfg.tests_dir());
    assert!(report.passed(), "{}", report.render());
    assert!(report.cases.len() >= 30, "{}", report.render());
    assert!(report.uncovered.is_empty());
    assert!(report.render().contains("PASS"));
}

#[test]
fn shipped_policies_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<OrgPolicies>();
}

#[test]
fn display_name_convention_allows_and_denies() {
    let p = shipped();
    let deny = OrgInput {
        display_name: Some("Orders Key"),
        ..create()
    };
    assert_policy(&p, "display-name-convention", &create(), &deny);
    let unnamed = OrgInput {
        display_name: None,
        ..create()
    };
    assert_eq!(
        ids(&p.evaluate(&unnamed).denied),
        ["display-name-convention"]
    );
}

#[test]
fn display_name_convention_on_update_allows_and_denies() {
    let p = shipped();
    let allow = OrgInput {
        display_name: Some("orders-ingest-prod"),
        ..on_key(Action::UpdateApiKey, "x")
    };
    let deny = OrgInput {
        display_name: Some("ORDERS"),
        ..on_key(Action::UpdateApiKey, "x")
    };
    assert_policy(&p, "display-name-convention-on-update", &allow, &deny);
}

#[test]
fn prod_ticket_reference_allows_and_denies() {
    let p = shipped();
    let allow = OrgInput {
        description: Some("OPS-1234 ingest"),
        display_name: Some("orders-ingest-prod"),
        ..prod(create())
    };
    let deny = OrgInput {
        description: Some("no ticket"),
        ..allow
    };
    assert_policy(&p, "prod-ticket-reference", &allow, &deny);
}

#[test]
fn no_user_keys_in_prod_allows_and_denies() {
    let p = shipped();
    let allow = OrgInput {
        owner_id: Some("u-erin"),
        ..create()
    };
    let deny = OrgInput {
        owner_id: Some("u-erin"),
        description: Some("OPS-1 debugging"),
        ..prod(create())
    };
    assert_policy(&p, "no-user-keys-in-prod", &allow, &deny);
}

#[test]
fn org_keys_platform_only_allows_and_denies() {
    let p = shipped();
    let global = KeyResource {
        id: "global",
        resource_type: "Global",
        environment: None,
        cluster: None,
    };
    // u-alice is in the platform group through [policy.groups] only.
    let allow = OrgInput {
        principal_id: "u-alice",
        resource: Some(global),
        ..create()
    };
    let deny = OrgInput {
        principal_id: "u-bob",
        resource: Some(global),
        ..create()
    };
    assert_policy(&p, "org-keys-platform-only", &allow, &deny);
    let platform = vec!["platform".to_owned()];
    let from_identity = OrgInput {
        groups: &platform,
        ..deny
    };
    assert!(p.evaluate(&from_identity).allowed);
}

#[test]
fn service_account_key_limit_allows_and_denies() {
    let p = shipped();
    let allow = OrgInput {
        owner_key_count: Some(2),
        ..create()
    };
    let deny = OrgInput {
        owner_key_count: Some(3),
        ..create()
    };
    assert_policy(&p, "service-account-key-limit", &allow, &deny);
    // The reason carries the request's values, not a parameter name.
    let denied = p.evaluate(&deny);
    assert_eq!(
        denied.denied[0].reason,
        "service account sa-orders already has 3 API keys (limit 3); delete an unused key first"
    );
    assert_eq!(denied.denied[0].pointer.as_deref(), Some("/spec/owner/id"));
    let huge = OrgInput {
        owner_key_count: Some(u64::MAX),
        ..create()
    };
    assert_eq!(
        ids(&p.evaluate(&huge).denied),
        ["service-account-key-limit"]
    );
}

#[test]
fn protected_key_delete_allows_and_denies() {
    let p = shipped();
    let allow = on_key(Action::DeleteApiKey, "temporary");
    let deny = on_key(Action::DeleteApiKey, "[protected] OPS-1");
    assert_policy(&p, "protected-key-delete", &allow, &deny);
    let unknown = OrgInput {
        target_key: None,
        ..allow
    };
    // A key keygate could not read is refused too, but not called protected.
    let refused = p.evaluate(&unknown);
    assert_eq!(ids(&refused.denied), ["protected-key-delete-unknown"]);
    assert!(
        !refused.denied[0]
            .reason
            .contains("is tagged [protected] in its description"),
        "{refused:?}"
    );
}

#[test]
fn protected_key_untag_allows_and_denies() {
    let p = shipped();
    let deny = OrgInput {
        description: Some("OPS-1"),
        ..on_key(Action::UpdateApiKey, "[protected] OPS-1")
    };
    let allow = OrgInput {
        principal_id: "u-alice",
        ..deny
    };
    assert_policy(&p, "protected-key-untag", &allow, &deny);
}

// --- dry-run ---------------------------------------------------------------------------------

#[test]
fn dry_run_annotation_allows_and_reports_would_deny() {
    let p = shipped();
    let input = OrgInput {
        owner_key_count: None,
        ..create()
    };
    let d = p.evaluate(&input);
    assert!(d.allowed, "{d:?}");
    assert!(d.denied.is_empty());
    assert_eq!(ids(&d.would_deny), ["service-account-key-count-unknown"]);
    assert_eq!(d.would_deny[0].mode, Mode::DryRun);
    // Without the config override the annotation alone puts it in dry-run.
    let mut cfg = shipped_config();
    cfg.modes.clear();
    let p = OrgPolicies::load(&cfg).unwrap();
    assert_eq!(
        p.mode("service-account-key-count-unknown"),
        Some(Mode::DryRun)
    );
    assert!(p.evaluate(&input).allowed);
}

#[test]
fn dry_run_config_override_allows_and_reports_would_deny() {
    let mut cfg = shipped_config();
    cfg.modes
        .insert("prod-ticket-reference".into(), Mode::DryRun);
    let p = OrgPolicies::load(&cfg).unwrap();
    let input = OrgInput {
        description: Some("no ticket"),
        display_name: Some("orders-ingest-prod"),
        ..prod(create())
    };
    let d = p.evaluate(&input);
    assert!(d.allowed, "{d:?}");
    assert_eq!(ids(&d.would_deny), ["prod-ticket-reference"]);
    // An enforce override beats a @mode("dry-run") annotation.
    cfg.modes
        .insert("service-account-key-count-unknown".into(), Mode::Enforce);
    let p = OrgPolicies::load(&cfg).unwrap();
    let d = p.evaluate(&OrgInput {
        owner_key_count: None,
        ..create()
    });
    assert!(!d.allowed);
    assert_eq!(ids(&d.denied), ["service-account-key-count-unknown"]);
}

#[test]
fn enforced_and_dry_run_matches_are_reported_together() {
    let mut cfg = shipped_config();
    cfg.modes
        .insert("display-name-convention".into(), Mode::DryRun);
    let p = OrgPolicies::load(&cfg).unwrap();
    let d = p.evaluate(&OrgInput {
        display_name: Some("Bad Name"),
        owner_key_count: Some(9),
        ..create()
    });
    assert!(!d.allowed);
    assert_eq!(ids(&d.denied), ["service-account-key-limit"]);
    assert_eq!(ids(&d.would_deny), ["display-name-convention"]);
}

// --- fail closed -----------------------------------------------------------------------------

const OVERFLOW_POLICY: &str = r#"
@id("overflow")
@reason("never meant to match")
forbid (principal, action == Action::"CreateApiKey", resource)
when { context.time * 9223372036854775807 == 1 };
"#;

#[test]
fn evaluation_error_denies() {
    let dir = scratch(&[("overflow.cedar", OVERFLOW_POLICY)]);
    let p = OrgPolicies::load(&scratch_config(dir.path())).unwrap();
    let d = p.evaluate(&create());
    assert!(!d.allowed, "{d:?}");
    assert!(d.denied.is_empty());
    assert_eq!(ids(&d.errors), ["overflow"]);
    assert_eq!(d.errors[0].mode, Mode::Enforce);
    assert!(d.errors[0].reason.contains("overflow"), "{d:?}");
    // A request that does not reach the overflow (time 0) is allowed.
    assert!(
        p.evaluate(&OrgInput {
            time: 0,
            ..create()
        })
        .allowed
    );
}

#[test]
fn evaluation_error_in_a_dry_run_policy_is_reported_but_not_enforced() {
    let dir = scratch(&[("overflow.cedar", OVERFLOW_POLICY)]);
    let mut cfg = scratch_config(dir.path());
    cfg.modes.insert("overflow".into(), Mode::DryRun);
    let p = OrgPolicies::load(&cfg).unwrap();
    let d = p.evaluate(&create());
    assert!(d.allowed, "{d:?}");
    assert_eq!(ids(&d.errors), ["overflow"]);
    assert_eq!(d.errors[0].mode, Mode::DryRun);
}

#[test]
fn input_the_schema_cannot_express_denies() {
    let p = shipped();
    let d = p.evaluate(&OrgInput {
        owner_id: None,
        ..create()
    });
    assert!(!d.allowed);
    assert_eq!(ids(&d.errors), [INPUT_ERROR_ID]);
    assert!(d.errors[0].reason.contains("owner"), "{d:?}");
}

#[test]
fn built_requests_conform_to_the_schema_for_every_action() {
    let p = shipped();
    let bindings = [
        RoleBinding {
            role: "EnvironmentAdmin",
            crn_pattern: "crn://confluent.cloud/organization=o/environment=env-prod01",
        },
        RoleBinding {
            role: "EnvironmentAdmin",
            crn_pattern: "crn://confluent.cloud/organization=o/environment=env-dev01",
        },
    ];
    let groups = vec!["platform".to_owned(), "platform".to_owned()];
    let clusters = [crate::policy::quota::ClusterLoad {
        id: "lkc-prod01".into(),
        kind: Some(crate::policy::inventory::ClusterKind::Dedicated),
        keys: 7,
    }];
    let full_create = OrgInput {
        bindings: &bindings,
        groups: &groups,
        quota: Some(QuotaInput {
            limit: Some(10),
            clusters: &clusters,
        }),
        ..create()
    };
    let minimal_create = OrgInput {
        source_ip: None,
        owner_key_count: None,
        display_name: None,
        description: None,
        resource: Some(KeyResource {
            id: "cloud",
            resource_type: "Cloud",
            environment: None,
            cluster: None,
        }),
        ..create()
    };
    let update = OrgInput {
        display_name: Some("a"),
        description: Some("b"),
        ..on_key(Action::UpdateApiKey, "c")
    };
    let list = OrgInput {
        action: Action::ListApiKeys,
        ..create()
    };
    let bare_list = OrgInput {
        owner_id: None,
        resource: None,
        ..list
    };
    let inputs = [
        full_create,
        minimal_create,
        update,
        on_key(Action::UpdateApiKey, "c"),
        on_key(Action::DeleteApiKey, "c"),
        on_key(Action::GetApiKey, "c"),
        OrgInput {
            target_key: None,
            ..on_key(Action::DeleteApiKey, "c")
        },
        list,
        bare_list,
    ];
    for input in &inputs {
        p.build_request_checked(input)
            .unwrap_or_else(|e| panic!("{:?}: {e}", input.action));
    }
}

#[test]
fn policies_see_the_key_counts_of_the_clusters_a_create_counts_against() {
    let policy =
        "@id(\"global-near-quota\")\n@reason(\"{resource} would take a cluster near its quota\")\n\
        forbid (principal, action == Action::\"CreateApiKey\", resource)\n\
        when { context has quota && context.quota has limit &&\n\
        context.quota.max_keys * 10 >= context.quota.limit * 8 &&\n\
        context.quota.clusters.contains({id: \"lkc-prod01\", kind: \"Dedicated\", keys: 9}) };\n";
    let dir = scratch(&[("quota.cedar", policy)]);
    let p = OrgPolicies::load(&scratch_config(dir.path())).unwrap();
    let near = [crate::policy::quota::ClusterLoad {
        id: "lkc-prod01".into(),
        kind: Some(crate::policy::inventory::ClusterKind::Dedicated),
        keys: 9,
    }];
    let far = [crate::policy::quota::ClusterLoad {
        keys: 2,
        ..near[0].clone()
    }];
    let with = |clusters: &'static [crate::policy::quota::ClusterLoad]| OrgInput {
        quota: Some(QuotaInput {
            limit: Some(10),
            clusters,
        }),
        ..create()
    };
    let near: &'static [_] = Box::leak(Box::new(near));
    let far: &'static [_] = Box::leak(Box::new(far));
    let denied = p.evaluate(&with(near));
    assert_eq!(ids(&denied.denied), ["global-near-quota"], "{denied:?}");
    assert!(p.evaluate(&with(far)).allowed);
    // Unknown counts: the attribute is absent, and the policy says what that means.
    assert!(p.evaluate(&create()).allowed);
}

// --- load errors -----------------------------------------------------------------------------

#[test]
fn typo_in_an_attribute_is_a_load_error_at_its_line() {
    let policy = "@id(\"typo\")\n@reason(\"r\")\nforbid (principal, action == Action::\"CreateApiKey\", resource)\nwhen {\n  context.ownr.kind == \"User\"\n};\n";
    assert_one_error_at(&[("a.cedar", policy)], "DIR/a.cedar:5", "ownr");
}

#[test]
fn wrong_type_is_a_load_error_at_its_line() {
    let policy = "@id(\"type\")\n@reason(\"r\")\nforbid (principal, action == Action::\"CreateApiKey\", resource)\nwhen { context.owner_key_count has x ||\n  context.display_name > 3 };\n";
    let policy = policy.replace("context.owner_key_count has x ||\n", "true &&\n");
    assert_one_error_at(&[("b.cedar", &policy)], "DIR/b.cedar:5", "type");
}

#[test]
fn unknown_pattern_name_is_a_load_error_at_its_line() {
    let policy = format!(
        "{OK_POLICY}\n@id(\"pattern\")\n@reason(\"r\")\nforbid (principal, action == Action::\"CreateApiKey\", resource)\nwhen {{ context.description_matches.ticket }};\n"
    );
    // OK_POLICY is 5 lines plus a leading newline; the `when` of the second policy is line 10.
    assert_one_error_at(&[("c.cedar", &policy)], "DIR/c.cedar:10", "ticket");
}

#[test]
fn unknown_param_name_is_a_load_error() {
    let policy = "@id(\"param\")\n@reason(\"r\")\nforbid (principal, action, resource)\nwhen { principal.groups.contains(context.params.platform_team) };\n";
    assert_one_error_at(&[("d.cedar", policy)], "DIR/d.cedar:4", "platform_team");
}

#[test]
fn optional_attribute_without_has_is_a_load_error() {
    let policy = "@id(\"count\")\n@reason(\"r\")\nforbid (principal, action == Action::\"CreateApiKey\", resource)\nwhen { context.owner_key_count > 3 };\n";
    assert_one_error_at(&[("e.cedar", policy)], "DIR/e.cedar:4", "owner_key_count");
}

#[test]
fn permit_is_a_load_error_at_its_line() {
    let policy = format!(
        "{OK_POLICY}\n// a comment; with a semicolon\n@id(\"p\")\n@reason(\"r\")\npermit (principal, action, resource);\n"
    );
    assert_one_error_at(
        &[("f.cedar", &policy)],
        "DIR/f.cedar:8",
        "`permit` is not allowed",
    );
}

#[test]
fn missing_id_is_a_load_error_at_its_line() {
    let policy =
        format!("{OK_POLICY}\n\n@reason(\"no id; here\")\nforbid (principal, action, resource);\n");
    assert_one_error_at(&[("g.cedar", &policy)], "DIR/g.cedar:8", "no `@id");
}

#[test]
fn reason_placeholders_are_filled_in_and_a_wrong_one_is_a_load_error() {
    let policy = r#"
@id("named")
@reason("{{literal}} {principal} wants {display_name} for {owner} in {environment}; group {params.platform_group}")
@pointer("/spec/display_name")
forbid (principal, action == Action::"CreateApiKey", resource)
when { !context.display_name_matches.naming };
"#;
    let dir = scratch(&[("named.cedar", policy)]);
    let p = OrgPolicies::load(&scratch_config(dir.path())).unwrap();
    let input = OrgInput {
        display_name: Some("Bad Name"),
        ..create()
    };
    let d = p.evaluate(&input);
    assert_eq!(ids(&d.denied), ["named"]);
    assert_eq!(
        d.denied[0].reason,
        "{literal} u-erin wants Bad Name for sa-orders in env-dev01; group platform"
    );
    assert_eq!(d.denied[0].pointer.as_deref(), Some("/spec/display_name"));

    for (reason, needle) in [
        ("{ownr}", "unknown placeholder `{ownr}`"),
        ("{params.nope}", "`nope` is not in [policy.params]"),
        ("a { b", "unclosed `{`"),
        ("a } b", "lone `}`"),
    ] {
        let bad =
            format!("@id(\"bad\")\n@reason(\"{reason}\")\nforbid (principal, action, resource);\n");
        assert_one_error_at(&[("bad.cedar", &bad)], "DIR/bad.cedar:1", needle);
    }
    let bad = "@id(\"bad\")\n@reason(\"x\")\n@pointer(\"spec.owner\")\nforbid (principal, action, resource);\n";
    assert_one_error_at(
        &[("bad.cedar", bad)],
        "DIR/bad.cedar:1",
        "invalid `@pointer",
    );
}

#[test]
fn missing_reason_is_a_load_error_at_its_line() {
    let policy = "@id(\"noreason\")\nforbid (principal, action, resource);\n";
    assert_one_error_at(&[("h.cedar", policy)], "DIR/h.cedar:1", "no `@reason");
}

#[test]
fn duplicate_id_is_a_load_error_at_the_second_use() {
    let second = format!("// second file\n{OK_POLICY}");
    let (_dir, errors) = load_errors(&[("a.cedar", OK_POLICY), ("b.cedar", &second)]);
    assert_eq!(
        errors,
        ["DIR/b.cedar:3: duplicate policy id `ok`: already used at DIR/a.cedar:2"]
    );
}

#[test]
fn bad_annotations_are_load_errors() {
    let policy = "@id(\"m\")\n@reason(\"r\")\n@mode(\"off\")\nforbid (principal, action, resource);\n\n@id(\"n\")\n@reason(\"r\")\n@mod(\"dry-run\")\nforbid (principal, action, resource);\n\n@id(\"keygate.x\")\n@reason(\"r\")\nforbid (principal, action, resource);\n\n@id(\"has space\")\n@reason(\"r\")\nforbid (principal, action, resource);\n";
    let (_dir, errors) = load_errors(&[("i.cedar", policy)]);
    let at = |loc: &str, needle: &str| {
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with(&format!("DIR/i.cedar:{loc}: ")) && e.contains(needle)),
            "{loc} {needle}: {errors:#?}"
        );
    };
    at("1", "invalid `@mode(\"off\")`");
    at("6", "unknown annotation `@mod`");
    at("11", "reserved");
    at("15", "invalid policy id `has space`");
}

#[test]
fn syntax_error_is_a_load_error_at_its_line() {
    let policy = format!("{OK_POLICY}\n@id(\"s\")\n@reason(\"r\")\nforbid (principal, action, resource)\nwhen {{ context. }};\n");
    let (_dir, errors) = load_errors(&[("j.cedar", &policy)]);
    assert!(
        errors.iter().any(|e| is_at(e, "DIR/j.cedar:10")),
        "{errors:#?}"
    );
}

#[test]
fn a_missing_semicolon_is_reported_where_it_belongs() {
    // Cedar itself stumbles over the next policy's `@`; the `;` belongs after the `}`.
    let policy = "@id(\"one\")\n@reason(\"r\")\nforbid (principal, action == Action::\"CreateApiKey\", resource)\nwhen { context.display_name == \"x\" }\n\n// the next one\n@id(\"two\")\n@reason(\"r\")\nforbid (principal, action == Action::\"DeleteApiKey\", resource);\n";
    let (_dir, errors) = load_errors(&[("n.cedar", policy)]);
    assert_eq!(
        errors,
        ["DIR/n.cedar:4:37: missing `;` at the end of this policy (every policy ends with `;`)"]
    );
    // At the end of the file, and after a scope without a condition.
    let last = "@id(\"one\")\n@reason(\"r\")\nforbid (principal, action, resource)\n  \n";
    let (_dir, errors) = load_errors(&[("o.cedar", last)]);
    assert_eq!(
        errors,
        ["DIR/o.cedar:3:37: missing `;` at the end of this policy (every policy ends with `;`)"]
    );
}

#[test]
fn one_typo_is_one_error() {
    // Checked once per principal type and once per action, but reported once, with the
    // suggestion.
    for (body, says) in [
        ("principal.grups.contains(\"a\")", "did you mean `groups`?"),
        ("context.display_nmae == \"x\"", "display_name"),
        ("context.matrix.rul == \"x\"", "did you mean `rule`?"),
    ] {
        for scope in [
            "action == Action::\"CreateApiKey\"",
            "action in [Action::\"CreateApiKey\", Action::\"UpdateApiKey\"]",
            "action",
        ] {
            let policy = format!(
                "@id(\"t\")\n@reason(\"r\")\nforbid (principal, {scope}, resource)\nwhen {{ {body} }};\n"
            );
            let (_dir, errors) = load_errors(&[("t.cedar", &policy)]);
            assert_eq!(errors.len(), 1, "{scope} / {body}: {errors:#?}");
            assert!(is_at(&errors[0], "DIR/t.cedar:4"), "{errors:#?}");
            assert!(errors[0].contains(says), "{errors:#?}");
        }
    }
}

#[test]
fn templates_are_load_errors() {
    let policy =
        "@id(\"t\")\n@reason(\"r\")\nforbid (principal == ?principal, action, resource);\n";
    assert_one_error_at(&[("k.cedar", policy)], "DIR/k.cedar:1", "templates");
}

#[test]
fn config_problems_are_load_errors() {
    let dir = scratch(&[("ok.cedar", OK_POLICY)]);
    let mut cfg = scratch_config(dir.path());
    cfg.patterns.push(("ticket".into(), "([A-Z]+".into()));
    cfg.patterns.push(("bad name".into(), "x".into()));
    cfg.modes.insert("nope".into(), Mode::DryRun);
    let errors: Vec<String> = OrgPolicies::load(&cfg)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    for needle in [
        "config `policy.patterns.ticket`: invalid regular expression",
        "config `policy.patterns.bad name`: `bad name` is not a Cedar identifier",
        "config `policy.modes.nope`: no loaded policy has the id `nope`",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(needle)),
            "{needle}: {errors:#?}"
        );
    }
}

#[test]
fn schema_errors_point_into_the_schema_file() {
    let dir = scratch(&[("ok.cedar", OK_POLICY)]);
    let path = dir.path().join("keygate.cedarschema");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}\nentity Broken = {{ x: Nope }};\n")).unwrap();
    let line = text.lines().count() + 2;
    let errors = OrgPolicies::load(&scratch_config(dir.path())).unwrap_err();
    let rendered = render_errors(&errors);
    assert!(
        rendered.contains(&format!("keygate.cedarschema:{line}:")),
        "{rendered}"
    );
}

#[test]
fn missing_directory_is_a_load_error() {
    let errors =
        OrgPolicies::load(&OrgPolicyConfig::new("/nonexistent/keygate-policies")).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.to_string().starts_with("/nonexistent/keygate-policies")),
        "{errors:?}"
    );
}

#[test]
fn a_file_of_policy_errors_reports_them_all() {
    let bad = "@id(\"a\")\n@reason(\"r\")\npermit (principal, action, resource);\n\nforbid (principal, action, resource);\n";
    let typo = "@id(\"b\")\n@reason(\"r\")\nforbid (principal, action, resource) when { context.tiem > 0 };\n";
    let (_dir, errors) = load_errors(&[("a.cedar", bad), ("b.cedar", typo)]);
    // One error per problem: the typo is reported once, not once per action it was checked for.
    assert_eq!(
        errors,
        [
            "DIR/a.cedar:1: `permit` is not allowed in organisation policies: keygate permits \
             what layer 1 (the RBAC matrix) allows, and policies can only narrow that with `forbid`",
            "DIR/a.cedar:5: policy has no `@id(\"…\")` annotation",
            "DIR/a.cedar:5: policy has no `@reason(\"…\")` annotation (the reason is shown to the \
             denied caller)",
            "DIR/b.cedar:3:45: for policy `b`, attribute `tiem` in context not found (did you mean \
             `time`?) (for actions CreateApiKey, DeleteApiKey, GetApiKey, ListApiKeys, UpdateApiKey)",
        ]
    );
}

// --- digest ----------------------------------------------------------------------------------

#[test]
fn digest_changes_when_a_file_or_the_config_changes() {
    let dir = scratch(&[("ok.cedar", OK_POLICY)]);
    let cfg = scratch_config(dir.path());
    let first = OrgPolicies::load(&cfg).unwrap().digest().to_owned();
    assert_eq!(OrgPolicies::load(&cfg).unwrap().digest(), first);

    std::fs::write(
        dir.path().join("ok.cedar"),
        OK_POLICY.replace("fine", "finer"),
    )
    .unwrap();
    let edited = OrgPolicies::load(&cfg).unwrap().digest().to_owned();
    assert_ne!(edited, first);

    let mut other_pattern = cfg.clone();
    other_pattern.patterns[0].1 = "^[a-z]+$".into();
    assert_ne!(OrgPolicies::load(&other_pattern).unwrap().digest(), edited);

    let mut other_mode = cfg.clone();
    other_mode.modes.insert("ok".into(), Mode::DryRun);
    assert_ne!(OrgPolicies::load(&other_mode).unwrap().digest(), edited);

    let schema = dir.path().join("keygate.cedarschema");
    let text = std::fs::read_to_string(&schema).unwrap();
    std::fs::write(&schema, format!("{text}\n// comment\n")).unwrap();
    assert_ne!(OrgPolicies::load(&cfg).unwrap().digest(), edited);
}

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

#[test]
fn explain_lists_every_finding_and_the_decision() {
    let mut cfg = shipped_config();
    cfg.modes
        .insert("display-name-convention".into(), Mode::DryRun);
    let p = OrgPolicies::load(&cfg).unwrap();
    let e = explain(
        &p,
        &OrgInput {
            owner_id: Some("u-erin"),
            display_name: Some("x"),
            description: Some(""),
            ..prod(create())
        },
        "rev",
    );
    assert!(!e.allowed());
    assert_eq!(
        ids(&e.denied),
        ["no-user-keys-in-prod", "prod-ticket-reference"]
    );
    let text = e.render();
    assert!(text.contains("DENY"), "{text}");
    assert!(text.contains(
        "denied by no-user-keys-in-prod: keys in the production environment env-prod01 must be owned by a service account, not by the user account u-erin"
    ));
    assert!(text.contains("would deny (dry-run) display-name-convention: "));
    let json = serde_json::to_value(&e).unwrap();
    assert_eq!(json["decision"], "deny");
    assert_eq!(json["would_deny"][0]["mode"], "dry-run");

    let allowed = explain(&p, &create(), "rev");
    assert!(allowed.allowed());
    assert!(allowed.render().contains("no forbid policy matched"));
}

// --- helpers ---------------------------------------------------------------------------------

#[test]
fn statement_starts_skip_comments_and_strings() {
    let text = "// a; b\n@id(\"x;y\") forbid (principal, action, resource);\n  // c\n\n@id(\"\\\";\") forbid(principal, action, resource);\n// trailing; comment\n";
    let starts = statement_starts(text);
    assert_eq!(starts.len(), 2);
    assert_eq!(&text[starts[0]..starts[0] + 3], "@id");
    assert_eq!(super::load::line_of(text, starts[1]), 5);
}

#[test]
fn config_toml_types_params_and_resolves_paths() {
    let cfg = OrgPolicyConfig::from_toml_str(
        "[other]\nx = 1\n[policy]\ndir = \"p\"\n[policy.params]\na = \"s\"\nb = 3\nc = true\nd = [\"x\"]\ne = [1, 2]\n",
        Path::new("/etc/keygate"),
    )
    .unwrap();
    assert_eq!(cfg.dir, Path::new("/etc/keygate/p"));
    assert_eq!(
        cfg.schema_path(),
        Path::new("/etc/keygate/p/keygate.cedarschema")
    );
    let params: HashMap<_, _> = cfg.params.into_iter().collect();
    assert_eq!(params["a"], ParamValue::String("s".into()));
    assert_eq!(params["b"], ParamValue::Long(3));
    assert_eq!(params["c"], ParamValue::Bool(true));
    assert_eq!(params["d"], ParamValue::StringSet(vec!["x".into()]));
    assert_eq!(params["e"], ParamValue::LongSet(vec![1, 2]));

    let errors =
        OrgPolicyConfig::from_toml_str("[policy.params]\nmixed = [1, \"a\"]\n", Path::new("/"))
            .unwrap_err();
    assert_eq!(
        errors[0].to_string().split(':').next(),
        Some("config `policy.params.mixed`")
    );
    assert!(OrgPolicyConfig::from_toml_str("[policy]\ndri = \"x\"\n", Path::new("/")).is_err());
}

#[test]
fn a_policy_that_can_never_match_is_a_load_error() {
    let policy = "@id(\"never\")\n@reason(\"r\")\nforbid (principal, action == Action::\"CreateApiKey\", resource)\nwhen { false };\n";
    assert_one_error_at(&[("l.cedar", policy)], "DIR/l.cedar:1", "impossible");
}

#[test]
fn an_unknown_entity_type_is_one_error_not_a_cascade() {
    let policy = "@id(\"u\")\n@reason(\"r\")\nforbid (principal is Usr, action, resource);\n";
    let (_dir, errors) = load_errors(&[("m.cedar", policy)]);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        is_at(&errors[0], "DIR/m.cedar:3") && errors[0].contains("did you mean `User`"),
        "{errors:#?}"
    );
}

#[test]
fn policies_apply_to_exactly_the_actions_their_scope_names() {
    let policies = r#"
@id("mutations")
@reason("no changes today")
forbid (principal, action in [Action::"UpdateApiKey", Action::"DeleteApiKey"], resource);

@id("everything")
@reason("read-only day")
forbid (principal, action, resource)
when { context.request_id == "freeze" };
"#;
    let dir = scratch(&[("scope.cedar", policies)]);
    let p = OrgPolicies::load(&scratch_config(dir.path())).unwrap();
    let denied = |input: OrgInput<'_>| ids(&p.evaluate(&input).denied).join(",");
    assert_eq!(denied(create()), "");
    assert_eq!(denied(on_key(Action::GetApiKey, "")), "");
    assert_eq!(denied(on_key(Action::UpdateApiKey, "")), "mutations");
    assert_eq!(denied(on_key(Action::DeleteApiKey, "")), "mutations");
    for action in [
        Action::CreateApiKey,
        Action::ListApiKeys,
        Action::GetApiKey,
        Action::UpdateApiKey,
        Action::DeleteApiKey,
    ] {
        let input = OrgInput {
            request_id: "freeze",
            ..on_key(action, "")
        };
        let input = if action == Action::CreateApiKey {
            OrgInput {
                request_id: "freeze",
                ..create()
            }
        } else {
            input
        };
        assert!(
            ids(&p.evaluate(&input).denied).contains(&"everything"),
            "{action}"
        );
    }
}

#[test]
fn readme_examples_validate() {
    let readme = std::fs::read_to_string(manifest_dir().join("policies/README.md")).unwrap();
    let blocks: Vec<&str> = readme
        .split("```cedar\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .filter(|block| block.contains("@id("))
        .collect();
    assert!(blocks.len() >= 2, "{blocks:?}");
    let files: Vec<(String, &str)> = blocks
        .iter()
        .enumerate()
        .map(|(i, b)| (format!("readme{i}.cedar"), *b))
        .collect();
    let files: Vec<(&str, &str)> = files.iter().map(|(n, b)| (n.as_str(), *b)).collect();
    let dir = scratch(&files);
    let mut cfg = OrgPolicyConfig {
        dir: dir.path().to_path_buf(),
        schema: None,
        teams_dir: None,
        ..shipped_config()
    };
    cfg.modes.retain(|id, _| !id.contains('/'));
    cfg.modes.clear();
    let p = OrgPolicies::load(&cfg).unwrap_or_else(|e| panic!("{}", render_errors(&e)));
    // One policy per action in the examples section, plus the one in "Writing a policy".
    assert_eq!(p.policy_ids().len(), 6, "{:?}", p.policy_ids());
}

#[test]
fn principal_roles_bindings_and_groups_reach_policies() {
    let policies = r#"
@id("role")
@reason("r")
forbid (principal, action == Action::"CreateApiKey", resource)
when { principal.roles.contains("EnvironmentAdmin") };

@id("binding")
@reason("r")
forbid (principal is User, action == Action::"CreateApiKey", resource)
when { principal.bindings.contains({ role: "ResourceOwner", crn_pattern: "crn://x/service-account=sa-orders" }) };

@id("group")
@reason("r")
forbid (principal, action == Action::"CreateApiKey", resource)
when { principal.groups.contains("contractors") };
"#;
    let dir = scratch(&[("p.cedar", policies)]);
    let mut cfg = scratch_config(dir.path());
    cfg.groups
        .insert("u-zed".into(), vec!["contractors".into()]);
    let p = OrgPolicies::load(&cfg).unwrap();
    let bindings = [
        RoleBinding {
            role: "EnvironmentAdmin",
            crn_pattern: "crn://x/environment=env-prod01",
        },
        RoleBinding {
            role: "ResourceOwner",
            crn_pattern: "crn://x/service-account=sa-orders",
        },
    ];
    let with = OrgInput {
        bindings: &bindings,
        display_name: Some("ok"),
        ..create()
    };
    assert_eq!(ids(&p.evaluate(&with).denied), ["binding", "role"]);
    let as_sa = OrgInput {
        principal_id: "sa-orders",
        principal_kind: PrincipalKind::ServiceAccount,
        ..with
    };
    assert_eq!(ids(&p.evaluate(&as_sa).denied), ["role"]);
    let zed = OrgInput {
        principal_id: "u-zed",
        display_name: Some("ok"),
        ..create()
    };
    assert_eq!(ids(&p.evaluate(&zed).denied), ["group"]);
}

// --- source address --------------------------------------------------------------------------

const OFFICE_ONLY_POLICY: &str = r#"
@id("office-only")
@reason("creates only from the office network")
forbid (principal, action == Action::"CreateApiKey", resource)
unless { context has source_ip && context.source_ip.isInRange(ip("10.1.0.0/16")) };
"#;

#[test]
fn each_source_address_is_evaluated_as_itself_whatever_was_seen_before() {
    let dir = scratch(&[("office.cedar", OFFICE_ONLY_POLICY)]);
    let p = OrgPolicies::load(&scratch_config(dir.path())).unwrap();
    let from = |addr: &str| OrgInput {
        source_ip: Some(addr.parse().unwrap()),
        ..create()
    };
    // Alternating addresses: the per-thread expression cache must hand back each one's own value.
    for _ in 0..3 {
        assert!(p.evaluate(&from("10.1.2.3")).allowed);
        assert_eq!(ids(&p.evaluate(&from("192.0.2.7")).denied), ["office-only"]);
        assert!(p.evaluate(&from("10.1.200.9")).allowed);
        assert_eq!(
            ids(&p.evaluate(&from("2001:db8::1")).denied),
            ["office-only"]
        );
    }
    // More distinct addresses than the cache holds: it starts over and stays correct.
    for i in 0..(request::IP_CACHE_ENTRIES + 10) {
        let a = u8::try_from(i % 250).unwrap();
        let b = u8::try_from(i / 250).unwrap();
        let inside = p.evaluate(&from(&format!("10.1.{b}.{a}")));
        assert!(inside.allowed, "10.1.{b}.{a}");
    }
    assert_eq!(ids(&p.evaluate(&from("10.2.0.1")).denied), ["office-only"]);
    assert_eq!(
        ids(&p
            .evaluate(&OrgInput {
                source_ip: None,
                ..create()
            })
            .denied),
        ["office-only"]
    );
}
