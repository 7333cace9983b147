use std::path::Path;

use super::*;
use crate::policy::org::tests::*;
use crate::policy::org::*;

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
    let checkout = create_in("sa-checkout-web", "env-dev01", "web-session-dev", "OPS-1");
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
    let orders = create_in("sa-orders", "env-dev01", "web-session-dev", "OPS-1");
    let d = p.evaluate(&orders);
    assert!(d.allowed, "{d:?}");
    assert!(d.teams.is_empty());

    // An analytics pipeline's key: only analytics' rules.
    let analytics = create_in(
        "sa-analytics-clicks",
        "env-dev01",
        "checkout-web-dev",
        "CHK-1",
    );
    let d = p.evaluate(&analytics);
    assert_eq!(ids(&d.denied), ["analytics/naming", "analytics/ticket"]);
    assert_eq!(team_names(&d), ["analytics"]);

    // A key in analytics' environment, whoever owns it, is analytics' business.
    let in_env = create_in("sa-orders", "env-analytics01", "orders-ingest-dev", "OPS-1");
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
    let both = create_in(
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
    let cfg = teams_config(
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
        ..create_in("sa-x", "env-1", "", "")
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
    let mut at_limit = create_in("sa-checkout-web", "env-dev01", "checkout-web-dev", "CHK-1");
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
    let wrong = create_in("sa-checkout-web", "env-dev01", "web-dev", "CHK-1");
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
    let input = create_in("sa-checkout-web", "env-dev01", "web-dev", "CHK-1");
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
    let platform = explain(&p, &create_in("sa-orders", "env-dev01", "Bad", ""), "rev");
    assert!(platform
        .render()
        .contains("sets applied: platform (every request)\n"));
    assert_eq!(
        platform.denied[0].source(),
        "organisation policy `display-name-convention`"
    );
}

// --- scratch configurations ------------------------------------------------------------------

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
    teams_config(
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
    let forbidden = |owner| create_in(owner, "env-1", "forbidden", "b-forbidden");
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
    let mut only_b = create_in("sa-a", "env-1", "fine", "b-forbidden");
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
    let d = p.evaluate(&create_in("sa-a-web", "env-1", "x", ""));
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
    let cfg = teams_config(
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
    assert!(p.evaluate(&create_in("sa-a", "env-1", "a-x", "")).allowed);
    let mut many = create_in("sa-a", "env-1", "a-x", "");
    many.owner_key_count = Some(2);
    let d = p.evaluate(&many);
    assert_eq!(ids(&d.denied), ["team-a/own"]);
    assert_eq!(d.denied[0].reason, "1 at most, 2 held");
    // Both teams apply: each sees its own values (the context holds both).
    let g = ["g".to_owned()];
    let both = OrgInput {
        groups: &g,
        ..create_in("sa-a", "env-1", "a-x", "")
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
            .evaluate(&create_in("sa-b", "env-1", "forbidden", ""))
            .denied),
        ["team-b/rule"]
    );
    assert!(
        second
            .evaluate(&create_in("sa-a", "env-1", "forbidden", ""))
            .allowed
    );
    assert_eq!(
        ids(&second
            .evaluate(&create_in("sa-a", "env-1", "now-forbidden", ""))
            .denied),
        ["team-a/rule"]
    );
    assert_eq!(
        ids(&second
            .evaluate(&create_in("sa-c", "env-1", "x", "platform-forbidden"))
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
            .evaluate(&create_in("sa-a", "env-1", "now-forbidden", ""))
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
    let d = second.evaluate(&create_in("sa-a", "env-1", "forbidden", "b-forbidden"));
    assert_eq!(team_names(&d), ["team-a"]);
}

// --- team internals -----------------------------------------------------------

fn scope(text: &str) -> Scope {
    parse_scope(Path::new("scope.toml"), text).unwrap()
}

fn problems(text: &str) -> Vec<String> {
    parse_scope(Path::new("scope.toml"), text)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn a_scope_names_service_accounts_environments_and_groups() {
    let s = scope(
        r#"service_accounts = ["sa-a", "sa-b-*"]
environments = ["env-a"]
groups = ["team-a"]"#,
    );
    assert_eq!(
        s.describe(),
        "service accounts sa-a, sa-b-*; environments env-a; groups team-a"
    );
    assert!(s.covers(Some("sa-b-1"), None, std::iter::empty()).is_some());
    assert!(s.covers(Some("sa-b"), None, std::iter::empty()).is_none());
    assert!(s.covers(None, Some("env-a"), std::iter::empty()).is_some());
    assert!(s.covers(None, None, ["x", "team-a"].into_iter()).is_some());
    assert!(s
        .covers(Some("sa-c"), Some("env-b"), ["x"].into_iter())
        .is_none());
}

#[test]
fn bad_scopes_are_refused() {
    assert!(problems("")[0].contains("the scope is empty"));
    assert!(problems(r#"service_accounts = ["sa-*"]"#)[0].contains("every service account"));
    assert!(problems(r#"service_accounts = ["u-bob"]"#)[0].contains("not a service account"));
    assert!(problems(r#"service_accounts = ["sa-a*b"]"#)[0].contains("not a service account"));
    assert!(problems(r#"environments = ["prod"]"#)[0].contains("not an environment"));
    assert!(problems(r#"groups = [" x"]"#)[0].contains("not a group"));
    assert!(problems(r#"owners = ["sa-a"]"#)[0].contains("scope.toml:1:"));
}

#[test]
fn team_values_are_named_after_the_team() {
    let ok = parse_team_file(
        Path::new("team.toml"),
        "[patterns]\ncheck_out_naming = '^a$'\n[params]\ncheck_out_max = 3\n",
        "check-out",
    )
    .unwrap();
    assert_eq!(ok.patterns, vec![("check_out_naming".into(), "^a$".into())]);
    assert_eq!(
        ok.params,
        vec![("check_out_max".into(), ParamValue::Long(3))]
    );
    let bad = parse_team_file(
        Path::new("team.toml"),
        "[patterns]\nnaming = '^a$'\n",
        "check-out",
    )
    .unwrap_err();
    assert!(bad[0].to_string().contains("check_out_…"), "{bad:?}");
}

#[test]
fn team_names_are_lowercase_words_and_not_platform() {
    assert!(is_team_name("checkout"));
    assert!(is_team_name("data-platform2"));
    for bad in ["platform", "Checkout", "2fast", "", "a_b", "a/b"] {
        assert!(!is_team_name(bad), "{bad}");
    }
}

#[test]
fn the_index_finds_what_scanning_finds() {
    let scopes = [
        scope(r#"service_accounts = ["sa-a", "sa-ab-*"]"#),
        scope(
            r#"service_accounts = ["sa-b-*"]
groups = ["g1"]"#,
        ),
        scope(
            r#"environments = ["env-1"]
groups = ["g2"]"#,
        ),
    ];
    let index = ScopeIndex::new(scopes.iter());
    let owners = [
        None,
        Some("sa-a"),
        Some("sa-ab-x"),
        Some("sa-b-1"),
        Some("sa-b"),
        Some("sa-c"),
    ];
    let envs = [None, Some("env-1"), Some("env-2")];
    let groups: [&[&str]; 4] = [&[], &["g1"], &["g2", "g1"], &["x"]];
    for owner in owners {
        for env in envs {
            for g in groups {
                let mut got = Vec::new();
                index.lookup(owner, env, g.iter().copied(), &mut got);
                let want: Vec<(u32, Via)> = scopes
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| {
                        s.covers(owner, env, g.iter().copied())
                            .map(|via| (i as u32, via))
                    })
                    .collect();
                assert_eq!(got, want, "{owner:?} {env:?} {g:?}");
            }
        }
    }
}

#[test]
fn overlapping_scopes_are_found_unless_allowed() {
    let a = scope(r#"service_accounts = ["sa-orders-*"]"#);
    let b = scope(r#"service_accounts = ["sa-orders-web"]"#);
    let c = scope(r#"service_accounts = ["sa-or*"]"#);
    let d = scope(
        r#"environments = ["env-1"]
groups = ["g"]"#,
    );
    let e = scope(
        r#"groups = ["g"]
allow_overlap_with = ["d"]"#,
    );
    let f = scope(r#"service_accounts = ["sa-payments"]"#);
    let names = ["a", "b", "c", "d", "e", "f"];
    let found = overlaps(&names, &[&a, &b, &c, &d, &e, &f]);
    let pairs: Vec<(u32, u32)> = found.iter().map(|(x, y, _)| (*x, *y)).collect();
    assert_eq!(pairs, vec![(0, 1), (0, 2), (1, 2)], "{found:?}");
    assert!(found[0].2.contains("sa-orders-web"), "{found:?}");
}
