//! Team policy sets: the shipped example teams, scope isolation, overlaps, per-team reload, dry-run
//! per team policy, and the property test that the sliced evaluation equals the whole one.

use std::path::{Path, PathBuf};

use super::*;

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The example config (`policies/policy.example.toml`), with the example teams.
fn shipped_config() -> OrgPolicyConfig {
    let text = std::fs::read_to_string(manifest_dir().join("policies/policy.example.toml"))
        .expect("policy.example.toml");
    OrgPolicyConfig::from_toml_str(&text, &manifest_dir()).expect("example config")
}

fn shipped() -> OrgPolicies {
    OrgPolicies::load(&shipped_config()).unwrap_or_else(|errors| {
        panic!(
            "{}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

const NO_GROUPS: &[String] = &[];

/// A create by u-erin, allowed by every shipped platform policy, for `owner` in `env`.
fn create<'a>(owner: &'a str, env: &'a str, name: &'a str, description: &'a str) -> OrgInput<'a> {
    OrgInput {
        principal_id: "u-erin",
        principal_kind: PrincipalKind::User,
        groups: NO_GROUPS,
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

fn ids(findings: &[Finding]) -> Vec<&str> {
    findings.iter().map(|f| f.id.as_str()).collect()
}

fn team_names(d: &OrgDecision) -> Vec<&str> {
    d.teams.iter().map(|m| &*m.team).collect()
}

// --- the shipped example teams ---------------------------------------------------------------

#[test]
fn the_example_teams_load_with_their_own_ids_and_pass_their_tests() {
    let p = shipped();
    let teams: Vec<(&str, usize)> = p.teams().iter().map(|t| (t.name, t.policies)).collect();
    assert_eq!(teams, [("analytics", 3), ("checkout", 4)]);
    assert_eq!(
        p.set_policy_ids(Some("checkout")),
        [
            "checkout/key-limit",
            "checkout/naming",
            "checkout/naming-on-update",
            "checkout/ticket"
        ]
    );
    assert_eq!(p.mode("checkout/key-limit"), Some(Mode::DryRun));
    assert!(p.reason("analytics/naming").is_some());
    let report = run_all_policy_tests(&p, &shipped_config().tests_dir());
    assert!(report.passed(), "{}", report.render());
    let sets: Vec<&str> = report.sets.iter().map(|s| s.set.as_str()).collect();
    assert_eq!(sets, ["platform", "analytics", "checkout"]);
    assert!(report.sets.iter().all(|s| !s.report.cases.is_empty()));
    let text = report.render();
    assert!(text.contains("== team `checkout` (4 policies"), "{text}");
    assert!(text.contains("TOTAL PASS: 3 sets"), "{text}");
}

#[test]
fn a_team_set_applies_only_inside_its_scope() {
    let p = shipped();
    // A checkout key named in the platform's style but not checkout's, without a CHK ticket.
    let checkout = create("sa-checkout-web", "env-dev01", "web-session-dev", "OPS-1");
    let d = p.evaluate(&checkout);
    assert!(!d.allowed);
    assert_eq!(ids(&d.denied), ["checkout/naming", "checkout/ticket"]);
    assert_eq!(team_names(&d), ["checkout"]);
    assert!(d
        .denied
        .iter()
        .all(|f| f.team.as_deref() == Some("checkout")));
    assert_eq!(
        d.teams[0].via,
        Via::ServiceAccount(Arc::from("sa-checkout-*"))
    );

    // The same request for another team's service account: checkout's rules do not apply, and
    // neither do analytics'.
    let orders = create("sa-orders", "env-dev01", "web-session-dev", "OPS-1");
    let d = p.evaluate(&orders);
    assert!(d.allowed, "{d:?}");
    assert!(d.teams.is_empty());

    // An analytics pipeline's key: only analytics' rules.
    let analytics = create(
        "sa-analytics-clicks",
        "env-dev01",
        "checkout-web-dev",
        "CHK-1",
    );
    let d = p.evaluate(&analytics);
    assert_eq!(ids(&d.denied), ["analytics/naming", "analytics/ticket"]);
    assert_eq!(team_names(&d), ["analytics"]);

    // A key in analytics' environment, whoever owns it, is analytics' business.
    let in_env = create("sa-orders", "env-analytics01", "orders-ingest-dev", "OPS-1");
    let d = p.evaluate(&in_env);
    assert_eq!(
        ids(&d.denied),
        [
            "analytics/environment-owners",
            "analytics/naming",
            "analytics/ticket"
        ]
    );
    assert_eq!(
        d.teams[0].via,
        Via::Environment(Arc::from("env-analytics01"))
    );

    // A checkout key in analytics' environment falls into both scopes: both sets decide.
    let both = create(
        "sa-checkout",
        "env-analytics01",
        "checkout-web-dev",
        "CHK-1",
    );
    let d = p.evaluate(&both);
    assert_eq!(team_names(&d), ["analytics", "checkout"]);
    assert_eq!(
        ids(&d.denied),
        [
            "analytics/environment-owners",
            "analytics/naming",
            "analytics/ticket"
        ]
    );
}

#[test]
fn a_delete_is_in_the_scope_of_the_existing_keys_owner() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = scratch_config(
        dir.path(),
        &[],
        &[(
            "keepers",
            r#"service_accounts = ["sa-kept"]"#,
            None,
            &[(
                "keep.cedar",
                r#"@id("no-deletes")
@reason("keepers' keys are never deleted")
forbid (principal, action == Action::"DeleteApiKey", resource);"#,
            )],
        )],
    );
    let p = OrgPolicies::load(&cfg).unwrap();
    assert!(p.governs(Action::DeleteApiKey));
    let delete = |owner: &'static str| OrgInput {
        action: Action::DeleteApiKey,
        key_id: Some("KEY1"),
        owner_id: None,
        resource: None,
        display_name: None,
        description: None,
        owner_key_count: None,
        target_key: Some(TargetKey {
            id: "KEY1",
            owner_id: Some(owner),
            resource_id: None,
            description: "",
            display_name: "",
        }),
        ..create("sa-x", "env-1", "", "")
    };
    assert_eq!(
        ids(&p.evaluate(&delete("sa-kept")).denied),
        ["keepers/no-deletes"]
    );
    assert!(p.evaluate(&delete("sa-other")).allowed);
}

#[test]
fn a_dry_run_team_policy_reports_and_allows_and_config_can_switch_it() {
    let p = shipped();
    let mut at_limit = create("sa-checkout-web", "env-dev01", "checkout-web-dev", "CHK-1");
    at_limit.owner_key_count = Some(2);
    let d = p.evaluate(&at_limit);
    assert!(d.allowed, "{d:?}");
    assert_eq!(ids(&d.would_deny), ["checkout/key-limit"]);
    assert_eq!(
        d.would_deny[0].reason,
        "service account sa-checkout-web already holds 2 API keys; checkout allows 2"
    );

    let mut cfg = shipped_config();
    cfg.modes.insert("checkout/key-limit".into(), Mode::Enforce);
    let enforced = OrgPolicies::load(&cfg).unwrap();
    let d = enforced.evaluate(&at_limit);
    assert!(!d.allowed);
    assert_eq!(ids(&d.denied), ["checkout/key-limit"]);
    assert_ne!(enforced.digest(), p.digest());

    let mut cfg = shipped_config();
    cfg.modes.insert("checkout/naming".into(), Mode::DryRun);
    let dry = OrgPolicies::load(&cfg).unwrap();
    let wrong = create("sa-checkout-web", "env-dev01", "web-dev", "CHK-1");
    let d = dry.evaluate(&wrong);
    assert!(d.allowed);
    assert_eq!(ids(&d.would_deny), ["checkout/naming"]);

    for (id, needle) in [
        (
            "checkout/nope",
            "team `checkout` has no policy with the id `nope`",
        ),
        ("billing/naming", "there is no team `billing`"),
    ] {
        let mut cfg = shipped_config();
        cfg.modes.insert(id.into(), Mode::DryRun);
        let errors = OrgPolicies::load(&cfg).unwrap_err();
        assert!(
            errors.iter().any(|e| e.to_string().contains(needle)),
            "{errors:?}"
        );
    }
}

#[test]
fn explanations_name_the_sets_that_applied_and_why() {
    let p = shipped();
    let input = create("sa-checkout-web", "env-dev01", "web-dev", "CHK-1");
    let e = explain(&p, &input, "rev");
    let text = e.render();
    assert!(
        text.contains("sets applied: platform (every request); team `checkout` (the owner is one of its service accounts (`sa-checkout-*`))"),
        "{text}"
    );
    assert!(
        text.contains("denied by checkout/naming (team `checkout`): checkout keys are named"),
        "{text}"
    );
    let json = serde_json::to_value(&e).unwrap();
    assert_eq!(json["teams"][0]["team"], "checkout");
    assert_eq!(json["teams"][0]["via"], "service_account");
    assert_eq!(json["teams"][0]["matched"], "sa-checkout-*");
    assert_eq!(json["denied"][0]["team"], "checkout");
    assert_eq!(
        e.denied[0].source(),
        "policy `checkout/naming` of team `checkout`"
    );
    let platform = explain(&p, &create("sa-orders", "env-dev01", "Bad", ""), "rev");
    assert!(platform
        .render()
        .contains("sets applied: platform (every request)\n"));
    assert_eq!(
        platform.denied[0].source(),
        "organisation policy `display-name-convention`"
    );
}

// --- scratch configurations ------------------------------------------------------------------

/// A team directory: name, scope.toml, team.toml, policy files.
type TeamFiles<'a> = (&'a str, &'a str, Option<&'a str>, &'a [(&'a str, &'a str)]);

/// Writes a platform set (`platform` files) and teams into `dir` and returns their config.
fn scratch_config(
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

fn write_team(dir: &Path, (name, scope, values, files): &TeamFiles<'_>) {
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

const A_RULE: &str = r#"@id("rule")
@reason("team a says no")
forbid (principal, action == Action::"CreateApiKey", resource)
when { context.display_name == "forbidden" };"#;

const B_RULE: &str = r#"@id("rule")
@reason("team b says no")
forbid (principal, action == Action::"CreateApiKey", resource)
when { context.display_name == "forbidden" || context.description == "b-forbidden" };"#;

const BROKEN: &str = r#"@id("rule")
@reason("broken")
forbid (principal, action == Action::"CreateApiKey", resource)
when { context.ownr.id == "x" };"#;

fn two_teams(dir: &Path) -> OrgPolicyConfig {
    scratch_config(
        dir,
        &[],
        &[
            (
                "team-a",
                r#"service_accounts = ["sa-a", "sa-a-*"]"#,
                None,
                &[("a.cedar", A_RULE)],
            ),
            (
                "team-b",
                r#"service_accounts = ["sa-b"]
groups = ["b-people"]"#,
                None,
                &[("b.cedar", B_RULE)],
            ),
        ],
    )
}

fn load_messages(cfg: &OrgPolicyConfig) -> Vec<String> {
    match OrgPolicies::load(cfg) {
        Ok(_) => panic!("expected load errors"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn one_teams_forbid_never_touches_another_teams_requests_or_requests_outside_every_scope() {
    let dir = tempfile::tempdir().unwrap();
    let p = OrgPolicies::load(&two_teams(dir.path())).unwrap();
    let forbidden = |owner| create(owner, "env-1", "forbidden", "b-forbidden");
    assert_eq!(
        ids(&p.evaluate(&forbidden("sa-a-1")).denied),
        ["team-a/rule"]
    );
    assert_eq!(ids(&p.evaluate(&forbidden("sa-b")).denied), ["team-b/rule"]);
    assert!(p.evaluate(&forbidden("sa-c")).allowed);
    // b's people are in b's scope, whoever owns the key; a's service account too: both apply.
    let b_people = ["b-people".to_owned()];
    let by_b = OrgInput {
        groups: &b_people,
        ..forbidden("sa-c")
    };
    assert_eq!(ids(&p.evaluate(&by_b).denied), ["team-b/rule"]);
    let mut only_b = create("sa-a", "env-1", "fine", "b-forbidden");
    only_b.groups = &b_people;
    let d = p.evaluate(&only_b);
    assert_eq!(ids(&d.denied), ["team-b/rule"]);
    assert_eq!(team_names(&d), ["team-a", "team-b"]);
    // Config groups count as groups for scopes too.
    let mut cfg = two_teams(dir.path());
    cfg.groups.insert("u-erin".into(), vec!["b-people".into()]);
    let p = OrgPolicies::load(&cfg).unwrap();
    assert_eq!(ids(&p.evaluate(&forbidden("sa-c")).denied), ["team-b/rule"]);
}

#[test]
fn overlapping_scopes_are_refused_at_load_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = two_teams(dir.path());
    write_team(
        dir.path(),
        &("team-c", r#"service_accounts = ["sa-a-web"]"#, None, &[]),
    );
    let errors = load_messages(&cfg);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("team-c/scope.toml") || errors[0].contains("team-a/scope.toml"),
        "{errors:?}"
    );
    assert!(
        errors[0].contains(
            "overlaps team `team-c`'s: both claim service accounts `sa-a-web` and `sa-a-*`"
        ),
        "{errors:?}"
    );
    write_team(
        dir.path(),
        &(
            "team-c",
            r#"service_accounts = ["sa-a-web"]
allow_overlap_with = ["team-a"]"#,
            None,
            &[],
        ),
    );
    let p = OrgPolicies::load(&cfg).unwrap();
    let d = p.evaluate(&create("sa-a-web", "env-1", "x", ""));
    assert_eq!(team_names(&d), ["team-a", "team-c"]);
    // Environments and groups overlap the same way.
    write_team(
        dir.path(),
        &("team-c", r#"groups = ["b-people"]"#, None, &[]),
    );
    assert!(load_messages(&cfg)[0].contains("both claim group `b-people`"));
}

#[test]
fn team_problems_are_load_errors_in_the_teams_files() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = two_teams(dir.path());
    write_team(
        dir.path(),
        &(
            "team-b",
            r#"service_accounts = ["sa-b"]"#,
            None,
            &[("b.cedar", BROKEN)],
        ),
    );
    let errors = load_messages(&cfg);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("team-b/b.cedar:4:") && e.contains("ownr")),
        "{errors:?}"
    );
    // A team may not permit, like anyone else.
    write_team(
        dir.path(),
        &(
            "team-b",
            r#"service_accounts = ["sa-b"]"#,
            None,
            &[(
                "b.cedar",
                "@id(\"p\")\n@reason(\"r\")\npermit (principal, action, resource);",
            )],
        ),
    );
    assert!(load_messages(&cfg)
        .iter()
        .any(|e| e.contains("`permit` is not allowed")));
    // Its values are named after it, and cannot take the platform's names.
    write_team(
        dir.path(),
        &(
            "team-b",
            r#"service_accounts = ["sa-b"]"#,
            Some("[params]\nlimit = 1\n"),
            &[],
        ),
    );
    assert!(load_messages(&cfg)
        .iter()
        .any(|e| e.contains("named `team_b_…`")));
    // A directory without a scope, or with a name that is not a team's.
    std::fs::remove_file(dir.path().join("teams/team-b/scope.toml")).unwrap();
    assert!(load_messages(&cfg)
        .iter()
        .any(|e| e.contains("needs a `scope.toml`")));
    write_team(
        dir.path(),
        &("team-b", r#"service_accounts = ["sa-b"]"#, None, &[]),
    );
    write_team(
        dir.path(),
        &("Platform", r#"service_accounts = ["sa-p"]"#, None, &[]),
    );
    assert!(load_messages(&cfg)
        .iter()
        .any(|e| e.contains("`Platform` cannot name a team")));
}

#[test]
fn a_team_sees_its_own_patterns_and_params_and_not_another_teams() {
    let dir = tempfile::tempdir().unwrap();
    let own = r#"@id("own")
@reason("{params.team_a_max} at most, {owner_key_count} held")
forbid (principal, action == Action::"CreateApiKey", resource)
when {
  !context.display_name_matches.team_a_naming ||
  (context has owner_key_count && context.owner_key_count > context.params.team_a_max)
};"#;
    let cfg = scratch_config(
        dir.path(),
        &[],
        &[
            (
                "team-a",
                r#"service_accounts = ["sa-a"]"#,
                Some("[patterns]\nteam_a_naming = '^a-'\n[params]\nteam_a_max = 1\n"),
                &[("a.cedar", own)],
            ),
            (
                "team-b",
                r#"service_accounts = ["sa-b"]
allow_overlap_with = ["team-a"]
groups = ["g"]"#,
                Some("[patterns]\nteam_b_naming = '^b-'\n[params]\nteam_b_max = 5\n"),
                &[(
                    "b.cedar",
                    r#"@id("own")
@reason("b")
forbid (principal, action == Action::"CreateApiKey", resource)
when { !context.display_name_matches.team_b_naming || context.params.team_b_max < context.params.limit };"#,
                )],
            ),
        ],
    );
    let p = OrgPolicies::load(&cfg).unwrap();
    assert!(p.evaluate(&create("sa-a", "env-1", "a-x", "")).allowed);
    let mut many = create("sa-a", "env-1", "a-x", "");
    many.owner_key_count = Some(2);
    let d = p.evaluate(&many);
    assert_eq!(ids(&d.denied), ["team-a/own"]);
    assert_eq!(d.denied[0].reason, "1 at most, 2 held");
    // Both teams apply: each sees its own values (the context holds both).
    let g = ["g".to_owned()];
    let both = OrgInput {
        groups: &g,
        ..create("sa-a", "env-1", "a-x", "")
    };
    let d = p.evaluate(&both);
    assert_eq!(ids(&d.denied), ["team-b/own"], "{d:?}");
    assert!(d.errors.is_empty(), "{d:?}");

    // Another team's pattern does not validate in this team's set.
    write_team(
        dir.path(),
        &(
            "team-b",
            r#"service_accounts = ["sa-b"]"#,
            None,
            &[(
                "b.cedar",
                r#"@id("x")
@reason("x")
forbid (principal, action == Action::"CreateApiKey", resource)
when { context.display_name_matches.team_a_naming };"#,
            )],
        ),
    );
    let errors = load_messages(&cfg);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("team-b/b.cedar") && e.contains("team_a_naming")),
        "{errors:?}"
    );
}

// --- reload isolation -------------------------------------------------------------------------

fn outcome<'a>(p: &'a OrgPolicies, team: &str) -> &'a TeamResult {
    &p.team_outcomes()
        .iter()
        .find(|o| o.team == team)
        .unwrap_or_else(|| panic!("no outcome for {team}: {:?}", p.team_outcomes()))
        .result
}

#[test]
fn a_teams_broken_file_keeps_its_last_good_set_and_everyone_elses_changes_load() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = two_teams(dir.path());
    let first = OrgPolicies::load(&cfg).unwrap();
    assert!(first
        .team_outcomes()
        .iter()
        .all(|o| o.result == TeamResult::Loaded));

    // Team b breaks its file; team a changes its rule; the platform changes too.
    write_team(
        dir.path(),
        &(
            "team-b",
            r#"service_accounts = ["sa-b"]"#,
            None,
            &[("b.cedar", BROKEN)],
        ),
    );
    write_team(
        dir.path(),
        &(
            "team-a",
            r#"service_accounts = ["sa-a", "sa-a-*"]"#,
            None,
            &[(
                "a.cedar",
                &A_RULE.replace("\"forbidden\"", "\"now-forbidden\""),
            )],
        ),
    );
    std::fs::write(
        dir.path().join("platform.cedar"),
        r#"@id("platform-rule")
@reason("platform says no")
forbid (principal, action == Action::"CreateApiKey", resource)
when { context.description == "platform-forbidden" };"#,
    )
    .unwrap();
    assert!(OrgPolicies::load(&cfg).is_err(), "a fresh load is strict");
    let second = OrgPolicies::reload(&cfg, &first).unwrap();
    assert!(
        matches!(outcome(&second, "team-b"), TeamResult::KeptLastGood(e) if e[0].to_string().contains("b.cedar"))
    );
    assert_eq!(outcome(&second, "team-a"), &TeamResult::Loaded);
    // b's last good rule still holds; a's new rule and the platform's are in force.
    assert_eq!(
        ids(&second
            .evaluate(&create("sa-b", "env-1", "forbidden", ""))
            .denied),
        ["team-b/rule"]
    );
    assert!(
        second
            .evaluate(&create("sa-a", "env-1", "forbidden", ""))
            .allowed
    );
    assert_eq!(
        ids(&second
            .evaluate(&create("sa-a", "env-1", "now-forbidden", ""))
            .denied),
        ["team-a/rule"]
    );
    assert_eq!(
        ids(&second
            .evaluate(&create("sa-c", "env-1", "x", "platform-forbidden"))
            .denied),
        ["platform-rule"]
    );
    assert_ne!(second.digest(), first.digest());

    // Reloading again keeps b's last good set (from the set in force, not from disk), and an
    // unchanged team is not compiled again.
    let third = OrgPolicies::reload(&cfg, &second).unwrap();
    assert!(matches!(
        outcome(&third, "team-b"),
        TeamResult::KeptLastGood(_)
    ));
    assert_eq!(third.digest(), second.digest());
    let (a2, a3) = (
        second.team("team-a").unwrap(),
        third.team("team-a").unwrap(),
    );
    assert!(Arc::ptr_eq(a2, a3));

    // A new team whose files are broken has no set; a removed team's set is gone.
    write_team(
        dir.path(),
        &(
            "team-n",
            r#"service_accounts = ["sa-n"]"#,
            None,
            &[("n.cedar", BROKEN)],
        ),
    );
    std::fs::remove_dir_all(dir.path().join("teams/team-a")).unwrap();
    let fourth = OrgPolicies::reload(&cfg, &third).unwrap();
    assert!(matches!(
        outcome(&fourth, "team-n"),
        TeamResult::NotLoaded(_)
    ));
    assert_eq!(outcome(&fourth, "team-a"), &TeamResult::Removed);
    assert_eq!(
        fourth.teams().iter().map(|t| t.name).collect::<Vec<_>>(),
        ["team-b"]
    );
    assert!(
        fourth
            .evaluate(&create("sa-a", "env-1", "now-forbidden", ""))
            .allowed
    );

    // Team b repairs its file: its new set loads.
    write_team(
        dir.path(),
        &(
            "team-b",
            r#"service_accounts = ["sa-b"]"#,
            None,
            &[("b.cedar", B_RULE)],
        ),
    );
    let fifth = OrgPolicies::reload(&cfg, &fourth).unwrap();
    assert_eq!(outcome(&fifth, "team-b"), &TeamResult::Loaded);
    assert_eq!(TeamResult::Loaded.label(), "ok");
    assert_eq!(TeamResult::Removed.label(), "removed");
    assert_eq!(TeamResult::NotLoaded(Vec::new()).label(), "rejected");

    // A broken platform set fails the whole reload.
    std::fs::write(dir.path().join("platform.cedar"), BROKEN).unwrap();
    let errors = OrgPolicies::reload(&cfg, &fifth).unwrap_err();
    assert!(
        errors[0].to_string().contains("platform.cedar"),
        "{errors:?}"
    );
}

#[test]
fn a_scope_changed_into_an_overlap_keeps_the_last_good_set_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = two_teams(dir.path());
    let first = OrgPolicies::load(&cfg).unwrap();
    write_team(
        dir.path(),
        &(
            "team-b",
            r#"service_accounts = ["sa-b", "sa-a"]"#,
            None,
            &[("b.cedar", B_RULE)],
        ),
    );
    let second = OrgPolicies::reload(&cfg, &first).unwrap();
    match outcome(&second, "team-b") {
        TeamResult::KeptLastGood(errors) => {
            assert!(
                errors[0]
                    .to_string()
                    .contains("both claim service account `sa-a`"),
                "{errors:?}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(outcome(&second, "team-a"), &TeamResult::Loaded);
    let d = second.evaluate(&create("sa-a", "env-1", "forbidden", "b-forbidden"));
    assert_eq!(team_names(&d), ["team-a"]);
}

// --- the sliced evaluation equals the whole one ------------------------------------------------

/// A small deterministic generator (xorshift64*), so a failure names its seed and reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.below(items.len())]
    }
}

const OWNERS: [&str; 7] = [
    "sa-a", "sa-b", "sa-t1-x", "sa-t1-y", "sa-t2", "u-ann", "pool-p",
];
const ENVS: [&str; 3] = ["env-1", "env-2", "env-3"];
const GROUPS: [&str; 4] = ["g1", "g2", "g3", "g4"];
const PRINCIPALS: [(&str, PrincipalKind); 4] = [
    ("u-ann", PrincipalKind::User),
    ("u-bo", PrincipalKind::User),
    ("sa-a", PrincipalKind::ServiceAccount),
    ("pool-p", PrincipalKind::IdentityPool),
];
const KEYS: [&str; 3] = ["K1", "K2", "K3"];
const ACTION_NAMES: [&str; 5] = [
    "CreateApiKey",
    "ListApiKeys",
    "GetApiKey",
    "UpdateApiKey",
    "DeleteApiKey",
];

/// One condition that validates for `action` (`None`: the policy names several actions, so
/// only what every action has), mixing the shapes the index knows with ones it does not,
/// including one that errors at run time (an overflow) when the key count is 2 or more.
fn atom(rng: &mut Rng, action: Option<&str>, team_values: Option<&str>) -> String {
    let owner = rng.pick(&OWNERS);
    let env = rng.pick(&ENVS);
    let group = rng.pick(&GROUPS);
    let common = [
        format!("principal.groups.contains(\"{group}\")"),
        "context.matrix.allowed".to_owned(),
        format!("context.time > {}", 1_735_689_000 + rng.below(1_000)),
        "principal.roles.contains(\"OrganizationAdmin\")".to_owned(),
        format!("principal has groups && principal.groups.contains(\"{group}\")"),
    ];
    let specific: Vec<String> = match action {
        Some("CreateApiKey") => {
            let mut v = vec![
                format!("context.owner.id == \"{owner}\""),
                format!("\"{owner}\" == context.owner.id"),
                format!("context has owner && context.owner.id == \"{owner}\""),
                "context.owner.id like \"sa-t1-*\"".to_owned(),
                format!("context.resource has environment && context.resource.environment == \"{env}\""),
                format!("context has resource && context.resource has environment && context.resource.environment == \"{env}\""),
                "context.resource.type == \"Kafka\"".to_owned(),
                format!("context has owner_key_count && context.owner_key_count > {}", rng.below(3)),
                "context has owner_key_count && context.owner_key_count * 4611686018427387904 > 0".to_owned(),
                "context.display_name like \"*bad*\"".to_owned(),
                "context.display_name_matches.naming".to_owned(),
                "context.owner_key_count > context.params.limit".to_owned(),
            ];
            // The last one needs a `has`: keep it valid.
            if let Some(last) = v.last_mut() {
                *last = format!("context has owner_key_count && {last}");
            }
            if let Some(t) = team_values {
                v.push(format!("context.description_matches.{t}_ticket"));
                v.push(format!(
                    "context has owner_key_count && context.owner_key_count >= context.params.{t}_max"
                ));
            }
            v
        }
        Some("ListApiKeys") => vec![
            format!("context has owner && context.owner.id == \"{owner}\""),
            format!("context has resource && context.resource has environment && context.resource.environment == \"{env}\""),
            "context has resource && context.resource.type == \"Kafka\"".to_owned(),
        ],
        Some(_) => vec![
            "context has target_key && context.target_key.display_name == \"bad\"".to_owned(),
            format!(
                "context has target_key && context.target_key has owner && context.target_key.owner.id == \"{owner}\""
            ),
        ],
        None => Vec::new(),
    };
    let all: Vec<&String> = common.iter().chain(&specific).collect();
    let mut text = all[rng.below(all.len())].clone();
    if rng.chance(15) {
        text = format!("!({text})");
    }
    text
}

/// A random policy set file with `n` policies (some for `team_values` patterns and params).
fn random_policies(rng: &mut Rng, n: usize, team_values: Option<&str>) -> String {
    let mut out = String::new();
    for i in 0..n {
        let action = if rng.chance(85) {
            Some(rng.pick(&ACTION_NAMES))
        } else {
            None
        };
        let action_scope = match action {
            Some(a) => format!("action == Action::\"{a}\""),
            None if rng.chance(50) => {
                "action in [Action::\"GetApiKey\", Action::\"DeleteApiKey\"]".to_owned()
            }
            None => "action".to_owned(),
        };
        let principal = match rng.below(10) {
            0 => {
                let (id, kind) = PRINCIPALS[rng.below(PRINCIPALS.len())];
                format!("principal == {}::\"{id}\"", kind.as_str())
            }
            1 => "principal is ServiceAccount".to_owned(),
            2 => "principal in User::\"u-ann\"".to_owned(),
            _ => "principal".to_owned(),
        };
        let resource = match rng.below(10) {
            0 => format!("resource == ApiKey::\"{}\"", rng.pick(&KEYS)),
            1 => "resource is ApiKey".to_owned(),
            _ => "resource".to_owned(),
        };
        let mut clauses = String::new();
        for _ in 0..rng.below(3) {
            let conjuncts: Vec<String> = (0..1 + rng.below(3))
                .map(|_| atom(rng, action, team_values))
                .collect();
            let joined = if rng.chance(20) {
                conjuncts.join(" || ")
            } else {
                conjuncts.join(" && ")
            };
            let kind = if rng.chance(20) { "unless" } else { "when" };
            clauses.push_str(&format!(" {kind} {{ {joined} }}"));
        }
        let mode = if rng.chance(20) {
            "@mode(\"dry-run\")\n"
        } else {
            ""
        };
        out.push_str(&format!(
            "@id(\"p{i}\")\n@reason(\"p{i} for {{owner}}\")\n{mode}forbid ({principal}, {action_scope}, {resource}){clauses};\n\n"
        ));
    }
    out
}

fn random_scope(rng: &mut Rng, names: &[&str], me: &str) -> String {
    let mut lines = Vec::new();
    let sas: Vec<String> = (0..rng.below(3))
        .map(|_| {
            rng.pick(&["sa-a", "sa-b", "sa-t1-*", "sa-t2", "sa-t1-x"])
                .to_owned()
        })
        .collect();
    let envs: Vec<&str> = (0..rng.below(2)).map(|_| rng.pick(&ENVS)).collect();
    let mut groups: Vec<&str> = (0..rng.below(2)).map(|_| rng.pick(&GROUPS)).collect();
    if sas.is_empty() && envs.is_empty() && groups.is_empty() {
        groups.push(rng.pick(&GROUPS));
    }
    let list = |items: Vec<String>| {
        let mut items = items;
        items.sort();
        items.dedup();
        items
            .iter()
            .map(|i| format!("\"{i}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    lines.push(format!("service_accounts = [{}]", list(sas)));
    lines.push(format!(
        "environments = [{}]",
        list(envs.iter().map(|e| e.to_string()).collect())
    ));
    lines.push(format!(
        "groups = [{}]",
        list(groups.iter().map(|g| g.to_string()).collect())
    ));
    // Overlaps are allowed here, so that requests meet several team sets.
    let others: Vec<String> = names
        .iter()
        .filter(|n| **n != me)
        .map(|n| n.to_string())
        .collect();
    lines.push(format!("allow_overlap_with = [{}]", list(others)));
    lines.join("\n")
}

fn random_input<'a>(rng: &mut Rng, groups: &'a [String]) -> OrgInput<'a> {
    let (principal_id, principal_kind) = PRINCIPALS[rng.below(PRINCIPALS.len())];
    let action = super::request::ACTIONS[rng.below(5)];
    let resource = |rng: &mut Rng| {
        let env = rng.chance(75).then(|| rng.pick(&ENVS));
        KeyResource {
            id: if env.is_some() { "lkc-1" } else { "cloud" },
            resource_type: if env.is_some() { "Kafka" } else { "Cloud" },
            environment: env,
            cluster: None,
        }
    };
    let (owner_id, res) = match action {
        Action::CreateApiKey => (Some(rng.pick(&OWNERS)), Some(resource(rng))),
        Action::ListApiKeys => (
            rng.chance(50).then(|| rng.pick(&OWNERS)),
            if rng.chance(50) {
                Some(resource(rng))
            } else {
                None
            },
        ),
        _ => (None, None),
    };
    let key = rng.pick(&KEYS);
    let target = matches!(
        action,
        Action::GetApiKey | Action::UpdateApiKey | Action::DeleteApiKey
    ) && rng.chance(80);
    OrgInput {
        principal_id,
        principal_kind,
        groups,
        bindings: &[],
        action,
        key_id: (!matches!(action, Action::CreateApiKey | Action::ListApiKeys)).then_some(key),
        owner_id,
        resource: res,
        display_name: rng
            .chance(80)
            .then(|| rng.pick(&["ok-name", "bad", "so-bad-name"])),
        description: rng.chance(80).then(|| rng.pick(&["T-1 x", "none"])),
        matrix_allowed: rng.chance(80),
        matrix_rule: "test",
        owner_key_count: [None, Some(0), Some(1), Some(3)][rng.below(4)],
        time: 1_735_689_600,
        source_ip: None,
        request_id: "req",
        target_key: target.then(|| TargetKey {
            id: key,
            owner_id: rng.chance(80).then(|| rng.pick(&OWNERS)),
            resource_id: None,
            description: "",
            display_name: rng.pick(&["bad", "fine"]),
        }),
        quota: None,
    }
}

/// Loads `sets` random configurations (a platform set and up to three teams with their own
/// values) and compares the sliced and the whole evaluation on `per_set` random requests each.
/// Returns (pairs compared, policies evaluated sliced, policies in the sets that applied).
fn compare_sliced_and_whole(seed: u64, sets: usize, per_set: usize) -> (usize, usize, usize) {
    let mut rng = Rng(seed);
    let (mut pairs, mut sliced, mut whole) = (0, 0, 0);
    let team_names = ["t1", "t2", "t3"];
    for set in 0..sets {
        let dir = tempfile::tempdir().unwrap();
        // Cedar's validator refuses a policy it can prove never matches (`when { context has
        // owner } unless { context has owner }`); generate again when the dice made one.
        let (p, platform, teams) = loop {
            let n = 5 + rng.below(20);
            let platform = random_policies(&mut rng, n, None);
            let n_teams = rng.below(4);
            let mut teams: Vec<(String, String, Option<String>, String)> = Vec::new();
            for name in team_names.iter().take(n_teams) {
                let values = rng.chance(60).then(|| {
                    format!(
                        "[patterns]\n{name}_ticket = 'T-[0-9]'\n[params]\n{name}_max = {}\n",
                        rng.below(4)
                    )
                });
                let n = 3 + rng.below(10);
                let policies = random_policies(&mut rng, n, values.is_some().then_some(*name));
                let scope = random_scope(&mut rng, &team_names[..n_teams], name);
                teams.push((name.to_string(), scope, values, policies));
            }
            if dir.path().join("teams").exists() {
                std::fs::remove_dir_all(dir.path().join("teams")).unwrap();
            }
            type Files<'a> = Vec<(&'a str, &'a str)>;
            let team_files: Vec<(&str, &str, Option<&str>, Files<'_>)> = teams
                .iter()
                .map(|(n, s, v, p)| {
                    (
                        n.as_str(),
                        s.as_str(),
                        v.as_deref(),
                        vec![("p.cedar", p.as_str())],
                    )
                })
                .collect();
            let borrowed: Vec<TeamFiles<'_>> = team_files
                .iter()
                .map(|(n, s, v, f)| (*n, *s, *v, f.as_slice()))
                .collect();
            let mut cfg = scratch_config(dir.path(), &[("p.cedar", &platform)], &borrowed);
            cfg.groups.insert("u-bo".into(), vec!["g2".into()]);
            match OrgPolicies::load(&cfg) {
                Ok(p) => break (p, platform, teams),
                Err(e) if e.iter().all(|e| e.to_string().contains("policy is impossible")) => {}
                Err(e) => panic!(
                    "seed {seed} set {set}: generated policies must load: {e:#?}\n{platform}\n{teams:#?}"
                ),
            }
        };
        for _ in 0..per_set {
            let groups: Vec<String> = (0..rng.below(4))
                .map(|_| rng.pick(&GROUPS).to_owned())
                .collect();
            let input = random_input(&mut rng, &groups);
            let got = p.evaluate(&input);
            let want = p.evaluate_whole(&input);
            assert_eq!(
                got, want,
                "seed {seed} set {set}: sliced and whole evaluation differ for {input:#?}\nplatform:\n{platform}\nteams: {teams:#?}"
            );
            pairs += 1;
            sliced += p.evaluated(&input);
            let applied: usize = std::iter::once(p.set_policy_ids(None).len())
                .chain(
                    got.teams
                        .iter()
                        .map(|m| p.set_policy_ids(Some(&m.team)).len()),
                )
                .sum();
            whole += applied;
        }
    }
    (pairs, sliced, whole)
}

#[test]
fn the_sliced_evaluation_equals_the_whole_on_generated_sets_and_requests() {
    let mut total = (0, 0, 0);
    for seed in [
        0x9E37_79B9_7F4A_7C15,
        0xD1B5_4A32_D192_ED03,
        0x94D0_49BB_1331_11EB,
    ] {
        let (pairs, sliced, whole) = compare_sliced_and_whole(seed, 40, 45);
        total = (total.0 + pairs, total.1 + sliced, total.2 + whole);
    }
    assert!(total.0 >= 5_000, "{total:?}");
    // The index must actually leave policies out (it evaluates about half of them here, where
    // most policies are deliberately of shapes it cannot index).
    assert!(
        total.1 * 10 < total.2 * 8,
        "evaluated {} of {}",
        total.1,
        total.2
    );
}

/// The same comparison at a larger scale: `cargo test --lib sliced -- --ignored`.
#[test]
#[ignore = "a longer run of the property test above"]
fn the_sliced_evaluation_equals_the_whole_on_many_more_generated_sets() {
    let (pairs, _, _) = compare_sliced_and_whole(0xA076_1D64_78BD_642F, 1_000, 100);
    assert!(pairs >= 100_000);
}

#[test]
fn an_indexed_set_of_a_thousand_policies_evaluates_a_handful() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for i in 0..1_000 {
        let body = match i % 3 {
            0 => format!("context.owner.id == \"sa-{i}\" && context.display_name == \"x\""),
            1 => format!("context.resource has environment && context.resource.environment == \"env-{i}\" && context.display_name == \"x\""),
            _ => format!("principal.groups.contains(\"g-{i}\") && context.owner_key_count > 1"),
        };
        let body = body.replace(
            "context.owner_key_count > 1",
            "context has owner_key_count && context.owner_key_count > 1",
        );
        text.push_str(&format!(
            "@id(\"p{i}\")\n@reason(\"r\")\nforbid (principal, action == Action::\"CreateApiKey\", resource) when {{ {body} }};\n"
        ));
    }
    let cfg = scratch_config(dir.path(), &[("many.cedar", &text)], &[]);
    let p = OrgPolicies::load(&cfg).unwrap();
    let groups = ["g-2".to_owned(), "g-5".to_owned()];
    let input = OrgInput {
        groups: &groups,
        ..create("sa-0", "env-4", "x", "")
    };
    // p0 (owner sa-0), p4 (env-4), p2 and p5 (the groups): nothing else.
    assert_eq!(p.evaluated(&input), 4);
    assert_eq!(ids(&p.evaluate(&input).denied), ["p0", "p4"]);
    assert_eq!(p.evaluate(&input), p.evaluate_whole(&input));
}
