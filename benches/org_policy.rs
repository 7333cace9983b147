//! `OrgPolicies::evaluate` (layer 2): build the input and evaluate it, single-threaded, with the
//! shipped example set (and its two example teams); with 20, 200 and 1,000 generated forbid
//! policies in one set, of which half have a shape the index cannot use; with one set of 1,000
//! policies whose constraints the index can use; and with 500 team sets of 10 policies each plus
//! 20 platform policies (5,020 policies). Loading (parse + strict validation) happens once,
//! outside the timing, as in keygate; for the 5,020 policies the load time, a reload's time
//! (nothing changed, and one team changed) and the process's resident memory are printed.
//!
//! Criterion reports the mean/median; the percentile pass afterwards times 10k individual
//! evaluations with `Instant` and sorts them, because criterion does not report tails. The
//! timer's own cost is printed as `timer`. The request is one that no policy denies, so every
//! policy that applies is evaluated to the end (the denying path only adds the findings).
//! `cargo bench --bench org_policy`.

#![allow(
    clippy::unwrap_used,
    reason = "a benchmark on fixed inputs: any failure should abort it loudly"
)]

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Instant;

use criterion::Criterion;

/// The allocator the `keygate` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use keygate::model::Action;
use keygate::model::PrincipalKind;
use keygate::policy::org::{KeyResource, OrgInput, OrgPolicies, OrgPolicyConfig};

/// Individually timed evaluations per scenario in the percentile pass.
const TIMED_EVALUATIONS: usize = 10_000;
/// Sizes of the generated single policy sets.
const GENERATED: [usize; 3] = [20, 200, 1_000];
/// Team sets in the many-teams scenario, and policies per team.
const TEAMS: usize = 500;
const TEAM_POLICIES: usize = 10;
/// The team whose service account the many-teams request's key is for.
const REQUEST_TEAM: usize = 250;

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shipped_config() -> OrgPolicyConfig {
    let text =
        std::fs::read_to_string(manifest_dir().join("policies/policy.example.toml")).unwrap();
    OrgPolicyConfig::from_toml_str(&text, &manifest_dir()).unwrap()
}

fn copy_schema(dir: &Path) {
    std::fs::copy(
        manifest_dir().join("policies/keygate.cedarschema"),
        dir.join("keygate.cedarschema"),
    )
    .unwrap();
}

/// `n` forbid policies in the style of real ones (scope on the action, a few context tests),
/// none of which matches the benchmark request. Half of them (`like … || …`, key counts) have a
/// shape the index cannot use, so they are evaluated for every create.
fn mixed_policies(n: usize, id_prefix: &str) -> String {
    let mut text = String::new();
    for i in 0..n {
        let body = match i % 4 {
            0 => format!(
                "context.owner.id == \"sa-gen-{i}\" && context.resource.type == \"Kafka\""
            ),
            1 => format!(
                "context.resource has environment && context.resource.environment == \"env-gen-{i}\" && !context.description_matches.ticket"
            ),
            2 => format!(
                "context.display_name like \"*-gen{i}-*\" || principal.groups.contains(\"banned-{i}\")"
            ),
            _ => format!(
                "context has owner_key_count && context.owner_key_count > {} && context.owner.kind == \"ServiceAccount\"",
                1_000 + i
            ),
        };
        let _ = write!(
            text,
            "@id(\"{id_prefix}{i}\")\n@reason(\"generated policy {i}\")\nforbid (principal, action == Action::\"CreateApiKey\", resource)\nwhen {{ {body} }};\n\n"
        );
    }
    text
}

/// `n` policies each led by a literal the index can use: an owner, an environment, a group, the
/// principal or the key in the scope. None matches the benchmark request.
fn indexable_policies(n: usize) -> String {
    let mut text = String::new();
    for i in 0..n {
        let (scope, body) = match i % 5 {
            0 => ("principal", format!("context.owner.id == \"sa-idx-{i}\" && !context.description_matches.ticket")),
            1 => ("principal", format!("context.resource has environment && context.resource.environment == \"env-idx-{i}\" && context.owner.kind == \"User\"")),
            2 => ("principal", format!("principal.groups.contains(\"group-idx-{i}\") && context.resource.type == \"Global\"")),
            3 => ("principal == User::\"u-idx\"", format!("context.display_name like \"*-{i}-*\"")),
            _ => ("principal is ServiceAccount", format!("context.owner.id == \"sa-idx-{i}\"")),
        };
        let _ = write!(
            text,
            "@id(\"idx-{i}\")\n@reason(\"indexed policy {i}\")\nforbid ({scope}, action == Action::\"CreateApiKey\", resource)\nwhen {{ {body} }};\n\n"
        );
    }
    text
}

/// A config for the shipped patterns and params over `dir`.
fn config_in(dir: &Path, teams_dir: Option<PathBuf>) -> OrgPolicyConfig {
    OrgPolicyConfig {
        dir: dir.to_path_buf(),
        schema: None,
        modes: Default::default(),
        groups: Default::default(),
        teams_dir,
        ..shipped_config()
    }
}

fn single_set(dir: &Path, text: &str) -> OrgPolicyConfig {
    std::fs::create_dir_all(dir).unwrap();
    copy_schema(dir);
    std::fs::write(dir.join("generated.cedar"), text).unwrap();
    config_in(dir, None)
}

/// One team's files: a scope over its service accounts, environment and group, its own naming
/// and ticket patterns and a key limit, and ten policies: three that apply to every request of
/// the team (naming, ticket, limit) and seven led by an owner, environment or group literal.
fn write_team(teams: &Path, i: usize, variant: &str) {
    let dir = teams.join(format!("team{i}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("scope.toml"),
        format!(
            "service_accounts = [\"sa-team{i}-*\"]\nenvironments = [\"env-team{i}\"]\ngroups = [\"team{i}\"]\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("team.toml"),
        format!(
            "[patterns]\nteam{i}_naming = '^team{i}-[a-z0-9]+-(dev|staging|prod)$'\nteam{i}_ticket = '\\bT{i}-[0-9]+\\b'\n[params]\nteam{i}_limit = 5\n"
        ),
    )
    .unwrap();
    let mut text = format!(
        r#"@id("naming")
@reason("team{i} keys are named team{i}-<purpose>-<env>{variant}")
forbid (principal, action == Action::"CreateApiKey", resource)
when {{ !context.display_name_matches.team{i}_naming }};

@id("ticket")
@reason("team{i} keys need a T{i} ticket")
forbid (principal, action == Action::"CreateApiKey", resource)
when {{ !context.description_matches.team{i}_ticket }};

@id("limit")
@reason("at most {{params.team{i}_limit}} keys")
forbid (principal, action == Action::"CreateApiKey", resource)
when {{ context has owner_key_count && context.owner_key_count >= context.params.team{i}_limit }};

"#
    );
    for k in 0..TEAM_POLICIES - 3 {
        let body = match k % 3 {
            0 => format!("context.owner.id == \"sa-team{i}-legacy{k}\" && context.resource.type == \"Kafka\""),
            1 => format!("context.resource has environment && context.resource.environment == \"env-team{i}-old{k}\""),
            _ => format!("principal.groups.contains(\"team{i}-contractors{k}\") && context.resource.type != \"Kafka\""),
        };
        let _ = write!(
            text,
            "@id(\"rule-{k}\")\n@reason(\"team{i} rule {k}\")\nforbid (principal, action == Action::\"CreateApiKey\", resource)\nwhen {{ {body} }};\n\n"
        );
    }
    std::fs::write(dir.join("rules.cedar"), text).unwrap();
}

/// The platform set (the shipped ten plus ten generated) and 500 teams.
fn many_teams(root: &Path) -> OrgPolicyConfig {
    let dir = root.join("platform");
    std::fs::create_dir_all(&dir).unwrap();
    copy_schema(&dir);
    for entry in std::fs::read_dir(manifest_dir().join("policies")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "cedar") {
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    std::fs::write(
        dir.join("generated.cedar"),
        mixed_policies(10, "platform-gen-"),
    )
    .unwrap();
    let teams = root.join("teams");
    for i in 0..TEAMS {
        write_team(&teams, i, "");
    }
    let mut cfg = config_in(&dir, Some(teams));
    cfg.modes = shipped_config().modes;
    cfg
}

/// Resident and peak resident memory of this process, from `/proc/self/status` (KiB).
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let mut scenarios: Vec<(String, OrgPolicies)> = vec![(
        "evaluate/shipped".to_owned(),
        OrgPolicies::load(&shipped_config()).unwrap(),
    )];
    for n in GENERATED {
        let cfg = single_set(&tmp.path().join(n.to_string()), &mixed_policies(n, "gen-"));
        let started = Instant::now();
        let policies = OrgPolicies::load(&cfg).unwrap();
        println!(
            "load/{n}: {:?} (parse + strict validation)",
            started.elapsed()
        );
        scenarios.push((format!("evaluate/{n}"), policies));
    }
    let cfg = single_set(&tmp.path().join("indexable"), &indexable_policies(1_000));
    let started = Instant::now();
    let indexable = OrgPolicies::load(&cfg).unwrap();
    println!("load/1000-indexable: {:?}", started.elapsed());
    scenarios.push(("evaluate/1000-indexable".to_owned(), indexable));

    let root = tmp.path().join("teams");
    let cfg = many_teams(&root);
    let (rss_before, _) = memory_kib();
    let started = Instant::now();
    let teams = OrgPolicies::load(&cfg).unwrap();
    let load = started.elapsed();
    let (rss_after, peak) = memory_kib();
    assert_eq!(teams.policy_ids().len(), TEAMS * TEAM_POLICIES + 20);
    println!(
        "load/500-teams: {load:?} for {} policies in {} sets; RSS {} MiB -> {} MiB (+{} MiB), peak {} MiB",
        teams.policy_ids().len(),
        TEAMS + 1,
        rss_before / 1024,
        rss_after / 1024,
        rss_after.saturating_sub(rss_before) / 1024,
        peak / 1024
    );
    let started = Instant::now();
    let same = OrgPolicies::reload(&cfg, &teams).unwrap();
    println!(
        "reload/500-teams, nothing changed: {:?} (files read and compared, no team compiled)",
        started.elapsed()
    );
    write_team(&root.join("teams"), 7, " (changed)");
    let started = Instant::now();
    let one = OrgPolicies::reload(&cfg, &same).unwrap();
    println!(
        "reload/500-teams, one team changed: {:?}",
        started.elapsed()
    );
    assert_ne!(one.digest(), same.digest());
    drop((same, one));
    scenarios.push(("evaluate/500-teams".to_owned(), teams));

    let groups = ["team-orders".to_owned(), "developers".to_owned()];
    // Built per iteration, as the decide stage would: borrowing, no allocation.
    let input = || OrgInput {
        principal_id: black_box("u-bob"),
        principal_kind: PrincipalKind::User,
        groups: &groups,
        external: None,
        bindings: &[],
        action: Action::CreateApiKey,
        key_id: None,
        owner_id: Some(black_box("sa-orders")),
        resource: Some(KeyResource {
            id: "lkc-prod01",
            resource_type: "Kafka",
            environment: Some("env-prod01"),
            cluster: Some("lkc-prod01"),
        }),
        display_name: Some(black_box("orders-ingest-prod")),
        description: Some(black_box("OPS-1234 orders ingest consumer")),
        matrix_allowed: true,
        matrix_rule: "service-account/matrix-role",
        owner_key_count: Some(1),
        time: 1_735_689_600,
        source_ip: Some("10.20.30.40".parse().unwrap()),
        request_id: "0f8e2c4a-bench",
        target_key: None,
        quota: None,
    };
    // For the many-teams set: a key of team 250's service account in its environment, created by
    // a member of its group, named and ticketed its way — so the platform set and team 250's
    // apply, and every policy that applies runs to the end.
    let team_owner = format!("sa-team{REQUEST_TEAM}-ingest");
    let team_env = format!("env-team{REQUEST_TEAM}");
    let team_name = format!("team{REQUEST_TEAM}-ingest-prod");
    let team_description = format!("OPS-1234 T{REQUEST_TEAM}-77 ingest consumer");
    let team_groups = [format!("team{REQUEST_TEAM}"), "developers".to_owned()];
    let team_input = || OrgInput {
        groups: &team_groups,
        owner_id: Some(black_box(team_owner.as_str())),
        resource: Some(KeyResource {
            id: "lkc-team",
            resource_type: "Kafka",
            environment: Some(team_env.as_str()),
            cluster: Some("lkc-team"),
        }),
        display_name: Some(black_box(team_name.as_str())),
        description: Some(black_box(team_description.as_str())),
        ..input()
    };
    // The read path: a GET, for which the shipped set has no policy.
    let get = || OrgInput {
        action: Action::GetApiKey,
        key_id: Some(black_box("ORDERSPRODKEY001")),
        owner_id: None,
        resource: None,
        display_name: None,
        description: None,
        owner_key_count: None,
        ..input()
    };
    let input_for = |name: &str| {
        if name == "evaluate/500-teams" {
            team_input()
        } else {
            input()
        }
    };
    for (name, p) in &scenarios {
        let d = p.evaluate(&input_for(name));
        assert!(d.allowed && d.would_deny.is_empty(), "{name}: {d:?}");
        if name == "evaluate/500-teams" {
            assert_eq!(d.teams.len(), 1, "{d:?}");
        }
    }

    let mut criterion = Criterion::default().configure_from_args();
    for (name, p) in &scenarios {
        criterion.bench_function(name, |b| b.iter(|| black_box(p.evaluate(&input_for(name)))));
    }
    let shipped = &scenarios[0].1;
    criterion.bench_function("evaluate/shipped_get", |b| {
        b.iter(|| black_box(shipped.evaluate(&get())))
    });
    criterion.final_summary();

    // `cargo test --benches` runs this binary without `--bench`: keep that quick.
    let timed = if std::env::args().any(|a| a == "--bench") {
        TIMED_EVALUATIONS
    } else {
        100
    };
    // Honour a criterion name filter such as `evaluate/shipped` in this pass too.
    let filter = std::env::args()
        .skip(1)
        .find(|a| a.starts_with("evaluate/"));
    let mut samples = vec![0u64; timed];
    println!("{:<24} {}", "timer", percentiles(&mut samples, || {}));
    for (name, p) in &scenarios {
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        let line = percentiles(&mut samples, || {
            black_box(p.evaluate(&input_for(name)));
        });
        println!("{name:<24} {line}");
    }
    if filter
        .as_ref()
        .is_none_or(|f| "evaluate/shipped_get".contains(f.as_str()))
    {
        let line = percentiles(&mut samples, || {
            black_box(shipped.evaluate(&get()));
        });
        println!("{:<24} {line}", "evaluate/shipped_get");
    }
}

/// Times `f` once per sample slot and summarises the distribution in microseconds.
fn percentiles(samples: &mut [u64], mut f: impl FnMut()) -> String {
    for _ in 0..samples.len() / 10 {
        f();
    }
    for slot in samples.iter_mut() {
        let start = Instant::now();
        f();
        *slot = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    let us = |ns: u64| ns as f64 / 1_000.0;
    format!(
        "p50 {:.1} µs  p99 {:.1} µs  p99.9 {:.1} µs  max {:.1} µs  (n = {})",
        us(at(0.50)),
        us(at(0.99)),
        us(at(0.999)),
        us(samples[samples.len() - 1]),
        samples.len()
    )
}
