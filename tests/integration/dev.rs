//! Smoke test of the real binary: `keygate dev` and the banner's curl flow, as printed.

use std::process::Command;

use crate::support::binary;

/// Runs one banner command with the shell, returning curl's `-i` output.
fn run(command: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(command).output().unwrap();
    assert!(
        out.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// curl's `-i` output through a proxy, without the proxy's `200 Connection Established` head.
fn past_connect(curl_i_output: &str) -> &str {
    curl_i_output
        .strip_prefix("HTTP/1.1 200 Connection Established\r\n\r\n")
        .unwrap_or(curl_i_output)
}

fn status(curl_i_output: &str) -> u16 {
    curl_i_output
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {curl_i_output:?}"))
}

#[test]
fn dev_banner_curl_flow_works_as_printed_from_any_directory() {
    // Not the repository root: everything `keygate dev` needs is in the binary.
    let elsewhere = tempfile::tempdir().unwrap();
    let mut keygate = binary::spawn_with(
        Command::new(env!("CARGO_BIN_EXE_keygate"))
            .args([
                "dev",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--egress-listen",
                "127.0.0.1:0",
            ])
            .current_dir(elsewhere.path()),
    );
    binary::wait_line(&keygate.stdout, "Try it");
    let commands: Vec<String> = (0..3)
        .map(|_| {
            binary::wait_line(&keygate.stdout, "curl ")
                .trim()
                .to_string()
        })
        .collect();
    assert!(
        commands[0].contains("-d '{"),
        "first is the create: {}",
        commands[0]
    );

    let created = run(&commands[0]);
    assert_eq!(status(&created), 202, "{created}");
    let body = created.split("\r\n\r\n").nth(1).unwrap_or("");
    let key: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(key["spec"]["owner"]["id"], "sa-orders");
    assert!(key["spec"]["secret"].as_str().unwrap().starts_with("cflt"));
    // The simulator links to itself; keygate rewrites its links to the gateway's address.
    let base =
        &commands[0][commands[0].find("http://").unwrap()..commands[0].find("/iam/").unwrap()];
    let self_link = key["metadata"]["self"].as_str().unwrap();
    assert!(
        self_link.starts_with(&format!("{base}/iam/v2/api-keys/")),
        "{self_link} vs {base}"
    );
    let location = created
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .unwrap_or_else(|| panic!("no location: {created}"));
    assert_eq!(location.trim(), self_link);

    let listed = run(&commands[1]);
    assert_eq!(status(&listed), 200, "{listed}");
    assert!(listed.contains(key["id"].as_str().unwrap()), "{listed}");

    let deleted = run(&commands[2]);
    assert_eq!(status(&deleted), 204, "{deleted}");

    // Egress mode: the lines to paste, a curl through the proxy, and a CLI-style login whose
    // session token then works through the proxy too.
    let proxy = binary::wait_line(&keygate.stdout, "export HTTPS_PROXY=");
    let proxy = proxy
        .trim()
        .strip_prefix("export HTTPS_PROXY=")
        .unwrap()
        .to_owned();
    let ca = binary::wait_line(&keygate.stdout, "export SSL_CERT_FILE=");
    let ca = ca
        .trim()
        .strip_prefix("export SSL_CERT_FILE=")
        .unwrap()
        .to_owned();
    assert!(std::fs::read_to_string(&ca)
        .unwrap()
        .contains("BEGIN CERTIFICATE"));
    let through = binary::wait_line(&keygate.stdout, "--proxy")
        .trim()
        .to_string();
    assert!(
        through.contains("https://api.confluent.cloud/iam/v2/api-keys"),
        "{through}"
    );
    let listed = run(&through);
    assert!(
        listed.starts_with("HTTP/1.1 200 Connection Established"),
        "{listed}"
    );
    let listed = past_connect(&listed);
    assert!(listed.starts_with("HTTP/2 200"), "{listed}");
    let login = binary::wait_line(&keygate.stdout, "/api/sessions")
        .trim()
        .to_string();
    let session = run(&login);
    let session = past_connect(&session);
    assert_eq!(status(session), 200, "{session}");
    let session: serde_json::Value =
        serde_json::from_str(session.split("\r\n\r\n").nth(1).unwrap())
            .unwrap_or_else(|e| panic!("{e}: {session:?}"));
    let token = session["token"].as_str().unwrap();
    let as_cli = run(&format!(
        "curl -sS -i --http2 --proxy {proxy} --cacert {ca} -H 'Authorization: Bearer {token}' https://api.confluent.cloud/iam/v2/api-keys"
    ));
    let as_cli = past_connect(&as_cli);
    assert!(as_cli.starts_with("HTTP/2 200"), "{as_cli}");

    // The embedded policy set was written out, not read from the working directory, and the
    // run's directory is gone once keygate dev stops.
    let ready = binary::wait_line(&keygate.stdout, "Policies:");
    assert!(ready.contains("keygate-dev-"), "{ready}");
    let removed = binary::wait_line(&keygate.stdout, "removed when keygate dev stops");
    let dir = std::path::PathBuf::from(removed.rsplit(": ").next().unwrap().trim());
    assert!(dir.join("audit.jsonl").exists(), "{}", dir.display());
    keygate.terminate();
    let (status, _, _) = keygate.finish();
    assert!(status.success(), "{status}");
    assert!(!dir.exists(), "{} was left behind", dir.display());
}
