use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use governor::clock::FakeRelativeClock;

use super::config::{action_index, ALL_ACTIONS};
use super::*;

const NS: Duration = Duration::from_nanos(1);

/// One `[[limits]]` entry, as the config file would have it.
struct Limit {
    id: &'static str,
    key: &'static str,
    per: &'static str,
    requests: u64,
    burst: Option<u64>,
    actions: &'static [&'static str],
    principals: &'static [&'static str],
    groups: &'static [&'static str],
}

impl Limit {
    fn new(id: &'static str, key: &'static str, per: &'static str, requests: u64) -> Limit {
        Limit {
            id,
            key,
            per,
            requests,
            burst: None,
            actions: &[],
            principals: &[],
            groups: &[],
        }
    }

    fn burst(self, burst: u64) -> Limit {
        Limit {
            burst: Some(burst),
            ..self
        }
    }

    fn actions(self, actions: &'static [&'static str]) -> Limit {
        Limit { actions, ..self }
    }

    fn principals(self, principals: &'static [&'static str]) -> Limit {
        Limit { principals, ..self }
    }

    fn groups(self, groups: &'static [&'static str]) -> Limit {
        Limit { groups, ..self }
    }
}

/// The `[[limits]]` tables of `limits`, in order.
fn toml(limits: &[Limit]) -> String {
    let list = |items: &[&str]| {
        items
            .iter()
            .map(|i| format!("\"{i}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = String::new();
    for l in limits {
        out.push_str(&format!(
            "[[limits]]\nid = \"{}\"\nkey = \"{}\"\n",
            l.id, l.key
        ));
        if !l.actions.is_empty() {
            out.push_str(&format!("actions = [{}]\n", list(l.actions)));
        }
        let mut matches = Vec::new();
        if !l.principals.is_empty() {
            matches.push(format!("principals = [{}]", list(l.principals)));
        }
        if !l.groups.is_empty() {
            matches.push(format!("groups = [{}]", list(l.groups)));
        }
        if !matches.is_empty() {
            out.push_str(&format!("match = {{ {} }}\n", matches.join(", ")));
        }
        let burst = l
            .burst
            .map(|b| format!(", burst = {b}"))
            .unwrap_or_default();
        out.push_str(&format!(
            "quota = {{ per = \"{}\", requests = {}{burst} }}\n",
            l.per, l.requests
        ));
    }
    out
}

fn limiter(toml: &str) -> (RateLimiter<FakeRelativeClock>, FakeRelativeClock) {
    let config = RateLimitConfig::from_toml(toml).unwrap();
    let clock = FakeRelativeClock::default();
    (RateLimiter::with_clock(&config, clock.clone()), clock)
}

fn who(id: &str) -> Subject<'_> {
    Subject::Principal { id, groups: &[] }
}

fn addr(text: &str) -> Subject<'static> {
    Subject::Address(text.parse().unwrap())
}

fn header(refused: &RateLimited, name: &HeaderName) -> String {
    let headers = refused.headers();
    let (_, value) = headers.iter().find(|(n, _)| n == name).unwrap();
    value.to_str().unwrap().to_owned()
}

/// Calls `check` `n` times and returns how many were allowed.
fn allowed(
    limiter: &RateLimiter<FakeRelativeClock>,
    who: &Subject<'_>,
    action: Option<Action>,
    n: usize,
) -> usize {
    (0..n)
        .filter(|_| limiter.check(who, action).is_ok())
        .count()
}

fn per_principal_3_per_min() -> String {
    toml(&[Limit::new("per-principal", "principal", "1m", 60).burst(3)])
}

// === burst and recovery ===

#[test]
fn exactly_burst_requests_pass_then_refusal() {
    let (limiter, _clock) = limiter(&per_principal_3_per_min());
    for _ in 0..3 {
        limiter.check(&who("sa-1"), None).unwrap();
    }
    let refused = limiter.check(&who("sa-1"), None).unwrap_err();
    assert_eq!(refused.limit_id(), "per-principal");
    assert_eq!(refused.retry_after(), Duration::from_secs(1));
}

#[test]
fn refused_until_exactly_retry_after_has_passed() {
    // 7 per minute: one token every 8.571428571s, so Retry-After is not a whole second.
    let (limiter, clock) = limiter(&toml(&[Limit::new("slow", "principal", "1m", 7).burst(1)]));
    limiter.check(&who("sa-1"), None).unwrap();
    let refused = limiter.check(&who("sa-1"), None).unwrap_err();
    assert_eq!(refused.retry_after(), Duration::from_nanos(8_571_428_571));

    clock.advance(refused.retry_after() - NS);
    let again = limiter.check(&who("sa-1"), None).unwrap_err();
    assert_eq!(again.retry_after(), NS);
    clock.advance(NS);
    limiter.check(&who("sa-1"), None).unwrap();
}

#[test]
fn waiting_the_advertised_whole_seconds_is_enough_and_one_less_is_not() {
    let toml = toml(&[Limit::new("slow", "principal", "1m", 7).burst(1)]);
    let (limiter, clock) = limiter(&toml);
    limiter.check(&who("sa-1"), None).unwrap();
    let refused = limiter.check(&who("sa-1"), None).unwrap_err();
    let advertised: u64 = header(&refused, &RETRY_AFTER).parse().unwrap();
    assert_eq!(advertised, 9);

    clock.advance(Duration::from_secs(advertised - 1));
    assert!(limiter.check(&who("sa-1"), None).is_err());
    clock.advance(Duration::from_secs(1));
    assert!(limiter.check(&who("sa-1"), None).is_ok());
}

#[test]
fn bucket_refills_to_burst_and_no_further() {
    let (limiter, clock) = limiter(&per_principal_3_per_min());
    assert_eq!(allowed(&limiter, &who("sa-1"), None, 10), 3);
    clock.advance(Duration::from_secs(3600));
    assert_eq!(allowed(&limiter, &who("sa-1"), None, 10), 3);
}

// === keys ===

#[test]
fn one_principals_exhaustion_does_not_affect_another() {
    let (limiter, _clock) = limiter(&per_principal_3_per_min());
    assert_eq!(allowed(&limiter, &who("sa-1"), None, 10), 3);
    assert_eq!(allowed(&limiter, &who("sa-2"), None, 10), 3);
    assert_eq!(allowed(&limiter, &who("u-1"), None, 10), 3);
}

#[test]
fn per_action_limit_is_independent_per_action() {
    let (limiter, _clock) = limiter(&toml(&[Limit::new(
        "per-action",
        "principal_action",
        "1h",
        2,
    )]));
    let create = Some(Action::CreateApiKey);
    assert_eq!(allowed(&limiter, &who("sa-1"), create, 5), 2);
    assert_eq!(
        limiter.check(&who("sa-1"), create).unwrap_err().limit_id(),
        "per-action"
    );
    assert_eq!(
        allowed(&limiter, &who("sa-1"), Some(Action::ListApiKeys), 5),
        2
    );
    // Ungoverned requests have no action, so a principal_action limit does not apply.
    assert_eq!(allowed(&limiter, &who("sa-1"), None, 5), 5);
}

#[test]
fn create_limit_does_not_block_list_under_a_general_limit() {
    let (limiter, _clock) = limiter(&toml(&[
        Limit::new("creates", "principal_action", "1h", 2).actions(&["CreateApiKey"]),
        Limit::new("everything", "principal", "1h", 100),
    ]));
    assert_eq!(
        allowed(&limiter, &who("sa-1"), Some(Action::CreateApiKey), 5),
        2
    );
    assert_eq!(
        allowed(&limiter, &who("sa-1"), Some(Action::ListApiKeys), 50),
        50
    );
    assert_eq!(
        allowed(&limiter, &who("sa-1"), Some(Action::CreateApiKey), 1),
        0
    );
}

#[test]
fn global_limit_is_shared_across_principals() {
    let (limiter, _clock) = limiter(&toml(&[Limit::new("org", "global", "1s", 3)]));
    limiter.check(&who("sa-1"), None).unwrap();
    limiter
        .check(&who("sa-2"), Some(Action::CreateApiKey))
        .unwrap();
    limiter.check(&addr("192.0.2.1"), None).unwrap();
    let refused = limiter.check(&who("sa-4"), None).unwrap_err();
    assert_eq!(refused.limit_id(), "org");
}

#[test]
fn anonymous_traffic_is_keyed_by_source_address() {
    let (limiter, _clock) = limiter(&per_principal_3_per_min());
    assert_eq!(allowed(&limiter, &addr("192.0.2.1"), None, 5), 3);
    assert_eq!(allowed(&limiter, &addr("192.0.2.2"), None, 5), 3);
    // The IPv4-mapped form is the same caller.
    assert_eq!(allowed(&limiter, &addr("::ffff:192.0.2.1"), None, 5), 0);
    // A principal never shares a bucket with an address.
    assert_eq!(allowed(&limiter, &who("192.0.2.1"), None, 5), 3);
}

#[test]
fn ipv6_sources_are_keyed_by_their_64_bit_prefix() {
    let (limiter, _clock) = limiter(&per_principal_3_per_min());
    assert_eq!(allowed(&limiter, &addr("2001:db8:1:2::1"), None, 2), 2);
    assert_eq!(allowed(&limiter, &addr("2001:db8:1:2:ffff::9"), None, 5), 1);
    assert_eq!(allowed(&limiter, &addr("2001:db8:1:3::1"), None, 5), 3);
}

#[test]
fn matched_limits_do_not_apply_to_anonymous_traffic() {
    let (limiter, _clock) = limiter(&toml(&[
        Limit::new("platform", "principal", "1h", 1).groups(&["platform"])
    ]));
    let anonymous = Subject::Address(IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_eq!(allowed(&limiter, &anonymous, None, 5), 5);
    let v6 = Subject::Address(IpAddr::V6(Ipv6Addr::LOCALHOST));
    assert_eq!(allowed(&limiter, &v6, None, 5), 5);
}

// === precedence ===

fn teams() -> String {
    toml(&[
        Limit::new("default", "principal", "1h", 1),
        Limit::new("platform-team", "principal", "1h", 5).groups(&["platform"]),
        Limit::new("ci", "principal", "1h", 2).principals(&["sa-ci"]),
    ])
}

#[test]
fn group_matched_limit_replaces_the_general_one_for_members() {
    let (limiter, _clock) = limiter(&teams());
    let platform = ["platform".to_owned()];
    let member = Subject::Principal {
        id: "u-alice",
        groups: &platform,
    };
    assert_eq!(allowed(&limiter, &member, None, 10), 5);
    assert_eq!(
        limiter.check(&member, None).unwrap_err().limit_id(),
        "platform-team"
    );

    let other_groups = ["data".to_owned()];
    let outsider = Subject::Principal {
        id: "u-bob",
        groups: &other_groups,
    };
    assert_eq!(allowed(&limiter, &outsider, None, 10), 1);
    assert_eq!(
        limiter.check(&outsider, None).unwrap_err().limit_id(),
        "default"
    );
}

#[test]
fn principal_matched_limit_beats_group_matched_limit() {
    let (limiter, _clock) = limiter(&teams());
    let platform = ["platform".to_owned()];
    let ci = Subject::Principal {
        id: "sa-ci",
        groups: &platform,
    };
    assert_eq!(allowed(&limiter, &ci, None, 10), 2);
    assert_eq!(limiter.check(&ci, None).unwrap_err().limit_id(), "ci");
}

#[test]
fn group_override_only_covers_its_own_actions() {
    let (limiter, _clock) = limiter(&toml(&[
        Limit::new("writes", "principal_action", "1h", 1)
            .actions(&["CreateApiKey", "DeleteApiKey"]),
        Limit::new("platform-creates", "principal_action", "1h", 4)
            .actions(&["CreateApiKey"])
            .groups(&["platform"]),
    ]));
    let platform = ["platform".to_owned()];
    let member = Subject::Principal {
        id: "u-alice",
        groups: &platform,
    };
    assert_eq!(
        allowed(&limiter, &member, Some(Action::CreateApiKey), 10),
        4
    );
    assert_eq!(
        allowed(&limiter, &member, Some(Action::DeleteApiKey), 10),
        1
    );
}

#[test]
fn limits_on_the_same_tier_all_apply() {
    let (limiter, clock) = limiter(&toml(&[
        Limit::new("per-second", "principal", "1s", 2),
        Limit::new("per-day", "principal", "1day", 3),
    ]));
    assert_eq!(allowed(&limiter, &who("sa-1"), None, 5), 2);
    assert_eq!(
        limiter.check(&who("sa-1"), None).unwrap_err().limit_id(),
        "per-second"
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(allowed(&limiter, &who("sa-1"), None, 5), 1);
    assert_eq!(
        limiter.check(&who("sa-1"), None).unwrap_err().limit_id(),
        "per-day"
    );
}

// === order and token accounting ===

#[test]
fn refusal_by_own_limit_does_not_spend_the_global_budget() {
    let (limiter, _clock) = limiter(&toml(&[
        Limit::new("org", "global", "1h", 3),
        Limit::new("per-principal", "principal", "1h", 2),
    ]));
    assert_eq!(allowed(&limiter, &who("sa-noisy"), None, 50), 2);
    assert_eq!(allowed(&limiter, &who("sa-quiet"), None, 1), 1);
    assert_eq!(
        limiter
            .check(&who("sa-third"), None)
            .unwrap_err()
            .limit_id(),
        "org"
    );
}

#[test]
fn refusal_by_global_limit_does_not_spend_the_callers_own_tokens() {
    let (limiter, clock) = limiter(&toml(&[
        Limit::new("per-principal", "principal", "1h", 2),
        Limit::new("org", "global", "1s", 1),
    ]));
    limiter.check(&who("sa-1"), None).unwrap();
    for _ in 0..5 {
        assert_eq!(
            limiter.check(&who("sa-1"), None).unwrap_err().limit_id(),
            "org"
        );
    }
    clock.advance(Duration::from_secs(1));
    limiter.check(&who("sa-1"), None).unwrap();
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        limiter.check(&who("sa-1"), None).unwrap_err().limit_id(),
        "per-principal"
    );
}

#[test]
fn refusal_by_a_later_limit_does_not_spend_the_first_limits_token() {
    let (limiter, clock) = limiter(&toml(&[
        Limit::new("creates", "principal_action", "1h", 2),
        Limit::new("per-principal", "principal", "1s", 1),
    ]));
    let create = Some(Action::CreateApiKey);
    limiter.check(&who("sa-1"), create).unwrap();
    for _ in 0..5 {
        let refused = limiter.check(&who("sa-1"), create).unwrap_err();
        assert_eq!(refused.limit_id(), "per-principal");
    }
    clock.advance(Duration::from_secs(1));
    limiter.check(&who("sa-1"), create).unwrap();
}

#[test]
fn retry_after_is_the_longest_wait_among_refusing_limits() {
    let (limiter, _clock) = limiter(&toml(&[
        Limit::new("hourly", "principal", "1h", 1),
        Limit::new("org", "global", "1s", 1),
    ]));
    limiter.check(&who("sa-1"), None).unwrap();
    let refused = limiter.check(&who("sa-1"), None).unwrap_err();
    assert_eq!(refused.limit_id(), "hourly");
    assert_eq!(refused.retry_after(), Duration::from_secs(3600));
}

#[test]
fn refused_new_caller_leaves_no_bucket_behind() {
    let (limiter, _clock) = limiter(&toml(&[
        Limit::new("per-principal", "principal", "1h", 5),
        Limit::new("org", "global", "1h", 1),
    ]));
    limiter.check(&who("sa-1"), None).unwrap();
    assert_eq!(limiter.key_count(), 2);
    for i in 0..100 {
        let id = format!("sa-new-{i}");
        assert!(limiter.check(&who(&id), None).is_err());
    }
    assert_eq!(limiter.key_count(), 2);
}

#[test]
fn no_applicable_limit_allows_everything() {
    let (limiter, _clock) = limiter("");
    assert_eq!(
        allowed(&limiter, &who("sa-1"), Some(Action::CreateApiKey), 1000),
        1000
    );
    assert_eq!(limiter.key_count(), 0);
}

// === headers ===

#[test]
fn headers_carry_exact_values_on_refusal() {
    // One token every 360s, bucket of 3: after the burst the next token is 360s away and the
    // bucket is full again 3 * 360s after the last request.
    let (limiter, clock) = limiter(&toml(&[
        Limit::new("creates", "principal", "1h", 10).burst(3)
    ]));
    assert_eq!(allowed(&limiter, &who("sa-1"), None, 3), 3);
    clock.advance(Duration::from_millis(500));
    let refused = limiter.check(&who("sa-1"), None).unwrap_err();
    assert_eq!(refused.retry_after(), Duration::from_millis(359_500));
    assert_eq!(refused.reset(), Duration::from_millis(1_079_500));
    assert_eq!(refused.limit(), 3);
    assert_eq!(refused.remaining(), 0);

    let headers = refused.headers();
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("retry-after", "360"),
            ("x-ratelimit-limit", "3"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "1080"),
        ]
    );
}

#[test]
fn sub_second_waits_advertise_one_second() {
    let (limiter, _clock) = limiter(&toml(&[Limit::new("fast", "principal", "1s", 10).burst(1)]));
    limiter.check(&who("sa-1"), None).unwrap();
    let refused = limiter.check(&who("sa-1"), None).unwrap_err();
    assert_eq!(refused.retry_after(), Duration::from_millis(100));
    assert_eq!(header(&refused, &RETRY_AFTER), "1");
    assert_eq!(header(&refused, &X_RATELIMIT_RESET), "1");
    assert_eq!(header(&refused, &X_RATELIMIT_LIMIT), "1");
}

#[test]
fn refusal_message_names_the_limit_and_the_wait() {
    let (limiter, _clock) = limiter(&per_principal_3_per_min());
    let _ = allowed(&limiter, &who("sa-1"), None, 3);
    let refused = limiter.check(&who("sa-1"), None).unwrap_err();
    assert_eq!(
        refused.to_string(),
        "rate limit `per-principal` exceeded: retry after 1s"
    );
}

// === memory ===

#[test]
fn housekeeping_forgets_a_million_idle_callers() {
    let (limiter, clock) = limiter(&per_principal_3_per_min());
    const CALLERS: u32 = 1_000_000;
    for i in 0..CALLERS {
        let source = Subject::Address(IpAddr::V4(Ipv4Addr::from_bits(i)));
        limiter.check(&source, None).unwrap();
    }
    assert_eq!(limiter.key_count(), CALLERS as usize);
    let grown = limiter.capacity();
    assert!(grown >= CALLERS as usize);

    // Not idle long enough: a bucket with a spent token is not yet indistinguishable from new.
    limiter.housekeeping();
    assert_eq!(limiter.key_count(), CALLERS as usize);

    clock.advance(Duration::from_secs(60));
    limiter.check(&who("sa-active"), None).unwrap();
    limiter.housekeeping();
    assert_eq!(limiter.key_count(), 1);
    assert!(
        limiter.capacity() < 1024,
        "capacity after housekeeping: {}",
        limiter.capacity()
    );
}

// === reconfigure ===

#[test]
fn reconfigure_keeps_unchanged_buckets_and_resets_changed_ones() {
    let (limiter, _clock) = limiter(&toml(&[
        Limit::new("kept", "principal", "1h", 2).principals(&["sa-1"]),
        Limit::new("changed", "principal", "1h", 2).principals(&["sa-2"]),
    ]));
    assert_eq!(allowed(&limiter, &who("sa-1"), None, 2), 2);
    assert_eq!(allowed(&limiter, &who("sa-2"), None, 2), 2);

    // `kept`: same id, kind and quota (2 per hour is 1 per 30 minutes with a burst of 2), and a
    // changed `match`. `changed`: a new quota.
    let next = RateLimitConfig::from_toml(&toml(&[
        Limit::new("kept", "principal", "30m", 1)
            .burst(2)
            .principals(&["sa-1", "sa-3"]),
        Limit::new("changed", "principal", "1h", 3).principals(&["sa-2"]),
    ]))
    .unwrap();
    let reloaded = limiter.reconfigure(&next);
    assert_eq!(
        reloaded.check(&who("sa-1"), None).unwrap_err().limit_id(),
        "kept"
    );
    assert_eq!(allowed(&reloaded, &who("sa-2"), None, 5), 3);
    // The new `match` is in force on the kept buckets.
    assert_eq!(allowed(&reloaded, &who("sa-3"), None, 5), 2);
    // The old limiter keeps working on the shared buckets until it is dropped.
    assert!(limiter.check(&who("sa-1"), None).is_err());
}

#[test]
fn reconfigure_resets_a_limit_whose_key_kind_changed() {
    let (limiter, _clock) = limiter(&per_principal_3_per_min());
    assert_eq!(allowed(&limiter, &who("sa-1"), None, 3), 3);
    let next =
        RateLimitConfig::from_toml(&toml(&[
            Limit::new("per-principal", "global", "1m", 60).burst(3)
        ]))
        .unwrap();
    let reloaded = limiter.reconfigure(&next);
    assert_eq!(allowed(&reloaded, &who("sa-1"), None, 5), 3);
}

#[test]
fn reconfigure_to_a_new_id_starts_fresh() {
    let (limiter, _clock) = limiter(&per_principal_3_per_min());
    assert_eq!(allowed(&limiter, &who("sa-1"), None, 3), 3);
    let next =
        RateLimitConfig::from_toml(&per_principal_3_per_min().replace("per-principal", "renamed"))
            .unwrap();
    let reloaded = limiter.reconfigure(&next);
    assert_eq!(allowed(&reloaded, &who("sa-1"), None, 5), 3);
    assert_eq!(reloaded.key_counts().collect::<Vec<_>>(), [("renamed", 1)]);
}

// === config validation ===

fn config_error(toml: &str) -> String {
    RateLimitConfig::from_toml(toml).unwrap_err().to_string()
}

fn one_limit(fields: &str) -> String {
    format!("[[limits]]\nid = \"l1\"\n{fields}\n")
}

#[test]
fn invalid_limits_are_refused_with_a_message_naming_the_limit_and_field() {
    let cases: [(&str, &str); 12] = [
        (
            r#"key = "principal"
quota = { per = "1h", requests = 0 }"#,
            "ratelimit: limit `l1`: quota.requests must be greater than zero",
        ),
        (
            r#"key = "principal"
quota = { per = "1h", requests = 5, burst = 0 }"#,
            "ratelimit: limit `l1`: quota.burst must be greater than zero",
        ),
        (
            r#"key = "principal"
quota = { per = "0s", requests = 5 }"#,
            "ratelimit: limit `l1`: quota.per must be greater than zero",
        ),
        (
            r#"key = "user"
quota = { per = "1h", requests = 1 }"#,
            "ratelimit: limit `l1`: unknown key `user`, expected `principal`, `principal_action` or `global`",
        ),
        (
            r#"key = "principal"
actions = ["CreateApiKey"]
quota = { per = "1h", requests = 1 }"#,
            "ratelimit: limit `l1`: `actions` is only allowed with key `principal_action`, not `principal`",
        ),
        (
            r#"key = "global"
actions = ["CreateApiKey"]
quota = { per = "1h", requests = 1 }"#,
            "ratelimit: limit `l1`: `actions` is only allowed with key `principal_action`, not `global`",
        ),
        (
            r#"key = "principal_action"
actions = []
quota = { per = "1h", requests = 1 }"#,
            "`actions` must name at least one action",
        ),
        (
            r#"key = "principal"
match = {}
quota = { per = "1h", requests = 1 }"#,
            "`match` must name at least one principal or group",
        ),
        (
            r#"key = "global"
match = { groups = ["x"] }
quota = { per = "1h", requests = 1 }"#,
            "`match` is not allowed with key `global`",
        ),
        (
            r#"key = "global"
quota = { per = "hourly", requests = 1 }"#,
            "ratelimit: limit `l1`: quota.per `hourly` is not a duration like `1s`",
        ),
        (
            r#"key = "global"
quota = { per = "1s", requests = 4000000000 }"#,
            "finer than 1ns",
        ),
        (
            r#"key = "global"
quota = { per = "1h", requests = 1, burts = 2 }"#,
            "unknown field `burts`",
        ),
    ];
    for (fields, expected) in cases {
        let message = config_error(&one_limit(fields));
        assert!(message.contains(expected), "{fields}\n=> {message}");
    }
}

#[test]
fn unknown_action_name_is_refused_listing_the_known_ones() {
    let message = config_error(&one_limit(
        "key = \"principal_action\"\nactions = [\"CreateApiKeys\"]\nquota = { per = \"1h\", requests = 1 }",
    ));
    assert!(
        message
            .starts_with("ratelimit: limit `l1`: unknown action `CreateApiKeys`, expected one of "),
        "{message}"
    );
    for action in ALL_ACTIONS {
        assert!(message.contains(action.as_str()), "{message}");
    }
}

#[test]
fn duplicate_and_malformed_ids_are_rejected() {
    let limit = one_limit("key = \"global\"\nquota = { per = \"1h\", requests = 1 }");
    assert_eq!(
        config_error(&format!("{limit}{limit}")),
        "ratelimit: limit id `l1` is used twice"
    );
    let message = config_error(&limit.replace("\"l1\"", "\"has space\""));
    assert!(
        message.starts_with("ratelimit: limit id `has space` must be"),
        "{message}"
    );
    let message = config_error(&limit.replace("\"l1\"", "\"\""));
    assert_eq!(message, "ratelimit: limit #0: `id` must not be empty");
}

#[test]
fn unknown_fields_are_rejected() {
    let message = config_error(&one_limit(
        "key = \"global\"\nquota = { per = \"1h\", requests = 1, burts = 2 }",
    ));
    assert!(message.contains("unknown field `burts`"), "{message}");
}

#[test]
fn too_many_limits_are_rejected() {
    let many: String = (0..=MAX_LIMITS)
        .map(|i| format!("[[limits]]\nid = \"l{i}\"\nkey = \"global\"\nquota = {{ per = \"1h\", requests = 1 }}\n"))
        .collect();
    assert_eq!(
        config_error(&many),
        format!(
            "ratelimit: {} limits configured, at most {MAX_LIMITS} are supported",
            MAX_LIMITS + 1
        )
    );
}

#[test]
fn the_most_limits_allowed_all_apply() {
    let many: String = (0..MAX_LIMITS)
        .map(|i| {
            let requests = if i == MAX_LIMITS - 1 { 1 } else { 100 };
            format!("[[limits]]\nid = \"l{i}\"\nkey = \"principal\"\nquota = {{ per = \"1h\", requests = {requests} }}\n")
        })
        .collect();
    let (limiter, _clock) = limiter(&many);
    limiter.check(&who("sa-1"), None).unwrap();
    let last = format!("l{}", MAX_LIMITS - 1);
    assert_eq!(
        limiter.check(&who("sa-1"), None).unwrap_err().limit_id(),
        last
    );
}

#[test]
fn all_actions_are_listed_in_index_order() {
    for (i, action) in ALL_ACTIONS.into_iter().enumerate() {
        assert_eq!(usize::from(action_index(action)), i, "{action}");
    }
}

// === sharing ===

#[test]
fn production_limiter_is_shareable_across_tasks() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<RateLimiter>();
    shareable::<RateLimited>();
}

#[test]
fn concurrent_callers_never_exceed_the_burst() {
    let (limiter, _clock) = limiter(&toml(&[
        Limit::new("per-principal", "principal", "1h", 1000),
        Limit::new("org", "global", "1h", 100),
    ]));
    let total: usize = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|t| {
                let limiter = &limiter;
                scope.spawn(move || {
                    let id = format!("sa-{t}");
                    allowed(limiter, &who(&id), Some(Action::ListApiKeys), 1000)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    assert_eq!(total, 100);
}
