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
