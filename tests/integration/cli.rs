//! The real binary: exit codes and messages.

use std::process::Command;

fn keygate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_keygate"))
}

#[test]
fn bad_config_is_one_line_naming_file_and_field_with_exit_78() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keygate.toml");
    std::fs::write(&path, "[upstream]\nurl = \"ftp://nope\"\n").unwrap();
    let out = keygate()
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("keygate.toml"), "{stderr}");
    assert!(stderr.contains("`upstream.url`"), "{stderr}");
}

#[test]
fn unknown_field_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.toml");
    std::fs::write(&path, "[listener]\nadress = \"127.0.0.1:1\"\n").unwrap();
    let out = keygate()
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("`listener.adress`") && stderr.contains("unknown field"),
        "{stderr}"
    );
}

#[test]
fn missing_config_file_is_a_config_error() {
    let out = keygate()
        .args(["serve", "--config", "/nonexistent/keygate.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
}

// === check agrees with serve ===

/// A config in a temp dir that `serve` would start with: TLS, an audit file, the shipped matrix,
/// bindings, inventory and policies (by absolute path), no credential.
struct Setup {
    dir: tempfile::TempDir,
    _pki: crate::support::certs::TestPki,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let pki = crate::support::certs::TestPki::new();
        std::fs::copy(pki.cert_file(), dir.path().join("cert.pem")).unwrap();
        std::fs::copy(pki.key_file(), dir.path().join("key.pem")).unwrap();
        std::fs::create_dir(dir.path().join("audit")).unwrap();
        let policies = std::fs::canonicalize("policies").unwrap();
        let example = std::fs::read_to_string("policies/policy.example.toml")
            .unwrap()
            .replace(
                "dir = \"policies\"",
                &format!("dir = \"{}\"", policies.display()),
            )
            .replace(
                "teams_dir = \"policies/teams\"",
                &format!("teams_dir = \"{}/teams\"", policies.display()),
            );
        // Relative paths: they resolve against this file's directory, wherever keygate runs.
        let text = format!(
            r#"
[listener]
address = "127.0.0.1:0"
[listener.tls]
cert = "cert.pem"
key = "key.pem"
[admin]
address = "127.0.0.1:0"
[authz]
org_id = "{org}"
matrix = "{p}/matrix.toml"
bindings = "{p}/role-bindings.toml"
inventory = "{p}/inventory.toml"
[audit]
file = "audit/audit.jsonl"
{example}"#,
            org = crate::support::ORG_ID,
            p = policies.display()
        );
        std::fs::write(dir.path().join("keygate.toml"), text).unwrap();
        Setup { dir, _pki: pki }
    }

    fn config(&self) -> std::path::PathBuf {
        self.dir.path().join("keygate.toml")
    }

    fn edit(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(self.config()).unwrap();
        assert!(text.contains(from), "{from} not in the config");
        std::fs::write(self.config(), text.replacen(from, to, 1)).unwrap();
    }

    /// `keygate check` from another directory: (exit code, stdout).
    fn check(&self) -> (Option<i32>, String) {
        let elsewhere = tempfile::tempdir().unwrap();
        let out = keygate()
            .current_dir(elsewhere.path())
            .arg("check")
            .arg("--config")
            .arg(self.config())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// `keygate serve` that is expected to refuse to start: (exit code, stderr).
    fn serve_refused(&self) -> (Option<i32>, String) {
        let out = keygate()
            .arg("serve")
            .arg("--config")
            .arg(self.config())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

#[test]
fn check_passes_a_servable_config_from_any_directory_without_secrets() {
    let setup = Setup::new();
    let (code, out) = setup.check();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("listener TLS: ok"), "{out}");
    assert!(out.contains("audit file: ok"), "{out}");
    assert!(out.contains("all checks passed"), "{out}");
}

#[test]
fn what_stops_serve_stops_check_and_serve_says_it_in_one_line_with_exit_78() {
    let garbage = "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n";
    type Breaks<'a> = &'a dyn Fn(&Setup);
    let cases: [(&str, Breaks, &str); 7] = [
        (
            "missing certificate",
            &|s| s.edit("cert = \"cert.pem\"", "cert = \"nope.pem\""),
            "listener.tls.cert",
        ),
        (
            "empty certificate",
            &|s| std::fs::write(s.dir.path().join("cert.pem"), "").unwrap(),
            "listener.tls.cert",
        ),
        (
            "garbage certificate",
            &|s| std::fs::write(s.dir.path().join("cert.pem"), garbage).unwrap(),
            "listener.tls.cert",
        ),
        (
            "missing key",
            &|s| std::fs::remove_file(s.dir.path().join("key.pem")).unwrap(),
            "listener.tls.key",
        ),
        (
            "audit directory that does not exist",
            &|s| s.edit("audit/audit.jsonl", "no-such-dir/audit.jsonl"),
            "audit.file",
        ),
        (
            "missing matrix",
            &|s| s.edit("/matrix.toml", "/no-such-matrix.toml"),
            "authz.matrix",
        ),
        (
            "missing policy directory",
            &|s| s.edit("/policies\"\n", "/no-such-policies\"\n"),
            "policy",
        ),
    ];
    for (what, break_it, field) in cases {
        let setup = Setup::new();
        break_it(&setup);
        let (code, out) = setup.check();
        assert_eq!(code, Some(1), "check, {what}: {out}");
        // Policy problems are printed as the policy file's own `file:line:` lines.
        let needle = if field == "policy" {
            "no-such-policies"
        } else {
            field
        };
        assert!(out.contains(needle), "check, {what}: {out}");

        let (code, err) = setup.serve_refused();
        assert_eq!(code, Some(78), "serve, {what}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "serve, {what}: {err}");
        assert!(err.contains("keygate.toml"), "serve, {what}: {err}");
        assert!(err.contains(&format!("`{field}")), "serve, {what}: {err}");
    }
}
