//! The `[policy]` config section: types, params, paths.

use std::collections::HashMap;
use std::path::Path;

use super::*;

#[test]
fn config_toml_types_params_and_resolves_paths() {
    let cfg = OrgPolicyConfig::from_toml_str(
        "[other]\nx = 1\n[policy]\ndir = \"p\"\n[policy.params]\na = \"s\"\nb = 3\nc = true\nd = [\"x\"]\ne = [1, 2]\n",
        Path::new("/etc/keygate"),
    )
    .unwrap();
    assert_eq!(cfg.dir, Path::new("/etc/keygate/p"));
    assert_eq!(
        cfg.schema_path(),
        Path::new("/etc/keygate/p/keygate.cedarschema")
    );
    let params: HashMap<_, _> = cfg.params.into_iter().collect();
    assert_eq!(params["a"], ParamValue::String("s".into()));
    assert_eq!(params["b"], ParamValue::Long(3));
    assert_eq!(params["c"], ParamValue::Bool(true));
    assert_eq!(params["d"], ParamValue::StringSet(vec!["x".into()]));
    assert_eq!(params["e"], ParamValue::LongSet(vec![1, 2]));

    let errors =
        OrgPolicyConfig::from_toml_str("[policy.params]\nmixed = [1, \"a\"]\n", Path::new("/"))
            .unwrap_err();
    assert_eq!(
        errors[0].to_string().split(':').next(),
        Some("config `policy.params.mixed`")
    );
    assert!(OrgPolicyConfig::from_toml_str("[policy]\ndri = \"x\"\n", Path::new("/")).is_err());
}
