use super::*;

const NOW: i64 = 1_800_000_000;
const GRACE: i64 = 60;

fn key(id: &str, owner: &str, resource: &str, name: &str, created: i64) -> UpstreamKey {
    UpstreamKey {
        id: id.into(),
        owner: owner.into(),
        resource: resource.into(),
        environment: None,
        display_name: name.into(),
        created_at: format!("t{created}").into(),
        created_unix: created,
    }
}

fn listing(keys: &[UpstreamKey]) -> Listing {
    Listing {
        keys: keys.iter().map(|k| (k.id.clone(), k.clone())).collect(),
        skipped: 0,
    }
}

fn managed(owner: &str, resource: &str, created: i64) -> Managed {
    Managed {
        owner: owner.into(),
        resource: resource.into(),
        environment: None,
        created: format!("t{created}").into(),
        created_unix: created,
    }
}

fn pending(owner: &str, resource: &str, name: Option<&str>, time: i64) -> Pending {
    Pending {
        owner: owner.into(),
        resource: resource.into(),
        environment: None,
        display_name: name.map(Into::into),
        time: format!("t{time}").into(),
        time_unix: time,
    }
}

fn run(state: &State, listing: &Listing, baseline: &[&str]) -> Vec<Finding> {
    let baseline: HashSet<Box<str>> = baseline.iter().map(|b| Box::from(*b)).collect();
    find(&Inputs {
        state,
        listing,
        baseline: &baseline,
        now: NOW,
        grace: GRACE,
    })
}

fn kinds(findings: &[Finding]) -> Vec<(&'static str, String)> {
    findings
        .iter()
        .map(|f| {
            let id = match f {
                Finding::Unmanaged(k) => k.id.to_string(),
                Finding::Vanished { key_id, .. } => key_id.to_string(),
                Finding::Unresolved {
                    request_id,
                    matched,
                    ..
                } => format!(
                    "{request_id}->{}",
                    matched.as_ref().map_or("none", |k| &k.id)
                ),
            };
            (f.kind(), id)
        })
        .collect()
}

#[test]
fn keys_keygate_did_not_create_are_unmanaged_unless_baseline_reported_or_too_new() {
    let mut state = State::new();
    state
        .managed
        .insert("MINE".into(), managed("sa-1", "lkc-1", NOW - 1000));
    state.unmanaged.insert("SEEN".into());
    let listing = listing(&[
        key("MINE", "sa-1", "lkc-1", "", NOW - 1000),
        key("CONSOLE", "sa-1", "lkc-1", "", NOW - 1000),
        key("OLD", "sa-1", "cloud", "", 0),
        key("SEEN", "sa-2", "lkc-1", "", NOW - 1000),
        key("FRESH", "sa-2", "lkc-1", "", NOW - 10),
    ]);
    let found = run(&state, &listing, &["OLD"]);
    assert_eq!(kinds(&found), [("unmanaged", "CONSOLE".to_owned())]);
}

#[test]
fn keygate_keys_gone_upstream_vanished_unless_too_new() {
    let mut state = State::new();
    state
        .managed
        .insert("GONE".into(), managed("sa-1", "lkc-1", NOW - 1000));
    state
        .managed
        .insert("JUST".into(), managed("sa-1", "lkc-1", NOW - 5));
    state
        .managed
        .insert("HERE".into(), managed("sa-1", "lkc-1", NOW - 1000));
    let listing = listing(&[key("HERE", "sa-1", "lkc-1", "", NOW - 1000)]);
    let found = run(&state, &listing, &[]);
    assert_eq!(kinds(&found), [("vanished", "GONE".to_owned())]);
}

#[test]
fn an_unresolved_create_is_matched_by_owner_resource_name_and_time() {
    let mut state = State::new();
    let t = NOW - 600;
    state
        .pending
        .insert("req-1".into(), pending("sa-1", "lkc-1", Some("orders"), t));
    let listing = listing(&[
        // The match: same owner, resource and name, created just after the request.
        key("MATCH", "sa-1", "lkc-1", "orders", t + 1),
        // Same owner and resource, other name; other owner; long before; too long after.
        key("NAME", "sa-1", "lkc-1", "payments", t + 1),
        key("OWNER", "sa-2", "lkc-1", "orders", t + 1),
        key("BEFORE", "sa-1", "lkc-1", "orders", t - 3600),
    ]);
    let found = run(&state, &listing, &[]);
    assert_eq!(
        kinds(&found),
        [
            ("unresolved", "req-1->MATCH".to_owned()),
            ("unmanaged", "BEFORE".to_owned()),
            ("unmanaged", "NAME".to_owned()),
            ("unmanaged", "OWNER".to_owned()),
        ]
    );
    let Finding::Unresolved { candidates, .. } = &found[0] else {
        panic!()
    };
    assert_eq!(*candidates, 1);
}

#[test]
fn two_unresolved_creates_claim_different_keys_closest_in_time_first() {
    let mut state = State::new();
    let t = NOW - 600;
    state
        .pending
        .insert("req-a".into(), pending("sa-1", "lkc-1", None, t));
    state
        .pending
        .insert("req-b".into(), pending("sa-1", "lkc-1", None, t + 100));
    let listing = listing(&[
        key("K1", "sa-1", "lkc-1", "", t + 2),
        key("K2", "sa-1", "lkc-1", "", t + 101),
    ]);
    let found = run(&state, &listing, &[]);
    assert_eq!(
        kinds(&found),
        [
            ("unresolved", "req-a->K1".to_owned()),
            ("unresolved", "req-b->K2".to_owned()),
        ]
    );
    let Finding::Unresolved { candidates, .. } = &found[0] else {
        panic!()
    };
    assert_eq!(*candidates, 2, "both keys could have been req-a's");
}

#[test]
fn a_create_in_flight_is_no_finding_and_its_key_is_not_unmanaged() {
    let mut state = State::new();
    state
        .pending
        .insert("req-1".into(), pending("sa-1", "lkc-1", None, NOW - 30));
    // Old enough to judge, but (within the clock skew) possibly the create's own key.
    let listing = listing(&[key("NEW", "sa-1", "lkc-1", "", NOW - 85)]);
    assert!(run(&state, &listing, &[]).is_empty());
}

#[test]
fn an_unresolved_create_without_a_key_upstream_is_reported_unmatched() {
    let mut state = State::new();
    state
        .pending
        .insert("req-1".into(), pending("sa-1", "lkc-1", None, NOW - 600));
    let found = run(&state, &listing(&[]), &[]);
    assert_eq!(kinds(&found), [("unresolved", "req-1->none".to_owned())]);
}
