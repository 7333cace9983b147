use std::path::{Path, PathBuf};

use super::*;

pub(super) const SHIPPED_IDS: [&str; 11] = [
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
    "unnamed-key-ticket-reference",
];

pub(super) fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The config of `keygate dev`: `policies/policy.example.toml`, resolved against the repository.
pub(super) fn shipped_config() -> OrgPolicyConfig {
    let text = std::fs::read_to_string(manifest_dir().join("policies/policy.example.toml"))
        .expect("policy.example.toml");
    OrgPolicyConfig::from_toml_str(&text, &manifest_dir()).expect("example config")
}

pub(super) fn shipped() -> OrgPolicies {
    OrgPolicies::load(&shipped_config())
        .unwrap_or_else(|errors| panic!("shipped policies must load:\n{}", render_errors(&errors)))
}

pub(super) fn render_errors(errors: &[LoadError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

pub(super) const NO_GROUPS: &[String] = &[];

/// A create request by u-erin for sa-orders on lkc-dev01 that every shipped policy allows.
pub(super) fn create() -> OrgInput<'static> {
    OrgInput {
        principal_id: "u-erin",
        principal_kind: PrincipalKind::User,
        groups: NO_GROUPS,
        external: None,
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

pub(super) fn prod(mut input: OrgInput<'static>) -> OrgInput<'static> {
    input.resource = Some(KeyResource {
        id: "lkc-prod01",
        resource_type: "Kafka",
        environment: Some("env-prod01"),
        cluster: Some("lkc-prod01"),
    });
    input
}

pub(super) fn on_key(action: Action, description: &'static str) -> OrgInput<'static> {
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

pub(super) fn ids(findings: &[Finding]) -> Vec<&str> {
    findings.iter().map(|f| f.id.as_str()).collect()
}

/// Asserts that only `id` denies `deny` and nothing denies `allow`.
pub(super) fn assert_policy(p: &OrgPolicies, id: &str, allow: &OrgInput<'_>, deny: &OrgInput<'_>) {
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
pub(super) fn scratch(files: &[(&str, &str)]) -> tempfile::TempDir {
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

pub(super) fn scratch_config(dir: &Path) -> OrgPolicyConfig {
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
pub(super) fn load_errors(files: &[(&str, &str)]) -> (tempfile::TempDir, Vec<String>) {
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
pub(super) fn is_at(error: &str, location: &str) -> bool {
    error.strip_prefix(location).is_some_and(|rest| {
        rest.starts_with(": ")
            || rest.strip_prefix(':').is_some_and(|r| {
                let digits = r.bytes().take_while(u8::is_ascii_digit).count();
                digits > 0 && r[digits..].starts_with(": ")
            })
    })
}

pub(super) fn assert_one_error_at(files: &[(&str, &str)], location: &str, needle: &str) {
    let (_dir, errors) = load_errors(files);
    assert!(
        errors
            .iter()
            .any(|e| is_at(e, location) && e.contains(needle)),
        "expected an error at {location} containing {needle:?}, got {errors:#?}"
    );
}

pub(super) const OK_POLICY: &str = r#"
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
    // A key without a name (the Confluent CLI's) is not held to the naming convention; it needs
    // a ticket reference in its description instead.
    let unnamed = OrgInput {
        display_name: None,
        description: Some("orders ingest"),
        ..create()
    };
    assert_eq!(
        ids(&p.evaluate(&unnamed).denied),
        ["unnamed-key-ticket-reference"]
    );
    let unnamed_with_ticket = OrgInput {
        display_name: None,
        description: Some("OPS-42 orders ingest"),
        ..create()
    };
    assert!(p.evaluate(&unnamed_with_ticket).denied.is_empty());
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

pub(super) const OVERFLOW_POLICY: &str = r#"
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

pub(super) const OFFICE_ONLY_POLICY: &str = r#"
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

// --- team helpers (team and index tests) ----------------------------------------------------

/// A create by u-erin, allowed by every shipped platform policy, for `owner` in `env`.
pub(super) fn create_in<'a>(
    owner: &'a str,
    env: &'a str,
    name: &'a str,
    description: &'a str,
) -> OrgInput<'a> {
    OrgInput {
        principal_id: "u-erin",
        principal_kind: PrincipalKind::User,
        groups: NO_GROUPS,
        external: None,
        bindings: &[],
        action: Action::CreateApiKey,
        key_id: None,
        owner_id: Some(owner),
        resource: Some(KeyResource {
            id: "lkc-x",
            resource_type: "Kafka",
            environment: Some(env),
            cluster: Some("lkc-x"),
        }),
        display_name: Some(name),
        description: Some(description),
        matrix_allowed: true,
        matrix_rule: "test",
        owner_key_count: Some(0),
        time: 1_735_689_600,
        source_ip: None,
        request_id: "req-1",
        target_key: None,
        quota: None,
    }
}

pub(super) fn team_names(d: &OrgDecision) -> Vec<&str> {
    d.teams.iter().map(|m| &*m.team).collect()
}

/// A team directory: name, scope.toml, team.toml, policy files.
pub(super) type TeamFiles<'a> = (&'a str, &'a str, Option<&'a str>, &'a [(&'a str, &'a str)]);

/// Writes a platform set (`platform` files) and teams into `dir` and returns their config.
pub(super) fn teams_config(
    dir: &Path,
    platform: &[(&str, &str)],
    teams: &[TeamFiles<'_>],
) -> OrgPolicyConfig {
    std::fs::copy(
        manifest_dir().join("policies/keygate.cedarschema"),
        dir.join("keygate.cedarschema"),
    )
    .unwrap();
    for (name, text) in platform {
        std::fs::write(dir.join(name), text).unwrap();
    }
    std::fs::create_dir_all(dir.join("teams")).unwrap();
    for team in teams {
        write_team(dir, team);
    }
    OrgPolicyConfig {
        patterns: vec![("naming".into(), "^[a-z-]+$".into())],
        params: vec![("limit".into(), ParamValue::Long(3))],
        teams_dir: Some(dir.join("teams")),
        ..OrgPolicyConfig::new(dir)
    }
}

pub(super) fn write_team(dir: &Path, (name, scope, values, files): &TeamFiles<'_>) {
    let team = dir.join("teams").join(name);
    if team.exists() {
        std::fs::remove_dir_all(&team).unwrap();
    }
    std::fs::create_dir_all(&team).unwrap();
    std::fs::write(team.join("scope.toml"), scope).unwrap();
    if let Some(values) = values {
        std::fs::write(team.join("team.toml"), values).unwrap();
    }
    for (file, text) in *files {
        std::fs::write(team.join(file), text).unwrap();
    }
}
