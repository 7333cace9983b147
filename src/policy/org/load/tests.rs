//! Loading organisation policies: every kind of load error at its file, line and column, digests.

use super::*;
use crate::policy::org::tests::*;
use crate::policy::org::*;

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

// --- helpers ---------------------------------------------------------------------------------

#[test]
fn statement_starts_skip_comments_and_strings() {
    let text = "// a; b\n@id(\"x;y\") forbid (principal, action, resource);\n  // c\n\n@id(\"\\\";\") forbid(principal, action, resource);\n// trailing; comment\n";
    let starts = statement_starts(text);
    assert_eq!(starts.len(), 2);
    assert_eq!(&text[starts[0]..starts[0] + 3], "@id");
    assert_eq!(line_of(text, starts[1]), 5);
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
    // One policy per action in the examples section, plus the one in "Writing a policy" and the
    // candidate of "Changing policy safely".
    assert_eq!(p.policy_ids().len(), 7, "{:?}", p.policy_ids());
}
