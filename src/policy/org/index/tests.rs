//! The sliced, indexed evaluation: equal to Cedar's authorizer over the whole set on generated
//! (policy set, request) pairs, and touching only what can match.

use super::*;
use crate::policy::org::tests::*;
use crate::policy::org::*;

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
    let action = crate::policy::org::request::ACTIONS[rng.below(5)];
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
        external: None,
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
            let mut cfg = teams_config(dir.path(), &[("p.cedar", &platform)], &borrowed);
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
    let cfg = teams_config(dir.path(), &[("many.cedar", &text)], &[]);
    let p = OrgPolicies::load(&cfg).unwrap();
    let groups = ["g-2".to_owned(), "g-5".to_owned()];
    let input = OrgInput {
        groups: &groups,
        ..create_in("sa-0", "env-4", "x", "")
    };
    // p0 (owner sa-0), p4 (env-4), p2 and p5 (the groups): nothing else.
    assert_eq!(p.evaluated(&input), 4);
    assert_eq!(ids(&p.evaluate(&input).denied), ["p0", "p4"]);
    assert_eq!(p.evaluate(&input), p.evaluate_whole(&input));
}

// --- index internals ----------------------------------------------------------

fn slot(text: &str) -> Slot {
    let policy = Policy::parse(None, text).unwrap();
    slot_of(&policy, &Vocabulary::new().unwrap())
}

const CREATE: &str = r#"forbid (principal, action == Action::"CreateApiKey", resource)"#;

#[test]
fn scope_equalities_are_indexed() {
    assert_eq!(
        slot(
            r#"forbid (principal == ServiceAccount::"sa-1", action, resource) when { context.owner.id == "sa-2" };"#
        ),
        Slot::Principal(PrincipalKind::ServiceAccount, "sa-1".into())
    );
    assert_eq!(
        slot(r#"forbid (principal, action, resource == ApiKey::"KEY1");"#),
        Slot::Key("KEY1".into())
    );
    assert_eq!(
        slot(r#"forbid (principal is User, action, resource);"#),
        Slot::PrincipalKind(PrincipalKind::User)
    );
    assert_eq!(
        slot(r#"forbid (principal in User::"u-1", action, resource);"#),
        Slot::Always
    );
}

#[test]
fn a_literal_comparison_at_the_top_of_the_first_when_is_indexed() {
    assert_eq!(
        slot(&format!(
            r#"{CREATE} when {{ context.owner.id == "sa-1" && context.display_name == "x" }};"#
        )),
        Slot::Owner {
            value: "sa-1".into(),
            when_no_owner: true
        }
    );
    assert_eq!(
        slot(&format!(
            r#"{CREATE} when {{ "sa-1" == context.owner.id }};"#
        )),
        Slot::Owner {
            value: "sa-1".into(),
            when_no_owner: true
        }
    );
    assert_eq!(
        slot(&format!(
            r#"{CREATE} when {{ context has owner && context.owner.id == "sa-1" }};"#
        )),
        Slot::Owner {
            value: "sa-1".into(),
            when_no_owner: false
        }
    );
    assert_eq!(
        slot(&format!(
            r#"{CREATE} when {{ context.resource has environment && context.resource.environment == "env-1" }};"#
        )),
        Slot::Environment {
            value: "env-1".into(),
            when_no_resource: true,
            when_no_environment: false
        }
    );
    assert_eq!(
        slot(&format!(
            r#"{CREATE} when {{ context has resource && context.resource has environment && context.resource.environment == "env-1" }};"#
        )),
        Slot::Environment {
            value: "env-1".into(),
            when_no_resource: false,
            when_no_environment: false
        }
    );
    assert_eq!(
        slot(&format!(
            r#"{CREATE} when {{ principal.groups.contains("g") && context.owner.id == "x" }};"#
        )),
        Slot::Group("g".into())
    );
    // A `has` on the context itself never errors, whatever it tests.
    assert_eq!(
        slot(&format!(
            r#"{CREATE} when {{ context has owner_key_count && context.owner.id == "sa-1" }};"#
        )),
        Slot::Owner {
            value: "sa-1".into(),
            when_no_owner: true
        }
    );
}

#[test]
fn anything_else_is_always_evaluated() {
    for body in [
        r#"context.owner.id != "sa-1""#,
        r#"context.owner_key_count > 3 && context.owner.id == "sa-1""#,
        r#"context.owner.id == "sa-1" || context.owner.id == "sa-2""#,
        r#"!principal.groups.contains("g")"#,
        r#"context.owner.kind == "ServiceAccount""#,
        r#"principal.groups == ["g"]"#,
        r#"context.owner.id == context.display_name"#,
        // A `has` below another attribute can error when that attribute is absent.
        r#"context has target_key && context.target_key has owner && context.owner.id == "sa-1""#,
    ] {
        assert_eq!(
            slot(&format!("{CREATE} when {{ {body} }};")),
            Slot::Always,
            "{body}"
        );
    }
    assert_eq!(
        slot(&format!(
            r#"{CREATE} unless {{ context.owner.id == "sa-1" }};"#
        )),
        Slot::Always
    );
    // Only the first condition counts: the scope and it are evaluated first.
    assert_eq!(
        slot(&format!(
            r#"{CREATE} when {{ context.owner_key_count > 1 }} when {{ context.owner.id == "sa-1" }};"#
        )),
        Slot::Always
    );
}

#[test]
fn guards_decide_what_a_missing_attribute_does() {
    let g = |levels: &[Option<usize>]| Guards(levels.to_vec());
    // No test: the comparison reads the missing attribute and errors.
    assert!(!g(&[]).skip_when_missing(0));
    // `context has resource` when the resource is missing: false.
    assert!(g(&[Some(0)]).skip_when_missing(0));
    // `context.resource has environment` when the resource is missing: an error.
    assert!(!g(&[Some(1)]).skip_when_missing(0));
    assert!(g(&[Some(1)]).skip_when_missing(1));
    assert!(g(&[Some(0), Some(1)]).skip_when_missing(1));
    assert!(!g(&[Some(1), Some(0)]).skip_when_missing(0));
    assert!(g(&[None, Some(0)]).skip_when_missing(0));
}
