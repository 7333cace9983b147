//! `keygate explain`: every finding and the decision.

use super::*;
use crate::policy::org::tests::*;
use crate::policy::org::*;

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
