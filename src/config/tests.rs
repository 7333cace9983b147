use super::*;

/// The smallest valid config: authorization data from the shipped example files.
const MINIMAL: &str = "[authz]\norg_id = \"4f8c2a1e-6b3d-4e7a-9c5f-1d2e3f4a5b6c\"\nbindings = \"policies/role-bindings.toml\"\ninventory = \"policies/inventory.toml\"\n";

fn with_minimal(text: &str) -> String {
    format!("{MINIMAL}{text}")
}

#[test]
fn empty_file_gives_safe_defaults() {
    let c = Config::from_toml(MINIMAL).unwrap();
    assert_eq!(c.listener.address.to_string(), "127.0.0.1:8080");
    assert_eq!(c.admin.address.to_string(), "127.0.0.1:9901");
    assert_eq!(c.upstream.url.to_string(), "https://api.confluent.cloud/");
    assert!(c.listener.tls.is_none());
    assert_eq!(c.log.format, LogFormat::Json);
    assert!(c.log.access_log);
}

#[test]
fn full_file_is_typed() {
    let c = Config::from_toml(&with_minimal(
        r#"
        [listener]
        address = "127.0.0.1:0"
        header_read_timeout = "2s"
        max_header_bytes = 16384
        shutdown_grace = "500ms"
        tls = { cert = "c.pem", key = "k.pem" }
        [upstream]
        url = "http://127.0.0.1:9"
        connect_timeout = "1s"
        request_timeout = "3s"
        idle_timeout = "10s"
        [limits]
        max_body_bytes = 1024
        [log]
        format = "text"
        level = "keygate=debug"
        access_log = false
        [runtime]
        worker_threads = 1
        "#,
    ))
    .unwrap();
    assert_eq!(c.listener.header_read_timeout, Duration::from_secs(2));
    assert_eq!(c.listener.shutdown_grace, Duration::from_millis(500));
    assert_eq!(c.upstream.request_timeout, Duration::from_secs(3));
    assert_eq!(c.limits.max_body_bytes, 1024);
    assert_eq!(c.runtime.worker_threads.map(|n| n.get()), Some(1));
    assert_eq!(c.listener.tls.unwrap().cert, PathBuf::from("c.pem"));
}

fn field_of(text: &str) -> String {
    let err = Config::from_toml(&with_minimal(text)).unwrap_err();
    err.field_path().unwrap_or("").to_string()
}

#[test]
fn unknown_field_is_named_with_its_table() {
    let err = Config::from_toml("[upstream]\nurll = \"x\"\n").unwrap_err();
    assert_eq!(err.field_path(), Some("upstream.urll"));
    assert!(err.to_string().contains("unknown field `urll`"), "{err}");
}

#[test]
fn unknown_table_is_rejected() {
    assert_eq!(
        field_of("[listner]\naddress = \"127.0.0.1:1\"\n"),
        "listner"
    );
}

#[test]
fn bad_values_name_their_field() {
    assert_eq!(
        field_of("[listener]\naddress = \"localhost\"\n"),
        "listener.address"
    );
    assert_eq!(field_of("[upstream]\nurl = \"ftp://x\"\n"), "upstream.url");
    assert_eq!(
        field_of("[upstream]\nurl = \"https://x/iam\"\n"),
        "upstream.url"
    );
    assert_eq!(
        field_of("[upstream]\nrequest_timeout = \"soon\"\n"),
        "upstream.request_timeout"
    );
    assert_eq!(
        field_of("[upstream]\nconnect_timeout = \"0s\"\n"),
        "upstream.connect_timeout"
    );
    assert_eq!(
        field_of("[limits]\nmax_body_bytes = 0\n"),
        "limits.max_body_bytes"
    );
    assert_eq!(field_of("[log]\nformat = \"xml\"\n"), "log.format");
    assert_eq!(
        field_of("[listener]\nmax_header_bytes = 10\n"),
        "listener.max_header_bytes"
    );
    assert_eq!(
        field_of("[listener]\nmax_header_bytes = \"big\"\n"),
        "listener.max_header_bytes"
    );
}

#[test]
fn link_rewriting_fields_are_validated() {
    let c = Config::from_toml(MINIMAL).unwrap();
    assert!(c.upstream.rewrite_links);
    assert!(c.upstream.link_origins.is_empty());
    assert!(c.listener.public_url.is_none());
    let c = Config::from_toml(&with_minimal(
        "[listener]\npublic_url = \"https://keygate.corp:8443\"\n[upstream]\nrewrite_links = false\nlink_origins = [\"https://API.confluent.cloud\"]\n",
    ))
    .unwrap();
    assert_eq!(
        c.listener.public_url.unwrap().to_string(),
        "https://keygate.corp:8443/"
    );
    assert!(!c.upstream.rewrite_links);
    assert_eq!(c.upstream.link_origins, ["https://api.confluent.cloud"]);
    for bad in [
        "[listener]\npublic_url = \"keygate.corp\"\n",
        "[listener]\npublic_url = \"https://keygate.corp/prefix\"\n",
        "[listener]\npublic_url = \"ftp://keygate.corp\"\n",
    ] {
        assert_eq!(field_of(bad), "listener.public_url", "{bad}");
    }
    assert_eq!(
        field_of("[upstream]\nlink_origins = []\n"),
        "upstream.link_origins"
    );
    assert_eq!(
        field_of("[upstream]\nlink_origins = [\"https://x/y\"]\n"),
        "upstream.link_origins"
    );
}

#[test]
fn error_line_names_file_and_field() {
    let err = ConfigError::field("upstream.url", "bad").in_file(Path::new("k.toml"));
    assert_eq!(err.to_string(), "k.toml: `upstream.url`: bad");
}

#[test]
fn syntax_error_is_one_line() {
    let err = Config::from_toml("[listener\n").unwrap_err();
    assert!(!err.to_string().contains('\n'), "{err}");
}

#[test]
fn toml_errors_keep_position_and_cause_on_one_line() {
    let err = Config::from_toml("[listener\n").unwrap_err();
    let text = err.to_string();
    assert!(text.contains("line 1, column 10"), "{text}");
    assert!(text.contains("unclosed table"), "{text}");
}

#[test]
fn org_id_is_required() {
    let err = Config::from_toml("").unwrap_err();
    assert_eq!(err.field_path(), Some("authz.org_id"));
}

#[test]
fn upstream_sourced_authz_needs_a_credential() {
    let err = Config::from_toml("[authz]\norg_id = \"4f8c2a1e-6b3d-4e7a-9c5f-1d2e3f4a5b6c\"\n")
        .unwrap_err();
    assert_eq!(err.field_path(), Some("authz.bindings"));
}

#[test]
fn credential_is_read_from_the_named_variable_and_never_shown() {
    let mut env = std::collections::HashMap::new();
    env.insert("KG_CRED".to_string(), "KEY1:cfltSECRET\n".to_string());
    let text = "[authz]\norg_id = \"4f8c2a1e-6b3d-4e7a-9c5f-1d2e3f4a5b6c\"\n[upstream.credential]\nenv = \"KG_CRED\"\n";
    let c = Config::from_toml_with_env(text, &env).unwrap();
    let cred = c.upstream.credential.as_ref().unwrap();
    assert_eq!(cred.expose(), "KEY1:cfltSECRET");
    assert!(!format!("{c:?}").contains("cfltSECRET"));

    let missing = Config::from_toml_with_env(text, &std::collections::HashMap::new()).unwrap_err();
    assert_eq!(missing.field_path(), Some("upstream.credential.env"));
    env.insert("KG_CRED".to_string(), "no-colon".to_string());
    let bad = Config::from_toml_with_env(text, &env).unwrap_err();
    assert!(!bad.to_string().contains("no-colon"), "{bad}");
}

#[test]
fn audit_and_identity_sections_validate() {
    let c = Config::from_toml(&with_minimal(
        "[audit]\nfile = \"a.jsonl\"\nfile_mode = \"async\"\nstdout = true\n[identity]\nsource = \"directory\"\ndirectory = \"keys.toml\"\n",
    ))
    .unwrap();
    assert_eq!(c.audit.file.unwrap().mode, crate::audit::FileMode::Async);
    assert_eq!(
        c.identity.source,
        IdentitySource::Directory(PathBuf::from("keys.toml"))
    );
    assert_eq!(
        field_of("[audit]\nfile_mode = \"blocking\"\n"),
        "audit.file_mode"
    );
    assert_eq!(
        field_of("[audit]\nwebhook = \"ftp://x\"\n"),
        "audit.webhook"
    );
    assert_eq!(
        field_of("[identity]\nsource = \"directory\"\n"),
        "identity.directory"
    );
    assert_eq!(
        field_of("[identity]\nsource = \"ldap\"\n"),
        "identity.source"
    );
}

#[test]
fn relative_paths_are_relative_to_the_config_files_directory() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("etc");
    std::fs::create_dir(&sub).unwrap();
    let file = sub.join("keygate.toml");
    std::fs::write(
        &file,
        r#"
[listener.tls]
cert = "tls/cert.pem"
key = "/abs/key.pem"
[upstream]
ca_file = "ca.pem"
[upstream.credential]
file = "credential"
[identity]
source = "directory"
directory = "keys.toml"
[authz]
org_id = "4f8c2a1e-6b3d-4e7a-9c5f-1d2e3f4a5b6c"
bindings = "data/role-bindings.toml"
inventory = "upstream"
[audit]
file = "audit.jsonl"
[policy]
dir = "rules"
"#,
    )
    .unwrap();
    let c = Config::load_without_secrets(&file).unwrap();
    let tls = c.listener.tls.as_ref().unwrap();
    assert_eq!(tls.cert, sub.join("tls/cert.pem"));
    assert_eq!(tls.key, PathBuf::from("/abs/key.pem"));
    assert_eq!(c.upstream.ca_file, Some(sub.join("ca.pem")));
    assert_eq!(
        c.upstream.credential_source,
        Some(CredentialSource::File(sub.join("credential")))
    );
    assert_eq!(
        c.identity.source,
        IdentitySource::Directory(sub.join("keys.toml"))
    );
    // The default matrix too: `policies/matrix.toml` beside the config file.
    assert_eq!(c.authz.matrix, sub.join("policies/matrix.toml"));
    assert_eq!(
        c.authz.bindings,
        DataSource::File(sub.join("data/role-bindings.toml"))
    );
    assert_eq!(c.authz.inventory, DataSource::Upstream);
    assert_eq!(c.audit.file.unwrap().path, sub.join("audit.jsonl"));
    let policy = c.policy.unwrap();
    assert_eq!(policy.dir, sub.join("rules"));
    assert_eq!(policy.schema_path(), sub.join("rules/keygate.cedarschema"));

    // Text without a file: relative to the working directory, as written.
    let c = Config::from_toml(MINIMAL).unwrap();
    assert_eq!(c.authz.matrix, PathBuf::from("policies/matrix.toml"));
}

#[test]
fn a_config_loads_without_reading_its_credential_and_reads_it_on_demand() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keygate.toml");
    let text = "[authz]\norg_id = \"4f8c2a1e-6b3d-4e7a-9c5f-1d2e3f4a5b6c\"\n[upstream.credential]\nenv = \"KEYGATE_TEST_CREDENTIAL_NEVER_SET\"\n";
    std::fs::write(&file, text).unwrap();
    // `serve` reads it and refuses to start without it …
    let err = Config::load(&file).unwrap_err();
    assert_eq!(err.field_path(), Some("upstream.credential.env"));
    assert!(err.to_string().contains("keygate.toml"), "{err}");
    // … `check` only needs it configured.
    let mut c = Config::load_without_secrets(&file).unwrap();
    assert!(c.upstream.credential.is_none());
    assert_eq!(
        c.upstream.credential_source,
        Some(CredentialSource::Env(
            "KEYGATE_TEST_CREDENTIAL_NEVER_SET".into()
        ))
    );
    let mut env = std::collections::HashMap::new();
    let err = c.resolve_credential(&env).unwrap_err();
    assert_eq!(err.field_path(), Some("upstream.credential.env"));
    env.insert(
        "KEYGATE_TEST_CREDENTIAL_NEVER_SET".to_string(),
        "K:S".to_string(),
    );
    c.resolve_credential(&env).unwrap();
    assert_eq!(c.upstream.credential.unwrap().expose(), "K:S");

    // Upstream-sourced data still needs a credential to be configured at all.
    std::fs::write(
        &file,
        "[authz]\norg_id = \"4f8c2a1e-6b3d-4e7a-9c5f-1d2e3f4a5b6c\"\n",
    )
    .unwrap();
    let err = Config::load_without_secrets(&file).unwrap_err();
    assert_eq!(err.field_path(), Some("authz.bindings"));
}

#[test]
fn org_id_must_be_a_uuid() {
    for bad in ["my-org", "env-prod01", "4f8c2a1e6b3d4e7a9c5f1d2e3f4a5b6c"] {
        let err = Config::from_toml(&format!(
            "[authz]\norg_id = \"{bad}\"\nbindings = \"b.toml\"\ninventory = \"i.toml\"\n"
        ))
        .unwrap_err();
        assert_eq!(err.field_path(), Some("authz.org_id"), "{bad}");
        assert!(err.to_string().contains("UUID"), "{err}");
    }
}

#[test]
fn egress_is_off_by_default_and_sessions_resolve_on_confluents_web_host() {
    let c = Config::from_toml(MINIMAL).unwrap();
    assert!(c.egress.is_none());
    assert_eq!(c.upstream.web_url.to_string(), "https://confluent.cloud/");
}

#[test]
fn egress_section_is_typed_and_proxy_auth_directory_needs_the_identity_directory() {
    let c = Config::from_toml(&with_minimal(
        "[egress]\naddress = \"127.0.0.1:3128\"\ncert = \"leaf.pem\"\nkey = \"leaf.key\"\n\
         connect_timeout = \"2s\"\nallow_destinations = [\"10.0.0.0/8\"]\n",
    ))
    .unwrap();
    let egress = c.egress.unwrap();
    assert_eq!(egress.address.to_string(), "127.0.0.1:3128");
    assert_eq!(egress.connect_timeout, Duration::from_secs(2));
    assert!(egress.allow_destinations[0].contains("10.9.8.7".parse().unwrap()));
    let err = Config::from_toml(&with_minimal(
        "[egress]\naddress = \"127.0.0.1:3128\"\ncert = \"a\"\nkey = \"b\"\nproxy_auth = \"directory\"\n",
    ))
    .unwrap_err();
    assert_eq!(err.field_path(), Some("egress.proxy_auth"));
    let err = Config::from_toml(&with_minimal(
        "[egress]\naddress = \"127.0.0.1:3128\"\ncert = \"a\"\nkey = \"b\"\nallow_destinations = [\"nope\"]\n",
    ))
    .unwrap_err();
    assert_eq!(err.field_path(), Some("egress.allow_destinations"));
}

#[test]
fn reconcile_quota_and_webhook_spool_validate() {
    let mut env = std::collections::HashMap::new();
    env.insert("KG_CRED".to_string(), "KEY1:cfltSECRET".to_string());
    let base = format!("{MINIMAL}[upstream.credential]\nenv = \"KG_CRED\"\n");
    let ok = |extra: &str| Config::from_toml_with_env(&format!("{base}{extra}"), &env);
    let field = |extra: &str| {
        ok(extra)
            .unwrap_err()
            .field_path()
            .map(str::to_owned)
            .unwrap_or_default()
    };

    let c = ok(
        "[audit]\nfile = \"a.jsonl\"\n[reconcile]\ninterval = \"5m\"\ngrace = \"0s\"\n\
                [quota]\nkafka_keys_per_cluster = 2000\nmode = \"dry-run\"\n",
    )
    .unwrap();
    let reconcile = c.reconcile.unwrap();
    assert_eq!(
        reconcile.interval,
        Some(std::time::Duration::from_secs(300))
    );
    assert_eq!(reconcile.grace, std::time::Duration::ZERO);
    let quota = c.quota.unwrap();
    assert_eq!(quota.kafka_keys_per_cluster, 2000);
    assert_eq!(quota.warn_ratio, validate::DEFAULT_QUOTA_WARN_RATIO);
    assert_eq!(quota.mode, crate::policy::quota::QuotaMode::DryRun);
    // Without a [reconcile] table: no reconcile, no quota.
    let c = ok("").unwrap();
    assert!(c.reconcile.is_none() && c.quota.is_none());
    assert_eq!(
        ok("[audit]\nfile = \"a.jsonl\"\n[reconcile]\n")
            .unwrap()
            .reconcile
            .unwrap()
            .grace,
        crate::reconcile::DEFAULT_GRACE
    );

    // Reconcile needs the trail and keygate's credential; the quota guard needs the listing.
    assert_eq!(field("[reconcile]\ninterval = \"5m\"\n"), "reconcile");
    let no_credential = Config::from_toml(&format!(
        "{MINIMAL}[audit]\nfile = \"a.jsonl\"\n[reconcile]\n"
    ))
    .unwrap_err();
    assert_eq!(no_credential.field_path(), Some("reconcile"));
    assert_eq!(
        field("[audit]\nfile = \"a.jsonl\"\n[quota]\nkafka_keys_per_cluster = 10\n"),
        "quota"
    );
    let with_listing = "[audit]\nfile = \"a.jsonl\"\n[reconcile]\ninterval = \"1m\"\n[quota]\n";
    assert_eq!(field(with_listing), "quota.kafka_keys_per_cluster");
    assert_eq!(
        field(&format!("{with_listing}kafka_keys_per_cluster = 0\n")),
        "quota.kafka_keys_per_cluster"
    );
    assert_eq!(
        field(&format!(
            "{with_listing}kafka_keys_per_cluster = 5\nwarn_ratio = 1.5\n"
        )),
        "quota.warn_ratio"
    );
    assert_eq!(
        field(&format!(
            "{with_listing}kafka_keys_per_cluster = 5\nmode = \"on\"\n"
        )),
        "quota.mode"
    );
    assert_eq!(
        field("[audit]\nfile = \"a.jsonl\"\n[reconcile]\ninterval = \"0s\"\n"),
        "reconcile.interval"
    );

    // The webhook spool: beside the audit file by default, or where configured.
    let c = ok(
        "[audit]\nfile = \"/var/lib/keygate/audit.jsonl\"\nwebhook = \"https://siem.example/\"\n",
    )
    .unwrap();
    assert_eq!(
        c.audit.webhook_spool.as_deref(),
        Some(std::path::Path::new(
            "/var/lib/keygate/audit.jsonl-webhook-spool"
        ))
    );
    let c = ok("[audit]\nwebhook = \"https://siem.example/\"\n").unwrap();
    assert!(c.audit.webhook_spool.is_none(), "in memory without a file");
    assert_eq!(
        field("[audit]\nwebhook_spool = \"spool\"\n"),
        "audit.webhook_spool"
    );
}
