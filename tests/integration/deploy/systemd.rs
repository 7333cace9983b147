//! `deploy/systemd/`: the unit, checked by `systemd-analyze`, its example config, and the SIGHUP
//! reload its `ExecReload` relies on.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use keygate::config::Config;

use super::{read, repo, with_org};
use crate::support::{self, binary};

const UNIT: &str = "deploy/systemd/keygate.service";
const CONFIG: &str = "deploy/systemd/keygate.toml";
/// Where the unit expects the binary (the install steps in its header put it there).
const BINARY: &str = "/usr/local/bin/keygate";

/// The unit's `[Service]` settings: key → values in order (a key may repeat).
fn service_settings() -> BTreeMap<String, Vec<String>> {
    let mut section = String::new();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in read(UNIT).lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            section = line.to_string();
            continue;
        }
        if section == "[Service]" {
            let (key, value) = line.split_once('=').expect("key=value");
            out.entry(key.to_string())
                .or_default()
                .push(value.to_string());
        }
    }
    out
}

fn setting(settings: &BTreeMap<String, Vec<String>>, key: &str) -> String {
    let values = settings
        .get(key)
        .unwrap_or_else(|| panic!("{UNIT}: no {key}="));
    assert_eq!(values.len(), 1, "{key}= is set once");
    values[0].clone()
}

fn systemd_analyze(args: &[&str], unit: &Path) -> Output {
    Command::new("systemd-analyze")
        .args(args)
        .arg(unit)
        .output()
        .unwrap_or_else(|e| {
            panic!("systemd-analyze: {e} (install the `systemd` package; .ci/run does)")
        })
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    // As shipped: the only complaint allowed is that the binary is not installed on this machine.
    let out = systemd_analyze(&["verify"], &repo().join(UNIT));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let missing =
        format!("keygate.service: Command {BINARY} is not executable: No such file or directory");
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            line == missing && !Path::new(BINARY).exists(),
            "systemd-analyze verify {UNIT}: {line}"
        );
    }
    assert!(
        out.status.success() || stderr.contains(&missing),
        "{stderr}"
    );

    // The same unit with ExecStart pointing at the binary just built: no complaint at all, not
    // even a warning (an unknown or misspelt setting is only a warning, with exit code 0).
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("keygate.service");
    let text = read(UNIT);
    let prefix = format!("ExecStart={BINARY} ");
    assert_eq!(text.matches(&prefix).count(), 1);
    std::fs::write(
        &unit,
        text.replace(
            &prefix,
            &format!("ExecStart={} ", env!("CARGO_BIN_EXE_keygate")),
        ),
    )
    .unwrap();
    let out = systemd_analyze(&["verify"], &unit);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "systemd-analyze verify has warnings"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
}

#[test]
fn unit_is_hardened() {
    let s = service_settings();
    for (key, value) in [
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("StateDirectory", "keygate"),
        ("PrivateTmp", "yes"),
        ("ProtectHome", "yes"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("RestartPreventExitStatus", "78"),
    ] {
        assert_eq!(setting(&s, key), value, "{key}");
    }
    assert!(setting(&s, "EnvironmentFile").starts_with("/etc/keygate/"));
    // systemd's own exposure score, 0 (locked down) to 10 (unprotected). This unit scores 1.1;
    // above 1.2 a protection was dropped.
    let out = systemd_analyze(
        &["security", "--offline=yes", "--threshold=12", "--no-pager"],
        &repo().join(UNIT),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let overall = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("{stdout}{}", String::from_utf8_lossy(&out.stderr)));
    assert!(out.status.success(), "exposure above 1.2: {overall}");
}

#[test]
fn example_config_loads_and_agrees_with_the_unit() {
    let s = service_settings();
    let exec: Vec<String> = setting(&s, "ExecStart")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(exec[0], BINARY);
    assert_eq!(exec[1], "serve");
    let config_path = &exec[exec.iter().position(|a| a == "--config").unwrap() + 1];
    let configuration_dir = PathBuf::from("/etc").join(setting(&s, "ConfigurationDirectory"));
    assert!(Path::new(config_path).starts_with(&configuration_dir));

    let raw: toml::Table = toml::from_str(&read(CONFIG)).unwrap();
    let var = raw["upstream"]["credential"]["env"].as_str().unwrap();
    let env = HashMap::from([(var.to_string(), "KEY:SECRET".to_string())]);
    let err = Config::from_toml_with_env(&read(CONFIG), &env).unwrap_err();
    assert_eq!(err.field_path(), Some("authz.org_id"), "{err}");
    let config = Config::from_toml_with_env(&with_org(&read(CONFIG), support::ORG_ID), &env)
        .unwrap_or_else(|e| panic!("{CONFIG}: {e}"));
    // The install steps in the unit's header write the credential variable.
    assert!(read(UNIT).contains(&format!("{var}=KEY:SECRET")));

    // The audit file is in the state directory, the only writable place.
    let state = PathBuf::from("/var/lib").join(setting(&s, "StateDirectory"));
    let audit = config.audit.file.as_ref().expect("an audit file");
    assert_eq!(audit.path.parent(), Some(state.as_path()));
    assert_eq!(audit.mode, keygate::audit::FileMode::Blocking);
    // TLS files are the unit's credentials.
    let credentials: Vec<String> = s["LoadCredential"]
        .iter()
        .map(|c| c.split(':').next().unwrap().to_string())
        .collect();
    let tls = config.listener.tls.as_ref().expect("TLS on the listener");
    for file in [&tls.cert, &tls.key] {
        let name = file
            .strip_prefix("/run/credentials/keygate.service")
            .unwrap_or_else(|_| panic!("{} is not a unit credential", file.display()));
        assert!(credentials.contains(&name.to_str().unwrap().to_string()));
    }
    assert!(config.admin.address.ip().is_loopback());
    // The matrix is where the install steps put it.
    assert!(read(UNIT).contains(&format!(
        "policies/matrix.toml {}",
        config.authz.matrix.display()
    )));
    // The drain ends before systemd's stop timeout.
    let stop = humantime::parse_duration(&setting(&s, "TimeoutStopSec")).unwrap();
    assert!(config.listener.shutdown_grace < stop);
}

/// `kill -HUP pid`.
fn hangup(pid: u32) {
    let status = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn hangup_reloads_authorization_data_and_keeps_the_old_set_when_the_new_one_is_bad() {
    let dir = tempfile::tempdir().unwrap();
    let policies = repo().join("policies");
    for file in ["matrix.toml", "role-bindings.toml", "inventory.toml"] {
        std::fs::copy(policies.join(file), dir.path().join(file)).unwrap();
    }
    let config = dir.path().join("keygate.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[listener]
address = "127.0.0.1:0"
[admin]
address = "127.0.0.1:0"
[upstream]
url = "http://127.0.0.1:9"
[authz]
org_id = "{org}"
matrix = "{dir}/matrix.toml"
bindings = "{dir}/role-bindings.toml"
inventory = "{dir}/inventory.toml"
"#,
            org = support::ORG_ID,
            dir = dir.path().display()
        ),
    )
    .unwrap();
    let running = binary::spawn(&["serve", "--config", config.to_str().unwrap()]);
    let (_, admin) = running.serve_addresses();
    let pid = running.child.id();

    // A broken matrix: the reload fails, the loaded data stays, keygate stays up and ready.
    std::fs::write(
        dir.path().join("matrix.toml"),
        "[roles.Broken]\ngrants = 1\n",
    )
    .unwrap();
    hangup(pid);
    let line = running.wait_stderr("Reload rejected");
    assert!(line.contains("matrix.toml"), "{line}");
    let ready = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["healthcheck", "--url", &format!("http://{admin}/readyz")])
        .status()
        .unwrap();
    assert!(ready.success(), "still ready after a failed reload");

    // Fixed again: the reload succeeds.
    std::fs::copy(policies.join("matrix.toml"), dir.path().join("matrix.toml")).unwrap();
    hangup(pid);
    running.wait_stderr("Policy set reloaded");
    let mut running = running;
    assert!(
        running.child.try_wait().unwrap().is_none(),
        "keygate exited"
    );
}
