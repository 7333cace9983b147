use super::*;
use crate::policy::inventory::InventoryBuilder;

fn inventory() -> Inventory {
    let mut b = InventoryBuilder::new();
    b.environment("env-a").unwrap();
    b.kafka_cluster_of_kind("lkc-ded", "env-a", Some(ClusterKind::Dedicated))
        .unwrap();
    b.kafka_cluster_of_kind("lkc-ent", "env-a", Some(ClusterKind::Enterprise))
        .unwrap();
    b.kafka_cluster_of_kind("lkc-basic", "env-a", Some(ClusterKind::Basic))
        .unwrap();
    b.kafka_cluster_of_kind("lkc-std", "env-a", Some(ClusterKind::Standard))
        .unwrap();
    b.kafka_cluster("lkc-unknown", "env-a").unwrap();
    b.build()
}

fn counts(kafka: &[(&str, u64)], global: u64) -> Counts {
    Counts {
        kafka: kafka.iter().map(|(id, n)| (Box::from(*id), *n)).collect(),
        global,
    }
}

fn config(limit: u64) -> QuotaConfig {
    QuotaConfig {
        kafka_keys_per_cluster: limit,
        warn_ratio: 0.8,
        mode: QuotaMode::Enforce,
    }
}

#[test]
fn a_global_key_counts_against_dedicated_enterprise_freight_and_unknown_clusters_only() {
    let inv = inventory();
    let c = counts(&[("lkc-ded", 3), ("lkc-basic", 9)], 2);
    let loads = loads(&KeyScope::Global, &c, &inv);
    let ids: Vec<&str> = loads.iter().map(|l| l.id.as_str()).collect();
    assert_eq!(ids, ["lkc-ded", "lkc-ent", "lkc-unknown"]);
    assert_eq!(loads[0].keys, 5, "own keys plus the Global ones");
    assert_eq!(loads[1].keys, 2);
    assert_eq!(loads[2].kind_str(), "Unknown");
}

#[test]
fn a_kafka_key_counts_against_its_own_cluster_whatever_its_kind() {
    let inv = inventory();
    let c = counts(&[("lkc-basic", 9)], 4);
    let basic = loads(&KeyScope::of("lkc-basic"), &c, &inv);
    assert_eq!(basic.len(), 1);
    assert_eq!(
        basic[0].keys, 9,
        "Global keys do not count on a Basic cluster"
    );
    let dedicated = loads(&KeyScope::of("lkc-ded"), &c, &inv);
    assert_eq!(dedicated[0].keys, 4);
    assert!(loads(&KeyScope::of("lsrc-1"), &c, &inv).is_empty());
    assert!(loads(&KeyScope::of("cloud"), &c, &inv).is_empty());
}

#[test]
fn the_verdict_denies_past_the_quota_warns_near_it_and_names_the_clusters() {
    let inv = inventory();
    // A Dedicated cluster at its quota: a Global key would exceed it.
    let at_quota = counts(&[("lkc-ded", 10)], 0);
    let verdict = check(
        &config(10),
        &KeyScope::Global,
        &loads(&KeyScope::Global, &at_quota, &inv),
    );
    let Verdict::Exceeds(why) = verdict else {
        panic!("{verdict:?}")
    };
    assert!(
        why.contains("Dedicated cluster `lkc-ded` (10 keys)"),
        "{why}"
    );
    assert!(why.contains("quota of 10"), "{why}");
    assert!(!why.contains("lkc-ent"), "{why}");
    // Only Basic and Standard clusters are full: a Global key is fine.
    let basic_full = counts(&[("lkc-basic", 10), ("lkc-std", 10)], 0);
    assert_eq!(
        check(
            &config(10),
            &KeyScope::Global,
            &loads(&KeyScope::Global, &basic_full, &inv)
        ),
        Verdict::Allow
    );
    // ... but a Kafka key for the full Basic cluster is not.
    assert!(matches!(
        check(
            &config(10),
            &KeyScope::of("lkc-basic"),
            &loads(&KeyScope::of("lkc-basic"), &basic_full, &inv)
        ),
        Verdict::Exceeds(_)
    ));
    // 8 of 10 held, the 9th passes 0.8: a warning.
    let near = counts(&[("lkc-ded", 8)], 0);
    let Verdict::Warn(warning) = check(
        &config(10),
        &KeyScope::of("lkc-ded"),
        &loads(&KeyScope::of("lkc-ded"), &near, &inv),
    ) else {
        panic!("no warning")
    };
    assert!(warning.contains("`lkc-ded` (8 keys)"), "{warning}");
    // 7 held: the 8th is exactly at 0.8, no warning yet.
    let below = counts(&[("lkc-ded", 7)], 0);
    assert_eq!(
        check(
            &config(10),
            &KeyScope::of("lkc-ded"),
            &loads(&KeyScope::of("lkc-ded"), &below, &inv)
        ),
        Verdict::Allow
    );
}

#[test]
fn many_clusters_are_named_up_to_five() {
    let mut b = InventoryBuilder::new();
    b.environment("env-a").unwrap();
    for i in 0..8 {
        b.kafka_cluster_of_kind(&format!("lkc-{i}"), "env-a", Some(ClusterKind::Freight))
            .unwrap();
    }
    let inv = b.build();
    let c = counts(&[], 5);
    let Verdict::Exceeds(why) = check(
        &config(5),
        &KeyScope::Global,
        &loads(&KeyScope::Global, &c, &inv),
    ) else {
        panic!()
    };
    assert!(why.contains("3 more clusters"), "{why}");
    assert_eq!(why.matches("Freight cluster `").count(), 5, "{why}");
}

#[test]
fn the_ledger_counts_holds_until_settled_and_keeps_changes_over_a_listing() {
    let ledger = Ledger::new();
    assert!(
        ledger.counts().is_none(),
        "unknown before the first listing"
    );
    let t0 = Instant::now();
    ledger.replace(t0, [("K1", "lkc-a"), ("K2", "global"), ("K3", "cloud")]);
    let kafka = |l: &Ledger| {
        l.counts()
            .unwrap()
            .0
            .kafka
            .get("lkc-a")
            .copied()
            .unwrap_or(0)
    };
    let global = |l: &Ledger| l.counts().unwrap().0.global;
    assert_eq!((kafka(&ledger), global(&ledger)), (1, 1));

    // Allowed: counted at once; never forwarded: uncounted.
    let hold = ledger.reserve(KeyScope::Global);
    assert_eq!(global(&ledger), 2);
    drop(hold);
    assert_eq!(global(&ledger), 1);
    // Refused upstream: uncounted; succeeded or unknown: stays.
    ledger.reserve(KeyScope::Global).settle(Outcome::Refused);
    assert_eq!(global(&ledger), 1);
    ledger.reserve(KeyScope::Global).settle(Outcome::Succeeded);
    ledger
        .reserve(KeyScope::of("lkc-a"))
        .settle(Outcome::Unknown);
    assert_eq!((kafka(&ledger), global(&ledger)), (2, 2));
    // A delete counts only when confirmed, and only for a listed key.
    ledger.delete("K1").settle(Outcome::Refused);
    assert_eq!(kafka(&ledger), 2);
    ledger.delete("K1").settle(Outcome::Succeeded);
    ledger.delete("NOT-LISTED").settle(Outcome::Succeeded);
    assert_eq!(kafka(&ledger), 1);

    // A create in flight across a new listing stays counted once.
    let in_flight = ledger.reserve(KeyScope::Global);
    // A listing that started before the changes above sees none of them: they are re-applied.
    ledger.replace(t0, [("K1", "lkc-a"), ("K2", "global")]);
    assert_eq!((kafka(&ledger), global(&ledger)), (1, 3));
    in_flight.settle(Outcome::Succeeded);
    assert_eq!(global(&ledger), 3);
    // A listing that started after them has them already.
    ledger.replace(Instant::now(), [("K2", "global"), ("K9", "global")]);
    assert_eq!((kafka(&ledger), global(&ledger)), (0, 2));
}
